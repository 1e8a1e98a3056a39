"""One stage of the data path at a time (``benchmarks/_stages.pyx``), over a whole batch.

Each stage runs the same inline functions the engine's loop runs, in a nogil loop timed
inside (CLOCK_MONOTONIC); the figure recorded is that inner time (median of the rounds),
so the Python call around it is not counted. Stages:

* ``parse`` -- link/IPv4/TCP parsing with ip_rcv's checks (``pkt_parse``);
* ``lookup hit`` / ``lookup miss`` -- hash + open-addressing lookup in a table of 1k,
  100k or 1M connections (packets of other clients for the misses);
* ``state`` -- the TCP state-table step and the timer update (``ct_expire_at``);
* ``rewrite`` -- DNAT with the incremental IPv4 and TCP checksum updates;
* ``schedule`` -- one scheduler ``pick`` per new connection, 100 real servers;
* ``memcpy`` -- the floor.

The pcap read and write stages are in ``bench_pcap.py``. No speed is asserted::

    pytest benchmarks/bench_stages.py --benchmark-enable -p no:cacheprovider
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fastvs import sched as _sched
from fastvs.bench import run as bench

from benchmarks.cybuild import stages

_S = stages()  # built on demand: not part of the package
StageTable, memcpy_floor, parse, parse_metas, schedule = (
    _S.StageTable, _S.memcpy_floor, _S.parse, _S.parse_metas, _S.schedule)

ROUNDS = 5


class Stages:
    """A flow count's table (filled from its SYNs) and parsed ACK traffic."""

    def __init__(self, flows: int, packets: int) -> None:
        t = bench.Traffic(flows)
        self.flows, self.packets = flows, packets
        syn = bench.batch_of(t.syn(), 0)
        self.table = StageTable(bench.capacity_for(flows))
        self.table.add(parse_metas(syn.buf, syn.off, syn.caplen, syn.wirelen, syn.linktype),
                       0x0A00A8C0, 0x901F)
        frames, _ = t.established(packets)
        self.batch = bench.batch_of(frames, 0)
        b = self.batch
        self.metas = parse_metas(b.buf, b.off, b.caplen, b.wirelen, b.linktype)
        other = bench.Traffic(flows, seed=bench.SEED + 1)
        other.rip[:] = bench.RIP_BASE
        of, _ = other.established(packets)
        ob = bench.batch_of(of, 0)
        self.miss = parse_metas(ob.buf, ob.off, ob.caplen, ob.wirelen, ob.linktype)


_CACHE: dict[tuple[int, int], Stages] = {}


@pytest.fixture
def stages(nflows: int, packets: int) -> Stages:
    key = (nflows, packets)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Stages(nflows, packets)
    return _CACHE[key]


def timed(benchmark: Any, fn: Callable[[], int]) -> float:
    """Run ``fn`` (returns inner ns) ROUNDS times under the benchmark; median seconds."""
    inner: list[int] = []
    benchmark.pedantic(lambda: inner.append(fn()), rounds=ROUNDS, warmup_rounds=1)
    return statistics.median(inner[-ROUNDS:]) / 1e9


def test_parse(benchmark: Any, stages: Stages, record: Any) -> None:
    b = stages.batch
    secs = timed(benchmark, lambda: parse(b.buf, b.off, b.caplen, b.wirelen, b.linktype)[0])
    assert parse(b.buf, b.off, b.caplen, b.wirelen, b.linktype)[1] == stages.packets
    record("stage parse", stages.flows, stages.packets, secs)


def test_lookup_hit(benchmark: Any, stages: Stages, record: Any) -> None:
    secs = timed(benchmark, lambda: stages.table.lookup(stages.metas)[0])
    assert stages.table.lookup(stages.metas)[1] == stages.packets
    record("stage lookup hit", stages.flows, stages.packets, secs)


def test_lookup_miss(benchmark: Any, stages: Stages, record: Any) -> None:
    secs = timed(benchmark, lambda: stages.table.lookup(stages.miss)[0])
    assert stages.table.lookup(stages.miss)[1] == 0
    record("stage lookup miss", stages.flows, stages.packets, secs)


def test_state(benchmark: Any, stages: Stages, record: Any) -> None:
    stages.table.lookup(stages.metas)
    secs = timed(benchmark, lambda: stages.table.state(stages.metas, 1))
    record("stage state+timer", stages.flows, stages.packets, secs)


def test_rewrite(benchmark: Any, stages: Stages, record: Any) -> None:
    stages.table.lookup(stages.metas)
    b = stages.batch
    secs = timed(benchmark, lambda: stages.table.rewrite(b.buf, b.off, stages.metas))
    assert (b.buf.reshape(-1, bench.FRAME)[:, 30:34] == [192, 168, 0, 10]).all()
    record("stage rewrite+csum", stages.flows, stages.packets, secs)


def test_memcpy(benchmark: Any, stages: Stages, record: Any) -> None:
    src = stages.batch.buf
    dst = np.empty_like(src)
    secs = timed(benchmark, lambda: memcpy_floor(dst, src))
    record("stage memcpy", stages.flows, stages.packets, secs)


@pytest.mark.parametrize("sched", ["rr", "wrr", "lc", "wlc"])
def test_schedule(benchmark: Any, sched: str, packets: int, record: Any) -> None:
    n = min(packets, 200_000)
    syn = bench.batch_of(bench.Traffic(n, seed=3).syn(), 0)
    metas = parse_metas(syn.buf, syn.off, syn.caplen, syn.wirelen, syn.linktype)
    ops = _sched.get(sched)
    secs = timed(benchmark, lambda: schedule(ops, 100, metas)[0])
    assert schedule(ops, 100, metas)[1] == n
    record(f"stage schedule ({sched}, 100 RS)", None, n, secs)
