# cython: language_level=3
"""One stage of the data path at a time, over a whole batch, for the benchmarks.

Each loop runs without the GIL and calls the same inline functions the engine's batch
loop calls (``pkt_parse``, ``ct_hash_pkt``/``ct_lookup``, ``set_state`` (the protocol's
state step, the counters and the timeout) and ``ct_expire_at``, ``nat_dnat``, a
scheduler's ``pick``), so a stage's time here is its share of ``Engine.process``.
Every entry point returns the nanoseconds measured inside,
around the nogil loop only (CLOCK_MONOTONIC); what a stage needs first (parsed packets,
a filled connection table, the connection of each packet) is prepared untimed.

Not part of the package: built on demand by ``benchmarks/cybuild.py`` (``stages()``)
for ``benchmarks/bench_stages.py``, ``benchmarks/bench_hashflood.py`` and the tests.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from fastvs.datapath._types cimport *
from fastvs.datapath._packet cimport pkt_parse
from fastvs.datapath._conntab cimport (ConnTable, ct_init, ct_destroy, ct_hash_pkt, ct_lookup,
                                       ct_alloc, ct_link, ct_expire_at, CT_NONE, CT_DIR_IN,
                                       fv_hash_key)
from fastvs.datapath._proto cimport nat_dnat, nat_snat
from fastvs.datapath._proto_tcp cimport fv_tcp_next_init, fv_tcp_timeouts
from fastvs.datapath._proto_udp cimport fv_udp_timeouts
from fastvs.datapath._proto cimport PP_TCP, PP_UDP
from fastvs.datapath._state cimport EngineState, NS
from fastvs.datapath._core cimport set_state
from fastvs.sched._base cimport SchedOps

fv_tcp_next_init()


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * NS + t.tv_nsec


cdef class Metas:
    """The parsed headers of a batch (PacketMeta per packet), the parse result and,
    after a lookup, each packet's connection index and direction."""
    cdef PacketMeta* m
    cdef int32_t* res
    cdef uint32_t* idx
    cdef uint8_t* dirn
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t ok

    def __cinit__(self, Py_ssize_t n):
        self.n = n
        self.m = <PacketMeta*>calloc(max(n, 1), sizeof(PacketMeta))
        self.res = <int32_t*>calloc(max(n, 1), sizeof(int32_t))
        self.idx = <uint32_t*>calloc(max(n, 1), sizeof(uint32_t))
        self.dirn = <uint8_t*>calloc(max(n, 1), sizeof(uint8_t))
        if self.m == NULL or self.res == NULL or self.idx == NULL or self.dirn == NULL:
            raise MemoryError()
        memset(self.idx, 0xff, max(n, 1) * sizeof(uint32_t))

    def __dealloc__(self):
        free(self.m)
        free(self.res)
        free(self.idx)
        free(self.dirn)


cdef void _check(Py_ssize_t n, const uint32_t[::1] caplen, const uint32_t[::1] wirelen,
                 const uint16_t[::1] linktype) except *:
    if caplen.shape[0] != n or wirelen.shape[0] != n or linktype.shape[0] != n:
        raise ValueError("batch arrays disagree in length")


cdef void _check_slots(const uint8_t[::1] buf, const uint32_t[::1] off,
                       const uint32_t[::1] caplen) except *:
    cdef Py_ssize_t i
    for i in range(off.shape[0]):
        if <uint64_t>off[i] + caplen[i] > <uint64_t>buf.shape[0]:
            raise ValueError(f"packet {i} lies outside the buffer")


def parse_metas(const uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] caplen,
                const uint32_t[::1] wirelen, const uint16_t[::1] linktype):
    """Parse a batch (untimed) for the stages that start from parsed headers."""
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t i
    cdef Metas ms = Metas(n)
    _check(n, caplen, wirelen, linktype)
    _check_slots(buf, off, caplen)
    for i in range(n):
        ms.res[i] = pkt_parse(&buf[0] + off[i], caplen[i], wirelen[i], linktype[i], &ms.m[i])
        ms.ok += ms.res[i] == PKT_OK
    return ms


def parse(const uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] caplen,
          const uint32_t[::1] wirelen, const uint16_t[::1] linktype):
    """Parse every packet (ip_vs_fill_iphdr with ip_rcv's checks). Returns
    ``(ns, candidates)``: candidates are the TCP/UDP packets IPVS would look at."""
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t i, ok = 0
    cdef PacketMeta m
    cdef int64_t t0, t1
    cdef const uint8_t* b
    _check(n, caplen, wirelen, linktype)
    _check_slots(buf, off, caplen)
    if n == 0:
        return 0, 0
    b = &buf[0]
    with nogil:
        t0 = now_ns()
        for i in range(n):
            ok += pkt_parse(b + off[i], caplen[i], wirelen[i], linktype[i], &m) == PKT_OK
        t1 = now_ns()
    return t1 - t0, ok


