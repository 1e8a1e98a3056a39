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

The supervisor owns the rules (:class:`RulesSource`): the rules file, or a
keepalived.conf whose health checks run beside it (HealthProcess with one worker, a
HealthMonitor thread here with several), with ``fastvs ctl`` edits on top; every change
(health, control, SIGHUP) is pushed to every worker as a whole table — in-process with
one worker, through a pipe per worker otherwise. ``--control`` and ``--metrics`` serve
from threads of their own (:class:`Services`) off the workers' latest snapshots.
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
import threading
import time
import warnings
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
        self.conns: dict[int, tuple[int, list[dict[str, Any]]]] = {}  # wid -> (request, conns)
        self.ask_conns: Callable[[int], None] | None = None  # ask every worker for request n
        self._conns_req = 0
        self._conns_lock = threading.Lock()
        self.next_print = time.monotonic() + cfg.stats_every if cfg.stats_every > 0 else None
        self.announced = False

    def update(self, snap: dict[str, Any]) -> None:
        if "conns" in snap:
            self.conns[int(snap["wid"])] = (int(snap.pop("conns_req")), snap.pop("conns"))
        self.latest[int(snap["wid"])] = snap
        if not self.announced and len(self.latest) == self.cfg.workers and all(
                s.get("ready") for s in self.latest.values()):
            self.announced = True
            print("fastvs forward: ready", file=sys.stderr, flush=True)
        self.tick()

    def connections(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every worker's connection entries, taken between its batches on request."""
        if self.ask_conns is None:
            raise FastvsError("the connection listing is not available")
        with self._conns_lock:
            self._conns_req += 1
            req = self._conns_req
            self.ask_conns(req)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                got = [self.conns.get(w) for w in range(self.cfg.workers)]
                if all(g is not None and g[0] == req for g in got):
                    return [c for g in got if g is not None for c in g[1]]
                time.sleep(0.01)
        raise FastvsError(f"the workers gave no connection listing within {timeout:g} s")

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


# -- where the rules come from ------------------------------------------------------------------
class RulesSource:
    """The rules the workers run, kept by the supervisor: the rules file's, or with a
    keepalived.conf the table its health checks imply, with ``fastvs ctl`` edits on top.

    Every change is pushed to every worker as a whole table (applied between batches with
    ``Director.reload``, connections kept), exactly as a SIGHUP reload:

    - health checks: one worker -> a :class:`~fastvs.health.HealthProcess` polled between
      batches; several -> a :class:`~fastvs.health.HealthMonitor` thread here;
    - control edits (weight, drain, add, remove) are ipvsadm lines kept in order and
      applied on top of every new base table. The checks win over an edit: when a real
      server changes state, the edits naming it are dropped (an operator's weight never
      brings back a failed server, nor keeps an inhibited one above 0); an edit that no
      longer applies (its server was taken out) is skipped. A reload (SIGHUP, ``ctl
      reload``) drops every edit: the file is the truth again.
    """

    def __init__(self, cfg: ForwardConfig, log: Callable[[str], None]) -> None:
        from fastvs.control.keepalived import is_keepalived

        self.cfg, self.log = cfg, log
        self.lock = threading.RLock()
        self.hlock = threading.Lock()  # HealthProcess is not thread-safe
        self.health: Any = None
        self.overlay: list[str] = []
        self.version = 0
        self.tag = "start"
        try:
            with open(cfg.rules, encoding="utf-8", errors="replace") as f:
                self.keepalived = is_keepalived(f.read())
        except OSError:
            self.keepalived = False
        self.base = self._read()[1]
        self.current = self.base
        self.sinks: list[Callable[[Any, str], None]] = []

    def _read(self) -> tuple[Any, Any]:
        """(keepalived config or None, the start table) from the file; raises FastvsError."""
        if not self.keepalived:
            return None, load_rules(self.cfg)
        from fastvs.control.keepalived import read_keepalived_file

        if not os.path.exists(self.cfg.rules):
            raise FastvsError(f"{self.cfg.rules}: no such file")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = read_keepalived_file(self.cfg.rules)
        for w in caught:
            self.log(f"warning: {w.message}")
        return config, config.initial_rules(self.cfg.rules_order)  # type: ignore[arg-type]

    # -- health ----------------------------------------------------------------------------
    def start_health(self, in_process: bool) -> None:
        """Start the checks of a keepalived.conf: a HealthProcess (``in_process``: the
        caller forwards in this process and polls :meth:`poll_health`) or a
        HealthMonitor thread feeding :meth:`_on_change`."""
        if not self.keepalived:
            return
        from fastvs.control.keepalived import read_keepalived_file
        from fastvs.health import HealthMonitor, HealthProcess

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said once already
            config = read_keepalived_file(self.cfg.rules)
        hlog = lambda line: self.log(f"health: {line}")  # noqa: E731
        if in_process:
            self.health = HealthProcess(config, order=self.cfg.rules_order, log=hlog)  # type: ignore[arg-type]
        else:
            self.health = HealthMonitor(config, order=self.cfg.rules_order,  # type: ignore[arg-type]
                                        on_change=self._on_change, log=hlog)
        self.health.start()

    def stop_health(self) -> None:
        if self.health is not None:
            with self.hlock:
                self.health.stop()

    def poll_health(self) -> None:
        """HealthProcess: take what changed, push it. Called between batches: never
        waits for another thread's question to the child."""
        if self.health is None or not hasattr(self.health, "fileno"):
            return
        if not self.hlock.acquire(blocking=False):
            return  # a scrape or ctl health is asking the child: take at the next poll
        try:
            change = self.health.take()
        finally:
            self.hlock.release()
        if change is not None:
            self._on_change(change)

    def _on_change(self, change: Any) -> None:
        with self.lock:
            moved = {t.server for t in change.transitions}
            if moved and self.overlay:
                kept = [ln for ln in self.overlay if not any(_names(ln, srv) for srv in moved)]
                for ln in self.overlay:
                    if ln not in kept:
                        self.log(f"control: edit dropped, the health checks decide now: {ln}")
                self.overlay = kept
            self.base = change.rules
            self._publish("health")

    def health_snapshot(self) -> list[dict[str, Any]]:
        if self.health is None:
            return []
        if hasattr(self.health, "fileno"):
            with self.hlock:
                return self.health.snapshot()
        return self.health.snapshot()  # type: ignore[no-any-return]

    # -- edits and reloads -----------------------------------------------------------------
    def _publish(self, tag: str) -> None:
        from fastvs.control.ctl import apply_lines

        rules = self.base
        for ln in self.overlay:
            try:
                rules = apply_lines(rules, [ln])
            except FastvsError as e:
                self.log(f"control: edit skipped ({e}): {ln}")
        self.current, self.tag = rules, tag
        self.version += 1
        for sink in self.sinks:
            sink(rules, tag)

    def edit(self, cmd: str, args: dict[str, Any]) -> list[str]:
        """A ``fastvs ctl`` edit: its ipvsadm lines, checked, kept and pushed."""
        from fastvs.control.ctl import apply_lines, plan

        with self.lock:
            lines = plan(self.current, cmd, args)
            apply_lines(self.current, lines)  # refuse what does not apply, before keeping it
            self.overlay.extend(lines)
            for ln in lines:
                self.log(f"control: {ln}")
            self._publish("control")
            return lines

    def reload(self, tag: str = "SIGHUP") -> list[str]:
        """Re-read the file (SIGHUP, ``ctl reload``); control edits are dropped. With
        health checks the new configuration goes into the monitor (states kept) and the
        table arrives as a health change."""
        try:
            config, rules = self._read()
        except FastvsError as e:
            self.log(f"{tag}: rules not reloaded: {e}")
            raise
        if config is None or self.health is None:
            with self.lock:
                self.base, self.overlay = rules, []
                self._publish(tag)
            return [f"reloaded {self.cfg.rules}"]
        with self.lock:
            self.overlay = []
        if hasattr(self.health, "fileno"):
            with self.hlock:
                self.health.reload(config)
            self.poll_health()
        else:
            self.health.reload(config)
        with self.lock:
            self._publish(tag)
        return [f"reloaded {self.cfg.rules} (health states kept)"]


def _names(line: str, server: str) -> bool:
    """Whether an ipvsadm line names the real server ``server`` ("ADDR:PORT")."""
    words = line.split()
    return any(w == server or w == server.replace("[", "").replace("]", "") for w in words)


# -- control and metrics ------------------------------------------------------------------------
class RoleControl:
    """The director's role (master / backup, fastvs/live/sync.py) as ``fastvs ctl role``
    set it last; ``sink(role)`` hands it to the worker(s), who switch between batches."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.changed = 0.0
        self.sink: Callable[[str], None] | None = None
        self.lock = threading.Lock()

    def set(self, role: str, log: Callable[[str], None]) -> list[str]:
        from fastvs.live.sync import ROLES

        if role not in ROLES:
            raise FastvsError(f"role must be {' or '.join(ROLES)}, not {role!r}")
        with self.lock:
            old, self.role = self.role, role
            if self.sink is not None:
                self.sink(role)  # also when unchanged: a worker that missed it catches up
            if old == role:
                return [f"role {role} (unchanged)"]
            self.changed = time.time()
            log(f"control: role {old} -> {role}")
            return [f"role {old} -> {role}"]


def control_handler(src: RulesSource, reporter: Reporter,
                    roles: RoleControl | None = None) -> Callable[[str, dict[str, Any]], Any]:
    """``fastvs ctl``'s commands against the running forwarder (the ControlServer's
    thread calls it; nothing here waits on a worker)."""

    def handle(cmd: str, args: dict[str, Any]) -> Any:
        if cmd == "list":
            merged = reporter.merged()
            out = {k: merged.get(k) for k in ("services", "summary", "counters", "io", "workers",
                                               "per_worker", "reloads")}
            if args.get("conns"):
                out["conns"] = reporter.connections()
            return out
        if cmd in ("weight", "drain", "add", "remove"):
            return src.edit(cmd, args)
        if cmd == "reload":
            return src.reload("control reload")
        if cmd == "health":
            return src.health_snapshot()
        if cmd == "role" and roles is not None:
            want = args.get("role")
            if want is None:
                return {"role": roles.role, "changed": roles.changed,
                        "workers": {str(w): s.get("role") for w, s in sorted(reporter.latest.items())}}
            return roles.set(str(want), src.log)
        raise FastvsError(f"unknown command {cmd!r}")

    return handle


def metrics_snapshots(src: RulesSource, reporter: Reporter) -> Callable[[], list[Any]]:
    from fastvs.control.metrics import HealthState, Snapshot

    def snapshots() -> list[Any]:
        try:
            health = [HealthState(h["service"], h["server"], bool(h["up"]), float(h["changed"]),
                                  int(h["weight"])) for h in src.health_snapshot()]
        except (TimeoutError, OSError):
            health = []
        return [Snapshot(services=s["services"], verdicts=s["counters"],
                         connections=int(s["summary"].get("connections", 0)), worker=str(wid),
                         io=s["io"], health=health)
                for wid, s in sorted(reporter.latest.items())]

    return snapshots


class Services:
    """The supervisor's threads: health monitor, control socket, metrics server."""

    def __init__(self, cfg: ForwardConfig, src: RulesSource, reporter: Reporter, in_process: bool,
                 roles: RoleControl | None = None):
        self.cfg, self.src = cfg, src
        self.control: Any = None
        self.metrics: Any = None
        src.start_health(in_process)
        try:
            if cfg.control:
                from fastvs.control.ctl import ControlServer

                self.control = ControlServer(cfg.control, control_handler(src, reporter, roles)).start()
            if cfg.metrics:
                from fastvs.control.metrics import serve

                host, port = cfg.metrics_addr()
                try:
                    self.metrics = serve(host, port, metrics_snapshots(src, reporter))
                except OSError as e:
                    raise ForwardError(f"--metrics {cfg.metrics}: {e.strerror or e}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.shutdown()
        if self.control is not None:
            self.control.close()
        self.src.stop_health()


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
    log = lambda m: print(f"fastvs forward: {m}", file=sys.stderr, flush=True)  # noqa: E731
    src = RulesSource(cfg, log)  # errors out early, before any socket
    rules = src.current
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
    roles = RoleControl(cfg.sync.role if cfg.sync is not None else "master")
    if cfg.workers == 1:
        return _run_single(cfg, ifaces, socks[0], reporter, src, roles)
    return _run_forked(cfg, ifaces, socks, reporter, log, src, roles)


def _run_single(cfg: ForwardConfig, ifaces: list[Iface], share: Share, reporter: Reporter,
                src: RulesSource, roles: RoleControl) -> int:
    w = Worker(cfg, 0, ifaces, share.handle, share.arp, rules=src.current)
    roles.sink = lambda role: setattr(w, "role_wanted", role)
    seen = [src.version]

    def poll(worker: Worker) -> None:
        src.poll_health()
        if src.version != seen[0]:
            with src.lock:
                seen[0] = src.version
                worker.pending = (src.current, src.tag)

    def on_hup() -> None:
        with contextlib.suppress(FastvsError):
            src.reload("SIGHUP")

    w.poll, w.on_hup = poll, on_hup
    reporter.ask_conns = lambda req: setattr(w, "conns_wanted", req)

    def on_stop(_sig: int, _frame: Any) -> None:
        w.stop = True

    def on_sighup(_sig: int, _frame: Any) -> None:
        w.hup = True

    _install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_sighup})
    services = Services(cfg, src, reporter, in_process=True, roles=roles)
    try:
        every = min(REPORT_EVERY, cfg.stats_every / 2) if cfg.stats_every > 0 else REPORT_EVERY
        w.run(reporter.update, every)
    finally:
        services.close()
    reporter.emit(final=True)
    return 0


