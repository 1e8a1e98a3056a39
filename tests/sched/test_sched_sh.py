"""sh (ip_vs_sh.c): bucket hash_32(port + saddr, 8) of a 256-bucket table in which
each server holds ``weight`` consecutive buckets; -b sh-fallback / sh-port."""

from __future__ import annotations

from reference.sched_harness import Bench, real
from reference.sched_models import RS, SH


def test_same_client_same_server_any_port() -> None:
    b = Bench("sh", [(real(1), 1), (real(2), 1), (real(3), 1)])
    first = b.connect("100.64.7.9", 40000, 0)[0]
    assert all(b.connect("100.64.7.9", 40001 + i, i + 1)[0] == first for i in range(10))


def test_buckets_are_weight_proportional() -> None:
    m = SH()
    a, c = RS(real(1), 8080, 3), RS(real(2), 8080, 1)
    m.changed([a, c])
    assert m.buckets[:5] == [a, a, a, c, a]
    assert m.buckets.count(a) == 192


def test_matches_model_weights_and_zero_weight_bucket() -> None:
    b = Bench("sh", [(real(1), 3), (real(2), 0), (real(3), 5), (real(4), 1)])
    picks = b.run_random(400)
    assert None in picks  # the weight-0 server keeps one bucket: no destination there


def test_fallback_skips_unavailable_servers() -> None:
    b = Bench("sh", [(real(1), 1), (real(2), 0), (real(3), 2, 3)], flags="sh-fallback")
    picks = b.run_random(300)
    assert real(2) not in picks and None not in picks


def test_port_flag_hashes_the_client_port() -> None:
    b = Bench("sh", [(real(1), 1), (real(2), 1), (real(3), 1)], flags="sh-port")
    picks = {b.connect("100.64.7.9", 40000 + i, i)[0] for i in range(30)}
    assert len(picks) == 3
    b.run_random(200)


def test_fallback_and_port_with_edits_and_removal() -> None:
    b = Bench("sh", [(real(i), i % 3) for i in range(1, 8)], flags="sh-fallback,sh-port")
    b.run_random(200)
    b.edit(real(4), 0)
    b.run_random(200, seed=2)
    b.remove(real(5))
    b.run_random(200, seed=3)
