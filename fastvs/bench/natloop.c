/*
 * natloop.c -- the hand-written C reference for fastvs's benchmarks.
 *
 * It does the minimum an IPVS director in NAT mode must do per packet on the
 * established-connection fast path, on the same bytes fastvs processes:
 *
 *   parse Ethernet / IPv4 (version, IHL, first fragment) / TCP or UDP
 *   -> look the 5-tuple up in an open-addressing hash table
 *      (keyed multiply-xorshift hash, linear probing, power-of-two size,
 *       load factor <= 0.5)
 *   -> rewrite destination address and port in place
 *   -> update the IPv4 header checksum and the TCP/UDP checksum
 *      incrementally (RFC 1624, eqn. 3), never over the payload.
 *
 * Nothing else: no TTL decrement, no state machine, no timeouts, no counters
 * per service.  A UDP checksum of 0 ("none") is left at 0.
 *
 * Usage:
 *   natloop mem  IN.pcap FLOWS [--passes N]
 *   natloop file IN.pcap FLOWS OUT.pcap [--passes N]
 *
 * IN.pcap  classic pcap, microsecond timestamps, little-endian, Ethernet.
 * FLOWS    the established flows, built into the table before any timing:
 *            8 bytes  "NATFLOW1"
 *            8 bytes  record count, little-endian
 *            count x 20-byte records, addresses and ports in network order:
 *              saddr[4] daddr[4] sport[2] dport[2] rip[4] rport[2] proto[1] pad[1]
 *
 * mem:  the capture is loaded and indexed once; each pass restores the
 *       pristine bytes (that memcpy is timed separately: the memcpy floor),
 *       then the timed loop processes every packet in place.
 * file: each pass reads IN.pcap with fread into a big buffer, processes the
 *       complete records, writes them with fwrite to OUT.pcap; the time runs
 *       from fopen to fclose (the files are in the page cache: an untimed
 *       copy runs first).  A plain fread/fwrite copy of the file, timed the
 *       same way and alternating with the NAT passes, is the file-copy floor.
 *
 * Output: one JSON line on stdout.  Exit 0 on success, 2 on bad input
 * (bad magic, unsupported pcap variant, truncated or oversized record, bad
 * flows file), 1 on usage or I/O errors.
 *
 * Build: cc -O2 -march=native -o natloop natloop.c   (no deps beyond libc)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PCAP_MAGIC_US_LE 0xa1b2c3d4u /* as read little-endian */
#define PCAP_MAGIC_US_BE 0xd4c3b2a1u
#define PCAP_MAGIC_NS_LE 0xa1b23c4du
#define PCAP_MAGIC_NS_BE 0x4d3cb2a1u
#define LINKTYPE_ETHERNET 1u
#define MAX_RECORD (1u << 18)    /* 256 KiB: larger than any snaplen in use */
#define CHUNK (8u << 20)         /* file-mode I/O buffer */

enum { RES_REWRITTEN = 0, RES_MISS = 1, RES_PASS = 2 };

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("natloop: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* ---------------------------------------------------------------- table -- */

/* Addresses and ports are kept exactly as they sit in the packet (raw loads in
 * host order of network bytes), so a rewrite is a plain store and the
 * checksum arithmetic, being byte-order independent (RFC 1071), needs no
 * swapping. k1 == 0 marks an empty slot (proto is never 0 in a used one). */
struct entry {
    uint64_t k0;   /* saddr | daddr << 32 */
    uint64_t k1;   /* sport | dport << 16 | proto << 32 */
    uint32_t rip;
    uint16_t rport;
    uint16_t pad;
};

struct table {
    struct entry *slots;
    uint64_t mask;
    uint64_t seed;
    uint64_t used;
};

static inline uint64_t hash_key(uint64_t k0, uint64_t k1, uint64_t seed)
{
    uint64_t h = (k0 ^ seed) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 32;
    h = (h ^ k1) * 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

static inline const struct entry *table_find(const struct table *t, uint64_t k0, uint64_t k1)
{
    uint64_t i = hash_key(k0, k1, t->seed) & t->mask;
    for (;;) {
        const struct entry *e = &t->slots[i];
        if (e->k1 == k1 && e->k0 == k0)
            return e;
        if (e->k1 == 0)
            return NULL;
        i = (i + 1) & t->mask;
    }
}

static void table_put(struct table *t, uint64_t k0, uint64_t k1, uint32_t rip, uint16_t rport)
{
    uint64_t i = hash_key(k0, k1, t->seed) & t->mask;
    for (;;) {
        struct entry *e = &t->slots[i];
        if (e->k1 == 0) {
            e->k0 = k0;
            e->k1 = k1;
            t->used++;
            break;
        }
        if (e->k1 == k1 && e->k0 == k0)
            break; /* duplicate: the last one wins */
        i = (i + 1) & t->mask;
    }
    t->slots[i].rip = rip;
    t->slots[i].rport = rport;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&s, sizeof s, 1, f) != 1)
            s = 0;
        fclose(f);
    }
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)&s;
    }
    return s | 1;
}

