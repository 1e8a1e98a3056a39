"""``fastvs bench``: generate traffic, time the engine and the references, print a table.

What is measured (medians of ``--rounds``; every figure of one flow count comes from the
same run, on the same bytes):

* **fastvs engine** -- ``Director.process`` on established TCP flows, packets already in
  memory, full IPVS semantics on (connection lookup, TCP state machine, timers, per
  service/real-server counters, DNAT with incremental checksums), TTL kept so that the
  output is byte for byte what the C reference writes. Forward only (client -> VIP), and
  with replies (half the packets from the real servers: the SNAT path). The connections
  are created first by a warm-up pass of SYNs, scheduled by wlc over 4 real servers; the
  buffer is restored from a pristine copy before each round, outside the timed part.
  Batch sizes 64, 1024, 65536.
* **fastvs file-to-file** -- the ``fastvs process`` loop (``open_capture`` ->
  ``Director.process`` -> ``Writer``), timed from opening the input to closing the output,
  on a warmed director (the flows exist, as they do for the C reference).
* **scheduling** -- SYN-only traffic (every packet a new connection), wlc over 100 real
  servers: new connections per second.
* **paired rounds** -- the engine and the C loop (and the two file-to-file loops, and
  the engine with and without replies) run back to back, round after round, and each
  pair gives a ratio; the median of those is steadier on a machine whose speed drifts.
  Each timed pass follows an untimed one, as the C loop builds its table (and in file
  mode copies the files once) just before its own.
* **references** (:mod:`fastvs.bench.refs`, shipped with the package): the C loop
  ``natloop`` (``mem``: in memory; ``file``: pcap to pcap), compiled on first use with the
  system C compiler into the user's cache (no compiler: one note, the C rows and the
  ``x C`` column left out), and the idiomatic dpkt pipeline (file to file, on fewer
  packets) when dpkt is installed; the memcpy and plain file-copy floors.

The traffic is built here with numpy (no Python work per packet), and the references
are part of the package, so an installed ``fastvs bench`` prints the same table as one
run from a checkout.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import Writer, open_capture
from fastvs.control.director import DEFAULT_CAPACITY, Director
from fastvs.control.rules import parse_rules

VIP = 0x0A0A0001  # 10.10.0.1
VPORT = 80
RIP_BASE = 0xC0A8000A  # 192.168.0.10 ...
RPORT = 8080
CLIENT_NET = 0x64400000  # 100.64.0.0/10
CLIENT_NET_SIZE = 1 << 22
SPORT_MIN = 1024
SPORT_SPAN = 65536 - SPORT_MIN
FRAME = 64  # Ethernet 14 + IPv4 20 + TCP 20 + 10 bytes of payload
T0_NS = 1_700_000_000 * 10**9
EST_T_NS = T0_NS + 10 * 10**9  # established traffic starts 10 s after the SYNs
TH_SYN, TH_ACK = 0x02, 0x10
BATCHES = (64, 1024, 65536)
FILE_CHUNK = 4 << 20  # fastvs process --chunk-mb default
DPKT_PACKETS = 50_000
SCHED_DESTS = 100
SEED = 20240601

_PCAP_GLOBAL = (
    np.array([0xA1B2C3D4], "<u4").tobytes()
    + np.array([2, 4], "<u2").tobytes()
    + np.array([0, 0, 65535, 1], "<u4").tobytes()
)


def rules_text(ndests: int, scheduler: str = "wlc") -> str:
    """One TCP service 10.10.0.1:80 in NAT mode over ``ndests`` real servers."""
    lines = [f"-A -t 10.10.0.1:80 -s {scheduler}"]
    for i in range(ndests):
        a = RIP_BASE + i
        ip = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
        lines.append(f"-a -t 10.10.0.1:80 -r {ip}:{RPORT} -m -w 1")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- traffic


def _fold(s: np.ndarray) -> np.ndarray:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s


def _be16_sum(cols: np.ndarray) -> np.ndarray:
    """Sum of big-endian 16-bit words over each row of an (n, even) uint8 array."""
    hi = cols[:, 0::2].astype(np.uint64).sum(axis=1)
    lo = cols[:, 1::2].astype(np.uint64).sum(axis=1)
    return (hi << np.uint64(8)) + lo


def _put(buf: np.ndarray, col: int, values: np.ndarray | int, dtype: str) -> None:
    width = np.dtype(dtype).itemsize
    arr = np.broadcast_to(np.asarray(values).astype(dtype), (buf.shape[0],))
    buf[:, col : col + width] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1, width)


def tcp_frames(
    saddr: np.ndarray,
    daddr: np.ndarray | int,
    sport: np.ndarray | int,
    dport: np.ndarray | int,
    flags: int,
    *,
    seq: np.ndarray | int = 0,
    ack: np.ndarray | int = 0,
    ipid: np.ndarray | int = 0,
    ttl: int = 64,
) -> np.ndarray:
    """(n, 64) uint8: Ethernet/IPv4/TCP frames with valid checksums and 10 bytes of
    payload; addresses and ports as host integers."""
    n = len(saddr)
    buf = np.zeros((n, FRAME), np.uint8)
    hdr = bytearray(FRAME)
    hdr[0:6] = bytes.fromhex("02000000fa01")
    hdr[6:12] = bytes.fromhex("02000000aa01")
    hdr[12:14] = b"\x08\x00"
    hdr[14] = 0x45
    hdr[16:18] = (FRAME - 14).to_bytes(2, "big")
    hdr[20:22] = b"\x40\x00"  # DF
    hdr[22] = ttl
    hdr[23] = 6
    hdr[46] = 5 << 4
    hdr[47] = flags
    hdr[48:50] = (502).to_bytes(2, "big")
    hdr[54:] = bytes((i * 7 + 0x41) & 0xFF for i in range(FRAME - 54))
    buf[:] = np.frombuffer(bytes(hdr), np.uint8)
    _put(buf, 18, np.asarray(ipid) & 0xFFFF, ">u2")
    _put(buf, 26, saddr, ">u4")
    _put(buf, 30, daddr, ">u4")
    _put(buf, 34, sport, ">u2")
    _put(buf, 36, dport, ">u2")
    _put(buf, 38, np.asarray(seq) & 0xFFFFFFFF, ">u4")
    _put(buf, 42, np.asarray(ack) & 0xFFFFFFFF, ">u4")
    _put(buf, 24, (~_fold(_be16_sum(buf[:, 14:34])).astype(np.uint32)) & 0xFFFF, ">u2")
    s = np.broadcast_to(np.asarray(saddr, np.uint64), (n,))
    d = np.broadcast_to(np.asarray(daddr, np.uint64), (n,))
    seg = FRAME - 34
    pseudo = (s >> np.uint64(16)) + (s & np.uint64(0xFFFF)) + (d >> np.uint64(16))
    pseudo = pseudo + (d & np.uint64(0xFFFF)) + np.uint64(6 + seg)
    tcp = (~_fold(_be16_sum(buf[:, 34:FRAME]) + pseudo).astype(np.uint32)) & 0xFFFF
    _put(buf, 50, tcp, ">u2")
    return buf


def batch_of(frames: np.ndarray, ts: np.ndarray | int) -> PacketBatch:
    """A PacketBatch over a contiguous (n, FRAME) frame array (shares its memory)."""
    n, size = frames.shape
    return PacketBatch(
        buf=frames.reshape(-1),
        off=(np.arange(n, dtype=np.uint32) * np.uint32(size)),
        caplen=np.full(n, size, np.uint32),
        wirelen=np.full(n, size, np.uint32),
        ts=np.broadcast_to(np.asarray(ts, np.int64), (n,)).copy(),
        linktype=np.ones(n, np.uint16),
        iface=np.zeros(n, np.uint16),
    )


def split(b: PacketBatch, size: int) -> list[PacketBatch]:
    """Views of ``b`` in batches of ``size`` packets (same buffer)."""
    out = []
    for i in range(0, len(b), size):
        j = i + size
        out.append(
            PacketBatch(b.buf, b.off[i:j], b.caplen[i:j], b.wirelen[i:j], b.ts[i:j],
                        b.linktype[i:j], b.iface[i:j], b.verdict[i:j])
        )
    return out


def write_pcap(path: str | os.PathLike[str], frames: np.ndarray, ts: np.ndarray) -> None:
    """Classic pcap, µs, little-endian, Ethernet."""
    n, size = frames.shape
    rec = np.empty((n, 16 + size), np.uint8)
    us = ts // 1000
    _put(rec, 0, us // 1_000_000, "<u4")
    _put(rec, 4, us % 1_000_000, "<u4")
    _put(rec, 8, size, "<u4")
    _put(rec, 12, size, "<u4")
    rec[:, 16:] = frames
    with open(path, "wb") as f:
        f.write(_PCAP_GLOBAL)
        rec.tofile(f)


class Traffic:
    """``flows`` clients of 10.10.0.1:80 and what they send.

    ``syn`` opens every flow; :meth:`warm` runs it through a director (creating the
    connections) and learns each flow's real server from the rewritten SYNs; then
    :meth:`established` builds ACK traffic on those flows, optionally with the real
    servers' replies.
    """

    def __init__(self, flows: int, seed: int = SEED) -> None:
        if not 1 <= flows <= CLIENT_NET_SIZE * SPORT_SPAN // 2:
            raise ValueError("flows out of range")
        self.flows = flows
        self.rng = np.random.default_rng(seed)
        space = CLIENT_NET_SIZE * SPORT_SPAN
        keys = np.empty(0, np.int64)
        while keys.size < flows:
            draw = self.rng.integers(0, space, size=flows - keys.size + 16, dtype=np.int64)
            keys = np.unique(np.concatenate([keys, draw]))
        keys = self.rng.permutation(keys)[:flows]
        self.caddr = (CLIENT_NET + keys // SPORT_SPAN).astype(np.uint32)
        self.cport = (SPORT_MIN + keys % SPORT_SPAN).astype(np.uint16)
        self.isn = self.rng.integers(0, 1 << 32, size=flows, dtype=np.uint64)
        self.rip = np.zeros(flows, np.uint32)
        self.rport = np.zeros(flows, np.uint16)

    def syn(self) -> np.ndarray:
        return tcp_frames(self.caddr, VIP, self.cport, VPORT, TH_SYN, seq=self.isn)

    def warm(self, director: Director, batch: int = 65536) -> None:
        """Open every flow in ``director`` and record its real server."""
        frames = self.syn()
        b = batch_of(frames, T0_NS)
        for sub in split(b, batch):
            director.process(sub)
        if not np.all(b.verdict == 32):
            raise RuntimeError(f"warm-up: {np.count_nonzero(b.verdict != 32)} SYNs not forwarded")
        self.rip = frames[:, 30:34].copy().view(">u4").reshape(-1).astype(np.uint32)
        self.rport = frames[:, 36:38].copy().view(">u2").reshape(-1).astype(np.uint16)

    def established(self, packets: int, replies: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``packets`` ACKs on the flows (every flow at least once when packets >= flows),
        shuffled; with ``replies`` a random half come from the real servers. Returns
        ``(frames, flow_of)``; the reply rows have ``flow_of`` negative (-1 - flow)."""
        n, f = packets, self.flows
        if n >= f:
            flow_of = np.concatenate([np.arange(f), self.rng.integers(0, f, size=n - f)])
            self.rng.shuffle(flow_of)
        else:
            flow_of = self.rng.choice(f, size=n, replace=False)
        rep = self.rng.random(n) < 0.5 if replies else np.zeros(n, bool)
        fwd = ~rep
        frames = np.empty((n, FRAME), np.uint8)
        k = flow_of[fwd]
        frames[fwd] = tcp_frames(self.caddr[k], VIP, self.cport[k], VPORT, TH_ACK,
                                 seq=self.isn[k] + np.uint64(1), ipid=np.arange(k.size))
        k = flow_of[rep]
        if k.size:
            frames[rep] = tcp_frames(self.rip[k], self.caddr[k], self.rport[k], self.cport[k],
                                     TH_ACK, ack=self.isn[k] + np.uint64(1), ipid=np.arange(k.size))
        return frames, np.where(rep, -1 - flow_of, flow_of)


