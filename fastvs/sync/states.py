"""IPVS connection states by protocol: names as /proc/net/ip_vs_conn and ``ipvsadm -L
-c`` print them (``ip_vs_state_name``) and default timeouts (the protocols'
``timeout_table``), for what a backup builds from sync records."""

from __future__ import annotations

from fastvs.sync.proto import (
    F_TEMPLATE,
    IP_VS_CTPL_S_LAST,
    IPPROTO_IP,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
)

__all__ = ["TCP_S", "state_name", "state_timeout"]

# enum IP_VS_TCP_S_* (include/net/ip_vs.h) and tcp_state_name_table
TCP_NAMES = (
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
)
TCP_S = {n: i for i, n in enumerate(TCP_NAMES)}
# tcp_timeouts[] in seconds (ip_vs_proto_tcp.c)
TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
UDP_NAMES = ("UDP",)
UDP_TIMEOUTS = (300,)
# sctp_state_name_table / sctp_timeouts (ip_vs_proto_sctp.c), as fastvs.datapath._sctp
SCTP_NAMES = (
    "NONE",
    "INIT1",
    "INIT",
    "C-SENT",
    "C-REPLIED",
    "C-WAIT",
    "COOKIE",
    "C-ECHOED",
    "ESTABLISHED",
    "S-SENT",
    "S-RECEIVED",
    "S-ACK-SENT",
    "REJECTED",
    "CLOSED",
)
SCTP_TIMEOUTS = (2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61)
CTPL_NAMES = ("NONE", "ASSURED")  # ip_vs_ctpl_state_name_table
TEMPLATE_V0_TIMEOUT = 180  # ip_vs_proc_conn: 3*60*HZ when the record carries none

_NAMES = {IPPROTO_TCP: TCP_NAMES, IPPROTO_UDP: UDP_NAMES, IPPROTO_SCTP: SCTP_NAMES}
_TIMEOUTS = {IPPROTO_TCP: TCP_TIMEOUTS, IPPROTO_UDP: UDP_TIMEOUTS, IPPROTO_SCTP: SCTP_TIMEOUTS}


def state_name(protocol: int, state: int, flags: int) -> str:
    """ip_vs_state_name(): templates NONE/ASSURED, else the protocol's name table;
    "ERR!" out of range or for a protocol without names (AH/ESP), "NONE" for
    IPPROTO_IP."""
    if flags & F_TEMPLATE:
        return CTPL_NAMES[state] if state < IP_VS_CTPL_S_LAST else "ERR!"
    names = _NAMES.get(protocol)
    if names is None:
        return "NONE" if protocol == IPPROTO_IP else "ERR!"
    return names[state] if state < len(names) else "ERR!"


def state_timeout(
    protocol: int, state: int, flags: int, overrides: dict[tuple[int, int], int] | None = None
) -> int:
    """The timeout ip_vs_proc_conn gives a record that carries none (v0): the
    protocol's table for connections, 180 s for templates and for a protocol without a
    table. ``overrides`` maps (protocol, state) to seconds (``ipvsadm --set``)."""
    if flags & F_TEMPLATE:
        return TEMPLATE_V0_TIMEOUT
    if overrides and (protocol, state) in overrides:
        return overrides[(protocol, state)]
    table = _TIMEOUTS.get(protocol)
    if table is None or state >= len(table):
        return TEMPLATE_V0_TIMEOUT
    return table[state]
