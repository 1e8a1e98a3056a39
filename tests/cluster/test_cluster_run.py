"""fastvs/cluster/run.py: N directors on local processes, merged.

What must hold: with ``mh`` or ``sh`` keyed as the ECMP hash is, the merged output of N
directors is byte for byte what one director writes (``fastvs process``), on real
captures, including pcapng files with several interfaces and captures whose timestamps
step back; with ``rr`` it is what N independent directors do, which differs; the
per-director listings and counters add up to the total, and every packet is accounted
once (in = out + dropped over all directors); rules changes happen on every director
at the same capture time; the dropped packets are merged as the written ones are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_real_pcaps import pick_rules

from fastvs.capture.pcap import open_capture
from fastvs.cli import main as cli_main
from fastvs.cluster.run import run_cluster
from fastvs.cluster.shard import parse_ecmp_hash
from fastvs.control.listing import STATS_KEYS
from fastvs.control.rules import load_rules, parse_rules

from conftest import DEMO, REAL

DEMO_PCAP = DEMO / "demo.pcap"
DEMO_RULES = DEMO / "demo.rules"
# captures with services (pick_rules finds a busy TCP and/or UDP destination): HTTP,
# SMTP, IPv6, fragments, SCTP, ICMP, VLAN, pcapng with several interfaces, and two whose
# timestamps step back (zeek_echo-connections, ppp_pcapng-example)
REAL_CASES = ["dpkt_http.pcap", "zeek_http-methods.pcap", "zeek_smtp.pcap", "arkime_v6.pcap",
              "zeek_ipv6-fragmented-dns.pcap", "ppp_frag_with_padding.pcap",
              "zeek_communityid-sctp.pcap", "dpkt_dns_icmp.pcap", "zeek_http-qinq-0.pcap",
              "ppp_pcapng-example.pcapng", "ppp_many_interfaces-1.pcapng",
              "zeek_echo-connections.pcap", "tcpdump_ipv6-routing-header.pcap"]


def one_director(cap: Path, rules: Path, out: Path, *extra: str) -> bytes:
    assert cli_main(["process", str(cap), "-r", str(rules), "-o", str(out), "-q", "--seed", "3", *extra]) == 0
    return out.read_bytes()


@pytest.mark.parametrize("name", REAL_CASES)
@pytest.mark.parametrize("sched,fields", [("mh", "l4"), ("sh", "l3")])
def test_mh_and_sh_directors_equal_one_director_on_real_captures(
        name: str, sched: str, fields: str, tmp_path: Path) -> None:
    rules = tmp_path / "r.rules"
    rules.write_text(pick_rules(REAL / name).replace(" -s rr", f" -s {sched}"))
    assert f"-s {sched}" in rules.read_text()
    want = one_director(REAL / name, rules, tmp_path / "one.out")
    for n in (2, 4):
        res = run_cluster(REAL / name, load_rules(rules), directors=n, ecmp=parse_ecmp_hash(fields),
                          options={"seed": 3}, output=tmp_path / "n.out", workers=0)
        assert (tmp_path / "n.out").read_bytes() == want, (name, n)
        assert sum(res.shard_sizes) == res.packets_in
    # and through the processes (the default executor) once
    run_cluster(REAL / name, load_rules(rules), directors=3, ecmp=parse_ecmp_hash(fields),
                options={"seed": 3}, output=tmp_path / "p.out", workers=2)
    assert (tmp_path / "p.out").read_bytes() == want


def test_persistence_with_mh_needs_the_client_network(tmp_path: Path) -> None:
    """-p with a /24 netmask: keyed by the client network, N mh directors build the same
    templates as one (the template is per client network and service)."""
    rules = tmp_path / "p.rules"
    rules.write_text(DEMO_RULES.read_text().replace("-s wlc", "-s mh -p 300 -M 255.255.255.0"))
    want = one_director(DEMO_PCAP, rules, tmp_path / "one.pcap")
    res = run_cluster(DEMO_PCAP, load_rules(rules), directors=3, ecmp=parse_ecmp_hash("net/24"),
                      options={"seed": 3}, output=tmp_path / "n.pcap", workers=0, conns=True)
    assert (tmp_path / "n.pcap").read_bytes() == want
    templates = [c for c in res.total_connections if c.get("cport") == 0]
    assert templates  # persistence templates exist, one per (client network, service)
    keys = [(c["caddr"], c["vaddr"], c["vport"], c["proto"]) for c in templates]
    assert len(keys) == len(set(keys))


def test_rr_directors_are_independent(tmp_path: Path) -> None:
    """rr on N directors: each keeps its own cursor, so the real servers picked differ
    from one director's (the difference is the point), every packet is still counted."""
    want = one_director(DEMO_PCAP, DEMO_RULES, tmp_path / "one.pcap")
    rules = tmp_path / "rr.rules"
    rules.write_text(DEMO_RULES.read_text().replace("-s wlc", "-s rr"))
    want = one_director(DEMO_PCAP, rules, tmp_path / "one.pcap")
    res = run_cluster(DEMO_PCAP, load_rules(rules), directors=4, options={"seed": 3},
                      output=tmp_path / "n.pcap", workers=0)
    got = (tmp_path / "n.pcap").read_bytes()
    assert got != want
    a, b = open_capture(tmp_path / "one.pcap").read_all(), open_capture(tmp_path / "n.pcap").read_all()
    assert len(a) == len(b) and np.array_equal(a.ts, b.ts)  # same packets, other servers
    s = res.total_summary
    assert s["packets_in"] == res.packets_in == len(open_capture(DEMO_PCAP).read_all())
    assert s["packets_in"] == s["packets_out"] + s["dropped"]
    assert all(n > 0 for n in res.shard_sizes)


