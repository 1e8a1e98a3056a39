# cython: language_level=3
"""TCP for IPVS (the role of net/netfilter/ipvs/ip_vs_proto_tcp.c, Linux 6.1): the
header, the state machine with its active states, timeouts and names, who may make
a connection, and the port rewrite with its incremental checksum update
(tcp_fast_csum_update).

Everything is reached through ``tcp_do`` (one operation code per member of struct
ip_vs_protocol, see ``_types.pxd``), registered in ``_proto.pxd``.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastvs.datapath._types cimport *
from fastvs.datapath._bytes cimport ldraw16, straw16
from fastvs.datapath._csum cimport csum_diff2, csum_apply

cdef enum:
    TCP_NUM_STATES = 11

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
    /* tcp_state_name_table[] and tcp_timeouts[] (seconds) */
    static const char *const fv_tcp_state_names[11] = {
        "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
        "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
    };
    static const int fv_tcp_timeouts[11] = {2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120};
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
    const char* const fv_tcp_state_names[11]
    const int fv_tcp_timeouts[11]


cdef inline int tcp_state_idx(uint8_t flags) noexcept nogil:
    """The flag class of a segment: RST beats SYN beats FIN beats ACK; -1 for none."""
    return fv_tcp_flag_class[flags & 0x1f]


cdef inline void tcp_port_rewrite(uint8_t* th, uint64_t addr_diff, uint16_t old_port,
                                  uint16_t new_port, int port_off) noexcept nogil:
    """Write a TCP port and fold it and the pseudo-header's address delta into the
    checksum."""
    straw16(th + port_off, new_port)
    straw16(th + 16, csum_apply(ldraw16(th + 16), addr_diff + csum_diff2(old_port, new_port)))


cdef inline int tcp_op_parse(ProtoArgs* a) noexcept nogil:
    """the transport header: ports and flags into ``a.m``; PKT_OK or a verdict"""
    if a.l4 + 20 > a.dgram_end:
        return V_DROP_L4_MALFORMED
    if a.l4 + 20 > a.caplen:
        return V_DROP_L4_TRUNCATED
    # IPVS reads the 20-byte header only: a bad data offset is the real
    # server's business (the kernel forwards such a SYN and makes a connection)
    a.m.tcpflags = a.p[a.l4 + 13]
    a.m.sport_be = ldraw16(a.p + a.l4)
    a.m.dport_be = ldraw16(a.p + a.l4 + 2)
    return PKT_OK


cdef inline int tcp_op_state(ProtoArgs* a) noexcept nogil:
    """state_transition: the next state (and ``a.c``'s flags)"""
    cdef int tbl
    cdef Conn* c
    # set_tcp_state: a connection that has seen no output (DR/TUN) uses the
    # INPUT-ONLY table, until its first output packet
    c = a.c
    tbl = TCP_TBL_OUTPUT if a.direction == DIR_OUTPUT else TCP_TBL_INPUT
    if c.flags & CONN_F_NOOUTPUT:
        if a.direction == DIR_OUTPUT:
            c.flags &= ~CONN_F_NOOUTPUT
        else:
            tbl = TCP_TBL_INPUT_ONLY
    return fv_tcp_next[a.arg != 0][tbl][a.m.tcpflags & 0x1f][c.state & 15]


cdef inline int tcp_op_active(ProtoArgs* a) noexcept nogil:
    """does state ``a.arg`` count as an active connection?"""
    return fv_tcp_active[a.arg]


cdef inline int tcp_op_nat(ProtoArgs* a) noexcept nogil:
    """snat/dnat_handler: write the port, fix the checksum"""
    tcp_port_rewrite(a.p + a.m.l4off, a.addr_diff, a.old_port, a.new_port, a.port_off)
    return 0


cdef inline int tcp_op_schedule(ProtoArgs* a) noexcept nogil:
    """conn_schedule: 0 when the packet may make a connection, else its verdict"""
    # tcp_conn_schedule: only a SYN without RST makes a connection, or with sysctl
    # sloppy_tcp (``a.arg`` bit 1) any segment without RST; anything else for a
    # service without one is dropped
    if (a.m.tcpflags & TH_RST) or not ((a.arg & 2) or (a.m.tcpflags & TH_SYN)):
        return V_DROP_TCP_NO_CONN
    return 0


cdef inline int tcp_op_is_new_conn(ProtoArgs* a) noexcept nogil:
    """is_new_conn: the packet opens a connection (nonzero: the SYN bit itself, so the
    caller's test is one instruction)"""
    return a.m.tcpflags & TH_SYN


cdef inline int tcp_op_new_conn_expected(ProtoArgs* a) noexcept nogil:
    """is_new_conn_expected: ``a.c`` may be replaced by a new connection"""
    cdef Conn* c
    # a SYN may replace a connection in TIME_WAIT or CLOSE (and, with
    # conn_reuse_mode bit 2, FIN_WAIT of a DR/TUN connection)
    c = a.c
    if c.control:
        return False
    return (c.state == TCP_S_TIME_WAIT or c.state == TCP_S_CLOSE
            or ((a.arg & 2) and c.state == TCP_S_FIN_WAIT and (c.flags & CONN_F_NOOUTPUT)))


cdef inline int tcp_op_info(ProtoArgs* a) noexcept nogil:
    """the protocol's name, states and default timeouts; returns its number"""
    a.name = b"tcp"
    a.nstates = TCP_NUM_STATES
    a.state_names = fv_tcp_state_names
    a.timeouts = fv_tcp_timeouts
    return IPPROTO_TCP_
