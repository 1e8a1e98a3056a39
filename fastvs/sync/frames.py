"""Sync datagrams <-> capture frames.

``build_frame`` wraps a message as the master's socket sends it: IPv4 (DF clear, as
``IP_PMTUDISC_DONT`` leaves it; TTL 1 by default, ``mcast_ttl``), UDP with a checksum,
to the group and port, in an Ethernet frame whose destination is the group's
multicast MAC. ``iter_datagrams`` finds the UDP payloads sent to a port (and, if
given, a group) in a capture, whatever its link type: Ethernet with VLAN tags, Linux
cooked SLL/SLL2, raw IPv4/IPv6, BSD loopback. IP fragments are reassembled when
all of a datagram's fragments are in the capture (a master never fragments: its
messages fit 1500 bytes).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from fastvs.capture.pcap import open_capture
from fastvs.sync.proto import SYNC_GROUP, SYNC_PORT

__all__ = ["Datagram", "build_frame", "iter_datagrams", "mcast_mac"]

DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276
_RAW12 = 12  # some systems use DLT 12 for raw IP
_RAW14 = 14


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mcast_mac(group: str) -> bytes:
    """01:00:5e + the low 23 bits of an IPv4 group (33:33 + low 32 bits for IPv6)."""
    if ":" in group:
        return b"\x33\x33" + socket.inet_pton(socket.AF_INET6, group)[12:]
    g = socket.inet_aton(group)
    return b"\x01\x00\x5e" + bytes((g[1] & 0x7F, g[2], g[3]))


def build_frame(
    payload: bytes,
    src: str,
    *,
    group: str = SYNC_GROUP,
    port: int = SYNC_PORT,
    sport: int | None = None,
    ttl: int = 1,
    ident: int = 0,
    smac: bytes = b"\x02\x00\x00\x00\x00\x01",
    dmac: bytes | None = None,
) -> bytes:
    """An Ethernet + IPv4 + UDP frame carrying ``payload`` from ``src`` to the group.
    ``sport`` defaults to ``port`` (the kernel's socket binds port 0, so the real one
    is ephemeral: tests compare payloads, not ports)."""
    sp = port if sport is None else sport
    udp_len = 8 + len(payload)
    s, d = socket.inet_aton(src), socket.inet_aton(group)
    pseudo = s + d + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sp, port, udp_len, 0) + payload
    c = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0, ttl, 17, 0, s, d)
    iph = iph[:10] + struct.pack("!H", _csum(iph)) + iph[12:]
    frame = (dmac if dmac is not None else mcast_mac(group)) + smac + b"\x08\x00" + iph + udp
    return frame + b"\0" * max(0, 60 - len(frame))


@dataclass
class Datagram:
    """One UDP payload found in a capture: its time (ns), addresses and bytes."""

    ts: int
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    index: int  # packet number in the capture (0-based)


def _l3(frame: bytes, linktype: int) -> tuple[int, int] | None:
    """(offset of the IP header, IP version) or None when not IP."""
    if linktype == DLT_EN10MB:
        off, et = 12, None
        while len(frame) >= off + 2:
            et = int.from_bytes(frame[off : off + 2], "big")
            if et in (0x8100, 0x88A8, 0x9100):
                off += 4
                continue
            off += 2
            break
        if et == 0x0800:
            return off, 4
        if et == 0x86DD:
            return off, 6
        return None
    if linktype == DLT_LINUX_SLL:
        if len(frame) < 16:
            return None
        et = int.from_bytes(frame[14:16], "big")
        return (16, 4) if et == 0x0800 else (16, 6) if et == 0x86DD else None
    if linktype == DLT_LINUX_SLL2:
        if len(frame) < 20:
            return None
        et = int.from_bytes(frame[0:2], "big")
        return (20, 4) if et == 0x0800 else (20, 6) if et == 0x86DD else None
    if linktype in (DLT_NULL, DLT_LOOP):
        if len(frame) < 4:
            return None
        fam = int.from_bytes(frame[:4], "little" if linktype == DLT_NULL else "big")
        if fam not in (2, 24, 28, 30) and linktype == DLT_NULL:
            fam = int.from_bytes(frame[:4], "big")
        return (4, 4) if fam == 2 else (4, 6) if fam in (24, 28, 30) else None
    if linktype in (DLT_RAW, DLT_IPV4, DLT_IPV6, _RAW12, _RAW14):
        if not frame:
            return None
        v = frame[0] >> 4
        return (0, v) if v in (4, 6) else None
    return None


def _udp_of(
    ip: bytes, version: int, frags: dict[tuple[bytes, bytes, int], dict[int, tuple[bytes, bool]]]
) -> tuple[str, str, bytes] | None:
    """(src, dst, UDP segment) of an IP datagram, or None."""
    if version == 4:
        if len(ip) < 20 or ip[0] >> 4 != 4:
            return None
        ihl = (ip[0] & 15) * 4
        tot = int.from_bytes(ip[2:4], "big")
        if ihl < 20 or tot < ihl or tot > len(ip) or ip[9] != 17:
            return None
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        fragw = int.from_bytes(ip[6:8], "big")
        more, foff = bool(fragw & 0x2000), (fragw & 0x1FFF) * 8
        body = ip[ihl:tot]
        if more or foff:
            key = (ip[12:16], ip[16:20], int.from_bytes(ip[4:6], "big"))
            parts = frags.setdefault(key, {})
            parts[foff] = (body, more)
            if len(frags) > 4096:  # bounded: forget the oldest reassemblies
                frags.pop(next(iter(frags)))
            whole = b""
            for o in sorted(parts):
                if o != len(whole):
                    return None
                whole += parts[o][0]
                if not parts[o][1]:
                    frags.pop(key, None)
                    return src, dst, whole
            return None
        return src, dst, body
    if len(ip) < 40 or ip[0] >> 4 != 6:
        return None
    plen = int.from_bytes(ip[4:6], "big")
    nxt, off = ip[6], 40
    end = min(len(ip), 40 + plen)
    while nxt in (0, 43, 60) and off + 8 <= end:
        nxt, off = ip[off], off + (ip[off + 1] + 1) * 8
    if nxt != 17:
        return None
    src = socket.inet_ntop(socket.AF_INET6, ip[8:24])
    dst = socket.inet_ntop(socket.AF_INET6, ip[24:40])
    return src, dst, ip[off:end]


def iter_datagrams(
    path: str | os.PathLike[str],
    port: int | None = SYNC_PORT,
    group: str | None = None,
    *,
    keep_going: bool = True,
) -> Iterator[Datagram]:
    """UDP payloads to ``port`` (None: any) and ``group`` (None: any destination) in
    capture order. Raises fastvs.errors.CaptureError for an unreadable capture; a
    frame that is not such a datagram is skipped. The payload is cut to the UDP
    length field (link padding removed); a UDP length past the data keeps what
    there is, so the backup's size check sees the short datagram."""
    frags: dict[tuple[bytes, bytes, int], dict[int, tuple[bytes, bool]]] = {}
    idx = 0
    with open_capture(path, keep_going=keep_going) as reader:
        for batch in reader:
            for i in range(len(batch)):
                frame = batch.packet(i)
                lt = int(batch.linktype[i])
                ts = int(batch.ts[i])
                n = idx
                idx += 1
                l3 = _l3(frame, lt)
                if l3 is None:
                    continue
                got = _udp_of(frame[l3[0] :], l3[1], frags)
                if got is None:
                    continue
                src, dst, udp = got
                if len(udp) < 8:
                    continue
                sport, dport, ulen = struct.unpack("!HHH", udp[:6])
                if port is not None and dport != port:
                    continue
                if group is not None and dst != group:
                    continue
                payload = udp[8:ulen] if ulen >= 8 else udp[8:]
                yield Datagram(ts, src, dst, sport, dport, payload, n)
