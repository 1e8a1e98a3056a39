"""sed (ip_vs_sed.c): least (activeconns + 1) / weight."""

from __future__ import annotations

from reference.sched_harness import Bench, real


def test_expected_delay_counts_the_incoming_job() -> None:
    """(0+1)/1 vs (1+1)/4: a loaded fast server beats an idle slow one."""
    b = Bench("sed", [(real(1), 1), (real(2), 4)])  # list: .2 .1
    picks = [b.connect("100.64.0.1", 40000 + i, i)[0] for i in range(6)]
    # .2 costs 1/4, 2/4, 3/4, then 4/4 ties with .1's 1/1 (the first in list order
    # keeps it); 5/4 > 1/1 sends the fifth to .1, and 5/4 < 2/1 the sixth to .2
    assert picks == [real(2)] * 4 + [real(1), real(2)]


def test_matches_model_with_quiesced_and_overloaded() -> None:
    b = Bench("sed", [(real(1), 2), (real(2), 0), (real(3), 5, 4), (real(4), 1)])
    picks = b.run_random(300)
    assert real(2) not in picks
    b.check_counters()


def test_inactive_connections_do_not_count() -> None:
    b = Bench("sed", [(real(1), 1), (real(2), 1)], proto="udp")
    picks = b.run_random(20)
    assert set(picks) == {real(2)}  # always (0+1)/1: the first in list order
