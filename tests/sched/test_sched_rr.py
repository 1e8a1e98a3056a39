"""rr (ip_vs_rr.c): the next usable server after the last one picked, in list order."""

from __future__ import annotations

from reference.sched_harness import Bench, real


def test_list_order_is_reverse_file_order() -> None:
    """ipvsadm -R links each server at the head: file .13 .11 .12 -> picks 12 11 13."""
    b = Bench("rr", [(real(13), 1), (real(11), 1), (real(12), 1)])
    picks = [b.connect("100.64.0.1", 40000 + i, i)[0] for i in range(6)]
    assert picks == [real(12), real(11), real(13)] * 2


def test_weight_zero_is_skipped_and_matches_model() -> None:
    b = Bench("rr", [(real(1), 1), (real(2), 0), (real(3), 5), (real(4), 1)])
    picks = b.run_random(200)
    assert real(2) not in picks


def test_overloaded_server_is_skipped() -> None:
    """IP_VS_DEST_F_OVERLOAD (-x reached) takes a server out of the rotation."""
    b = Bench("rr", [(real(1), 1, 2), (real(2), 1), (real(3), 1)])
    picks = b.run_random(30)
    assert picks.count(real(1)) == 2
    b.check_counters()


def test_removed_cursor_falls_back_to_the_head() -> None:
    b = Bench("rr", [(real(1), 1), (real(2), 1), (real(3), 1)])
    b.run_random(2)
    b.remove(real(2))
    b.run_random(20, seed=3)