def test_listings_add_up(tmp_path: Path) -> None:
    res = run_cluster(DEMO_PCAP, load_rules(DEMO_RULES), directors=3, options={"seed": 3},
                      workers=0, conns=True)
    per = [r.services for r in res.directors]
    for si, svc in enumerate(res.total_services):
        for k in STATS_KEYS:
            assert svc["stats"][k] == sum(p[si]["stats"][k] for p in per), k
        for ri, rs in enumerate(svc["reals"]):
            for k in ("activeconns", "inactconns"):
                assert rs[k] == sum(p[si]["reals"][ri][k] for p in per)
            for k in STATS_KEYS:
                assert rs["stats"][k] == sum(p[si]["reals"][ri]["stats"][k] for p in per)
    for k in ("packets_in", "packets_out", "dropped", "forwarded_in", "forwarded_out", "connections"):
        assert res.total_summary[k] == sum(r.summary[k] for r in res.directors), k
    for name, n in res.total_counters.items():
        assert n == sum(r.counters.get(name, 0) for r in res.directors)
    assert sum(res.total_counters.values()) == res.packets_in
    assert len(res.total_connections) == res.total_summary["connections"]
    assert res.total_services[0]["stats"]["conns"] > 0


def test_rules_changes_on_every_director(tmp_path: Path) -> None:
    """--rules-at switches all directors at the same capture time, also one that sees
    no packet after it (its listing shows the change, as one director's would)."""
    base = DEMO_RULES.read_text().replace("-s wlc", "-s mh")
    later = base.replace("-r 192.168.0.11:8080 -m -w 2", "-r 192.168.0.11:8080 -m -w 0")
    (tmp_path / "a.rules").write_text(base)
    (tmp_path / "b.rules").write_text(later)
    one_director(DEMO_PCAP, tmp_path / "a.rules", tmp_path / "one.pcap",
                 "--rules-at", f"0.0001:{tmp_path / 'b.rules'}")
    assert one_director(DEMO_PCAP, tmp_path / "a.rules", tmp_path / "same.pcap") != \
        (tmp_path / "one.pcap").read_bytes()  # the change changes the output
    res = run_cluster(DEMO_PCAP, parse_rules(base), directors=8, options={"seed": 3},
                      rules_at=[(100_000, parse_rules(later))], output=tmp_path / "n.pcap", workers=0)
    assert (tmp_path / "n.pcap").read_bytes() == (tmp_path / "one.pcap").read_bytes()
    logs = {tuple(line for _, line in r.reload_log) for r in res.directors}
    assert len(logs) == 1 and "weight 2->0" in next(iter(logs))[0]
    for r in res.directors:
        w = {(x["addr"], x["port"]): x["weight"] for x in r.services[0]["reals"]}
        assert w[("192.168.0.11", 8080)] == 0


@pytest.mark.parametrize("name", ["ppp_pcapng-example.pcapng", "gopacket_test_loopback.pcap",
                                  "ppp_raw_ip.pcap"])
