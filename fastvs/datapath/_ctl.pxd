# cython: language_level=3
"""What the data path reads of the control plane (the role of ip_vs_ctl.c): the
service table and its lookup, the firewall-mark classifier that feeds it, and the
flood defenses (update_defense_level, ip_vs_random_dropentry, ip_vs_todrop).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int32_t
from fastvs.datapath._types cimport *
from fastvs.datapath._conntab cimport addr_eq, fv_hash_key
from fastvs.datapath._state cimport EngineState, MarkRule, NS
from fastvs.datapath._conn cimport conn_expire_now
from fastvs.datapath._proto_sctp cimport SCTP_S_INIT1, SCTP_S_INIT, SCTP_S_ESTABLISHED


# -- services ---------------------------------------------------------------------------

cdef inline cold_i32 svc_find(const EngineState* st, uint8_t proto, const uint32_t* addr,
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


cdef enum:
    PORT_FTP_BE = 0x1500       # 21 (FTPPORT), as it lies in memory (network order)
    PORT_FTPDATA_BE = 0x1400   # 20 (FTPDATA)


cdef inline bint ftp_data_port(uint16_t port_be) noexcept nogil:
    """ip_vs_service_find's FTP data test: port 20, or one that needs no privilege to
    bind (not inet_port_requires_bind_service: at or above ip_unprivileged_port_start,
    1024 by default)."""
    return port_be == PORT_FTPDATA_BE or (((port_be & 0xff) << 8) | (port_be >> 8)) >= 1024


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
    """ip_vs_service_find: by firewall mark first, then <proto, addr, port>, then (TCP
    to an FTP data port, while a port-21 service exists) the VIP's FTP service, then
    the catch-all port zero."""
    cdef int32_t s, i
    fwmark[0] = 0
    if st.nfwm_svcs and st.nmarks:
        fwmark[0] = classify(st, m)
        if fwmark[0]:
            for i in range(st.nsvcs):
                if st.svcs[i].fwmark == fwmark[0] and st.svcs[i].af == m.af:
                    return i
    s = svc_find(st, m.proto, m.daddr, m.dport_be)
    if s < 0 and st.nftp_svcs and m.proto == IPPROTO_TCP_ and ftp_data_port(m.dport_be):
        # with a service on port 21 (ftpsvc_counter), TCP to the VIP's port 20 or to an
        # unprivileged port may be an FTP data connection: the FTP service takes it
        s = svc_find(st, m.proto, m.daddr, PORT_FTP_BE)
    if s < 0 and st.nnull_svcs:
        s = svc_find(st, m.proto, m.daddr, 0)
    return s


cdef inline bint is_local_addr(const EngineState* st, const uint32_t* addr) noexcept nogil:
    cdef int32_t i
    for i in range(st.nsvcs):
        if addr_eq(st.svcs[i].addr, addr):
            return True
    return False


# -- flood defenses -------------------------------------------------------------------

cdef inline bint todrop_entry(EngineState* st, const Conn* c) noexcept nogil:
    """todrop_entry (ip_vs_conn.c, 6.1): an entry idle for at least 60 s whose
    incoming packets number i in 1..8 is dropped by a countdown per i (the kernel's
    static signed char todrop_counter[9], rates {0, 1, ..., 8}): every i-th such
    entry goes, so the ones with fewer packets go first. With 0 packets (rate 0) or
    more than 8, never."""
    cdef uint32_t i
    # time_before(cp->timeout + jiffies, cp->timer.expires + 60 * HZ): idle < 60 s
    if st.now + c.timeout < c.expires + 60 * NS:
        return False
    i = c.in_pkts
    if i < 1 or i > 8:
        return False
    st.todrop_counter[i] -= 1
    if st.todrop_counter[i] > 0:
        return False
    st.todrop_counter[i] = <int8_t>i
    return True


cdef inline void update_defense(EngineState* st) noexcept nogil:
    """update_defense_level + the drop_entry part of defense_work_handler, once a
    second: with few free slots left, refuse some new connections (drop_packet) and
    drop random entries (drop_entry, ip_vs_random_dropentry)."""
    cdef uint32_t avail = st.ct.capacity - st.ct.count
    cdef bint low = avail < st.amemthresh
    cdef uint32_t _, idx, nscan
    cdef Conn* c
    # drop_packet: mode 3 sets the rate only (the counter runs on from where it is,
    # so the first new connection after the switch is refused: 0 - 1 is not > 0);
    # mode 1 with memory low re-arms the counter to the rate on every tick
    if st.drop_packet_mode == 3:
        st.drop_rate = <int32_t>st.am_droprate
    elif st.drop_packet_mode == 1 and low:
        st.drop_rate = <int32_t>(st.amemthresh // (st.amemthresh - avail))
        st.drop_counter = st.drop_rate
    else:
        st.drop_rate = 0
    st.secure_tcp_on = st.secure_tcp_mode == 3 or (st.secure_tcp_mode == 1 and low)
    st.drop_entry_on = st.drop_entry_mode == 3 or (st.drop_entry_mode == 1 and low)
    if not st.drop_entry_on:
        return
    # ip_vs_random_dropentry: look at 1/32 of the table at random. An entry that
    # controls others stays; a template goes unless assured (one of a one-packet
    # service by todrop_entry); TCP in SYN_RECV/SYNACK and SCTP in INIT1/INIT go, in
    # ESTABLISHED by todrop_entry; any other protocol's entry by todrop_entry
    nscan = st.ct.capacity >> 5
    if nscan == 0:
        nscan = st.ct.capacity
    for _ in range(nscan):
        st.rnd ^= st.rnd << 13
        st.rnd ^= st.rnd >> 7
        st.rnd ^= st.rnd << 17
        idx = <uint32_t>(st.rnd % st.ct.capacity)
        c = &st.ct.conns[idx]
        if not (c.in_use & 2) or c.n_control:
            continue
        if c.in_use & 4:
            if c.svc >= 0 and st.svcs[c.svc].flags & SVC_F_ONEPACKET:
                if not todrop_entry(st, c):
                    continue
            elif c.state & 1:                   # IP_VS_CTPL_S_ASSURED
                continue
        elif c.proto == IPPROTO_TCP_:
            if c.state == TCP_S_ESTABLISHED:
                if not todrop_entry(st, c):
                    continue
            elif c.state != TCP_S_SYN_RECV and c.state != TCP_S_SYNACK:
                continue
        elif c.proto == IPPROTO_SCTP_:
            if c.state == SCTP_S_ESTABLISHED:
                if not todrop_entry(st, c):
                    continue
            elif c.state != SCTP_S_INIT1 and c.state != SCTP_S_INIT:
                continue
        elif not todrop_entry(st, c):
            continue
        c.timeout = 0               # ip_vs_conn_del: the control chain goes too
        conn_expire_now(st, idx)
        st.entries_dropped += 1


cdef inline bint todrop(EngineState* st) noexcept nogil:
    """ip_vs_todrop (include/net/ip_vs.h): with drop_rate N, one new connection in N is
    refused. The counter is a signed int, as the kernel's: it counts down, and at or
    below zero the packet is dropped and the counter re-armed to the rate."""
    if not st.drop_rate:
        return False
    st.drop_counter -= 1
    if st.drop_counter > 0:
        return False
    st.drop_counter = st.drop_rate
    return True
