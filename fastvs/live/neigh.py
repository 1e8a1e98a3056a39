"""Neighbours for the live forwarder: ARP and IPv6 neighbour discovery for the VIPs,
MACs of real servers and gateways.

The director's kernel owns no VIP and, in the recommended setup, no address at all on
the forwarding interfaces (see docs/forwarder.md), so fastvs does the L2 work itself:

- it **answers ARP requests** for every IPv4 VIP and for the extra ``--addr`` addresses
  (e.g. the address real servers use as their default gateway) with the interface's
  MAC, and **Neighbour Solicitations** (RFC 4861) for every IPv6 VIP and ``--addr``
  with Neighbour Advertisements;
- it **resolves** real servers and the client-side gateway with ARP requests (sender IP:
  the ``--addr`` closest to the target, else 0.0.0.0 as an RFC 5227 probe) or, for
  IPv6, Neighbour Solicitations to the target's solicited-node multicast group (source:
  the closest IPv6 ``--addr``, else ``::``, which the target answers to all-nodes), and
  re-asks every :data:`REFRESH_S` seconds and whenever the data path misses;
- it **learns** clients (or the router in front of them) from the source MAC of the
  frames they send to a VIP (done in the Cython data path, bounded by the table size);
- it reads a **static neighbour file** (``--neigh FILE``): ``ip mac`` per line, ``#``
  comments; static entries are never replaced by learning or ARP.

ARP and ND volume is small, so this module is plain Python over one AF_PACKET socket
per interface whose BPF filter passes only ARP and ICMPv6 neighbour solicitations and
advertisements (:func:`open_arp_socket`, filter from fastvs/live/bpf.py); the table
itself lives in C memory inside :class:`fastvs.live._l2.L2Stage`, where the output
stage reads it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastvs.datapath._csum import checksum
from fastvs.errors import RulesError
from fastvs.live import _afpacket as A
from fastvs.live.bpf import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ND_NA, ND_NS, l2_filter

ETH_P_ALL = 0x0003
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20
OPT_SLLA, OPT_TLLA = 1, 2
ALL_NODES = "ff02::1"
ALL_NODES_MAC = bytes.fromhex("333300000001")
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
REFRESH_S = 30.0  # re-resolve real servers and gateways this often
RETRY_S = 1.0  # ask again for a missing neighbour at most this often
MAX_ARP_PER_POLL = 256  # ARP frames read per readable socket per round

_ARP = struct.Struct("!HHBBH6s4s6s4s")


class NeighTable(Protocol):
    """What :class:`Neighbours` needs from the C table (``fastvs.live._l2.L2Stage``)."""

    def neigh_set(self, ip: str, mac: bytes | str, static: bool = False) -> bool: ...
    def neigh_get(self, ip: str) -> bytes | None: ...


def parse_mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or ``-`` separated, or 12 hex digits) -> 6 bytes."""
    raw = text.replace(":", "").replace("-", "").replace(".", "")
    if len(raw) != 12:
        raise ValueError(f"bad MAC address {text!r}")
    return bytes.fromhex(raw)


def format_mac(mac: bytes) -> str:
    return mac.hex(":")


def load_neigh_file(path: str | os.PathLike[str]) -> list[tuple[str, bytes]]:
    """Read ``ip mac`` lines, IPv4 or IPv6 (``#`` comments, blank lines ignored)."""
    src = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise RulesError(f"cannot read neighbour file: {e.strerror}", source=src) from None
    out: list[tuple[str, bytes]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise RulesError(f"expected 'ip mac', got {line!r}", source=src, line=n)
        try:
            addr = ipaddress.ip_address(parts[0])
        except ValueError:
            raise RulesError(f"bad IP address {parts[0]!r}", source=src, line=n) from None
        if addr.is_multicast or addr.is_unspecified:
            raise RulesError(f"not a neighbour's address: {parts[0]!r}", source=src, line=n)
        ip = str(addr)
        try:
            mac = parse_mac(parts[1])
        except ValueError as e:
            raise RulesError(str(e), source=src, line=n) from None
        out.append((ip, mac))
    return out


def arp_frame(op: int, src_mac: bytes, src_ip: str, dst_mac: bytes, target_mac: bytes,
              target_ip: str) -> bytes:
    """An Ethernet ARP frame (padded to the 60-byte minimum)."""
    body = _ARP.pack(1, ETH_P_IP, 6, 4, op, src_mac, socket.inet_aton(src_ip), target_mac,
                     socket.inet_aton(target_ip))
    frame = dst_mac + src_mac + struct.pack("!H", ETH_P_ARP) + body
    return frame.ljust(60, b"\0")


@dataclass
class Arp:
    op: int
    sha: bytes
    spa: str
    tha: bytes
    tpa: str
    eth_src: bytes


def parse_arp(frame: bytes) -> Arp | None:
    """An Ethernet/IPv4 ARP frame's fields, or None if it is not one."""
    if len(frame) < 14 + _ARP.size or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, 14)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        return None
    return Arp(op, sha, socket.inet_ntoa(spa), tha, socket.inet_ntoa(tpa), frame[6:12])


