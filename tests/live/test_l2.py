"""The L2 stage (fastvs/live/_l2.pyx, _l2.pxd): checksum completion of CHECKSUM_PARTIAL
frames (IPv4 and IPv6, checked with dpkt and an independent checksum) and the
neighbour table of both families (static entries, bounded under a flood)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import dpkt

from fastvs.live import neigh as N
from fastvs.live._l2 import L2_COUNTER_NAMES, L2Stage, complete_l4_checksum

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
MAC_C = bytes.fromhex("02000000cc01")  # a client
MAC_D = bytes.fromhex("020000000d01")  # the director's interface
MAC_R = bytes.fromhex("020000001101")  # a real server
CLIENT_IP = "10.0.0.2"
VIP = "10.0.0.100"
CLIENT_IP6 = "2001:db8::2"
VIP6 = "2001:db8::100"


def a6(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def l4_checksum_ok(ip: dpkt.ip.IP) -> bool:
    seg = bytes(ip.data)
    ph = ip.src + ip.dst + struct.pack("!BBH", 0, ip.p, len(seg))
    return csum16(ph + seg) == 0xFFFF


def tcp_frame(payload: bytes = b"hello", *, partial: bool = False) -> bytearray:
    tcp = dpkt.tcp.TCP(sport=40000, dport=80, seq=1, ack=0, flags=dpkt.tcp.TH_SYN, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(CLIENT_IP), dst=socket.inet_aton(VIP), p=6, ttl=64, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    raw = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip)))
    if partial:  # what a CHECKSUM_PARTIAL frame carries: the pseudo-header sum only
        seglen = len(raw) - 34
        ph = raw[26:34] + struct.pack("!BBH", 0, 6, seglen)
        raw[50:52] = struct.pack("!H", csum16(bytes(ph)))
    return raw


def test_complete_l4_checksum_tcp_and_udp() -> None:
    f = tcp_frame(b"x" * 101, partial=True)
    ip = dpkt.ethernet.Ethernet(bytes(f)).data
    assert not l4_checksum_ok(ip)
    assert complete_l4_checksum(f)
    assert l4_checksum_ok(dpkt.ethernet.Ethernet(bytes(f)).data)

    udp = dpkt.udp.UDP(sport=5000, dport=53, data=b"abc")
    udp.ulen = 11
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.2"), dst=socket.inet_aton("10.0.0.1"), p=17, data=udp)
    ip.len = 31
    u = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip)))
    u[40:42] = b"\x12\x34"
    assert complete_l4_checksum(u)
    assert l4_checksum_ok(dpkt.ethernet.Ethernet(bytes(u)).data)
    # not TCP/UDP over IPv4: untouched
    arp = bytearray(N.arp_frame(1, MAC_A, "10.0.0.1", N.BROADCAST, bytes(6), "10.0.0.2"))
    before = bytes(arp)
    assert not complete_l4_checksum(arp)
    assert bytes(arp) == before
    # truncated IPv4 total length beyond the frame: refused, untouched
    bad = tcp_frame()
    bad[16:18] = b"\x05\xdc"
    assert not complete_l4_checksum(bad)


def test_l4_checksum_completion_ipv6() -> None:
    for proto, l4 in ((6, dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_SYN, data=b"x" * 33)),
                      (17, dpkt.udp.UDP(sport=5000, dport=53, data=b"abc"))):
        if proto == 17:
            l4.ulen = 11
        ip = dpkt.ip6.IP6(src=a6(CLIENT_IP6), dst=a6(VIP6), nxt=proto, hlim=64, data=l4, plen=len(bytes(l4)))
        ip.extension_hdrs = {}
        f = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_C, dst=MAC_D, type=0x86DD, data=ip)))
        coff = 54 + (16 if proto == 6 else 6)
        good = bytes(f[coff:coff + 2])
        f[coff:coff + 2] = b"\x12\x34"  # what CHECKSUM_PARTIAL leaves there
        assert complete_l4_checksum(f)
        assert bytes(f[coff:coff + 2]) == good
        ph = bytes(f[22:54]) + struct.pack("!IxxxB", len(bytes(l4)), proto)
        assert csum16(ph + bytes(f[54:])) == 0xFFFF
    # payload length beyond the frame: refused
    f[18:20] = b"\x05\xdc"
    assert not complete_l4_checksum(f)


def test_neighbour_table_static_entries_survive_learning() -> None:
    # a one-fd pump never touches its sockets until step()
    p = L2Stage(MAC_A, MAC_A, neigh_capacity=64, seed=1)
    assert p.neigh_capacity == 64
    assert p.neigh_set("10.1.0.11", "02:00:00:00:00:11", static=True)
    assert not p.neigh_set("10.1.0.11", MAC_B)  # learning never replaces a static entry
    assert p.neigh_get("10.1.0.11") == bytes.fromhex("020000000011")
    for i in range(1000):  # flood with learnt entries: bounded, static entry kept
        p.neigh_set(f"172.16.{i // 250}.{i % 250 + 1}", MAC_B)
    assert len(p.neigh_entries()) <= 64
    assert p.neigh_get("10.1.0.11") == bytes.fromhex("020000000011")
    assert p.neigh_del("10.1.0.11") and p.neigh_get("10.1.0.11") is None
    assert p.counters() == dict.fromkeys(L2_COUNTER_NAMES, 0) and p.take_wanted() == []


def test_neighbour_table_holds_both_families() -> None:
    p = L2Stage(MAC_D, MAC_D, neigh_capacity=64, seed=4)
    assert p.neigh_set("10.1.0.11", MAC_R, static=True)
    assert p.neigh_set("2001:db8:1::11", MAC_C)
    assert p.neigh_get("10.1.0.11") == MAC_R and p.neigh_get("2001:db8:1::11") == MAC_C
    assert p.neigh_get("::a01:b") is None and p.neigh_get("2001:db8:1::12") is None
    assert not p.neigh_set("2001:db8:1::12", N.ALL_NODES_MAC)  # a multicast MAC: refused
    for i in range(2000):  # a flood of learnt IPv6 sources: bounded, the static v4 entry kept
        p.neigh_set(f"2001:db8:99::{i:x}", MAC_C)
    entries = p.neigh_entries()
    assert len(entries) <= 64 and ("10.1.0.11", MAC_R.hex(":"), True) in [e[:3] for e in entries]
    p.set_gateway("2001:db8::1")
    p.set_gateway("10.0.0.1")
    p.set_gateway(None)
