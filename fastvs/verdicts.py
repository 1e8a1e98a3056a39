"""Per-packet verdict codes: what the engine did with each packet of a batch.

A code below ``DROP_BASE`` means the packet is written out (passed untouched or
forwarded after rewriting); a code at or above it means the packet was dropped, and
the code names the reason. The engine counts every packet under its code, so
``packets in = written + dropped`` holds by construction. The numbers are mirrored in
``fastvs/datapath/_types.pxd`` (the ``V_*`` enum); ``tests/test_verdicts.py`` keeps both in step.
"""

from __future__ import annotations

# -- written: passed untouched -------------------------------------------------------
PASS_NOT_IP = 0  # not IPv4/IPv6 (ARP, LLDP, unknown ethertype or link type)
PASS_NOT_SERVICE = 1  # IP traffic that is neither a connection nor a virtual service
PASS_PROTO = 2  # an IP protocol IPVS does not balance (ICMP, IGMP, GRE, ...)
PASS_FRAGMENT = 3  # a later IP fragment whose first fragment was not seen (or expired)
PASS_IPV6 = 4  # (unused: IPv6 is parsed like IPv4)
PASS_NOT_MASQ = 5  # a reply for a DR/TUN connection: the director leaves it alone
PASS_ROUTED = 6  # director view: transit traffic routed on (TTL decremented)
# -- written: forwarded after rewriting --------------------------------------------
FWD_IN = 32  # client -> VIP: DNAT to the real server (ip_vs_in, ip_vs_nat_xmit)
FWD_OUT = 33  # real server -> client: SNAT back to the VIP (ip_vs_out, handle_response)
FWD_DR = 34  # client -> VIP by direct routing (-g): only the MACs change (and TTL)
FWD_TUN = 35  # client -> VIP by IPIP tunnel (-i): encapsulated toward the real server
# -- dropped ---------------------------------------------------------------------------
DROP_BASE = 64
DROP_BAD_SLOT = 64  # offset/length outside the batch buffer
DROP_L2_TRUNCATED = 65  # link-layer header cut short
DROP_IP_TRUNCATED = 66  # IP header not fully captured
DROP_IP_VERSION = 67  # version field disagrees with the link layer's protocol
DROP_IP_HDRLEN = 68  # IPv4 IHL < 5 or header longer than the packet
DROP_IP_CSUM = 69  # IPv4 header checksum wrong (ip_rcv drops it)
DROP_IP_TOTLEN = 70  # total length shorter than the header or longer than the frame
DROP_IP_OPTIONS = 71  # malformed IPv4 options (ip_options_compile fails)
DROP_L4_TRUNCATED = 72  # TCP/UDP header not captured (snap length)
DROP_L4_MALFORMED = 73  # the datagram is too short for a TCP (20) or UDP (8) header
DROP_TCP_NO_CONN = 74  # TCP non-SYN to a service with no connection (local stack)
DROP_NO_DEST = 75  # the scheduler found no available real server (ip_vs_leave)
DROP_CONN_FULL = 76  # the connection table is full
DROP_TTL = 77  # TTL <= 1 on the forwarding path (ICMP time exceeded in the kernel)
DROP_DEST_UNAVAILABLE = 78  # connection's real server removed, expire_nodest_conn off
DROP_LOCAL = 79  # director view: addressed to the director itself (VIP) outside IPVS
DROP_CAPTURE_CUT = 80  # cut by the snap length and truncated="drop" was chosen
DROP_SNAT_FAILED = 81  # reply could not be rewritten (header cut before the checksum)
DROP_ICMP_CSUM = 82  # an ICMP error about a connection with a wrong checksum (ip_vs_in_icmp)
DROP_MTU = 83  # too big to tunnel with DF set (the kernel answers ICMP fragmentation needed)
DROP_DEFENSE = 84  # a new connection refused by the drop_packet defense (ip_vs_todrop)

NAMES: dict[int, str] = {
    PASS_NOT_IP: "pass_not_ip",
    PASS_NOT_SERVICE: "pass_not_service",
    PASS_PROTO: "pass_proto",
    PASS_FRAGMENT: "pass_fragment",
    PASS_IPV6: "pass_ipv6",
    PASS_NOT_MASQ: "pass_not_masq",
    PASS_ROUTED: "pass_routed",
    FWD_IN: "fwd_in",
    FWD_OUT: "fwd_out",
    FWD_DR: "fwd_dr",
    FWD_TUN: "fwd_tun",
    DROP_BAD_SLOT: "drop_bad_slot",
    DROP_L2_TRUNCATED: "drop_l2_truncated",
    DROP_IP_TRUNCATED: "drop_ip_truncated",
    DROP_IP_VERSION: "drop_ip_version",
    DROP_IP_HDRLEN: "drop_ip_hdrlen",
    DROP_IP_CSUM: "drop_ip_csum",
    DROP_IP_TOTLEN: "drop_ip_totlen",
    DROP_IP_OPTIONS: "drop_ip_options",
    DROP_L4_TRUNCATED: "drop_l4_truncated",
    DROP_L4_MALFORMED: "drop_l4_malformed",
    DROP_TCP_NO_CONN: "drop_tcp_no_conn",
    DROP_NO_DEST: "drop_no_dest",
    DROP_CONN_FULL: "drop_conn_full",
    DROP_TTL: "drop_ttl",
    DROP_DEST_UNAVAILABLE: "drop_dest_unavailable",
    DROP_LOCAL: "drop_local",
    DROP_CAPTURE_CUT: "drop_capture_cut",
    DROP_SNAT_FAILED: "drop_snat_failed",
    DROP_ICMP_CSUM: "drop_icmp_csum",
    DROP_MTU: "drop_mtu",
    DROP_DEFENSE: "drop_defense",
}


def is_written(code: int) -> bool:
    """True if a packet with this verdict goes to the output capture."""
    return code < DROP_BASE


def name(code: int) -> str:
    return NAMES.get(code, f"verdict_{code}")
