"""nq (ip_vs_nq.c): an idle server at once, else shortest expected delay."""

from __future__ import annotations

from reference.sched_harness import Bench, real


def test_idle_server_first_even_if_slow() -> None:
    b = Bench("nq", [(real(1), 1), (real(2), 100)])  # list: .2 .1
    picks = [b.connect("100.64.0.1", 40000 + i, i)[0] for i in range(3)]
    assert picks == [real(2), real(1), real(2)]


def test_matches_model() -> None:
    b = Bench("nq", [(real(1), 3), (real(2), 0), (real(3), 1, 3), (real(4), 2)])
    picks = b.run_random(300)
    assert real(2) not in picks
    b.check_counters()
