"""Shared fixtures: paths to the golden captures (tests/golden/) and the real-world
captures (pcaps/real/), both in the repository. Nothing is read from outside it: a
missing data file fails the tests that need it, it does not skip them."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GOLDEN = HERE / "golden"
GOLDEN_CASES = ["g1-rr", "g2-wrr", "g3-lc-udp", "g4-wlc", "g5-mix"]
REAL = REPO / "pcaps" / "real"
DEMO = REPO / "pcaps" / "demo"
# every capture in pcaps/real (tests/test_real_pcaps.py checks the folder against its
# manifest, so that an absent or partial copy fails there instead of thinning the cases)
REAL_FILES = sorted(p for p in REAL.glob("*") if p.suffix in (".pcap", ".pcapng"))


@pytest.fixture
def real_dir() -> Path:
    assert REAL.is_dir(), f"{REAL} is missing (the real-world captures belong to the repository)"
    return REAL


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """XDG_CACHE_HOME in a temporary directory: what the tests compile (fastvs bench's
    C reference, tests/bench/) goes there, never into the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def ip_datagram(frame: bytes, l3off: int = 14) -> bytes:
    """The IP datagram of an Ethernet frame, without link padding."""
    ip = frame[l3off:]
    return ip[: struct.unpack("!H", ip[2:4])[0]]
