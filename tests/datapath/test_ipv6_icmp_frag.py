"""IPv6 services, ICMP/ICMPv6 errors about connections, and fragments following
their first fragment (ip_vs_in_icmp, ip_vs_out_icmp, ip_vs_nat_icmp[_v6], defrag)."""

from __future__ import annotations

import warnings

import dpkt

from fastvs import verdicts as V
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import (
    checksums6_ok,
    checksums_ok,
    fragments,
    icmp6_error,
    icmp_error,
    icmp_ok,
    tcp,
    tcp6,
    udp,
    udp6,
)

VIP6, R61, C6 = "2001:db8::1", "2001:db8:1::10", "2001:db8:2::5"
VIP, RIP, CL = "10.10.0.1", "192.168.0.10", "100.64.0.1"

RULES6 = f"""
-A -t [{VIP6}]:80 -s rr
-a -t [{VIP6}]:80 -r [{R61}]:8080 -m
-A -u [{VIP6}]:53 -s rr
-a -u [{VIP6}]:53 -r [{R61}]:5353 -m
"""
RULES4 = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {RIP}:8080 -m\n-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r {RIP}:5353 -m\n"


def d6() -> Director:
    return Director(parse_rules(RULES6), seed=1)


def d4() -> Director:
    return Director(parse_rules(RULES4), seed=1)


def test_ipv6_tcp_dnat_snat() -> None:
    d = d6()
    out, v = d.process_packets([tcp6(C6, 40000, VIP6, 80, "S")])
    assert v == [V.FWD_IN]
    ip = out[0][14:]
    assert ip[24:40] == bytes.fromhex("20010db8000100000000000000000010")
    assert ip[7] == 63 and int.from_bytes(ip[42:44], "big") == 8080
    assert checksums6_ok(out[0])
    out, v = d.process_packets([tcp6(R61, 8080, C6, 40000, "SA")], [10**9])
    assert v == [V.FWD_OUT]
    assert out[0][14 + 8: 14 + 24] == bytes.fromhex("20010db8000000000000000000000001")
    assert checksums6_ok(out[0])
    c = d.lookup("tcp", C6, 40000, VIP6, 80)
    assert c["state"] == "SYN_RECV" and c["daddr"] == R61


def test_ipv6_extension_headers_are_followed() -> None:
    d = d6()
    hbh = bytes([17, 0]) + bytes([1, 4, 0, 0, 0, 0])  # next: UDP... replaced below
    frame = tcp6(C6, 40001, VIP6, 80, "S", ext=bytes([6]) + hbh[1:], ext_nh=0)
    out, v = d.process_packets([frame])
    assert v == [V.FWD_IN]
    assert checksums6_ok(out[0])


def test_ipv6_udp() -> None:
    d = d6()
    out, v = d.process_packets([udp6(C6, 5000, VIP6, 53)])
    assert v == [V.FWD_IN] and checksums6_ok(out[0])


def test_icmp_error_from_client_side_goes_to_the_real_server() -> None:
    """A reply the client side cannot take (quoted VIP -> client) comes back to the
    VIP; ip_vs_nat_icmp(inout=0) sends it to the real server."""
    d = d4()
    d.process_packets([tcp(CL, 40000, VIP, 80, "S")])
    reply_out, _ = d.process_packets([tcp(RIP, 8080, CL, 40000, "SA")], [10**9])
    err = icmp_error("100.64.9.9", VIP, reply_out[0], icmp_type=3, code=4)
    out, v = d.process_packets([err], [2 * 10**9])
    assert v == [V.FWD_IN]
    ip = dpkt.ethernet.Ethernet(out[0]).data
    assert ip.dst == bytes([192, 168, 0, 10]) and ip.ttl == 63
    inner = bytes(ip.data)[8:]
    assert inner[12:16] == bytes([192, 168, 0, 10])  # quoted source is the real server
    assert int.from_bytes(inner[20:22], "big") == 8080
    assert dpkt.in_cksum(inner[:20]) == 0
    assert icmp_ok(out[0])
    assert d.services()[0]["stats"]["inpkts"] == 2


