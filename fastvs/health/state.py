"""keepalived's health-check state machine, without I/O or clocks.

:class:`HealthState` holds, for every checker of a :class:`KeepalivedConfig`, whether it
is up and how many retries it has used; for every real server whether it is alive and its
effective weight; for every virtual server whether it has its quorum and whether its sorry
server is in. :meth:`HealthState.report` takes one check's result and returns the delay
before that checker's next attempt and the transitions it caused; it keeps a
:class:`~fastvs.control.rules.Rules` — the IPVS table the checks imply — up to date with
ipvsadm-style edits, as keepalived's checker process drives IPVS.

The rules, from keepalived's sources (check_api.c, check_tcp.c, check_http.c,
check_misc.c, check_data.c ``validate_check_config``, ipwrapper.c):

- a checker that has never run needs one failure to go down (``retry_it = retry`` at
  start); after that it goes down on the ``retry + 1``-th failure in a row, the attempts
  ``delay_before_retry`` apart; a success sets it up at once and resets the count;
- attempts are ``delay_loop`` apart otherwise. While a checker is down, TCP_CHECK goes on
  retrying at ``delay_before_retry`` (tcp_epilog), HTTP_GET/SSL_GET wait the larger of the
  two (epilog, REGISTER_CHECKER_FAILED), MISC_CHECK waits ``delay_loop``;
- the first attempt waits a random part of ``warmup`` (register_checkers_thread);
- ``alpha`` checkers start down, and so does their real server;
- a real server is alive when all its checkers are up. Alive: in the service with its
  weight; not alive: out of it, or in with weight 0 with ``inhibit_on_failure``;
- MISC_CHECK with ``misc_dynamic``: exit 0 is up, 1 down, 2-255 up with weight
  ``code - 2`` (update_svr_wgt);
- quorum (update_quorum_state): the sum of the alive servers' weights. With quorum up,
  it is lost when the sum is 0 or below ``quorum - hysteresis``; with it down, it is
  regained at ``quorum + hysteresis`` or more (the start uses ``quorum + hysteresis``).
  While it is down the ``sorry_server`` is in the service and the alive servers are out
  (at weight 0 with inhibit_on_failure); ``sorry_server_inhibit`` keeps an unused sorry
  server at weight 0.

Checker kinds fastvs does not run keep the state they start in.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastvs.control.keepalived import (
    CheckerConfig,
    KeepalivedConfig,
    RealServerConfig,
    VirtualServerConfig,
)
from fastvs.control.rules import Order, RealServer, Rules, VirtualService

__all__ = ["CheckResult", "CheckerState", "copy_rules", "diff_rules", "Edit", "HealthState", "ServerState", "ServiceState",
           "Transition"]  # fmt: skip

_FWD_OPT = {"masq": "-m", "route": "-g", "tunnel": "-i"}


@dataclass(frozen=True)
class CheckResult:
    """One attempt of one checker: passed or not, why (a phrase naming what was tried,
    e.g. ``"connect to 10.1.0.1:80 timed out after 3 s"``), and for misc_dynamic the
    weight its exit code asks for."""

    ok: bool
    detail: str
    weight: int | None = None


@dataclass(frozen=True)
class Edit:
    """One ipvsadm-style change of the table: ``op`` is ``-a`` (add), ``-e`` (edit) or
    ``-d`` (delete) of a real server; after a reload also ``-A`` / ``-D`` of a service
    (``options`` then holds the ``-s ...`` part). ``service`` is the ipvsadm spec
    (``-t 10.0.0.1:80``)."""

    op: str
    service: str
    server: str = ""
    fwd: str = "masq"
    weight: int = 0
    options: str = ""

    def line(self) -> str:
        """The ipvsadm command line (without ``ipvsadm``), as ``ipvsadm -R`` reads it."""
        if self.op == "-D":
            return f"-D {self.service}"
        if self.op == "-A":
            return f"-A {self.service} {self.options}".rstrip()
        if self.op == "-d":
            return f"-d {self.service} -r {self.server}"
        line = f"{self.op} {self.service} -r {self.server} {_FWD_OPT[self.fwd]} -w {self.weight}"
        return f"{line} {self.options}".rstrip()


@dataclass(frozen=True)
class Transition:
    """A change of state, logged as one line: when (wall-clock seconds), which service and
    real server, the state before and after, and why."""

    time: float
    service: str
    server: str
    old: str
    new: str
    why: str

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.time))
        frac = f"{self.time % 1:.3f}"[1:]
        return f"{stamp}{frac}Z {self.service} {self.server}: {self.old} -> {self.new}: {self.why}"


@dataclass(eq=False)
class CheckerState:
    config: CheckerConfig
    server: ServerState
    is_up: bool = True
    has_run: bool = False
    retry_it: int = 0
    failures: int = 0  # consecutive failed attempts
    attempts: int = 0
    last: str = "not run yet"
    last_ok: bool | None = None

    @property
    def name(self) -> str:
        return f"{self.config.kind} {self.config.target()}"


@dataclass(eq=False)
class ServerState:
    config: RealServerConfig
    service: ServiceState
    weight: int
    alive: bool = True
    checkers: list[CheckerState] = field(default_factory=list)
    last_change: Transition | None = None

    @property
    def name(self) -> str:
        return self.config.name(self.service.config.port())


@dataclass(eq=False)
class ServiceState:
    config: VirtualServerConfig
    servers: list[ServerState] = field(default_factory=list)
    quorum_up: bool = True
    sorry_in: bool = False
    targets: list[VirtualService] = field(default_factory=list)  # its kernel services

    @property
    def name(self) -> str:
        return self.config.name()

    def live_weight(self) -> int:
        return sum(s.weight for s in self.servers if s.alive)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class HealthState:
    """Every checker's, real server's and virtual server's state, and the IPVS table they
    imply (:attr:`rules`). Not thread-safe: one thread reports, others read copies."""

    def __init__(self, config: KeepalivedConfig, order: Order = "kernel",
                 wall: Callable[[], float] = time.time):
        self.config = config
        self.wall = wall
        self.rules: Rules = config.initial_rules(order)
        self.services: list[ServiceState] = []
        self.edits: list[Edit] = []  # applied since the last take_edits()
        self.generation = 0
        for vs in config.services:
            svc = ServiceState(vs)
            for rs in vs.servers:
                srv = ServerState(rs, svc, weight=rs.weight or 0)
                for c in rs.checkers:
                    # alpha: the checker starts failed (validate_check_config); one failure
                    # is enough before a checker has run
                    srv.checkers.append(CheckerState(c, srv, is_up=not c.alpha, retry_it=c.retry))
                srv.alive = all(c.is_up for c in srv.checkers)
                svc.servers.append(srv)
            # set_quorum_states, then update_quorum_state(init): the sorry server goes in
            # when the start is below quorum + hysteresis
            svc.quorum_up = svc.live_weight() >= vs.quorum + vs.hysteresis
            svc.sorry_in = vs.sorry is not None and not svc.quorum_up
            svc.targets = self._find_targets(vs)
            self.services.append(svc)
        # the table initial_rules built must be the one the states imply
        for svc in self.services:
            self._sync(svc)
        self.edits.clear()

    # -- reading ---------------------------------------------------------------------

    def checkers(self) -> Iterator[CheckerState]:
        for svc in self.services:
            for srv in svc.servers:
                yield from srv.checkers

    def copy_rules(self) -> Rules:
        return copy_rules(self.rules)

    def take_edits(self) -> list[Edit]:
        out, self.edits = self.edits, []
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        """Every real server's state, for listings (``fastvs check``, ``ctl health``) and
        metrics: ``service``, ``server``, ``up``/``state``, ``weight`` (effective),
        ``in_table`` (its weight in the table, None when out), ``changed`` (Unix time of
        its last transition, 0: never), ``why`` (that transition's reason, else the last
        check's result), ``last_transition`` (the log line), ``quorum`` and
        ``checkers`` (kind, target, state, attempts, failures, last result)."""
        out: list[dict[str, Any]] = []
        for svc in self.services:
            for srv in svc.servers:
                last = srv.last_change
                why = last.why if last else next(
                    (c.last for c in srv.checkers if c.last_ok is not None), "")
                out.append({
                    "service": svc.name,
                    "server": srv.name,
                    "up": srv.alive,
                    "state": "up" if srv.alive else "down",
                    "changed": last.time if last else 0.0,
                    "why": why,
                    "weight": srv.weight,
                    "in_table": self._table_weight(svc, srv.config),
                    "quorum": "up" if svc.quorum_up else "down",
                    "checkers": [{
                        "kind": c.config.kind,
                        "target": c.config.target(),
                        "state": "up" if c.is_up else "down",
                        "run": c.config.supported,
                        "attempts": c.attempts,
                        "failures": c.failures,
                        "last": c.last,
                    } for c in srv.checkers],
                    "last_transition": last.line() if last else None,
                })  # fmt: skip
        return out

    def _table_weight(self, svc: ServiceState, rs: RealServerConfig) -> int | None:
        for vs in self._targets(svc):
            cur = vs.find_server(rs.addr, _port(vs, rs))
            return None if cur is None else cur.weight
        return None

    # -- timing ----------------------------------------------------------------------

    @staticmethod
    def first_delay(checker: CheckerState, rng: random.Random | None = None) -> float:
        """The random warmup before a checker's first attempt."""
        r = (rng or random).random()
        return checker.config.warmup * r

    # -- results ---------------------------------------------------------------------

    def report(self, checker: CheckerState, result: CheckResult) -> tuple[float, list[Transition]]:
        """Apply one attempt's result. Returns (seconds until the checker's next attempt,
        the transitions it caused); :attr:`rules` and :attr:`edits` follow."""
        c = checker.config
        srv = checker.server
        svc = srv.service
        out: list[Transition] = []
        checker.attempts += 1
        checker.last = result.detail
        checker.last_ok = result.ok
        if result.ok:
            checker.failures = 0
            checker.retry_it = 0
            if c.misc_dynamic and result.weight is not None and result.weight != srv.weight:
                self._set_weight(srv, result.weight, f"{checker.name}: {result.detail}", out)
            if not checker.is_up or not checker.has_run:
                checker.has_run = True
                self._checker_state(checker, True, f"{checker.name}: {result.detail}", out)
            delay = c.delay_loop
        else:
            checker.failures += 1
            can_retry = checker.is_up or not checker.has_run or c.kind == "TCP_CHECK"
            if can_retry and checker.retry_it < c.retry:
                checker.retry_it += 1
                delay = c.delay_before_retry
            else:
                checker.retry_it = 0
                if checker.is_up or not checker.has_run:
                    checker.has_run = True
                    why = f"{c.kind} {result.detail}, {_ordinal(checker.failures)} failure"
                    self._checker_state(checker, False, why, out)
                delay = c.delay_loop
                if c.kind in ("HTTP_GET", "SSL_GET") and not checker.is_up:
                    delay = max(c.delay_loop, c.delay_before_retry)
        checker.has_run = True
        if out:
            self._sync(svc)
            self.generation += 1
        return delay, out

    def _checker_state(self, checker: CheckerState, up: bool, why: str,
                       out: list[Transition]) -> None:
        checker.is_up = up
        srv = checker.server
        alive = all(c.is_up for c in srv.checkers)
        if alive == srv.alive:
            return
        srv.alive = alive
        svc = srv.service
        rs = srv.config
        if alive:
            new = "up" if not svc.sorry_in else "up (held out: the sorry server is in)"
        else:
            new = "down (weight 0)" if rs.inhibit else "down (removed)"
            if svc.sorry_in:
                new = "down"
        self._note(srv, "down" if alive else "up", new, why, out)
        self._quorum(svc, out)

    def _set_weight(self, srv: ServerState, weight: int, why: str, out: list[Transition]) -> None:
        old, srv.weight = srv.weight, weight
        self._note(srv, f"weight {old}", f"weight {weight}", why, out)
        self._quorum(srv.service, out)

    def _note(self, srv: ServerState, old: str, new: str, why: str,
              out: list[Transition]) -> None:
        t = Transition(self.wall(), srv.service.name, srv.name, old, new, why)
        srv.last_change = t
        out.append(t)

    def _quorum(self, svc: ServiceState, out: list[Transition]) -> None:
        vs = svc.config
        ws = svc.live_weight()
        if svc.quorum_up:
            threshold = vs.quorum - vs.hysteresis
            if ws and ws >= threshold:
                return
            svc.quorum_up = False
            what = f"live weight {ws} < quorum {vs.quorum} - hysteresis {vs.hysteresis}" \
                if ws else "live weight 0"
            if vs.sorry is not None and not svc.sorry_in:
                svc.sorry_in = True
                what += f"; sorry server {_sorry_name(vs)} in, alive servers out"
            out.append(Transition(self.wall(), svc.name, "(quorum)", "up", "down", what))
        else:
            threshold = vs.quorum + vs.hysteresis
            if ws < threshold:
                return
            svc.quorum_up = True
            what = f"live weight {ws} >= quorum {vs.quorum} + hysteresis {vs.hysteresis}"
            if vs.sorry is not None and svc.sorry_in:
                svc.sorry_in = False
                what += f"; sorry server {_sorry_name(vs)} out, alive servers back"
            out.append(Transition(self.wall(), svc.name, "(quorum)", "down", "up", what))

    # -- the table -------------------------------------------------------------------

    def desired(self, svc: ServiceState) -> list[tuple[RealServerConfig, int]]:
        """The (server, weight) members each of the service's kernel services should have."""
        vs = svc.config
        sorry_active = vs.sorry is not None and svc.sorry_in
        members: list[tuple[RealServerConfig, int]] = []
        for srv in svc.servers:
            if srv.alive and not sorry_active:
                members.append((srv.config, srv.weight))
            elif srv.config.inhibit:
                members.append((srv.config, 0))
        if vs.sorry is not None:
            if sorry_active:
                members.append((vs.sorry, vs.sorry.weight or 0))
            elif vs.sorry_inhibit:
                members.append((vs.sorry, 0))
        return members

    def _targets(self, svc: ServiceState) -> list[VirtualService]:
        return svc.targets

    def _find_targets(self, vs: VirtualServerConfig) -> list[VirtualService]:
        out: list[VirtualService] = []
        for kind, addr, num in vs.targets:
            if kind == "fwmark":
                spec = f"-f {num}" + (" -6" if vs.family == 6 else "")
            else:
                proto = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}[vs.protocol or "udp"]
                spec = f"{proto} [{addr}]:{num}" if ":" in addr else f"{proto} {addr}:{num}"
            found = self.rules.find_service(spec)
            if found is not None:
                out.append(found)
        return out

    def _sync(self, svc: ServiceState) -> None:
        """Bring the service's kernel services to :meth:`desired`, recording the edits:
        deletions first, then additions (at the list's head) and weight edits in the
        service's real-server order."""
        members = self.desired(svc)
        for target in self._targets(svc):
            want: dict[tuple[str, int], tuple[RealServerConfig, int]] = {}
            for rs, w in members:
                want.setdefault((rs.addr, _port(target, rs)), (rs, w))
            spec = target.spec()
            have = {rs.key: rs for rs in target.reals}
            for key, cur in have.items():
                if key not in want:
                    self.rules.delete_server(target, cur.addr, cur.port)
                    self.edits.append(Edit("-d", spec, cur.addrport()))
            for key, (rs, w) in want.items():
                old = have.get(key)
                if old is None:
                    new = self.rules.add_server(target, rs.addr, key[1], weight=w,
                                                fwd=rs.fwd or "masq", u_threshold=rs.u_threshold,
                                                l_threshold=rs.l_threshold)
                    self.edits.append(Edit("-a", spec, new.addrport(), new.fwd, w,
                                           _thresholds(new)))
                elif old.weight != w:
                    self.rules.edit_server(target, key[0], key[1], weight=w)
                    self.edits.append(Edit("-e", spec, old.addrport(), old.fwd, w,
                                           _thresholds(old)))
        self.rules.events.clear()  # Rules logs every command; this table lives for days


    # -- reload ----------------------------------------------------------------------

    def migrate(self, old: HealthState) -> list[Transition]:
        """Carry the state of ``old`` (the running configuration) into this fresh one, as
        keepalived's reload does (ipwrapper.c clear_diff_services, migrate_checkers):
        a service and real server found again keep their alive state and weight; a
        checker found again (same kind and target) keeps its state and retry count; new
        checkers of a server that is failing start failed if alpha; new real servers
        start as at start-up. Afterwards :attr:`rules` is the table, and :attr:`edits`
        the edits that take ``old.rules`` to it. Returns the transitions of real servers
        whose state in the table changed."""
        old_svcs = {_svc_key(s.config): s for s in old.services}
        out: list[Transition] = []
        for svc in self.services:
            prev = old_svcs.get(_svc_key(svc.config))
            if prev is None:
                continue
            prev_srv = {(s.config.addr, s.config.port or 0): s for s in prev.servers}
            for srv in svc.servers:
                before = prev_srv.get((srv.config.addr, srv.config.port or 0))
                if before is None:
                    continue
                _migrate_server(srv, before)
            svc.quorum_up = prev.quorum_up
            svc.sorry_in = svc.config.sorry is not None and not svc.quorum_up
            self._quorum(svc, out)
        for svc in self.services:
            self._sync(svc)
        self.edits = diff_rules(old.rules, self.rules)
        self.generation = old.generation + 1
        return out


