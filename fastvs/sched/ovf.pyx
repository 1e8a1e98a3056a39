"""Overflow (ip_vs_ovf.c): the highest-weight server whose active connections do
not exceed its weight; when it fills up, connections overflow to the next.

A server is skipped when overloaded, when weight is 0, or when activeconns >
weight; among the rest the highest weight wins and the first in list order wins a
tie.  Inactive connections (UDP, closing TCP) do not count, as in the kernel.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded


cdef int32_t ovf_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t best = -1
    cdef int32_t hw = 0
    cdef int32_t i, d, w
    for i in range(svc.ndests):
        d = svc.dest_list[i]
        w = dests[d].weight
        if dest_overloaded(&dests[d]) or dests[d].activeconns > w or w == 0:
            continue
        if best < 0 or w > hw:
            best = d
            hw = w
    return best


cdef SchedOps OVF
OVF.name = b"ovf"
OVF.pick = ovf_pick
OVF.init_svc = NULL
OVF.done_svc = NULL
OVF.dest_changed = NULL

NAME = "ovf"
OPS = PyCapsule_New(&OVF, b"fastvs.SchedOps", NULL)
