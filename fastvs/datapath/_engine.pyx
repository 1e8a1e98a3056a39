# cython: language_level=3
"""The batch loop: parse -> look up -> schedule -> state -> rewrite, per packet.

The role of ip_vs_core.c (ip_vs_in_hook, ip_vs_out_hook, handle_response) with the
control-plane pieces of ip_vs_ctl.c that the data path reads (services, real servers,
timeouts). The loop runs without the GIL and touches no Python object; the Python
methods around it configure the engine and read its state between batches.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport calloc, realloc, free
from libc.string cimport memset, memcpy

from fastvs.datapath._types cimport *
from fastvs.datapath._packet cimport pkt_parse, FV_UNLIKELY
from fastvs.datapath._conntab cimport (ConnTable, ct_init, ct_destroy, ct_hash_pkt, ct_lookup,
                                       ct_alloc, ct_link, ct_unhash, ct_free, ct_due, ct_expire_at, addr_eq,
                                       ct_lookup_template,
                                       CT_NONE, CT_DIR_IN, CT_DIR_OUT, fv_hash_key)
from fastvs.datapath._proto cimport (fv_tcp_next, fv_tcp_next_init, fv_tcp_active, TCP_TBL_INPUT,
                                     TCP_TBL_OUTPUT, TCP_TBL_INPUT_ONLY, nat_dnat, nat_snat, hop_decrease)
from fastvs.datapath._sctp cimport (sctp_table, sctp_next_state, sctp_state_active, sctp_is_new_conn,
                                    sctp_can_schedule, sctp_new_conn_expected, fv_sctp_timeouts,
                                    fv_sctp_state_names, SCTP_S_LAST)
from fastvs.datapath._icmp cimport icmp_is_error, icmp_inner, icmp_csum_ok, icmp_nat
from fastvs.datapath._csum cimport ip_send_check
from fastvs.sched._base cimport SchedOps

import ipaddress

# Kernel defaults (tcp_timeouts[], udp_timeouts[]), seconds
TCP_TIMEOUT_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT",
                     "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
DEFAULT_TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
DEFAULT_UDP_TIMEOUT = 300
SCTP_STATE_NAMES = tuple(fv_sctp_state_names[i].decode() for i in range(SCTP_S_LAST))

cdef int64_t NS = 1000000000

fv_tcp_next_init()

# Fragments of a balanced datagram follow its first fragment: a small set-associative
# table maps (src, dst, id, proto) to the connection, for ipfrag_time (30 s).
cdef enum:
    FRAG_SETS = 1024
    FRAG_WAYS = 4
cdef int64_t FRAG_TIMEOUT = 30 * NS

ctypedef struct FragEntry:
    uint32_t saddr[4]
    uint32_t daddr[4]
    uint32_t id
    uint32_t conn
    uint64_t conn_hash       # identifies the connection (its slot may be reused)
    int64_t expires
    uint8_t proto
    uint8_t direction
    uint8_t used

ctypedef struct MarkRule:
    uint32_t addr[4]
    uint32_t mask[4]
    uint32_t mark
    uint16_t port_be           # 0: any port
    uint8_t proto              # 0: any protocol
    uint8_t af


ctypedef struct EngineState:
    ConnTable ct
    Dest* dests
    int32_t ndests
    int32_t cap_dests
    Service* svcs
    int32_t nsvcs
    int32_t cap_svcs
    int32_t* svc_hash          # service index + 1, 0 = empty
    uint64_t svc_mask
    int64_t tcp_timeout[TCP_S_LAST]
    int64_t udp_timeout
    int64_t sctp_timeout[SCTP_S_LAST]
    bint sloppy_sctp
    int64_t now                # ns; never runs backwards
    bint started
    # options
    bint keep_ttl
    bint director_view
    bint truncated_balance
    bint expire_nodest_conn
    int conn_reuse_mode
    FragEntry* frags
    MarkRule* marks            # firewall-mark classifier (iptables -j MARK, last match wins)
    int32_t nmarks
    int32_t nfwm_svcs          # fwmark services
    int32_t nnull_svcs         # port-zero (catch-all) services
    bint expire_quiescent_template
    uint32_t tun_mtu           # route MTU toward tunnel real servers
    # flood defenses (ip_vs_ctl.c update_defense_level), driven by table occupancy:
    # "available memory" is the free connection slots, amemthresh a number of slots
    int drop_entry_mode        # 0 off, 1 auto (on when low), 3 always
    int drop_packet_mode       # 0 off, 1 auto, 3 always
    int secure_tcp_mode        # 0 off, 1 auto, 3 always: the tcp_states_dos table
    bint secure_tcp_on
    bint drop_entry_on
    uint32_t amemthresh
    uint32_t am_droprate
    uint32_t drop_rate
    uint32_t drop_counter
    int64_t next_defense       # the defense timer runs once a second of packet time
    uint64_t rnd               # xorshift state for the random entry scan
    uint64_t entries_dropped
    int32_t last_dest          # the real server of the packet just processed, or -1
    # counters
    uint64_t counts[V_NCODES]


# -- services --------------------------------------------------------------------------

cdef inline int32_t svc_find(const EngineState* st, uint8_t proto, const uint32_t* addr,
                             uint16_t port_be) noexcept nogil:
    cdef uint32_t zero[4]
    cdef uint64_t pos
    cdef int32_t s
    if st.nsvcs == 0:
        return -1
    zero[0] = 0
    zero[1] = 0
    zero[2] = 0
    zero[3] = 0
    pos = fv_hash_key(addr, zero, port_be, 0, proto, st.ct.seed) & st.svc_mask
    while True:
        s = st.svc_hash[pos]
        if s == 0:
            return -1
        s -= 1
        if st.svcs[s].proto == proto and st.svcs[s].port_be == port_be \
                and addr_eq(st.svcs[s].addr, addr):
            return s
        pos = (pos + 1) & st.svc_mask


cdef inline bint masked_eq(const uint32_t* a, const uint32_t* net, const uint32_t* mask) noexcept nogil:
    return ((a[0] & mask[0]) == net[0] and (a[1] & mask[1]) == net[1]
            and (a[2] & mask[2]) == net[2] and (a[3] & mask[3]) == net[3])


cdef inline uint32_t classify(const EngineState* st, const PacketMeta* m) noexcept nogil:
    """The packet's firewall mark: the last matching rule's, as MARK targets overwrite."""
    cdef uint32_t mark = 0
    cdef int32_t i
    cdef const MarkRule* r
    for i in range(st.nmarks):
        r = &st.marks[i]
        if (r.af == m.af and (r.proto == 0 or r.proto == m.proto)
                and (r.port_be == 0 or r.port_be == m.dport_be)
                and masked_eq(m.daddr, r.addr, r.mask)):
            mark = r.mark
    return mark


cdef inline int32_t svc_lookup(const EngineState* st, const PacketMeta* m, uint32_t* fwmark) noexcept nogil:
    """ip_vs_service_find: by firewall mark first, then <proto, addr, port>, then the
    catch-all port zero."""
    cdef int32_t s, i
    fwmark[0] = 0
    if st.nfwm_svcs and st.nmarks:
        fwmark[0] = classify(st, m)
        if fwmark[0]:
            for i in range(st.nsvcs):
                if st.svcs[i].fwmark == fwmark[0] and st.svcs[i].af == m.af:
                    return i
    s = svc_find(st, m.proto, m.daddr, m.dport_be)
    if s < 0 and st.nnull_svcs:
        s = svc_find(st, m.proto, m.daddr, 0)
    return s


cdef inline bint is_local_addr(const EngineState* st, const uint32_t* addr) noexcept nogil:
    cdef int32_t i
    for i in range(st.nsvcs):
        if addr_eq(st.svcs[i].addr, addr):
            return True
    return False


# -- connections -------------------------------------------------------------------------

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
    60 s (and keeps 60 s as its timeout, as the kernel's does)."""
    cdef Conn* c = &st.ct.conns[idx]
    if c.n_control > 0:
        c.timeout = 60 * NS
        c.expires = st.now + c.timeout
        return
    if c.control:
        st.ct.conns[c.control - 1].n_control -= 1
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


