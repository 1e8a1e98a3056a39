"""fastvs.sync.backup: what ip_vs_proc_conn (ip_vs_sync.c lines 842-947, 6.1.192) builds
from records. The kernel's backup checked the same cases in s3-own
(test_golden_sync.py)."""

from __future__ import annotations

from fastvs.control.rules import parse_rules
from fastvs.sync.backup import BackupTable
from fastvs.sync.proto import F_INACTIVE, F_SEQ_MASK, F_SYNC, F_TEMPLATE, SeqAdj, SyncConn

RULES = parse_rules(
    "-A -t 10.1.0.1:80 -s rr\n"
    "-a -t 10.1.0.1:80 -r 10.2.0.1:8080 -m\n"
    "-a -t 10.1.0.1:80 -r 10.2.0.2:8080 -m\n"
    "-A -t 10.1.0.3:80 -s rr -p 300\n"
    "-a -t 10.1.0.3:80 -r 10.2.0.3:80 -m\n"
    "-A -f 5 -s rr\n"
    "-a -f 5 -r 10.2.0.5:0 -g\n"
    "--set 100 20 30\n"
)


def rec(cport: int = 1000, daddr: str = "10.2.0.1", **kw: object) -> SyncConn:
    base: dict[str, object] = dict(
        protocol=6,
        caddr="10.0.0.1",
        cport=cport,
        vaddr="10.1.0.1",
        vport=80,
        daddr=daddr,
        dport=8080,
        state=1,
        timeout=900,
    )
    base.update(kw)
    return SyncConn(**base)  # type: ignore[arg-type]


def test_create_binds_and_counts() -> None:
    t = BackupTable(RULES)
    assert t.apply(rec(), 0.0) == "created"
    c = t.conns[0]
    assert c.dest is not None and c.dest.addr == "10.2.0.1" and c.dest.activeconns == 1
    assert c.flags & F_SYNC and c.timeout == 900 and c.expires == 900.0
    e = t.entries(10.0)[0]
    assert (e["state"], e["expire"], e["bound"]) == ("ESTABLISHED", 890.0, True)


def test_unbound_when_no_real_server_matches() -> None:
    t = BackupTable(RULES)
    t.apply(rec(daddr="10.9.9.9"), 0.0)
    assert t.conns[0].dest is None and len(t.entries(1.0)) == 1
    t2 = BackupTable()  # no rules at all
    t2.apply(rec(), 0.0)
    assert t2.conns[0].dest is None


def test_update_takes_inactive_and_seq_only() -> None:
    """Lines 874-893: flags &= BACKUP_UPD_MASK | old flags; activeconns follows."""
    t = BackupTable(RULES)
    t.apply(rec(), 0.0)
    d = t.conns[0].dest
    assert d is not None
    assert (
        t.apply(
            rec(
                state=7,
                timeout=60,
                flags=F_INACTIVE | F_SEQ_MASK,
                in_seq=SeqAdj(1, 2, 3),
                out_seq=SeqAdj(),
            ),
            5.0,
        )
        == "updated"
    )
    c = t.conns[0]
    assert c.state == 7 and c.flags & F_INACTIVE and c.in_seq == SeqAdj(1, 2, 3)
    assert (d.activeconns, d.inactconns) == (0, 1)
    assert c.expires == 65.0


def test_other_server_replaces_unless_inactive() -> None:
    """Lines 852-869."""
    t = BackupTable(RULES)
    t.apply(rec(cport=1), 0.0)
    t.apply(rec(cport=2), 0.0)
    assert t.apply(rec(cport=1, daddr="10.2.0.2", flags=F_INACTIVE, state=5), 1.0) == "ignored"
    assert t.apply(rec(cport=2, daddr="10.2.0.2"), 1.0) == "replaced"
    by_port = {c.cport: c.daddr for c in t.conns}
    assert by_port == {1: "10.2.0.1", 2: "10.2.0.2"}


def test_template_is_updated_never_replaced() -> None:
    """Line 871 (ip_vs_ct_in_get): a template found keeps its real server."""
    t = BackupTable(RULES)
    tpl = dict(
        cport=0,
        vaddr="10.1.0.3",
        daddr="10.2.0.3",
        dport=80,
        flags=F_TEMPLATE,
        state=0,
        timeout=300,
    )
    t.apply(rec(**tpl), 0.0)  # type: ignore[arg-type]
    assert t.conns[0].dest is not None and t.conns[0].dest.persistconns == 1
    assert t.apply(rec(**{**tpl, "daddr": "10.2.0.9", "state": 1}), 1.0) == "updated"  # type: ignore[arg-type]
    assert len(t.conns) == 1 and t.conns[0].daddr == "10.2.0.3" and t.conns[0].state == 1
    assert t.entries(1.0)[0]["state"] == "ASSURED"


