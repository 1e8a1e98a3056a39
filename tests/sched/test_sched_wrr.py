"""wrr (ip_vs_wrr.c): current weight stepping down by the gcd from the max weight."""

from __future__ import annotations

from reference.sched_harness import Bench, S, real


def test_first_round_then_weighted_cycle() -> None:
    """DESIGN.md: file-order weights 4,3,2 -> 13 12 11 | 11 12 11 13 12 11 13 12 11 | ..."""
    b = Bench("wrr", [(real(11), 4), (real(12), 3), (real(13), 2)])
    picks = [b.connect("100.64.0.1", 40000 + i, i)[0] for i in range(21)]
    cycle = [11, 12, 11, 13, 12, 11, 13, 12, 11]
    assert picks == [real(i) for i in [13, 12, 11] + cycle + cycle]


def test_gcd_steps_and_model_agree() -> None:
    b = Bench("wrr", [(real(1), 6), (real(2), 4), (real(3), 2), (real(4), 0)])
    picks = b.run_random(300)
    assert real(4) not in picks


def test_weight_edit_recomputes_cw() -> None:
    b = Bench("wrr", [(real(1), 3), (real(2), 2), (real(3), 1)])
    b.run_random(7)
    b.edit(real(1), 6)
    b.run_random(40, seed=2)
    b.edit(real(2), 0)
    b.run_random(40, seed=3)


def test_overloaded_servers_skipped() -> None:
    b = Bench("wrr", [(real(1), 5, 3), (real(2), 1), (real(3), 2)])
    picks = b.run_random(40)
    assert picks.count(real(1)) == 3


def test_all_overloaded_leaves_the_cursor_at_the_head() -> None:
    """err_over in ip_vs_wrr_schedule: a walk that ends past the list's last server
    with every server overloaded leaves mark->cl at the list head (not at the last
    server picked), so once the servers recover the next walk starts from the head.
    List r2 (w 1, -x 1), r1 (w 2, -x 2): r2 r1 r1, then nobody (cw 1, then the reset
    to 2 with last_pass: err_over at the head); 62 s later (the SYN_RECV entries gone)
    cw 2 from the head picks r1 (from r1 it would have stepped to cw 1 and picked r2)."""
    b = Bench("wrr", [(real(1), 2, 2), (real(2), 1, 1)])
    got = [b.connect("100.64.0.1", 40000 + i, i) for i in range(4)]
    assert got == [(real(2), real(2)), (real(1), real(1)), (real(1), real(1)), (None, None)]
    assert b.connect("100.64.0.1", 41000, 62 * S) == (real(1), real(1))


def test_all_overloaded_model_agrees_over_many_cycles() -> None:
    b = Bench("wrr", [(real(1), 4, 2), (real(2), 3, 1), (real(3), 2, 2), (real(4), 1, 1)])
    for k in range(6):
        b.run_random(9, seed=10 + k)
        b.run_random(3, seed=20 + k, step=61 * S)