# ------------------------------------------------------------------------- timing


def median_time(fn: Callable[[], float], rounds: int) -> float:
    """Median of ``rounds`` calls of ``fn`` (each returns seconds)."""
    return statistics.median(fn() for _ in range(max(1, rounds)))


def make_director(ndests: int = 4, scheduler: str = "wlc", capacity: int = DEFAULT_CAPACITY,
                  ) -> Director:
    rules = parse_rules(rules_text(ndests, scheduler), "<bench>")
    return Director(rules, capacity=capacity, seed=1, keep_ttl=True)


def capacity_for(flows: int) -> int:
    """A table with room to spare: at 7/8 full the flood defense (drop_entry) would
    start removing half-open connections, which is not what a throughput run measures."""
    cap = DEFAULT_CAPACITY
    while cap < 2 * flows:
        cap <<= 1
    return cap


def engine_timer(director: Director, frames: np.ndarray, batch: int,
                 ts: int = EST_T_NS) -> tuple[Callable[[], float], PacketBatch]:
    """A function timing one pass of ``frames`` through ``director`` in batches of
    ``batch`` (the bytes restored from a pristine copy first, untimed), and the batch
    whose verdicts it fills. Warmed once: caches, and the first pass moves SYN_RECV to
    ESTABLISHED."""
    pristine = frames.copy()
    work = frames.copy()
    b = batch_of(work, ts)
    b.ts += np.arange(len(b), dtype=np.int64) * 1000  # 1 µs apart
    subs = split(b, batch)
    proc = director.process

    def one() -> float:
        np.copyto(work, pristine)
        t0 = time.perf_counter()
        for s in subs:
            proc(s)
        return time.perf_counter() - t0

    one()
    return one, b


