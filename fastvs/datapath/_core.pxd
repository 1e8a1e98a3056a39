# cython: language_level=3
"""The per-packet path (the role of ip_vs_core.c): a packet of a known connection, a
reply (handle_response), ICMP errors about a connection (ip_vs_in_icmp,
ip_vs_out_icmp), scheduling a new connection with persistence templates
(ip_vs_schedule, ip_vs_sched_persist), the state step (ip_vs_set_state) and the hand-off
to the connection's forwarding method. Traffic IPVS does not take is written unchanged
or, in the director's view, delivered locally or routed (not_ipvs).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memset, memcpy
from fastvs.datapath._types cimport *
from fastvs.datapath._conntab cimport (ct_hash_pkt, ct_lookup, ct_unhash, ct_expire_at, ct_expire_conn,
                                       ct_lookup_template, CT_NONE, CT_DIR_IN, CT_DIR_OUT)
from fastvs.datapath._state cimport EngineState, XmitArgs, NS
from fastvs.datapath._proto_sctp cimport SCTP_S_ESTABLISHED
from fastvs.datapath._proto cimport (PP_MAX_STATES, pp_state, pp_active, pp_is_new_conn, pp_new_conn_expected,
                                     pp_schedule, nat_snat, hop_decrease)
from fastvs.datapath._icmp cimport icmp_is_error, icmp_inner, icmp_csum_ok, icmp_nat
from fastvs.datapath._conn cimport (conn_new, conn_stats, conn_expire, conn_expire_now, template_ok,
                                    count_in, count_out)
from fastvs.datapath._ctl cimport svc_lookup, is_local_addr, todrop, PORT_FTP_BE, PORT_FTPDATA_BE
from fastvs.datapath._frag cimport frag_remember, frag_follow
from fastvs.datapath._fwd cimport fwd_xmit
from fastvs.datapath._sync cimport sync_in_packet, control_assure
from fastvs.sched._base cimport SchedOps


cdef inline void set_state(EngineState* st, Conn* c, int direction,
                           const PacketMeta* m) noexcept nogil:
    """ip_vs_set_state: the protocol's state transition, then the dest's counters
    (a connection moving between active and inactive states moves between them) and
    the new state's timeout."""
    cdef ProtoArgs a
    cdef int ix
    cdef uint8_t new_state
    cdef bint now_active
    cdef Dest* d
    a.c = c
    a.m = <PacketMeta*>m
    a.direction = direction
    a.arg = st.secure_tcp_on
    # (a connection exists only for a registered protocol: ix is slot and state)
    ix = pp_state(c.proto, &a)
    new_state = <uint8_t>(ix & (PP_MAX_STATES - 1))
    # the record's first line is written only on a change: an established flow's
    # packets leave it clean (no write-back of it from a large table)
    if new_state != c.state:
        if c.dest >= 0:
            d = &st.dests[c.dest]
            a.arg = new_state
            now_active = pp_active(c.proto, &a)
            if not (c.flags & CONN_F_INACTIVE) and not now_active:
                d.activeconns -= 1
                d.inactconns += 1
                c.flags |= CONN_F_INACTIVE
            elif (c.flags & CONN_F_INACTIVE) and now_active:
                d.activeconns += 1
                d.inactconns -= 1
                c.flags &= ~CONN_F_INACTIVE
        # ip_vs_control_assure_ct (set_tcp_state, set_sctp_state): into ESTABLISHED
        if c.control and ((c.proto == IPPROTO_TCP_ and new_state == TCP_S_ESTABLISHED)
                          or (c.proto == IPPROTO_SCTP_ and new_state == SCTP_S_ESTABLISHED)):
            control_assure(st, c)
        c.state = new_state
    c.timeout = (&st.timeout[0][0])[ix]


cdef inline int one_packet_mark(const Service* svc, const PacketMeta* m) noexcept nogil:
    """-1 for a UDP datagram of a one-packet service (IP_VS_CONN_F_ONE_PACKET: only
    UDP, ip_vs_schedule/ip_vs_sched_persist), else 0."""
    if FV_UNLIKELY(svc.flags & SVC_F_ONEPACKET) and m.proto == IPPROTO_UDP_:
        return -1
    return 0


cdef inline int leave(const Service* svc, const PacketMeta* m) noexcept nogil:
    """ip_vs_leave, when no connection could be made: packets for other ports of a VIP
    with an FTP service are not IPVS's ("not ipvs job to decide to drop the
    packets"); the rest is dropped (the kernel also sends ICMP port unreachable)."""
    if svc.port_be == PORT_FTP_BE and m.dport_be != PORT_FTP_BE:
        return V_PASS_NOT_SERVICE
    return V_DROP_NO_DEST


