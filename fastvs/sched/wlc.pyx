"""Weighted least-connection (ip_vs_wlc.c): the smallest overhead / weight wins.

The ratios are compared cross-multiplied (loh * w_dest > doh * w_least) in 64 bits,
as the kernel does, so no division and no rounding; the first in list order wins a
tie.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, weighted_least


cdef int32_t wlc_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    return weighted_least(svc, dests, False)


cdef SchedOps WLC
WLC.name = b"wlc"
WLC.pick = wlc_pick
WLC.init_svc = NULL
WLC.done_svc = NULL
WLC.dest_changed = NULL

NAME = "wlc"
OPS = PyCapsule_New(&WLC, b"fastvs.SchedOps", NULL)
