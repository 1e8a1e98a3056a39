# cython: language_level=3
"""Connections and their real servers (the role of ip_vs_conn.c): make a connection
and bind it to its real server and forwarding method, count it on the real server,
expire it, and the per-connection traffic counters (ip_vs_in_stats/ip_vs_out_stats).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t
from libc.string cimport memcpy
from fastvs.datapath._types cimport *
from fastvs.datapath._conntab cimport (ct_alloc, ct_link, ct_unhash, ct_free, ct_due, ct_expire_at,
                                       CT_NONE)
from fastvs.datapath._state cimport EngineState, NS
from fastvs.datapath._fwd cimport fwd_bind
from fastvs.datapath._sync cimport sync_conn, sync_conn_made


cdef inline void dest_bind(Dest* d, Conn* c) noexcept nogil:
    """ip_vs_bind_dest: count the new connection, mark the dest overloaded at -x."""
    if c.flags & CONN_F_TEMPLATE:
        d.persistconns += 1
    elif c.flags & CONN_F_INACTIVE:
        d.inactconns += 1
    else:
        d.activeconns += 1
    if d.u_threshold and <uint32_t>(d.activeconns + d.inactconns) >= d.u_threshold:
        d.flags |= DEST_F_OVERLOAD


cdef inline void dest_unbind(Dest* d, Conn* c) noexcept nogil:
    """ip_vs_unbind_dest: uncount, and clear overload below -y (or 3/4 of -x)."""
    cdef int64_t total
    if c.flags & CONN_F_TEMPLATE:
        d.persistconns -= 1
    elif c.flags & CONN_F_INACTIVE:
        d.inactconns -= 1
    else:
        d.activeconns -= 1
    total = d.activeconns + d.inactconns
    if d.l_threshold:
        if total < d.l_threshold:
            d.flags &= ~DEST_F_OVERLOAD
    elif d.u_threshold:
        if total * 4 < <int64_t>d.u_threshold * 3:
            d.flags &= ~DEST_F_OVERLOAD
    else:
        d.flags &= ~DEST_F_OVERLOAD


cdef inline void conn_expire(EngineState* st, uint32_t idx) noexcept nogil:
    """ip_vs_conn_expire. A template that still controls connections waits another
    60 s (and keeps 60 s as its timeout, as the kernel's does); a master sends it
    again then (expire_later: ip_vs_sync_conn with sync_threshold), at the time its
    timer ran."""
    cdef Conn* c = &st.ct.conns[idx]
    cdef int64_t now
    cdef uint32_t t
    if c.n_control > 0:
        c.timeout = 60 * NS
        if st.sync != NULL:
            now = st.now
            st.now = c.expires
            sync_conn(st, idx, st.sync.threshold)
            st.now = now
        c.expires = st.now + c.timeout
        return
    if c.control:
        t = c.control - 1
        st.ct.conns[t].n_control -= 1
        # an entry deleted at once (ip_vs_conn_del sets timeout 0: drop_entry) takes
        # its template with it when that now controls nothing and is not assured
        # (ip_vs_conn_expire, ip_vs_conn.c:849-858)
        if (c.timeout == 0 and st.ct.conns[t].n_control == 0
                and not (st.ct.conns[t].state & CTPL_S_ASSURED)):
            ct_unhash(&st.ct, t)
            ct_expire_at(&st.ct, t, st.now)
    if c.dest >= 0:
        dest_unbind(&st.dests[c.dest], c)
    ct_free(&st.ct, idx)


cdef inline void conn_expire_now(EngineState* st, uint32_t idx) noexcept nogil:
    """ip_vs_conn_expire_now: the entry leaves the hash at once (a new connection
    with the same key is found instead), its counters go when its timer runs, which
    is before the next packet."""
    ct_unhash(&st.ct, idx)
    ct_expire_at(&st.ct, idx, st.now)


cdef inline void expire_due(EngineState* st) noexcept nogil:
    cdef uint32_t idx
    while True:
        idx = ct_due(&st.ct, st.now)
        if idx == CT_NONE:
            return
        conn_expire(st, idx)


cdef inline cold_u32 conn_new(EngineState* st, int32_t s, int32_t di, uint8_t proto, uint8_t af,
                              const uint32_t* caddr, uint16_t cport_be, const uint32_t* vaddr,
                              uint16_t vport_be, uint16_t dport_be, uint16_t flags,
                              int64_t timeout) noexcept nogil:
    """ip_vs_conn_new + ip_vs_bind_dest: a connection (or a template) to dest ``di``."""
    cdef uint32_t idx = ct_alloc(&st.ct)
    cdef Conn* c
    cdef Dest* d = &st.dests[di]
    if idx == CT_NONE:
        return CT_NONE
    c = &st.ct.conns[idx]
    memcpy(c.caddr, caddr, 16)
    memcpy(c.vaddr, vaddr, 16)
    memcpy(c.daddr, d.addr, 16)
    c.cport_be = cport_be
    c.cport_again = cport_be
    c.vport_be = vport_be
    c.dport_be = dport_be
    c.proto = proto
    c.af = af
    c.state = 0
    c.flags = flags | CONN_F_INACTIVE
    fwd_bind(c, d)              # ip_vs_bind_xmit
    c.dest = di
    c.svc = s
    c.control = 0
    c.n_control = 0
    c.timeout = timeout
    c.expires = st.now + c.timeout
    dest_bind(d, c)
    ct_link(&st.ct, idx)
    if st.sync != NULL:
        sync_conn_made(st, idx)
    return idx


cdef inline void conn_stats(EngineState* st, Conn* c) noexcept nogil:
    """ip_vs_conn_stats: one more connection for the dest, its service, the total."""
    st.dests[c.dest].stats.conns += 1


cdef inline bint template_ok(const EngineState* st, const Conn* t) noexcept nogil:
    """ip_vs_check_template."""
    cdef const Dest* d
    if t.dest < 0:
        return False
    d = &st.dests[t.dest]
    if not (d.flags & DEST_F_AVAILABLE):
        return False
    if st.expire_quiescent_template and d.weight == 0:
        return False
    return True


cdef inline void count_in(EngineState* st, Conn* c, uint32_t nbytes, bint pkt) noexcept nogil:
    """ip_vs_in_stats. Only the real server's counters move per packet; a service's
    and the total are sums over real servers (removed ones included), taken when read."""
    cdef Dest* d
    if c.dest < 0:
        return
    d = &st.dests[c.dest]
    d.stats.inpkts += pkt
    d.stats.inbytes += nbytes


cdef inline void count_out(EngineState* st, Conn* c, uint32_t nbytes, bint pkt) noexcept nogil:
    """ip_vs_out_stats."""
    cdef Dest* d
    if c.dest < 0:
        return
    d = &st.dests[c.dest]
    d.stats.outpkts += pkt
    d.stats.outbytes += nbytes
