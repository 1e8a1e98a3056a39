# cython: language_level=3
"""The engine's state, shared by every stage of the data path (the role of struct
netns_ipvs in include/net/ip_vs.h): the connection table, services and real servers,
timeouts, options, the flood defenses' state and the verdict counters.

Only types and constants live here; the functions that use them are in the role
modules (``_ctl``, ``_conn``, ``_core``, ``_frag``, ``_fwd``), all inline, so that the
batch loop in ``_engine.pyx`` compiles into one C unit with them.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from fastvs.datapath._types cimport Dest, Service, Conn, PacketMeta, SyncState, V_NCODES
from fastvs.datapath._conntab cimport ConnTable
from fastvs.datapath._proto cimport PP_N, PP_MAX_STATES

cdef extern from *:
    """
    #define FV_NS ((int64_t)1000000000)
    """
    const int64_t NS "FV_NS"     # nanoseconds per second (the engine's clock unit)

# Fragments of a balanced datagram follow its first fragment: a small set-associative
# table maps (src, dst, id, proto) to the connection, for ipfrag_time (30 s).
cdef enum:
    FRAG_SETS = 1024
    FRAG_WAYS = 4
    FRAG_TIMEOUT_S = 30

ctypedef struct FragEntry:
    uint32_t saddr[4]
    uint32_t daddr[4]
    uint32_t id
    uint32_t conn
    uint64_t conn_hash       # identifies the connection (its slot may be reused)
    int64_t expires
    uint8_t proto
    uint8_t direction
    uint8_t used

ctypedef struct MarkRule:
    uint32_t addr[4]
    uint32_t mask[4]
    uint32_t mark
    uint16_t port_be           # 0: any port
    uint8_t proto              # 0: any protocol
    uint8_t af


ctypedef struct EngineState:
    ConnTable ct
    Dest* dests
    int32_t ndests
    int32_t cap_dests
    Service* svcs
    int32_t nsvcs
    int32_t cap_svcs
    int32_t* svc_hash          # service index + 1, 0 = empty
    uint64_t svc_mask
    # per registered protocol (_proto.pxd's slots), per state: ns
    int64_t timeout[PP_N][PP_MAX_STATES]
    bint sloppy_sctp
    int64_t now                # ns; never runs backwards
    bint started
    # options
    bint keep_ttl
    bint director_view
    bint truncated_balance
    bint expire_nodest_conn
    int conn_reuse_mode
    FragEntry* frags
    MarkRule* marks            # firewall-mark classifier (iptables -j MARK, last match wins)
    int32_t nmarks
    int32_t nfwm_svcs          # fwmark services
    int32_t nnull_svcs         # port-zero (catch-all) services
    bint expire_quiescent_template
    uint32_t tun_mtu           # route MTU toward tunnel real servers
    # flood defenses (ip_vs_ctl.c update_defense_level), driven by table occupancy:
    # "available memory" is the free connection slots, amemthresh a number of slots
    int drop_entry_mode        # 0 off, 1 auto (on when low), 3 always
    int drop_packet_mode       # 0 off, 1 auto, 3 always
    int secure_tcp_mode        # 0 off, 1 auto, 3 always: the tcp_states_dos table
    bint secure_tcp_on
    bint drop_entry_on
    uint32_t amemthresh
    uint32_t am_droprate
    uint32_t drop_rate
    uint32_t drop_counter
    int64_t next_defense       # the defense timer runs once a second of packet time
    uint64_t rnd               # xorshift state for the random entry scan
    uint64_t entries_dropped
    int32_t last_dest          # the real server of the packet just processed, or -1
    SyncState* sync            # the connection-sync master (_sync.pxd); NULL: off
    # counters
    uint64_t counts[V_NCODES]


# What a forwarding method's xmit needs (_fwd.pxd; the packet_xmit member of struct
# ip_vs_conn, which ip_vs_bind_xmit sets once)
ctypedef struct XmitArgs:
    EngineState* st
    uint8_t* p               # the frame
    PacketMeta* m
    Conn* c
