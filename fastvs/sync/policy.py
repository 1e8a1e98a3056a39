"""When a master sends a connection, and when a message leaves (Linux 6.1), as pure
functions over a small per-connection record the engine keeps.

The kernel's flow (``ip_vs_in_hook`` in ip_vs_core.c, then ip_vs_sync.c):

1. after an *input* packet (client -> director; replies never trigger sync) went through
   the state machine and was transmitted: ``pkts = sync_threshold`` for a ONE_PACKET
   connection, else ``pkts = ++cp->in_pkts``; a master calls
   ``ip_vs_sync_conn(cp, pkts)`` (a non-master only bumps a one-packet connection's
   template counter);
2. ``ip_vs_sync_conn`` (v1): a ONE_PACKET connection is never sent, but its template
   is still considered; otherwise ``ip_vs_sync_conn_needed(cp, pkts)`` decides; then,
   sent or not, the connection's *controller* (its persistence template) is considered
   with ``pkts = ++template->in_pkts`` (``sync_threshold`` for a non-template
   controller), and so on up the chain. With the default sysctls a template is sent
   every time: ``ip_vs_sync_conn_needed`` skips the packet-count test for templates,
   so **every input packet of a persistent connection re-sends its template** (seen in
   the kernel's recording s2-persist: 27 template records for 12 connection records).
   Version 0 (``ip_vs_sync_conn_v0``) differs: IPv6 and ONE_PACKET connections return
   at once (their template is not considered), and the controller is considered only
   after the connection was *sent*;
3. ``ip_vs_sync_conn_needed``:
   - a template: never forced; else with ``sync_persist_mode`` a connection under a
     template is never sent;
   - TCP sends only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT; SCTP only in
     ESTABLISHED, SHUTDOWN_SENT, SHUTDOWN_RECEIVED, SHUTDOWN_ACK_SENT, CLOSED; other
     protocols (UDP) are never forced;
   - a state change (state != old_state) is forced; a change into anything but
     ESTABLISHED is sent at once, skipping the rate rules;
   - ``sync_refresh_period`` > 0: skip when the new end time ``(now + timeout) & ~3``
     is within min(refresh_period, max(timeout / 2, 10 s)) of the last one sent,
     except for up to ``sync_retries`` retries, each no sooner than refresh_period / 8
     after the last send (the retry count lives in sync_endtime's low 2 bits);
   - ``sync_period`` > 0: a connection (not a template) is sent only when
     ``pkts % sync_period == sync_threshold``; with sync_period 0 and no refresh
     period, only when ``pkts == sync_threshold``;
   - when it sends (``set:``): old_state = state, sync_endtime = the new end time;
     the result is "the end time changed" or forced.
4. batching (``sync_thread_master``, ``next_sync_buff``): records go into the current
   buffer (``fastvs.sync.proto.MessageBuilder``); a full buffer is queued at once; the
   master thread sends queued buffers, and otherwise the current buffer once it is
   ``IPVS_SYNC_FLUSH_TIME`` (2 s) old, checking every ``IPVS_SYNC_CHECK_PERIOD``
   (1 s) when idle - so a lone record leaves 2 to 3 s after it was added.

Times are jiffies (``hz`` per second; Debian's kernel has HZ=250): the masks on
sync_endtime depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastvs.sync.proto import (
    F_ONE_PACKET,
    F_TEMPLATE,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    MessageBuilder,
    SyncConn,
)

__all__ = [
    "Batcher",
    "ConnSync",
    "SyncSysctls",
    "on_input_packet",
    "sync_conn",
    "sync_conn_needed",
]

# enum IP_VS_TCP_S_* / ip_vs_sctp_states
TCP_ESTABLISHED, TCP_FIN_WAIT, TCP_TIME_WAIT, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 4, 5, 6, 7
TCP_SYNC_STATES = frozenset(
    {TCP_ESTABLISHED, TCP_FIN_WAIT, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_TIME_WAIT}
)
SCTP_ESTABLISHED, SCTP_SHUTDOWN_SENT, SCTP_SHUTDOWN_RECEIVED = 8, 9, 10
SCTP_SHUTDOWN_ACK_SENT, SCTP_CLOSED = 11, 13
SCTP_SYNC_STATES = frozenset(
    {
        SCTP_ESTABLISHED,
        SCTP_SHUTDOWN_SENT,
        SCTP_SHUTDOWN_RECEIVED,
        SCTP_SHUTDOWN_ACK_SENT,
        SCTP_CLOSED,
    }
)

IPVS_SYNC_FLUSH_S = 2  # IPVS_SYNC_FLUSH_TIME = HZ * 2
IPVS_SYNC_CHECK_S = 1  # IPVS_SYNC_CHECK_PERIOD = HZ
_ULONG = (1 << 64) - 1


@dataclass(frozen=True)
class SyncSysctls:
    """net.ipv4.vs.sync_* as the kernel defaults them (DEFAULT_SYNC_* in ip_vs.h).
    ``sync_refresh_period`` is in seconds, as the sysctl reads; ``hz`` the kernel's."""

    sync_threshold: int = 3
    sync_period: int = 50
    sync_refresh_period: int = 0
    sync_retries: int = 0
    sync_persist_mode: int = 0
    sync_version: int = 1
    hz: int = 250

    def __post_init__(self) -> None:
        # proc_do_sync_threshold: 0 <= threshold < period (or period 0);
        # sync_retries is clamped to 0..3 (proc_dointvec_minmax)
        if self.sync_threshold < 0 or self.sync_period < 0:
            raise ValueError("sync_threshold and sync_period must be >= 0")
        if self.sync_period and self.sync_threshold >= self.sync_period:
            raise ValueError("sync_threshold must be below sync_period (or sync_period 0)")
        if not 0 <= self.sync_retries <= 3:
            raise ValueError("sync_retries must be 0..3")
        if self.sync_version not in (0, 1):
            raise ValueError("sync_version must be 0 or 1")


