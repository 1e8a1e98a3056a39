# cython: language_level=3
"""Connection table: open addressing over C arrays, plus a timer heap for expiry.

The role of ip_vs_conn.c. Each connection is reachable under two keys, as the kernel
reaches it through conn_in_get and conn_out_get:

* in:  (client addr, client port, VIP, vport)   -- a client packet to the service
* out: (real server addr, rport, client addr, client port) -- a reply

Both keys are hashed as "(source, destination, sport, dport, proto)" of the packet
that would carry them, so one hash of a packet probes for either direction. Buckets
hold the hash's upper half as a tag and the connection index with a direction bit;
deletion shifts the cluster back, so there are no tombstones. The keyed hash uses a
per-table seed (the kernel's ip_vs_conn_rnd).

Expiry follows the packets' clock: every connection has one entry in a binary
min-heap keyed by its expiry time (an empty heap's top time is INT64_MAX, so that
"is anything due" is one comparison). A packet only moves a connection's ``expires``
forward; the heap entry is corrected lazily when it reaches the top. So the work per
packet is one comparison with the heap's top, never a scan of the table.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, INT64_MAX
from libc.stdlib cimport calloc, free
from fastvs.datapath._types cimport Conn, PacketMeta, CONN_F_TEMPLATE, FV_LIKELY, FWD_MASQ
from fastvs.datapath._bytes cimport ldraw16, ldraw32

cdef extern from "_hash.h" nogil:
    uint64_t fv_hash_key(const uint32_t* a1, const uint32_t* a2, uint16_t p1, uint16_t p2,
                         uint8_t proto, uint64_t seed)
    uint64_t fv_hash_v4(uint32_t a1, uint32_t a2, uint16_t p1, uint16_t p2,
                        uint8_t proto, uint64_t seed)
    bint fv_eq16(const void* a, const void* b)

cdef enum:
    CT_DIR_IN = 0
    CT_DIR_OUT = 1
    CT_NONE = 0xffffffff

ctypedef struct ConnTable:
    Conn* conns              # mmap'd: page aligned, zero pages until used
    size_t conns_bytes
    uint64_t* buckets        # 0 = empty; else tag << 32 | dir << 31 | (index + 1)
    uint32_t* free_stack
    int64_t* heap_t
    uint32_t* heap_i
    uint64_t seed
    uint64_t mask
    uint64_t max_buckets     # the bucket array grows up to this (4 x capacity)
    uint64_t nentries        # bucket entries in use (2 per connection, 1 per template)
    uint32_t capacity
    uint32_t count
    uint32_t free_top
    uint32_t heap_n


cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
    int madvise(void* addr, size_t length, int advice)
    int PROT_READ
    int PROT_WRITE
    int MAP_PRIVATE
    int MAP_ANONYMOUS
    void* MAP_FAILED
    int MADV_HUGEPAGE

cdef enum:
    CT_MIN_BUCKETS = 1024


cdef inline void* table_map(size_t size) noexcept nogil:
    """Zeroed memory from its own mapping (pages arrive as they are touched), or NULL;
    from 2 MiB up it is advised to use huge pages, since lookups land on random lines
    of it (one TLB entry per 2 MiB instead of per 4 KiB). Freed with munmap."""
    cdef void* mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if mem == MAP_FAILED:
        return NULL
    if size >= (2 << 20):
        madvise(mem, size, MADV_HUGEPAGE)
    return mem


cdef inline uint64_t* bucket_alloc(uint64_t n) noexcept nogil:
    return <uint64_t*>table_map(<size_t>n * sizeof(uint64_t))


cdef inline void bucket_free(uint64_t* b, uint64_t n) noexcept nogil:
    if b != NULL:
        munmap(b, <size_t>n * sizeof(uint64_t))


cdef inline int ct_init(ConnTable* t, uint32_t capacity, uint64_t seed) noexcept nogil:
    cdef uint64_t nb = 16
    cdef uint32_t i
    while nb < <uint64_t>capacity * 4:
        nb <<= 1
    t.max_buckets = nb
    if nb > CT_MIN_BUCKETS:
        nb = CT_MIN_BUCKETS       # grows with the live connections (ct_grow)
    t.capacity = capacity
    t.count = 0
    t.nentries = 0
    t.seed = seed
    t.mask = nb - 1
    t.heap_n = 0
    t.conns_bytes = <size_t>capacity * sizeof(Conn)
    t.conns = <Conn*>table_map(t.conns_bytes)
    t.buckets = bucket_alloc(nb)
    t.free_stack = <uint32_t*>calloc(capacity, sizeof(uint32_t))
    t.heap_t = <int64_t*>calloc(capacity, sizeof(int64_t))
    t.heap_i = <uint32_t*>calloc(capacity, sizeof(uint32_t))
    if t.conns == NULL or t.buckets == NULL or t.free_stack == NULL \
            or t.heap_t == NULL or t.heap_i == NULL:
        ct_destroy(t)
        return -1
    if capacity:
        t.heap_t[0] = INT64_MAX     # an empty heap's top: nothing is ever due
    # slot 0 is handed out first, so runs are reproducible
    for i in range(capacity):
        t.free_stack[i] = capacity - 1 - i
    t.free_top = capacity
    return 0


cdef inline void ct_destroy(ConnTable* t) noexcept nogil:
    if t.conns != NULL:
        munmap(t.conns, t.conns_bytes)
    bucket_free(t.buckets, t.mask + 1)
    free(t.free_stack)
    free(t.heap_t)
    free(t.heap_i)
    t.conns = NULL
    t.conns_bytes = 0
    t.buckets = NULL
    t.free_stack = NULL
    t.heap_t = NULL
    t.heap_i = NULL
    t.capacity = 0
    t.count = 0


cdef inline bint addr_eq(const uint32_t* a, const uint32_t* b) noexcept nogil:
    return fv_eq16(a, b)


cdef inline bint same16(const void* a, const void* b) noexcept nogil:
    return ldraw16(<const uint8_t*>a) == ldraw16(<const uint8_t*>b)


cdef inline bint same32(const void* a, const void* b) noexcept nogil:
    return ldraw32(<const uint8_t*>a) == ldraw32(<const uint8_t*>b)


cdef inline uint64_t ct_hash_pkt(const ConnTable* t, const PacketMeta* m) noexcept nogil:
    if FV_LIKELY(m.af == 4):
        return fv_hash_v4(m.saddr[0], m.daddr[0], m.sport_be, m.dport_be, m.proto, t.seed)
    return fv_hash_key(m.saddr, m.daddr, m.sport_be, m.dport_be, m.proto, t.seed)


cdef inline uint32_t ct_lookup(const ConnTable* t, const PacketMeta* m, uint64_t h,
                               int* direction) noexcept nogil:
    """Index of the connection this packet belongs to, or CT_NONE."""
    cdef uint64_t pos = h & t.mask
    cdef uint64_t tag = h >> 32
    cdef uint64_t b
    cdef uint32_t idx
    cdef const Conn* c
    cdef const uint32_t* src
    while True:
        b = t.buckets[pos]
        if b == 0:
            return CT_NONE
        if (b >> 32) == tag:
            idx = <uint32_t>(b & 0x7fffffff) - 1
            c = &t.conns[idx]
            # (proto, af) and a direction's two ports each compare as one word
            if same16(&c.proto, &m.proto) and not (c.in_use & 4):
                if (b >> 31) & 1:
                    # ip_vs_conn_out_get (ip_vs_conn.c:401-441): a reply comes from the
                    # real server under NAT, from the VIP otherwise (DR/TUN real
                    # servers answer as the VIP; their dport is the vport)
                    if FV_LIKELY(c.fwd == FWD_MASQ):
                        src = &c.daddr[0]
                    else:
                        src = &c.vaddr[0]
                    if (same32(&c.dport_be, &m.sport_be)
                            and addr_eq(src, m.saddr) & addr_eq(c.caddr, m.daddr)):
                        direction[0] = CT_DIR_OUT
                        return idx
                elif (same32(&c.cport_be, &m.sport_be)
                        and addr_eq(c.caddr, m.saddr) & addr_eq(c.vaddr, m.daddr)):
                    direction[0] = CT_DIR_IN
                    return idx
        pos = (pos + 1) & t.mask


cdef inline uint32_t ct_lookup_template(const ConnTable* t, uint8_t proto, const uint32_t* caddr,
                                        const uint32_t* vaddr, uint16_t vport_be) noexcept nogil:
    """A persistence template <proto, client net, 0, vaddr, vport> (ip_vs_ct_in_get)."""
    cdef uint64_t h = fv_hash_key(caddr, vaddr, 0, vport_be, proto, t.seed)
    cdef uint64_t pos = h & t.mask
    cdef uint64_t tag = h >> 32
    cdef uint64_t b
    cdef uint32_t idx
    cdef const Conn* c
    while True:
        b = t.buckets[pos]
        if b == 0:
            return CT_NONE
        if (b >> 32) == tag:
            idx = <uint32_t>(b & 0x7fffffff) - 1
            c = &t.conns[idx]
            if ((c.in_use & 4) and c.proto == proto and c.vport_be == vport_be
                    and addr_eq(c.caddr, caddr) and addr_eq(c.vaddr, vaddr)):
                return idx
        pos = (pos + 1) & t.mask


cdef inline void ct_bucket_put(ConnTable* t, uint64_t h, uint32_t idx, int direction) noexcept nogil:
    cdef uint64_t pos = h & t.mask
    while t.buckets[pos] != 0:
        pos = (pos + 1) & t.mask
    t.buckets[pos] = ((h >> 32) << 32) | (<uint64_t>direction << 31) | (idx + 1)


cdef inline void ct_bucket_del(ConnTable* t, uint64_t h, uint32_t idx, int direction) noexcept nogil:
    """Remove one bucket entry and shift the rest of its cluster back (no tombstones)."""
    cdef uint64_t want = ((h >> 32) << 32) | (<uint64_t>direction << 31) | (idx + 1)
    cdef uint64_t pos = h & t.mask
    cdef uint64_t nxt, home, b
    while t.buckets[pos] != want:
        if t.buckets[pos] == 0:
            return
        pos = (pos + 1) & t.mask
    nxt = pos
    while True:
        nxt = (nxt + 1) & t.mask
        b = t.buckets[nxt]
        if b == 0:
            break
        home = ct_bucket_home(t, b)
        # move b into the hole at pos unless its home lies cyclically in (pos, nxt]
        if ((nxt - home) & t.mask) >= ((nxt - pos) & t.mask):
            t.buckets[pos] = b
            pos = nxt
    t.buckets[pos] = 0


cdef inline uint64_t ct_bucket_home(const ConnTable* t, uint64_t b) noexcept nogil:
    cdef uint32_t idx = <uint32_t>(b & 0x7fffffff) - 1
    cdef const Conn* c = &t.conns[idx]
    if (b >> 31) & 1:
        return c.hash_out & t.mask
    return c.hash & t.mask


cdef inline int ct_grow(ConnTable* t) noexcept nogil:
    """Double the bucket array and re-place every entry (rare: amortised over the
    connections that filled it). Returns -1 when it cannot grow."""
    cdef uint64_t nb = (t.mask + 1) * 2
    cdef uint64_t* old = t.buckets
    cdef uint64_t old_n = t.mask + 1
    cdef uint64_t* nbk
    cdef uint64_t i, b, pos
    if nb > t.max_buckets:
        return -1
    nbk = bucket_alloc(nb)
    if nbk == NULL:
        return -1
    t.buckets = nbk
    t.mask = nb - 1
    for i in range(old_n):
        b = old[i]
        if b:
            pos = ct_bucket_home(t, b)
            while nbk[pos] != 0:
                pos = (pos + 1) & t.mask
            nbk[pos] = b
    bucket_free(old, old_n)
    return 0


# -- timer heap ----------------------------------------------------------------------

cdef inline void heap_set(ConnTable* t, uint32_t pos, int64_t when, uint32_t idx) noexcept nogil:
    t.heap_t[pos] = when
    t.heap_i[pos] = idx
    t.conns[idx].heap_pos = pos
    t.conns[idx].heap_key = when


cdef inline void heap_up(ConnTable* t, uint32_t pos) noexcept nogil:
    cdef int64_t when = t.heap_t[pos]
    cdef uint32_t idx = t.heap_i[pos]
    cdef uint32_t parent
    while pos > 0:
        parent = (pos - 1) >> 1
        if t.heap_t[parent] <= when:
            break
        heap_set(t, pos, t.heap_t[parent], t.heap_i[parent])
        pos = parent
    heap_set(t, pos, when, idx)


cdef inline void heap_down(ConnTable* t, uint32_t pos) noexcept nogil:
    cdef int64_t when = t.heap_t[pos]
    cdef uint32_t idx = t.heap_i[pos]
    cdef uint32_t child
    cdef uint32_t n = t.heap_n
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and t.heap_t[child + 1] < t.heap_t[child]:
            child += 1
        if t.heap_t[child] >= when:
            break
        heap_set(t, pos, t.heap_t[child], t.heap_i[child])
        pos = child
    heap_set(t, pos, when, idx)


cdef inline void heap_remove(ConnTable* t, uint32_t pos) noexcept nogil:
    t.heap_n -= 1
    if pos == t.heap_n:
        if pos == 0:
            t.heap_t[0] = INT64_MAX     # empty: the batch loop's due test needs no count
        return
    heap_set(t, pos, t.heap_t[t.heap_n], t.heap_i[t.heap_n])
    if pos > 0 and t.heap_t[pos] < t.heap_t[(pos - 1) >> 1]:
        heap_up(t, pos)
    else:
        heap_down(t, pos)


cdef inline uint32_t ct_due(ConnTable* t, int64_t now) noexcept nogil:
    """A connection whose time is up (expires <= now), or CT_NONE. Stale heap keys
    (the connection saw packets since) are moved to the real expiry on the way."""
    cdef uint32_t idx
    while t.heap_n and t.heap_t[0] <= now:
        idx = t.heap_i[0]
        if t.conns[idx].expires <= now:
            return idx
        t.heap_t[0] = t.conns[idx].expires
        t.conns[idx].heap_key = t.heap_t[0]
        heap_down(t, 0)
    return CT_NONE


# -- insert / remove -------------------------------------------------------------------

cdef inline uint32_t ct_alloc(ConnTable* t) noexcept nogil:
    """Take a free record (zeroed), or CT_NONE when the table is full."""
    cdef uint32_t idx
    if t.free_top == 0:
        return CT_NONE
    # keep the buckets at most an eighth full, counting this connection's two
    # entries, while the array can grow (up to 4 entries per slot): most lookups then
    # find their entry in the first bucket, where a probe loop whose length varies
    # costs a branch mispredict (half full -> a quarter: 1.09x at 1k flows, 1.2x at
    # 100k; -> an eighth: about 1.03x more at 1k)
    while (t.nentries + 2) * 8 > t.mask + 1 and t.mask + 1 < t.max_buckets:
        if ct_grow(t) != 0:
            break
    # the largest array (4 entries per connection slot) is never more than half full
    if (t.nentries + 2) * 2 > t.mask + 1:
        return CT_NONE
    t.free_top -= 1
    idx = t.free_stack[t.free_top]
    return idx


cdef inline void ct_link(ConnTable* t, uint32_t idx) noexcept nogil:
    """Hash a filled-in record under both keys and arm its timer."""
    cdef Conn* c = &t.conns[idx]
    c.hash = fv_hash_key(c.caddr, c.vaddr, c.cport_be, c.vport_be, c.proto, t.seed)
    # the out key: <real server, client> under NAT, <VIP, client> for DR/TUN/local
    # (ip_vs_conn_out_get)
    cdef const uint32_t* out = &c.daddr[0] if c.fwd == FWD_MASQ else &c.vaddr[0]
    c.hash_out = fv_hash_key(out, c.caddr, c.dport_be, c.cport_be, c.proto, t.seed)
    ct_bucket_put(t, c.hash, idx, CT_DIR_IN)
    t.nentries += 1
    if c.flags & CONN_F_TEMPLATE:
        c.in_use = 7        # a template is reached only by its in key
    else:
        ct_bucket_put(t, c.hash_out, idx, CT_DIR_OUT)
        t.nentries += 1
        c.in_use = 3        # bit 0: allocated, bit 1: hashed
    t.count += 1
    t.heap_n += 1
    t.heap_t[t.heap_n - 1] = c.expires
    t.heap_i[t.heap_n - 1] = idx
    heap_up(t, t.heap_n - 1)


cdef inline void ct_unhash(ConnTable* t, uint32_t idx) noexcept nogil:
    """Make a connection unreachable by lookups (it stays counted until freed)."""
    cdef Conn* c = &t.conns[idx]
    if c.in_use & 2:
        ct_bucket_del(t, c.hash, idx, CT_DIR_IN)
        t.nentries -= 1
        if not (c.in_use & 4):
            ct_bucket_del(t, c.hash_out, idx, CT_DIR_OUT)
            t.nentries -= 1
        c.in_use &= ~2


cdef inline void ct_expire_at(ConnTable* t, uint32_t idx, int64_t when) noexcept nogil:
    """Set a connection's expiry. A later time only updates ``expires`` (the heap key
    catches up lazily in ct_due); an earlier one moves the heap key forward too, since
    a key must never be later than the expiry it stands for."""
    ct_expire_conn(t, &t.conns[idx], when)


cdef inline void ct_expire_conn(ConnTable* t, Conn* c, int64_t when) noexcept nogil:
    """ct_expire_at for a connection at hand (the per-packet path has it: no reload
    of the table's base after the store, which may alias it; the heap position is
    read only when the key moves)."""
    c.expires = when
    if c.heap_key > when:
        t.heap_t[c.heap_pos] = when
        c.heap_key = when
        heap_up(t, c.heap_pos)


cdef inline void ct_free(ConnTable* t, uint32_t idx) noexcept nogil:
    ct_unhash(t, idx)
    heap_remove(t, t.conns[idx].heap_pos)
    memset_conn(&t.conns[idx])
    t.free_stack[t.free_top] = idx
    t.free_top += 1
    t.count -= 1


cdef inline void memset_conn(Conn* c) noexcept nogil:
    cdef uint8_t* p = <uint8_t*>c
    cdef size_t i
    for i in range(sizeof(Conn)):
        p[i] = 0
