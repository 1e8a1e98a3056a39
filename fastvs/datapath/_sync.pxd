# cython: language_level=3
"""The connection-sync master's decision (the role of ip_vs_sync.c's
ip_vs_sync_conn_needed, ip_vs_sync_conn and ip_vs_sync_conn_v0): which connections a
master sends to its backups after an input packet, appended as records to a C buffer
(``SyncState.ev``) that the engine hands out per batch. Building and timing the
messages is Python's (fastvs.sync.master); fastvs.sync.policy is the same decision in
pure Python, the specification these functions follow.

Everything here is cold (``cold_*``: out of line): the batch loop only tests whether
sync is on (``EngineState.sync``) after a packet reached its transmit.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport realloc
from fastvs.datapath._types cimport *
from fastvs.datapath._state cimport EngineState, NS

# The kernel counts sync times in jiffies; Debian's kernel has HZ=250, and the masks on
# sync_endtime (its low 2 bits count retries) depend on that unit
cdef extern from *:
    """
    #define FV_NS_PER_JIFFY ((int64_t)4000000)
    """
    const int64_t NS_PER_JIFFY "FV_NS_PER_JIFFY"

cdef enum:
    SYNC_HZ = 250
    SYNC_MAX_EVENTS = 1 << 22    # records held between two takes (more are counted lost)


cdef inline uint64_t sync_jiffies(int64_t ns) noexcept nogil:
    return <uint64_t>(ns // NS_PER_JIFFY)


cdef inline bint sync_in_persistence(const EngineState* st, const Conn* c) noexcept nogil:
    """in_persistence(): a template somewhere up the connection's control chain."""
    while c.control:
        c = &st.ct.conns[c.control - 1]
        if c.flags & CONN_F_TEMPLATE:
            return True
    return False


cdef inline bint sync_time_before(uint64_t a, uint64_t b) noexcept nogil:
    """time_before(a, b) on unsigned long jiffies."""
    return <int64_t>(a - b) < 0


