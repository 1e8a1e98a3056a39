"""Maglev hashing (ip_vs_mh.c; Eisenbud et al., NSDI 2016, section 3.4).

A lookup table of MH_TAB_SIZE = 4093 slots (the kernel's default,
CONFIG_IP_VS_MH_TAB_INDEX = 12) maps a hash of the client's address (and port,
with the -b flag ``mh-port``, SVC_F_SCHED2) to a real server.

Building the table (``dest_changed``, as ip_vs_mh_dest_changed after every add,
edit and removal):

- each server's *last weight* is its latest non-zero weight (a server added with
  weight 0 has last weight 0); g is the gcd of the positive last weights and
  rshift = max(0, fls(max last weight / g) - 6);
- each server gets a permutation of the slots: offset = h1 % 4093, skip = h2 %
  4092 + 1, where h1, h2 are hsiphash of (ntohs(port) + ntohl(addr)) (addr folded
  as an address of the service's family, whatever the server's) under the two
  fixed keys (2654435761, 2654435761) and (2654446892, 2654446892), and
  turns = (last weight / g) >> rshift, or 1 when that is 0 and last weight > 0;
- servers take turns in list order, each claiming ``turns`` slots per round: the
  next slot of its permutation not yet taken; until all 4093 are taken.

A quiesced server (weight 0) therefore keeps its slots.  A packet's slot is
hsiphash(ntohs(port) + ntohl(saddr)) % 4093 under the first key; an unavailable
server there (weight 0 or overloaded) means "no destination", or, with
``mh-fallback`` (SVC_F_SCHED1), the slots for offsets (k + slot) % 4093, k =
0..4092 (each hashed again) are tried until a usable server or an empty slot.

hsiphash is the 64-bit kernel's: SipHash-1-3, truncated to 32 bits (_siphash.h).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, malloc, realloc, free
from libc.string cimport memset
from fastvs.datapath._types cimport Service, Dest, PacketMeta, SVC_F_SCHED1, SVC_F_SCHED2
from fastvs.sched._base cimport SchedOps, dest_overloaded
from fastvs.sched._hashing cimport addr_fold, ntohs, fv_siphash, fv_hsiphash_u32

cdef enum:
    MH_TAB_SIZE = 4093      # primes[CONFIG_IP_VS_MH_TAB_INDEX - 8]
    MH_TAB_BITS = 6         # CONFIG_IP_VS_MH_TAB_INDEX / 2

cdef uint64_t KEY1 = 2654435761
cdef uint64_t KEY2 = 2654446892


ctypedef struct MhState:
    int32_t lookup[MH_TAB_SIZE]     # dest index, -1 = empty
    uint8_t taken[MH_TAB_SIZE]      # scratch for populate
    int32_t* last_weight            # by dest index; -1 = not seen yet
    int32_t nlast


cdef inline uint32_t mh_hashkey(uint32_t addr_host, uint32_t port_host, uint64_t key,
                                uint32_t offset) noexcept nogil:
    return fv_hsiphash_u32(offset + port_host + addr_host, key, key)


cdef inline bint unavailable(const Dest* d) noexcept nogil:
    return d.weight <= 0 or dest_overloaded(d)


cdef int32_t gcd(int32_t a, int32_t b) noexcept nogil:
    cdef int32_t t
    while b:
        t = a % b
        a = b
        b = t
    return a


cdef int32_t fls(uint32_t x) noexcept nogil:
    cdef int32_t r = 0
    while x:
        r += 1
        x >>= 1
    return r


cdef bint mh_track_weights(MhState* s, Service* svc, Dest* dests) noexcept nogil:
    """Keep each dest's latest non-zero weight (dest->last_weight); False on ENOMEM."""
    cdef int32_t i, d, top = -1
    cdef int32_t* p
    for i in range(svc.ndests):
        if svc.dest_list[i] > top:
            top = svc.dest_list[i]
    if top >= s.nlast:
        p = <int32_t*>realloc(s.last_weight, (top + 1) * sizeof(int32_t))
        if p == NULL:
            return False
        for i in range(s.nlast, top + 1):
            p[i] = -1
        s.last_weight = p
        s.nlast = top + 1
    for i in range(svc.ndests):
        d = svc.dest_list[i]
        if s.last_weight[d] < 0 or dests[d].weight != 0:
            s.last_weight[d] = dests[d].weight
    return True


