# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Batched AF_PACKET I/O for the live forwarder: recvmmsg -> engine -> L2 rewrite -> sendmmsg.

A :class:`Pump` owns one receive batch shaped like a :class:`fastvs.batch.PacketBatch`
(one buffer of fixed-size slots, ``off``/``caplen``/``wirelen``/``ts``/``linktype``/
``verdict`` arrays) and the ``mmsghdr`` vectors that point into it. One :meth:`Pump.step`

1. polls the client and server sockets (and any auxiliary descriptors, e.g. ARP
   sockets, whose readiness is reported back) and drains up to ``batch`` frames from
   each with one ``recvmmsg`` call, stamping them with CLOCK_MONOTONIC nanoseconds;
2. completes the L4 checksum of frames the kernel marked ``TP_STATUS_CSUMNOTREADY``
   (PACKET_AUXDATA: captured before checksum offload filled it in), and refuses
   frames larger than the slot or the interface's MTU (GRO/LRO/GSO aggregates);
3. runs the batch through ``engine.process`` (one Python call per batch; the engine
   releases the GIL itself);
4. rewrites the Ethernet header of every forwarded frame (``fwd_in``: out the server
   side to the real server's MAC; ``fwd_out``: out the client side to the client's or
   gateway's MAC, learnt from the client's own frames) and sends each side's frames
   with one ``sendmmsg`` call.

Steps 1, 2 and 4 run without the GIL and touch no Python object per packet. The
neighbour cache is a 4-way set-associative table of IPv4 -> MAC in C memory with
static entries (``--neigh`` file, ARP replies) that learning never evicts.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from libc.errno cimport errno, EINTR
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from fastvs._bytes cimport ld16, ldraw32
from fastvs._csum cimport csum_partial, csum_fold

import ipaddress

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
        TP_STATUS_CSUMNOTREADY
        TP_STATUS_CSUM_VALID
        TP_STATUS_VLAN_VALID

cdef extern from *:
    """
    #ifndef SOL_PACKET
    #define SOL_PACKET 263
    #endif
    """
    int SOL_PACKET_ "SOL_PACKET"

# -- constants for the Python side (socket options, BPF) ------------------------------------
SOL_PACKET = SOL_PACKET_
OPT_AUXDATA = PACKET_AUXDATA
OPT_FANOUT = PACKET_FANOUT
OPT_FANOUT_DATA = PACKET_FANOUT_DATA
OPT_QDISC_BYPASS = PACKET_QDISC_BYPASS
OPT_IGNORE_OUTGOING = PACKET_IGNORE_OUTGOING
FANOUT_CBPF = PACKET_FANOUT_CBPF

# verdicts the transmit side acts on (fastvs/verdicts.py)
cdef enum:
    VD_FWD_IN = 32
    VD_FWD_OUT = 33

cdef enum:
    CTRL_SZ = 64            # >= CMSG_SPACE(sizeof(struct tpacket_auxdata))
    MAX_WANT = 32           # unresolved neighbours remembered per step
    ETH_ALEN = 6
    SIDE_CLIENT = 0
    SIDE_SERVER = 1

# counters, in COUNTER_NAMES order
cdef enum:
    C_RX = 0
    C_RX_BYTES
    C_TX
    C_TX_BYTES
    C_CSUM_COMPLETED
    C_DROP_OVERSIZE
    C_RX_IGNORED
    C_NOT_FORWARDED
    C_DROP_NEIGH_MISS
    C_DROP_TX_ERROR
    C_NEIGH_LEARNED
    C_RX_VLAN_STRIPPED
    C_RX_CALLS
    C_TX_CALLS
    C_N

COUNTER_NAMES = (
    "rx", "rx_bytes", "tx", "tx_bytes", "csum_completed", "drop_oversize", "rx_ignored",
    "not_forwarded", "drop_neigh_miss", "drop_tx_error", "neigh_learned",
    "rx_vlan_stripped", "rx_calls", "tx_calls",
)


cdef inline int64_t mono_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


