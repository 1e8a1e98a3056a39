"""The supervisor of ``fastvs forward``: opens the interfaces' sockets, runs one worker
in-process or forks N, passes signals on (SIGINT/SIGTERM stop, SIGHUP reloads the
rules), sums the workers' snapshots and prints or writes the listings.

Workers (``--workers N``) are forked processes, each with its own engine, frame I/O and
ARP/ND sockets. Every socket is opened here, before the fork and in worker order, so
that the AF_PACKET fanout groups hand both directions of a connection to one worker
(fastvs/live/bpf.py, fastvs/live/afpacket.py). Workers send a JSON snapshot of their
counters through a pipe once a second; the supervisor sums them for ``--stats-every``
and ``--stats-json`` and prints the final listing on SIGINT/SIGTERM. A worker that
dies stops the whole forwarder (exit status 1).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastvs.errors import FastvsError
from fastvs.live.config import ForwardConfig, ForwardError, check_masq, load_rules, rules_addresses
from fastvs.live.iface import Iface, check_offloads, iface_info
from fastvs.live.io import Handle, get_backend
from fastvs.live.neigh import open_arp_socket
from fastvs.live.worker import REPORT_EVERY, Worker

# -- summing workers ----------------------------------------------------------------------------
_SUM_REAL = ("activeconns", "inactconns", "persistconns")


def merge_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the workers' snapshots: service and real-server stats and connection
    counts, verdict counters, summaries and I/O counters."""
    if not snaps:
        return {"services": [], "counters": {}, "summary": {}, "io": {}, "workers": 0}
    services: list[dict[str, Any]] = copy.deepcopy(snaps[0]["services"])
    by_svc = {(s["proto"], s["addr"], s["port"]): s for s in services}
    for snap in snaps[1:]:
        for s in snap["services"]:
            key = (s["proto"], s["addr"], s["port"])
            mine = by_svc.get(key)
            if mine is None:
                mine = by_svc[key] = copy.deepcopy(s)
                services.append(mine)
                continue
            _add(mine["stats"], s["stats"])
            reals = {(r["addr"], r["port"]): r for r in mine["reals"]}
            for r in s["reals"]:
                m = reals.get((r["addr"], r["port"]))
                if m is None:
                    mine["reals"].append(copy.deepcopy(r))
                    continue
                _add(m["stats"], r["stats"])
                for k in _SUM_REAL:
                    m[k] = m.get(k, 0) + r.get(k, 0)
    summary: dict[str, Any] = {}
    counters: dict[str, int] = {}
    io: dict[str, int] = {}
    for snap in snaps:
        _add(counters, snap["counters"])
        _add(io, snap["io"])
        for k, v in snap["summary"].items():
            if isinstance(v, dict):
                _add(summary.setdefault(k, {}), v)
            else:
                summary[k] = summary.get(k, 0) + v
    per_worker = [{"wid": snap["wid"], "rx": snap["io"].get("rx", 0), "tx": snap["io"].get("tx", 0),
                   "connections": snap["summary"].get("connections", 0)} for snap in snaps]
    return {"services": services, "counters": counters, "summary": summary, "io": io,
            "workers": len(snaps), "per_worker": per_worker,
            "reloads": min(int(snap.get("reloads", 0)) for snap in snaps)}


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v


