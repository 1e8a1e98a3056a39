"""Run a capture through N directors behind an ECMP router, and merge what they send.

``run_cluster`` reads the capture once, gives every packet its director
(:class:`~fastvs.cluster.shard.Sharder`), runs one :class:`~fastvs.control.director.Director`
per shard — as local processes (``concurrent.futures``), in this process, or as tasks on a
Dask cluster (``dask.distributed``) — and merges the directors' outputs in timestamp order,
ties in input order. Each director keeps its own connection table, so with ``mh`` or
``sh`` keyed as the ECMP hash is the merged capture is what one director writes, and
with other schedulers it is what N independent directors would write.

The capture is held in memory (input shards and outputs, about three times its size).
A shard travels to its worker as a list of PacketBatch objects (numpy arrays, which
pickle without copies per packet), so a Dask cluster needs no shared storage.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastvs import verdicts as V
from fastvs.capture.batch import (
    IFACE_DTYPE,
    LEN_DTYPE,
    LINK_DTYPE,
    OFF_DTYPE,
    TS_DTYPE,
    VERDICT_DTYPE,
    PacketBatch,
)
from fastvs.capture.pcap import Reader, Writer, open_capture
from fastvs.cluster.shard import EcmpHash, Sharder, take
from fastvs.control.director import Director, check_options
from fastvs.control.estimator import COUNT_KEYS, RATE_KEYS
from fastvs.control.rules import Rules
from fastvs.errors import EngineError, FastvsError, OptionError

__all__ = ["ClusterResult", "DirectorJob", "DirectorResult", "run_cluster", "run_director",
           "MAX_DIRECTORS", "connect_dask"]

MAX_DIRECTORS = 4096  # directors behind one router: far beyond any ECMP group
DASK_TIMEOUT_S = 10  # how long to try reaching a Dask scheduler
DROP_BASE = V.DROP_BASE  # verdicts below it are written
SVC_SUMS = ("activeconns", "inactconns", "persistconns")
_CODE = {name: code for code, name in V.NAMES.items()}  # counters in verdict-code order


@dataclass
class DirectorJob:
    """One director's work: its shard of the capture, in input order."""

    index: int
    rules: Rules
    options: dict[str, Any]
    batches: list[PacketBatch]
    rules_at: list[tuple[int, Rules]] = field(default_factory=list)  # absolute ns
    span: tuple[int, int] = (0, 0)  # the whole capture's first and latest timestamps (ns)
    conns: bool = False


@dataclass
class DirectorResult:
    """What one director did: its batches rewritten in place with their verdicts, its
    listing (rates averaged over the whole capture's span), counters and connections."""

    index: int
    batches: list[PacketBatch]
    summary: dict[str, Any]
    counters: dict[str, int]
    services: list[dict[str, Any]]
    connections: list[dict[str, Any]]
    reload_log: list[tuple[int, str]]
    seconds: float


def _with_rates(stats: dict[str, int], span_s: float) -> dict[str, int]:
    out = dict(stats)
    for rate, count in zip(RATE_KEYS, COUNT_KEYS, strict=True):
        out[rate] = round(stats[count] / span_s) if span_s > 0 else 0
    return out


