# cython: language_level=3
"""AF_XDP sockets: a UMEM, its fill and completion rings, RX and TX rings, batch receive
into the engine's batch shape, transmit of the same UMEM frames (no copy).

Shape of the data path (one worker, one thread)::

    Umem(frames, frame_size)           one area of equal chunks; a free stack of chunk
                                       addresses owned by user space
    XskSocket(umem, ifindex, queue)    the first socket registers the UMEM (XDP_UMEM_REG);
                                       others share it (XDP_SHARED_UMEM), each with its own
                                       fill/completion rings (one per device and queue)
    receive()  RX ring -> off[i] = frame address in the UMEM, caplen[i] = length
               (the UMEM area is the batch buffer, as the mapped ring is for ring-v2)
    transmit() off/len -> TX ring of any socket of the same UMEM (the frame stays where
               the kernel put it), then sendto() only if the ring asks for a wake-up
    refill     completion ring -> free stack -> fill ring (every round)
    recycle    frames not sent (dropped, not IPVS) go back to the free stack

The nogil functions (xsk_rx, xsk_tx, xsk_refill, umem_recycle, xsk_rx_ready) are
declared in _xsk.pxd for the live backend to cimport; the Python methods wrap them for
tests and tools. No Python object is touched per frame.
"""

import os

import numpy as np

from libc.errno cimport EAGAIN, EBUSY, ENOBUFS, EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void*, size_t, int, int, int, long)
    int munmap(void*, size_t)
    enum:
        PROT_READ
        PROT_WRITE
        MAP_SHARED
        MAP_PRIVATE
        MAP_ANONYMOUS
        MAP_POPULATE
    void* MAP_FAILED

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    int socket(int, int, int)
    int bind(int, const sockaddr*, socklen_t)
    int setsockopt(int, int, int, const void*, socklen_t)
    int getsockopt(int, int, int, void*, socklen_t*)
    ssize_t sendto(int, const void*, size_t, int, const void*, socklen_t)
    ssize_t recvfrom(int, void*, size_t, int, void*, socklen_t*)
    enum:
        SOCK_RAW
        MSG_DONTWAIT

cdef extern from "<unistd.h>" nogil:
    int close(int)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd*, unsigned long, int)
    enum:
        POLLIN

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int, timespec*)
    enum:
        CLOCK_MONOTONIC

cdef extern from *:
    """
    #include <linux/if_xdp.h>
    #ifndef AF_XDP
    #define AF_XDP 44
    #endif
    #ifndef SOL_XDP
    #define SOL_XDP 283
    #endif
    """
    enum:
        AF_XDP
        SOL_XDP
        XDP_MMAP_OFFSETS
        XDP_RX_RING
        XDP_TX_RING
        XDP_UMEM_REG
        XDP_UMEM_FILL_RING
        XDP_UMEM_COMPLETION_RING
        XDP_STATISTICS
        XDP_OPTIONS
        XDP_SHARED_UMEM
        XDP_COPY
        XDP_ZEROCOPY
        XDP_USE_NEED_WAKEUP
        XDP_RING_NEED_WAKEUP
        XDP_OPTIONS_ZEROCOPY
        XDP_PACKET_HEADROOM
    unsigned long long XDP_PGOFF_RX_RING
    unsigned long long XDP_PGOFF_TX_RING
    unsigned long long XDP_UMEM_PGOFF_FILL_RING
    unsigned long long XDP_UMEM_PGOFF_COMPLETION_RING
    struct xdp_umem_reg:
        uint64_t addr
        uint64_t len
        uint32_t chunk_size
        uint32_t headroom
        uint32_t flags
    struct xdp_ring_offset:
        uint64_t producer
        uint64_t consumer
        uint64_t desc
        uint64_t flags
    struct xdp_mmap_offsets:
        xdp_ring_offset rx
        xdp_ring_offset tx
        xdp_ring_offset fr
        xdp_ring_offset cr
    struct xdp_desc:
        uint64_t addr
        uint32_t len
        uint32_t options
    struct sockaddr_xdp:
        uint16_t sxdp_family
        uint16_t sxdp_flags
        uint32_t sxdp_ifindex
        uint32_t sxdp_queue_id
        uint32_t sxdp_shared_umem_fd
    struct xdp_statistics:
        uint64_t rx_dropped
        uint64_t rx_invalid_descs
        uint64_t tx_invalid_descs
        uint64_t rx_ring_full
        uint64_t rx_fill_ring_empty_descs
        uint64_t tx_ring_empty_descs
    struct xdp_options:
        uint32_t flags