def format_report(merged: dict[str, Any]) -> str:
    from fastvs.control.listing import format_list, format_stats

    s, io = merged["summary"], merged["io"]
    lines = [
        format_list(merged["services"]),
        format_stats(merged["services"]),
        f"packets in {s.get('packets_in', 0)}  forwarded to real servers "
        f"{s.get('forwarded_in', 0)}  replies {s.get('forwarded_out', 0)}  "
        f"dropped {s.get('dropped', 0)}  connections {s.get('connections', 0)}"
        f"  (workers {merged.get('workers', 0)})",
        "  io " + "  ".join(f"{k} {v}" for k, v in sorted(io.items()) if v),
    ]
    drops = s.get("drops") or {}
    if drops:
        lines.append("  drops " + "  ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    return "\n".join(lines) + "\n"


def report_json(merged: dict[str, Any]) -> dict[str, Any]:
    from fastvs.control.listing import to_json

    doc = to_json(merged["services"], [], merged["summary"].get("drops") or {})
    doc["summary"] = merged["summary"]
    doc["verdicts"] = merged["counters"]
    doc["io"] = merged["io"]
    doc["workers"] = merged["workers"]
    doc["per_worker"] = merged.get("per_worker", [])
    doc["reloads"] = merged.get("reloads", 0)  # SIGHUPs every worker has applied
    doc["time"] = time.time()
    return doc


class Reporter:
    """Keeps each worker's latest snapshot; prints and writes the sum."""

    def __init__(self, cfg: ForwardConfig) -> None:
        self.cfg = cfg
        self.latest: dict[int, dict[str, Any]] = {}
        self.next_print = time.monotonic() + cfg.stats_every if cfg.stats_every > 0 else None
        self.announced = False

    def update(self, snap: dict[str, Any]) -> None:
        self.latest[int(snap["wid"])] = snap
        if not self.announced and len(self.latest) == self.cfg.workers and all(
                s.get("ready") for s in self.latest.values()):
            self.announced = True
            print("fastvs forward: ready", file=sys.stderr, flush=True)
        self.tick()

    def merged(self) -> dict[str, Any]:
        return merge_snapshots([self.latest[k] for k in sorted(self.latest)])

    def tick(self) -> None:
        if self.next_print is not None and time.monotonic() >= self.next_print:
            self.next_print = time.monotonic() + self.cfg.stats_every
            self.emit(final=False)

    def emit(self, final: bool) -> None:
        merged = self.merged()
        if self.cfg.stats_json:
            tmp = self.cfg.stats_json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(report_json(merged), f, indent=2, sort_keys=True)
            os.replace(tmp, self.cfg.stats_json)
        if final or not self.cfg.quiet:
            sys.stdout.write(format_report(merged))
            sys.stdout.write("\n")
            sys.stdout.flush()


# -- the command --------------------------------------------------------------------------------
@dataclass
class Share:
    """What one worker gets from the supervisor: its backend handle (data sockets or
    queues) and its ARP/ND sockets, one per interface."""

    handle: Handle
    arp: list[socket.socket]

    def close(self) -> None:
        self.handle.close()
        for s in self.arp:
            s.close()


def _open_all(cfg: ForwardConfig, ifaces: list[Iface], vips: set[str]) -> list[Share]:
    """Per worker: the backend's handle (AF_PACKET: fanout joined in worker order, so
    that socket i of every group belongs to worker i) and the ARP/ND sockets."""
    handles = get_backend(cfg.io).prepare(cfg, ifaces, vips)
    out: list[Share] = []
    try:
        for h in handles:
            out.append(Share(h, []))
            out[-1].arp.extend(open_arp_socket(i.name) for i in ifaces)
    except BaseException:
        for sh in out:
            sh.close()
        for h in handles[len(out):]:
            h.close()
        raise
    return out


def _install(handlers: dict[int, Callable[[int, Any], None]]) -> None:
    for sig, h in handlers.items():
        signal.signal(sig, h)


def run(cfg: ForwardConfig) -> int:
    """``fastvs forward``: check, open, run the worker(s) until SIGINT/SIGTERM; print the
    final listing. Returns the exit status."""
    cfg.check()
    rules = load_rules(cfg)  # errors out early, before any socket
    log = lambda m: print(f"fastvs forward: {m}", file=sys.stderr, flush=True)  # noqa: E731
    check_masq(rules, log)
    if os.geteuid() != 0:
        log("warning: not root; AF_PACKET sockets need CAP_NET_RAW")
    ifaces = [iface_info(name) for _, name in cfg.sides()]
    for i in ifaces:
        check_offloads(i.name, cfg.fix_offloads, log)
    vips, _ = rules_addresses(rules)
    try:
        socks = _open_all(cfg, ifaces, vips)
    except PermissionError:
        raise ForwardError("AF_PACKET sockets need root (CAP_NET_RAW)") from None
    reporter = Reporter(cfg)
    if cfg.workers == 1:
        return _run_single(cfg, ifaces, socks[0], reporter)
    return _run_forked(cfg, ifaces, socks, reporter, log)


def _run_single(cfg: ForwardConfig, ifaces: list[Iface], share: Share, reporter: Reporter) -> int:
    w = Worker(cfg, 0, ifaces, share.handle, share.arp)

    def on_stop(_sig: int, _frame: Any) -> None:
        w.stop = True

    def on_hup(_sig: int, _frame: Any) -> None:
        w.hup = True

    _install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_hup})
    every = min(REPORT_EVERY, cfg.stats_every / 2) if cfg.stats_every > 0 else REPORT_EVERY
    w.run(reporter.update, every)
    reporter.emit(final=True)
    return 0


