/* SipHash-c-d (Aumasson & Bernstein), the PRF behind the kernel's siphash() and,
 * on 64-bit kernels, hsiphash() (SipHash-1-3 whose 64-bit result is truncated to
 * 32 bits; lib/siphash.c).  The message is read as little-endian 64-bit words;
 * the key is two 64-bit words.  Written for fastvs; checked against the
 * reference test vectors in tests/test_sched_mh.py. */
#ifndef FASTVS_SIPHASH_H
#define FASTVS_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define FV_ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline void fv_sipround(uint64_t v[4])
{
    v[0] += v[1]; v[1] = FV_ROTL64(v[1], 13); v[1] ^= v[0]; v[0] = FV_ROTL64(v[0], 32);
    v[2] += v[3]; v[3] = FV_ROTL64(v[3], 16); v[3] ^= v[2];
    v[0] += v[3]; v[3] = FV_ROTL64(v[3], 21); v[3] ^= v[0];
    v[2] += v[1]; v[1] = FV_ROTL64(v[1], 17); v[1] ^= v[2]; v[2] = FV_ROTL64(v[2], 32);
}

static inline uint64_t fv_load_le64(const uint8_t *p, size_t n)
{
    uint64_t m = 0;
    size_t i;
    for (i = 0; i < n; i++)
        m |= (uint64_t)p[i] << (8 * i);
    return m;
}

/* SipHash with c compression rounds and d finalization rounds over len bytes. */
static inline uint64_t fv_siphash(const uint8_t *data, size_t len, uint64_t k0,
                                  uint64_t k1, int c, int d)
{
    uint64_t v[4];
    uint64_t m;
    size_t off = 0;
    int r;

    v[0] = 0x736f6d6570736575ULL ^ k0;
    v[1] = 0x646f72616e646f6dULL ^ k1;
    v[2] = 0x6c7967656e657261ULL ^ k0;
    v[3] = 0x7465646279746573ULL ^ k1;
    for (; off + 8 <= len; off += 8) {
        m = fv_load_le64(data + off, 8);
        v[3] ^= m;
        for (r = 0; r < c; r++)
            fv_sipround(v);
        v[0] ^= m;
    }
    /* last block: the remaining bytes, and the length mod 256 in the top byte */
    m = fv_load_le64(data + off, len - off) | ((uint64_t)(len & 0xff) << 56);
    v[3] ^= m;
    for (r = 0; r < c; r++)
        fv_sipround(v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for (r = 0; r < d; r++)
        fv_sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* The kernel's hsiphash(&v, 4, key) for a host-order u32 on a 64-bit
 * little-endian machine: SipHash-1-3 of the four bytes of v, low 32 bits. */
static inline uint32_t fv_hsiphash_u32(uint32_t v, uint64_t k0, uint64_t k1)
{
    uint8_t b[4];
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
    return (uint32_t)fv_siphash(b, 4, k0, k1, 1, 3);
}

#endif
