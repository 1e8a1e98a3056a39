"""ARP and IPv6 neighbour discovery (fastvs/live/neigh.py) against frames built with
dpkt: answers for the VIPs and --addr, DAD defence, invalid messages ignored, resolving
real servers, learning and pinning; the static neighbour file."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import dpkt
import pytest

from fastvs.errors import RulesError
from fastvs.live import neigh as N
from fastvs.live._l2 import L2Stage

MAC_A = bytes.fromhex("020000000001")
MAC_D = bytes.fromhex("020000000d01")  # the director's interface
MAC_C = bytes.fromhex("02000000cc01")  # a client
MAC_R = bytes.fromhex("020000001101")  # a real server
VIP = "10.0.0.100"
CLIENT_IP = "10.0.0.2"
VIP6 = "2001:db8::100"
CLIENT_IP6 = "2001:db8::2"
GW_IP6 = "2001:db8:1::1"
RS_IPS6 = ("2001:db8:1::11", "2001:db8:1::12")


def a6(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def icmp6_ok(frame: bytes) -> bool:
    ip = frame[14:]
    plen = struct.unpack_from("!H", ip, 4)[0]
    ph = ip[8:40] + struct.pack("!IxxxB", plen, ip[6])
    return csum16(ph + ip[40:40 + plen]) == 0xFFFF


def ns_from(src: str, target: str, mac: bytes = MAC_C, *, hlim: int = 255, slla: bool = True) -> bytes:
    """A Neighbour Solicitation built with dpkt (an implementation independent of ours)."""
    group = N.solicited_node(target)[0]
    opts = struct.pack("!BB6s", 1, 1, mac) if slla else b""
    body = struct.pack("!I16s", 0, a6(target)) + opts
    icmp = dpkt.icmp6.ICMP6(type=135, code=0, data=body)
    ip = dpkt.ip6.IP6(src=a6(src), dst=a6(group), nxt=58, hlim=hlim, data=icmp, plen=len(bytes(icmp)))
    ip.extension_hdrs = {}
    raw = bytes(dpkt.ethernet.Ethernet(src=mac, dst=N.solicited_node(target)[1], type=0x86DD, data=ip))
    assert icmp6_ok(raw)
    return raw


class FakeSock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, b: bytes) -> int:
        self.sent.append(bytes(b))
        return len(b)


def make_neigh(answer: set[str] | None = None) -> tuple[L2Stage, N.Neighbours, FakeSock]:
    p = L2Stage(MAC_D, MAC_D, seed=3)
    sock = FakeSock()
    nb = N.Neighbours(table=p, sides=[N.Side("client", "eth0", MAC_D, sock)],
                      answer_for=answer if answer is not None else {VIP6, GW_IP6, VIP},
                      own_addrs=[GW_IP6, "10.1.0.1"], resolve_set={RS_IPS6[0]})
    return p, nb, sock


def test_neigh_file(tmp_path: Path) -> None:
    f = tmp_path / "neigh"
    f.write_text("# real servers\n10.1.0.11 02:00:00:00:00:11\n\n10.1.0.12 02-00-00-00-00-12  # two\n")
    assert N.load_neigh_file(f) == [("10.1.0.11", bytes.fromhex("020000000011")),
                                    ("10.1.0.12", bytes.fromhex("020000000012"))]
    f.write_text("10.1.0.11 02:00:00:00:00\n")
    with pytest.raises(RulesError, match=r"neigh:1: bad MAC"):
        N.load_neigh_file(f)
    f.write_text("10.1.0.300 02:00:00:00:00:11\n")
    with pytest.raises(RulesError, match="bad IP address"):
        N.load_neigh_file(f)
    f.write_text("2001:db8:1::11 02:00:00:00:01:11\nff02::1 02:00:00:00:01:11\n")
    with pytest.raises(RulesError, match=r"neigh:2: not a neighbour"):
        N.load_neigh_file(f)
    f.write_text("2001:DB8:1:0::11 02:00:00:00:01:11\n")
    assert N.load_neigh_file(f) == [("2001:db8:1::11", bytes.fromhex("020000000111"))]


def test_arp_answers_for_vips_and_learns_what_it_asked() -> None:
    p = L2Stage(MAC_A, MAC_A, seed=2)
    sock = FakeSock()
    nb = N.Neighbours(table=p, sides=[N.Side("client", "eth0", MAC_A, sock)], answer_for={VIP, "10.1.0.1"},
                      own_addrs=["10.1.0.1"], resolve_set={"10.1.0.11"})
    client_mac = bytes.fromhex("02000000cccc")
    req = N.arp_frame(N.ARP_REQUEST, client_mac, CLIENT_IP, N.BROADCAST, bytes(6), VIP)
    nb.on_frame(nb.sides[0], req)
    reply = N.parse_arp(sock.sent[-1])
    assert reply is not None and reply.op == N.ARP_REPLY
    assert (reply.sha, reply.spa, reply.tha, reply.tpa) == (MAC_A, VIP, client_mac, CLIENT_IP)
    assert sock.sent[-1][:6] == client_mac
    # a request for someone else: no reply
    nb.on_frame(nb.sides[0], N.arp_frame(N.ARP_REQUEST, client_mac, CLIENT_IP, N.BROADCAST, bytes(6), "10.0.0.7"))
    assert len(sock.sent) == 1
    # resolving: sender IP is our closest address; the reply is learnt and pinned
    assert nb.request(["10.1.0.11"]) == 1
    asked = N.parse_arp(sock.sent[-1])
    assert asked is not None and asked.op == N.ARP_REQUEST and asked.spa == "10.1.0.1" and asked.tpa == "10.1.0.11"
    assert nb.request(["10.1.0.11"]) == 0  # rate-limited
    rs_mac = bytes.fromhex("020000001111")
    nb.on_frame(nb.sides[0], N.arp_frame(N.ARP_REPLY, rs_mac, "10.1.0.11", MAC_A, MAC_A, "10.1.0.1"))
    assert p.neigh_get("10.1.0.11") == rs_mac and nb.missing() == []
    # unsolicited chatter about strangers is not learnt
    nb.on_frame(nb.sides[0], N.arp_frame(N.ARP_REPLY, rs_mac, "10.9.9.9", MAC_A, MAC_A, "10.9.9.8"))
    assert p.neigh_get("10.9.9.9") is None


def test_neighbour_solicitation_for_a_vip_is_answered() -> None:
    p, nb, sock = make_neigh()
    nb.on_frame(nb.sides[0], ns_from(CLIENT_IP6, VIP6))
    assert len(sock.sent) == 1
    na = sock.sent[0]
    assert icmp6_ok(na)
    eth = dpkt.ethernet.Ethernet(na)
    assert eth.dst == MAC_C and eth.src == MAC_D and eth.type == 0x86DD
    ip = eth.data
    assert (ip.src, ip.dst, ip.hlim, ip.nxt) == (a6(VIP6), a6(CLIENT_IP6), 255, 58)
    msg = bytes(ip.data)
    assert msg[0] == 136 and msg[1] == 0
    assert msg[4] == N.NA_SOLICITED | N.NA_OVERRIDE  # a VIP is no router
    assert msg[8:24] == a6(VIP6)
    assert msg[24:32] == struct.pack("!BB6s", 2, 1, MAC_D)  # target link-layer address
    parsed = N.parse_nd(na)
    assert parsed is not None and parsed.type == N.ND_NA and parsed.lladdr == MAC_D
    # the soliciting client talked to our address: learnt from its SLLA option
    assert p.neigh_get(CLIENT_IP6) == MAC_C
    # the gateway address (an --addr) is advertised as a router
    nb.on_frame(nb.sides[0], ns_from(RS_IPS6[1], GW_IP6, MAC_R))
    assert sock.sent[-1][14 + 40 + 4] == N.NA_ROUTER | N.NA_SOLICITED | N.NA_OVERRIDE
    assert nb.counts["na_sent"] == 2 and nb.counts["nd_in"] == 2


def test_dad_probe_is_defended_to_all_nodes_and_strangers_are_ignored() -> None:
    p, nb, sock = make_neigh()
    nb.on_frame(nb.sides[0], ns_from("::", VIP6, slla=False))
    eth = dpkt.ethernet.Ethernet(sock.sent[-1])
    assert eth.dst == N.ALL_NODES_MAC and eth.data.dst == a6("ff02::1")
    assert bytes(eth.data.data)[4] == N.NA_OVERRIDE  # not solicited
    assert p.neigh_get("::") is None
    n = len(sock.sent)
    nb.on_frame(nb.sides[0], ns_from(CLIENT_IP6, "2001:db8::77"))  # not ours
    assert len(sock.sent) == n and p.neigh_get(CLIENT_IP6) is None  # nor learnt
    # invalid: hop limit not 255, bad checksum, truncated, DAD probe with an SLLA
    bad = [ns_from(CLIENT_IP6, VIP6, hlim=64)]
    f = bytearray(ns_from(CLIENT_IP6, VIP6))
    f[14 + 40 + 2] ^= 0xFF
    bad += [bytes(f), ns_from(CLIENT_IP6, VIP6)[:70], ns_from("::", VIP6)]
    for frame in bad:
        assert N.parse_nd(frame) is None
        nb.on_frame(nb.sides[0], frame)
    assert len(sock.sent) == n and nb.counts["l2_invalid"] == len(bad)
    nb.on_frame(nb.sides[0], b"\x86\xdd")  # runts: counted, never a crash
    nb.on_frame(nb.sides[0], bytes(20))
    assert nb.counts["l2_invalid"] == len(bad) + 2
    # nothing answered when another box announces the VIPs
    nb.answer = False
    nb.on_frame(nb.sides[0], ns_from(CLIENT_IP6, VIP6))
    assert len(sock.sent) == n


def test_resolving_a_real_server_by_solicitation() -> None:
    p, nb, sock = make_neigh()
    assert nb.missing() == [RS_IPS6[0]]
    assert nb.request([RS_IPS6[0]]) == 1
    ns = sock.sent[-1]
    assert icmp6_ok(ns)
    eth = dpkt.ethernet.Ethernet(ns)
    group, gmac = N.solicited_node(RS_IPS6[0])
    assert eth.dst == gmac == bytes.fromhex("3333ff000011") and group == "ff02::1:ff00:11"
    ip = eth.data
    assert ip.src == a6(GW_IP6) and ip.dst == a6(group) and ip.hlim == 255  # closest --addr
    msg = bytes(ip.data)
    assert msg[0] == 135 and msg[8:24] == a6(RS_IPS6[0]) and msg[24:32] == struct.pack("!BB6s", 1, 1, MAC_D)
    assert nb.request([RS_IPS6[0]]) == 0  # rate-limited
    # the real server's advertisement is learnt and pinned
    na = N.na_frame(MAC_R, RS_IPS6[0], MAC_D, GW_IP6, N.NA_SOLICITED | N.NA_OVERRIDE)
    nb.on_frame(nb.sides[0], na)
    assert p.neigh_get(RS_IPS6[0]) == MAC_R and nb.missing() == []
    assert any(ip == RS_IPS6[0] and static for ip, _, static, _ in p.neigh_entries())
    # an unsolicited advertisement of a stranger is not learnt
    nb.on_frame(nb.sides[0], N.na_frame(MAC_R, "2001:db8:1::99", MAC_D, GW_IP6, N.NA_OVERRIDE))
    assert p.neigh_get("2001:db8:1::99") is None
    # without an IPv6 --addr the solicitation comes from :: (the target answers all-nodes)
    nb.own_addrs = ["10.1.0.1"]
    assert nb.source_ip_for(RS_IPS6[1]) == "::"
    nb.request([RS_IPS6[1]])
    msg = dpkt.ethernet.Ethernet(sock.sent[-1]).data
    assert msg.src == a6("::") and len(bytes(msg.data)) == 24  # no SLLA option from ::
    assert nb.source_ip_for("10.1.0.11") == "10.1.0.1"
