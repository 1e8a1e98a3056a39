"""fastvs's XDP program, built as eBPF instructions, its maps, and a Python model of it.

What the program does with a frame on (ifindex, rx queue q)::

    Ethernet (no VLAN tag) carrying
      IPv4 / IPv6 whose destination is a VIP                    -> redirect   (redirect_vip)
      IPv4 / IPv6 whose source is a real server                 -> redirect   (redirect_real_server)
      ARP whose target is a VIP/--addr or whose sender a
        real server/gateway; ICMPv6 NS/NA (no extension header)
        whose target is one of those                            -> redirect   (redirect_arp_nd)
      anything else                                             -> XDP_PASS   (pass_other)
      cut shorter than its headers                              -> XDP_PASS   (pass_short)
    redirect = bpf_redirect_map(xsks, q, XDP_PASS): the AF_XDP socket bound to queue q;
               no socket in that slot -> XDP_PASS                             (pass_no_socket)

The addresses live in two BPF hash maps (``addr4``: 4-byte keys, ``addr6``: 16-byte keys;
value: a u32 of ``F_*`` flags), so a rules reload updates the maps, never the program.
Each outcome is counted in a per-CPU array (``stats``, index = :data:`REASONS` position).

:func:`model` is the same decision in Python; the tests run crafted frames through the
kernel (BPF_PROG_TEST_RUN) and compare its verdict and counters with the model.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fastvs.live.xdp import bpf
from fastvs.live.xdp.asm import (
    FN_MAP_LOOKUP_ELEM,
    FN_REDIRECT_MAP,
    FP,
    R0,
    R1,
    R2,
    R3,
    R6,
    R7,
    R8,
    R9,
    Asm,
    htons,
)

PROG_NAME = "fastvs_xdp"  # how a leftover program of ours is recognised (15 chars max)

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

# address flags (the value of addr4/addr6)
F_DST = 1  # frames to it go to the socket (a VIP)
F_SRC = 2  # frames from it go to the socket (a real server)
F_ARP = 4  # ARP / neighbour solicitations for it go to the socket (VIP, --addr)
F_NEIGH = 8  # ARP / neighbour advertisements from it go to the socket (real server, gateway)

REASONS = ("pass_other", "pass_short", "redirect_vip", "redirect_real_server",
           "redirect_arp_nd", "pass_no_socket")
PASS_OTHER, PASS_SHORT, REDIR_VIP, REDIR_RS, REDIR_L2, PASS_NO_SOCKET = range(len(REASONS))

# struct xdp_md offsets
MD_DATA, MD_DATA_END, MD_RX_QUEUE = 0, 4, 16

ETH_P_IP, ETH_P_IPV6, ETH_P_ARP = 0x0800, 0x86DD, 0x0806


def build(addr4_fd: int, addr6_fd: int, xsk_fd: int, stats_fd: int, steer_l2: bool = True) -> bytes:
    """The program's instructions, with the four maps' fds in its ld_imm64 slots. With
    ``steer_l2`` False, ARP and neighbour discovery always pass to the stack (where the
    forwarder's AF_PACKET ARP/ND sockets see them, as without XDP)."""
    a = Asm()
    a.mov(R6, R1)                             # r6 = ctx
    a.ldx(4, R7, R6, MD_DATA)                 # r7 = data
    a.ldx(4, R8, R6, MD_DATA_END)             # r8 = data_end

    def need(n: int, short: str) -> None:     # goto short unless data + n <= data_end
        a.mov(R2, R7)
        a.addi(R2, n)
        a.jmp("jgt", R2, R8, short, reg=True)

    def lookup(map_fd: int, key_off: int, size: int, miss: str) -> None:
        """r1 = flags of the address at data + key_off (copied to the stack), or goto miss."""
        for k in range(0, size, 4):
            a.ldx(4, R2, R7, key_off + k)
            a.stx(4, FP, -size + k, R2)
        a.ld_map_fd(R1, map_fd)
        a.mov(R2, FP)
        a.addi(R2, -size)
        a.call(FN_MAP_LOOKUP_ELEM)
        a.jmp("jeq", R0, 0, miss)
        a.ldx(4, R1, R0, 0)

    need(14, "short")
    a.ldx(2, R2, R7, 12)
    a.jmp("jeq", R2, htons(ETH_P_IP), "ip4")
    a.jmp("jeq", R2, htons(ETH_P_IPV6), "ip6")
    if steer_l2:
        a.jmp("jeq", R2, htons(ETH_P_ARP), "arp")
    a.ja("other")

    # IPv4: destination (offset 30), then source (26)
    a.label("ip4")
    need(34, "short")
    lookup(addr4_fd, 30, 4, "ip4_src")
    a.jmp("jset", R1, F_DST, "redir_vip")
    a.label("ip4_src")
    lookup(addr4_fd, 26, 4, "other")
    a.jmp("jset", R1, F_SRC, "redir_rs")
    a.ja("other")

    # ARP (Ethernet/IPv4): target protocol address (38), sender protocol address (28)
    if steer_l2:
        a.label("arp")
        need(42, "short")
        lookup(addr4_fd, 38, 4, "arp_sender")
        a.jmp("jset", R1, F_ARP, "redir_l2")
        a.label("arp_sender")
        lookup(addr4_fd, 28, 4, "other")
        a.jmp("jset", R1, F_NEIGH, "redir_l2")
        a.ja("other")

    # IPv6: destination (38), source (22); then ICMPv6 NS/NA: target (62)
    a.label("ip6")
    need(54, "short")
    if not steer_l2:
        # neighbour discovery (ICMPv6 133-137 right after the header) stays with the
        # stack, as ARP does: the ND socket learns the real servers' MACs from it
        a.ldx(1, R2, R7, 20)                  # next header
        a.jmp("jne", R2, 58, "ip6_addr")
        need(55, "ip6_addr")
        a.ldx(1, R2, R7, 54)                  # ICMPv6 type
        a.jmp("jlt", R2, 133, "ip6_addr")
        a.jmp("jgt", R2, 137, "ip6_addr")
        a.ja("other")
        a.label("ip6_addr")
    lookup(addr6_fd, 38, 16, "ip6_src")
    a.jmp("jset", R1, F_DST, "redir_vip")
    a.label("ip6_src")
    lookup(addr6_fd, 22, 16, "ip6_nd")
    a.jmp("jset", R1, F_SRC, "redir_rs")
    a.label("ip6_nd")
    if steer_l2:
        a.ldx(1, R2, R7, 20)                  # next header
        a.jmp("jne", R2, 58, "other")
        need(78, "other")                     # ICMPv6 header + target address
        a.ldx(1, R2, R7, 54)                  # ICMPv6 type
        a.jmp("jeq", R2, 135, "nd")
        a.jmp("jne", R2, 136, "other")
        a.label("nd")
        lookup(addr6_fd, 62, 16, "other")
        a.jmp("jset", R1, F_ARP | F_NEIGH, "redir_l2")
    a.ja("other")

    # outcomes: r9 = reason, r8 = verdict
    outcomes = [("redir_vip", REDIR_VIP), ("redir_rs", REDIR_RS)]
    if steer_l2:  # (the verifier refuses unreachable instructions)
        outcomes.append(("redir_l2", REDIR_L2))
    for label, reason in outcomes:
        a.label(label)
        a.movi(R9, reason)
        a.ja("redirect")
    a.label("short")
    a.movi(R9, PASS_SHORT)
    a.movi(R8, XDP_PASS)
    a.ja("count")
    a.label("other")
    a.movi(R9, PASS_OTHER)
    a.movi(R8, XDP_PASS)
    a.ja("count")

    a.label("redirect")                       # bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)
    a.ld_map_fd(R1, xsk_fd)
    a.ldx(4, R2, R6, MD_RX_QUEUE)
    a.movi(R3, XDP_PASS)
    a.call(FN_REDIRECT_MAP)
    a.mov(R8, R0)
    a.jmp("jne", R8, XDP_PASS, "count")
    a.movi(R9, PASS_NO_SOCKET)

    a.label("count")                          # stats[r9] += 1 (per CPU)
    a.stx(4, FP, -4, R9)
    a.ld_map_fd(R1, stats_fd)
    a.mov(R2, FP)
    a.addi(R2, -4)
    a.call(FN_MAP_LOOKUP_ELEM)
    a.jmp("jeq", R0, 0, "out")
    a.ldx(8, R1, R0, 0)
    a.addi(R1, 1)
    a.stx(8, R0, 0, R1)
    a.label("out")
    a.mov(R0, R8)
    a.exit()
    return a.assemble()


# -- the model ------------------------------------------------------------------------------
def model(frame: bytes, addr4: Mapping[bytes, int], addr6: Mapping[bytes, int],
          steer_l2: bool = True) -> int:
    """The reason (index into :data:`REASONS`) the program gives ``frame``, before the
    socket lookup: REDIR_* means it asks for the queue's socket (XDP_REDIRECT if one is
    bound there, else XDP_PASS counted as pass_no_socket)."""
    if len(frame) < 14:
        return PASS_SHORT
    et = int.from_bytes(frame[12:14], "big")
    if et == ETH_P_IP:
        if len(frame) < 34:
            return PASS_SHORT
        if addr4.get(frame[30:34], 0) & F_DST:
            return REDIR_VIP
        if addr4.get(frame[26:30], 0) & F_SRC:
            return REDIR_RS
        return PASS_OTHER
    if et == ETH_P_ARP and steer_l2:
        if len(frame) < 42:
            return PASS_SHORT
        if addr4.get(frame[38:42], 0) & F_ARP or addr4.get(frame[28:32], 0) & F_NEIGH:
            return REDIR_L2
        return PASS_OTHER
    if et == ETH_P_IPV6:
        if len(frame) < 54:
            return PASS_SHORT
        if not steer_l2 and frame[20] == 58 and len(frame) >= 55 and 133 <= frame[54] <= 137:
            return PASS_OTHER
        if addr6.get(frame[38:54], 0) & F_DST:
            return REDIR_VIP
        if addr6.get(frame[22:38], 0) & F_SRC:
            return REDIR_RS
        if steer_l2 and frame[20] == 58 and len(frame) >= 78 and frame[54] in (135, 136):
            if addr6.get(frame[62:78], 0) & (F_ARP | F_NEIGH):
                return REDIR_L2
        return PASS_OTHER
    return PASS_OTHER


def model_verdict(reason: int, socket_bound: bool) -> tuple[int, int]:
    """(XDP action, counted reason) for a model reason and whether the queue has a socket."""
    if reason in (REDIR_VIP, REDIR_RS, REDIR_L2):
        return (XDP_REDIRECT, reason) if socket_bound else (XDP_PASS, PASS_NO_SOCKET)
    return XDP_PASS, reason


# -- address sets ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AddressSets:
    """What the program steers: VIPs, real servers, addresses answered for (``--addr``),
    neighbours resolved (``--client-gw``). VIPs get F_DST|F_ARP, real servers
    F_SRC|F_NEIGH, --addr F_ARP, the gateway F_NEIGH."""

    vips: frozenset[str] = frozenset()
    real_servers: frozenset[str] = frozenset()
    own: frozenset[str] = frozenset()
    neighbours: frozenset[str] = frozenset()

    @classmethod
    def of(cls, vips: Iterable[str] = (), real_servers: Iterable[str] = (),
           own: Iterable[str] = (), neighbours: Iterable[str] = ()) -> AddressSets:
        return cls(frozenset(vips), frozenset(real_servers), frozenset(own), frozenset(neighbours))

    def flags(self) -> tuple[dict[bytes, int], dict[bytes, int]]:
        """(addr4, addr6): packed address -> flags."""
        out: tuple[dict[bytes, int], dict[bytes, int]] = ({}, {})
        for group, fl in ((self.vips, F_DST | F_ARP), (self.real_servers, F_SRC | F_NEIGH),
                          (self.own, F_ARP), (self.neighbours, F_NEIGH)):
            for s in group:
                ip = ipaddress.ip_address(s)
                d = out[0] if ip.version == 4 else out[1]
                d[ip.packed] = d.get(ip.packed, 0) | fl
        return out


class XdpProgram:
    """The loaded program and its maps (owned: :meth:`close` releases them).

    ``queues`` is the XSKMAP's size (rx queue indices 0..queues-1 can have a socket);
    ``max_addresses`` the size of each address map; ``steer_l2`` see :func:`build`;
    ``share_addresses`` another program whose address maps this one uses too."""

    def __init__(self, queues: int = 64, max_addresses: int = 4096, steer_l2: bool = True,
                 share_addresses: XdpProgram | None = None) -> None:
        self.fds: list[int] = []
        try:
            if share_addresses is not None:
                # one program per interface (each its own XSKMAP), one set of address
                # maps: a reload through any of them updates all
                self.addr4, self.addr6 = share_addresses.addr4, share_addresses.addr6
                self.addr4_fd = self._keep(os.dup(share_addresses.addr4_fd))
                self.addr6_fd = self._keep(os.dup(share_addresses.addr6_fd))
            else:
                self.addr4, self.addr6 = {}, {}
                self.addr4_fd = self._keep(bpf.map_create(bpf.MAP_TYPE_HASH, 4, 4, max_addresses,
                                                          "fastvs_addr4"))
                self.addr6_fd = self._keep(bpf.map_create(bpf.MAP_TYPE_HASH, 16, 4, max_addresses,
                                                          "fastvs_addr6"))
            self.xsk_fd = self._keep(bpf.map_create(bpf.MAP_TYPE_XSKMAP, 4, 4, queues,
                                                    "fastvs_xsks"))
            self.stats_fd = self._keep(bpf.map_create(bpf.MAP_TYPE_PERCPU_ARRAY, 4, 8,
                                                      len(REASONS), "fastvs_stats"))
            self.insns = build(self.addr4_fd, self.addr6_fd, self.xsk_fd, self.stats_fd, steer_l2)
            self.prog_fd = self._keep(bpf.prog_load(self.insns, PROG_NAME))
        except BaseException:
            self.close()
            raise
        self.queues = queues
        self.steer_l2 = steer_l2
        info = bpf.prog_info(self.prog_fd)
        self.prog_id = int(info["id"])  # type: ignore[call-overload]
        self.tag = str(info["tag"])

    def share(self) -> XdpProgram:
        """A copy holding its own duplicates of every descriptor (a worker's: closing
        it leaves the others' working)."""
        other = copy.copy(self)
        dup = {fd: os.dup(fd) for fd in self.fds}
        other.fds = list(dup.values())
        other.addr4, other.addr6 = dict(self.addr4), dict(self.addr6)
        for name in ("addr4_fd", "addr6_fd", "xsk_fd", "stats_fd", "prog_fd"):
            setattr(other, name, dup[getattr(self, name)])
        return other

    def _keep(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def set_addresses(self, sets: AddressSets) -> None:
        """Make the maps hold exactly ``sets`` (adds and changes first, then removals)."""
        want4, want6 = sets.flags()
        for fd, have, want in ((self.addr4_fd, self.addr4, want4), (self.addr6_fd, self.addr6, want6)):
            for k, v in want.items():
                if have.get(k) != v:
                    bpf.map_update(fd, k, struct.pack("=I", v))
                    have[k] = v
            for k in [k for k in have if k not in want]:
                bpf.map_delete(fd, k)
                del have[k]

    def set_socket(self, queue: int, xsk_fd: int) -> None:
        """Put an AF_XDP socket in the XSKMAP slot of ``queue``."""
        bpf.map_update(self.xsk_fd, struct.pack("=I", queue), struct.pack("=I", xsk_fd))

    def clear_socket(self, queue: int) -> None:
        bpf.map_delete(self.xsk_fd, struct.pack("=I", queue))

    def counters(self) -> dict[str, int]:
        return {name: bpf.percpu_sum_u64(self.stats_fd, i) for i, name in enumerate(REASONS)}

    def test_run(self, frame: bytes) -> int:
        """The kernel's verdict for ``frame`` (BPF_PROG_TEST_RUN, rx queue 0)."""
        return bpf.prog_test_run(self.prog_fd, frame)[0]

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