def monotonic_ns():
    """CLOCK_MONOTONIC in ns: the clock the forwarder stamps batches with."""
    return mono_ns()


# -- L3/L4 helpers -----------------------------------------------------------------------------

cdef inline int eth_l3(const uint8_t* p, uint32_t len) noexcept nogil:
    """Offset of the IPv4 header behind Ethernet and up to 2 VLAN tags, or -1."""
    cdef uint32_t off = 12
    cdef uint16_t et
    cdef int tags = 0
    if len < 14:
        return -1
    et = ld16(p + off)
    off += 2
    while (et == 0x8100 or et == 0x88A8) and tags < 2:
        if off + 4 > len:
            return -1
        et = ld16(p + off + 2)
        off += 4
        tags += 1
    if et != 0x0800 or off + 20 > len:
        return -1
    return <int>off


cdef inline bint l4_csum_complete(uint8_t* p, uint32_t len) noexcept nogil:
    """Compute the full TCP/UDP checksum of an Ethernet/IPv4 frame in place (what
    skb_checksum_help does for CHECKSUM_PARTIAL). False when not applicable."""
    cdef int l3 = eth_l3(p, len)
    cdef uint32_t ihl, tot, l4len, l4, coff
    cdef uint8_t proto
    cdef uint8_t ph[12]
    cdef uint64_t s
    cdef uint16_t c
    if l3 < 0 or (p[l3] >> 4) != 4:
        return False
    ihl = (p[l3] & 0x0f) * 4
    tot = ld16(p + l3 + 2)
    if ihl < 20 or tot < ihl or <uint32_t>l3 + tot > len:
        return False
    if ld16(p + l3 + 6) & 0x3fff:      # a fragment: the checksum spans the datagram
        return False
    proto = p[l3 + 9]
    l4 = l3 + ihl
    l4len = tot - ihl
    if proto == 6:
        if l4len < 20:
            return False
        coff = 16
    elif proto == 17:
        if l4len < 8:
            return False
        coff = 6
    else:
        return False
    memcpy(ph, p + l3 + 12, 8)
    ph[8] = 0
    ph[9] = proto
    ph[10] = <uint8_t>(l4len >> 8)
    ph[11] = <uint8_t>l4len
    p[l4 + coff] = 0
    p[l4 + coff + 1] = 0
    s = csum_partial(ph, 12, 0)
    s = csum_partial(p + l4, l4len, s)
    c = <uint16_t>~csum_fold(s)
    if c == 0 and proto == 17:
        c = 0xffff
    memcpy(p + l4 + coff, &c, 2)
    return True


def complete_l4_checksum(frame):
    """Complete the TCP/UDP checksum of an Ethernet/IPv4 frame (a writable buffer) in
    place, as the receive path does for TP_STATUS_CSUMNOTREADY frames. Returns True if
    the frame was TCP/UDP over IPv4 and got a checksum."""
    cdef uint8_t[::1] b = frame
    if b.shape[0] == 0:
        return False
    return l4_csum_complete(&b[0], <uint32_t>b.shape[0])


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
        import os
        raise OSError(errno, os.strerror(errno))


# -- neighbour table ---------------------------------------------------------------------------

cdef enum:
    NB_USED = 1
    NB_STATIC = 2
    NB_WAYS = 4

ctypedef struct NeighEnt:
    uint32_t ip            # wire order
    uint8_t mac[6]
    uint8_t flags
    uint8_t pad
    int64_t seen


cdef inline uint64_t nb_set(uint32_t ip, uint64_t seed, int bits) noexcept nogil:
    return ((<uint64_t>ip ^ seed) * <uint64_t>0x9E3779B97F4A7C15) >> (64 - bits)


cdef inline NeighEnt* nb_find(NeighEnt* tab, uint64_t seed, int bits, uint32_t ip) noexcept nogil:
    cdef NeighEnt* e = tab + nb_set(ip, seed, bits) * NB_WAYS
    cdef int w
    for w in range(NB_WAYS):
        if (e[w].flags & NB_USED) and e[w].ip == ip:
            return &e[w]
    return NULL


