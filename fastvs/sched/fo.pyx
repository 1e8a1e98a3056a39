"""Weighted fail-over (ip_vs_fo.c): the server with the highest weight that is not
overloaded; the first in list order wins a tie, and weight 0 is never picked."""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded


cdef int32_t fo_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t best = -1
    cdef int32_t hw = 0
    cdef int32_t i, d
    for i in range(svc.ndests):
        d = svc.dest_list[i]
        if not dest_overloaded(&dests[d]) and dests[d].weight > hw:
            best = d
            hw = dests[d].weight
    return best


cdef SchedOps FO
FO.name = b"fo"
FO.pick = fo_pick
FO.init_svc = NULL
FO.done_svc = NULL
FO.dest_changed = NULL

NAME = "fo"
OPS = PyCapsule_New(&FO, b"fastvs.SchedOps", NULL)
