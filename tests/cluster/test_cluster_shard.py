"""fastvs/cluster/shard.py: the ECMP router's hash of the client side of each flow.

What must hold: both directions of a connection (client -> VIP, real server or VIP ->
client) get one director; an ICMP error gets the director of the flow it quotes (the
connection ip_vs_in_icmp / ip_vs_out_icmp find for it); a datagram's later fragments
follow its first fragment, also across batches; the hash fields choose what is kept
together (l3: a client's every port; net/LEN: a client network); the link layers the
engine reads (Ethernet with VLAN tags, Linux cooked, raw IP, BSD loopback) are read.
"""

from __future__ import annotations

import collections
import ipaddress

import numpy as np
import pytest
from test_real_pcaps import pick_rules

from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import open_capture
from fastvs.cluster.shard import EcmpHash, Sharder, parse_ecmp_hash, parse_flows, take
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules
from fastvs.datapath._packet import parse
from fastvs.errors import OptionError

from conftest import REAL
from packets import fragments, icmp6_error, icmp_error, tcp, tcp6, udp, udp6

RULES = parse_rules(
    "-A -t 10.10.0.1:80 -s rr\n"
    "-a -t 10.10.0.1:80 -r 192.168.0.10:8080 -m\n"
    "-a -t 10.10.0.1:80 -r 192.168.0.11:8080 -m\n"
    "-A -u 10.10.0.1:53 -s rr\n"
    "-a -u 10.10.0.1:53 -r 192.168.0.10:53 -m\n"
    "-A -t [2001:db8::1]:443 -s rr\n"
    "-a -t [2001:db8::1]:443 -r [2001:db8:1::10]:443 -m\n"
)
N = 7


def directors_of(frames: list[bytes], sharder: Sharder | None = None, linktype: int = 1) -> list[int]:
    s = sharder or Sharder(RULES, N)
    return [int(d) for d in s.assign(PacketBatch.from_packets(frames, linktype=linktype))]


def test_parse_ecmp_hash() -> None:
    assert parse_ecmp_hash("l4") == EcmpHash()
    assert parse_ecmp_hash("L3") == EcmpHash(ports=False)
    assert parse_ecmp_hash("net/24") == EcmpHash(ports=False, v4len=24, v6len=128)
    assert parse_ecmp_hash("net/16,48") == EcmpHash(ports=False, v4len=16, v6len=48)
    assert parse_ecmp_hash("net/24,48").name == "net/24,48"
    for bad in ("l5", "", "net/", "net/33", "net/24,129", "net/x", "l4,l3", "net/1,2,3"):
        with pytest.raises(OptionError, match="ecmp_hash"):
            parse_ecmp_hash(bad)
    with pytest.raises(OptionError, match="directors"):
        Sharder(RULES, 0)


def test_both_directions_of_many_connections_meet() -> None:
    """NAT replies come from the real server (RIP:rport), a capture taken in front of
    the director may show them from the VIP: both go with the client's packets."""
    frames, flows = [], []
    for i in range(200):
        client = f"172.16.{i // 250}.{i % 250 + 1}"
        port = 1024 + 37 * i
        rip = "192.168.0.10" if i % 2 else "192.168.0.11"
        frames += [tcp(client, port, "10.10.0.1", 80, "S"), tcp(rip, 8080, client, port, "SA"),
                   tcp("10.10.0.1", 80, client, port, "A"), udp(client, port, "10.10.0.1", 53),
                   udp("192.168.0.10", 53, client, port)]
        flows += [i] * 3 + [1000 + i] * 2
    d = directors_of(frames)
    by_flow = collections.defaultdict(set)
    for f, x in zip(flows, d, strict=True):
        by_flow[f].add(x)
    assert all(len(v) == 1 for v in by_flow.values())
    assert len(set(d)) == N  # and the flows do spread over all the directors


def test_ipv6_with_extension_headers_and_icmp_errors() -> None:
    hop = bytes([6, 0, 1, 4, 0, 0, 0, 0])  # hop-by-hop options, next header TCP, PadN
    syn = tcp6("2001:db8:9::5", 40000, "2001:db8::1", 443, "S", ext=hop, ext_nh=0)
    reply = tcp6("2001:db8:1::10", 443, "2001:db8:9::5", 40000, "SA")
    # a router on the client's path says the director's reply (VIP -> client) was too big
    too_big = icmp6_error("2001:db8:ff::1", "2001:db8::1",
                          tcp6("2001:db8::1", 443, "2001:db8:9::5", 40000, "A"), icmp_type=2, code=0)
    s = Sharder(RULES, 1000)
    d = directors_of([syn, reply, too_big], s)
    assert d[0] == d[1] == d[2]
    f = parse_flows(PacketBatch.from_packets([syn]))
    assert (int(f.sport[0]), int(f.dport[0]), int(f.proto[0])) == (40000, 443, 6)


def test_icmp_errors_go_with_the_flow_they_quote() -> None:
    s = Sharder(RULES, 1000)
    base = []
    errs = []
    for i in range(50):
        client = f"198.18.0.{i + 1}"
        port = 2000 + i
        base.append(tcp(client, port, "10.10.0.1", 80, "S"))
        # the client's host refuses the director's reply; a router on the server side
        # says the real server is unreachable for the client's forwarded packet
        errs.append(icmp_error(client, "10.10.0.1", tcp("10.10.0.1", 80, client, port, "SA")))
        errs.append(icmp_error("192.168.0.254", client, tcp(client, port, "192.168.0.10", 8080, "S"),
                               icmp_type=3, code=1))
    d = directors_of(base + errs, s)
    for i in range(50):
        assert d[50 + 2 * i] == d[i] and d[51 + 2 * i] == d[i]


