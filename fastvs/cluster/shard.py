"""Shard a capture as an ECMP router in front of N directors would: a hash of each flow.

Every packet gets a director number from a hash of the *client* side of its flow, so that
both directions of a connection meet on one director: the client is the source of a
packet, unless the source is a server endpoint of the rules (a virtual service
``VIP:port`` or a real server ``RIP:port``; port 0 means any port), in which case the
packet is a reply and the client is its destination. An ICMP/ICMPv6 error is keyed by
the packet it quotes (the flow ip_vs_in_icmp / ip_vs_out_icmp look it up as). The later
fragments of a datagram follow its first fragment (which carries the ports), as the
kernel's reassembly before IPVS makes them do.

The fields hashed (``--ecmp-hash``):

- ``l4`` (default): client address, client port and IP protocol;
- ``l3``: the client address;
- ``net/LEN[,LEN6]``: the client's network, the address masked to an IPv4 prefix of LEN
  bits and an IPv6 prefix of LEN6 (default 128, as ipvsadm's ``-M`` default) — what
  persistence (``-p`` with ``-M``) needs to see all of a client network on one director.

Parsing and hashing are numpy over a whole PacketBatch: no Python object per packet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from fastvs.capture.batch import LEN_DTYPE, OFF_DTYPE, PacketBatch
from fastvs.control.rules import Rules
from fastvs.errors import OptionError

__all__ = ["EcmpHash", "Sharder", "parse_ecmp_hash", "take"]

MAX_VLAN_TAGS = 8  # as the engine's l2_ethertype
MAX_EXT_HEADERS = 16  # IPv6 extension headers followed (the engine's bound)
FRAG_MEMORY = 1 << 16  # first fragments remembered across chunks
L4_PROTOS = (6, 17, 132)  # TCP, UDP, SCTP: ports at the start of the header

# link types (pcap LINKTYPE_*), as fastvs/datapath/_packet.pxd reads them
LT_NULL, LT_EN10MB, LT_RAW_OLD, LT_RAW_OLD2, LT_RAW = 0, 1, 12, 14, 101
LT_LOOP, LT_LINUX_SLL, LT_IPV4, LT_IPV6, LT_LINUX_SLL2 = 108, 113, 228, 229, 276
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)

V4_MAPPED = np.uint64(0xFFFF_0000_0000)  # ::ffff:a.b.c.d, so IPv4 and IPv6 never meet
ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
ANY_PORT = 0x1_0000  # a server endpoint that matches every port
_M1 = np.uint64(0xFF51AFD7ED558CCD)  # murmur3's fmix64 constants
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_K = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


@dataclass(frozen=True)
class EcmpHash:
    """What the router hashes: ``ports`` (l4: client port and protocol too) and the
    client-address prefix lengths for IPv4 and IPv6."""

    ports: bool = True
    v4len: int = 32
    v6len: int = 128

    @property
    def name(self) -> str:
        if self.ports:
            return "l4"
        if (self.v4len, self.v6len) == (32, 128):
            return "l3"
        return f"net/{self.v4len},{self.v6len}"


def parse_ecmp_hash(text: str) -> EcmpHash:
    """``l4``, ``l3`` or ``net/LEN[,LEN6]`` -> EcmpHash; anything else is an OptionError."""
    t = text.strip().lower()
    if t == "l4":
        return EcmpHash()
    if t == "l3":
        return EcmpHash(ports=False)
    if t.startswith("net/"):
        parts = t[4:].split(",")
        try:
            lens = [int(p) for p in parts]
        except ValueError:
            lens = []
        if len(lens) in (1, 2) and 0 <= lens[0] <= 32 and (len(lens) == 1 or 0 <= lens[1] <= 128):
            return EcmpHash(ports=False, v4len=lens[0], v6len=lens[1] if len(lens) == 2 else 128)
        raise OptionError("ecmp_hash", f"{text!r}: expected net/LEN[,LEN6] (IPv4 prefix 0-32, "
                          "IPv6 prefix 0-128)")
    raise OptionError("ecmp_hash", f"unknown hash fields {text!r} (l4, l3 or net/LEN[,LEN6])")


# -- hashing ------------------------------------------------------------------------------
def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _S33)
    h = h * _M1
    h = h ^ (h >> _S33)
    h = h * _M2
    return h ^ (h >> _S33)


def _hash(*words: np.ndarray) -> np.ndarray:
    """A 64-bit hash of equal-length uint64 columns (fmix64 chained)."""
    h = np.full(len(words[0]), _K, dtype=np.uint64)
    for w in words:
        h = _fmix(h ^ w.astype(np.uint64, copy=False))
    return h


def _addr_words(addr: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return 0, int(V4_MAPPED) | int(ip)
    v = int(ip)
    return v >> 64, v & 0xFFFF_FFFF_FFFF_FFFF


def _prefix_masks(v4len: int, v6len: int) -> tuple[int, int, int]:
    """(hi mask, lo mask) for IPv6, and the lo mask for IPv4-mapped addresses."""
    m6 = ((1 << 128) - 1) ^ ((1 << (128 - v6len)) - 1)
    m4 = 0xFFFF_FFFF ^ ((1 << (32 - v4len)) - 1)
    return m6 >> 64, m6 & 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_0000_0000 | m4


# -- parsing ------------------------------------------------------------------------------
class _Reader:
    """Big-endian loads at per-packet positions (absolute offsets into ``buf``), each
    load valid only where the packet's captured bytes reach that far."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf
        self.last = max(len(buf) - 1, 0)
        if len(buf) == 0:
            self.buf = np.zeros(1, np.uint8)

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.buf[np.minimum(pos, self.last)].astype(np.int64)

    def u16(self, pos: np.ndarray) -> np.ndarray:
        return (self.u8(pos) << 8) | self.u8(pos + 1)

    def u32(self, pos: np.ndarray) -> np.ndarray:
        return (self.u16(pos) << 16) | self.u16(pos + 2)

    def u64(self, pos: np.ndarray) -> np.ndarray:
        return (self.u32(pos).astype(np.uint64) << np.uint64(32)) | self.u32(pos + 4).astype(np.uint64)


