# cython: language_level=3
"""Direct routing (-g; ip_vs_dr_xmit in ip_vs_xmit.c): the datagram goes unchanged
but for the TTL, which the route decrements; the output stage (_xmit.pyx) puts the
real server's MAC on the frame. Replies go from the real server straight to the
client, so the connection never sees output (CONN_F_NOOUTPUT)."""
from fastvs.datapath._types cimport Conn, V_FWD_DR, CONN_F_NOOUTPUT
from fastvs.datapath._state cimport XmitArgs
from fastvs.datapath._proto cimport hop_decrease
from fastvs.datapath._csum cimport ip_send_check

cdef extern from *:
    """
    #define FV_FWD_DROUTE_NAME "route"
    """
    const char* DROUTE_NAME "FV_FWD_DROUTE_NAME"


cdef inline int droute_xmit(XmitArgs* a) noexcept nogil:
    if not a.st.keep_ttl:
        hop_decrease(a.p, a.m)
        if a.m.af == 4:
            ip_send_check(a.p + a.m.l3off, (a.p[a.m.l3off] & 0x0f) * 4)
    return V_FWD_DR


cdef inline void droute_bind(Conn* c) noexcept nogil:
    c.flags |= CONN_F_NOOUTPUT