cdef inline int schedule(EngineState* st, int32_t s, PacketMeta* m, uint32_t fwmark,
                         uint32_t* out_idx) noexcept nogil:
    """ip_vs_todrop, then ip_vs_schedule / ip_vs_sched_persist: 0 with the new
    connection in ``out_idx`` (-1: a one-packet one), V_PASS_NOT_SERVICE, or a drop
    verdict."""
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
    # ip_vs_schedule: active FTP data from a real server (client port 20) is never
    # scheduled
    if m.sport_be == PORT_FTPDATA_BE:
        return V_PASS_NOT_SERVICE
    if not (svc.flags & SVC_F_PERSISTENT):
        # a non-persistent service takes its own port only (a port-21 service reached
        # by an FTP data port, a port-zero service: "port zero only supported in
        # persistent services")
        if m.dport_be != svc.port_be and not svc.fwmark:
            return leave(svc, m)
        di = ops.pick(svc, st.dests, m)
        if di < 0:
            return leave(svc, m)
        dport = st.dests[di].port_be if st.dests[di].port_be else m.dport_be
        idx = conn_new(st, s, di, m.proto, m.af, m.saddr, m.sport_be, m.daddr, m.dport_be,
                       dport, 0, 3 * NS)
        if idx == CT_NONE:
            return V_DROP_CONN_FULL
        conn_stats(st, &st.ct.conns[idx])
        out_idx[0] = idx
        return one_packet_mark(svc, m)
    # persistence: the template <proto, client net, 0, vaddr, vport> names the dest;
    # for an FTP service (port 21) vport is 0, so that its data connections (to port
    # 20 or an unprivileged port) share the control connection's template
    snet[0] = m.saddr[0] & svc.netmask[0]
    snet[1] = m.saddr[1] & svc.netmask[1]
    snet[2] = m.saddr[2] & svc.netmask[2]
    snet[3] = m.saddr[3] & svc.netmask[3]
    tproto = m.proto
    memcpy(tvaddr, m.daddr, 16)
    tvport = 0
    if m.dport_be == svc.port_be:
        if svc.port_be != PORT_FTP_BE:
            tvport = m.dport_be
    elif svc.fwmark:
        # <IPPROTO_IP, caddr, 0, fwmark, 0>
        tproto = 0
        memset(tvaddr, 0, 16)
        tvaddr[0] = ((fwmark & 0xff) << 24) | ((fwmark & 0xff00) << 8) \
            | ((fwmark >> 8) & 0xff00) | (fwmark >> 24)
    t = ct_lookup_template(&st.ct, tproto, snet, tvaddr, tvport)
    if t != CT_NONE and not template_ok(st, &st.ct.conns[t]):
        ct_unhash(&st.ct, t)        # invalidated; it goes when its timer runs
        t = CT_NONE
    if t == CT_NONE:
        di = ops.pick(svc, st.dests, m)
        if di < 0:
            return leave(svc, m)
        # the template's own port: the dest's, but 0 for FTP and port-zero services
        dport = 0
        if m.dport_be == svc.port_be and svc.port_be != PORT_FTP_BE:
            dport = st.dests[di].port_be
        t = conn_new(st, s, di, tproto, m.af, snet, 0, tvaddr, tvport,
                     dport, CONN_F_TEMPLATE, <int64_t>svc.persist_timeout * NS)
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
    return one_packet_mark(svc, m)


cdef inline cold_int one_packet(EngineState* st, uint8_t* p, PacketMeta* m,
                                uint32_t idx) noexcept nogil:
    """A UDP datagram of a one-packet service (-o, IP_VS_SVC_F_ONEPACKET): its
    connection (IP_VS_CONN_F_ONE_PACKET) is counted and used for this datagram only.
    The kernel never hashes it (ip_vs_conn_hash refuses it) and ip_vs_conn_put expires
    it at once (timer 0), so the next datagram of the same flow is scheduled anew and
    counts as another connection; replies find no connection."""
    cdef Conn* c = &st.ct.conns[idx]
    cdef XmitArgs xa
    cdef int v
    count_in(st, c, m.l3len, True)
    # (no ip_vs_set_state: UDP's leaves the state as it is, and the entry goes now)
    if not st.keep_ttl and m.ttl <= 1:
        v = V_DROP_TTL
    else:
        st.last_dest = c.dest
        xa.st = st
        xa.p = p
        xa.m = m
        xa.c = c
        v = fwd_xmit(c.fwd, &xa)
    # the tail of ip_vs_in_hook: a master's ip_vs_sync_conn skips the entry itself and
    # considers its template; otherwise only the template's in_pkts counts the packet
    if FV_UNLIKELY(st.sync != NULL):
        sync_in_packet(st, idx)
    elif c.control:
        st.ct.conns[c.control - 1].in_pkts += 1
    conn_expire(st, idx)        # unbinds it from its dest and its template
    return v