def memcpy_floor(uint8_t[::1] dst, const uint8_t[::1] src):
    """Copy ``src`` over ``dst`` (the floor: touching every byte once). Returns ns."""
    cdef int64_t t0, t1
    cdef size_t n = src.shape[0]
    if dst.shape[0] < src.shape[0]:
        raise ValueError("dst is smaller than src")
    if n == 0:
        return 0
    with nogil:
        t0 = now_ns()
        memcpy(&dst[0], &src[0], n)
        t1 = now_ns()
    return t1 - t0


cdef class StageTable:
    """A connection table filled straight from parsed packets (no scheduler, no
    service): each candidate packet's 5-tuple becomes one connection to ``rip:rport``."""
    cdef ConnTable ct
    cdef EngineState st          # what set_state reads: the timeouts, secure_tcp
    cdef int64_t now

    def __cinit__(self, unsigned int capacity, unsigned long long seed=1):
        cdef int i
        if capacity < 1 or capacity > (1 << 30):
            raise ValueError("capacity out of range")
        if ct_init(&self.ct, capacity, seed) != 0:
            raise MemoryError()
        memset(&self.st, 0, sizeof(EngineState))
        for i in range(TCP_S_LAST):
            self.st.timeout[PP_TCP][i] = <int64_t>fv_tcp_timeouts[i] * NS
        self.st.timeout[PP_UDP][0] = <int64_t>fv_udp_timeouts[0] * NS
        self.now = 0

    def __dealloc__(self):
        ct_destroy(&self.ct)

    @property
    def count(self):
        return self.ct.count

    def add(self, Metas ms, uint32_t rip_be, uint16_t rport_be, int64_t timeout_ns=900 * NS):
        """Create a connection for every candidate in ``ms`` not in the table yet
        (``rip_be``/``rport_be`` in network byte order as stored in memory). Returns
        how many were added; stops when the table is full."""
        cdef Py_ssize_t i
        cdef uint32_t idx
        cdef int d = 0
        cdef Conn* c
        cdef PacketMeta* m
        cdef Py_ssize_t added = 0
        for i in range(ms.n):
            if ms.res[i] != PKT_OK:
                continue
            m = &ms.m[i]
            if ct_lookup(&self.ct, m, ct_hash_pkt(&self.ct, m), &d) != CT_NONE:
                continue
            idx = ct_alloc(&self.ct)
            if idx == CT_NONE:
                break
            c = &self.ct.conns[idx]
            memcpy(c.caddr, m.saddr, 16)
            memcpy(c.vaddr, m.daddr, 16)
            memset(c.daddr, 0, 16)
            c.daddr[0] = rip_be
            c.cport_be = m.sport_be
            c.cport_again = m.sport_be
            c.vport_be = m.dport_be
            c.dport_be = rport_be
            c.proto = m.proto
            c.af = m.af
            c.state = TCP_S_ESTABLISHED
            c.fwd = FWD_MASQ
            c.flags = 0
            c.dest = -1
            c.svc = -1
            c.timeout = timeout_ns
            c.expires = self.now + timeout_ns
            ct_link(&self.ct, idx)
            added += 1
        return added

    def lookup(self, Metas ms):
        """Hash and look up every candidate (conn_in_get / conn_out_get). Returns
        ``(ns, hits)``; each packet's connection index is kept in ``ms`` for the
        state and rewrite stages."""
        cdef Py_ssize_t i, hits = 0
        cdef int64_t t0, t1
        cdef int d = 0
        cdef uint32_t idx
        with nogil:
            t0 = now_ns()
            for i in range(ms.n):
                if ms.res[i] != PKT_OK:
                    continue
                idx = ct_lookup(&self.ct, &ms.m[i], ct_hash_pkt(&self.ct, &ms.m[i]), &d)
                ms.idx[i] = idx
                ms.dirn[i] = <uint8_t>d
                hits += idx != CT_NONE
            t1 = now_ns()
        return t1 - t0, hits

    def state(self, Metas ms, int64_t now_ns_=0):
        """The engine's state step and timer update for every packet that found its
        connection: set_state (the protocol's transition, the active/inactive move,
        the new state's timeout), then ct_expire_at. Returns ns."""
        cdef Py_ssize_t i
        cdef int64_t t0, t1
        cdef Conn* c
        cdef int64_t now = max(now_ns_, self.now)
        self.now = now
        with nogil:
            t0 = now_ns()
            for i in range(ms.n):
                if ms.idx[i] == CT_NONE:
                    continue
                c = &self.ct.conns[ms.idx[i]]
                set_state(&self.st, c, DIR_OUTPUT if ms.dirn[i] else DIR_INPUT, &ms.m[i])
                ct_expire_at(&self.ct, ms.idx[i], now + c.timeout)
            t1 = now_ns()
        return t1 - t0

    def rewrite(self, uint8_t[::1] buf, const uint32_t[::1] off, Metas ms):
        """DNAT (client -> real server) or SNAT (reply) every packet that found its
        connection, with the incremental checksum updates; TTL kept. Rewriting the
        same bytes again costs the same, so no restore is needed between rounds.
        Returns ns."""
        cdef Py_ssize_t i
        cdef int64_t t0, t1
        cdef uint8_t* b
        if off.shape[0] != ms.n:
            raise ValueError("batch and metas disagree in length")
        if ms.n == 0:
            return 0
        b = &buf[0]
        with nogil:
            t0 = now_ns()
            for i in range(ms.n):
                if ms.idx[i] == CT_NONE:
                    continue
                if ms.dirn[i] == CT_DIR_IN:
                    nat_dnat(b + off[i], &ms.m[i], &self.ct.conns[ms.idx[i]], False)
                else:
                    nat_snat(b + off[i], &ms.m[i], &self.ct.conns[ms.idx[i]], False)
            t1 = now_ns()
        return t1 - t0


