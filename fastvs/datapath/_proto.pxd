# cython: language_level=3
"""Protocol handlers: TCP state machine and NAT rewrites for TCP and UDP.

The roles of ip_vs_proto_tcp.c and ip_vs_proto_udp.c. The transitions, the active
state set and the timeouts are the kernel's tables; the rewrites patch checksums
incrementally (RFC 1624) like tcp_fast_csum_update / udp_fast_csum_update, except a
UDP datagram that arrived without a checksum (0), which gets a full one, as
udp_dnat_handler does, a computed 0 being sent as 0xFFFF (RFC 768).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from fastvs.datapath._types cimport *
from libc.string cimport memcpy
from fastvs.datapath._bytes cimport ld16, ldraw16, ldraw32, straw16, straw32
from fastvs.datapath._sctp cimport sctp_nat_port
from fastvs.datapath._csum cimport csum_fold, csum_partial, csum_diff4, csum_diff2, csum_apply, ip_send_check

# Transitions [direction table][flag class][state]: INPUT, OUTPUT, INPUT-ONLY;
# flag classes syn, fin, ack, rst (tcp_state_idx); states NONE..SYNACK
# (ip_vs_proto_tcp.c tcp_states[]).
cdef enum:
    TCP_TBL_INPUT = 0
    TCP_TBL_OUTPUT = 1
    TCP_TBL_INPUT_ONLY = 2

cdef extern from *:
    """
    #define sNO 0
    #define sES 1
    #define sSS 2
    #define sSR 3
    #define sFW 4
    #define sTW 5
    #define sCL 6
    #define sCW 7
    #define sLA 8
    #define sLI 9
    #define sSA 10
    /* [table][flag class: syn fin ack rst][current state] -> next state */
    static const unsigned char fv_tcp_states[3][4][11] = {
      /* INPUT:  sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
      {
        /* syn */ {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
        /* fin */ {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW},
        /* ack */ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
        /* rst */ {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR},
      },
      /* OUTPUT:  sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
      {
        /* syn */ {sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR},
        /* fin */ {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
        /* ack */ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
        /* rst */ {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
      },
      /* INPUT-ONLY:  sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
      {
        /* syn */ {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
        /* fin */ {sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW},
        /* ack */ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
        /* rst */ {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
      },
    };
    /* tcp_states_dos: the table secure_tcp switches to under attack (a client's ACK
       does not establish a SYN_RECV connection; the server's SYN-ACK makes it SYNACK) */
    static const unsigned char fv_tcp_states_dos[3][4][11] = {
      /* INPUT:  sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
      {
        /* syn */ {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSA},
        /* fin */ {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sSA},
        /* ack */ {sES, sES, sSS, sSR, sFW, sTW, sCL, sCW, sCL, sLI, sSA},
        /* rst */ {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
      },
      /* OUTPUT:  sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
      {
        /* syn */ {sSS, sES, sSS, sSA, sSS, sSS, sSS, sSS, sSS, sLI, sSA},
        /* fin */ {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
        /* ack */ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
        /* rst */ {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
      },
      /* INPUT-ONLY:  sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
      {
        /* syn */ {sSA, sES, sES, sSR, sSA, sSA, sSA, sSA, sSA, sSA, sSA},
        /* fin */ {sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW},
        /* ack */ {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
        /* rst */ {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
      },
    };
    /* tcp_state_idx by table: the flag class of th->flags & (ACK|PSH|RST|SYN|FIN) */
    static const signed char fv_tcp_flag_class[32] = {
        -1, 1, 0, 0, 3, 3, 3, 3, -1, 1, 0, 0, 3, 3, 3, 3,
        2, 1, 0, 0, 3, 3, 3, 3, 2, 1, 0, 0, 3, 3, 3, 3};
    /* [secure_tcp][table][th->flags & 0x1f][state] -> next state: the two tables
       above with the flag class and "no class: CLOSE" folded in, for one load per
       packet; filled by fv_tcp_next_init (states 11-15 do not occur) */
    static unsigned char fv_tcp_next[2][3][32][16];
    static void fv_tcp_next_init(void) {
        int d, t, f, s, cls;
        for (d = 0; d < 2; d++)
            for (t = 0; t < 3; t++)
                for (f = 0; f < 32; f++)
                    for (s = 0; s < 16; s++) {
                        cls = fv_tcp_flag_class[f];
                        fv_tcp_next[d][t][f][s] = (cls < 0 || s >= 11) ? sCL
                            : d ? fv_tcp_states_dos[t][cls][s] : fv_tcp_states[t][cls][s];
                    }
    }
    /* tcp_state_active_table: ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK */
    static const int fv_tcp_active[11] = {0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1};
    #undef sNO
    #undef sES
    #undef sSS
    #undef sSR
    #undef sFW
    #undef sTW
    #undef sCL
    #undef sCW
    #undef sLA
    #undef sLI
    #undef sSA
    """
    const unsigned char fv_tcp_states[3][4][11]
    const unsigned char fv_tcp_states_dos[3][4][11]
    const int fv_tcp_active[11]
    const signed char fv_tcp_flag_class[32]
    unsigned char fv_tcp_next[2][3][32][16]
    void fv_tcp_next_init()


cdef inline int tcp_state_idx(uint8_t flags) noexcept nogil:
    """The flag class of a segment: RST beats SYN beats FIN beats ACK; -1 for none."""
    return fv_tcp_flag_class[flags & 0x1f]


cdef inline uint16_t be16(uint16_t v) noexcept nogil:
    return <uint16_t>((v >> 8) | (v << 8))


cdef inline uint64_t csum_diff_addr(const uint32_t* old, const uint32_t* new, int af) noexcept nogil:
    cdef uint64_t d = csum_diff4(old[0], new[0])
    if af == 6:
        d += csum_diff4(old[1], new[1]) + csum_diff4(old[2], new[2]) + csum_diff4(old[3], new[3])
    return d


cdef inline uint64_t pseudo_sum(const uint8_t* iph, int af, uint32_t l4len,
                                uint8_t proto) noexcept nogil:
    """The pseudo-header's part of a transport checksum, as the header stands now."""
    cdef uint64_t s
    if af == 4:
        s = <uint64_t>ldraw32(iph + 12) + ldraw32(iph + 16)
    else:
        s = csum_partial(iph + 8, 32, 0)
    return s + be16(<uint16_t>proto) + be16(<uint16_t>l4len) + be16(<uint16_t>(l4len >> 16))


cdef inline void l4_rewrite(uint8_t* p, const PacketMeta* m, uint64_t addr_diff,
                            uint16_t old_port, uint16_t new_port, int port_off) noexcept nogil:
    """Patch a TCP/UDP port at ``port_off`` (0 = source, 2 = destination) and fix
    the checksum for it and for the pseudo-header address that changed (already
    written into the IP header; ``addr_diff`` is that change's checksum delta)."""
    cdef uint8_t* th = p + m.l4off
    cdef uint16_t check
    if m.proto == IPPROTO_TCP_:
        tcp_port_rewrite(th, addr_diff, old_port, new_port, port_off)
        return
    if m.proto == IPPROTO_UDP_:
        straw16(th + port_off, new_port)
        check = ldraw16(th + 6)
        if check == 0:
            udp_no_checksum(p, m)
            return
        check = csum_apply(check, addr_diff + csum_diff2(old_port, new_port))
        if check == 0:
            check = 0xffff          # CSUM_MANGLED_0: 0 would mean "no checksum"
        straw16(th + 6, check)
        return
    # SCTP has no pseudo-header: only a port change touches its bytes (CRC32c)
    sctp_nat_port(p, m, new_port, port_off)


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


cdef inline void nat_dnat(uint8_t* p, const PacketMeta* m, const Conn* c, bint dec_ttl) noexcept nogil:
    """Client -> real server: destination becomes RIP:rport (ip_vs_nat_xmit)."""
    if m.af == 4 and m.proto == IPPROTO_TCP_ and m.frag == 0:
        nat4_tcp(p, m, c.daddr[0], c.dport_be, 16, 2, dec_ttl)
    else:
        nat_rewrite(p, m, c.daddr, c.dport_be, 16, 2, dec_ttl)


cdef inline void nat_snat(uint8_t* p, const PacketMeta* m, const Conn* c, bint dec_ttl) noexcept nogil:
    """Real server -> client: source becomes VIP:vport (handle_response)."""
    if m.af == 4 and m.proto == IPPROTO_TCP_ and m.frag == 0:
        nat4_tcp(p, m, c.vaddr[0], c.vport_be, 12, 0, dec_ttl)
    else:
        nat_rewrite(p, m, c.vaddr, c.vport_be, 12, 0, dec_ttl)


cdef inline void nat4_tcp(uint8_t* p, const PacketMeta* m, uint32_t new_addr,
                          uint16_t new_port, int addr_off, int port_off,
                          bint dec_ttl) noexcept nogil:
    """nat_rewrite for the common case, a whole IPv4 TCP segment, from the same two
    pieces: small enough for the compiler to inline into the per-packet path."""
    cdef uint8_t* th = p + m.l4off
    cdef uint16_t old_port = ldraw16(th + port_off)
    cdef uint64_t addr_diff = ip4_addr_rewrite(p + m.l3off, new_addr, addr_off, dec_ttl)
    tcp_port_rewrite(th, addr_diff, old_port, new_port, port_off)


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


cdef inline void tcp_port_rewrite(uint8_t* th, uint64_t addr_diff, uint16_t old_port,
                                  uint16_t new_port, int port_off) noexcept nogil:
    """Write a TCP port and fold it and the pseudo-header's address delta into the
    checksum."""
    straw16(th + port_off, new_port)
    straw16(th + 16, csum_apply(ldraw16(th + 16), addr_diff + csum_diff2(old_port, new_port)))


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
