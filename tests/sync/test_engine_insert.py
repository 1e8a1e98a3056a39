"""The engine's upsert of sync records (Engine.insert_conns, ip_vs_proc_conn) against
the Python reference (fastvs.sync.backup.BackupTable, checked on the kernel lab's
captures in test_golden_sync.py).

Each record goes to both: the table applies it, the engine gets it as one row (the
record's flags masked as the backup masks them, its state and timeout, the real
server ip_vs_find_dest finds for it, ``in_pkts`` the threshold). After each step the
entries (key, real server, state, INACTIVE, bound, time left) and the real servers'
active / inactive / persistent counters are the same. Sequences: a connection going
ESTABLISHED -> FIN_WAIT (INACTIVE: active -> inactive) and back, the timer refreshed
by a later record, a template updated (state, timer; its real server kept), a
connection replaced by one to another real server and the old one's expiry news
ignored, unbound entries bound by a later record (not by a rules change, as in the
kernel), v0 timeouts, and random sequences.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvs import verdicts as V
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules
from fastvs.sync.backup import BACKUP_CONN_DTYPE, BackupTable, Dest
from fastvs.sync.proto import F_BACKUP_MASK, F_INACTIVE, F_SYNC, F_TEMPLATE, SyncConn
from fastvs.sync.states import state_timeout

from packets import tcp, udp

S = 1_000_000_000
ESTABLISHED, FIN_WAIT, CLOSE_WAIT, TIME_WAIT = 1, 4, 6, 3  # IP_VS_TCP_S_*
RULES_TXT = (
    "-A -t 10.1.0.1:80 -s rr\n"
    "-a -t 10.1.0.1:80 -r 10.2.0.1:8080 -m\n"
    "-a -t 10.1.0.1:80 -r 10.2.0.2:8080 -m\n"
    "-A -u 10.1.0.3:53 -s rr -p 10\n"
    "-a -u 10.1.0.3:53 -r 10.2.0.4:53 -m\n"
    "-a -u 10.1.0.3:53 -r 10.2.0.5:53 -m\n"
)
# the same with a real server the first rules lack
RULES_MORE = RULES_TXT + "-a -t 10.1.0.1:80 -r 10.2.0.9:8080 -m\n"


def _pton16(addr: str) -> bytes:
    return socket.inet_aton(addr) + bytes(12)


def _tcp(
    cport: int = 1000,
    daddr: str = "10.2.0.2",
    state: int = ESTABLISHED,
    flags: int = 0,
    timeout: int = 900,
) -> SyncConn:
    return SyncConn(
        6, "10.0.0.1", cport, "10.1.0.1", 80, daddr, 8080, flags=flags, state=state, timeout=timeout
    )


def _tpl(daddr: str = "10.2.0.4", state: int = 0, flags: int = 0, timeout: int = 10) -> SyncConn:
    return SyncConn(
        17,
        "10.0.0.7",
        0,
        "10.1.0.3",
        53,
        daddr,
        53,
        flags=flags | F_TEMPLATE,
        state=state,
        timeout=timeout,
    )


class Pair:
    """A BackupTable and a Director fed the same records."""

    def __init__(self, rules_txt: str = RULES_TXT, threshold: int = 3) -> None:
        self.rules = parse_rules(rules_txt)
        self.table = BackupTable(self.rules, sync_threshold=threshold)
        self.d = Director(self.rules, seed=3)
        self.threshold = threshold

    def _indexes(self, d: Dest | None) -> tuple[int, int]:
        if d is None:
            return -1, -1
        si = next(i for i, s in enumerate(self.rules.services) if s.key == d.svc.key)
        ri = next(
            j
            for j, rs in enumerate(self.rules.services[si].reals)
            if (rs.addr, rs.port) == (d.addr, d.port)
        )
        return si, ri

    def row(self, r: SyncConn) -> np.ndarray:
        """The record as the engine takes it (ip_vs_proc_conn's arguments)."""
        flags = (r.flags & F_BACKUP_MASK) | F_SYNC
        out = np.zeros(1, BACKUP_CONN_DTYPE)
        out["af"], out["protocol"], out["state"], out["flags"] = r.af, r.protocol, r.state, flags
        out["cport"], out["vport"], out["dport"], out["fwmark"] = (
            r.cport,
            r.vport,
            r.dport,
            r.fwmark,
        )
        for name in ("caddr", "vaddr", "daddr"):
            out[name] = np.void(_pton16(getattr(r, name)))
        timeout = r.timeout or state_timeout(
            r.protocol, r.state, flags, self.table.timeout_overrides
        )
        out["timeout_s"] = r.timeout
        out["expire_ns"] = timeout * S
        out["in_pkts"] = self.threshold
        out["svc"], out["real"] = self._indexes(self.table._find_dest(r))  # type: ignore[arg-type]
        return out

    def record(self, r: SyncConn, t: float) -> str:
        row = self.row(r)
        action = self.table.apply(r, t)
        self.d.insert_sync_conns(row, int(t * S))
        return action

    def reload(self, rules_txt: str) -> None:
        """A rules change on both (as SyncReceiver.set_rules and Director.reload)."""
        self.rules = parse_rules(rules_txt)
        self.table.rules = self.rules
        self.table._dests.clear()
        self.d.reload(self.rules)

    def check(self, t: float) -> None:
        self.d.engine.advance(int(t * S))
        self.table.expire(t)
        want = sorted(
            (
                e["template"],
                e["caddr"],
                e["cport"],
                e["daddr"],
                e["dport"],
                e["state"],
                e["bound"],
                not e["flags"] & F_INACTIVE,
                round(e["expire"] * S),
            )
            for e in self.table.entries(t)
        )
        got = sorted(
            (
                c["template"],
                c["caddr"],
                c["cport"],
                c["daddr"],
                c["dport"],
                c["state"],
                c["dest"] >= 0,
                c["active"],
                c["expires_ns"],
            )
            for c in self.d.engine.connections()
        )
        assert got == want
        assert self.counters() == self.table_counters()

    def counters(self) -> dict[tuple[str, int], tuple[int, int, int]]:
        return {
            (r["addr"], r["port"]): (r["activeconns"], r["inactconns"], r["persistconns"])
            for s in self.d.engine.services()
            for r in s["reals"]
        }

    def table_counters(self) -> dict[tuple[str, int], tuple[int, int, int]]:
        """What the table's bound entries count (its Dest objects of every rules
        generation, summed by address and port)."""
        out = {k: (0, 0, 0) for k in self.counters()}
        for c in self.table.conns:
            if c.dest is None:
                continue
            a, i, p = out.get((c.dest.addr, c.dest.port), (0, 0, 0))
            if c.is_template:
                p += 1
            elif c.flags & F_INACTIVE:
                i += 1
            else:
                a += 1
            out[(c.dest.addr, c.dest.port)] = (a, i, p)
        return out


def test_established_to_fin_wait_moves_the_counters() -> None:
    p = Pair()
    assert p.record(_tcp(), 10.0) == "created"
    p.check(10.0)
    assert p.counters()[("10.2.0.2", 8080)] == (1, 0, 0)
    # FIN_WAIT comes INACTIVE: active -> inactive, its timeout and timer the record's
    assert p.record(_tcp(state=FIN_WAIT, flags=F_INACTIVE, timeout=120), 20.0) == "updated"
    p.check(20.0)
    assert p.counters()[("10.2.0.2", 8080)] == (0, 1, 0)
    c = p.d.lookup("tcp", "10.0.0.1", 1000, "10.1.0.1", 80)
    assert c is not None and c["state"] == "FIN_WAIT" and c["expires_ns"] == 120 * S
    assert p.d.engine.insert_updated == 1 and p.d.engine.conn_count == 1
    # a record without INACTIVE (the master's connection active again) moves it back
    p.record(_tcp(state=ESTABLISHED), 30.0)
    p.check(30.0)
    assert p.counters()[("10.2.0.2", 8080)] == (1, 0, 0)
    # CLOSE_WAIT, TIME_WAIT: one inactive connection throughout
    p.record(_tcp(state=CLOSE_WAIT, flags=F_INACTIVE, timeout=60), 31.0)
    p.record(_tcp(state=TIME_WAIT, flags=F_INACTIVE, timeout=120), 32.0)
    p.check(32.0)
    assert p.counters()[("10.2.0.2", 8080)] == (0, 1, 0)
    p.check(152.0)  # its timer ran out on both
    assert p.d.engine.conn_count == 0 and p.counters()[("10.2.0.2", 8080)] == (0, 0, 0)


def test_a_later_record_refreshes_the_timer() -> None:
    p = Pair()
    p.record(_tcp(timeout=100), 0.0)
    p.record(_tcp(timeout=100), 80.0)  # the master's next sync period
    p.check(150.0)  # past the first timer: still there, 30 s left
    c = p.d.lookup("tcp", "10.0.0.1", 1000, "10.1.0.1", 80)
    assert c is not None and c["expires_ns"] == 30 * S
    p.record(_tcp(timeout=10), 150.0)  # a shorter timer replaces a longer one too
    p.check(155.0)
    p.check(160.0)
    assert p.d.engine.conn_count == 0


def test_a_template_is_updated_and_keeps_its_real_server() -> None:
    p = Pair()
    p.record(_tpl(timeout=10), 0.0)
    p.check(0.0)
    assert p.counters()[("10.2.0.4", 53)] == (0, 0, 1)
    # ASSURED, a new timer; then a record naming another real server: still the first
    p.record(_tpl(state=1, timeout=30), 5.0)
    p.record(_tpl(daddr="10.2.0.5", state=1, timeout=30, flags=F_INACTIVE), 6.0)
    p.check(6.0)
    assert p.counters()[("10.2.0.4", 53)] == (0, 0, 1) and p.counters()[("10.2.0.5", 53)] == (
        0,
        0,
        0,
    )
    assert p.d.engine.insert_updated == 2 and p.d.engine.insert_replaced == 0
    (t,) = p.d.engine.connections()
    assert t["template"] and t["state"] == "ASSURED" and t["daddr"] == "10.2.0.4"
    # persistence still finds it: a new flow of the client goes to its real server
    out, v = p.d.process_packets([udp("10.0.0.7", 6001, "10.1.0.3", 53)], [7 * S])
    assert v == [V.FWD_IN] and socket.inet_ntoa(out[0][30:34]) == "10.2.0.4"


def test_v0_records_take_the_timeout_of_their_state() -> None:
    """A v0 record has no timeout: the protocol's for the state, 180 s for a template
    (ip_vs_proc_conn), the one the entry's next use re-arms its timer with."""
    p = Pair()
    p.record(_tpl(timeout=0), 0.0)
    p.record(_tcp(timeout=0, state=FIN_WAIT, flags=F_INACTIVE), 0.0)
    p.check(0.0)
    c = p.d.lookup("tcp", "10.0.0.1", 1000, "10.1.0.1", 80)
    assert c is not None and c["expires_ns"] == 120 * S
    p.d.process_packets([udp("10.0.0.7", 6001, "10.1.0.3", 53)], [50 * S])
    (t,) = [c for c in p.d.engine.connections() if c["template"]]
    assert t["expires_ns"] == 180 * S  # (the template's timeout, from the row's 0: not 10 s)


def test_a_connection_to_another_real_server_replaces_the_old_one() -> None:
    """ip_vs_sync.c:852-869: found with another real server, the connection is expired
    and made again, unless the record is INACTIVE (the old one's expiry news)."""
    p = Pair()
    p.record(_tcp(daddr="10.2.0.2"), 0.0)
    assert p.record(_tcp(daddr="10.2.0.1"), 1.0) == "replaced"
    p.check(1.0)
    assert p.counters()[("10.2.0.2", 8080)] == (0, 0, 0) and p.counters()[("10.2.0.1", 8080)] == (
        1,
        0,
        0,
    )
    assert p.d.engine.insert_replaced == 1 and p.d.engine.conn_count == 1
    # the old connection's FIN_WAIT arrives late: ignored by both
    skipped = p.d.engine.insert_skipped
    assert p.record(_tcp(daddr="10.2.0.2", state=FIN_WAIT, flags=F_INACTIVE), 2.0) == "ignored"
    assert p.d.engine.insert_skipped == skipped + 1
    p.check(2.0)
    c = p.d.lookup("tcp", "10.0.0.1", 1000, "10.1.0.1", 80)
    assert c is not None and c["daddr"] == "10.2.0.1" and c["state"] == "ESTABLISHED"


def test_unbound_entries_bind_on_a_later_record_not_on_a_rules_change() -> None:
    """No real server matched: the entry is unbound. Adding its real server binds
    nothing (the kernel's ip_vs_add_dest walks no connections); the next record for it
    does (ip_vs_try_bind_dest, called only from ip_vs_proc_conn)."""
    p = Pair()
    p.record(_tcp(daddr="10.2.0.9"), 0.0)
    p.check(0.0)
    (c,) = p.d.engine.connections()
    assert c["dest"] == -1
    p.reload(RULES_MORE)
    p.check(1.0)
    (c,) = p.d.engine.connections()
    assert c["dest"] == -1 and p.counters()[("10.2.0.9", 8080)] == (0, 0, 0)
    # the next record binds it, INACTIVE as the record says
    p.record(_tcp(daddr="10.2.0.9", state=FIN_WAIT, flags=F_INACTIVE, timeout=120), 2.0)
    p.check(2.0)
    (c,) = p.d.engine.connections()
    assert c["dest"] >= 0 and p.counters()[("10.2.0.9", 8080)] == (0, 1, 0)
    # an unbound template binds the same way (persistent count)
    p.record(
        SyncConn(6, "10.0.0.5", 0, "10.1.0.1", 80, "10.2.0.8", 8080, flags=F_TEMPLATE, timeout=60),
        3.0,
    )
    p.reload(RULES_MORE + "-a -t 10.1.0.1:80 -r 10.2.0.8:8080 -m\n")
    p.check(3.0)
    assert p.counters()[("10.2.0.8", 8080)] == (0, 0, 0)
    p.record(
        SyncConn(6, "10.0.0.5", 0, "10.1.0.1", 80, "10.2.0.8", 8080, flags=F_TEMPLATE, timeout=60),
        4.0,
    )
    p.check(4.0)
    assert p.counters()[("10.2.0.8", 8080)] == (0, 0, 1)


def test_bound_by_an_update_it_forwards_to_its_real_server() -> None:
    """Once bound, the entry takes its real server's method (here: direct routing
    where the record said NAT) and its packets count there."""
    p = Pair(RULES_TXT)
    rec = SyncConn(
        6, "10.0.0.1", 1000, "10.1.0.1", 80, "10.2.0.9", 80, state=ESTABLISHED, timeout=900
    )
    p.record(rec, 0.0)
    # (a direct-routing real server's port is the service's: ip_vs_add_dest)
    p.reload(RULES_TXT + "-a -t 10.1.0.1:80 -r 10.2.0.9 -g\n")
    p.record(rec, 1.0)
    p.check(1.0)
    c = p.d.lookup("tcp", "10.0.0.1", 1000, "10.1.0.1", 80)
    assert c is not None and c["dest"] >= 0
    info = p.d.engine.dest_info(c["dest"])
    assert info["fwd"] == "route" and info["activeconns"] == 1
    p.d.process_packets([tcp("10.0.0.1", 1000, "10.1.0.1", 80, "A")], [2 * S])
    assert p.d.engine.dest_info(c["dest"])["stats"]["inpkts"] == 1


KEYS = [1000, 1001, 1002]
REALS = ["10.2.0.1", "10.2.0.2", "10.2.0.9"]  # 10.2.0.9: in no rules (unbound)
TCP_STATES = [ESTABLISHED, FIN_WAIT, CLOSE_WAIT, TIME_WAIT, 2, 5, 7, 8]


@st.composite
def _records(draw: Any) -> list[tuple[float, SyncConn]]:
    out, t = [], 0.0
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.sampled_from([0.0, 0.5, 3.0, 40.0]))
        inactive = F_INACTIVE if draw(st.booleans()) else 0
        timeout = draw(st.sampled_from([0, 5, 60]))
        if draw(st.integers(0, 4)) == 0:
            r = _tpl(
                daddr=draw(st.sampled_from(["10.2.0.4", "10.2.0.5", "10.2.0.9"])),
                state=draw(st.integers(0, 1)),
                flags=inactive,
                timeout=timeout,
            )
        else:
            r = _tcp(
                cport=draw(st.sampled_from(KEYS)),
                daddr=draw(st.sampled_from(REALS)),
                state=draw(st.sampled_from(TCP_STATES)),
                flags=inactive,
                timeout=timeout,
            )
        out.append((t, r))
    return out