def open_arp_socket(ifname: str) -> socket.socket:
    """A non-blocking AF_PACKET socket receiving and sending ARP and IPv6 neighbour
    discovery on one interface (filter attached before the bind: nothing else is ever
    queued)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        A.attach_filter(s.fileno(), l2_filter())
        s.bind((ifname, ETH_P_ALL))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def solicited_node(ip: str) -> tuple[str, bytes]:
    """The solicited-node multicast group of an IPv6 address and its MAC."""
    low = ipaddress.IPv6Address(ip).packed[13:]
    group = ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low)
    return str(group), b"\x33\x33\xff" + low


def join_multicast(sock: Any, ifname: str, mac: bytes) -> bool:
    """PACKET_ADD_MEMBERSHIP of one multicast MAC on the socket's interface (so that a
    NIC with a multicast filter passes, e.g., a solicited-node group's frames)."""
    try:
        idx = socket.if_nametoindex(ifname)
        sock.setsockopt(A.SOL_PACKET, A.OPT_ADD_MEMBERSHIP,
                        struct.pack("iHH8s", idx, A.MR_MULTICAST, 6, mac))
    except (OSError, AttributeError):
        return False
    return True


# -- IPv6 neighbour discovery (RFC 4861) ----------------------------------------------------------
def icmp6_checksum(src: bytes, dst: bytes, msg: bytes) -> int:
    """The ICMPv6 checksum of ``msg`` (its checksum field zero) over the pseudo-header."""
    ph = src + dst + struct.pack("!IxxxB", len(msg), 58)
    return checksum(ph + msg) or 0xFFFF


def _ip6_frame(dst_mac: bytes, src_mac: bytes, src: str, dst: str, icmp: bytes) -> bytes:
    s6, d6 = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    msg = bytearray(icmp)
    msg[2:4] = struct.pack("!H", icmp6_checksum(s6, d6, bytes(msg)))
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(msg), 58, 255, s6, d6)
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IPV6) + ip6 + bytes(msg)


def ns_frame(src_mac: bytes, src_ip: str, target: str) -> bytes:
    """A Neighbour Solicitation for ``target`` to its solicited-node group (with our
    link-layer address unless ``src_ip`` is ``::``, as RFC 4861 7.2.2 wants)."""
    group, gmac = solicited_node(target)
    body = struct.pack("!BBHI16s", ND_NS, 0, 0, 0, ipaddress.IPv6Address(target).packed)
    if src_ip != "::":
        body += struct.pack("!BB6s", OPT_SLLA, 1, src_mac)
    return _ip6_frame(gmac, src_mac, src_ip, group, body)


def na_frame(src_mac: bytes, target: str, dst_mac: bytes, dst_ip: str, flags: int) -> bytes:
    """A Neighbour Advertisement of ``target`` at ``src_mac`` (with the target
    link-layer address option), from ``target`` to ``dst_ip``."""
    body = struct.pack("!BBHI16s", ND_NA, 0, 0, flags << 24, ipaddress.IPv6Address(target).packed)
    body += struct.pack("!BB6s", OPT_TLLA, 1, src_mac)
    return _ip6_frame(dst_mac, src_mac, target, dst_ip, body)


@dataclass
class Nd:
    type: int  # ND_NS or ND_NA
    src: str
    dst: str
    target: str
    flags: int  # NA flags (R, S, O in the top bits of the first byte)
    lladdr: bytes | None  # source (NS) or target (NA) link-layer address option
    eth_src: bytes