cdef inline void set_state(EngineState* st, Conn* c, int direction, uint8_t tcpflags) noexcept nogil:
    """ip_vs_set_state: move the TCP state machine, keep the dest's counters right,
    and take the new state's timeout."""
    cdef int tbl
    cdef uint8_t new_state
    cdef Dest* d
    if c.proto == IPPROTO_SCTP_:
        new_state = sctp_next_state(sctp_table(direction, &c.flags), c.state, tcpflags)
        if new_state != c.state and c.dest >= 0:
            d = &st.dests[c.dest]
            if not (c.flags & CONN_F_INACTIVE) and not sctp_state_active(new_state):
                d.activeconns -= 1
                d.inactconns += 1
                c.flags |= CONN_F_INACTIVE
            elif (c.flags & CONN_F_INACTIVE) and sctp_state_active(new_state):
                d.activeconns += 1
                d.inactconns -= 1
                c.flags &= ~CONN_F_INACTIVE
        c.state = new_state
        c.timeout = st.sctp_timeout[new_state]
        return
    if c.proto != IPPROTO_TCP_:
        c.timeout = st.udp_timeout
        return
    tbl = TCP_TBL_OUTPUT if direction == DIR_OUTPUT else TCP_TBL_INPUT
    if c.flags & CONN_F_NOOUTPUT:
        if direction == DIR_OUTPUT:
            c.flags &= ~CONN_F_NOOUTPUT
        else:
            tbl = TCP_TBL_INPUT_ONLY
    new_state = fv_tcp_next[st.secure_tcp_on != 0][tbl][tcpflags & 0x1f][c.state & 15]
    # the record's first line is written only on a change: an established flow's
    # packets leave it clean (no write-back of it from a large table)
    if new_state != c.state:
        if c.dest >= 0:
            d = &st.dests[c.dest]
            if not (c.flags & CONN_F_INACTIVE) and not fv_tcp_active[new_state]:
                d.activeconns -= 1
                d.inactconns += 1
                c.flags |= CONN_F_INACTIVE
            elif (c.flags & CONN_F_INACTIVE) and fv_tcp_active[new_state]:
                d.activeconns += 1
                d.inactconns -= 1
                c.flags &= ~CONN_F_INACTIVE
        c.state = new_state
    c.timeout = st.tcp_timeout[new_state]