def time_engine(director: Director, frames: np.ndarray, batch: int, rounds: int,
                ts: int = EST_T_NS) -> tuple[float, dict[int, int]]:
    """Median seconds to run ``frames`` through ``director`` in batches of ``batch``,
    and the verdict counts of the last round."""
    one, b = engine_timer(director, frames, batch, ts)
    secs = median_time(one, rounds)
    codes, counts = np.unique(b.verdict, return_counts=True)
    return secs, {int(c): int(k) for c, k in zip(codes, counts, strict=True)}


def paired_ratios(ours: Callable[[], float], theirs: Callable[[], float], rounds: int,
                  warm: Callable[[], object] | None = None) -> list[float]:
    """Throughput ratios ours/theirs from rounds that run the two back to back
    (ours, theirs, ours, theirs, ...): on a shared machine whose speed drifts, each
    ratio compares two runs seconds apart instead of two medians minutes apart.
    ``warm`` runs untimed before each of ours: the C loop builds its table just before
    its timed pass, so its table is in cache; without this ours would start each
    round with the caches the other process left."""
    out = []
    for _ in range(max(1, rounds)):
        if warm is not None:
            warm()
        a = ours()
        b = theirs()
        out.append(b / a)
    return out


def process_file(director: Director, inp: str | os.PathLike[str], out: str | os.PathLike[str],
                 chunk_bytes: int = FILE_CHUNK) -> int:
    """The ``fastvs process`` loop: read in chunks, process, write. Returns packets."""
    n = 0
    reader = open_capture(inp, chunk_bytes=chunk_bytes)
    with reader, Writer(out, like=reader) as writer:
        for batch in reader:
            director.process(batch)
            writer.write(batch)
            n += len(batch)
    return n


