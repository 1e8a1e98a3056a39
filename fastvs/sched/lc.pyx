"""Least-connection (ip_vs_lc.c): the smallest overhead wins; the first in list
order wins a tie. Weight only matters as zero (quiescent) or not."""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded, dest_overhead


cdef int32_t lc_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t least = -1
    cdef int64_t loh = 0
    cdef int64_t doh
    cdef int32_t i, d
    for i in range(svc.ndests):
        d = svc.dest_list[i]
        if dest_overloaded(&dests[d]) or dests[d].weight == 0:
            continue
        doh = dest_overhead(&dests[d])
        if least < 0 or doh < loh:
            least = d
            loh = doh
    return least


cdef SchedOps LC
LC.name = b"lc"
LC.pick = lc_pick
LC.init_svc = NULL
LC.done_svc = NULL
LC.dest_changed = NULL

NAME = "lc"
OPS = PyCapsule_New(&LC, b"fastvs.SchedOps", NULL)
