"""Scheduler differences found reading Debian's linux-source-6.1 (6.1.192-3, the kernel
the lab boots) function by function against fastvs/sched (docs/fidelity.md lists every
function read). Each test names the kernel function and its file:line there.
"""

from __future__ import annotations

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import tcp

VIP = "10.10.0.1"
R1, R2 = "192.168.0.10", "192.168.0.11"
S = 10**9


def director(rules: str) -> Director:
    return Director(parse_rules(rules), seed=1)


def reals(d: Director) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["addr"]: r for r in d.engine.services()[0]["reals"]}


def picked(d: Director, cport: int, now: int) -> str:
    d.process_packets([tcp("100.64.0.1", cport, VIP, 80, "S")], [now])
    c = d.lookup("tcp", "100.64.0.1", cport, VIP, 80)
    assert c is not None
    return str(c["daddr"])


def test_lc_overhead_counts_active_connections_in_totalconns() -> None:
    """ip_vs_dest_conn_overhead (include/net/ip_vs.h:1746) is activeconns * 256 +
    totalconns in 6.1.192, and ip_vs_bind_dest (ip_vs_conn.c:635) counts every
    connection in totalconns: one active connection weighs 257 inactive ones. With R2
    (first in list order) holding 1 active connection and R1 256 inactive ones, lc
    (ip_vs_lc.c:45) takes R1 (256 < 257); * 256 + inactive would tie and take R2."""
    d = director(f"-A -t {VIP}:80 -s lc\n-a -t {VIP}:80 -r {R1}:80 -m\n-a -t {VIP}:80 -r {R2}:80 -m\n")
    r2 = reals(d)[R2]["index"]
    d.engine.edit_dest(r2, weight=0)
    now = 0
    for i in range(256):  # 256 connections to R1, each closed by a client FIN (TIME_WAIT)
        now += 1000
        assert picked(d, 1000 + i, now) == R1
        d.process_packets([tcp("100.64.0.1", 1000 + i, VIP, 80, "F")], [now])
    assert (reals(d)[R1]["activeconns"], reals(d)[R1]["inactconns"]) == (0, 256)
    d.engine.edit_dest(r2, weight=1)
    assert picked(d, 5000, now + 1000) == R2
    assert picked(d, 5001, now + 2000) == R1
