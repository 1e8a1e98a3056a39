"""A rules change in the middle of a run (``--rules-at``, ``Director.rules_at``,
``Director.reload``): what ipvsadm -a/-e/-d would do to a running director."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dpkt

from fastvs import verdicts as V
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import tcp

VIP = "10.10.0.1"
S = 1_000_000_000
BEFORE = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m\n-a -t {VIP}:80 -r 192.168.0.11:8080 -m\n"
AFTER = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m -w 0\n-a -t {VIP}:80 -r 192.168.0.11:8080 -m\n"


def test_weight_zero_at_a_time_drains_new_connections_only() -> None:
    d = Director(parse_rules(BEFORE), seed=1)
    d.rules_at(10 * S, parse_rules(AFTER))
    frames = [tcp("100.64.0.1", 1000 + i, VIP, 80, "S") for i in range(6)]
    frames += [tcp("100.64.0.1", 1000, VIP, 80, "A")]  # an old connection goes on
    ts = [0, 1, 2, 3, 10 * S, 11 * S, 12 * S]
    _, v = d.process_packets(frames, ts)
    assert v == [V.FWD_IN] * 7
    picks = [d.lookup("tcp", "100.64.0.1", 1000 + i, VIP, 80)["daddr"] for i in range(6)]
    assert set(picks[:4]) == {"192.168.0.10", "192.168.0.11"}
    assert picks[4:] == ["192.168.0.11", "192.168.0.11"]
    assert d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["state"] == "ESTABLISHED"
    assert d.reload_log and "weight 1->0" in d.reload_log[0][1]


def test_removed_real_server_and_added_service() -> None:
    d = Director(parse_rules(BEFORE), seed=1)
    later = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.11:8080 -m\n-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r 192.168.0.12:53 -m\n"
    d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, "S")], [0])
    first = d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["daddr"]
    msgs = d.reload(parse_rules(later))
    assert any("added service" in m for m in msgs)
    _, v = d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, "A")], [S])
    assert v == ([V.DROP_DEST_UNAVAILABLE] if first == "192.168.0.10" else [V.FWD_IN])
    assert [s["proto"] for s in d.services()] == ["tcp", "udp"]


def test_cli_rules_at(tmp_path: Path) -> None:
    before, after = tmp_path / "a.rules", tmp_path / "b.rules"
    before.write_text(BEFORE)
    after.write_text(AFTER)
    cap = tmp_path / "in.pcap"
    with open(cap, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i in range(8):
            w.writepkt(tcp("100.64.0.1", 2000 + i, VIP, 80, "S"), 100.0 + i)
    r = subprocess.run([sys.executable, "-m", "fastvs.cli", "process", str(cap), "-r", str(before),
                        "--rules-at", f"4:{after}", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json

    reals = {x["addr"]: x for x in json.loads(r.stdout)["services"][0]["reals"]}
    assert reals["192.168.0.10"]["stats"]["conns"] == 2 and reals["192.168.0.11"]["stats"]["conns"] == 6
    bad = subprocess.run([sys.executable, "-m", "fastvs.cli", "process", str(cap), "-r", str(before),
                          "--rules-at", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "SECONDS:FILE" in bad.stderr
