"""fastvs forward over IPv6: neighbour discovery, the IPv6 neighbour cache, the socket
filters, checksum completion, and end to end (curl -6 through the director).

The end-to-end test uses the namespaces of tests/netns.py (dual-stack client and real
servers; the director namespace with IPv6 off on its interfaces and ip6 dropped at
ingress, so that only fastvs answers for the VIP and the gateway address).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dpkt
import pytest

from fastvs.errors import RulesError
from fastvs.live import _afpacket as A
from fastvs.live import forwarder as F
from fastvs.live import neigh as N

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import CLIENT_IP6, GW_IP6, RS_IPS6, UDP_PORT, VIP, VIP6, Topology, have_netns  # noqa: E402
from test_forwarder import Forwarder, csum16, udp  # noqa: E402

MAC_D = bytes.fromhex("020000000d01")  # the director's interface
MAC_C = bytes.fromhex("02000000cc01")  # a client
MAC_R = bytes.fromhex("020000001101")  # a real server


def a6(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


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


# -- neighbour discovery ------------------------------------------------------------------------
class FakeSock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, b: bytes) -> int:
        self.sent.append(bytes(b))
        return len(b)


def make_neigh(answer: set[str] | None = None) -> tuple[A.Pump, N.Neighbours, FakeSock]:
    p = A.Pump(-1, -1, MAC_D, MAC_D, seed=3)
    sock = FakeSock()
    nb = N.Neighbours(table=p, sides=[N.Side("client", "eth0", MAC_D, sock)],
                      answer_for=answer if answer is not None else {VIP6, GW_IP6, VIP},
                      own_addrs=[GW_IP6, "10.1.0.1"], resolve_set={RS_IPS6[0]})
    return p, nb, sock


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


def test_neighbour_table_holds_both_families() -> None:
    p = A.Pump(-1, -1, MAC_D, MAC_D, neigh_capacity=64, seed=4)
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
        assert A.complete_l4_checksum(f)
        assert bytes(f[coff:coff + 2]) == good
        ph = bytes(f[22:54]) + struct.pack("!IxxxB", len(bytes(l4)), proto)
        assert csum16(ph + bytes(f[54:])) == 0xFFFF
    # payload length beyond the frame: refused
    f[18:20] = b"\x05\xdc"
    assert not A.complete_l4_checksum(f)


# -- the socket filters, run by a small classic-BPF interpreter -------------------------------------
def run_bpf(prog: bytes, frame: bytes, pkttype: int) -> int:
    """Interpret the classic BPF our assembler emits, as the kernel would for an
    Ethernet frame (network header at 14): absolute loads, SKF_NET_OFF-relative loads,
    the pkttype/protocol ancillary loads, indirect loads, ldx msh/imm, scratch memory,
    the ALU ops, jumps and returns. A load outside the frame rejects the frame."""
    insns = [struct.unpack_from("HBBI", prog, i) for i in range(0, len(prog), 8)]
    ad, net = F.SKF_AD_OFF & 0xFFFFFFFF, F.SKF_NET_OFF & 0xFFFFFFFF
    a = x = pc = 0
    mem = [0] * 16

    def load(off: int, size: int) -> int | None:
        if off >= net:
            off = off - net + 14
        if off + size > len(frame):
            return None
        return int.from_bytes(frame[off:off + size], "big")

    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls, size = code & 0x07, {F.BPF_W: 4, F.BPF_H: 2, F.BPF_B: 1}[code & 0x18]
        if cls == F.BPF_LD:
            mode = code & 0xE0
            if mode == F.BPF_MEM:
                a = mem[k]
                continue
            if mode == F.BPF_ABS and k == ad + F.SKF_AD_PKTTYPE:
                a = pkttype
                continue
            if mode == F.BPF_ABS and k == ad + F.SKF_AD_PROTOCOL:
                a = int.from_bytes(frame[12:14], "big")
                continue
            v = load(k if mode == F.BPF_ABS else (x + k) & 0xFFFFFFFF, size)
            if v is None:
                return 0
            a = v
        elif cls == F.BPF_LDX:
            if code & 0xE0 == F.BPF_MSH:
                v = load(k, 1)
                if v is None:
                    return 0
                x = (v & 0x0F) * 4
            else:
                x = k
        elif cls == F.BPF_ST:
            mem[k] = a
        elif cls == F.BPF_ALU:
            src = x if code & F.BPF_X else k
            op = code & 0xF0
            a = {F.BPF_XOR: a ^ src, F.BPF_RSH: a >> src, F.BPF_MUL: a * src,
                 F.BPF_MOD: a % src if src else 0}[op] & 0xFFFFFFFF
        elif cls == F.BPF_MISC:
            x = a
        elif cls == F.BPF_JMP:
            op = code & 0xF0
            if op == F.BPF_JA:
                pc += k
                continue
            hit = {F.BPF_JEQ: a == k, F.BPF_JGT: a > k, F.BPF_JGE: a >= k}[op]
            pc += jt if hit else jf
        elif cls == F.BPF_RET:
            return a if code & 0x18 == F.BPF_A else k
        else:
            raise AssertionError(f"unexpected BPF op {code:#x}")


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


def test_fanout_keeps_both_directions_of_a_flow_on_one_worker() -> None:
    vips6 = [VIP6, "2001:db8::200", "2001:db8:7::1"]
    prog = F.fanout_program([VIP, "10.0.0.101", *vips6], 4)
    assert len(prog) // 8 < 4096
    hits: Counter[int] = Counter()
    for i in range(400):
        for vip, client, rip in ((VIP, f"10.2.{i % 7}.{i % 250 + 1}", "10.1.0.11"),
                                 (vips6[i % 3], f"2001:db8:{i % 5:x}::{i + 2:x}", RS_IPS6[i % 2])):
            cport = 20000 + 7 * i
            for proto in (6, 17):
                request = l4_frame(client, vip, cport, 80, proto)
                reply = l4_frame(rip, client, 80, cport, proto)  # the real server's answer
                w = run_bpf(prog, request, 0)
                assert run_bpf(prog, reply, 0) == w == F.fanout_worker(client, cport, 4), (client, vip)
                hits[w] += 1
            # not TCP/UDP: hashed on the address alone, both ways
            if ":" in client:
                assert run_bpf(prog, l4_frame(client, vip, 0, 0, 58), 0) == F.fanout_worker(client, 0, 4)
                assert run_bpf(prog, l4_frame(rip, client, 0, 0, 58), 0) == F.fanout_worker(client, 0, 4)
    assert len(hits) == 4 and min(hits.values()) > 250, hits  # spread over the workers
    # an address that equals a VIP in its low 32 bits only is not taken for the VIP
    twin = "2001:db8:99::100"
    assert run_bpf(prog, l4_frame(RS_IPS6[0], twin, 80, 4242), 0) == F.fanout_worker(twin, 4242, 4)
    arp = N.arp_frame(N.ARP_REQUEST, MAC_C, "10.0.0.2", N.BROADCAST, bytes(6), VIP)
    assert run_bpf(prog, arp, 0) == 0
    with pytest.raises(RulesError, match="IPv6 VIPs"):
        F.fanout_program([f"2001:db8::{i:x}" for i in range(1, 30)], 2)


def test_socket_filters_split_data_and_neighbour_discovery() -> None:
    data, l2 = F.socket_filter(), N.l2_filter()
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
        assert bool(run_bpf(data, frame, pkttype)) == want_data, (frame[12:14].hex(), pkttype)
        assert bool(run_bpf(l2, frame, pkttype)) == want_l2, (frame[12:14].hex(), pkttype)


def test_config_accepts_ipv6_addresses() -> None:
    cfg = F.ForwardConfig(rules="x", client_if="a", server_if="b",
                          addrs=["10.1.0.1", "2001:DB8:1:0::1"], client_gw=["2001:db8::1", "10.0.0.1"])
    cfg.check()
    assert cfg.addrs == ["10.1.0.1", GW_IP6]
    with pytest.raises(RulesError, match="at most one IPv4"):
        F.ForwardConfig(rules="x", client_if="a", server_if="b", client_gw=["10.0.0.1", "10.0.0.2"]).check()


# -- end to end --------------------------------------------------------------------------------
_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
netns = pytest.mark.skipif(not _ok, reason=_why)


@pytest.fixture(scope="module")
def topo():
    if not _ok:
        pytest.skip(_why)
    t = Topology()
    yield t
    t.close()


def curl6(t: Topology, n: int) -> list[str]:
    out = []
    for _ in range(n):
        r = t.nsx(t.client, "curl", "-6", "-s", "--max-time", "10", f"http://[{VIP6}]/", check=False)
        out.append(r.stdout.strip() if r.returncode == 0 else f"error {r.returncode}")
    return out


@netns
@pytest.mark.parametrize("io", ["ring-v3", "ring-v2", "mmsg"])
def test_e2e_ipv6_curl_alternates_between_real_servers(topo: Topology, io: str) -> None:
    rules = topo.tmp / f"rules6-{io}.txt"
    rules.write_text(topo.rules_text(ipv6=True))
    fwd = Forwarder(topo, rules, "--io", io)
    pcap = topo.tmp / f"client6-{io}.pcap"
    dump = None
    if shutil.which("tcpdump"):
        dump = topo.spawn(topo.client, "tcpdump", "-Z", "root", "--immediate-mode", "-i", "eth0", "-n", "-U",
                          "-w", str(pcap), "ip6 and not icmp6", stderr=subprocess.PIPE)
        assert dump.stderr is not None
        assert "listening" in dump.stderr.readline().decode()
    try:
        got = curl6(topo, 20)
        replies: list[Any] = udp(topo, 4, VIP6)
        v4 = topo.nsx(topo.client, "curl", "-s", "--max-time", "10", f"http://{VIP}/", check=False).stdout.strip()
        neigh = topo.nsx(topo.client, "ip", "-6", "neigh", "show", VIP6).stdout
    finally:
        if dump is not None:
            time.sleep(0.3)
            dump.send_signal(signal.SIGTERM)
            dump.wait(10)
        rc, out, err = fwd.stop()
    # rr over the two IPv6 real servers, every request answered
    assert all(g in ("rs1", "rs2") for g in got), (got, err)
    assert all(a != b for a, b in zip(got, got[1:], strict=False)), got
    assert Counter(got) == {"rs1": 10, "rs2": 10}
    assert all(x is not None and x[1] == VIP6 and x[2] == UDP_PORT for x in replies), replies
    assert {x[0].split(":")[0] for x in replies} == {"rs1", "rs2"}
    assert v4 in ("rs1", "rs2")  # dual stack: IPv4 still goes through
    assert "lladdr" in neigh  # the client resolved the VIP through fastvs's advertisement
    assert rc == 0, err
    m = re.search(r"TCP  \[2001:db8::100\]:80\s+(\d+)", out)
    assert m and int(m.group(1)) == 20, out
    stats = json.loads(fwd.stats.read_text())
    io_c = stats["io"]
    # the client asked for the VIP; fastvs asked for both real servers and pinned them
    assert io_c["na_sent"] >= 1 and io_c["ns_sent"] >= 2 and io_c["nd_learnt"] >= 2, sorted(io_c.items())
    assert io_c["csum_completed"] > 0 and io_c["drop_oversize"] == 0 and io_c["drop_tx_error"] == 0
    if dump is None:
        pytest.skip("tcpdump not installed: capture check skipped")
    peers = set()
    checked = 0
    with open(pcap, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, dpkt.ip6.IP6) or ip.nxt not in (6, 17):
                continue
            peer = ip.src if ip.dst == a6(CLIENT_IP6) else ip.dst
            peers.add(str(ipaddress.IPv6Address(peer)))
            if ip.dst == a6(CLIENT_IP6):
                seg = bytes(ip.data)
                ph = ip.src + ip.dst + struct.pack("!IxxxB", len(seg), ip.nxt)
                assert csum16(ph + seg) == 0xFFFF
                assert ip.hlim == 63  # one hop through the director
                checked += 1
    assert peers == {VIP6}, peers
    assert checked >= 20 * 3


@netns
def test_e2e_ipv6_two_workers_keep_flows_together(topo: Topology) -> None:
    rules = topo.tmp / "rules6-w2.txt"
    rules.write_text(topo.rules_text(ipv6=True))
    fwd = Forwarder(topo, rules, "--workers", "2", "--stats-every", "0.5")
    try:
        got = curl6(topo, 20)
        replies: list[Any] = udp(topo, 40, VIP6, timeout=90)
        time.sleep(1.2)
        stats = json.loads(fwd.stats.read_text())
    finally:
        rc, out, err = fwd.stop()
    # every request answered: the replies met their connection on the same worker
    assert all(g in ("rs1", "rs2") for g in got) and set(got) == {"rs1", "rs2"}, (got, err)
    assert all(x is not None and x[1] == VIP6 for x in replies), replies
    assert stats["workers"] == 2
    assert all(w["rx"] > 0 for w in stats["per_worker"]), stats["per_worker"]  # IPv6 only: spread
    assert rc == 0, err