cdef inline int nb_put(NeighEnt* tab, uint64_t seed, int bits, uint32_t ip,
                       const uint8_t* mac, int64_t now, bint static) noexcept nogil:
    """Insert or refresh; a learnt entry never replaces a static one. Returns 1 when
    something new was written, 0 when refreshed/unchanged, -1 when refused."""
    cdef NeighEnt* e = tab + nb_set(ip, seed, bits) * NB_WAYS
    cdef NeighEnt* victim = NULL
    cdef int w
    for w in range(NB_WAYS):
        if (e[w].flags & NB_USED) and e[w].ip == ip:
            if (e[w].flags & NB_STATIC) and not static:
                return -1
            e[w].seen = now
            if static:
                e[w].flags |= NB_STATIC
            if memcmp6(e[w].mac, mac):
                return 0
            memcpy(e[w].mac, mac, ETH_ALEN)
            return 1
    for w in range(NB_WAYS):
        if not (e[w].flags & NB_USED):
            victim = &e[w]
            break
        if not (e[w].flags & NB_STATIC) and (victim == NULL or e[w].seen < victim.seen):
            victim = &e[w]
    if victim == NULL:
        if not static:
            return -1
        victim = &e[0]
    victim.ip = ip
    memcpy(victim.mac, mac, ETH_ALEN)
    victim.flags = NB_USED | (NB_STATIC if static else 0)
    victim.seen = now
    return 1


cdef inline bint memcmp6(const uint8_t* a, const uint8_t* b) noexcept nogil:
    """True when the 6 bytes are equal."""
    cdef int i
    for i in range(ETH_ALEN):
        if a[i] != b[i]:
            return False
    return True


cdef uint32_t _ip_raw(ip) except? 0:
    cdef bytes b = ipaddress.IPv4Address(ip).packed
    cdef uint32_t v
    memcpy(&v, <const char*>b, 4)
    return v


cdef str _ip_str(uint32_t raw):
    return str(ipaddress.IPv4Address((<const uint8_t*>&raw)[:4]))


cdef bytes _mac_bytes(mac):
    if isinstance(mac, str):
        mac = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
    return mac


# -- the pump ----------------------------------------------------------------------------------

ctypedef struct PumpC:
    int fd[2]              # per side (client, server); equal in one-arm mode
    uint8_t mac[2][6]      # the interfaces' own MACs
    int nfds               # distinct data sockets (1 one-arm, 2 two-arm)
    int batch              # frames per recvmmsg call per socket
    uint32_t slot          # bytes per slot
    uint32_t max_frame     # largest frame that can be sent (MTU + link header)
    int nslots
    uint8_t* buf
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
    mmsghdr* txh[2]
    iovec* txiov[2]
    int ntx[2]
    # neighbours
    NeighEnt* nb
    int nb_bits
    uint64_t nb_seed
    uint32_t gw_ip         # client-side gateway (0: none)
    uint32_t want[MAX_WANT]
    int nwant
    # poll
    pollfd pfd[8]
    int npfd               # data fds first, then aux fds
    uint32_t aux_ready
    bint last_full
    uint64_t c[C_N]


cdef inline void want_ip(PumpC* s, uint32_t ip) noexcept nogil:
    cdef int i
    for i in range(s.nwant):
        if s.want[i] == ip:
            return
    if s.nwant < MAX_WANT:
        s.want[s.nwant] = ip
        s.nwant += 1


