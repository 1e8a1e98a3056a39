"""One worker: one engine, its frame I/O (fastvs/live/io.py), its L2 stage and the
ARP/ND sockets of each interface, in one receive -> process -> transmit loop.

A worker is the whole forwarder with ``--workers 1`` and one forked process of
several otherwise (fastvs/live/supervisor.py). It reports a JSON-able snapshot of its
counters through a callback once a second, and reloads the rules when its ``hup`` flag
is set (by the SIGHUP handler). Under ``fastvs forward`` the rules come from the
supervisor (fastvs/live/supervisor.py: RulesSource): ``poll`` (every POLL_EVERY s between
batches) picks up what it pushed — health-check changes, ``fastvs ctl`` edits, SIGHUP
reloads — and the worker applies it between batches, connections kept.

With ``--sync-master``/``--sync-backup`` the worker also runs its share of connection
sync (fastvs/live/sync.py: LiveSync) and has a role: a master forwards and sends the
engine's sync records; a backup forwards nothing, answers no ARP/ND and fills its
engine from the master's messages. ``role_wanted`` (``fastvs ctl role``) switches
between batches.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from fastvs.errors import FastvsError
from fastvs.live._l2 import L2Stage, monotonic_ns
from fastvs.live.config import ForwardConfig, apply_rules, load_rules, rules_addresses
from fastvs.live.iface import Iface
from fastvs.live.io import FrameIO, Handle, get_backend
from fastvs.live.neigh import Neighbours, Side, load_neigh_file

REPORT_EVERY = 1.0  # seconds between worker snapshots
READY_WAIT = 2.0  # seconds to wait for real servers' MACs before saying "ready"
POLL_EVERY = 0.05  # seconds between polls of pushed rules (health changes, control edits)
RUN_BUDGET_NS = 1_000_000  # longest stretch of batches in C (FrameIO.run) between two
#                            rounds of the Python loop's duties (signals, timers, sync)
# FASTVS_LIVE_LOOP=python: one Python round per batch (receive, Engine.process, transmit
# called from Python), the loop before FrameIO.run; kept to measure the two side by side
PY_LOOP = os.environ.get("FASTVS_LIVE_LOOP", "") == "python"


class Worker:
    """One engine, one FrameIO, the ARP sockets of each interface."""

    def __init__(self, cfg: ForwardConfig, wid: int, ifaces: Sequence[Iface], handle: Handle,
                 arp: Sequence[socket.socket], rules: Any = None) -> None:
        from fastvs.control.director import Director

        self.cfg = cfg
        self.wid = wid
        self.log_prefix = f"fastvs forward[{wid}]: " if cfg.workers > 1 else "fastvs forward: "
        if rules is None:
            rules = load_rules(cfg)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.director = Director(rules, capacity=cfg.capacity, seed=cfg.seed,
                                     keep_ttl=cfg.keep_ttl,
                                     expire_nodest_conn=cfg.expire_nodest_conn)
        if wid == 0:
            for w in caught:
                self.log(f"warning: {w.message}")
        self.ifaces = list(ifaces)
        self.l2 = L2Stage(ifaces[0].mac, ifaces[-1].mac)
        self.io: FrameIO = get_backend(cfg.io).open(handle, cfg, ifaces, self.l2)
        self.io.watch([s.fileno() for s in arp])
        for gw in cfg.client_gw:
            self.l2.set_gateway(gw)
        vips, rips = rules_addresses(rules)
        # the role: a backup forwards nothing and answers no ARP/ND (fastvs/live/sync.py)
        self.role = cfg.sync.role if cfg.sync is not None else "master"
        self.role_wanted: str | None = None  # set by ``poll`` (fastvs ctl role), applied between batches
        self.announce_at: float | None = None
        sides = [Side(name, i.name, i.mac, s)
                 for (name, _), i, s in zip(cfg.sides(), ifaces, arp, strict=True)]
        self.neigh = Neighbours(
            table=self.l2, sides=sides, answer_for=vips | set(cfg.addrs),
            own_addrs=list(cfg.addrs) if self.role == "master" else [], resolve_set=rips | set(cfg.client_gw),
            answer=cfg.arp_reply and wid == 0 and self.role == "master", log=self.log)
        self.neigh.join_groups()
        self.sync: Any = None
        if cfg.sync is not None:
            from fastvs.live.sync import LiveSync

            try:
                self.sync = LiveSync(cfg.sync, self.director, rules, wid=wid, workers=cfg.workers, log=self.log)
            except BaseException:
                self.io.close()
                raise
            self.io.watch([s.fileno() for s in arp] + [self.sync.fileno()])
        if cfg.neigh_file:
            self.neigh.load_static(load_neigh_file(cfg.neigh_file))
        self.stop = False
        self.hup = False
        self.ready = False
        self.reloads = 0
        # pushed rules (health checks, fastvs ctl, a SIGHUP handled by the supervisor):
        # (Rules, what pushed them), applied between batches; set by ``poll``
        self.pending: tuple[Any, str] | None = None
        # called between batches every POLL_EVERY seconds (health.take(), the pipe)
        self.poll: Callable[[Worker], None] | None = None
        # SIGHUP handled by the caller (the supervisor's rules source) instead of the file
        self.on_hup: Callable[[], None] | None = None
        # a connection listing asked for (fastvs ctl list -c): the request's number; the
        # next snapshot carries ``conns`` and ``conns_req``
        self.conns_wanted = 0

    def log(self, msg: str) -> None:
        print(self.log_prefix + msg, file=sys.stderr, flush=True)

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        io = self.io.counters()
        io.update(self.l2.counters())
        io.update(self.neigh.counts)
        io["neighbours"] = len(self.l2.neigh_entries())
        if self.sync is not None:
            io.update(self.sync.counters())
        return {
            "wid": self.wid,
            "role": self.role,
            "final": final,
            "ready": self.ready,
            "reloads": self.reloads,
            "services": self.director.services(),
            "counters": self.director.counters(),
            "summary": self.director.summary(),
            "io": io,
        }

    def reload(self) -> None:
        """SIGHUP: apply the difference to the rules file; say what changed."""
        try:
            new = load_rules(self.cfg)
        except FastvsError as e:
            self.log(f"SIGHUP: rules not reloaded: {e}")
            return
        self.apply(new, "SIGHUP")

    def apply(self, new: Any, tag: str) -> None:
        """Bring the director to ``new`` rules (keeping connections); log each change
        as ``TAG: change``."""
        try:
            msgs = apply_rules(self.director, new)
        except (FastvsError, ValueError, IndexError) as e:
            self.log(f"{tag}: reload failed part-way: {e}")
            return
        vips, rips = rules_addresses(new)
        self.neigh.answer_for = vips | set(self.cfg.addrs)
        self.neigh.resolve_set = rips | set(self.cfg.client_gw)
        self.neigh.join_groups()
        self.neigh.request(self.neigh.missing(), force=True)
        self.io.update_vips(vips, rips)
        if self.sync is not None:
            self.sync.receiver.set_rules(new)
        self.reloads += 1
        if self.wid == 0 or self.cfg.workers == 1:
            for m in msgs or ["no change"]:
                self.log(f"{tag}: {m}")

    def set_role(self, role: str) -> None:
        """Become the master (forward, answer ARP/ND, announce the addresses, send sync)
        or a backup (forward nothing, answer nothing, take sync), between batches."""
        old = self.role
        if self.sync is not None:
            self.sync.set_role(role)
        if role == old:
            return
        self.role = role
        # a backup does not own --addr: its ARP requests / solicitations go out as probes
        # (sender 0.0.0.0 / ::), else the real servers would learn its MAC for their gateway
        self.neigh.own_addrs = list(self.cfg.addrs) if role == "master" else []
        if self.wid == 0:
            self.neigh.answer = self.cfg.arp_reply and role == "master"
            if role == "master":
                self.neigh.announce()  # gratuitous ARP / unsolicited NA, as at start
                self.announce_at = time.monotonic() + 1.0
            self.log(f"role: {old} -> {role}")

    def run(self, report: Callable[[dict[str, Any]], None], report_every: float = REPORT_EVERY) -> None:
        io, engine, director, neigh, l2 = self.io, self.director.engine, self.director, self.neigh, self.l2
        receive, transmit, process = io.receive, io.transmit, engine.process
        buf, off, caplen, wirelen, ts, linktype, verdict = (  # fixed for the FrameIO's life
            io.buf, io.off, io.caplen, io.wirelen, io.ts, io.linktype, io.verdict)
        sync = self.sync
        sync_bit = 1 << len(self.ifaces)  # the sync receiver's epoll, watched after the ARP sockets
        run = None if PY_LOOP else io.run  # batches in C while the worker is a master
        if run is not None:
            io.bind_engine(engine)
        neigh.announce()
        neigh.refresh()
        t_start = time.monotonic()
        next_report = t_start + report_every
        next_poll = t_start
        try:
            while not self.stop:
                master = self.role == "master"
                if master and run is not None:
                    n = run(100, RUN_BUDGET_NS)
                else:
                    n = receive(100)
                    if n and master:
                        try:
                            process(buf, off[:n], caplen[:n], wirelen[:n], ts[:n], linktype[:n], verdict)
                        except BaseException:
                            io.release()
                            raise
                        transmit(n)
                    elif n:  # a backup forwards nothing (fastvs/live/sync.py)
                        io.release()
                        if sync is not None:
                            sync.counts["backup_dropped"] += n
                if n and master:
                    if director.first_ts is None:
                        director.first_ts = monotonic_ns()
                    director.packets += n
                aux = io.aux_ready
                if aux:
                    neigh.handle(aux)
                    if sync is not None and aux & sync_bit:
                        sync.receiver.poll()
                wanted = l2.take_wanted()
                if wanted:
                    neigh.request(wanted)
                now = time.monotonic()
                if sync is not None:
                    if sync.role == "master":
                        sync.take_events(now)
                    sync.tick(now)
                if self.role_wanted is not None:
                    role, self.role_wanted = self.role_wanted, None
                    self.set_role(role)
                if self.announce_at is not None and now >= self.announce_at:
                    self.announce_at = None
                    neigh.announce()
                if not self.ready and (not neigh.missing() or now - t_start > READY_WAIT):
                    self.ready = True
                    missing = neigh.missing()
                    if missing:
                        self.log(f"warning: no MAC yet for {', '.join(missing)}")
                    report(self.snapshot())
                if now >= next_report:
                    next_report = now + report_every
                    engine.advance(monotonic_ns())
                    neigh.refresh()
                    report(self.snapshot())
                if self.poll is not None and now >= next_poll:
                    next_poll = now + POLL_EVERY
                    self.poll(self)
                if self.hup:
                    self.hup = False
                    if self.on_hup is not None:
                        self.on_hup()
                    else:
                        self.reload()
                if self.pending is not None:
                    pending, self.pending = self.pending, None
                    self.apply(*pending)
                if self.conns_wanted:
                    req, self.conns_wanted = self.conns_wanted, 0
                    snap = self.snapshot()
                    snap["conns"], snap["conns_req"] = director.connections(), req
                    report(snap)
            engine.advance(monotonic_ns())
            if sync is not None:
                sync.close()
            report(self.snapshot(final=True))
        finally:
            if sync is not None:
                sync.close()
            io.close()


__all__ = ["POLL_EVERY", "READY_WAIT", "REPORT_EVERY", "Worker"]
