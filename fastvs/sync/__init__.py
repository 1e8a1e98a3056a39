"""The kernel's IPVS connection-sync protocol (net/netfilter/ipvs/ip_vs_sync.c).

- ``fastvs.sync.proto``: the wire format, version 1 and 0: encoder, message builder
  and a decoder applying the backup's checks.
- ``fastvs.sync.backup``: the connection table a backup builds from records
  (``ip_vs_proc_conn``).
- ``fastvs.sync.policy``: when a master sends a connection (``ip_vs_sync_conn_needed``
  and its callers) and when a message leaves (full, or 2 s old).
- ``fastvs.sync.frames``: sync datagrams in and out of captures.
- ``fastvs.sync.decode``: ``fastvs sync decode SYNC.pcap``.
"""
