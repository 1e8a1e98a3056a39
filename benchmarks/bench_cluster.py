"""Many directors: how ``fastvs process --directors N`` scales with workers on this machine.

A capture of generated TCP/UDP traffic with the real servers' replies (``fastvs gen
--replies-for``, mh so that every run writes the same bytes) goes through:

* ``one director`` -- the plain ``fastvs process`` loop (open_capture -> Director ->
  Writer), the baseline;
* ``local W`` -- ``run_cluster(directors=N, workers=W)``: read + shard (numpy), N director
  tasks on a pool of W processes, merge + write; W = 1, 2, 4;
* ``dask W`` -- the same on a ``distributed.LocalCluster`` of W single-thread worker
  processes (the cluster is started before the timing).

Each case runs ``--rounds`` times; the medians are reported with the split into shard /
run / merge phases and the ratio to ``local 1``. Every run's output is checked to be the
same bytes. No speed is asserted::

    python benchmarks/bench_cluster.py [--packets 1000000] [--flows 20000] [--directors 4]
        [--workers 1 2 4] [--rounds 5] [--no-dask] [--json out.json]

Under pytest (``pytest benchmarks/bench_cluster.py``) a small smoke run checks that
the worker counts give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastvs.capture.pcap import Writer, open_capture
from fastvs.cluster.run import run_cluster
from fastvs.control.director import Director
from fastvs.control.rules import Rules, parse_rules
from fastvs.gen.traffic import generate

RULES = (
    "-A -t 10.10.0.1:80 -s mh\n"
    + "".join(f"-a -t 10.10.0.1:80 -r 192.168.0.{10 + i}:8080 -m -w 1\n" for i in range(8))
    + "-A -u 10.10.0.1:53 -s mh\n"
    + "".join(f"-a -u 10.10.0.1:53 -r 192.168.0.{10 + i}:53 -m -w 1\n" for i in range(8))
)
SEED = 7


def make_capture(path: Path, flows: int, packets: int) -> Rules:
    rules = parse_rules(RULES)
    generate(path, flows=flows, packets=packets, rules=rules, replies=True, seed=SEED)
    return rules


def one_director(cap: Path, rules: Rules, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    d = Director(rules, seed=SEED)
    with open_capture(cap, chunk_bytes=4 << 20) as r, Writer(out, like=r) as w:
        for b in r:
            d.process(b)
            w.write(b)
    return {"total": time.perf_counter() - t0}


def cluster(cap: Path, rules: Rules, out: Path, directors: int, **kw: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    res = run_cluster(cap, rules, directors=directors, options={"seed": SEED}, output=out, **kw)
    return {"total": time.perf_counter() - t0, **res.phases}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(name: str, fn: Callable[[Path], dict[str, float]], rounds: int, tmp: Path,
            packets: int, want: str | None) -> dict[str, Any]:
    out = tmp / f"{name.replace(' ', '_')}.pcap"
    runs = []
    for _ in range(rounds):
        runs.append(fn(out))
        got = digest(out)
        if want is not None and got != want:
            raise SystemExit(f"{name}: the output differs from one director's")
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"case": name, "rounds": rounds, "median_s": med, "mpps": packets / med["total"] / 1e6,
            "all_s": [round(r["total"], 4) for r in runs]}


def run(packets: int, flows: int, directors: int, workers: list[int], rounds: int,
        use_dask: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fastvs_bench_cluster") as td:
        tmp = Path(td)
        cap = tmp / "in.pcap"
        rules = make_capture(cap, flows, packets)
        n = len(open_capture(cap).read_all())
        rows = []
        base = tmp / "one.pcap"
        one_director(cap, rules, base)  # warm the page cache and the imports
        want = digest(base)
        rows.append(measure("one director", lambda o: one_director(cap, rules, o), rounds, tmp, n, want))
        for w in workers:
            rows.append(measure(f"local {w}", lambda o, w=w: cluster(cap, rules, o, directors, workers=w),
                                rounds, tmp, n, want))
        if use_dask:
            from distributed import Client, LocalCluster

            for w in workers:
                with LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as lc, Client(lc) as client:
                    cluster(cap, rules, tmp / "warm.pcap", directors, dask=client)  # warm workers
                    rows.append(measure(f"dask {w}", lambda o, c=client: cluster(cap, rules, o, directors, dask=c),
                                        rounds, tmp, n, want))
    ref = next((r for r in rows if r["case"] == "local 1"), rows[0])
    for r in rows:
        r["x_local1"] = ref["median_s"]["total"] / r["median_s"]["total"]
    return {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "packets": n, "flows": flows, "directors": directors, "rows": rows}


def format_table(doc: dict[str, Any]) -> str:
    lines = [f"{doc['packets']} packets, {doc['flows']} flows, {doc['directors']} directors, "
             f"{doc['machine']['cpus']} CPUs (medians of {doc['rows'][0]['rounds']} rounds)",
             f"{'case':<14}{'total s':>9}{'Mpps':>7}{'shard s':>9}{'run s':>8}{'merge s':>9}{'x local 1':>11}"]
    for r in doc["rows"]:
        m = r["median_s"]
        lines.append(f"{r['case']:<14}{m['total']:>9.3f}{r['mpps']:>7.2f}"
                     f"{m.get('shard', float('nan')):>9.3f}{m.get('run', float('nan')):>8.3f}"
                     f"{m.get('merge', float('nan')):>9.3f}{r['x_local1']:>11.2f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packets", type=int, default=1_000_000)
    p.add_argument("--flows", type=int, default=20_000)
    p.add_argument("--directors", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-dask", action="store_true")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    doc = run(a.packets, a.flows, a.directors, a.workers, a.rounds, not a.no_dask)
    print(format_table(doc), end="")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def test_cluster_scaling_smoke() -> None:
    """A small run: every worker count writes one director's bytes (mh)."""
    doc = run(packets=20_000, flows=500, directors=4, workers=[1, 2], rounds=1, use_dask=False)
    assert [r["case"] for r in doc["rows"]] == ["one director", "local 1", "local 2"]
    assert all(r["median_s"]["total"] > 0 for r in doc["rows"])
    assert "x local 1" in format_table(doc)


if __name__ == "__main__":
    raise SystemExit(main())
