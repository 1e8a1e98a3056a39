# cython: language_level=3
"""Fragments. IPVS sees whole datagrams (the kernel reassembles first); a capture
holds the fragments as they came, and only the first carries the ports. So the first
fragment of a balanced datagram is remembered, by (source, destination, id, protocol),
for ipfrag_time (30 s), and its later fragments get the same addresses rewritten and
count with the datagram, once (the role of ip_defrag before ip_vs_in).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy
from fastvs.datapath._types cimport *
from fastvs.datapath._conntab cimport addr_eq, fv_hash_key, CT_DIR_IN
from fastvs.datapath._state cimport (EngineState, FragEntry, NS, FRAG_SETS, FRAG_WAYS,
                                     FRAG_TIMEOUT_S)
from fastvs.datapath._conn cimport count_in, count_out
from fastvs.datapath._proto cimport nat_dnat, nat_snat


cdef inline FragEntry* frag_set(EngineState* st, const PacketMeta* m) noexcept nogil:
    cdef uint64_t h = fv_hash_key(m.saddr, m.daddr, <uint16_t>m.frag_id,
                                  <uint16_t>(m.frag_id >> 16), m.proto, st.ct.seed)
    return &st.frags[(h % FRAG_SETS) * FRAG_WAYS]


cdef inline bint frag_match(const FragEntry* e, const PacketMeta* m, int64_t now) noexcept nogil:
    return (e.used and e.expires > now and e.id == m.frag_id and e.proto == m.proto
            and addr_eq(e.saddr, m.saddr) and addr_eq(e.daddr, m.daddr))


cdef inline cold_void frag_remember(EngineState* st, const PacketMeta* m, uint32_t idx,
                                    int direction) noexcept nogil:
    """A first fragment was balanced: its later fragments will follow it."""
    cdef FragEntry* e = frag_set(st, m)
    cdef FragEntry* slot = e
    cdef int w
    if st.frags == NULL:
        return
    for w in range(FRAG_WAYS):
        if frag_match(&e[w], m, st.now) or not e[w].used or e[w].expires <= st.now:
            slot = &e[w]
            break
        if e[w].expires < slot.expires:
            slot = &e[w]            # the set is full: the oldest entry gives way
    memcpy(slot.saddr, m.saddr, 16)
    memcpy(slot.daddr, m.daddr, 16)
    slot.id = m.frag_id
    slot.proto = m.proto
    slot.conn = idx
    slot.conn_hash = st.ct.conns[idx].hash
    slot.direction = direction
    slot.expires = st.now + FRAG_TIMEOUT_S * NS
    slot.used = 1


cdef inline int frag_follow(EngineState* st, uint8_t* p, PacketMeta* m) noexcept nogil:
    """A later fragment: rewrite its addresses as its first fragment's were."""
    cdef FragEntry* e
    cdef Conn* c
    cdef int w
    if st.frags == NULL:
        return V_PASS_FRAGMENT
    e = frag_set(st, m)
    for w in range(FRAG_WAYS):
        if frag_match(&e[w], m, st.now):
            c = &st.ct.conns[e[w].conn]
            if not (c.in_use & 2) or c.hash != e[w].conn_hash or c.fwd != FWD_MASQ:
                return V_PASS_FRAGMENT
            if not st.keep_ttl and m.ttl <= 1:
                return V_DROP_TTL
            # the reassembled datagram counts once, with its whole length
            if e[w].direction == CT_DIR_IN:
                count_in(st, c, m.l3len - (m.l4off - m.l3off), False)
                nat_dnat(p, m, c, not st.keep_ttl)
                return V_FWD_IN
            count_out(st, c, m.l3len - (m.l4off - m.l3off), False)
            nat_snat(p, m, c, not st.keep_ttl)
            return V_FWD_OUT
    return V_PASS_FRAGMENT
