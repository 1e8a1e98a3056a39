# cython: language_level=3
"""The registered protocols and the NAT rewrite (the roles of ip_vs_proto.c, which
keeps the table of struct ip_vs_protocol, and of the L3 half of the protocols'
snat/dnat handlers).

A protocol is one file, ``_proto_<name>.pxd``, whose ``<name>_do(op, args)`` answers
the operation codes of ``_types.pxd`` (parse, may-schedule, new connection,
state transition, active states, NAT, names and timeouts). Registering it is one
slot in the enum below and one case in ``pp_do``: the only place in the data path
that names protocols. ``pp_do`` is inline and every caller passes a constant
operation, so each call compiles to the protocol test and the one operation taken,
with no call through a pointer (a pointer would keep the compiler from inlining the
per-packet operations; tried as a table of function pointers, it cost instructions on
every packet).

The NAT here rewrites the IP header (address, TTL, header checksum) and hands the
port and transport checksum to the protocol with the address change's checksum delta,
as the kernel's handlers do with the pseudo-header.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from fastvs.datapath._types cimport *
from fastvs.datapath._bytes cimport ld16, ldraw16, ldraw32, straw16, straw32
from fastvs.datapath._csum cimport csum_diff4, csum_diff2, csum_apply, csum_diff_addr
from fastvs.datapath._proto_tcp cimport tcp_do
from fastvs.datapath._proto_udp cimport udp_do
from fastvs.datapath._proto_sctp cimport sctp_do

# The registered protocols' slots: timeouts and listings are kept per slot
cdef enum:
    PP_TCP = 0
    PP_UDP = 1
    PP_SCTP = 2
    PP_N = 3                 # how many are registered
    PP_MAX_STATES = 16       # room for any protocol's states (SCTP has 14)


cdef inline int pp_do(uint8_t proto, int op, ProtoArgs* a) noexcept nogil:
    """Operation ``op`` of IP protocol ``proto`` (ip_vs_proto_get, then the member);
    PP_NOPROTO for a protocol IPVS does not handle. Sets ``a.slot``. TCP is tested
    first: it is most of the traffic."""
    if proto == IPPROTO_TCP_:
        a.slot = PP_TCP
        return tcp_do(op, a)
    if proto == IPPROTO_UDP_:
        a.slot = PP_UDP
        return udp_do(op, a)
    if proto == IPPROTO_SCTP_:
        a.slot = PP_SCTP
        return sctp_do(op, a)
    return PP_NOPROTO


cdef inline bint pp_handles(uint8_t proto) noexcept nogil:
    """Is ``proto`` a registered protocol (one IPVS balances)?"""
    cdef ProtoArgs a
    return pp_do(proto, PP_INFO, &a) != PP_NOPROTO


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
    pp_do(m.proto, PP_NAT, &a)


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
    pieces: small enough for the compiler to inline into the per-packet path."""
    cdef uint16_t old_port = ldraw16(p + m.l4off + port_off)
    cdef uint64_t addr_diff = ip4_addr_rewrite(p + m.l3off, new_addr, addr_off, dec_ttl)
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


cdef inline void nat_rewrite(uint8_t* p, const PacketMeta* m, const uint32_t* new_addr,
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
