# cython: language_level=3
"""Parse a frame's link, IP and TCP/UDP headers into a PacketMeta (ip_vs_fill_iphdr).

Every read is checked against the captured length first. The result is PKT_OK for an
IPVS candidate (a registered protocol over IPv4 or IPv6 with its header captured) or the verdict for
anything else: a pass code for traffic IPVS does not look at, a drop code for what the
kernel's ip_rcv would refuse. Nothing here allocates or touches a Python object.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from fastvs.datapath._types cimport *
from libc.string cimport memcpy
from fastvs.datapath._bytes cimport ld16, ld32, ldraw16, ldraw32
from fastvs.datapath._csum cimport ip_csum_ok
from fastvs.datapath._proto cimport pp_parse

# Link types (LINKTYPE_* numbers as pcap stores them)
cdef enum:
    LT_NULL = 0
    LT_EN10MB = 1
    LT_RAW_OLD = 12
    LT_RAW_OLD2 = 14
    LT_RAW = 101
    LT_LOOP = 108
    LT_LINUX_SLL = 113
    LT_IPV4 = 228
    LT_IPV6 = 229
    LT_LINUX_SLL2 = 276

# Ethertypes
cdef enum:
    ETH_P_IP = 0x0800
    ETH_P_IPV6 = 0x86DD
    ETH_P_8021Q = 0x8100
    ETH_P_8021AD = 0x88A8
    ETH_P_QINQ1 = 0x9100

# Most VLAN tags followed before giving up (bounds the loop on hostile frames)
cdef enum:
    MAX_VLAN_TAGS = 8

cdef extern from *:
    """
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define FV_ETH_P_IP_RAW 0x0008
    #else
    #define FV_ETH_P_IP_RAW 0x0800
    #endif
    """
    const uint16_t ETH_P_IP_RAW "FV_ETH_P_IP_RAW"   # 0x0800 as ldraw16 reads it


cdef inline int l2_ethertype(const uint8_t* p, uint32_t caplen, uint32_t off,
                             uint32_t* l3off) noexcept nogil:
    """Follow 802.1Q/802.1ad tags from the ethertype at ``off``; -1 when cut short."""
    cdef int et
    cdef int tags = 0
    if off + 2 > caplen:
        return -1
    et = ld16(p + off)
    off += 2
    while (et == ETH_P_8021Q or et == ETH_P_8021AD or et == ETH_P_QINQ1) and tags < MAX_VLAN_TAGS:
        if off + 4 > caplen:
            return -1
        et = ld16(p + off + 2)
        off += 4
        tags += 1
    l3off[0] = off
    return et


cdef inline int l2_parse(const uint8_t* p, uint32_t caplen, uint16_t linktype,
                         uint32_t* l3off) noexcept nogil:
    """Find the network header. Returns 4, 6, 0 (not IP) or -1 (link header cut)."""
    cdef int et
    cdef uint32_t af
    if linktype == LT_EN10MB:
        et = l2_ethertype(p, caplen, 12, l3off)
    elif linktype == LT_LINUX_SLL:
        if caplen < 16:
            return -1
        et = l2_ethertype(p, caplen, 14, l3off)
    elif linktype == LT_LINUX_SLL2:
        if caplen < 20:
            return -1
        et = ld16(p)
        l3off[0] = 20
        if et == ETH_P_8021Q or et == ETH_P_8021AD:
            return 0
    elif linktype == LT_RAW or linktype == LT_RAW_OLD or linktype == LT_RAW_OLD2:
        if caplen < 1:
            return -1
        l3off[0] = 0
        if (p[0] >> 4) == 4:
            return 4
        if (p[0] >> 4) == 6:
            return 6
        return 0
    elif linktype == LT_IPV4:
        l3off[0] = 0
        return 4
    elif linktype == LT_IPV6:
        l3off[0] = 0
        return 6
    elif linktype == LT_NULL or linktype == LT_LOOP:
        if caplen < 4:
            return -1
        l3off[0] = 4
        if linktype == LT_LOOP or (p[0] == 0 and p[1] == 0):
            af = ld32(p)
        else:
            # host byte order of the capturing machine, in practice little-endian
            af = p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)
        if af == 2:
            return 4
        if af == 10 or af == 24 or af == 28 or af == 30:
            return 6
        return 0
    else:
        return 0
    if et < 0:
        return -1
    if et == ETH_P_IP:
        return 4
    if et == ETH_P_IPV6:
        return 6
    return 0


cdef inline bint ip_options_ok(const uint8_t* opt, uint32_t n) noexcept nogil:
    """Walk IPv4 options the way ip_options_compile does for their framing; a
    source-route option fails too, as ip_rcv_options refuses it by default."""
    cdef uint32_t i = 0
    cdef uint32_t olen
    while i < n:
        if opt[i] == 0:         # IPOPT_END
            return True
        if opt[i] == 1:         # IPOPT_NOOP
            i += 1
            continue
        if opt[i] == 131 or opt[i] == 137:
            return False        # source routing: refused (accept_source_route = 0)
        if i + 1 >= n:
            return False
        olen = opt[i + 1]
        if olen < 2 or i + olen > n:
            return False
        i += olen
    return True


cdef enum:
    MAX_EXT_HEADERS = 16      # IPv6 extension headers followed before giving up


cdef inline int parse_l4(const uint8_t* p, uint32_t caplen, uint32_t l4, uint32_t dgram_end,
                         PacketMeta* m) noexcept nogil:
    """The transport header of a datagram ending at ``dgram_end``, by its protocol's
    parser (_proto.pxd; TCP is tested first); ICMP/ICMPv6 type and code."""
    cdef ProtoArgs a
    cdef int rc
    a.p = <uint8_t*>p
    a.m = m
    a.caplen = caplen
    a.l4 = l4
    a.dgram_end = dgram_end
    rc = pp_parse(m.proto, &a)
    if FV_LIKELY(rc != PP_NOPROTO):
        return rc
    if m.proto == IPPROTO_ICMP_ or m.proto == IPPROTO_ICMPV6_:
        if l4 + 8 > dgram_end or l4 + 8 > caplen:
            return V_PASS_PROTO
        m.tcpflags = 0
        m.sport_be = 0
        m.dport_be = 0
        return PKT_ICMP
    return V_PASS_PROTO


cdef inline int parse_ipv6(const uint8_t* p, uint32_t caplen, uint32_t wirelen, uint32_t l3,
                           PacketMeta* m) noexcept nogil:
    """ip6_rcv's checks, then the extension-header chain to the transport header."""
    cdef uint32_t plen, off, hlen, dgram_end
    cdef uint8_t nh
    cdef int _
    if l3 + 40 > caplen:
        return V_DROP_IP_TRUNCATED if l3 + 40 <= wirelen else V_DROP_IP_HDRLEN
    if (p[l3] >> 4) != 6:
        return V_DROP_IP_VERSION
    plen = ld16(p + l3 + 4)
    if l3 + 40 + plen > wirelen:
        return V_DROP_IP_TOTLEN
    m.l3len = 40 + plen
    m.ttl = p[l3 + 7]
    memcpy(m.saddr, p + l3 + 8, 16)
    memcpy(m.daddr, p + l3 + 24, 16)
    dgram_end = l3 + 40 + plen
    m.cut = dgram_end > caplen
    m.frag = 0
    nh = p[l3 + 6]
    off = l3 + 40
    for _ in range(MAX_EXT_HEADERS):
        if nh == 0 or nh == 43 or nh == 60:      # hop-by-hop, routing, destination options
            if off + 8 > caplen or off + 8 > dgram_end:
                return V_DROP_L4_TRUNCATED if off + 8 <= dgram_end else V_DROP_L4_MALFORMED
            hlen = (<uint32_t>p[off + 1] + 1) * 8
            nh = p[off]
            off += hlen
        elif nh == 44:                          # fragment
            if off + 8 > caplen or off + 8 > dgram_end:
                return V_DROP_L4_TRUNCATED if off + 8 <= dgram_end else V_DROP_L4_MALFORMED
            m.frag_id = ldraw32(p + off + 4)
            m.frag = 1 if (ld16(p + off + 2) & 0xfff8) else 2
            if not (ld16(p + off + 2) & 0xfff9):
                m.frag = 0                      # an atomic fragment: offset 0, no MF
            nh = p[off]
            off += 8
            if m.frag == 1:
                m.proto = nh
                m.l4off = off
                return V_PASS_FRAGMENT
        elif nh == 51:                          # AH
            if off + 8 > caplen:
                return V_DROP_L4_TRUNCATED
            nh = p[off]
            off += (<uint32_t>p[off + 1] + 2) * 4
        else:
            break
    else:
        return V_PASS_PROTO
    if off > dgram_end:
        return V_DROP_L4_MALFORMED
    m.proto = nh
    m.l4off = off
    return parse_l4(p, caplen, off, dgram_end, m)


