"""Benchmarks of the two references fastvs is compared against (no speed assertions).

* natloop (C) engine-only: ``mem`` mode, packets already in memory; floor: memcpy.
* natloop (C) file-to-file: ``file`` mode, pcap -> pcap with fread/fwrite; floor: a plain
  file copy.
* dpkt: the idiomatic pure-Python pipeline, file-to-file.

The references themselves are :mod:`fastvs.bench.refs` (shipped with the package, so that
an installed ``fastvs bench`` has them too); natloop is compiled on first use into the
user's cache.

Each at 1k, 100k and 1M established flows, on 64-byte TCP ACKs to 10.10.0.1:80. Every case
runs ``rounds=3``; the figures that matter are natloop's own timings (process start, flow
table and capture loading excluded), recorded in ``extra_info`` as medians of the rounds.

Run under pytest (pytest-benchmark)::

    pytest benchmarks/bench_refs.py --benchmark-enable -p no:cacheprovider

or as a script printing a table of medians (``--json`` for machine-readable output)::

    python benchmarks/bench_refs.py [--flows 1000,100000,1000000] [--packets 1000000]
                                     [--dpkt-packets 100000] [--rounds 3]

Sizes can be changed with ``FASTVS_REF_PACKETS`` (natloop, default 1,000,000) and
``FASTVS_REF_DPKT_PACKETS`` (dpkt, default 100,000: about 2 s a round at ~0.05 Mpps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

from fastvs.bench.refs import (
    Backend,
    ClientKey,
    build_natloop,
    dpkt_nat_pipeline,
    five_tuple_table,
    make_established_capture,
    run_natloop,
)

FLOW_COUNTS = (1_000, 100_000, 1_000_000)
C_PACKETS = int(os.environ.get("FASTVS_REF_PACKETS", "1000000"))
DPKT_PACKETS = int(os.environ.get("FASTVS_REF_DPKT_PACKETS", "100000"))
ROUNDS = 3
SEED = 20240601

CaptureFactory = Callable[[int, int], tuple[Path, dict[ClientKey, Backend]]]


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarize_natloop(results: list[dict[str, object]]) -> dict[str, float]:
    """Medians over rounds of natloop's own figures."""
    out = {
        "packets": float(results[0]["packets"]),  # type: ignore[arg-type]
        "flows": float(results[0]["flows"]),  # type: ignore[arg-type]
        "mpps": _median([float(r["mpps"]) for r in results]),  # type: ignore[arg-type]
        "ns_per_pkt": _median([float(r["ns_per_pkt"]) for r in results]),  # type: ignore[arg-type]
        "memcpy_mpps_equiv": _median(
            [float(r["memcpy_mpps_equiv"]) for r in results]  # type: ignore[arg-type]
        ),
    }
    if "filecopy_mpps_equiv" in results[0]:
        out["filecopy_mpps_equiv"] = _median(
            [float(r["filecopy_mpps_equiv"]) for r in results]  # type: ignore[arg-type]
        )
    return out


def summarize_dpkt(results: list[tuple[int, float]], flows: int) -> dict[str, float]:
    """Medians over rounds of the dpkt pipeline's figures."""
    packets = results[0][0]
    seconds = _median([s for _, s in results])
    return {
        "packets": float(packets),
        "flows": float(flows),
        "mpps": packets / seconds / 1e6,
        "ns_per_pkt": seconds * 1e9 / packets,
    }


# --------------------------------------------------------------------------- pytest


@pytest.fixture(scope="module")
def natloop() -> Path:
    return build_natloop()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> CaptureFactory:
    made: dict[tuple[int, int], tuple[Path, dict[ClientKey, Backend]]] = {}

    def get(flows: int, packets: int) -> tuple[Path, dict[ClientKey, Backend]]:
        if (flows, packets) not in made:
            path = tmp_path_factory.mktemp("bench") / f"est-{flows}-{packets}.pcap"
            made[(flows, packets)] = (
                path,
                make_established_capture(path, flows, packets, seed=SEED),
            )
        return made[(flows, packets)]

    return get


