"""Hash helpers the hashing schedulers share (sh, dh, mh, lblc, lblcr).

``hash_32`` is include/linux/hash.h's multiplicative hash; ``fv_siphash`` and
``fv_hsiphash_u32`` (in _siphash.h) are lib/siphash.c's PRFs as a 64-bit kernel
computes them.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "arpa/inet.h" nogil:
    uint32_t ntohl(uint32_t x)
    uint16_t ntohs(uint16_t x)

cdef extern from "_siphash.h" nogil:
    uint64_t fv_siphash(const uint8_t* data, size_t length, uint64_t k0, uint64_t k1,
                        int c, int d)
    uint32_t fv_hsiphash_u32(uint32_t v, uint64_t k0, uint64_t k1)

cdef enum:
    GOLDEN_RATIO_32 = 0x61C88647


cdef inline uint32_t hash_32(uint32_t val, int bits) noexcept nogil:
    """hash_32(): multiply by the golden ratio, keep the top ``bits`` bits."""
    return <uint32_t>(val * <uint32_t>GOLDEN_RATIO_32) >> (32 - bits)


cdef inline uint32_t addr_fold(const uint32_t* addr, int af) noexcept nogil:
    """The address as the kernel's hashes see it, host order: an IPv4 address, or
    the XOR of an IPv6 address's four words."""
    if af == 6:
        return ntohl(addr[0] ^ addr[1] ^ addr[2] ^ addr[3])
    return ntohl(addr[0])
