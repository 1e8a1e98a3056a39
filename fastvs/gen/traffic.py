"""Seeded synthetic traffic: Ethernet/IPv4 TCP and UDP flows towards virtual services.

``generate(out_path, flows=..., packets=...)`` writes a classic pcap (``fastvs gen``);
``generate_batch(...)`` returns the same packets as one in-memory :class:`PacketBatch`.
The bytes depend only on the arguments: the same arguments and seed give the same
capture, byte for byte.

The traffic
-----------
* Clients are drawn from 100.64.0.0/10 with ports 1024-65535; every flow has its own
  5-tuple. Targets are the TCP/UDP IPv4 services of ``rules`` (TCP services get TCP
  flows, UDP services UDP flows, a flow's service is drawn uniformly among those of its
  protocol); without rules: 10.10.0.1:80/tcp and 10.10.0.1:53/udp.
* ``round(flows * udp_share)`` flows are UDP (0 or all when the rules have only one
  protocol), ``round(tcp_flows * rst_share)`` TCP flows end with a RST, the rest with a
  FIN/ACK close.
* TCP flow (``C`` client, ``S`` server; ``S`` packets only with ``replies``)::

      C SYN, [S SYN|ACK], C ACK,
      data: PSH|ACK segments of ``payload`` bytes, alternating C, S, C, S ... (with
            replies) or all from C (without), at least one (C and S with replies),
      close: C FIN|ACK, [S FIN|ACK], C ACK     or one RST|ACK (from C, or with replies
             from either side, drawn per flow)

  Sequence and acknowledgement numbers follow the bytes sent (random ISNs). Without
  replies, the client still acknowledges the server's (absent) SYN and FIN, as a capture
  of the client side only would show it.
* UDP flow: datagrams of ``payload`` bytes, request/response alternating with replies
  (at least one of each), requests only without.
* All frames: fixed fake MACs (director 02:00:00:00:00:02, clients' router
  02:00:00:00:00:01, real servers 02:00:00:00:00:03), IPv4 with DF, TTL 64, IP ID from a
  per-flow random base, valid IPv4 and TCP/UDP checksums, no TCP options.

Packet count: each flow first gets its minimum (TCP: 8 with replies / 5 without for a
FIN close, 6 / 4 for a RST; UDP: 2 / 1); the remainder ``packets - sum(minima)`` is spread
over the flows by a seeded multinomial draw with log-normal weights (a few big flows,
many small), as extra data segments or datagrams. So the capture has exactly
``max(packets, sum of minima)`` packets: when ``packets`` is too small for ``flows``
flows, every flow gets its minimum and the capture is larger than asked
(``GenResult.packets`` tells).

Time: at most ``concurrency`` flows are open at once (default ``min(flows, 1000)``);
each packet comes from an open flow drawn uniformly at random (seeded), a finished flow's
place goes to the next flow. Packet ``i`` has timestamp ``start_ns + i * gap_ns``. Keep
flows shorter than the IPVS timeouts (default gap: 1M packets span 10 s) or the
connections expire in the middle of flows.

Replies
-------
With ``replies=True`` (needs ``rules``) the real servers answer, from the real server a
director running ``rules`` will pick: src RIP:rport, dst client:cport, so the replies go
through the SNAT path. A shadow :class:`~fastvs.control.director.Director` processes the generated
packets in their final order, in segments: before the first reply of a flow whose real
server is not known yet, everything before it is fed to the shadow, then
``shadow.lookup`` gives the pick of every flow opened so far. Schedulers that count
connections (lc, wlc) therefore see exactly what a fresh director sees when it replays
the capture. Frames are built vectorised per chunk of packets (numpy, structured views
on one buffer); replies whose pick was not known at build time are patched (source and
checksums) just before their segment reaches the shadow.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastvs.capture.batch import (
    IFACE_DTYPE,
    LEN_DTYPE,
    LINK_DTYPE,
    OFF_DTYPE,
    TS_DTYPE,
    PacketBatch,
)
from fastvs.control.rules import Rules, VirtualService
from fastvs.errors import OptionError, RulesError
from fastvs.verdicts import FWD_IN as V_FWD_IN

__all__ = ["GenResult", "generate", "generate_batch"]

# -- constants ----------------------------------------------------------------------------
CLIENT_NET = 0x64400000  # 100.64.0.0/10
CLIENT_HOSTS = 1 << 22
PORT_LO = 1024
PORT_SPAN = 65536 - PORT_LO
TUPLE_SPACE = CLIENT_HOSTS * PORT_SPAN
MAX_FLOWS = 1 << 28  # every flow has its own client tuple and a few bytes of plan; past
# this, the plan alone (about 100 bytes a flow) outgrows a machine's memory

MAC_DIRECTOR = (0x02000000, 0x0002)  # (high 4 bytes, low 2 bytes)
MAC_CLIENT_LO = 0x0001  # clients' router 02:00:00:00:00:01
MAC_SERVER_LO = 0x0003  # real servers 02:00:00:00:00:03
TTL = 64
WINDOW = 64240
ETH_IP = 14 + 20

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

DEFAULT_TARGETS = (("tcp", "10.10.0.1", 80), ("udp", "10.10.0.1", 53))
MAX_PAYLOAD = 1460  # TCP segment in a 1500-byte MTU
CHUNK_BYTES = 8 << 20  # frame bytes built per chunk
CHUNK_MAX = 1 << 16  # packets per chunk at most
LOGNORMAL_SIGMA = 1.0

PAYLOAD_TEXT = b"fastvs synthetic payload 0123456789abcdefghijklmnopqrstuvwxyz\n"

# minimum packets of a flow: (tcp fin, tcp rst, udp) x (no replies, replies)
MIN_TCP_FIN = (5, 8)
MIN_TCP_RST = (4, 6)
MIN_UDP = (1, 2)


@dataclass
class GenResult:
    """What :func:`generate` produced. ``per_dest_conns`` ("RIP:port" -> connections the
    director schedules to that real server) is filled only with replies."""

    packets: int
    flows: int
    tcp_flows: int
    udp_flows: int
    path: str | None
    per_dest_conns: dict[str, int] = field(default_factory=dict)
    rst_flows: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Packets generated per second of wall time."""
        return self.packets / self.seconds if self.seconds > 0 else 0.0