def time_file_once(director: Director, inp: Path, out: Path) -> float:
    t0 = time.perf_counter()
    process_file(director, inp, out)
    return time.perf_counter() - t0


def time_file(director: Director, inp: Path, out: Path, rounds: int) -> float:
    time_file_once(director, inp, out)
    return median_time(lambda: time_file_once(director, inp, out), rounds)


def time_memcpy(frames: np.ndarray, rounds: int) -> float:
    src = frames.reshape(-1)
    dst = np.empty_like(src)

    def one() -> float:  # numpy's copy of a contiguous array is one memcpy
        t0 = time.perf_counter()
        np.copyto(dst, src)
        return time.perf_counter() - t0

    one()
    return median_time(one, rounds)


def time_filecopy(inp: Path, out: Path, rounds: int) -> float:
    def one() -> float:
        t0 = time.perf_counter()
        shutil.copyfile(inp, out)
        return time.perf_counter() - t0

    one()
    return median_time(one, rounds)


def time_schedule(packets: int, ndests: int, rounds: int, scheduler: str = "wlc",
                  batch: int = 65536) -> tuple[float, int]:
    """Median seconds for ``packets`` SYNs of new flows through a fresh director each
    round (``ndests`` real servers): the connection-creating path."""
    t = Traffic(packets, seed=SEED + 7)
    pristine = t.syn()
    work = pristine.copy()
    created = 0

    def one() -> float:
        nonlocal created
        d = make_director(ndests, scheduler, capacity_for(packets))
        np.copyto(work, pristine)
        b = batch_of(work, T0_NS)
        subs = split(b, batch)
        t0 = time.perf_counter()
        for s in subs:
            d.process(s)
        secs = time.perf_counter() - t0
        created = d.engine.conn_count
        return secs

    one()
    return median_time(one, rounds), created


