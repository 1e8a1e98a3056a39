"""The AF_XDP backend (``--io xdp``): the XDP programs, their attachment, the UMEM and
sockets, and the :class:`XdpIO` a worker receives and transmits with. The per-frame work
is fastvs/live/_afxdp.pyx (:class:`XdpPump`); the pieces are fastvs/live/xdp/.

In the supervisor (``prepare``): one XDP program per interface (each its own XSKMAP;
the second shares the first's address maps), the VIPs, real servers, ``--addr`` and
``--client-gw`` addresses in the maps, each program attached (leftovers of a killed
forwarder removed first; if any attach fails, those attached are detached: never a
half-attached pair). ARP and neighbour discovery stay with the stack
(``steer_l2=False`` on both programs) so fastvs/live/neigh.py works unchanged.
In the worker (``open``): one UMEM, the client side's socket first (it registers the
UMEM), then the server side's (shared UMEM), both on the worker's queue (worker k binds
queue k of every interface), put in their program's XSKMAP slot k (the program redirects
by ``rx_queue_index``). With several workers the programs are attached through a
bpf_link whose descriptor every worker holds: the kernel detaches them when the last
worker exits.

When AF_XDP cannot be used -- no AF_XDP or BPF in the kernel, missing privileges, an
interface whose queue count is not ``--workers`` (each queue needs its worker's socket,
or its frames would pass to the stack; checked again once the programs are attached, as
a driver may add queues for XDP), a program already attached, ``--xdp-copy
zerocopy`` on a driver whose XDP features lack AF_XDP zero-copy -- one line says why
and the forwarder runs the AF_PACKET ``ring-v2`` backend instead.

The attach mode is ``--xdp-mode`` (``auto``: native, else generic), the socket mode
``--xdp-copy`` (copy by default: veth has no zero-copy); FASTVS_XDP_MODE and
FASTVS_XDP_COPY give their defaults. ``--xdp-ring-size`` sizes the four rings of each
socket, ``--xdp-busy-poll US`` asks for busy polling on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import mmap
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from fastvs.live import afpacket
from fastvs.live._afxdp import XdpPump
from fastvs.live._l2 import L2Stage
from fastvs.live.config import ForwardConfig, ForwardError
from fastvs.live.iface import Iface

FALLBACK = "ring-v2"
RING = 2048  # RX, TX, fill and completion ring size per socket (--xdp-ring-size default)
FRAME = 2048  # UMEM chunk size
HANDOFF_SLOTS = 2048  # frames each ring between two workers holds (at most)
HANDOFF_VIPS = 256  # VIPs the workers' owner test compares (_afxdp.pyx MAX_VIPS)
SO_BUSY_POLL, SO_PREFER_BUSY_POLL, SO_BUSY_POLL_BUDGET = 46, 69, 70  # asm-generic/socket.h
AF_XDP = 44


def _log(msg: str) -> None:
    print(f"fastvs forward: {msg}", file=sys.stderr, flush=True)


def rx_queues(ifname: str, kind: str = "rx") -> int:
    """Receive (``kind="tx"``: transmit) queues of an interface (sysfs), 1 when it
    cannot be told."""
    try:
        return max(1, sum(1 for q in os.listdir(f"/sys/class/net/{ifname}/queues")
                          if q.startswith(kind + "-")))
    except OSError:
        return 1


def queues(ifname: str) -> int:
    """Queues an AF_XDP socket can bind on ``ifname``: the kernel refuses a queue id
    at or above the receive or the transmit queue count."""
    return min(rx_queues(ifname), rx_queues(ifname, "tx"))


def unavailable(cfg: ForwardConfig, ifaces: Sequence[Iface]) -> str | None:
    """Why ``--io xdp`` cannot run here (one line), or None."""
    from fastvs.live.xdp import probe

    names = [i.name for i in ifaces]
    why = probe.unavailable(names)
    if why is not None:
        return why
    for n in names:
        q = queues(n)
        if q < cfg.workers:
            return (f"{n} has {q} queue{'s' if q > 1 else ''} for --workers {cfg.workers}: worker k "
                    f"binds queue k (ethtool -L {n} combined {cfg.workers}, or veth numrxqueues/"
                    "numtxqueues)")
    why = extra_queues(cfg, names, attached=False)
    if why is not None:
        return why
    if max(i.mtu for i in ifaces) + 14 + 4 + 256 > FRAME:
        return f"MTU above {FRAME - 274} does not fit a {FRAME}-byte UMEM frame"
    if cfg.xdp_copy == "zerocopy":
        return no_zerocopy(names)
    return None


def no_zerocopy(names: Sequence[str]) -> str | None:
    """Which interface's driver has no AF_XDP zero-copy (its XDP features, netlink), or
    None: all have it, or the kernel cannot say (before 6.3; the bind will tell)."""
    from fastvs.live.xdp.netlink import XDP_ACT_XSK_ZEROCOPY, xdp_features

    for n in names:
        try:
            feats = xdp_features(socket.if_nametoindex(n))
        except OSError:
            continue
        if feats is not None and not feats & XDP_ACT_XSK_ZEROCOPY:
            drv = f"/sys/class/net/{n}/device/driver"  # none for virtual devices (veth)
            drv = f" ({os.path.basename(os.path.realpath(drv))})" if os.path.exists(drv) else ""
            return (f"--xdp-copy zerocopy: {n}'s driver{drv} has no AF_XDP zero-copy "
                    "(--xdp-copy auto takes copy mode there)")
    return None


def address_sets(cfg: ForwardConfig, vips: Iterable[str], rips: Iterable[str]) -> Any:
    from fastvs.live.xdp.program import AddressSets

    return AddressSets.of(vips=vips, real_servers=rips, own=cfg.addrs, neighbours=cfg.client_gw)


def _rips(cfg: ForwardConfig) -> set[str]:
    from fastvs.live.config import load_rules, rules_addresses

    return rules_addresses(load_rules(cfg))[1]


def _packed(vips: Iterable[str]) -> list[bytes]:
    return [ipaddress.ip_address(v).packed for v in vips]


@dataclasses.dataclass
class Handoff:
    """What several workers share to hand each other frames (fastvs/live/_afxdp.pyx):
    the memory (made before the fork, so every worker maps the same pages), every
    worker's eventfd (this holder's duplicates), ring slots, the VIPs."""

    area: mmap.mmap
    efds: list[int]
    slots: int
    vips: list[bytes]

    @classmethod
    def make(cls, workers: int, vips: Iterable[str]) -> Handoff:
        from fastvs.live._afxdp import handoff_size

        # up to HANDOFF_SLOTS slots of 2 KiB per ring, about 64 MiB at most in all
        slots = max(16, min(HANDOFF_SLOTS, 1 << ((64 << 20) // (workers * workers * 2048)).bit_length() - 1))
        efds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(workers)]
        return cls(mmap.mmap(-1, handoff_size(workers, slots)), efds, slots, _packed(vips))

    def share(self) -> Handoff:
        return Handoff(self.area, [os.dup(fd) for fd in self.efds], self.slots, self.vips)

    def close(self) -> None:
        """Close this holder's eventfds (the memory goes with the last reference)."""
        while self.efds:
            os.close(self.efds.pop())


