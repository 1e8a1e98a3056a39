# cython: language_level=3
"""The batch loop and the engine object: the driver of the data path.

``dp_run`` takes a batch through a three-stage pipeline (parse and hash, prefetch,
then the per-packet path of ``_core``) without the GIL, touching no Python object;
``Engine`` is the Python face that configures the state (``_state``) and reads it
between batches. The roles, as the kernel splits them: ``_ctl`` (ip_vs_ctl.c:
services, classifier, flood defenses), ``_conn`` (ip_vs_conn.c), ``_core``
(ip_vs_core.c), ``_fwd`` and ``_fwd_*`` (ip_vs_xmit.c), ``_proto`` and ``_proto_*``
(ip_vs_proto*.c), ``_frag`` (fragments). They are inline ``.pxd`` modules: one C
unit, as fast as the single file they were carved from.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport calloc, realloc, free
from libc.string cimport memset, memcpy

from fastvs.datapath._types cimport *
from fastvs.datapath._packet cimport pkt_parse
from fastvs.datapath._conntab cimport (ct_init, ct_destroy, ct_hash_pkt, ct_lookup, fv_hash_key,
                                       CT_NONE, CT_DIR_IN, ConnTable, addr_eq, ct_expire_at)
from fastvs.datapath._proto cimport pp_info, PP_N, PP_TCP, PP_UDP, PP_SCTP
from fastvs.datapath._proto_tcp cimport fv_tcp_next_init
from fastvs.datapath._state cimport EngineState, FragEntry, MarkRule, NS, FRAG_SETS, FRAG_WAYS
from fastvs.datapath._fwd cimport fwd_name, FWD_N
from fastvs.datapath._conn cimport expire_due, dest_bind, conn_expire_now
from fastvs.datapath._fwd cimport fwd_bind, fwd_bind_flags
from fastvs.datapath._sync cimport sync_jiffies, SYNC_HZ
from fastvs.datapath._conntab cimport ct_alloc, ct_link, ct_lookup_template
from fastvs.datapath._ctl cimport svc_find, update_defense
from fastvs.datapath._core cimport dp_packet
from fastvs.sched._base cimport SchedOps

import ipaddress

fv_tcp_next_init()

cdef extern from *:
    """
    #ifdef FASTVS_DEBUG
    #define FV_DEBUG_BUILD 1
    #else
    #define FV_DEBUG_BUILD 0
    #endif
    """
    const int FV_DEBUG_BUILD

# True when the package was built with FASTVS_DEBUG=1 (bounds checks on): extensions
# built on demand for tests and benchmarks (benchmarks/cybuild.py) follow it.
DEBUG_BUILD = bool(FV_DEBUG_BUILD)


cdef tuple _registered_protocols():
    """(name, number, state names, default timeouts) of every protocol registered in
    _proto.pxd, in slot order: what the Python side knows of protocols comes from here."""
    cdef ProtoArgs a
    cdef int num, i
    found = {}
    for num in range(256):
        if pp_info(<uint8_t>num, &a) == PP_NOPROTO:
            continue
        found[a.slot] = (a.name.decode(), num,
                         tuple(a.state_names[i].decode() for i in range(a.nstates)),
                         tuple(a.timeouts[i] for i in range(a.nstates)))
    return tuple(found[s] for s in range(PP_N))


cdef tuple _registered_methods():
    cdef int i
    return tuple(fwd_name(<uint8_t>i).decode() for i in range(FWD_N))


_PROTOS = _registered_protocols()
# the registered protocols: {"tcp": 6, "udp": 17, "sctp": 132}, and names by number
PROTO_NUMBERS = {name: num for name, num, _, _ in _PROTOS}
PROTO_NAMES = {num: name.upper() for name, num, _, _ in _PROTOS}
# per protocol: its states' names and their default timeouts (the kernel's tables)
STATE_NAMES = {name: names for name, _, names, _ in _PROTOS}
DEFAULT_TIMEOUTS = {name: touts for name, _, _, touts in _PROTOS}
TCP_TIMEOUT_NAMES = STATE_NAMES["tcp"]
DEFAULT_TCP_TIMEOUTS = DEFAULT_TIMEOUTS["tcp"]
DEFAULT_UDP_TIMEOUT = DEFAULT_TIMEOUTS["udp"][0]
SCTP_STATE_NAMES = STATE_NAMES["sctp"]
# forwarding methods by code (_fwd.pxd): "masq", "local", "tunnel", "route"
FWD_NAMES = dict(enumerate(_registered_methods()))
FWD_CODES = {name: code for code, name in FWD_NAMES.items()}


cdef extern from *:
    """
    #define FV_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    /* a write prefetch where the target has one (GCC: -mprfchw); otherwise GCC emits
       a read prefetch. No inline prefetchw: not every x86-64 CPU is documented to
       run it, and it measured within noise here */
    #define FV_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 3)
    """
    void FV_PREFETCH(const void* p) nogil
    void FV_PREFETCH_W(const void* p) nogil

# Packets go through a three-stage pipeline in windows of 8: while window w is processed
# in order, window w + 1 has its connection records prefetched and window w + 2 is
# parsed and hashed and has its buckets prefetched. The two dependent cache misses of
# a lookup (bucket, then record) are thus issued 8 and 16 packets before the packet
# needs them, and overlap with the work on other packets: at 100k flows 1.4x the
# one-window scheme (both misses stalled once per window), at 1k within 2 % of it. A
# plain loop, one packet at a time, has 45 instructions fewer per packet and is 18 %
# slower even at 1k flows (nothing overlaps across packets). Parsing and hashing depend
# only on a packet's own bytes, so doing them early changes no result.
cdef enum:
    WINDOW = 8

# A deleted service (ipvsadm -D) keeps its slot, so that its connections' indexes stay
# valid, but leaves the service table: no lookup finds it (not an IP_VS_SVC_F_* bit)
cdef enum:
    SVC_F_GONE = 0x40000000


cdef inline void dp_stage_parse(EngineState* st, uint8_t* buf, Py_ssize_t buflen,
                                const uint32_t* off, const uint32_t* caplen,
                                const uint32_t* wirelen, const uint16_t* linktype,
                                Py_ssize_t j, PacketMeta* m, int* rc, uint64_t* h) noexcept nogil:
    """Parse packet ``j`` into ``m``/``rc``; for a candidate, hash it into ``h`` and
    prefetch its bucket."""
    m.af = 0
    m.l3len = 0
    if FV_UNLIKELY(<uint64_t>off[j] + caplen[j] > <uint64_t>buflen):
        rc[0] = V_DROP_BAD_SLOT
        return
    rc[0] = pkt_parse(buf + off[j], caplen[j], wirelen[j], linktype[j], m)
    if rc[0] == PKT_OK:
        h[0] = ct_hash_pkt(&st.ct, m)
        FV_PREFETCH(&st.ct.buckets[h[0] & st.ct.mask])


cdef inline const uint8_t* dp_stage_record(const EngineState* st, int rc,
                                           uint64_t h) noexcept nogil:
    """The record the packet's first bucket names, or NULL. The caller prefetches it:
    a helper that only loads and prefetches counts as pure to GCC, whose calls are
    then removed with their prefetches."""
    cdef uint64_t b
    if rc == PKT_OK:
        b = st.ct.buckets[h & st.ct.mask]
        if b:
            return <const uint8_t*>&st.ct.conns[<uint32_t>(b & 0x7fffffff) - 1]
    return NULL


# Once a second of packet time and when a connection is due: out of the batch loop,
# whose registers the inlined sweep and defense update would otherwise share
cdef cold_void dp_defense(EngineState* st) noexcept nogil:
    update_defense(st)
    st.next_defense = st.now + NS


cdef cold_void dp_expire(EngineState* st) noexcept nogil:
    expire_due(st)


# dp_run is inlined into both of its callers, process and engine_batch (hot_ssize:
# always_inline). With a second caller GCC kept it out of line, compiled with less
# inlined inside: +1.1 % instructions per packet on est-1k (callgrind); inlined in
# both, est-1k is 2.1 % below the one-caller build, mixed-1k 0.6 % and syn-10k 0.1 %
# above it (benchmarks/README.md).
cdef hot_ssize dp_run(EngineState* st, uint8_t* buf, Py_ssize_t buflen,
                      const uint32_t* off, const uint32_t* caplen, const uint32_t* wirelen,
                      const int64_t* ts, const uint16_t* linktype, uint8_t* verdict,
                      int32_t* aux, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t wi, j, k, start, cnt, base
    cdef Py_ssize_t nw = (n + WINDOW - 1) // WINDOW
    cdef Py_ssize_t written = 0
    cdef int v
    cdef PacketMeta metas[4 * WINDOW]
    cdef int rcs[4 * WINDOW]
    cdef uint64_t hs[4 * WINDOW]
    cdef const uint8_t* rec
    if n > 0 and not st.started:
        st.now = ts[0]
        st.started = True
    st.last_dest = -1           # set by a packet that reaches a real server
    # window wi is processed while wi + 1 has its records prefetched and wi + 2 is
    # parsed and has its buckets prefetched; the first two rounds only fill the pipe
    for wi in range(-2, nw):
        if wi + 2 < nw:
            start = (wi + 2) * WINDOW
            cnt = min(WINDOW, n - start)
            base = ((wi + 2) & 3) * WINDOW
            for k in range(cnt):
                dp_stage_parse(st, buf, buflen, off, caplen, wirelen, linktype, start + k,
                               &metas[base + k], &rcs[base + k], &hs[base + k])
        if 0 <= wi + 1 < nw:
            start = (wi + 1) * WINDOW
            cnt = min(WINDOW, n - start)
            base = ((wi + 1) & 3) * WINDOW
            for k in range(cnt):
                # both cache lines of the record: keys and state, then timer and dest
                rec = dp_stage_record(st, rcs[base + k], hs[base + k])
                if rec != NULL:
                    FV_PREFETCH(rec)
                    FV_PREFETCH_W(rec + 64)
        if wi < 0:
            continue
        start = wi * WINDOW
        cnt = min(WINDOW, n - start)
        base = (wi & 3) * WINDOW
        for k in range(base, base + cnt):
            j = start + k - base
            if ts[j] > st.now:
                st.now = ts[j]
            if st.now >= st.next_defense:
                dp_defense(st)
            if st.ct.heap_t[0] <= st.now:         # (INT64_MAX when the heap is empty)
                dp_expire(st)
            # (a bad slot's V_DROP_BAD_SLOT comes back as it is: dp_packet returns a
            # parse verdict it does not handle unchanged, and reads no byte of it)
            v = dp_packet(st, buf + off[j], &metas[k], rcs[k], hs[k])
            verdict[j] = <uint8_t>v
            if aux != NULL:
                # (reset here, not before each packet: only aux reads it)
                aux[j] = st.last_dest
                st.last_dest = -1
            st.counts[v] += 1
    # counted after the loop, where GCC vectorizes it, rather than in a register the
    # per-packet path would have to keep (or spill)
    for j in range(n):
        written += verdict[j] < V_DROP_BASE
    return written


# -- connections from a backup's table (--sync-in) ---------------------------------------

# One row of fastvs.sync.backup.BACKUP_CONN_DTYPE (numpy's packed layout), with ``svc``
# and ``real`` as the engine's service and real-server indexes (-1: unbound)
cdef packed struct SyncRow:
    uint8_t af
    uint8_t protocol
    uint16_t state
    uint32_t flags
    uint16_t cport
    uint16_t vport
    uint16_t dport
    uint32_t fwmark
    uint32_t timeout_s
    int64_t expire_ns
    uint32_t in_pkts
    int32_t svc
    int32_t real
    uint32_t caddr[4]
    uint32_t vaddr[4]
    uint32_t daddr[4]


cdef enum:
    TEMPLATE_TIMEOUT_S = 180        # ip_vs_proc_conn: a template without a timeout (v0)
    # the row flags an entry keeps (the SEQ bits of IP_VS_CONN_F_BACKUP_UPD_MASK: the
    # engine holds no sequence adjustment from a backup)
    ROW_KEEP_FLAGS = (CONN_F_SYNC | CONN_F_INACTIVE | CONN_F_NO_CPORT | CONN_F_TEMPLATE
                      | CONN_F_ONE_PACKET)


cdef uint32_t ct_find_in(const ConnTable* t, const SyncRow* r) noexcept nogil:
    """ip_vs_conn_in_get for a row: the connection (not a template) whose in key is
    the row's; a cport of 0 matches only a NO_CPORT entry and a NO_CPORT entry only
    a cport of 0. Only in keys count: a reply's key that happens to be equal is not
    the row's connection."""
    cdef uint32_t ca[4]
    cdef uint32_t va[4]
    cdef uint16_t cport_be = _port_be_c(r.cport)
    cdef uint16_t vport_be = _port_be_c(r.vport)
    cdef uint64_t h, pos, b
    cdef uint32_t idx
    cdef const Conn* c
    memcpy(ca, r.caddr, 16)     # (aligned copies of the packed row's fields)
    memcpy(va, r.vaddr, 16)
    h = fv_hash_key(ca, va, cport_be, vport_be, r.protocol, t.seed)
    pos = h & t.mask
    while True:
        b = t.buckets[pos]
        if b == 0:
            return CT_NONE
        if (b >> 32) == (h >> 32) and not ((b >> 31) & 1):
            idx = <uint32_t>(b & 0x7fffffff) - 1
            c = &t.conns[idx]
            if (not (c.in_use & 4) and c.proto == r.protocol and c.af == r.af
                    and c.cport_be == cport_be and c.vport_be == vport_be
                    and addr_eq(c.caddr, ca) and addr_eq(c.vaddr, va)
                    and (r.cport == 0) == ((c.flags & CONN_F_NO_CPORT) != 0)):
                return idx
        pos = (pos + 1) & t.mask