# ------------------------------------------------------------------------- references


def load_refs() -> ModuleType:
    """The reference pipelines (:mod:`fastvs.bench.refs`, part of the package)."""
    from fastvs.bench import refs

    return refs


def write_flows(refs: ModuleType, path: Path, t: Traffic) -> None:
    """natloop's flows file: the established flows and the real server each one got."""
    rec = np.zeros(t.flows, refs.FLOW_DTYPE)
    rec["saddr"] = t.caddr
    rec["daddr"] = VIP
    rec["sport"] = t.cport
    rec["dport"] = VPORT
    rec["rip"] = t.rip
    rec["rport"] = t.rport
    rec["proto"] = 6
    refs._write_flow_records(path, rec)


def dpkt_table(t: Traffic, flow_of: np.ndarray) -> dict[tuple[bytes, int, bytes, int, int], tuple[bytes, int]]:
    vip = VIP.to_bytes(4, "big")
    out = {}
    for k in np.unique(flow_of[flow_of >= 0]).tolist():
        out[(int(t.caddr[k]).to_bytes(4, "big"), int(t.cport[k]), vip, VPORT, 6)] = (
            int(t.rip[k]).to_bytes(4, "big"), int(t.rport[k]))
    return out


# ------------------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}", "numpy": np.__version__}


def _natloop_secs(ref: ModuleType, binary: Path, inp: Path, flows_file: Path, mode: str,
                  out: Path | None) -> float:
    """One pass of the C loop; its own timing (the loop only, not process start)."""
    return float(ref.run_natloop(inp, mode, 1, flows=flows_file, binary=binary, out=out)["seconds"])


def _pair(paired: list[dict[str, Any]], case: str, flows: int, ratios: list[float]) -> None:
    paired.append({"case": case, "flows": flows, "ratio": statistics.median(ratios),
                   "ratios": ratios})


def _row(results: list[dict[str, Any]], case: str, flows: int | None, packets: int,
         seconds: float, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"case": case, "flows": flows, "packets": packets, "seconds": seconds,
                         "mpps": packets / seconds / 1e6 if seconds > 0 else 0.0,
                         "ns_per_pkt": seconds * 1e9 / packets if packets else 0.0}
    r.update(extra)
    results.append(r)
    return r


