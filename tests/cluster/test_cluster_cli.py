"""``fastvs process ... --directors N`` end to end (local processes): the listing of each
director and of all of them, shaped as the process command prints one director's; the
JSON document; the bundled demo; one director is plain ``fastvs process``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from fastvs.capture.pcap import open_capture

from conftest import DEMO

DEMO_PCAP = DEMO / "demo.pcap"
DEMO_RULES = DEMO / "demo.rules"


def fastvs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "fastvs.cli", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    return r


def test_text_listing_per_director_and_total(tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    r = fastvs("process", DEMO_PCAP, "-r", DEMO_RULES, "-o", out, "--directors", "3", "--seed", "2", "-c")
    text = r.stdout
    heads = re.findall(r"^== director (\d) of 3 \(ECMP hash l4\): (\d+) packets ==$", text, re.M)
    assert [h[0] for h in heads] == ["1", "2", "3"]
    assert text.count("\n== all 3 directors ==\n") == 1
    # each block: the ipvsadm -L -n listing, --stats, -c and the accounting, as one director's
    assert text.count("Prot LocalAddress:Port Scheduler Flags") == 4
    assert text.count("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes") == 4
    assert text.count("IPVS connection entries") == 4
    ins = [int(x) for x in re.findall(r"^packets in (\d+)", text, re.M)]
    assert len(ins) == 4 and sum(ins[:3]) == ins[3] == len(open_capture(DEMO_PCAP).read_all())
    assert sum(int(h[1]) for h in heads) == ins[3]
    assert f"written to {out}" in text
    assert len(open_capture(out).read_all()) == ins[3]


def test_json_adds_up(tmp_path: Path) -> None:
    doc = json.loads(fastvs("process", DEMO_PCAP, "-r", DEMO_RULES, "--directors", "2",
                            "--ecmp-hash", "net/16", "--json").stdout)
    assert doc["ecmp_hash"] == "net/16,128"
    total, per = doc["total"], doc["directors"]
    assert len(per) == 2
    for k in ("packets_in", "packets_out", "dropped", "connections"):
        assert total["summary"][k] == sum(p["summary"][k] for p in per)
    for name, n in total["verdicts"].items():
        assert n == sum(p["verdicts"].get(name, 0) for p in per)
    assert len(total["connections"]) == sum(len(p["connections"]) for p in per)
    assert total["summary"]["input"] == str(DEMO_PCAP)


def test_one_director_is_fastvs_process(tmp_path: Path) -> None:
    fastvs("process", DEMO_PCAP, "-r", DEMO_RULES, "-o", tmp_path / "a.pcap", "-q", "--seed", "4")
    fastvs("process", DEMO_PCAP, "-r", DEMO_RULES, "-o", tmp_path / "b.pcap", "-q", "--seed", "4",
           "--directors", "1")
    assert (tmp_path / "a.pcap").read_bytes() == (tmp_path / "b.pcap").read_bytes()


def test_demo_with_directors() -> None:
    r = fastvs("process", "--directors", "2")
    assert r.stdout.startswith("fastvs demo: ")
    assert "== all 2 directors ==" in r.stdout
