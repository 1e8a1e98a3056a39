"""AF_XDP frame I/O for the live forwarder: the ``xdp`` backend's per-frame work.

An :class:`XdpPump` drives one or two AF_XDP sockets (fastvs/live/xdp/_xsk.pyx) that
share one UMEM: the client side's socket (which registered the UMEM) and the server
side's (``XDP_SHARED_UMEM``), or a single one for a one-arm director. The UMEM *is* the
batch buffer: :meth:`XdpPump.receive` takes up to ``batch`` frames off each socket's RX
ring into one pair of ``off``/``caplen`` arrays (UMEM offsets, where the kernel put the
frames), remembers which side each came in on, stamps them with one CLOCK_MONOTONIC
reading and completes offloaded checksums (``l2_csum_complete``: copy mode hands
over a veth peer's CHECKSUM_PARTIAL frames without a flag). The engine rewrites them in
place; :meth:`XdpPump.transmit` runs the shared L2 output stage (fastvs/live/_l2.pxd:
neighbour lookup, MAC rewrite, frames sorted by side), puts each side's frames on its
socket's TX ring with one ``xsk_tx`` (same UMEM addresses: no copy in user space) and
gives every frame not sent back to the UMEM (``umem_recycle``). Every round refills
each socket's fill ring from the completion ring and the free frames.

With several workers (worker k's sockets on queue k), a frame can arrive on a queue
whose worker does not own its connection: the kernel delivers a redirected frame only to
the socket bound to the queue it came in on, and a NIC's RSS or a veth peer's transmit
queue choice puts a connection's requests and replies on unrelated queues. The owner is
the worker the client endpoint hashes to (the source address and port of a frame to a
VIP, else the destination's: :func:`fastvs.live.bpf.fanout_worker`, as the AF_PACKET
fanout program picks); :meth:`XdpPump.handoff` gives the pump a shared memory area of
single-producer single-consumer rings, one per pair of workers, and an eventfd per
worker. A frame for another worker is copied into that worker's ring (its UMEM frame
recycled at once), and every round each worker takes what the others handed it into
free frames of its own UMEM, then the engine sees them as its own. A worker about to
sleep says so in the area; a producer that handed it frames writes its eventfd.

Both run without the GIL and touch no Python object per frame. The Python side
(programs, attachment, sockets, fallback) is fastvs/live/afxdp.py.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset
from cpython.pycapsule cimport PyCapsule_GetPointer

from fastvs.datapath._packet cimport LT_EN10MB
from fastvs.datapath._types cimport BatchEntry, BATCH_ENTRY_NAME
from fastvs.live._l2 cimport (L2Stage, L2State, L2_CSUM_COMPLETED, SIDE_CLIENT, l2_out,
                              l2_gather, l2_csum_complete, mono_ns, io_run, fv_cpu_relax)
from fastvs.live.xdp._xsk cimport (XskC, UmemC, XskSocket, xsk_rx, xsk_tx, xsk_refill,
                                   xsk_rx_ready, umem_recycle, fv_load_acquire, fv_store_release,
                                   fv_fence)

import numpy as np


cdef extern from "<unistd.h>" nogil:
    ssize_t read(int, void*, size_t)
    ssize_t write(int, const void*, size_t)


cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t

    struct pollfd:
        int fd
        short events
        short revents

    int poll(pollfd* fds, nfds_t nfds, int timeout)
    enum:
        POLLIN


cdef enum:
    AUX_POLL_NS = 1000000   # aux fds looked at this often while data keeps coming
    MAX_AUX = 6             # watched descriptors besides the data sockets
    MAX_VIPS = 256          # VIPs the owner test compares (IPv4 and IPv6 together)
    MAX_WORKERS = 64
    HO_LINE = 64            # one cache line: a ring's head, its tail, a worker's flag
    HO_SLOT = 2048          # a handed-off frame: HoSlot header, then the frame
    HO_HDR = 8
    FANOUT_MIX = 0x045D9F3B  # fastvs/live/bpf.py's FANOUT_MIX

ctypedef struct HoSlot:
    uint32_t length
    uint8_t side


# the shared area (one per forwarder, made before the fork: afxdp.handoff_area):
# nworkers lines of "sleeping" flags, then nworkers*nworkers rings [from][to], each two
# lines (tail: the producer's, head: the consumer's) and ``slots`` slots of HO_SLOT bytes


def handoff_size(unsigned int workers, unsigned int slots):
    """Bytes of the shared handoff area for ``workers`` workers, ``slots`` per ring."""
    return HO_LINE * workers + <size_t>workers * workers * (2 * HO_LINE + <size_t>slots * HO_SLOT)


# counters, in COUNTER_NAMES order
cdef enum:
    C_RX = 0
    C_RX_BYTES
    C_TX
    C_TX_BYTES
    C_DROP_OVERSIZE
    C_DROP_TX_ERROR
    C_NOT_SENT
    C_POLLS
    C_HANDOFF_OUT
    C_HANDOFF_IN
    C_HANDOFF_FULL
    C_HANDOFF_WAKEUPS
    C_N

COUNTER_NAMES = (
    "rx", "rx_bytes", "tx", "tx_bytes", "drop_oversize", "drop_tx_error", "recycled_not_sent",
    "polls", "handoff_out", "handoff_in", "drop_handoff_full", "handoff_wakeups",
)


ctypedef struct XPumpC:
    XskC* x[2]             # per side (client, server); equal in one-arm mode
    int nsk                # distinct sockets (1 one-arm, 2 two-arm)
    uint32_t batch         # frames per socket per round
    uint32_t max_frame     # largest frame that can be sent (MTU + link header)
    uint8_t* buf           # the UMEM
    UmemC* umem
    uint32_t* off
    uint32_t* caplen
    uint32_t* wirelen
    int64_t* ts
    uint16_t* linktype
    uint8_t* verdict
    uint8_t* side
    uint8_t* sent          # per batch entry: handed to a TX ring
    uint32_t* txidx[2]     # batch indexes the L2 stage sorted per outgoing side
    uint32_t* txoff        # one side's UMEM offsets and lengths for xsk_tx
    uint32_t* txlen
    int ntx[2]
    Py_ssize_t last_n      # frames of the last receive, not yet sent or recycled
    L2State* l2
    pollfd pfd[9]
    int ndata              # data fds: the sockets, then the handoff eventfd
    int npfd               # data fds first, then aux fds
    # handoff between workers (nw > 1)
    int nw                 # workers
    int wid                # this worker
    uint8_t* ho            # the shared area
    uint32_t ho_slots      # slots per ring (a power of two)
    int efd[MAX_WORKERS]   # every worker's eventfd
    uint64_t ho_kick       # bit w: frames handed to worker w this round
    uint32_t vip4[MAX_VIPS]
    uint8_t vip6[MAX_VIPS][16]
    int nvip4
    int nvip6
    uint32_t aux_ready
    int64_t aux_polled
    int64_t spin_ns        # watch the RX rings this long before sleeping in poll
    uint64_t c[C_N]


cdef inline void refill_all(XPumpC* s) noexcept nogil:
    cdef int fi
    for fi in range(s.nsk):
        xsk_refill(s.x[fi])


# -- handoff between workers ---------------------------------------------------------------
cdef inline uint32_t* ho_sleeping(XPumpC* s, int w) noexcept nogil:
    return <uint32_t*>(s.ho + <size_t>w * HO_LINE)


cdef inline uint8_t* ho_ring(XPumpC* s, int src, int dst) noexcept nogil:
    """The ring worker ``src`` hands frames to worker ``dst`` in: tail (src's) at +0,
    head (dst's) at +HO_LINE, the slots from +2*HO_LINE."""
    return (s.ho + <size_t>s.nw * HO_LINE
            + <size_t>(src * s.nw + dst) * (2 * HO_LINE + <size_t>s.ho_slots * HO_SLOT))


cdef inline bint is_vip(XPumpC* s, const uint8_t* a, int af) noexcept nogil:
    cdef int i
    cdef uint32_t v
    if af == 4:
        memcpy(&v, a, 4)
        for i in range(s.nvip4):
            if s.vip4[i] == v:
                return True
    else:
        for i in range(s.nvip6):
            if memcmp(s.vip6[i], a, 16) == 0:
                return True
    return False


cdef inline int owner_of(XPumpC* s, const uint8_t* p, uint32_t length) noexcept nogil:
    """The worker that owns the frame's connection: the client endpoint (source of a
    frame to a VIP, else destination: address low 32 bits ^ TCP/UDP port) hashed as
    fastvs/live/bpf.py fanout_worker does. Non-IP frames stay where they came in."""
    cdef uint16_t et
    cdef uint32_t l4, a, port = 0
    cdef const uint8_t* addr
    cdef int af, pofs
    cdef uint8_t proto
    if length < 34:
        return s.wid
    et = (<uint32_t>p[12] << 8) | p[13]
    if et == 0x0800:
        af = 4
        l4 = 14 + (<uint32_t>(p[14] & 15) << 2)
        proto = p[23]
        if is_vip(s, p + 30, 4):
            addr = p + 26
            pofs = 0
        else:
            addr = p + 30
            pofs = 2
    elif et == 0x86DD and length >= 54:
        af = 6
        l4 = 54
        proto = p[20]
        if is_vip(s, p + 38, 6):
            addr = p + 22 + 12
            pofs = 0
        else:
            addr = p + 38 + 12
            pofs = 2
    else:
        return s.wid
    if (proto == 6 or proto == 17) and l4 + 4 <= length:
        port = (<uint32_t>p[l4 + pofs] << 8) | p[l4 + pofs + 1]
    a = ((<uint32_t>addr[0] << 24) | (<uint32_t>addr[1] << 16) | (<uint32_t>addr[2] << 8)
         | addr[3]) ^ port
    a = (a >> 16) ^ a
    a = a * <uint32_t>FANOUT_MIX
    a = (a >> 16) ^ a
    return <int>(a % <uint32_t>s.nw)


cdef inline bint ho_push(XPumpC* s, int dst, const uint8_t* frame, uint32_t length,
                         uint8_t side) noexcept nogil:
    """Copy a frame into the ring to worker ``dst``; False when that ring is full."""
    cdef uint8_t* r = ho_ring(s, s.wid, dst)
    cdef uint32_t* tail = <uint32_t*>r
    cdef uint32_t t = tail[0]
    cdef uint8_t* slot
    if t - fv_load_acquire(<uint32_t*>(r + HO_LINE)) >= s.ho_slots:
        return False
    slot = r + 2 * HO_LINE + <size_t>(t & (s.ho_slots - 1)) * HO_SLOT
    (<HoSlot*>slot).length = length
    (<HoSlot*>slot).side = side
    memcpy(slot + HO_HDR, frame, length)
    fv_store_release(tail, t + 1)
    s.ho_kick |= (<uint64_t>1) << dst
    return True


cdef inline bint ho_pending(XPumpC* s) noexcept nogil:
    cdef int src
    cdef uint8_t* r
    for src in range(s.nw):
        if src != s.wid:
            r = ho_ring(s, src, s.wid)
            if fv_load_acquire(<uint32_t*>r) != (<uint32_t*>(r + HO_LINE))[0]:
                return True
    return False


cdef inline void ho_wake(XPumpC* s) noexcept nogil:
    """Write the eventfd of every worker handed frames this round that said it sleeps."""
    cdef int w
    cdef uint64_t one = 1
    if s.ho_kick == 0:
        return
    fv_fence()
    for w in range(s.nw):
        if s.ho_kick & ((<uint64_t>1) << w) and fv_load_acquire(ho_sleeping(s, w)):
            if write(s.efd[w], &one, 8) == 8:
                s.c[C_HANDOFF_WAKEUPS] += 1
    s.ho_kick = 0


cdef Py_ssize_t ho_take(XPumpC* s, Py_ssize_t n, uint32_t room, int64_t now) noexcept nogil:
    """Append up to ``room`` frames the other workers handed this one to the batch (at
    ``n``), each copied into a free frame of this worker's UMEM. Returns the new n."""
    cdef int src
    cdef uint8_t* r
    cdef uint32_t* head
    cdef uint32_t h, t
    cdef uint8_t* slot
    cdef uint64_t addr
    cdef uint32_t length
    for src in range(s.nw):
        if src == s.wid:
            continue
        r = ho_ring(s, src, s.wid)
        head = <uint32_t*>(r + HO_LINE)
        h = head[0]
        t = fv_load_acquire(<uint32_t*>r)
        while h != t and room > 0 and s.umem.nfree > 0:
            slot = r + 2 * HO_LINE + <size_t>(h & (s.ho_slots - 1)) * HO_SLOT
            length = (<HoSlot*>slot).length
            s.umem.nfree -= 1
            addr = s.umem.free[s.umem.nfree] + s.umem.headroom
            memcpy(s.buf + addr, slot + HO_HDR, length)
            s.off[n] = <uint32_t>addr
            s.caplen[n] = length
            s.wirelen[n] = length
            s.ts[n] = now
            s.linktype[n] = LT_EN10MB
            s.verdict[n] = 0
            s.side[n] = (<HoSlot*>slot).side
            s.sent[n] = 0
            s.c[C_HANDOFF_IN] += 1
            n += 1
            h += 1
            room -= 1
        fv_store_release(head, h)
    return n


cdef bint rx_spin(XPumpC* s) noexcept nogil:
    """Watch the RX rings (and the handoff rings) for up to spin_ns before sleeping in
    poll: a frame that comes meanwhile is taken without a wake-up."""
    cdef int64_t end = mono_ns() + s.spin_ns
    cdef int fi, _k
    while True:
        for _k in range(64):
            for fi in range(s.nsk):
                if xsk_rx_ready(s.x[fi]):
                    return True
            if s.nw > 1 and ho_pending(s):
                return True
            fv_cpu_relax()
        if mono_ns() >= end:
            return False


cdef Py_ssize_t pump_rx(XPumpC* s, int timeout_ms) noexcept nogil:
    """Refill every socket, poll unless frames are waiting, take up to ``batch`` frames
    from each socket (handing other workers theirs) and up to ``batch`` handed to this
    one. Returns frames in the batch."""
    cdef int i, fi, w
    cdef bint ready = False
    cdef Py_ssize_t n = 0, start, idx
    cdef uint32_t k, j
    cdef int64_t now
    cdef uint8_t* p
    cdef uint64_t junk
    cdef int r
    refill_all(s)
    s.aux_ready = 0
    for i in range(s.npfd):
        s.pfd[i].revents = 0
    for fi in range(s.nsk):
        if xsk_rx_ready(s.x[fi]):
            ready = True
    if not ready and s.spin_ns > 0:
        ready = rx_spin(s)
    if s.nw > 1 and not ready:
        fv_store_release(ho_sleeping(s, s.wid), 1)
        fv_fence()           # the flag before the look at the rings (ho_wake: the reverse)
        ready = ho_pending(s)
        if ready:
            fv_store_release(ho_sleeping(s, s.wid), 0)
    now = mono_ns()
    if ready:
        if s.npfd > s.ndata and now - s.aux_polled >= AUX_POLL_NS:
            # busy: look at the aux fds (ARP/ND) once a millisecond, not every round
            s.aux_polled = now
            if poll(s.pfd + s.ndata, s.npfd - s.ndata, 0) > 0:
                for i in range(s.ndata, s.npfd):
                    if s.pfd[i].revents:
                        s.aux_ready |= 1u << (i - s.ndata)
    else:
        s.c[C_POLLS] += 1
        r = poll(s.pfd, s.npfd, timeout_ms)
        if s.nw > 1:
            fv_store_release(ho_sleeping(s, s.wid), 0)
            if s.pfd[s.nsk].revents:
                read(s.efd[s.wid], &junk, 8)
        if r <= 0:
            return 0
        for i in range(s.ndata, s.npfd):
            if s.pfd[i].revents:
                s.aux_ready |= 1u << (i - s.ndata)
        refill_all(s)             # TX completed while we slept
        now = mono_ns()
    for fi in range(s.nsk):
        start = n
        k = xsk_rx(s.x[fi], s.off + n, s.caplen + n, s.batch)
        for j in range(k):
            idx = start + j                 # n <= idx: compact in place
            if s.caplen[idx] > s.max_frame:
                s.c[C_DROP_OVERSIZE] += 1
                umem_recycle(s.umem, s.off[idx])
                continue
            p = s.buf + s.off[idx]
            if l2_csum_complete(p, s.caplen[idx], True):
                s.l2.c[L2_CSUM_COMPLETED] += 1
            s.c[C_RX] += 1
            s.c[C_RX_BYTES] += s.caplen[idx]
            if s.nw > 1:
                w = owner_of(s, p, s.caplen[idx])
                if w != s.wid:            # another worker's connection: hand it over
                    if ho_push(s, w, p, s.caplen[idx], <uint8_t>(fi if s.nsk == 2 else SIDE_CLIENT)):
                        s.c[C_HANDOFF_OUT] += 1
                    else:
                        s.c[C_HANDOFF_FULL] += 1
                    umem_recycle(s.umem, s.off[idx])
                    continue
            s.off[n] = s.off[idx]
            s.caplen[n] = s.caplen[idx]
            s.wirelen[n] = s.caplen[n]
            s.ts[n] = now
            s.linktype[n] = LT_EN10MB
            s.verdict[n] = 0
            s.side[n] = <uint8_t>(fi if s.nsk == 2 else SIDE_CLIENT)
            s.sent[n] = 0
            n += 1
    if s.nw > 1:
        ho_wake(s)
        n = ho_take(s, n, s.batch, now)
    s.last_n = n
    return n


cdef void pump_tx(XPumpC* s, Py_ssize_t n) noexcept nogil:
    """The L2 output stage, one xsk_tx per side, every other frame back to the UMEM."""
    cdef int out
    cdef uint32_t q
    cdef Py_ssize_t b
    l2_out(s.l2, s.buf, s.off, s.caplen, s.ts, s.verdict, s.side, n,
           s.txidx[0], s.txidx[1], s.ntx)
    for out in range(2):
        if s.ntx[out] == 0:
            continue
        s.c[C_TX_BYTES] += l2_gather(s.txidx[out], s.ntx[out], s.off, s.caplen, s.txoff,
                                     s.txlen, s.sent)
        q = xsk_tx(s.x[out if s.nsk == 2 else 0], s.txoff, s.txlen, <uint32_t>s.ntx[out])
        s.c[C_TX] += q
        if q < <uint32_t>s.ntx[out]:      # xsk_tx recycled the rest
            s.c[C_DROP_TX_ERROR] += <uint32_t>s.ntx[out] - q
    for b in range(n):
        if not s.sent[b]:
            umem_recycle(s.umem, s.off[b])
            s.c[C_NOT_SENT] += 1
    for b in range(n, s.last_n):        # taken but not handed to the engine
        umem_recycle(s.umem, s.off[b])
    s.last_n = 0


cdef void pump_release(XPumpC* s) noexcept nogil:
    cdef Py_ssize_t b
    for b in range(s.last_n):
        umem_recycle(s.umem, s.off[b])
    s.last_n = 0


cdef Py_ssize_t xdp_rx(void* p, int timeout_ms) noexcept nogil:
    return pump_rx(<XPumpC*>p, timeout_ms)


cdef void xdp_tx(void* p, Py_ssize_t n) noexcept nogil:
    pump_tx(<XPumpC*>p, n)


cdef class XdpPump:
    """Receive and send batches on one or two AF_XDP sockets sharing one UMEM (the
    ``xdp`` FrameIO backend: fastvs/live/io.py; wrapped by fastvs/live/afxdp.py).

    ``client``/``server`` are bound :class:`XskSocket` s on the same :class:`Umem`
    (the same object for a one-arm director); ``l2`` the L2 stage. Up to ``batch``
    frames are taken per socket per round; frames longer than ``max_frame`` are
    dropped. Descriptors given to :meth:`watch` are polled with the sockets and
    reported in :attr:`aux_ready`. :attr:`buf` is the UMEM (valid while the sockets
    are open).
    """
    cdef XPumpC s
    cdef readonly object buf, off, caplen, wirelen, ts, linktype, verdict
    cdef readonly L2Stage l2
    cdef readonly XskSocket client, server
    cdef object _side, _sent, _area, _engine
    cdef BatchEntry* _entry
    cdef bint _closed

    def __cinit__(self, XskSocket client not None, XskSocket server not None, L2Stage l2 not None,
                  *, unsigned int batch=256, unsigned int max_frame=1518, unsigned int spin_us=0):
        cdef int i, side
        cdef uint32_t n
        memset(&self.s, 0, sizeof(XPumpC))
        if spin_us > 100_000:
            raise ValueError("spin_us must be 0..100000")
        self.s.spin_ns = <int64_t>spin_us * 1000
        if batch < 1 or batch > 4096:
            raise ValueError("batch must be 1..4096")
        if client.umem is not server.umem:
            raise ValueError("the sockets must share one UMEM")
        if client.fileno() < 0 or server.fileno() < 0:
            raise ValueError("closed socket")
        self.client = client
        self.server = server
        self.l2 = l2
        self.s.l2 = &l2.s
        self.s.x[0] = &client.x
        self.s.x[1] = &server.x
        self.s.nsk = 1 if client is server else 2
        self.s.batch = batch
        self.s.max_frame = max_frame
        self.s.umem = &client.umem.u
        self.s.buf = client.umem.u.area
        self.buf = client.umem.buf
        n = batch * <uint32_t>(self.s.nsk + 1)   # a batch per socket, one handed over
        self.off = np.zeros(n, dtype=np.uint32)
        self.caplen = np.zeros(n, dtype=np.uint32)
        self.wirelen = np.zeros(n, dtype=np.uint32)
        self.ts = np.zeros(n, dtype=np.int64)
        self.linktype = np.ones(n, dtype=np.uint16)
        self.verdict = np.zeros(n, dtype=np.uint8)
        self._side = np.zeros(n, dtype=np.uint8)
        self._sent = np.zeros(n, dtype=np.uint8)
        self.s.off = _ptr32(self.off)
        self.s.caplen = _ptr32(self.caplen)
        self.s.wirelen = _ptr32(self.wirelen)
        self.s.ts = _ptr64(self.ts)
        self.s.linktype = _ptr16(self.linktype)
        self.s.verdict = _ptr8(self.verdict)
        self.s.side = _ptr8(self._side)
        self.s.sent = _ptr8(self._sent)
        for side in range(2):
            self.s.txidx[side] = <uint32_t*>calloc(n, sizeof(uint32_t))
        self.s.txoff = <uint32_t*>calloc(n, sizeof(uint32_t))
        self.s.txlen = <uint32_t*>calloc(n, sizeof(uint32_t))
        if (self.s.txidx[0] == NULL or self.s.txidx[1] == NULL or self.s.txoff == NULL
                or self.s.txlen == NULL):
            raise MemoryError()
        for i in range(self.s.nsk):
            self.s.pfd[i].fd = self.s.x[i].fd
            self.s.pfd[i].events = POLLIN
        self.s.ndata = self.s.nsk
        self.s.npfd = self.s.nsk
        self.s.nw = 1

    def handoff(self, area, int workers, int worker, efds, unsigned int slots):
        """Join the handoff between ``workers`` workers as ``worker``: ``area`` is the
        shared memory (writable, :func:`handoff_size` bytes, zeroed before the first
        worker started), ``efds`` every worker's eventfd, ``slots`` per ring (a power of
        two). Call before :meth:`watch`."""
        cdef uint8_t[::1] v = area
        cdef int i
        if not 2 <= workers <= MAX_WORKERS or not 0 <= worker < workers:
            raise ValueError(f"workers must be 2..{MAX_WORKERS} and worker below it")
        if slots == 0 or slots & (slots - 1) or len(efds) != workers:
            raise ValueError("slots must be a power of two, one eventfd per worker")
        if <size_t>v.shape[0] < <size_t>handoff_size(workers, slots):
            raise ValueError("handoff area too small")
        if self.s.npfd > self.s.ndata:
            raise ValueError("handoff after watch")
        self._area = area
        self.s.ho = &v[0]
        self.s.ho_slots = slots
        self.s.nw = workers
        self.s.wid = worker
        for i in range(workers):
            self.s.efd[i] = efds[i]
        self.s.pfd[self.s.nsk].fd = efds[worker]
        self.s.pfd[self.s.nsk].events = POLLIN
        self.s.ndata = self.s.nsk + 1
        self.s.npfd = self.s.ndata

    def set_vips(self, vips):
        """The VIPs (packed: 4 or 16 bytes each) that tell a request (client endpoint:
        the source) from a reply (the destination) when picking a frame's worker."""
        _set_vips(&self.s, vips)

    def __dealloc__(self):
        self._free()

    cdef void _free(self) noexcept:
        free(self.s.txidx[0])
        free(self.s.txidx[1])
        free(self.s.txoff)
        free(self.s.txlen)
        self.s.txidx[0] = self.s.txidx[1] = NULL
        self.s.txoff = self.s.txlen = NULL

    def close(self):
        """Free the batch's C memory (the sockets and UMEM are the caller's). The pump
        cannot be used afterwards; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self.buf = None
        self._free()

    def watch(self, fds):
        """Poll these descriptors with the sockets (at most 6; e.g. the ARP/ND sockets);
        bit i of :attr:`aux_ready` says fds[i] was readable."""
        cdef int i
        fds = list(fds)
        if len(fds) > MAX_AUX:
            raise ValueError(f"at most {MAX_AUX} watched descriptors")
        for i, fd in enumerate(fds):
            self.s.pfd[self.s.ndata + i].fd = fd
            self.s.pfd[self.s.ndata + i].events = POLLIN
        self.s.npfd = self.s.ndata + len(fds)

    def fds(self):
        """The AF_XDP sockets' descriptors (one for a one-arm director)."""
        return [self.s.x[i].fd for i in range(self.s.nsk)]

    def receive(self, int timeout_ms=100):
        """Refill, poll (up to ``timeout_ms`` when nothing is waiting) and take a batch:
        returns the number of frames in ``off[:n]`` etc. (UMEM offsets), 0 on timeout.
        The frames stay the pump's until :meth:`transmit` or :meth:`release`."""
        cdef Py_ssize_t n
        if self._closed:
            raise ValueError("receive on a closed XdpPump")
        with nogil:
            pump_release(&self.s)       # a batch neither sent nor released
            n = pump_rx(&self.s, timeout_ms)
        return n

    def bind_engine(self, engine):
        """The engine :meth:`run` hands batches to; kept referenced by the pump."""
        self._entry = <BatchEntry*>PyCapsule_GetPointer(engine.batch_entry(), BATCH_ENTRY_NAME)
        self._engine = engine

    def run(self, int timeout_ms, int64_t budget_ns):
        """``receive``, the bound engine, ``transmit``, batch after batch in C over
        the AF_XDP sockets (frames of an unsent batch back to the UMEM first).
        ``io_run`` (fastvs/live/_l2.pxd) says until when. Returns the frames handed to
        the engine."""
        cdef Py_ssize_t total
        if self._closed:
            raise ValueError("run on a closed XdpPump")
        if self._entry == NULL:
            raise ValueError("run before bind_engine")
        with nogil:
            pump_release(&self.s)
            total = io_run(&self.s, xdp_rx, xdp_tx, self._entry, self.s.buf, <Py_ssize_t>self.s.umem.size,
                           self.s.off, self.s.caplen, self.s.wirelen, self.s.ts, self.s.linktype,
                           self.s.verdict, &self.s.aux_ready, self.s.l2, timeout_ms, budget_ns)
        return total

    def transmit(self, Py_ssize_t n):
        """After ``Engine.process`` over the first ``n`` frames: the L2 output stage, one
        xsk_tx per side, the other frames back to the UMEM."""
        if self._closed:
            raise ValueError("transmit on a closed XdpPump")
        if n < 0 or n > self.s.last_n:
            raise ValueError("transmit: n outside the batch")
        with nogil:
            pump_tx(&self.s, n)

    def release(self):
        """Give the frames of the last :meth:`receive` back without sending any."""
        if not self._closed:
            with nogil:
                pump_release(&self.s)

    @property
    def aux_ready(self):
        """Bit i set: watched descriptor i was readable at the last poll."""
        return self.s.aux_ready

    def counters(self):
        """I/O counters since creation: {name: count}."""
        return {COUNTER_NAMES[i]: self.s.c[i] for i in range(C_N)}


def frame_owner(const uint8_t[::1] frame, vips, unsigned int workers):
    """The worker (0..workers-1) the pump hands ``frame`` (Ethernet) to, given the VIPs
    (packed); for tests against fastvs/live/bpf.py fanout_worker."""
    cdef XPumpC s
    memset(&s, 0, sizeof(XPumpC))
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be 1..{MAX_WORKERS}")
    s.nw = workers
    _set_vips(&s, vips)
    if frame.shape[0] == 0:
        return 0
    return owner_of(&s, &frame[0], <uint32_t>frame.shape[0])


cdef int _set_vips(XPumpC* s, vips) except -1:
    cdef int n4 = 0, n6 = 0
    cdef uint32_t v4
    cdef const uint8_t[::1] b
    vips = [bytes(v) for v in vips]
    if len(vips) > MAX_VIPS:
        raise ValueError(f"at most {MAX_VIPS} VIPs")
    for v in vips:
        b = v
        if len(v) == 4:
            memcpy(&v4, &b[0], 4)
            s.vip4[n4] = v4
            n4 += 1
        elif len(v) == 16:
            memcpy(s.vip6[n6], &b[0], 16)
            n6 += 1
        else:
            raise ValueError("a VIP is 4 or 16 bytes")
    s.nvip4 = n4
    s.nvip6 = n6
    return 0


cdef uint32_t* _ptr32(arr):
    cdef uint32_t[::1] v = arr
    return &v[0]


cdef int64_t* _ptr64(arr):
    cdef int64_t[::1] v = arr
    return &v[0]


cdef uint16_t* _ptr16(arr):
    cdef uint16_t[::1] v = arr
    return &v[0]


cdef uint8_t* _ptr8(arr):
    cdef uint8_t[::1] v = arr
    return &v[0]