COUNTER_NAMES = ("rx", "tx", "rx_batches", "tx_kicks", "tx_kick_errors", "fill_kicks",
                 "tx_ring_full", "fill_starved", "completed", "recycled")
MODES = ("copy", "zerocopy", "auto")


def xdp_available():
    """None if this kernel makes AF_XDP sockets (and we may), else one line saying why."""
    cdef int fd = socket(AF_XDP, SOCK_RAW, 0)
    if fd < 0:
        e = errno
        if e in (97, 93, 22):   # EAFNOSUPPORT, EPROTONOSUPPORT, EINVAL
            return "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)"
        if e in (1, 13):        # EPERM, EACCES
            return "AF_XDP sockets need CAP_NET_RAW"
        return "socket(AF_XDP): " + os.strerror(e)
    close(fd)
    return None


cdef inline int64_t mono_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


# -- ring operations (nogil) --------------------------------------------------------------
cdef inline uint64_t chunk_of(UmemC* u, uint64_t addr) noexcept nogil:
    return addr & ~(<uint64_t>u.frame_size - 1)


cdef void umem_recycle(UmemC* u, uint64_t addr) noexcept nogil:
    """A frame user space holds and will not send: back to the free stack."""
    if u.nfree < u.nframes:
        u.free[u.nfree] = chunk_of(u, addr)
        u.nfree += 1


cdef bint xsk_rx_ready(XskC* x) noexcept nogil:
    return fv_load_acquire(x.rx.producer) != fv_load_relaxed(x.rx.consumer)


cdef uint32_t xsk_rx(XskC* x, uint32_t* off, uint32_t* length, uint32_t max_n) noexcept nogil:
    """Take up to max_n frames off the RX ring: off[i] = UMEM offset of the frame's first
    byte, length[i] = its length. The frames are then user space's (send or recycle)."""
    cdef uint32_t cons = x.rx.consumer[0]
    cdef uint32_t prod = fv_load_acquire(x.rx.producer)
    cdef uint32_t n = prod - cons
    cdef uint32_t i
    cdef xdp_desc* d
    cdef xdp_desc* ring = <xdp_desc*>x.rx.desc
    if n > max_n:
        n = max_n
    for i in range(n):
        d = &ring[(cons + i) & x.rx.mask]
        off[i] = <uint32_t>d.addr
        length[i] = d.len
    if n:
        fv_store_release(x.rx.consumer, cons + n)
        x.c[<int>XC_RX] += n
        x.c[<int>XC_RX_BATCHES] += 1
    return n


cdef void xsk_kick_tx(XskC* x) noexcept nogil:
    """sendto() so the kernel drains the TX ring: always without need-wakeup, else only
    when the ring's flag asks for it (copy mode asks every time). In copy mode one call
    sends at most 32 frames (the kernel's TX_BATCH_SIZE) and says EAGAIN when more are
    left: kick again until the ring is drained (bounded)."""
    cdef ssize_t r
    cdef int _k
    fv_fence()
    if x.need_wakeup and not (fv_load_relaxed(x.tx.flags) & XDP_RING_NEED_WAKEUP):
        return
    for _k in range(64):
        r = sendto(x.fd, NULL, 0, MSG_DONTWAIT, NULL, 0)
        x.c[<int>XC_TX_KICKS] += 1
        if r >= 0:
            if fv_load_acquire(x.tx.consumer) == x.tx.producer[0]:
                return
            continue
        if errno == EAGAIN or errno == EINTR:
            if fv_load_acquire(x.tx.consumer) == x.tx.producer[0]:
                return
            continue
        if errno != EBUSY and errno != ENOBUFS:
            x.c[<int>XC_TX_KICK_ERRORS] += 1
        return


