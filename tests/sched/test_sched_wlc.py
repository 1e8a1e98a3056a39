"""wlc (ip_vs_wlc.c): least overhead / weight, cross-multiplied; first in list wins ties."""

from __future__ import annotations

from reference.sched_harness import Bench, real


def test_tie_goes_to_first_in_list_order() -> None:
    b = Bench("wlc", [(real(1), 2), (real(2), 2)])
    assert b.connect("100.64.0.1", 40000, 0)[0] == real(2)


def test_weighted_shares_match_model() -> None:
    b = Bench("wlc", [(real(1), 1), (real(2), 3), (real(3), 0), (real(4), 4)])
    picks = b.run_random(400)
    assert real(3) not in picks
    assert picks.count(real(4)) > picks.count(real(2)) > picks.count(real(1))


def test_quiesce_and_expiry_follow_model() -> None:
    b = Bench("wlc", [(real(1), 1), (real(2), 2), (real(3), 3)])
    b.run_random(50, step=S_STEP)
    b.edit(real(3), 0)
    b.run_random(200, seed=5, step=S_STEP)  # spans the 60 s SYN_RECV timeout
    b.check_counters()


S_STEP = 500_000_000
