"""lblc (ip_vs_lblc.c): a destination address keeps its server while that server
is usable and not overloaded; otherwise weighted least-connection, cached."""

from __future__ import annotations

import pytest
from reference.sched_harness import Bench, real

from fastvs.sched import lblc

S = 1_000_000_000
VIPS = [f"10.10.{i // 200}.{i % 200 + 1}" for i in range(60)]


@pytest.fixture(autouse=True)
def _defaults():  # type: ignore[no-untyped-def]
    yield
    lblc.set_expiration(24 * 3600)
    lblc.set_capacity(65536)


def test_destination_sticks_to_its_server() -> None:
    """Where wlc would alternate, the cached server keeps the destination."""
    b = Bench("lblc", [(real(1), 10), (real(2), 10)])
    a = [b.connect(f"100.64.0.{i}", 40000, i)[0] for i in range(1, 11)]
    assert a == [real(2)] * 10


def test_overloaded_rule_moves_the_destination() -> None:
    """activeconns > weight and some server below half its weight: reschedule."""
    b = Bench("lblc", [(real(1), 2), (real(2), 2)])
    picks = [b.connect(f"100.64.0.{i}", 40000, i)[0] for i in range(1, 6)]
    assert picks == [real(2)] * 3 + [real(1)] * 2


def test_matches_model_many_destinations() -> None:
    b = Bench("lblc", [(real(1), 1), (real(2), 3), (real(3), 0), (real(4), 2, 10)], vips=VIPS)
    b.run_random(600, step=S // 10)
    b.check_counters()


def test_removed_server_is_not_used_from_cache() -> None:
    b = Bench("lblc", [(real(1), 5), (real(2), 5)], vips=VIPS[:10])
    b.run_random(40)
    b.remove(real(2))
    assert set(b.run_random(40, seed=2)) == {real(1)}


def test_expiry_after_a_quiet_day_with_model() -> None:
    """The 60 s collector drops entries unused for lblc_expiration on every 30th
    quiet tick; a destination seen again later is scheduled afresh."""
    lblc.set_expiration(600)
    b = Bench("lblc", [(real(1), 1), (real(2), 1), (real(3), 1)], vips=VIPS[:20],
              model_kw={"expiration": 600 * S})
    b.run_random(100, step=S)
    b.run_random(100, seed=2, step=40 * S)
    b.run_random(100, seed=3, step=3 * 3600 * S)


def test_capacity_is_per_service() -> None:
    """Each service preallocates its own cache.  A VIP service only ever caches its
    own address, so one entry suffices (a full cache, reachable with fwmark
    services, skips caching as the kernel's failed allocation does)."""
    lblc.set_capacity(1)
    b = Bench("lblc", [(real(1), 1), (real(2), 1)], vips=VIPS[:10])
    before = lblc.cache_full()
    b.run_random(100)
    assert lblc.cache_full() == before
