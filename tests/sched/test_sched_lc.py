"""lc (ip_vs_lc.c): least overhead (256 x active + inactive); weight only as 0 or not."""

from __future__ import annotations

from reference.sched_harness import Bench, real


def test_tie_goes_to_first_in_list_order() -> None:
    b = Bench("lc", [(real(1), 1), (real(2), 1), (real(3), 1)])
    assert b.connect("100.64.0.1", 40000, 0)[0] == real(3)  # list: .3 .2 .1


def test_balances_by_overhead_like_model() -> None:
    b = Bench("lc", [(real(1), 1), (real(2), 9), (real(3), 0), (real(4), 2)])
    picks = b.run_random(200)
    assert real(3) not in picks
    assert abs(picks.count(real(1)) - picks.count(real(2))) <= 1
    b.check_counters()


def test_udp_connections_count_as_inactive() -> None:
    b = Bench("lc", [(real(1), 1), (real(2), 1)], proto="udp")
    b.run_random(51)
    b.check_counters()


def test_overloaded_skipped() -> None:
    b = Bench("lc", [(real(1), 1, 1), (real(2), 1)])
    picks = b.run_random(10)
    assert picks.count(real(1)) == 1
