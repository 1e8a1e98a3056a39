# cython: language_level=3
"""ICMP and ICMPv6 errors about a connection (ip_vs_in_icmp, ip_vs_out_icmp).

An error quotes the header of a packet the director sent. Quoted from a reply (the
client side answers VIP -> client), it goes to the real server: outer destination,
quoted source address and port become the real server's (ip_vs_nat_icmp, inout 0).
Quoted from a forwarded request (the server side answers client -> RIP), it goes to
the client: outer source, quoted destination address and port become the VIP's
(inout 1). The quoted transport checksum is left alone, as the kernel leaves it; the
quoted IPv4 header checksum and the ICMP checksum are made right. The kernel
recomputes the ICMP checksum in full after checking it on the way in; fastvs checks
it too and updates it incrementally, which gives the same bytes and also works on a
message the capture cut short.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from fastvs.datapath._types cimport *
from fastvs.datapath._bytes cimport ld16, ldraw16, ldraw32, straw16, straw32
from fastvs.datapath._csum cimport (csum_fold, csum_partial, csum_diff2, csum_apply, ip_send_check,
                                    csum_diff_addr, pseudo_sum)
from fastvs.datapath._proto cimport pp_handles


cdef inline bint icmp_is_error(const PacketMeta* m, uint8_t icmp_type) noexcept nogil:
    """The errors IPVS looks into: ip_vs_in_icmp / ip_vs_out_icmp take destination
    unreachable, source quench and time exceeded; ip_vs_in_icmp_v6 /
    ip_vs_out_icmp_v6 every ICMPv6 type without ICMPV6_INFOMSG_MASK (below 128:
    unreachable, packet too big, time exceeded, parameter problem, and the
    unassigned error types)."""
    if m.af == 4:
        return icmp_type == 3 or icmp_type == 4 or icmp_type == 11
    return icmp_type < 128


cdef inline int icmp_inner(const uint8_t* p, const PacketMeta* m, PacketMeta* im) noexcept nogil:
    """Parse the quoted header; fill ``im`` as the *reverse* packet (so that a
    connection lookup with it finds the connection the quoted packet belonged to).
    Returns 0 when the quote names a flow of a registered protocol, -1 otherwise."""
    cdef uint32_t q = m.l4off + 8
    cdef uint32_t end = m.l3off + m.l3len
    cdef uint32_t ihl, off, hlen
    cdef uint8_t nh
    cdef int _
    if end > m.caplen:
        end = m.caplen
    im.af = m.af
    im.l3off = q
    if m.af == 4:
        if q + 20 > end or (p[q] >> 4) != 4:
            return -1
        ihl = (p[q] & 0x0f) * 4
        if ihl < 20 or q + ihl + 8 > end:
            return -1
        if ld16(p + q + 6) & 0x1fff:        # a later fragment quotes no ports
            return -1
        im.proto = p[q + 9]
        im.daddr[0] = ldraw32(p + q + 12)
        im.saddr[0] = ldraw32(p + q + 16)
        im.saddr[1] = im.saddr[2] = im.saddr[3] = 0
        im.daddr[1] = im.daddr[2] = im.daddr[3] = 0
        im.l4off = q + ihl
    else:
        if q + 40 > end or (p[q] >> 4) != 6:
            return -1
        memcpy(im.daddr, p + q + 8, 16)
        memcpy(im.saddr, p + q + 24, 16)
        nh = p[q + 6]
        off = q + 40
        for _ in range(8):
            if nh == 0 or nh == 43 or nh == 60:
                if off + 8 > end:
                    return -1
                hlen = (<uint32_t>p[off + 1] + 1) * 8
                nh = p[off]
                off += hlen
            elif nh == 44:
                if off + 8 > end or (ld16(p + off + 2) & 0xfff8):
                    return -1
                nh = p[off]
                off += 8
            elif nh == 51:
                # AH (ipv6_find_hdr, through ip_vs_fill_iph_skb_icmp)
                if off + 8 > end:
                    return -1
                nh = p[off]
                off += (<uint32_t>p[off + 1] + 2) * 4
            else:
                break
        im.proto = nh
        im.l4off = off
        if off + 8 > end:
            return -1
    if not pp_handles(im.proto):
        return -1
    im.dport_be = ldraw16(p + im.l4off)
    im.sport_be = ldraw16(p + im.l4off + 2)
    return 0


cdef inline bint icmp_csum_ok(const uint8_t* p, const PacketMeta* m) noexcept nogil:
    cdef uint32_t n = m.l3len - (m.l4off - m.l3off)
    cdef uint64_t s = csum_partial(p + m.l4off, n, 0)
    if m.af == 6:
        s += pseudo_sum(p + m.l3off, 6, n, IPPROTO_ICMPV6_)
    return csum_fold(s) == 0xffff


cdef inline void icmp_nat(uint8_t* p, const PacketMeta* m, const PacketMeta* im,
                          const Conn* c, bint to_client) noexcept nogil:
    """Rewrite the error (ip_vs_nat_icmp / ip_vs_nat_icmp_v6)."""
    cdef uint8_t* iph = p + m.l3off
    cdef uint8_t* qh = p + im.l3off
    cdef uint8_t* icmp = p + m.l4off
    cdef const uint32_t* new_addr = &c.daddr[0]
    cdef uint16_t new_port = c.vport_be if to_client else c.dport_be
    cdef uint32_t outer_old[4]
    cdef uint32_t inner_old[4]
    cdef uint16_t old_port, old_qcheck
    cdef uint64_t diff = 0
    cdef int outer_at, inner_at, port_at
    if to_client:
        new_addr = &c.vaddr[0]
    if m.af == 4:
        outer_at = 12 if to_client else 16
        inner_at = 16 if to_client else 12
    else:
        outer_at = 8 if to_client else 24
        inner_at = 24 if to_client else 8
    port_at = 2 if to_client else 0
    memcpy(outer_old, iph + outer_at, 16 if m.af == 6 else 4)
    memcpy(inner_old, qh + inner_at, 16 if m.af == 6 else 4)
    old_port = ldraw16(p + im.l4off + port_at)
    memcpy(iph + outer_at, new_addr, 16 if m.af == 6 else 4)
    memcpy(qh + inner_at, new_addr, 16 if m.af == 6 else 4)
    straw16(p + im.l4off + port_at, new_port)
    diff = csum_diff_addr(inner_old, new_addr, m.af) + csum_diff2(old_port, new_port)
    if m.af == 4:
        old_qcheck = ldraw16(qh + 10)
        ip_send_check(qh, (qh[0] & 0x0f) * 4)
        diff += csum_diff2(old_qcheck, ldraw16(qh + 10))
        ip_send_check(iph, (iph[0] & 0x0f) * 4)
    else:
        diff += csum_diff_addr(outer_old, new_addr, 6)     # the pseudo-header
    straw16(icmp + 2, csum_apply(ldraw16(icmp + 2), diff))
