"""The kernel's NAT, AF_XDP copy mode and AF_XDP zero-copy, side by side, on the one
driver at hand that has zero-copy: virtio_net, in the qemu guest of tests/vm.py that is
the director of the namespace lab (veth, the lab of benchmarks/bench_forward.py, has no
zero-copy).

    python benchmarks/bench_zerocopy.py [--seconds 5] [--repeat 3] [--tests http newconn udp tcp]

Each round boots the guest once per column: the kernel's NAT (bench_forward.py's
nftables rules and addresses, no forwarder), then ``fastvs forward --io xdp`` with
``--xdp-copy copy`` and with ``zerocopy``; it runs bench_forward.py's measurements
against each. The tables are the median of the rounds with each column's ratio to the
kernel's, then zero-copy's to copy mode's. Without KVM (FASTVS_VM_ACCEL=kvm) the guest
runs under TCG, which emulates every guest instruction: absolute figures say nothing
about a real director; the ratios compare the same guest forwarding three ways under the
same emulator (whose cost per instruction is not a CPU's: a guide, not a verdict).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import (  # noqa: E402
    KERNEL_ADDRS,
    TESTS,
    kernel_nat_rules,
    measure,
    median_results,
    rules_text,
    table,
)
from netns import have_netns  # noqa: E402
from vm import VmLab, unavailable  # noqa: E402

MODES = ("kernel", "copy", "zerocopy")


def one(seconds: float, conns: int, tests: tuple[str, ...], mode: str) -> dict[str, Any]:
    with VmLab(server="nginx") as lab:
        if mode == "kernel":
            conf = lab.tmp / "lb.nft"
            conf.write_text(kernel_nat_rules())
            lab.boot_kernel_nat(conf, *KERNEL_ADDRS)
        else:
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
        print(f"round {k + 1} of {a.repeat}:\n{table(rounds[-1])}\n", file=sys.stderr)
    med = median_results(rounds)
    print(table(med))
    print(f"\nzero-copy against copy mode:\n{table({m: med[m] for m in ('copy', 'zerocopy')}, base='copy')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