cdef uint32_t xsk_tx(XskC* x, const uint32_t* off, const uint32_t* length, uint32_t n) noexcept nogil:
    """Put n frames (UMEM offsets and lengths) on the TX ring and kick it. Frames that
    find no room are recycled (counted tx_ring_full). Returns how many were queued."""
    cdef uint32_t prod = x.tx.producer[0]
    cdef uint32_t cons = fv_load_acquire(x.tx.consumer)
    cdef uint32_t room = x.tx.size - (prod - cons)
    cdef uint32_t i, k
    cdef xdp_desc* ring = <xdp_desc*>x.tx.desc
    cdef xdp_desc* d
    k = n if n < room else room
    for i in range(k):
        d = &ring[(prod + i) & x.tx.mask]
        d.addr = off[i]
        d.len = length[i]
        d.options = 0
    for i in range(k, n):
        umem_recycle(x.umem, off[i])
    if n > k:
        x.c[<int>XC_TX_RING_FULL] += n - k
    if k:
        fv_store_release(x.tx.producer, prod + k)
        x.tx_outstanding += k
        x.c[<int>XC_TX] += k
    if x.tx_outstanding:
        xsk_kick_tx(x)
    return k


cdef void xsk_refill(XskC* x) noexcept nogil:
    """Completed TX frames -> free stack; free frames -> fill ring."""
    cdef UmemC* u = x.umem
    cdef uint32_t cons, prod, n, i, room
    cdef uint64_t* ring
    if x.tx_outstanding:
        cons = x.comp.consumer[0]
        prod = fv_load_acquire(x.comp.producer)
        n = prod - cons
        ring = <uint64_t*>x.comp.desc
        for i in range(n):
            umem_recycle(u, ring[(cons + i) & x.comp.mask])
        if n:
            fv_store_release(x.comp.consumer, cons + n)
            x.tx_outstanding -= n if n <= x.tx_outstanding else x.tx_outstanding
            x.c[<int>XC_COMPLETED] += n
        if x.tx_outstanding and n == 0:
            xsk_kick_tx(x)      # copy mode: frames left in the ring after EAGAIN
    prod = x.fill.producer[0]
    cons = fv_load_acquire(x.fill.consumer)
    room = x.fill.size - (prod - cons)
    n = room if room < u.nfree else u.nfree
    if room and n == 0:
        x.c[<int>XC_FILL_STARVED] += 1
    ring = <uint64_t*>x.fill.desc
    for i in range(n):
        u.nfree -= 1
        ring[(prod + i) & x.fill.mask] = u.free[u.nfree]
    if n:
        fv_store_release(x.fill.producer, prod + n)


# -- checksum state lost in copy mode ------------------------------------------------------
# -- test helper: a UDP/TCP reflector ------------------------------------------------------
cdef inline void swap(uint8_t* p, int a, int b, int n) noexcept nogil:
    cdef uint8_t t[16]
    memcpy(t, p + a, n)
    memcpy(p + a, p + b, n)
    memcpy(p + b, t, n)


cdef inline void reflect_one(uint8_t* p, uint32_t length) noexcept nogil:
    """Swap Ethernet, IP (v4/v6) and TCP/UDP port source and destination in place: the
    checksums stay valid (the sums do not change)."""
    cdef uint16_t et
    cdef uint32_t l4
    cdef uint8_t proto
    if length < 14:
        return
    swap(p, 0, 6, 6)
    et = (<uint16_t>p[12] << 8) | p[13]
    if et == 0x0800 and length >= 34:
        swap(p, 26, 30, 4)
        proto = p[23]
        l4 = 14 + ((p[14] & 15) << 2)
    elif et == 0x86DD and length >= 54:
        swap(p, 22, 38, 16)
        proto = p[20]
        l4 = 54
    else:
        return
    if (proto == 6 or proto == 17) and length >= l4 + 4:
        swap(p, l4, l4 + 2, 2)


def reflect(uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] length, Py_ssize_t n):
    """Send-back rewrite of n frames of a batch (test and benchmark stand-in for the
    engine): each frame's source and destination swapped at L2, L3 and L4."""
    cdef Py_ssize_t i
    if n > off.shape[0] or n > length.shape[0]:
        raise ValueError("n exceeds the batch")
    for i in range(n):
        if <size_t>off[i] + length[i] > <size_t>buf.shape[0]:
            raise ValueError("frame outside the buffer")
    with nogil:
        for i in range(n):
            reflect_one(&buf[0] + off[i], length[i])