def run(flows_list: list[int], packets: int, rounds: int, *, refs: bool = True,
        batches: tuple[int, ...] = BATCHES, dpkt_packets: int = DPKT_PACKETS,
        sched_dests: int = SCHED_DESTS, sched_packets: int | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything ``fastvs bench`` measures, as a JSON-ready dict."""
    say = log or (lambda s: None)
    results: list[dict[str, Any]] = []
    paired: list[dict[str, Any]] = []
    notes: list[str] = []
    ref = load_refs() if refs else None
    natloop = None
    if ref is not None:
        try:
            natloop = ref.build_natloop(log=say)
        except ref.NatloopUnavailable as e:  # no compiler, or it cannot build natloop.c
            notes.append(f"C reference skipped: {e}")
    has_dpkt = ref is not None and importlib.util.find_spec("dpkt") is not None
    if ref is not None and not has_dpkt:
        notes.append("dpkt reference skipped: dpkt is not installed (pip install dpkt)")
    big = max(batches)

    with tempfile.TemporaryDirectory(prefix="fastvs-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for flows in flows_list:
            say(f"flows {flows}: building traffic")
            t = Traffic(flows)
            director = make_director(4, "wlc", capacity_for(flows))
            t.warm(director)
            fwd, flow_of = t.established(packets)
            for bs in batches:
                say(f"flows {flows}: engine forward, batch {bs}")
                secs, verdicts = time_engine(director, fwd, bs, rounds)
                _row(results, "fastvs engine fwd", flows, packets, secs, batch=bs,
                     fwd_in=verdicts.get(32, 0))
            say(f"flows {flows}: engine with replies")
            mixed, _ = t.established(packets, replies=True)
            secs, verdicts = time_engine(director, mixed, big, rounds)
            _row(results, "fastvs engine 50% replies", flows, packets, secs, batch=big,
                 fwd_in=verdicts.get(32, 0), fwd_out=verdicts.get(33, 0))
            say(f"flows {flows}: replies and forward-only alternating, {max(1, rounds)} pairs")
            rep, _ = engine_timer(director, mixed, big)
            fwd_only, _ = engine_timer(director, fwd, big)
            pr = paired_ratios(rep, lambda f=fwd_only: (f(), f())[1], rounds, warm=rep)
            _pair(paired, "50% replies / forward", flows, pr)
            del mixed, rep

            inp, out = tmp / "in.pcap", tmp / "out.pcap"
            ts = EST_T_NS + np.arange(packets, dtype=np.int64) * 1000
            write_pcap(inp, fwd, ts)
            say(f"flows {flows}: file to file")
            secs = time_file(director, inp, out, rounds)
            _row(results, "fastvs process file", flows, packets, secs, chunk_bytes=FILE_CHUNK)
            _row(results, "memcpy floor", flows, packets, time_memcpy(fwd, rounds))
            _row(results, "file copy floor", flows, packets, time_filecopy(inp, tmp / "copy.pcap", rounds))

            if natloop is not None:
                say(f"flows {flows}: C reference")
                flows_file = tmp / "in.pcap.flows"
                write_flows(ref, flows_file, t)
                for mode in ("mem", "file"):
                    res = [ref.run_natloop(inp, mode, 1, flows=flows_file, binary=natloop,
                                           out=tmp / "c_out.pcap")
                           for _ in range(max(1, rounds))]
                    secs = statistics.median(float(r["seconds"]) for r in res)
                    extra: dict[str, Any] = {"rewritten": int(res[-1]["rewritten"])}
                    if mode == "file":
                        process_file(director, inp, out)
                        extra["same_bytes_as_fastvs"] = _same_file(out, tmp / "c_out.pcap")
                    _row(results, f"C natloop {mode}", flows, packets, secs, **extra)
                say(f"flows {flows}: engine and C alternating, {max(1, rounds)} pairs")
                eng, _ = engine_timer(director, fwd, big)
                c_mem = functools.partial(_natloop_secs, ref, natloop, inp, flows_file, "mem", None)
                pr = paired_ratios(eng, c_mem, rounds, warm=eng)
                _pair(paired, "engine / C mem", flows, pr)
                ours = functools.partial(time_file_once, director, inp, out)
                c_file = functools.partial(_natloop_secs, ref, natloop, inp, flows_file, "file",
                                           tmp / "c_out.pcap")
                # as the C loop's file mode makes an untimed pass over the same files first
                pr = paired_ratios(ours, c_file, rounds,
                                   warm=functools.partial(process_file, director, inp, out))
                _pair(paired, "process file / C file", flows, pr)
            if has_dpkt:
                k = min(packets, dpkt_packets)
                say(f"flows {flows}: dpkt on {k} packets")
                small = tmp / "small.pcap"
                write_pcap(small, fwd[:k], ts[:k])
                table = dpkt_table(t, flow_of[:k])
                secs = median_time(
                    lambda s=small, tb=table: ref.dpkt_nat_pipeline(s, tmp / "d_out.pcap", tb)[1],
                    rounds)
                _row(results, "dpkt file", flows, k, secs)
            del fwd, director
            for p in tmp.iterdir():
                p.unlink()

        n_sched = sched_packets if sched_packets is not None else min(packets, 200_000)
        say(f"scheduling: {n_sched} SYNs, wlc over {sched_dests} real servers")
        secs, created = time_schedule(n_sched, sched_dests, rounds)
        _row(results, f"fastvs new conns (wlc, {sched_dests} RS)", None, n_sched, secs,
             batch=big, created=created)

    add_ratios(results)
    return {"machine": machine(), "packets": packets, "rounds": rounds, "frame_bytes": FRAME,
            "flows": flows_list, "batches": list(batches), "notes": notes, "results": results,
            "paired": paired}


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 22), fb.read(1 << 22)
            if x != y:
                return False
            if not x:
                return True


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Ratios within one flow count: engine rows against C mem, file rows against C
    file, everything against dpkt; replies against forward-only."""
    def find(case: str, flows: int | None, batch: int | None = None) -> dict[str, Any] | None:
        for r in results:
            if r["case"] == case and r["flows"] == flows and (batch is None or r.get("batch") == batch):
                return r
        return None

    for r in results:
        f = r["flows"]
        c_mem, c_file, dp = find("C natloop mem", f), find("C natloop file", f), find("dpkt file", f)
        if r["case"].startswith("fastvs engine") and c_mem:
            r["ratio_c"] = r["mpps"] / c_mem["mpps"]
        if r["case"] == "fastvs process file" and c_file:
            r["ratio_c"] = r["mpps"] / c_file["mpps"]
        if dp and r["case"].startswith("fastvs"):
            r["ratio_dpkt"] = r["mpps"] / dp["mpps"]
        if r["case"] == "fastvs engine 50% replies":
            base = find("fastvs engine fwd", f, r.get("batch"))
            if base:
                r["ratio_fwd"] = r["mpps"] / base["mpps"]


def format_table(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"fastvs bench: {doc['packets']} packets of {doc['frame_bytes']} bytes per flow count, "
        f"median of {doc['rounds']} rounds",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}",
        "",
        f"{'flows':>9}  {'case':<34} {'batch':>6} {'Mpps':>9} {'ns/pkt':>9} {'x C':>6} "
        f"{'x dpkt':>7} {'x fwd':>6}",
    ]

    def fmt(v: Any, spec: str) -> str:
        return format(v, spec) if v is not None else "-"

    for r in doc["results"]:
        flows = str(r["flows"]) if r["flows"] is not None else "-"
        lines.append(
            f"{flows:>9}  {r['case']:<34} {fmt(r.get('batch'), 'd'):>6} {r['mpps']:9.3f} "
            f"{r['ns_per_pkt']:9.1f} {fmt(r.get('ratio_c'), '.2f'):>6} "
            f"{fmt(r.get('ratio_dpkt'), '.0f'):>7} {fmt(r.get('ratio_fwd'), '.2f'):>6}"
        )
    pairs = doc.get("paired", [])
    if pairs:
        lines += ["", "paired rounds (the two back to back, each after a warm-up pass; repeated): median ratio, each round's"]
        for r in pairs:
            each = " ".join(f"{x:.2f}" for x in r["ratios"])
            lines.append(f"{r['flows']:>9}  {r['case']:<26} {r['ratio']:5.2f}   ({each})")
    for r in doc["results"]:
        if "same_bytes_as_fastvs" in r:
            lines.append(f"  C natloop file output identical to fastvs's at {r['flows']} flows: "
                         f"{'yes' if r['same_bytes_as_fastvs'] else 'NO'}")
    for note in doc["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: str) -> bool:
    """Throughput against table size and batch size; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    res = doc["results"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    big = max(doc["batches"])
    series = [("fastvs engine fwd", big), ("fastvs engine 50% replies", big),
              ("fastvs process file", None), ("C natloop mem", None), ("C natloop file", None),
              ("memcpy floor", None), ("file copy floor", None), ("dpkt file", None)]
    for case, batch in series:
        pts = [(r["flows"], r["mpps"]) for r in res
               if r["case"] == case and (batch is None or r.get("batch") == batch)]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax1.plot(xs, ys, marker="o", label=case)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("flows in the table")
    ax1.set_ylabel("Mpps")
    ax1.set_title("throughput against table size")
    ax1.legend(fontsize=7)
    for flows in doc["flows"]:
        pts = [(r["batch"], r["mpps"]) for r in res if r["case"] == "fastvs engine fwd" and r["flows"] == flows]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax2.plot(xs, ys, marker="o", label=f"{flows} flows")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("batch size (packets)")
    ax2.set_ylabel("Mpps")
    ax2.set_title("fastvs engine, forward: throughput against batch size")
    ax2.legend(fontsize=7)
    fig.suptitle(f"fastvs bench ({doc['machine']['cpu']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(a: argparse.Namespace) -> int:
    flows = list(a.flows)
    if any(f < 1 for f in flows) or a.packets < 1 or a.rounds < 1:
        print("fastvs bench: --flows, --packets and --rounds must be positive", file=sys.stderr)
        return 2
    quiet = getattr(a, "quiet", False)
    doc = run(
        flows,
        a.packets,
        a.rounds,
        refs=not a.no_refs,
        batches=tuple(getattr(a, "batches", None) or BATCHES),
        dpkt_packets=getattr(a, "dpkt_packets", None) or DPKT_PACKETS,
        sched_dests=getattr(a, "sched_dests", None) or SCHED_DESTS,
        log=None if quiet else (lambda s: print(f"  .. {s}", file=sys.stderr, flush=True)),
    )
    sys.stdout.write(format_table(doc))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    if a.plot:
        if plot(doc, a.plot):
            print(f"plot written to {a.plot}")
        else:
            print("fastvs bench: no plot: matplotlib is not installed (pip install matplotlib)",
                  file=sys.stderr)
    return 0
