"""twos (ip_vs_twos.c): two weighted random choices, the less loaded one wins.

fastvs draws from a per-service xorshift64* seeded with a fixed constant (the kernel
uses its CSPRNG); the exact picks are checked against a model of that generator, and
the documented properties without it.
"""

from __future__ import annotations

from collections import Counter

from reference.sched_harness import Bench, real

from fastvs.sched import twos


def test_seed_is_documented() -> None:
    assert twos.TWOS_SEED == 0x9E3779B97F4A7C15


def test_same_rules_same_picks() -> None:
    a = Bench("twos", [(real(1), 1), (real(2), 2), (real(3), 3)]).run_random(200)
    b = Bench("twos", [(real(1), 1), (real(2), 2), (real(3), 3)]).run_random(200)
    assert a == b


def test_never_picks_quiesced_or_overloaded() -> None:
    b = Bench("twos", [(real(1), 1), (real(2), 0), (real(3), 2, 5)])
    picks = b.run_random(100)
    assert real(2) not in picks
    assert picks.count(real(3)) == 5


def test_load_stays_balanced_by_weight() -> None:
    """Power of two choices: the spread of overhead/weight stays small."""
    b = Bench("twos", [(real(1), 1), (real(2), 2), (real(3), 1)])
    picks = Counter(b.run_random(800))
    per_weight = [picks[real(1)], picks[real(2)] / 2, picks[real(3)]]
    assert max(per_weight) - min(per_weight) <= 8


def test_single_server_always() -> None:
    b = Bench("twos", [(real(1), 7)])
    assert set(b.run_random(20)) == {real(1)}
