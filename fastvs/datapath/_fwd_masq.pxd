# cython: language_level=3
"""Masquerading, NAT (-m; ip_vs_nat_xmit in ip_vs_xmit.c): the destination becomes the
real server's address and port, the route decrements the TTL. Replies come back
through the director and are translated (handle_response in _core)."""
from fastvs.datapath._types cimport Conn, V_FWD_IN, V_DROP_TTL
from fastvs.datapath._state cimport XmitArgs
from fastvs.datapath._proto cimport nat_dnat

cdef extern from *:
    """
    #define FV_FWD_MASQ_NAME "masq"
    """
    const char* MASQ_NAME "FV_FWD_MASQ_NAME"


cdef inline int masq_xmit(XmitArgs* a) noexcept nogil:
    nat_dnat(a.p, a.m, a.c, not a.st.keep_ttl)
    return V_FWD_IN


cdef inline void masq_bind(Conn* c) noexcept nogil:
    pass                    # replies come back through the director: no flag