# -- helpers ------------------------------------------------------------------------------
def _ip_u32(addr: str) -> int:
    return int(struct.unpack("!I", socket.inet_aton(addr))[0])


def _ip_str(v: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", int(v)))


def _payload(n: int) -> bytes:
    reps = n // len(PAYLOAD_TEXT) + 1
    return (PAYLOAD_TEXT * reps)[:n]


def _sum16(data: bytes) -> int:
    """Sum of the big-endian 16-bit words of ``data`` (zero-padded), unfolded."""
    if len(data) % 2:
        data += b"\x00"
    return int(np.frombuffer(data, dtype=">u2").astype(np.int64).sum()) if data else 0


def _fold(s: np.ndarray) -> np.ndarray:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s


_COMMON_FIELDS: list[tuple[str, str, int]] = [
    ("dmac_hi", ">u4", 0),
    ("dmac_lo", ">u2", 4),
    ("smac_hi", ">u4", 6),
    ("smac_lo", ">u2", 10),
    ("etype", ">u2", 12),
    ("vhl", "u1", 14),
    ("tos", "u1", 15),
    ("tlen", ">u2", 16),
    ("ipid", ">u2", 18),
    ("frag", ">u2", 20),
    ("ttl", "u1", 22),
    ("proto", "u1", 23),
    ("ipsum", ">u2", 24),
    ("src", ">u4", 26),
    ("dst", ">u4", 30),
    ("sport", ">u2", 34),
    ("dport", ">u2", 36),
]
_TCP_FIELDS = _COMMON_FIELDS + [
    ("seq", ">u4", 38),
    ("ack", ">u4", 42),
    ("offfl", ">u2", 46),
    ("win", ">u2", 48),
    ("l4sum", ">u2", 50),
    ("urg", ">u2", 52),
]
_UDP_FIELDS = _COMMON_FIELDS + [("ulen", ">u2", 38), ("l4sum", ">u2", 40)]


class _Group:
    """Frames of one shape (protocol, payload length): a template and a structured dtype."""

    def __init__(self, udp: bool, plen: int) -> None:
        self.udp = udp
        self.plen = plen
        self.hdr = ETH_IP + (8 if udp else 20)
        self.length = self.hdr + plen
        fields = _UDP_FIELDS if udp else _TCP_FIELDS
        self.dtype = np.dtype(
            {
                "names": [f[0] for f in fields],
                "formats": [f[1] for f in fields],
                "offsets": [f[2] for f in fields],
                "itemsize": self.length,
            }
        )
        tmpl = np.zeros(1, self.dtype)
        tmpl["dmac_hi"], tmpl["dmac_lo"] = MAC_DIRECTOR
        tmpl["smac_hi"], tmpl["smac_lo"] = MAC_DIRECTOR[0], MAC_CLIENT_LO
        tmpl["etype"] = 0x0800
        tmpl["vhl"] = 0x45
        tmpl["tlen"] = self.length - 14
        tmpl["frag"] = 0x4000
        tmpl["ttl"] = TTL
        tmpl["proto"] = 17 if udp else 6
        if udp:
            tmpl["ulen"] = 8 + plen
        else:
            tmpl["win"] = WINDOW
        row = bytearray(tmpl.view(np.uint8).tobytes())
        pay = _payload(plen)
        row[self.hdr :] = pay
        self.template = np.frombuffer(bytes(row), np.uint8)
        # constant parts of the checksums (everything but addresses, ports, ids, seq/ack,
        # flags); the payload starts at an even offset of the L4 header
        self.ip_const = 0x4500 + (self.length - 14) + 0x4000 + ((TTL << 8) | (17 if udp else 6))
        l4len = self.length - ETH_IP
        if udp:
            self.l4_const = 17 + l4len + (8 + plen) + _sum16(pay)
        else:
            self.l4_const = 6 + l4len + 0x5000 + WINDOW + _sum16(pay)


@dataclass
class _Plan:
    """Per-flow attributes, as numpy arrays indexed by flow number."""

    udp: np.ndarray  # bool
    caddr: np.ndarray  # int64 (u32 value)
    cport: np.ndarray
    vaddr: np.ndarray
    vport: np.ndarray
    svc: np.ndarray  # index into targets
    npk: np.ndarray  # packets of the flow
    ndata: np.ndarray  # data segments (TCP) / datagrams (UDP)
    rst: np.ndarray  # bool: TCP flow ends with RST
    rst_srv: np.ndarray  # bool: the RST comes from the server
    cisn: np.ndarray
    sisn: np.ndarray
    ipid: np.ndarray
    rip: np.ndarray  # the real server's address, once known (replies)
    rport: np.ndarray
    known: np.ndarray  # bool


def _targets(rules: Rules | None, replies: bool) -> list[tuple[str, str, int]]:
    if rules is None:
        if replies:
            raise OptionError("replies", "need rules (the real servers to answer from)")
        return list(DEFAULT_TARGETS)
    out: list[tuple[str, str, int]] = []
    svc: VirtualService
    for svc in rules.services:
        if svc.proto not in ("tcp", "udp") or svc.family != 4:
            continue
        if replies and not svc.reals:
            continue
        out.append((svc.proto, svc.addr, svc.port))
    if not out:
        raise RulesError("the rules have no IPv4 TCP or UDP service to send traffic to"
                         + (" (with real servers)" if replies else ""))
    return out


def _plan(
    targets: list[tuple[str, str, int]],
    flows: int,
    packets: int,
    replies: bool,
    seed: int,
    udp_share: float,
    rst_share: float,
) -> _Plan:
    rng = np.random.default_rng([seed, 0x67656E])  # "gen"
    r = 1 if replies else 0
    tcp_t = [i for i, t in enumerate(targets) if t[0] == "tcp"]
    udp_t = [i for i, t in enumerate(targets) if t[0] == "udp"]
    if not udp_t:
        n_udp = 0
    elif not tcp_t:
        n_udp = flows
    else:
        n_udp = min(flows, max(0, round(flows * udp_share)))
    udp = np.zeros(flows, bool)
    udp[rng.permutation(flows)[:n_udp]] = True

    svc = np.empty(flows, np.int64)
    if tcp_t:
        svc[~udp] = np.asarray(tcp_t)[rng.integers(0, len(tcp_t), flows - n_udp)]
    if udp_t:
        svc[udp] = np.asarray(udp_t)[rng.integers(0, len(udp_t), n_udp)]

    tcp_idx = np.flatnonzero(~udp)
    n_rst = min(len(tcp_idx), max(0, round(len(tcp_idx) * rst_share)))
    rst = np.zeros(flows, bool)
    rst[tcp_idx[rng.permutation(len(tcp_idx))[:n_rst]]] = True
    rst_srv = rst & (rng.random(flows) < 0.5) if replies else np.zeros(flows, bool)

    # distinct client (address, port) per flow
    tup = rng.integers(0, TUPLE_SPACE, flows, dtype=np.int64)
    while True:
        _, first = np.unique(tup, return_index=True)
        if len(first) == flows:
            break
        dup = np.ones(flows, bool)
        dup[first] = False
        tup[dup] = rng.integers(0, TUPLE_SPACE, int(dup.sum()), dtype=np.int64)
    caddr = CLIENT_NET + tup // PORT_SPAN
    cport = PORT_LO + tup % PORT_SPAN

    tv = np.asarray([_ip_u32(t[1]) for t in targets], np.int64)
    tp = np.asarray([t[2] for t in targets], np.int64)

    minimum = np.where(udp, MIN_UDP[r], np.where(rst, MIN_TCP_RST[r], MIN_TCP_FIN[r])).astype(np.int64)
    extra = packets - int(minimum.sum())
    npk = minimum.copy()
    if extra > 0:
        w = rng.lognormal(0.0, LOGNORMAL_SIGMA, flows)
        npk += rng.multinomial(extra, w / w.sum())
    hs = 3 if replies else 2
    close = np.where(rst, 1, hs)  # FIN close has as many packets as the handshake
    ndata = np.where(udp, npk, npk - hs - close)

    return _Plan(
        udp=udp,
        caddr=caddr,
        cport=cport,
        vaddr=tv[svc],
        vport=tp[svc],
        svc=svc,
        npk=npk,
        ndata=ndata,
        rst=rst,
        rst_srv=rst_srv,
        cisn=rng.integers(0, 1 << 32, flows, dtype=np.int64),
        sisn=rng.integers(0, 1 << 32, flows, dtype=np.int64),
        ipid=rng.integers(0, 1 << 16, flows, dtype=np.int64),
        rip=np.zeros(flows, np.int64),
        rport=np.zeros(flows, np.int64),
        known=np.zeros(flows, bool),
    )


class _Scheduler:
    """The interleaving: which flow sends each next packet (exact, seeded, streamed)."""

    def __init__(self, npk: np.ndarray, concurrency: int, seed: int) -> None:
        self.npk = npk.tolist()
        self.rng = np.random.default_rng([seed, 0x736368])  # "sch"
        c = min(concurrency, len(self.npk))
        self.sf = list(range(c))  # flow in each open slot
        self.sj = [0] * c  # its next packet
        self.sn = self.npk[:c]  # its packet count
        self.next_flow = c

    def take(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        u = self.rng.random(k).tolist()
        sf, sj, sn, npk = self.sf, self.sj, self.sn, self.npk
        nflows = len(npk)
        nxt = self.next_flow
        nopen = len(sf)
        fo = [0] * k
        jo = [0] * k
        for i in range(k):
            s = int(u[i] * nopen)
            fo[i] = sf[s]
            j = sj[s]
            jo[i] = j
            j += 1
            if j < sn[s]:
                sj[s] = j
            elif nxt < nflows:
                sf[s] = nxt
                sj[s] = 0
                sn[s] = npk[nxt]
                nxt += 1
            else:
                nopen -= 1
                sf[s] = sf[nopen]
                sj[s] = sj[nopen]
                sn[s] = sn[nopen]
                sf.pop()
                sj.pop()
                sn.pop()
        self.next_flow = nxt
        return np.asarray(fo, np.int64), np.asarray(jo, np.int64)


class _Chunk:
    """The frames of a run of consecutive packets, built vectorised."""

    def __init__(self, gen: _Generator, f: np.ndarray, j: np.ndarray, first: int) -> None:
        p = gen.plan
        pay = gen.payload
        replies = gen.replies
        n = len(f)
        self.f = f
        self.j = j
        udp = p.udp[f]
        self.udp = udp
        cisn, sisn = p.cisn[f], p.sisn[f]
        d = p.ndata[f]
        hs = 3 if replies else 2
        zero = np.zeros(n, np.int64)

        # --- TCP script ------------------------------------------------------------------
        k = j - hs  # data index
        c = k - d  # close index
        in_hs = j < hs
        in_data = (~in_hs) & (c < 0)
        cb = cisn + 1
        sb = sisn + 1
        if replies:
            kdir = k & 1
            cc, sc = (k + 1) >> 1, k >> 1
            ce, se = cb + pay * ((d + 1) >> 1), sb + pay * (d >> 1)
        else:
            kdir = zero
            cc, sc = k, zero
            ce, se = cb + pay * d, sb
        rst = p.rst[f]
        rsrv = p.rst_srv[f]
        if replies:
            conds = [
                j == 0, j == 1, j == 2,
                in_data & (kdir == 0), in_data & (kdir == 1),
                rst & rsrv, rst,
                c == 0, c == 1, c >= 2,
            ]
            dirs = [0, 1, 0, 0, 1, 1, 0, 0, 1, 0]
            flags = [SYN, SYN | ACK, ACK, PSH | ACK, PSH | ACK,
                     RST | ACK, RST | ACK, FIN | ACK, FIN | ACK, ACK]
            seqs = [cisn, sisn, cb, cb + pay * cc, sb + pay * sc, se, ce, ce, se, ce + 1]
            acks = [zero, cb, sb, sb + pay * sc, cb + pay * cc, ce, se, se, ce + 1, se + 1]
        else:
            conds = [j == 0, j == 1, in_data, rst, c == 0, c >= 1]
            dirs = [0, 0, 0, 0, 0, 0]
            flags = [SYN, ACK, PSH | ACK, RST | ACK, FIN | ACK, ACK]
            seqs = [cisn, cb, cb + pay * cc, ce, ce, ce + 1]
            acks = [zero, sb, sb, se, se, se + 1]
        tdir = np.select(conds, dirs, 0)
        tflags = np.select(conds, flags, 0)
        self.seq = np.select(conds, seqs, 0) & 0xFFFFFFFF
        self.ack = np.select(conds, acks, 0) & 0xFFFFFFFF
        self.flags = tflags
        tplen = np.where(in_data, pay, 0)

        # --- UDP: request / response ---------------------------------------------------
        udir = (j & 1) if replies else zero
        self.dir = np.where(udp, udir, tdir).astype(bool)
        self.plen = np.where(udp, pay, tplen)
        self.ipid = (p.ipid[f] + j) & 0xFFFF

        # --- layout: one region per frame shape, in group order -------------------------
        keys = (udp.astype(np.int64) << 32) | self.plen
        self.groups: list[_Group] = []
        self.gsel: list[np.ndarray] = []
        grp = np.empty(n, np.int64)
        row = np.empty(n, np.int64)
        off = np.empty(n, np.int64)
        caplen = np.empty(n, np.int64)
        base = 0
        for gi, key in enumerate(np.unique(keys).tolist()):
            g = gen.group(bool(key >> 32), key & 0xFFFFFFFF)
            sel = np.flatnonzero(keys == key)
            grp[sel] = gi
            row[sel] = np.arange(len(sel))
            off[sel] = base + np.arange(len(sel)) * g.length
            caplen[sel] = g.length
            self.groups.append(g)
            self.gsel.append(sel)
            base += len(sel) * g.length
        self.buf = np.empty(base, np.uint8)
        self.regions: list[tuple[int, int]] = []
        pos = 0
        for g, sel in zip(self.groups, self.gsel, strict=True):
            size = len(sel) * g.length
            self.buf[pos : pos + size].reshape(len(sel), g.length)[:] = g.template
            self.regions.append((pos, size))
            pos += size
        self.views = self.views_on(self.buf)
        self.grp = grp
        self.row = row
        self.off = off
        self.caplen = caplen
        self.ts = gen.start_ns + (first + np.arange(n, dtype=np.int64)) * gen.gap_ns
        self.stale = self.dir & ~p.known[f]
        self.write(np.arange(n), gen.plan, full=True)

    def views_on(self, buf: np.ndarray) -> list[np.ndarray]:
        """Structured views of each group's region of ``buf`` (this chunk's or a copy)."""
        return [buf[a : a + n].view(g.dtype) for (a, n), g in zip(self.regions, self.groups, strict=True)]

    def write(self, idx: np.ndarray, p: _Plan, *, full: bool) -> None:
        """Write the variable fields of packets ``idx`` (``full=False``: only what depends
        on the real server: the reply's source, source port and checksums)."""
        f = self.f[idx]
        srv = self.dir[idx]
        caddr, cport = p.caddr[f], p.cport[f]
        vaddr, vport = p.vaddr[f], p.vport[f]
        src = np.where(srv, p.rip[f], caddr)
        dst = np.where(srv, caddr, vaddr)
        sport = np.where(srv, p.rport[f], cport)
        dport = np.where(srv, cport, vport)
        ipid = self.ipid[idx]
        addr_sum = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
        ip_sum = addr_sum + ipid
        l4_sum = addr_sum + sport + dport
        udp = self.udp[idx]
        seq = self.seq[idx]
        ack = self.ack[idx]
        flags = self.flags[idx]
        tcp_var = (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF) + flags
        l4_sum = l4_sum + np.where(udp, 0, tcp_var)
        gi = self.grp[idx]
        for g_i, (g, view) in enumerate(zip(self.groups, self.views, strict=True)):
            m = gi == g_i
            if len(self.groups) > 1:
                if not m.any():
                    continue
                rows = self.row[idx[m]]
            else:
                m = slice(None)  # type: ignore[assignment]
                rows = self.row[idx]
            ipsum = 0xFFFF - _fold(ip_sum[m] + g.ip_const)
            l4 = 0xFFFF - _fold(l4_sum[m] + g.l4_const)
            if g.udp:
                l4 = np.where(l4 == 0, 0xFFFF, l4)
            view["src"][rows] = src[m]
            view["sport"][rows] = sport[m]
            view["ipsum"][rows] = ipsum
            view["l4sum"][rows] = l4
            if not full:
                continue
            view["dst"][rows] = dst[m]
            view["dport"][rows] = dport[m]
            view["ipid"][rows] = ipid[m]
            view["smac_lo"][rows] = np.where(srv[m], MAC_SERVER_LO, MAC_CLIENT_LO)
            if not g.udp:
                view["seq"][rows] = seq[m]
                view["ack"][rows] = ack[m]
                view["offfl"][rows] = 0x5000 | flags[m]

    def batch(self, buf: np.ndarray, a: int = 0, b: int | None = None) -> PacketBatch:
        sl = slice(a, b)
        n = len(self.off[sl])
        caplen = self.caplen[sl].astype(LEN_DTYPE)
        return PacketBatch(
            buf=buf,
            off=self.off[sl].astype(OFF_DTYPE),
            caplen=caplen,
            wirelen=caplen.copy(),
            ts=self.ts[sl].astype(TS_DTYPE),
            linktype=np.ones(n, LINK_DTYPE),
            iface=np.zeros(n, IFACE_DTYPE),
        )


class _Generator:
    def __init__(
        self,
        *,
        flows: int,
        packets: int,
        rules: Rules | None,
        replies: bool,
        seed: int,
        udp_share: float,
        rst_share: float,
        concurrency: int | None,
        payload: int,
        start_ns: int,
        gap_ns: int,
    ) -> None:
        if not 1 <= flows <= MAX_FLOWS:
            raise OptionError("flows", f"must be between 1 and {MAX_FLOWS}, not {flows}")
        if packets < 0:
            raise OptionError("packets", f"must not be negative, not {packets}")
        for name, share in (("udp_share", udp_share), ("rst_share", rst_share)):
            if not 0.0 <= share <= 1.0:  # NaN fails this too
                raise OptionError(name, f"must be between 0 and 1, not {share}")
        if payload < 0 or payload > MAX_PAYLOAD:
            raise OptionError("payload", f"must be between 0 and {MAX_PAYLOAD} bytes (a 1500-byte MTU), not {payload}")
        if seed < 0:
            raise OptionError("seed", f"must not be negative, not {seed}")
        if gap_ns < 0:
            raise OptionError("gap_ns", f"must not be negative, not {gap_ns}")
        if concurrency is None:
            concurrency = min(flows, 1000)
        if concurrency < 1:
            raise OptionError("concurrency", f"must be at least 1, not {concurrency}")
        self.replies = replies
        self.payload = payload
        self.start_ns = start_ns
        self.gap_ns = gap_ns
        self.targets = _targets(rules, replies)
        try:
            self.plan = _plan(self.targets, flows, packets, replies, seed, udp_share, rst_share)
        except MemoryError:
            raise OptionError("flows", f"{flows} flows do not fit in this machine's memory") from None
        self.total = int(self.plan.npk.sum())
        self.sched = _Scheduler(self.plan.npk, concurrency, seed)
        self.chunk = max(1024, min(CHUNK_MAX, CHUNK_BYTES // (ETH_IP + 20 + payload)))
        self._groups: dict[tuple[bool, int], _Group] = {}
        self.shadow: Any = None
        if replies:
            from fastvs.control.director import Director

            assert rules is not None
            self.shadow = Director(rules, seed=seed)
        self._pending: list[np.ndarray] = []  # flows opened, fed to the shadow, not looked up
        self.done = 0

    def group(self, udp: bool, plen: int) -> _Group:
        key = (udp, plen)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(udp, plen)
        return g

    def chunks(self) -> Any:
        """Yield the chunks in order, each fully built (and seen by the shadow)."""
        while self.done < self.total:
            k = min(self.chunk, self.total - self.done)
            f, j = self.sched.take(k)
            ch = _Chunk(self, f, j, self.done)
            if self.replies:
                self._shadow_chunk(ch)
            self.done += k
            yield ch

    # -- replies ----------------------------------------------------------------------------
    def _shadow_chunk(self, ch: _Chunk) -> None:
        p = self.plan
        n = len(ch.f)
        shadow_buf = ch.buf.copy()
        shadow_views = ch.views_on(shadow_buf)
        stale = np.flatnonzero(ch.stale)
        opens = np.flatnonzero(ch.j == 0)
        # first stale reply of each flow: the candidate segment boundaries
        if len(stale):
            _, first = np.unique(ch.f[stale], return_index=True)
            cand = np.sort(stale[first])
        else:
            cand = stale
        cand_f = ch.f[cand].tolist()
        known = p.known
        a = 0
        for pos, fl in zip(cand.tolist(), cand_f, strict=True):
            if known[fl]:
                continue
            self._feed(ch, shadow_buf, shadow_views, stale, opens, a, pos)
            if not known[fl]:
                raise RuntimeError(f"internal: flow {fl} replies before it opened")
            a = pos
        self._feed(ch, shadow_buf, shadow_views, stale, opens, a, n)

    def _feed(self, ch: _Chunk, sbuf: np.ndarray, sviews: list[np.ndarray], stale: np.ndarray,
              opens: np.ndarray, a: int, b: int) -> None:
        if b <= a:
            return
        p = self.plan
        s0, s1 = np.searchsorted(stale, [a, b])
        if s1 > s0:
            idx = stale[s0:s1]
            ch.write(idx, p, full=False)
            gi = ch.grp[idx]
            for g_i, (v, sv) in enumerate(zip(ch.views, sviews, strict=True)):
                rows = ch.row[idx[gi == g_i]]
                if len(rows):
                    sv[rows] = v[rows]
        seg = ch.batch(sbuf, a, b)
        self.shadow.process(seg)
        o0, o1 = np.searchsorted(opens, [a, b])
        idx = opens[o0:o1]
        # the opening packet, DNAT'd by the shadow, carries the pick: its new destination
        # (the same as shadow.lookup's daddr/dport, without a lookup per flow)
        fwd = seg.verdict[idx - a] == V_FWD_IN
        fl = ch.f[idx[fwd]]
        o = ch.off[idx[fwd]]
        p.rip[fl] = ((sbuf[o + 30].astype(np.int64) << 24) | (sbuf[o + 31].astype(np.int64) << 16)
                     | (sbuf[o + 32].astype(np.int64) << 8) | sbuf[o + 33])
        p.rport[fl] = (sbuf[o + 36].astype(np.int64) << 8) | sbuf[o + 37]
        p.known[fl] = True
        if not fwd.all():
            self._resolve(ch.f[idx[~fwd]])

    def _resolve(self, flows: np.ndarray) -> None:
        """Picks by ``shadow.lookup`` (opening packets the shadow did not DNAT: DR/TUN)."""
        p = self.plan
        lookup = self.shadow.lookup
        for fl in flows.tolist():
            proto = "udp" if p.udp[fl] else "tcp"
            c = lookup(proto, _ip_str(p.caddr[fl]), int(p.cport[fl]),
                       _ip_str(p.vaddr[fl]), int(p.vport[fl]))
            if c is None:
                t = self.targets[int(p.svc[fl])]
                raise ValueError(
                    f"the director made no connection for flow {fl} to {t[0]} {t[1]}:{t[2]} "
                    "(no available real server, or the connection table is full)"
                )
            p.rip[fl] = _ip_u32(c["daddr"])
            p.rport[fl] = c["dport"]
            p.known[fl] = True

    def result(self, path: str | None, seconds: float) -> GenResult:
        p = self.plan
        per: dict[str, int] = {}
        if self.replies:
            cnt = Counter(zip(p.rip.tolist(), p.rport.tolist(), strict=True))
            per = {f"{_ip_str(a)}:{port}": n for (a, port), n in sorted(cnt.items())}
        n_udp = int(p.udp.sum())
        return GenResult(
            packets=self.done,
            flows=len(p.udp),
            tcp_flows=len(p.udp) - n_udp,
            udp_flows=n_udp,
            path=path,
            per_dest_conns=per,
            rst_flows=int(p.rst.sum()),
            seconds=seconds,
        )


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="pkt", unit_scale=True, file=sys.stderr, desc="gen")


def generate(
    out_path: str | Path | None,
    *,
    flows: int,
    packets: int,
    rules: Rules | None = None,
    replies: bool = False,
    seed: int = 0,
    udp_share: float = 0.2,
    rst_share: float = 0.1,
    concurrency: int | None = None,
    payload: int = 0,
    start_ns: int = 1_700_000_000 * 10**9,
    gap_ns: int = 10_000,
    progress: bool = False,
) -> GenResult:
    """Generate the traffic and write it to ``out_path`` (classic pcap, Ethernet; µs
    timestamps unless ``start_ns``/``gap_ns`` need ns) in chunks, memory bounded.
    ``out_path=None`` generates without writing (timing). See the module doc."""
    from fastvs.capture.pcap import Writer

    t0 = time.perf_counter()
    gen = _Generator(
        flows=flows, packets=packets, rules=rules, replies=replies, seed=seed,
        udp_share=udp_share, rst_share=rst_share, concurrency=concurrency,
        payload=payload, start_ns=start_ns, gap_ns=gap_ns,
    )
    path = None if out_path is None else str(out_path)
    nanosecond = bool(start_ns % 1000 or gap_ns % 1000)
    bar = _progress(progress, gen.total)
    writer = Writer(path, linktype=1, nanosecond=nanosecond) if path is not None else None
    try:
        for ch in gen.chunks():
            if writer is not None:
                writer.write(ch.batch(ch.buf))
            if bar is not None:
                bar.update(len(ch.f))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    if writer is not None:
        writer.close()
    return gen.result(path, time.perf_counter() - t0)


def generate_batch(
    *,
    flows: int,
    packets: int,
    rules: Rules | None = None,
    replies: bool = False,
    seed: int = 0,
    udp_share: float = 0.2,
    rst_share: float = 0.1,
    concurrency: int | None = None,
    payload: int = 0,
    start_ns: int = 1_700_000_000 * 10**9,
    gap_ns: int = 10_000,
    progress: bool = False,
) -> PacketBatch:
    """The same packets as :func:`generate` in one in-memory batch (fresh verdicts)."""
    gen = _Generator(
        flows=flows, packets=packets, rules=rules, replies=replies, seed=seed,
        udp_share=udp_share, rst_share=rst_share, concurrency=concurrency,
        payload=payload, start_ns=start_ns, gap_ns=gap_ns,
    )
    bar = _progress(progress, gen.total)
    bufs: list[np.ndarray] = []
    offs: list[np.ndarray] = []
    lens: list[np.ndarray] = []
    tss: list[np.ndarray] = []
    base = 0
    try:
        for ch in gen.chunks():
            bufs.append(ch.buf)
            offs.append(ch.off + base)
            lens.append(ch.caplen)
            tss.append(ch.ts)
            base += len(ch.buf)
            if base >= 1 << 32:
                raise ValueError("the batch would exceed 4 GiB; use generate() to a file")
            if bar is not None:
                bar.update(len(ch.f))
    finally:
        if bar is not None:
            bar.close()
    n = gen.total
    caplen = np.concatenate(lens).astype(LEN_DTYPE) if lens else np.zeros(0, LEN_DTYPE)
    return PacketBatch(
        buf=np.concatenate(bufs) if bufs else np.zeros(0, np.uint8),
        off=np.concatenate(offs).astype(OFF_DTYPE) if offs else np.zeros(0, OFF_DTYPE),
        caplen=caplen,
        wirelen=caplen.copy(),
        ts=np.concatenate(tss).astype(TS_DTYPE) if tss else np.zeros(0, TS_DTYPE),
        linktype=np.ones(n, LINK_DTYPE),
        iface=np.zeros(n, IFACE_DTYPE),
    )
