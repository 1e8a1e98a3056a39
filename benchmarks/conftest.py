"""Shared fixtures of the benchmark suites: generated traffic, warmed directors, results.

Sizes: ``FASTVS_BENCH_FLOWS`` (default ``1000,100000,1000000``), ``FASTVS_BENCH_PACKETS``
(default 1,000,000 packets of 64 bytes per flow count). When benchmarks are disabled
(the default ``--benchmark-disable`` of a plain ``pytest`` run, where each case runs once
as a smoke test) the sizes shrink to ``1000,10000`` flows and 20,000 packets.

Every figure measured with ``--benchmark-enable`` is also collected here (median of the
rounds) and, at the end of the session, printed as one table with the ratios fastvs / C
and fastvs / dpkt computed from the same run (``fastvs.bench.run.format_table``).
Captures are generated into temporary directories; nothing is written to the tree.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastvs.bench import run as bench  # noqa: E402

_RESULTS: list[dict[str, Any]] = []


def _enabled(config: pytest.Config) -> bool:
    try:
        disabled = config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")
    except ValueError:  # pytest-benchmark not installed
        return False
    return not disabled


def flow_counts() -> list[int]:
    env = os.environ.get("FASTVS_BENCH_FLOWS")
    if env:
        return [int(x) for x in env.split(",") if x]
    return [1_000, 100_000, 1_000_000]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "nflows" in metafunc.fixturenames:
        counts = flow_counts()
        if not _enabled(metafunc.config) and not os.environ.get("FASTVS_BENCH_FLOWS"):
            counts = [1_000, 10_000]
        metafunc.parametrize("nflows", counts, scope="session", ids=[f"{n}flows" for n in counts])


@pytest.fixture(scope="session")
def packets(pytestconfig: pytest.Config) -> int:
    env = os.environ.get("FASTVS_BENCH_PACKETS")
    if env:
        return int(env)
    return 1_000_000 if _enabled(pytestconfig) else 20_000


class Warm:
    """One flow count's traffic and a director holding all its connections."""

    def __init__(self, flows: int, packets: int) -> None:
        self.flows = flows
        self.packets = packets
        self.traffic = bench.Traffic(flows)
        self.director = bench.make_director(4, "wlc", bench.capacity_for(flows))
        self.traffic.warm(self.director)
        self.fwd, self.flow_of = self.traffic.established(packets)
        self._mixed: np.ndarray | None = None

    @property
    def mixed(self) -> np.ndarray:
        """Half the packets replies from the real servers (the SNAT path)."""
        if self._mixed is None:
            self._mixed, _ = self.traffic.established(self.packets, replies=True)
        return self._mixed


_WARM: dict[tuple[int, int], Warm] = {}


@pytest.fixture(scope="session")
def warm_factory(packets: int) -> Any:
    """``warm_factory(flows)`` -> :class:`Warm`, built once per session and flow count
    (the last one only: a 1M-flow director holds a few hundred MB)."""

    def get(flows: int) -> Warm:
        key = (flows, packets)
        if key not in _WARM:
            _WARM.clear()
            _WARM[key] = Warm(flows, packets)
        return _WARM[key]

    return get


@pytest.fixture
def warm(warm_factory: Any, nflows: int) -> Warm:
    return warm_factory(nflows)


@pytest.fixture(scope="session")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fastvs_bench")


@pytest.fixture
def record(benchmark: Any, pytestconfig: pytest.Config) -> Any:
    """``record(case, flows, packets, seconds=None, **extra)``: keep a figure for the
    session's ratio table. Without ``seconds`` the benchmark's median round is used."""

    def rec(case: str, flows: int | None, packets: int, seconds: float | None = None,
            **extra: Any) -> None:
        if not _enabled(pytestconfig):
            return
        if seconds is None:
            stats = getattr(benchmark, "stats", None)
            if stats is None:
                return
            seconds = float(stats.stats.median)
        row = bench._row(_RESULTS, case, flows, packets, seconds, **extra)
        benchmark.extra_info.update({"mpps": round(row["mpps"], 4),
                                     "ns_per_pkt": round(row["ns_per_pkt"], 2), **extra})

    return rec


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _RESULTS:
        return
    rows = sorted(_RESULTS, key=lambda r: (r["flows"] is None, r["flows"] or 0))
    bench.add_ratios(rows)
    doc = {"machine": bench.machine(), "packets": rows[0]["packets"], "rounds": "pytest-benchmark",
           "frame_bytes": bench.FRAME, "notes": [], "results": rows}
    terminalreporter.write_sep("=", "fastvs: Mpps and ratios from this run")
    terminalreporter.write(bench.format_table(doc))
