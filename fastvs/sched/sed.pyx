"""Shortest expected delay (ip_vs_sed.c): the smallest (activeconns + 1) / weight.

Only active connections count.  The first usable server (not overloaded, weight
> 0) in list order is the starting point; later ones replace it only when
strictly better, compared cross-multiplied in 64 bits, so the first in list order
wins a tie.  As in the kernel, the later servers are checked for overload only: a
weight-0 server can never be strictly better (its side of the comparison is 0).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, weighted_least


cdef int32_t sed_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    return weighted_least(svc, dests, True)


cdef SchedOps SED
SED.name = b"sed"
SED.pick = sed_pick
SED.init_svc = NULL
SED.done_svc = NULL
SED.dest_changed = NULL

NAME = "sed"
OPS = PyCapsule_New(&SED, b"fastvs.SchedOps", NULL)
