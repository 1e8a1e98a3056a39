"""fastvs.sync.policy against the kernel source: each test names the function and the
lines it pins (Debian linux-source-6.1, 6.1.192: net/netfilter/ipvs/ip_vs_sync.c unless
said otherwise; ip_vs_core.c for ip_vs_in_hook). test_golden_sync.py checks the same
code against the kernel's own datagrams.
"""

from __future__ import annotations

import pytest

from fastvs.sync.policy import (
    Batcher,
    ConnSync,
    SyncSysctls,
    on_input_packet,
    sync_conn,
    sync_conn_needed,
)
from fastvs.sync.proto import (
    F_INACTIVE,
    F_ONE_PACKET,
    F_TEMPLATE,
    MessageBuilder,
    SyncConn,
    decode_message,
)

HZ = 250
TCP, UDP, SCTP = 6, 17, 132
NONE, ES, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK = range(9)
D = SyncSysctls()


def conn(proto: int = TCP, state: int = ES, now: int = 1000, **kw: object) -> ConnSync:
    c = ConnSync.new(proto, now, HZ, **kw)
    c.state = state
    c.timeout = 900 * HZ
    return c


def drive(c: ConnSync, states: list[int], s: SyncSysctls = D) -> list[int]:
    """Feed input packets (state after each) and return the packet numbers that sent."""
    out = []
    for i, st in enumerate(states, 1):
        c.state = st
        if on_input_packet(s, c, now=1000 + i):
            out.append(i)
    return out


def test_defaults_are_the_kernels() -> None:
    """include/net/ip_vs.h DEFAULT_SYNC_THRESHOLD 3, DEFAULT_SYNC_PERIOD 50,
    DEFAULT_SYNC_REFRESH_PERIOD 0, DEFAULT_SYNC_RETRIES 0, DEFAULT_SYNC_VER 1."""
    assert (D.sync_threshold, D.sync_period, D.sync_refresh_period, D.sync_retries) == (3, 50, 0, 0)
    assert D.sync_version == 1 and D.sync_persist_mode == 0


def test_tcp_sends_only_in_sync_states() -> None:
    """ip_vs_sync_conn_needed lines 475-481: TCP in ES, FIN_WAIT, CLOSE, CLOSE_WAIT,
    TIME_WAIT only: SYN_RECV / SYN_SENT / LAST_ACK never, whatever the count."""
    for st in (NONE, SYN_SENT, SYN_RECV, LAST_ACK):
        assert drive(conn(state=st), [st] * 60) == []


def test_established_is_sent_at_threshold_then_every_period() -> None:
    """Lines 482-485: entering ES is forced but not at once (no goto set);
    lines 520-525: pkts % sync_period == sync_threshold -> packets 3, 53, 103."""
    c = conn(state=SYN_RECV)
    assert drive(c, [SYN_RECV, ES] + [ES] * 108) == [3, 53, 103]


def test_state_change_out_of_established_is_sent_at_once() -> None:
    """Lines 482-485: force && state != ES -> goto set, whatever pkts."""
    c = conn(state=SYN_RECV)
    states = [SYN_RECV, ES, ES, ES, CLOSE_WAIT, CLOSE_WAIT, TIME_WAIT, TIME_WAIT]
    assert drive(c, states) == [3, 5, 7]


def test_old_state_only_moves_when_sent() -> None:
    """Line 531 (set: old_state = state): an ES reached at packet 2 is still a change
    at packet 3 (old_state stayed NONE), so the record goes."""
    c = conn(state=NONE)
    c.state = ES
    assert sync_conn_needed(D, c, 2, 1000) is False and c.old_state == NONE
    assert sync_conn_needed(D, c, 3, 1000) is True and c.old_state == ES


def test_udp_is_never_forced() -> None:
    """Lines 497-500: UDP has one state, never forced: packets 3, 53, ..."""
    assert drive(conn(UDP, state=0), [0] * 60) == [3, 53]


def test_sctp_states() -> None:
    """Lines 486-496: SCTP ES and the shutdown states and CLOSED."""
    c = conn(SCTP, state=1)
    assert drive(c, [1, 7, 8, 8, 9, 13]) == [3, 5, 6]


def test_sync_period_zero_sends_once_at_threshold() -> None:
    """Lines 526-528: sync_period 0 and no refresh period: only pkts == threshold."""
    s = SyncSysctls(sync_period=0)
    assert drive(conn(UDP, state=0), [0] * 60, s) == [3]


def test_threshold_must_be_below_period() -> None:
    """proc_do_sync_threshold (ip_vs_ctl.c): threshold < period unless period is 0."""
    with pytest.raises(ValueError):
        SyncSysctls(sync_threshold=50, sync_period=50)
    SyncSysctls(sync_threshold=5, sync_period=0)


def test_one_packet_connections_are_never_sent() -> None:
    """ip_vs_in_hook (ip_vs_core.c lines 2098-2101): pkts = threshold for ONE_PACKET;
    ip_vs_sync_conn lines 646-647: not sent, but the template still is (goto control)."""
    tpl = conn(UDP, state=0, flags=F_TEMPLATE)
    c = conn(UDP, state=0, flags=F_ONE_PACKET)
    c.control = tpl
    sent = on_input_packet(D, c, 1000)
    assert sent == [tpl] and c.in_pkts == 0 and tpl.in_pkts == 1


def test_one_packet_v0_skips_the_template_too() -> None:
    """ip_vs_sync_conn_v0 lines 552-554: return before the control walk."""
    tpl = conn(UDP, state=0, flags=F_TEMPLATE)
    c = conn(UDP, state=0, flags=F_ONE_PACKET)
    c.control = tpl
    assert on_input_packet(SyncSysctls(sync_version=0), c, 1000) == []