@dataclass
class ConnSync:
    """The fields of a connection (``struct ip_vs_conn``) that the send decision reads
    and writes. ``timeout`` and ``sync_endtime`` are jiffies; ``control`` is the
    template (or other controller) of the connection. ``new()`` gives what
    ``ip_vs_conn_new`` sets."""

    protocol: int
    flags: int = 0
    state: int = 0
    old_state: int = 0
    timeout: int = 0
    sync_endtime: int = 0
    in_pkts: int = 0
    af: int = 4
    control: ConnSync | None = None
    name: str = ""  # for tests and logs

    @classmethod
    def new(cls, protocol: int, now: int, hz: int = 250, **kw: object) -> ConnSync:
        c = cls(protocol, **kw)  # type: ignore[arg-type]
        c.state = 0
        c.old_state = 0
        if "timeout" not in kw:
            c.timeout = 3 * hz
        c.sync_endtime = now & ~3 & _ULONG
        return c


def _in_persistence(cp: ConnSync) -> bool:
    c = cp.control
    while c is not None:
        if c.flags & F_TEMPLATE:
            return True
        c = c.control
    return False


def _time_before(a: int, b: int) -> bool:
    """time_before(a, b) on unsigned long jiffies."""
    d = (a - b) & _ULONG
    return d >= 1 << 63


def sync_conn_needed(s: SyncSysctls, cp: ConnSync, pkts: int, now: int) -> bool:
    """ip_vs_sync_conn_needed() (ip_vs_sync.c:460-533 in 6.1.192): True to send ``cp``
    now; updates old_state and sync_endtime as the kernel does when it decides to send
    (``set:``, lines 530-532)."""
    orig = cp.sync_endtime
    n = (now + cp.timeout) & ~3 & _ULONG
    if cp.flags & F_TEMPLATE:
        force = False
    elif s.sync_persist_mode and _in_persistence(cp):
        return False
    elif cp.protocol == IPPROTO_TCP or cp.protocol == IPPROTO_SCTP:
        states = TCP_SYNC_STATES if cp.protocol == IPPROTO_TCP else SCTP_SYNC_STATES
        est = TCP_ESTABLISHED if cp.protocol == IPPROTO_TCP else SCTP_ESTABLISHED
        if cp.state not in states:
            return False
        force = cp.state != cp.old_state
        if force and cp.state != est:
            return _set(cp, orig, n, force)
    else:
        force = False  # UDP or another single-state protocol

    refresh = s.sync_refresh_period * s.hz
    if refresh > 0:
        diff = n - orig
        min_diff = max(cp.timeout >> 1, 10 * s.hz)
        if abs(diff) < min(refresh, min_diff):
            retries = orig & 3
            if retries >= s.sync_retries:
                return False
            if _time_before(now, (orig - cp.timeout + (refresh >> 3)) & _ULONG):
                return False
            n |= retries + 1
    if s.sync_period > 0:
        if not cp.flags & F_TEMPLATE and pkts % s.sync_period != s.sync_threshold:
            return False
    elif not refresh and pkts != s.sync_threshold:
        return False
    return _set(cp, orig, n, force)


