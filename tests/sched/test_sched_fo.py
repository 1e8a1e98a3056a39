"""fo (ip_vs_fo.c): the highest weight that is not overloaded."""

from __future__ import annotations

from reference.sched_harness import Bench, real


def test_highest_weight_takes_everything() -> None:
    b = Bench("fo", [(real(1), 2), (real(2), 5), (real(3), 1)])
    assert set(b.run_random(50)) == {real(2)}


def test_fails_over_when_overloaded_then_tie_to_list_order() -> None:
    b = Bench("fo", [(real(1), 3), (real(2), 5, 4), (real(3), 3)])
    picks = b.run_random(20)
    assert picks[:4] == [real(2)] * 4
    assert set(picks[4:]) == {real(3)}  # .3 is before .1 in list order


def test_quiesced_then_nothing() -> None:
    b = Bench("fo", [(real(1), 0)])
    assert b.connect("100.64.0.1", 40000, 0) == (None, None)
