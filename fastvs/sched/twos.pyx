"""Power of two choices (ip_vs_twos.c): two servers drawn at random in proportion
to their weights; the one with the smaller overhead / weight wins.

Usable servers are those not overloaded with weight > 0.  With W their total
weight, two numbers r1, r2 are drawn uniformly from [0, W] (the kernel's
get_random_u32_below(W + 1)); walking the list, each usable server subtracts its
weight from both, and choice k is the first server that brings r_k to <= 0.  The
second choice replaces the first only when weight2 * overhead1 > weight1 *
overhead2, computed in 32-bit ints that wrap as the kernel's do.

Deviation: the kernel draws from its CSPRNG.  fastvs draws from a per-service
xorshift64* generator seeded with a fixed constant (TWOS_SEED) when the service is
created, so the same capture and rules give the same output every run.  The draws
are unbiased (multiply-shift with rejection, as get_random_u32_below does).
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from fastvs.datapath._types cimport Service, Dest, PacketMeta
from fastvs.sched._base cimport SchedOps, dest_overloaded

TWOS_SEED = 0x9E3779B97F4A7C15
cdef uint64_t _SEED = 0x9E3779B97F4A7C15


cdef inline uint32_t xorshift_next(uint64_t* s) noexcept nogil:
    cdef uint64_t x = s[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    s[0] = x
    return <uint32_t>((x * <uint64_t>0x2545F4914F6CDD1D) >> 32)


cdef inline uint32_t random_below(uint64_t* s, uint32_t ceil) noexcept nogil:
    """Uniform in [0, ceil): Lemire's multiply-shift, rejecting the biased low part."""
    cdef uint64_t mult
    cdef uint32_t threshold = <uint32_t>(-ceil) % ceil
    while True:
        mult = <uint64_t>ceil * xorshift_next(s)
        if <uint32_t>mult >= threshold:
            return <uint32_t>(mult >> 32)


cdef inline int32_t overhead32(const Dest* d) noexcept nogil:
    # ip_vs_dest_conn_overhead returns an int: activeconns * 256 + totalconns
    return <int32_t>((<uint32_t>d.activeconns << 8) + <uint32_t>d.activeconns
                     + <uint32_t>d.inactconns)


cdef inline int32_t mul32(int32_t a, int32_t b) noexcept nogil:
    return <int32_t>(<uint32_t>a * <uint32_t>b)


cdef int32_t twos_pick(Service* svc, Dest* dests, const PacketMeta* m) noexcept nogil:
    cdef uint64_t* state = <uint64_t*>svc.sched_data
    cdef int32_t choice1 = -1
    cdef int32_t choice2 = -1
    cdef int32_t weight1 = -1
    cdef int32_t weight2 = -1
    cdef int32_t overhead1 = 0
    cdef int32_t overhead2 = 0
    cdef uint32_t total = 0
    cdef int32_t r1, r2, i, d, w
    if state == NULL:
        return -1
    for i in range(svc.ndests):
        d = svc.dest_list[i]
        if not dest_overloaded(&dests[d]) and dests[d].weight > 0:
            total += <uint32_t>dests[d].weight
            choice1 = d
    if choice1 < 0:
        return -1
    total += 1
    r1 = <int32_t>random_below(state, total)
    r2 = <int32_t>random_below(state, total)
    for i in range(svc.ndests):
        d = svc.dest_list[i]
        w = dests[d].weight
        if dest_overloaded(&dests[d]) or w <= 0:
            continue
        r1 -= w
        r2 -= w
        if r1 <= 0 and weight1 == -1:
            choice1 = d
            weight1 = w
            overhead1 = overhead32(&dests[d])
        if r2 <= 0 and weight2 == -1:
            choice2 = d
            weight2 = w
            overhead2 = overhead32(&dests[d])
        if weight1 != -1 and weight2 != -1:
            break
    if choice2 >= 0 and mul32(weight2, overhead1) > mul32(weight1, overhead2):
        choice1 = choice2
    return choice1


cdef void twos_init(Service* svc, Dest* dests) noexcept nogil:
    cdef uint64_t* state = <uint64_t*>calloc(1, sizeof(uint64_t))
    if state != NULL:
        state[0] = _SEED
    svc.sched_data = state


cdef void twos_done(Service* svc, Dest* dests) noexcept nogil:
    free(svc.sched_data)
    svc.sched_data = NULL


cdef SchedOps TWOS
TWOS.name = b"twos"
TWOS.pick = twos_pick
TWOS.init_svc = twos_init
TWOS.done_svc = twos_done
TWOS.dest_changed = NULL

NAME = "twos"
OPS = PyCapsule_New(&TWOS, b"fastvs.SchedOps", NULL)
