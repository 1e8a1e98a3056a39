"""Hand-built test frames (Ethernet / IPv4 / TCP or UDP) with valid checksums.

Built with dpkt so that the bytes come from an independent implementation.
"""

from __future__ import annotations

import socket

import dpkt

CLIENT_MAC = b"\x02\x00\x00\x00\x00\x02"
DIR_MAC = b"\x02\x00\x00\x00\x00\x01"

FLAGS = {"S": dpkt.tcp.TH_SYN, "A": dpkt.tcp.TH_ACK, "F": dpkt.tcp.TH_FIN,
         "R": dpkt.tcp.TH_RST, "P": dpkt.tcp.TH_PUSH, "U": dpkt.tcp.TH_URG}


def tcp(src: str, sport: int, dst: str, dport: int, flags: str = "S", payload: bytes = b"",
        ttl: int = 64, seq: int = 1000, ack: int = 0, ip_id: int = 1) -> bytes:
    f = 0
    for ch in flags.replace("-", ""):
        f |= FLAGS[ch]
    t = dpkt.tcp.TCP(sport=sport, dport=dport, flags=f, seq=seq, ack=ack, win=65535, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_TCP,
                    ttl=ttl, id=ip_id, data=t)
    ip.len = 20 + len(bytes(t))
    return bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x0800, data=ip))


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"hello", ttl: int = 64,
        zero_csum: bool = False) -> bytes:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    u.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_UDP,
                    ttl=ttl, data=u)
    ip.len = 20 + u.ulen
    raw = bytearray(bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x0800, data=ip)))
    if zero_csum:
        raw[14 + 20 + 6: 14 + 20 + 8] = b"\x00\x00"
    return bytes(raw)


def checksums_ok(frame: bytes) -> bool:
    """IPv4 header and TCP/UDP checksums verify (recomputed by dpkt)."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if not isinstance(ip, dpkt.ip.IP):
        return True
    hdr = bytes(ip)[: ip.hl * 4]
    if dpkt.in_cksum(hdr) != 0:
        return False
    l4 = bytes(ip)[ip.hl * 4: ip.len]
    if ip.p not in (6, 17):
        return True
    if ip.p == 17 and l4[6:8] == b"\x00\x00":
        return True
    pseudo = ip.src + ip.dst + bytes([0, ip.p]) + len(l4).to_bytes(2, "big")
    return dpkt.in_cksum(pseudo + l4) == 0


def tcp6(src: str, sport: int, dst: str, dport: int, flags: str = "S", payload: bytes = b"",
         hlim: int = 64, ext: bytes = b"", ext_nh: int | None = None) -> bytes:
    """IPv6/TCP; ``ext`` is raw extension headers placed before TCP (first's type in ext_nh)."""
    f = 0
    for ch in flags.replace("-", ""):
        f |= FLAGS[ch]
    t = dpkt.tcp.TCP(sport=sport, dport=dport, flags=f, seq=1000, win=65535, data=payload)
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    t.sum = 0
    seg = bytes(t)
    pseudo = s6 + d6 + len(seg).to_bytes(4, "big") + b"\x00\x00\x00\x06"
    t.sum = dpkt.in_cksum(pseudo + seg)
    seg = bytes(t)
    nh = ext_nh if ext else 6
    hdr = bytes([0x60, 0, 0, 0]) + (len(ext) + len(seg)).to_bytes(2, "big") + bytes([nh, hlim]) + s6 + d6
    return bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x86DD, data=b"")) + hdr + ext + seg


def udp6(src: str, sport: int, dst: str, dport: int, payload: bytes = b"hello", hlim: int = 64) -> bytes:
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    u = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\0\0" + payload
    pseudo = s6 + d6 + len(u).to_bytes(4, "big") + b"\x00\x00\x00\x11"
    c = dpkt.in_cksum(pseudo + u) or 0xFFFF
    u = u[:6] + c.to_bytes(2, "big") + u[8:]
    hdr = bytes([0x60, 0, 0, 0]) + len(u).to_bytes(2, "big") + bytes([17, hlim]) + s6 + d6
    return bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x86DD, data=b"")) + hdr + u


def checksums6_ok(frame: bytes) -> bool:
    ip = frame[14:]
    plen = int.from_bytes(ip[4:6], "big")
    nh, off = ip[6], 40
    while nh in (0, 43, 60):
        nh, off = ip[off], off + (ip[off + 1] + 1) * 8
    l4 = ip[off: 40 + plen]
    pseudo = ip[8:40] + len(l4).to_bytes(4, "big") + bytes([0, 0, 0, nh])
    return dpkt.in_cksum(pseudo + l4) == 0


def icmp_error(src: str, dst: str, quoted_frame: bytes, icmp_type: int = 3, code: int = 3,
               ttl: int = 64, quote_len: int = 28) -> bytes:
    """An ICMPv4 error from src to dst quoting the IP header + 8 bytes of a frame."""
    quoted = quoted_frame[14: 14 + quote_len]
    ic = dpkt.icmp.ICMP(type=icmp_type, code=code, data=b"\0\0\0\0" + quoted)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=1, ttl=ttl, data=ic)
    ip.len = 20 + len(bytes(ic))
    return bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x0800, data=ip))


def icmp6_error(src: str, dst: str, quoted_frame: bytes, icmp_type: int = 1, code: int = 4,
                hlim: int = 64, quote_len: int = 48) -> bytes:
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    body = bytes([icmp_type, code, 0, 0]) + b"\0\0\0\0" + quoted_frame[14: 14 + quote_len]
    pseudo = s6 + d6 + len(body).to_bytes(4, "big") + b"\x00\x00\x00\x3a"
    c = dpkt.in_cksum(pseudo + body)
    body = body[:2] + c.to_bytes(2, "big") + body[4:]
    hdr = bytes([0x60, 0, 0, 0]) + len(body).to_bytes(2, "big") + bytes([58, hlim]) + s6 + d6
    return bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x86DD, data=b"")) + hdr + body


def icmp_ok(frame: bytes) -> bool:
    """Outer IPv4 header checksum and ICMP checksum (over the whole message) verify."""
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    tot = int.from_bytes(ip[2:4], "big")
    return dpkt.in_cksum(ip[:ihl]) == 0 and dpkt.in_cksum(ip[ihl:tot]) == 0


def fragments(frame: bytes, size: int = 24) -> list[bytes]:
    """Split an Ethernet/IPv4 frame's datagram into fragments of ``size`` payload bytes."""
    ip = dpkt.ethernet.Ethernet(frame).data
    payload = bytes(ip.data)
    out = []
    for off in range(0, len(payload), size):
        part = payload[off: off + size]
        more = off + size < len(payload)
        f = dpkt.ip.IP(src=ip.src, dst=ip.dst, p=ip.p, ttl=ip.ttl, id=ip.id, data=part)
        f._flags_offset = (off // 8) | (0x2000 if more else 0)
        f.len = 20 + len(part)
        f.sum = 0
        out.append(bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x0800, data=f)))
    return out
