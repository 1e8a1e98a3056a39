"""Instructions per packet of ``Engine.process``, counted by callgrind.

Usage (from a checkout with fastvs installed, release build):

    python tools/callgrind_ipp.py                 # every case
    python tools/callgrind_ipp.py est-1k est-100k # some

Each case runs twice under ``valgrind --tool=callgrind
--toggle-collect='*Engine_*process*'``: once with the set-up only (a director warmed
with its flows' SYNs and, for established traffic, one untimed pass that moves the
connections to ESTABLISHED) and once with ``--passes`` more passes over the same
packets. The difference of the two counts, divided by the packets of those passes, is
the instructions per packet of the measured work alone: start-up, the warm-up and the
Python around the call cancel out.

Cases (the traffic of ``fastvs.bench.run.Traffic``, director of ``make_director``:
4 wlc real servers, keep_ttl):

* ``est-1k``, ``est-100k``: established ACKs, client to server only, 1k / 100k flows
  (benchmarks/README.md's figure is est-1k);
* ``mixed-1k``: established, half of the packets the real servers' replies;
* ``syn-10k``: 10k SYNs of new flows on a fresh director (scheduling, connection
  creation).

A case name with ``+sync`` (``est-1k+sync``) runs it on a sync master (the kernel's
default sysctls: ``Director.enable_sync_master()``), taking the records after every
batch as ``fastvs process --sync-out`` does (the take is outside the counted call).

The child mode (``--child CASE N``) is what runs under valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CASES: dict[str, tuple[str, int, int]] = {
    # name: (kind, flows, packets per pass)
    "est-1k": ("est", 1000, 200_000),
    "est-100k": ("est", 100_000, 200_000),
    "mixed-1k": ("mixed", 1000, 200_000),
    "syn-10k": ("syn", 10_000, 10_000),
}
BATCH = 65536


def child(case: str, passes: int) -> None:
    """Set the case up and run ``passes`` measured passes (under valgrind)."""
    import numpy as np

    from fastvs.bench.run import (
        EST_T_NS,
        T0_NS,
        Traffic,
        batch_of,
        capacity_for,
        make_director,
        split,
    )

    case, _, variant = case.partition("+")
    sync = variant == "sync"
    kind, flows, packets = CASES[case]
    if kind == "syn":
        t = Traffic(flows)
        pristine = t.syn()
        for _ in range(passes):
            d = make_director(4, "wlc", capacity_for(flows))
            if sync:
                d.enable_sync_master()
            work = pristine.copy()
            for s in split(batch_of(work, T0_NS), BATCH):
                d.process(s)
                if sync:
                    d.take_sync_events()
        return
    t = Traffic(flows)
    d = make_director(4, "wlc", capacity_for(flows))
    if sync:
        d.enable_sync_master()
    t.warm(d)
    frames, _ = t.established(packets, replies=kind == "mixed")
    pristine = frames.copy()
    work = frames.copy()
    b = batch_of(work, EST_T_NS)
    b.ts += np.arange(len(b), dtype=np.int64) * 1000
    subs = split(b, BATCH)
    for _ in range(1 + passes):  # the first pass is the warm-up of engine_timer
        np.copyto(work, pristine)
        for s in subs:
            d.process(s)
            if sync:
                d.take_sync_events()
    bad = np.count_nonzero(b.verdict >= 64)
    if bad:
        raise SystemExit(f"{case}: {bad} packets dropped")


def collected_ir(case: str, passes: int) -> int:
    """Instructions callgrind counted inside Engine.process for one child run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=*Engine_*process*",
               f"--callgrind-out-file={out}", sys.executable, __file__,
               "--child", case, str(passes)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONHASHSEED": "0"})
        text = out.read_text()
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not m:
        raise SystemExit("no totals in callgrind output")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", default=list(CASES), help=", ".join(CASES))
    ap.add_argument("--passes", type=int, default=2, help="measured passes (default 2)")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "PASSES"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]))
        return
    for case in a.cases:
        name, _, variant = case.partition("+")
        if name not in CASES or variant not in ("", "sync"):
            raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)} (+sync)")
        kind, flows, packets = CASES[name]
        base = collected_ir(case, 0)
        full = collected_ir(case, a.passes)
        ipp = (full - base) / (a.passes * packets)
        print(f"{case:10s} {flows:>7d} flows  {ipp:8.1f} instructions/packet"
              f"  ({full - base} Ir over {a.passes} x {packets} packets)", flush=True)


if __name__ == "__main__":
    main()
