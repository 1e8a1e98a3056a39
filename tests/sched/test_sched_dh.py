"""dh (ip_vs_dh.c): bucket hash_32(daddr, 8) of a 256-bucket table filled round-robin."""

from __future__ import annotations

from reference.sched_harness import Bench, real

VIPS = [f"10.10.{i // 200}.{i % 200 + 1}" for i in range(40)]


def test_same_destination_same_server() -> None:
    b = Bench("dh", [(real(1), 1), (real(2), 1), (real(3), 1)], vips=VIPS[:5])
    for vip in VIPS[:5]:
        first = b.connect("100.64.0.1", 40000, 0, vip)[0]
        assert all(b.connect(f"100.64.1.{i}", 40000 + i, i, vip)[0] == first for i in range(1, 8))


def test_table_matches_model_across_destinations() -> None:
    b = Bench("dh", [(real(1), 1), (real(2), 4), (real(3), 2)], vips=VIPS)
    b.run_random(300)


def test_unavailable_server_means_no_destination() -> None:
    b = Bench("dh", [(real(1), 1), (real(2), 0), (real(3), 1, 1)], vips=VIPS)
    picks = b.run_random(200)
    assert None in picks
    assert real(2) not in picks


def test_removal_reassigns_weight_edit_does_not_move() -> None:
    b = Bench("dh", [(real(1), 1), (real(2), 1), (real(3), 1)], vips=VIPS)
    b.run_random(50)
    b.edit(real(1), 3)
    b.run_random(50, seed=2)
    b.remove(real(2))
    b.run_random(100, seed=3)