def _child(cfg: ForwardConfig, wid: int, ifaces: list[Iface], share: Share, wfd: int) -> int:
    w = Worker(cfg, wid, ifaces, share.handle, share.arp)

    def on_stop(_sig: int, _frame: Any) -> None:
        w.stop = True

    def on_hup(_sig: int, _frame: Any) -> None:
        w.hup = True

    _install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_hup})
    out = os.fdopen(wfd, "w", buffering=1)

    def send(snap: dict[str, Any]) -> None:
        try:
            out.write(json.dumps(snap) + "\n")
        except BrokenPipeError:
            w.stop = True

    every = min(REPORT_EVERY, cfg.stats_every / 2) if cfg.stats_every > 0 else REPORT_EVERY
    w.run(send, every)
    with contextlib.suppress(OSError):
        out.close()
    return 0


def _run_forked(cfg: ForwardConfig, ifaces: list[Iface],
                shares: list[Share], reporter: Reporter, log: Callable[[str], None]) -> int:
    children: dict[int, int] = {}  # read fd -> pid
    bufs: dict[int, bytes] = {}
    # block the signals while forking so that a child never runs the parent's handlers
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        for wid, share in enumerate(shares):
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                for other, sh in enumerate(shares):
                    if other != wid:
                        sh.close()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
                code = 1
                try:
                    code = _child(cfg, wid, ifaces, share, wfd)
                except FastvsError as e:
                    print(f"fastvs forward[{wid}]: {e}", file=sys.stderr, flush=True)
                    code = e.exit_code
                except BaseException as e:  # noqa: BLE001 - a child must never return
                    print(f"fastvs forward[{wid}]: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            os.close(wfd)
            children[r] = pid
            bufs[r] = b""
        for sh in shares:
            sh.close()
        state = {"stopping": False, "hup": False}

        def on_stop(_sig: int, _frame: Any) -> None:
            state["stopping"] = True

        def on_hup(_sig: int, _frame: Any) -> None:
            state["hup"] = True

        _install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_hup})
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

    pids = list(children.values())
    signalled = False
    failed = False
    open_fds = set(children)
    while open_fds:
        if state["stopping"] and not signalled:
            signalled = True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if state["hup"]:
            state["hup"] = False
            try:
                load_rules(cfg)
            except FastvsError as e:
                log(f"SIGHUP: rules not reloaded: {e}")
            else:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGHUP)
        try:
            ready, _, _ = select.select(list(open_fds), [], [], 0.2)
        except InterruptedError:
            continue
        for fd in ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                open_fds.discard(fd)
                os.close(fd)
                if not state["stopping"]:
                    log(f"worker pid {children[fd]} exited; stopping")
                    failed = True
                    state["stopping"] = True
                continue
            bufs[fd] += chunk
            *lines, bufs[fd] = bufs[fd].split(b"\n")
            for line in lines:
                if line:
                    reporter.update(json.loads(line))
        reporter.tick()
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    reporter.emit(final=True)
    return 1 if failed else 0


__all__ = ["Reporter", "Share", "format_report", "merge_snapshots", "report_json", "run"]
