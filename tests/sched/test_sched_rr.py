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


def test_removed_cursor_continues_with_its_successor() -> None:
    """ip_vs_rr_del_dest (ip_vs_rr.c): a removed cursor server hands the cursor to the
    entry before it (p->next->prev once unlinked), so rr goes on with the server that
    followed the removed one instead of starting again at the head."""
    b = Bench("rr", [(real(1), 1), (real(2), 1), (real(3), 1)])   # list 3 2 1
    picks = [b.connect("100.64.0.1", 40000 + i, i)[0] for i in range(2)]
    assert picks == [real(3), real(2)]
    b.remove(real(2))
    picks = [b.connect("100.64.0.1", 41000 + i, 10 + i)[0] for i in range(3)]
    assert picks == [real(1), real(3), real(1)]


def test_removed_first_server_under_the_cursor_goes_to_the_head() -> None:
    b = Bench("rr", [(real(1), 1), (real(2), 1), (real(3), 1)])   # list 3 2 1
    assert b.connect("100.64.0.1", 40000, 0)[0] == real(3)
    b.remove(real(3))
    assert [b.connect("100.64.0.1", 41000 + i, 10 + i)[0] for i in range(3)] == [real(2), real(1), real(2)]


def test_removals_and_model_agree() -> None:
    b = Bench("rr", [(real(1), 1), (real(2), 1), (real(3), 1), (real(4), 2)])
    b.run_random(2)
    b.remove(real(3))
    b.run_random(5, seed=3)
    b.remove(real(1))
    b.run_random(20, seed=4)