cdef inline bint row_daddr_is(const SyncRow* r, const Conn* c) noexcept nogil:
    """The row names the entry's real server (address and port)."""
    cdef uint32_t da[4]
    memcpy(da, r.daddr, 16)
    return c.dport_be == _port_be_c(r.dport) and addr_eq(c.daddr, da)


cdef inline int64_t row_timeout(EngineState* st, const SyncRow* r, int slot) noexcept nogil:
    """ip_vs_proc_conn's timeout: the record's (v1), else the protocol's for the
    state (v0: the engine's table, --set included), 180 s for a template."""
    if r.timeout_s:
        return <int64_t>r.timeout_s * NS
    if r.flags & CONN_F_TEMPLATE:
        return <int64_t>TEMPLATE_TIMEOUT_S * NS
    return st.timeout[slot][r.state]


cdef inline void row_bind(EngineState* st, Conn* c, int32_t di) noexcept nogil:
    """ip_vs_bind_dest + ip_vs_bind_xmit: a synced entry takes its real server's
    method (NOOUTPUT with it); a connection keeps its INACTIVE, a template takes the
    real server's (dest->conn_flags always holds INACTIVE: ip_vs_ctl.c:926);
    counted on the real server."""
    cdef Dest* d = &st.dests[di]
    if c.flags & CONN_F_SYNC:
        c.flags &= ~CONN_F_NOOUTPUT
    if c.flags & CONN_F_TEMPLATE:
        c.flags |= CONN_F_INACTIVE
    fwd_bind(c, d)
    c.dest = di
    c.svc = d.svc
    dest_bind(d, c)