# -- setup ----------------------------------------------------------------------------------
cdef int map_ring(XRing* r, int fd, uint32_t size, xdp_ring_offset* o, size_t elem,
                  unsigned long long pgoff) except -1:
    r.maplen = <size_t>(o.desc + <uint64_t>size * elem)
    r.map = mmap(NULL, r.maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff)
    if r.map == MAP_FAILED:
        r.map = NULL
        raise OSError(errno, "mmap of an AF_XDP ring: " + os.strerror(errno))
    r.producer = <uint32_t*>(<uint8_t*>r.map + o.producer)
    r.consumer = <uint32_t*>(<uint8_t*>r.map + o.consumer)
    r.flags = <uint32_t*>(<uint8_t*>r.map + o.flags)
    r.desc = <uint8_t*>r.map + o.desc
    r.size = size
    r.mask = size - 1
    return 0


cdef void unmap_ring(XRing* r) noexcept:
    if r.map != NULL:
        munmap(r.map, r.maplen)
        r.map = NULL


cdef int sockopt_u32(int fd, int opt, uint32_t v, str what) except -1:
    if setsockopt(fd, SOL_XDP, opt, &v, sizeof(v)) < 0:
        raise OSError(errno, f"AF_XDP {what}: {os.strerror(errno)}")
    return 0


def _pow2(name, unsigned int v):
    if v < 2 or v & (v - 1):
        raise ValueError(f"{name} must be a power of two (got {v})")


