"""fastvs.gen.traffic: determinism, valid frames, flow structure, and replies from the right server."""

from __future__ import annotations

import socket
import struct
from collections import Counter, defaultdict
from pathlib import Path

import dpkt
import numpy as np
import pytest

from fastvs import verdicts as V
from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import open_capture
from fastvs.control.director import Director
from fastvs.control.rules import Rules, load_rules, parse_rules
from fastvs.gen.traffic import generate, generate_batch

from conftest import GOLDEN

RR = """\
-A -t 10.10.0.1:80 -s rr
-a -t 10.10.0.1:80 -r 192.168.0.10:8080 -m -w 1
-a -t 10.10.0.1:80 -r 192.168.0.11:8080 -m -w 1
-a -t 10.10.0.1:80 -r 192.168.0.12:8080 -m -w 1
-A -u 10.10.0.1:53 -s rr
-a -u 10.10.0.1:53 -r 192.168.0.20:53 -m -w 1
-a -u 10.10.0.1:53 -r 192.168.0.21:53 -m -w 1
"""
WRR = """\
-A -t 10.10.0.2:443 -s wrr
-a -t 10.10.0.2:443 -r 192.168.1.10:8443 -m -w 4
-a -t 10.10.0.2:443 -r 192.168.1.11:8443 -m -w 3
-a -t 10.10.0.2:443 -r 192.168.1.12:8443 -m -w 2
"""
LC = """\
-A -t 10.10.0.3:80 -s lc
-a -t 10.10.0.3:80 -r 192.168.2.10:80 -m -w 1
-a -t 10.10.0.3:80 -r 192.168.2.11:80 -m -w 1
-a -t 10.10.0.3:80 -r 192.168.2.12:80 -m -w 1
-A -t 10.10.0.3:8080 -s wlc
-a -t 10.10.0.3:8080 -r 192.168.2.10:80 -m -w 3
-a -t 10.10.0.3:8080 -r 192.168.2.13:80 -m -w 1
-A -u 10.10.0.3:53 -s lc
-a -u 10.10.0.3:53 -r 192.168.2.20:53 -m -w 1
-a -u 10.10.0.3:53 -r 192.168.2.21:53 -m -w 1
"""


def wlc_rules() -> Rules:
    """The g4-wlc golden case's rules: a TCP and a UDP service, wlc, weights up to 5."""
    return load_rules(GOLDEN / "g4-wlc.rules")


RULES = {"wlc": wlc_rules, "rr": lambda: parse_rules(RR), "wrr": lambda: parse_rules(WRR),
         "lc": lambda: parse_rules(LC)}


def frames(batch: PacketBatch) -> list[bytes]:
    return [batch.packet(i) for i in range(len(batch))]


def in_cksum_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def check_frame(raw: bytes) -> None:
    """Independent checks: dpkt parses it, and the checksums verify over the raw bytes."""
    eth = dpkt.ethernet.Ethernet(raw)
    ip = eth.data
    assert isinstance(ip, dpkt.ip.IP)
    assert ip.ttl == 64 and ip.hl == 5 and ip.len == len(raw) - 14
    hdr = raw[14:34]
    assert in_cksum_ok(hdr), "IPv4 header checksum"
    seg = raw[34:]
    pseudo = ip.src + ip.dst + struct.pack("!BBH", 0, ip.p, len(seg))
    assert in_cksum_ok(pseudo + seg), f"L4 checksum of proto {ip.p}"
    if ip.p == 17:
        assert struct.unpack("!H", seg[6:8])[0] != 0
    # dpkt agrees when it recomputes from scratch
    l4 = ip.data
    want = l4.sum
    l4.sum = 0
    ip2 = dpkt.ip.IP(src=ip.src, dst=ip.dst, p=ip.p, data=l4)
    ip2.len = ip.len
    bytes(ip2)
    assert l4.sum == want


def parse(raw: bytes) -> tuple[str, str, int, str, int, int, int, int, int]:
    """(proto, src, sport, dst, dport, flags, seq, ack, payload length)."""
    ip = dpkt.ethernet.Ethernet(raw).data
    src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
    l4 = ip.data
    if ip.p == 6:
        return ("tcp", src, l4.sport, dst, l4.dport, l4.flags, l4.seq, l4.ack, len(l4.data))
    return ("udp", src, l4.sport, dst, l4.dport, 0, 0, 0, len(l4.data))


