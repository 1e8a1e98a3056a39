"""The kernel's IPVS connection-sync protocol (net/netfilter/ipvs/ip_vs_sync.c, 6.1).

- ``fastvs.sync.proto``: the wire format, version 1 and 0: encoder, message builder
  (the master's buffer and its cut rule) and a decoder applying the backup's checks,
  with named counts of what it drops.
- ``fastvs.sync.backup``: the connection table a backup builds from records
  (``ip_vs_proc_conn``: create, update, replace, unbound entries, timeouts).
- ``fastvs.sync.states``: state names and default timeouts per protocol.
- ``fastvs.sync.policy``: when a master sends a connection (``ip_vs_sync_conn_needed``
  and its callers) and when a message leaves (full, or 2 s old).
- ``fastvs.sync.master``: engine events -> timed messages -> a pcap (``--sync-out``).
- ``fastvs.sync.frames``: sync datagrams in and out of captures.
- ``fastvs.sync.decode``: ``fastvs sync decode SYNC.pcap``.

INTEGRATION.md says what the engine and the CLI must provide. The referee is the
kernel: tests/golden/sync/ holds its recordings.
"""