def test_icmp_error_from_server_side_goes_to_the_client() -> None:
    """Quoted client -> RIP (a forwarded request): ip_vs_nat_icmp(inout=1) makes the
    error come from the VIP about a packet to the VIP."""
    d = d4()
    fwd, _ = d.process_packets([udp(CL, 5000, VIP, 53)])
    err = icmp_error("192.168.0.1", CL, fwd[0], icmp_type=3, code=3)
    out, v = d.process_packets([err], [10**9])
    assert v == [V.FWD_OUT]
    ip = dpkt.ethernet.Ethernet(out[0]).data
    assert ip.src == bytes([10, 10, 0, 1])
    inner = bytes(ip.data)[8:]
    assert inner[16:20] == bytes([10, 10, 0, 1]) and int.from_bytes(inner[22:24], "big") == 53
    assert icmp_ok(out[0])


def test_unrelated_icmp_passes_and_bad_checksum_drops() -> None:
    d = d4()
    echo = icmp_error(CL, VIP, tcp(CL, 1, VIP, 80), icmp_type=8, code=0)
    stray = icmp_error("192.168.0.1", CL, udp(CL, 5999, RIP, 53))
    out, v = d.process_packets([echo, stray])
    assert v == [V.PASS_PROTO, V.PASS_PROTO] and out == [echo, stray]
    fwd, _ = d.process_packets([udp(CL, 5000, VIP, 53)])
    bad = bytearray(icmp_error("192.168.0.1", CL, fwd[0]))
    bad[14 + 20 + 2] ^= 0xFF
    _, v = d.process_packets([bytes(bad)])
    assert v == [V.DROP_ICMP_CSUM]


def test_icmpv6_packet_too_big_about_a_connection() -> None:
    d = d6()
    fwd, _ = d.process_packets([tcp6(C6, 40000, VIP6, 80, "S")])
    err = icmp6_error("2001:db8:1::1", C6, fwd[0], icmp_type=2, code=0)
    out, v = d.process_packets([err], [10**9])
    assert v == [V.FWD_OUT]
    ip = out[0][14:]
    assert ip[8:24] == bytes.fromhex("20010db8000000000000000000000001")
    plen = int.from_bytes(ip[4:6], "big")
    pseudo = ip[8:40] + plen.to_bytes(4, "big") + b"\x00\x00\x00\x3a"
    assert dpkt.in_cksum(pseudo + ip[40: 40 + plen]) == 0


def test_fragments_follow_their_first_fragment() -> None:
    d = d4()
    whole = udp(CL, 5000, VIP, 53, payload=b"x" * 60)
    frags = fragments(whole, size=24)
    assert len(frags) == 3
    out, v = d.process_packets(frags, [0, 1, 2])
    assert v == [V.FWD_IN] * 3
    for f in out:
        ip = dpkt.ethernet.Ethernet(f).data
        assert ip.dst == bytes([192, 168, 0, 10]) and dpkt.in_cksum(bytes(ip)[:20]) == 0
    # reassembled, the datagram carries a valid UDP checksum to the real server
    payload = b"".join(bytes(dpkt.ethernet.Ethernet(f).data.data) for f in out)
    ip0 = dpkt.ethernet.Ethernet(out[0]).data
    pseudo = ip0.src + ip0.dst + b"\x00\x11" + len(payload).to_bytes(2, "big")
    assert dpkt.in_cksum(pseudo + payload) == 0
    # the datagram counts once, with its reassembled length
    st = d.services()[1]["stats"]
    assert st["inpkts"] == 1 and st["inbytes"] == 20 + 8 + 60


def test_orphan_fragment_passes_and_is_counted() -> None:
    d = d4()
    frags = fragments(udp(CL, 5000, VIP, 53, payload=b"y" * 60), size=24)
    out, v = d.process_packets(frags[1:])
    assert v == [V.PASS_FRAGMENT, V.PASS_FRAGMENT] and out == frags[1:]


def test_ipv6_rules_no_longer_rejected() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d6()


def test_mixed_traffic_checksums() -> None:
    d = d4()
    out, _ = d.process_packets([tcp(CL, 41000 + i, VIP, 80, "S", payload=b"p" * i) for i in range(20)])
    assert all(checksums_ok(f) for f in out)