def run_director(job: DirectorJob) -> DirectorResult:
    """Run one director over its shard (the task each worker runs)."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shown once by the caller, not per director
            d = Director(job.rules, **job.options)
        for at, rules in job.rules_at:
            d.rules_at(at, rules, relative=False)
        for b in job.batches:
            d.process(b)
        # a change no packet of this shard reached still happened by the capture's end,
        # as it did on a director that saw the whole capture
        left = d._pending if d.first_ts is not None else [(at, r) for at, _rel, r in d._pending_raw]
        for at, rules in sorted(left, key=lambda x: x[0]):
            if at <= job.span[1]:
                d.reload_log += [(at, line) for line in d.reload(rules)]
        span_s = max(0.0, (job.span[1] - job.span[0]) / 1e9)
        services = d.services()
        for s in services:
            s["stats"] = _with_rates(s["stats"], span_s)
            for r in s["reals"]:
                r["stats"] = _with_rates(r["stats"], span_s)
        summary = d.summary()
        summary["reloads"] = [f"t+{(at - job.span[0]) / 1e9:g}s {line}" for at, line in d.reload_log]
        return DirectorResult(
            index=job.index,
            batches=job.batches,
            summary=summary,
            counters=d.counters(),
            services=services,
            connections=d.connections() if job.conns else [],
            reload_log=list(d.reload_log),
            seconds=time.perf_counter() - t0,
        )
    except FastvsError as e:  # travels back from a worker as a plain one-argument error
        raise EngineError(f"director {job.index + 1}: {e}") from None


@dataclass
class ClusterResult:
    """Per-director results and the sums over all of them (shaped as one director's)."""

    directors: list[DirectorResult]
    ecmp: EcmpHash
    packets_in: int
    bad_records: int
    seconds: float
    written: int
    total_summary: dict[str, Any]
    total_counters: dict[str, int]
    total_services: list[dict[str, Any]]
    shard_sizes: list[int]
    phases: dict[str, float] = field(default_factory=dict)  # seconds: shard, run, merge

    @property
    def total_connections(self) -> list[dict[str, Any]]:
        return [c for r in self.directors for c in r.connections]


# -- executors ----------------------------------------------------------------------------
def connect_dask(address: str, timeout: float = DASK_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` for ``address``; an OptionError (``--dask``) when
    dask.distributed is missing or the scheduler cannot be reached."""
    try:
        import logging

        from distributed import Client
    except ImportError:
        raise OptionError("dask", "needs dask.distributed: pip install 'fastvs[cluster]'") from None
    try:  # a malformed address fails here, before a Client exists to be torn down
        from distributed.comm.addressing import parse_address
        from distributed.comm.registry import get_backend

        scheme, where = parse_address(address)
        get_backend(scheme)
        if not where:
            raise ValueError("no host")
    except ValueError as e:
        raise OptionError("dask", f"not a Dask scheduler address {address!r}: {e}") from None
    quiet = [logging.getLogger(n) for n in ("distributed", "distributed.client", "distributed.core")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as e:  # OSError, TimeoutError, ValueError for a malformed address
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OptionError("dask", f"cannot reach a Dask scheduler at {address!r}: {why}") from None
    finally:
        for lg, lvl in zip(quiet, levels, strict=True):
            lg.setLevel(lvl)


def _run_jobs(jobs: list[DirectorJob], workers: int | None, dask: Any) -> list[DirectorResult]:
    if dask is not None:
        client = connect_dask(dask) if isinstance(dask, str) else dask
        try:
            futures = [client.submit(run_director, client.scatter(job, hash=False), pure=False,
                                     key=f"fastvs-director-{job.index}-{os.getpid()}-{time.time_ns()}")
                       for job in jobs]
            return list(client.gather(futures))
        finally:
            if isinstance(dask, str):
                client.close()
    if workers == 0 or len(jobs) == 1 and workers is None:
        return [run_director(j) for j in jobs]
    n = workers or min(len(jobs), os.cpu_count() or 1)
    global _FORKED_JOBS
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        # forked workers find their shards in the memory they inherit: only the
        # results are pickled back (not with other threads running: a fork copies
        # their locks in whatever state they are)
        _FORKED_JOBS = jobs
        try:
            with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("fork")) as ex:
                return list(ex.map(_run_forked, range(len(jobs))))
        finally:
            _FORKED_JOBS = []
    with ProcessPoolExecutor(max_workers=n) as ex:
        return list(ex.map(run_director, jobs))


_FORKED_JOBS: list[DirectorJob] = []


def _run_forked(i: int) -> DirectorResult:
    return run_director(_FORKED_JOBS[i])


# -- the run ------------------------------------------------------------------------------
@dataclass
class _Chunk:
    """One chunk of the input as read, kept for the merge: its packets' metadata, each
    packet's director and, when its packets lie in offset order without overlap (as a
    reader's chunk does), which director owns each byte of its buffer (``owner``; the
    bytes between packets belong to none)."""

    start: int  # input index of its first packet
    buflen: int
    off: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts: np.ndarray
    linktype: np.ndarray
    iface: np.ndarray
    director: np.ndarray
    owner: np.ndarray | None
    parts: dict[int, int]  # director -> position of this chunk's part in its batch list


def _byte_owner(batch: PacketBatch, d: np.ndarray, directors: int) -> np.ndarray | None:
    """Each byte's director (``directors`` for the bytes between packets), or None when
    the packets are not in offset order without overlap."""
    off = batch.off.astype(np.int64)
    end = off + batch.caplen.astype(np.int64)
    if len(off) and (np.any(off[1:] < end[:-1]) or end[-1] > len(batch.buf)):
        return None
    gaps = off - np.concatenate(([0], end[:-1]))
    lengths = np.empty(2 * len(off) + 1, np.int64)
    lengths[0:-1:2] = gaps
    lengths[1::2] = end - off
    lengths[-1] = len(batch.buf) - (end[-1] if len(end) else 0)
    dtype = np.int8 if directors < 127 else np.int16
    values = np.full(len(lengths), directors, dtype)
    values[1::2] = d
    return np.repeat(values, lengths)


def _part(batch: PacketBatch, sel: np.ndarray, owner: np.ndarray | None, s: int) -> PacketBatch:
    """Director ``s``'s packets ``sel`` of a chunk as a compact batch: with a byte owner
    map, one boolean compress of the buffer (no index per byte)."""
    if owner is None:
        return take(batch, sel)
    caplen = batch.caplen[sel]
    off = np.zeros(len(sel), np.int64)
    if len(sel):
        np.cumsum(caplen[:-1], out=off[1:], dtype=np.int64)
    return PacketBatch(buf=batch.buf[owner == s], off=off.astype(OFF_DTYPE), caplen=caplen,
                       wirelen=batch.wirelen[sel], ts=batch.ts[sel], linktype=batch.linktype[sel],
                       iface=batch.iface[sel], verdict=batch.verdict[sel])


def _shard(reader: Reader, sharder: Sharder) -> tuple[
        list[list[PacketBatch]], list[list[np.ndarray]], list[_Chunk], int, int, int]:
    """Split the capture: per director its batches and their packets' input indices;
    the chunks as read; packet count; first and latest timestamps."""
    n = sharder.directors
    batches: list[list[PacketBatch]] = [[] for _ in range(n)]
    index: list[list[np.ndarray]] = [[] for _ in range(n)]
    chunks: list[_Chunk] = []
    total = 0
    first_ts: int | None = None
    last_ts = 0
    for batch in reader:
        k = len(batch)
        if k == 0:
            continue
        idx = np.arange(total, total + k, dtype=np.int64)
        if first_ts is None:
            first_ts = int(batch.ts[0])
            last_ts = first_ts
        last_ts = max(last_ts, int(batch.ts.max()))
        d = sharder.assign(batch)
        owner = _byte_owner(batch, d, n) if n > 1 else None
        chunk = _Chunk(total, len(batch.buf), batch.off, batch.caplen, batch.wirelen, batch.ts,
                       batch.linktype, batch.iface, d, owner, {})
        total += k
        order = np.argsort(d, kind="stable")  # one pass: each director's packets, in order
        bounds = np.searchsorted(d[order], np.arange(n + 1))
        for s in range(n):
            sel = order[bounds[s]:bounds[s + 1]]
            if len(sel):
                chunk.parts[s] = len(batches[s])
                batches[s].append(batch if n == 1 else _part(batch, sel, owner, s))
                index[s].append(idx[sel])
        chunks.append(chunk)
    return batches, index, chunks, total, first_ts or 0, last_ts


def _merge_in_place(chunks: list[_Chunk], results: list[DirectorResult]) -> list[PacketBatch] | None:
    """The directors' packets put back where the input chunks had them (one masked
    assignment per director and chunk): the merge in input order, which is timestamp
    order as the engine's clock reads it. None when a director changed a packet's
    length or place (tunnels) or a chunk had no owner map: then the general merge."""
    out = []
    for c in chunks:
        if c.owner is None:
            return None
        buf = np.empty(c.buflen, np.uint8)
        verdict = np.empty(len(c.off), VERDICT_DTYPE)
        for s, pos in c.parts.items():
            b = results[s].batches[pos]
            sel = np.flatnonzero(c.director == s)
            if not np.array_equal(b.caplen, c.caplen[sel]) or len(b.buf) != int(c.caplen[sel].sum()) \
                    or (len(b.off) and int(b.off[0]) != 0) or not np.array_equal(
                        b.off[1:], np.cumsum(b.caplen[:-1], dtype=np.int64)):
                return None
            buf[c.owner == s] = b.buf
            verdict[sel] = b.verdict
        out.append(PacketBatch(buf=buf, off=c.off, caplen=c.caplen, wirelen=c.wirelen, ts=c.ts,
                               linktype=c.linktype, iface=c.iface, verdict=verdict))
    return out


class _Pool:
    """The directors' rewritten packets as one set of arrays (64-bit offsets into one
    buffer), with each packet's input index, to gather output batches from."""

    def __init__(self, results: list[DirectorResult], index: list[list[np.ndarray]]) -> None:
        parts = [(b, i) for r in results for b, i in zip(r.batches, index[r.index], strict=True)]
        bufs = [np.asarray(b.buf, np.uint8) for b, _ in parts]
        base = np.zeros(len(bufs) + 1, np.int64)
        if bufs:
            np.cumsum([len(x) for x in bufs], out=base[1:])

        def cat(name: str, dtype: Any) -> np.ndarray:
            arrs = [np.asarray(getattr(b, name), dtype) for b, _ in parts]
            return np.concatenate(arrs) if arrs else np.zeros(0, dtype)

        self.buf = np.concatenate(bufs) if bufs else np.zeros(0, np.uint8)
        self.off = np.concatenate([b.off.astype(np.int64) + base[j] for j, (b, _) in enumerate(parts)]) \
            if parts else np.zeros(0, np.int64)
        self.caplen = cat("caplen", LEN_DTYPE)
        self.wirelen = cat("wirelen", LEN_DTYPE)
        self.ts = cat("ts", TS_DTYPE)
        self.linktype = cat("linktype", LINK_DTYPE)
        self.iface = cat("iface", IFACE_DTYPE)
        self.verdict = cat("verdict", VERDICT_DTYPE)
        self.index = np.concatenate([i for _, i in parts]) if parts else np.zeros(0, np.int64)

    def merged(self, keep: np.ndarray, order: str = "clock") -> np.ndarray:
        """Positions of the packets ``keep`` selects, merged in timestamp order, ties in
        input order. ``clock``: the time as the engine reckons it, which never runs
        backwards (a packet stamped earlier than one before it is taken at the latest
        time seen), so the merge keeps such a packet where the capture had it — for a
        capture in time order the same as ``ts``, the raw timestamps (as mergecap)."""
        sel = np.flatnonzero(keep)
        if order == "ts":
            return sel[np.lexsort((self.index[sel], self.ts[sel]))]
        # the capture clock (running maximum of timestamps in input order) sorted with
        # ties in input order is the input order itself
        return sel[np.argsort(self.index[sel], kind="stable")]

    def gather(self, pos: np.ndarray) -> PacketBatch:
        lens = self.caplen[pos].astype(np.int64)
        new_off = np.zeros(len(pos), np.int64)
        if len(pos):
            np.cumsum(lens[:-1], out=new_off[1:])
        total = int(lens.sum())
        src = np.repeat(self.off[pos] - new_off, lens) + np.arange(total, dtype=np.int64)
        return PacketBatch(
            buf=self.buf[src] if total else np.zeros(0, np.uint8),
            off=new_off.astype(OFF_DTYPE), caplen=lens.astype(LEN_DTYPE),
            wirelen=self.wirelen[pos], ts=self.ts[pos], linktype=self.linktype[pos],
            iface=self.iface[pos], verdict=self.verdict[pos],
        )

    def segments(self, order: np.ndarray, chunk_starts: np.ndarray) -> Iterator[PacketBatch]:
        """The merged packets as batches cut where the input's chunks were cut (so a
        pcapng output adds interfaces where one director's output does)."""
        if not len(order):
            return
        chunk = np.searchsorted(chunk_starts, self.index[order], side="right") - 1
        cuts = np.flatnonzero(np.diff(chunk)) + 1
        for part in np.split(order, cuts):
            yield self.gather(part)


def _sum_services(per: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Services with every director's counters added (the rules are the same on all)."""
    import copy

    if not per:
        return []
    total = copy.deepcopy(per[0])

    def skey(s: dict[str, Any]) -> tuple[Any, ...]:
        return (s.get("proto"), s.get("addr"), s.get("port"), s.get("fwmark"))

    by_key = {skey(s): s for s in total}
    for services in per[1:]:
        for s in services:
            t = by_key.get(skey(s))
            if t is None:
                continue
            for k, v in s["stats"].items():
                t["stats"][k] = t["stats"].get(k, 0) + v
            reals = {(r["addr"], r["port"]): r for r in t["reals"]}
            for r in s["reals"]:
                tr = reals.get((r["addr"], r["port"]))
                if tr is None:
                    continue
                for k, v in r["stats"].items():
                    tr["stats"][k] = tr["stats"].get(k, 0) + v
                for k in SVC_SUMS:
                    if k in r:
                        tr[k] = tr.get(k, 0) + r[k]
    return total


def _sum_summaries(per: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in per:
        for k, v in s.items():
            if isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
            elif isinstance(v, dict):
                d = out.setdefault(k, {})
                for name, n in v.items():
                    d[name] = d.get(name, 0) + n
    for k in ("drops", "passes"):
        if k in out:
            out[k] = dict(sorted(out[k].items()))
    return out


def run_cluster(
    input_path: str | os.PathLike[str],
    rules: Rules,
    *,
    directors: int,
    ecmp: EcmpHash | None = None,
    options: dict[str, Any] | None = None,
    rules_at: list[tuple[int, Rules]] | None = None,
    output: str | os.PathLike[str] | None = None,
    dropped: str | os.PathLike[str] | None = None,
    out_format: str | None = None,
    chunk_bytes: int = 4 << 20,
    keep_going: bool = False,
    workers: int | None = None,
    dask: Any = None,
    conns: bool = False,
    order: str = "clock",
    on_read: Callable[[], None] | None = None,
) -> ClusterResult:
    """Process ``input_path`` with ``directors`` directors behind an ECMP router.

    ``options`` are :class:`Director` keywords (all directors get the same);
    ``rules_at`` are (nanoseconds after the capture's first packet, rules) changes,
    applied on every director at the same capture time. ``workers``: local processes
    (default: one per director, at most one per CPU; 0 runs the directors in this
    process). ``dask``: a scheduler address or a ``distributed.Client`` (then the
    directors are Dask tasks). The output (and ``dropped``) is written in timestamp
    order, ties in input order: ``order="clock"`` (default) as the engine's clock reads
    time, which never runs backwards, so a capture's out-of-order stamps stay where they
    were and the merge of ``mh`` directors equals one director's output; ``"ts"`` sorts
    by the raw timestamps. For a capture in time order the two are the same."""
    if order not in ("clock", "ts"):
        raise OptionError("order", f"must be clock or ts, not {order!r}")
    if isinstance(directors, bool) or not isinstance(directors, int) or not 1 <= directors <= MAX_DIRECTORS:
        raise OptionError("directors", f"must be between 1 and {MAX_DIRECTORS}, not {directors}")
    if workers is not None and workers < 0:
        raise OptionError("workers", f"must be at least 0, not {workers}")
    opts = dict(options or {})
    check_options(**{k: v for k, v in opts.items() if k in (
        "capacity", "seed", "truncated", "tunnel_mtu", "tunnel_source", "drop_entry",
        "drop_packet", "secure_tcp", "conn_reuse_mode", "amemthresh")})
    ecmp = ecmp or EcmpHash()
    client = connect_dask(dask) if isinstance(dask, str) else dask
    t0 = time.perf_counter()
    reader = open_capture(input_path, chunk_bytes=chunk_bytes, keep_going=keep_going)
    fmt: Any = out_format if out_format not in (None, "same") else None
    writer = drop_writer = None
    try:
        writer = Writer(output, like=reader, format=fmt) if output else None
        drop_writer = Writer(dropped, like=reader, format=fmt) if dropped else None
        with reader:
            batches, index, chunks, total, first_ts, last_ts = _shard(reader, Sharder(rules, directors, ecmp))
        t_shard = time.perf_counter()
        if on_read is not None:
            on_read()
        jobs = [DirectorJob(index=s, rules=rules, options=opts, batches=batches[s],
                            rules_at=[(first_ts + at, r) for at, r in rules_at or []],
                            span=(first_ts, last_ts), conns=conns)
                for s in range(directors)]
        del batches
        results = sorted(_run_jobs(jobs, workers, client), key=lambda r: r.index)
        del jobs
        t_run = time.perf_counter()
        merged = None
        if order == "clock":  # one director: its batches are the output as they are
            merged = results[0].batches if directors == 1 else _merge_in_place(chunks, results)
        if merged is None:
            pool = _Pool(results, index)
            starts = np.asarray([c.start for c in chunks], np.int64)
            kept: Iterator[PacketBatch] = pool.segments(pool.merged(pool.verdict < DROP_BASE, order), starts)
            lost: Iterator[PacketBatch] = pool.segments(pool.merged(pool.verdict >= DROP_BASE, order), starts)
        else:
            kept = lost = iter(merged)
        written = 0
        if writer is not None:
            for b in kept:
                written += writer.write(b)
            writer.close()
        if drop_writer is not None:
            for b in (lost if merged is None else iter(merged)):
                drop_writer.write(b, b.verdict >= DROP_BASE if merged is not None else np.ones(len(b), bool))
            drop_writer.close()
    except BaseException:
        reader.close()
        for w in (writer, drop_writer):
            if w is not None:
                w.abort()
        raise
    finally:
        if isinstance(dask, str) and client is not None:
            client.close()
    for r in results:  # the listing needs no packets any more
        r.batches = []
    summaries = []
    for r in results:
        r.summary["seconds"] = round(r.seconds, 6)
        summaries.append(r.summary)
    total_summary = _sum_summaries(summaries)
    total_summary["seconds"] = round(time.perf_counter() - t0, 6)
    total_summary["reloads"] = results[0].summary["reloads"] if results else []
    counters: dict[str, int] = {}
    for r in results:
        for k, v in r.counters.items():
            counters[k] = counters.get(k, 0) + v
    return ClusterResult(
        directors=results,
        ecmp=ecmp,
        packets_in=total,
        bad_records=reader.bad_records,
        seconds=total_summary["seconds"],
        written=written,
        total_summary=total_summary,
        total_counters=dict(sorted(counters.items(), key=lambda kv: _CODE.get(kv[0], 256))),
        total_services=_sum_services([r.services for r in results]),
        shard_sizes=[int(r.summary["packets_in"]) for r in results],
        phases={"shard": t_shard - t0, "run": t_run - t_shard,
                "merge": time.perf_counter() - t_run},
    )
