"""AF_PACKET frame I/O for the live forwarder: the ``ring-v2``, ``ring-v3`` and ``mmsg``
backends (receive a batch, transmit a batch), and the socket options they need.

A :class:`Pump` owns one receive batch shaped like a :class:`fastvs.capture.batch.PacketBatch`
(one buffer, ``off``/``caplen``/``wirelen``/``ts``/``linktype``/``verdict`` arrays) and
fills it from its client and server sockets in one of three ways (``io=``):

- ``"ring-v3"``: each socket has a TPACKET_V3 memory-mapped RX ring (set up with
  :func:`setup_rx_ring` before the socket is bound). The rings of both sockets are
  mapped side by side into one reserved address range, and that range *is* the batch
  buffer: ``off`` points at each frame's MAC header inside its ring block, so the engine
  rewrites frames where the kernel put them and ``sendmmsg`` sends them from there. No
  receive system call and no copy in user space; a block goes back to the kernel once
  every frame in it has been sent.
- ``"ring-v2"``: the same with a TPACKET_V2 ring: fixed-size frame slots, each handed
  over (and its reader woken) as soon as the kernel has written it, so no block timeout
  adds latency; each frame goes back after the send.
- ``"mmsg"``: ``recvmmsg`` into fixed slots of a private buffer, the status of each
  frame from PACKET_AUXDATA control messages.

:meth:`Pump.receive` polls the data sockets (only when nothing is waiting in the rings)
and any watched descriptors (ARP/ND sockets, reported in :attr:`Pump.aux_ready`), takes
up to ``batch`` frames per socket stamped with one CLOCK_MONOTONIC reading, completes
the L4 checksum of frames the kernel marked ``TP_STATUS_CSUMNOTREADY`` and refuses
frames larger than the MTU or cut short. The caller runs ``Engine.process`` over the
batch; :meth:`Pump.transmit` hands it to the L2 output stage (fastvs/live/_l2.pxd: MAC
rewrite, frames sorted by side) and sends each side's frames with one ``sendmmsg``.
Both run without the GIL and touch no Python object per packet. The Python side
(opening the sockets, the FrameIO wrapper) is fastvs/live/afpacket.py.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.errno cimport errno, EINTR
from posix.time cimport timespec
from posix.mman cimport (mmap, munmap, PROT_READ, PROT_WRITE, PROT_NONE, MAP_SHARED,
                         MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED, MAP_FAILED, MAP_NORESERVE)

from fastvs.datapath._packet cimport LT_EN10MB
from fastvs.datapath._types cimport BatchEntry, BATCH_ENTRY_NAME
from fastvs.live._l2 cimport (L2Stage, L2State, L2_CSUM_COMPLETED, SIDE_CLIENT, l2_out,
                              l2_gather, l2_csum_complete, mono_ns, io_run, fv_cpu_relax)

import os

import numpy as np

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr* CMSG_FIRSTHDR(msghdr*)
    cmsghdr* CMSG_NXTHDR(msghdr*, cmsghdr*)
    unsigned char* CMSG_DATA(cmsghdr*)
    int recvmmsg(int, mmsghdr*, unsigned int, int, timespec*)
    int sendmmsg(int, mmsghdr*, unsigned int, int)
    int setsockopt(int, int, int, const void*, socklen_t)
    int getsockopt(int, int, int, void*, socklen_t*)
    enum:
        MSG_DONTWAIT
        MSG_TRUNC
        SOL_SOCKET
        SO_ATTACH_FILTER

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd*, unsigned long, int)
    enum:
        POLLIN

cdef extern from "<linux/filter.h>" nogil:
    struct sock_filter:
        uint16_t code
        uint8_t jt
        uint8_t jf
        uint32_t k
    struct sock_fprog:
        unsigned short len
        sock_filter* filter

cdef extern from "<linux/if_packet.h>" nogil:
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]
    struct tpacket_auxdata:
        uint32_t tp_status
        uint32_t tp_len
        uint32_t tp_snaplen
        uint16_t tp_mac
        uint16_t tp_net
        uint16_t tp_vlan_tci
        uint16_t tp_vlan_tpid
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word
    struct tpacket2_hdr:
        uint32_t tp_status
        uint32_t tp_len
        uint32_t tp_snaplen
        uint16_t tp_mac
        uint16_t tp_net
    struct tpacket_hdr_variant1:
        uint32_t tp_rxhash
        uint32_t tp_vlan_tci
        uint16_t tp_vlan_tpid
        uint16_t tp_padding
    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_sec
        uint32_t tp_nsec
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        uint16_t tp_net
        tpacket_hdr_variant1 hv1
    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
        uint32_t blk_len
    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1
    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr
    struct tpacket_stats:
        unsigned int tp_packets
        unsigned int tp_drops
    enum:
        PACKET_HOST
        PACKET_BROADCAST
        PACKET_MULTICAST
        PACKET_OTHERHOST
        PACKET_OUTGOING
        PACKET_AUXDATA
        PACKET_FANOUT
        PACKET_FANOUT_DATA
        PACKET_FANOUT_CBPF
        PACKET_QDISC_BYPASS
        PACKET_IGNORE_OUTGOING
        PACKET_VERSION
        PACKET_RX_RING
        PACKET_STATISTICS
        PACKET_ADD_MEMBERSHIP
        PACKET_MR_MULTICAST
        TPACKET_V2
        TPACKET_V3
        TP_STATUS_KERNEL
        TP_STATUS_USER
        TP_STATUS_CSUMNOTREADY
        TP_STATUS_CSUM_VALID
        TP_STATUS_VLAN_VALID

cdef extern from *:
    """
    #ifndef SOL_PACKET
    #define SOL_PACKET 263
    #endif
    /* the block status word is shared with the kernel: acquire on read (the frames
       written before it are visible), release on hand-back */
    static inline unsigned int fv_block_status(void* p) {
        return __atomic_load_n(&((struct tpacket_block_desc*)p)->hdr.bh1.block_status,
                               __ATOMIC_ACQUIRE);
    }
    static inline void fv_block_release(void* p) {
        __atomic_store_n(&((struct tpacket_block_desc*)p)->hdr.bh1.block_status,
                         TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    }
    /* a TPACKET_V2 frame's status word, the same way */
    static inline unsigned int fv_frame_status(void* p) {
        return __atomic_load_n(&((struct tpacket2_hdr*)p)->tp_status, __ATOMIC_ACQUIRE);
    }
    static inline void fv_frame_release(void* p) {
        __atomic_store_n(&((struct tpacket2_hdr*)p)->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    }
    #define FV_TP3_SLL_OFF (TPACKET_ALIGN(sizeof(struct tpacket3_hdr)))
    #define FV_TP2_SLL_OFF (TPACKET_ALIGN(sizeof(struct tpacket2_hdr)))
    """
    int SOL_PACKET_ "SOL_PACKET"
    unsigned int fv_block_status(void* p) nogil
    void fv_block_release(void* p) nogil
    unsigned int fv_frame_status(void* p) nogil
    void fv_frame_release(void* p) nogil
    size_t FV_TP3_SLL_OFF
    size_t FV_TP2_SLL_OFF

# -- constants for the Python side (socket options, BPF) ------------------------------------
SOL_PACKET = SOL_PACKET_
OPT_AUXDATA = PACKET_AUXDATA
OPT_FANOUT = PACKET_FANOUT
OPT_FANOUT_DATA = PACKET_FANOUT_DATA
OPT_QDISC_BYPASS = PACKET_QDISC_BYPASS
OPT_IGNORE_OUTGOING = PACKET_IGNORE_OUTGOING
OPT_ADD_MEMBERSHIP = PACKET_ADD_MEMBERSHIP
MR_MULTICAST = PACKET_MR_MULTICAST
FANOUT_CBPF = PACKET_FANOUT_CBPF
IO_MODES = ("ring-v3", "ring-v2", "mmsg")

# verdicts the transmit side acts on (fastvs/verdicts.py)

cdef enum:
    CTRL_SZ = 64            # >= CMSG_SPACE(sizeof(struct tpacket_auxdata))
    AUX_POLL_NS = 1000000   # aux fds looked at this often while data keeps coming
    MAX_AUX = 6             # watched descriptors besides the data sockets

# counters, in COUNTER_NAMES order
cdef enum:
    C_RX = 0
    C_RX_BYTES
    C_TX
    C_TX_BYTES
    C_DROP_OVERSIZE
    C_RX_IGNORED
    C_DROP_TX_ERROR
    C_RX_VLAN_STRIPPED
    C_RX_CALLS
    C_TX_CALLS
    C_RX_BLOCKS
    C_RING_BAD
    C_N

COUNTER_NAMES = (
    "rx", "rx_bytes", "tx", "tx_bytes", "drop_oversize", "rx_ignored", "drop_tx_error",
    "rx_vlan_stripped", "rx_calls", "tx_calls", "rx_blocks", "drop_ring_bad",
)


def attach_filter(int fd, bytes program, bint fanout=False):
    """Attach a classic BPF program (``struct sock_filter`` records, 8 bytes each) as
    the socket filter (SO_ATTACH_FILTER) or as the PACKET_FANOUT_CBPF steering program
    (PACKET_FANOUT_DATA)."""
    cdef sock_fprog prog
    cdef int rc
    if len(program) == 0 or len(program) % 8:
        raise ValueError("a BPF program is a non-empty sequence of 8-byte instructions")
    prog.len = <unsigned short>(len(program) // 8)
    prog.filter = <sock_filter*><const char*>program
    if fanout:
        rc = setsockopt(fd, SOL_PACKET_, PACKET_FANOUT_DATA, &prog, sizeof(prog))
    else:
        rc = setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog))
    if rc != 0:
        raise OSError(errno, os.strerror(errno))


def ring_geometry(unsigned int block_size, unsigned int block_nr):
    """Check a TPACKET_V3 ring's shape; returns its mapped size in bytes."""
    cdef size_t page = os.sysconf("SC_PAGE_SIZE")
    if block_size < page or block_size & (block_size - 1) or block_size > (1u << 24):
        raise ValueError(f"ring block size must be a power of two, {page} .. 16 MiB")
    if block_nr < 2 or <uint64_t>block_size * block_nr > (1u << 30):
        raise ValueError("ring needs 2 or more blocks and at most 1 GiB")
    return <size_t>block_size * block_nr


def setup_rx_ring(int fd, unsigned int block_size, unsigned int block_nr,
                  unsigned int tov_ms=1, int version=3, unsigned int frame_size=2048):
    """Give an AF_PACKET socket a memory-mapped RX ring of ``block_nr`` blocks of
    ``block_size`` bytes. ``version=3``: TPACKET_V3, frames packed into blocks, a block
    handed to user space when full or ``tov_ms`` milliseconds after its first frame.
    ``version=2``: TPACKET_V2, fixed frames of ``frame_size`` bytes (a power of two up
    to the block size), each handed over as soon as it is written. Call before bind
    (and before PACKET_FANOUT); :class:`Pump` (``io="ring-v3"`` / ``"ring-v2"``) maps it."""
    cdef int ver = TPACKET_V3 if version == 3 else TPACKET_V2
    cdef tpacket_req3 req
    ring_geometry(block_size, block_nr)
    if version not in (2, 3):
        raise ValueError("version must be 2 or 3")
    if frame_size < 2048 or frame_size & (frame_size - 1) or frame_size > block_size:
        raise ValueError("frame_size must be a power of two, 2048 .. block size")
    memset(&req, 0, sizeof(req))
    req.tp_block_size = block_size
    req.tp_block_nr = block_nr
    req.tp_frame_size = frame_size
    req.tp_frame_nr = (block_size // frame_size) * block_nr
    if version == 3:
        req.tp_retire_blk_tov = tov_ms
    if setsockopt(fd, SOL_PACKET_, PACKET_VERSION, &ver, sizeof(ver)) != 0:
        raise OSError(errno, "PACKET_VERSION: " + os.strerror(errno))
    if setsockopt(fd, SOL_PACKET_, PACKET_RX_RING, &req, sizeof(req)) != 0:
        raise OSError(errno, "PACKET_RX_RING: " + os.strerror(errno))


def kernel_drops(int fd):
    """(packets, drops) the kernel counted for the socket since the last call
    (PACKET_STATISTICS; drops: receive buffer or ring full)."""
    cdef tpacket_stats st
    cdef unsigned int buf[4]
    cdef socklen_t n = sizeof(buf)
    memset(buf, 0, sizeof(buf))
    if getsockopt(fd, SOL_PACKET_, PACKET_STATISTICS, buf, &n) != 0:
        return 0, 0
    memcpy(&st, buf, sizeof(st))
    return st.tp_packets, st.tp_drops


# -- the pump ----------------------------------------------------------------------------------

ctypedef struct RingC:
    uint8_t* base          # this socket's ring, inside PumpC.buf
    bint v2                # TPACKET_V2: cur, block_nr, block_size count frames
    uint32_t block_size    # (V2: frame size)
    uint32_t block_nr      # (V2: frames)
    uint32_t cur           # the block (V2: frame) read next
    bint in_block          # cur is being walked (some of its frames already taken)
    uint32_t pkts_left     # frames of cur not yet taken
    uint32_t pkt_off       # offset of the next frame within cur
    uint32_t rel_first     # blocks (frames) finished this step: rel_first .. + nrel - 1
    uint32_t nrel


ctypedef struct PumpC:
    int fd[2]              # per side (client, server); equal in one-arm mode
    int nfds               # distinct data sockets (1 one-arm, 2 two-arm)
    int batch              # frames per socket per step
    bint ring              # io="ring-v3" or "ring-v2"
    uint32_t slot          # mmsg: bytes per slot
    uint32_t max_frame     # largest frame that can be sent (MTU + link header)
    int nslots
    uint8_t* buf
    size_t buflen
    uint32_t* off
    uint32_t* caplen
    uint32_t* wirelen
    int64_t* ts
    uint16_t* linktype
    uint8_t* verdict
    uint8_t* side          # which side each frame came in on
    mmsghdr* rxh
    iovec* rxiov
    sockaddr_ll* rxaddr
    uint8_t* rxctrl
    RingC rg[2]
    mmsghdr* txh[2]
    iovec* txiov[2]
    uint32_t* txidx[2]     # batch indexes the L2 stage sorted per outgoing side
    uint32_t* txoff        # one side's frames (l2_gather): offsets in buf, lengths
    uint32_t* txlen
    int ntx[2]
    L2State* l2            # the L2 stage (neighbours, MACs): PumpC belongs to a Pump
    # poll
    pollfd pfd[8]
    int npfd               # data fds first, then aux fds
    uint32_t aux_ready
    bint last_full
    int64_t aux_polled     # when the aux fds were last polled while data kept us busy
    int64_t spin_ns        # rings: watch them this long before sleeping in poll
    uint64_t c[C_N]


cdef inline bint take_frame(PumpC* s, Py_ssize_t n, uint8_t* p, uint32_t length,
                            uint32_t origlen, uint32_t status, int fi, int64_t now) noexcept nogil:
    """Checks shared by both receive paths; fills batch entry n. False: not taken."""
    if origlen > length or length > s.max_frame:
        s.c[C_DROP_OVERSIZE] += 1
        return False
    if status & TP_STATUS_VLAN_VALID:
        s.c[C_RX_VLAN_STRIPPED] += 1
    if status & TP_STATUS_CSUMNOTREADY:
        if l2_csum_complete(p, length, False):
            s.l2.c[L2_CSUM_COMPLETED] += 1
    s.off[n] = <uint32_t>(p - s.buf)
    s.caplen[n] = length
    s.wirelen[n] = length
    s.ts[n] = now
    s.linktype[n] = LT_EN10MB
    s.verdict[n] = 0
    s.side[n] = <uint8_t>(fi if s.nfds == 2 else SIDE_CLIENT)
    return True


cdef inline bint ring_ready(RingC* r) noexcept nogil:
    if r.v2:
        return (fv_frame_status(r.base + <size_t>r.cur * r.block_size) & TP_STATUS_USER) != 0
    return r.in_block or (fv_block_status(r.base + <size_t>r.cur * r.block_size) & TP_STATUS_USER) != 0


cdef inline bint rings_ready(PumpC* s) noexcept nogil:
    cdef int fi
    for fi in range(s.nfds):
        if ring_ready(&s.rg[fi]):
            return True
    return False


cdef bint rings_spin(PumpC* s) noexcept nogil:
    """Watch the rings' status words for up to spin_ns before going to sleep in poll:
    a frame that comes meanwhile is taken without a wake-up (the sender's CPU is spared
    the wake-up, and the frame the scheduling delay)."""
    cdef int64_t end = mono_ns() + s.spin_ns
    cdef int _k
    while True:
        for _k in range(64):
            if rings_ready(s):
                return True
            fv_cpu_relax()
        if mono_ns() >= end:
            return False


cdef Py_ssize_t ring2_rx(PumpC* s, int fi, Py_ssize_t n, int64_t now) noexcept nogil:
    """Take up to ``batch`` frames from socket fi's TPACKET_V2 ring; they go back to
    the kernel after the send (ring_release)."""
    cdef RingC* r = &s.rg[fi]
    cdef int room = s.batch
    cdef uint8_t* f
    cdef tpacket2_hdr* h
    cdef sockaddr_ll* ll
    cdef uint32_t st
    r.rel_first = r.cur
    r.nrel = 0
    while room > 0:
        f = r.base + <size_t>r.cur * r.block_size
        st = fv_frame_status(f)
        if not (st & TP_STATUS_USER):
            break
        h = <tpacket2_hdr*>f
        ll = <sockaddr_ll*>(f + FV_TP2_SLL_OFF)
        room -= 1
        r.nrel += 1
        r.cur += 1
        if r.cur == r.block_nr:
            r.cur = 0
        s.c[C_RX] += 1
        s.c[C_RX_BYTES] += h.tp_snaplen
        if <uint64_t>h.tp_mac + h.tp_snaplen > r.block_size:
            s.c[C_RING_BAD] += 1
        elif ll.sll_pkttype == PACKET_OUTGOING or ll.sll_pkttype == PACKET_OTHERHOST:
            s.c[C_RX_IGNORED] += 1
        elif take_frame(s, n, f + h.tp_mac, h.tp_snaplen, h.tp_len, st, fi, now):
            n += 1
    if room == 0:
        s.last_full = True
    if r.nrel:
        s.c[C_RX_CALLS] += 1
    return n


cdef Py_ssize_t ring_rx(PumpC* s, int fi, Py_ssize_t n, int64_t now) noexcept nogil:
    """Take up to ``batch`` frames from socket fi's ring, starting where the last step
    stopped. Blocks walked to the end are released after the send (ring_release)."""
    cdef RingC* r = &s.rg[fi]
    cdef int room = s.batch
    cdef uint8_t* bd
    cdef tpacket3_hdr* h
    cdef sockaddr_ll* ll
    cdef uint32_t nxt
    cdef bint took = False
    r.rel_first = r.cur
    r.nrel = 0
    while room > 0:
        bd = r.base + <size_t>r.cur * r.block_size
        if not r.in_block:
            if not (fv_block_status(bd) & TP_STATUS_USER):
                break
            r.in_block = True
            r.pkts_left = (<tpacket_block_desc*>bd).hdr.bh1.num_pkts
            r.pkt_off = (<tpacket_block_desc*>bd).hdr.bh1.offset_to_first_pkt
            s.c[C_RX_BLOCKS] += 1
        while r.pkts_left > 0 and room > 0:
            if (r.pkt_off < sizeof(tpacket_block_desc)
                    or r.pkt_off + FV_TP3_SLL_OFF + sizeof(sockaddr_ll) > r.block_size):
                s.c[C_RING_BAD] += r.pkts_left      # never seen: the kernel's layout broke
                r.pkts_left = 0
                break
            h = <tpacket3_hdr*>(bd + r.pkt_off)
            ll = <sockaddr_ll*>(bd + r.pkt_off + FV_TP3_SLL_OFF)
            nxt = h.tp_next_offset
            r.pkts_left -= 1
            room -= 1
            took = True
            s.c[C_RX] += 1
            s.c[C_RX_BYTES] += h.tp_snaplen
            if <uint64_t>r.pkt_off + h.tp_mac + h.tp_snaplen > r.block_size:
                s.c[C_RING_BAD] += 1
            elif ll.sll_pkttype == PACKET_OUTGOING or ll.sll_pkttype == PACKET_OTHERHOST:
                s.c[C_RX_IGNORED] += 1
            elif take_frame(s, n, bd + r.pkt_off + h.tp_mac, h.tp_snaplen, h.tp_len,
                            h.tp_status, fi, now):
                n += 1
            if r.pkts_left > 0:
                if nxt == 0:
                    s.c[C_RING_BAD] += r.pkts_left
                    r.pkts_left = 0
                else:
                    r.pkt_off += nxt
        if r.pkts_left == 0:
            r.in_block = False
            r.nrel += 1
            r.cur += 1
            if r.cur == r.block_nr:
                r.cur = 0
    if room == 0:
        s.last_full = True
    if took:
        s.c[C_RX_CALLS] += 1
    return n


cdef void ring_release(PumpC* s) noexcept nogil:
    """Hand the blocks walked to the end in this step back to the kernel."""
    cdef int fi
    cdef uint32_t _k, b
    cdef RingC* r
    for fi in range(s.nfds):
        r = &s.rg[fi]
        b = r.rel_first
        for _k in range(r.nrel):
            if r.v2:
                fv_frame_release(r.base + <size_t>b * r.block_size)
            else:
                fv_block_release(r.base + <size_t>b * r.block_size)
            b += 1
            if b == r.block_nr:
                b = 0
        r.nrel = 0


cdef Py_ssize_t mmsg_rx(PumpC* s, int fi, Py_ssize_t n, int64_t* now) noexcept nogil:
    """One recvmmsg on socket fi into its slots."""
    cdef int start = fi * s.batch
    cdef int i, k, r
    cdef mmsghdr* h
    cdef cmsghdr* cm
    cdef tpacket_auxdata* aux
    cdef uint32_t status, origlen, length
    for k in range(s.batch):
        h = &s.rxh[start + k]
        h.msg_hdr.msg_namelen = sizeof(sockaddr_ll)
        h.msg_hdr.msg_controllen = CTRL_SZ
        h.msg_hdr.msg_flags = 0
    r = recvmmsg(s.fd[fi], &s.rxh[start], s.batch, MSG_DONTWAIT, NULL)
    if r <= 0:
        return n
    s.c[C_RX_CALLS] += 1
    if r == s.batch:
        s.last_full = True
    if now[0] == 0:
        now[0] = mono_ns()
    for k in range(r):
        i = start + k
        h = &s.rxh[i]
        length = h.msg_len
        s.c[C_RX] += 1
        s.c[C_RX_BYTES] += length
        if s.rxaddr[i].sll_pkttype == PACKET_OUTGOING or s.rxaddr[i].sll_pkttype == PACKET_OTHERHOST:
            s.c[C_RX_IGNORED] += 1
            continue
        status = 0
        origlen = length
        cm = CMSG_FIRSTHDR(&h.msg_hdr)
        while cm != NULL:
            if cm.cmsg_level == SOL_PACKET_ and cm.cmsg_type == PACKET_AUXDATA:
                aux = <tpacket_auxdata*>CMSG_DATA(cm)
                status = aux.tp_status
                origlen = aux.tp_len
            cm = CMSG_NXTHDR(&h.msg_hdr, cm)
        if h.msg_hdr.msg_flags & MSG_TRUNC:
            origlen = length + 1
        if take_frame(s, n, s.buf + <size_t>i * s.slot, length, origlen, status, fi, now[0]):
            n += 1
    return n


cdef Py_ssize_t pump_rx(PumpC* s, int timeout_ms) noexcept nogil:
    """Poll unless frames are known to be waiting, then take from each data socket
    once. Returns frames accepted into the batch."""
    cdef int i, fi, nready
    cdef bint known = s.last_full
    cdef bint polled = False
    cdef bint any_data
    cdef Py_ssize_t n = 0
    cdef int64_t now = 0
    for i in range(s.npfd):
        s.pfd[i].revents = 0
    s.aux_ready = 0
    if s.ring and not known:
        known = rings_ready(s)
        if not known and s.spin_ns > 0:
            known = rings_spin(s)
    if known and s.npfd > s.nfds:
        # busy: look at the aux fds (ARP/ND) only once a millisecond, not every round
        now = mono_ns()
        if now - s.aux_polled >= AUX_POLL_NS:
            s.aux_polled = now
            if poll(s.pfd + s.nfds, s.npfd - s.nfds, 0) > 0:
                for i in range(s.nfds, s.npfd):
                    if s.pfd[i].revents:
                        s.aux_ready |= 1u << (i - s.nfds)
    elif not known:
        nready = poll(s.pfd, s.npfd, timeout_ms)
        if nready < 0:
            return 0
        for i in range(s.nfds, s.npfd):
            if s.pfd[i].revents:
                s.aux_ready |= 1u << (i - s.nfds)
        polled = True
        any_data = False
        for fi in range(s.nfds):
            if s.pfd[fi].revents:
                any_data = True
        if not any_data:
            return 0
    s.last_full = False
    if s.ring:
        if now == 0:
            now = mono_ns()
        for fi in range(s.nfds):
            if s.rg[fi].v2:
                n = ring2_rx(s, fi, n, now)
            else:
                n = ring_rx(s, fi, n, now)
    else:
        for fi in range(s.nfds):
            if polled and s.pfd[fi].revents == 0:
                continue                # nothing waiting there: save the system call
            n = mmsg_rx(s, fi, n, &now)
    return n


cdef void pump_tx(PumpC* s, Py_ssize_t n) noexcept nogil:
    """The L2 output stage over the batch, then one sendmmsg per side (straight from
    the ring's memory with a ring)."""
    cdef int out, r, sent, j
    l2_out(s.l2, s.buf, s.off, s.caplen, s.ts, s.verdict, s.side, n,
           s.txidx[0], s.txidx[1], s.ntx)
    for out in range(2):
        l2_gather(s.txidx[out], s.ntx[out], s.off, s.caplen, s.txoff, s.txlen, NULL)
        for j in range(s.ntx[out]):
            s.txiov[out][j].iov_base = s.buf + s.txoff[j]
            s.txiov[out][j].iov_len = s.txlen[j]
        sent = 0
        while sent < s.ntx[out]:
            r = sendmmsg(s.fd[out], &s.txh[out][sent], s.ntx[out] - sent, 0)
            s.c[C_TX_CALLS] += 1
            if r < 0:
                if errno == EINTR:
                    continue
                s.c[C_DROP_TX_ERROR] += 1     # EMSGSIZE, ENOBUFS, ENETDOWN: skip one
                sent += 1
                continue
            for j in range(sent, sent + r):
                s.c[C_TX_BYTES] += s.txiov[out][j].iov_len
            s.c[C_TX] += r
            sent += r


cdef Py_ssize_t afp_rx(void* p, int timeout_ms) noexcept nogil:
    """A receive step (io_rx_fn): a batch, or the ring frames taken back when none of
    them is for the engine."""
    cdef PumpC* s = <PumpC*>p
    cdef Py_ssize_t n = pump_rx(s, timeout_ms)
    if n == 0 and s.ring:
        ring_release(s)
    return n


cdef void afp_tx(void* p, Py_ssize_t n) noexcept nogil:
    """A transmit step (io_tx_fn): send, then the ring frames back to the kernel."""
    cdef PumpC* s = <PumpC*>p
    pump_tx(s, n)
    if s.ring:
        ring_release(s)


cdef class Pump:
    """Receive and send batches on one or two AF_PACKET sockets (a FrameIO backend:
    fastvs/live/io.py; wrapped with its sockets by fastvs/live/afpacket.py).

    ``client_fd``/``server_fd`` are bound AF_PACKET SOCK_RAW sockets (the same fd for a
    one-arm director); ``l2`` the L2 stage (the interfaces' MACs, neighbours). With
    ``io="mmsg"`` the sockets need PACKET_AUXDATA on, and ``batch`` frames are read per
    socket per round into slots of ``slot`` bytes. With ``io="ring-v3"`` each socket must
    already have a TPACKET_V3 RX ring of ``ring_blocks`` blocks of ``ring_block_size``
    bytes (:func:`setup_rx_ring`), with ``io="ring-v2"`` a TPACKET_V2 ring of that size
    in frames of ``ring_frame_size`` bytes; up to ``batch`` frames per socket are taken
    per round, and an empty ring is watched for ``spin_us`` microseconds before the
    pump sleeps in poll.
    Frames longer than ``max_frame`` (MTU + Ethernet header) are dropped as oversize.
    Descriptors given to :meth:`watch` are polled with the data sockets and reported in
    :attr:`aux_ready`. With a ring, :attr:`buf` is a view of the mapped rings, valid
    until :meth:`close`.
    """
    cdef PumpC s
    cdef readonly object buf, off, caplen, wirelen, ts, linktype, verdict
    cdef readonly str io
    cdef readonly L2Stage l2
    cdef object _side, _engine
    cdef BatchEntry* _entry
    cdef void* _map
    cdef size_t _maplen
    cdef bint _closed

    def __cinit__(self, int client_fd, int server_fd, L2Stage l2 not None, *,
                  int batch=64, unsigned int slot=2048, unsigned int max_frame=1518,
                  str io="mmsg", unsigned int ring_block_size=1 << 16,
                  unsigned int ring_blocks=64, unsigned int ring_frame_size=2048,
                  unsigned int spin_us=0):
        cdef int i, side
        cdef uint8_t[::1] bv
        cdef size_t ringlen = 0
        cdef void* m
        memset(&self.s, 0, sizeof(PumpC))
        self._map = NULL
        if batch < 1 or batch > 4096:
            raise ValueError("batch must be 1..4096")
        if io not in IO_MODES:
            raise ValueError(f"io must be one of {', '.join(IO_MODES)}")
        if io == "mmsg" and (slot < 64 or max_frame > slot):
            raise ValueError("slot must hold max_frame bytes")
        self.io = io
        self.l2 = l2
        self.s.l2 = &l2.s
        self.s.ring = io != "mmsg"
        self.s.spin_ns = <int64_t>spin_us * 1000
        self.s.fd[0] = client_fd
        self.s.fd[1] = server_fd
        self.s.nfds = 1 if client_fd == server_fd else 2
        self.s.batch = batch
        self.s.slot = slot
        self.s.max_frame = max_frame
        self.s.nslots = batch * self.s.nfds
        n = self.s.nslots
        if self.s.ring:
            ringlen = ring_geometry(ring_block_size, ring_blocks)
            if max_frame + 256 > (ring_frame_size if io == "ring-v2" else ring_block_size):
                raise ValueError("a ring block (V2: frame) must hold a max_frame frame")
            # one reserved range, each socket's ring mapped into it: the batch buffer
            self._maplen = ringlen * self.s.nfds
            self._map = mmap(NULL, self._maplen, PROT_NONE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            if self._map == MAP_FAILED:
                self._map = NULL
                raise OSError(errno, "mmap: " + os.strerror(errno))
            for i in range(self.s.nfds):
                m = mmap(<uint8_t*>self._map + i * ringlen, ringlen, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_FIXED, self.s.fd[i], 0)
                if m == MAP_FAILED:
                    raise OSError(errno, "mmap of the RX ring (set up with setup_rx_ring?): "
                                  + os.strerror(errno))
                self.s.rg[i].base = <uint8_t*>m
                if io == "ring-v2":
                    self.s.rg[i].v2 = True
                    self.s.rg[i].block_size = ring_frame_size
                    self.s.rg[i].block_nr = <uint32_t>(ringlen // ring_frame_size)
                else:
                    self.s.rg[i].block_size = ring_block_size
                    self.s.rg[i].block_nr = ring_blocks
            self.s.buf = <uint8_t*>self._map
            self.s.buflen = self._maplen
            self.buf = <uint8_t[:self._maplen]>self.s.buf
        else:
            self.buf = np.zeros(<size_t>n * slot, dtype=np.uint8)
            bv = self.buf
            self.s.buf = &bv[0]
            self.s.buflen = <size_t>n * slot
        self.off = np.zeros(n, dtype=np.uint32)
        self.caplen = np.zeros(n, dtype=np.uint32)
        self.wirelen = np.zeros(n, dtype=np.uint32)
        self.ts = np.zeros(n, dtype=np.int64)
        self.linktype = np.ones(n, dtype=np.uint16)
        self.verdict = np.zeros(n, dtype=np.uint8)
        self._side = np.zeros(n, dtype=np.uint8)
        self.s.off = _ptr32(self.off)
        self.s.caplen = _ptr32(self.caplen)
        self.s.wirelen = _ptr32(self.wirelen)
        self.s.ts = _ptr64(self.ts)
        self.s.linktype = _ptr16(self.linktype)
        self.s.verdict = _ptr8(self.verdict)
        self.s.side = _ptr8(self._side)
        if not self.s.ring:
            self.s.rxh = <mmsghdr*>calloc(n, sizeof(mmsghdr))
            self.s.rxiov = <iovec*>calloc(n, sizeof(iovec))
            self.s.rxaddr = <sockaddr_ll*>calloc(n, sizeof(sockaddr_ll))
            self.s.rxctrl = <uint8_t*>calloc(n, CTRL_SZ)
            if (self.s.rxh == NULL or self.s.rxiov == NULL or self.s.rxaddr == NULL
                    or self.s.rxctrl == NULL):
                raise MemoryError()
        for side in range(2):
            self.s.txh[side] = <mmsghdr*>calloc(n, sizeof(mmsghdr))
            self.s.txiov[side] = <iovec*>calloc(n, sizeof(iovec))
            self.s.txidx[side] = <uint32_t*>calloc(n, sizeof(uint32_t))
        self.s.txoff = <uint32_t*>calloc(n, sizeof(uint32_t))
        self.s.txlen = <uint32_t*>calloc(n, sizeof(uint32_t))
        if (self.s.txh[0] == NULL or self.s.txh[1] == NULL or self.s.txiov[0] == NULL
                or self.s.txiov[1] == NULL or self.s.txidx[0] == NULL or self.s.txidx[1] == NULL
                or self.s.txoff == NULL or self.s.txlen == NULL):
            raise MemoryError()
        for i in range(n):
            if not self.s.ring:
                self.s.rxiov[i].iov_base = self.s.buf + <size_t>i * slot
                self.s.rxiov[i].iov_len = slot
                self.s.rxh[i].msg_hdr.msg_iov = &self.s.rxiov[i]
                self.s.rxh[i].msg_hdr.msg_iovlen = 1
                self.s.rxh[i].msg_hdr.msg_name = &self.s.rxaddr[i]
                self.s.rxh[i].msg_hdr.msg_control = self.s.rxctrl + <size_t>i * CTRL_SZ
            for side in range(2):
                self.s.txh[side][i].msg_hdr.msg_iov = &self.s.txiov[side][i]
                self.s.txh[side][i].msg_hdr.msg_iovlen = 1
        for i in range(self.s.nfds):
            self.s.pfd[i].fd = self.s.fd[i]
            self.s.pfd[i].events = POLLIN
        self.s.npfd = self.s.nfds

    def __dealloc__(self):
        self._free()

    cdef void _free(self) noexcept:
        free(self.s.rxh)
        free(self.s.rxiov)
        free(self.s.rxaddr)
        free(self.s.rxctrl)
        free(self.s.txh[0])
        free(self.s.txh[1])
        free(self.s.txiov[0])
        free(self.s.txiov[1])
        free(self.s.txidx[0])
        free(self.s.txidx[1])
        free(self.s.txoff)
        free(self.s.txlen)
        self.s.txoff = self.s.txlen = NULL
        self.s.rxh = NULL
        self.s.rxiov = NULL
        self.s.rxaddr = NULL
        self.s.rxctrl = NULL
        self.s.txh[0] = self.s.txh[1] = NULL
        self.s.txiov[0] = self.s.txiov[1] = NULL
        self.s.txidx[0] = self.s.txidx[1] = NULL
        if self._map != NULL:
            munmap(self._map, self._maplen)
            self._map = NULL

    def close(self):
        """Unmap the rings and free the batch's C memory (the sockets are the
        caller's). The pump cannot be used afterwards; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self.buf = None
        self._free()

    def watch(self, fds):
        """Poll these descriptors with the data sockets (at most 6; e.g. the ARP/ND
        sockets); bit i of :attr:`aux_ready` says fds[i] was readable."""
        cdef int i
        fds = list(fds)
        if len(fds) > MAX_AUX:
            raise ValueError(f"at most {MAX_AUX} watched descriptors")
        for i, fd in enumerate(fds):
            self.s.pfd[self.s.nfds + i].fd = fd
            self.s.pfd[self.s.nfds + i].events = POLLIN
        self.s.npfd = self.s.nfds + len(fds)

    def fds(self):
        """The data sockets' descriptors (one for a one-arm director)."""
        return [self.s.fd[i] for i in range(self.s.nfds)]

    # -- the data path -----------------------------------------------------------------------
    def receive(self, int timeout_ms=100):
        """Poll (up to ``timeout_ms`` when nothing is waiting) and take a batch: returns
        the number of frames in ``off[:n]`` etc., 0 on timeout. The frames stay the
        pump's (in the rings) until :meth:`transmit` or :meth:`release`."""
        cdef Py_ssize_t n
        if self._closed:
            raise ValueError("receive on a closed Pump")
        with nogil:
            n = afp_rx(&self.s, timeout_ms)
        return n

    def bind_engine(self, engine):
        """The engine :meth:`run` hands batches to; kept referenced by the pump."""
        self._entry = <BatchEntry*>PyCapsule_GetPointer(engine.batch_entry(), BATCH_ENTRY_NAME)
        self._engine = engine

    def run(self, int timeout_ms, int64_t budget_ns):
        """``receive``, the bound engine, ``transmit``, batch after batch in C over
        the AF_PACKET sockets (rings: their frames back to the kernel after each send).
        ``io_run`` (fastvs/live/_l2.pxd) says until when. Returns the frames handed to
        the engine."""
        cdef Py_ssize_t total
        if self._closed:
            raise ValueError("run on a closed Pump")
        if self._entry == NULL:
            raise ValueError("run before bind_engine")
        with nogil:
            total = io_run(&self.s, afp_rx, afp_tx, self._entry, self.s.buf, <Py_ssize_t>self.s.buflen,
                           self.s.off, self.s.caplen, self.s.wirelen, self.s.ts, self.s.linktype,
                           self.s.verdict, &self.s.aux_ready, self.s.l2, timeout_ms, budget_ns)
        return total

    def transmit(self, Py_ssize_t n):
        """After ``Engine.process`` over the first ``n`` frames: the L2 output stage,
        one sendmmsg per side, and the ring frames (blocks) go back to the kernel."""
        if self._closed:
            raise ValueError("transmit on a closed Pump")
        if n < 0 or n > self.s.nslots:
            raise ValueError("transmit: n outside the batch")
        with nogil:
            afp_tx(&self.s, n)

    def release(self):
        """Give the frames of the last :meth:`receive` back without sending any (after
        a failed ``Engine.process``)."""
        if self.s.ring and not self._closed:
            with nogil:
                ring_release(&self.s)

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


def blast(int fd, const uint8_t[::1] frames, unsigned int frame_len, double seconds,
          unsigned int burst=64):
    """Send the concatenated ``frames`` (each ``frame_len`` bytes) round-robin on a
    bound AF_PACKET socket with sendmmsg for ``seconds``; returns frames accepted by
    the kernel. A load generator for benchmarks (benchmarks/bench_forward.py)."""
    cdef Py_ssize_t nframes = frames.shape[0] // frame_len if frame_len else 0
    cdef mmsghdr* h
    cdef iovec* iov
    cdef unsigned int i, _k
    cdef int r
    cdef uint64_t sent = 0
    cdef int64_t end
    cdef Py_ssize_t next_frame = 0
    if nframes == 0 or burst == 0:
        raise ValueError("no frames to send")
    h = <mmsghdr*>calloc(burst, sizeof(mmsghdr))
    iov = <iovec*>calloc(burst, sizeof(iovec))
    if h == NULL or iov == NULL:
        free(h)
        free(iov)
        raise MemoryError()
    end = mono_ns() + <int64_t>(seconds * 1e9)
    with nogil:
        for i in range(burst):
            h[i].msg_hdr.msg_iov = &iov[i]
            h[i].msg_hdr.msg_iovlen = 1
            iov[i].iov_len = frame_len
        while True:
            for _k in range(16):
                for i in range(burst):
                    iov[i].iov_base = <void*>(&frames[0] + next_frame * frame_len)
                    next_frame += 1
                    if next_frame == nframes:
                        next_frame = 0
                r = sendmmsg(fd, h, burst, 0)
                if r > 0:
                    sent += r
            if mono_ns() >= end:
                break
    free(h)
    free(iov)
    return sent