def parse_nd(frame: bytes) -> Nd | None:
    """A valid Neighbour Solicitation or Advertisement (RFC 4861 7.1.1/7.1.2: hop limit
    255, code 0, checksum, length, well-formed options), else None."""
    if len(frame) < 14 + 40 + 24 or frame[12:14] != b"\x86\xdd" or frame[14] >> 4 != 6:
        return None
    plen, nh, hlim = struct.unpack_from("!HBB", frame, 18)
    if nh != 58 or hlim != 255 or plen < 24 or 14 + 40 + plen > len(frame):
        return None
    src, dst = frame[22:38], frame[38:54]
    msg = frame[54:54 + plen]
    typ, code = msg[0], msg[1]
    if typ not in (ND_NS, ND_NA) or code != 0 or checksum(src + dst + struct.pack("!IxxxB", plen, 58) + msg) != 0:
        return None
    target = ipaddress.IPv6Address(msg[8:24])
    if target.is_multicast:
        return None
    want = OPT_SLLA if typ == ND_NS else OPT_TLLA
    lladdr = None
    i = 24
    while i < plen:
        if i + 2 > plen or msg[i + 1] == 0 or i + msg[i + 1] * 8 > plen:
            return None  # a zero-length or overrunning option: the message is invalid
        if msg[i] == want and msg[i + 1] == 1:
            lladdr = bytes(msg[i + 2:i + 8])
        i += msg[i + 1] * 8
    s = ipaddress.IPv6Address(src)
    if typ == ND_NS and s.is_unspecified and (lladdr is not None or not ipaddress.IPv6Address(dst).is_multicast):
        return None  # DAD probes carry no SLLA and go to the solicited-node group
    return Nd(typ, str(s), str(ipaddress.IPv6Address(dst)), str(target), msg[4], lladdr, frame[6:12])


@dataclass
class Side:
    """One interface as the ARP code sees it."""

    name: str  # "client", "server" or "one-arm"
    ifname: str
    mac: bytes
    sock: Any  # socket.socket (or a test double with send/recv)


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