def test_timeouts_without_one_in_the_record() -> None:
    """Lines 935-945: the state's timeout (with --set), 180 s for templates."""
    t = BackupTable(RULES)
    t.apply(rec(cport=1, timeout=0, version=0), 0.0)  # ES: --set tcp 100
    t.apply(rec(cport=2, timeout=0, state=4, version=0), 0.0)  # FIN_WAIT: --set tcpfin 20
    t.apply(rec(cport=3, timeout=0, state=5, version=0), 0.0)  # TIME_WAIT: 120
    t.apply(rec(cport=4, protocol=17, state=0, timeout=0, version=0), 0.0)  # --set udp 30
    t.apply(rec(cport=0, timeout=0, flags=F_TEMPLATE, state=0, version=0), 0.0)
    assert [c.timeout for c in t.conns] == [100, 20, 120, 30, 180]


def test_expiry_removes_and_uncounts() -> None:
    t = BackupTable(RULES)
    t.apply(rec(timeout=10), 0.0)
    d = t.conns[0].dest
    assert t.expire(9.9) == 0 and t.expire(10.0) == 1
    assert d is not None and d.activeconns == 0 and t.entries(10.0) == []


def test_fwmark_service_binds_port_zero_for_dr() -> None:
    """ip_vs_find_dest: by mark first; port 0 for a mark service not in NAT."""
    t = BackupTable(RULES)
    t.apply(rec(vaddr="10.1.0.77", fwmark=5, dport=8080, daddr="10.2.0.5", flags=3), 0.0)
    c = t.conns[0]
    assert c.dest is not None and c.dest.addr == "10.2.0.5"
    assert c.flags & 7 == 3  # DR, from the real server


def test_random_records_never_break_the_table() -> None:
    """Whatever decodes, the table takes it: counters stay >= 0, entries stay unique
    per (key, template) and expiry empties it."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 3),  # cport
                st.sampled_from(["10.2.0.1", "10.2.0.2", "10.2.0.9", "10.2.0.3"]),
                st.sampled_from([0, F_INACTIVE, F_TEMPLATE, F_TEMPLATE | F_INACTIVE, 3]),
                st.integers(0, 1),
                st.integers(0, 20),  # timeout
                st.sampled_from(["10.1.0.1", "10.1.0.3"]),
            ),
            max_size=40,
        )
    )
    def run(ops: list[tuple[int, str, int, int, int, str]]) -> None:
        t = BackupTable(RULES)
        now = 0.0
        for cport, daddr, flags, state, timeout, vaddr in ops:
            now += 1.0
            if flags & F_TEMPLATE:
                cport = 0  # see test_connection_record_can_hit_a_template for cport != 0
            t.apply(
                rec(
                    cport=cport, daddr=daddr, flags=flags, state=state, timeout=timeout, vaddr=vaddr
                ),
                now,
            )
            for d in t.dests():
                assert d.activeconns >= 0 and d.totalconns >= 0 and d.persistconns >= 0
                assert d.activeconns <= d.totalconns
        t.expire(now + 10_000)
        assert t.conns == []
        assert all((d.activeconns, d.totalconns, d.persistconns) == (0, 0, 0) for d in t.dests())

    run()


def test_same_record_twice_at_one_time() -> None:
    t = BackupTable(RULES)
    t.apply(rec(), 1.0)
    t.apply(rec(), 1.0)
    assert t.expire(901.0) == 1 and t.conns == []


def test_many_records_stay_fast() -> None:
    """Linear: 20000 records (indexed lookups, heap expiry) well under a few seconds."""
    import time

    t = BackupTable(RULES)
    t0 = time.perf_counter()
    for i in range(20000):
        t.apply(rec(cport=i % 5000 + 1, timeout=5), i * 0.001)
    assert time.perf_counter() - t0 < 10
    assert len(t.conns) == 5000


def test_connection_record_can_hit_a_template() -> None:
    """Kernel quirk kept: __ip_vs_conn_in_get (ip_vs_conn.c:263) does not skip
    templates, so a connection record with a template's key (a template with a client
    port, which masters do not send) updates the template and moves the real server's
    activeconns, which nothing moves back."""
    t = BackupTable(RULES)
    t.apply(rec(cport=1, flags=F_TEMPLATE | F_INACTIVE, state=0), 0.0)
    assert t.apply(rec(cport=1, state=1), 1.0) == "updated"
    (c,) = t.conns
    assert c.is_template and not c.flags & F_INACTIVE
    assert c.dest is not None and (c.dest.activeconns, c.dest.persistconns) == (1, 1)


def test_to_array_for_the_engine() -> None:
    t = BackupTable(RULES)
    t.apply(rec(cport=1), 0.0)
    t.apply(rec(cport=2, daddr="10.9.9.9"), 0.0)
    t.apply(
        rec(
            cport=0,
            vaddr="10.1.0.3",
            daddr="10.2.0.3",
            dport=80,
            flags=F_TEMPLATE,
            state=1,
            timeout=300,
        ),
        0.0,
    )
    a = t.to_array(100.0)
    assert len(a) == 3
    assert a["expire_ns"].tolist() == [800 * 10**9, 800 * 10**9, 200 * 10**9]
    assert a["svc"].tolist() == [0, -1, 1] and a["real"].tolist()[1] == -1
    assert RULES.services[0].reals[a["real"][0]].addr == "10.2.0.1"
    assert bytes(a["caddr"][0])[:4] == bytes([10, 0, 0, 1]) and a["in_pkts"].tolist() == [3, 3, 3]
    assert a["flags"][2] & F_TEMPLATE
