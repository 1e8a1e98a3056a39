"""Shared fixtures: paths to the golden captures and the shared real-world captures."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GOLDEN = HERE / "golden"
GOLDEN_CASES = ["g1-rr", "g2-wrr", "g3-lc-udp", "g4-wlc", "g5-mix"]


def _find_real() -> Path | None:
    for cand in (REPO.parent / "shared" / "pcaps" / "real", Path("/work/shared/pcaps/real")):
        if cand.is_dir():
            return cand
    return None


REAL = _find_real()


@pytest.fixture
def real_dir() -> Path:
    if REAL is None:
        pytest.skip("../shared/pcaps/real is not present")
    return REAL


def ip_datagram(frame: bytes, l3off: int = 14) -> bytes:
    """The IP datagram of an Ethernet frame, without link padding."""
    ip = frame[l3off:]
    return ip[: struct.unpack("!H", ip[2:4])[0]]