cdef Py_ssize_t pump_rx(PumpC* s, int timeout_ms) noexcept nogil:
    """Poll, then drain each data socket once. Returns frames accepted into the batch."""
    cdef int i, k, r, fi, nready
    cdef bint polled
    cdef int start = 0
    cdef Py_ssize_t n = 0
    cdef mmsghdr* h
    cdef cmsghdr* cm
    cdef tpacket_auxdata* aux
    cdef uint32_t status, origlen, length
    cdef int64_t now
    cdef uint8_t* p
    for i in range(s.npfd):
        s.pfd[i].revents = 0
    s.aux_ready = 0
    polled = False
    if not s.last_full or s.npfd > s.nfds:
        # skip the system call only while the data sockets keep us busy and no aux fds
        nready = poll(s.pfd, s.npfd, 0 if s.last_full else timeout_ms)
        if nready < 0:
            return 0
        polled = not s.last_full
        for i in range(s.nfds, s.npfd):
            if s.pfd[i].revents:
                s.aux_ready |= 1u << (i - s.nfds)
    s.last_full = False
    for fi in range(s.nfds):
        if polled and s.pfd[fi].revents == 0:
            start += s.batch            # nothing waiting there: save the system call
            continue
        for k in range(s.batch):
            i = start + k
            h = &s.rxh[i]
            h.msg_hdr.msg_namelen = sizeof(sockaddr_ll)
            h.msg_hdr.msg_controllen = CTRL_SZ
            h.msg_hdr.msg_flags = 0
        r = recvmmsg(s.fd[fi], &s.rxh[start], s.batch, MSG_DONTWAIT, NULL)
        if r <= 0:
            continue
        s.c[C_RX_CALLS] += 1
        if r == s.batch:
            s.last_full = True
        now = mono_ns()
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
            if (h.msg_hdr.msg_flags & MSG_TRUNC) or origlen > length or length > s.max_frame:
                s.c[C_DROP_OVERSIZE] += 1
                continue
            if status & TP_STATUS_VLAN_VALID:
                s.c[C_RX_VLAN_STRIPPED] += 1
            p = s.buf + <size_t>i * s.slot
            if status & TP_STATUS_CSUMNOTREADY:
                if l4_csum_complete(p, length):
                    s.c[C_CSUM_COMPLETED] += 1
            s.off[n] = <uint32_t>(<size_t>i * s.slot)
            s.caplen[n] = length
            s.wirelen[n] = length
            s.ts[n] = now
            s.linktype[n] = 1
            s.verdict[n] = 0
            s.side[n] = <uint8_t>(fi if s.nfds == 2 else SIDE_CLIENT)
            n += 1
        start += s.batch
    return n


cdef void pump_tx(PumpC* s, Py_ssize_t n) noexcept nogil:
    """L2 rewrite of every forwarded frame, then one sendmmsg per side."""
    cdef Py_ssize_t i
    cdef int out, l3, r, sent, j
    cdef uint8_t v
    cdef uint8_t* p
    cdef uint32_t dip, sip
    cdef NeighEnt* e
    cdef int64_t now = 0
    s.ntx[0] = 0
    s.ntx[1] = 0
    for i in range(n):
        v = s.verdict[i]
        if v == VD_FWD_IN:
            out = SIDE_SERVER
        elif v == VD_FWD_OUT:
            out = SIDE_CLIENT
        else:
            s.c[C_NOT_FORWARDED] += 1
            continue
        p = s.buf + s.off[i]
        l3 = eth_l3(p, s.caplen[i])
        if l3 < 0:
            s.c[C_NOT_FORWARDED] += 1
            continue
        dip = ldraw32(p + l3 + 16)
        if v == VD_FWD_IN and s.side[i] == SIDE_CLIENT:
            # the client (or the router in front of it) is where replies go back to
            sip = ldraw32(p + l3 + 12)
            if now == 0:
                now = s.ts[i]
            if nb_put(s.nb, s.nb_seed, s.nb_bits, sip, p + ETH_ALEN, now, False) == 1:
                s.c[C_NEIGH_LEARNED] += 1
        e = nb_find(s.nb, s.nb_seed, s.nb_bits, dip)
        if e == NULL and out == SIDE_CLIENT and s.gw_ip != 0:
            e = nb_find(s.nb, s.nb_seed, s.nb_bits, s.gw_ip)
            if e == NULL:
                dip = s.gw_ip
        if e == NULL:
            want_ip(s, dip)
            s.c[C_DROP_NEIGH_MISS] += 1
            continue
        memcpy(p, e.mac, ETH_ALEN)
        memcpy(p + ETH_ALEN, s.mac[out], ETH_ALEN)
        j = s.ntx[out]
        s.txiov[out][j].iov_base = p
        s.txiov[out][j].iov_len = s.caplen[i]
        s.ntx[out] = j + 1
    for out in range(2):
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