@dataclasses.dataclass
class XdpHandle:
    """The XDP programs attached to the interfaces, as one worker holds them: its
    ``queue``; ``shared``: one of several workers' (own duplicates of every descriptor,
    bpf_link attachments). :meth:`close` detaches the programs (shared: closes this
    holder's descriptors; the kernel detaches with the last) and releases them; twice is
    harmless."""

    programs: list[Any]
    attachments: list[Any]
    queue: int = 0
    shared: bool = False
    handoff: Handoff | None = None

    def share(self, queue: int, handoff: Handoff) -> XdpHandle:
        """Worker ``queue``'s handle: duplicates of every descriptor."""
        h = XdpHandle([], [], queue, True)
        try:
            for p in self.programs:
                h.programs.append(p.share())
            for a in self.attachments:
                h.attachments.append(a.share())
            h.handoff = handoff.share()
        except BaseException:
            h.close()
            raise
        return h

    def close(self) -> None:
        if self.handoff is not None:
            self.handoff.close()
            self.handoff = None
        while self.attachments:
            a = self.attachments.pop()
            with contextlib.suppress(Exception):
                if self.shared:
                    a.release()
                else:
                    a.detach()
        while self.programs:
            self.programs.pop().close()


def extra_queues(cfg: ForwardConfig, names: Sequence[str], *, attached: bool) -> str | None:
    """More receive queues than workers on an interface (one line), or None: frames on
    a queue without a worker's socket would pass to the stack. Checked before the
    programs are attached and again after (``attached``): a driver may add receive
    queues then (virtio_net turns on the queue pairs it has to spare, for XDP transmit,
    and the device delivers on them too)."""
    for n in names:
        rq = rx_queues(n)
        if rq > cfg.workers:
            when = " once the XDP program is attached (its driver added queues for XDP)" if attached else ""
            fix = "" if attached else f" (ethtool -L {n} combined {cfg.workers})"
            return (f"{n} has {rq} receive queues{when} for --workers {cfg.workers}: frames on a queue "
                    f"without a worker would pass to the stack{fix}")
    return None


