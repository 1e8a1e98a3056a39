# cython: language_level=3
"""Python wrappers of the checksum helpers, for tests and tools (not hot paths)."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastvs.datapath._csum cimport csum_fold, csum_partial, csum_diff4, csum_diff2, csum_apply


def checksum(const uint8_t[::1] data not None, unsigned long long initial=0):
    """Internet checksum of ``data`` (as stored on the wire, big-endian int)."""
    cdef uint64_t s = initial
    cdef uint16_t c
    if data.shape[0]:
        s = csum_partial(&data[0], data.shape[0], s)
    c = <uint16_t>~csum_fold(s)
    return int.from_bytes((<uint8_t*>&c)[:2], "big")


def update32(int check, unsigned int old, unsigned int new):
    """Incrementally update big-endian checksum ``check`` for a 32-bit word change
    (``old``/``new`` given as big-endian integers, as they read on the wire)."""
    cdef uint16_t c = _be16(check)
    cdef uint32_t o = _be32(old), n = _be32(new)
    c = csum_apply(c, csum_diff4(o, n))
    return int.from_bytes((<uint8_t*>&c)[:2], "big")


def update16(int check, int old, int new):
    cdef uint16_t c = _be16(check)
    c = csum_apply(c, csum_diff2(_be16(old), _be16(new)))
    return int.from_bytes((<uint8_t*>&c)[:2], "big")


cdef uint16_t _be16(unsigned int v):
    cdef uint8_t b[2]
    b[0] = (v >> 8) & 0xff
    b[1] = v & 0xff
    return (<uint16_t*>b)[0]


cdef uint32_t _be32(unsigned int v):
    cdef uint8_t b[4]
    b[0] = (v >> 24) & 0xff
    b[1] = (v >> 16) & 0xff
    b[2] = (v >> 8) & 0xff
    b[3] = v & 0xff
    return (<uint32_t*>b)[0]


def fold(unsigned long long s):
    """csum_fold of a 64-bit accumulator, for tests."""
    return csum_fold(s)
