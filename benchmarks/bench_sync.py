"""What the connection-sync master costs the data path: engine Mpps with and without
``Director.enable_sync_master()`` (the kernel's defaults: sync_threshold 3, period 50),
paired.

Two directors get the same warmed flows (wlc, 4 real servers, TTL kept); each round
times one pass of the same established traffic through each, back to back, in
alternating order (a shared machine's speed drifts: each ratio compares two runs
seconds apart). The sync-on pass includes ``take_sync_events()`` after every batch,
as ``fastvs process --sync-out`` does; packing the records into messages
(``SyncMaster.feed``, Python) is timed separately (``--feed``), per record.

    python benchmarks/bench_sync.py                       # 1k and 100k flows
    python benchmarks/bench_sync.py --flows 1000 --packets 2000000 --rounds 9 --json out.json

Reported: median Mpps off and on, the median of the paired ratios on/off, records per
packet. Under pytest (``pytest benchmarks/bench_sync.py``) a small run checks that both
directors forward every packet and the master produced records; no speed is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastvs.bench import run as bench  # noqa: E402
from fastvs.sync.master import SyncMaster  # noqa: E402

BATCH = 65536  # as the callgrind cases; small batches add the per-batch take's Python cost


def _director(flows: int, sync: bool, t: bench.Traffic) -> Any:
    d = bench.make_director(4, "wlc", bench.capacity_for(flows))
    if sync:
        d.enable_sync_master()
    t.warm(d)
    d.take_sync_events()
    return d


def _timer(d: Any, frames: np.ndarray, sync: bool, batch: int) -> tuple[Any, Any, list[int]]:
    pristine = frames.copy()
    work = frames.copy()
    b = bench.batch_of(work, bench.EST_T_NS)
    b.ts += np.arange(len(b), dtype=np.int64) * 1000
    subs = bench.split(b, batch)
    proc, take = d.process, d.take_sync_events
    records = [0]

    def one(keep: list[np.ndarray] | None = None) -> float:
        np.copyto(work, pristine)
        n = 0
        t0 = time.perf_counter()
        if sync:
            for s in subs:
                proc(s)
                ev = take()
                n += len(ev)
                if keep is not None:
                    keep.append(ev)
        else:
            for s in subs:
                proc(s)
        dt = time.perf_counter() - t0
        records[0] = n
        return dt

    one()  # warm: caches, and SYN_RECV -> ESTABLISHED
    return one, b, records


def measure(flows: int, packets: int, rounds: int, batch: int = BATCH, feed: bool = False) -> dict[str, Any]:
    t = bench.Traffic(flows)
    off = _director(flows, False, t)
    on = _director(flows, True, t)
    frames, _ = t.established(packets)
    one_off, b_off, _ = _timer(off, frames, False, batch)
    one_on, b_on, records = _timer(on, frames, True, batch)
    times_off, times_on, ratios = [], [], []
    for r in range(max(1, rounds)):
        if r % 2:
            a_on = one_on()
            a_off = one_off()
        else:
            a_off = one_off()
            a_on = one_on()
        times_off.append(a_off)
        times_on.append(a_on)
        ratios.append(a_off / a_on)  # throughput on / off
    if not (np.all(b_off.verdict == 32) and np.all(b_on.verdict == 32)):
        raise RuntimeError("not every packet was forwarded")
    out = {
        "flows": flows,
        "packets": packets,
        "batch": batch,
        "rounds": rounds,
        "mpps_off": packets / statistics.median(times_off) / 1e6,
        "mpps_on": packets / statistics.median(times_on) / 1e6,
        "ratio_on_off": statistics.median(ratios),
        "records_per_pass": records[0],
    }
    if feed:
        kept: list[np.ndarray] = []
        one_on(kept)
        ev = np.concatenate(kept)
        m = SyncMaster(0)
        t0 = time.perf_counter()
        m.feed(ev)
        out["feed_records"] = len(ev)
        out["feed_us_per_record"] = (time.perf_counter() - t0) / max(1, len(ev)) * 1e6
    return out


def test_sync_cost_smoke() -> None:
    r = measure(1000, 20_000, 2)
    assert r["records_per_pass"] > 0 and r["mpps_off"] > 0 and r["mpps_on"] > 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=BATCH, help=f"packets per batch (default {BATCH})")
    ap.add_argument("--feed", action="store_true", help="also time SyncMaster.feed per record")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    rows = []
    for f in a.flows:
        r = measure(f, a.packets, a.rounds, a.batch, a.feed)
        rows.append(r)
        line = (f"{f:>8d} flows  batch {a.batch:>5d}  sync off {r['mpps_off']:6.2f} Mpps  on {r['mpps_on']:6.2f} Mpps  "
                f"on/off {r['ratio_on_off']:.3f} (median of {a.rounds} paired)  "
                f"{r['records_per_pass'] / a.packets:.4f} records/packet")
        if a.feed:
            line += f"  SyncMaster.feed {r['feed_us_per_record']:.1f} us/record"
        print(line, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
