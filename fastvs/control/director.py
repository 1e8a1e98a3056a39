"""Director: an IPVS director built from rules, fed packet batches.

The Python face of the engine (the role ip_vs_ctl.c plays for the kernel): it turns a
:class:`~fastvs.control.rules.Rules` into engine services and real servers in the order the
kernel would have built them, runs batches, and reports listings, connections and
per-reason packet counts as plain Python data.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import numpy as np

from fastvs import sched as _sched
from fastvs import verdicts as V
from fastvs.capture.batch import PacketBatch
from fastvs.control.estimator import RATE_KEYS, TICK_NS, RateEstimator
from fastvs.control.rules import Event, RealServer, Rules, VirtualService
from fastvs.datapath._engine import DEFAULT_TCP_TIMEOUTS, Engine
from fastvs.datapath._xmit import encap_tunnel, set_dr_macs
from fastvs.errors import EngineError, OptionError, RulesError

DEFAULT_CAPACITY = 1 << 20
# ip_vs_dest_trash_expire: a removed real server without connections is freed from the
# trash after IP_VS_DEST_TRASH_PERIOD (120 s) of idleness, noticed by a timer that runs
# every 60 s: 180 s after its removal when it had no connections left
TRASH_FREE_NS = 180 * 1_000_000_000
MAX_CAPACITY = 1 << 30  # the connection table's bound (the engine refuses more)
MIN_TUNNEL_MTU = 68  # RFC 791: every IPv4 link carries 68 bytes
MAX_TUNNEL_MTU = 65535
DEFENSE_MODES = (0, 1, 2, 3)  # the kernel's sysctls: off, automatic, (automatic, on), always
TRUNCATED_MODES = ("balance", "drop")


def _est_key(entry: dict[str, Any], service: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The rate estimator's key of an engine listing entry: a service's, or (with its
    service's key) a real server's."""
    if service:
        return (*service, entry["index"], entry["addr"], entry["port"])
    return (entry["index"], entry["proto"], entry["fwmark"], entry["addr"], entry["port"])


