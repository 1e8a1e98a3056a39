"""The locality cache lblc and lblcr share (ip_vs_lblc.c / ip_vs_lblcr.c).

Destination address -> entry, in the kernel's 1024 hash chains (bucket hash_32(daddr,
10), new entries at the chain head), over a pool preallocated per service (an entry
that does not fit is not created: the kernel's failed GFP_ATOMIC allocation). lblc
keeps one real server per entry (``dest``); lblcr a set of them, a list of ``members``
from a second pool (``set_head``, ``set_size``, ``lastmod``).

The collector is the kernel's: a timer every 60 s of engine time, started 60 s after the
service's first scheduled connection, that drops entries unused for 6 minutes once the
entry counter exceeds max_size = 16384 (at most (entries - max_size) * 4 / 3, capped at
max_size / 2, resuming at a rover), and on every 30th quiet tick drops entries unused
for the scheduler's ``expiration``. ``entries`` is the kernel's tbl->entries, and no new
entry is made while it is at max_size * 3 / 2 or more (6.1.192's bound on the cache's
growth, ip_vs_lblc.c:210, ip_vs_lblcr.c:368): the connection still goes to the server
chosen, uncached.
"""
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport calloc, free
from fastvs.sched._hashing cimport hash_32, addr_fold

cdef enum:
    LBC_TAB_BITS = 10
    LBC_TAB_SIZE = 1 << LBC_TAB_BITS
    LBC_TAB_MASK = LBC_TAB_SIZE - 1
    LBC_MAX_SIZE = LBC_TAB_SIZE * 16            # tbl->max_size
    LBC_COUNT_FOR_FULL_EXPIRATION = 30
    LBC_CHECK_EXPIRE_S = 60                     # CHECK_EXPIRE_INTERVAL
    LBC_ENTRY_TIMEOUT_S = 6 * 60                # ENTRY_TIMEOUT
    LBC_DEFAULT_CAPACITY = LBC_MAX_SIZE * 4     # entries preallocated per service

cdef extern from *:
    """
    #define LBC_NS ((int64_t)1000000000)
    """
    int64_t LBC_NS


ctypedef struct LbcMember:
    int32_t dest
    int32_t next


ctypedef struct LbcEntry:
    uint32_t addr[4]
    int64_t lastuse
    int64_t lastmod         # lblcr: the set's last change
    int32_t next            # next in chain, or in the free list
    int32_t dest            # lblc: the real server
    int32_t set_head        # lblcr: first member, -1 for none
    int32_t set_size        # lblcr


ctypedef struct LbcTable:
    int32_t bucket[LBC_TAB_SIZE]
    LbcEntry* pool
    LbcMember* members      # lblcr only (NULL for lblc)
    int32_t cap
    int32_t high            # pool slots handed out so far
    int32_t free_head
    int32_t mcap
    int32_t mhigh
    int32_t mfree_head
    int32_t used            # entries in the chains
    int32_t entries         # the kernel's tbl->entries
    int32_t max_size
    int32_t rover
    int32_t counter
    int af
    bint timer_on
    int64_t next_check


cdef inline LbcTable* lbc_create(int32_t cap, int32_t mcap, int af) noexcept nogil:
    """A cache of ``cap`` entries (and ``mcap`` set members, 0 for none); NULL if out of memory."""
    cdef LbcTable* t = <LbcTable*>calloc(1, sizeof(LbcTable))
    cdef int32_t i
    if t == NULL:
        return NULL
    t.pool = <LbcEntry*>calloc(cap, sizeof(LbcEntry))
    if mcap > 0:
        t.members = <LbcMember*>calloc(mcap, sizeof(LbcMember))
    if t.pool == NULL or (mcap > 0 and t.members == NULL):
        free(t.pool)
        free(t.members)
        free(t)
        return NULL
    for i in range(LBC_TAB_SIZE):
        t.bucket[i] = -1
    t.cap = cap
    t.mcap = mcap
    t.free_head = -1
    t.mfree_head = -1
    t.max_size = LBC_MAX_SIZE
    t.counter = 1
    t.af = af
    return t


cdef inline void lbc_destroy(LbcTable* t) noexcept nogil:
    if t != NULL:
        free(t.pool)
        free(t.members)
        free(t)


cdef inline int32_t lbc_bucket(const LbcTable* t, const uint32_t* addr) noexcept nogil:
    return hash_32(addr_fold(addr, t.af), LBC_TAB_BITS)


cdef inline bint lbc_addr_equal(const uint32_t* a, const uint32_t* b, int af) noexcept nogil:
    if af == 6:
        return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
    return a[0] == b[0]


cdef inline int32_t lbc_get(LbcTable* t, const uint32_t* addr) noexcept nogil:
    """The entry for ``addr``, or -1."""
    cdef int32_t e = t.bucket[lbc_bucket(t, addr)]
    while e >= 0:
        if lbc_addr_equal(t.pool[e].addr, addr, t.af):
            return e
        e = t.pool[e].next
    return -1