static void load_flows(const char *path, struct table *t)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(1, "%s: %s", path, strerror(errno));
    uint8_t hdr[16];
    if (fread(hdr, 1, 16, f) != 16 || memcmp(hdr, "NATFLOW1", 8) != 0)
        die(2, "%s: not a flows file (bad magic)", path);
    uint64_t n = (uint64_t)le32(hdr + 8) | (uint64_t)le32(hdr + 12) << 32;
    if (n > (1ull << 28))
        die(2, "%s: too many flows (%llu)", path, (unsigned long long)n);
    uint64_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    t->slots = calloc(cap, sizeof *t->slots);
    if (!t->slots)
        die(1, "out of memory for %llu slots", (unsigned long long)cap);
    t->mask = cap - 1;
    t->seed = random_seed();
    t->used = 0;
    uint8_t rec[20];
    for (uint64_t i = 0; i < n; i++) {
        if (fread(rec, 1, 20, f) != 20)
            die(2, "%s: truncated at flow %llu of %llu", path, (unsigned long long)i,
                (unsigned long long)n);
        uint8_t proto = rec[18];
        if (proto == 0)
            die(2, "%s: flow %llu has protocol 0", path, (unsigned long long)i);
        uint64_t k0 = (uint64_t)ld32(rec) | (uint64_t)ld32(rec + 4) << 32;
        uint64_t k1 = (uint64_t)ld16(rec + 8) | (uint64_t)ld16(rec + 10) << 16 | (uint64_t)proto << 32;
        table_put(t, k0, k1, ld32(rec + 12), ld16(rec + 16));
    }
    fclose(f);
}

/* ------------------------------------------------------------ one packet -- */

static inline uint32_t fold(uint32_t s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return s;
}