def _svc_key(vs: VirtualServerConfig) -> tuple[Any, ...]:
    """keepalived's vs_iseq: the group's name, or the firewall mark, or the address."""
    if vs.group is not None:
        return ("group", vs.group, vs.port())
    return ("vs", tuple(vs.targets), vs.protocol if vs.targets[0][0] != "fwmark" else None,
            vs.family)


def _checker_key(c: CheckerConfig) -> tuple[Any, ...]:
    """What keepalived's compare functions compare: the kind and its connection, urls or
    command."""
    urls = tuple((u.path, u.status_codes, u.digest, u.virtualhost) for u in c.urls)
    return (c.kind, c.connect_ip, c.connect_port, c.bindto, c.bind_port, c.connect_timeout,
            urls, c.virtualhost, tuple(c.misc_path))


def _migrate_server(srv: ServerState, before: ServerState) -> None:
    if (before.config.weight or 0) == (srv.config.weight or 0):
        srv.weight = before.weight  # keeps a misc_dynamic weight
    unused = list(before.checkers)
    for c in srv.checkers:
        for o in unused:
            if _checker_key(o.config) == _checker_key(c.config):
                unused.remove(o)
                if o.has_run:
                    c.is_up = o.is_up
                c.has_run = o.has_run
                c.failures, c.attempts, c.last, c.last_ok = o.failures, o.attempts, o.last, o.last_ok
                if not c.is_up:
                    c.retry_it = c.config.retry  # one more failure is enough
                else:
                    c.retry_it = min(o.retry_it, c.config.retry)
                break
    failed = any(c.has_run and not c.is_up for c in srv.checkers)
    if failed or (not before.alive and not any(c.has_run for c in srv.checkers)):
        for c in srv.checkers:
            if not c.has_run:
                if c.config.alpha:
                    c.is_up = False
                c.retry_it = c.config.retry
    srv.alive = all(c.is_up for c in srv.checkers)
    srv.last_change = before.last_change