def test_later_fragments_follow_the_first_across_batches() -> None:
    s = Sharder(RULES, 1000)
    frames = []
    for i in range(40):
        big = udp(f"203.0.113.{i + 1}", 5000 + i, "10.10.0.1", 53, payload=bytes(100))
        frames.append(fragments(big, size=48))
    first = directors_of([f[0] for f in frames], s)
    later = directors_of([x for f in frames for x in f[1:]], s)  # a later batch
    per = len(frames[0]) - 1
    for i in range(40):
        assert later[i * per:(i + 1) * per] == [first[i]] * per
        plain = directors_of([udp(f"203.0.113.{i + 1}", 5000 + i, "10.10.0.1", 53)], s)
        assert plain == [first[i]]  # and with the flow's unfragmented packets


def test_hash_fields_choose_what_stays_together() -> None:
    frames = [tcp(f"172.20.{i % 4}.{i % 200 + 1}", 1024 + i, "10.10.0.1", 80) for i in range(800)]
    b = PacketBatch.from_packets(frames)
    nets = np.array([i % 4 for i in range(800)])
    hosts = np.array([(i % 4) * 256 + i % 200 for i in range(800)])
    for fields, groups in (("net/24", nets), ("l3", hosts)):
        d = Sharder(RULES, 16, parse_ecmp_hash(fields)).assign(b)
        for g in np.unique(groups):
            assert len(np.unique(d[groups == g])) == 1, (fields, g)
    d4 = Sharder(RULES, 16, parse_ecmp_hash("l4")).assign(b)
    assert len(np.unique(d4[hosts == hosts[0]])) > 1  # one host's ports spread with l4
    dl3 = Sharder(RULES, 16, parse_ecmp_hash("l3")).assign(b)
    assert len(np.unique(dl3)) == 16
    net = Sharder(RULES, 1 << 20, parse_ecmp_hash("net/0,0")).assign(b)
    assert len(np.unique(net)) == 1  # prefix 0: every client one network


def test_link_layers() -> None:
    """The same flow behind each link layer the engine reads keys the same way."""
    eth = tcp("172.16.0.9", 4321, "10.10.0.1", 80)
    ip = eth[14:]
    vlan = eth[:12] + b"\x81\x00\x00\x05" + eth[12:]
    qinq = eth[:12] + b"\x88\xa8\x00\x07\x81\x00\x00\x05" + eth[12:]
    sll = b"\x00\x00\x00\x01\x00\x06" + bytes(8) + b"\x08\x00" + ip
    sll2 = b"\x08\x00\x00\x00" + bytes(16) + ip
    null_le = b"\x02\x00\x00\x00" + ip
    loop_be = b"\x00\x00\x00\x02" + ip
    s = Sharder(RULES, 1 << 30)
    want = directors_of([eth], s)[0]
    for frame, lt in ((vlan, 1), (qinq, 1), (sll, 113), (sll2, 276), (ip, 101), (ip, 228),
                      (null_le, 0), (loop_be, 108), (ip, 12)):
        assert directors_of([frame], s, linktype=lt) == [want], lt
    v6 = udp6("2001:db8:9::7", 5353, "2001:db8::1", 53)
    assert directors_of([v6[14:]], s, linktype=229) == directors_of([v6], s)
    # not IP, cut short, empty: director 0, never an error
    junk = [b"", b"\x00" * 3, eth[:20], b"\xff" * 60, bytes(14) + b"\x45"]
    assert directors_of(junk, s) == [0] * len(junk)


def test_take_gathers_packets() -> None:
    frames = [bytes([i]) * (i + 1) for i in range(20)]
    b = PacketBatch.from_packets(frames, ts_ns=list(range(20)))
    t = take(b, np.array([3, 0, 19, 7]))
    assert [t.packet(i) for i in range(len(t))] == [frames[3], frames[0], frames[19], frames[7]]
    assert list(t.ts) == [3, 0, 19, 7]
    assert len(take(b, np.zeros(0, np.int64))) == 0


@pytest.mark.parametrize("name", ["dpkt_http.pcap", "zeek_http-methods.pcap", "zeek_smtp.pcap",
                                  "arkime_v6.pcap", "zeek_echo-connections.pcap",
                                  "zeek_ipv6-fragmented-dns.pcap", "zeek_communityid-sctp.pcap"])
def test_real_connections_land_on_one_director(name: str) -> None:
    """Every connection one director balances (each packet it forwards or rewrites, by
    the connection it belongs to) has all its packets on one of N directors."""
    path = REAL / name
    rules = parse_rules(pick_rules(path))
    b = open_capture(path).read_all()
    one = Director(rules, seed=1)
    verdicts = b.verdict
    d = Sharder(rules, 5).assign(b)  # before the engine rewrites the batch in place
    one.process(b)
    conn_of: dict[tuple, set[int]] = collections.defaultdict(set)
    nat = np.flatnonzero((verdicts == 32) | (verdicts == 33))
    assert len(nat) > 0
    raw = open_capture(path).read_all()
    for i in nat:
        code, f = parse(raw.packet(int(i)), int(raw.linktype[i]), int(raw.wirelen[i]))
        if "sport" not in f:
            continue
        ends = sorted([(ipaddress.ip_address(f["src"]), f["sport"]), (ipaddress.ip_address(f["dst"]), f["dport"])])
        conn_of[(f["proto"], *ends)].add(int(d[i]))
    assert conn_of and all(len(v) == 1 for v in conn_of.values()), conn_of