cdef class Umem:
    """The frame area shared by the sockets of one worker: ``nframes`` chunks of
    ``frame_size`` bytes (2048 or 4096). ``buf`` is the batch buffer (a memoryview)."""

    def __cinit__(self, unsigned int nframes=8192, unsigned int frame_size=2048,
                  unsigned int headroom=0):
        cdef uint32_t i
        memset(&self.u, 0, sizeof(UmemC))
        self.owner_fd = -1
        _pow2("frame_size", frame_size)
        if frame_size < 2048 or frame_size > 4096:
            raise ValueError("frame_size must be 2048 or 4096")
        if nframes < 16 or nframes > (1 << 20):
            raise ValueError("nframes must be 16..1048576")
        if headroom + 256 > frame_size:
            raise ValueError("headroom leaves no room for a frame")
        self.u.size = <uint64_t>nframes * frame_size
        if self.u.size >= (<uint64_t>1 << 32):
            raise ValueError("the UMEM must stay under 4 GiB (32-bit batch offsets)")
        self.u.area = <uint8_t*>mmap(NULL, self.u.size, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
        if <void*>self.u.area == MAP_FAILED:
            self.u.area = NULL
            raise OSError(errno, "mmap of the UMEM: " + os.strerror(errno))
        self.u.free = <uint64_t*>malloc(nframes * sizeof(uint64_t))
        if self.u.free == NULL:
            raise MemoryError()
        self.u.frame_size = frame_size
        self.u.headroom = headroom
        self.u.nframes = nframes
        for i in range(nframes):
            self.u.free[i] = <uint64_t>(nframes - 1 - i) * frame_size
        self.u.nfree = nframes
        self.mode = ""
        self.need_wakeup = True
        self.frame_size = frame_size
        self.nframes = nframes
        self.buf = <uint8_t[:self.u.size]>self.u.area

    def __dealloc__(self):
        free(self.u.free)
        if self.u.area != NULL:
            munmap(self.u.area, self.u.size)

    @property
    def free_frames(self):
        """Frames user space holds unused (not in any ring, not in a batch)."""
        return self.u.nfree


cdef class XskSocket:
    """An AF_XDP socket bound to (ifindex, queue), on ``umem``.

    ``mode``: "copy" (XDP_COPY, any driver, veth), "zerocopy" (XDP_ZEROCOPY: the driver
    must support it) or "auto" (zero-copy, else copy; :attr:`mode` says which).
    Ring sizes are powers of two; ``batch`` is the most frames one :meth:`receive` takes.
    The fill ring is filled from the UMEM's free frames at once. Put :meth:`fileno` in
    the program's XSKMAP slot ``queue`` (XdpProgram.set_socket) to receive.
    """

    def __cinit__(self, Umem umem, int ifindex, int queue=0, *, unsigned int rx_size=2048,
                  unsigned int tx_size=2048, unsigned int fill_size=2048,
                  unsigned int comp_size=2048, unsigned int batch=64, str mode="copy",
                  bint need_wakeup=True):
        cdef xdp_umem_reg reg
        cdef xdp_mmap_offsets offs
        cdef socklen_t olen = sizeof(offs)
        cdef sockaddr_xdp sa
        cdef int fd
        memset(&self.x, 0, sizeof(XskC))
        self.x.fd = -1
        for name, v in (("rx_size", rx_size), ("tx_size", tx_size), ("fill_size", fill_size),
                        ("comp_size", comp_size)):
            _pow2(name, v)
        if batch < 1 or batch > rx_size:
            raise ValueError("batch must be 1..rx_size")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.umem = umem
        self.ifindex = ifindex
        self.queue = queue
        self.batch = batch
        self.x.umem = &umem.u
        self.x.need_wakeup = need_wakeup
        fd = socket(AF_XDP, SOCK_RAW, 0)
        if fd < 0:
            raise OSError(errno, "socket(AF_XDP): " + os.strerror(errno))
        self.x.fd = fd
        try:
            if umem.owner_fd < 0:
                memset(&reg, 0, sizeof(reg))
                reg.addr = <uint64_t><size_t>umem.u.area
                reg.len = umem.u.size
                reg.chunk_size = umem.u.frame_size
                reg.headroom = umem.u.headroom
                if setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) < 0:
                    raise OSError(errno, "AF_XDP UMEM registration: " + os.strerror(errno))
            sockopt_u32(fd, XDP_UMEM_FILL_RING, fill_size, "fill ring")
            sockopt_u32(fd, XDP_UMEM_COMPLETION_RING, comp_size, "completion ring")
            sockopt_u32(fd, XDP_RX_RING, rx_size, "RX ring")
            sockopt_u32(fd, XDP_TX_RING, tx_size, "TX ring")
            if getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &offs, &olen) < 0:
                raise OSError(errno, "AF_XDP ring offsets: " + os.strerror(errno))
            map_ring(&self.x.rx, fd, rx_size, &offs.rx, sizeof(xdp_desc), XDP_PGOFF_RX_RING)
            map_ring(&self.x.tx, fd, tx_size, &offs.tx, sizeof(xdp_desc), XDP_PGOFF_TX_RING)
            map_ring(&self.x.fill, fd, fill_size, &offs.fr, sizeof(uint64_t),
                     XDP_UMEM_PGOFF_FILL_RING)
            map_ring(&self.x.comp, fd, comp_size, &offs.cr, sizeof(uint64_t),
                     XDP_UMEM_PGOFF_COMPLETION_RING)
            # frames for the kernel to receive into, before the bind
            xsk_refill(&self.x)
            memset(&sa, 0, sizeof(sa))
            sa.sxdp_family = AF_XDP
            sa.sxdp_ifindex = ifindex
            sa.sxdp_queue_id = queue
            if umem.owner_fd == -2:
                raise ValueError("the UMEM's first socket is closed: make a new Umem")
            if umem.owner_fd >= 0:
                # a sharer may not give flags: copy/zero-copy and need-wakeup are the
                # first socket's (the kernel gives it its own pool on another device/queue)
                sa.sxdp_flags = XDP_SHARED_UMEM
                sa.sxdp_shared_umem_fd = umem.owner_fd
                self.mode = umem.mode
                self.x.need_wakeup = umem.need_wakeup
                mode = umem.mode
            else:
                if need_wakeup:
                    sa.sxdp_flags |= XDP_USE_NEED_WAKEUP
                self.mode = "copy" if mode == "copy" else "zerocopy"
                sa.sxdp_flags |= XDP_COPY if mode == "copy" else XDP_ZEROCOPY
            if bind(fd, <sockaddr*>&sa, sizeof(sa)) < 0:
                err = errno
                if mode != "auto":
                    raise OSError(err, f"AF_XDP bind to ifindex {ifindex} queue {queue} "
                                  f"({self.mode} mode): {os.strerror(err)}")
                sa.sxdp_flags = (sa.sxdp_flags & ~XDP_ZEROCOPY) | XDP_COPY
                self.mode = "copy"
                if bind(fd, <sockaddr*>&sa, sizeof(sa)) < 0:
                    raise OSError(errno, f"AF_XDP bind to ifindex {ifindex} queue {queue}: "
                                  + os.strerror(errno))
            if umem.owner_fd < 0:
                umem.owner_fd = fd
                umem.mode = self.mode
                umem.need_wakeup = need_wakeup
        except BaseException:
            self._close()
            raise
        self.off = np.zeros(batch, dtype=np.uint32)
        self.caplen = np.zeros(batch, dtype=np.uint32)
        self.wirelen = np.zeros(batch, dtype=np.uint32)
        self.ts = np.zeros(batch, dtype=np.int64)
        self.linktype = np.ones(batch, dtype=np.uint16)
        self.verdict = np.zeros(batch, dtype=np.uint8)

    cdef void _close(self) noexcept:
        unmap_ring(&self.x.rx)
        unmap_ring(&self.x.tx)
        unmap_ring(&self.x.fill)
        unmap_ring(&self.x.comp)
        if self.x.fd >= 0:
            if self.umem is not None and self.umem.owner_fd == self.x.fd:
                self.umem.owner_fd = -2      # the UMEM goes with this socket: no new sharers
            close(self.x.fd)
            self.x.fd = -1

    def __dealloc__(self):
        self._close()

    def close(self):
        """Close the socket and unmap its rings (frames in them are gone with it)."""
        self._close()

    def fileno(self):
        return self.x.fd

    # -- the data path for Python callers (tests, tools) -----------------------------------
    def poll(self, int timeout_ms=100):
        """Wait until the RX ring has frames (True) or the timeout passes (False)."""
        cdef pollfd p
        cdef int r
        if self.x.fd < 0:
            raise ValueError("closed socket")
        if xsk_rx_ready(&self.x):
            return True
        p.fd = self.x.fd
        p.events = POLLIN
        with nogil:
            r = poll(&p, 1, timeout_ms)
        return r > 0

    def receive(self):
        """Refill, then take up to ``batch`` frames: fills :attr:`off`, :attr:`caplen`,
        :attr:`wirelen` (and :attr:`ts`, one clock reading) for the first n entries;
        returns n. Each frame must then be transmitted or recycled."""
        cdef uint32_t[::1] o = self.off
        cdef uint32_t[::1] ln = self.caplen
        cdef uint32_t n
        cdef int64_t now
        if self.x.fd < 0:
            raise ValueError("closed socket")
        with nogil:
            xsk_refill(&self.x)
            n = xsk_rx(&self.x, &o[0], &ln[0], self.batch)
            now = mono_ns()
        if n:
            self.wirelen[:n] = self.caplen[:n]
            self.ts[:n] = now
        return n

    def transmit(self, const uint32_t[::1] off, const uint32_t[::1] length, Py_ssize_t n=-1):
        """Send frames of this socket's UMEM (offsets and lengths, n of them; all by
        default) out of this socket's interface. Returns how many were queued."""
        cdef uint32_t k
        if n < 0:
            n = off.shape[0]
        if n > off.shape[0] or n > length.shape[0]:
            raise ValueError("n exceeds the arrays")
        if n == 0:
            return 0
        if self.x.fd < 0:
            raise ValueError("closed socket")
        for i in range(n):
            if <uint64_t>off[i] + length[i] > self.umem.u.size or length[i] > self.umem.u.frame_size:
                raise ValueError("frame outside the UMEM")
        with nogil:
            k = xsk_tx(&self.x, &off[0], &length[0], <uint32_t>n)
        return k

    def recycle(self, const uint32_t[::1] off, Py_ssize_t n=-1):
        """Give frames not to be sent back to the UMEM's free stack."""
        cdef Py_ssize_t i
        if n < 0:
            n = off.shape[0]
        for i in range(min(n, off.shape[0])):
            umem_recycle(&self.umem.u, off[i])
        self.x.c[<int>XC_RECYCLED] += n

    def refill(self):
        """Completion ring -> free frames -> fill ring (receive() does it too)."""
        with nogil:
            xsk_refill(&self.x)

    def counters(self):
        """Our counters, plus the kernel's XDP_STATISTICS (kernel_*)."""
        cdef xdp_statistics st
        cdef socklen_t n = sizeof(st)
        out = {name: self.x.c[i] for i, name in enumerate(COUNTER_NAMES)}
        out["tx_outstanding"] = self.x.tx_outstanding
        out["umem_free"] = self.umem.u.nfree
        memset(&st, 0, sizeof(st))
        if self.x.fd >= 0 and getsockopt(self.x.fd, SOL_XDP, XDP_STATISTICS, &st, &n) == 0:
            out["kernel_rx_dropped"] = st.rx_dropped
            out["kernel_rx_invalid_descs"] = st.rx_invalid_descs
            out["kernel_tx_invalid_descs"] = st.tx_invalid_descs
            out["kernel_rx_ring_full"] = st.rx_ring_full
            out["kernel_rx_fill_ring_empty"] = st.rx_fill_ring_empty_descs
            out["kernel_tx_ring_empty"] = st.tx_ring_empty_descs
        return out

    def zerocopy_active(self):
        """What the kernel says (XDP_OPTIONS): True in zero-copy mode."""
        cdef xdp_options o
        cdef socklen_t n = sizeof(o)
        if getsockopt(self.x.fd, SOL_XDP, XDP_OPTIONS, &o, &n) < 0:
            raise OSError(errno, "XDP_OPTIONS: " + os.strerror(errno))
        return bool(o.flags & XDP_OPTIONS_ZEROCOPY)