def attach_all(cfg: ForwardConfig, ifaces: Sequence[Iface], vips: Iterable[str]) -> XdpHandle:
    """Load one program per interface over one set of address maps and attach each
    (with several workers through a bpf_link); on any failure nothing stays attached
    (XdpError/BpfError/OSError raised)."""
    from fastvs.live.xdp.attach import attach
    from fastvs.live.xdp.program import XdpProgram

    mode = cfg.xdp_mode
    method = "link" if cfg.workers > 1 else "netlink"
    h = XdpHandle([], [])
    try:
        p0 = XdpProgram(steer_l2=False)
        h.programs.append(p0)
        for _ in ifaces[1:]:
            h.programs.append(XdpProgram(steer_l2=False, share_addresses=p0))
        p0.set_addresses(address_sets(cfg, vips, _rips(cfg)))
        for i, p in zip(ifaces, h.programs, strict=True):
            a = attach(i.name, p, mode=mode, method=method)
            h.attachments.append(a)
            for left in a.leftovers:
                _log(f"{i.name}: removed a leftover XDP program (id {left.prog_id}, {left.mode})")
    except BaseException:
        h.close()
        raise
    return h


class XdpIO:
    """A worker's FrameIO (fastvs/live/io.py) over its AF_XDP sockets. The hot calls
    are the XdpPump's own methods, bound here without a Python layer in between."""

    def __init__(self, handle: XdpHandle, cfg: ForwardConfig, ifaces: Sequence[Iface], l2: L2Stage) -> None:
        from fastvs.live.xdp._xsk import Umem, XskSocket

        self.kind = "xdp"
        self.cfg = cfg
        self.handle = handle
        nsock = len(ifaces)
        ring = cfg.xdp_ring_size
        self.queue = q = handle.queue
        batch = min(cfg.batch, ring)
        # every frame can be in a fill, RX or TX ring (or completion) of a socket, or
        # in the batch: room for all of them, so no ring ever starves another
        nframes = 1 << max(12, (nsock * (3 * ring) + 3 * batch - 1).bit_length())
        self.umem = Umem(nframes, FRAME)
        self.socks: list[Any] = []
        busy = ""
        try:
            for i in ifaces:  # the client side first: it owns the UMEM
                self.socks.append(XskSocket(self.umem, socket.if_nametoindex(i.name), q, rx_size=ring,
                                            tx_size=ring, fill_size=ring, comp_size=ring, batch=batch,
                                            mode=cfg.xdp_copy))
            if cfg.xdp_busy_poll:
                busy = busy_poll(self.socks, cfg.xdp_busy_poll, batch)
            mtu = max(i.mtu for i in ifaces)
            self.pump = pump = XdpPump(self.socks[0], self.socks[-1], l2, batch=batch,
                                       max_frame=mtu + 14 + 4, spin_us=cfg.spin_us)
            if handle.handoff is not None:
                ho = handle.handoff
                pump.handoff(ho.area, cfg.workers, q, ho.efds, ho.slots)
                pump.set_vips(ho.vips)
            for p, s in zip(handle.programs, self.socks, strict=True):
                p.set_socket(q, s.fileno())
        except BaseException:
            for s in self.socks:
                s.close()
            raise
        self.mode = self.socks[0].mode
        if busy:
            _log(f"warning: --xdp-busy-poll: {busy}")
        if not cfg.quiet and (q == 0 or cfg.workers == 1):
            att = ", ".join(f"{a.ifname} {'native' if a.mode == 'drv' else 'generic'}"
                            for a in handle.attachments)
            where = f"queue {q}" if cfg.workers == 1 else f"queues 0..{cfg.workers - 1} (one per worker)"
            _log(f"AF_XDP: XDP program on {att}; sockets on {where} in {self.mode} mode, "
                 f"{nframes} UMEM frames of {FRAME} bytes, rings of {ring}, batch {batch}"
                 + (f", busy poll {cfg.xdp_busy_poll} us" if cfg.xdp_busy_poll and not busy else ""))
        self.buf, self.off, self.caplen, self.wirelen = pump.buf, pump.off, pump.caplen, pump.wirelen
        self.ts, self.linktype, self.verdict = pump.ts, pump.linktype, pump.verdict
        self.receive = pump.receive
        self.transmit = pump.transmit
        self.release = pump.release
        self.bind_engine = pump.bind_engine
        self.run = pump.run
        self.watch = pump.watch
        self.fds = pump.fds

    @property
    def aux_ready(self) -> int:
        return int(self.pump.aux_ready)

    def counters(self) -> dict[str, int]:
        """The pump's counters, the sockets' (summed, ``xsk_``: ring and kick counts,
        the kernel's XDP_STATISTICS) and the programs' (``xdp_``: frames redirected and
        passed, by reason)."""
        c: dict[str, int] = dict(self.pump.counters())
        for s in self.socks:
            for k, v in s.counters().items():
                if k != "umem_free":
                    c["xsk_" + k] = c.get("xsk_" + k, 0) + int(v)
        c["xsk_umem_free"] = self.umem.free_frames
        for p in self.handle.programs:
            for k, v in p.counters().items():
                c["xdp_" + k] = c.get("xdp_" + k, 0) + int(v)
        return c

    def update_vips(self, vips: set[str], rips: set[str] | None = None) -> None:
        """A reload (SIGHUP or ``fastvs ctl``): the address maps again, from the rules the
        worker applied (``rips``: their masqueraded real servers; read from the rules
        file when not given)."""
        if rips is None:
            try:
                rips = _rips(self.cfg)
            except Exception:  # noqa: BLE001 - the worker said why already; keep the maps
                return
        self.handle.programs[0].set_addresses(address_sets(self.cfg, vips, rips))
        if self.handle.handoff is not None:
            self.pump.set_vips(_packed(vips))

    def close(self) -> None:
        """Sockets out of the maps and closed, the programs detached and released."""
        self.buf = None
        self.pump.close()
        for p in self.handle.programs:
            with contextlib.suppress(Exception):
                p.clear_socket(self.queue)
        for s in reversed(self.socks):  # the UMEM owner last
            s.close()
        self.handle.close()


