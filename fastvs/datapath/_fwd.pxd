# cython: language_level=3
"""The forwarding methods (the role of ip_vs_bind_xmit in ip_vs_conn.c, which binds a
connection's packet_xmit once, when it is made, from its real server's method).

A method is one file, ``_fwd_<name>.pxd``, whose ``<name>_do(op, args)`` answers the
FM_* codes of ``_state.pxd``; registering it is one line in ``fwd_do``, the only
place that dispatches on a method. The connection keeps the method it was bound to
(``Conn.fwd``, copied from its real server at creation, as the kernel copies the
dest's conn_flags): a real server edited later does not change its connections.
"""
from libc.stdint cimport uint8_t
from fastvs.datapath._types cimport FWD_MASQ, FWD_TUNNEL, FWD_DROUTE, FWD_LOCALNODE, Conn, Dest
from fastvs.datapath._state cimport XmitArgs, FM_BIND
from fastvs.datapath._fwd_masq cimport masq_do
from fastvs.datapath._fwd_droute cimport droute_do
from fastvs.datapath._fwd_tunnel cimport tunnel_do
from fastvs.datapath._fwd_local cimport local_do

cdef enum:
    FWD_N = 4                # method codes are 0 .. FWD_N - 1 (IP_VS_CONN_F_FWD_MASK)


cdef inline int fwd_do(uint8_t method, int op, XmitArgs* a) noexcept nogil:
    """Operation ``op`` of forwarding method ``method``; -1 for an unknown method."""
    if method == FWD_MASQ:
        return masq_do(op, a)
    if method == FWD_DROUTE:
        return droute_do(op, a)
    if method == FWD_TUNNEL:
        return tunnel_do(op, a)
    if method == FWD_LOCALNODE:
        return local_do(op, a)
    return -1


cdef inline void fwd_bind(Conn* c, const Dest* d) noexcept nogil:
    """ip_vs_bind_xmit: the connection takes its real server's method for good."""
    cdef XmitArgs a
    a.c = c
    c.fwd = d.fwd
    fwd_do(c.fwd, FM_BIND, &a)
