"""Locality-based least-connection with replication (ip_vs_lblcr.c).

A cache maps a packet's destination address to a *set* of real servers.  On a
hit the entry's last use is refreshed and the set's least loaded server (overhead
/ weight, skipping overloaded, weight-0 and removed servers; the most recently
added member first) is the candidate.  If the set has more than one member and
was last changed more than ``lblcr_expiration`` ago, its most loaded member is
dropped from it (after the candidate was chosen).  The candidate is used unless
there is none or it is "overloaded" in lblcr's sense (activeconns > weight while
some server of the service has activeconns * 2 < weight); then the service-wide
weighted least-connection server is picked and added to the set.  On a miss that
server is picked and a new entry holds it alone.

The cache and its collector are lblc's (``fastvs/sched/_lbcache.pxd``), with a set
of members per entry (new members at the head of the set); the collector's long
expiration is ``lblcr_expiration`` (24 h; ``set_expiration``).

fastvs specifics, as in lblc: the engine clock in ns instead of jiffies; the timer
starts 60 s after the service's first scheduled connection and ticks due by a
packet's time run first; each service preallocates ``set_capacity`` entries and
twice as many set members, and an entry or member that does not fit is simply not
created (the kernel's GFP_ATOMIC failure path), counted by ``cache_full()``; nor is a
new entry once the table holds max_size * 3 / 2 = 24576 (ip_vs_lblcr_new,
ip_vs_lblcr.c:368 in 6.1.192).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from fastvs.datapath._types cimport Service, Dest, PacketMeta, DEST_F_AVAILABLE
from fastvs.sched._base cimport SchedOps, dest_overloaded, dest_overhead, weighted_least, lblc_is_overloaded
from fastvs.sched._lbcache cimport (
    LbcTable, LbcEntry, LBC_NS, LBC_DEFAULT_CAPACITY, lbc_create, lbc_destroy, lbc_get,
    lbc_new, lbc_run_timers,
)

cdef int64_t _expiration = 24 * 60 * 60 * LBC_NS
cdef int32_t _capacity = LBC_DEFAULT_CAPACITY
cdef uint64_t _cache_full = 0


# -- destination sets ---------------------------------------------------------------

cdef void set_insert(LbcTable* t, LbcEntry* en, int32_t dest, bint check, int64_t now) noexcept nogil:
    global _cache_full
    cdef int32_t x = en.set_head
    if check:
        while x >= 0:
            if t.members[x].dest == dest:
                return
            x = t.members[x].next
    if t.mfree_head >= 0:
        x = t.mfree_head
        t.mfree_head = t.members[x].next
    elif t.mhigh < t.mcap:
        x = t.mhigh
        t.mhigh += 1
    else:
        _cache_full += 1
        return
    t.members[x].dest = dest
    t.members[x].next = en.set_head
    en.set_head = x
    en.set_size += 1
    en.lastmod = now


cdef void set_erase(LbcTable* t, LbcEntry* en, int32_t dest, int64_t now) noexcept nogil:
    cdef int32_t x = en.set_head
    cdef int32_t prev = -1
    while x >= 0:
        if t.members[x].dest == dest:
            if prev < 0:
                en.set_head = t.members[x].next
            else:
                t.members[prev].next = t.members[x].next
            t.members[x].next = t.mfree_head
            t.mfree_head = x
            en.set_size -= 1
            en.lastmod = now
            return
        prev = x
        x = t.members[x].next


cdef int32_t set_min(LbcTable* t, LbcEntry* en, Dest* dests) noexcept nogil:
    """ip_vs_dest_set_min: the weighted least-connection member."""
    cdef int32_t x = en.set_head
    cdef int32_t least = -1
    cdef int32_t d
    cdef int64_t loh = 0
    cdef int64_t doh
    while x >= 0:
        d = t.members[x].dest
        x = t.members[x].next
        if dest_overloaded(&dests[d]):
            continue
        if dests[d].weight > 0 and (dests[d].flags & DEST_F_AVAILABLE):
            least = d
            loh = dest_overhead(&dests[d])
            break
    if least < 0:
        return -1
    while x >= 0:
        d = t.members[x].dest
        x = t.members[x].next
        if dest_overloaded(&dests[d]):
            continue
        doh = dest_overhead(&dests[d])
        if (loh * dests[d].weight > doh * dests[least].weight
                and (dests[d].flags & DEST_F_AVAILABLE)):
            least = d
            loh = doh
    return least


cdef int32_t set_max(LbcTable* t, LbcEntry* en, Dest* dests) noexcept nogil:
    """ip_vs_dest_set_max: the weighted most-connection member."""
    cdef int32_t x = en.set_head
    cdef int32_t most = -1
    cdef int32_t d
    cdef int64_t moh = 0
    cdef int64_t doh
    while x >= 0:
        d = t.members[x].dest
        x = t.members[x].next
        if dests[d].weight > 0:
            most = d
            moh = dest_overhead(&dests[d])
            break
    if most < 0:
        return -1
    while x >= 0:
        d = t.members[x].dest
        x = t.members[x].next
        doh = dest_overhead(&dests[d])
        if moh * dests[d].weight < doh * dests[most].weight and dests[d].weight > 0:
            most = d
            moh = doh
    return most


# -- scheduling ---------------------------------------------------------------------

cdef void lblcr_new(LbcTable* t, const uint32_t* addr, int32_t dest, int64_t now) noexcept nogil:
    """ip_vs_lblcr_new for an address not in the cache: an entry holding dest alone."""
    global _cache_full
    cdef int32_t e = lbc_new(t, addr, now)
    if e < 0:
        _cache_full += 1
        return
    set_insert(t, &t.pool[e], dest, False, now)


cdef int32_t lblcr_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef LbcTable* t = <LbcTable*>svc.sched_data
    cdef LbcEntry* en
    cdef int32_t e, d, most
    if t == NULL:
        return -1
    lbc_run_timers(t, m.now, _expiration)
    e = lbc_get(t, m.daddr)
    if e < 0:
        d = weighted_least(svc, dests, False)
        if d >= 0:
            lblcr_new(t, m.daddr, d, m.now)
        return d
    en = &t.pool[e]
    en.lastuse = m.now
    d = set_min(t, en, dests)
    if en.set_size > 1 and m.now > en.lastmod + _expiration:
        most = set_max(t, en, dests)
        if most >= 0:
            set_erase(t, en, most, m.now)
    if d >= 0 and not lblc_is_overloaded(svc, dests, d):
        return d
    d = weighted_least(svc, dests, False)
    if d >= 0:
        set_insert(t, en, d, True, m.now)
    return d


cdef void lblcr_init(Service* svc, Dest* dests) noexcept nogil:
    svc.sched_data = lbc_create(_capacity, _capacity * 2, svc.af)


cdef void lblcr_done(Service* svc, Dest* dests) noexcept nogil:
    lbc_destroy(<LbcTable*>svc.sched_data)
    svc.sched_data = NULL


cdef SchedOps LBLCR
LBLCR.name = b"lblcr"
LBLCR.pick = lblcr_pick
LBLCR.init_svc = lblcr_init
LBLCR.done_svc = lblcr_done
LBLCR.dest_changed = NULL

NAME = "lblcr"
OPS = PyCapsule_New(&LBLCR, b"fastvs.SchedOps", NULL)


def set_expiration(seconds):
    """The lblcr_expiration sysctl (seconds, default 86400), for every lblcr service."""
    global _expiration
    if seconds <= 0:
        raise ValueError("expiration must be positive")
    _expiration = int(seconds * LBC_NS)


def expiration():
    return _expiration / LBC_NS


def set_capacity(int entries):
    """Cache entries preallocated per service (and twice as many set members), for
    services created afterwards."""
    global _capacity
    if entries < 1:
        raise ValueError("capacity must be positive")
    _capacity = entries


def cache_full():
    """How many entries or set members were not created because a cache was full."""
    return _cache_full
