"""The bpf() system call through ctypes: maps, program load (verifier log on failure),
test runs, object info, links.

Only what fastvs's XDP path needs; ``union bpf_attr`` layouts per include/uapi/linux/bpf.h.
Every failure raises :class:`BpfError` with one line saying what failed and why.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterator

_SYSCALL_NR = {"x86_64": 321, "aarch64": 280, "i686": 357, "armv7l": 386, "ppc64le": 361,
               "s390x": 351, "riscv64": 280}

# commands (enum bpf_cmd)
MAP_CREATE = 0
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
PROG_LOAD = 5
PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15
LINK_CREATE = 28

# map types (enum bpf_map_type)
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_XSKMAP = 17

# program types / attach types
PROG_TYPE_XDP = 6
ATTACH_XDP = 37

# map update flags
ANY, NOEXIST, EXIST = 0, 1, 2

ATTR_SIZE = 128
LOG_SIZE = 1 << 20


class BpfError(OSError):
    """A bpf() call failed; ``str()`` is one line."""

    def __init__(self, err: int, what: str, detail: str = "") -> None:
        msg = f"{what}: {os.strerror(err)}"
        if err in (errno.EPERM, errno.EACCES) and not detail:
            detail = "needs root (CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN)"
        if detail:
            msg += f" ({detail})"
        super().__init__(err, msg)
        self.msg = msg

    def __str__(self) -> str:
        return self.msg


_libc: ctypes.CDLL | None = None


def _syscall() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def sys_bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    """bpf(cmd, attr, sizeof attr); raises BpfError on -1."""
    nr = _SYSCALL_NR.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, what, f"bpf() syscall number unknown on {platform.machine()}")
    r = _syscall().syscall(ctypes.c_long(nr), ctypes.c_long(cmd), attr, ctypes.c_long(len(attr)))
    if r < 0:
        raise BpfError(ctypes.get_errno(), what)
    return int(r)


def _attr(fmt: str, *values: object) -> ctypes.Array[ctypes.c_char]:
    raw = struct.pack("=" + fmt, *values)
    return ctypes.create_string_buffer(raw, max(ATTR_SIZE, len(raw)))


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buf is None else ctypes.addressof(buf)


# -- maps ---------------------------------------------------------------------------------
def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str = "", flags: int = 0) -> int:
    """A new map; returns its fd (close it with os.close)."""
    attr = _attr("IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                 name.encode()[:15])
    return sys_bpf(MAP_CREATE, attr, f"bpf map create {name or map_type}")


def _elem(map_fd: int, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char] | None,
          flags: int = 0) -> ctypes.Array[ctypes.c_char]:
    return _attr("IIQQQ", map_fd, 0, _addr(key), _addr(value), flags)


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = ANY) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    sys_bpf(MAP_UPDATE_ELEM, _elem(map_fd, k, v, flags), "bpf map update")


def map_delete(map_fd: int, key: bytes) -> bool:
    """Remove a key; False if it was not there."""
    k = ctypes.create_string_buffer(key, len(key))
    try:
        sys_bpf(MAP_DELETE_ELEM, _elem(map_fd, k, None), "bpf map delete")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    try:
        sys_bpf(MAP_LOOKUP_ELEM, _elem(map_fd, k, v), "bpf map lookup")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return v.raw


def map_keys(map_fd: int, key_size: int) -> Iterator[bytes]:
    """Every key of a hash map (BPF_MAP_GET_NEXT_KEY from no key)."""
    cur: ctypes.Array[ctypes.c_char] | None = None
    while True:
        nxt = ctypes.create_string_buffer(key_size)
        attr = _attr("IIQQ", map_fd, 0, _addr(cur), _addr(nxt))
        try:
            sys_bpf(MAP_GET_NEXT_KEY, attr, "bpf map next key")
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        yield nxt.raw
        cur = nxt


def possible_cpus() -> int:
    """The number of possible CPUs (the per-CPU map value count), from sysfs."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def percpu_sum_u64(map_fd: int, key: int) -> int:
    """The sum over CPUs of a per-CPU array's u64 value at ``key``."""
    ncpu = possible_cpus()
    raw = map_lookup(map_fd, struct.pack("=I", key), 8 * ncpu)
    return 0 if raw is None else sum(struct.unpack(f"={ncpu}Q", raw))