@dataclass
class Flows:
    """Per packet: ``ip`` (an IPv4/IPv6 header was found), the tuple the flow is keyed
    by (source/destination address as two uint64 words, ports, protocol), and the
    fragment state: ``frag`` 0 none, 1 a later fragment, 2 a first fragment; ``fkey``
    the datagram's (source, destination, id, protocol) hash."""

    ip: np.ndarray
    shi: np.ndarray
    slo: np.ndarray
    dhi: np.ndarray
    dlo: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    proto: np.ndarray
    frag: np.ndarray
    fkey: np.ndarray


def parse_flows(batch: PacketBatch) -> Flows:
    """Find each packet's IP header, addresses, protocol, ports (the quoted packet's for
    an ICMP error) and fragment state, over the whole batch at once."""
    n = len(batch)
    rd = _Reader(np.asarray(batch.buf, np.uint8))
    base = batch.off.astype(np.int64)
    cap = batch.caplen.astype(np.int64)
    lt = batch.linktype.astype(np.int64)

    def have(rel_end: np.ndarray) -> np.ndarray:
        return rel_end <= cap

    af = np.zeros(n, np.int64)
    l3 = np.zeros(n, np.int64)
    # Ethernet and Linux cooked v1: an ethertype, then any 802.1Q/802.1ad tags
    etpos = np.where(lt == LT_EN10MB, 12, 14)
    eth = ((lt == LT_EN10MB) | ((lt == LT_LINUX_SLL) & (cap >= 16))) & have(etpos + 2)
    et = np.where(eth, rd.u16(base + etpos), -1)
    for _ in range(MAX_VLAN_TAGS):
        tagged = eth & np.isin(et, VLAN_TPIDS) & have(etpos + 6)
        if not tagged.any():
            break
        et = np.where(tagged, rd.u16(base + etpos + 4), et)
        etpos = np.where(tagged, etpos + 4, etpos)
    eth &= ~np.isin(et, VLAN_TPIDS)
    l3 = np.where(eth, etpos + 2, l3)
    af = np.where(eth & (et == ETH_P_IP), 4, np.where(eth & (et == ETH_P_IPV6), 6, af))
    # Linux cooked v2: the protocol first, the header 20 bytes
    sll2 = (lt == LT_LINUX_SLL2) & (cap >= 20)
    et2 = rd.u16(base)
    l3 = np.where(sll2, 20, l3)
    af = np.where(sll2 & (et2 == ETH_P_IP), 4, np.where(sll2 & (et2 == ETH_P_IPV6), 6, af))
    # raw IP: the version nibble decides
    raw = np.isin(lt, (LT_RAW, LT_RAW_OLD, LT_RAW_OLD2)) & (cap >= 1)
    ver = rd.u8(base) >> 4
    af = np.where(raw & ((ver == 4) | (ver == 6)), ver, af)
    af = np.where(lt == LT_IPV4, 4, np.where(lt == LT_IPV6, 6, af))
    # BSD loopback: a 4-byte address family (host order for NULL, network for LOOP)
    loop = np.isin(lt, (LT_NULL, LT_LOOP)) & (cap >= 4)
    b0, b1, b2, b3 = (rd.u8(base + k) for k in range(4))
    big = (lt == LT_LOOP) | ((b0 == 0) & (b1 == 0))
    fam = np.where(big, (b0 << 24) | (b1 << 16) | (b2 << 8) | b3, b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))
    l3 = np.where(loop, 4, l3)
    af = np.where(loop & (fam == 2), 4, np.where(loop & np.isin(fam, (10, 24, 28, 30)), 6, af))

    z = np.zeros(n, np.uint64)
    shi, slo, dhi, dlo = z.copy(), z.copy(), z.copy(), z.copy()
    proto = np.zeros(n, np.int64)
    l4 = np.zeros(n, np.int64)
    frag = np.zeros(n, np.int64)
    fid = np.zeros(n, np.int64)
    p3 = base + l3

    v4 = (af == 4) & have(l3 + 20) & ((rd.u8(p3) >> 4) == 4)
    if v4.any():
        slo = np.where(v4, V4_MAPPED | rd.u32(p3 + 12).astype(np.uint64), slo)
        dlo = np.where(v4, V4_MAPPED | rd.u32(p3 + 16).astype(np.uint64), dlo)
        proto = np.where(v4, rd.u8(p3 + 9), proto)
        l4 = np.where(v4, l3 + (rd.u8(p3) & 0x0F) * 4, l4)
        fo = rd.u16(p3 + 6)
        frag = np.where(v4 & ((fo & 0x3FFF) != 0), np.where((fo & 0x1FFF) != 0, 1, 2), frag)
        fid = np.where(v4, rd.u16(p3 + 4), fid)

    v6 = (af == 6) & have(l3 + 40) & ((rd.u8(p3) >> 4) == 6)
    if v6.any():
        shi = np.where(v6, rd.u64(p3 + 8), shi)
        slo = np.where(v6, rd.u64(p3 + 16), slo)
        dhi = np.where(v6, rd.u64(p3 + 24), dhi)
        dlo = np.where(v6, rd.u64(p3 + 32), dlo)
        nh = rd.u8(p3 + 6)
        pos = l3 + 40
        walking = v6.copy()
        for _ in range(MAX_EXT_HEADERS):
            walking &= np.isin(nh, (0, 43, 44, 51, 60)) & have(pos + 8)
            if not walking.any():
                break
            here = base + pos
            is_frag = walking & (nh == 44)
            ffo = rd.u16(here + 2)
            frag = np.where(is_frag & ((ffo & 0xFFF9) != 0), np.where((ffo & 0xFFF8) != 0, 1, 2), frag)
            fid = np.where(is_frag, rd.u32(here + 4), fid)
            hlen = np.where(nh == 44, 8, np.where(nh == 51, (rd.u8(here + 1) + 2) * 4,
                                                  (rd.u8(here + 1) + 1) * 8))
            nxt = rd.u8(here)
            nh = np.where(walking, nxt, nh)
            pos = np.where(walking, pos + hlen, pos)
            walking &= ~(is_frag & (frag == 1))  # a later fragment: no header beyond
        proto = np.where(v6, nh, proto)
        l4 = np.where(v6, pos, l4)

    ip = v4 | v6
    p4 = base + l4
    ported = ip & np.isin(proto, L4_PROTOS) & (frag != 1) & have(l4 + 4)
    sport = np.where(ported, rd.u16(p4), 0)
    dport = np.where(ported, rd.u16(p4 + 2), 0)
    fkey = np.where(frag != 0, _hash(shi, slo, dhi, dlo, fid.astype(np.uint64), proto.astype(np.uint64)), z)

    # ICMP errors: the flow is the quoted packet's (its header follows the 8-byte ICMP one)
    icmp_type = rd.u8(p4)
    q3 = l4 + 8
    pq = base + q3
    e4 = ip & (frag != 1) & (proto == 1) & np.isin(icmp_type, (3, 4, 5, 11, 12)) & have(q3 + 20) \
        & ((rd.u8(pq) >> 4) == 4)
    e6 = ip & (frag != 1) & (proto == 58) & np.isin(icmp_type, (1, 2, 3, 4)) & have(q3 + 40) \
        & ((rd.u8(pq) >> 4) == 6)
    if e4.any() or e6.any():
        ql4 = np.where(e4, q3 + (rd.u8(pq) & 0x0F) * 4, q3 + 40)
        qproto = np.where(e4, rd.u8(pq + 9), rd.u8(pq + 6))
        shi = np.where(e6, rd.u64(pq + 8), np.where(e4, np.uint64(0), shi))
        slo = np.where(e6, rd.u64(pq + 16), np.where(e4, V4_MAPPED | rd.u32(pq + 12).astype(np.uint64), slo))
        dhi = np.where(e6, rd.u64(pq + 24), np.where(e4, np.uint64(0), dhi))
        dlo = np.where(e6, rd.u64(pq + 32), np.where(e4, V4_MAPPED | rd.u32(pq + 16).astype(np.uint64), dlo))
        err = e4 | e6
        qported = err & np.isin(qproto, L4_PROTOS) & have(ql4 + 4)
        sport = np.where(err, np.where(qported, rd.u16(base + ql4), 0), sport)
        dport = np.where(err, np.where(qported, rd.u16(base + ql4 + 2), 0), dport)
        proto = np.where(err, qproto, proto)
    return Flows(ip, shi, slo, dhi, dlo, sport, dport, proto, frag, fkey)


