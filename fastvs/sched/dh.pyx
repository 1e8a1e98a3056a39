"""Destination hashing (ip_vs_dh.c): a 256-bucket table maps a hash of the packet's
destination address, hash_32(daddr, 8) in host order, to a real server.

The table is rebuilt on every change (the kernel's add/del hooks; weights do not
enter it): bucket i holds the server at list position i mod ndests.  A server that
is unavailable (removed, weight <= 0 or overloaded) gives "no destination"; dh has
no fallback.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t
from libc.stdlib cimport malloc, free
from fastvs.datapath._types cimport Service, Dest, PacketMeta, DEST_F_AVAILABLE
from fastvs.sched._base cimport SchedOps, dest_overloaded
from fastvs.sched._hashing cimport hash_32, addr_fold

cdef enum:
    DH_TAB_BITS = 8
    DH_TAB_SIZE = 1 << DH_TAB_BITS


cdef void dh_reassign(Service* svc, Dest* dests) noexcept nogil:
    cdef int32_t* b = <int32_t*>svc.sched_data
    cdef int32_t i
    if b == NULL:
        return
    for i in range(DH_TAB_SIZE):
        b[i] = svc.dest_list[i % svc.ndests] if svc.ndests > 0 else -1


cdef int32_t dh_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t* b = <int32_t*>svc.sched_data
    cdef int32_t d
    if b == NULL:
        return -1
    d = b[hash_32(addr_fold(m.daddr, svc.af), DH_TAB_BITS)]
    if (d < 0 or not (dests[d].flags & DEST_F_AVAILABLE) or dests[d].weight <= 0
            or dest_overloaded(&dests[d])):
        return -1
    return d


cdef void dh_init(Service* svc, Dest* dests) noexcept nogil:
    svc.sched_data = malloc(DH_TAB_SIZE * sizeof(int32_t))
    dh_reassign(svc, dests)


cdef void dh_done(Service* svc, Dest* dests) noexcept nogil:
    free(svc.sched_data)
    svc.sched_data = NULL


cdef SchedOps DH
DH.name = b"dh"
DH.pick = dh_pick
DH.init_svc = dh_init
DH.done_svc = dh_done
DH.dest_changed = dh_reassign

NAME = "dh"
OPS = PyCapsule_New(&DH, b"fastvs.SchedOps", NULL)
TAB_SIZE = DH_TAB_SIZE