def diff_rules(old: Rules, new: Rules) -> list[Edit]:
    """The ipvsadm edits that take ``old`` to ``new``: services removed, real servers
    removed, added and re-weighted, services added with their real servers."""
    out: list[Edit] = []
    new_keys = {s.key for s in new.services}
    for svc in old.services:
        if svc.key not in new_keys:
            out.append(Edit("-D", svc.spec()))
    old_by_key = {s.key: s for s in old.services}
    for svc in new.services:
        spec = svc.spec()
        prev = old_by_key.get(svc.key)
        if prev is None:
            out.append(Edit("-A", spec, options=_service_options(svc)))
            for rs in svc.file_list():
                out.append(Edit("-a", spec, rs.addrport(), rs.fwd, rs.weight, _thresholds(rs)))
            continue
        have = {rs.key: rs for rs in prev.reals}
        want = {rs.key for rs in svc.reals}
        for key, rs in have.items():
            if key not in want:
                out.append(Edit("-d", spec, rs.addrport()))
        for rs in svc.file_list():
            cur = have.get(rs.key)
            if cur is None:
                out.append(Edit("-a", spec, rs.addrport(), rs.fwd, rs.weight, _thresholds(rs)))
            elif (cur.weight, cur.fwd, cur.u_threshold, cur.l_threshold) != \
                    (rs.weight, rs.fwd, rs.u_threshold, rs.l_threshold):
                out.append(Edit("-e", spec, rs.addrport(), rs.fwd, rs.weight, _thresholds(rs)))
    return out


