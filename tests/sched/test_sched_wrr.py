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
    """err_over in ip_vs_wrr_schedule: when a walk runs off the list's end with every
    server overloaded, mark->cl is the list head, so once the servers recover the
    next pick starts from the head (not after the last server picked)."""
    b = Bench("wrr", [(real(1), 1, 1), (real(2), 3, 1), (real(3), 2, 1)])
    got = b.run_random(6)                     # three connections, then all overloaded
    assert got[3:] == [None, None, None]
    b.run_random(12, seed=5, step=61 * S)     # each SYN after the others' SYN_RECV ended


def test_all_overloaded_model_agrees_over_many_cycles() -> None:
    b = Bench("wrr", [(real(1), 4, 2), (real(2), 3, 1), (real(3), 2, 2), (real(4), 1, 1)])
    for k in range(6):
        b.run_random(9, seed=10 + k)
        b.run_random(3, seed=20 + k, step=61 * S)