def is_client(src: str) -> bool:
    return src.startswith("100.") and 64 <= int(src.split(".")[1]) < 128


def flows_of(batch: PacketBatch) -> dict[tuple[str, str, int], list[tuple[int, tuple]]]:
    """Packets per flow, keyed by (proto, client addr, client port)."""
    out: dict[tuple[str, str, int], list[tuple[int, tuple]]] = defaultdict(list)
    for i, raw in enumerate(frames(batch)):
        p = parse(raw)
        key = (p[0], p[1], p[2]) if is_client(p[1]) else (p[0], p[3], p[4])
        out[key].append((i, p))
    return out


# -- determinism ----------------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    rules = wlc_rules()
    kw = dict(flows=120, packets=3000, rules=rules, replies=True, payload=17)
    a = generate(tmp_path / "a.pcap", seed=7, **kw)
    b = generate(tmp_path / "b.pcap", seed=7, **kw)
    c = generate(tmp_path / "c.pcap", seed=8, **kw)
    assert a.packets == b.packets == c.packets == 3000
    ba, bb, bc = ((tmp_path / n).read_bytes() for n in ("a.pcap", "b.pcap", "c.pcap"))
    assert ba == bb
    assert ba != bc
    assert a.per_dest_conns == b.per_dest_conns


def test_batch_equals_file(tmp_path: Path) -> None:
    res = generate(tmp_path / "x.pcap", flows=300, packets=5000, seed=3, payload=40)
    got = open_capture(tmp_path / "x.pcap").read_all()
    batch = generate_batch(flows=300, packets=5000, seed=3, payload=40)
    assert res.packets == len(got) == len(batch) == 5000
    assert frames(got) == frames(batch)
    # µs pcap: the default 10 µs gap survives
    assert np.array_equal(got.ts, batch.ts)
    assert np.all(np.diff(batch.ts) == 10_000)
    assert int(batch.ts[0]) == 1_700_000_000 * 10**9


def test_nanosecond_gaps_write_a_nanosecond_pcap(tmp_path: Path) -> None:
    generate(tmp_path / "ns.pcap", flows=20, packets=300, gap_ns=250, start_ns=1_700_000_000 * 10**9 + 7)
    r = open_capture(tmp_path / "ns.pcap")
    got = r.read_all()
    assert r.nanosecond
    assert int(got.ts[0]) == 1_700_000_000 * 10**9 + 7 and np.all(np.diff(got.ts) == 250)


def test_deterministic_over_many_chunks() -> None:
    import fastvs.gen.traffic as gen

    # larger than a chunk: still deterministic, and identical across runs
    kw = dict(flows=2000, packets=150_000, rules=wlc_rules(), replies=True, seed=11)
    a = generate_batch(**kw)
    b = generate_batch(**kw)
    assert a.buf.tobytes() == b.buf.tobytes()
    assert gen.CHUNK_MAX < 150_000


# -- frames -------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [0, 1, 33, 200])
def test_every_checksum_valid(payload: int) -> None:
    batch = generate_batch(flows=60, packets=1500, rules=wlc_rules(), replies=True,
                           payload=payload, seed=payload)
    for raw in frames(batch):
        check_frame(raw)


def test_checksums_without_replies_default_targets() -> None:
    batch = generate_batch(flows=80, packets=900, seed=5, payload=9, udp_share=0.5)
    seen = set()
    for raw in frames(batch):
        check_frame(raw)
        p = parse(raw)
        assert is_client(p[1]) and 1024 <= p[2] <= 65535
        seen.add((p[0], p[3], p[4]))
    assert seen == {("tcp", "10.10.0.1", 80), ("udp", "10.10.0.1", 53)}


