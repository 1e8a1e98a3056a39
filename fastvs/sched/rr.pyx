"""Round-robin (ip_vs_rr.c): the next usable real server after the last one picked."""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded, list_pos


cdef int32_t rr_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    # The cursor is a dest (the kernel keeps a list node), or -1 for the list head.
    # From the head one pass covers the list; from a dest the walk wraps round and
    # the cursor's own dest is tried last.
    cdef int32_t n = svc.ndests
    cdef int32_t start = list_pos(svc, svc.sched_cursor)
    cdef int32_t k, d
    for k in range(n):
        d = svc.dest_list[(start + 1 + k) % n]
        if not dest_overloaded(&dests[d]) and dests[d].weight > 0:
            svc.sched_cursor = d
            return d
    return -1


cdef void rr_init(Service* svc, Dest* dests) noexcept nogil:
    svc.sched_cursor = -1


cdef void rr_del_dest(Service* svc, Dest* dests, int32_t dest) noexcept nogil:
    # ip_vs_rr_del_dest: when the cursor is the dest being unlinked, it moves back to
    # the entry before it (p->next->prev after list_del), or the head, so that the
    # next pick is the removed dest's successor, not the list's first
    cdef int32_t pos
    if svc.sched_cursor == dest:
        pos = list_pos(svc, dest)
        svc.sched_cursor = svc.dest_list[pos - 1] if pos > 0 else -1


cdef void rr_changed(Service* svc, Dest* dests) noexcept nogil:
    # (a cursor that is no longer in the list can only be the head's: safety)
    if svc.sched_cursor >= 0 and list_pos(svc, svc.sched_cursor) < 0:
        svc.sched_cursor = -1


cdef SchedOps RR
RR.name = b"rr"
RR.pick = rr_pick
RR.init_svc = rr_init
RR.done_svc = NULL
RR.dest_changed = rr_changed
RR.del_dest = rr_del_dest

NAME = "rr"
OPS = PyCapsule_New(&RR, b"fastvs.SchedOps", NULL)
