"""The whole engine, the ``fastvs process`` file loop, scheduling, and the references.

Cases (flow counts from ``benchmarks/conftest.py``: 1k, 100k, 1M by default):

* ``test_engine_forward[batch]`` -- ``Director.process`` on established flows, packets
  in memory, batches of 64 / 1024 / 65536 packets, full IPVS semantics (lookup, TCP state,
  timers, counters, DNAT with incremental checksums), TTL kept. The connections are made
  by a warm-up pass of SYNs (wlc, 4 real servers); the engine rewrites in place, so the
  buffer is restored from a pristine copy before each round, outside the timed part.
* ``test_engine_replies`` -- the same with half the packets replies from the real
  servers (the SNAT path).
* ``test_new_connections[sched]`` -- SYN-only traffic, each packet a new connection, over
  100 real servers, on a fresh director each round: connections per second.
* ``test_process_file`` -- the ``fastvs process`` loop (open_capture -> process -> Writer)
  from opening the input to closing the output, on a warmed director.
* ``test_memcpy_floor``, ``test_filecopy_floor`` -- the floors.
* ``test_natloop[mem|file]``, ``test_dpkt`` -- the C loop and the dpkt pipeline on the
  same capture (natloop rewrites to the real servers the engine picked, so the two
  outputs are compared byte for byte). natloop's own timing (process start and table
  build excluded) is what is recorded.

No speed is asserted; correctness of each case is (every packet forwarded, same bytes).
With ``--benchmark-enable`` the session ends with one table of Mpps and ratios::

    pytest benchmarks/bench_engine.py benchmarks/bench_stages.py --benchmark-enable \\
        -p no:cacheprovider
"""

from __future__ import annotations

import importlib.util
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastvs.bench import run as bench

ROUNDS = 3
BATCHES = (64, 1024, 65536)
SCHEDULERS = ("rr", "wrr", "lc", "wlc")
SCHED_DESTS = 100
SCHED_PACKETS = 200_000

refs = bench.load_refs()


def engine_case(director: Any, frames: np.ndarray, batch: int) -> tuple[Callable[[], None],
                                                                        Callable[[], None], Any]:
    """(run, restore, batch): ``run`` processes the frames in batches of ``batch``;
    ``restore`` puts the pristine bytes back (call before each round)."""
    pristine = frames
    work = frames.copy()
    b = bench.batch_of(work, bench.EST_T_NS)
    b.ts += np.arange(len(b), dtype=np.int64) * 1000
    subs = bench.split(b, batch)
    proc = director.process

    def run() -> None:
        for s in subs:
            proc(s)

    def restore() -> None:
        np.copyto(work, pristine)

    return run, restore, b


@pytest.mark.parametrize("batch", BATCHES)
def test_engine_forward(benchmark: Any, warm: Any, batch: int, record: Any) -> None:
    run, restore, b = engine_case(warm.director, warm.fwd, batch)
    benchmark.pedantic(run, setup=restore, rounds=ROUNDS, warmup_rounds=1)
    assert np.all(b.verdict == 32)
    record("fastvs engine fwd", warm.flows, warm.packets, batch=batch)


def test_engine_replies(benchmark: Any, warm: Any, record: Any) -> None:
    run, restore, b = engine_case(warm.director, warm.mixed, max(BATCHES))
    benchmark.pedantic(run, setup=restore, rounds=ROUNDS, warmup_rounds=1)
    assert np.all((b.verdict == 32) | (b.verdict == 33)) and np.any(b.verdict == 33)
    record("fastvs engine 50% replies", warm.flows, warm.packets, batch=max(BATCHES))


@pytest.fixture(scope="module")
def syn_frames(packets: int) -> np.ndarray:
    return bench.Traffic(min(packets, SCHED_PACKETS), seed=bench.SEED + 7).syn()


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_new_connections(benchmark: Any, syn_frames: np.ndarray, sched: str, record: Any) -> None:
    n = len(syn_frames)
    work = syn_frames.copy()
    state: dict[str, Any] = {}

    def setup() -> None:
        d = bench.make_director(SCHED_DESTS, sched, bench.capacity_for(n))
        np.copyto(work, syn_frames)
        b = bench.batch_of(work, bench.T0_NS)
        state.update(d=d, b=b, subs=bench.split(b, 65536))

    def run() -> None:
        proc = state["d"].process
        for s in state["subs"]:
            proc(s)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    assert state["d"].engine.conn_count == n
    record(f"fastvs new conns ({sched}, {SCHED_DESTS} RS)", None, n, batch=65536)


