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

The cache is the kernel's 1024 hash chains (bucket hash_32(daddr, 10), new
entries at the head; new set members at the head of the set) with the same
collector as lblc: a 60 s timer dropping entries unused for 6 minutes when the
entry counter exceeds 16384, and every 30th quiet tick entries unused for
``lblcr_expiration`` (24 h; ``set_expiration``).

fastvs specifics, as in lblc: the engine clock in ns instead of jiffies; the timer
starts 60 s after the service's first scheduled connection and ticks due by a
packet's time run first; each service preallocates ``set_capacity`` entries and
twice as many set members, and an entry or member that does not fit is simply not
created (the kernel's GFP_ATOMIC failure path), counted by ``cache_full()``.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from fastvs.datapath._types cimport Service, Dest, PacketMeta, DEST_F_AVAILABLE
from fastvs.sched._base cimport SchedOps, dest_overloaded, dest_overhead, weighted_least, lblc_is_overloaded
from fastvs.sched._hashing cimport hash_32, addr_fold

cdef enum:
    TAB_BITS = 10
    TAB_SIZE = 1 << TAB_BITS
    TAB_MASK = TAB_SIZE - 1
    COUNT_FOR_FULL_EXPIRATION = 30

cdef int64_t NS = 1000000000
cdef int64_t CHECK_EXPIRE_INTERVAL = 60 * NS
cdef int64_t ENTRY_TIMEOUT = 6 * 60 * NS
cdef int64_t _expiration = 24 * 60 * 60 * NS
cdef int32_t _capacity = TAB_SIZE * 16 * 4
cdef uint64_t _cache_full = 0


ctypedef struct Member:
    int32_t dest
    int32_t next


ctypedef struct Entry:
    uint32_t addr[4]
    int64_t lastuse
    int64_t lastmod         # the set's last change
    int32_t set_head
    int32_t set_size
    int32_t next


ctypedef struct Table:
    int32_t bucket[TAB_SIZE]
    Entry* pool
    Member* members
    int32_t cap
    int32_t high
    int32_t free_head
    int32_t mcap
    int32_t mhigh
    int32_t mfree_head
    int32_t used
    int32_t entries         # the kernel's tbl->entries
    int32_t max_size
    int32_t rover
    int32_t counter
    bint timer_on
    int64_t next_check


cdef inline bint addr_equal(const uint32_t* a, const uint32_t* b, int af) noexcept nogil:
    if af == 6:
        return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
    return a[0] == b[0]


# -- destination sets ---------------------------------------------------------------

cdef void set_insert(Table* t, Entry* en, int32_t dest, bint check, int64_t now) noexcept nogil:
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


cdef void set_erase(Table* t, Entry* en, int32_t dest, int64_t now) noexcept nogil:
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


cdef void set_erase_all(Table* t, Entry* en) noexcept nogil:
    cdef int32_t x = en.set_head
    cdef int32_t nxt
    while x >= 0:
        nxt = t.members[x].next
        t.members[x].next = t.mfree_head
        t.mfree_head = x
        x = nxt
    en.set_head = -1
    en.set_size = 0


cdef int32_t set_min(Table* t, Entry* en, Dest* dests) noexcept nogil:
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


cdef int32_t set_max(Table* t, Entry* en, Dest* dests) noexcept nogil:
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


# -- the cache ----------------------------------------------------------------------

cdef int32_t tbl_get(Table* t, const uint32_t* addr, int af) noexcept nogil:
    cdef int32_t e = t.bucket[hash_32(addr_fold(addr, af), TAB_BITS)]
    while e >= 0:
        if addr_equal(t.pool[e].addr, addr, af):
            return e
        e = t.pool[e].next
    return -1


cdef void tbl_new(Table* t, const uint32_t* addr, int af, int32_t dest,
                  int64_t now) noexcept nogil:
    """ip_vs_lblcr_new for an address not in the cache."""
    global _cache_full
    cdef int32_t e, b
    if t.free_head >= 0:
        e = t.free_head
        t.free_head = t.pool[e].next
    elif t.high < t.cap:
        e = t.high
        t.high += 1
    else:
        _cache_full += 1
        return
    t.pool[e].addr[0] = addr[0]
    t.pool[e].addr[1] = addr[1] if af == 6 else 0
    t.pool[e].addr[2] = addr[2] if af == 6 else 0
    t.pool[e].addr[3] = addr[3] if af == 6 else 0
    t.pool[e].lastuse = now
    t.pool[e].lastmod = now
    t.pool[e].set_head = -1
    t.pool[e].set_size = 0
    set_insert(t, &t.pool[e], dest, False, now)
    b = hash_32(addr_fold(addr, af), TAB_BITS)
    t.pool[e].next = t.bucket[b]
    t.bucket[b] = e
    t.used += 1
    t.entries += 1


cdef int32_t sweep_bucket(Table* t, int32_t j, int64_t now, int64_t age) noexcept nogil:
    """Drop the entries of bucket j unused for ``age`` (now >= lastuse + age)."""
    cdef int32_t e = t.bucket[j]
    cdef int32_t prev = -1
    cdef int32_t nxt
    cdef int32_t dropped = 0
    while e >= 0:
        nxt = t.pool[e].next
        if now >= t.pool[e].lastuse + age:
            if prev < 0:
                t.bucket[j] = nxt
            else:
                t.pool[prev].next = nxt
            set_erase_all(t, &t.pool[e])
            t.pool[e].next = t.free_head
            t.free_head = e
            t.used -= 1
            t.entries -= 1
            dropped += 1
        else:
            prev = e
        e = nxt
    return dropped


cdef void check_expire(Table* t, int64_t now) noexcept nogil:
    """ip_vs_lblcr_check_expire: one tick of the collector."""
    cdef int32_t goal, _i
    cdef int32_t j = t.rover
    if t.counter % COUNT_FOR_FULL_EXPIRATION == 0:
        for _i in range(TAB_SIZE):
            j = (j + 1) & TAB_MASK
            sweep_bucket(t, j, now, _expiration)
        t.rover = j
        t.counter = 1
        return
    if t.entries <= t.max_size:
        t.counter += 1
        return
    goal = (t.entries - t.max_size) * 4 // 3
    if goal > t.max_size // 2:
        goal = t.max_size // 2
    for _i in range(TAB_SIZE):
        j = (j + 1) & TAB_MASK
        goal -= sweep_bucket(t, j, now, ENTRY_TIMEOUT)
        if goal <= 0:
            break
    t.rover = j


cdef void run_timers(Table* t, int64_t now) noexcept nogil:
    cdef int64_t ticks, last
    if not t.timer_on:
        t.timer_on = True
        t.next_check = now + CHECK_EXPIRE_INTERVAL
        return
    while t.next_check <= now:
        if t.used == 0:
            # an empty cache: the ticks only move the counter (period 30)
            ticks = (now - t.next_check) // CHECK_EXPIRE_INTERVAL + 1
            if ticks > 2 * COUNT_FOR_FULL_EXPIRATION:
                ticks = COUNT_FOR_FULL_EXPIRATION + ticks % COUNT_FOR_FULL_EXPIRATION
                last = now - (now - t.next_check) % CHECK_EXPIRE_INTERVAL
                t.next_check = last - (ticks - 1) * CHECK_EXPIRE_INTERVAL
        check_expire(t, t.next_check)
        t.next_check += CHECK_EXPIRE_INTERVAL


# -- scheduling ---------------------------------------------------------------------

cdef int32_t lblcr_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef Table* t = <Table*>svc.sched_data
    cdef Entry* en
    cdef int32_t e, d, most
    if t == NULL:
        return -1
    run_timers(t, m.now)
    e = tbl_get(t, m.daddr, svc.af)
    if e < 0:
        d = weighted_least(svc, dests, False)
        if d >= 0:
            tbl_new(t, m.daddr, svc.af, d, m.now)
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
    cdef Table* t = <Table*>calloc(1, sizeof(Table))
    cdef int32_t i
    if t != NULL:
        t.pool = <Entry*>calloc(_capacity, sizeof(Entry))
        t.members = <Member*>calloc(<size_t>_capacity * 2, sizeof(Member))
        if t.pool == NULL or t.members == NULL:
            free(t.pool)
            free(t.members)
            free(t)
            t = NULL
    if t != NULL:
        for i in range(TAB_SIZE):
            t.bucket[i] = -1
        t.cap = _capacity
        t.mcap = _capacity * 2
        t.free_head = -1
        t.mfree_head = -1
        t.max_size = TAB_SIZE * 16
        t.counter = 1
    svc.sched_data = t


cdef void lblcr_done(Service* svc, Dest* dests) noexcept nogil:
    cdef Table* t = <Table*>svc.sched_data
    if t != NULL:
        free(t.pool)
        free(t.members)
        free(t)
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
    _expiration = int(seconds * NS)


def expiration():
    return _expiration / NS


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
