# cython: language_level=3
"""The output stage for direct routing and tunnelling (ip_vs_dr_xmit, ip_vs_tunnel_xmit).

The engine decides and counts; these passes do what needs more than an in-place
rewrite. Direct routing changes only the link layer: the frame goes to the real
server's MAC, from the MAC the director received it on. Tunnelling wraps the datagram
in an outer IPv4 header (IPIP, protocol 4) or IPv6 header (protocol 41) toward the real
server, so the batch is copied into a new buffer with room for it. Both are single
nogil passes over the batch.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t
from libc.string cimport memcpy
from fastvs.datapath._types cimport V_FWD_DR, V_FWD_TUN
from fastvs.datapath._bytes cimport ld16, st16
from fastvs.datapath._csum cimport ip_send_check
from fastvs.datapath._packet cimport (l2_parse, LT_EN10MB, LT_LINUX_SLL, LT_LINUX_SLL2, LT_NULL,
                                      LT_LOOP)

import numpy as np


def set_dr_macs(uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] caplen,
                const uint16_t[::1] linktype, const uint8_t[::1] verdict,
                const int32_t[::1] aux, const uint8_t[:, ::1] macs, const uint8_t[::1] has_mac):
    """Ethernet frames routed directly: source MAC <- the destination MAC they came
    to (the director's), destination MAC <- the real server's, when known."""
    cdef Py_ssize_t i, n = off.shape[0]
    cdef uint8_t* f
    cdef int32_t d
    cdef Py_ssize_t nd = has_mac.shape[0]
    cdef Py_ssize_t done = 0
    with nogil:
        for i in range(n):
            if verdict[i] != V_FWD_DR or linktype[i] != 1 or caplen[i] < 14:
                continue
            d = aux[i]
            if d < 0 or d >= nd or not has_mac[d]:
                continue
            f = &buf[off[i]]
            memcpy(f + 6, f, 6)
            memcpy(f, &macs[d, 0], 6)
            done += 1
    return done


cdef inline void set_link_family(uint8_t* o, uint32_t l3, uint16_t linktype,
                                 bint outer4) noexcept nogil:
    """Make the link layer name the outer header's family (it named the inner one's).
    LINKTYPE_IPV4/IPV6 (228/229) name one family for the whole link: left as they are."""
    cdef uint32_t af
    if (linktype == LT_EN10MB and l3 >= 14) or (linktype == LT_LINUX_SLL and l3 >= 16):
        # the ethertype (protocol) right before the network header, after any VLAN tags
        st16(o + l3 - 2, 0x0800 if outer4 else 0x86DD)
    elif linktype == LT_LINUX_SLL2 and l3 >= 20:
        st16(o, 0x0800 if outer4 else 0x86DD)
    elif (linktype == LT_NULL or linktype == LT_LOOP) and l3 >= 4:
        # AF_INET is 2 everywhere; AF_INET6 differs by OS: keep the inner one's if it
        # was IPv6 (never the case when the families differ), else the BSDs' 24
        af = 2 if outer4 else 24
        if linktype == LT_LOOP or (o[0] == 0 and o[1] == 0):
            o[0] = 0
            o[1] = 0
            o[2] = 0
            o[3] = <uint8_t>af
        else:
            o[0] = <uint8_t>af
            o[1] = 0
            o[2] = 0
            o[3] = 0


def encap_tunnel(const uint8_t[::1] buf, const uint32_t[::1] off, const uint32_t[::1] caplen,
                 const uint32_t[::1] wirelen, const uint16_t[::1] linktype,
                 const uint8_t[::1] verdict, const int32_t[::1] aux,
                 const uint8_t[:, ::1] dest_addr, const uint8_t[::1] dest_af,
                 const uint8_t[::1] src4, const uint8_t[::1] src6):
    """Copy the batch into a new buffer, tunnelled packets wrapped in an outer header
    from ``src4``/``src6`` to their real server. Returns (buf, off, caplen, wirelen).

    The tunnel carries the inner datagram as its IP header gives its length (ip_rcv
    trims the frame to it): link-layer padding or trailers after it are left out, and
    the outer length never depends on the record's wire length."""
    cdef Py_ssize_t i, n = off.shape[0]
    cdef Py_ssize_t nd = dest_af.shape[0]
    cdef unsigned long long total = 0
    cdef uint32_t extra, inner_len, inner_cap, hl, avail
    cdef uint32_t l3 = 0
    cdef int af_in
    cdef uint8_t ds
    cdef int32_t d
    cdef uint8_t* o
    cdef const uint8_t* f
    cdef uint8_t* h
    out_off = np.zeros(n, dtype=np.uint32)
    out_cap = np.zeros(n, dtype=np.uint32)
    out_wire = np.zeros(n, dtype=np.uint32)
    cdef uint32_t[::1] oo = out_off
    cdef uint32_t[::1] oc = out_cap
    cdef uint32_t[::1] ow = out_wire
    cdef Py_ssize_t buflen = buf.shape[0]
    for i in range(n):
        extra = 0
        if verdict[i] == V_FWD_TUN and 0 <= aux[i] < nd:
            extra = 20 if dest_af[aux[i]] == 4 else 40
        if <unsigned long long>off[i] + caplen[i] <= <unsigned long long>buflen:
            total += caplen[i]
        total += extra
    if total >= 2 ** 32:
        raise ValueError("tunnelled batch too large")
    out = np.empty(max(1, total), dtype=np.uint8)
    cdef uint8_t[::1] ob = out
    cdef uint8_t* obase = &ob[0]
    cdef const uint8_t* ibase = &buf[0] if buflen else NULL
    cdef uint32_t pos = 0
    with nogil:
        for i in range(n):
            o = obase + pos
            d = aux[i]
            oo[i] = pos
            if <unsigned long long>off[i] + caplen[i] > <unsigned long long>buflen:
                # a slot outside the buffer (the engine dropped it): nothing to copy
                oc[i] = 0
                ow[i] = wirelen[i]
                continue
            f = ibase + off[i]
            if verdict[i] != V_FWD_TUN or d < 0 or d >= nd:
                memcpy(o, f, caplen[i])
                oc[i] = caplen[i]
                ow[i] = wirelen[i]
                pos += caplen[i]
                continue
            af_in = l2_parse(f, caplen[i], linktype[i], &l3)
            avail = caplen[i] - l3 if l3 <= caplen[i] else 0
            # the engine balanced it, so its IP header is all there; be safe anyway
            if af_in == 4 and avail >= 20:
                inner_len = ld16(f + l3 + 2)
            elif af_in == 6 and avail >= 40:
                inner_len = 40 + <uint32_t>ld16(f + l3 + 4)
            else:
                memcpy(o, f, caplen[i])
                oc[i] = caplen[i]
                ow[i] = wirelen[i]
                pos += caplen[i]
                continue
            inner_cap = inner_len if inner_len < avail else avail
            hl = 20 if dest_af[d] == 4 else 40
            memcpy(o, f, l3)
            set_link_family(o, l3, linktype[i], hl == 20)
            h = o + l3
            memcpy(h + hl, f + l3, inner_cap)
            # ip_vs_prepare_tunneled_skb (ip_vs_xmit.c:974-1034): the inner TOS or
            # traffic class, ECN-encapsulated (INET_ECN_encapsulate: CE goes out as
            # ECT(0)), is the outer one's
            ds = f[l3 + 1] if af_in == 4 else <uint8_t>(((f[l3] & 0x0f) << 4) | (f[l3 + 1] >> 4))
            if ds & 3 == 3:
                ds = (ds & 0xfc) | 2
            if hl == 20:
                h[0] = 0x45
                # DF copied from an IPv4 inner header (pmtu_disc), none over an IPv6
                # one (*df = 0); id 0
                h[1] = ds
                st16(h + 2, <uint16_t>(inner_len + 20))
                h[4] = 0
                h[5] = 0
                h[6] = (f[l3 + 6] & 0x40) if af_in == 4 else 0
                h[7] = 0
                h[8] = f[l3 + 8] if af_in == 4 else f[l3 + 7]
                h[9] = 4 if af_in == 4 else 41
                memcpy(h + 12, &src4[0], 4)
                memcpy(h + 16, &dest_addr[d, 0], 4)
                ip_send_check(h, 20)
            else:
                # ip_vs_tunnel_xmit_v6: flow label 0, traffic class dsfield
                h[0] = 0x60 | (ds >> 4)
                h[1] = <uint8_t>((ds & 0x0f) << 4)
                h[2] = 0
                h[3] = 0
                st16(h + 4, <uint16_t>inner_len)
                h[6] = 4 if af_in == 4 else 41
                h[7] = f[l3 + 8] if af_in == 4 else f[l3 + 7]
                memcpy(h + 8, &src6[0], 16)
                memcpy(h + 24, &dest_addr[d, 0], 16)
            oc[i] = l3 + hl + inner_cap
            ow[i] = l3 + hl + inner_len
            pos += l3 + hl + inner_cap
    # ``total`` was an upper bound (padding is left out): no uninitialised tail
    if pos == 0:
        return np.zeros(1, dtype=np.uint8), out_off, out_cap, out_wire
    return out[:pos], out_off, out_cap, out_wire