cdef void row_update(EngineState* st, uint32_t idx, const SyncRow* r, int slot) noexcept nogil:
    """ip_vs_proc_conn on an entry it found (ip_vs_sync.c:874-892, 921-950): an
    INACTIVE change moves a bound connection between its real server's active and
    inactive counts (never a template's); the flags take the row's
    IP_VS_CONN_F_BACKUP_UPD_MASK bits; an unbound entry binds now if the row names a
    real server for its own address and port (ip_vs_try_bind_dest); then in_pkts,
    state, old_state, timeout and the timer as for a new entry. The entry keeps its
    real server, control links and sync end time."""
    cdef Conn* c = &st.ct.conns[idx]
    cdef Dest* d
    if ((c.flags ^ r.flags) & CONN_F_INACTIVE and not (r.flags & CONN_F_TEMPLATE)
            and c.dest >= 0):
        d = &st.dests[c.dest]
        if r.flags & CONN_F_INACTIVE:
            d.activeconns -= 1
            d.inactconns += 1
        else:
            d.activeconns += 1
            d.inactconns -= 1
    c.flags = (c.flags & ~CONN_F_INACTIVE) | (r.flags & CONN_F_INACTIVE)
    if c.dest < 0 and r.real >= 0 and row_daddr_is(r, c):
        row_bind(st, c, r.real)
    c.in_pkts = r.in_pkts
    c.state = <uint8_t>r.state
    c.old_state = c.state
    c.timeout = row_timeout(st, r, slot)
    ct_expire_at(&st.ct, idx, st.now + r.expire_ns)


cdef uint32_t row_new(EngineState* st, const SyncRow* r, int slot) noexcept nogil:
    """ip_vs_conn_new + ip_vs_bind_dest for a row (ip_vs_sync.c:893-919, 921-950);
    CT_NONE when the table is full."""
    cdef uint32_t idx = ct_alloc(&st.ct)
    cdef uint8_t fwd = r.flags & CONN_F_FWD_MASK
    cdef Conn* c
    if idx == CT_NONE:
        return CT_NONE
    c = &st.ct.conns[idx]
    memcpy(c.caddr, r.caddr, 16)
    memcpy(c.vaddr, r.vaddr, 16)
    memcpy(c.daddr, r.daddr, 16)
    c.cport_be = _port_be_c(r.cport)
    c.cport_again = c.cport_be
    c.vport_be = _port_be_c(r.vport)
    c.dport_be = _port_be_c(r.dport)
    c.proto = r.protocol
    c.af = r.af
    c.state = <uint8_t>r.state
    # the record's flags, NOOUTPUT and the method as the binding gives them
    c.flags = <uint16_t>(r.flags & ROW_KEEP_FLAGS)
    c.control = 0
    c.n_control = 0
    c.timeout = row_timeout(st, r, slot)
    c.expires = st.now + r.expire_ns
    c.in_pkts = r.in_pkts
    c.old_state = c.state
    if r.real >= 0:
        row_bind(st, c, r.real)
    else:
        c.fwd = fwd
        fwd_bind_flags(fwd, c)
        c.dest = -1
        c.svc = r.svc if 0 <= r.svc < st.nsvcs else -1
    ct_link(&st.ct, idx)
    if st.sync != NULL and st.sync.endtime != NULL:
        st.sync.endtime[idx] = sync_jiffies(st.now) & ~(<uint64_t>3)
    return idx


cdef Py_ssize_t insert_rows(EngineState* st, const SyncRow* rows, Py_ssize_t n,
                            uint64_t* counts) noexcept nogil:
    """ip_vs_proc_conn for rows (ip_vs_sync.c:842-951), in order: each row updates
    the entry it finds (a template by ip_vs_ct_in_get, a connection by
    ip_vs_conn_in_get) or makes one, bound to its real server (``real``; -1: unbound,
    forwarded by its own address, port and method, counted on no real server). A
    connection found with another real server is replaced (expired at once, the new
    one made) unless the row is INACTIVE: that is the expiry news of a connection
    already replaced, ignored (ip_vs_sync.c:852-869); a template keeps its real
    server. A backup links no connection to its template. Rows the engine cannot take
    (a protocol or state it does not know, no time left) and ignored rows are
    skipped; a full table stops the insert. ``counts``: skipped, updated, replaced.
    Returns the rows taken (made or updated)."""
    cdef Py_ssize_t i, done = 0
    cdef const SyncRow* r
    cdef ProtoArgs a
    cdef uint32_t idx
    cdef uint8_t fwd
    cdef bint tpl
    cdef bint replaced = False
    cdef uint32_t ca[4]
    cdef uint32_t va[4]
    expire_due(st)              # the timers that ran before these records came
    for i in range(n):
        r = &rows[i]
        tpl = (r.flags & CONN_F_TEMPLATE) != 0
        fwd = r.flags & CONN_F_FWD_MASK
        if ((r.af != 4 and r.af != 6) or r.expire_ns <= 0 or r.real >= st.ndests
                or (r.real < 0 and fwd >= FWD_N)):
            counts[0] += 1
            continue
        if tpl:
            # a mark template's protocol is 0 (IPPROTO_IP); states NONE, ASSURED
            a.slot = 0
            if r.state >= 2 or (r.protocol != 0 and pp_info(r.protocol, &a) == PP_NOPROTO):
                counts[0] += 1
                continue
            memcpy(ca, r.caddr, 16)     # (aligned copies of the packed row's fields)
            memcpy(va, r.vaddr, 16)
            idx = ct_lookup_template(&st.ct, r.protocol, ca, va, _port_be_c(r.vport))
        else:
            if pp_info(r.protocol, &a) == PP_NOPROTO or r.state >= a.nstates:
                counts[0] += 1
                continue
            idx = ct_find_in(&st.ct, r)
            if idx != CT_NONE and not row_daddr_is(r, &st.ct.conns[idx]):
                if r.flags & CONN_F_INACTIVE:
                    counts[0] += 1
                    continue
                conn_expire_now(st, idx)
                counts[2] += 1
                replaced = True
                idx = CT_NONE
        if idx != CT_NONE:
            row_update(st, idx, r, a.slot)
            counts[1] += 1
        elif row_new(st, r, a.slot) == CT_NONE:
            break
        done += 1
    if replaced:
        expire_due(st)          # the replaced ones' timers run now (uncounted)
    return done


cdef inline uint16_t _port_be_c(uint16_t port) noexcept nogil:
    return <uint16_t>(((port & 0xff) << 8) | (port >> 8))


# -- the Python face ------------------------------------------------------------------------

cdef bytes _addr16(str addr, int* af):
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        af[0] = 4
        return ip.packed + bytes(12)
    af[0] = 6
    return ip.packed


cdef str _addr_str(const uint32_t* a, int af):
    cdef bytes raw = (<const uint8_t*>a)[:16]
    if af == 6:
        return str(ipaddress.IPv6Address(raw))
    return str(ipaddress.IPv4Address(raw[:4]))


cdef inline int _port(uint16_t be):
    return ((be & 0xff) << 8) | (be >> 8)


cdef inline uint16_t _port_be(int port):
    return <uint16_t>(((port & 0xff) << 8) | ((port >> 8) & 0xff))