def _service_options(svc: VirtualService) -> str:
    line = f"-s {svc.scheduler}"
    if svc.persistent is not None:
        line += f" -p {svc.persistent}"
        if svc.netmask is not None:
            line += f" -M {svc.netmask}"
    if svc.ops:
        line += " -o"
    if svc.sched_flags:
        line += " -b " + ",".join(svc.sched_flags)
    return line


def _thresholds(rs: RealServer) -> str:
    out = f"-x {rs.u_threshold}" if rs.u_threshold else ""
    if rs.l_threshold:
        out += f" -y {rs.l_threshold}"
    return out.strip()


def copy_rules(src: Rules) -> Rules:
    """A copy of ``src`` its receiver owns: services, lists and real servers copied (a
    deepcopy costs ten times more with hundreds of servers)."""
    out = Rules(order=src.order, source=src.source)
    out.timeouts = copy.copy(src.timeouts)
    for svc in src.services:
        dup = copy.copy(svc)
        dup.reals = [RealServer(rs.addr, rs.port, rs.weight, rs.fwd, rs.u_threshold,
                                rs.l_threshold) for rs in svc.reals]
        dup.add_order = list(svc.add_order)
        dup.sched_flags = tuple(svc.sched_flags)
        out.services.append(dup)
    return out


def _port(vs: VirtualService, rs: RealServerConfig) -> int:
    """The port a real server has in a kernel service (Rules.add_server's rule)."""
    if vs.proto != "fwmark" and rs.fwd in ("route", "tunnel"):
        return vs.port
    return rs.port if rs.port else vs.port


def _sorry_name(vs: VirtualServerConfig) -> str:
    assert vs.sorry is not None
    return vs.sorry.name(vs.port())