class Director:
    """An LVS director in user space.

    ``capacity`` bounds the connection table (a full table drops new connections,
    counted as ``drop_conn_full``); ``seed`` fixes the table's hash key (default:
    random per process, as the kernel's). ``keep_ttl`` leaves TTL alone instead of
    decrementing it as the forwarding path does; ``director_view`` treats traffic that
    IPVS does not take as the director's own stack would (addressed to a VIP: delivered
    locally, i.e. dropped from the output; anything else: routed with TTL - 1) instead
    of writing it unchanged; ``truncated`` says what to do with packets a snap length
    cut short: ``"balance"`` them by their headers (default) or ``"drop"`` them.

    Flood defenses (the kernel's sysctls, driven by the share of free connection slots
    instead of free memory): ``drop_entry`` (default 1: while fewer than ``amemthresh``
    slots — default capacity/8 — are free, each second of traffic removes half-open TCP
    entries found in a random 1/32 of the table) and ``drop_packet`` (default 0; 1 or 3
    refuse one new connection in N, N growing as the table fills) and ``secure_tcp``
    (default 0; 1 or 3 switch to the kernel's tcp_states_dos table, where only the real
    server's answer moves a half-open connection on).

    ``sloppy_tcp`` (the kernel's net.ipv4.vs.sloppy_tcp, default off): any TCP segment
    without RST may make a connection, not only a SYN (tcp_conn_schedule), e.g. to
    take over flows another director started.
    """

    def __init__(
        self,
        rules: Rules,
        *,
        capacity: int = DEFAULT_CAPACITY,
        seed: int | None = None,
        keep_ttl: bool = False,
        director_view: bool = False,
        truncated: str = "balance",
        expire_nodest_conn: bool = False,
        expire_quiescent_template: bool = False,
        conn_reuse_mode: int = 1,
        marks: list[tuple[int, str, Any, int]] | None = None,
        neigh: dict[str, str] | None = None,
        tunnel_source: str | None = None,
        tunnel_mtu: int = 1500,
        drop_entry: int = 1,
        drop_packet: int = 0,
        secure_tcp: int = 0,
        amemthresh: int | None = None,
        sloppy_tcp: bool = False,
    ) -> None:
        check_options(capacity=capacity, seed=seed, truncated=truncated, tunnel_mtu=tunnel_mtu,
                      tunnel_source=tunnel_source, drop_entry=drop_entry,
                      drop_packet=drop_packet, secure_tcp=secure_tcp,
                      conn_reuse_mode=conn_reuse_mode, amemthresh=amemthresh)
        try:
            self.engine = Engine(capacity, seed)
        except MemoryError:
            raise EngineError(f"cannot allocate a connection table for {capacity} connections "
                              "(try a smaller --capacity)") from None
        self.engine.set_options(
            keep_ttl=keep_ttl,
            director_view=director_view,
            truncated=truncated,
            expire_nodest_conn=expire_nodest_conn,
            expire_quiescent_template=expire_quiescent_template,
            conn_reuse_mode=conn_reuse_mode,
            tunnel_mtu=tunnel_mtu,
            drop_entry=drop_entry,
            drop_packet=drop_packet,
            secure_tcp=secure_tcp,
            amemthresh=amemthresh,
            sloppy_tcp=sloppy_tcp,
        )
        if marks:
            self.engine.set_marks(marks)
        self.rules = rules
        self._svc_index: dict[Any, int] = {}
        self._dest_index: dict[tuple[Any, tuple[str, int]], int] = {}
        # removed real servers (the kernel's dest_trash): (service key, server key) ->
        # (engine index, removal time in ns or None before the first packet)
        self._trash: dict[tuple[Any, tuple[str, int]], tuple[int, int | None]] = {}
        self._svc_settings: dict[Any, VirtualService] = {}
        self.first_ts: int | None = None
        self.packets = 0
        # ip_vs_est.c: one estimator per service and real server, ticked every 2 s of
        # packet time from the first packet; keyed so that a new service starts afresh
        # and a real server back from the trash keeps its own (the kernel revives it)
        self._est: dict[tuple[Any, ...], RateEstimator] = {}
        self._next_tick: int | None = None
        self._neigh = {ipaddress.ip_address(k): v for k, v in (neigh or {}).items()}
        self._pending: list[tuple[int, Rules]] = []
        self._pending_raw: list[tuple[int, bool, Rules]] = []
        self.reload_log: list[tuple[int, str]] = []
        self._tunnel_source = tunnel_source
        self._apply(rules)
        self._xmit_tables()

    # -- configuration ---------------------------------------------------------------
    def _apply(self, rules: Rules) -> None:
        """Build the engine as ``ipvsadm -R`` builds the kernel's tables: one command
        at a time, in file order (-a, -e, -d, -A, -E, -D, -C), each with the settings
        it gave then, so that scheduler state follows every intermediate step (wrr's
        weights after each change, mh's last non-zero weight per server). Rules whose
        command history does not describe them (services edited by hand afterwards)
        are built from their final state instead."""
        t = rules.timeouts
        self.engine.set_timeouts(t.tcp, t.tcpfin, t.udp)
        if _history_matches(rules):
            for ev in rules.events:
                self._command(ev)
            return
        for svc in rules.services:
            self._add_service(svc)

    def _command(self, ev: Event) -> None:
        """One ipvsadm command (a rules-file line) applied to the engine."""
        key = ev.service
        if ev.op == "add_service":
            assert ev.settings is not None
            self._add_service(ev.settings, servers=False)
        elif ev.op == "edit_service":
            assert ev.settings is not None
            self._edit_service(ev.settings)
        elif ev.op == "delete_service":
            self._delete_service(key)
        elif ev.op == "clear":
            for k in list(self._svc_index):
                self._delete_service(k)
        elif ev.op == "add_server":
            assert ev.real is not None
            svc = self._svc_settings[key]
            self._add_dest(svc, self._svc_index[key], ev.real)
        elif ev.op == "edit_server":
            assert ev.real is not None
            rs = ev.real
            self.engine.edit_dest(self._dest_index[(key, rs.key)], weight=rs.weight,
                                  u_threshold=rs.u_threshold, l_threshold=rs.l_threshold,
                                  fwd=rs.fwd)
        elif ev.op == "delete_server":
            assert ev.server is not None
            self._remove_dest(key, ev.server)

    def _add_service(self, svc: VirtualService, servers: bool = True) -> None:
        where = f"service {svc.spec()}"
        ops = self._sched_ops(svc, where)
        idx = self.engine.add_service(
            svc.proto, svc.addr, svc.port, ops, svc.persistent or 0, svc.flags,
            svc.fwmark, svc.netmask_value,
        )
        self._svc_index[svc.key] = idx
        self._svc_settings[svc.key] = svc
        if servers:
            for rs, _ in svc.replay():
                self._add_dest(svc, idx, rs)

    def _sched_ops(self, svc: VirtualService, where: str) -> Any:
        try:
            return _sched.get(svc.scheduler)
        except KeyError:
            raise RulesError(
                f"{where}: scheduler {svc.scheduler!r} is not implemented yet "
                f"(available: {', '.join(_sched.available())})",
                line=svc.line,
            ) from None

    def _edit_service(self, svc: VirtualService) -> None:
        """ip_vs_edit_service: flags (-p, -o, -b), timeout and -M at once; another
        scheduler is bound anew."""
        ops = self._sched_ops(svc, f"service {svc.spec()}")
        self.engine.edit_service(self._svc_index[svc.key], ops, svc.persistent or 0, svc.flags,
                                 svc.netmask_value)
        self._svc_settings[svc.key] = svc

    def _delete_service(self, key: Any) -> None:
        """ip_vs_del_service: its real servers go to the trash."""
        for skey, rkey in [k for k in self._dest_index if k[0] == key]:
            self._trash[(skey, rkey)] = (self._dest_index.pop((skey, rkey)), self._clock())
        self.engine.remove_service(self._svc_index.pop(key))
        del self._svc_settings[key]

    def _remove_dest(self, key: Any, rkey: tuple[str, int]) -> None:
        di = self._dest_index.pop((key, rkey))
        self.engine.remove_dest(di)
        self._trash[(key, rkey)] = (di, self._clock())

    def _clock(self) -> int | None:
        return self.engine.now if self.first_ts is not None else None

    def _from_trash(self, key: Any, rkey: tuple[str, int]) -> int | None:
        """ip_vs_trash_get_dest: the removed real server, if the kernel would still
        hold it (it has connections, or was removed less than 180 s ago)."""
        got = self._trash.pop((key, rkey), None)
        if got is None:
            return None
        di, removed_at = got
        info = self.engine.dest_info(di)
        idle = info["activeconns"] + info["inactconns"] + info["persistconns"] == 0
        if idle and removed_at is not None and self.engine.now - removed_at >= TRASH_FREE_NS:
            return None
        return di

    def _add_dest(self, svc: VirtualService, svc_idx: int, rs: RealServer) -> None:
        if rs.family != svc.family and rs.fwd != "tunnel":
            raise RulesError(f"real server {rs.addrport()}: address family differs from the service's",
                             line=svc.line)
        di = self._from_trash(svc.key, rs.key)
        if di is not None:
            self.engine.restore_dest(di, svc_idx, rs.weight, rs.fwd, rs.u_threshold,
                                     rs.l_threshold, svc.link_at_head)
        else:
            di = self.engine.add_dest(
                svc_idx,
                rs.addr,
                rs.port or svc.port,
                rs.weight,
                rs.fwd,
                rs.u_threshold,
                rs.l_threshold,
                svc.link_at_head,
            )
        self._dest_index[(svc.key, rs.key)] = di

    def _xmit_tables(self) -> None:
        """What the output stage needs for -g and -i real servers."""
        self._needs_xmit = any(rs.fwd in ("route", "tunnel") for svc in self.rules.services for rs in svc.reals)
        if not self._needs_xmit:
            return
        self._dest_addr, self._dest_af = self.engine.dest_table()
        n = len(self._dest_af)
        self._dest_mac = np.zeros((n, 6), dtype=np.uint8)
        self._has_mac = np.zeros(n, dtype=np.uint8)
        for i in range(n):
            raw = bytes(self._dest_addr[i])
            ip = ipaddress.ip_address(raw[:4] if self._dest_af[i] == 4 else raw)
            mac = self._neigh.get(ip)
            if mac:
                self._dest_mac[i] = np.frombuffer(bytes.fromhex(mac.replace(":", "").replace("-", "")), np.uint8)
                self._has_mac[i] = 1
        src4, src6 = "0.0.0.0", "::"
        vips4 = [s.addr for s in self.rules.services if s.proto != "fwmark" and s.family == 4]
        vips6 = [s.addr for s in self.rules.services if s.proto != "fwmark" and s.family == 6]
        if self._tunnel_source:
            if ipaddress.ip_address(self._tunnel_source).version == 4:
                src4 = self._tunnel_source
            else:
                src6 = self._tunnel_source
        else:
            src4 = vips4[0] if vips4 else src4
            src6 = vips6[0] if vips6 else src6
        self._src4 = np.frombuffer(ipaddress.IPv4Address(src4).packed, np.uint8).copy()
        self._src6 = np.frombuffer(ipaddress.IPv6Address(src6).packed, np.uint8).copy()

    # -- data path ---------------------------------------------------------------------
    def process(self, batch: PacketBatch) -> int:
        """Run one batch in place; fills ``batch.verdict``. Returns packets written.

        Rules scheduled with :meth:`rules_at` take effect before the first packet whose
        timestamp reaches their time (the engine's clock, which never runs backwards)."""
        n = len(batch)
        if n and self.first_ts is None:
            self.first_ts = int(batch.ts[0])
            self._next_tick = self.first_ts + TICK_NS
            self._pending = sorted((self.first_ts + off if rel else off, rules)
                                   for off, rel, rules in self._pending_raw)
        self.packets += n
        aux = np.empty(n, dtype=np.int32) if self._needs_xmit or self._pending else None
        written = 0
        start = 0
        if self._pending and n:
            clock = np.maximum.accumulate(batch.ts)
            while self._pending:
                at, rules = self._pending[0]
                cut = int(np.searchsorted(clock, at, side="left"))
                if cut >= n:
                    break
                if cut > start:
                    written += self._run(batch, start, cut, aux)
                    start = cut
                self._pending.pop(0)
                for line in self.reload(rules):
                    self.reload_log.append((at, line))
                if aux is None and self._needs_xmit:
                    aux = np.empty(n, dtype=np.int32)
        written += self._run(batch, start, n, aux)
        if aux is not None and self._needs_xmit:
            if np.any(batch.verdict == V.FWD_DR):
                set_dr_macs(batch.buf, batch.off, batch.caplen, batch.linktype, batch.verdict, aux,
                            self._dest_mac, self._has_mac)
            if np.any(batch.verdict == V.FWD_TUN):
                batch.buf, batch.off, batch.caplen, batch.wirelen = encap_tunnel(
                    batch.buf, batch.off, batch.caplen, batch.wirelen, batch.linktype, batch.verdict, aux,
                    self._dest_addr, self._dest_af, self._src4, self._src6,
                )
        return written

    def _run(self, b: PacketBatch, lo: int, hi: int, aux: np.ndarray | None) -> int:
        """Packets lo..hi, with the rate estimator's ticks (every 2 s) between the
        packets before a tick's time and those at or after it, as its timer fires."""
        if hi <= lo or self._next_tick is None:
            return self._run_engine(b, lo, hi, aux)
        last = max(int(b.ts[lo:hi].max()), self.engine.now)
        if last < self._next_tick:
            return self._run_engine(b, lo, hi, aux)
        clock = np.maximum.accumulate(np.maximum(b.ts[lo:hi], self.engine.now))
        written = 0
        while self._next_tick <= last:
            cut = lo + int(np.searchsorted(clock, self._next_tick, side="left"))
            if cut > lo:
                written += self._run_engine(b, lo, cut, aux)
                clock = clock[cut - lo:]
                lo = cut
            self._tick(int(clock[0]) if lo < hi else last)
        return written + self._run_engine(b, lo, hi, aux)

    def _tick(self, quiet_until: int) -> None:
        """One tick; then, once every average is 0, skip the ticks up to ``quiet_until``
        (the next packet's time): with no counter moving they change nothing, and a
        capture with an hour's gap would otherwise run 1800 of them."""
        busy = self._estimate()
        self._next_tick += TICK_NS
        if not busy and self._next_tick <= quiet_until:
            self._next_tick += ((quiet_until - self._next_tick) // TICK_NS + 1) * TICK_NS

    def _estimate(self) -> bool:
        """One ``estimation_timer`` (ip_vs_est.c:96) over the live services and servers;
        whether any average is still above 0."""
        busy = False
        for s in self.engine.services():
            skey = _est_key(s)
            keyed = [(skey, s["stats"])]
            keyed += [(_est_key(r, skey), r["stats"]) for r in s["reals"]]
            for key, stats in keyed:
                est = self._est.setdefault(key, RateEstimator())
                est.tick(stats)
                busy = busy or any(est.avg)
        return busy

    def _run_engine(self, b: PacketBatch, lo: int, hi: int, aux: np.ndarray | None) -> int:
        if hi <= lo:
            return 0
        try:
            if lo == 0 and hi == len(b):
                return self.engine.process(b.buf, b.off, b.caplen, b.wirelen, b.ts, b.linktype,
                                           b.verdict, aux)
            return self.engine.process(
                b.buf, b.off[lo:hi], b.caplen[lo:hi], b.wirelen[lo:hi], b.ts[lo:hi],
                b.linktype[lo:hi], b.verdict[lo:hi], None if aux is None else aux[lo:hi],
            )
        except (ValueError, TypeError) as e:  # a batch the engine cannot take: a bug upstream
            raise EngineError(f"the engine refused a batch of {hi - lo} packets: {e}") from e

    # -- connection sync (ip_vs_sync.c) ---------------------------------------------------
    def enable_sync_master(
        self,
        *,
        version: int = 1,
        threshold: int = 3,
        period: int = 50,
        refresh_period: int = 0,
        retries: int = 0,
        persist_mode: bool = False,
    ) -> None:
        """Act as a sync master (the kernel's sync daemon with its sysctls): after every
        batch, :meth:`take_sync_events` gives the connection records a master sends,
        for :class:`fastvs.sync.master.SyncMaster`. Bad values raise OptionError."""
        checks = (("sync_version", version, 0, 1), ("sync_threshold", threshold, 0, 2**31 - 1),
                  ("sync_period", period, 0, 2**31 - 1), ("sync_retries", retries, 0, 3),
                  ("sync_refresh_period", refresh_period, 0, 86400 * 365))
        for name, val, lo, hi in checks:
            _int_option(name, val, lo, hi)
        if period and threshold >= period:
            raise OptionError("sync_threshold",
                              f"the threshold ({threshold}) must be below the period ({period}), "
                              "or the period 0")
        self.engine.set_sync(True, version=version, threshold=threshold, period=period,
                             refresh_period=refresh_period, retries=retries,
                             persist_mode=bool(persist_mode))

    def disable_sync_master(self) -> None:
        self.engine.set_sync(None)

    def take_sync_events(self) -> np.ndarray:
        """The sync records since the last call (fastvs.sync.master.SYNC_EVENT_DTYPE)."""
        return self.engine.take_sync_events()

    def insert_sync_conns(self, rows: np.ndarray, now_ns: int) -> int:
        """Start with the connections a backup holds (``--sync-in``): ``rows`` of
        fastvs.sync.backup.BACKUP_CONN_DTYPE (``BackupTable.to_array``), whose ``svc`` /
        ``real`` index this director's ``rules.services[svc].reals[real]`` (-1:
        unbound: forwarded by the entry's own address, port and method, counted on no
        real server). ``expire_ns`` is the time left at ``now_ns`` (the engine's clock
        moves there). An entry the engine holds is updated as ``ip_vs_proc_conn``
        updates it (Engine.insert_conns: an upsert). Returns how many rows were taken,
        made or updated (the rest: ``engine.insert_skipped``)."""
        from fastvs.sync.backup import BACKUP_CONN_DTYPE

        if rows.dtype != BACKUP_CONN_DTYPE:
            raise TypeError("rows must be of fastvs.sync.backup.BACKUP_CONN_DTYPE")
        out = np.array(rows, dtype=BACKUP_CONN_DTYPE, copy=True).reshape(-1)
        svcs = self.rules.services
        for i in range(len(out)):
            si, ri = int(out["svc"][i]), int(out["real"][i])
            esvc = edest = -1
            if 0 <= si < len(svcs):
                svc = svcs[si]
                esvc = self._svc_index.get(svc.key, -1)
                if 0 <= ri < len(svc.reals):
                    edest = self._dest_index.get((svc.key, svc.reals[ri].key), -1)
            out["svc"][i] = esvc
            out["real"][i] = edest
        return int(self.engine.insert_conns(out, int(now_ns)))

    # -- rules changes ---------------------------------------------------------------------
    def rules_at(self, when_ns: int, rules: Rules, *, relative: bool = True) -> None:
        """Apply ``rules`` (as :meth:`reload` does) at ``when_ns``: nanoseconds after the
        first packet (``relative``) or an absolute packet timestamp."""
        if self.first_ts is not None:
            self._pending.append((self.first_ts + when_ns if relative else when_ns, rules))
            self._pending.sort(key=lambda x: x[0])
        else:
            self._pending_raw.append((when_ns, relative, rules))

    def reload(self, new: Rules) -> list[str]:
        """Bring the director to ``new`` rules without dropping connections, as a
        sequence of ipvsadm commands would: services added, edited (-E: persistence,
        -M, -o, -b and the scheduler take effect at once) or deleted (-D: it stops
        matching; its packets find a port-zero service or none), real servers added,
        edited in place (weight 0 drains: no new connections, existing ones go on) or
        removed. A removed real server goes to the kernel's trash: added again, it
        comes back with its connections and counters (ip_vs_trash_get_dest). With
        expire_nodest_conn, a removed server's connections are flushed at once.
        Returns one line per change."""
        eng = self.engine
        msgs: list[str] = []
        old_by_key = {s.key: s for s in self.rules.services}
        new_keys = {s.key for s in new.services}
        eff = new.timeouts.effective()
        eng.set_timeouts(eff.tcp, eff.tcpfin, eff.udp)
        for key, old in old_by_key.items():
            if key not in new_keys:
                self._delete_service(key)
                msgs.append(f"removed service {old.spec()}: it no longer matches; its real "
                            "servers are in the trash")
        for svc in new.services:
            if svc.key not in self._svc_index:
                self._add_service(svc)
                msgs.append(f"added service {svc.spec()} ({len(svc.reals)} real servers)")
                continue
            si = self._svc_index[svc.key]
            cur = self._svc_settings[svc.key]
            changed = [name for name in ("scheduler", "persistent", "netmask", "ops", "sched_flags")
                       if getattr(cur, name) != getattr(svc, name)]
            if changed:
                self._edit_service(svc)
                what = " ".join(f"{n} {getattr(cur, n)}->{getattr(svc, n)}" for n in changed)
                msgs.append(f"{svc.spec()}: edited {what}")
            wanted = {rs.key for rs in svc.reals}
            for (skey, rkey) in [k for k in self._dest_index if k[0] == svc.key]:
                if rkey not in wanted:
                    self._remove_dest(skey, rkey)
                    msgs.append(f"{svc.spec()}: removed real server {rkey[0]}:{rkey[1]}")
            for rs, _ in svc.replay():
                di = self._dest_index.get((svc.key, rs.key))
                if di is None:
                    self._add_dest(svc, si, rs)
                    msgs.append(f"{svc.spec()}: added real server {rs.addrport()} weight {rs.weight}")
                    continue
                info = eng.dest_info(di)
                changes = {k: getattr(rs, k) for k in ("weight", "u_threshold", "l_threshold", "fwd")
                           if info[k] != getattr(rs, k)}
                if changes:
                    eng.edit_dest(di, **changes)
                    what = " ".join(f"{k} {info[k]}->{v}" for k, v in changes.items())
                    msgs.append(f"{svc.spec()}: real server {rs.addrport()} {what}")
        self.rules = new
        self._xmit_tables()
        return msgs

    def process_packets(self, frames: list[bytes], ts_ns: list[int] | None = None,
                        linktype: int = 1) -> tuple[list[bytes], list[int]]:
        """Convenience for small jobs and tests: frames in, (frames out, verdicts)."""
        b = PacketBatch.from_packets(frames, ts_ns, linktype)
        self.process(b)
        return [b.packet(i) for i in range(len(b))], [int(v) for v in b.verdict]

    # -- reading state -------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Packets per verdict name (``fwd_in``, ``drop_ttl``, ...)."""
        return {V.name(code): n for code, n in sorted(self.engine.counters().items())}

    def summary(self) -> dict[str, Any]:
        c = self.engine.counters()
        written = sum(n for code, n in c.items() if code < V.DROP_BASE)
        dropped = sum(n for code, n in c.items() if code >= V.DROP_BASE)
        return {
            "packets_in": self.packets,
            "packets_out": written,
            "dropped": dropped,
            "forwarded_in": c.get(V.FWD_IN, 0),
            "forwarded_dr": c.get(V.FWD_DR, 0),
            "forwarded_tun": c.get(V.FWD_TUN, 0),
            "forwarded_out": c.get(V.FWD_OUT, 0),
            "passed": sum(n for code, n in c.items() if code < V.FWD_IN),
            "drops": {V.name(code): n for code, n in sorted(c.items()) if code >= V.DROP_BASE},
            "passes": {V.name(code): n for code, n in sorted(c.items()) if code < V.FWD_IN},
            "connections": self.engine.conn_count,
            "defense_entries_dropped": self.engine.entries_dropped,
        }

    def _with_rates(self, stats: dict[str, int], key: tuple[Any, ...]) -> dict[str, int]:
        """The counters with the estimator's rates as of its last tick (ip_vs_copy_stats
        reads ip_vs_read_estimator): zero before the first tick, as for a new service."""
        out = dict(stats)
        est = self._est.get(key)
        out.update(est.read() if est is not None else dict.fromkeys(RATE_KEYS, 0))
        return out

    def services(self) -> list[dict[str, Any]]:
        """Services in the shape fastvs.control.listing formats (``ipvsadm -L -n``). Rates are
        the kernel's estimator (fastvs.control.estimator) as of its last 2-second tick."""
        # ticks the clock passed without a packet (engine.advance, as the live worker
        # calls it): the counters have not moved since, so they are the tick's
        while self._next_tick is not None and self._next_tick <= self.engine.now:
            self._tick(self.engine.now)
        out = []
        by_index = {idx: key for key, idx in self._svc_index.items()}
        rules_by_key = {s.key: s for s in self.rules.services}
        for s in self.engine.services():
            key = by_index.get(s["index"])
            rs = rules_by_key.get(key) if key is not None else None
            skey = _est_key(s)
            s["stats"] = self._with_rates(s["stats"], skey)
            s["persistent"] = rs.persistent if rs else None
            s["netmask"] = rs.netmask if rs else None
            for r in s["reals"]:
                r["stats"] = self._with_rates(r["stats"], _est_key(r, skey))
            out.append(s)
        return out

    def connections(self) -> list[dict[str, Any]]:
        """Live connections and persistence templates (``ipvsadm -L -n -c``), ``expire``
        in whole seconds left."""
        conns = self.engine.connections()
        for c in conns:
            c["expire"] = c["expires_ns"] // 1_000_000_000
        return conns

    def lookup(self, proto: str, caddr: str, cport: int, vaddr: str, vport: int) -> dict[str, Any] | None:
        return self.engine.lookup(proto, caddr, cport, vaddr, vport)

    @property
    def timeouts(self) -> dict[str, int]:
        return self.engine.timeouts()


def _history_matches(rules: Rules) -> bool:
    """Whether replaying ``rules.events`` gives ``rules.services``: the same services
    with the same settings and real servers in the same order."""
    svcs: dict[Any, tuple[VirtualService, list[RealServer]]] = {}
    for ev in rules.events:
        if ev.op in ("add_service", "edit_service"):
            if ev.settings is None or (ev.op == "edit_service" and ev.service not in svcs):
                return False
            svcs[ev.service] = (ev.settings, svcs[ev.service][1] if ev.op == "edit_service" else [])
        elif ev.op == "delete_service":
            svcs.pop(ev.service, None)
        elif ev.op == "clear":
            svcs.clear()
        elif ev.op in ("add_server", "edit_server", "delete_server"):
            if ev.service not in svcs:
                return False
            settings, reals = svcs[ev.service]
            if ev.op == "add_server":
                if ev.real is None:
                    return False
                if settings.link_at_head:
                    reals.insert(0, ev.real)
                else:
                    reals.append(ev.real)
                continue
            at = [i for i, r in enumerate(reals) if r.key == ev.server]
            if not at:
                return False
            if ev.op == "delete_server":
                del reals[at[0]]
            elif ev.real is None:
                return False
            else:
                reals[at[0]] = ev.real
    if [s.key for s in rules.services] != list(svcs):
        return False
    for s in rules.services:
        settings, reals = svcs[s.key]
        if reals != s.reals or any(getattr(settings, n) != getattr(s, n) for n in (
                "scheduler", "persistent", "netmask", "ops", "sched_flags", "link_at_head")):
            return False
    return True


def _int_option(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OptionError(name, f"must be a whole number, not {value!r}")
    v = int(value)
    if lo is not None and hi is not None and not lo <= v <= hi:
        raise OptionError(name, f"must be between {lo} and {hi}, not {v}")
    if lo is not None and v < lo:
        raise OptionError(name, f"must be at least {lo}, not {v}")
    return v


def check_options(
    *,
    capacity: Any = DEFAULT_CAPACITY,
    seed: Any = None,
    truncated: Any = "balance",
    tunnel_mtu: Any = 1500,
    tunnel_source: Any = None,
    drop_entry: Any = 1,
    drop_packet: Any = 0,
    secure_tcp: Any = 0,
    conn_reuse_mode: Any = 1,
    amemthresh: Any = None,
) -> None:
    """Refuse, with an :class:`~fastvs.errors.OptionError` naming the option, every value
    :class:`Director` (and its engine) cannot take. The ``fastvs`` command shows the
    option as its flag: ``fastvs: --capacity: must be between 1 and 1073741824, not 0``."""
    _int_option("capacity", capacity, 1, MAX_CAPACITY)
    if seed is not None:
        _int_option("seed", seed)  # any integer: only its low 64 bits key the hash
    if truncated not in TRUNCATED_MODES:
        raise OptionError("truncated", f"must be {' or '.join(TRUNCATED_MODES)}, not {truncated!r}")
    _int_option("tunnel_mtu", tunnel_mtu, MIN_TUNNEL_MTU, MAX_TUNNEL_MTU)
    if tunnel_source is not None:
        try:
            ipaddress.ip_address(tunnel_source)
        except ValueError:
            raise OptionError("tunnel_source", f"not an IP address: {tunnel_source!r}") from None
    for name, val in (("drop_entry", drop_entry), ("drop_packet", drop_packet),
                      ("secure_tcp", secure_tcp)):
        if _int_option(name, val) not in DEFENSE_MODES:
            raise OptionError(name, f"must be 0 (off), 1 (automatic) or 3 (always), not {val}")
    _int_option("conn_reuse_mode", conn_reuse_mode, 0, 3)
    if amemthresh is not None:
        _int_option("amemthresh", amemthresh, 1, MAX_CAPACITY)


def parse_marks(text: str, source: str = "<marks>") -> list[tuple[int, str, Any, int]]:
    """A firewall-mark classifier file: one ``MARK PROTO NETWORK [PORT]`` per line
    (``1 tcp 10.10.0.0/24 80``; PROTO tcp, udp or any; no PORT or 0 for any port),
    standing for iptables ``-t mangle -A PREROUTING ... -j MARK --set-mark MARK``
    rules; as with those, the last matching line decides a packet's mark."""
    import ipaddress

    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        try:
            if len(line) not in (3, 4):
                raise ValueError("expected MARK PROTO NETWORK [PORT]")
            mark = int(line[0], 0)
            if not 0 < mark < 2**32:
                raise ValueError(f"mark {mark} out of range")
            proto = line[1].lower()
            if proto not in ("tcp", "udp", "any"):
                raise ValueError(f"protocol {line[1]!r} (tcp, udp or any)")
            net = ipaddress.ip_network(line[2], strict=False)
            port = int(line[3]) if len(line) == 4 else 0
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} out of range")
        except ValueError as e:
            raise RulesError(str(e), source=source, line=n) from None
        out.append((mark, proto, net, port))
    return out


def parse_neigh(text: str, source: str = "<neigh>") -> dict[str, str]:
    """A neighbour file: ``IP MAC`` per line (``192.168.0.10 02:52:c0:a8:00:0a``), the
    MAC addresses direct routing sends real servers' frames to."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        try:
            if len(line) != 2:
                raise ValueError("expected IP MAC")
            ip = str(ipaddress.ip_address(line[0]))
            mac = line[1].lower().replace("-", ":")
            if len(bytes.fromhex(mac.replace(":", ""))) != 6:
                raise ValueError(f"bad MAC address {line[1]!r}")
        except ValueError as e:
            raise RulesError(str(e), source=source, line=n) from None
        out[ip] = mac
    return out


def verdict_counts(verdicts: np.ndarray) -> dict[str, int]:
    """Count a verdict array by name (for tests and reports)."""
    codes, counts = np.unique(verdicts, return_counts=True)
    return {V.name(int(c)): int(n) for c, n in zip(codes, counts, strict=True)}


__all__ = ["Director", "DEFAULT_CAPACITY", "DEFAULT_TCP_TIMEOUTS", "MAX_CAPACITY", "check_options", "parse_marks", "parse_neigh", "verdict_counts"]
