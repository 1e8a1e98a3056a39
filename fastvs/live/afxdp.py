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
UMEM), then the server side's (shared UMEM), both on queue 0, put in their program's
XSKMAP slot.

When AF_XDP cannot be used -- no AF_XDP or BPF in the kernel, missing privileges, more
than one worker or an interface with several receive queues (the program steers queue 0
only), a program already attached -- one line says why and the forwarder runs the
AF_PACKET ``ring-v2`` backend instead.

The attach mode is ``auto`` (native, else generic); ``FASTVS_XDP_MODE=skb|drv|auto``
overrides it, ``FASTVS_XDP_COPY=zerocopy|auto|copy`` the socket mode (copy by default:
veth has no zero-copy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from fastvs.live import afpacket
from fastvs.live._afxdp import XdpPump
from fastvs.live._l2 import L2Stage
from fastvs.live.config import ForwardConfig
from fastvs.live.iface import Iface

FALLBACK = "ring-v2"
QUEUE = 0
RING = 2048  # RX, TX, fill and completion ring size per socket
FRAME = 2048  # UMEM chunk size


def _log(msg: str) -> None:
    print(f"fastvs forward: {msg}", file=sys.stderr, flush=True)


def rx_queues(ifname: str) -> int:
    """Receive queues of an interface (sysfs), 1 when it cannot be told."""
    try:
        return max(1, sum(1 for q in os.listdir(f"/sys/class/net/{ifname}/queues") if q.startswith("rx-")))
    except OSError:
        return 1


def unavailable(cfg: ForwardConfig, ifaces: Sequence[Iface]) -> str | None:
    """Why ``--io xdp`` cannot run here (one line), or None."""
    from fastvs.live.xdp import probe

    names = [i.name for i in ifaces]
    why = probe.unavailable(names)
    if why is not None:
        return why
    if cfg.workers > 1:
        return (f"--workers {cfg.workers}: one AF_XDP socket per queue and interface, and this "
                "backend binds queue 0 only (one worker)")
    for n in names:
        q = rx_queues(n)
        if q > 1:
            return f"{n} has {q} receive queues; the XDP program steers queue 0 only"
    if max(i.mtu for i in ifaces) + 14 + 4 + 256 > FRAME:
        return f"MTU above {FRAME - 274} does not fit a {FRAME}-byte UMEM frame"
    return None


def address_sets(cfg: ForwardConfig, vips: Iterable[str], rips: Iterable[str]) -> Any:
    from fastvs.live.xdp.program import AddressSets

    return AddressSets.of(vips=vips, real_servers=rips, own=cfg.addrs, neighbours=cfg.client_gw)


def _rips(cfg: ForwardConfig) -> set[str]:
    from fastvs.live.config import load_rules, rules_addresses

    return rules_addresses(load_rules(cfg))[1]


@dataclasses.dataclass
class XdpHandle:
    """The XDP programs attached to the interfaces (supervisor side, one worker).
    :meth:`close` detaches them and releases the programs; twice is harmless."""

    programs: list[Any]
    attachments: list[Any]

    def close(self) -> None:
        while self.attachments:
            a = self.attachments.pop()
            with contextlib.suppress(Exception):
                a.detach()
        while self.programs:
            self.programs.pop().close()


def attach_all(cfg: ForwardConfig, ifaces: Sequence[Iface], vips: Iterable[str]) -> XdpHandle:
    """Load one program per interface over one set of address maps and attach each;
    on any failure nothing stays attached (XdpError/BpfError/OSError raised)."""
    from fastvs.live.xdp.attach import attach
    from fastvs.live.xdp.program import XdpProgram

    mode = os.environ.get("FASTVS_XDP_MODE", "auto")
    h = XdpHandle([], [])
    try:
        p0 = XdpProgram(steer_l2=False)
        h.programs.append(p0)
        for _ in ifaces[1:]:
            h.programs.append(XdpProgram(steer_l2=False, share_addresses=p0))
        p0.set_addresses(address_sets(cfg, vips, _rips(cfg)))
        for i, p in zip(ifaces, h.programs, strict=True):
            a = attach(i.name, p, mode=mode)
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
        batch = min(cfg.batch, RING)
        # every frame can be in a fill, RX or TX ring (or completion) of a socket, or
        # in the batch: room for all of them, so no ring ever starves another
        nframes = 1 << max(12, (nsock * (3 * RING) + 2 * batch - 1).bit_length())
        self.umem = Umem(nframes, FRAME)
        self.socks: list[Any] = []
        sock_mode = os.environ.get("FASTVS_XDP_COPY", "copy")
        try:
            for i in ifaces:  # the client side first: it owns the UMEM
                self.socks.append(XskSocket(self.umem, socket.if_nametoindex(i.name), QUEUE, rx_size=RING, tx_size=RING,
                                            fill_size=RING, comp_size=RING, batch=batch,
                                            mode=sock_mode))
            mtu = max(i.mtu for i in ifaces)
            self.pump = pump = XdpPump(self.socks[0], self.socks[-1], l2, batch=batch,
                                       max_frame=mtu + 14 + 4)
            for p, s in zip(handle.programs, self.socks, strict=True):
                p.set_socket(QUEUE, s.fileno())
        except BaseException:
            for s in self.socks:
                s.close()
            raise
        self.mode = self.socks[0].mode
        if not cfg.quiet:
            att = ", ".join(f"{a.ifname} {'native' if a.mode == 'drv' else 'generic'}"
                            for a in handle.attachments)
            _log(f"AF_XDP: XDP program on {att}; sockets on queue {QUEUE} in {self.mode} mode, "
                 f"{nframes} UMEM frames of {FRAME} bytes, batch {batch}")
        self.buf, self.off, self.caplen, self.wirelen = pump.buf, pump.off, pump.caplen, pump.wirelen
        self.ts, self.linktype, self.verdict = pump.ts, pump.linktype, pump.verdict
        self.receive = pump.receive
        self.transmit = pump.transmit
        self.release = pump.release
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

    def update_vips(self, vips: set[str]) -> None:
        """SIGHUP: the address maps again (VIPs and the reloaded real servers)."""
        try:
            rips = _rips(self.cfg)
        except Exception:  # noqa: BLE001 - the worker said why already; keep the maps
            return
        self.handle.programs[0].set_addresses(address_sets(self.cfg, vips, rips))

    def close(self) -> None:
        """Sockets out of the maps and closed, the programs detached and released."""
        self.buf = None
        self.pump.close()
        for p in self.handle.programs:
            with contextlib.suppress(Exception):
                p.clear_socket(QUEUE)
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
        if why is None:
            try:
                return [attach_all(cfg, ifaces, vips)]
            except (XdpError, BpfError, OSError) as e:
                why = str(e)
        _log(f"--io xdp: AF_XDP unavailable ({why}); using AF_PACKET {FALLBACK}")
        return list(afpacket.BACKEND.prepare(dataclasses.replace(cfg, io=FALLBACK), ifaces, vips))

    def open(self, handle: Any, cfg: ForwardConfig, ifaces: Sequence[Iface], l2: L2Stage) -> Any:
        if not isinstance(handle, XdpHandle):
            return afpacket.BACKEND.open(handle, dataclasses.replace(cfg, io=FALLBACK), ifaces, l2)
        try:
            return XdpIO(handle, cfg, ifaces, l2)
        except BaseException:
            handle.close()
            raise


BACKEND = XdpBackend()

__all__ = ["BACKEND", "FALLBACK", "XdpBackend", "XdpHandle", "XdpIO", "attach_all", "rx_queues",
           "unavailable"]
