"""Shared pieces of the fuzz harnesses: the frame-stream encoding, the rules the
engine harness runs, an independent (pure Python) checksum, and frame builders.

The engine harness reads its input as a stream of frames::

    byte 0                option bits (keep_ttl, director_view, truncated=drop,
                          expire_nodest_conn, rules order)
    then, per frame:      link selector (1 byte), captured length (2 bytes, big
                          endian, taken modulo MAX_FRAME), wirelen extra (1 byte),
                          time step (1 byte), then the frame's bytes

so a mutation of any byte stays meaningful, and the corpus generator
(``fuzz/make_corpus.py``) can wrap real frames into it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAX_FRAMES = 48
MAX_FRAME = 2048
HDR = 5  # per-frame header bytes in the encoding
TS_STEP_NS = 100_000_000  # one time-step unit: 0.1 s (timeouts below are a few seconds)

# link types the selector picks from; the last two are unknown to the parser
LINKTYPES = (1, 1, 1, 1, 113, 276, 101, 228, 0, 108, 12, 14, 229, 1, 147, 9999)
LINK_SEL = {lt: i for i, lt in reversed(list(enumerate(LINKTYPES)))}

# services the fuzzer can hit: the golden captures' VIPs/RIPs (10.10.0.1:80 tcp,
# 10.10.0.1:53 udp, 192.168.0.1x), with masq, DR and tunnel servers, a quiescent one,
# and short timeouts so that a handful of time steps expires connections
RULES_TEXT = """\
-A -t 10.10.0.1:80 -s rr
-a -t 10.10.0.1:80 -r 192.168.0.10:8080 -m -w 2
-a -t 10.10.0.1:80 -r 192.168.0.11:8080 -m -w 5
-a -t 10.10.0.1:80 -r 192.168.0.12:8080 -m -w 0
-A -t 10.10.0.2:80 -s wrr
-a -t 10.10.0.2:80 -r 192.168.0.13:8080 -m -w 3
-a -t 10.10.0.2:80 -r 192.168.0.14:80 -g -w 1
-a -t 10.10.0.2:80 -r 192.168.0.15:80 -i -w 1
-A -t 10.10.0.3:443 -s lc
-a -t 10.10.0.3:443 -r 192.168.0.10:443 -m -w 1 -x 2 -y 1
-A -u 10.10.0.1:53 -s wlc
-a -u 10.10.0.1:53 -r 192.168.0.10:5353 -m -w 5
-a -u 10.10.0.1:53 -r 192.168.0.11:5353 -m -w 2
-A -u 10.10.0.4:9000 -s rr
-a -u 10.10.0.4:9000 -r 192.168.0.20:9000 -m -w 1
--set 4 3 2
"""

CLIENTS = ("172.16.0.5", "172.16.0.6")
SERVICES_TCP = (("10.10.0.1", 80), ("10.10.0.2", 80), ("10.10.0.3", 443))
SERVICES_UDP = (("10.10.0.1", 53), ("10.10.0.4", 9000))


@dataclass
class Frame:
    linktype: int
    data: bytes
    wirelen: int  # >= len(data) after decoding only when the extra is non-negative
    ts_ns: int


@dataclass
class Options:
    keep_ttl: bool
    director_view: bool
    truncated: str
    expire_nodest_conn: bool
    order: str


def decode(data: bytes) -> tuple[Options, list[Frame]]:
    """Fuzz input -> (options, frames). Total: every byte string decodes."""
    if not data:
        return Options(False, False, "balance", False, "kernel"), []
    b0 = data[0]
    opts = Options(
        keep_ttl=bool(b0 & 1),
        director_view=bool(b0 & 2),
        truncated="drop" if b0 & 4 else "balance",
        expire_nodest_conn=bool(b0 & 8),
        order="file" if b0 & 16 else "kernel",
    )
    frames: list[Frame] = []
    pos = 1
    ts = 1_700_000_000 * 1_000_000_000
    while pos + HDR <= len(data) and len(frames) < MAX_FRAMES:
        sel, ln, extra, step = struct.unpack_from(">BHBB", data, pos)
        pos += HDR
        ln %= MAX_FRAME
        body = data[pos : pos + ln]
        pos += len(body)
        # mostly wirelen == caplen; sometimes cut by a snap length; rarely smaller
        if extra < 192:
            wl = len(body)
        elif extra < 250:
            wl = len(body) + (extra - 191) * 23
        else:
            wl = max(0, len(body) - (extra - 249))
        # steps 0..199 are small; above that, jumps backwards in time as well
        ts += step * TS_STEP_NS if step < 224 else -(step - 223) * TS_STEP_NS * 10
        frames.append(Frame(LINKTYPES[sel & 15], body, wl, ts))
    return opts, frames


def encode(frames: list[tuple[int, bytes, int, int]], opts_byte: int = 0) -> bytes:
    """(linktype, frame, wirelen extra byte, time step) -> fuzz input (for corpora)."""
    out = bytearray([opts_byte])
    for lt, body, extra, step in frames:
        body = body[: MAX_FRAME - 1]
        out += struct.pack(">BHBB", LINK_SEL.get(lt, 14), len(body), extra, step)
        out += body
    return bytes(out)


# -- an independent Internet checksum --------------------------------------------------
def inet_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def inet_csum(data: bytes) -> int:
    return ~inet_sum(data) & 0xFFFF


def ipv4_header_ok(ip: bytes) -> bool:
    ihl = (ip[0] & 15) * 4
    return len(ip) >= ihl >= 20 and inet_sum(ip[:ihl]) == 0xFFFF


def l4_csum_ok(ip: bytes) -> bool | None:
    """TCP/UDP checksum of a complete IPv4 datagram; None when it cannot be told
    (not TCP/UDP, cut, fragment, UDP without a checksum)."""
    if len(ip) < 20:
        return None
    ihl = (ip[0] & 15) * 4
    tot = struct.unpack(">H", ip[2:4])[0]
    proto = ip[9]
    if proto not in (6, 17) or tot > len(ip) or tot < ihl + 8 or ihl < 20:
        return None
    if struct.unpack(">H", ip[6:8])[0] & 0x3FFF:
        return None
    l4 = ip[ihl:tot]
    if proto == 6 and len(l4) < 20:
        return None
    if proto == 17 and l4[6:8] == b"\0\0":
        return None
    pseudo = ip[12:20] + bytes([0, proto]) + struct.pack(">H", len(l4))
    return inet_sum(pseudo + l4) == 0xFFFF


# -- frame builders (valid checksums) ---------------------------------------------------
def _ip4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, ident: int = 1) -> bytes:
    import socket

    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, ttl, proto, 0, s, d)
    hdr = hdr[:10] + struct.pack(">H", inet_csum(hdr)) + hdr[12:]
    return hdr + payload


def _l4(src: str, dst: str, proto: int, seg: bytes, cpos: int) -> bytes:
    import socket

    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + bytes([0, proto])
    pseudo += struct.pack(">H", len(seg))
    c = inet_csum(pseudo + seg)
    if proto == 17 and c == 0:
        c = 0xFFFF
    return seg[:cpos] + struct.pack(">H", c) + seg[cpos + 2 :]


def tcp_ip(src: str, sport: int, dst: str, dport: int, flags: int, payload: bytes = b"",
           ttl: int = 64, seq: int = 1000, ack: int = 0) -> bytes:
    seg = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    return _ip4(src, dst, 6, _l4(src, dst, 6, seg, 16), ttl)


def udp_ip(src: str, sport: int, dst: str, dport: int, payload: bytes = b"hello",
           ttl: int = 64, zero_csum: bool = False) -> bytes:
    seg = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    if not zero_csum:
        seg = _l4(src, dst, 17, seg, 6)
    return _ip4(src, dst, 17, seg, ttl)


ETH_HDR = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def eth(ip: bytes, vlan: int | None = None) -> bytes:
    if vlan is None:
        return ETH_HDR + ip
    return ETH_HDR[:12] + struct.pack(">HH", 0x8100, vlan) + b"\x08\x00" + ip


def sll(ip: bytes) -> bytes:
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800) + ip


def sll2(ip: bytes) -> bytes:
    return struct.pack(">HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\x02" * 8) + ip


def flows() -> Iterator[tuple[int, bytes]]:
    """A few conversations with the services above, as (linktype, frame)."""
    syn, ack, fin, rst, psh = 2, 16, 1, 4, 8
    for i, (vip, vport) in enumerate(SERVICES_TCP):
        c = CLIENTS[i % 2]
        sport = 40000 + i
        yield 1, eth(tcp_ip(c, sport, vip, vport, syn))
        yield 1, eth(tcp_ip(c, sport, vip, vport, ack | psh, b"GET / HTTP/1.0\r\n\r\n"))
        rip = ("192.168.0.10", "192.168.0.11", "192.168.0.13")[i]
        rport = 8080 if vport == 80 else vport
        yield 1, eth(tcp_ip(rip, rport, c, sport, ack | syn))
        yield 1, eth(tcp_ip(rip, rport, c, sport, ack | psh, b"HTTP/1.0 200 OK\r\n\r\n"))
        yield 113, sll(tcp_ip(c, sport, vip, vport, fin | ack))
        yield 276, sll2(tcp_ip(rip, rport, c, sport, fin | ack))
        yield 101, tcp_ip(c, sport + 100, vip, vport, syn, ttl=1)
        yield 1, eth(tcp_ip(c, sport, vip, vport, rst), vlan=7)
    for i, (vip, vport) in enumerate(SERVICES_UDP):
        c = CLIENTS[i % 2]
        yield 1, eth(udp_ip(c, 5000 + i, vip, vport, b"q" * (i + 3)))
        yield 1, eth(udp_ip(c, 5001 + i, vip, vport, b"z", zero_csum=True))
        yield 228, udp_ip("192.168.0.10", 5353, c, 5000 + i, b"answer")
