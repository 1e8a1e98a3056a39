# cython: language_level=3
"""Shortest expected delay (ip_vs_sed.c): the smallest (activeconns + 1) / weight.

Only active connections count.  The first usable server (not overloaded, weight
> 0) in list order is the starting point; later ones replace it only when
strictly better, compared cross-multiplied in 64 bits, so the first in list order
wins a tie.  As in the kernel, the later servers are checked for overload only: a
weight-0 server can never be strictly better (its side of the comparison is 0).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t
from fastvs._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded


cdef inline int64_t sed_overhead(const Dest* d) noexcept nogil:
    return <int64_t>d.activeconns + 1


cdef int32_t sed_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t least = -1
    cdef int64_t loh = 0
    cdef int64_t doh
    cdef int32_t i, d
    cdef int32_t n = svc.ndests
    for i in range(n):
        d = svc.dest_list[i]
        if not dest_overloaded(&dests[d]) and dests[d].weight > 0:
            least = d
            loh = sed_overhead(&dests[d])
            break
    if least < 0:
        return -1
    for i in range(i + 1, n):
        d = svc.dest_list[i]
        if dest_overloaded(&dests[d]):
            continue
        doh = sed_overhead(&dests[d])
        if loh * dests[d].weight > doh * dests[least].weight:
            least = d
            loh = doh
    return least


cdef SchedOps SED
SED.name = b"sed"
SED.pick = sed_pick
SED.init_svc = NULL
SED.done_svc = NULL
SED.dest_changed = NULL

NAME = "sed"
OPS = PyCapsule_New(&SED, b"fastvs.SchedOps", NULL)
