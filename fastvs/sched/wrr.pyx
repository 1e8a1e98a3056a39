"""Weighted round-robin (ip_vs_wrr.c).

The kernel keeps a current weight ``cw`` stepping down by the weights' gcd ``di``
from ``mw`` (the largest weight less gcd - 1), serving each pass the servers whose
weight is at least ``cw``. ``dest_changed`` runs after every added server, so the
gcd seen while servers are added one by one decides the first round: with weights
added 4, 3, 2 the first add sets cw to 4 - 3 = 1, and the first round serves every
server once before the weighted cycle starts (measured on a 6.1 kernel).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded, list_pos


cdef int32_t gcd(int32_t a, int32_t b) noexcept nogil:
    cdef int32_t t
    while b:
        t = a % b
        a = b
        b = t
    return a


cdef int32_t wrr_gcd_weight(Service* svc, Dest* dests) noexcept nogil:
    cdef int32_t g = 0
    cdef int32_t i, w
    for i in range(svc.ndests):
        w = dests[svc.dest_list[i]].weight
        if w > 0:
            g = gcd(w, g) if g > 0 else w
    return g if g else 1


cdef int32_t wrr_max_weight(Service* svc, Dest* dests) noexcept nogil:
    cdef int32_t m = 0
    cdef int32_t i, w
    for i in range(svc.ndests):
        w = dests[svc.dest_list[i]].weight
        if w > m:
            m = w
    return m


cdef void wrr_init(Service* svc, Dest* dests) noexcept nogil:
    svc.sched_cursor = -1
    svc.wrr_di = wrr_gcd_weight(svc, dests)
    svc.wrr_mw = wrr_max_weight(svc, dests) - (svc.wrr_di - 1)
    svc.wrr_cw = svc.wrr_mw


cdef void wrr_changed(Service* svc, Dest* dests) noexcept nogil:
    svc.sched_cursor = -1
    svc.wrr_di = wrr_gcd_weight(svc, dests)
    svc.wrr_mw = wrr_max_weight(svc, dests) - (svc.wrr_di - 1)
    if svc.wrr_cw > svc.wrr_mw or svc.wrr_cw == 0:
        svc.wrr_cw = svc.wrr_mw
    elif svc.wrr_di > 1:
        svc.wrr_cw = (svc.wrr_cw // svc.wrr_di) * svc.wrr_di + 1


cdef int32_t wrr_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef int32_t n = svc.ndests
    cdef int32_t last = svc.sched_cursor
    cdef int32_t pos = list_pos(svc, last)
    cdef int32_t stop = -2
    cdef bint last_pass = False
    cdef bint restarted = False
    cdef int32_t q, d
    if svc.wrr_mw == 0 or n == 0:
        return -1
    if pos < 0:
        last = -1
    while True:
        for q in range(pos + 1, n):
            d = svc.dest_list[q]
            if not dest_overloaded(&dests[d]) and dests[d].weight >= svc.wrr_cw:
                svc.sched_cursor = d
                return d
            if d == stop:
                return -1
        svc.wrr_cw -= svc.wrr_di
        if svc.wrr_cw <= 0:
            svc.wrr_cw = svc.wrr_mw
            # a last pass from the first dest found nothing, or the only
            # traversal started at the head: nobody is available
            if last_pass or last < 0:
                # err_over: the walk ended at the list head, and mark->cl = dest
                # leaves the cursor there
                svc.sched_cursor = -1
                return -1
            restarted = True
        last_pass = svc.wrr_cw <= svc.wrr_di
        if last_pass and restarted and last >= 0:
            # the first traversal for w >= 1 covered only the dests after 'last'
            stop = last
        pos = -1


cdef SchedOps WRR
WRR.name = b"wrr"
WRR.pick = wrr_pick
WRR.init_svc = wrr_init
WRR.done_svc = NULL
WRR.dest_changed = wrr_changed

NAME = "wrr"
OPS = PyCapsule_New(&WRR, b"fastvs.SchedOps", NULL)