static inline int nat_one(uint8_t *p, uint32_t len, const struct table *t)
{
    if (len < 14 + 20)
        return RES_PASS;
    if (ld16(p + 12) != ld16((const uint8_t *)"\x08\x00"))
        return RES_PASS;
    uint8_t *ip = p + 14;
    uint8_t vihl = ip[0];
    if ((vihl >> 4) != 4)
        return RES_PASS;
    uint32_t ihl = (uint32_t)(vihl & 15) * 4;
    if (ihl < 20 || 14 + ihl > len)
        return RES_PASS;
    if ((ip[6] & 0x1f) | ip[7]) /* not the first fragment: no L4 header */
        return RES_PASS;
    uint8_t proto = ip[9];
    uint8_t *l4 = ip + ihl;
    uint32_t l4len = len - 14 - ihl;
    uint32_t csoff;
    if (proto == 6) {
        if (l4len < 18)
            return RES_PASS;
        csoff = 16;
    } else if (proto == 17) {
        if (l4len < 8)
            return RES_PASS;
        csoff = 6;
    } else {
        return RES_PASS;
    }
    uint32_t daddr = ld32(ip + 16);
    uint16_t dport = ld16(l4 + 2);
    uint64_t k0 = (uint64_t)ld32(ip + 12) | (uint64_t)daddr << 32;
    uint64_t k1 = (uint64_t)ld16(l4) | (uint64_t)dport << 16 | (uint64_t)proto << 32;
    const struct entry *e = table_find(t, k0, k1);
    if (!e)
        return RES_MISS;
    uint32_t rip = e->rip;
    uint16_t rport = e->rport;

    /* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') */
    uint32_t addr_delta = (uint16_t)~daddr + (uint16_t)~(daddr >> 16) + (rip & 0xffff) + (rip >> 16);
    uint16_t ipsum = ld16(ip + 10);
    st16(ip + 10, (uint16_t)~fold((uint16_t)~ipsum + addr_delta));
    uint16_t l4sum = ld16(l4 + csoff);
    if (proto == 6 || l4sum != 0) {
        uint16_t n = (uint16_t)~fold((uint16_t)~l4sum + addr_delta + (uint16_t)~dport + rport);
        if (proto == 17 && n == 0)
            n = 0xffff;
        st16(l4 + csoff, n);
    }
    st32(ip + 16, rip);
    st16(l4 + 2, rport);
    return RES_REWRITTEN;
}

/* ----------------------------------------------------------------- pcap -- */

static void check_global_header(const uint8_t *g, size_t n, const char *path)
{
    if (n < 24)
        die(2, "%s: too short for a pcap global header (%zu bytes)", path, n);
    uint32_t magic = le32(g);
    if (magic == PCAP_MAGIC_US_BE || magic == PCAP_MAGIC_NS_LE || magic == PCAP_MAGIC_NS_BE)
        die(2, "%s: unsupported pcap variant (magic 0x%08x): only microsecond little-endian", path,
            magic);
    if (magic != PCAP_MAGIC_US_LE)
        die(2, "%s: not a classic pcap file (bad magic 0x%08x)", path, magic);
    if ((g[4] | g[5] << 8) != 2)
        die(2, "%s: unsupported pcap version %u.%u", path, g[4] | g[5] << 8, g[6] | g[7] << 8);
    uint32_t linktype = le32(g + 20) & 0x0fffffff;
    if (linktype != LINKTYPE_ETHERNET)
        die(2, "%s: unsupported link type %u (only Ethernet)", path, linktype);
}

struct counts { uint64_t res[3]; };

static void emit(const char *mode, uint64_t packets, uint64_t flows, int passes, double seconds,
                 double best, double memcpy_s, double filecopy_s, uint64_t bytes,
                 const struct counts *c, const char *extra)
{
    double total = (double)packets * passes;
    printf("{\"mode\": \"%s\", \"packets\": %llu, \"flows\": %llu, \"passes\": %d, "
           "\"seconds\": %.9f, \"mpps\": %.4f, \"ns_per_pkt\": %.3f, \"best_mpps\": %.4f, "
           "\"memcpy_mpps_equiv\": %.4f",
           mode, (unsigned long long)packets, (unsigned long long)flows, passes, seconds,
           seconds > 0 ? total / seconds / 1e6 : 0.0, total > 0 ? seconds * 1e9 / total : 0.0,
           best > 0 ? (double)packets / best / 1e6 : 0.0,
           memcpy_s > 0 ? total / memcpy_s / 1e6 : 0.0);
    if (filecopy_s > 0)
        printf(", \"filecopy_mpps_equiv\": %.4f", total / filecopy_s / 1e6);
    printf(", \"bytes\": %llu, \"rewritten\": %llu, \"missed\": %llu, \"passed\": %llu%s}\n",
           (unsigned long long)bytes, (unsigned long long)c->res[RES_REWRITTEN],
           (unsigned long long)c->res[RES_MISS], (unsigned long long)c->res[RES_PASS], extra);
}

/* ------------------------------------------------------------- mem mode -- */

static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(1, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        die(1, "out of memory");
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf)
                die(1, "out of memory");
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f))
        die(1, "%s: read error", path);
    fclose(f);
    *len = n;
    return buf;
}