cdef inline uint32_t conn_new(EngineState* st, int32_t s, int32_t di, uint8_t proto, uint8_t af,
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
    c.fwd = d.fwd
    c.flags = flags | CONN_F_INACTIVE
    if d.fwd != FWD_MASQ:
        c.flags |= CONN_F_NOOUTPUT
    c.dest = di
    c.svc = s
    c.control = 0
    c.n_control = 0
    c.timeout = timeout
    c.expires = st.now + c.timeout
    dest_bind(d, c)
    ct_link(&st.ct, idx)
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


# -- flood defenses -------------------------------------------------------------------

cdef inline void update_defense(EngineState* st) noexcept nogil:
    """update_defense_level + the drop_entry part of defense_work_handler, once a
    second: with few free slots left, refuse some new connections (drop_packet) and
    drop random half-open TCP entries (drop_entry)."""
    cdef uint32_t avail = st.ct.capacity - st.ct.count
    cdef bint low = avail < st.amemthresh
    cdef uint32_t _, idx, nscan
    cdef Conn* c
    if st.drop_packet_mode == 3:
        st.drop_rate = st.am_droprate
    elif st.drop_packet_mode == 1 and low:
        st.drop_rate = st.amemthresh // (st.amemthresh - avail)
        if st.drop_rate < 1:
            st.drop_rate = 1
        if st.drop_counter == 0 or st.drop_counter > st.drop_rate:
            st.drop_counter = st.drop_rate
    else:
        st.drop_rate = 0
    st.secure_tcp_on = st.secure_tcp_mode == 3 or (st.secure_tcp_mode == 1 and low)
    st.drop_entry_on = st.drop_entry_mode == 3 or (st.drop_entry_mode == 1 and low)
    if not st.drop_entry_on:
        return
    # ip_vs_random_dropentry: look at 1/32 of the table at random; entries still in
    # the handshake (SYN_RECV, SYNACK) and controlling nothing go
    nscan = st.ct.capacity >> 5
    if nscan == 0:
        nscan = st.ct.capacity
    for _ in range(nscan):
        st.rnd ^= st.rnd << 13
        st.rnd ^= st.rnd >> 7
        st.rnd ^= st.rnd << 17
        idx = <uint32_t>(st.rnd % st.ct.capacity)
        c = &st.ct.conns[idx]
        if not (c.in_use & 2) or (c.in_use & 4) or c.n_control or c.proto != IPPROTO_TCP_:
            continue
        if c.state == TCP_S_SYN_RECV or c.state == TCP_S_SYNACK:
            conn_expire_now(st, idx)
            st.entries_dropped += 1


cdef inline bint todrop(EngineState* st) noexcept nogil:
    """ip_vs_todrop: with drop_rate N, one new connection in N is refused."""
    if not st.drop_rate:
        return False
    st.drop_counter -= 1
    if st.drop_counter > 0:
        return False
    st.drop_counter = st.drop_rate
    return True


cdef inline int conn_schedule(EngineState* st, int32_t s, PacketMeta* m, uint32_t fwmark,
                              uint32_t* out_idx) noexcept nogil:
    """ip_vs_schedule / ip_vs_sched_persist. Returns 0 with the new connection in
    ``out_idx``, or a drop verdict."""
    cdef Service* svc = &st.svcs[s]
    cdef SchedOps* ops = <SchedOps*>svc.sched
    cdef int32_t di
    cdef uint32_t idx, t
    cdef uint32_t snet[4]
    cdef uint32_t tvaddr[4]
    cdef uint16_t tvport, dport
    cdef uint8_t tproto
    cdef Conn* tc
    m.now = st.now
    if todrop(st):
        return V_DROP_DEFENSE
    if not (svc.flags & SVC_F_PERSISTENT):
        di = ops.pick(svc, st.dests, m)
        if di < 0:
            return V_DROP_NO_DEST
        dport = st.dests[di].port_be if st.dests[di].port_be else m.dport_be
        idx = conn_new(st, s, di, m.proto, m.af, m.saddr, m.sport_be, m.daddr, m.dport_be,
                       dport, 0, 3 * NS)
        if idx == CT_NONE:
            return V_DROP_CONN_FULL
        conn_stats(st, &st.ct.conns[idx])
        out_idx[0] = idx
        return 0
    # persistence: the template <proto, client net, 0, vaddr, vport> names the dest
    snet[0] = m.saddr[0] & svc.netmask[0]
    snet[1] = m.saddr[1] & svc.netmask[1]
    snet[2] = m.saddr[2] & svc.netmask[2]
    snet[3] = m.saddr[3] & svc.netmask[3]
    if svc.fwmark:
        tproto = 0
        memset(tvaddr, 0, 16)
        tvaddr[0] = ((fwmark & 0xff) << 24) | ((fwmark & 0xff00) << 8) \
            | ((fwmark >> 8) & 0xff00) | (fwmark >> 24)
        tvport = 0
    else:
        tproto = m.proto
        memcpy(tvaddr, m.daddr, 16)
        tvport = m.dport_be if svc.port_be else 0
    t = ct_lookup_template(&st.ct, tproto, snet, tvaddr, tvport)
    if t != CT_NONE and not template_ok(st, &st.ct.conns[t]):
        ct_unhash(&st.ct, t)        # invalidated; it goes when its timer runs
        t = CT_NONE
    if t == CT_NONE:
        di = ops.pick(svc, st.dests, m)
        if di < 0:
            return V_DROP_NO_DEST
        t = conn_new(st, s, di, tproto, m.af, snet, 0, tvaddr, tvport,
                     st.dests[di].port_be, CONN_F_TEMPLATE, <int64_t>svc.persist_timeout * NS)
        if t == CT_NONE:
            return V_DROP_CONN_FULL
    tc = &st.ct.conns[t]
    di = tc.dest
    dport = st.dests[di].port_be if (m.dport_be == svc.port_be and st.dests[di].port_be) else m.dport_be
    idx = conn_new(st, s, di, m.proto, m.af, m.saddr, m.sport_be, m.daddr, m.dport_be,
                   dport, 0, 3 * NS)
    tc = &st.ct.conns[t]
    if idx == CT_NONE:
        return V_DROP_CONN_FULL
    st.ct.conns[idx].control = t + 1
    tc.n_control += 1
    ct_expire_at(&st.ct, t, st.now + tc.timeout)      # ip_vs_conn_put(ct)
    conn_stats(st, &st.ct.conns[idx])
    out_idx[0] = idx
    return 0


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


# -- fragments --------------------------------------------------------------------------

cdef inline FragEntry* frag_set(EngineState* st, const PacketMeta* m) noexcept nogil:
    cdef uint64_t h = fv_hash_key(m.saddr, m.daddr, <uint16_t>m.frag_id,
                                  <uint16_t>(m.frag_id >> 16), m.proto, st.ct.seed)
    return &st.frags[(h % FRAG_SETS) * FRAG_WAYS]


cdef inline bint frag_match(const FragEntry* e, const PacketMeta* m, int64_t now) noexcept nogil:
    return (e.used and e.expires > now and e.id == m.frag_id and e.proto == m.proto
            and addr_eq(e.saddr, m.saddr) and addr_eq(e.daddr, m.daddr))


cdef inline void frag_remember(EngineState* st, const PacketMeta* m, uint32_t idx,
                               int direction) noexcept nogil:
    """A first fragment was balanced: its later fragments will follow it."""
    cdef FragEntry* e = frag_set(st, m)
    cdef FragEntry* slot = e
    cdef int w
    if st.frags == NULL:
        return
    for w in range(FRAG_WAYS):
        if frag_match(&e[w], m, st.now) or not e[w].used or e[w].expires <= st.now:
            slot = &e[w]
            break
        if e[w].expires < slot.expires:
            slot = &e[w]            # the set is full: the oldest entry gives way
    memcpy(slot.saddr, m.saddr, 16)
    memcpy(slot.daddr, m.daddr, 16)
    slot.id = m.frag_id
    slot.proto = m.proto
    slot.conn = idx
    slot.conn_hash = st.ct.conns[idx].hash
    slot.direction = direction
    slot.expires = st.now + FRAG_TIMEOUT
    slot.used = 1


cdef inline int frag_follow(EngineState* st, uint8_t* p, PacketMeta* m) noexcept nogil:
    """A later fragment: rewrite its addresses as its first fragment's were."""
    cdef FragEntry* e
    cdef Conn* c
    cdef int w
    if st.frags == NULL:
        return V_PASS_FRAGMENT
    e = frag_set(st, m)
    for w in range(FRAG_WAYS):
        if frag_match(&e[w], m, st.now):
            c = &st.ct.conns[e[w].conn]
            if not (c.in_use & 2) or c.hash != e[w].conn_hash or c.fwd != FWD_MASQ:
                return V_PASS_FRAGMENT
            if not st.keep_ttl and m.ttl <= 1:
                return V_DROP_TTL
            # the reassembled datagram counts once, with its whole length
            if e[w].direction == CT_DIR_IN:
                count_in(st, c, m.l3len - (m.l4off - m.l3off), False)
                nat_dnat(p, m, c, not st.keep_ttl)
                return V_FWD_IN
            count_out(st, c, m.l3len - (m.l4off - m.l3off), False)
            nat_snat(p, m, c, not st.keep_ttl)
            return V_FWD_OUT
    return V_PASS_FRAGMENT


# -- ICMP errors ------------------------------------------------------------------------

cdef inline int icmp_packet(EngineState* st, uint8_t* p, PacketMeta* m) noexcept nogil:
    """ip_vs_in_icmp / ip_vs_out_icmp: an error quoting a connection's packet is
    translated and counted against that connection; other ICMP is not IPVS's."""
    cdef PacketMeta im
    cdef uint32_t idx
    cdef int direction = CT_DIR_IN
    cdef Conn* c
    if not icmp_is_error(m, p[m.l4off]):
        return not_ipvs(st, p, m, V_PASS_PROTO)
    if icmp_inner(p, m, &im) != 0:
        return not_ipvs(st, p, m, V_PASS_PROTO)
    idx = ct_lookup(&st.ct, &im, ct_hash_pkt(&st.ct, &im), &direction)
    if idx == CT_NONE:
        return not_ipvs(st, p, m, V_PASS_PROTO)
    c = &st.ct.conns[idx]
    if c.fwd != FWD_MASQ:
        return not_ipvs(st, p, m, V_PASS_PROTO)
    if not m.cut and not icmp_csum_ok(p, m):
        return V_DROP_ICMP_CSUM
    if not st.keep_ttl:
        if m.ttl <= 1:
            return V_DROP_TTL
        hop_decrease(p, m)
    if direction == CT_DIR_IN:
        # about a reply the client side could not take: on to the real server
        count_in(st, c, m.l3len, True)
        icmp_nat(p, m, &im, c, False)
        return V_FWD_IN
    count_out(st, c, m.l3len, True)
    icmp_nat(p, m, &im, c, True)
    return V_FWD_OUT


# -- the per-packet path ------------------------------------------------------------------

cdef inline int not_ipvs(EngineState* st, uint8_t* p, const PacketMeta* m, int code) noexcept nogil:
    """Traffic IPVS leaves alone. Offline it is written unchanged; in the director's
    view it is delivered locally (addressed to a VIP) or routed on with TTL - 1."""
    if not st.director_view or m.l3len == 0:
        return code
    if is_local_addr(st, m.daddr):
        return V_DROP_LOCAL
    if not st.keep_ttl:
        if m.ttl <= 1:
            return V_DROP_TTL
        hop_decrease(p, m)
    return V_PASS_ROUTED


cdef inline int handle_response(EngineState* st, uint8_t* p, const PacketMeta* m,
                                uint32_t idx) noexcept nogil:
    """A real server's reply (ip_vs_out_hook -> handle_response), after ip_forward
    has checked and decremented the TTL."""
    cdef Conn* c = &st.ct.conns[idx]
    if not st.keep_ttl and m.ttl <= 1:
        return V_DROP_TTL
    if c.fwd != FWD_MASQ:
        if not st.keep_ttl:
            hop_decrease(p, m)
        return V_PASS_NOT_MASQ
    nat_snat(p, m, c, not st.keep_ttl)
    count_out(st, c, m.l3len, True)
    if m.frag == 2:
        frag_remember(st, m, idx, CT_DIR_OUT)
    set_state(st, c, DIR_OUTPUT, m.tcpflags)
    ct_expire_at(&st.ct, idx, st.now + c.timeout)
    return V_FWD_OUT


cdef inline bint new_conn_expected(const Conn* c, int mode) noexcept nogil:
    """is_new_conn_expected: a SYN may replace a TCP connection in TIME_WAIT or
    CLOSE (and, with conn_reuse_mode bit 2, FIN_WAIT of a DR/TUN connection)."""
    if c.proto == IPPROTO_SCTP_:
        return sctp_new_conn_expected(c)       # not controlled, state CLOSED
    if c.proto != IPPROTO_TCP_ or c.control:
        return False
    return (c.state == TCP_S_TIME_WAIT or c.state == TCP_S_CLOSE
            or ((mode & 2) and c.state == TCP_S_FIN_WAIT and (c.flags & CONN_F_NOOUTPUT)))


cdef inline int dp_packet(EngineState* st, uint8_t* p, PacketMeta* mp, int rc,
                          uint64_t h) noexcept nogil:
    """One packet, already parsed (``rc``, ``mp``) and, if a candidate, hashed (``h``)."""
    cdef int direction
    cdef uint32_t idx
    cdef int32_t s
    cdef uint32_t fwmark
    cdef Conn* c
    if rc != PKT_OK:
        if rc == PKT_ICMP:
            return icmp_packet(st, p, mp)
        if rc == V_PASS_FRAGMENT:
            rc = frag_follow(st, p, mp)
            if rc != V_PASS_FRAGMENT:
                return rc
        if rc == V_PASS_NOT_SERVICE or rc == V_PASS_PROTO or rc == V_PASS_FRAGMENT:
            return not_ipvs(st, p, mp, rc)
        return rc
    if mp.cut and not st.truncated_balance:
        return V_DROP_CAPTURE_CUT

    direction = CT_DIR_IN
    idx = ct_lookup(&st.ct, mp, h, &direction)
    if idx != CT_NONE and direction == CT_DIR_OUT:
        return handle_response(st, p, mp, idx)

    if idx != CT_NONE:
        c = &st.ct.conns[idx]
        # a SYN for a connection that is finishing or whose server was quiesced
        if ((mp.proto == IPPROTO_TCP_ and (mp.tcpflags & TH_SYN))
                or (mp.proto == IPPROTO_SCTP_ and sctp_is_new_conn(mp.tcpflags))):
            if st.expire_nodest_conn and c.dest >= 0 and st.dests[c.dest].weight == 0:
                conn_expire_now(st, idx)
                idx = CT_NONE
            elif st.conn_reuse_mode and new_conn_expected(c, st.conn_reuse_mode):
                conn_expire_now(st, idx)
                idx = CT_NONE
        if idx != CT_NONE and c.dest >= 0 and not (st.dests[c.dest].flags & DEST_F_AVAILABLE):
            if st.expire_nodest_conn:
                conn_expire_now(st, idx)
                idx = CT_NONE
            else:
                return V_DROP_DEST_UNAVAILABLE

    if idx == CT_NONE:
        # tcp_conn_schedule / udp_conn_schedule
        s = svc_lookup(st, mp, &fwmark)
        if s < 0:
            return not_ipvs(st, p, mp, V_PASS_NOT_SERVICE)
        if mp.proto == IPPROTO_TCP_ and ((mp.tcpflags & TH_RST) or not (mp.tcpflags & TH_SYN)):
            return V_DROP_TCP_NO_CONN
        if mp.proto == IPPROTO_SCTP_ and not sctp_can_schedule(mp.tcpflags, st.sloppy_sctp):
            return not_ipvs(st, p, mp, V_PASS_NOT_SERVICE)   # sctp_conn_schedule accepts it
        if mp.sport_be == 0x1400:        # client port 20 (FTP data) is never scheduled
            return not_ipvs(st, p, mp, V_PASS_NOT_SERVICE)
        rc = conn_schedule(st, s, mp, fwmark, &idx)
        if rc:
            return rc

    c = &st.ct.conns[idx]
    count_in(st, c, mp.l3len, True)
    set_state(st, c, DIR_INPUT, mp.tcpflags)
    ct_expire_at(&st.ct, idx, st.now + c.timeout)
    # ip_vs_nat_xmit: the route to the real server decrements the TTL first
    if not st.keep_ttl and mp.ttl <= 1:
        return V_DROP_TTL
    if mp.frag == 2:
        frag_remember(st, mp, idx, CT_DIR_IN)
    st.last_dest = c.dest
    if c.fwd == FWD_MASQ:
        nat_dnat(p, mp, c, not st.keep_ttl)
        return V_FWD_IN
    if c.fwd == FWD_TUNNEL:
        # ensure_mtu_is_adequate: the outer header must fit, unless the packet may
        # be fragmented (no DF; IPv6 always counts as DF)
        if mp.l3len + (20 if st.dests[c.dest].af == 4 else 40) > st.tun_mtu and (
                mp.af == 6 or (p[mp.l3off + 6] & 0x40)):
            return V_DROP_MTU
        # the kernel would fragment an oversized datagram without DF; one that cannot
        # get an outer header at all (over 64 KiB with it) is refused here
        if mp.l3len + (20 if st.dests[c.dest].af == 4 else 40) > 65535:
            return V_DROP_MTU
    # ip_vs_dr_xmit / ip_vs_tunnel_xmit: the route decrements the TTL; the MACs and
    # the tunnel header are the output stage's (fastvs.datapath._xmit)
    if not st.keep_ttl:
        hop_decrease(p, mp)
        if mp.af == 4 and c.fwd == FWD_DROUTE:
            ip_send_check(p + mp.l3off, (p[mp.l3off] & 0x0f) * 4)
    return V_FWD_DR if c.fwd == FWD_DROUTE else V_FWD_TUN


cdef extern from *:
    """
    #define FV_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    /* a write prefetch where the target has one (GCC: -mprfchw); otherwise GCC emits
       a read prefetch. No inline prefetchw: not every x86-64 CPU is documented to
       run it, and it measured within noise here */
    #define FV_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 3)
    """
    void FV_PREFETCH(const void* p) nogil
    void FV_PREFETCH_W(const void* p) nogil

# Packets go through a three-stage pipeline in windows of 8: while window w is processed
# in order, window w + 1 has its connection records prefetched and window w + 2 is
# parsed and hashed and has its buckets prefetched. The two dependent cache misses of
# a lookup (bucket, then record) are thus issued 8 and 16 packets before the packet
# needs them, and overlap with the work on other packets: at 100k flows 1.4x the
# one-window scheme (both misses stalled once per window), at 1k within 2 % of it. A
# plain loop, one packet at a time, has 45 instructions fewer per packet and is 18 %
# slower even at 1k flows (nothing overlaps across packets). Parsing and hashing depend
# only on a packet's own bytes, so doing them early changes no result.
cdef enum:
    WINDOW = 8


cdef inline void dp_stage_parse(EngineState* st, uint8_t* buf, Py_ssize_t buflen,
                                const uint32_t* off, const uint32_t* caplen,
                                const uint32_t* wirelen, const uint16_t* linktype,
                                Py_ssize_t j, PacketMeta* m, int* rc, uint64_t* h) noexcept nogil:
    """Parse packet ``j`` into ``m``/``rc``; for a candidate, hash it into ``h`` and
    prefetch its bucket."""
    m.af = 0
    m.l3len = 0
    if FV_UNLIKELY(<uint64_t>off[j] + caplen[j] > <uint64_t>buflen):
        rc[0] = V_DROP_BAD_SLOT
        return
    rc[0] = pkt_parse(buf + off[j], caplen[j], wirelen[j], linktype[j], m)
    if rc[0] == PKT_OK:
        h[0] = ct_hash_pkt(&st.ct, m)
        FV_PREFETCH(&st.ct.buckets[h[0] & st.ct.mask])


cdef inline const uint8_t* dp_stage_record(const EngineState* st, int rc,
                                           uint64_t h) noexcept nogil:
    """The record the packet's first bucket names, or NULL. The caller prefetches it:
    a helper that only loads and prefetches counts as pure to GCC, whose calls are
    then removed with their prefetches."""
    cdef uint64_t b
    if rc == PKT_OK:
        b = st.ct.buckets[h & st.ct.mask]
        if b:
            return <const uint8_t*>&st.ct.conns[<uint32_t>(b & 0x7fffffff) - 1]
    return NULL


cdef Py_ssize_t dp_run(EngineState* st, uint8_t* buf, Py_ssize_t buflen,
                       const uint32_t* off, const uint32_t* caplen, const uint32_t* wirelen,
                       const int64_t* ts, const uint16_t* linktype, uint8_t* verdict,
                       int32_t* aux, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t wi, j, k, start, cnt, base
    cdef Py_ssize_t nw = (n + WINDOW - 1) // WINDOW
    cdef Py_ssize_t written = 0
    cdef int v
    cdef PacketMeta metas[4 * WINDOW]
    cdef int rcs[4 * WINDOW]
    cdef uint64_t hs[4 * WINDOW]
    cdef const uint8_t* rec
    if n > 0 and not st.started:
        st.now = ts[0]
        st.started = True
    # window wi is processed while wi + 1 has its records prefetched and wi + 2 is
    # parsed and has its buckets prefetched; the first two rounds only fill the pipe
    for wi in range(-2, nw):
        if wi + 2 < nw:
            start = (wi + 2) * WINDOW
            cnt = min(WINDOW, n - start)
            base = ((wi + 2) & 3) * WINDOW
            for k in range(cnt):
                dp_stage_parse(st, buf, buflen, off, caplen, wirelen, linktype, start + k,
                               &metas[base + k], &rcs[base + k], &hs[base + k])
        if 0 <= wi + 1 < nw:
            start = (wi + 1) * WINDOW
            cnt = min(WINDOW, n - start)
            base = ((wi + 1) & 3) * WINDOW
            for k in range(cnt):
                # both cache lines of the record: keys and state, then timer and dest
                rec = dp_stage_record(st, rcs[base + k], hs[base + k])
                if rec != NULL:
                    FV_PREFETCH(rec)
                    FV_PREFETCH_W(rec + 64)
        if wi < 0:
            continue
        start = wi * WINDOW
        cnt = min(WINDOW, n - start)
        base = (wi & 3) * WINDOW
        for k in range(base, base + cnt):
            j = start + k - base
            if ts[j] > st.now:
                st.now = ts[j]
            if st.now >= st.next_defense:
                update_defense(st)
                st.next_defense = st.now + NS
            if st.ct.heap_n and st.ct.heap_t[0] <= st.now:
                expire_due(st)
            st.last_dest = -1
            if rcs[k] == V_DROP_BAD_SLOT:
                v = V_DROP_BAD_SLOT
            else:
                v = dp_packet(st, buf + off[j], &metas[k], rcs[k], hs[k])
            verdict[j] = <uint8_t>v
            if aux != NULL:
                aux[j] = st.last_dest
            st.counts[v] += 1
            written += v < V_DROP_BASE
    return written


# -- the Python face ------------------------------------------------------------------------

cdef bytes _addr16(str addr, int* af):
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        af[0] = 4
        return ip.packed + bytes(12)
    af[0] = 6
    return ip.packed


cdef str _addr_str(const uint32_t* a, int af):
    cdef bytes raw = (<const uint8_t*>a)[:16]
    if af == 6:
        return str(ipaddress.IPv6Address(raw))
    return str(ipaddress.IPv4Address(raw[:4]))


cdef inline int _port(uint16_t be):
    return ((be & 0xff) << 8) | (be >> 8)


cdef inline uint16_t _port_be(int port):
    return <uint16_t>(((port & 0xff) << 8) | ((port >> 8) & 0xff))


cdef dict _stats(const Stats* s):
    return {"conns": s.conns, "inpkts": s.inpkts, "outpkts": s.outpkts,
            "inbytes": s.inbytes, "outbytes": s.outbytes}


PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTO_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP"}
FWD_NAMES = {FWD_MASQ: "masq", FWD_LOCALNODE: "local", FWD_TUNNEL: "tunnel", FWD_DROUTE: "route"}


cdef class Engine:
    """One IPVS director's data path and state. Configure it, then feed it batches.

    Not thread-safe; use one engine per core (shard flows by 5-tuple hash).
    """
    cdef EngineState st

    def __cinit__(self, unsigned int capacity=1 << 20, seed=None):
        memset(&self.st, 0, sizeof(EngineState))
        if capacity < 1 or capacity > (1 << 30):
            raise ValueError(f"capacity must be between 1 and 2**30, not {capacity}")
        if seed is None:
            import secrets
            seed = secrets.randbits(64)
        if ct_init(&self.st.ct, capacity, <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)) != 0:
            raise MemoryError(f"cannot allocate a connection table for {capacity} connections")
        self.st.frags = <FragEntry*>calloc(FRAG_SETS * FRAG_WAYS, sizeof(FragEntry))
        if self.st.frags == NULL:
            raise MemoryError("cannot allocate the fragment table")
        for i, t in enumerate(DEFAULT_TCP_TIMEOUTS):
            self.st.tcp_timeout[i] = t * NS
        self.st.udp_timeout = DEFAULT_UDP_TIMEOUT * NS
        for i in range(SCTP_S_LAST):
            self.st.sctp_timeout[i] = <int64_t>fv_sctp_timeouts[i] * NS
        self.st.truncated_balance = True
        self.st.conn_reuse_mode = 1
        self.st.tun_mtu = 1500
        self.st.drop_entry_mode = 1
        self.st.amemthresh = max(1, capacity // 8)
        self.st.am_droprate = 10
        self.st.rnd = 0x9E3779B97F4A7C15      # fixed: results never depend on the hash seed
        self.st.next_defense = -(1 << 62)

    def __dealloc__(self):
        cdef int32_t i
        cdef SchedOps* ops
        ct_destroy(&self.st.ct)
        if self.st.svcs != NULL:
            for i in range(self.st.nsvcs):
                ops = <SchedOps*>self.st.svcs[i].sched
                if ops != NULL and ops.done_svc != NULL:
                    ops.done_svc(&self.st.svcs[i], self.st.dests)
                free(self.st.svcs[i].dest_list)
        free(self.st.svcs)
        free(self.st.dests)
        free(self.st.svc_hash)
        free(self.st.frags)
        free(self.st.marks)

    # -- options -------------------------------------------------------------------------
    def set_options(self, *, keep_ttl=None, director_view=None, truncated=None,
                    expire_nodest_conn=None, conn_reuse_mode=None,
                    expire_quiescent_template=None, tunnel_mtu=None, drop_entry=None,
                    drop_packet=None, amemthresh=None, am_droprate=None, sloppy_sctp=None,
                    secure_tcp=None):
        """Options named after the kernel's sysctls. Flood defenses: ``drop_entry``,
        ``drop_packet`` and ``secure_tcp`` are 0 (off), 1 (automatic: on while fewer than ``amemthresh``
        connection slots are free) or 3 (always); fastvs turns drop_entry on
        automatically by default (the kernel's default is off, but its table is not
        bounded the way fastvs's is)."""
        if keep_ttl is not None:
            self.st.keep_ttl = bool(keep_ttl)
        if director_view is not None:
            self.st.director_view = bool(director_view)
        if truncated is not None:
            if truncated not in ("balance", "drop"):
                raise ValueError("truncated must be 'balance' or 'drop'")
            self.st.truncated_balance = truncated == "balance"
        if expire_nodest_conn is not None:
            self.st.expire_nodest_conn = bool(expire_nodest_conn)
        if conn_reuse_mode is not None:
            self.st.conn_reuse_mode = int(conn_reuse_mode)
        if expire_quiescent_template is not None:
            self.st.expire_quiescent_template = bool(expire_quiescent_template)
        if tunnel_mtu is not None:
            if not 68 <= tunnel_mtu <= 65535:
                raise ValueError("tunnel MTU must be between 68 and 65535")
            self.st.tun_mtu = tunnel_mtu
        for name, val in (("drop_entry", drop_entry), ("drop_packet", drop_packet),
                          ("secure_tcp", secure_tcp)):
            if val is not None and val not in (0, 1, 2, 3):
                raise ValueError(f"{name} must be 0, 1 or 3")
        if drop_entry is not None:
            self.st.drop_entry_mode = 1 if drop_entry == 2 else drop_entry
        if drop_packet is not None:
            self.st.drop_packet_mode = 1 if drop_packet == 2 else drop_packet
        if secure_tcp is not None:
            self.st.secure_tcp_mode = 1 if secure_tcp == 2 else secure_tcp
        if sloppy_sctp is not None:
            self.st.sloppy_sctp = bool(sloppy_sctp)
        if amemthresh is not None:
            self.st.amemthresh = max(1, int(amemthresh))
        if am_droprate is not None:
            self.st.am_droprate = max(1, int(am_droprate))
        self.st.next_defense = -(1 << 62)

    def set_marks(self, rules):
        """The firewall-mark classifier: ``rules`` is a list of (mark, proto, network,
        port) with proto "tcp"/"udp"/"any", network an ipaddress network, port 0 for
        any. Like a list of iptables -j MARK rules, the last match wins."""
        cdef MarkRule* arr = <MarkRule*>calloc(max(1, len(rules)), sizeof(MarkRule))
        cdef int i
        cdef bytes a, mk
        if arr == NULL:
            raise MemoryError()
        for i, (mark, proto, net, port) in enumerate(rules):
            arr[i].mark = mark
            arr[i].proto = 0 if proto in ("any", "all", None) else PROTO_NUMBERS[proto]
            arr[i].af = net.version
            arr[i].port_be = _port_be(port)
            if net.version == 4:
                a = net.network_address.packed + bytes(12)
                mk = net.netmask.packed + bytes(12)
            else:
                a = net.network_address.packed
                mk = net.netmask.packed
            memcpy(arr[i].addr, <const char*>a, 16)
            memcpy(arr[i].mask, <const char*>mk, 16)
        free(self.st.marks)
        self.st.marks = arr
        self.st.nmarks = len(rules)

    def set_timeouts(self, tcp=0, tcpfin=0, udp=0):
        """ipvsadm --set: 0 leaves a value as it is."""
        if tcp:
            self.st.tcp_timeout[TCP_S_ESTABLISHED] = int(tcp) * NS
        if tcpfin:
            self.st.tcp_timeout[TCP_S_FIN_WAIT] = int(tcpfin) * NS
        if udp:
            self.st.udp_timeout = int(udp) * NS

    def set_state_timeout(self, str state, seconds):
        """Set one TCP state's timeout (the kernel's /proc/sys/net/ipv4/vs tables)."""
        self.st.tcp_timeout[TCP_TIMEOUT_NAMES.index(state.upper())] = int(seconds) * NS

    def timeouts(self):
        out = {name: self.st.tcp_timeout[i] // NS for i, name in enumerate(TCP_TIMEOUT_NAMES)}
        out["UDP"] = self.st.udp_timeout // NS
        for i, name in enumerate(SCTP_STATE_NAMES):
            out["SCTP_" + name] = self.st.sctp_timeout[i] // NS
        return out

    # -- configuration --------------------------------------------------------------------
    def add_service(self, str proto, str addr, int port, sched not None,
                    unsigned int persist_timeout=0, unsigned int flags=0,
                    unsigned int fwmark=0, netmask=None):
        """Add a virtual service; returns its index. ``sched`` is a scheduler capsule
        from fastvs.sched.get(). ``proto`` "fwmark" with ``fwmark`` > 0 makes a
        firewall-mark service (``addr`` then only gives the family). ``flags`` are
        IP_VS_SVC_F_* (1 = persistent, with ``persist_timeout`` seconds and the
        ``netmask``: an IPv4 mask as an int, or an IPv6 prefix length)."""
        cdef int af = 4
        cdef bytes a16 = _addr16(addr, &af)
        cdef uint8_t p = 0 if proto == "fwmark" else PROTO_NUMBERS[proto]
        cdef Service* s
        cdef SchedOps* ops = <SchedOps*>PyCapsule_GetPointer(sched, b"fastvs.SchedOps")
        cdef bytes mask16
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        if proto == "fwmark":
            if fwmark == 0:
                raise ValueError("a firewall-mark service needs a mark > 0")
            for i in range(self.st.nsvcs):
                if self.st.svcs[i].fwmark == fwmark and self.st.svcs[i].af == af:
                    raise ValueError(f"service fwmark {fwmark} exists")
            a16 = bytes(16)
            port = 0
        elif svc_find(&self.st, p, <const uint32_t*><const char*>a16, _port_be(port)) >= 0:
            raise ValueError(f"service {proto} {addr}:{port} exists")
        if af == 4:
            mask16 = (0xFFFFFFFF if netmask is None else int(netmask)).to_bytes(4, "big") + bytes(12)
        else:
            plen = 128 if netmask is None else int(netmask)
            mask16 = (((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)).to_bytes(16, "big")
        if self.st.nsvcs == self.st.cap_svcs:
            self._grow_svcs()
        s = &self.st.svcs[self.st.nsvcs]
        memset(s, 0, sizeof(Service))
        memcpy(s.addr, <const char*>a16, 16)
        s.af = af
        s.proto = p
        s.port_be = _port_be(port)
        s.persist_timeout = persist_timeout
        s.flags = flags
        s.fwmark = fwmark
        memcpy(s.netmask, <const char*>mask16, 16)
        s.sched = ops
        s.sched_cursor = -1
        s.dest_list = NULL
        if fwmark:
            self.st.nfwm_svcs += 1
        elif port == 0:
            self.st.nnull_svcs += 1
        self.st.nsvcs += 1
        if ops.init_svc != NULL:
            ops.init_svc(s, self.st.dests)
        self._rehash_svcs()
        return self.st.nsvcs - 1

    def add_dest(self, int svc, str addr, int port, int weight=1, str fwd="masq",
                 unsigned int u_threshold=0, unsigned int l_threshold=0, bint at_head=True):
        """Add a real server to a service; returns its index. ``at_head`` links it at
        the head of the list, as the kernel does (ipvsadm -a)."""
        cdef int af = 4
        cdef bytes a16 = _addr16(addr, &af)
        cdef Service* s
        cdef Dest* d
        cdef int32_t di
        cdef int32_t* lst
        self._check_svc(svc)
        if weight < 0:
            raise ValueError("weight must not be negative")
        if l_threshold > u_threshold and u_threshold:
            raise ValueError("lower threshold above upper threshold")
        if self.st.ndests == self.st.cap_dests:
            self._grow_dests()
        di = self.st.ndests
        d = &self.st.dests[di]
        memset(d, 0, sizeof(Dest))
        memcpy(d.addr, <const char*>a16, 16)
        d.af = af
        d.port_be = _port_be(port)
        d.weight = weight
        d.fwd = {"masq": FWD_MASQ, "route": FWD_DROUTE, "tunnel": FWD_TUNNEL,
                 "local": FWD_LOCALNODE}[fwd]
        d.u_threshold = u_threshold
        d.l_threshold = l_threshold
        d.flags = DEST_F_AVAILABLE
        d.svc = svc
        self.st.ndests += 1
        s = &self.st.svcs[svc]
        lst = <int32_t*>realloc(s.dest_list, (s.ndests + 1) * sizeof(int32_t))
        if lst == NULL:
            raise MemoryError()
        s.dest_list = lst
        if at_head:
            for i in range(s.ndests, 0, -1):
                lst[i] = lst[i - 1]
            lst[0] = di
        else:
            lst[s.ndests] = di
        s.ndests += 1
        self._dest_changed(svc)
        return di

    def edit_dest(self, int dest, weight=None, u_threshold=None, l_threshold=None):
        """ipvsadm -e: change a real server's weight or thresholds in place."""
        cdef Dest* d
        self._check_dest(dest)
        d = &self.st.dests[dest]
        if weight is not None:
            if weight < 0:
                raise ValueError("weight must not be negative")
            d.weight = weight
        if u_threshold is not None:
            if u_threshold == 0 or u_threshold > d.u_threshold:
                d.flags &= ~DEST_F_OVERLOAD
            d.u_threshold = u_threshold
        if l_threshold is not None:
            d.l_threshold = l_threshold
        self._dest_changed(d.svc)

    def remove_dest(self, int dest):
        """ipvsadm -d: unlink a real server. Its connections stay until they expire;
        their packets are dropped, or with expire_nodest_conn the connection ends."""
        cdef Dest* d
        cdef Service* s
        cdef int32_t i, j = 0
        self._check_dest(dest)
        d = &self.st.dests[dest]
        if not (d.flags & DEST_F_AVAILABLE):
            raise ValueError("real server already removed")
        d.flags &= ~DEST_F_AVAILABLE
        s = &self.st.svcs[d.svc]
        for i in range(s.ndests):
            if s.dest_list[i] != dest:
                s.dest_list[j] = s.dest_list[i]
                j += 1
        s.ndests = j
        self._dest_changed(d.svc)

    cdef _dest_changed(self, int svc):
        cdef Service* s = &self.st.svcs[svc]
        cdef SchedOps* ops = <SchedOps*>s.sched
        if ops.dest_changed != NULL:
            ops.dest_changed(s, self.st.dests)

    cdef _check_svc(self, int svc):
        if not 0 <= svc < self.st.nsvcs:
            raise IndexError(f"no service {svc}")

    cdef _check_dest(self, int dest):
        if not 0 <= dest < self.st.ndests:
            raise IndexError(f"no real server {dest}")

    cdef _grow_svcs(self):
        cdef int32_t cap = self.st.cap_svcs * 2 if self.st.cap_svcs else 8
        cdef Service* p = <Service*>realloc(self.st.svcs, cap * sizeof(Service))
        if p == NULL:
            raise MemoryError()
        self.st.svcs = p
        self.st.cap_svcs = cap

    cdef _grow_dests(self):
        cdef int32_t cap = self.st.cap_dests * 2 if self.st.cap_dests else 16
        cdef Dest* p = <Dest*>realloc(self.st.dests, cap * sizeof(Dest))
        if p == NULL:
            raise MemoryError()
        self.st.dests = p
        self.st.cap_dests = cap

    cdef _rehash_svcs(self):
        cdef uint64_t nb = 16
        cdef int32_t i
        cdef uint64_t pos
        cdef uint32_t zero[4]
        cdef int32_t* tbl
        memset(zero, 0, sizeof(zero))
        while nb < <uint64_t>self.st.nsvcs * 4:
            nb <<= 1
        tbl = <int32_t*>calloc(nb, sizeof(int32_t))
        if tbl == NULL:
            raise MemoryError()
        for i in range(self.st.nsvcs):
            if self.st.svcs[i].fwmark:
                continue
            pos = fv_hash_key(self.st.svcs[i].addr, zero, self.st.svcs[i].port_be, 0,
                              self.st.svcs[i].proto, self.st.ct.seed) & (nb - 1)
            while tbl[pos]:
                pos = (pos + 1) & (nb - 1)
            tbl[pos] = i + 1
        free(self.st.svc_hash)
        self.st.svc_hash = tbl
        self.st.svc_mask = nb - 1

    # -- the data path ---------------------------------------------------------------------
    def process(self, uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] caplen,
                const uint32_t[::1] wirelen, const int64_t[::1] ts,
                const uint16_t[::1] linktype, uint8_t[::1] verdict, int32_t[::1] aux=None):
        """Run a batch through the director in place. Returns how many packets are
        to be written out (verdict < 64); ``verdict`` says what happened to each.
        ``aux``, if given, receives each forwarded packet's real server (-1 for none),
        which the output stage needs for direct routing and tunnelling."""
        cdef Py_ssize_t n = off.shape[0]
        cdef Py_ssize_t written
        cdef int32_t* auxp = NULL
        if (caplen.shape[0] != n or wirelen.shape[0] != n or ts.shape[0] != n
                or linktype.shape[0] != n or verdict.shape[0] < n):
            raise ValueError("batch arrays disagree in length")
        if aux is not None:
            if aux.shape[0] < n:
                raise ValueError("aux is shorter than the batch")
            if n:
                auxp = &aux[0]
        if n == 0:
            return 0
        cdef uint8_t* b = &buf[0] if buf.shape[0] else NULL
        with nogil:
            written = dp_run(&self.st, b, buf.shape[0], &off[0], &caplen[0], &wirelen[0],
                             &ts[0], &linktype[0], &verdict[0], auxp, n)
        return written

    def dest_table(self):
        """Every real server's address (16 bytes each, IPv4 in the first 4) and family,
        as numpy arrays indexed like ``aux``."""
        import numpy as np
        addrs = np.zeros((max(1, self.st.ndests), 16), dtype=np.uint8)
        fams = np.zeros(max(1, self.st.ndests), dtype=np.uint8)
        cdef int32_t i
        for i in range(self.st.ndests):
            addrs[i] = np.frombuffer((<const uint8_t*>self.st.dests[i].addr)[:16], dtype=np.uint8)
            fams[i] = self.st.dests[i].af
        return addrs, fams

    def advance(self, int64_t now_ns):
        """Move the clock to ``now_ns`` (never backwards) and expire what is due."""
        if not self.st.started or now_ns > self.st.now:
            self.st.now = now_ns
            self.st.started = True
        with nogil:
            expire_due(&self.st)

    # -- reading state -----------------------------------------------------------------------
    @property
    def now(self):
        return self.st.now

    @property
    def capacity(self):
        return self.st.ct.capacity

    @property
    def conn_count(self):
        return self.st.ct.count

    @property
    def entries_dropped(self):
        """Connections the drop_entry defense removed."""
        return self.st.entries_dropped

    def counters(self):
        """Packets per verdict code since the engine was made: {code: count}."""
        return {i: self.st.counts[i] for i in range(V_NCODES) if self.st.counts[i]}

    cdef void _sum_stats(self, int32_t svc, Stats* out):
        cdef int32_t i
        memset(out, 0, sizeof(Stats))
        for i in range(self.st.ndests):
            if svc < 0 or self.st.dests[i].svc == svc:
                out.conns += self.st.dests[i].stats.conns
                out.inpkts += self.st.dests[i].stats.inpkts
                out.outpkts += self.st.dests[i].stats.outpkts
                out.inbytes += self.st.dests[i].stats.inbytes
                out.outbytes += self.st.dests[i].stats.outbytes

    def total_stats(self):
        cdef Stats t
        self._sum_stats(-1, &t)
        return _stats(&t)

    def services(self):
        """Services with their real servers in list order, stats and counters."""
        out = []
        cdef int32_t i, j
        cdef Service* s
        for i in range(self.st.nsvcs):
            s = &self.st.svcs[i]
            reals = []
            for j in range(s.ndests):
                reals.append(self._dest_info(s.dest_list[j]))
            out.append({
                "index": i,
                "proto": "fwmark" if s.fwmark else PROTO_NAMES[s.proto].lower(),
                "fwmark": s.fwmark,
                "addr": _addr_str(s.addr, s.af),
                "port": _port(s.port_be),
                "af": s.af,
                "scheduler": (<SchedOps*>s.sched).name.decode(),
                "persistent": s.persist_timeout,
                "stats": self._svc_stats(i),
                "reals": reals,
            })
        return out

    cdef dict _svc_stats(self, int32_t svc):
        cdef Stats t
        self._sum_stats(svc, &t)
        return _stats(&t)

    def dest_info(self, int dest):
        self._check_dest(dest)
        return self._dest_info(dest)

    cdef dict _dest_info(self, int32_t di):
        cdef Dest* d = &self.st.dests[di]
        return {
            "index": di,
            "addr": _addr_str(d.addr, d.af),
            "port": _port(d.port_be),
            "af": d.af,
            "fwd": FWD_NAMES[d.fwd],
            "weight": d.weight,
            "activeconns": d.activeconns,
            "inactconns": d.inactconns,
            "persistconns": d.persistconns,
            "available": bool(d.flags & DEST_F_AVAILABLE),
            "overloaded": bool(d.flags & DEST_F_OVERLOAD),
            "u_threshold": d.u_threshold,
            "l_threshold": d.l_threshold,
            "stats": _stats(&d.stats),
        }

    def connections(self):
        """Every live connection (ipvsadm -L -n -c), as dicts; expires in seconds left."""
        out = []
        cdef uint32_t i
        cdef Conn* c
        # every live connection has one timer-heap entry: walk those, not the table
        for i in range(self.st.ct.heap_n):
            c = &self.st.ct.conns[self.st.ct.heap_i[i]]
            if not (c.in_use & 2):
                continue
            out.append(self._conn_info(c))
        return out

    cdef dict _conn_info(self, Conn* c):
        if c.flags & CONN_F_TEMPLATE:
            state = "NONE"
        elif c.proto == IPPROTO_TCP_:
            state = TCP_TIMEOUT_NAMES[c.state]
        elif c.proto == IPPROTO_SCTP_:
            state = SCTP_STATE_NAMES[c.state] if c.state < SCTP_S_LAST else "ERR!"
        else:
            state = PROTO_NAMES.get(c.proto, "?")
        return {
            "proto": PROTO_NAMES.get(c.proto, "IP"),
            "template": bool(c.flags & CONN_F_TEMPLATE),
            "caddr": _addr_str(c.caddr, c.af), "cport": _port(c.cport_be),
            "vaddr": _addr_str(c.vaddr, c.af), "vport": _port(c.vport_be),
            "daddr": _addr_str(c.daddr, c.af), "dport": _port(c.dport_be),
            "state": state,
            "expires_ns": max(0, c.expires - self.st.now),
            "dest": c.dest,
            "active": not (c.flags & CONN_F_INACTIVE),
        }

    def lookup(self, str proto, str caddr, int cport, str vaddr, int vport):
        """The connection of client caddr:cport to vaddr:vport, or None."""
        cdef PacketMeta m
        cdef int af = 4, direction = 0
        cdef bytes a = _addr16(caddr, &af)
        cdef bytes b = _addr16(vaddr, &af)
        memset(&m, 0, sizeof(m))
        memcpy(m.saddr, <const char*>a, 16)
        memcpy(m.daddr, <const char*>b, 16)
        m.sport_be = _port_be(cport)
        m.dport_be = _port_be(vport)
        m.proto = PROTO_NUMBERS[proto]
        m.af = af
        cdef uint32_t idx = ct_lookup(&self.st.ct, &m, ct_hash_pkt(&self.st.ct, &m), &direction)
        if idx == CT_NONE or direction != CT_DIR_IN:
            return None
        return self._conn_info(&self.st.ct.conns[idx])
