# cython: language_level=3
"""The forwarder's neighbour cache: IPv4 and IPv6 address -> MAC, in C memory.

A 4-way set-associative table keyed by a 16-byte address: IPv6 as it is, IPv4 as the
IPv4-mapped IPv6 address ``::ffff:a.b.c.d`` (so one table and one lookup serve both
families). The set is chosen by a seeded multiplicative hash, so nobody outside can aim
learnt entries at one set. Static entries (``--neigh`` file, answers to our own ARP/ND
requests) are never replaced or evicted by learning; among learnt entries the least
recently seen goes first. Used only by fastvs/live/_afpacket.pyx.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memcmp

cdef enum:
    NB_USED = 1
    NB_STATIC = 2
    NB_WAYS = 4
    NB_ALEN = 6

ctypedef struct NeighEnt:
    uint32_t ip[4]         # wire order; IPv4 as ::ffff:a.b.c.d
    uint8_t mac[6]
    uint8_t flags
    uint8_t pad
    int64_t seen


cdef inline void key_v4(uint32_t* k, const uint8_t* ip4) noexcept nogil:
    """The table key of an IPv4 address (4 bytes in wire order)."""
    cdef uint8_t* b = <uint8_t*>k
    k[0] = 0
    k[1] = 0
    b[8] = 0
    b[9] = 0
    b[10] = 0xff
    b[11] = 0xff
    memcpy(b + 12, ip4, 4)


cdef inline bint key_is_v4(const uint32_t* k) noexcept nogil:
    cdef const uint8_t* b = <const uint8_t*>k
    return k[0] == 0 and k[1] == 0 and b[8] == 0 and b[9] == 0 and b[10] == 0xff and b[11] == 0xff


cdef inline bint key_eq(const uint32_t* a, const uint32_t* b) noexcept nogil:
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]


cdef inline uint64_t nb_set(const uint32_t* k, uint64_t seed, int bits) noexcept nogil:
    cdef uint64_t h = seed
    h = (h ^ ((<uint64_t>k[0] << 32) | k[1])) * <uint64_t>0x9E3779B97F4A7C15
    h ^= h >> 29
    h = (h ^ ((<uint64_t>k[2] << 32) | k[3])) * <uint64_t>0xBF58476D1CE4E5B9
    h ^= h >> 31
    return (h * <uint64_t>0x94D049BB133111EB) >> (64 - bits)


cdef inline NeighEnt* nb_find(NeighEnt* tab, uint64_t seed, int bits, const uint32_t* k) noexcept nogil:
    cdef NeighEnt* e = tab + nb_set(k, seed, bits) * NB_WAYS
    cdef int w
    for w in range(NB_WAYS):
        if (e[w].flags & NB_USED) and key_eq(e[w].ip, k):
            return &e[w]
    return NULL


cdef inline int nb_put(NeighEnt* tab, uint64_t seed, int bits, const uint32_t* k,
                       const uint8_t* mac, int64_t now, bint static) noexcept nogil:
    """Insert or refresh; a learnt entry never replaces a static one. Returns 1 when
    something new was written, 0 when refreshed/unchanged, -1 when refused."""
    cdef NeighEnt* e = tab + nb_set(k, seed, bits) * NB_WAYS
    cdef NeighEnt* victim = NULL
    cdef int w
    if mac[0] & 1:
        return -1                      # a multicast/broadcast source MAC is nobody's
    for w in range(NB_WAYS):
        if (e[w].flags & NB_USED) and key_eq(e[w].ip, k):
            if (e[w].flags & NB_STATIC) and not static:
                return -1
            e[w].seen = now
            if static:
                e[w].flags |= NB_STATIC
            if memcmp(e[w].mac, mac, NB_ALEN) == 0:
                return 0
            memcpy(e[w].mac, mac, NB_ALEN)
            return 1
    for w in range(NB_WAYS):
        if not (e[w].flags & NB_USED):
            victim = &e[w]
            break
        if not (e[w].flags & NB_STATIC) and (victim == NULL or e[w].seen < victim.seen):
            victim = &e[w]
    if victim == NULL:
        if not static:
            return -1
        victim = &e[0]
    memcpy(victim.ip, k, 16)
    memcpy(victim.mac, mac, NB_ALEN)
    victim.flags = NB_USED | (NB_STATIC if static else 0)
    victim.seen = now
    return 1
