"""The scheduler interface (struct ip_vs_scheduler) and helpers every scheduler uses.

A scheduler module fills one SchedOps and exports it as a PyCapsule named ``OPS``;
``fastvs.sched`` finds it by name. The engine calls ``pick`` only for a packet that
opens a connection (``m.now`` is the clock then, ``m.saddr``/``m.daddr``/ports the
packet's), and ``dest_changed`` after the real-server list or a weight changed (the
kernel's add_dest / upd_dest / del_dest hooks; ``del_dest`` runs before a removal as
well, while the dest is still in the list, for rr). ``svc.flags`` carries the -b scheduler
flags (SVC_F_SCHED1..3). A scheduler that keeps tables allocates them in ``init_svc``
into ``svc.sched_data`` and frees them in ``done_svc``; nothing may allocate in
``pick``. ``pick`` returns an index into ``dests`` or -1 for "no destination".
"""
from libc.stdint cimport int32_t, int64_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta, DEST_F_OVERLOAD

ctypedef int32_t (*sched_pick_fn)(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil
ctypedef void (*sched_update_fn)(Service* svc, Dest* dests) noexcept nogil
ctypedef void (*sched_del_fn)(Service* svc, Dest* dests, int32_t dest) noexcept nogil

ctypedef struct SchedOps:
    const char* name
    sched_pick_fn pick
    sched_update_fn init_svc        # may be NULL; may allocate svc.sched_data
    sched_update_fn dest_changed    # may be NULL; after add/edit/remove of a dest
    sched_update_fn done_svc        # may be NULL; frees svc.sched_data
    # may be NULL; ``dest`` is about to leave the list (still in it); dest_changed follows
    sched_del_fn del_dest

cdef inline int64_t dest_overhead(const Dest* d) noexcept nogil:
    """ip_vs_dest_conn_overhead (include/net/ip_vs.h:1745-1756 in 6.1.192): activeconns
    * 256 + totalconns, and totalconns counts the active connections as well
    (ip_vs_bind_dest), so an active connection weighs 257 inactive ones."""
    return (<int64_t>d.activeconns << 8) + d.activeconns + d.inactconns

cdef inline bint dest_overloaded(const Dest* d) noexcept nogil:
    return (d.flags & DEST_F_OVERLOAD) != 0

cdef inline int32_t list_pos(const Service* svc, int32_t dest) noexcept nogil:
    """Position of a dest in the service's list, -1 for the list head (or not found)."""
    cdef int32_t i
    if dest < 0:
        return -1
    for i in range(svc.ndests):
        if svc.dest_list[i] == dest:
            return i
    return -1


cdef inline int64_t sed_overhead(const Dest* d) noexcept nogil:
    """ip_vs_sed_dest_overhead: only active connections, plus the one to come."""
    return <int64_t>d.activeconns + 1


cdef inline int32_t weighted_least(Service* svc, Dest* dests, bint sed) noexcept nogil:
    """The weighted least-connection walk that wlc, sed, lblc and lblcr share: the
    first usable dest (not overloaded, weight > 0) starts, then every later dest not
    overloaded wins if overhead/weight is strictly smaller, compared cross-multiplied
    in 64 bits (so a weight-0 dest never wins and the first in list order wins a tie).
    ``sed`` takes active + 1 as the overhead instead of active * 256 + total."""
    cdef int32_t least = -1
    cdef int64_t loh = 0
    cdef int64_t doh
    cdef int32_t i, d
    cdef int32_t n = svc.ndests
    for i in range(n):
        d = svc.dest_list[i]
        if not dest_overloaded(&dests[d]) and dests[d].weight > 0:
            least = d
            loh = sed_overhead(&dests[d]) if sed else dest_overhead(&dests[d])
            break
    if least < 0:
        return -1
    for i in range(i + 1, n):
        d = svc.dest_list[i]
        if dest_overloaded(&dests[d]):
            continue
        doh = sed_overhead(&dests[d]) if sed else dest_overhead(&dests[d])
        if loh * dests[d].weight > doh * dests[least].weight:
            least = d
            loh = doh
    return least


cdef inline bint lblc_is_overloaded(Service* svc, Dest* dests, int32_t d) noexcept nogil:
    """is_overloaded of ip_vs_lblc.c / ip_vs_lblcr.c: more active connections than
    its weight while some dest runs below half of its own."""
    cdef int32_t i, x
    if dests[d].activeconns > dests[d].weight:
        for i in range(svc.ndests):
            x = svc.dest_list[i]
            if <int64_t>dests[x].activeconns * 2 < dests[x].weight:
                return True
    return False