cdef inline int32_t lbc_new(LbcTable* t, const uint32_t* addr, int64_t now) noexcept nogil:
    """A new entry for ``addr`` at its chain's head (the caller fills what it keeps),
    counted in ``entries``; -1 when ``entries`` reached max_size * 3 / 2 (the
    kernel's bound) or the pool is full."""
    cdef int32_t e, b
    if t.entries >= t.max_size * 3 // 2:
        return -1
    if t.free_head >= 0:
        e = t.free_head
        t.free_head = t.pool[e].next
    elif t.high < t.cap:
        e = t.high
        t.high += 1
    else:
        return -1
    t.pool[e].addr[0] = addr[0]
    t.pool[e].addr[1] = addr[1] if t.af == 6 else 0
    t.pool[e].addr[2] = addr[2] if t.af == 6 else 0
    t.pool[e].addr[3] = addr[3] if t.af == 6 else 0
    t.pool[e].lastuse = now
    t.pool[e].lastmod = now
    t.pool[e].dest = -1
    t.pool[e].set_head = -1
    t.pool[e].set_size = 0
    b = lbc_bucket(t, addr)
    t.pool[e].next = t.bucket[b]
    t.bucket[b] = e
    t.used += 1
    t.entries += 1
    return e


cdef inline void lbc_set_clear(LbcTable* t, LbcEntry* en) noexcept nogil:
    """Give an entry's set members back (lblcr)."""
    cdef int32_t x = en.set_head
    cdef int32_t nxt
    while x >= 0:
        nxt = t.members[x].next
        t.members[x].next = t.mfree_head
        t.mfree_head = x
        x = nxt
    en.set_head = -1
    en.set_size = 0


cdef inline void lbc_release(LbcTable* t, int32_t e) noexcept nogil:
    """An entry already out of its chain: its members and its slot go back."""
    if t.members != NULL:
        lbc_set_clear(t, &t.pool[e])
    t.pool[e].next = t.free_head
    t.free_head = e
    t.used -= 1


cdef inline void lbc_unlink(LbcTable* t, int32_t e) noexcept nogil:
    """Take an entry out of its chain and give its slot back; ``entries`` stays."""
    cdef int32_t b = lbc_bucket(t, t.pool[e].addr)
    cdef int32_t p = t.bucket[b]
    if p == e:
        t.bucket[b] = t.pool[e].next
    else:
        while t.pool[p].next != e:
            p = t.pool[p].next
        t.pool[p].next = t.pool[e].next
    lbc_release(t, e)


cdef inline int32_t lbc_sweep_bucket(LbcTable* t, int32_t j, int64_t now, int64_t age) noexcept nogil:
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
            lbc_release(t, e)
            t.entries -= 1
            dropped += 1
        else:
            prev = e
        e = nxt
    return dropped


cdef inline void lbc_check_expire(LbcTable* t, int64_t now, int64_t expiration) noexcept nogil:
    """ip_vs_lblc_check_expire / ip_vs_lblcr_check_expire: one tick of the collector."""
    cdef int32_t goal, _i
    cdef int32_t j = t.rover
    if t.counter % LBC_COUNT_FOR_FULL_EXPIRATION == 0:
        for _i in range(LBC_TAB_SIZE):
            j = (j + 1) & LBC_TAB_MASK
            lbc_sweep_bucket(t, j, now, expiration)
        t.rover = j
        t.counter = 1
        return
    if t.entries <= t.max_size:
        t.counter += 1
        return
    goal = (t.entries - t.max_size) * 4 // 3
    if goal > t.max_size // 2:
        goal = t.max_size // 2
    for _i in range(LBC_TAB_SIZE):
        j = (j + 1) & LBC_TAB_MASK
        goal -= lbc_sweep_bucket(t, j, now, LBC_ENTRY_TIMEOUT_S * LBC_NS)
        if goal <= 0:
            break
    t.rover = j


cdef inline void lbc_run_timers(LbcTable* t, int64_t now, int64_t expiration) noexcept nogil:
    """Run the collector's ticks due by ``now``, each at its own time (the first call
    starts the timer)."""
    cdef int64_t ticks, last
    cdef int64_t interval = LBC_CHECK_EXPIRE_S * LBC_NS
    if not t.timer_on:
        t.timer_on = True
        t.next_check = now + interval
        return
    while t.next_check <= now:
        if t.used == 0:
            # Nothing to collect: the ticks only move the counter, which repeats
            # every 30 ticks (or stays put), so skip whole periods.
            ticks = (now - t.next_check) // interval + 1
            if ticks > 2 * LBC_COUNT_FOR_FULL_EXPIRATION:
                ticks = LBC_COUNT_FOR_FULL_EXPIRATION + ticks % LBC_COUNT_FOR_FULL_EXPIRATION
                last = now - (now - t.next_check) % interval
                t.next_check = last - (ticks - 1) * interval
        lbc_check_expire(t, t.next_check, expiration)
        t.next_check += interval
