"""Locality-based least-connection (ip_vs_lblc.c).

A cache maps a packet's destination address to the real server last chosen for
it.  A cached server is used while it is available, has weight > 0 and is not
"overloaded" in lblc's sense: activeconns > weight while some server of the
service has activeconns * 2 < weight.  Otherwise the server with the least
overhead / weight is picked (as wlc: the first usable in list order, then
strictly smaller ratios, overloaded servers skipped) and the cache entry is
replaced.  A cache hit refreshes the entry's last use.

The cache is the kernel's: 1024 hash chains, bucket hash_32(daddr, 10), new
entries at the chain head; its garbage collector is a timer every 60 s that, when
the entry counter exceeds max_size = 16384, drops entries unused for 6 minutes
(at most (entries - max_size) * 4 / 3, capped at max_size / 2, resuming at a
rover), and every 30th quiet tick drops entries unused for ``lblc_expiration``
(24 h by default; ``set_expiration``).

fastvs specifics:

- Time is the engine clock (``m.now``, ns) instead of jiffies.  The timer starts
  60 s after the first connection the service schedules (the kernel: 60 s after
  the service is created, which offline has no time); timer ticks due by a
  packet's time run, each at its own time, before the packet is scheduled.
- The kernel's entry counter is not decremented when an entry is replaced by one
  for another server (ip_vs_lblc_new deletes without atomic_dec); fastvs keeps
  that counter as the kernel does, since the collector's decisions depend on it.
- Memory is bounded: each service preallocates room for ``set_capacity`` entries
  (default 65536, 4 x max_size).  When it is full a new mapping is not cached --
  the kernel's behaviour when its GFP_ATOMIC allocation fails -- and the
  connection still goes to the chosen server; ``cache_full()`` counts these.
- A removed server's entries stay until replaced or collected (as in the kernel,
  which checks IP_VS_DEST_F_AVAILABLE); a server added again is a new server in
  fastvs, so those entries do not come back to life as they can in the kernel.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from fastvs.datapath._types cimport Service, Dest, PacketMeta, DEST_F_AVAILABLE
from fastvs.sched._base cimport SchedOps, weighted_least, lblc_is_overloaded
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


ctypedef struct Entry:
    uint32_t addr[4]
    int64_t lastuse
    int32_t dest
    int32_t next            # next in chain, or in the free list


ctypedef struct Table:
    int32_t bucket[TAB_SIZE]
    Entry* pool
    int32_t cap
    int32_t high            # pool slots handed out so far
    int32_t free_head
    int32_t used            # entries in the chains
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


cdef int32_t tbl_get(Table* t, const uint32_t* addr, int af) noexcept nogil:
    cdef int32_t e = t.bucket[hash_32(addr_fold(addr, af), TAB_BITS)]
    while e >= 0:
        if addr_equal(t.pool[e].addr, addr, af):
            return e
        e = t.pool[e].next
    return -1


cdef void tbl_unlink(Table* t, int32_t e, int af) noexcept nogil:
    """Take an entry out of its chain and give its slot back."""
    cdef int32_t b = hash_32(addr_fold(t.pool[e].addr, af), TAB_BITS)
    cdef int32_t p = t.bucket[b]
    if p == e:
        t.bucket[b] = t.pool[e].next
    else:
        while t.pool[p].next != e:
            p = t.pool[p].next
        t.pool[p].next = t.pool[e].next
    t.pool[e].next = t.free_head
    t.free_head = e
    t.used -= 1


cdef void tbl_new(Table* t, const uint32_t* addr, int af, int32_t dest,
                  int64_t now) noexcept nogil:
    """ip_vs_lblc_new: map addr to dest, replacing an entry for another dest."""
    global _cache_full
    cdef int32_t e = tbl_get(t, addr, af)
    cdef int32_t b
    if e >= 0:
        if t.pool[e].dest == dest:
            return
        tbl_unlink(t, e, af)        # no entries-- here, as in the kernel
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
    t.pool[e].dest = dest
    b = hash_32(addr_fold(addr, af), TAB_BITS)
    t.pool[e].next = t.bucket[b]
    t.bucket[b] = e
    t.used += 1
    t.entries += 1


cdef int32_t sweep_bucket(Table* t, int32_t j, int64_t now, int64_t age,
                          int af) noexcept nogil:
    """Drop the entries of bucket j unused for ``age`` (now >= lastuse + age)."""
    cdef int32_t e = t.bucket[j]
    cdef int32_t nxt
    cdef int32_t dropped = 0
    while e >= 0:
        nxt = t.pool[e].next
        if now >= t.pool[e].lastuse + age:
            tbl_unlink(t, e, af)
            t.entries -= 1
            dropped += 1
        e = nxt
    return dropped


cdef void check_expire(Table* t, int64_t now, int af) noexcept nogil:
    """ip_vs_lblc_check_expire: one tick of the collector."""
    cdef int32_t goal, _i
    cdef int32_t j = t.rover
    if t.counter % COUNT_FOR_FULL_EXPIRATION == 0:
        for _i in range(TAB_SIZE):
            j = (j + 1) & TAB_MASK
            sweep_bucket(t, j, now, _expiration, af)
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
        goal -= sweep_bucket(t, j, now, ENTRY_TIMEOUT, af)
        if goal <= 0:
            break
    t.rover = j


cdef void run_timers(Table* t, int64_t now, int af) noexcept nogil:
    cdef int64_t ticks, last
    if not t.timer_on:
        t.timer_on = True
        t.next_check = now + CHECK_EXPIRE_INTERVAL
        return
    while t.next_check <= now:
        if t.used == 0:
            # Nothing to collect: the ticks only move the counter, which repeats
            # every 30 ticks (or stays put), so skip whole periods.
            ticks = (now - t.next_check) // CHECK_EXPIRE_INTERVAL + 1
            if ticks > 2 * COUNT_FOR_FULL_EXPIRATION:
                ticks = COUNT_FOR_FULL_EXPIRATION + ticks % COUNT_FOR_FULL_EXPIRATION
                last = now - (now - t.next_check) % CHECK_EXPIRE_INTERVAL
                t.next_check = last - (ticks - 1) * CHECK_EXPIRE_INTERVAL
        check_expire(t, t.next_check, af)
        t.next_check += CHECK_EXPIRE_INTERVAL


cdef int32_t lblc_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef Table* t = <Table*>svc.sched_data
    cdef int32_t e, d
    if t == NULL:
        return -1
    run_timers(t, m.now, svc.af)
    e = tbl_get(t, m.daddr, svc.af)
    if e >= 0:
        t.pool[e].lastuse = m.now
        d = t.pool[e].dest
        if ((dests[d].flags & DEST_F_AVAILABLE) and dests[d].weight > 0
                and not lblc_is_overloaded(svc, dests, d)):
            return d
    d = weighted_least(svc, dests, False)
    if d < 0:
        return -1
    tbl_new(t, m.daddr, svc.af, d, m.now)
    return d


cdef void lblc_init(Service* svc, Dest* dests) noexcept nogil:
    cdef Table* t = <Table*>calloc(1, sizeof(Table))
    cdef int32_t i
    if t != NULL:
        t.pool = <Entry*>calloc(_capacity, sizeof(Entry))
        if t.pool == NULL:
            free(t)
            t = NULL
    if t != NULL:
        for i in range(TAB_SIZE):
            t.bucket[i] = -1
        t.cap = _capacity
        t.free_head = -1
        t.max_size = TAB_SIZE * 16
        t.counter = 1
    svc.sched_data = t


cdef void lblc_done(Service* svc, Dest* dests) noexcept nogil:
    cdef Table* t = <Table*>svc.sched_data
    if t != NULL:
        free(t.pool)
        free(t)
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
    _expiration = int(seconds * NS)


def expiration():
    return _expiration / NS


def set_capacity(int entries):
    """Cache entries preallocated per service, for services created afterwards."""
    global _capacity
    if entries < 1:
        raise ValueError("capacity must be positive")
    _capacity = entries


def cache_full():
    """How many mappings were not cached because a service's cache was full."""
    return _cache_full