def _child(cfg: ForwardConfig, wid: int, ifaces: list[Iface], share: Share, wfd: int,
           rules: Any, push: Any) -> int:
    w = Worker(cfg, wid, ifaces, share.handle, share.arp, rules=rules)

    def poll(worker: Worker) -> None:  # the rules the supervisor pushed, in order
        try:
            while push.poll(0):
                new, tag = push.recv()
                if tag == "conns":
                    worker.conns_wanted = new
                elif tag == "role":
                    worker.role_wanted = new
                else:
                    worker.apply(new, tag)
        except (EOFError, OSError):
            worker.poll = None

    w.poll = poll
    w.on_hup = lambda: None  # the supervisor reloads and pushes

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


def _run_forked(cfg: ForwardConfig, ifaces: list[Iface], shares: list[Share], reporter: Reporter,
                log: Callable[[str], None], src: RulesSource, roles: RoleControl) -> int:
    import multiprocessing.connection

    children: dict[int, int] = {}  # read fd -> pid
    bufs: dict[int, bytes] = {}
    pushes = [multiprocessing.Pipe(duplex=False) for _ in shares]  # (worker's end, ours)
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
                for other, (theirs, ours) in enumerate(pushes):
                    ours.close()
                    if other != wid:
                        theirs.close()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
                code = 1
                try:
                    code = _child(cfg, wid, ifaces, share, wfd, src.current, pushes[wid][0])
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
        for theirs, _ in pushes:
            theirs.close()
        push_lock = threading.Lock()

        def push(rules: Any, tag: str) -> None:
            with push_lock:
                for _, ours in pushes:
                    with contextlib.suppress(OSError, ValueError):
                        ours.send((rules, tag))

        src.sinks.append(push)
        reporter.ask_conns = lambda req: push(req, "conns")
        roles.sink = lambda role: push(role, "role")
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
    try:
        services = Services(cfg, src, reporter, in_process=False, roles=roles)
    except BaseException:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        raise
    while open_fds:
        if state["stopping"] and not signalled:
            signalled = True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if state["hup"]:
            state["hup"] = False
            with contextlib.suppress(FastvsError):
                src.reload("SIGHUP")
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
    services.close()
    for _, ours in pushes:
        ours.close()
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    reporter.emit(final=True)
    return 1 if failed else 0


__all__ = ["Reporter", "RoleControl", "RulesSource", "Services", "Share", "format_report", "merge_snapshots", "report_json", "run"]
