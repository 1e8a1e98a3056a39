"""AF_XDP receive/transmit path: XDP program (built as eBPF instructions), bpf()/netlink, AF_XDP sockets."""
