"""The classic-BPF programs (fastvs/live/bpf.py), run through its interpreter: the
fanout program against its model for requests and replies of IPv4 and IPv6 flows, and
the two socket filters (data vs ARP/ND) against frames built with dpkt."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections import Counter

import dpkt
import pytest

from fastvs.errors import RulesError
from fastvs.live import bpf as B
from fastvs.live import neigh as N

MAC_D = bytes.fromhex("020000000d01")
MAC_C = bytes.fromhex("02000000cc01")
MAC_R = bytes.fromhex("020000001101")
VIP = "10.0.0.100"
VIP6 = "2001:db8::100"
CLIENT_IP6 = "2001:db8::2"
GW_IP6 = "2001:db8:1::1"
RS_IPS6 = ("2001:db8:1::11", "2001:db8:1::12")


def a6(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


def ns_from(src: str, target: str, mac: bytes = MAC_C, *, hlim: int = 255, slla: bool = True) -> bytes:
    """A Neighbour Solicitation built with dpkt (an implementation independent of ours)."""
    group = N.solicited_node(target)[0]
    opts = struct.pack("!BB6s", 1, 1, mac) if slla else b""
    body = struct.pack("!I16s", 0, a6(target)) + opts
    icmp = dpkt.icmp6.ICMP6(type=135, code=0, data=body)
    ip = dpkt.ip6.IP6(src=a6(src), dst=a6(group), nxt=58, hlim=hlim, data=icmp, plen=len(bytes(icmp)))
    ip.extension_hdrs = {}
    raw = bytes(dpkt.ethernet.Ethernet(src=mac, dst=N.solicited_node(target)[1], type=0x86DD, data=ip))
    return raw


def l4_frame(src: str, dst: str, sport: int, dport: int, proto: int = 6) -> bytes:
    """An Ethernet frame carrying TCP/UDP (or, proto 58/1, an ICMP header) between
    ``src`` and ``dst`` (either family)."""
    l4 = struct.pack("!HH", sport, dport) + bytes(16) if proto in (6, 17) else bytes(8)
    if ":" in src:
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, a6(src), a6(dst))
        return MAC_D + MAC_C + b"\x86\xdd" + ip + l4
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return MAC_D + MAC_C + b"\x08\x00" + ip + l4


def test_bpf_programs_assemble() -> None:
    assert len(B.socket_filter()) % 8 == 0
    prog = B.fanout_program([VIP, "10.0.0.101"], 4)
    assert len(prog) % 8 == 0 and len(prog) // 8 < 64
    # the model of the hash spreads clients over the workers
    hits = Counter(B.fanout_worker(f"10.0.{i // 200}.{i % 200}", 30000 + i, 4) for i in range(4000))
    assert len(hits) == 4 and min(hits.values()) > 700


def test_fanout_keeps_both_directions_of_a_flow_on_one_worker() -> None:
    vips6 = [VIP6, "2001:db8::200", "2001:db8:7::1"]
    prog = B.fanout_program([VIP, "10.0.0.101", *vips6], 4)
    assert len(prog) // 8 < 4096
    hits: Counter[int] = Counter()
    for i in range(400):
        for vip, client, rip in ((VIP, f"10.2.{i % 7}.{i % 250 + 1}", "10.1.0.11"),
                                 (vips6[i % 3], f"2001:db8:{i % 5:x}::{i + 2:x}", RS_IPS6[i % 2])):
            cport = 20000 + 7 * i
            for proto in (6, 17):
                request = l4_frame(client, vip, cport, 80, proto)
                reply = l4_frame(rip, client, 80, cport, proto)  # the real server's answer
                w = B.interpret(prog, request, 0)
                assert B.interpret(prog, reply, 0) == w == B.fanout_worker(client, cport, 4), (client, vip)
                hits[w] += 1
            # not TCP/UDP: hashed on the address alone, both ways
            if ":" in client:
                assert B.interpret(prog, l4_frame(client, vip, 0, 0, 58), 0) == B.fanout_worker(client, 0, 4)
                assert B.interpret(prog, l4_frame(rip, client, 0, 0, 58), 0) == B.fanout_worker(client, 0, 4)
    assert len(hits) == 4 and min(hits.values()) > 250, hits  # spread over the workers
    # an address that equals a VIP in its low 32 bits only is not taken for the VIP
    twin = "2001:db8:99::100"
    assert B.interpret(prog, l4_frame(RS_IPS6[0], twin, 80, 4242), 0) == B.fanout_worker(twin, 4242, 4)
    arp = N.arp_frame(N.ARP_REQUEST, MAC_C, "10.0.0.2", N.BROADCAST, bytes(6), VIP)
    assert B.interpret(prog, arp, 0) == 0
    with pytest.raises(RulesError, match="IPv6 VIPs"):
        B.fanout_program([f"2001:db8::{i:x}" for i in range(1, 30)], 2)


def test_socket_filters_split_data_and_neighbour_discovery() -> None:
    data, l2 = B.socket_filter(), B.l2_filter()
    host, mcast, outgoing = 0, 2, 4
    tcp6 = dpkt.ip6.IP6(src=a6(CLIENT_IP6), dst=a6(VIP6), nxt=6, hlim=64,
                        data=dpkt.tcp.TCP(sport=1, dport=80), plen=20)
    tcp6.extension_hdrs = {}
    tcp6_frame = bytes(dpkt.ethernet.Ethernet(src=MAC_C, dst=MAC_D, type=0x86DD, data=tcp6))
    tcp4_frame = bytes(dpkt.ethernet.Ethernet(
        src=MAC_C, dst=MAC_D, type=0x0800,
        data=dpkt.ip.IP(src=socket.inet_aton("10.0.0.2"), dst=socket.inet_aton(VIP), p=6,
                        data=dpkt.tcp.TCP(sport=1, dport=80))))
    ns_mc = ns_from(CLIENT_IP6, VIP6)
    ns_uc = bytearray(ns_mc)
    ns_uc[0:6] = MAC_D
    na = N.na_frame(MAC_R, RS_IPS6[0], MAC_D, GW_IP6, N.NA_SOLICITED)
    ptb = bytearray(tcp6_frame)  # an ICMPv6 error (packet too big) to the VIP: data
    ptb[20] = 58
    ptb[54] = 2
    arp = N.arp_frame(N.ARP_REQUEST, MAC_C, "10.0.0.2", N.BROADCAST, bytes(6), VIP)
    cases = [  # frame, pkttype, data socket takes it, ARP/ND socket takes it
        (tcp4_frame, host, True, False),
        (tcp6_frame, host, True, False),
        (bytes(ptb), host, True, False),
        (tcp6_frame, mcast, False, False),
        (ns_mc, mcast, False, True),  # solicited-node multicast NS reaches the ND socket
        (bytes(ns_uc), host, False, True),  # a unicast NUD probe: ND, not data
        (na, host, False, True),
        (ns_from(CLIENT_IP6, VIP6, hlim=64), mcast, False, False),
        (arp, 1, False, True),
        (arp, outgoing, False, False),
        (ns_mc, outgoing, False, False),
    ]
    for frame, pkttype, want_data, want_l2 in cases:
        assert bool(B.interpret(data, frame, pkttype)) == want_data, (frame[12:14].hex(), pkttype)
        assert bool(B.interpret(l2, frame, pkttype)) == want_l2, (frame[12:14].hex(), pkttype)