cdef dict _stats(const Stats* s):
    return {"conns": s.conns, "inpkts": s.inpkts, "outpkts": s.outpkts,
            "inbytes": s.inbytes, "outbytes": s.outbytes}


cdef Py_ssize_t engine_batch(void* st, uint8_t* buf, Py_ssize_t buflen, const uint32_t* off,
                             const uint32_t* caplen, const uint32_t* wirelen, const int64_t* ts,
                             const uint16_t* linktype, uint8_t* verdict, int32_t* aux,
                             Py_ssize_t n) noexcept nogil:
    """The BatchEntry function (_types.pxd): dp_run on an engine's state."""
    return dp_run(<EngineState*>st, buf, buflen, off, caplen, wirelen, ts, linktype, verdict, aux, n)


cdef class Engine:
    """One IPVS director's data path and state. Configure it, then feed it batches.

    Not thread-safe; use one engine per core (shard flows by 5-tuple hash).
    """
    cdef EngineState st
    cdef BatchEntry entry
    cdef readonly uint64_t insert_skipped
    cdef readonly uint64_t insert_updated
    cdef readonly uint64_t insert_replaced

    def __cinit__(self, unsigned int capacity=1 << 20, seed=None):
        memset(&self.st, 0, sizeof(EngineState))
        self.entry.run = engine_batch
        self.entry.st = &self.st
        if capacity < 1 or capacity > (1 << 30):
            raise ValueError(f"capacity must be between 1 and 2**30, not {capacity}")
        if seed is None:
            import secrets
            seed = secrets.randbits(64)
        if ct_init(&self.st.ct, capacity, <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)) != 0:
            raise MemoryError(f"cannot allocate a connection table for {capacity} connections")
        self.st.frags = <FragEntry*>calloc(FRAG_SETS * FRAG_WAYS, sizeof(FragEntry))
        if self.st.frags == NULL:
            raise MemoryError("cannot allocate the fragment table")
        for slot, (_, _, _, touts) in enumerate(_PROTOS):
            for i, t in enumerate(touts):
                self.st.timeout[slot][i] = <int64_t>t * NS
        self.st.truncated_balance = True
        self.st.conn_reuse_mode = 1
        self.st.tun_mtu = 1500
        self.st.drop_entry_mode = 1
        self.st.amemthresh = max(1, capacity // 8)
        self.st.am_droprate = 10
        self.st.rnd = 0x9E3779B97F4A7C15      # fixed: results never depend on the hash seed
        self.st.next_defense = -(1 << 62)

    def __dealloc__(self):
        cdef int32_t i
        cdef SchedOps* ops
        ct_destroy(&self.st.ct)
        if self.st.svcs != NULL:
            for i in range(self.st.nsvcs):
                ops = <SchedOps*>self.st.svcs[i].sched
                if ops != NULL and ops.done_svc != NULL and not self.st.svcs[i].flags & SVC_F_GONE:
                    ops.done_svc(&self.st.svcs[i], self.st.dests)
                free(self.st.svcs[i].dest_list)
        free(self.st.svcs)
        free(self.st.dests)
        free(self.st.svc_hash)
        free(self.st.frags)
        free(self.st.marks)
        self._sync_free()

    # -- options -------------------------------------------------------------------------
    def set_options(self, *, keep_ttl=None, director_view=None, truncated=None,
                    expire_nodest_conn=None, conn_reuse_mode=None,
                    expire_quiescent_template=None, tunnel_mtu=None, drop_entry=None,
                    drop_packet=None, amemthresh=None, am_droprate=None, sloppy_sctp=None,
                    secure_tcp=None, sloppy_tcp=None):
        """Options named after the kernel's sysctls. Flood defenses: ``drop_entry``,
        ``drop_packet`` and ``secure_tcp`` are 0 (off), 1 (automatic: on while fewer than ``amemthresh``
        connection slots are free) or 3 (always); fastvs turns drop_entry on
        automatically by default (the kernel's default is off, but its table is not
        bounded the way fastvs's is)."""
        if keep_ttl is not None:
            self.st.keep_ttl = bool(keep_ttl)
        if director_view is not None:
            self.st.director_view = bool(director_view)
        if truncated is not None:
            if truncated not in ("balance", "drop"):
                raise ValueError("truncated must be 'balance' or 'drop'")
            self.st.truncated_balance = truncated == "balance"
        if expire_nodest_conn is not None:
            self.st.expire_nodest_conn = bool(expire_nodest_conn)
        if conn_reuse_mode is not None:
            self.st.conn_reuse_mode = int(conn_reuse_mode)
        if expire_quiescent_template is not None:
            self.st.expire_quiescent_template = bool(expire_quiescent_template)
        if tunnel_mtu is not None:
            if not 68 <= tunnel_mtu <= 65535:
                raise ValueError("tunnel MTU must be between 68 and 65535")
            self.st.tun_mtu = tunnel_mtu
        for name, val in (("drop_entry", drop_entry), ("drop_packet", drop_packet),
                          ("secure_tcp", secure_tcp)):
            if val is not None and val not in (0, 1, 2, 3):
                raise ValueError(f"{name} must be 0, 1 or 3")
        if drop_entry is not None:
            self.st.drop_entry_mode = 1 if drop_entry == 2 else drop_entry
        if drop_packet is not None:
            self.st.drop_packet_mode = 1 if drop_packet == 2 else drop_packet
        if secure_tcp is not None:
            self.st.secure_tcp_mode = 1 if secure_tcp == 2 else secure_tcp
        if sloppy_sctp is not None:
            self.st.sloppy = (self.st.sloppy & ~1) | (1 if sloppy_sctp else 0)
        if sloppy_tcp is not None:
            self.st.sloppy = (self.st.sloppy & ~2) | (2 if sloppy_tcp else 0)
        if amemthresh is not None:
            self.st.amemthresh = max(1, int(amemthresh))
        if am_droprate is not None:
            self.st.am_droprate = max(1, int(am_droprate))
        self.st.next_defense = -(1 << 62)

    def set_marks(self, rules):
        """The firewall-mark classifier: ``rules`` is a list of (mark, proto, network,
        port) with proto "tcp"/"udp"/"any", network an ipaddress network, port 0 for
        any. Like a list of iptables -j MARK rules, the last match wins."""
        cdef MarkRule* arr = <MarkRule*>calloc(max(1, len(rules)), sizeof(MarkRule))
        cdef int i
        cdef bytes a, mk
        if arr == NULL:
            raise MemoryError()
        for i, (mark, proto, net, port) in enumerate(rules):
            arr[i].mark = mark
            arr[i].proto = 0 if proto in ("any", "all", None) else PROTO_NUMBERS[proto]
            arr[i].af = net.version
            arr[i].port_be = _port_be(port)
            if net.version == 4:
                a = net.network_address.packed + bytes(12)
                mk = net.netmask.packed + bytes(12)
            else:
                a = net.network_address.packed
                mk = net.netmask.packed
            memcpy(arr[i].addr, <const char*>a, 16)
            memcpy(arr[i].mask, <const char*>mk, 16)
        free(self.st.marks)
        self.st.marks = arr
        self.st.nmarks = len(rules)

    def set_timeouts(self, tcp=0, tcpfin=0, udp=0):
        """ipvsadm --set: 0 leaves a value as it is."""
        if tcp:
            self.st.timeout[PP_TCP][TCP_S_ESTABLISHED] = int(tcp) * NS
        if tcpfin:
            self.st.timeout[PP_TCP][TCP_S_FIN_WAIT] = int(tcpfin) * NS
        if udp:
            self.st.timeout[PP_UDP][UDP_S_NORMAL] = int(udp) * NS

    def set_state_timeout(self, str state, seconds):
        """Set one TCP state's timeout (the kernel's /proc/sys/net/ipv4/vs tables)."""
        self.st.timeout[PP_TCP][TCP_TIMEOUT_NAMES.index(state.upper())] = int(seconds) * NS

    def timeouts(self):
        out = {name: self.st.timeout[PP_TCP][i] // NS for i, name in enumerate(TCP_TIMEOUT_NAMES)}
        out["UDP"] = self.st.timeout[PP_UDP][UDP_S_NORMAL] // NS
        for i, name in enumerate(SCTP_STATE_NAMES):
            out["SCTP_" + name] = self.st.timeout[PP_SCTP][i] // NS
        return out

    # -- configuration --------------------------------------------------------------------
    def add_service(self, str proto, str addr, int port, sched not None,
                    unsigned int persist_timeout=0, unsigned int flags=0,
                    unsigned int fwmark=0, netmask=None):
        """Add a virtual service; returns its index. ``sched`` is a scheduler capsule
        from fastvs.sched.get(). ``proto`` "fwmark" with ``fwmark`` > 0 makes a
        firewall-mark service (``addr`` then only gives the family). ``flags`` are
        IP_VS_SVC_F_* (1 = persistent, with ``persist_timeout`` seconds and the
        ``netmask``: an IPv4 mask as an int, or an IPv6 prefix length)."""
        cdef int af = 4
        cdef bytes a16 = _addr16(addr, &af)
        cdef uint8_t p = 0 if proto == "fwmark" else PROTO_NUMBERS[proto]
        cdef Service* s
        cdef SchedOps* ops = <SchedOps*>PyCapsule_GetPointer(sched, b"fastvs.SchedOps")
        cdef bytes mask16
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        if proto == "fwmark":
            if fwmark == 0:
                raise ValueError("a firewall-mark service needs a mark > 0")
            for i in range(self.st.nsvcs):
                if (self.st.svcs[i].fwmark == fwmark and self.st.svcs[i].af == af
                        and not self.st.svcs[i].flags & SVC_F_GONE):
                    raise ValueError(f"service fwmark {fwmark} exists")
            a16 = bytes(16)
            port = 0
        elif svc_find(&self.st, p, <const uint32_t*><const char*>a16, _port_be(port)) >= 0:
            raise ValueError(f"service {proto} {addr}:{port} exists")
        if af == 4:
            mask16 = (0xFFFFFFFF if netmask is None else int(netmask)).to_bytes(4, "big") + bytes(12)
        else:
            plen = 128 if netmask is None else int(netmask)
            mask16 = (((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)).to_bytes(16, "big")
        if self.st.nsvcs == self.st.cap_svcs:
            self._grow_svcs()
        s = &self.st.svcs[self.st.nsvcs]
        memset(s, 0, sizeof(Service))
        memcpy(s.addr, <const char*>a16, 16)
        s.af = af
        s.proto = p
        s.port_be = _port_be(port)
        s.persist_timeout = persist_timeout
        s.flags = flags
        s.fwmark = fwmark
        memcpy(s.netmask, <const char*>mask16, 16)
        s.sched = ops
        s.sched_cursor = -1
        s.dest_list = NULL
        if fwmark:
            self.st.nfwm_svcs += 1
        elif port == 0:
            self.st.nnull_svcs += 1
        elif port == 21:
            self.st.nftp_svcs += 1      # ftpsvc_counter (any protocol, as the kernel's)
        self.st.nsvcs += 1
        if ops.init_svc != NULL:
            ops.init_svc(s, self.st.dests)
        self._rehash_svcs()
        return self.st.nsvcs - 1

    def add_dest(self, int svc, str addr, int port, int weight=1, str fwd="masq",
                 unsigned int u_threshold=0, unsigned int l_threshold=0, bint at_head=True):
        """Add a real server to a service; returns its index. ``at_head`` links it at
        the head of the list, as the kernel does (ipvsadm -a)."""
        cdef int af = 4
        cdef bytes a16 = _addr16(addr, &af)
        cdef Service* s
        cdef Dest* d
        cdef int32_t di
        cdef int32_t* lst
        self._check_svc(svc)
        if self.st.svcs[svc].flags & SVC_F_GONE:
            raise ValueError(f"service {svc} is deleted")
        if weight < 0:
            raise ValueError("weight must not be negative")
        if l_threshold > u_threshold and u_threshold:
            raise ValueError("lower threshold above upper threshold")
        if self.st.ndests == self.st.cap_dests:
            self._grow_dests()
        di = self.st.ndests
        d = &self.st.dests[di]
        memset(d, 0, sizeof(Dest))
        memcpy(d.addr, <const char*>a16, 16)
        d.af = af
        d.port_be = _port_be(port)
        d.weight = weight
        if fwd not in FWD_CODES:
            raise ValueError(f"unknown forwarding method {fwd!r}")
        d.fwd = FWD_CODES[fwd]
        d.u_threshold = u_threshold
        d.l_threshold = l_threshold
        d.flags = DEST_F_AVAILABLE
        d.svc = svc
        self.st.ndests += 1
        s = &self.st.svcs[svc]
        lst = <int32_t*>realloc(s.dest_list, (s.ndests + 1) * sizeof(int32_t))
        if lst == NULL:
            raise MemoryError()
        s.dest_list = lst
        if at_head:
            for i in range(s.ndests, 0, -1):
                lst[i] = lst[i - 1]
            lst[0] = di
        else:
            lst[s.ndests] = di
        s.ndests += 1
        self._dest_changed(svc)
        return di

    def edit_dest(self, int dest, weight=None, u_threshold=None, l_threshold=None, fwd=None):
        """ipvsadm -e (__ip_vs_update_dest with add = 0): change a real server's weight,
        thresholds or forwarding method in place (its connections keep the method they
        were made with); the scheduler's upd_dest hook runs."""
        self._check_dest(dest)
        self._set_dest(dest, weight, u_threshold, l_threshold, fwd)
        self._dest_changed(self.st.dests[dest].svc)

    cdef _set_dest(self, int dest, weight, u_threshold, l_threshold, fwd):
        """The settings part of __ip_vs_update_dest, checked before anything changes."""
        cdef Dest* d = &self.st.dests[dest]
        cdef uint32_t ut = d.u_threshold if u_threshold is None else u_threshold
        cdef uint32_t lt = d.l_threshold if l_threshold is None else l_threshold
        if weight is not None and weight < 0:
            raise ValueError("weight must not be negative")
        if fwd is not None and fwd not in FWD_CODES:
            raise ValueError(f"unknown forwarding method {fwd!r}")
        if lt > ut and ut:
            raise ValueError("lower threshold above upper threshold")
        if weight is not None:
            d.weight = weight
        if fwd is not None:
            d.fwd = FWD_CODES[fwd]
        # __ip_vs_update_dest (ip_vs_ctl.c:969-978 in 6.1.192): only a change of a
        # threshold re-decides the overload mark, as __ip_vs_dest_update_overload
        # (dest, 0) does (ip_vs_ctl.c:872-892): off without an upper threshold, on at
        # or above it, kept from the lower one (-y, or u - u/4) up, off below
        cdef int64_t conns = <int64_t>d.activeconns + d.inactconns      # totalconns
        cdef int64_t lval = lt if lt else ut - (ut >> 2)
        if ut != d.u_threshold or lt != d.l_threshold:
            if ut == 0 or conns < lval:
                d.flags &= ~DEST_F_OVERLOAD
            elif conns >= ut:
                d.flags |= DEST_F_OVERLOAD
        d.u_threshold = ut
        d.l_threshold = lt

    def remove_dest(self, int dest):
        """ipvsadm -d (__ip_vs_unlink_dest + __ip_vs_del_dest): unlink a real server
        into the trash (:meth:`restore_dest` brings it back with its connections and
        counters). Its connections stay until they expire; their packets are dropped,
        or with expire_nodest_conn they are flushed now (ip_vs_expire_nodest_conn_flush,
        queued by __ip_vs_del_dest)."""
        cdef Dest* d
        self._check_dest(dest)
        d = &self.st.dests[dest]
        if not (d.flags & DEST_F_AVAILABLE):
            raise ValueError("real server already removed")
        self._unlink_dest(dest, True)
        self._dest_changed(d.svc)
        if self.st.expire_nodest_conn:
            self._flush_nodest()

    cdef _unlink_dest(self, int32_t dest, bint svcupd):
        """__ip_vs_unlink_dest: out of the list; with ``svcupd`` the scheduler's
        del_dest hook runs first (rr moves its cursor back to the dest before it)."""
        cdef Dest* d = &self.st.dests[dest]
        cdef Service* s = &self.st.svcs[d.svc]
        cdef SchedOps* ops = <SchedOps*>s.sched
        cdef int32_t i, j = 0
        d.flags &= ~DEST_F_AVAILABLE
        if svcupd and ops.del_dest != NULL:
            ops.del_dest(s, self.st.dests, dest)
        for i in range(s.ndests):
            if s.dest_list[i] != dest:
                s.dest_list[j] = s.dest_list[i]
                j += 1
        s.ndests = j

    def restore_dest(self, int dest, int svc, int weight=1, str fwd="masq",
                     unsigned int u_threshold=0, unsigned int l_threshold=0, bint at_head=True):
        """ipvsadm -a of a real server still in the trash (ip_vs_trash_get_dest, then
        __ip_vs_update_dest with add = 1): the same real server comes back, linked
        anew, with its connections and counters; moved into another service (a
        re-created one), its traffic statistics start from zero."""
        cdef Dest* d
        cdef Service* s
        cdef int32_t* lst
        cdef int32_t i
        self._check_dest(dest)
        self._check_svc(svc)
        d = &self.st.dests[dest]
        if d.flags & DEST_F_AVAILABLE:
            raise ValueError("real server is not removed")
        if self.st.svcs[svc].flags & SVC_F_GONE:
            raise ValueError(f"service {svc} is deleted")
        self._set_dest(dest, weight, u_threshold, l_threshold, fwd)
        if d.svc != svc:
            memset(&d.stats, 0, sizeof(Stats))      # ip_vs_zero_stats on a new service
            d.svc = svc
        s = &self.st.svcs[svc]
        lst = <int32_t*>realloc(s.dest_list, (s.ndests + 1) * sizeof(int32_t))
        if lst == NULL:
            raise MemoryError()
        s.dest_list = lst
        if at_head:
            for i in range(s.ndests, 0, -1):
                lst[i] = lst[i - 1]
            lst[0] = dest
        else:
            lst[s.ndests] = dest
        s.ndests += 1
        d.flags |= DEST_F_AVAILABLE
        self._dest_changed(svc)

    def remove_service(self, int svc):
        """ipvsadm -D (ip_vs_del_service): the service leaves the service table (its
        packets find another service, port zero's, or none), its real servers go to
        the trash without the scheduler's del_dest hook (__ip_vs_unlink_dest with
        svcupd = 0), and the scheduler is unbound."""
        cdef Service* s
        cdef SchedOps* ops
        self._check_svc(svc)
        s = &self.st.svcs[svc]
        if s.flags & SVC_F_GONE:
            raise ValueError(f"service {svc} already deleted")
        while s.ndests:
            self._unlink_dest(s.dest_list[0], False)
        ops = <SchedOps*>s.sched
        if ops.done_svc != NULL:
            ops.done_svc(s, self.st.dests)
        s.sched_data = NULL
        s.flags |= SVC_F_GONE
        if s.fwmark:
            self.st.nfwm_svcs -= 1
            s.af = 0            # no packet's family: the fwmark lookup passes it by
        elif s.port_be == 0:
            self.st.nnull_svcs -= 1
        self._rehash_svcs()
        if self.st.expire_nodest_conn:
            self._flush_nodest()

    def edit_service(self, int svc, sched=None, persist_timeout=None, flags=None, netmask=None):
        """ipvsadm -E (ip_vs_edit_service): new flags (-p, -o, -b), persistence timeout
        and -M take effect for the next packets; a different scheduler is bound anew
        (the old one's state goes, the new one's init_service sees the current list)."""
        cdef Service* s
        cdef SchedOps* ops
        cdef SchedOps* old
        cdef bytes mask16
        self._check_svc(svc)
        s = &self.st.svcs[svc]
        if s.flags & SVC_F_GONE:
            raise ValueError(f"service {svc} is deleted")
        if netmask is not None:
            if s.af == 4:
                mask16 = int(netmask).to_bytes(4, "big") + bytes(12)
            else:
                plen = int(netmask)
                mask16 = (((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)).to_bytes(16, "big")
            memcpy(s.netmask, <const char*>mask16, 16)
        if persist_timeout is not None:
            s.persist_timeout = persist_timeout
        if flags is not None:
            s.flags = (<uint32_t>flags) & ~(<uint32_t>SVC_F_GONE)
        if sched is not None:
            ops = <SchedOps*>PyCapsule_GetPointer(sched, b"fastvs.SchedOps")
            old = <SchedOps*>s.sched
            if ops != old:
                if old.done_svc != NULL:
                    old.done_svc(s, self.st.dests)
                s.sched_data = NULL
                s.sched = ops
                s.sched_cursor = -1
                if ops.init_svc != NULL:
                    ops.init_svc(s, self.st.dests)

    cdef _flush_nodest(self):
        """ip_vs_expire_nodest_conn_flush: every entry whose real server is no longer
        available and that controls nothing goes, and then a template left
        controlling nothing. (The kernel runs it from a work queued on removal.)"""
        cdef uint32_t i
        cdef Conn* c
        cdef int pass_
        for pass_ in range(2):
            for i in range(self.st.ct.capacity):
                c = &self.st.ct.conns[i]
                if not (c.in_use & 2) or c.dest < 0 or c.n_control:
                    continue
                if self.st.dests[c.dest].flags & DEST_F_AVAILABLE:
                    continue
                if pass_ == 1 and not (c.flags & CONN_F_TEMPLATE):
                    continue
                conn_expire_now(&self.st, i)
            # the entries' timers run now: templates lose what they controlled
            expire_due(&self.st)

    cdef _dest_changed(self, int svc):
        cdef Service* s = &self.st.svcs[svc]
        cdef SchedOps* ops = <SchedOps*>s.sched
        if ops.dest_changed != NULL:
            ops.dest_changed(s, self.st.dests)

    cdef _check_svc(self, int svc):
        if not 0 <= svc < self.st.nsvcs:
            raise IndexError(f"no service {svc}")

    cdef _check_dest(self, int dest):
        if not 0 <= dest < self.st.ndests:
            raise IndexError(f"no real server {dest}")

    cdef _grow_svcs(self):
        cdef int32_t cap = self.st.cap_svcs * 2 if self.st.cap_svcs else 8
        cdef Service* p = <Service*>realloc(self.st.svcs, cap * sizeof(Service))
        if p == NULL:
            raise MemoryError()
        self.st.svcs = p
        self.st.cap_svcs = cap

    cdef _grow_dests(self):
        cdef int32_t cap = self.st.cap_dests * 2 if self.st.cap_dests else 16
        cdef Dest* p = <Dest*>realloc(self.st.dests, cap * sizeof(Dest))
        if p == NULL:
            raise MemoryError()
        self.st.dests = p
        self.st.cap_dests = cap

    cdef _rehash_svcs(self):
        cdef uint64_t nb = 16
        cdef int32_t i
        cdef uint64_t pos
        cdef uint32_t zero[4]
        cdef int32_t* tbl
        memset(zero, 0, sizeof(zero))
        while nb < <uint64_t>self.st.nsvcs * 4:
            nb <<= 1
        tbl = <int32_t*>calloc(nb, sizeof(int32_t))
        if tbl == NULL:
            raise MemoryError()
        for i in range(self.st.nsvcs):
            if self.st.svcs[i].fwmark or self.st.svcs[i].flags & SVC_F_GONE:
                continue
            pos = fv_hash_key(self.st.svcs[i].addr, zero, self.st.svcs[i].port_be, 0,
                              self.st.svcs[i].proto, self.st.ct.seed) & (nb - 1)
            while tbl[pos]:
                pos = (pos + 1) & (nb - 1)
            tbl[pos] = i + 1
        free(self.st.svc_hash)
        self.st.svc_hash = tbl
        self.st.svc_mask = nb - 1

    # -- connection sync (ip_vs_sync.c) -----------------------------------------------------
    cdef void _sync_free(self):
        if self.st.sync != NULL:
            free(self.st.sync.endtime)
            free(self.st.sync.ev)
            free(self.st.sync)
            self.st.sync = NULL

    def set_sync(self, enabled=True, *, int version=1, int threshold=3, int period=50,
                 int refresh_period=0, int retries=0, persist_mode=False):
        """Make this engine a sync master (the kernel's ``ipvsadm --start-daemon master``
        with its sysctls: sync_version, sync_threshold = (threshold, period),
        sync_refresh_period in seconds, sync_retries, sync_persist_mode): after each
        input packet that reached its transmit it decides, as ip_vs_sync_conn does,
        which connections to send, and keeps them for :meth:`take_sync_events`.
        ``set_sync(None)`` or ``set_sync(False)`` turns it off (the default; records not
        taken are lost). Refused as the kernel's sysctl handlers refuse: threshold <
        period unless period is 0, retries 0..3, version 0 or 1."""
        cdef SyncState* s
        cdef SyncState* old
        if version not in (0, 1):
            raise ValueError(f"sync version must be 0 or 1, not {version}")
        if threshold < 0 or period < 0:
            raise ValueError("sync threshold and period must not be negative")
        if period and threshold >= period:
            raise ValueError(f"sync threshold ({threshold}) must be below the period ({period}), "
                             "or the period 0")
        if not 0 <= retries <= 3:
            raise ValueError(f"sync retries must be 0..3, not {retries}")
        if not 0 <= refresh_period <= 86400 * 365:
            raise ValueError(f"sync refresh period must be 0..31536000 seconds, not {refresh_period}")
        if sizeof(SyncEvent) != 78:
            raise RuntimeError("SyncEvent does not match SYNC_EVENT_DTYPE")
        if enabled is None or not enabled:
            self._sync_free()
            return
        old = self.st.sync
        s = <SyncState*>calloc(1, sizeof(SyncState))
        if s == NULL:
            raise MemoryError()
        s.version = version
        s.threshold = threshold
        s.period = period
        s.refresh_j = <uint64_t>refresh_period * SYNC_HZ
        s.retries = retries
        s.persist_mode = bool(persist_mode)
        if refresh_period:
            if old != NULL and old.endtime != NULL:
                s.endtime = old.endtime
                old.endtime = NULL
            else:
                s.endtime = <uint64_t*>calloc(self.st.ct.capacity, sizeof(uint64_t))
                if s.endtime == NULL:
                    free(s)
                    raise MemoryError()
        if old != NULL:
            # records not yet taken stay
            s.ev, s.nev, s.cap, s.lost = old.ev, old.nev, old.cap, old.lost
            old.ev = NULL
            self._sync_free()
        self.st.sync = s

    @property
    def sync(self):
        """The master's settings (as :meth:`set_sync` takes them), or None when off."""
        cdef SyncState* s = self.st.sync
        if s == NULL:
            return None
        return {"version": s.version, "threshold": s.threshold, "period": s.period,
                "refresh_period": s.refresh_j // SYNC_HZ, "retries": s.retries,
                "persist_mode": bool(s.persist_mode)}

    @property
    def sync_events_lost(self):
        """Records dropped because more than 4M waited between two takes."""
        return self.st.sync.lost if self.st.sync != NULL else 0

    def take_sync_events(self):
        """The records to send since the last call, in order, as an array of
        fastvs.sync.master.SYNC_EVENT_DTYPE (empty when sync is off); then forgets
        them."""
        import numpy as np
        from fastvs.sync.master import SYNC_EVENT_DTYPE
        cdef SyncState* s = self.st.sync
        if s == NULL or s.nev == 0:
            return np.zeros(0, SYNC_EVENT_DTYPE)
        out = np.empty(s.nev, SYNC_EVENT_DTYPE)
        cdef uint8_t[::1] raw = out.view(np.uint8)
        memcpy(&raw[0], s.ev, <size_t>s.nev * sizeof(SyncEvent))
        s.nev = 0
        return out

    def insert_conns(self, rows, int64_t now_ns):
        """Add connections and templates as a backup holds them (``--sync-in``):
        ``rows`` of fastvs.sync.backup.BACKUP_CONN_DTYPE whose ``svc`` and ``real`` are
        this engine's service and real-server indexes (-1: unbound), ``expire_ns`` the
        time left from ``now_ns`` (the engine's clock moves there, never back). Returns
        how many were made; rows it cannot take are counted in ``insert_skipped``."""
        import numpy as np
        from fastvs.sync.backup import BACKUP_CONN_DTYPE
        cdef Py_ssize_t done
        cdef uint64_t counts[3]
        arr = np.ascontiguousarray(rows)
        if arr.dtype != BACKUP_CONN_DTYPE or arr.ndim != 1:
            raise ValueError("rows must be a 1-d array of fastvs.sync.backup.BACKUP_CONN_DTYPE")
        if arr.dtype.itemsize != sizeof(SyncRow):
            raise RuntimeError("SyncRow does not match BACKUP_CONN_DTYPE")
        if not self.st.started or now_ns > self.st.now:
            self.st.now = now_ns
            self.st.started = True
        if len(arr) == 0:
            return 0
        cdef const uint8_t[::1] raw = arr.view(np.uint8)
        cdef Py_ssize_t nrows = len(arr)
        counts[0] = counts[1] = counts[2] = 0
        with nogil:
            done = insert_rows(&self.st, <const SyncRow*>&raw[0], nrows, counts)
        self.insert_skipped += counts[0]
        self.insert_updated += counts[1]
        self.insert_replaced += counts[2]
        return done

    # -- the data path ---------------------------------------------------------------------
    def process(self, uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] caplen,
                const uint32_t[::1] wirelen, const int64_t[::1] ts,
                const uint16_t[::1] linktype, uint8_t[::1] verdict, int32_t[::1] aux=None):
        """Run a batch through the director in place. Returns how many packets are
        to be written out (verdict < 64); ``verdict`` says what happened to each.
        ``aux``, if given, receives each forwarded packet's real server (-1 for none),
        which the output stage needs for direct routing and tunnelling."""
        cdef Py_ssize_t n = off.shape[0]
        cdef Py_ssize_t written
        cdef int32_t* auxp = NULL
        if (caplen.shape[0] != n or wirelen.shape[0] != n or ts.shape[0] != n
                or linktype.shape[0] != n or verdict.shape[0] < n):
            raise ValueError("batch arrays disagree in length")
        if aux is not None:
            if aux.shape[0] < n:
                raise ValueError("aux is shorter than the batch")
            if n:
                auxp = &aux[0]
        if n == 0:
            return 0
        cdef uint8_t* b = &buf[0] if buf.shape[0] else NULL
        with nogil:
            written = dp_run(&self.st, b, buf.shape[0], &off[0], &caplen[0], &wirelen[0],
                             &ts[0], &linktype[0], &verdict[0], auxp, n)
        return written

    def batch_entry(self):
        """:meth:`process`'s body for an I/O backend's own loop: a capsule (named
        ``fastvs.datapath.BatchEntry``) around the C entry, valid while this engine
        lives -- the holder keeps a reference to the engine too."""
        return PyCapsule_New(&self.entry, BATCH_ENTRY_NAME, NULL)

    def dest_table(self):
        """Every real server's address (16 bytes each, IPv4 in the first 4) and family,
        as numpy arrays indexed like ``aux``."""
        import numpy as np
        addrs = np.zeros((max(1, self.st.ndests), 16), dtype=np.uint8)
        fams = np.zeros(max(1, self.st.ndests), dtype=np.uint8)
        cdef int32_t i
        for i in range(self.st.ndests):
            addrs[i] = np.frombuffer((<const uint8_t*>self.st.dests[i].addr)[:16], dtype=np.uint8)
            fams[i] = self.st.dests[i].af
        return addrs, fams

    def advance(self, int64_t now_ns):
        """Move the clock to ``now_ns`` (never backwards) and expire what is due."""
        if not self.st.started or now_ns > self.st.now:
            self.st.now = now_ns
            self.st.started = True
        with nogil:
            expire_due(&self.st)

    # -- reading state -----------------------------------------------------------------------
    @property
    def now(self):
        return self.st.now

    @property
    def capacity(self):
        return self.st.ct.capacity

    @property
    def conn_count(self):
        return self.st.ct.count

    @property
    def entries_dropped(self):
        """Connections the drop_entry defense removed."""
        return self.st.entries_dropped

    def counters(self):
        """Packets per verdict code since the engine was made: {code: count}."""
        return {i: self.st.counts[i] for i in range(V_NCODES) if self.st.counts[i]}

    cdef void _sum_stats(self, int32_t svc, Stats* out):
        cdef int32_t i
        memset(out, 0, sizeof(Stats))
        for i in range(self.st.ndests):
            if svc < 0 or self.st.dests[i].svc == svc:
                out.conns += self.st.dests[i].stats.conns
                out.inpkts += self.st.dests[i].stats.inpkts
                out.outpkts += self.st.dests[i].stats.outpkts
                out.inbytes += self.st.dests[i].stats.inbytes
                out.outbytes += self.st.dests[i].stats.outbytes

    def total_stats(self):
        cdef Stats t
        self._sum_stats(-1, &t)
        return _stats(&t)

    def services(self):
        """Services with their real servers in list order, stats and counters."""
        out = []
        cdef int32_t i, j
        cdef Service* s
        for i in range(self.st.nsvcs):
            s = &self.st.svcs[i]
            if s.flags & SVC_F_GONE:
                continue
            reals = []
            for j in range(s.ndests):
                reals.append(self._dest_info(s.dest_list[j]))
            out.append({
                "index": i,
                "proto": "fwmark" if s.fwmark else PROTO_NAMES[s.proto].lower(),
                "fwmark": s.fwmark,
                "addr": _addr_str(s.addr, s.af),
                "port": _port(s.port_be),
                "af": s.af,
                "scheduler": (<SchedOps*>s.sched).name.decode(),
                "persistent": s.persist_timeout,
                "stats": self._svc_stats(i),
                "reals": reals,
            })
        return out

    cdef dict _svc_stats(self, int32_t svc):
        cdef Stats t
        self._sum_stats(svc, &t)
        return _stats(&t)

    def dest_info(self, int dest):
        self._check_dest(dest)
        return self._dest_info(dest)

    cdef dict _dest_info(self, int32_t di):
        cdef Dest* d = &self.st.dests[di]
        return {
            "index": di,
            "addr": _addr_str(d.addr, d.af),
            "port": _port(d.port_be),
            "af": d.af,
            "fwd": FWD_NAMES[d.fwd],
            "weight": d.weight,
            "activeconns": d.activeconns,
            "inactconns": d.inactconns,
            "persistconns": d.persistconns,
            "available": bool(d.flags & DEST_F_AVAILABLE),
            "overloaded": bool(d.flags & DEST_F_OVERLOAD),
            "u_threshold": d.u_threshold,
            "l_threshold": d.l_threshold,
            "stats": _stats(&d.stats),
        }

    def connections(self):
        """Every live connection (ipvsadm -L -n -c), as dicts; expires in seconds left."""
        out = []
        cdef uint32_t i
        cdef Conn* c
        # every live connection has one timer-heap entry: walk those, not the table
        for i in range(self.st.ct.heap_n):
            c = &self.st.ct.conns[self.st.ct.heap_i[i]]
            if not (c.in_use & 2):
                continue
            out.append(self._conn_info(c))
        return out

    cdef dict _conn_info(self, Conn* c):
        if c.flags & CONN_F_TEMPLATE:
            state = "ASSURED" if c.state & 1 else "NONE"     # ip_vs_ctpl_state_name_table
        else:
            names = STATE_NAMES.get(PROTO_NAMES.get(c.proto, "").lower(), ())
            state = names[c.state] if c.state < len(names) else "ERR!"
        return {
            "proto": PROTO_NAMES.get(c.proto, "IP"),
            "template": bool(c.flags & CONN_F_TEMPLATE),
            "caddr": _addr_str(c.caddr, c.af), "cport": _port(c.cport_be),
            "vaddr": _addr_str(c.vaddr, c.af), "vport": _port(c.vport_be),
            # in the real server's family (cp->daf: ip_vs_conn_seq_show), which for a
            # tunnel may differ from the connection's
            "daddr": _addr_str(c.daddr, self.st.dests[c.dest].af if c.dest >= 0 else c.af),
            "dport": _port(c.dport_be),
            "state": state,
            "expires_ns": max(0, c.expires - self.st.now),
            "dest": c.dest,
            "active": not (c.flags & CONN_F_INACTIVE),
        }

    def lookup(self, str proto, str caddr, int cport, str vaddr, int vport):
        """The connection of client caddr:cport to vaddr:vport, or None."""
        cdef PacketMeta m
        cdef int af = 4, direction = 0
        cdef bytes a = _addr16(caddr, &af)
        cdef bytes b = _addr16(vaddr, &af)
        memset(&m, 0, sizeof(m))
        memcpy(m.saddr, <const char*>a, 16)
        memcpy(m.daddr, <const char*>b, 16)
        m.sport_be = _port_be(cport)
        m.dport_be = _port_be(vport)
        m.proto = PROTO_NUMBERS[proto]
        m.af = af
        cdef uint32_t idx = ct_lookup(&self.st.ct, &m, ct_hash_pkt(&self.st.ct, &m), &direction)
        if idx == CT_NONE or direction != CT_DIR_IN:
            return None
        return self._conn_info(&self.st.ct.conns[idx])
