"""Capture file I/O throughput: fastvs.capture.pcap read and write, next to a file copy and dpkt.

The capture is generated in a temporary directory (200k packets of 64 bytes by default,
``FASTVS_BENCH_PCAP_PACKETS`` to change), as classic pcap and as pcapng. The floor is
``shutil.copyfile`` of the same file (page cache warm after the first round); the
reference is dpkt's Reader/Writer, one Python object per packet. No speed is asserted.

    pytest benchmarks/bench_pcap.py --benchmark-enable -p no:cacheprovider

or as a script printing Mpps and MB/s per case::

    python benchmarks/bench_pcap.py [--packets 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dpkt
import numpy as np
import pytest

from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import DEFAULT_CHUNK, Writer, open_capture

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

PACKETS = int(os.environ.get("FASTVS_BENCH_PCAP_PACKETS", "200000"))
PKT_LEN = 64
SEED = 20240601


def make_frames(n: int, seed: int = SEED) -> np.ndarray:
    """n x 64 random bytes, with an Ethernet/IPv4 ethertype so tools see IP."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, PKT_LEN), dtype=np.uint8)
    frames[:, 12:14] = (0x08, 0x00)
    return frames


def make_pcap(path: Path, n: int) -> None:
    rec = np.dtype(
        [("sec", "<u4"), ("usec", "<u4"), ("cl", "<u4"), ("wl", "<u4"), ("data", "u1", PKT_LEN)]
    )
    r = np.zeros(n, rec)
    r["sec"] = 1_700_000_000 + np.arange(n) // 100_000
    r["usec"] = np.arange(n) % 100_000 * 10
    r["cl"] = r["wl"] = PKT_LEN
    r["data"] = make_frames(n)
    hdr = np.array([0xA1B2C3D4, 0x00040002, 0, 0, 65535, 1], "<u4").tobytes()
    path.write_bytes(hdr + r.tobytes())


def make_pcapng(path: Path, n: int) -> None:
    shb = np.array([0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0xFFFFFFFF, 0xFFFFFFFF, 28], "<u4").tobytes()
    idb = np.array([1, 20, 1, 0, 20], "<u4").tobytes()  # Ethernet, snaplen 0, µs
    rec = np.dtype(
        [("t", "<u4"), ("len", "<u4"), ("if", "<u4"), ("hi", "<u4"), ("lo", "<u4"),
         ("cl", "<u4"), ("wl", "<u4"), ("data", "u1", PKT_LEN), ("trail", "<u4")]
    )  # fmt: skip
    us = 1_700_000_000_000_000 + np.arange(n, dtype=np.uint64) * 10
    r = np.zeros(n, rec)
    r["t"] = 6
    r["len"] = r["trail"] = rec.itemsize
    r["hi"] = us >> np.uint64(32)
    r["lo"] = us & np.uint64(0xFFFFFFFF)
    r["cl"] = r["wl"] = PKT_LEN
    r["data"] = make_frames(n)
    path.write_bytes(shb + idb + r.tobytes())


# -- the measured operations ----------------------------------------------------------------


def read_fastvs(path: Path) -> int:
    with open_capture(path) as r:
        return sum(len(b) for b in r)


def read_dpkt(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in dpkt.pcap.Reader(f))


def read_dpkt_ng(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in dpkt.pcapng.Reader(f))


def write_fastvs(batch: PacketBatch, out: Path, fmt: str) -> int:
    with Writer(out, format=fmt) as w:  # type: ignore[arg-type]
        return w.write(batch)


def dpkt_packets(batch: PacketBatch) -> list[tuple[float, bytes]]:
    return [(float(t) / 1e9, batch.packet(i)) for i, t in enumerate(batch.ts)]