cdef inline cold_int not_ipvs(EngineState* st, uint8_t* p, const PacketMeta* m, int code) noexcept nogil:
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


cdef inline cold_int conn_schedule(EngineState* st, int32_t s, uint8_t* p, PacketMeta* m,
                                   uint32_t fwmark, uint32_t* out_idx) noexcept nogil:
    """The protocol's conn_schedule from the flood check on: ip_vs_todrop, then
    ip_vs_schedule / ip_vs_sched_persist. Returns 0 with the new connection in
    ``out_idx``, or the packet's verdict: a drop, not IPVS's, or (one-packet
    scheduling) the verdict of the datagram already sent."""
    cdef int rc = schedule(st, s, m, fwmark, out_idx)
    if FV_LIKELY(rc == 0):
        return 0
    if rc < 0:
        return one_packet(st, p, m, out_idx[0])      # (never 0: no verdict of xmit is)
    if rc == V_PASS_NOT_SERVICE:
        return not_ipvs(st, p, m, rc)
    return rc


cdef inline bint dest_available(const EngineState* st, const Conn* c) noexcept nogil:
    """ip_vs_in_stats / ip_vs_out_stats count only while the connection's real server
    is available (IP_VS_DEST_CF_AVAILABLE): not after it was removed."""
    return c.dest >= 0 and (st.dests[c.dest].flags & DEST_F_AVAILABLE) != 0


cdef inline int handle_response(EngineState* st, uint8_t* p, const PacketMeta* m,
                                uint32_t idx) noexcept nogil:
    """A real server's reply (ip_vs_out_hook -> handle_response), after ip_forward
    has checked and decremented the TTL. A connection that is not NAT skips the
    rewrite (after_nat) but is counted and steps its state all the same (its first
    reply clears the no-output mark), and the reply goes on as routed."""
    cdef Conn* c = &st.ct.conns[idx]
    cdef int v = V_FWD_OUT
    if not st.keep_ttl and m.ttl <= 1:
        return V_DROP_TTL
    if FV_LIKELY(c.fwd == FWD_MASQ):
        nat_snat(p, m, c, not st.keep_ttl)
        if m.frag == 2:
            frag_remember(st, m, idx, CT_DIR_OUT)
    else:
        if not st.keep_ttl:
            hop_decrease(p, m)
        v = V_PASS_NOT_MASQ
    if dest_available(st, c):
        count_out(st, c, m.l3len, True)
    set_state(st, c, DIR_OUTPUT, m)
    # udp_state_transition: a reply assures the connection's template
    if FV_UNLIKELY(c.control != 0) and c.proto == IPPROTO_UDP_:
        control_assure(st, c)
    ct_expire_conn(&st.ct, c, st.now + c.timeout)
    return v


