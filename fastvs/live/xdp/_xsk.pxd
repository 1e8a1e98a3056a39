# cython: language_level=3
# The AF_XDP socket's C-level state and nogil operations, for a backend module to
# cimport (from fastvs.live.xdp._xsk cimport ...). See _xsk.pyx.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

# Memory order on the rings' 32-bit indexes (the kernel's rings here, the workers'
# handoff rings in fastvs/live/_afxdp.pyx): GCC/Clang atomics, inline C
cdef extern from *:
    """
    static inline uint32_t fv_load_acquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint32_t fv_load_relaxed(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void fv_store_release(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void fv_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    uint32_t fv_load_acquire(const uint32_t* p) nogil
    uint32_t fv_load_relaxed(const uint32_t* p) nogil
    void fv_store_release(uint32_t* p, uint32_t v) nogil
    void fv_fence() nogil

ctypedef struct XRing:
    uint32_t* producer
    uint32_t* consumer
    uint32_t* flags
    void* desc              # xdp_desc[] (RX/TX) or __u64[] (fill/completion)
    uint32_t mask
    uint32_t size
    void* map
    size_t maplen

ctypedef struct UmemC:
    uint8_t* area           # the frames: the batch buffer the engine works in
    uint64_t size
    uint32_t frame_size     # chunk size (power of two)
    uint32_t headroom
    uint32_t nframes
    uint64_t* free          # stack of chunk addresses owned by user space and unused
    uint32_t nfree

ctypedef enum XskCounter:
    XC_RX
    XC_TX
    XC_RX_BATCHES
    XC_TX_KICKS
    XC_TX_KICK_ERRORS
    XC_FILL_KICKS
    XC_TX_RING_FULL
    XC_FILL_STARVED
    XC_COMPLETED
    XC_RECYCLED
    XC_NCOUNTERS

ctypedef struct XskC:
    int fd
    XRing rx
    XRing tx
    XRing fill
    XRing comp
    UmemC* umem
    bint need_wakeup
    uint32_t tx_outstanding   # in the TX ring or in flight, not completed yet
    uint64_t c[<int>XC_NCOUNTERS]

cdef uint32_t xsk_rx(XskC* x, uint32_t* off, uint32_t* length, uint32_t max_n) noexcept nogil
cdef uint32_t xsk_tx(XskC* x, const uint32_t* off, const uint32_t* length, uint32_t n) noexcept nogil
cdef void xsk_kick_tx(XskC* x) noexcept nogil
cdef void xsk_refill(XskC* x) noexcept nogil
cdef void umem_recycle(UmemC* u, uint64_t addr) noexcept nogil
cdef bint xsk_rx_ready(XskC* x) noexcept nogil

cdef class Umem:
    cdef UmemC u
    cdef int owner_fd
    cdef readonly str mode          # the first socket's: sharers inherit it
    cdef readonly bint need_wakeup
    cdef readonly object buf
    cdef readonly uint32_t frame_size, nframes

cdef class XskSocket:
    cdef XskC x
    cdef readonly Umem umem
    cdef readonly int ifindex, queue
    cdef readonly str mode
    cdef readonly uint32_t batch
    cdef readonly object off, caplen, wirelen, ts, linktype, verdict
    cdef void _close(self) noexcept