@settings(max_examples=300, deadline=None)
@given(recs=_records())
def test_random_sequences_agree_with_the_table(recs: list[tuple[float, SyncConn]]) -> None:
    p = Pair()
    for t, r in recs:
        p.record(r, t)
        p.check(t)


def test_rows_of_the_live_receiver_reach_the_same_table() -> None:
    """The live backup's rows (fastvs.live.sync.conn_rows: the table's entries after
    each record) make the same engine table as the records themselves."""
    from fastvs.live.sync import conn_rows

    p, d2 = Pair(), Director(parse_rules(RULES_TXT), seed=9)
    recs = [
        (0.0, _tcp()),
        (1.0, _tcp(cport=1001, daddr="10.2.0.9")),
        (2.0, _tcp(state=FIN_WAIT, flags=F_INACTIVE)),
        (3.0, _tcp(daddr="10.2.0.1")),
        (4.0, _tpl()),
        (5.0, _tpl(state=1, timeout=20)),
    ]
    for t, r in recs:
        p.record(r, t)
        c = p.table._ct_in_get(r) if r.flags & F_TEMPLATE else p.table._conn_in_get(r)
        assert c is not None
        d2.insert_sync_conns(conn_rows([c], t, p.rules, 3), int(t * S))
    p.check(5.0)
    d2.engine.advance(5 * S)
    key = ("template", "caddr", "cport", "daddr", "dport", "state", "dest", "active", "expires_ns")
    assert sorted(tuple(c[k] for k in key) for c in d2.engine.connections()) == sorted(
        tuple(c[k] for k in key) for c in p.d.engine.connections()
    )
    assert {
        (r["addr"], r["port"]): r["activeconns"] for s in d2.services() for r in s["reals"]
    } == {k: v[0] for k, v in p.counters().items()}


