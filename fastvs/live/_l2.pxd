# cython: language_level=3
"""The live path's L2 stage, shared by every I/O backend: checksum completion of frames
that arrive CHECKSUM_PARTIAL, and the Ethernet output stage (neighbour lookup, client
learning, MAC rewrite, sorting forwarded frames by the side they leave on).

A backend (fastvs/live/_afpacket.pyx; an AF_XDP one next) holds an :class:`L2Stage`
and calls the inline functions below from its nogil loop: ``l2_csum_complete`` on
receive, ``l2_out`` after ``Engine.process``, then sends the frames ``l2_out`` listed
per side in its own way. The neighbour table is fastvs/live/_neightab.pxd; frames are
parsed with the data path's ``l2_parse`` (fastvs/datapath/_packet.pxd) and verdicts
are the data path's (fastvs/datapath/_types.pxd). The role of the kernel's
neigh_output/dev_hard_header for what ip_vs_nat_xmit hands on.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from fastvs.datapath._types cimport V_FWD_IN, V_FWD_OUT, BatchEntry
from fastvs.datapath._bytes cimport ld16
from fastvs.datapath._csum cimport csum_block, csum_partial, csum_fold
from fastvs.datapath._packet cimport l2_parse, LT_EN10MB
from fastvs.live._neightab cimport NeighEnt, key_v4, key_eq, nb_find, nb_put

cdef enum:
    SIDE_CLIENT = 0         # the interface facing the clients (also the one-arm one)
    SIDE_SERVER = 1         # the interface facing the real servers
    MAX_WANT = 32           # unresolved neighbours remembered between take_wanted calls
    ETH_ALEN = 6

# the stage's counters, in L2_COUNTER_NAMES order (_l2.pyx)
cdef enum:
    L2_CSUM_COMPLETED = 0
    L2_NOT_FORWARDED
    L2_DROP_NEIGH_MISS
    L2_NEIGH_LEARNED
    L2_N

ctypedef struct L2State:
    uint8_t mac[2][6]       # the interfaces' own MACs, per side
    NeighEnt* nb            # the neighbour table (IPv4 and IPv6)
    int nb_bits
    uint64_t nb_seed
    uint32_t gw[2][4]       # client-side gateway per family (0: IPv4, 1: IPv6)
    bint has_gw[2]
    uint32_t want[MAX_WANT][4]
    int nwant
    uint64_t c[L2_N]


cdef class L2Stage:
    cdef L2State s


# the CPU's spin-wait hint, for a pump that watches its rings before sleeping (--spin-us)
cdef extern from *:
    """
    #if defined(__x86_64__) || defined(__i386__)
    #define fv_cpu_relax() __builtin_ia32_pause()
    #elif defined(__aarch64__)
    #define fv_cpu_relax() __asm__ __volatile__("yield")
    #else
    #define fv_cpu_relax() ((void)0)
    #endif
    """
    void fv_cpu_relax() nogil


cdef inline int64_t mono_ns() noexcept nogil:
    """CLOCK_MONOTONIC in ns: the clock frames and neighbour entries are stamped with."""
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef inline int l2_ip(const uint8_t* p, uint32_t length, uint32_t* l3off) noexcept nogil:
    """4 or 6 for an Ethernet frame (VLAN tags followed) with a complete fixed IPv4 or
    IPv6 header at ``l3off``; 0 otherwise."""
    cdef int af = l2_parse(p, length, LT_EN10MB, l3off)
    if af == 4 and l3off[0] + 20 <= length and (p[l3off[0]] >> 4) == 4:
        return 4
    if af == 6 and l3off[0] + 40 <= length and (p[l3off[0]] >> 4) == 6:
        return 6
    return 0


cdef inline bint l2_csum_complete(uint8_t* p, uint32_t length, bint partial_only) noexcept nogil:
    """Compute the full TCP/UDP checksum of an Ethernet/IPv4 or IPv6 frame in place
    (what skb_checksum_help does for CHECKSUM_PARTIAL). False when not applicable: not
    TCP/UDP, a fragment, IPv6 extension headers, lengths beyond the frame.

    ``partial_only`` (AF_XDP copy mode, which hands a veth peer's CHECKSUM_PARTIAL
    frames over without a flag): only a frame whose checksum field holds exactly the
    folded pseudo-header sum -- what a sender with TX checksum offload leaves -- is
    completed; any other is left as it is (a wrong checksum stays wrong, except the
    1-in-65536 one that equals the pseudo-header sum)."""
    cdef uint32_t l3 = 0
    cdef int af = l2_ip(p, length, &l3)
    cdef uint32_t ihl, tot, l4len, l4, coff
    cdef uint8_t proto
    cdef uint8_t ph[40]
    cdef int phlen
    cdef uint64_t s
    cdef uint16_t c
    if af == 4:
        ihl = (p[l3] & 0x0f) * 4
        tot = ld16(p + l3 + 2)
        if ihl < 20 or tot < ihl or l3 + tot > length:
            return False
        if ld16(p + l3 + 6) & 0x3fff:      # a fragment: the checksum spans the datagram
            return False
        proto = p[l3 + 9]
        l4 = l3 + ihl
        l4len = tot - ihl
        memcpy(ph, p + l3 + 12, 8)
        ph[8] = 0
        ph[9] = proto
        ph[10] = <uint8_t>(l4len >> 8)
        ph[11] = <uint8_t>l4len
        phlen = 12
    elif af == 6:
        l4len = ld16(p + l3 + 4)
        proto = p[l3 + 6]               # TCP/UDP right behind the fixed header only
        l4 = l3 + 40
        if l4 + l4len > length:
            return False
        memcpy(ph, p + l3 + 8, 32)
        ph[32] = 0
        ph[33] = 0
        ph[34] = <uint8_t>(l4len >> 8)
        ph[35] = <uint8_t>l4len
        ph[36] = 0
        ph[37] = 0
        ph[38] = 0
        ph[39] = proto
        phlen = 40
    else:
        return False
    if proto == 6:
        if l4len < 20:
            return False
        coff = 16
    elif proto == 17:
        if l4len < 8:
            return False
        coff = 6
    else:
        return False
    s = csum_partial(ph, phlen, 0)
    if partial_only:
        memcpy(&c, p + l4 + coff, 2)
        if c != csum_fold(s):
            return False
    p[l4 + coff] = 0
    p[l4 + coff + 1] = 0
    s = csum_block(p + l4, l4len, s)
    c = <uint16_t>~csum_fold(s)
    if c == 0 and proto == 17:
        c = 0xffff
    memcpy(p + l4 + coff, &c, 2)
    return True


cdef inline void l2_want(L2State* s, const uint32_t* k) noexcept nogil:
    """Remember an address that had no neighbour entry (asked for by the ARP/ND code)."""
    cdef int i
    for i in range(s.nwant):
        if key_eq(s.want[i], k):
            return
    if s.nwant < MAX_WANT:
        memcpy(s.want[s.nwant], k, 16)
        s.nwant += 1


cdef inline void l2_out(L2State* s, uint8_t* buf, const uint32_t* off, const uint32_t* caplen,
                        const int64_t* ts, const uint8_t* verdict, const uint8_t* side,
                        Py_ssize_t n, uint32_t* tx_client, uint32_t* tx_server,
                        int* ntx) noexcept nogil:
    """Give every forwarded frame of the batch its Ethernet header and list it under the
    side it leaves on: ``fwd_in`` out the server side to the real server's MAC,
    ``fwd_out`` out the client side to the client's (or the client gateway's) MAC,
    learnt from the client's own frames. Anything else is not sent (the director is not
    a router). ``tx_client``/``tx_server`` receive batch indexes, ``ntx[0..1]`` their
    counts."""
    cdef Py_ssize_t i
    cdef int out, af, fam
    cdef uint8_t v
    cdef uint8_t* p
    cdef uint32_t l3 = 0
    cdef uint32_t dk[4]
    cdef uint32_t sk[4]
    cdef NeighEnt* e
    ntx[0] = 0
    ntx[1] = 0
    for i in range(n):
        v = verdict[i]
        if v == V_FWD_IN:
            out = SIDE_SERVER
        elif v == V_FWD_OUT:
            out = SIDE_CLIENT
        else:
            s.c[L2_NOT_FORWARDED] += 1
            continue
        p = buf + off[i]
        af = l2_ip(p, caplen[i], &l3)
        if af == 4:
            fam = 0
            key_v4(dk, p + l3 + 16)
            key_v4(sk, p + l3 + 12)
        elif af == 6:
            fam = 1
            memcpy(dk, p + l3 + 24, 16)
            memcpy(sk, p + l3 + 8, 16)
        else:
            s.c[L2_NOT_FORWARDED] += 1
            continue
        if v == V_FWD_IN and side[i] == SIDE_CLIENT:
            # the client (or the router in front of it) is where replies go back to
            if nb_put(s.nb, s.nb_seed, s.nb_bits, sk, p + ETH_ALEN, ts[i], False) == 1:
                s.c[L2_NEIGH_LEARNED] += 1
        e = nb_find(s.nb, s.nb_seed, s.nb_bits, dk)
        if e == NULL and out == SIDE_CLIENT and s.has_gw[fam]:
            e = nb_find(s.nb, s.nb_seed, s.nb_bits, s.gw[fam])
            if e == NULL:
                memcpy(dk, s.gw[fam], 16)
        if e == NULL:
            l2_want(s, dk)
            s.c[L2_DROP_NEIGH_MISS] += 1
            continue
        memcpy(p, e.mac, ETH_ALEN)
        memcpy(p + ETH_ALEN, s.mac[out], ETH_ALEN)
        if out == SIDE_CLIENT:
            tx_client[ntx[0]] = <uint32_t>i
            ntx[0] += 1
        else:
            tx_server[ntx[1]] = <uint32_t>i
            ntx[1] += 1


cdef inline uint64_t l2_gather(const uint32_t* idx, int n, const uint32_t* off,
                               const uint32_t* caplen, uint32_t* out_off, uint32_t* out_len,
                               uint8_t* sent) noexcept nogil:
    """One side's frames as ``l2_out`` listed them (``idx``: ``tx_client`` or
    ``tx_server``, ``n`` of them) gathered into ``out_off``/``out_len`` in that order,
    each marked in ``sent`` (batch-indexed; NULL: not kept). Returns their bytes."""
    cdef int j
    cdef uint32_t i
    cdef uint64_t nbytes = 0
    for j in range(n):
        i = idx[j]
        out_off[j] = off[i]
        out_len[j] = caplen[i]
        nbytes += caplen[i]
        if sent != NULL:
            sent[i] = 1
    return nbytes


# A backend's receive and transmit steps, for io_run (the pump is the backend's struct)
ctypedef Py_ssize_t (*io_rx_fn)(void* pump, int timeout_ms) noexcept nogil
ctypedef void (*io_tx_fn)(void* pump, Py_ssize_t n) noexcept nogil


cdef inline Py_ssize_t io_run(void* pump, io_rx_fn rx, io_tx_fn tx, const BatchEntry* e,
                              uint8_t* buf, Py_ssize_t buflen, const uint32_t* off,
                              const uint32_t* caplen, const uint32_t* wirelen, const int64_t* ts,
                              const uint16_t* linktype, uint8_t* verdict,
                              const uint32_t* aux_ready, const L2State* l2, int timeout_ms,
                              int64_t budget_ns) noexcept nogil:
    """The worker's loop in C, for both backends' ``run``: receive (``rx``: up to
    ``timeout_ms`` when nothing waits), the engine's batch entry over the batch,
    transmit (``tx``), again -- until a receive brings nothing, a watched descriptor is
    readable (``aux_ready``), the L2 stage wants a neighbour, or ``budget_ns`` has
    passed since the first batch. Returns the frames handed to the engine."""
    cdef Py_ssize_t n, total = 0
    cdef int64_t end = 0
    while True:
        n = rx(pump, timeout_ms)
        if n == 0:
            return total
        if total == 0:
            end = mono_ns() + budget_ns
        e.run(e.st, buf, buflen, off, caplen, wirelen, ts, linktype, verdict, NULL, n)
        tx(pump, n)
        total += n
        if aux_ready[0] or l2.nwant or mono_ns() >= end:
            return total
