"""AF_XDP frame I/O for the live forwarder: the ``xdp`` backend's per-frame work.

An :class:`XdpPump` drives one or two AF_XDP sockets (fastvs/live/xdp/_xsk.pyx) that
share one UMEM: the client side's socket (which registered the UMEM) and the server
side's (``XDP_SHARED_UMEM``), or a single one for a one-arm director. The UMEM *is* the
batch buffer: :meth:`XdpPump.receive` takes up to ``batch`` frames off each socket's RX
ring into one pair of ``off``/``caplen`` arrays (UMEM offsets, where the kernel put the
frames), remembers which side each came in on, stamps them with one CLOCK_MONOTONIC
reading and completes offloaded checksums (``csum_complete_partial``: copy mode hands
over a veth peer's CHECKSUM_PARTIAL frames without a flag). The engine rewrites them in
place; :meth:`XdpPump.transmit` runs the shared L2 output stage (fastvs/live/_l2.pxd:
neighbour lookup, MAC rewrite, frames sorted by side), puts each side's frames on its
socket's TX ring with one ``xsk_tx`` (same UMEM addresses: no copy in user space) and
gives every frame not sent back to the UMEM (``umem_recycle``). Every round refills
each socket's fill ring from the completion ring and the free frames.

Both run without the GIL and touch no Python object per frame. The Python side
(programs, attachment, sockets, fallback) is fastvs/live/afxdp.py.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

from fastvs.datapath._packet cimport LT_EN10MB
from fastvs.live._l2 cimport (L2Stage, L2State, L2_CSUM_COMPLETED, SIDE_CLIENT, l2_out,
                              l2_gather, mono_ns)
from fastvs.live.xdp._xsk cimport (XskC, UmemC, XskSocket, xsk_rx, xsk_tx, xsk_refill,
                                   xsk_rx_ready, umem_recycle, csum_complete_partial)

import numpy as np


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
    C_N

COUNTER_NAMES = (
    "rx", "rx_bytes", "tx", "tx_bytes", "drop_oversize", "drop_tx_error", "recycled_not_sent",
    "polls",
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
    pollfd pfd[8]
    int npfd               # data fds first, then aux fds
    uint32_t aux_ready
    int64_t aux_polled
    uint64_t c[C_N]


cdef inline void refill_all(XPumpC* s) noexcept nogil:
    cdef int fi
    for fi in range(s.nsk):
        xsk_refill(s.x[fi])


cdef Py_ssize_t pump_rx(XPumpC* s, int timeout_ms) noexcept nogil:
    """Refill every socket, poll unless frames are waiting, take up to ``batch`` frames
    from each socket. Returns frames in the batch."""
    cdef int i, fi
    cdef bint ready = False
    cdef Py_ssize_t n = 0, start, idx
    cdef uint32_t k, j
    cdef int64_t now
    cdef uint8_t* p
    refill_all(s)
    s.aux_ready = 0
    for i in range(s.npfd):
        s.pfd[i].revents = 0
    for fi in range(s.nsk):
        if xsk_rx_ready(s.x[fi]):
            ready = True
    now = mono_ns()
    if ready:
        if s.npfd > s.nsk and now - s.aux_polled >= AUX_POLL_NS:
            # busy: look at the aux fds (ARP/ND) once a millisecond, not every round
            s.aux_polled = now
            if poll(s.pfd + s.nsk, s.npfd - s.nsk, 0) > 0:
                for i in range(s.nsk, s.npfd):
                    if s.pfd[i].revents:
                        s.aux_ready |= 1u << (i - s.nsk)
    else:
        s.c[C_POLLS] += 1
        if poll(s.pfd, s.npfd, timeout_ms) <= 0:
            return 0
        for i in range(s.nsk, s.npfd):
            if s.pfd[i].revents:
                s.aux_ready |= 1u << (i - s.nsk)
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
            s.off[n] = s.off[idx]
            s.caplen[n] = s.caplen[idx]
            p = s.buf + s.off[n]
            if csum_complete_partial(p, s.caplen[n]):
                s.l2.c[L2_CSUM_COMPLETED] += 1
            s.c[C_RX] += 1
            s.c[C_RX_BYTES] += s.caplen[n]
            s.wirelen[n] = s.caplen[n]
            s.ts[n] = now
            s.linktype[n] = LT_EN10MB
            s.verdict[n] = 0
            s.side[n] = <uint8_t>(fi if s.nsk == 2 else SIDE_CLIENT)
            s.sent[n] = 0
            n += 1
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
    cdef object _side, _sent
    cdef bint _closed

    def __cinit__(self, XskSocket client not None, XskSocket server not None, L2Stage l2 not None,
                  *, unsigned int batch=256, unsigned int max_frame=1518):
        cdef int i, side
        cdef uint32_t n
        memset(&self.s, 0, sizeof(XPumpC))
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
        n = batch * <uint32_t>self.s.nsk
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
        self.s.npfd = self.s.nsk

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
            self.s.pfd[self.s.nsk + i].fd = fd
            self.s.pfd[self.s.nsk + i].events = POLLIN
        self.s.npfd = self.s.nsk + len(fds)

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