def test_only_the_in_key_finds_the_entry_to_update() -> None:
    """ip_vs_conn_in_get: a connection whose reply key equals a row's key is not the
    row's connection; a cport of 0 finds only a NO_CPORT entry."""
    from fastvs.datapath._engine import Engine
    from fastvs.sync.proto import F_NO_CPORT

    e = Engine(64, seed=2)
    rows = np.zeros(2, BACKUP_CONN_DTYPE)
    rows["af"], rows["protocol"], rows["state"], rows["flags"] = 4, 6, ESTABLISHED, F_SYNC
    rows["expire_ns"], rows["timeout_s"] = 60 * S, 60
    rows["svc"] = rows["real"] = -1
    # row 1's reply (10.2.0.2:8080 -> 10.0.0.1:1000) is row 2's in key
    for i, (c, cp, v, vp, dd, dp) in enumerate(
        [
            ("10.0.0.1", 1000, "10.1.0.1", 80, "10.2.0.2", 8080),
            ("10.2.0.2", 8080, "10.0.0.1", 1000, "10.3.0.3", 80),
        ]
    ):
        rows[i]["caddr"], rows[i]["vaddr"], rows[i]["daddr"] = (
            np.void(_pton16(c)),
            np.void(_pton16(v)),
            np.void(_pton16(dd)),
        )
        rows[i]["cport"], rows[i]["vport"], rows[i]["dport"] = cp, vp, dp
    assert e.insert_conns(rows, S) == 2 and e.conn_count == 2
    assert e.insert_conns(rows[1:], 2 * S) == 1
    assert e.conn_count == 2 and e.insert_updated == 1 and e.insert_replaced == 0
    # cport 0 finds a NO_CPORT entry (the entry's flag decides, not the row's), and a
    # real cport does not find it
    nc = rows[:1].copy()
    nc["cport"], nc["flags"] = 0, F_SYNC | F_NO_CPORT
    e.insert_conns(nc, 3 * S)
    e.insert_conns(nc, 3 * S)
    assert e.conn_count == 3 and e.insert_updated == 2
    nc["flags"] = F_SYNC
    e.insert_conns(nc, 3 * S)
    assert e.conn_count == 3 and e.insert_updated == 3
    # an entry without NO_CPORT whose cport is 0 is not found by a cport of 0
    plain = rows[1:].copy()
    plain["cport"] = 0
    e.insert_conns(plain, 4 * S)
    e.insert_conns(plain, 4 * S)
    assert e.conn_count == 5 and e.insert_updated == 3
