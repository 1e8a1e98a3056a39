# cython: language_level=3
"""The registered protocols and the NAT rewrite (the roles of ip_vs_proto.c, which
keeps the table of struct ip_vs_protocol, and of the L3 half of the protocols'
snat/dnat handlers).

A protocol is one file, ``_proto_<name>.pxd``, with one ``<name>_op_<op>(args)``
per member of struct ip_vs_protocol (the operations listed in ``_types.pxd``:
parse, may-schedule, new connection, state transition, active states, NAT, names
and timeouts). Registering it is a slot in the enum below and its case in each
``pp_<op>`` dispatcher, all in this file: the only place in the data path that names
protocols. The dispatchers are inline tests of the protocol number, not calls
through a table of pointers, so the per-packet operations inline into the batch loop
(a call through a pointer cannot be inlined).

The NAT here rewrites the IP header (address, TTL, header checksum) and hands the
port and transport checksum to the protocol with the address change's checksum delta,
as the kernel's handlers do with the pseudo-header.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from fastvs.datapath._types cimport *
from fastvs.datapath._bytes cimport ld16, ldraw16, ldraw32, straw16, straw32
from fastvs.datapath._csum cimport csum_diff4, csum_diff2, csum_apply, csum_diff_addr
from fastvs.datapath._proto_tcp cimport (tcp_op_parse, tcp_op_schedule, tcp_op_is_new_conn,
                                         tcp_op_new_conn_expected, tcp_op_state, tcp_op_active,
                                         tcp_op_nat, tcp_op_info, tcp_port_rewrite)
from fastvs.datapath._proto_udp cimport (udp_op_parse, udp_op_schedule, udp_op_is_new_conn,
                                         udp_op_new_conn_expected, udp_op_state, udp_op_active,
                                         udp_op_nat, udp_op_info)
from fastvs.datapath._proto_sctp cimport (sctp_op_parse, sctp_op_schedule, sctp_op_is_new_conn,
                                          sctp_op_new_conn_expected, sctp_op_state, sctp_op_active,
                                          sctp_op_nat, sctp_op_info)

# The registered protocols' slots: timeouts and listings are kept per slot
cdef enum:
    PP_TCP = 0
    PP_UDP = 1
    PP_SCTP = 2
    PP_N = 3                 # how many are registered
    PP_MAX_STATES = 16       # room for any protocol's states (SCTP has 14)


# -- the registrations ---------------------------------------------------------------
# One dispatcher per operation, each a test of the protocol number: a protocol is
# registered by a slot above and one case in each (this block is the only place in
# the data path that names protocols). One dispatcher over all operations was tried
# first (an operation code as a parameter): GCC would not inline it, being the size
# of every operation of every protocol, and the established path went from 420 to
# 509 instructions per packet.

cdef inline int pp_parse(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """the transport header (ip_vs_fill_iphdr's ports; PKT_OK or a verdict)."""
    if FV_LIKELY(proto == IPPROTO_TCP_):
        a.slot = PP_TCP
        return tcp_op_parse(a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_op_parse(a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_op_parse(a)
    a.slot = 0
    return PP_NOPROTO


cdef inline int pp_schedule(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """conn_schedule: 0 when the packet may make a connection, else its verdict."""
    if FV_LIKELY(proto == IPPROTO_TCP_):
        a.slot = PP_TCP
        return tcp_op_schedule(a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_op_schedule(a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_op_schedule(a)
    a.slot = 0
    return PP_NOPROTO


cdef inline int pp_is_new_conn(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """is_new_conn: the packet opens a connection (a SYN, an INIT)."""
    if FV_LIKELY(proto == IPPROTO_TCP_):
        a.slot = PP_TCP
        return tcp_op_is_new_conn(a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_op_is_new_conn(a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_op_is_new_conn(a)
    a.slot = 0
    return PP_NOPROTO


cdef inline int pp_new_conn_expected(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """is_new_conn_expected: connection ``a.c`` may give way to a new one."""
    if FV_LIKELY(proto == IPPROTO_TCP_):
        a.slot = PP_TCP
        return tcp_op_new_conn_expected(a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_op_new_conn_expected(a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_op_new_conn_expected(a)
    a.slot = 0
    return PP_NOPROTO


cdef inline int pp_state(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """state_transition: the next state of ``a.c`` (its flags may change), as its
    place in a table kept per slot: slot * PP_MAX_STATES + state. TCP's slot is 0, so
    on the common path this is the state itself, and the timeout's load needs no
    arithmetic for the slot (a slot set in each case and read after them cost two
    instructions per packet)."""
    if FV_LIKELY(proto == IPPROTO_TCP_):
        return PP_TCP * PP_MAX_STATES + tcp_op_state(a)
    if proto == IPPROTO_UDP_:
        return PP_UDP * PP_MAX_STATES + udp_op_state(a)
    if proto == IPPROTO_SCTP_:
        return PP_SCTP * PP_MAX_STATES + sctp_op_state(a)
    return PP_NOPROTO


cdef inline int pp_active(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """does state ``a.arg`` count as an active connection?."""
    if FV_LIKELY(proto == IPPROTO_TCP_):
        a.slot = PP_TCP
        return tcp_op_active(a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_op_active(a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_op_active(a)
    a.slot = 0
    return PP_NOPROTO


cdef inline int pp_nat(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """snat/dnat_handler: the port and the transport checksum."""
    if proto == IPPROTO_TCP_:
        a.slot = PP_TCP
        return tcp_op_nat(a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_op_nat(a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_op_nat(a)
    a.slot = 0
    return PP_NOPROTO


cdef inline int pp_info(uint8_t proto, ProtoArgs* a) noexcept nogil:
    """name, states, state names and default timeouts; returns the number."""
    if proto == IPPROTO_TCP_:
        a.slot = PP_TCP
        return tcp_op_info(a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_op_info(a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_op_info(a)
    a.slot = 0
    return PP_NOPROTO


cdef inline bint pp_handles(uint8_t proto) noexcept nogil:
    """Is ``proto`` a registered protocol (one IPVS balances)?"""
    cdef ProtoArgs a
    return pp_info(proto, &a) != PP_NOPROTO


cdef inline void l4_rewrite(uint8_t* p, const PacketMeta* m, uint64_t addr_diff,
                            uint16_t old_port, uint16_t new_port, int port_off) noexcept nogil:
    """Patch the transport port at ``port_off`` (0 = source, 2 = destination) and
    fix the checksum for it and for the pseudo-header address that changed (already
    written into the IP header; ``addr_diff`` is that change's checksum delta)."""
    cdef ProtoArgs a
    a.p = p
    a.m = <PacketMeta*>m
    a.addr_diff = addr_diff
    a.old_port = old_port
    a.new_port = new_port
    a.port_off = port_off
    pp_nat(m.proto, &a)


cdef inline void nat_dnat(uint8_t* p, const PacketMeta* m, const Conn* c, bint dec_ttl) noexcept nogil:
    """Client -> real server: destination becomes RIP:rport (ip_vs_nat_xmit)."""
    if m.af == 4 and m.frag == 0:
        nat4(p, m, c.daddr[0], c.dport_be, 16, 2, dec_ttl)
    else:
        nat_rewrite(p, m, c.daddr, c.dport_be, 16, 2, dec_ttl)


cdef inline void nat_snat(uint8_t* p, const PacketMeta* m, const Conn* c, bint dec_ttl) noexcept nogil:
    """Real server -> client: source becomes VIP:vport (handle_response)."""
    if m.af == 4 and m.frag == 0:
        nat4(p, m, c.vaddr[0], c.vport_be, 12, 0, dec_ttl)
    else:
        nat_rewrite(p, m, c.vaddr, c.vport_be, 12, 0, dec_ttl)


cdef inline void nat4(uint8_t* p, const PacketMeta* m, uint32_t new_addr,
                      uint16_t new_port, int addr_off, int port_off,
                      bint dec_ttl) noexcept nogil:
    """nat_rewrite for the common case, a whole IPv4 datagram, from the same two
    pieces. TCP's port rewrite is called straight: small enough for the compiler to
    inline into the per-packet path, where the other protocols' (UDP's full
    checksum, SCTP's CRC32c) would keep it from inlining."""
    cdef uint16_t old_port = ldraw16(p + m.l4off + port_off)
    cdef uint64_t addr_diff = ip4_addr_rewrite(p + m.l3off, new_addr, addr_off, dec_ttl)
    if m.proto == IPPROTO_TCP_:
        tcp_port_rewrite(p + m.l4off, addr_diff, old_port, new_port, port_off)
    else:
        l4_rewrite(p, m, addr_diff, old_port, new_port, port_off)


cdef inline uint64_t ip4_addr_rewrite(uint8_t* iph, uint32_t new_addr, int addr_off,
                                      bint dec_ttl) noexcept nogil:
    """Write one IPv4 address (TTL - 1 too when asked) and update the header
    checksum; returns the address change's checksum delta for the transport
    checksum. The header's checksum was verified on the way in, so the RFC 1624
    update gives the very bytes the kernel's full ip_send_check does."""
    cdef uint64_t addr_diff = csum_diff4(ldraw32(iph + addr_off), new_addr)
    cdef uint16_t old_ttlp = ldraw16(iph + 8)
    if dec_ttl:
        iph[8] -= 1
    straw32(iph + addr_off, new_addr)
    straw16(iph + 10, csum_apply(ldraw16(iph + 10),
                                 addr_diff + csum_diff2(old_ttlp, ldraw16(iph + 8))))
    return addr_diff


cdef inline cold_void nat_rewrite(uint8_t* p, const PacketMeta* m, const uint32_t* new_addr,
                                  uint16_t new_port, int addr_off, int port_off,
                                  bint dec_ttl) noexcept nogil:
    """Replace one address (IPv4 header offset ``addr_off``: 12 source, 16
    destination; in IPv6 8 and 24) and the matching port, fix the IP header checksum
    (IPv4) and the transport checksum with one address delta."""
    cdef uint8_t* iph = p + m.l3off
    cdef uint16_t old_port = ldraw16(p + m.l4off + port_off)
    cdef uint32_t old_addr[4]
    cdef uint64_t addr_diff
    if m.af == 4:
        addr_diff = ip4_addr_rewrite(iph, new_addr[0], addr_off, dec_ttl)
    else:
        addr_off = 8 if addr_off == 12 else 24
        memcpy(old_addr, iph + addr_off, 16)
        addr_diff = csum_diff_addr(old_addr, new_addr, 6)
        if dec_ttl:
            iph[7] -= 1
        memcpy(iph + addr_off, new_addr, 16)
    if m.frag != 1:
        l4_rewrite(p, m, addr_diff, old_port, new_port, port_off)


cdef inline void hop_decrease(uint8_t* p, const PacketMeta* m) noexcept nogil:
    """TTL / hop limit - 1 on the forwarding path."""
    if m.af == 4:
        ip_decrease_ttl(p + m.l3off)
    else:
        p[m.l3off + 7] -= 1


cdef inline void ip_decrease_ttl(uint8_t* iph) noexcept nogil:
    """The kernel's ip_decrease_ttl: TTL - 1 with its own checksum arithmetic
    (add 0x0100 to the checksum with an end-around carry), byte for byte."""
    cdef uint32_t check = ld16(iph + 10)
    check += 0x0100
    check = (check + (check >= 0xffff)) & 0xffff
    iph[10] = <uint8_t>(check >> 8)
    iph[11] = <uint8_t>check
    iph[8] -= 1