def test_templates_go_with_every_input_packet_v1() -> None:
    """ip_vs_sync_conn lines 773-780 (control: walked whether or not the connection
    was sent) with lines 470-472 and 522-523 (a template is never held back by
    the packet count): the template goes with every input packet."""
    tpl = conn(TCP, state=0, flags=F_TEMPLATE | F_INACTIVE)
    c = conn(TCP, state=SYN_RECV)
    c.control = tpl
    seen = []
    for i, st in enumerate([SYN_RECV, ES, ES, CLOSE_WAIT, TIME_WAIT], 1):
        c.state = st
        seen.append(["c" if x is c else "t" for x in on_input_packet(D, c, 1000 + i)])
    assert seen == [["t"], ["t"], ["c", "t"], ["c", "t"], ["c", "t"]]
    assert tpl.in_pkts == 5


def test_templates_go_only_after_their_connection_v0() -> None:
    """ip_vs_sync_conn_v0 lines 556-557 (return when not needed) and 612-621."""
    s = SyncSysctls(sync_version=0)
    tpl = conn(TCP, state=0, flags=F_TEMPLATE | F_INACTIVE)
    c = conn(TCP, state=SYN_RECV)
    c.control = tpl
    seen = []
    for i, st in enumerate([SYN_RECV, ES, ES, CLOSE_WAIT, TIME_WAIT], 1):
        c.state = st
        seen.append(len(on_input_packet(s, c, 1000 + i)))
    assert seen == [0, 0, 2, 2, 2]


def test_v0_never_sends_ipv6() -> None:
    """ip_vs_sync_conn_v0 lines 549-550."""
    c = conn(af=6)
    assert sync_conn(SyncSysctls(sync_version=0), c, 3, 1000) == []
    assert sync_conn(D, c, 3, 1000) == [c]


def test_persist_mode_holds_back_connections_under_a_template() -> None:
    """Lines 442-449 (in_persistence) and 473-474: with sync_persist_mode only the
    template is sent."""
    s = SyncSysctls(sync_persist_mode=1)
    tpl = conn(TCP, state=0, flags=F_TEMPLATE)
    c = conn(TCP, state=SYN_RECV)
    c.control = tpl
    for i, st in enumerate([SYN_RECV, ES, ES, CLOSE_WAIT], 1):
        c.state = st
        assert on_input_packet(s, c, 1000 + i) == [tpl]
    free = conn(TCP, state=SYN_RECV)
    assert drive(free, [SYN_RECV, ES, ES], s) == [3]


def test_refresh_period_rate_limits_and_retries() -> None:
    """Lines 502-519: with sync_refresh_period a record is skipped while the end time
    moved less than min(refresh, max(timeout/2, 10 s)); up to sync_retries retries,
    each at least refresh/8 after the last send (count in sync_endtime & 3)."""
    s = SyncSysctls(sync_period=0, sync_refresh_period=60, sync_retries=1)
    c = conn(UDP, state=0, now=0)
    c.timeout = 300 * HZ
    c.sync_endtime = 0
    # the end time moves 300 s past orig: |diff| >= refresh -> send
    assert sync_conn_needed(s, c, 1, now=1 * HZ) is True
    sent_at = c.sync_endtime
    # 2 s later: |diff| = 2 s < 60 s -> a retry, but refresh/8 = 7.5 s has not passed
    assert sync_conn_needed(s, c, 2, now=3 * HZ) is False
    # 10 s after the send: retry 1 allowed, marked in the low bits
    assert sync_conn_needed(s, c, 3, now=11 * HZ) is True
    assert c.sync_endtime & 3 == 1 and c.sync_endtime != sent_at
    # retries exhausted (sync_retries = 1)
    assert sync_conn_needed(s, c, 4, now=30 * HZ) is False
    # 70 s on, the end time moved more than the refresh period: sent again
    assert sync_conn_needed(s, c, 5, now=80 * HZ) is True


def test_refresh_period_alone_sends_without_the_count() -> None:
    """Line 526: with a refresh period, sync_period 0 does not require pkts ==
    threshold."""
    s = SyncSysctls(sync_period=0, sync_refresh_period=10)
    c = conn(UDP, state=0, now=0)
    c.sync_endtime = 0
    assert sync_conn_needed(s, c, 7, now=HZ) is True


def test_new_connection_fields() -> None:
    """ip_vs_conn_new (ip_vs_conn.c lines 1000-1003): state 0, old_state 0, timeout
    3 s, sync_endtime = jiffies & ~3."""
    c = ConnSync.new(TCP, 1003, HZ)
    assert (c.state, c.old_state, c.timeout, c.sync_endtime) == (0, 0, 3 * HZ, 1000)


def _rec(i: int) -> SyncConn:
    return SyncConn(6, "10.0.0.1", i, "10.1.0.1", 80, "10.2.0.1", 8080, state=1, timeout=900)


def test_batcher_sends_full_messages_at_once_and_partial_after_2s() -> None:
    """ip_vs_sync_conn lines 686-700 (a full buffer is queued, sb_queue_tail) and
    next_sync_buff line 1682 (the current buffer once IPVS_SYNC_FLUSH_TIME = 2 s old)."""
    b = Batcher(MessageBuilder(7))
    for i in range(41):
        b.add(_rec(i), now=10.0 + i * 0.01)
    assert [(t, decode_message(m).nr_conns) for t, m in b.out] == [(10.40, 40)]
    b.tick(12.39)
    assert len(b.out) == 1
    b.tick(12.41)
    assert [decode_message(m).nr_conns for _, m in b.out] == [40, 1]
    assert b.out[1][0] == pytest.approx(12.40)
    b.add(_rec(99), now=20.0)
    b.close()
    assert b.out[-1][0] == 22.0