# -- the router -----------------------------------------------------------------------------
def server_endpoints(rules: Rules) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the rules' server endpoints (virtual services and real servers):
    (address, port) pairs, and addresses that match any port (port 0, firewall-mark
    real servers)."""
    exact: list[tuple[int, int, int]] = []
    anyport: list[tuple[int, int, int]] = []
    for svc in rules.services:
        if svc.proto != "fwmark" and svc.addr:
            hi, lo = _addr_words(svc.addr)
            (exact if svc.port else anyport).append((hi, lo, svc.port or ANY_PORT))
        for rs in svc.reals:
            hi, lo = _addr_words(rs.addr)
            port = rs.port or (svc.port if svc.proto != "fwmark" else 0)
            (exact if port else anyport).append((hi, lo, port or ANY_PORT))

    def hashes(rows: list[tuple[int, int, int]]) -> np.ndarray:
        if not rows:
            return np.zeros(0, np.uint64)
        a = np.array(rows, dtype=np.uint64)
        return np.unique(_hash(a[:, 0], a[:, 1], a[:, 2]))

    return hashes(exact), hashes(anyport)


class Sharder:
    """Give each packet of a stream of batches its director, ``0 .. directors - 1``.

    Keeps, across batches, the director of recent first fragments so that a datagram's
    later fragments follow it."""

    def __init__(self, rules: Rules, directors: int, ecmp: EcmpHash | None = None) -> None:
        if directors < 1:
            raise OptionError("directors", f"must be at least 1, not {directors}")
        self.directors = directors
        self.ecmp = ecmp or EcmpHash()
        self.exact, self.anyport = server_endpoints(rules)
        hi6, lo6, lo4 = _prefix_masks(self.ecmp.v4len, self.ecmp.v6len)
        self._hi6, self._lo6, self._lo4 = np.uint64(hi6), np.uint64(lo6), np.uint64(lo4)
        self._frag_keys = np.zeros(0, np.uint64)
        self._frag_dirs = np.zeros(0, np.int32)

    def _is_server(self, hi: np.ndarray, lo: np.ndarray, port: np.ndarray) -> np.ndarray:
        hit = np.isin(_hash(hi, lo, port.astype(np.uint64)), self.exact)
        if len(self.anyport):
            hit |= np.isin(_hash(hi, lo, np.full(len(hi), ANY_PORT, np.uint64)), self.anyport)
        return hit

    def keys(self, f: Flows) -> np.ndarray:
        """The ECMP hash of each packet's client side (0 for packets that are not IP)."""
        reply = self._is_server(f.shi, f.slo, f.sport)
        chi = np.where(reply, f.dhi, f.shi)
        clo = np.where(reply, f.dlo, f.slo)
        cport = np.where(reply, f.dport, f.sport).astype(np.uint64)
        is4 = chi == 0
        is4 &= (clo & ~np.uint64(0xFFFF_FFFF)) == V4_MAPPED
        chi = np.where(is4, chi, chi & self._hi6)
        clo = np.where(is4, clo & self._lo4, clo & self._lo6)
        if self.ecmp.ports:
            h = _hash(chi, clo, cport | (f.proto.astype(np.uint64) << np.uint64(16)))
        else:
            h = _hash(chi, clo)
        return np.where(f.ip, h, np.uint64(0))

    def assign(self, batch: PacketBatch) -> np.ndarray:
        """Each packet's director (int32), by the ECMP hash of its flow."""
        if self.directors == 1 or len(batch) == 0:
            return np.zeros(len(batch), np.int32)
        f = parse_flows(batch)
        d = (self.keys(f) % np.uint64(self.directors)).astype(np.int32)
        if (f.frag != 0).any():
            d = self._follow_fragments(f, d)
        return d

    def _follow_fragments(self, f: Flows, d: np.ndarray) -> np.ndarray:
        """Later fragments go where their datagram's first fragment went (the last one
        seen with the same source, destination, id and protocol)."""
        first = np.flatnonzero(f.frag == 2)
        keys = np.concatenate([self._frag_keys, f.fkey[first]])
        dirs = np.concatenate([self._frag_dirs, d[first]])
        if len(keys):
            # the last occurrence of each key wins: unique over the reversed arrays
            ukeys, at = np.unique(keys[::-1], return_index=True)
            udirs = dirs[::-1][at]
            later = np.flatnonzero(f.frag == 1)
            if len(later):
                pos = np.minimum(np.searchsorted(ukeys, f.fkey[later]), len(ukeys) - 1)
                found = ukeys[pos] == f.fkey[later]
                d[later[found]] = udirs[pos[found]]
        self._frag_keys = keys[-FRAG_MEMORY:]
        self._frag_dirs = dirs[-FRAG_MEMORY:]
        return d


def take(batch: PacketBatch, idx: np.ndarray) -> PacketBatch:
    """A new batch of the packets ``idx`` (in that order), their bytes gathered into one
    fresh buffer with one vectorised copy."""
    idx = np.asarray(idx, np.int64)
    lens = batch.caplen[idx].astype(np.int64)
    starts = batch.off[idx].astype(np.int64)
    new_off = np.zeros(len(idx), np.int64)
    if len(idx):
        np.cumsum(lens[:-1], out=new_off[1:])
    total = int(lens.sum())
    src = np.repeat(starts - new_off, lens) + np.arange(total, dtype=np.int64)
    buf = np.asarray(batch.buf, np.uint8)[src] if total else np.zeros(0, np.uint8)
    return PacketBatch(
        buf=buf,
        off=new_off.astype(OFF_DTYPE),
        caplen=lens.astype(LEN_DTYPE),
        wirelen=batch.wirelen[idx],
        ts=batch.ts[idx],
        linktype=batch.linktype[idx],
        iface=batch.iface[idx],
        verdict=batch.verdict[idx],
    )
