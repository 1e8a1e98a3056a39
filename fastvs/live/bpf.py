"""Classic BPF for the live path: a small assembler, the programs the forwarder attaches,
and their models.

- :func:`socket_filter`: the data sockets' filter (IPv4/IPv6 frames for this host,
  without neighbour discovery);
- :func:`l2_filter`: the ARP/ND sockets' filter (ARP, ICMPv6 NS/NA with hop limit 255);
- :func:`fanout_program`: the PACKET_FANOUT_CBPF steering program that sends both
  directions of a connection to one worker, and :func:`fanout_worker`, its model;
- :func:`interpret`: a classic-BPF interpreter for the instructions the assembler
  emits, so tests run the programs against frames without a kernel.

Pure Python, imported by the neighbour code and the AF_PACKET backend alike; it imports
nothing else from fastvs.live.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import Any

from fastvs.errors import RulesError

BPF_LD, BPF_LDX, BPF_ST, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS, BPF_IND, BPF_MEM, BPF_MSH = 0x20, 0x40, 0x60, 0xA0
BPF_MUL, BPF_RSH, BPF_MOD, BPF_XOR = 0x20, 0x70, 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE = 0x00, 0x10, 0x20, 0x30
BPF_K, BPF_X, BPF_A = 0x00, 0x08, 0x10
BPF_IMM = 0x00
BPF_TAX = BPF_MISC | 0x00
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
SKF_NET_OFF = -0x100000
PACKET_HOST = 0
PACKET_OUTGOING = 4
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NS = 135  # ICMPv6 Neighbour Solicitation
ND_NA = 136  # ICMPv6 Neighbour Advertisement
ACCEPT = 0x40000  # snap length a passing filter returns
MAX_VIPS4 = 200  # IPv4 VIPs the fanout program compares (one instruction each)
MAX_VIPS6 = 24  # IPv6 VIPs (eight instructions each)
FANOUT_MIX = 0x045D9F3B  # the multiplier of the fanout hash

Insn = tuple[int, Any, Any, int]  # (code, jt, jf, k); jt/jf may be label names


def assemble(prog: list[Insn | str]) -> bytes:
    """Assemble ``(code, jt, jf, k)`` tuples with string labels (a bare string marks
    the next instruction) into ``struct sock_filter`` records."""
    labels: dict[str, int] = {}
    insns: list[Insn] = []
    for item in prog:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(insns):

        def rel(t: Any, i: int = i) -> int:
            if isinstance(t, str):
                d = labels[t] - i - 1
                if not 0 <= d <= 255:
                    raise ValueError(f"BPF jump to {t} out of range")
                return d
            return int(t)

        if code == BPF_JMP | BPF_JA and isinstance(k, str):
            k = labels[k] - i - 1
        out += struct.pack("HBBI", code, rel(jt), rel(jf), k & 0xFFFFFFFF)
    return bytes(out)


def socket_filter() -> bytes:
    """Accept IPv4 and IPv6 frames addressed to this host (PACKET_HOST), except ICMPv6
    router/neighbour discovery (types 133..137, the ARP/ND socket's business); drop
    everything else (broadcast, multicast, other hosts', our own)."""
    return assemble([
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "drop", PACKET_HOST),
        (BPF_LD | BPF_H | BPF_ABS, 0, 0, 12),
        (BPF_JMP | BPF_JEQ | BPF_K, "accept", 0, ETH_P_IP),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "drop", ETH_P_IPV6),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 6),  # next header
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "accept", IPPROTO_ICMPV6),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 40),  # ICMPv6 type
        (BPF_JMP | BPF_JGE | BPF_K, 0, "accept", 133),
        (BPF_JMP | BPF_JGT | BPF_K, "accept", "drop", 137),
        "accept",
        (BPF_RET | BPF_K, 0, 0, ACCEPT),
        "drop",
        (BPF_RET | BPF_K, 0, 0, 0),
    ])  # fmt: skip


