"""Locality-based least-connection (ip_vs_lblc.c).

A cache maps a packet's destination address to the real server last chosen for
it.  A cached server is used while it is available, has weight > 0 and is not
"overloaded" in lblc's sense: activeconns > weight while some server of the
service has activeconns * 2 < weight.  Otherwise the server with the least
overhead / weight is picked (as wlc: the first usable in list order, then
strictly smaller ratios, overloaded servers skipped) and the cache entry is
replaced.  A cache hit refreshes the entry's last use.

The cache and its collector are the kernel's, shared with lblcr
(``fastvs/sched/_lbcache.pxd``); the collector's long expiration is
``lblc_expiration`` (24 h by default; ``set_expiration``).

fastvs specifics:

- Time is the engine clock (``m.now``, ns) instead of jiffies.  The timer starts
  60 s after the first connection the service schedules (the kernel: 60 s after
  the service is created, which offline has no time); timer ticks due by a
  packet's time run, each at its own time, before the packet is scheduled.
- The kernel's entry counter goes down when an entry is replaced by one for
  another server (ip_vs_lblc_new, ip_vs_lblc.c:208 in 6.1.192), and no entry is
  made while it is at max_size * 3 / 2 = 24576 or more (ip_vs_lblc.c:210): the
  connection still goes to the chosen server, uncached; ``cache_full()`` counts these.
- Memory is bounded: each service preallocates room for ``set_capacity`` entries
  (default 65536, more than the kernel's bound).  When it is full a new mapping is
  not cached either (the kernel's failed GFP_ATOMIC allocation).
- A removed server's entries stay until replaced or collected (as in the kernel,
  which checks IP_VS_DEST_F_AVAILABLE); a server added again while still in the
  trash is the same server (ip_vs_trash_get_dest), so those entries come back to
  life, as in the kernel.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta, DEST_F_AVAILABLE
from fastvs.sched._base cimport SchedOps, weighted_least, lblc_is_overloaded
from fastvs.sched._lbcache cimport (
    LbcTable, LBC_NS, LBC_DEFAULT_CAPACITY, lbc_create, lbc_destroy, lbc_get, lbc_new,
    lbc_unlink, lbc_run_timers,
)

cdef int64_t _expiration = 24 * 60 * 60 * LBC_NS
cdef int32_t _capacity = LBC_DEFAULT_CAPACITY
cdef uint64_t _cache_full = 0


cdef void lblc_new(LbcTable* t, const uint32_t* addr, int32_t dest, int64_t now) noexcept nogil:
    """ip_vs_lblc_new: map addr to dest, replacing an entry for another dest."""
    global _cache_full
    cdef int32_t e = lbc_get(t, addr)
    if e >= 0:
        if t.pool[e].dest == dest:
            return
        lbc_unlink(t, e)
        t.entries -= 1
    e = lbc_new(t, addr, now)
    if e < 0:
        _cache_full += 1
        return
    t.pool[e].dest = dest


cdef int32_t lblc_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef LbcTable* t = <LbcTable*>svc.sched_data
    cdef int32_t e, d
    if t == NULL:
        return -1
    lbc_run_timers(t, m.now, _expiration)
    e = lbc_get(t, m.daddr)
    if e >= 0:
        t.pool[e].lastuse = m.now
        d = t.pool[e].dest
        if ((dests[d].flags & DEST_F_AVAILABLE) and dests[d].weight > 0
                and not lblc_is_overloaded(svc, dests, d)):
            return d
    d = weighted_least(svc, dests, False)
    if d < 0:
        return -1
    lblc_new(t, m.daddr, d, m.now)
    return d


cdef void lblc_init(Service* svc, Dest* dests) noexcept nogil:
    svc.sched_data = lbc_create(_capacity, 0, svc.af)


cdef void lblc_done(Service* svc, Dest* dests) noexcept nogil:
    lbc_destroy(<LbcTable*>svc.sched_data)
    svc.sched_data = NULL


cdef SchedOps LBLC
LBLC.name = b"lblc"
LBLC.pick = lblc_pick
LBLC.init_svc = lblc_init
LBLC.done_svc = lblc_done
LBLC.dest_changed = NULL

NAME = "lblc"
OPS = PyCapsule_New(&LBLC, b"fastvs.SchedOps", NULL)


def set_expiration(seconds):
    """The lblc_expiration sysctl (seconds, default 86400), for every lblc service."""
    global _expiration
    if seconds <= 0:
        raise ValueError("expiration must be positive")
    _expiration = int(seconds * LBC_NS)


def expiration():
    return _expiration / LBC_NS


def set_capacity(int entries):
    """Cache entries preallocated per service, for services created afterwards."""
    global _capacity
    if entries < 1:
        raise ValueError("capacity must be positive")
    _capacity = entries


def cache_full():
    """How many mappings were not cached because a service's cache was full."""
    return _cache_full
