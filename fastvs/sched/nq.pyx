"""Never queue (ip_vs_nq.c): an idle server (no active connection) at once, the
first in list order; otherwise shortest expected delay, (activeconns + 1) / weight.

Overloaded and weight-0 servers are skipped; among busy servers the first in list
order wins a tie (the comparison is strict, cross-multiplied in 64 bits).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded


cdef int32_t nq_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t least = -1
    cdef int64_t loh = 0
    cdef int64_t doh
    cdef int32_t i, d
    for i in range(svc.ndests):
        d = svc.dest_list[i]
        if dest_overloaded(&dests[d]) or dests[d].weight == 0:
            continue
        if dests[d].activeconns == 0:
            return d
        doh = <int64_t>dests[d].activeconns + 1
        if least < 0 or loh * dests[d].weight > doh * dests[least].weight:
            least = d
            loh = doh
    return least


cdef SchedOps NQ
NQ.name = b"nq"
NQ.pick = nq_pick
NQ.init_svc = NULL
NQ.done_svc = NULL
NQ.dest_changed = NULL

NAME = "nq"
OPS = PyCapsule_New(&NQ, b"fastvs.SchedOps", NULL)