static int run_mem(const char *in, const struct table *t, int passes)
{
    size_t len;
    uint8_t *orig = read_whole(in, &len);
    check_global_header(orig, len, in);

    /* index the records once, as fastvs does for a capture in memory */
    size_t cap = 1024, n = 0;
    uint64_t *off = malloc(cap * sizeof *off);
    uint32_t *plen = malloc(cap * sizeof *plen);
    if (!off || !plen)
        die(1, "out of memory");
    size_t pos = 24;
    while (pos < len) {
        if (len - pos < 16)
            die(2, "%s: truncated record header at offset %zu", in, pos);
        uint32_t incl = le32(orig + pos + 8);
        if (incl > MAX_RECORD)
            die(2, "%s: record at offset %zu claims %u bytes", in, pos, incl);
        if (len - pos - 16 < incl)
            die(2, "%s: truncated record at offset %zu", in, pos);
        if (n == cap) {
            cap *= 2;
            off = realloc(off, cap * sizeof *off);
            plen = realloc(plen, cap * sizeof *plen);
            if (!off || !plen)
                die(1, "out of memory");
        }
        off[n] = pos + 16;
        plen[n] = incl;
        n++;
        pos += 16 + (size_t)incl;
    }

    uint8_t *work = malloc(len ? len : 1);
    if (!work)
        die(1, "out of memory");
    memset(work, 0, len); /* fault the pages in before anything is timed */
    double total = 0, best = 0, mc = 0;
    struct counts c = {{0, 0, 0}};
    for (int k = 0; k < passes; k++) {
        double t0 = now_s();
        memcpy(work, orig, len); /* restore the pristine bytes; timed: the floor */
        double t1 = now_s();
        struct counts pc = {{0, 0, 0}};
        for (size_t i = 0; i < n; i++)
            pc.res[nat_one(work + off[i], plen[i], t)]++;
        double t2 = now_s();
        mc += t1 - t0;
        total += t2 - t1;
        if (best == 0 || t2 - t1 < best)
            best = t2 - t1;
        c = pc;
    }
    /* read the result back so that the work cannot be optimised away */
    uint64_t digest = 1469598103934665603ull;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w = 0;
        memcpy(&w, work + i, len - i < 8 ? len - i : 8);
        digest = (digest ^ w) * 1099511628211ull;
    }
    char extra[64];
    snprintf(extra, sizeof extra, ", \"digest\": \"%016llx\"", (unsigned long long)digest);
    emit("mem", n, t->used, passes, total, best, mc, 0, len, &c, extra);
    free(work);
    free(off);
    free(plen);
    free(orig);
    return 0;
}

/* ------------------------------------------------------------ file mode -- */

static FILE *open_or_die(const char *path, const char *how)
{
    FILE *f = fopen(path, how);
    if (!f)
        die(1, "%s: %s", path, strerror(errno));
    return f;
}

/* One pass: IN -> (process) -> OUT with fread/fwrite on a big buffer.
 * With t == NULL it is the plain file copy. Returns the packet count. */
static uint64_t file_pass(const char *in, const char *out, const struct table *t, uint8_t *buf,
                          struct counts *c)
{
    FILE *fi = open_or_die(in, "rb");
    FILE *fo = open_or_die(out, "wb");
    setvbuf(fi, NULL, _IONBF, 0);
    setvbuf(fo, NULL, _IONBF, 0);
    uint64_t n = 0;
    if (!t) {
        size_t got;
        while ((got = fread(buf, 1, CHUNK, fi)) > 0)
            if (fwrite(buf, 1, got, fo) != got)
                die(1, "%s: write error", out);
    } else {
        size_t have = fread(buf, 1, 24, fi);
        check_global_header(buf, have, in);
        if (fwrite(buf, 1, 24, fo) != 24)
            die(1, "%s: write error", out);
        have = 0;
        for (;;) {
            size_t got = fread(buf + have, 1, CHUNK - have, fi);
            have += got;
            size_t pos = 0;
            while (have - pos >= 16) {
                uint32_t incl = le32(buf + pos + 8);
                if (incl > MAX_RECORD)
                    die(2, "%s: record %llu claims %u bytes", in, (unsigned long long)n, incl);
                if (have - pos - 16 < incl)
                    break;
                c->res[nat_one(buf + pos + 16, incl, t)]++;
                n++;
                pos += 16 + (size_t)incl;
            }
            if (pos && fwrite(buf, 1, pos, fo) != pos)
                die(1, "%s: write error", out);
            memmove(buf, buf + pos, have - pos);
            have -= pos;
            if (got == 0)
                break;
        }
        if (have)
            die(2, "%s: truncated record after packet %llu", in, (unsigned long long)n);
    }
    if (ferror(fi))
        die(1, "%s: read error", in);
    fclose(fi);
    if (fclose(fo) != 0)
        die(1, "%s: write error", out);
    return n;
}

