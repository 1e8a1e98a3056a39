# cython: language_level=3
"""Internet checksums: full (RFC 1071) and incremental (RFC 1624), on raw bytes.

All words are loaded in wire order without swapping: the one's complement sum does not
depend on byte order, so the result can be stored back as it is (as the kernel does
with its __be16/__sum16 types).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from fastvs.datapath._bytes cimport ldraw16, ldraw32


cdef inline uint16_t csum_fold(uint64_t s) noexcept nogil:
    """Fold a 64-bit one's complement accumulator to 16 bits (end-around carry):
    the two halves added with their carry, then the 32-bit sum plus itself rotated
    by 16 leaves the folded sum in the top half (the kernel's csum_fold). Gives 0
    only for 0, as a step-by-step fold does."""
    cdef uint32_t lo = <uint32_t>s
    cdef uint32_t t = lo + <uint32_t>(s >> 32)
    t += t < lo
    t += (t >> 16) | (t << 16)
    return <uint16_t>(t >> 16)


cdef inline uint64_t ldraw16_pad(const uint8_t* p) noexcept nogil:
    cdef uint8_t w[2]
    w[0] = p[0]
    w[1] = 0
    return ldraw16(w)


cdef inline uint64_t csum_partial(const uint8_t* p, Py_ssize_t n, uint64_t s) noexcept nogil:
    """Add n bytes to the accumulator s as 16-bit words (an odd byte is padded)."""
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s += ldraw32(p + i)
        i += 4
    if i + 2 <= n:
        s += ldraw16(p + i)
        i += 2
    if i < n:
        # the odd last byte is the high byte of a zero-padded word in wire order
        s += ldraw16_pad(p + i)
    return s


cdef inline uint64_t csum_add64(uint64_t s, uint64_t w) noexcept nogil:
    """s + w with the end-around carry (an add and an add-with-carry)."""
    s += w
    return s + (s < w)


cdef inline uint64_t csum_block(const uint8_t* p, Py_ssize_t n, uint64_t s) noexcept nogil:
    """csum_partial for a long run (a whole TCP/UDP segment): 64-bit loads added with
    the end-around carry, four per round, the last bytes by csum_partial. The result
    folds with csum_fold to the same sum as csum_partial's."""
    cdef uint64_t w[4]
    cdef Py_ssize_t i = 0
    while i + 32 <= n:
        memcpy(w, p + i, 32)
        s = csum_add64(csum_add64(s, w[0]), w[1])
        s = csum_add64(csum_add64(s, w[2]), w[3])
        i += 32
    while i + 8 <= n:
        memcpy(w, p + i, 8)
        s = csum_add64(s, w[0])
        i += 8
    # 32 bits + carry: room for csum_partial's plain adds of the tail
    s = <uint64_t><uint32_t>s + (s >> 32)
    return csum_partial(p + i, n - i, s)


cdef inline uint16_t ip_send_check(uint8_t* iph, uint32_t hlen) noexcept nogil:
    """Recompute the IPv4 header checksum in place (the kernel's ip_send_check)."""
    iph[10] = 0
    iph[11] = 0
    cdef uint16_t c = <uint16_t>(~csum_fold(csum_partial(iph, hlen, 0)))
    iph[10] = (<uint8_t*>&c)[0]
    iph[11] = (<uint8_t*>&c)[1]
    return c


cdef inline bint ip_csum_ok(const uint8_t* iph, uint32_t hlen) noexcept nogil:
    """ip_fast_csum(iph) == 0: the header sums to all ones."""
    cdef uint64_t s
    if hlen == 20:
        s = (<uint64_t>ldraw32(iph) + ldraw32(iph + 4) + ldraw32(iph + 8)
             + ldraw32(iph + 12) + ldraw32(iph + 16))
        return csum_fold(s) == 0xffff
    return csum_fold(csum_partial(iph, hlen, 0)) == 0xffff


cdef inline uint64_t csum_diff4(uint32_t old, uint32_t new) noexcept nogil:
    """Accumulator delta for replacing one 32-bit word (RFC 1624: ~m + m')."""
    return <uint64_t>(~old & 0xffffffffULL) + new


cdef inline uint64_t csum_diff2(uint16_t old, uint16_t new) noexcept nogil:
    return <uint64_t>(<uint16_t>~old) + new


cdef inline uint16_t csum_apply(uint16_t check, uint64_t diff) noexcept nogil:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with the delta already summed."""
    return <uint16_t>~csum_fold(<uint64_t>(<uint16_t>~check) + diff)


cdef inline uint16_t be16(uint16_t v) noexcept nogil:
    return <uint16_t>((v >> 8) | (v << 8))


cdef inline uint64_t csum_diff_addr(const uint32_t* old, const uint32_t* new, int af) noexcept nogil:
    """Accumulator delta for replacing an address (one word for IPv4, four for IPv6)."""
    cdef uint64_t d = csum_diff4(old[0], new[0])
    if af == 6:
        d += csum_diff4(old[1], new[1]) + csum_diff4(old[2], new[2]) + csum_diff4(old[3], new[3])
    return d


cdef inline uint64_t pseudo_sum(const uint8_t* iph, int af, uint32_t l4len,
                                uint8_t proto) noexcept nogil:
    """The pseudo-header's part of a transport checksum, as the header stands now."""
    cdef uint64_t s
    if af == 4:
        s = <uint64_t>ldraw32(iph + 12) + ldraw32(iph + 16)
    else:
        s = csum_partial(iph + 8, 32, 0)
    return s + be16(<uint16_t>proto) + be16(<uint16_t>l4len) + be16(<uint16_t>(l4len >> 16))
