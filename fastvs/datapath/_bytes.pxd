# cython: language_level=3
"""Big-endian loads and stores on raw bytes (unaligned-safe through memcpy)."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy


cdef inline uint16_t ld16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t ld32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void st16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


# Raw (wire order) loads: the value keeps network byte order in memory layout.
cdef inline uint16_t ldraw16(const uint8_t* p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline uint32_t ldraw32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline void straw16(uint8_t* p, uint16_t v) noexcept nogil:
    memcpy(p, &v, 2)


cdef inline void straw32(uint8_t* p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)
