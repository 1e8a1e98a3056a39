# cython: language_level=3
"""Local node ("local"; the kernel's ip_vs_null_xmit, for a real server that is the
director itself). fastvs has no local stack to deliver to: the datagram goes on as a
tunnelled one would, TTL decremented, under the tunnel verdict (as fastvs always did),
and the output stage leaves it as it is when the real server is not a tunnel's."""
from fastvs.datapath._types cimport Conn, V_FWD_TUN, CONN_F_NOOUTPUT
from fastvs.datapath._state cimport XmitArgs
from fastvs.datapath._proto cimport hop_decrease

cdef extern from *:
    """
    #define FV_FWD_LOCAL_NAME "local"
    """
    const char* LOCAL_NAME "FV_FWD_LOCAL_NAME"


cdef inline int local_xmit(XmitArgs* a) noexcept nogil:
    if not a.st.keep_ttl:
        hop_decrease(a.p, a.m)
    return V_FWD_TUN


cdef inline void local_bind(Conn* c) noexcept nogil:
    c.flags |= CONN_F_NOOUTPUT
