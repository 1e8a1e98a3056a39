"""The AF_XDP receive/transmit path (issue 15): the pieces a live backend is built from.

- :mod:`.asm`      an eBPF assembler (instructions per include/uapi/linux/bpf.h, labels)
- :mod:`.bpf`      the bpf() system call through ctypes: maps, program load (the verifier's
                   last line on a refusal), BPF_PROG_TEST_RUN, object info, bpf_link
- :mod:`.program`  the XDP program built as instructions + its Python model: frames to a
                   VIP, from a real server, ARP/ND for our addresses -> the XSKMAP slot of
                   the rx queue (XDP_PASS when the slot is empty); everything else
                   XDP_PASS. Addresses in hash maps (a reload updates maps, not code).
- :mod:`.netlink`  IFLA_XDP attach/detach/query over rtnetlink (extended-ack messages)
- :mod:`.attach`   attach (native/generic/auto; netlink or bpf_link), detach only our own
                   program, leftovers of a killed forwarder found by name and removed
                   under a per-interface lock, a foreign program -> one-line XdpError
- :mod:`.probe`    one line saying why AF_XDP cannot be used here (or None)
- :mod:`._xsk`     (Cython) Umem + XskSocket: rings, batch receive into the engine's
                   batch arrays (offsets into the UMEM), zero-copy-in-user-space
                   transmit of the same frames, completion -> fill recycling, kicks only
                   when the ring asks; nogil ring operations exported in ``_xsk.pxd``

A frame's life: XDP program -> RX ring -> ``xsk_rx`` (off/len into the batch arrays,
buffer = ``Umem.buf``) -> engine.process -> L2 output stage -> ``xsk_tx`` on the socket
of the output interface (same UMEM) or ``umem_recycle`` -> completion ring ->
``xsk_refill`` -> fill ring.

Copy mode loses the skb's checksum state: a frame a veth peer sent with TX checksum
offload arrives with only the pseudo-header sum in its TCP/UDP checksum field and no flag
saying so (measured in tests/live/xdp). The output stage must complete such checksums
itself (or the peers turn tx offload off; frames from a real wire are complete).
"""
