# cython: language_level=3
"""IP-in-IP tunnelling (-i; ip_vs_tunnel_xmit in ip_vs_xmit.c): the route decrements
the TTL and the output stage (_xmit.pyx) wraps the datagram in an outer header toward
the real server. The outer header must fit the route's MTU unless the datagram may
be fragmented (ensure_mtu_is_adequate). Replies do not come back (CONN_F_NOOUTPUT)."""
from libc.stdint cimport uint32_t
from fastvs.datapath._types cimport Conn, V_FWD_TUN, V_DROP_MTU, CONN_F_NOOUTPUT, IPPROTO_ICMP_
from fastvs.datapath._state cimport XmitArgs
from fastvs.datapath._proto cimport hop_decrease

cdef extern from *:
    """
    #define FV_FWD_TUNNEL_NAME "tunnel"
    """
    const char* TUNNEL_NAME "FV_FWD_TUNNEL_NAME"


cdef inline int tunnel_xmit(XmitArgs* a) noexcept nogil:
    cdef uint32_t outer
    outer = 20 if a.st.dests[a.c.dest].af == 4 else 40
    # ensure_mtu_is_adequate (ip_vs_xmit.c:218-258): no DF lets it through, as does an
    # IPv4 ICMP error sent on by ip_vs_icmp_xmit (!ip_vs_iph_icmp); IPv6 always counts
    if a.m.l3len + outer > a.st.tun_mtu and (
            a.m.af == 6 or ((a.p[a.m.l3off + 6] & 0x40) and a.m.proto != IPPROTO_ICMP_)):
        return V_DROP_MTU
    # the kernel would fragment an oversized datagram without DF; one that cannot
    # get an outer header at all (over 64 KiB with it) is refused here
    if a.m.l3len + outer > 65535:
        return V_DROP_MTU
    if not a.st.keep_ttl:
        hop_decrease(a.p, a.m)
    return V_FWD_TUN


cdef inline void tunnel_bind(Conn* c) noexcept nogil:
    c.flags |= CONN_F_NOOUTPUT