def test_dropped_packets_are_merged(name: str, tmp_path: Path) -> None:
    rules = tmp_path / "r.rules"
    rules.write_text(pick_rules(REAL / name).replace(" -s rr", " -s mh"))
    one_director(REAL / name, rules, tmp_path / "one.out", "--dropped", str(tmp_path / "one.drop"))
    res = run_cluster(REAL / name, load_rules(rules), directors=3, options={"seed": 3},
                      output=tmp_path / "n.out", dropped=tmp_path / "n.drop", workers=0)
    assert res.total_summary["dropped"] > 0
    assert len(open_capture(tmp_path / "n.drop").read_all()) == res.total_summary["dropped"]
    assert (tmp_path / "n.drop").read_bytes() == (tmp_path / "one.drop").read_bytes()
    assert (tmp_path / "n.out").read_bytes() == (tmp_path / "one.out").read_bytes()


def test_timestamp_merge_order(tmp_path: Path) -> None:
    """order="ts" sorts by the raw stamps (ties in input order); the default keeps the
    engine's clock, which never runs backwards (so a capture in time order is the same
    either way, and one whose stamps step back keeps its order)."""
    cap = REAL / "zeek_echo-connections.pcap"
    rules = parse_rules(pick_rules(cap).replace(" -s rr", " -s mh"))
    run_cluster(cap, rules, directors=2, options={"seed": 3}, output=tmp_path / "ts.pcap",
                workers=0, order="ts")
    run_cluster(cap, rules, directors=2, options={"seed": 3}, output=tmp_path / "clock.pcap",
                workers=0)
    ts = open_capture(tmp_path / "ts.pcap").read_all().ts
    clock = open_capture(tmp_path / "clock.pcap").read_all().ts
    assert np.all(np.diff(ts) >= 0) and not np.all(np.diff(clock) >= 0)
    assert np.array_equal(np.sort(ts), np.sort(clock))
    run_cluster(DEMO_PCAP, load_rules(DEMO_RULES), directors=2, options={"seed": 3},
                output=tmp_path / "d1.pcap", workers=0, order="ts")
    run_cluster(DEMO_PCAP, load_rules(DEMO_RULES), directors=2, options={"seed": 3},
                output=tmp_path / "d2.pcap", workers=0)
    assert (tmp_path / "d1.pcap").read_bytes() == (tmp_path / "d2.pcap").read_bytes()


@pytest.mark.parametrize("fwd", ["-i", "-g"])
def test_tunnel_and_direct_routing(fwd: str, tmp_path: Path) -> None:
    """IPIP tunnels make packets longer (the general merge); direct routing changes only
    MACs (the in-place merge): both equal one mh director's output."""
    rules = tmp_path / "t.rules"
    rules.write_text(DEMO_RULES.read_text().replace("-s wlc", "-s mh").replace(" -m ", f" {fwd} "))
    want = one_director(DEMO_PCAP, rules, tmp_path / "one.pcap")
    res = run_cluster(DEMO_PCAP, load_rules(rules), directors=3, options={"seed": 3},
                      output=tmp_path / "n.pcap", workers=0)
    assert (tmp_path / "n.pcap").read_bytes() == want
    assert res.total_counters.get("fwd_tun" if fwd == "-i" else "fwd_dr", 0) > 0


def test_byte_owner_and_parts() -> None:
    """A chunk's packets split by a byte-owner map are the packets ``take`` gathers; a
    batch whose packets overlap or run out of order has no map."""
    from fastvs.capture.batch import PacketBatch
    from fastvs.cluster.run import _byte_owner, _part
    from fastvs.cluster.shard import take

    frames = [bytes([i]) * (5 + i % 7) for i in range(50)]
    b = PacketBatch.from_packets(frames)
    d = np.array([i % 3 for i in range(50)], np.int32)
    owner = _byte_owner(b, d, 3)
    assert owner is not None and len(owner) == len(b.buf)
    for s in range(3):
        sel = np.flatnonzero(d == s)
        p, t = _part(b, sel, owner, s), take(b, sel)
        assert [p.packet(i) for i in range(len(p))] == [t.packet(i) for i in range(len(t))]
        assert np.array_equal(p.off, t.off)
    rev = PacketBatch(buf=b.buf, off=b.off[::-1].copy(), caplen=b.caplen[::-1].copy(),
                      wirelen=b.wirelen, ts=b.ts, linktype=b.linktype, iface=b.iface)
    assert _byte_owner(rev, d, 3) is None
