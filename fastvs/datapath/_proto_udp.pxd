# cython: language_level=3
"""UDP for IPVS (the role of net/netfilter/ipvs/ip_vs_proto_udp.c, Linux 6.1): one
state with its timeout, every datagram may make a connection, and the port rewrite
with its checksum update (udp_fast_csum_update), except for a datagram that arrived
without a checksum (0), which gets a full one as udp_dnat_handler does, a computed 0
being sent as 0xFFFF (RFC 768).

Everything is reached through ``udp_do`` (one operation code per member of struct
ip_vs_protocol, see ``_types.pxd``), registered in ``_proto.pxd``.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastvs.datapath._types cimport *
from fastvs.datapath._bytes cimport ldraw16, straw16
from fastvs.datapath._csum cimport csum_fold, csum_partial, csum_diff2, csum_apply, pseudo_sum

cdef extern from *:
    """
    /* udp_state_name_table[] and udp_timeouts[] (seconds) */
    static const char *const fv_udp_state_names[1] = {"UDP"};
    static const int fv_udp_timeouts[1] = {300};
    """
    const char* const fv_udp_state_names[1]
    const int fv_udp_timeouts[1]


cdef inline void udp_no_checksum(uint8_t* p, const PacketMeta* m) noexcept nogil:
    """A UDP datagram that came without a checksum: the kernel computes a full one
    over the datagram (pseudo-header with the new addresses, length = IP payload
    length); when the payload is not all here (snap length, fragments) it is left
    with "no checksum"."""
    cdef uint8_t* th = p + m.l4off
    cdef uint32_t l4len
    cdef uint64_t s
    cdef uint16_t check
    if m.cut or m.frag != 0:
        return
    l4len = m.l3len - (m.l4off - m.l3off)
    s = csum_partial(th, l4len, 0) + pseudo_sum(p + m.l3off, m.af, l4len, IPPROTO_UDP_)
    check = <uint16_t>~csum_fold(s)
    if check == 0:
        check = 0xffff
    straw16(th + 6, check)


cdef inline void udp_port_rewrite(uint8_t* p, const PacketMeta* m, uint64_t addr_diff,
                                  uint16_t old_port, uint16_t new_port,
                                  int port_off) noexcept nogil:
    cdef uint8_t* th = p + m.l4off
    cdef uint16_t check
    straw16(th + port_off, new_port)
    check = ldraw16(th + 6)
    if check == 0:
        udp_no_checksum(p, m)
        return
    check = csum_apply(check, addr_diff + csum_diff2(old_port, new_port))
    if check == 0:
        check = 0xffff          # CSUM_MANGLED_0: 0 would mean "no checksum"
    straw16(th + 6, check)


cdef inline int udp_op_parse(ProtoArgs* a) noexcept nogil:
    """the transport header: ports and flags into ``a.m``; PKT_OK or a verdict"""
    if a.l4 + 8 > a.dgram_end:
        return V_DROP_L4_MALFORMED
    if a.l4 + 8 > a.caplen:
        return V_DROP_L4_TRUNCATED
    a.m.tcpflags = 0
    a.m.sport_be = ldraw16(a.p + a.l4)
    a.m.dport_be = ldraw16(a.p + a.l4 + 2)
    return PKT_OK


cdef inline int udp_op_state(ProtoArgs* a) noexcept nogil:
    """state_transition: the next state (and ``a.c``'s flags)"""
    return UDP_S_NORMAL


cdef inline int udp_op_active(ProtoArgs* a) noexcept nogil:
    """does state ``a.arg`` count as an active connection?"""
    return False            # a UDP connection is always inactive


cdef inline int udp_op_nat(ProtoArgs* a) noexcept nogil:
    """snat/dnat_handler: write the port, fix the checksum"""
    udp_port_rewrite(a.p, a.m, a.addr_diff, a.old_port, a.new_port, a.port_off)
    return 0


cdef inline int udp_op_schedule(ProtoArgs* a) noexcept nogil:
    """conn_schedule: 0 when the packet may make a connection, else its verdict"""
    return 0                # udp_conn_schedule: any datagram


cdef inline int udp_op_is_new_conn(ProtoArgs* a) noexcept nogil:
    """is_new_conn: the packet opens a connection"""
    return False


cdef inline int udp_op_new_conn_expected(ProtoArgs* a) noexcept nogil:
    """is_new_conn_expected: ``a.c`` may be replaced by a new connection"""
    return False


cdef inline int udp_op_info(ProtoArgs* a) noexcept nogil:
    """the protocol's name, states and default timeouts; returns its number"""
    a.name = b"udp"
    a.nstates = 1
    a.state_names = fv_udp_state_names
    a.timeouts = fv_udp_timeouts
    return IPPROTO_UDP_