static int run_file(const char *in, const char *out, const struct table *t, int passes)
{
    uint8_t *buf = malloc(CHUNK);
    if (!buf)
        die(1, "out of memory");
    double copy = 0, total = 0, best = 0;
    struct counts c = {{0, 0, 0}};
    uint64_t n = 0;
    /* one untimed copy warms the page cache for the input and the output; then
     * copy and NAT passes alternate so that neither floor nor loop is favoured */
    file_pass(in, out, NULL, buf, NULL);
    for (int k = 0; k < passes; k++) {
        double t0 = now_s();
        file_pass(in, out, NULL, buf, NULL);
        copy += now_s() - t0;
        struct counts pc = {{0, 0, 0}};
        t0 = now_s();
        n = file_pass(in, out, t, buf, &pc);
        double dt = now_s() - t0;
        total += dt;
        if (best == 0 || dt < best)
            best = dt;
        c = pc;
    }
    /* memcpy floor over the same bytes, in memory */
    size_t len;
    uint8_t *orig = read_whole(in, &len);
    uint8_t *dst = malloc(len ? len : 1);
    if (!dst)
        die(1, "out of memory");
    memset(dst, 0, len);
    double mc = 0;
    for (int k = 0; k < passes; k++) {
        double t0 = now_s();
        memcpy(dst, orig, len);
        mc += now_s() - t0;
    }
    volatile uint8_t sink = len ? dst[len - 1] : 0;
    (void)sink;
    emit("file", n, t->used, passes, total, best, mc, copy, len, &c, "");
    free(dst);
    free(orig);
    free(buf);
    return 0;
}

/* ----------------------------------------------------------------- main -- */

/* refuse a bad capture before the flows are loaded or anything is written */
static void precheck(const char *path)
{
    uint8_t g[24];
    FILE *f = open_or_die(path, "rb");
    size_t got = fread(g, 1, sizeof g, f);
    fclose(f);
    check_global_header(g, got, path);
}

static void usage(void)
{
    fputs("usage: natloop mem  IN.pcap FLOWS [--passes N]\n"
          "       natloop file IN.pcap FLOWS OUT.pcap [--passes N]\n",
          stderr);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *pos[4];
    int npos = 0, passes = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--passes") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1000000)
                usage();
            passes = (int)v;
        } else if (npos < 4) {
            pos[npos++] = argv[i];
        } else {
            usage();
        }
    }
    if (npos < 1)
        usage();
    struct table t;
    if (strcmp(pos[0], "mem") == 0 && npos == 3) {
        precheck(pos[1]);
        load_flows(pos[2], &t);
        int rc = run_mem(pos[1], &t, passes);
        free(t.slots);
        return rc;
    }
    if (strcmp(pos[0], "file") == 0 && npos == 4) {
        if (strcmp(pos[1], pos[3]) == 0)
            die(1, "input and output are the same file");
        precheck(pos[1]);
        load_flows(pos[2], &t);
        int rc = run_file(pos[1], pos[3], &t, passes);
        free(t.slots);
        return rc;
    }
    usage();
    return 1;
}
