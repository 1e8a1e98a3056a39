"""Source hashing (ip_vs_sh.c): a 256-bucket table maps a hash of the client's
address (and port, with sh-port) to a real server.

The table (``dest_changed``, as ip_vs_sh_reassign after every add, edit, removal)
walks the list from its head, giving each server ``weight`` consecutive buckets
(at least one, so a weight-0 server keeps one bucket) and wrapping round until all
256 are filled.  A packet's bucket is hash_32(port + addr, 8), host order, where
port is the client port with the -b flag ``sh-port`` (SVC_F_SCHED2) and 0 without.
An unavailable server (weight 0 or overloaded) gives "no destination", or with
``sh-fallback`` (SVC_F_SCHED1) the search goes on through the buckets the kernel
tries next: (offset + hash_32(...)) & 255 for offset = (k + first bucket) % 256,
k = 0..255, stopping at an empty bucket.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, uint32_t
from libc.stdlib cimport malloc, free
from fastvs.datapath._types cimport Service, Dest, PacketMeta, SVC_F_SCHED1, SVC_F_SCHED2
from fastvs.sched._base cimport SchedOps, dest_overloaded
from fastvs.sched._hashing cimport hash_32, addr_fold, ntohs

cdef enum:
    SH_TAB_BITS = 8
    SH_TAB_SIZE = 1 << SH_TAB_BITS
    SH_TAB_MASK = SH_TAB_SIZE - 1


cdef inline uint32_t sh_hashkey(uint32_t addr_host, uint32_t port_host,
                                uint32_t offset) noexcept nogil:
    return (offset + hash_32(port_host + addr_host, SH_TAB_BITS)) & SH_TAB_MASK


cdef inline bint unavailable(const Dest* d) noexcept nogil:
    return d.weight <= 0 or dest_overloaded(d)


cdef void sh_reassign(Service* svc, Dest* dests) noexcept nogil:
    cdef int32_t* b = <int32_t*>svc.sched_data
    cdef int32_t i, d
    cdef int32_t pos = 0
    cdef int32_t count = 0
    if b == NULL:
        return
    for i in range(SH_TAB_SIZE):
        if svc.ndests == 0:
            b[i] = -1
            continue
        d = svc.dest_list[pos]
        b[i] = d
        count += 1
        if count >= dests[d].weight:
            pos = (pos + 1) % svc.ndests
            count = 0


cdef int32_t sh_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t* b = <int32_t*>svc.sched_data
    cdef uint32_t addr, port, ihash, roffset, k
    cdef int32_t d
    if b == NULL:
        return -1
    addr = addr_fold(m.saddr, svc.af)
    port = ntohs(m.sport_be) if svc.flags & SVC_F_SCHED2 else 0
    ihash = sh_hashkey(addr, port, 0)
    d = b[ihash]
    if d < 0:
        return -1
    if not unavailable(&dests[d]):
        return d
    if not (svc.flags & SVC_F_SCHED1):
        return -1
    for k in range(SH_TAB_SIZE):
        roffset = (k + ihash) % SH_TAB_SIZE
        d = b[sh_hashkey(addr, port, roffset)]
        if d < 0:
            break
        if not unavailable(&dests[d]):
            return d
    return -1


cdef void sh_init(Service* svc, Dest* dests) noexcept nogil:
    svc.sched_data = malloc(SH_TAB_SIZE * sizeof(int32_t))
    sh_reassign(svc, dests)


cdef void sh_done(Service* svc, Dest* dests) noexcept nogil:
    free(svc.sched_data)
    svc.sched_data = NULL


cdef SchedOps SH
SH.name = b"sh"
SH.pick = sh_pick
SH.init_svc = sh_init
SH.done_svc = sh_done
SH.dest_changed = sh_reassign

NAME = "sh"
OPS = PyCapsule_New(&SH, b"fastvs.SchedOps", NULL)
TAB_SIZE = SH_TAB_SIZE
