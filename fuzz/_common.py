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
# IPv6 services (masq, DR, tunnel, and an IPv4 tunnel server), an IPv4 service with an
# IPv6 tunnel server, and short timeouts so that a handful of time steps expires
# connections
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
-A -t 10.10.0.5:80 -s rr
-a -t 10.10.0.5:80 -r [2001:db8:1::13]:80 -i -w 1
-A -t [2001:db8::1]:80 -s rr
-a -t [2001:db8::1]:80 -r [2001:db8:1::10]:8080 -m -w 1
-a -t [2001:db8::1]:80 -r [2001:db8:1::11]:80 -g -w 1
-a -t [2001:db8::1]:80 -r [2001:db8:1::12]:80 -i -w 1
-a -t [2001:db8::1]:80 -r 192.168.0.16:80 -i -w 1
-A -u [2001:db8::1]:53 -s rr
-a -u [2001:db8::1]:53 -r [2001:db8:1::10]:5353 -m -w 1
--set 4 3 2
"""
# MACs of the direct-routing real servers (Director(neigh=...))
NEIGH = {"192.168.0.14": "02:52:c0:a8:00:0e", "2001:db8:1::11": "02:52:00:00:00:11"}

CLIENTS = ("172.16.0.5", "172.16.0.6")
SERVICES_TCP = (("10.10.0.1", 80), ("10.10.0.2", 80), ("10.10.0.3", 443))
SERVICES_UDP = (("10.10.0.1", 53), ("10.10.0.4", 9000))
CLIENT6 = "2001:db8:2::5"
VIP6 = "2001:db8::1"
RIP6 = "2001:db8:1::10"


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


def l4_csum_ok(ip: bytes, l4off: int | None = None) -> bool | None:
    """TCP/UDP checksum of a complete IPv4 or IPv6 datagram (IPv6: ``l4off``, the
    transport header's offset past any extension headers, is needed); None when it
    cannot be told (not TCP/UDP, cut, fragment, UDP without a checksum)."""
    if ip and ip[0] >> 4 == 6:
        return _l4_csum_ok6(ip, l4off)
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


def _l4_csum_ok6(ip: bytes, l4off: int | None) -> bool | None:
    if len(ip) < 40 or l4off is None or l4off < 40:
        return None
    end = 40 + struct.unpack(">H", ip[4:6])[0]
    if end > len(ip) or l4off + 8 > end:
        return None
    l4 = ip[l4off:end]
    proto = _ip6_l4_proto(ip)
    if proto not in (6, 17) or (proto == 6 and len(l4) < 20):
        return None
    if proto == 17 and l4[6:8] == b"\0\0":
        return None
    return inet_sum(pseudo6(ip[8:24], ip[24:40], proto, len(l4)) + l4) == 0xFFFF


def _ip6_l4_proto(ip: bytes) -> int | None:
    """The transport protocol after IPv6 extension headers; None for a fragment."""
    nh, off = ip[6], 40
    for _ in range(8):
        if nh in (0, 43, 60) and off + 8 <= len(ip):
            nh, off = ip[off], off + (ip[off + 1] + 1) * 8
        elif nh == 44:
            return None
        else:
            break
    return nh


def pseudo6(src: bytes, dst: bytes, nh: int, length: int) -> bytes:
    return src + dst + struct.pack(">IxxxB", length, nh)


def icmp_csum_ok(ip: bytes, l4off: int) -> bool | None:
    """The ICMP / ICMPv6 checksum of a complete datagram; None when it is cut."""
    if ip[0] >> 4 == 4:
        end = struct.unpack(">H", ip[2:4])[0]
        if end > len(ip) or l4off + 4 > end:
            return None
        return inet_sum(ip[l4off:end]) == 0xFFFF
    end = 40 + struct.unpack(">H", ip[4:6])[0]
    if end > len(ip) or l4off + 4 > end:
        return None
    return inet_sum(pseudo6(ip[8:24], ip[24:40], 58, end - l4off) + ip[l4off:end]) == 0xFFFF


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


def _ip6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 64) -> bytes:
    import socket

    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    return struct.pack(">IHBB", 6 << 28, len(payload), nh, hlim) + s + d + payload


def _l4_6(src: str, dst: str, proto: int, seg: bytes, cpos: int) -> bytes:
    import socket

    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    c = inet_csum(pseudo6(s, d, proto, len(seg)) + seg) or 0xFFFF
    return seg[:cpos] + struct.pack(">H", c) + seg[cpos + 2 :]


def tcp6_ip(src: str, sport: int, dst: str, dport: int, flags: int, payload: bytes = b"",
            hlim: int = 64) -> bytes:
    seg = struct.pack(">HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0) + payload
    return _ip6(src, dst, 6, _l4_6(src, dst, 6, seg, 16), hlim)


def udp6_ip(src: str, sport: int, dst: str, dport: int, payload: bytes = b"hello",
            hlim: int = 64) -> bytes:
    seg = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    return _ip6(src, dst, 17, _l4_6(src, dst, 17, seg, 6), hlim)


def icmp_error(src: str, dst: str, quoted: bytes, icmp_type: int = 3, code: int = 3) -> bytes:
    """An ICMP error from ``src`` to ``dst`` quoting (the start of) an IPv4 datagram."""
    body = struct.pack(">BBHI", icmp_type, code, 0, 0) + quoted[:48]
    body = body[:2] + struct.pack(">H", inet_csum(body)) + body[4:]
    return _ip4(src, dst, 1, body)


def icmp6_error(src: str, dst: str, quoted: bytes, icmp_type: int = 1, code: int = 4) -> bytes:
    """An ICMPv6 error (unreachable; 2: packet too big, MTU 1280) quoting an IPv6 packet."""
    import socket

    body = struct.pack(">BBHI", icmp_type, code, 0, 1280 if icmp_type == 2 else 0) + quoted[:88]
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    c = inet_csum(pseudo6(s, d, 58, len(body)) + body)
    return _ip6(src, dst, 58, body[:2] + struct.pack(">H", c) + body[4:])


def fragments4(ip: bytes, size: int = 24) -> list[bytes]:
    """An IPv4 datagram cut into fragments of ``size`` (a multiple of 8) payload bytes."""
    ihl = (ip[0] & 15) * 4
    hdr, data = ip[:ihl], ip[ihl:]
    out = []
    for k in range(0, len(data), size):
        part = data[k : k + size]
        more = 0x2000 if k + size < len(data) else 0
        h = bytearray(hdr)
        h[2:4] = struct.pack(">H", ihl + len(part))
        h[6:8] = struct.pack(">H", more | (k // 8))
        h[10:12] = b"\0\0"
        h[10:12] = struct.pack(">H", inet_csum(bytes(h)))
        out.append(bytes(h) + part)
    return out


def fragments6(ip: bytes, size: int = 24, ident: int = 0x1234) -> list[bytes]:
    """An IPv6 packet (no extension headers) cut into fragments."""
    nh, data = ip[6], ip[40:]
    out = []
    for k in range(0, len(data), size):
        part = data[k : k + size]
        more = 1 if k + size < len(data) else 0
        fh = struct.pack(">BBHI", nh, 0, k | more, ident)
        out.append(ip[:4] + struct.pack(">HBB", 8 + len(part), 44, ip[7]) + ip[8:40] + fh + part)
    return out


ETH_HDR = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def eth(ip: bytes, vlan: int | None = None) -> bytes:
    et = b"\x86\xdd" if ip and ip[0] >> 4 == 6 else b"\x08\x00"
    if vlan is None:
        return ETH_HDR[:12] + et + ip
    return ETH_HDR[:12] + struct.pack(">HH", 0x8100, vlan) + et + ip


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
    # ICMP errors about a connection, both ways: the client side cannot take a reply
    # (quoted VIP -> client), the server side cannot take a request (client -> RIP);
    # the service has one real server, so the connection is known in advance
    c = CLIENTS[0]
    yield 1, eth(udp_ip(c, 41000, "10.10.0.4", 9000, b"ping"))
    yield 1, eth(udp_ip("192.168.0.20", 9000, c, 41000, b"pong"))
    yield 1, eth(icmp_error("172.16.9.1", "10.10.0.4", udp_ip("10.10.0.4", 9000, c, 41000, b"pong")))
    yield 1, eth(icmp_error("192.168.0.1", c, udp_ip(c, 41000, "192.168.0.20", 9000, b"ping"), 11, 0))
    # fragments: the first one is balanced, the later ones follow it; a reply too
    yield from ((1, eth(fr)) for fr in fragments4(udp_ip(c, 5100, "10.10.0.1", 53, b"F" * 50)))
    yield from ((1, eth(fr)) for fr in fragments4(udp_ip("192.168.0.10", 5353, c, 5100, b"R" * 40)))
    # IPv6: TCP through each real server kind, UDP, fragments, ICMPv6 errors
    for k in range(4):
        sport = 42000 + k
        yield 1, eth(tcp6_ip(CLIENT6, sport, VIP6, 80, syn))
        yield 1, eth(tcp6_ip(CLIENT6, sport, VIP6, 80, ack | psh, b"GET / HTTP/1.0\r\n\r\n"))
        yield 229, tcp6_ip(CLIENT6, sport, VIP6, 80, fin | ack, hlim=1 + k)
    yield 1, eth(tcp6_ip(RIP6, 8080, CLIENT6, 42000, syn | ack))
    yield 1, eth(udp6_ip(CLIENT6, 5200, VIP6, 53, b"query"))
    yield 1, eth(udp6_ip(RIP6, 5353, CLIENT6, 5200, b"answer"))
    yield from ((1, eth(fr)) for fr in fragments6(udp6_ip(CLIENT6, 5201, VIP6, 53, b"G" * 50)))
    yield 1, eth(icmp6_error("2001:db8:9::1", VIP6, udp6_ip(VIP6, 53, CLIENT6, 5200, b"answer"), 2, 0))
    yield 1, eth(icmp6_error("2001:db8:1::1", CLIENT6, udp6_ip(CLIENT6, 5200, RIP6, 5353, b"query")))
    # IPv4 to an IPv6 tunnel server, on link types whose header names the family
    for lt, wrap in ((1, eth), (113, sll), (276, sll2)):
        yield lt, wrap(tcp_ip(CLIENTS[1], 43000 + lt, "10.10.0.5", 80, syn))
