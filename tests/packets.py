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