def set_macs(uint8_t[::1] buf, const uint32_t[::1] off, Py_ssize_t n, bytes dst, bytes src):
    """Write destination and source MAC into n frames of a batch (an L2-only rewrite,
    the stand-in for the output stage in benchmarks)."""
    cdef Py_ssize_t i
    cdef const char* d = dst
    cdef const char* sm = src
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MACs are 6 bytes")
    if n > off.shape[0]:
        raise ValueError("n exceeds the batch")
    for i in range(n):
        if <size_t>off[i] + 12 > <size_t>buf.shape[0]:
            raise ValueError("frame outside the buffer")
    with nogil:
        for i in range(n):
            memcpy(&buf[0] + off[i], d, 6)
            memcpy(&buf[0] + off[i] + 6, sm, 6)


def run_reflect(XskSocket s, double seconds, int idle_poll_ms=10, bytes dst_mac=None,
                bytes src_mac=None):
    """Benchmark loop, all in C: receive a batch, reflect it (or, with the MACs given,
    only rewrite the Ethernet addresses), send it back out of the same socket, for
    ``seconds``. Returns (frames received, frames queued for send, seconds taken)."""
    cdef bint l2 = dst_mac is not None
    cdef uint8_t macs[12]
    cdef uint32_t* off = <uint32_t*>malloc(s.batch * sizeof(uint32_t))
    cdef uint32_t* ln = <uint32_t*>malloc(s.batch * sizeof(uint32_t))
    cdef XskC* x = &s.x
    cdef uint64_t rx0 = x.c[<int>XC_RX], tx0 = x.c[<int>XC_TX]
    cdef int64_t t0, end, t1
    cdef uint32_t n, i
    cdef pollfd p
    if off == NULL or ln == NULL:
        free(off)
        free(ln)
        raise MemoryError()
    if l2:
        if len(dst_mac) != 6 or src_mac is None or len(src_mac) != 6:
            free(off)
            free(ln)
            raise ValueError("MACs are 6 bytes")
        memcpy(macs, <const char*>dst_mac, 6)
        memcpy(macs + 6, <const char*>src_mac, 6)
    p.fd = x.fd
    p.events = POLLIN
    with nogil:
        t0 = mono_ns()
        end = t0 + <int64_t>(seconds * 1e9)
        while True:
            xsk_refill(x)
            n = xsk_rx(x, off, ln, s.batch)
            if mono_ns() >= end:
                for i in range(n):
                    umem_recycle(x.umem, off[i])
                break
            if n == 0:
                poll(&p, 1, idle_poll_ms)
                continue
            if l2:
                for i in range(n):
                    memcpy(x.umem.area + off[i], macs, 12)
            else:
                for i in range(n):
                    reflect_one(x.umem.area + off[i], ln[i])
            xsk_tx(x, off, ln, n)
        t1 = mono_ns()
    free(off)
    free(ln)
    return x.c[<int>XC_RX] - rx0, x.c[<int>XC_TX] - tx0, (t1 - t0) / 1e9
