"""The data path: what the kernel's ip_vs_core.c, ip_vs_conn.c, ip_vs_ctl.c,
ip_vs_proto_*.c and ip_vs_xmit.c do, as Cython loops over batches that touch no Python
object per packet. One role per file (the kernel file it mirrors in brackets):

- ``_types.pxd``: fixed-width types, verdicts, states, flags, the shared structs
  (include/net/ip_vs.h); ``_bytes.pxd``: big-endian loads and stores
- ``_csum.pxd``/``.pyx``: checksums (RFC 1071/1624); ``_crc32c.h``, ``_hash.h``
- ``_packet.pxd``/``.pyx``: link, IP and transport header parse (ip_vs_fill_iphdr)
- ``_conntab.pxd``: the connection table and its timer heap (ip_vs_conn.c's hash)
- ``_state.pxd``: EngineState, the state every stage shares (struct netns_ipvs)
- ``_ctl.pxd``: services, the firewall-mark classifier, flood defenses (ip_vs_ctl.c)
- ``_conn.pxd``: make, bind, count and expire connections (ip_vs_conn.c)
- ``_core.pxd``: the per-packet path, scheduling, replies, ICMP (ip_vs_core.c)
- ``_frag.pxd``: fragments following their first fragment (ip_defrag's role)
- ``_proto.pxd``: the registered protocols and the NAT rewrite (ip_vs_proto.c);
  ``_proto_tcp.pxd``, ``_proto_udp.pxd``, ``_proto_sctp.pxd``: one protocol each
  (ip_vs_proto_tcp.c, _udp.c, _sctp.c)
- ``_fwd.pxd``: the forwarding methods bound to a connection (ip_vs_bind_xmit);
  ``_fwd_masq.pxd``, ``_fwd_droute.pxd``, ``_fwd_tunnel.pxd``, ``_fwd_local.pxd``: one
  method each (ip_vs_nat_xmit, ip_vs_dr_xmit, ip_vs_tunnel_xmit, ip_vs_null_xmit)
- ``_icmp.pxd``: ICMP/ICMPv6 error parse and rewrite (ip_vs_nat_icmp)
- ``_sync.pxd``: the connection-sync master's decision and its per-batch records
  (ip_vs_sync_conn_needed, ip_vs_sync_conn in ip_vs_sync.c)
- ``_engine.pyx``: the batch loop and the Engine object
- ``_xmit.pyx``: the output stages for direct routing and tunnels (MACs, outer header)
"""