def _set(cp: ConnSync, orig: int, n: int, force: bool) -> bool:
    """``set:``: the kernel's cmpxchg(&sync_endtime, orig, n) returns orig when no
    other CPU raced it, so ``n == orig || force`` is true: always send."""
    cp.old_state = cp.state
    cp.sync_endtime = n
    return True


def sync_conn(s: SyncSysctls, cp: ConnSync, pkts: int, now: int) -> list[ConnSync]:
    """ip_vs_sync_conn() (ip_vs_sync.c:630-781) / ip_vs_sync_conn_v0() (540-623): the
    connections whose records go into the sync buffer, in order (the connection, then
    its template...). Bumps the templates' in_pkts as the kernel does."""
    out: list[ConnSync] = []
    if s.sync_version == 0:
        c: ConnSync | None = cp
        while c is not None:
            if c.af != 4 or c.flags & F_ONE_PACKET:
                return out
            if not sync_conn_needed(s, c, pkts, now):
                return out
            out.append(c)
            ctl = c.control
            if ctl is None:
                return out
            if ctl.flags & F_TEMPLATE:
                ctl.in_pkts += 1
                pkts = ctl.in_pkts
            else:
                pkts = s.sync_threshold
            c = ctl
        return out
    c = cp
    first = True
    while True:
        skip = first and bool(c.flags & F_ONE_PACKET)
        first = False
        if not skip and sync_conn_needed(s, c, pkts, now):
            out.append(c)
        ctl = c.control
        if ctl is None:
            return out
        if ctl.flags & F_TEMPLATE:
            ctl.in_pkts += 1
            pkts = ctl.in_pkts
        else:
            pkts = s.sync_threshold
        c = ctl


def on_input_packet(s: SyncSysctls, cp: ConnSync, now: int, master: bool = True) -> list[ConnSync]:
    """The tail of ip_vs_in_hook (ip_vs_core.c:2090-2106) for a packet of ``cp`` in the
    input direction, after its state transition and transmit: the connections to add
    to the sync buffer (empty when not a master)."""
    if cp.flags & F_ONE_PACKET:
        pkts = s.sync_threshold
    else:
        cp.in_pkts += 1
        pkts = cp.in_pkts
    if master:
        return sync_conn(s, cp, pkts, now)
    if cp.flags & F_ONE_PACKET and cp.control is not None:
        cp.control.in_pkts += 1
    return []


class Batcher:
    """The master's sync buffer and thread over packet time (seconds): ``add`` a
    record, ``tick(now)`` for what the thread sends by ``now``. A full buffer is sent
    at the time it fills (the kernel queues it and wakes the thread within
    ``IPVS_SYNC_SEND_DELAY``, 20 ms); a partial one at the first whole second of
    the thread's idle polling after it is 2 s old - offline, ``firstuse + 2`` is used
    (deterministic; the kernel's moment is up to 1 s later)."""

    def __init__(self, builder: MessageBuilder) -> None:
        self.builder = builder
        self.firstuse: float | None = None
        self.out: list[tuple[float, bytes]] = []

    def add(self, record: SyncConn, now: float, version: int | None = None) -> None:
        self.tick(now)
        full = self.builder.add(record, version)
        if full is not None:
            self.out.append((now, full))
            self.firstuse = None
        if self.firstuse is None and len(self.builder):
            self.firstuse = now

    def tick(self, now: float) -> None:
        if self.firstuse is not None and now - self.firstuse >= IPVS_SYNC_FLUSH_S:
            msg = self.builder.flush()
            if msg is not None:
                self.out.append((self.firstuse + IPVS_SYNC_FLUSH_S, msg))
            self.firstuse = None

    def close(self, now: float | None = None) -> None:
        """End of input: flush what is left (at ``firstuse + 2`` s)."""
        if self.firstuse is not None:
            msg = self.builder.flush()
            if msg is not None:
                self.out.append((self.firstuse + IPVS_SYNC_FLUSH_S, msg))
            self.firstuse = None
