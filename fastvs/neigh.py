"""Neighbours for the live forwarder: ARP for the VIPs, MACs of real servers and gateways.

The director's kernel owns no VIP and, in the recommended setup, no address at all on
the forwarding interfaces (see docs/forwarder.md), so fastvs does the L2 work itself:

- it **answers ARP requests** for every VIP and for the extra ``--addr`` addresses (e.g.
  the address real servers use as their default gateway) with the interface's MAC;
- it **resolves** real servers and the client-side gateway with ARP requests (sender IP:
  the ``--addr`` closest to the target, else 0.0.0.0 as an RFC 5227 probe), re-asks
  every :data:`REFRESH_S` seconds and whenever the data path misses;
- it **learns** clients (or the router in front of them) from the source MAC of the
  frames they send to a VIP (done in the Cython data path, bounded by the table size);
- it reads a **static neighbour file** (``--neigh FILE``): ``ip mac`` per line, ``#``
  comments; static entries are never replaced by learning or ARP.

ARP volume is small, so this module is plain Python over one ``ETH_P_ARP`` socket per
interface; the table itself lives in C memory inside :class:`fastvs._afpacket.Pump`.
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

from fastvs.errors import RulesError

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
REFRESH_S = 30.0  # re-resolve real servers and gateways this often
RETRY_S = 1.0  # ask again for a missing neighbour at most this often
MAX_ARP_PER_POLL = 256  # ARP frames read per readable socket per round

_ARP = struct.Struct("!HHBBH6s4s6s4s")


class NeighTable(Protocol):
    """What :class:`Neighbours` needs from the C table (``fastvs._afpacket.Pump``)."""

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
    """Read ``ip mac`` lines (``#`` comments, blank lines ignored)."""
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
            ip = str(ipaddress.IPv4Address(parts[0]))
        except ValueError:
            raise RulesError(f"bad IPv4 address {parts[0]!r}", source=src, line=n) from None
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
    """A non-blocking AF_PACKET socket receiving and sending ARP on one interface."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((ifname, ETH_P_ARP))
    s.setblocking(False)
    return s


@dataclass
class Side:
    """One interface as the ARP code sees it."""

    name: str  # "client", "server" or "one-arm"
    ifname: str
    mac: bytes
    sock: Any  # socket.socket (or a test double with send/recv)


@dataclass
class Neighbours:
    """ARP on behalf of the forwarder: answers for ``answer_for``, resolves ``resolve``."""

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
        "arp_in": 0, "arp_replies_sent": 0, "arp_requests_sent": 0, "arp_learnt": 0})
    _next_refresh: float = 0.0

    def load_static(self, entries: Iterable[tuple[str, bytes]]) -> None:
        for ip, mac in entries:
            self.table.neigh_set(ip, mac, True)
            self.static.add(ip)

    def source_ip_for(self, target: str) -> str:
        """The ``--addr`` sharing the longest prefix with ``target`` (0.0.0.0 if none)."""
        t = int(ipaddress.IPv4Address(target))
        best, best_len = "0.0.0.0", -1
        for a in self.own_addrs:
            common = 32 - (int(ipaddress.IPv4Address(a)) ^ t).bit_length()
            if common > best_len:
                best, best_len = a, common
        return best

    def request(self, ips: Iterable[str], *, force: bool = False) -> int:
        """Send ARP requests for ``ips`` (rate-limited per address unless ``force``)."""
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
            for side in self.sides:
                frame = arp_frame(ARP_REQUEST, side.mac, src, BROADCAST, bytes(6), ip)
                try:
                    side.sock.send(frame)
                    sent += 1
                except OSError as e:
                    self.log(f"ARP request for {ip} on {side.ifname}: {e.strerror}")
        self.counts["arp_requests_sent"] += sent
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
        """Read the ARP sockets whose bit is set in ``ready_mask`` (Pump.aux_ready)."""
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
                self.log(f"ARP socket on {side.ifname}: {e.strerror}")
                return
            self.on_frame(side, frame)

    def on_frame(self, side: Side, frame: bytes) -> None:
        arp = parse_arp(frame)
        if arp is None or arp.sha == side.mac:
            return
        self.counts["arp_in"] += 1
        # learn what we asked for, what talks to our addresses, and refresh what we know
        if arp.spa != "0.0.0.0" and arp.spa not in self.answer_for and (
            arp.spa in self.resolve_set or arp.spa in self.asked
            or arp.tpa in self.answer_for or self.table.neigh_get(arp.spa) is not None
        ):
            pinned = arp.spa in self.resolve_set
            if self.table.neigh_set(arp.spa, arp.sha, pinned) and arp.spa not in self.static:
                self.counts["arp_learnt"] += 1
        if arp.op == ARP_REQUEST and self.answer and arp.tpa in self.answer_for:
            reply = arp_frame(ARP_REPLY, side.mac, arp.tpa, arp.eth_src, arp.sha, arp.spa)
            try:
                side.sock.send(reply)
                self.counts["arp_replies_sent"] += 1
            except OSError as e:
                self.log(f"ARP reply on {side.ifname}: {e.strerror}")

    def announce(self) -> None:
        """Gratuitous ARP for every address we answer for (after a start or takeover)."""
        if not self.answer:
            return
        for side in self.sides:
            for ip in sorted(self.answer_for):
                frame = arp_frame(ARP_REQUEST, side.mac, ip, BROADCAST, bytes(6), ip)
                try:
                    side.sock.send(frame)
                except OSError:
                    pass


__all__ = [
    "Arp",
    "Neighbours",
    "Side",
    "arp_frame",
    "format_mac",
    "load_neigh_file",
    "open_arp_socket",
    "parse_arp",
    "parse_mac",
]
