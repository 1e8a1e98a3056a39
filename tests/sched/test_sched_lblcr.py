"""lblcr (ip_vs_lblcr.c): a destination address keeps a set of servers; the set's
least loaded member serves it, the set grows when that member is overloaded and
sheds its most loaded member after lblcr_expiration without change."""

from __future__ import annotations

import pytest
from reference.sched_harness import Bench, real

from fastvs.sched import lblcr

S = 1_000_000_000
VIPS = [f"10.10.{i // 200}.{i % 200 + 1}" for i in range(60)]


@pytest.fixture(autouse=True)
def _defaults():  # type: ignore[no-untyped-def]
    yield
    lblcr.set_expiration(24 * 3600)
    lblcr.set_capacity(65536)


def test_set_grows_under_overload() -> None:
    b = Bench("lblcr", [(real(1), 2), (real(2), 2)])
    picks = [b.connect(f"100.64.0.{i}", 40000, i)[0] for i in range(1, 8)]
    # .2 until overloaded (3 > 2 while .1 has 0*2 < 2), then .1 joins the set and
    # the set's least loaded member serves: .1 .1 then .2/.1 by overhead/weight
    assert picks[:3] == [real(2)] * 3 and picks[3] == real(1)
    b.check_counters()


def test_matches_model_many_destinations() -> None:
    b = Bench("lblcr", [(real(1), 1), (real(2), 3), (real(3), 0), (real(4), 2, 10)], vips=VIPS)
    b.run_random(600, step=S // 10)


def test_set_shrinks_after_expiration_with_model() -> None:
    lblcr.set_expiration(300)
    b = Bench("lblcr", [(real(1), 1), (real(2), 1), (real(3), 2)], vips=VIPS[:5],
              model_kw={"expiration": 300 * S})
    b.run_random(200, step=S // 2)
    b.run_random(200, seed=2, step=20 * S)
    b.run_random(50, seed=3, step=2 * 3600 * S)


def test_removed_member_is_skipped() -> None:
    b = Bench("lblcr", [(real(1), 1), (real(2), 1)], vips=VIPS[:5])
    b.run_random(30)
    b.remove(real(1))
    assert set(b.run_random(30, seed=2)) == {real(2)}
