/* Keyed hash for the connection table.
 *
 * The kernel keys its connection hash with a random value chosen at boot
 * (ip_vs_conn_rnd) so that nobody outside can pick colliding keys; fastvs does the
 * same with a per-engine 64-bit seed mixed through a 128-bit multiply (the "mum"
 * step of wyhash). It is fast enough to run per packet and, with a secret seed,
 * an attacker cannot aim many keys at one bucket.
 */
#ifndef FASTVS_HASH_H
#define FASTVS_HASH_H
#include <stdint.h>
#include <string.h>

static inline uint64_t fv_mum(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* The IPv4 form: both addresses in one word, two multiplies. */
static inline uint64_t fv_hash_v4(uint32_t a1, uint32_t a2, uint16_t p1, uint16_t p2,
                                  uint8_t proto, uint64_t seed)
{
    const uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL;
    const uint64_t k2 = 0x8ebc6af09c88c6e3ULL, k3 = 0x589965cc75374cc3ULL;
    uint64_t v = ((uint64_t)a1 << 32) | a2;
    uint64_t w = ((uint64_t)p1 << 24) | ((uint64_t)p2 << 8) | proto;
    return fv_mum(fv_mum(v ^ seed ^ k0, w ^ k1) ^ k2, seed ^ k3);
}

/* Hash of a connection key: two 16-byte addresses, two ports, the protocol. */
static inline uint64_t fv_hash_key(const uint32_t *a1, const uint32_t *a2,
                                   uint16_t p1, uint16_t p2, uint8_t proto,
                                   uint64_t seed)
{
    const uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL;
    const uint64_t k2 = 0x8ebc6af09c88c6e3ULL, k3 = 0x589965cc75374cc3ULL;
    if (!(a1[1] | a1[2] | a1[3] | a2[1] | a2[2] | a2[3]))
        /* IPv4 (or any key with only the first address words set) */
        return fv_hash_v4(a1[0], a2[0], p1, p2, proto, seed);
    uint64_t w0 = ((uint64_t)a1[0] << 32) | a1[1];
    uint64_t w1 = ((uint64_t)a1[2] << 32) | a1[3];
    uint64_t w2 = ((uint64_t)a2[0] << 32) | a2[1];
    uint64_t w3 = ((uint64_t)a2[2] << 32) | a2[3];
    uint64_t w4 = ((uint64_t)p1 << 24) | ((uint64_t)p2 << 8) | proto;
    uint64_t h = fv_mum(w0 ^ seed ^ k0, w1 ^ k1);
    h = fv_mum(h ^ w2 ^ k2, w3 ^ seed ^ k3);
    return fv_mum(h ^ w4 ^ k1, seed ^ k0);
}

/* Two 16-byte addresses equal: two 8-byte compares, one branch. */
static inline int fv_eq16(const void *a, const void *b)
{
    uint64_t x[2], y[2];
    memcpy(x, a, 16);
    memcpy(y, b, 16);
    return ((x[0] ^ y[0]) | (x[1] ^ y[1])) == 0;
}

#endif