cdef void mh_populate(MhState* s, Service* svc, Dest* dests) noexcept nogil:
    cdef int32_t n = svc.ndests
    cdef int32_t g = 0
    cdef int32_t mw = 0
    cdef int32_t rshift, i, d, lw, filled, c, dt_count
    cdef uint32_t addr, port
    cdef uint32_t* perm
    cdef uint32_t* skip
    cdef int32_t* turns
    if n > MH_TAB_SIZE:
        return                  # -EINVAL: the old table stays
    if not mh_track_weights(s, svc, dests):
        return
    for i in range(n):
        lw = s.last_weight[svc.dest_list[i]]
        if lw > 0:
            g = gcd(lw, g) if g > 0 else lw
        if lw > mw:
            mw = lw
    if g < 1:
        for i in range(MH_TAB_SIZE):
            s.lookup[i] = -1
        return
    rshift = fls(mw // g) - MH_TAB_BITS
    if rshift < 0:
        rshift = 0
    perm = <uint32_t*>malloc(n * sizeof(uint32_t))
    skip = <uint32_t*>malloc(n * sizeof(uint32_t))
    turns = <int32_t*>malloc(n * sizeof(int32_t))
    if perm == NULL or skip == NULL or turns == NULL:
        free(perm)
        free(skip)
        free(turns)
        return                  # -ENOMEM: the old table stays
    for i in range(n):
        d = svc.dest_list[i]
        # ip_vs_mh_permutate (ip_vs_mh.c:143-147) folds a real server's address as an
        # address of the service's family: an IPv6 real server of an IPv4 service
        # (tunnel) hashes its first 32 bits only
        addr = addr_fold(dests[d].addr, svc.af)
        port = ntohs(dests[d].port_be)
        perm[i] = mh_hashkey(addr, port, KEY1, 0) % MH_TAB_SIZE
        skip[i] = mh_hashkey(addr, port, KEY2, 0) % (MH_TAB_SIZE - 1) + 1
        lw = s.last_weight[d]
        turns[i] = (lw // g) >> rshift
        if turns[i] == 0 and lw != 0:
            turns[i] = 1
    memset(s.taken, 0, sizeof(s.taken))
    filled = 0
    while filled < MH_TAB_SIZE:
        dt_count = 0
        i = 0
        while i < n:
            if turns[i] < 1:
                i += 1
                continue
            c = perm[i]
            while s.taken[c]:
                perm[i] += skip[i]
                if perm[i] >= MH_TAB_SIZE:
                    perm[i] -= MH_TAB_SIZE
                c = perm[i]
            s.taken[c] = 1
            s.lookup[c] = svc.dest_list[i]
            filled += 1
            if filled == MH_TAB_SIZE:
                break
            dt_count += 1
            if dt_count >= turns[i]:
                dt_count = 0
                i += 1
    free(perm)
    free(skip)
    free(turns)


cdef void mh_changed(Service* svc, Dest* dests) noexcept nogil:
    if svc.sched_data != NULL:
        mh_populate(<MhState*>svc.sched_data, svc, dests)


cdef int32_t mh_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef MhState* s = <MhState*>svc.sched_data
    cdef uint32_t addr, port, ihash, roffset, k
    cdef int32_t d
    if s == NULL:
        return -1
    addr = addr_fold(m.saddr, svc.af)
    port = ntohs(m.sport_be) if svc.flags & SVC_F_SCHED2 else 0
    ihash = mh_hashkey(addr, port, KEY1, 0) % MH_TAB_SIZE
    d = s.lookup[ihash]
    if d < 0:
        return -1
    if not unavailable(&dests[d]):
        return d
    if not (svc.flags & SVC_F_SCHED1):
        return -1
    for k in range(MH_TAB_SIZE):
        roffset = (k + ihash) % MH_TAB_SIZE
        d = s.lookup[mh_hashkey(addr, port, KEY1, roffset) % MH_TAB_SIZE]
        if d < 0:
            break
        if not unavailable(&dests[d]):
            return d
    return -1


cdef void mh_init(Service* svc, Dest* dests) noexcept nogil:
    cdef MhState* s = <MhState*>calloc(1, sizeof(MhState))
    cdef int32_t i
    if s != NULL:
        for i in range(MH_TAB_SIZE):
            s.lookup[i] = -1
        mh_populate(s, svc, dests)
    svc.sched_data = s


cdef void mh_del_dest(Service* svc, Dest* dests, int32_t dest) noexcept nogil:
    # a server that leaves the list and comes back (from the trash) is added anew:
    # __ip_vs_update_dest with add = 1 sets last_weight to its weight, even 0
    cdef MhState* s = <MhState*>svc.sched_data
    if s != NULL and dest < s.nlast:
        s.last_weight[dest] = -1


cdef void mh_done(Service* svc, Dest* dests) noexcept nogil:
    cdef MhState* s = <MhState*>svc.sched_data
    if s != NULL:
        free(s.last_weight)
        free(s)
    svc.sched_data = NULL


cdef SchedOps MH
MH.name = b"mh"
MH.pick = mh_pick
MH.init_svc = mh_init
MH.done_svc = mh_done
MH.dest_changed = mh_changed
MH.del_dest = mh_del_dest

NAME = "mh"
OPS = PyCapsule_New(&MH, b"fastvs.SchedOps", NULL)
TAB_SIZE = MH_TAB_SIZE


def siphash(bytes data, uint64_t k0, uint64_t k1, int c=2, int d=4):
    """SipHash-c-d of ``data`` under the key (k0, k1), for tests (default 2-4)."""
    cdef const uint8_t* p = data
    return fv_siphash(p, len(data), k0, k1, c, d)


def hsiphash_u32(uint32_t v, uint64_t k0, uint64_t k1):
    """The 64-bit kernel's hsiphash of one host-order u32 (SipHash-1-3, low 32 bits)."""
    return fv_hsiphash_u32(v, k0, k1)