def write_dpkt(pkts: list[tuple[float, bytes]], out: Path) -> int:
    with open(out, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for ts, p in pkts:
            w.writepkt(p, ts)
    return len(pkts)


def write_fastvs_steady(batch: PacketBatch, out: Path, fmt: str, times: int = 5) -> int:
    """The same batch ``times`` times into one file: the per-chunk cost of a long run."""
    with Writer(out, format=fmt) as w:  # type: ignore[arg-type]
        return sum(w.write(batch) for _ in range(times))


def copy_floor(src: Path, dst: Path) -> int:
    shutil.copyfile(src, dst)
    return 0


def roundtrip_fastvs(src: Path, out: Path, chunk: int = DEFAULT_CHUNK) -> int:
    with open_capture(src, chunk) as r, Writer(out, like=r) as w:
        return sum(w.write(b) for b in r)


# -- pytest-benchmark ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bench_pcap")
    make_pcap(d / "in.pcap", PACKETS)
    make_pcapng(d / "in.pcapng", PACKETS)
    return {"pcap": d / "in.pcap", "pcapng": d / "in.pcapng", "out": d / "out"}


def _fresh(out: Path) -> Callable[[], None]:
    """Round setup: remove the previous output, so no case pays for replacing a file."""

    def setup() -> None:
        out.unlink(missing_ok=True)

    return setup


def _info(benchmark: BenchmarkFixture, path: Path) -> None:
    benchmark.extra_info["packets"] = PACKETS
    benchmark.extra_info["bytes"] = path.stat().st_size


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_read_fastvs(benchmark: BenchmarkFixture, files: dict[str, Path], fmt: str) -> None:
    _info(benchmark, files[fmt])
    assert benchmark(read_fastvs, files[fmt]) == PACKETS


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_read_dpkt(benchmark: BenchmarkFixture, files: dict[str, Path], fmt: str) -> None:
    _info(benchmark, files[fmt])
    fn = read_dpkt if fmt == "pcap" else read_dpkt_ng
    assert benchmark.pedantic(fn, (files[fmt],), rounds=2) == PACKETS


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_copy_floor(benchmark: BenchmarkFixture, files: dict[str, Path], fmt: str) -> None:
    _info(benchmark, files[fmt])
    benchmark.pedantic(
        copy_floor, (files[fmt], files["out"]), setup=_fresh(files["out"]), rounds=10
    )


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_write_fastvs(benchmark: BenchmarkFixture, files: dict[str, Path], fmt: str) -> None:
    batch = open_capture(files[fmt]).read_all()
    _info(benchmark, files[fmt])
    args = (batch, files["out"], fmt)
    assert benchmark.pedantic(write_fastvs, args, setup=_fresh(files["out"]), rounds=10) == PACKETS


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_write_fastvs_steady(benchmark: BenchmarkFixture, files: dict[str, Path], fmt: str) -> None:
    batch = open_capture(files[fmt]).read_all()
    _info(benchmark, files[fmt])
    benchmark.extra_info["packets"] = 5 * PACKETS
    args = (batch, files["out"], fmt)
    assert (
        benchmark.pedantic(write_fastvs_steady, args, setup=_fresh(files["out"]), rounds=5)
        == 5 * PACKETS
    )


def test_write_dpkt(benchmark: BenchmarkFixture, files: dict[str, Path]) -> None:
    pkts = dpkt_packets(open_capture(files["pcap"]).read_all())
    _info(benchmark, files["pcap"])
    assert benchmark.pedantic(write_dpkt, (pkts, files["out"]), rounds=2) == PACKETS


@pytest.mark.parametrize("chunk", [DEFAULT_CHUNK, 4 << 20], ids=["64MiB", "4MiB"])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_read_write_fastvs(
    benchmark: BenchmarkFixture, files: dict[str, Path], fmt: str, chunk: int
) -> None:
    _info(benchmark, files[fmt])
    args = (files[fmt], files["out"], chunk)
    assert (
        benchmark.pedantic(roundtrip_fastvs, args, setup=_fresh(files["out"]), rounds=10) == PACKETS
    )


# -- script -------------------------------------------------------------------------------


def _median(fn: Callable[[], object], rounds: int, out: Path) -> float:
    times = []
    for k in range(rounds + 1):
        out.unlink(missing_ok=True)  # ext4 flushes a file renamed over an existing one
        t0 = time.perf_counter()
        fn()
        if k:  # round 0 warms the page cache and the allocator
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=PACKETS)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_pcap(d / "in.pcap", a.packets)
        make_pcapng(d / "in.pcapng", a.packets)
        out = d / "out"
        batch = {f: open_capture(d / f"in.{f}").read_all() for f in ("pcap", "pcapng")}
        cases: list[tuple[str, str, Callable[[], object], int, int]] = []
        for f in ("pcap", "pcapng"):
            src = d / f"in.{f}"
            dread = read_dpkt if f == "pcap" else read_dpkt_ng
            cases += [
                (f, "copy floor (shutil.copyfile)", lambda s=src: copy_floor(s, out), 1, 1),
                (f, "fastvs read", lambda s=src: read_fastvs(s), 1, 1),
                (f, "fastvs write (new file)", lambda f=f: write_fastvs(batch[f], out, f), 1, 1),
                (f, "fastvs read+write", lambda s=src: roundtrip_fastvs(s, out), 1, 1),
                (f, "fastvs read+write, 4 MiB chunks", lambda s=src: roundtrip_fastvs(s, out, 4 << 20), 1, 1),
                (f, "fastvs write (1 of 5 batches)", lambda f=f: write_fastvs_steady(batch[f], out, f), 1, 5),
                (f, "dpkt read", lambda s=src, r=dread: r(s), 0, 1),
            ]  # fmt: skip
        pkts = dpkt_packets(batch["pcap"])
        cases.append(("pcap", "dpkt write", lambda: write_dpkt(pkts, out), 0, 1))
        print(f"{a.packets} packets of {PKT_LEN} bytes, median of {a.rounds} rounds")
        print(f"{'format':7} {'case':30} {'ms':>9} {'Mpps':>8} {'MB/s':>8}")
        for f, name, fn, full, per in cases:
            t = _median(fn, a.rounds if full else min(a.rounds, 2), out) / per
            size = (d / f"in.{f}").stat().st_size
            print(
                f"{f:7} {name:30} {t * 1e3:9.2f} {a.packets / t / 1e6:8.2f} {size / t / 1e6:8.0f}"
            )


if __name__ == "__main__":
    main()
