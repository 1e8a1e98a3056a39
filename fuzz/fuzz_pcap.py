#!/usr/bin/env python3
"""Fuzz the capture reader (and writer): arbitrary bytes as a pcap/pcapng file.

The input is written to a temporary file and read with ``fastvs.capture.pcap.open_capture``
twice, once in tiny chunks (records cut by chunk boundaries, carried over) and once in
one large chunk. The only exception allowed is ``CaptureError``. Checked:

* both readings agree: same packets (bytes, lengths, timestamps, link types) and
  both fail or neither;
* each batch's slots lie inside its buffer;
* with ``keep_going=True`` exactly the same records come out (the good ones before
  the first bad record), and it fails only where the plain reading fails too;
* the packets read, written back with ``Writer(like=reader)`` and read again, are
  the same packets.

Run: ``python fuzz/fuzz_pcap.py [corpus dir] -max_total_time=60`` (atheris flags).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

_tmpdir = tempfile.mkdtemp(prefix="fastvs-fuzz-pcap-")
_in = os.path.join(_tmpdir, "in.pcap")
_out = os.path.join(_tmpdir, "out.pcap")

Packets = list[tuple[bytes, int, int, int, int]]


def _read(path: str, chunk: int, keep_going: bool = False) -> tuple[Packets, object | None, object]:
    """(packets, error or None, reader) — packets read before any error."""
    from fastvs.capture.pcap import open_capture
    from fastvs.errors import CaptureError

    pkts: Packets = []
    try:
        reader = open_capture(path, chunk_bytes=chunk, keep_going=keep_going)
    except CaptureError as e:
        return pkts, e, None
    try:
        with reader:
            for b in reader:
                n = len(b)
                if n == 0:
                    raise AssertionError("empty batch yielded")
                end = b.off.astype(np.int64) + b.caplen.astype(np.int64)
                if int(end.max()) > len(b.buf):
                    raise AssertionError("a record's slot runs past its batch buffer")
                for i in range(n):
                    pkts.append(
                        (b.packet(i), int(b.wirelen[i]), int(b.ts[i]), int(b.linktype[i]), int(b.iface[i]))
                    )
    except CaptureError as e:
        return pkts, e, reader
    return pkts, None, reader


def _roundtrip(path: str, reader: object, pkts: Packets) -> None:
    from fastvs.capture.batch import PacketBatch
    from fastvs.capture.pcap import Writer
    from fastvs.errors import CaptureError

    if not pkts:
        return
    batch = PacketBatch.from_packets([p[0] for p in pkts], [p[2] for p in pkts])
    batch.wirelen[:] = [p[1] for p in pkts]
    batch.linktype[:] = [p[3] for p in pkts]
    batch.iface[:] = [p[4] for p in pkts]
    try:
        with Writer(_out, like=reader) as w:  # type: ignore[arg-type]
            w.write(batch)
    except CaptureError:
        return  # e.g. classic pcap cannot hold a second link type: refused cleanly
    back, err, _ = _read(_out, 1 << 20)
    if err is not None:
        raise AssertionError(f"re-reading what the Writer wrote failed: {err}")
    if [(p[0], p[3]) for p in back] != [(p[0], p[3]) for p in pkts]:
        raise AssertionError("write + read changed the packets")


def test_one_input(data: bytes) -> None:
    with open(_in, "wb") as f:
        f.write(data)
    small = 24 + len(data) % 61
    a, ea, reader = _read(_in, small)
    b, eb, _ = _read(_in, 1 << 22)
    if (ea is None) != (eb is None):
        raise AssertionError(f"chunk size {small} vs 4 MiB disagree on failing: {ea!r} / {eb!r}")
    if a != b:
        raise AssertionError(f"chunk size {small} vs 4 MiB read different packets ({len(a)}/{len(b)})")
    k, ek, _ = _read(_in, small, keep_going=True)
    if k != a:
        raise AssertionError(f"keep_going read {len(k)} packets, the plain reading {len(a)}")
    if ek is not None and ea is None:
        raise AssertionError(f"keep_going failed where the plain reading did not: {ek!r}")
    if ea is None and reader is not None:
        _roundtrip(_in, reader, a)


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        import fastvs.capture.pcap  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
