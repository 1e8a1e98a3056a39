#!/usr/bin/env python3
"""Soak: stream many generated packets through the path ``fastvs process`` uses
(batch -> Director -> Writer) and watch memory, accounting and throughput.

The input is generated on the fly in chunks with numpy: ``--flows`` TCP flows from
distinct clients toward the services of ``tests/golden/g1-rr.rules`` (any rules file
with ``--rules``); the first chunk(s) carry every flow's SYN, the rest ACK+data
segments of random established flows, timestamps rising 1 µs per packet. Each chunk
is a fresh buffer (as the reader gives one), processed in place, and written with
``fastvs.capture.pcap.Writer`` to a temporary file that is started afresh every
``--rotate`` chunks, so disk use stays bounded.

RSS is sampled every ``--sample-every`` chunks (/proc/self/statm). Prints, and writes
with ``--json FILE``: packets in/out/dropped (must balance), RSS min/max/final and its
growth after warm-up, Mpps. Exit status 1 if the accounting does not balance.

    python benchmarks/soak.py                      # 100 million packets
    python benchmarks/soak.py --packets 10000000 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FRAME = 64  # Ethernet 14 + IPv4 20 + TCP 20 + 10 bytes of data
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _csum_rows(words: np.ndarray) -> np.ndarray:
    """Internet checksum of each row of big-endian 16-bit words (uint32 math)."""
    s = words.astype(np.uint32).sum(axis=1, dtype=np.uint64)
    while True:
        hi = s >> 16
        if not hi.any():
            break
        s = (s & 0xFFFF) + hi
    return (~s.astype(np.uint16)).astype(np.uint16)


def build_frames(flows: int, services: list[tuple[str, int]], flags: int, rng: np.random.Generator) -> np.ndarray:
    """``flows`` x 64 frames with valid IPv4 and TCP checksums."""
    import ipaddress

    f = np.zeros((flows, FRAME), np.uint8)
    f[:, 0:6] = [2, 0, 0, 0, 0, 1]
    f[:, 6:12] = [2, 0, 0, 0, 0, 2]
    f[:, 12:14] = [8, 0]
    ip = f[:, 14:34]
    ip[:, 0] = 0x45
    ip[:, 2:4] = [0, 50]  # total length 50
    ip[:, 8] = 64
    ip[:, 9] = 6
    k = np.arange(flows, dtype=np.uint32)
    client = (0x64400000 + k).astype(">u4")  # 100.64.0.0/10 clients, one per flow
    ip[:, 12:16] = client.view(np.uint8).reshape(-1, 4)
    svc = k % len(services)
    vips = np.array([int(ipaddress.IPv4Address(a)) for a, _ in services], ">u4")
    ip[:, 16:20] = vips[svc].view(np.uint8).reshape(-1, 4)
    ip[:, 4:6] = (k & 0xFFFF).astype(">u2").view(np.uint8).reshape(-1, 2)  # IP id
    ip[:, 10:12] = _csum_rows(ip.view(">u2").reshape(flows, 10)).astype(">u2").view(np.uint8).reshape(-1, 2)
    tcp = f[:, 34:64]
    sport = (1024 + rng.integers(0, 60000, flows)).astype(">u2")
    dport = np.array([p for _, p in services], ">u2")[svc]
    tcp[:, 0:2] = sport.view(np.uint8).reshape(-1, 2)
    tcp[:, 2:4] = dport.view(np.uint8).reshape(-1, 2)
    tcp[:, 4:8] = rng.integers(0, 2**32, flows, dtype=np.uint32).astype(">u4").view(np.uint8).reshape(-1, 4)
    tcp[:, 12] = 5 << 4
    tcp[:, 13] = flags
    tcp[:, 14:16] = [0xFF, 0xFF]
    tcp[:, 20:30] = np.frombuffer(b"soak data!", np.uint8)
    # TCP checksum over pseudo-header (src, dst, 0, 6, len 30) + segment
    pseudo = np.zeros((flows, 12), np.uint8)
    pseudo[:, 0:8] = ip[:, 12:20]
    pseudo[:, 9] = 6
    pseudo[:, 11] = 30
    both = np.concatenate([pseudo, tcp], axis=1)
    tcp[:, 16:18] = _csum_rows(both.view(">u2").reshape(flows, 21)).astype(">u2").view(np.uint8).reshape(-1, 2)
    return f


def soak(a: argparse.Namespace) -> dict[str, Any]:
    from fastvs.capture.batch import PacketBatch
    from fastvs.capture.pcap import Writer
    from fastvs.control.director import Director
    from fastvs.control.rules import load_rules

    rules = load_rules(a.rules)
    services = [(s.addr, s.port) for s in rules.services if s.proto == "tcp" and s.family == 4]
    if not services:
        raise SystemExit(f"{a.rules}: no IPv4 TCP service to aim at")
    rng = np.random.default_rng(a.seed)
    syn = build_frames(a.flows, services, 0x02, rng)
    ack = syn.copy()
    ack[:, 34 + 13] = 0x18  # PSH+ACK
    # the flags byte moved by 0x16: patch the TCP checksum the RFC 1624 way (one word)
    w_old = (syn[:, 46].astype(np.uint32) << 8) | syn[:, 47]
    w_new = (ack[:, 46].astype(np.uint32) << 8) | ack[:, 47]
    c = (syn[:, 50].astype(np.uint32) << 8) | syn[:, 51]
    s = (~c & 0xFFFF) + (~w_old & 0xFFFF) + w_new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = ~s & 0xFFFF
    ack[:, 50] = c >> 8
    ack[:, 51] = c & 0xFF

    director = Director(rules, capacity=max(1 << 20, 2 * a.flows), seed=a.seed)
    chunk = a.chunk
    off = (np.arange(chunk, dtype=np.uint32) * FRAME).astype(np.uint32)
    lens = np.full(chunk, FRAME, np.uint32)
    lt = np.ones(chunk, np.uint16)
    ifc = np.zeros(chunk, np.uint16)
    t0_ns = 1_700_000_000 * 10**9
    tmpdir = Path(tempfile.mkdtemp(prefix="fastvs-soak-"))
    out_path = tmpdir / "soak.pcap"
    writer = Writer(out_path)
    done = written = chunks = 0
    rss: list[int] = []
    syn_next = 0
    t_start = time.perf_counter()
    try:
        while done < a.packets:
            n = min(chunk, a.packets - done)
            if syn_next < a.flows:  # every flow opens first
                rows = np.arange(syn_next, min(syn_next + n, a.flows))
                frames = syn[rows]
                syn_next += len(rows)
                n = len(rows)
            else:
                frames = ack[rng.integers(0, a.flows, n)]
            ts = t0_ns + (done + np.arange(n, dtype=np.int64)) * 1000
            batch = PacketBatch(
                buf=frames.reshape(-1), off=off[:n], caplen=lens[:n], wirelen=lens[:n],
                ts=ts, linktype=lt[:n], iface=ifc[:n],
            )  # fmt: skip
            written += director.process(batch)
            writer.write(batch)
            done += n
            chunks += 1
            if chunks % a.rotate == 0:
                writer.close()
                writer = Writer(out_path)
            if chunks % a.sample_every == 0 or done >= a.packets:
                rss.append(rss_bytes())
                if a.progress:
                    el = time.perf_counter() - t_start
                    print(f"  {done:>12,} packets  {done / el / 1e6:6.2f} Mpps  rss {rss[-1] >> 20} MiB",
                          file=sys.stderr)
        writer.close()
    finally:
        writer.abort()
        for p in tmpdir.iterdir():
            p.unlink()
        tmpdir.rmdir()
    elapsed = time.perf_counter() - t_start
    summ = director.summary()
    warm = rss[min(len(rss) - 1, max(1, len(rss) // 10))]
    res: dict[str, Any] = {
        "packets": a.packets,
        "flows": a.flows,
        "chunk": chunk,
        "packets_in": summ["packets_in"],
        "packets_out": summ["packets_out"],
        "dropped": summ["dropped"],
        "written_by_process": written,
        "balanced": summ["packets_in"] == summ["packets_out"] + summ["dropped"] == a.packets
        and written == summ["packets_out"],
        "forwarded_in": summ["forwarded_in"],
        "drops": summ["drops"],
        "connections": summ["connections"],
        "rss_samples": len(rss),
        "rss_min_mib": round(min(rss) / 2**20, 1),
        "rss_max_mib": round(max(rss) / 2**20, 1),
        "rss_final_mib": round(rss[-1] / 2**20, 1),
        "rss_growth_after_warmup_mib": round((rss[-1] - warm) / 2**20, 1),
        "seconds": round(elapsed, 3),
        "mpps": round(a.packets / elapsed / 1e6, 3),
    }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=100_000_000)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=1 << 18, help="packets per batch")
    ap.add_argument("--rules", default=str(REPO / "tests" / "golden" / "g1-rr.rules"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sample-every", type=int, default=16, help="sample RSS every N chunks")
    ap.add_argument("--rotate", type=int, default=64, help="start the output file anew every N chunks")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--progress", action="store_true", help="print a line per RSS sample")
    a = ap.parse_args(argv)
    if a.packets < 1 or a.flows < 1 or a.chunk < 1:
        ap.error("--packets, --flows and --chunk must be positive")
    res = soak(a)
    text = json.dumps(res, indent=2, sort_keys=True)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0 if res["balanced"] else 1


if __name__ == "__main__":
    sys.exit(main())