cdef inline uint64_t sync_end_new(const EngineState* st, const Conn* c) noexcept nogil:
    """The end time a send records: ``(jiffies + cp->timeout) & ~3``."""
    return (sync_jiffies(st.now) + <uint64_t>(c.timeout // NS_PER_JIFFY)) & ~(<uint64_t>3)


cdef inline bint sync_sent(SyncState* s, Conn* c, uint32_t idx, uint64_t n) noexcept nogil:
    """``set:``: the state sent becomes old_state, the end time sync_endtime (the
    kernel's cmpxchg on it cannot race here: always sent)."""
    c.old_state = c.state
    if s.endtime != NULL:
        s.endtime[idx] = n
    return True


cdef inline bint sync_needed(EngineState* st, SyncState* s, Conn* c, uint32_t idx,
                             uint32_t pkts) noexcept nogil:
    """ip_vs_sync_conn_needed() (ip_vs_sync.c, 6.1): whether to send ``c`` now. The
    times (jiffies, two divisions) are computed only where the refresh period needs
    them or a send records them."""
    cdef uint64_t now_j, tmo_j, orig, n, min_diff, retries, lim
    cdef int64_t diff
    cdef uint8_t est
    if c.flags & CONN_F_TEMPLATE:
        pass                             # force = 0
    elif s.persist_mode and sync_in_persistence(st, c):
        return False
    elif c.proto == IPPROTO_TCP_ or c.proto == IPPROTO_SCTP_:
        if c.proto == IPPROTO_TCP_:
            est = TCP_S_ESTABLISHED
            if not ((1 << c.state) & ((1 << TCP_S_ESTABLISHED) | (1 << TCP_S_FIN_WAIT)
                                      | (1 << TCP_S_CLOSE) | (1 << TCP_S_CLOSE_WAIT)
                                      | (1 << TCP_S_TIME_WAIT))):
                return False
        else:
            # IP_VS_SCTP_S_ESTABLISHED 8, SHUTDOWN_SENT 9, SHUTDOWN_RECEIVED 10,
            # SHUTDOWN_ACK_SENT 11, CLOSED 13
            est = 8
            if not ((1 << c.state) & ((1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 13))):
                return False
        # a state change is forced; out of ESTABLISHED it goes at once
        if c.state != c.old_state and c.state != est:
            return sync_sent(s, c, idx, sync_end_new(st, c) if s.endtime != NULL else 0)
    n = 0
    if s.refresh_j > 0:
        now_j = sync_jiffies(st.now)
        tmo_j = <uint64_t>(c.timeout // NS_PER_JIFFY)
        orig = s.endtime[idx]
        n = (now_j + tmo_j) & ~(<uint64_t>3)
        diff = <int64_t>(n - orig)
        if diff < 0:
            diff = -diff
        min_diff = tmo_j >> 1
        if min_diff < 10 * SYNC_HZ:
            min_diff = 10 * SYNC_HZ
        lim = s.refresh_j if s.refresh_j < min_diff else min_diff
        if <uint64_t>diff < lim:
            retries = orig & 3
            if retries >= s.retries:
                return False
            if sync_time_before(now_j, orig - tmo_j + (s.refresh_j >> 3)):
                return False
            n |= retries + 1
    if s.period > 0:
        if not (c.flags & CONN_F_TEMPLATE) and pkts % s.period != s.threshold:
            return False
    elif s.refresh_j == 0 and pkts != s.threshold:
        return False
    if s.refresh_j == 0 and s.endtime != NULL:
        n = sync_end_new(st, c)
    return sync_sent(s, c, idx, n)


cdef inline uint16_t sync_port(uint16_t be) noexcept nogil:
    return <uint16_t>(((be & 0xff) << 8) | (be >> 8))


cdef inline void sync_emit(EngineState* st, SyncState* s, const Conn* c) noexcept nogil:
    """One record (the fields ip_vs_sync_conn copies from the connection)."""
    cdef SyncEvent* e
    cdef SyncEvent* grown
    cdef uint32_t ncap
    cdef int i
    if s.nev == s.cap:
        if s.cap >= SYNC_MAX_EVENTS:
            s.lost += 1
            return
        ncap = s.cap * 2 if s.cap else 1024
        grown = <SyncEvent*>realloc(s.ev, <size_t>ncap * sizeof(SyncEvent))
        if grown == NULL:
            s.lost += 1
            return
        s.ev = grown
        s.cap = ncap
    e = &s.ev[s.nev]
    s.nev += 1
    e.ts_ns = st.now
    e.af = c.af
    e.protocol = c.proto
    e.state = c.state
    # the kernel's flags: the method's bits, NOOUTPUT at its own bit, never HASHED
    e.flags = ((<uint32_t>c.flags & ~(<uint32_t>(CONN_F_FWD_MASK | CONN_F_HASHED)))
               | (c.fwd & CONN_F_FWD_MASK))
    if c.flags & CONN_F_NOOUTPUT:
        e.flags |= KCONN_F_NOOUTPUT
    e.cport = sync_port(c.cport_be)
    e.vport = sync_port(c.vport_be)
    e.dport = sync_port(c.dport_be)
    # cp->fwmark is the packet's mark: that of the service it was scheduled by
    e.fwmark = st.svcs[c.svc].fwmark if 0 <= c.svc < st.nsvcs else 0
    e.timeout_s = <uint32_t>(c.timeout // NS)
    for i in range(4):
        if c.af == 4 and i > 0:
            e.caddr[i] = 0
            e.vaddr[i] = 0
            e.daddr[i] = 0
        else:
            e.caddr[i] = c.caddr[i]
            e.vaddr[i] = c.vaddr[i]
            e.daddr[i] = c.daddr[i]


cdef inline void sync_walk(EngineState* st, uint32_t idx, uint32_t pkts) noexcept nogil:
    """ip_vs_sync_conn (v1) / ip_vs_sync_conn_v0: the connection, then its controller
    (its persistence template, whose in_pkts counts this packet too), and so on up
    the chain. v1 considers the controller whether or not the connection was sent (a
    ONE_PACKET connection is never sent itself); v0 stops at the first entry not sent,
    and sends neither IPv6 nor ONE_PACKET entries."""
    cdef SyncState* s = st.sync
    cdef Conn* c = &st.ct.conns[idx]
    cdef bint first = True
    while True:
        if s.version == 0:
            if c.af != 4 or (c.flags & CONN_F_ONE_PACKET):
                return
            if not sync_needed(st, s, c, idx, pkts):
                return
            sync_emit(st, s, c)
        else:
            if not (first and (c.flags & CONN_F_ONE_PACKET)) and sync_needed(st, s, c, idx, pkts):
                sync_emit(st, s, c)
        first = False
        if c.control == 0:
            return
        idx = c.control - 1
        c = &st.ct.conns[idx]
        if c.flags & CONN_F_TEMPLATE:
            c.in_pkts += 1
            pkts = c.in_pkts
        else:
            pkts = s.threshold


cdef inline cold_void sync_conn(EngineState* st, uint32_t idx, uint32_t pkts) noexcept nogil:
    """ip_vs_sync_conn from a timer (ip_vs_conn_expire's expire_later)."""
    sync_walk(st, idx, pkts)


cdef inline cold_void sync_in_packet(EngineState* st, uint32_t idx) noexcept nogil:
    """The tail of ip_vs_in_hook (ip_vs_core.c) on a master, after packet_xmit: the
    packet counts (cp->in_pkts, already bumped by the caller; a ONE_PACKET connection
    counts as sync_threshold) and ip_vs_sync_conn decides what to send."""
    cdef Conn* c = &st.ct.conns[idx]
    cdef uint32_t pkts = st.sync.threshold if (c.flags & CONN_F_ONE_PACKET) else c.in_pkts
    sync_walk(st, idx, pkts)


cdef inline cold_void sync_conn_made(EngineState* st, uint32_t idx) noexcept nogil:
    """ip_vs_conn_new's ``cp->sync_endtime = jiffies & ~3``."""
    if st.sync != NULL and st.sync.endtime != NULL:
        st.sync.endtime[idx] = sync_jiffies(st.now) & ~(<uint64_t>3)


cdef inline cold_void control_assure(EngineState* st, Conn* c) noexcept nogil:
    """ip_vs_control_assure_ct: the connection's template becomes ASSURED (its TCP or
    SCTP connection entered ESTABLISHED, or its UDP connection saw a reply)."""
    cdef Conn* t = &st.ct.conns[c.control - 1]
    if t.flags & CONN_F_TEMPLATE:
        t.state |= CTPL_S_ASSURED