# -- counts and structure -------------------------------------------------------------------
@pytest.mark.parametrize("replies", [False, True])
def test_counts_and_tcp_structure(replies: bool) -> None:
    rules = wlc_rules()
    flows, packets = 400, 12_000
    batch = generate_batch(flows=flows, packets=packets, rules=rules, replies=replies,
                           seed=2, udp_share=0.3, rst_share=0.25, payload=10)
    res = generate(None, flows=flows, packets=packets, rules=rules, replies=replies,
                   seed=2, udp_share=0.3, rst_share=0.25, payload=10)
    assert len(batch) == res.packets == packets
    per = flows_of(batch)
    assert len(per) == flows == res.flows
    udp = [k for k in per if k[0] == "udp"]
    assert len(udp) == res.udp_flows == 120  # round(400 * 0.3)
    assert res.tcp_flows == 280
    rst = 0
    for key, pkts in per.items():
        dirs = [is_client(p[1]) for _, p in pkts]
        assert dirs[0], "a flow starts from the client"
        if key[0] == "udp":
            assert all(p[8] == 10 for _, p in pkts)
            if replies:
                assert dirs == [k % 2 == 0 for k in range(len(dirs))]
                assert len(pkts) >= 2
            else:
                assert all(dirs)
            continue
        flags = [p[5] for _, p in pkts]
        assert flags[0] == dpkt.tcp.TH_SYN
        if replies:
            assert flags[1] == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK and not dirs[1]
        if flags[-1] & dpkt.tcp.TH_RST:
            rst += 1
            assert sum(1 for f in flags if f & dpkt.tcp.TH_RST) == 1
        else:
            fins = [(d, f) for d, f in zip(dirs, flags, strict=True) if f & dpkt.tcp.TH_FIN]
            assert [d for d, _ in fins] == ([True, False] if replies else [True])
            # the close is the flow's last packets: FIN(s) then the final ACK
            assert flags[-1] == dpkt.tcp.TH_ACK and dirs[-1]
            assert flags[-2] & dpkt.tcp.TH_FIN
        check_sequence(pkts, replies)
    assert rst == round(280 * 0.25)


def check_sequence(pkts: list[tuple[int, tuple]], replies: bool) -> None:
    """Each side's seq follows the bytes it sent; acks follow the peer's (with replies)."""
    nxt: dict[bool, int | None] = {True: None, False: None}
    for _, p in pkts:
        c = is_client(p[1])
        flags, seq, ack, plen = p[5], p[6], p[7], p[8]
        if flags & dpkt.tcp.TH_SYN:
            nxt[c] = seq
        assert seq == nxt[c], "sequence number follows the bytes sent"
        if replies and flags & dpkt.tcp.TH_ACK:
            assert ack == nxt[not c], "ack follows the peer's bytes"
        if plen:
            assert flags == dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK
        nxt[c] = (seq + plen + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)) % 2**32


def test_packet_rounding_minimum_per_flow() -> None:
    # 100 flows cannot fit in 50 packets: every flow gets its minimum
    res = generate(None, flows=100, packets=50, seed=1, udp_share=0.0, rst_share=0.0)
    assert res.packets == 100 * 5
    res = generate(None, flows=100, packets=50, seed=1, udp_share=1.0)
    assert res.packets == 100
    res = generate(None, flows=10, packets=50, rules=wlc_rules(), replies=True, udp_share=0.0,
                   rst_share=1.0)
    assert res.packets == 60 and res.rst_flows == 10


def test_udp_share_and_protocol_follow_rules() -> None:
    res = generate(None, flows=1000, packets=20_000, udp_share=0.37, seed=4)
    assert res.udp_flows == 370 and res.tcp_flows == 630
    # a TCP-only rule set gets TCP flows only, whatever the share
    res = generate(None, flows=100, packets=2000, rules=parse_rules(WRR), udp_share=0.5)
    assert res.udp_flows == 0 and res.tcp_flows == 100


def test_distinct_tuples_and_concurrency() -> None:
    conc = 25
    batch = generate_batch(flows=500, packets=20_000, seed=9, concurrency=conc)
    per = flows_of(batch)
    assert len(per) == 500  # distinct client (addr, port) per flow
    events = []
    for pkts in per.values():
        events.append((pkts[0][0], 1))
        events.append((pkts[-1][0] + 1, -1))  # the flow's slot frees after its last packet
    live = peak = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):
        live += d
        peak = max(peak, live)
    assert peak <= conc
    assert peak >= conc - 2  # and flows really overlap


