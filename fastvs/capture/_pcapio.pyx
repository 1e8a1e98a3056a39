"""Capture file record indexing and writing: classic pcap records and pcapng packet blocks.

Plays the role of libpcap's sf-pcap.c / sf-pcapng.c readers and dumpers, but over a whole
chunk at once: one nogil pass indexes every record header into numpy arrays, one nogil pass
serialises the selected packets of a batch. Rare pcapng blocks (SHB, IDB) are left to Python.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

# -- status codes returned by the index loops ------------------------------------------
ST_NEED_MORE = 0     # stopped at an incomplete record/block; `need` says how big it is
ST_FULL = 1          # output arrays are full; grow them and call again from `stop`
ST_SHB = 2           # pcapng: a Section Header Block starts at `stop` (handled in Python)
ST_IDB = 3           # pcapng: a complete Interface Description Block starts at `stop`
ST_ERR_CAPLEN = -1   # a record's captured length exceeds the limit (aux = caplen)
ST_ERR_BLOCKLEN = -2  # block length < 12 or not a multiple of 4 (aux = length)
ST_ERR_TRAILER = -3  # trailing block length differs from the leading one (aux = trailer)
ST_ERR_IFACE = -4    # EPB names an interface the section does not define (aux = id)
ST_ERR_EPBLEN = -5   # EPB/SPB packet data does not fit in its block (aux = caplen)
ST_ERR_TOOBIG = -6   # block length above the sanity limit (aux = length)

# -- pcapng block types ------------------------------------------------------------------
cdef enum:
    BT_SHB = 0x0A0D0D0A   # Section Header Block (same value in both byte orders)
    BT_IDB = 0x00000001   # Interface Description Block
    BT_SPB = 0x00000003   # Simple Packet Block
    BT_EPB = 0x00000006   # Enhanced Packet Block

cdef int64_t NS_PER_S = 1000000000

cdef enum:
    C_NEED_MORE = 0
    C_FULL = 1
    C_SHB = 2
    C_IDB = 3
    C_ERR_CAPLEN = -1
    C_ERR_BLOCKLEN = -2
    C_ERR_TRAILER = -3
    C_ERR_IFACE = -4
    C_ERR_EPBLEN = -5
    C_ERR_TOOBIG = -6


cdef inline uint32_t ld32(const uint8_t* p, bint big) noexcept nogil:
    # byte loads: the file's byte order, never the host's alignment assumptions
    if big:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


cdef inline void st32(uint8_t* p, uint32_t v, bint big) noexcept nogil:
    if big:
        p[0] = <uint8_t>(v >> 24)
        p[1] = <uint8_t>(v >> 16)
        p[2] = <uint8_t>(v >> 8)
        p[3] = <uint8_t>v
    else:
        p[0] = <uint8_t>v
        p[1] = <uint8_t>(v >> 8)
        p[2] = <uint8_t>(v >> 16)
        p[3] = <uint8_t>(v >> 24)


cdef inline uint32_t pad4(uint32_t n) noexcept nogil:
    return (n + 3) & ~(<uint32_t>3)


cdef struct WalkOut:
    Py_ssize_t n       # records written so far (including those before this call)
    Py_ssize_t stop    # byte offset where the walk stopped
    Py_ssize_t need    # ST_NEED_MORE: total bytes the next record/block needs from `stop`
    int64_t aux        # the offending value on error
    int status


# -- classic pcap --------------------------------------------------------------------------

cdef void pcap_walk(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end, bint big,
                    bint nsec, uint32_t limit, uint32_t* off, uint32_t* caplen,
                    uint32_t* wirelen, int64_t* ts, Py_ssize_t n, Py_ssize_t cap,
                    WalkOut* out) noexcept nogil:
    cdef const uint8_t* h
    cdef uint32_t cl
    cdef int64_t mul = 1 if nsec else 1000
    while True:
        if end - pos < 16:
            out.status = C_NEED_MORE
            out.need = 16
            break
        h = buf + pos
        cl = ld32(h + 8, big)
        if cl > limit:
            out.status = C_ERR_CAPLEN
            out.aux = cl
            break
        if end - pos - 16 < <Py_ssize_t>cl:
            out.status = C_NEED_MORE
            out.need = 16 + <Py_ssize_t>cl
            break
        if n >= cap:
            out.status = C_FULL
            break
        off[n] = <uint32_t>(pos + 16)
        caplen[n] = cl
        wirelen[n] = ld32(h + 12, big)
        ts[n] = <int64_t>ld32(h, big) * NS_PER_S + <int64_t>ld32(h + 4, big) * mul
        n += 1
        pos += 16 + cl
    out.n = n
    out.stop = pos


def index_pcap(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t end, bint big_endian,
               bint nanosecond, uint32_t limit, uint32_t[::1] off, uint32_t[::1] caplen,
               uint32_t[::1] wirelen, int64_t[::1] ts, Py_ssize_t n):
    """Index classic pcap records of ``buf[start:end]`` into the arrays from row ``n`` on.

    Returns ``(n, stop, status, need, aux)``: rows filled, the offset where the walk
    stopped, an ST_* code, the size of the incomplete record at ``stop`` (ST_NEED_MORE)
    and the offending value (errors).
    """
    cdef WalkOut o
    cdef Py_ssize_t cap = off.shape[0]
    if caplen.shape[0] < cap or wirelen.shape[0] < cap or ts.shape[0] < cap:
        raise ValueError("index arrays disagree in length")
    if end > buf.shape[0] or start < 0 or start > end or n < 0 or n > cap:
        raise ValueError("bad index range")
    if buf.shape[0] >= 0xFFFFFFFF:
        raise ValueError("a chunk buffer must stay under 4 GiB")
    memset(&o, 0, sizeof(o))
    o.n = n
    o.stop = start
    if end - start < 16:
        return n, start, ST_NEED_MORE, 16, 0
    with nogil:
        pcap_walk(&buf[0], start, end, big_endian, nanosecond, limit,
                  &off[0] if cap else NULL, &caplen[0] if cap else NULL,
                  &wirelen[0] if cap else NULL, &ts[0] if cap else NULL, n, cap, &o)
    return o.n, o.stop, o.status, o.need, o.aux


# -- pcapng -----------------------------------------------------------------------------------

cdef struct IfTab:
    const uint16_t* linktype   # per global interface
    const uint32_t* limit      # max caplen per global interface
    const int64_t* mul         # ts units -> ns: multiply (base 10, resolution >= 1 ns)
    const int64_t* div         # ... or divide (base 10, finer than 1 ns)
    const int32_t* shift       # ... or base 2: units / 2**shift seconds (-1: not base 2)
    const int64_t* offset      # if_tsoffset in ns
    Py_ssize_t base            # global id of this section's interface 0
    Py_ssize_t count           # interfaces defined in this section so far


cdef inline int64_t units_to_ns(uint64_t t, const IfTab* it, Py_ssize_t g) noexcept nogil:
    cdef int32_t sh = it.shift[g]
    cdef uint64_t frac
    cdef int64_t ns
    if sh >= 0:
        frac = t & ((<uint64_t>1 << sh) - 1)
        if sh > 33:
            # keep frac * 1e9 inside 64 bits: drop the low bits finer than 2**-33 s
            frac >>= (sh - 33)
            ns = <int64_t>(t >> sh) * NS_PER_S + <int64_t>((frac * NS_PER_S) >> 33)
        else:
            ns = <int64_t>(t >> sh) * NS_PER_S + <int64_t>((frac * NS_PER_S) >> sh)
    elif it.div[g] > 1:
        ns = <int64_t>(t // <uint64_t>it.div[g])
    else:
        ns = <int64_t>t * it.mul[g]
    return ns + it.offset[g]


cdef void pcapng_walk(const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end, bint big,
                      const IfTab* it, uint32_t maxblock, uint32_t* off, uint32_t* caplen,
                      uint32_t* wirelen, int64_t* ts, uint16_t* linktype, uint16_t* iface,
                      Py_ssize_t n, Py_ssize_t cap, WalkOut* out) noexcept nogil:
    cdef const uint8_t* h
    cdef uint32_t btype, blen, cl, ifid, room
    cdef Py_ssize_t g
    while True:
        if end - pos < 12:
            out.status = C_NEED_MORE
            out.need = 12
            break
        h = buf + pos
        btype = ld32(h, big)
        if btype == BT_SHB:
            # its length is in the new section's byte order: Python reads it
            out.status = C_SHB
            break
        blen = ld32(h + 4, big)
        if blen < 12 or (blen & 3) != 0:
            out.status = C_ERR_BLOCKLEN
            out.aux = blen
            break
        if blen > maxblock:
            out.status = C_ERR_TOOBIG
            out.aux = blen
            break
        if end - pos < <Py_ssize_t>blen:
            out.status = C_NEED_MORE
            out.need = blen
            break
        if ld32(h + blen - 4, big) != blen:
            out.status = C_ERR_TRAILER
            out.aux = ld32(h + blen - 4, big)
            break
        if btype == BT_EPB:
            if blen < 32:
                out.status = C_ERR_BLOCKLEN
                out.aux = blen
                break
            ifid = ld32(h + 8, big)
            if ifid >= <uint32_t>it.count:
                out.status = C_ERR_IFACE
                out.aux = ifid
                break
            g = it.base + ifid
            cl = ld32(h + 20, big)
            if cl > blen - 32 or pad4(cl) > blen - 32:
                out.status = C_ERR_EPBLEN
                out.aux = cl
                break
            if cl > it.limit[g]:
                out.status = C_ERR_CAPLEN
                out.aux = cl
                break
            if n >= cap:
                out.status = C_FULL
                break
            off[n] = <uint32_t>(pos + 28)
            caplen[n] = cl
            wirelen[n] = ld32(h + 24, big)
            ts[n] = units_to_ns((<uint64_t>ld32(h + 12, big) << 32) | ld32(h + 16, big), it, g)
            linktype[n] = it.linktype[g]
            iface[n] = <uint16_t>g
            n += 1
        elif btype == BT_SPB:
            # no timestamp, interface 0; captured = min(original length, snaplen), and
            # never more than the block's data area
            if blen < 16:
                out.status = C_ERR_BLOCKLEN
                out.aux = blen
                break
            if it.count < 1:
                out.status = C_ERR_IFACE
                out.aux = 0
                break
            g = it.base
            cl = ld32(h + 8, big)
            room = blen - 16
            if cl > room:
                cl = room
            if cl > it.limit[g]:
                cl = it.limit[g]
            if n >= cap:
                out.status = C_FULL
                break
            off[n] = <uint32_t>(pos + 12)
            caplen[n] = cl
            wirelen[n] = ld32(h + 8, big)
            ts[n] = 0
            linktype[n] = it.linktype[g]
            iface[n] = <uint16_t>g
            n += 1
        elif btype == BT_IDB:
            out.status = C_IDB
            break
        # any other block (NRB, ISB, DSB, custom, unknown) is skipped
        pos += blen
    out.n = n
    out.stop = pos


def index_pcapng(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t end, bint big_endian,
                 const uint16_t[::1] if_linktype, const uint32_t[::1] if_limit,
                 const int64_t[::1] if_mul, const int64_t[::1] if_div,
                 const int32_t[::1] if_shift, const int64_t[::1] if_offset,
                 Py_ssize_t if_base, Py_ssize_t if_count, uint32_t max_block,
                 uint32_t[::1] off, uint32_t[::1] caplen, uint32_t[::1] wirelen,
                 int64_t[::1] ts, uint16_t[::1] linktype, uint16_t[::1] iface, Py_ssize_t n):
    """Index pcapng EPB/SPB blocks of ``buf[start:end]``, skipping other blocks.

    Stops at a Section Header Block, at a complete Interface Description Block (both are
    parsed in Python), at an incomplete block, when the arrays are full, or on a bad block.
    Interface ids are section-local in the file and global (``if_base + id``) in ``iface``.
    Returns ``(n, stop, status, need, aux)`` as ``index_pcap`` does.
    """
    cdef WalkOut o
    cdef IfTab it
    cdef Py_ssize_t cap = off.shape[0]
    cdef Py_ssize_t nif = if_linktype.shape[0]
    if (caplen.shape[0] < cap or wirelen.shape[0] < cap or ts.shape[0] < cap
            or linktype.shape[0] < cap or iface.shape[0] < cap):
        raise ValueError("index arrays disagree in length")
    if (if_limit.shape[0] < nif or if_mul.shape[0] < nif or if_div.shape[0] < nif
            or if_shift.shape[0] < nif or if_offset.shape[0] < nif
            or if_base < 0 or if_count < 0 or if_base + if_count > nif or nif > 65536):
        raise ValueError("interface tables disagree")
    if end > buf.shape[0] or start < 0 or start > end or n < 0 or n > cap:
        raise ValueError("bad index range")
    if buf.shape[0] >= 0xFFFFFFFF:
        raise ValueError("a chunk buffer must stay under 4 GiB")
    if end - start < 12:
        return n, start, ST_NEED_MORE, 12, 0
    memset(&o, 0, sizeof(o))
    memset(&it, 0, sizeof(it))
    if nif:
        it.linktype = &if_linktype[0]
        it.limit = &if_limit[0]
        it.mul = &if_mul[0]
        it.div = &if_div[0]
        it.shift = &if_shift[0]
        it.offset = &if_offset[0]
    it.base = if_base
    it.count = if_count
    with nogil:
        pcapng_walk(&buf[0], start, end, big_endian, &it, max_block,
                    &off[0] if cap else NULL, &caplen[0] if cap else NULL,
                    &wirelen[0] if cap else NULL, &ts[0] if cap else NULL,
                    &linktype[0] if cap else NULL, &iface[0] if cap else NULL, n, cap, &o)
    return o.n, o.stop, o.status, o.need, o.aux


# -- writers ----------------------------------------------------------------------------------

cdef int64_t bad_slot(const uint32_t* off, const uint32_t* caplen, const uint8_t* sel,
                      Py_ssize_t n, Py_ssize_t buflen) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if sel[i] and <Py_ssize_t>off[i] + <Py_ssize_t>caplen[i] > buflen:
            return i
    return -1


cdef inline void split_ts(int64_t t, int64_t* sec, int64_t* frac) noexcept nogil:
    # pcap seconds are unsigned: a negative time cannot be written, clamp it to the epoch
    if t < 0:
        t = 0
    sec[0] = t // NS_PER_S
    frac[0] = t - sec[0] * NS_PER_S


def pcap_out_size(const uint32_t[::1] caplen, const uint8_t[::1] sel, bint pcapng):
    """Bytes the selected packets take as pcap records (or pcapng EPBs without options)."""
    cdef Py_ssize_t i
    cdef Py_ssize_t n = caplen.shape[0]
    cdef Py_ssize_t total = 0
    if sel.shape[0] != n:
        raise ValueError("selection and caplen disagree in length")
    with nogil:
        if pcapng:
            for i in range(n):
                if sel[i]:
                    total += 32 + pad4(caplen[i])
        else:
            for i in range(n):
                if sel[i]:
                    total += 16 + caplen[i]
    return total


def write_pcap(uint8_t[::1] out, const uint8_t[::1] buf, const uint32_t[::1] off,
               const uint32_t[::1] caplen, const uint32_t[::1] wirelen,
               const int64_t[::1] ts, const uint8_t[::1] sel, bint big_endian,
               bint nanosecond):
    """Serialise the selected packets as classic pcap records into ``out``.

    ``out`` must be exactly ``pcap_out_size(caplen, sel, False)`` bytes. Returns the number
    of records written; raises IndexError naming the first packet outside ``buf``.
    """
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t i, pos = 0, written = 0
    cdef int64_t sec, frac, bad
    cdef int64_t div = 1 if nanosecond else 1000
    cdef uint8_t* o
    cdef const uint8_t* b = &buf[0] if buf.shape[0] else NULL
    if (caplen.shape[0] != n or wirelen.shape[0] != n or ts.shape[0] != n
            or sel.shape[0] != n):
        raise ValueError("batch arrays disagree in length")
    if out.shape[0] != pcap_out_size(caplen, sel, False):
        raise ValueError("output buffer has the wrong size")
    if n == 0:
        return 0
    with nogil:
        bad = bad_slot(&off[0], &caplen[0], &sel[0], n, buf.shape[0])
    if bad >= 0:
        raise IndexError(f"packet {bad}: offset+caplen runs past the batch buffer")
    if out.shape[0] == 0:
        return 0
    o = &out[0]
    with nogil:
        for i in range(n):
            if not sel[i]:
                continue
            split_ts(ts[i], &sec, &frac)
            st32(o + pos, <uint32_t>sec, big_endian)
            st32(o + pos + 4, <uint32_t>(frac // div), big_endian)
            st32(o + pos + 8, caplen[i], big_endian)
            st32(o + pos + 12, wirelen[i], big_endian)
            memcpy(o + pos + 16, b + off[i], caplen[i])
            pos += 16 + caplen[i]
            written += 1
    return written


def write_pcapng(uint8_t[::1] out, const uint8_t[::1] buf, const uint32_t[::1] off,
                 const uint32_t[::1] caplen, const uint32_t[::1] wirelen,
                 const int64_t[::1] ts, const uint16_t[::1] iface, const uint8_t[::1] sel,
                 const int64_t[::1] if_div, bint big_endian):
    """Serialise the selected packets as pcapng Enhanced Packet Blocks into ``out``.

    ``if_div[k]`` is nanoseconds per timestamp unit of output interface ``k`` (1000 for
    the default microseconds); every selected ``iface`` must be below ``len(if_div)``.
    """
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t nif = if_div.shape[0]
    cdef Py_ssize_t i, pos = 0, written = 0
    cdef int64_t t, d, bad
    cdef uint64_t units
    cdef uint32_t cl, blen
    cdef uint8_t* o
    cdef const uint8_t* b = &buf[0] if buf.shape[0] else NULL
    if (caplen.shape[0] != n or wirelen.shape[0] != n or ts.shape[0] != n
            or iface.shape[0] != n or sel.shape[0] != n):
        raise ValueError("batch arrays disagree in length")
    if out.shape[0] != pcap_out_size(caplen, sel, True):
        raise ValueError("output buffer has the wrong size")
    if n == 0:
        return 0
    with nogil:
        bad = bad_slot(&off[0], &caplen[0], &sel[0], n, buf.shape[0])
        if bad < 0:
            for i in range(n):
                if sel[i] and iface[i] >= nif:
                    bad = -2 - i
                    break
    if bad >= 0:
        raise IndexError(f"packet {bad}: offset+caplen runs past the batch buffer")
    if bad < -1:
        raise IndexError(f"packet {-2 - bad}: interface has no IDB")
    if out.shape[0] == 0:
        return 0
    o = &out[0]
    with nogil:
        for i in range(n):
            if not sel[i]:
                continue
            cl = caplen[i]
            blen = 32 + pad4(cl)
            # two's complement for a time before the epoch: the reader's int64 cast
            # gives it back unchanged (pcapng timestamps are 64-bit unsigned units)
            t = ts[i]
            d = if_div[iface[i]]
            # the common resolutions get a constant divisor (a multiply, not an idiv)
            if d == 1000:
                units = <uint64_t>(t // 1000)
            elif d == 1:
                units = <uint64_t>t
            else:
                units = <uint64_t>(t // d)
            st32(o + pos, BT_EPB, big_endian)
            st32(o + pos + 4, blen, big_endian)
            st32(o + pos + 8, iface[i], big_endian)
            st32(o + pos + 12, <uint32_t>(units >> 32), big_endian)
            st32(o + pos + 16, <uint32_t>units, big_endian)
            st32(o + pos + 20, cl, big_endian)
            st32(o + pos + 24, wirelen[i], big_endian)
            memcpy(o + pos + 28, b + off[i], cl)
            # zero the padding so the output is deterministic
            memset(o + pos + 28 + cl, 0, pad4(cl) - cl)
            st32(o + pos + blen - 4, blen, big_endian)
            pos += blen
            written += 1
    return written