cdef class Pump:
    """Receive, process and send batches on one or two AF_PACKET sockets.

    ``client_fd``/``server_fd`` are bound AF_PACKET SOCK_RAW sockets (the same fd for a
    one-arm director) with PACKET_AUXDATA on; ``client_mac``/``server_mac`` the
    interfaces' addresses. ``batch`` frames are read per socket per step into slots of
    ``slot`` bytes; frames longer than ``max_frame`` (MTU + Ethernet header) are dropped
    as oversize. ``aux_fds`` are polled with the data sockets and reported in
    :attr:`aux_ready` (bit i for aux_fds[i]).
    """
    cdef PumpC s
    cdef readonly object buf, off, caplen, wirelen, ts, linktype, verdict
    cdef object _side

    def __cinit__(self, int client_fd, int server_fd, client_mac, server_mac, *,
                  int batch=64, unsigned int slot=2048, unsigned int max_frame=1518,
                  unsigned int neigh_capacity=65536, seed=None, aux_fds=()):
        cdef int i, side
        cdef bytes cm = _mac_bytes(client_mac)
        cdef bytes sm = _mac_bytes(server_mac)
        cdef uint8_t[::1] bv
        memset(&self.s, 0, sizeof(PumpC))
        if batch < 1 or batch > 1024:
            raise ValueError("batch must be 1..1024")
        if slot < 64 or max_frame > slot:
            raise ValueError("slot must hold max_frame bytes")
        if len(aux_fds) > 6:
            raise ValueError("at most 6 aux fds")
        self.s.fd[0] = client_fd
        self.s.fd[1] = server_fd
        self.s.nfds = 1 if client_fd == server_fd else 2
        memcpy(self.s.mac[0], <const char*>cm, 6)
        memcpy(self.s.mac[1], <const char*>sm, 6)
        self.s.batch = batch
        self.s.slot = slot
        self.s.max_frame = max_frame
        self.s.nslots = batch * self.s.nfds
        n = self.s.nslots
        self.buf = np.zeros(<size_t>n * slot, dtype=np.uint8)
        self.off = np.zeros(n, dtype=np.uint32)
        self.caplen = np.zeros(n, dtype=np.uint32)
        self.wirelen = np.zeros(n, dtype=np.uint32)
        self.ts = np.zeros(n, dtype=np.int64)
        self.linktype = np.ones(n, dtype=np.uint16)
        self.verdict = np.zeros(n, dtype=np.uint8)
        self._side = np.zeros(n, dtype=np.uint8)
        bv = self.buf
        self.s.buf = &bv[0]
        self.s.off = _ptr32(self.off)
        self.s.caplen = _ptr32(self.caplen)
        self.s.wirelen = _ptr32(self.wirelen)
        self.s.ts = _ptr64(self.ts)
        self.s.linktype = _ptr16(self.linktype)
        self.s.verdict = _ptr8(self.verdict)
        self.s.side = _ptr8(self._side)
        self.s.rxh = <mmsghdr*>calloc(n, sizeof(mmsghdr))
        self.s.rxiov = <iovec*>calloc(n, sizeof(iovec))
        self.s.rxaddr = <sockaddr_ll*>calloc(n, sizeof(sockaddr_ll))
        self.s.rxctrl = <uint8_t*>calloc(n, CTRL_SZ)
        for side in range(2):
            self.s.txh[side] = <mmsghdr*>calloc(n, sizeof(mmsghdr))
            self.s.txiov[side] = <iovec*>calloc(n, sizeof(iovec))
        bits = 4
        while (1 << bits) * NB_WAYS < neigh_capacity and bits < 24:
            bits += 1
        self.s.nb_bits = bits
        self.s.nb = <NeighEnt*>calloc((<size_t>1 << bits) * NB_WAYS, sizeof(NeighEnt))
        if (self.s.rxh == NULL or self.s.rxiov == NULL or self.s.rxaddr == NULL
                or self.s.rxctrl == NULL or self.s.txh[0] == NULL or self.s.txh[1] == NULL
                or self.s.txiov[0] == NULL or self.s.txiov[1] == NULL or self.s.nb == NULL):
            raise MemoryError()
        if seed is None:
            seed = int.from_bytes(__import__("os").urandom(8), "little")
        self.s.nb_seed = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)
        for i in range(n):
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
        for i, fd in enumerate(aux_fds):
            self.s.pfd[self.s.nfds + i].fd = fd
            self.s.pfd[self.s.nfds + i].events = POLLIN
        self.s.npfd = self.s.nfds + len(aux_fds)

    def __dealloc__(self):
        free(self.s.rxh)
        free(self.s.rxiov)
        free(self.s.rxaddr)
        free(self.s.rxctrl)
        free(self.s.txh[0])
        free(self.s.txh[1])
        free(self.s.txiov[0])
        free(self.s.txiov[1])
        free(self.s.nb)

    # -- the data path -----------------------------------------------------------------------
    def step(self, engine, int timeout_ms=100):
        """One round: poll (up to ``timeout_ms``), receive, ``engine.process``, rewrite,
        send. Returns the number of frames handed to the engine (0 on timeout)."""
        cdef Py_ssize_t n
        with nogil:
            n = pump_rx(&self.s, timeout_ms)
        if n == 0:
            return 0
        engine.process(self.buf, self.off[:n], self.caplen[:n], self.wirelen[:n],
                       self.ts[:n], self.linktype[:n], self.verdict)
        with nogil:
            pump_tx(&self.s, n)
        return n

    @property
    def aux_ready(self):
        """Bit i set: aux_fds[i] was readable at the last poll."""
        return self.s.aux_ready

    def counters(self):
        """I/O counters since creation: {name: count}."""
        return {COUNTER_NAMES[i]: self.s.c[i] for i in range(C_N)}

    def take_wanted(self):
        """IPv4 addresses that had no neighbour entry since the last call (to resolve)."""
        out = [_ip_str(self.s.want[i]) for i in range(self.s.nwant)]
        self.s.nwant = 0
        return out

    # -- neighbours ---------------------------------------------------------------------------
    def set_gateway(self, ip):
        """Replies to clients without a neighbour entry go to this router's MAC."""
        self.s.gw_ip = 0 if ip is None else _ip_raw(ip)

    def neigh_set(self, ip, mac, bint static=False):
        """Insert/refresh ``ip -> mac``. Learnt entries never replace static ones;
        returns False when the entry was refused."""
        cdef bytes m = _mac_bytes(mac)
        return nb_put(self.s.nb, self.s.nb_seed, self.s.nb_bits, _ip_raw(ip),
                      <const uint8_t*><const char*>m, mono_ns(), static) >= 0

    def neigh_get(self, ip):
        """The MAC for ``ip`` (6 bytes) or None."""
        cdef NeighEnt* e = nb_find(self.s.nb, self.s.nb_seed, self.s.nb_bits, _ip_raw(ip))
        if e == NULL:
            return None
        return (<const char*>e.mac)[:6]

    def neigh_del(self, ip):
        cdef NeighEnt* e = nb_find(self.s.nb, self.s.nb_seed, self.s.nb_bits, _ip_raw(ip))
        if e != NULL:
            e.flags = 0
            return True
        return False

    def neigh_entries(self):
        """[(ip, mac hex, static, age_ns)] for every entry."""
        cdef size_t i
        cdef int64_t now = mono_ns()
        cdef NeighEnt* e
        out = []
        for i in range((<size_t>1 << self.s.nb_bits) * NB_WAYS):
            e = &self.s.nb[i]
            if e.flags & NB_USED:
                out.append((_ip_str(e.ip), (<const char*>e.mac)[:6].hex(":"),
                            bool(e.flags & NB_STATIC), now - e.seen))
        return out

    @property
    def neigh_capacity(self):
        return (1 << self.s.nb_bits) * NB_WAYS


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