@pytest.fixture
def capture(warm: Any, capture_dir: Path) -> Path:
    path = capture_dir / f"est-{warm.flows}.pcap"
    if not path.exists():
        for p in capture_dir.glob("est-*"):
            p.unlink()
        ts = bench.EST_T_NS + np.arange(warm.packets, dtype=np.int64) * 1000
        bench.write_pcap(path, warm.fwd, ts)
    return path


def test_process_file(benchmark: Any, warm: Any, capture: Path, record: Any) -> None:
    out = capture.with_suffix(".out.pcap")
    n = benchmark.pedantic(bench.process_file, args=(warm.director, capture, out),
                           rounds=ROUNDS, warmup_rounds=1)
    assert n == warm.packets
    record("fastvs process file", warm.flows, warm.packets, chunk_bytes=bench.FILE_CHUNK)


def test_memcpy_floor(benchmark: Any, warm: Any, record: Any) -> None:
    from benchmarks.cybuild import stages

    memcpy_floor = stages().memcpy_floor

    src = warm.fwd.reshape(-1)
    dst = np.empty_like(src)
    ns = [0]

    def run() -> None:
        ns[0] = memcpy_floor(dst, src)

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    record("memcpy floor", warm.flows, warm.packets)


def test_filecopy_floor(benchmark: Any, warm: Any, capture: Path, record: Any) -> None:
    out = capture.with_suffix(".copy")
    benchmark.pedantic(shutil.copyfile, args=(capture, out), rounds=ROUNDS, warmup_rounds=1)
    record("file copy floor", warm.flows, warm.packets)


@pytest.fixture(scope="session")
def natloop() -> Path:
    if refs is None:
        pytest.skip("benchmarks/refs.py not found")
    try:
        return refs.build_natloop()
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("mode", ["mem", "file"])
def test_natloop(benchmark: Any, warm: Any, capture: Path, natloop: Path, mode: str,
                 record: Any) -> None:
    flows_file = capture.with_suffix(".flows")
    bench.write_flows(refs, flows_file, warm.traffic)
    c_out = capture.with_suffix(".c.pcap")
    results: list[dict[str, Any]] = []

    def run() -> None:
        results.append(refs.run_natloop(capture, mode, 1, flows=flows_file, binary=natloop,
                                        out=c_out))

    benchmark.pedantic(run, rounds=ROUNDS)
    assert all(r["rewritten"] == warm.packets for r in results)
    extra: dict[str, Any] = {}
    if mode == "file":
        f_out = capture.with_suffix(".f.pcap")
        bench.process_file(warm.director, capture, f_out)
        extra["same_bytes_as_fastvs"] = bench._same_file(f_out, c_out)
        assert extra["same_bytes_as_fastvs"]
    record(f"C natloop {mode}", warm.flows, warm.packets,
           seconds=statistics.median(float(r["seconds"]) for r in results), **extra)


DPKT_PACKETS = 50_000


def test_dpkt(benchmark: Any, warm: Any, capture_dir: Path, record: Any) -> None:
    if refs is None or importlib.util.find_spec("dpkt") is None:
        pytest.skip("needs benchmarks/refs.py and dpkt")
    k = min(warm.packets, DPKT_PACKETS)
    small = capture_dir / "dpkt-in.pcap"
    ts = bench.EST_T_NS + np.arange(k, dtype=np.int64) * 1000
    bench.write_pcap(small, warm.fwd[:k], ts)
    table = bench.dpkt_table(warm.traffic, warm.flow_of[:k])
    out = capture_dir / "dpkt-out.pcap"
    n, _ = benchmark.pedantic(refs.dpkt_nat_pipeline, args=(small, out, table), rounds=ROUNDS)
    assert n == k
    record("dpkt file", warm.flows, k)