cdef inline int icmp_packet(EngineState* st, uint8_t* p, PacketMeta* m) noexcept nogil:
    """ip_vs_in_icmp(_v6) / ip_vs_out_icmp(_v6): an error quoting a connection's
    packet is counted against that connection and translated (NAT) or sent on by the
    connection's own method (ip_vs_icmp_xmit: direct routing, tunnel); other ICMP is
    not IPVS's."""
    cdef PacketMeta im
    cdef uint32_t idx
    cdef int direction = CT_DIR_IN
    cdef Conn* c
    cdef XmitArgs xa
    if not icmp_is_error(m, p[m.l4off]):
        return not_ipvs(st, p, m, V_PASS_PROTO)
    if m.af == 6 and m.frag == 2:
        # ip_vs_in_icmp_v6 / ip_vs_out_icmp_v6: an error behind a fragment header
        # cannot be one ("they can't be fragmented"): dropped
        return V_DROP_L4_MALFORMED
    if icmp_inner(p, m, &im) != 0:
        return not_ipvs(st, p, m, V_PASS_PROTO)
    idx = ct_lookup(&st.ct, &im, ct_hash_pkt(&st.ct, &im), &direction)
    if idx == CT_NONE:
        return not_ipvs(st, p, m, V_PASS_PROTO)
    c = &st.ct.conns[idx]
    if c.fwd != FWD_MASQ:
        if direction == CT_DIR_OUT:
            # handle_response_icmp, after_nat: counted, then routed on as it is
            if not st.keep_ttl:
                if m.ttl <= 1:
                    return V_DROP_TTL
                hop_decrease(p, m)
            if dest_available(st, c):
                count_out(st, c, m.l3len, True)
            return V_PASS_NOT_MASQ
        # ip_vs_in_icmp: no checksum check (only NAT's), counted, and
        # ip_vs_icmp_xmit hands it to the connection's packet_xmit as it is, counting
        # it in the connection's in_pkts (ip_vs_xmit.c:1552-1559)
        if dest_available(st, c):
            count_in(st, c, m.l3len, True)
        c.in_pkts += 1
        if not st.keep_ttl and m.ttl <= 1:
            return V_DROP_TTL
        st.last_dest = c.dest
        xa.st = st
        xa.p = p
        xa.m = m
        xa.c = c
        return fwd_xmit(c.fwd, &xa)
    if not m.cut and not icmp_csum_ok(p, m):
        return V_DROP_ICMP_CSUM
    # ip_vs_in_icmp counts an error about a reply (ip_vs_in_stats, ip_vs_core.c:1811, v6 :1910)
    # before ip_vs_icmp_xmit's route drops it for its TTL; an error about a request
    # met ip_forward's TTL check before ip_vs_out_icmp
    if direction == CT_DIR_IN and dest_available(st, c):
        count_in(st, c, m.l3len, True)
    if not st.keep_ttl:
        if m.ttl <= 1:
            return V_DROP_TTL
        hop_decrease(p, m)
    if direction == CT_DIR_IN:
        # about a reply the client side could not take: on to the real server
        icmp_nat(p, m, &im, c, False)
        return V_FWD_IN
    if dest_available(st, c):
        count_out(st, c, m.l3len, True)
    icmp_nat(p, m, &im, c, True)
    return V_FWD_OUT


cdef inline hot_int dp_packet(EngineState* st, uint8_t* p, PacketMeta* mp, int rc,
                              uint64_t h) noexcept nogil:
    """One packet, already parsed (``rc``, ``mp``) and, if a candidate, hashed (``h``)."""
    cdef int direction
    cdef uint32_t idx, new_idx
    cdef int32_t s
    cdef uint32_t fwmark
    cdef Conn* c
    cdef ProtoArgs pa
    cdef XmitArgs xa
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
        pa.m = mp
        pa.c = c
        if FV_UNLIKELY(pp_is_new_conn(mp.proto, &pa)):
            pa.arg = st.conn_reuse_mode
            # ip_vs_in_hook (ip_vs_core.c:2018-2022): the quiesced server's check does
            # not depend on conn_reuse_mode
            if st.expire_nodest_conn and c.dest >= 0 and st.dests[c.dest].weight == 0:
                conn_expire_now(st, idx)
                idx = CT_NONE
            elif st.conn_reuse_mode and pp_new_conn_expected(c.proto, &pa):
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
        # the protocol's conn_schedule: may this packet make a connection?
        pa.m = mp
        pa.arg = st.sloppy
        rc = pp_schedule(mp.proto, &pa)
        if rc == V_PASS_NOT_SERVICE:
            return not_ipvs(st, p, mp, rc)
        if rc:
            return rc
        # (its own out-variable: idx, whose address is never taken, stays a register
        # on every packet's path instead of being stored for this one)
        rc = conn_schedule(st, s, p, mp, fwmark, &new_idx)
        if rc:
            return rc
        idx = new_idx

    c = &st.ct.conns[idx]
    count_in(st, c, mp.l3len, True)
    set_state(st, c, DIR_INPUT, mp)
    ct_expire_conn(&st.ct, c, st.now + c.timeout)
    # ip_vs_nat_xmit: the route to the real server decrements the TTL first
    if not st.keep_ttl and mp.ttl <= 1:
        rc = V_DROP_TTL
    else:
        if mp.frag == 2:
            frag_remember(st, mp, idx, CT_DIR_IN)
        st.last_dest = c.dest
        # the method bound to the connection when it was made (ip_vs_bind_xmit)
        xa.st = st
        xa.p = p
        xa.m = mp
        xa.c = c
        rc = fwd_xmit(c.fwd, &xa)
    # the tail of ip_vs_in_hook, whatever packet_xmit did: the packet counts toward the
    # sync threshold, and a master decides what to send (_sync.pxd)
    c.in_pkts += 1
    if FV_UNLIKELY(st.sync != NULL):
        sync_in_packet(st, idx)
    return rc
