# cython: language_level=3
"""SCTP for IPVS: chunk parse, state machine, scheduling gates and the CRC32c
checksum after NAT (the roles of net/netfilter/ipvs/ip_vs_proto_sctp.c, Linux 6.1,
and the SCTP cases of is_new_conn / is_new_conn_expected in ip_vs_core.c).

Everything the engine uses is reached through ``sctp_do`` (one operation code per
member of struct ip_vs_protocol, see ``_types.pxd``), registered in ``_proto.pxd``.

What the parser leaves in ``PacketMeta.tcpflags`` for an SCTP packet (the "chunk
byte", an input of every function here):

* the type of the first chunk (the byte after the 12-byte common header), except
* ``SCTP_CT_COOKIE_ABORT`` (255): the first chunk is COOKIE ECHO or COOKIE ACK and
  the next chunk is an ABORT. set_sctp_state looks one chunk further in that case
  only, and then moves the state as for an ABORT (RFC 4960 3.3.7 lets control
  chunks be bundled before an ABORT). For scheduling it still counts as the
  COOKIE chunk it starts with.
* a real first chunk of type 255 (reserved by RFC 4960) is stored as 254: both are
  a DATA event for the state table and neither is INIT nor ABORT, so no decision of
  the kernel's tells them apart.

The tables are the kernel's: ``sctp_events`` (chunk type -> event, 15 entries,
every other type is the DATA event), ``sctp_states[INPUT, OUTPUT, INPUT_ONLY]``,
``sctp_timeouts`` and ``sctp_state_name_table``. Only ESTABLISHED counts as an
active connection (set_sctp_state moves the dest's ActiveConn/InActConn on
entering or leaving ESTABLISHED).

The checksum: SCTP has no pseudo-header, so an address change alone leaves the
packet as it is. The kernel recomputes the CRC32c over the whole SCTP packet
(sctp_compute_cksum: common header on, checksum field as 0) when the port changes
(or an application helper changed the payload, or the skb is CHECKSUM_PARTIAL:
never so for a received packet); it does not verify the incoming CRC unless an
application helper is bound (none is in the tree), so a packet that came in with a
bad CRC leaves with a good one when its port is rewritten.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastvs.datapath._types cimport *
from fastvs.datapath._bytes cimport ld16, ldraw16, straw16

# IPVS SCTP states (enum ip_vs_sctp_states, include/net/ip_vs.h)
cdef enum:
    SCTP_S_NONE = 0
    SCTP_S_INIT1 = 1
    SCTP_S_INIT = 2
    SCTP_S_COOKIE_SENT = 3
    SCTP_S_COOKIE_REPLIED = 4
    SCTP_S_COOKIE_WAIT = 5
    SCTP_S_COOKIE = 6
    SCTP_S_COOKIE_ECHOED = 7
    SCTP_S_ESTABLISHED = 8
    SCTP_S_SHUTDOWN_SENT = 9
    SCTP_S_SHUTDOWN_RECEIVED = 10
    SCTP_S_SHUTDOWN_ACK_SENT = 11
    SCTP_S_REJECTED = 12
    SCTP_S_CLOSED = 13
    SCTP_S_LAST = 14

# Chunk types (SCTP_CID_*, RFC 4960 3.2)
cdef enum:
    SCTP_CID_DATA = 0
    SCTP_CID_INIT = 1
    SCTP_CID_INIT_ACK = 2
    SCTP_CID_SACK = 3
    SCTP_CID_HEARTBEAT = 4
    SCTP_CID_HEARTBEAT_ACK = 5
    SCTP_CID_ABORT = 6
    SCTP_CID_SHUTDOWN = 7
    SCTP_CID_SHUTDOWN_ACK = 8
    SCTP_CID_ERROR = 9
    SCTP_CID_COOKIE_ECHO = 10
    SCTP_CID_COOKIE_ACK = 11
    SCTP_CID_ECN_ECNE = 12
    SCTP_CID_ECN_CWR = 13
    SCTP_CID_SHUTDOWN_COMPLETE = 14
    SCTP_CT_REMAPPED_255 = 254      # a real first chunk of type 255 (see above)
    SCTP_CT_COOKIE_ABORT = 255      # COOKIE ECHO / COOKIE ACK, then an ABORT

# State-table events (enum ipvs_sctp_event_t)
cdef enum:
    SCTP_EV_DATA = 0                # DATA, SACK, HEARTBEATs, ECN, any unknown type
    SCTP_EV_INIT = 1
    SCTP_EV_INIT_ACK = 2
    SCTP_EV_COOKIE_ECHO = 3
    SCTP_EV_COOKIE_ACK = 4
    SCTP_EV_SHUTDOWN = 5
    SCTP_EV_SHUTDOWN_ACK = 6
    SCTP_EV_SHUTDOWN_COMPLETE = 7
    SCTP_EV_ERROR = 8
    SCTP_EV_ABORT = 9
    SCTP_EV_LAST = 10

# Direction tables (IP_VS_DIR_INPUT, IP_VS_DIR_OUTPUT, IP_VS_DIR_INPUT_ONLY)
cdef enum:
    SCTP_TBL_INPUT = 0
    SCTP_TBL_OUTPUT = 1
    SCTP_TBL_INPUT_ONLY = 2

cdef enum:
    SCTP_HDR_LEN = 12               # common header: ports, verification tag, CRC32c
    SCTP_CHUNK_HDR_LEN = 4          # chunk type, flags, length

cdef extern from "_crc32c.h" nogil:
    uint32_t fv_crc32c(const uint8_t* p, size_t length)
    uint32_t fv_crc32c_update(uint32_t crc, const uint8_t* p, size_t length)
    uint32_t fv_crc32c_sw(uint32_t crc, const uint8_t* p, size_t length)
    uint32_t fv_crc32c_shift(uint32_t crc, uint64_t n)
    int fv_crc32c_hw_active()

cdef extern from *:
    """
    #define sNO 0
    #define sI1 1
    #define sIN 2
    #define sCS 3
    #define sCR 4
    #define sCW 5
    #define sCO 6
    #define sCE 7
    #define sES 8
    #define sSS 9
    #define sSR 10
    #define sSA 11
    #define sRJ 12
    #define sCL 13
    /* chunk type -> event (sctp_events[]); types 15..255 are the DATA event */
    static const unsigned char fv_sctp_events[15] = {
        0, /* DATA */          1, /* INIT */         2, /* INIT_ACK */
        0, /* SACK */          0, /* HEARTBEAT */    0, /* HEARTBEAT_ACK */
        9, /* ABORT */         5, /* SHUTDOWN */     6, /* SHUTDOWN_ACK */
        8, /* ERROR */         3, /* COOKIE_ECHO */  4, /* COOKIE_ACK */
        0, /* ECN_ECNE */      0, /* ECN_CWR */      7, /* SHUTDOWN_COMPLETE */
    };
    /* [direction table][event][current state] -> next state (sctp_states[]) */
    static const unsigned char fv_sctp_states[3][10][14] = {
      { /* INPUT   sNO  sI1  sIN  sCS  sCR  sCW  sCO  sCE  sES  sSS  sSR  sSA  sRJ  sCL */
        /* d   */ {sES, sI1, sIN, sCS, sCR, sCW, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* i   */ {sI1, sIN, sIN, sCS, sCR, sCW, sCO, sCE, sES, sSS, sSR, sSA, sIN, sIN},
        /* i_a */ {sCW, sCW, sCW, sCS, sCR, sCO, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* c_e */ {sCR, sIN, sIN, sCR, sCR, sCW, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* c_a */ {sES, sI1, sIN, sCS, sCR, sCW, sCO, sES, sES, sSS, sSR, sSA, sRJ, sCL},
        /* s   */ {sSR, sI1, sIN, sCS, sCR, sCW, sCO, sCE, sSR, sSS, sSR, sSA, sRJ, sCL},
        /* s_a */ {sCL, sIN, sIN, sCS, sCR, sCW, sCO, sCE, sES, sCL, sSR, sCL, sRJ, sCL},
        /* s_c */ {sCL, sCL, sCL, sCS, sCR, sCW, sCO, sCE, sES, sSS, sSR, sCL, sRJ, sCL},
        /* err */ {sCL, sI1, sIN, sCS, sCR, sCW, sCO, sCL, sES, sSS, sSR, sSA, sRJ, sCL},
        /* ab  */ {sCL, sCL, sCL, sCL, sCL, sRJ, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
      },
      { /* OUTPUT  sNO  sI1  sIN  sCS  sCR  sCW  sCO  sCE  sES  sSS  sSR  sSA  sRJ  sCL */
        /* d   */ {sES, sI1, sIN, sCS, sCR, sCW, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* i   */ {sCW, sCW, sCW, sCW, sCW, sCW, sCW, sCW, sES, sCW, sCW, sCW, sCW, sCW},
        /* i_a */ {sCS, sCS, sCS, sCS, sCR, sCW, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* c_e */ {sCE, sCE, sCE, sCE, sCE, sCE, sCE, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* c_a */ {sES, sES, sES, sES, sES, sES, sES, sES, sES, sSS, sSR, sSA, sRJ, sCL},
        /* s   */ {sSS, sSS, sSS, sSS, sSS, sSS, sSS, sSS, sSS, sSS, sSR, sSA, sRJ, sCL},
        /* s_a */ {sSA, sSA, sSA, sSA, sSA, sCW, sCO, sCE, sES, sSA, sSA, sSA, sRJ, sCL},
        /* s_c */ {sCL, sI1, sIN, sCS, sCR, sCW, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* err */ {sCL, sCL, sCL, sCL, sCL, sCW, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* ab  */ {sCL, sRJ, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
      },
      { /* INPUT-ONLY sNO sI1 sIN  sCS  sCR  sCW  sCO  sCE  sES  sSS  sSR  sSA  sRJ  sCL */
        /* d   */ {sES, sI1, sIN, sCS, sCR, sES, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* i   */ {sI1, sIN, sIN, sIN, sIN, sIN, sCO, sCE, sES, sSS, sSR, sSA, sIN, sIN},
        /* i_a */ {sCE, sCE, sCE, sCE, sCE, sCE, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* c_e */ {sES, sES, sES, sES, sES, sES, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* c_a */ {sES, sI1, sIN, sES, sES, sCW, sES, sES, sES, sSS, sSR, sSA, sRJ, sCL},
        /* s   */ {sSR, sI1, sIN, sCS, sCR, sCW, sCO, sCE, sSR, sSS, sSR, sSA, sRJ, sCL},
        /* s_a */ {sCL, sIN, sIN, sCS, sCR, sCW, sCO, sCE, sCL, sCL, sSR, sCL, sRJ, sCL},
        /* s_c */ {sCL, sCL, sCL, sCL, sCL, sCW, sCO, sCE, sES, sSS, sCL, sCL, sRJ, sCL},
        /* err */ {sCL, sI1, sIN, sCS, sCR, sCW, sCO, sCE, sES, sSS, sSR, sSA, sRJ, sCL},
        /* ab  */ {sCL, sCL, sCL, sCL, sCL, sRJ, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
      },
    };
    /* ActiveConn: only ESTABLISHED (set_sctp_state) */
    static const int fv_sctp_active[14] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    /* sctp_timeouts[], seconds: IP_VS_SCTP_MAX_RTO = 61 s, INIT1/REJECTED 4 s */
    static const int fv_sctp_timeouts[14] = {
        2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61,
    };
    /* sctp_state_name_table[] (ipvsadm -L -c, /proc/net/ip_vs_conn) */
    static const char *const fv_sctp_state_names[14] = {
        "NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE",
        "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT",
        "REJECTED", "CLOSED",
    };
    #undef sNO
    #undef sI1
    #undef sIN
    #undef sCS
    #undef sCR
    #undef sCW
    #undef sCO
    #undef sCE
    #undef sES
    #undef sSS
    #undef sSR
    #undef sSA
    #undef sRJ
    #undef sCL
    """
    const unsigned char fv_sctp_events[15]
    const unsigned char fv_sctp_states[3][10][14]
    const int fv_sctp_active[14]
    const int fv_sctp_timeouts[14]
    const char* const fv_sctp_state_names[14]


cdef inline int sctp_parse(const uint8_t* p, uint32_t caplen, uint32_t l4, uint32_t dgram_end,
                           PacketMeta* m) noexcept nogil:
    """The common header and the first chunk's header of an SCTP packet at ``l4``
    (datagram ending at ``dgram_end``): ports into ``m.sport_be``/``m.dport_be``,
    the chunk byte (module doc) into ``m.tcpflags``; PKT_OK, or a drop verdict.

    The kernel refuses to schedule a packet without a chunk header but forwards one
    for a known connection without a state change; fastvs drops any datagram too
    short for the 16 bytes as malformed (RFC 4960 3: at least one chunk)."""
    cdef uint32_t nxt, clen
    cdef uint8_t ct
    if <uint64_t>l4 + SCTP_HDR_LEN + SCTP_CHUNK_HDR_LEN > dgram_end:
        return V_DROP_L4_MALFORMED
    if <uint64_t>l4 + SCTP_HDR_LEN + SCTP_CHUNK_HDR_LEN > caplen:
        return V_DROP_L4_TRUNCATED
    ct = p[l4 + SCTP_HDR_LEN]
    if ct == SCTP_CT_COOKIE_ABORT:
        ct = SCTP_CT_REMAPPED_255
    elif ct == SCTP_CID_COOKIE_ECHO or ct == SCTP_CID_COOKIE_ACK:
        # set_sctp_state: an ABORT bundled right after the COOKIE chunk decides
        clen = ld16(p + l4 + SCTP_HDR_LEN + 2)
        if clen >= SCTP_CHUNK_HDR_LEN:
            nxt = l4 + SCTP_HDR_LEN + ((clen + 3) & ~(<uint32_t>3))
            if (<uint64_t>nxt + SCTP_CHUNK_HDR_LEN <= dgram_end
                    and <uint64_t>nxt + SCTP_CHUNK_HDR_LEN <= caplen
                    and p[nxt] == SCTP_CID_ABORT):
                ct = SCTP_CT_COOKIE_ABORT
    m.tcpflags = ct
    m.sport_be = ldraw16(p + l4)
    m.dport_be = ldraw16(p + l4 + 2)
    return PKT_OK


cdef inline uint8_t sctp_event(uint8_t chunk) noexcept nogil:
    """The state-table event of a chunk byte (sctp_events[], ABORT look-ahead)."""
    if chunk == SCTP_CT_COOKIE_ABORT:
        return SCTP_EV_ABORT
    if chunk < 15:
        return fv_sctp_events[chunk]
    return SCTP_EV_DATA


cdef inline int sctp_table(int direction, uint16_t* conn_flags) noexcept nogil:
    """The direction table for a packet, as set_sctp_state picks it: a connection
    without output seen (CONN_F_NOOUTPUT: DR/TUN) uses INPUT_ONLY for its input,
    and loses the flag on its first output packet. Updates ``conn_flags``."""
    if conn_flags[0] & CONN_F_NOOUTPUT:
        if direction == DIR_OUTPUT:
            conn_flags[0] &= ~CONN_F_NOOUTPUT
        else:
            return SCTP_TBL_INPUT_ONLY
    return SCTP_TBL_OUTPUT if direction == DIR_OUTPUT else SCTP_TBL_INPUT


cdef inline uint8_t sctp_next_state(int table, uint8_t state, uint8_t chunk) noexcept nogil:
    """sctp_states[table][event(chunk)][state]; ``table`` is SCTP_TBL_INPUT,
    SCTP_TBL_OUTPUT or SCTP_TBL_INPUT_ONLY (DIR_INPUT/DIR_OUTPUT are 0/1 too). A
    state out of range (not an SCTP state) goes to CLOSED."""
    if state >= SCTP_S_LAST or table < 0 or table > SCTP_TBL_INPUT_ONLY:
        return SCTP_S_CLOSED
    return fv_sctp_states[table][sctp_event(chunk)][state]


cdef inline bint sctp_state_active(uint8_t state) noexcept nogil:
    """Counted in ActiveConn (else InActConn): ESTABLISHED only."""
    return state == SCTP_S_ESTABLISHED


cdef inline bint sctp_can_schedule(uint8_t chunk, bint sloppy) noexcept nogil:
    """sctp_conn_schedule: a packet without a connection makes one if its first
    chunk is INIT, or (sysctl sloppy_sctp, default 0) anything but an ABORT. When
    this is false the kernel returns NF_ACCEPT with no connection: the packet goes
    on as not IPVS's (to the local stack), it is not dropped."""
    if chunk == SCTP_CID_INIT:
        return True
    if chunk == SCTP_CID_ABORT:
        return False
    return sloppy


cdef inline bint sctp_is_new_conn(uint8_t chunk) noexcept nogil:
    """is_new_conn for SCTP: the first chunk is an INIT (ip_vs_core.c; the packet
    that may replace an expected-to-end connection when conn_reuse_mode is set)."""
    return chunk == SCTP_CID_INIT


cdef inline bint sctp_new_conn_expected(const Conn* c) noexcept nogil:
    """is_new_conn_expected for SCTP: not a controlled connection, state CLOSED."""
    return c.control == 0 and c.state == SCTP_S_CLOSED


cdef inline uint32_t sctp_crc32c(const uint8_t* sh, uint32_t length) noexcept nogil:
    """CRC32c of the SCTP packet at ``sh`` (``length`` bytes from the common
    header) with the checksum field taken as 0, as the value (store it with
    sctp_store_csum)."""
    cdef uint8_t zero[4]
    cdef uint32_t crc
    zero[0] = 0
    zero[1] = 0
    zero[2] = 0
    zero[3] = 0
    crc = fv_crc32c_update(0xffffffffu, sh, 8)
    crc = fv_crc32c_update(crc, zero, 4)
    crc = fv_crc32c_update(crc, sh + SCTP_HDR_LEN, length - SCTP_HDR_LEN)
    return ~crc


cdef inline void sctp_store_csum(uint8_t* sh, uint32_t crc) noexcept nogil:
    """The checksum field, little-endian (the kernel's cpu_to_le32)."""
    sh[8] = <uint8_t>crc
    sh[9] = <uint8_t>(crc >> 8)
    sh[10] = <uint8_t>(crc >> 16)
    sh[11] = <uint8_t>(crc >> 24)


cdef inline uint32_t sctp_load_csum(const uint8_t* sh) noexcept nogil:
    return (<uint32_t>sh[8] | (<uint32_t>sh[9] << 8) | (<uint32_t>sh[10] << 16)
            | (<uint32_t>sh[11] << 24))


cdef inline uint32_t sctp_len(const PacketMeta* m) noexcept nogil:
    """The SCTP packet's length: the IP payload from the transport header on."""
    return m.l3len - (m.l4off - m.l3off)


cdef inline bint sctp_csum_ok(const uint8_t* p, const PacketMeta* m) noexcept nogil:
    """sctp_csum_check: the CRC on the wire is right (whole packet captured only;
    the kernel checks it only for connections with an application helper)."""
    return sctp_crc32c(p + m.l4off, sctp_len(m)) == sctp_load_csum(p + m.l4off)


cdef inline void sctp_nat_csum(uint8_t* p, const PacketMeta* m) noexcept nogil:
    """sctp_nat_csum: recompute the CRC32c over the whole SCTP packet (after the port
    was rewritten). Needs the whole datagram: call it only when ``not m.cut`` and
    ``m.frag == 0``; for a cut capture use sctp_csum_adjust (sctp_nat_port does the
    choosing)."""
    cdef uint8_t* sh = p + m.l4off
    sctp_store_csum(sh, sctp_crc32c(sh, sctp_len(m)))


cdef inline void sctp_csum_adjust(uint8_t* p, const PacketMeta* m, uint16_t old_port,
                                  uint16_t new_port, int port_off) noexcept nogil:
    """Fold a port change into the CRC on the wire without the rest of the packet
    (it needs only the packet's length, from the IP header): for a capture cut
    short. The result equals the full recompute whenever the incoming CRC was
    right; a wrong one stays wrong (the kernel's full recompute would mend it)."""
    cdef uint8_t d[4]
    cdef uint16_t x = old_port ^ new_port
    cdef uint32_t raw
    d[0] = 0
    d[1] = 0
    d[2] = 0
    d[3] = 0
    straw16(d + port_off, x)        # the two wire bytes that changed, XORed
    raw = fv_crc32c_sw(0, d, 4)
    raw = fv_crc32c_shift(raw, sctp_len(m) - 4)
    sctp_store_csum(p + m.l4off, sctp_load_csum(p + m.l4off) ^ raw)


cdef inline int sctp_nat_port(uint8_t* p, const PacketMeta* m, uint16_t new_port,
                              int port_off) noexcept nogil:
    """The SCTP part of sctp_dnat_handler (``port_off`` 2, the destination port) or
    sctp_snat_handler (``port_off`` 0, the source port): when the port changes,
    write it and recompute the CRC32c; when it does not, touch nothing (the CRC
    covers no address). Returns 0 untouched, 1 recomputed, 2 adjusted (capture cut
    short), 3 port written but CRC left (a fragment: the rest of the SCTP packet
    is in other datagrams; the kernel would have reassembled it first)."""
    cdef uint8_t* sh = p + m.l4off
    cdef uint16_t old_port = ldraw16(sh + port_off)
    if old_port == new_port:
        return 0
    straw16(sh + port_off, new_port)
    if m.frag != 0:
        return 3
    if not m.cut:
        sctp_nat_csum(p, m)
        return 1
    sctp_csum_adjust(p, m, old_port, new_port, port_off)
    return 2


cdef inline int sctp_op_parse(ProtoArgs* a) noexcept nogil:
    """the transport header: ports and flags into ``a.m``; PKT_OK or a verdict"""
    return sctp_parse(a.p, a.caplen, a.l4, a.dgram_end, a.m)   # first chunk in tcpflags


cdef inline int sctp_op_state(ProtoArgs* a) noexcept nogil:
    """state_transition: the next state (and ``a.c``'s flags)"""
    return sctp_next_state(sctp_table(a.direction, &a.c.flags), a.c.state, a.m.tcpflags)


cdef inline int sctp_op_active(ProtoArgs* a) noexcept nogil:
    """does state ``a.arg`` count as an active connection?"""
    return sctp_state_active(<uint8_t>a.arg)


cdef inline int sctp_op_nat(ProtoArgs* a) noexcept nogil:
    """snat/dnat_handler: write the port, fix the checksum"""
    # no pseudo-header: only a port change touches the packet (CRC32c)
    sctp_nat_port(a.p, a.m, a.new_port, a.port_off)
    return 0


cdef inline int sctp_op_schedule(ProtoArgs* a) noexcept nogil:
    """conn_schedule: 0 when the packet may make a connection, else its verdict"""
    # sctp_conn_schedule accepts a packet it will not schedule: not IPVS's
    return 0 if sctp_can_schedule(a.m.tcpflags, a.arg & 1) else V_PASS_NOT_SERVICE  # bit 0: sloppy_sctp


cdef inline int sctp_op_is_new_conn(ProtoArgs* a) noexcept nogil:
    """is_new_conn: the packet opens a connection"""
    return sctp_is_new_conn(a.m.tcpflags)


cdef inline int sctp_op_new_conn_expected(ProtoArgs* a) noexcept nogil:
    """is_new_conn_expected: ``a.c`` may be replaced by a new connection"""
    return sctp_new_conn_expected(a.c)


cdef inline int sctp_op_info(ProtoArgs* a) noexcept nogil:
    """the protocol's name, states and default timeouts; returns its number"""
    a.name = b"sctp"
    a.nstates = SCTP_S_LAST
    a.state_names = fv_sctp_state_names
    a.timeouts = fv_sctp_timeouts
    return IPPROTO_SCTP_