# -- programs -----------------------------------------------------------------------------
def verifier_summary(log: str) -> str:
    """The verifier's complaint as one line: the last non-statistics line of its log."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    skip = ("processed ", "verification time", "stack depth", "max_states_per_insn")
    useful = [ln for ln in lines if not ln.startswith(skip)]
    return useful[-1] if useful else (lines[-1] if lines else "no verifier log")


def prog_load(insns: bytes, name: str, prog_type: int = PROG_TYPE_XDP,
              license: str = "GPL", expected_attach_type: int = 0) -> int:
    """Load a program; returns its fd. On a verifier rejection the error carries the
    verifier's last line (the whole log is in ``e.log``)."""
    if len(insns) % 8 or not insns:
        raise ValueError("a program is a non-empty sequence of 8-byte instructions")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log_level: int, log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = _attr("IIQQIIQII16sII", prog_type, len(insns) // 8, _addr(code), _addr(lic),
                     log_level, len(log) if log is not None else 0, _addr(log), 0, 0,
                     name.encode()[:15], 0, expected_attach_type)
        return sys_bpf(PROG_LOAD, attr, f"bpf program load {name}")

    try:
        return attempt(0, None)
    except BpfError as e:
        if e.errno not in (errno.EINVAL, errno.EACCES, errno.E2BIG):
            raise
    log = ctypes.create_string_buffer(LOG_SIZE)
    try:
        return attempt(1, log)
    except BpfError as e:
        text = log.value.decode(errors="replace")
        err = BpfError(e.errno, f"bpf program load {name}",
                       "verifier: " + verifier_summary(text) if text else "")
        err.log = text  # type: ignore[attr-defined]
        raise err from None


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1,
                  ctx: bytes | None = None) -> tuple[int, bytes, int]:
    """BPF_PROG_TEST_RUN: the kernel runs the program on ``data`` (an Ethernet frame for
    XDP). Returns (return value, data out, duration ns)."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(len(data) + 512)
    cin = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    attr = _attr("IIIIQQIIIIQQII", prog_fd, 0, len(data), len(dout), _addr(din), _addr(dout),
                 repeat, 0, len(ctx) if ctx else 0, 0, _addr(cin), 0, 0, 0)
    sys_bpf(PROG_TEST_RUN, attr, "bpf program test run")
    _, retval, _, size_out, _, _, _, duration = struct.unpack_from("=IIIIQQII", attr.raw)
    return retval, dout.raw[:size_out], duration


def prog_fd_by_id(prog_id: int) -> int:
    return sys_bpf(PROG_GET_FD_BY_ID, _attr("III", prog_id, 0, 0), f"bpf program id {prog_id}")


def prog_info(prog_fd: int) -> dict[str, object]:
    """Type, id, tag (hex) and name of a loaded program (struct bpf_prog_info)."""
    info = ctypes.create_string_buffer(256)
    attr = _attr("IIQ", prog_fd, len(info), _addr(info))
    sys_bpf(OBJ_GET_INFO_BY_FD, attr, "bpf program info")
    ptype, pid = struct.unpack_from("=II", info.raw, 0)
    tag = info.raw[8:16].hex()
    name = info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return {"type": ptype, "id": pid, "tag": tag, "name": name}


def link_create_xdp(prog_fd: int, ifindex: int, flags: int = 0) -> int:
    """Attach an XDP program through a bpf_link (detached when the last fd closes, so a
    killed process leaves nothing behind); returns the link fd."""
    attr = _attr("IIII", prog_fd, ifindex, ATTACH_XDP, flags)
    return sys_bpf(LINK_CREATE, attr, "bpf link create (XDP)")
