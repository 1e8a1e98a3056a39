# cython: language_level=3
"""IP-in-IP tunnelling (-i; ip_vs_tunnel_xmit in ip_vs_xmit.c): the route decrements
the TTL and the output stage (_xmit.pyx) wraps the datagram in an outer header toward
the real server. The outer header must fit the route's MTU unless the datagram may
be fragmented (ensure_mtu_is_adequate). Replies do not come back (CONN_F_NOOUTPUT)."""
from libc.stdint cimport uint32_t
from fastvs.datapath._types cimport V_FWD_TUN, V_DROP_MTU, CONN_F_NOOUTPUT
from fastvs.datapath._state cimport XmitArgs, FM_XMIT, FM_BIND, FM_INFO
from fastvs.datapath._proto cimport hop_decrease


cdef inline int tunnel_do(int op, XmitArgs* a) noexcept nogil:
    cdef uint32_t outer
    if op == FM_XMIT:
        outer = 20 if a.st.dests[a.c.dest].af == 4 else 40
        # ensure_mtu_is_adequate: no DF (IPv6 always counts as DF) lets it through
        if a.m.l3len + outer > a.st.tun_mtu and (a.m.af == 6 or (a.p[a.m.l3off + 6] & 0x40)):
            return V_DROP_MTU
        # the kernel would fragment an oversized datagram without DF; one that cannot
        # get an outer header at all (over 64 KiB with it) is refused here
        if a.m.l3len + outer > 65535:
            return V_DROP_MTU
        if not a.st.keep_ttl:
            hop_decrease(a.p, a.m)
        return V_FWD_TUN
    if op == FM_BIND:
        a.c.flags |= CONN_F_NOOUTPUT
    elif op == FM_INFO:
        a.name = b"tunnel"
    return 0
