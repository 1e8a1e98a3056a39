"""The AF_PACKET backends (``ring-v2``, ``ring-v3``, ``mmsg``): opening the data sockets
(filter, ring, fanout group) and the :class:`AfPacketIO` a worker receives and
transmits with. The per-frame work is fastvs/live/_afpacket.pyx (:class:`Pump`).

Sockets are opened by the supervisor, all of them before the workers fork and in
worker order, so that socket *i* of every interface's PACKET_FANOUT group belongs to
worker *i*; the group is steered by the classic BPF program of fastvs/live/bpf.py,
which sends both directions of a connection to one worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fastvs.live import _afpacket as A
from fastvs.live._l2 import L2Stage
from fastvs.live.bpf import fanout_program, socket_filter
from fastvs.live.config import ForwardConfig
from fastvs.live.iface import Iface, iface_info

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SOCKET_BUF = 8 << 20


def _setbuf(s: socket.socket, force: int, plain: int, size: int) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, plain, size)


def ring_frame_size(mtu: int, block_size: int) -> int:
    """TPACKET_V2 frame slot for an MTU: header, sockaddr_ll, Ethernet + 2 VLAN tags."""
    size = 2048
    while size < mtu + 18 + 128:
        size *= 2
    return min(size, block_size)


def open_data_socket(ifname: str, cfg: ForwardConfig | None = None) -> socket.socket:
    """An AF_PACKET socket for IP frames addressed to this host's MAC on ``ifname``.

    The socket filter is attached before the socket is bound to ETH_P_ALL, so nothing
    else is ever queued. With a ring (``cfg.io`` ``ring-v2``/``ring-v3``) the socket gets its RX
    ring here, before the bind (and before any PACKET_FANOUT join); otherwise
    PACKET_AUXDATA reports the checksum status of each frame to recvmmsg."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        A.attach_filter(s.fileno(), socket_filter())
        if cfg is not None and cfg.io != "mmsg":
            A.setup_rx_ring(s.fileno(), cfg.ring_block_size, cfg.ring_blocks, cfg.ring_tov_ms,
                            version=3 if cfg.io == "ring-v3" else 2,
                            frame_size=ring_frame_size(iface_info(ifname).mtu, cfg.ring_block_size))
        s.setsockopt(A.SOL_PACKET, A.OPT_AUXDATA, 1)
        with contextlib.suppress(OSError):
            s.setsockopt(A.SOL_PACKET, A.OPT_IGNORE_OUTGOING, 1)
        with contextlib.suppress(OSError):
            s.setsockopt(A.SOL_PACKET, A.OPT_QDISC_BYPASS, 1)
        _setbuf(s, SO_RCVBUFFORCE, socket.SO_RCVBUF, SOCKET_BUF)
        _setbuf(s, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUF)
        s.bind((ifname, ETH_P_ALL))
    except BaseException:
        s.close()
        raise
    return s


def join_fanout(s: socket.socket, group: int, program: bytes) -> None:
    s.setsockopt(A.SOL_PACKET, A.OPT_FANOUT, (group & 0xFFFF) | (A.FANOUT_CBPF << 16))
    A.attach_filter(s.fileno(), program, fanout=True)


def drain(s: socket.socket) -> int:
    n = 0
    while True:
        try:
            s.recv(65536, socket.MSG_DONTWAIT)
            n += 1
        except (BlockingIOError, InterruptedError):
            return n


@dataclass
class Sockets:
    """One worker's data sockets (one per interface), opened before the fork."""

    socks: list[socket.socket]
    fanout: bool

    def close(self) -> None:
        for s in self.socks:
            s.close()


class AfPacketIO:
    """A worker's FrameIO (fastvs/live/io.py) over its AF_PACKET sockets. The hot calls
    (``receive``, ``transmit``) are the Pump's own methods, bound here without a
    Python layer in between."""

    def __init__(self, sockets: Sockets, cfg: ForwardConfig, ifaces: Sequence[Iface], l2: L2Stage) -> None:
        self.kind = cfg.io
        self.sockets = sockets
        self.workers = cfg.workers
        mtu = max(i.mtu for i in ifaces)
        client, server = sockets.socks[0], sockets.socks[-1]
        self.pump = pump = A.Pump(
            client.fileno(), server.fileno(), l2, batch=cfg.batch,
            slot=max(2048, (mtu + 18 + 63) // 64 * 64), max_frame=mtu + 14 + 4, io=cfg.io,
            ring_block_size=cfg.ring_block_size, ring_blocks=cfg.ring_blocks,
            ring_frame_size=ring_frame_size(mtu, cfg.ring_block_size), spin_us=cfg.spin_us)
        self.buf, self.off, self.caplen, self.wirelen = pump.buf, pump.off, pump.caplen, pump.wirelen
        self.ts, self.linktype, self.verdict = pump.ts, pump.linktype, pump.verdict
        self.receive = pump.receive
        self.transmit = pump.transmit
        self.release = pump.release
        self.bind_engine = pump.bind_engine
        self.run = pump.run
        self.watch = pump.watch
        self.fds = pump.fds
        self.kernel = {"rx_kernel_packets": 0, "rx_kernel_drops": 0}

    @property
    def aux_ready(self) -> int:
        return int(self.pump.aux_ready)

    def counters(self) -> dict[str, int]:
        """The Pump's counters and the kernel's (PACKET_STATISTICS: queued, and
        dropped because the ring or receive buffer was full)."""
        for s in self.sockets.socks:
            packets, drops = A.kernel_drops(s.fileno())
            self.kernel["rx_kernel_packets"] += packets
            self.kernel["rx_kernel_drops"] += drops
        c = self.pump.counters()
        c.update(self.kernel)
        return c

    def update_vips(self, vips: set[str], rips: set[str] | None = None) -> None:
        if self.sockets.fanout:
            prog = fanout_program(vips, self.workers)
            for s in self.sockets.socks:
                A.attach_filter(s.fileno(), prog, fanout=True)

    def close(self) -> None:
        """Unmap the rings and close the sockets; the batch arrays go with them."""
        self.buf = None
        self.pump.close()
        self.sockets.close()


class AfPacketBackend:
    """``prepare``: every worker's data sockets, fanout groups joined in worker order;
    ``open``: a worker's :class:`AfPacketIO`."""

    def prepare(self, cfg: ForwardConfig, ifaces: Sequence[Iface], vips: Iterable[str]) -> list[Sockets]:
        fanout = cfg.workers > 1
        prog = fanout_program(vips, cfg.workers) if fanout else b""
        group_base = (os.getpid() * 7) & 0xFFFF
        out: list[Sockets] = []
        try:
            for _w in range(cfg.workers):
                socks = Sockets([], fanout)
                out.append(socks)
                for k, i in enumerate(ifaces):
                    s = open_data_socket(i.name, cfg)
                    socks.socks.append(s)
                    if fanout:
                        join_fanout(s, (group_base + k) & 0xFFFF, prog)
        except BaseException:
            for socks in out:
                socks.close()
            raise
        for socks in out:  # what arrived before every group was complete
            for s in socks.socks:
                drain(s)
        return out

    def open(self, handle: Sockets, cfg: ForwardConfig, ifaces: Sequence[Iface], l2: L2Stage) -> AfPacketIO:
        return AfPacketIO(handle, cfg, ifaces, l2)


BACKEND = AfPacketBackend()

__all__ = ["BACKEND", "AfPacketBackend", "AfPacketIO", "Sockets", "drain", "join_fanout",
           "open_data_socket", "ring_frame_size"]
