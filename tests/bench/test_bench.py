"""fastvs bench: a tiny run prints the table and writes valid JSON (no speed asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fastvs import sched as _sched
from fastvs.bench import run as bench
from fastvs.cli import main as cli_main
from fastvs.control.director import verdict_counts

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.cybuild import stages  # noqa: E402  (_stages.pyx, built on demand)

_S = stages()
StageTable, memcpy_floor, parse, parse_metas, schedule = (
    _S.StageTable, _S.memcpy_floor, _S.parse, _S.parse_metas, _S.schedule)


def test_bench_command_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli_main(["bench", "--flows", "50", "200", "--packets", "400", "--rounds", "1",
                   "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Mpps" in text and "ns/pkt" in text
    assert "fastvs engine fwd" in text and "fastvs process file" in text
    doc = json.loads(out.read_text())
    assert doc["rounds"] == 1 and doc["packets"] == 400 and doc["flows"] == [50, 200]
    cases = {(r["case"], r["flows"]) for r in doc["results"]}
    for flows in (50, 200):
        for case in ("fastvs engine fwd", "fastvs engine 50% replies", "fastvs process file",
                     "memcpy floor", "file copy floor"):
            assert (case, flows) in cases
    for r in doc["results"]:
        assert r["mpps"] > 0 and r["ns_per_pkt"] > 0
        if r["case"] == "fastvs engine fwd":
            assert r["fwd_in"] == 400          # every packet found its connection
        if r["case"] == "fastvs engine 50% replies":
            assert r["fwd_in"] + r["fwd_out"] == 400 and r["fwd_out"] > 0
        if "same_bytes_as_fastvs" in r:       # the C reference ran: same output bytes
            assert r["same_bytes_as_fastvs"]
        if r["case"].startswith("fastvs new conns"):
            assert r["created"] == r["packets"]
    if any("same_bytes_as_fastvs" in r for r in doc["results"]):
        # with the C reference: alternating rounds give one ratio per round
        pairs = {(p["case"], p["flows"]): p for p in doc["paired"]}
        for flows in (50, 200):
            for case in ("engine / C mem", "process file / C file"):
                p = pairs[(case, flows)]
                assert len(p["ratios"]) == 1 and p["ratio"] == p["ratios"][0] > 0
        assert "paired rounds" in text


def test_bench_no_refs_plot(tmp_path, capsys):
    png = tmp_path / "b.png"
    rc = cli_main(["bench", "--flows", "30", "--packets", "100", "--rounds", "1", "--no-refs",
                   "--plot", str(png)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "C natloop" not in captured.out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in captured.err
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_bad_sizes(capsys):
    assert cli_main(["bench", "--flows", "0", "--packets", "10", "--no-refs"]) == 2


def test_traffic_frames_are_valid():
    dpkt = pytest.importorskip("dpkt")
    t = bench.Traffic(20, seed=3)
    d = bench.make_director(4)
    t.warm(d)
    frames, flow_of = t.established(60, replies=True)
    assert (flow_of < 0).any() and (flow_of >= 0).any()
    for row in frames:
        ip = dpkt.ethernet.Ethernet(row.tobytes()).data
        want_ip, want_tcp = ip.sum, ip.data.sum
        ip.sum = 0
        ip.data.sum = 0
        again = dpkt.ip.IP(bytes(ip))
        assert (again.sum, again.data.sum) == (want_ip, want_tcp)
    b = bench.batch_of(frames.copy(), bench.EST_T_NS)
    d.process(b)
    counts = verdict_counts(b.verdict)
    assert counts == {"fwd_in": int((flow_of >= 0).sum()), "fwd_out": int((flow_of < 0).sum())}


def test_stages_run_and_agree():
    t = bench.Traffic(100, seed=5)
    syn = t.syn()
    b = bench.batch_of(syn, 0)
    ns, ok = parse(b.buf, b.off, b.caplen, b.wirelen, b.linktype)
    assert ok == 100 and ns >= 0
    ms = parse_metas(b.buf, b.off, b.caplen, b.wirelen, b.linktype)
    assert ms.ok == 100
    table = StageTable(1024)
    assert table.add(ms, 0x0A00A8C0, 0x901F) == 100 and table.count == 100
    ns, hits = table.lookup(ms)
    assert hits == 100
    table.state(ms, 5)
    before = syn.copy()
    table.rewrite(b.buf, b.off, ms)
    assert (syn[:, 30:34] == [192, 168, 0, 10]).all() and (syn[:, 36:38] == [0x1F, 0x90]).all()
    assert not np.array_equal(before, syn)
    other = bench.Traffic(100, seed=6).syn()
    ob = bench.batch_of(other, 0)
    ns, hits = table.lookup(parse_metas(ob.buf, ob.off, ob.caplen, ob.wirelen, ob.linktype))
    assert hits == 0
    dst = np.zeros_like(b.buf)
    memcpy_floor(dst, b.buf)
    assert np.array_equal(dst, b.buf)
    for name in ("rr", "wrr", "lc", "wlc"):
        ns, picks = schedule(_sched.get(name), 10, ms)
        assert picks == 100
