# cython: language_level=3
"""Weighted least-connection (ip_vs_wlc.c): the smallest overhead / weight wins.

The ratios are compared cross-multiplied (loh * w_dest > doh * w_least) in 64 bits,
as the kernel does, so no division and no rounding; the first in list order wins a
tie.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t
from fastvs._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded, dest_overhead


cdef int32_t wlc_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t least = -1
    cdef int64_t loh = 0
    cdef int64_t doh
    cdef int32_t i, d
    cdef int32_t n = svc.ndests
    # the first usable server (weight > 0) is the starting point
    for i in range(n):
        d = svc.dest_list[i]
        if not dest_overloaded(&dests[d]) and dests[d].weight > 0:
            least = d
            loh = dest_overhead(&dests[d])
            break
    if least < 0:
        return -1
    for i in range(i + 1, n):
        d = svc.dest_list[i]
        if dest_overloaded(&dests[d]):
            continue
        doh = dest_overhead(&dests[d])
        if loh * dests[d].weight > doh * dests[least].weight:
            least = d
            loh = doh
    return least


cdef SchedOps WLC
WLC.name = b"wlc"
WLC.pick = wlc_pick
WLC.init_svc = NULL
WLC.done_svc = NULL
WLC.dest_changed = NULL

NAME = "wlc"
OPS = PyCapsule_New(&WLC, b"fastvs.SchedOps", NULL)
