"""The data path: what the kernel's ip_vs_core.c, ip_vs_conn.c, ip_vs_proto_*.c and
ip_vs_xmit.c do, as Cython loops over batches that touch no Python object per packet.

Fixed-width types and shared structs (``_types``), byte loads (``_bytes``), checksums
(``_csum``), parsing (``_packet``), the connection table (``_conntab``), the protocols
(``_proto``, ``_sctp``), ICMP errors (``_icmp``), the batch loop and the engine object
(``_engine``), and the output stages for direct routing and tunnels (``_xmit``).
"""
