# cython: language_level=3
"""The forwarding methods (the role of ip_vs_bind_xmit in ip_vs_conn.c, which binds a
connection's packet_xmit once, when it is made, from its real server's method).

A method is one file, ``_fwd_<name>.pxd``: ``<name>_xmit`` (the packet on to the real
server), ``<name>_bind`` (the flags it gives a new connection) and its name.
Registering it is its case in the three dispatchers below, the only place that
dispatches on a method (inline tests of the code, not pointers: see _proto.pxd).
The connection keeps the method it was bound to
(``Conn.fwd``, copied from its real server at creation, as the kernel copies the
dest's conn_flags): a real server edited later does not change its connections.
"""
from libc.stdint cimport uint8_t
from fastvs.datapath._types cimport FV_LIKELY, FWD_MASQ, FWD_TUNNEL, FWD_DROUTE, FWD_LOCALNODE, Conn, Dest
from fastvs.datapath._state cimport XmitArgs
from fastvs.datapath._fwd_masq cimport masq_xmit, masq_bind, MASQ_NAME
from fastvs.datapath._fwd_droute cimport droute_xmit, droute_bind, DROUTE_NAME
from fastvs.datapath._fwd_tunnel cimport tunnel_xmit, tunnel_bind, TUNNEL_NAME
from fastvs.datapath._fwd_local cimport local_xmit, local_bind, LOCAL_NAME

cdef enum:
    FWD_N = 4                # method codes are 0 .. FWD_N - 1 (IP_VS_CONN_F_FWD_MASK)


cdef inline int fwd_xmit(uint8_t method, XmitArgs* a) noexcept nogil:
    """packet_xmit of the bound method: the client's packet on to the real server;
    its verdict."""
    if FV_LIKELY(method == FWD_MASQ):
        return masq_xmit(a)
    if method == FWD_DROUTE:
        return droute_xmit(a)
    if method == FWD_TUNNEL:
        return tunnel_xmit(a)
    return local_xmit(a)


cdef inline void fwd_bind_flags(uint8_t method, Conn* c) noexcept nogil:
    """The connection flags the method implies (CONN_F_NOOUTPUT: no replies seen)."""
    if method == FWD_MASQ:
        masq_bind(c)
    elif method == FWD_DROUTE:
        droute_bind(c)
    elif method == FWD_TUNNEL:
        tunnel_bind(c)
    else:
        local_bind(c)


cdef inline const char* fwd_name(uint8_t method) noexcept nogil:
    """The method's name, NULL for a code nobody registered."""
    if method == FWD_MASQ:
        return MASQ_NAME
    if method == FWD_DROUTE:
        return DROUTE_NAME
    if method == FWD_TUNNEL:
        return TUNNEL_NAME
    if method == FWD_LOCALNODE:
        return LOCAL_NAME
    return NULL


cdef inline void fwd_bind(Conn* c, const Dest* d) noexcept nogil:
    """ip_vs_bind_xmit: the connection takes its real server's method for good."""
    c.fwd = d.fwd
    fwd_bind_flags(c.fwd, c)