def schedule(sched, int ndests, Metas ms, bint bind=True):
    """Call a scheduler's ``pick`` once per candidate packet on a service with ``ndests``
    real servers of weight 1; with ``bind`` each pick counts one active connection on
    the chosen server (as a new connection does). Returns ``(ns, picks)``."""
    cdef SchedOps* ops = <SchedOps*>PyCapsule_GetPointer(sched, b"fastvs.SchedOps")
    cdef Service svc
    cdef Dest* dests
    cdef int32_t i, di
    cdef Py_ssize_t k, picks = 0
    cdef int64_t t0, t1
    if ndests < 1:
        raise ValueError("ndests must be >= 1")
    dests = <Dest*>calloc(ndests, sizeof(Dest))
    memset(&svc, 0, sizeof(Service))
    svc.dest_list = <int32_t*>calloc(ndests, sizeof(int32_t))
    if dests == NULL or svc.dest_list == NULL:
        free(dests)
        free(svc.dest_list)
        raise MemoryError()
    try:
        svc.af = 4
        svc.proto = IPPROTO_TCP_
        svc.sched = ops
        svc.sched_cursor = -1
        if ops.init_svc != NULL:
            ops.init_svc(&svc, dests)
        for i in range(ndests):
            dests[i].addr[0] = <uint32_t>(0x0a00a8c0 + (i << 24))   # 192.168.0.x in memory order
            dests[i].af = 4
            dests[i].port_be = 0x901f                               # 8080
            dests[i].weight = 1
            dests[i].flags = DEST_F_AVAILABLE
            dests[i].fwd = FWD_MASQ
            svc.dest_list[i] = i
            svc.ndests = i + 1
            if ops.dest_changed != NULL:
                ops.dest_changed(&svc, dests)
        with nogil:
            t0 = now_ns()
            for k in range(ms.n):
                if ms.res[k] != PKT_OK:
                    continue
                ms.m[k].now = k
                di = ops.pick(&svc, dests, &ms.m[k])
                if di >= 0:
                    picks += 1
                    if bind:
                        dests[di].activeconns += 1
            t1 = now_ns()
    finally:
        if ops.done_svc != NULL:
            ops.done_svc(&svc, dests)
        free(svc.dest_list)
        free(dests)
    return t1 - t0, picks


def colliding_clients(unsigned long long seed, int mask_bits, uint32_t vip_be, uint16_t vport,
                      Py_ssize_t n, uint32_t start_addr=0x64400000):
    """Hash flooding, from the attacker's side: ``n`` TCP clients (address, port) whose
    in-key <client, VIP:vport> falls in bucket 0 of a table of 2**mask_bits buckets
    when the table's seed is ``seed``. Brute force over client addresses and ports
    (about 2**mask_bits tries per key). Addresses are host-order ints."""
    import numpy as np
    out_addr = np.zeros(n, dtype=np.uint32)
    out_port = np.zeros(n, dtype=np.uint16)
    cdef uint32_t[::1] oa = out_addr
    cdef uint16_t[::1] op = out_port
    cdef uint64_t mask = (<uint64_t>1 << mask_bits) - 1
    cdef uint32_t a1[4]
    cdef uint32_t a2[4]
    cdef uint32_t addr = start_addr
    cdef uint32_t port = 1024
    cdef Py_ssize_t found = 0
    cdef uint16_t vport_be = <uint16_t>(((vport & 0xff) << 8) | (vport >> 8))
    cdef uint16_t port_be
    memset(a1, 0, sizeof(a1))
    memset(a2, 0, sizeof(a2))
    a2[0] = ((vip_be & 0xff) << 24) | ((vip_be & 0xff00) << 8) | ((vip_be >> 8) & 0xff00) | (vip_be >> 24)
    with nogil:
        while found < n:
            a1[0] = ((addr & 0xff) << 24) | ((addr & 0xff00) << 8) | ((addr >> 8) & 0xff00) | (addr >> 24)
            port_be = <uint16_t>(((port & 0xff) << 8) | (port >> 8))
            if (fv_hash_key(a1, a2, port_be, vport_be, 6, seed) & mask) == 0:
                oa[found] = addr
                op[found] = <uint16_t>port
                found += 1
            port += 1
            if port > 65535:
                port = 1024
                addr += 1
    return out_addr, out_port
