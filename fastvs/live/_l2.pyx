"""The L2 stage's Python face: :class:`L2Stage` owns the neighbour table and the
interfaces' MACs that every I/O backend's output stage uses (fastvs/live/_l2.pxd).

The ARP/ND code (fastvs/live/neigh.py) fills the table through :meth:`L2Stage.neigh_set`
and asks for what the output stage missed (:meth:`L2Stage.take_wanted`); the backends
read ``L2Stage.s`` from C.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from fastvs.live._neightab cimport NeighEnt, NB_USED, NB_STATIC, NB_WAYS, key_v4, key_is_v4, nb_find, nb_put

import ipaddress
import os

L2_COUNTER_NAMES = ("csum_completed", "not_forwarded", "drop_neigh_miss", "neigh_learned")


def monotonic_ns():
    """CLOCK_MONOTONIC in ns: the clock the live path stamps batches with."""
    return mono_ns()


def complete_l4_checksum(frame):
    """Complete the TCP/UDP checksum of an Ethernet/IPv4 or IPv6 frame (a writable
    buffer) in place, as the receive path does for TP_STATUS_CSUMNOTREADY frames.
    Returns True if the frame was TCP/UDP and got a checksum."""
    cdef uint8_t[::1] b = frame
    if b.shape[0] == 0:
        return False
    return l2_csum_complete(&b[0], <uint32_t>b.shape[0], False)


def complete_partial(uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] length,
                     Py_ssize_t n):
    """What the AF_XDP receive path does to n frames of a batch (``l2_csum_complete``
    with ``partial_only``): complete those that arrived CHECKSUM_PARTIAL. Returns how
    many were completed."""
    cdef Py_ssize_t i, k = 0
    if n < 0 or n > off.shape[0] or n > length.shape[0]:
        raise ValueError("n exceeds the batch")
    for i in range(n):
        if <size_t>off[i] + length[i] > <size_t>buf.shape[0]:
            raise ValueError("frame outside the buffer")
    if n == 0:
        return 0
    with nogil:
        for i in range(n):
            k += l2_csum_complete(&buf[0] + off[i], length[i], True)
    return k


cdef int _ip_key(ip, uint32_t* k) except -1:
    a = ipaddress.ip_address(ip)
    cdef bytes b = a.packed
    if a.version == 4:
        key_v4(k, <const uint8_t*><const char*>b)
    else:
        memcpy(k, <const char*>b, 16)
    return 0


cdef str _key_str(const uint32_t* k):
    cdef const uint8_t* b = <const uint8_t*>k
    if key_is_v4(k):
        return str(ipaddress.IPv4Address(b[12:16]))
    return str(ipaddress.IPv6Address(b[:16]))


cdef bytes _mac_bytes(mac):
    if isinstance(mac, str):
        mac = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
    return mac


cdef class L2Stage:
    """The interfaces' MACs (client side, server side; equal for a one-arm director)
    and the neighbour table: IPv4 and IPv6 neighbours in C memory, at most
    ``neigh_capacity`` of them, set-associative with a hash keyed by ``seed``."""

    def __cinit__(self, client_mac, server_mac, *, unsigned int neigh_capacity=65536, seed=None):
        cdef bytes cm = _mac_bytes(client_mac)
        cdef bytes sm = _mac_bytes(server_mac)
        cdef int bits = 4
        memset(&self.s, 0, sizeof(L2State))
        memcpy(self.s.mac[SIDE_CLIENT], <const char*>cm, 6)
        memcpy(self.s.mac[SIDE_SERVER], <const char*>sm, 6)
        while (1 << bits) * NB_WAYS < neigh_capacity and bits < 24:
            bits += 1
        self.s.nb_bits = bits
        self.s.nb = <NeighEnt*>calloc((<size_t>1 << bits) * NB_WAYS, sizeof(NeighEnt))
        if self.s.nb == NULL:
            raise MemoryError()
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self.s.nb_seed = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)

    def __dealloc__(self):
        free(self.s.nb)

    def counters(self):
        """The stage's counters since creation: {name: count}."""
        return {L2_COUNTER_NAMES[i]: self.s.c[i] for i in range(L2_N)}

    def take_wanted(self):
        """Addresses (IPv4 and IPv6) that had no neighbour entry since the last call."""
        out = [_key_str(self.s.want[i]) for i in range(self.s.nwant)]
        self.s.nwant = 0
        return out

    def set_gateway(self, ip):
        """Replies to clients without a neighbour entry go to this router's MAC (one
        gateway per address family; None forgets both)."""
        cdef uint32_t k[4]
        if ip is None:
            self.s.has_gw[0] = False
            self.s.has_gw[1] = False
            return
        _ip_key(ip, k)
        fam = 0 if key_is_v4(k) else 1
        memcpy(self.s.gw[fam], k, 16)
        self.s.has_gw[fam] = True

    def neigh_set(self, ip, mac, bint static=False):
        """Insert/refresh ``ip -> mac`` (IPv4 or IPv6). Learnt entries never replace
        static ones, nor does a multicast MAC go in; returns False when refused."""
        cdef bytes m = _mac_bytes(mac)
        cdef uint32_t k[4]
        _ip_key(ip, k)
        return nb_put(self.s.nb, self.s.nb_seed, self.s.nb_bits, k,
                      <const uint8_t*><const char*>m, mono_ns(), static) >= 0

    def neigh_get(self, ip):
        """The MAC for ``ip`` (6 bytes) or None."""
        cdef uint32_t k[4]
        _ip_key(ip, k)
        cdef NeighEnt* e = nb_find(self.s.nb, self.s.nb_seed, self.s.nb_bits, k)
        if e == NULL:
            return None
        return (<const char*>e.mac)[:6]

    def neigh_del(self, ip):
        cdef uint32_t k[4]
        _ip_key(ip, k)
        cdef NeighEnt* e = nb_find(self.s.nb, self.s.nb_seed, self.s.nb_bits, k)
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
                out.append((_key_str(e.ip), (<const char*>e.mac)[:6].hex(":"),
                            bool(e.flags & NB_STATIC), now - e.seen))
        return out

    @property
    def neigh_capacity(self):
        return (1 << self.s.nb_bits) * NB_WAYS

    @property
    def macs(self):
        """(client side, server side) MACs."""
        return bytes(self.s.mac[SIDE_CLIENT][:6]), bytes(self.s.mac[SIDE_SERVER][:6])
