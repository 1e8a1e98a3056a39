"""Attach fastvs's XDP program to an interface, detach it on exit, clear leftovers.

- ``method="netlink"``: IFLA_XDP with XDP_FLAGS_UPDATE_IF_NOEXIST (never replaces a
  program silently); detached with XDP_FLAGS_REPLACE + the expected fd, so only our own
  program is ever removed. A process killed with SIGKILL leaves it attached: the next
  :func:`attach` finds it by its name (``fastvs_xdp``) and removes it first.
- ``method="link"``: a bpf_link (kernel >= 5.9); the kernel detaches the program when
  the link's last fd closes, so a killed process leaves nothing behind.

A program that is not ours already on the interface -> :class:`XdpError` (one line),
and nothing is changed. Every failure leaves the interface as it was.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import socket
from dataclasses import dataclass, field

from fastvs.live.xdp import bpf, netlink
from fastvs.live.xdp.program import PROG_NAME, XdpProgram

MODES = ("skb", "drv", "auto")
METHODS = ("netlink", "link")


class XdpError(RuntimeError):
    """The XDP path cannot be used here; ``str()`` is one line saying why."""


def ifindex_of(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise XdpError(f"{ifname}: no such interface") from None


@dataclass
class Leftover:
    ifname: str
    prog_id: int
    tag: str
    mode: str


LOCK_DIR = "/run/fastvs"


def _lock(ifname: str, ifindex: int) -> int:
    """An exclusive flock naming (network namespace, interface), held while attached: a
    fastvs program found on an interface whose lock is free is a leftover."""
    try:
        ns = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        ns = 0
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    path = lock_path(ifindex, ns)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise XdpError(f"{ifname}: another running fastvs has its XDP program attached here") from None
        try:  # the holder before us may have unlinked it after we opened it: retry
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def lock_path(ifindex: int, ns: int | None = None) -> str:
    if ns is None:
        try:
            ns = os.stat("/proc/thread-self/ns/net").st_ino
        except OSError:
            ns = 0
    return os.path.join(LOCK_DIR, f"xdp-{ns}-{ifindex}.lock")


def _unlock(fd: int, ifindex: int) -> None:
    """Remove the lock file (while still holding it), then release it."""
    try:
        path = lock_path(ifindex)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    except OSError:
        pass
    os.close(fd)


def _prog_name(prog_id: int) -> tuple[str, str]:
    """(name, tag) of a loaded program by id ('?' if it cannot be opened)."""
    try:
        fd = bpf.prog_fd_by_id(prog_id)
    except bpf.BpfError:
        return "?", "?"
    try:
        info = bpf.prog_info(fd)
        return str(info["name"]), str(info["tag"])
    finally:
        os.close(fd)


def clear_leftovers(ifname: str) -> list[Leftover]:
    """Remove fastvs XDP programs left on ``ifname`` (by a killed forwarder); raise
    XdpError if a foreign program is attached. Returns what was removed. The caller
    holds the interface's lock (:func:`attach` does), so the program found is no live
    forwarder's."""
    ifindex = ifindex_of(ifname)
    try:
        state = netlink.query(ifindex)
    except OSError as e:
        raise XdpError(f"{ifname}: cannot read its XDP state: {e}") from None
    removed: list[Leftover] = []
    for mode, pid in state.ids():
        name, tag = _prog_name(pid)
        kind = "generic" if mode == "skb" else "native"
        if name != PROG_NAME:
            raise XdpError(f"{ifname} already has an XDP program attached ({kind} mode, id {pid}, "
                           f"name {name!r}): not ours, left in place "
                           f"(remove it with: ip link set dev {ifname} xdp off)")
        try:
            netlink.set_xdp(ifindex, -1, netlink.MODE_FLAGS[mode])
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise XdpError(f"{ifname}: a fastvs XDP program (id {pid}) is attached through a "
                               f"bpf_link held by a running process: is another fastvs forwarding "
                               f"on {ifname}?") from None
            raise XdpError(f"{ifname}: cannot remove the leftover fastvs XDP program id {pid}: {e}") from None
        removed.append(Leftover(ifname, pid, tag, mode))
    return removed


@dataclass
class Attachment:
    """The program attached to one interface; :meth:`detach` (or ``with``) removes it."""

    ifname: str
    ifindex: int
    program: XdpProgram
    mode: str  # "skb" or "drv"
    method: str
    link_fd: int = -1
    leftovers: list[Leftover] = field(default_factory=list)
    lock_fd: int = -1

    def detach(self) -> None:
        """Remove our program (only ours: a program put there since is left alone)."""
        idx = self.ifindex
        try:
            self._detach()
        finally:
            if self.lock_fd >= 0:
                _unlock(self.lock_fd, idx)
                self.lock_fd = -1

    def share(self) -> Attachment:
        """A copy holding its own duplicates of the link and lock descriptors (a
        worker's, over a bpf_link attachment): :meth:`release` closes them, and the
        kernel detaches the program when the last process holding the link closes it."""
        if self.link_fd < 0:
            raise ValueError("only a bpf_link attachment can be shared between workers")
        return dataclasses.replace(self, link_fd=os.dup(self.link_fd),
                                   lock_fd=os.dup(self.lock_fd) if self.lock_fd >= 0 else -1)

    def release(self) -> None:
        """Close this holder's link and lock descriptors (the lock file stays; the
        program stays attached while another holder has the link open)."""
        for name in ("link_fd", "lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)

    def _detach(self) -> None:
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
            return
        if self.method == "netlink" and self.ifindex:
            idx, self.ifindex = self.ifindex, 0
            try:
                netlink.set_xdp(idx, -1, netlink.MODE_FLAGS[self.mode] | netlink.XDP_FLAGS_REPLACE,
                                expected_fd=self.program.prog_fd)
            except OSError as e:
                if e.errno not in (errno.ENODEV, errno.EEXIST):  # interface gone / not ours any more
                    raise

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def attach(ifname: str, program: XdpProgram, mode: str = "auto", method: str = "netlink") -> Attachment:
    """Attach ``program`` to ``ifname`` in ``mode`` ("drv": native, "skb": generic,
    "auto": native, else generic) after clearing our own leftovers."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    ifindex = ifindex_of(ifname)
    lock = _lock(ifname, ifindex)
    try:
        return _attach(ifname, ifindex, program, mode, method, lock)
    except BaseException:
        os.close(lock)
        raise


def _attach(ifname: str, ifindex: int, program: XdpProgram, mode: str, method: str,
            lock: int) -> Attachment:
    leftovers = clear_leftovers(ifname)
    tries = ("drv", "skb") if mode == "auto" else (mode,)
    last: OSError | None = None
    for m in tries:
        flag = netlink.MODE_FLAGS[m]
        try:
            if method == "link":
                fd = bpf.link_create_xdp(program.prog_fd, ifindex, flag)
                return Attachment(ifname, ifindex, program, m, method, fd, leftovers, lock)
            netlink.set_xdp(ifindex, program.prog_fd, flag | netlink.XDP_FLAGS_UPDATE_IF_NOEXIST)
            return Attachment(ifname, ifindex, program, m, method, -1, leftovers, lock)
        except OSError as e:
            last = e
            if e.errno == errno.EBUSY and method == "netlink":
                break  # something got attached meanwhile: do not try the other mode
    kind = " or ".join("native" if m == "drv" else "generic" for m in tries)
    raise XdpError(f"{ifname}: XDP program attach refused ({kind} mode): {last}")