def l2_filter() -> bytes:
    """Classic BPF: ARP, and ICMPv6 Neighbour Solicitations/Advertisements right behind
    the IPv6 header (hop limit 255, as RFC 4861 requires), not sent by this host."""
    return assemble([
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
        (BPF_JMP | BPF_JEQ | BPF_K, "drop", 0, PACKET_OUTGOING),
        (BPF_LD | BPF_H | BPF_ABS, 0, 0, 12),
        (BPF_JMP | BPF_JEQ | BPF_K, "accept", 0, ETH_P_ARP),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "drop", ETH_P_IPV6),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 6),  # next header
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "drop", IPPROTO_ICMPV6),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 7),  # hop limit
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "drop", 255),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 40),  # ICMPv6 type
        (BPF_JMP | BPF_JEQ | BPF_K, "accept", 0, ND_NS),
        (BPF_JMP | BPF_JEQ | BPF_K, "accept", "drop", ND_NA),
        "accept",
        (BPF_RET | BPF_K, 0, 0, ACCEPT),
        "drop",
        (BPF_RET | BPF_K, 0, 0, 0),
    ])  # fmt: skip


def fanout_program(vips: Iterable[str], workers: int) -> bytes:
    """PACKET_FANOUT_CBPF steering: the worker is a hash of the client's (address,
    port) mod ``workers`` -- the source of a packet to a VIP, the destination of any
    other (a real server's reply to the client). Loads are relative to the network
    header (SKF_NET_OFF), whatever the skb's data pointer. For IPv6 the address is
    its low 32 bits, the port that of TCP/UDP right behind the fixed header (0 for
    anything else, e.g. behind extension headers); other frames go to worker 0."""
    vip_ints = sorted({int(ipaddress.IPv4Address(v)) for v in vips if ":" not in v})
    vip6 = sorted({ipaddress.IPv6Address(v).packed for v in vips if ":" in v})
    if len(vip_ints) > MAX_VIPS4:
        raise RulesError(f"more than {MAX_VIPS4} IPv4 VIPs: too many for the fanout program")
    if len(vip6) > MAX_VIPS6:
        raise RulesError(f"more than {MAX_VIPS6} IPv6 VIPs: too many for the fanout program")
    n = SKF_NET_OFF
    prog: list[Insn | str] = [
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PROTOCOL),
        (BPF_JMP | BPF_JEQ | BPF_K, "v4", 0, ETH_P_IP),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "zero", ETH_P_IPV6),
    ]
    for i, v in enumerate(vip6):
        words = struct.unpack("!4I", v)
        for w, word in enumerate(words):
            prog.append((BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 24 + 4 * w))  # daddr word w
            last = w == 3
            prog.append((BPF_JMP | BPF_JEQ | BPF_K, "src6" if last else 0, f"next6_{i}", word))
        prog.append(f"next6_{i}")
    prog += [
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 36),  # daddr, low word
        (BPF_ST, 0, 0, 0),  # M[0] = A
        (BPF_LD | BPF_H | BPF_ABS, 0, 0, n + 42),  # dport
        (BPF_JMP | BPF_JA, 0, 0, "port6"),
        "src6",
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 20),  # saddr, low word
        (BPF_ST, 0, 0, 0),
        (BPF_LD | BPF_H | BPF_ABS, 0, 0, n + 40),  # sport
        "port6",
        (BPF_TAX, 0, 0, 0),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, n + 6),  # next header
        (BPF_JMP | BPF_JEQ | BPF_K, "have6", 0, 6),
        (BPF_JMP | BPF_JEQ | BPF_K, "have6", 0, 17),
        (BPF_LDX | BPF_IMM, 0, 0, 0),  # no port
        "have6",
        (BPF_LD | BPF_MEM, 0, 0, 0),  # A = M[0]
        (BPF_JMP | BPF_JA, 0, 0, "mix"),
        "v4",
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 16),  # daddr
    ]
    for v in vip_ints:
        prog.append((BPF_JMP | BPF_JEQ | BPF_K, "src", 0, v))
    prog += [
        (BPF_LDX | BPF_B | BPF_MSH, 0, 0, n + 0),  # X = IHL * 4
        (BPF_LD | BPF_H | BPF_IND, 0, 0, n + 2),  # dport
        (BPF_TAX, 0, 0, 0),
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 16),  # daddr
        (BPF_JMP | BPF_JA, 0, 0, "mix"),
        "src",
        (BPF_LDX | BPF_B | BPF_MSH, 0, 0, n + 0),
        (BPF_LD | BPF_H | BPF_IND, 0, 0, n + 0),  # sport
        (BPF_TAX, 0, 0, 0),
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 12),  # saddr
        "mix",
        (BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),
        (BPF_TAX, 0, 0, 0),
        (BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        (BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),
        (BPF_ALU | BPF_MUL | BPF_K, 0, 0, FANOUT_MIX),
        (BPF_TAX, 0, 0, 0),
        (BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        (BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),
        (BPF_ALU | BPF_MOD | BPF_K, 0, 0, max(1, workers)),
        (BPF_RET | BPF_A, 0, 0, 0),
        "zero",
        (BPF_RET | BPF_K, 0, 0, 0),
    ]
    return assemble(prog)


def fanout_worker(client_ip: str, client_port: int, workers: int) -> int:
    """The worker :func:`fanout_program` picks for a client (its model, for tests and
    tools); IPv6: the low 32 bits of the address, ``client_port`` 0 unless TCP/UDP."""
    a = (int(ipaddress.ip_address(client_ip)) & 0xFFFFFFFF) ^ client_port
    a = ((a >> 16) ^ a) & 0xFFFFFFFF
    a = (a * FANOUT_MIX) & 0xFFFFFFFF
    a = ((a >> 16) ^ a) & 0xFFFFFFFF
    return a % workers


def interpret(prog: bytes, frame: bytes, pkttype: int) -> int:
    """Run ``prog`` over an Ethernet ``frame`` as the kernel would (network header at
    14): absolute loads, SKF_NET_OFF-relative loads, the pkttype/protocol ancillary
    loads, indirect loads, ldx msh/imm, scratch memory, the ALU ops, jumps and returns.
    A load outside the frame rejects the frame (returns 0), as in the kernel."""
    insns = [struct.unpack_from("HBBI", prog, i) for i in range(0, len(prog), 8)]
    ad, net = SKF_AD_OFF & 0xFFFFFFFF, SKF_NET_OFF & 0xFFFFFFFF
    a = x = pc = 0
    mem = [0] * 16

    def load(off: int, size: int) -> int | None:
        if off >= net:
            off = off - net + 14
        if off + size > len(frame):
            return None
        return int.from_bytes(frame[off:off + size], "big")

    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls, size = code & 0x07, {BPF_W: 4, BPF_H: 2, BPF_B: 1}.get(code & 0x18, 4)
        if cls == BPF_LD:
            mode = code & 0xE0
            if mode == BPF_MEM:
                a = mem[k]
                continue
            if mode == BPF_ABS and k == ad + SKF_AD_PKTTYPE:
                a = pkttype
                continue
            if mode == BPF_ABS and k == ad + SKF_AD_PROTOCOL:
                a = int.from_bytes(frame[12:14], "big")
                continue
            v = load(k if mode == BPF_ABS else (x + k) & 0xFFFFFFFF, size)
            if v is None:
                return 0
            a = v
        elif cls == BPF_LDX:
            if code & 0xE0 == BPF_MSH:
                v = load(k, 1)
                if v is None:
                    return 0
                x = (v & 0x0F) * 4
            else:
                x = k
        elif cls == BPF_ST:
            mem[k] = a
        elif cls == BPF_ALU:
            src = x if code & BPF_X else k
            op = code & 0xF0
            a = {BPF_XOR: a ^ src, BPF_RSH: a >> src, BPF_MUL: a * src,
                 BPF_MOD: a % src if src else 0}[op] & 0xFFFFFFFF
        elif cls == BPF_MISC:
            x = a
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
                continue
            hit = {BPF_JEQ: a == k, BPF_JGT: a > k, BPF_JGE: a >= k}[op]
            pc += jt if hit else jf
        elif cls == BPF_RET:
            return a if code & 0x18 == BPF_A else k
        else:
            raise ValueError(f"unexpected BPF op {code:#x}")


__all__ = ["assemble", "fanout_program", "fanout_worker", "interpret", "l2_filter", "socket_filter"]