flow_ids = [f"{f // 1000}k" if f < 1_000_000 else f"{f // 1_000_000}M" for f in FLOW_COUNTS]


@pytest.mark.parametrize("flows", FLOW_COUNTS, ids=flow_ids)
@pytest.mark.parametrize("mode", ["mem", "file"])
def test_natloop(
    benchmark: BenchmarkFixture,
    natloop: Path,
    capture: CaptureFactory,
    mode: str,
    flows: int,
) -> None:
    benchmark.group = f"refs-{flows}-flows"
    path, _ = capture(flows, max(C_PACKETS, flows))
    results: list[dict[str, object]] = []

    def run() -> None:
        results.append(run_natloop(path, mode, passes=1, binary=natloop))

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(summarize_natloop(results))
    benchmark.extra_info["rounds_mpps"] = [r["mpps"] for r in results]


@pytest.mark.parametrize("flows", FLOW_COUNTS, ids=flow_ids)
def test_dpkt(
    benchmark: BenchmarkFixture,
    capture: CaptureFactory,
    tmp_path: Path,
    flows: int,
) -> None:
    pytest.importorskip("dpkt")
    benchmark.group = f"refs-{flows}-flows"
    path, clients = capture(flows, DPKT_PACKETS)
    table = five_tuple_table(clients)
    out = tmp_path / "dpkt-out.pcap"
    results: list[tuple[int, float]] = []

    def run() -> None:
        results.append(dpkt_nat_pipeline(path, out, table))

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(summarize_dpkt(results, flows))
    benchmark.extra_info["rounds_mpps"] = [p / s / 1e6 for p, s in results]


# --------------------------------------------------------------------------- script


def measure(
    flow_counts: tuple[int, ...] = FLOW_COUNTS,
    packets: int = C_PACKETS,
    dpkt_packets: int = DPKT_PACKETS,
    rounds: int = ROUNDS,
    workdir: Path | None = None,
) -> list[dict[str, object]]:
    """Run every reference at every flow count; one row of medians per case."""
    exe = build_natloop()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-refs-", dir=workdir) as tmp:
        for flows in flow_counts:
            path = Path(tmp) / f"est-{flows}.pcap"
            make_established_capture(path, flows, max(packets, flows), seed=SEED)
            for mode in ("mem", "file"):
                res = [run_natloop(path, mode, passes=1, binary=exe) for _ in range(rounds)]
                rows.append({"ref": f"natloop-{mode}", **summarize_natloop(res)})
            path.unlink()
            if dpkt_packets > 0:
                dpath = Path(tmp) / f"dpkt-{flows}.pcap"
                table = five_tuple_table(
                    make_established_capture(dpath, flows, dpkt_packets, seed=SEED)
                )
                dres = [
                    dpkt_nat_pipeline(dpath, Path(tmp) / "out.pcap", table) for _ in range(rounds)
                ]
                rows.append({"ref": "dpkt-file", **summarize_dpkt(dres, flows)})
                del table
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", default=",".join(str(f) for f in FLOW_COUNTS))
    ap.add_argument("--packets", type=int, default=C_PACKETS)
    ap.add_argument("--dpkt-packets", type=int, default=DPKT_PACKETS)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    flows = tuple(int(f) for f in args.flows.split(","))
    rows = measure(flows, args.packets, args.dpkt_packets, args.rounds)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'reference':<14}{'flows':>9}{'packets':>10}{'Mpps':>9}{'ns/pkt':>9}{'floor Mpps':>12}")
    for r in rows:
        floor = r.get("filecopy_mpps_equiv", r.get("memcpy_mpps_equiv"))
        floor_s = f"{float(floor):12.1f}" if floor is not None else f"{'-':>12}"  # type: ignore[arg-type]
        print(
            f"{r['ref']:<14}{int(r['flows']):>9}{int(r['packets']):>10}"  # type: ignore[call-overload]
            f"{float(r['mpps']):>9.3f}{float(r['ns_per_pkt']):>9.1f}{floor_s}"  # type: ignore[arg-type]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
