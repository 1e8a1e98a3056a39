# cython: language_level=3
"""Masquerading, NAT (-m; ip_vs_nat_xmit in ip_vs_xmit.c): the destination becomes the
real server's address and port, the route decrements the TTL. Replies come back
through the director and are translated (handle_response in _core)."""
from fastvs.datapath._types cimport V_FWD_IN, V_DROP_TTL
from fastvs.datapath._state cimport XmitArgs, FM_XMIT, FM_BIND, FM_INFO
from fastvs.datapath._proto cimport nat_dnat


cdef inline int masq_do(int op, XmitArgs* a) noexcept nogil:
    if op == FM_XMIT:
        nat_dnat(a.p, a.m, a.c, not a.st.keep_ttl)
        return V_FWD_IN
    if op == FM_INFO:
        a.name = b"masq"
    return 0                # FM_BIND: replies are expected, no flag
