# cython: language_level=3
"""Local node ("local"; the kernel's ip_vs_null_xmit, for a real server that is the
director itself). fastvs has no local stack to deliver to: the datagram goes on as a
tunnelled one would, TTL decremented, under the tunnel verdict (as fastvs always did),
and the output stage leaves it as it is when the real server is not a tunnel's."""
from fastvs.datapath._types cimport V_FWD_TUN, CONN_F_NOOUTPUT
from fastvs.datapath._state cimport XmitArgs, FM_XMIT, FM_BIND, FM_INFO
from fastvs.datapath._proto cimport hop_decrease


cdef inline int local_do(int op, XmitArgs* a) noexcept nogil:
    if op == FM_XMIT:
        if not a.st.keep_ttl:
            hop_decrease(a.p, a.m)
        return V_FWD_TUN
    if op == FM_BIND:
        a.c.flags |= CONN_F_NOOUTPUT
    elif op == FM_INFO:
        a.name = b"local"
    return 0
