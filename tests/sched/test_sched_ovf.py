"""ovf (ip_vs_ovf.c): the highest weight whose active connections do not exceed it."""

from __future__ import annotations

from reference.sched_harness import Bench, real


def test_overflows_after_weight_plus_one_active() -> None:
    b = Bench("ovf", [(real(1), 2), (real(2), 3)])
    picks = [b.connect("100.64.0.1", 40000 + i, i)[0] for i in range(7)]
    # .2 takes connections while active <= 3 (4 of them), then .1 while active <= 2
    assert picks == [real(2)] * 4 + [real(1)] * 3
    assert b.connect("100.64.0.1", 41000, 8) == (None, None)


def test_udp_never_fills_up() -> None:
    """Only active connections count: UDP (inactive) never overflows."""
    b = Bench("ovf", [(real(1), 1), (real(2), 2)], proto="udp")
    assert set(b.run_random(30)) == {real(2)}


def test_matches_model() -> None:
    b = Bench("ovf", [(real(1), 5), (real(2), 0), (real(3), 8, 6), (real(4), 5)])
    b.run_random(30)