cdef inline int pkt_parse(const uint8_t* p, uint32_t caplen, uint32_t wirelen,
                          uint16_t linktype, PacketMeta* m) noexcept nogil:
    cdef uint32_t l3 = 0
    cdef uint32_t ihl, totlen, l4, dgram_end, fragoff
    cdef int af
    if wirelen < caplen:
        wirelen = caplen
    if linktype == LT_EN10MB and caplen >= 14 and ldraw16(p + 12) == ETH_P_IP_RAW:
        af = 4                  # the common case: untagged Ethernet, IPv4
        l3 = 14
    else:
        af = l2_parse(p, caplen, linktype, &l3)
        if af < 0:
            return V_DROP_L2_TRUNCATED
        if af == 0:
            return V_PASS_NOT_IP
    m.l3off = l3
    m.caplen = caplen
    m.frag = 0
    if af == 6:
        m.af = 6
        return parse_ipv6(p, caplen, wirelen, l3, m)
    m.af = 4
    # ip_rcv's checks, in its order
    if l3 + 20 > caplen:
        return V_DROP_IP_TRUNCATED if l3 + 20 <= wirelen else V_DROP_IP_HDRLEN
    if (p[l3] >> 4) != 4:
        return V_DROP_IP_VERSION
    ihl = (p[l3] & 0x0f) * 4
    if ihl < 20:
        return V_DROP_IP_HDRLEN
    if l3 + ihl > caplen:
        return V_DROP_IP_TRUNCATED if l3 + ihl <= wirelen else V_DROP_IP_HDRLEN
    if not ip_csum_ok(p + l3, ihl):
        return V_DROP_IP_CSUM
    totlen = ld16(p + l3 + 2)
    if totlen < ihl or l3 + totlen > wirelen:
        return V_DROP_IP_TOTLEN
    if ihl > 20 and not ip_options_ok(p + l3 + 20, ihl - 20):
        return V_DROP_IP_OPTIONS
    m.l3len = totlen
    m.ttl = p[l3 + 8]
    m.proto = p[l3 + 9]
    m.saddr[0] = ldraw32(p + l3 + 12)
    m.saddr[1] = 0
    m.saddr[2] = 0
    m.saddr[3] = 0
    m.daddr[0] = ldraw32(p + l3 + 16)
    m.daddr[1] = 0
    m.daddr[2] = 0
    m.daddr[3] = 0
    dgram_end = l3 + totlen
    m.cut = dgram_end > caplen
    l4 = l3 + ihl
    m.l4off = l4
    fragoff = ld16(p + l3 + 6)
    if fragoff & 0x3fff:
        m.frag_id = <uint32_t>ldraw16(p + l3 + 4)
        if fragoff & 0x1fff:
            m.frag = 1          # not the first fragment: no transport header here
            return V_PASS_FRAGMENT
        m.frag = 2              # the first fragment of several
    return parse_l4(p, caplen, l4, dgram_end, m)
