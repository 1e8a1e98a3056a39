"""AF_XDP copy mode against zero-copy, side by side, on the one driver at hand that has
zero-copy: virtio_net, in the qemu guest of tests/vm.py that is the director of the
namespace lab (veth, the lab of benchmarks/bench_forward.py, has no zero-copy).

    python benchmarks/bench_zerocopy.py [--seconds 5] [--repeat 3] [--tests http newconn udp tcp]

Each round boots the guest once per mode (``--xdp-copy copy``, then ``zerocopy``) and
runs bench_forward.py's measurements against it; the table is the median of the rounds
and each column's ratio to copy mode. Without KVM (FASTVS_VM_ACCEL=kvm) the guest runs
under TCG, which emulates every guest instruction: absolute figures say nothing about a
real director, and the kernel's NAT is not measured; what the run compares is the same
guest's work per frame with and without the copies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import TESTS, measure, median_results, rules_text, table  # noqa: E402
from netns import have_netns  # noqa: E402
from vm import VmLab, unavailable  # noqa: E402

MODES = ("copy", "zerocopy")


def one(seconds: float, conns: int, tests: tuple[str, ...], mode: str) -> dict[str, Any]:
    with VmLab(server="nginx") as lab:
        rules = lab.tmp / "rules.txt"
        rules.write_text(rules_text())
        console = lab.boot(rules, "--io", "xdp", "--xdp-copy", mode, "--fix-offloads")
        if f"in {mode} mode" not in console:
            raise RuntimeError(f"the guest's sockets are not in {mode} mode:\n{console[-2000:]}")
        try:
            return measure(lab, seconds, conns, tests)
        finally:
            rc, _, text = lab.halt()
            if rc != 0:
                print(text[-2000:], file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=8, help="wrk connections (default 8)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; the table is their median")
    ap.add_argument("--tests", nargs="+", choices=TESTS, default=list(TESTS))
    a = ap.parse_args(argv)
    ok, why = have_netns()
    why = why if not ok else unavailable()
    if why:
        print(f"bench_zerocopy: {why}", file=sys.stderr)
        return 2
    rounds = []
    for k in range(a.repeat):
        rounds.append({m: one(a.seconds, a.conns, tuple(a.tests), m) for m in MODES})
        print(f"round {k + 1} of {a.repeat}:\n{table(rounds[-1], base='copy')}\n", file=sys.stderr)
    print(table(median_results(rounds), base="copy"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
