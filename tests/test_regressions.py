"""Regression tests for what the fuzzers (fuzz/) and the sanitizer runs found.

Each test names the harness and input that found the bug. Bugs in files owned by
someone else stay ``xfail(strict=True)`` until the owner fixes them: the test then
passes, strict xfail turns that into a failure, and the marker comes off.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fastvs.errors import CaptureError
from fastvs.pcap import open_capture

FRAME = bytes(range(60))


def _shb() -> bytes:
    return struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)


def _idb(linktype: int = 1) -> bytes:
    return struct.pack("<IIHHII", 1, 20, linktype, 0, 0, 20)


def _epb(data: bytes, ts_us: int = 1_000_000) -> bytes:
    pad = (-len(data)) % 4
    blen = 32 + len(data) + pad
    return (
        struct.pack("<IIIIIII", 6, blen, 0, ts_us >> 32, ts_us & 0xFFFFFFFF, len(data), len(data))
        + data
        + b"\0" * pad
        + struct.pack("<I", blen)
    )


def _bad_trailer_block() -> bytes:
    # an EPB whose trailing length (36) differs from the leading one (32)
    return struct.pack("<IIIIIII", 6, 32, 0, 0, 0, 0, 0) + struct.pack("<I", 36)


def _read(path: Path, chunk: int, keep_going: bool = False) -> tuple[list[bytes], str | None]:
    pkts: list[bytes] = []
    try:
        with open_capture(path, chunk_bytes=chunk, keep_going=keep_going) as r:
            for b in r:
                pkts += [b.packet(i) for i in range(len(b))]
    except CaptureError as e:
        return pkts, str(e)
    return pkts, None


BAD_PCAPNG = _shb() + _idb() + _epb(FRAME) + _epb(FRAME[::-1]) + _bad_trailer_block()


def test_pcapng_bad_block_small_chunks_reference(tmp_path: Path) -> None:
    """Read in chunks smaller than a block, the good records come out, then the error."""
    p = tmp_path / "bad.pcapng"
    p.write_bytes(BAD_PCAPNG)
    pkts, err = _read(p, 40)
    assert pkts == [FRAME, FRAME[::-1]]
    assert err is not None and "trailing block length" in err


def test_pcapng_records_before_bad_block_are_kept(tmp_path: Path) -> None:
    """fuzz/fuzz_pcap.py (chunk 43 vs 4 MiB read 2 vs 0 packets): the good records indexed
    before a bad block in the same chunk come out, then the error (pcap.py Reader._index)."""
    p = tmp_path / "bad.pcapng"
    p.write_bytes(BAD_PCAPNG)
    pkts, err = _read(p, 1 << 20)
    assert pkts == [FRAME, FRAME[::-1]]
    assert err is not None and "trailing block length" in err


def test_pcapng_keep_going_keeps_records_before_bad_block(tmp_path: Path) -> None:
    """As above with keep_going: the good records, then a clean stop counting the bad block."""
    p = tmp_path / "bad.pcapng"
    p.write_bytes(BAD_PCAPNG)
    pkts, err = _read(p, 1 << 20, keep_going=True)
    assert err is None
    assert pkts == [FRAME, FRAME[::-1]]
    with open_capture(p, chunk_bytes=1 << 20, keep_going=True) as r:
        assert sum(len(b) for b in r) == 2
        assert r.bad_records == 1 and r.packets == 2


@pytest.mark.parametrize("chunk", [40, 100, 150, 1 << 20])
@pytest.mark.parametrize("keep_going", [False, True])
def test_pcapng_bad_block_after_several_chunks(
    tmp_path: Path, chunk: int, keep_going: bool
) -> None:
    """Whatever chunk the bad block lands in, every record before it comes out once."""
    frames = [bytes([i]) * (40 + i) for i in range(6)]
    p = tmp_path / "bad.pcapng"
    p.write_bytes(_shb() + _idb() + b"".join(_epb(f) for f in frames) + _bad_trailer_block())
    pkts, err = _read(p, chunk, keep_going=keep_going)
    assert pkts == frames
    if keep_going:
        assert err is None
    else:
        assert err is not None and "trailing block length" in err


def _pcap(records: list[tuple[bytes, int]], snaplen: int = 100) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
    for data, caplen in records:
        out += struct.pack("<IIII", 1, 0, caplen, caplen) + data
    return out


@pytest.mark.parametrize("chunk", [30, 100, 1 << 20])
@pytest.mark.parametrize("keep_going", [False, True])
def test_pcap_records_before_bad_caplen_are_kept(
    tmp_path: Path, chunk: int, keep_going: bool
) -> None:
    """Classic pcap counterpart: a record over the snap length ends the file after the good
    records before it, whether or not they share its chunk."""
    frames = [bytes([i]) * (40 + i) for i in range(4)]
    p = tmp_path / "bad.pcap"
    p.write_bytes(_pcap([(f, len(f)) for f in frames] + [(b"", 5000)]))
    pkts, err = _read(p, chunk, keep_going=keep_going)
    assert pkts == frames
    if keep_going:
        assert err is None
    else:
        assert err is not None and "exceeds the snap length limit" in err