def test_errors() -> None:
    with pytest.raises(ValueError, match="rules"):
        generate(None, flows=10, packets=100, replies=True)
    with pytest.raises(ValueError):
        generate(None, flows=0, packets=100)
    with pytest.raises(ValueError):
        generate(None, flows=10, packets=100, udp_share=1.5)
    with pytest.raises(ValueError, match="payload"):
        generate(None, flows=10, packets=100, payload=1461)


# -- replies --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["wlc", "rr", "wrr", "lc"])
def test_replies_come_from_the_server_the_director_picks(name: str, tmp_path: Path) -> None:
    rules = RULES[name]()
    res = generate(tmp_path / "r.pcap", flows=600, packets=15_000, rules=rules, replies=True,
                   seed=13, payload=25, concurrency=80)
    batch = open_capture(tmp_path / "r.pcap").read_all()
    original = frames(batch)
    d = Director(rules)  # fresh, random hash seed
    d.process(batch)
    verdicts = batch.verdict.tolist()
    picked: dict[tuple[str, str, int], tuple[str, int]] = {}
    vips: dict[tuple[str, str, int], tuple[str, int]] = {}
    replies = 0
    for i, raw in enumerate(original):
        p = parse(raw)
        if is_client(p[1]):
            assert verdicts[i] == V.FWD_IN, (i, V.name(verdicts[i]))
            out = parse(batch.packet(i))
            key = (p[0], p[1], p[2])
            vips[key] = (p[3], p[4])
            assert picked.setdefault(key, (out[3], out[4])) == (out[3], out[4])
        else:
            replies += 1
            assert verdicts[i] == V.FWD_OUT, (i, V.name(verdicts[i]))
            # the reply comes exactly from the real server the director chose for the flow
            assert (p[1], p[2]) == picked[(p[0], p[3], p[4])]
            out = parse(batch.packet(i))  # SNAT'd back to the flow's VIP:vport
            assert (out[1], out[2]) == vips[(p[0], p[3], p[4])]
    assert replies > 0
    assert d.summary()["dropped"] == 0
    # per-real-server connection counts agree with the director's
    want: Counter[str] = Counter()
    for s in d.services():
        for r in s["reals"]:
            if r["stats"]["conns"]:
                want[f"{r['addr']}:{r['port']}"] += r["stats"]["conns"]
    assert dict(want) == res.per_dest_conns
    assert sum(want.values()) == res.flows
    if name in ("rr", "wrr", "wlc"):
        assert len(res.per_dest_conns) >= 3  # every server got work


def test_replies_rst_from_both_sides() -> None:
    rules = wlc_rules()
    batch = generate_batch(flows=200, packets=3000, rules=rules, replies=True, seed=21,
                           udp_share=0.0, rst_share=1.0)
    sides = Counter()
    for pkts in flows_of(batch).values():
        last = pkts[-1][1]
        assert last[5] == dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK
        sides[is_client(last[1])] += 1
        check_sequence(pkts, True)
    assert sides[True] > 50 and sides[False] > 50
    d = Director(rules)
    d.process(batch)
    assert set(batch.verdict.tolist()) == {V.FWD_IN, V.FWD_OUT}


def test_replies_large_run_over_chunks() -> None:
    """More packets than one chunk, lc/wlc counters in play: still exact."""
    rules = parse_rules(LC)
    kw = dict(flows=3000, packets=200_000, rules=rules, replies=True, seed=5, rst_share=0.3)
    res = generate(None, **kw)
    batch = generate_batch(**kw)
    d = Director(rules)
    d.process(batch)
    assert d.summary()["dropped"] == 0
    c = d.counters()
    assert c["fwd_in"] + c["fwd_out"] == res.packets == 200_000
    want: Counter[str] = Counter()
    for s in d.services():
        for r in s["reals"]:
            want[f"{r['addr']}:{r['port']}"] += r["stats"]["conns"]
    assert {k: v for k, v in want.items() if v} == res.per_dest_conns
