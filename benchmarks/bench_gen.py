"""Traffic generator throughput: fastvs.gen.traffic with and without replies (shadow director).

Generates in memory (``generate(None, ...)``: frames built, nothing written) and to a
pcap in a temporary directory. No speed is asserted.

    pytest benchmarks/bench_gen.py --benchmark-enable -p no:cacheprovider

or as a script printing packets per second per case::

    python benchmarks/bench_gen.py [--packets 1000000] [--flows 10000] [--payload 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fastvs.control.rules import Rules, parse_rules
from fastvs.gen.traffic import generate

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

PACKETS = int(os.environ.get("FASTVS_BENCH_GEN_PACKETS", "200000"))

WLC = """\
-A -t 10.10.0.1:80 -s wlc
-a -t 10.10.0.1:80 -r 192.168.0.10:8080 -m -w 5
-a -t 10.10.0.1:80 -r 192.168.0.11:8080 -m -w 2
-a -t 10.10.0.1:80 -r 192.168.0.12:8080 -m -w 3
-A -u 10.10.0.1:53 -s wlc
-a -u 10.10.0.1:53 -r 192.168.0.10:5353 -m -w 5
-a -u 10.10.0.1:53 -r 192.168.0.11:5353 -m -w 2
-a -u 10.10.0.1:53 -r 192.168.0.12:5353 -m -w 3
"""


def cases(flows: int, payload: int) -> dict[str, dict[str, Any]]:
    rules: Rules = parse_rules(WLC)
    return {
        "client-only": dict(flows=flows, payload=payload),
        "replies-wlc": dict(flows=flows, payload=payload, rules=rules, replies=True),
        "replies-wlc-short-flows": dict(flows=flows * 10, payload=payload, rules=rules,
                                        replies=True),
    }


@pytest.mark.parametrize("case", ["client-only", "replies-wlc", "replies-wlc-short-flows"])
def test_gen(benchmark: BenchmarkFixture, case: str) -> None:
    kw = cases(max(1, PACKETS // 100), 0)[case]
    res = benchmark(generate, None, packets=PACKETS, **kw)
    assert res.packets >= PACKETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--payload", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gen.pcap"
        for name, kw in cases(a.flows, a.payload).items():
            for target in (None, out):
                t = time.perf_counter()
                res = generate(target, packets=a.packets, **kw)
                dt = time.perf_counter() - t
                where = "memory" if target is None else "pcap"
                print(f"{name:26s} {where:6s} flows={res.flows:<8d} packets={res.packets:<9d} "
                      f"{dt:6.2f} s  {res.packets / dt / 1e3:8.0f} kpps")


if __name__ == "__main__":
    main()