@dataclass
class Neighbours:
    """ARP and ND on behalf of the forwarder: answers for ``answer_for`` (IPv4 and IPv6
    addresses as canonical strings), resolves ``resolve_set``."""

    table: NeighTable
    sides: list[Side]
    answer_for: set[str]
    own_addrs: list[str] = field(default_factory=list)
    resolve_set: set[str] = field(default_factory=set)
    answer: bool = True
    log: Callable[[str], None] = lambda msg: None
    static: set[str] = field(default_factory=set)
    asked: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {
        "arp_in": 0, "arp_replies_sent": 0, "arp_requests_sent": 0, "arp_learnt": 0,
        "nd_in": 0, "na_sent": 0, "ns_sent": 0, "nd_learnt": 0, "l2_invalid": 0})
    joined: set[tuple[str, bytes]] = field(default_factory=set)
    _next_refresh: float = 0.0

    def load_static(self, entries: Iterable[tuple[str, bytes]]) -> None:
        for ip, mac in entries:
            self.table.neigh_set(ip, mac, True)
            self.static.add(ip)

    def join_groups(self) -> None:
        """Join the solicited-node multicast group of every IPv6 address we answer for
        on every interface (after start and after a rules reload)."""
        for side in self.sides:
            for ip in sorted(self.answer_for):
                if _family(ip) != 6:
                    continue
                _, mac = solicited_node(ip)
                if (side.ifname, mac) not in self.joined and join_multicast(side.sock, side.ifname, mac):
                    self.joined.add((side.ifname, mac))

    def source_ip_for(self, target: str) -> str:
        """The ``--addr`` of the target's family sharing the longest prefix with it
        (``0.0.0.0`` / ``::`` if there is none)."""
        t = ipaddress.ip_address(target)
        best, best_len = ("0.0.0.0" if t.version == 4 else "::"), -1
        for a in self.own_addrs:
            ai = ipaddress.ip_address(a)
            if ai.version != t.version:
                continue
            common = t.max_prefixlen - (int(ai) ^ int(t)).bit_length()
            if common > best_len:
                best, best_len = a, common
        return best

    def request(self, ips: Iterable[str], *, force: bool = False) -> int:
        """Send ARP requests / Neighbour Solicitations for ``ips`` (rate-limited per
        address unless ``force``)."""
        now = time.monotonic()
        sent = 0
        for ip in ips:
            if ip in self.static or ip in self.answer_for:
                continue
            if not force and now - self.asked.get(ip, -1e9) < RETRY_S:
                continue
            self.asked[ip] = now
            if len(self.asked) > 4096:  # bounded: forget the oldest half
                for k in sorted(self.asked, key=self.asked.__getitem__)[:2048]:
                    del self.asked[k]
            src = self.source_ip_for(ip)
            v6 = _family(ip) == 6
            for side in self.sides:
                if v6:
                    frame = ns_frame(side.mac, src, ip)
                else:
                    frame = arp_frame(ARP_REQUEST, side.mac, src, BROADCAST, bytes(6), ip)
                try:
                    side.sock.send(frame)
                except OSError as e:
                    self.log(f"{'NS' if v6 else 'ARP request'} for {ip} on {side.ifname}: {e.strerror}")
                    continue
                self.counts["ns_sent" if v6 else "arp_requests_sent"] += 1
                sent += 1
        return sent

    def refresh(self) -> None:
        """Re-resolve the real servers and gateways every REFRESH_S seconds."""
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_S
            self.request(sorted(self.resolve_set), force=True)

    def missing(self) -> list[str]:
        return sorted(ip for ip in self.resolve_set if self.table.neigh_get(ip) is None)

    def handle(self, ready_mask: int) -> None:
        """Read the ARP/ND sockets whose bit is set in ``ready_mask`` (FrameIO.aux_ready)."""
        for i, side in enumerate(self.sides):
            if ready_mask & (1 << i):
                self._drain(side)

    def _drain(self, side: Side) -> None:
        for _ in range(MAX_ARP_PER_POLL):
            try:
                frame = side.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.log(f"ARP/ND socket on {side.ifname}: {e.strerror}")
                return
            self.on_frame(side, frame)

    def _learn(self, ip: str, mac: bytes, about_us: bool) -> bool:
        """Learn what we asked for, what talks to our addresses, and refresh what we
        know; real servers and gateways are pinned."""
        if ip in self.answer_for or not (
            ip in self.resolve_set or ip in self.asked or about_us or self.table.neigh_get(ip) is not None
        ):
            return False
        return self.table.neigh_set(ip, mac, ip in self.resolve_set) and ip not in self.static

    def on_frame(self, side: Side, frame: bytes) -> None:
        if frame[12:14] == b"\x86\xdd":
            self.on_nd(side, frame)
            return
        arp = parse_arp(frame)
        if arp is None:
            self.counts["l2_invalid"] += 1  # passed the filter, but no valid ARP
            return
        if arp.sha == side.mac:
            return
        self.counts["arp_in"] += 1
        if arp.spa != "0.0.0.0" and self._learn(arp.spa, arp.sha, arp.tpa in self.answer_for):
            self.counts["arp_learnt"] += 1
        if arp.op == ARP_REQUEST and self.answer and arp.tpa in self.answer_for:
            reply = arp_frame(ARP_REPLY, side.mac, arp.tpa, arp.eth_src, arp.sha, arp.spa)
            try:
                side.sock.send(reply)
                self.counts["arp_replies_sent"] += 1
            except OSError as e:
                self.log(f"ARP reply on {side.ifname}: {e.strerror}")

    def on_nd(self, side: Side, frame: bytes) -> None:
        nd = parse_nd(frame)
        if nd is None:
            self.counts["l2_invalid"] += 1  # a malformed solicitation/advertisement
            return
        if nd.eth_src == side.mac:
            return
        self.counts["nd_in"] += 1
        if nd.type == ND_NA:
            mac = nd.lladdr or nd.eth_src
            if self._learn(nd.target, mac, False):
                self.counts["nd_learnt"] += 1
            return
        ours = nd.target in self.answer_for
        if nd.src != "::" and nd.lladdr is not None and self._learn(nd.src, nd.lladdr, ours):
            self.counts["nd_learnt"] += 1
        if not (ours and self.answer):
            return
        flags = NA_OVERRIDE | (NA_ROUTER if nd.target in self.own_addrs else 0)
        if nd.src == "::":  # a duplicate address detection probe: defend to all-nodes
            reply = na_frame(side.mac, nd.target, ALL_NODES_MAC, ALL_NODES, flags)
        else:
            reply = na_frame(side.mac, nd.target, nd.lladdr or nd.eth_src, nd.src, flags | NA_SOLICITED)
        try:
            side.sock.send(reply)
            self.counts["na_sent"] += 1
        except OSError as e:
            self.log(f"NA on {side.ifname}: {e.strerror}")

    def announce(self) -> None:
        """Gratuitous ARP / unsolicited NA for every address we answer for (after a
        start or takeover)."""
        if not self.answer:
            return
        for side in self.sides:
            for ip in sorted(self.answer_for):
                if _family(ip) == 6:
                    flags = NA_OVERRIDE | (NA_ROUTER if ip in self.own_addrs else 0)
                    frame = na_frame(side.mac, ip, ALL_NODES_MAC, ALL_NODES, flags)
                else:
                    frame = arp_frame(ARP_REQUEST, side.mac, ip, BROADCAST, bytes(6), ip)
                try:
                    side.sock.send(frame)
                except OSError:
                    pass


__all__ = [
    "Arp",
    "Nd",
    "Neighbours",
    "Side",
    "arp_frame",
    "format_mac",
    "icmp6_checksum",
    "join_multicast",
    "load_neigh_file",
    "na_frame",
    "ns_frame",
    "open_arp_socket",
    "parse_arp",
    "parse_mac",
    "parse_nd",
    "solicited_node",
]