class XdpBackend:
    """``prepare``: the programs attached (or the AF_PACKET sockets, after one line
    saying why not); ``open``: a worker's :class:`XdpIO` (or AfPacketIO)."""

    def prepare(self, cfg: ForwardConfig, ifaces: Sequence[Iface], vips: Iterable[str]) -> list[Any]:
        from fastvs.live.xdp.attach import XdpError
        from fastvs.live.xdp.bpf import BpfError

        vips = set(vips)
        why = unavailable(cfg, ifaces)
        if why is None and cfg.workers > 1 and len(vips) > HANDOFF_VIPS:
            why = f"more than {HANDOFF_VIPS} VIPs for the workers' handoff ({len(vips)})"
        if why is None:
            try:
                h = attach_all(cfg, ifaces, vips)
            except (XdpError, BpfError, OSError) as e:
                why = str(e)
            else:
                why = extra_queues(cfg, [i.name for i in ifaces], attached=True)
                if why is not None:
                    h.close()
            if why is None:
                if cfg.workers == 1:
                    return [h]
                ho = Handoff.make(cfg.workers, vips)
                try:  # each worker its own descriptors; the kernel detaches with the last
                    return [h.share(k, ho) for k in range(cfg.workers)]
                finally:
                    h.shared = True
                    h.close()
                    ho.close()
        _log(f"--io xdp: AF_XDP unavailable ({why}); using AF_PACKET {FALLBACK}")
        return list(afpacket.BACKEND.prepare(dataclasses.replace(cfg, io=FALLBACK), ifaces, vips))

    def open(self, handle: Any, cfg: ForwardConfig, ifaces: Sequence[Iface], l2: L2Stage) -> Any:
        if not isinstance(handle, XdpHandle):
            return afpacket.BACKEND.open(handle, dataclasses.replace(cfg, io=FALLBACK), ifaces, l2)
        try:
            return XdpIO(handle, cfg, ifaces, l2)
        except OSError as e:  # a socket the kernel would not bind: one line, never a traceback
            handle.close()
            raise ForwardError(f"--io xdp: {e}") from None
        except BaseException:
            handle.close()
            raise


BACKEND = XdpBackend()

def busy_poll(socks: Sequence[Any], usecs: int, budget: int) -> str:
    """SO_PREFER_BUSY_POLL, SO_BUSY_POLL ``usecs`` and SO_BUSY_POLL_BUDGET ``budget`` on
    every socket; "" when the kernel took them all, else what it refused (one line)."""
    refused: list[str] = []
    for s in socks:
        fd = os.dup(s.fileno())
        try:  # the family given: Python cannot tell an AF_XDP socket's (no getsockname)
            so = socket.socket(AF_XDP, socket.SOCK_RAW, 0, fileno=fd)
        except OSError:
            os.close(fd)
            raise
        with so:
            for name, opt, val in (("SO_PREFER_BUSY_POLL", SO_PREFER_BUSY_POLL, 1),
                                   ("SO_BUSY_POLL", SO_BUSY_POLL, usecs),
                                   ("SO_BUSY_POLL_BUDGET", SO_BUSY_POLL_BUDGET, budget)):
                try:
                    so.setsockopt(socket.SOL_SOCKET, opt, val)
                except OSError as e:
                    if name not in " ".join(refused):
                        refused.append(f"{name} refused ({e.strerror})")
    return "; ".join(refused)


__all__ = ["BACKEND", "FALLBACK", "Handoff", "XdpBackend", "XdpHandle", "XdpIO", "attach_all", "busy_poll",
           "extra_queues", "queues", "rx_queues", "unavailable"]
