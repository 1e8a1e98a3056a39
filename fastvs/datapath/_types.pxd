# cython: language_level=3
"""Shared C types: verdicts, states, flags and the structs of the data path.

The struct roles follow the kernel's: Dest is struct ip_vs_dest, Service is struct
ip_vs_service, Conn is struct ip_vs_conn (include/net/ip_vs.h).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t

# Inlining the per-packet path depends on. The data path is inline .pxd functions in
# one C unit, and GCC's size limits decide what lands in the batch loop: carving the
# engine into role modules moved those decisions (the per-packet function ended up
# out of line, +10 % instructions per packet). So the few functions whose place
# matters say so: ``hot_int`` functions are always inlined (the per-packet path
# into the batch loop); ``cold_*`` ones never (scheduling a new connection, NAT of
# IPv6 or fragments, traffic that is not IPVS's), which keeps the hot path small.
# These are return types carrying a GCC attribute: Cython has no syntax for one.
cdef extern from *:
    """
    #if defined(__GNUC__)
    #pragma GCC diagnostic ignored "-Wattributes"
    #define FV_HOT_INT __attribute__((always_inline)) int
    #define FV_HOT_SSIZE __attribute__((always_inline)) Py_ssize_t
    #define FV_COLD_INT __attribute__((noinline)) int
    #define FV_COLD_I32 __attribute__((noinline)) int32_t
    #define FV_COLD_U32 __attribute__((noinline)) uint32_t
    #define FV_COLD_VOID __attribute__((noinline)) void
    #else
    #define FV_HOT_INT int
    #define FV_HOT_SSIZE Py_ssize_t
    #define FV_COLD_INT int
    #define FV_COLD_I32 int32_t
    #define FV_COLD_U32 uint32_t
    #define FV_COLD_VOID void
    #endif
    """
    ctypedef int hot_int "FV_HOT_INT"
    ctypedef Py_ssize_t hot_ssize "FV_HOT_SSIZE"
    ctypedef int cold_int "FV_COLD_INT"
    ctypedef int32_t cold_i32 "FV_COLD_I32"
    ctypedef uint32_t cold_u32 "FV_COLD_U32"
    ctypedef void cold_void "FV_COLD_VOID"

# Branch hints. The protocol and method dispatchers test the common case (TCP,
# masquerading) under FV_LIKELY: without the hint GCC laid each dispatcher's TCP case
# out of line, a taken jump there and one back per operation per packet.
cdef extern from *:
    """
    #define FV_LIKELY(x) __builtin_expect(!!(x), 1)
    #define FV_UNLIKELY(x) __builtin_expect(!!(x), 0)
    """
    bint FV_LIKELY(bint) nogil
    bint FV_UNLIKELY(bint) nogil

# Verdicts (mirrors fastvs/verdicts.py; < V_DROP_BASE means written out)
cdef enum:
    V_PASS_NOT_IP = 0
    V_PASS_NOT_SERVICE = 1
    V_PASS_PROTO = 2
    V_PASS_FRAGMENT = 3
    V_PASS_IPV6 = 4
    V_PASS_NOT_MASQ = 5
    V_PASS_ROUTED = 6
    V_FWD_IN = 32
    V_FWD_OUT = 33
    V_FWD_DR = 34
    V_FWD_TUN = 35
    V_DROP_BASE = 64
    V_DROP_BAD_SLOT = 64
    V_DROP_L2_TRUNCATED = 65
    V_DROP_IP_TRUNCATED = 66
    V_DROP_IP_VERSION = 67
    V_DROP_IP_HDRLEN = 68
    V_DROP_IP_CSUM = 69
    V_DROP_IP_TOTLEN = 70
    V_DROP_IP_OPTIONS = 71
    V_DROP_L4_TRUNCATED = 72
    V_DROP_L4_MALFORMED = 73
    V_DROP_TCP_NO_CONN = 74
    V_DROP_NO_DEST = 75
    V_DROP_CONN_FULL = 76
    V_DROP_TTL = 77
    V_DROP_DEST_UNAVAILABLE = 78
    V_DROP_LOCAL = 79
    V_DROP_CAPTURE_CUT = 80
    V_DROP_SNAT_FAILED = 81
    V_DROP_ICMP_CSUM = 82
    V_DROP_MTU = 83
    V_DROP_DEFENSE = 84
    V_NCODES = 256

# Parser results besides verdicts: an IPVS candidate (TCP/UDP over IP, headers
# present), or an ICMP/ICMPv6 message that may be an error about a connection
cdef enum:
    PKT_OK = 255
    PKT_ICMP = 254

# IP protocols
cdef enum:
    IPPROTO_ICMP_ = 1
    IPPROTO_TCP_ = 6
    IPPROTO_UDP_ = 17
    IPPROTO_ICMPV6_ = 58
    IPPROTO_SCTP_ = 132

# TCP flags (th->flags byte)
cdef enum:
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_PUSH = 0x08
    TH_ACK = 0x10

# IPVS TCP states (IP_VS_TCP_S_*), UDP has one state
cdef enum:
    TCP_S_NONE = 0
    TCP_S_ESTABLISHED = 1
    TCP_S_SYN_SENT = 2
    TCP_S_SYN_RECV = 3
    TCP_S_FIN_WAIT = 4
    TCP_S_TIME_WAIT = 5
    TCP_S_CLOSE = 6
    TCP_S_CLOSE_WAIT = 7
    TCP_S_LAST_ACK = 8
    TCP_S_LISTEN = 9
    TCP_S_SYNACK = 10
    TCP_S_LAST = 11
    UDP_S_NORMAL = 0

# Forwarding methods (IP_VS_CONN_F_FWD_MASK values)
cdef enum:
    FWD_MASQ = 0
    FWD_LOCALNODE = 1
    FWD_TUNNEL = 2
    FWD_DROUTE = 3

# Connection flags (IP_VS_CONN_F_*; the forwarding method's bits live in Conn.fwd)
cdef enum:
    CONN_F_FWD_MASK = 0x0007
    CONN_F_NOOUTPUT = 0x0004
    CONN_F_SYNC = 0x0020     # made from a sync record (a backup's entry)
    CONN_F_HASHED = 0x0040
    CONN_F_INACTIVE = 0x0100
    CONN_F_NO_CPORT = 0x0800
    CONN_F_TEMPLATE = 0x1000
    CONN_F_ONE_PACKET = 0x2000
    # the kernel's NOOUTPUT bit, as sync records carry it: the engine keeps NOOUTPUT in
    # 0x0004 (the kernel's BYPASS, inside the method's bits, which Conn.fwd holds)
    KCONN_F_NOOUTPUT = 0x0080

# Template states (IP_VS_CTPL_S_*): ip_vs_control_assure_ct sets ASSURED
cdef enum:
    CTPL_S_NONE = 0
    CTPL_S_ASSURED = 1

# Service flags (IP_VS_SVC_F_*)
cdef enum:
    SVC_F_PERSISTENT = 0x0001
    SVC_F_HASHED = 0x0002
    SVC_F_ONEPACKET = 0x0004
    SVC_F_SCHED1 = 0x0008
    SVC_F_SCHED2 = 0x0010
    SVC_F_SCHED3 = 0x0020

# Dest flags (IP_VS_DEST_F_*)
cdef enum:
    DEST_F_AVAILABLE = 0x0001
    DEST_F_OVERLOAD = 0x0002

# Directions for the state machine
cdef enum:
    DIR_INPUT = 0
    DIR_OUTPUT = 1

ctypedef struct Stats:
    uint64_t conns
    uint64_t inpkts
    uint64_t outpkts
    uint64_t inbytes
    uint64_t outbytes

ctypedef struct PacketMeta:
    uint32_t saddr[4]        # network byte order words; IPv4 uses word 0
    uint32_t daddr[4]
    uint32_t l3off           # offset of the IP header in the frame
    uint32_t l4off           # offset of the TCP/UDP header in the frame
    uint32_t caplen          # bytes captured
    uint32_t l3len           # IP datagram length (total length; the bytes IPVS counts)
    uint16_t sport_be
    uint16_t dport_be
    uint8_t proto            # proto and af in this order, as in Conn: one 16-bit compare
    uint8_t af               # 4 or 6
    uint8_t tcpflags
    uint8_t ttl
    uint8_t cut              # 1 when the capture cut the datagram short
    uint8_t frag             # 0 whole datagram, 2 first fragment, 1 a later fragment
    uint32_t frag_id         # IPv4 id (16 bits) or IPv6 fragment identification
    int64_t now              # the engine's clock (ns) when the packet is processed

ctypedef struct Dest:
    uint32_t addr[4]
    uint16_t port_be
    uint8_t af
    uint8_t fwd
    int32_t weight
    uint32_t flags
    int32_t activeconns
    int32_t inactconns
    int32_t persistconns
    uint32_t u_threshold
    uint32_t l_threshold
    int32_t svc
    Stats stats

ctypedef struct Service:
    uint32_t addr[4]
    uint16_t port_be
    uint8_t af
    uint8_t proto
    uint32_t fwmark
    uint32_t flags           # IP_VS_SVC_F_* (persistent, one-packet, sched flags 1-3)
    uint32_t netmask[4]      # -M: the client addresses that share a template
    uint32_t persist_timeout
    int32_t ndests
    int32_t* dest_list       # indexes into the engine's Dest array, in list order
    void* sched              # SchedOps*
    void* sched_data         # a scheduler's own state (allocated by its init_svc)
    int32_t sched_cursor     # rr/wrr: position in dest_list, -1 = the list head
    int32_t wrr_cw           # wrr: current weight
    int32_t wrr_mw           # wrr: max weight - (gcd - 1)
    int32_t wrr_di           # wrr: gcd of the weights

ctypedef struct Conn:
    # first cache line: what a lookup compares and the per-packet state
    uint32_t caddr[4]
    uint32_t vaddr[4]
    uint32_t daddr[4]
    uint16_t cport_be        # (cport, vport): the in key's ports as one 32-bit word
    uint16_t vport_be
    uint16_t dport_be        # (dport, cport_again): the out key's ports as one word
    uint16_t cport_again     # = cport_be
    uint8_t proto
    uint8_t af
    uint8_t state
    uint8_t fwd
    uint16_t flags
    uint8_t in_use           # bit 0 allocated, bit 1 hashed, bit 2 a template
    uint8_t old_state        # the state last sent to backups (cp->old_state)
    # second cache line
    int32_t dest             # index into Dest array, -1 for none
    int32_t svc
    int64_t expires          # ns; the connection is gone for a packet at or after this
    int64_t timeout          # ns
    int64_t heap_key         # this connection's key in the timer heap (<= expires)
    uint64_t hash            # keyed hash of the in key (the out key hashes alike)
    uint64_t hash_out
    uint32_t heap_pos        # this connection's place in the timer heap
    uint32_t control         # the controlling template's index + 1, 0 for none
    int32_t n_control        # a template: connections it controls
    uint32_t in_pkts         # input packets (cp->in_pkts: the sync threshold counts them)

# The arguments of a registered protocol's operations (struct ip_vs_protocol's
# members, include/net/ip_vs.h): one struct for all, so every operation of every
# protocol has the same signature (_proto.pxd dispatches them). The dispatchers are
# inline: the struct lives in registers after inlining.
cdef enum:
    PP_NOPROTO = -1          # a dispatcher's answer for a protocol nobody registered

ctypedef struct ProtoArgs:
    # in
    Conn* c
    uint8_t* p               # the frame
    PacketMeta* m
    uint32_t caplen          # parse: bytes captured, transport header offset,
    uint32_t l4              # end of the datagram
    uint32_t dgram_end
    uint64_t addr_diff       # nat: checksum delta of the address already rewritten
    uint16_t old_port
    uint16_t new_port
    int port_off             # nat: 0 source port, 2 destination port
    int direction            # state: DIR_INPUT / DIR_OUTPUT
    # arg: state: secure_tcp on; schedule: sloppy_sctp; new_conn_expected:
    # conn_reuse_mode; active: the state
    int arg
    # out
    int slot                 # set by the dispatcher: the protocol's registration slot
    const char* name         # info
    int nstates
    const char* const* state_names
    const int* timeouts      # seconds, per state


# The connection-sync master (ip_vs_sync.c; _sync.pxd): the kernel's sysctls, and the
# records to send, appended per batch to a C buffer that Engine.take_sync_events()
# hands out as an array of fastvs.sync.master.SYNC_EVENT_DTYPE (same packed layout).
cdef packed struct SyncEvent:
    int64_t ts_ns
    uint8_t af
    uint8_t protocol
    uint16_t state
    uint32_t flags
    uint16_t cport           # host byte order
    uint16_t vport
    uint16_t dport
    uint32_t fwmark
    uint32_t timeout_s
    uint32_t caddr[4]        # as in Conn (network order; IPv4 in the first word)
    uint32_t vaddr[4]
    uint32_t daddr[4]

ctypedef struct SyncState:
    int version              # sync_version: 0 or 1
    uint32_t threshold       # sync_threshold
    uint32_t period          # sync_period
    uint64_t refresh_j       # sync_refresh_period, jiffies (0: off)
    uint32_t retries         # sync_retries
    bint persist_mode        # sync_persist_mode
    uint64_t* endtime        # per connection slot: cp->sync_endtime (refresh period only)
    SyncEvent* ev            # the records to send since the last take
    uint32_t nev
    uint32_t cap
    uint64_t lost            # records that found the buffer at its bound


# The engine's batch entry, for an I/O backend's own receive-process-transmit loop
# without Python in between (fastvs/live/_afxdp.pyx, _afpacket.pyx): Engine.batch_entry()
# is a capsule (BATCH_ENTRY_NAME) around one; ``run(st, ...)`` is Engine.process's nogil
# body (dp_run in _engine.pyx) over ``n`` packets.
ctypedef Py_ssize_t (*batch_fn)(void* st, uint8_t* buf, Py_ssize_t buflen, const uint32_t* off,
                                const uint32_t* caplen, const uint32_t* wirelen, const int64_t* ts,
                                const uint16_t* linktype, uint8_t* verdict, int32_t* aux,
                                Py_ssize_t n) noexcept nogil

ctypedef struct BatchEntry:
    batch_fn run
    void* st

cdef extern from *:
    """
    #define FV_BATCH_ENTRY_NAME "fastvs.datapath.BatchEntry"
    """
    const char* BATCH_ENTRY_NAME "FV_BATCH_ENTRY_NAME"
