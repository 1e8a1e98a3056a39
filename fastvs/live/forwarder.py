"""``fastvs forward``: the engine carrying live traffic as an LVS-NAT director.

Frames come from AF_PACKET sockets (one per interface and worker), are processed in
batches by :class:`fastvs.live._afpacket.Pump` (recvmmsg -> checksum completion ->
``Engine.process`` -> Ethernet rewrite -> sendmmsg, the per-packet parts in Cython
without the GIL) and leave on the interface their verdict names: ``fwd_in`` (DNAT to a
real server) out the server side, ``fwd_out`` (SNAT'd reply) out the client side.
Nothing else is sent: the director is not a router.

Workers (``--workers N``) are forked processes, each with its own engine and sockets.
The sockets of one interface form a PACKET_FANOUT group steered by a classic BPF
program that hashes the *client's* address and port: the source of a packet sent to a
VIP, the destination of anything else. A connection's requests (client -> VIP, on the
client side) and its replies (real server -> client, on the server side) therefore
reach the same worker, which PACKET_FANOUT_HASH cannot promise once DNAT has changed
the 5-tuple. Workers send a JSON snapshot of their counters through a pipe once a
second; the parent sums them for ``--stats-every`` and ``--stats-json`` and prints the
final listing on SIGINT/SIGTERM. SIGHUP re-reads the rules and applies the difference
(add, edit, remove real servers; add services) without touching existing connections.

See docs/forwarder.md for the setup (addresses, sysctls, offloads) and its reasons.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastvs.errors import FastvsError, RulesError

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SIOCGIFMTU = 0x8921
SOCKET_BUF = 8 << 20
REPORT_EVERY = 1.0  # seconds between worker snapshots
READY_WAIT = 2.0  # seconds to wait for real servers' MACs before saying "ready"


class ForwardError(FastvsError):
    """The forwarder cannot start (no such interface, not root, bad options)."""

    exit_code = 1


# -- configuration ------------------------------------------------------------------------------
@dataclass
class ForwardConfig:
    rules: str
    client_if: str | None = None
    server_if: str | None = None
    one_arm_if: str | None = None
    workers: int = 1
    stats_every: float = 0.0
    stats_json: str | None = None
    neigh_file: str | None = None
    addrs: list[str] = field(default_factory=list)
    client_gw: list[str] = field(default_factory=list)
    batch: int = 256
    io: str = "ring-v2"
    ring_block_size: int = 1 << 16
    ring_blocks: int = 64
    ring_tov_ms: int = 1
    spin_us: int = 0
    capacity: int = 1 << 20
    seed: int | None = None
    rules_order: str = "kernel"
    keep_ttl: bool = False
    expire_nodest_conn: bool = False
    fix_offloads: bool = False
    arp_reply: bool = True
    quiet: bool = False

    def sides(self) -> list[tuple[str, str]]:
        """``[(side, ifname)]``: client then server, or the single one-arm interface."""
        if self.one_arm_if:
            return [("one-arm", self.one_arm_if)]
        assert self.client_if and self.server_if
        return [("client", self.client_if), ("server", self.server_if)]

    def check(self) -> None:
        if self.one_arm_if and (self.client_if or self.server_if):
            raise RulesError("use either --if (one-arm) or --client-if and --server-if")
        if not self.one_arm_if and not (self.client_if and self.server_if):
            raise RulesError("give --client-if and --server-if, or --if for a one-arm director")
        if self.client_if and self.client_if == self.server_if:
            self.one_arm_if, self.client_if, self.server_if = self.client_if, None, None
        if not 1 <= self.workers <= 64:
            raise RulesError("--workers must be 1..64")
        if not 1 <= self.batch <= 4096:
            raise RulesError("--batch must be 1..4096")
        if self.io not in ("ring-v3", "ring-v2", "mmsg"):
            raise RulesError("--io must be ring-v2, ring-v3 or mmsg")
        if self.io != "mmsg":
            from fastvs.live import _afpacket as A

            try:
                A.ring_geometry(self.ring_block_size, self.ring_blocks)
            except ValueError as e:
                raise RulesError(f"--ring-block-size/--ring-blocks: {e}") from None
            if not 1 <= self.ring_tov_ms <= 1000:
                raise RulesError("--ring-tov-ms must be 1..1000")
        if not 0 <= self.spin_us <= 100_000:
            raise RulesError("--spin-us must be 0..100000")
        self.addrs = [_canonical_ip(a, "--addr") for a in self.addrs]
        self.client_gw = [_canonical_ip(a, "--client-gw") for a in self.client_gw]
        if len({ipaddress.ip_address(a).version for a in self.client_gw}) < len(self.client_gw):
            raise RulesError("--client-gw: at most one IPv4 and one IPv6 gateway")


def _canonical_ip(text: str, what: str) -> str:
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        raise RulesError(f"{what}: bad IP address {text!r}") from None
    if a.is_multicast or a.is_unspecified:
        raise RulesError(f"{what}: not a unicast address: {text!r}")
    return str(a)


# -- interfaces and sockets ---------------------------------------------------------------------
@dataclass
class Iface:
    name: str
    mac: bytes
    mtu: int


def iface_info(name: str) -> Iface:
    try:
        idx = socket.if_nametoindex(name)
    except OSError:
        raise ForwardError(f"no such interface: {name}") from None
    del idx
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((name, 0))
        mac = s.getsockname()[4]
        req = struct.pack("16si12x", name.encode(), 0)
        mtu = struct.unpack("16si12x", fcntl.ioctl(s.fileno(), SIOCGIFMTU, req))[1]
    finally:
        s.close()
    if len(mac) != 6:
        raise ForwardError(f"{name}: not an Ethernet interface")
    return Iface(name, bytes(mac), mtu)


def _setbuf(s: socket.socket, force: int, plain: int, size: int) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, plain, size)


def open_data_socket(ifname: str, cfg: ForwardConfig | None = None) -> socket.socket:
    """An AF_PACKET socket for IP frames addressed to this host's MAC on ``ifname``.

    The socket filter is attached before the socket is bound to ETH_P_ALL, so nothing
    else is ever queued. With a ring (``cfg.io`` ``ring-v2``/``ring-v3``) the socket gets its RX
    ring here, before the bind (and before any PACKET_FANOUT join); otherwise
    PACKET_AUXDATA reports the checksum status of each frame to recvmmsg."""
    from fastvs.live import _afpacket as A

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        A.attach_filter(s.fileno(), socket_filter())
        if cfg is not None and cfg.io != "mmsg":
            A.setup_rx_ring(s.fileno(), cfg.ring_block_size, cfg.ring_blocks, cfg.ring_tov_ms,
                            version=3 if cfg.io == "ring-v3" else 2,
                            frame_size=ring_frame_size(iface_info(ifname).mtu, cfg.ring_block_size))
        s.setsockopt(A.SOL_PACKET, A.OPT_AUXDATA, 1)
        with contextlib.suppress(OSError):
            s.setsockopt(A.SOL_PACKET, A.OPT_IGNORE_OUTGOING, 1)
        with contextlib.suppress(OSError):
            s.setsockopt(A.SOL_PACKET, A.OPT_QDISC_BYPASS, 1)
        _setbuf(s, SO_RCVBUFFORCE, socket.SO_RCVBUF, SOCKET_BUF)
        _setbuf(s, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUF)
        s.bind((ifname, ETH_P_ALL))
    except BaseException:
        s.close()
        raise
    return s


def ring_frame_size(mtu: int, block_size: int) -> int:
    """TPACKET_V2 frame slot for an MTU: header, sockaddr_ll, Ethernet + 2 VLAN tags."""
    size = 2048
    while size < mtu + 18 + 128:
        size *= 2
    return min(size, block_size)


def join_fanout(s: socket.socket, group: int, program: bytes) -> None:
    from fastvs.live import _afpacket as A

    s.setsockopt(A.SOL_PACKET, A.OPT_FANOUT, (group & 0xFFFF) | (A.FANOUT_CBPF << 16))
    A.attach_filter(s.fileno(), program, fanout=True)


def drain(s: socket.socket) -> int:
    n = 0
    while True:
        try:
            s.recv(65536, socket.MSG_DONTWAIT)
            n += 1
        except (BlockingIOError, InterruptedError):
            return n


# -- classic BPF --------------------------------------------------------------------------------
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
        (BPF_JMP | BPF_JEQ | BPF_K, "accept", 0, 0x0800),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "drop", 0x86DD),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 6),  # next header
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "accept", 58),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, 14 + 40),  # ICMPv6 type
        (BPF_JMP | BPF_JGE | BPF_K, 0, "accept", 133),
        (BPF_JMP | BPF_JGT | BPF_K, "accept", "drop", 137),
        "accept",
        (BPF_RET | BPF_K, 0, 0, 0x40000),
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
    if len(vip_ints) > 200:
        raise RulesError("more than 200 IPv4 VIPs: too many for the fanout program")
    if len(vip6) > 24:
        raise RulesError("more than 24 IPv6 VIPs: too many for the fanout program")
    n = SKF_NET_OFF
    prog: list[Insn | str] = [
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PROTOCOL),
        (BPF_JMP | BPF_JEQ | BPF_K, "v4", 0, 0x0800),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, "zero", 0x86DD),
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
        (BPF_MISC | 0x00, 0, 0, 0),  # tax
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
        (BPF_MISC | 0x00, 0, 0, 0),  # tax
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 16),  # daddr
        (BPF_JMP | BPF_JA, 0, 0, "mix"),
        "src",
        (BPF_LDX | BPF_B | BPF_MSH, 0, 0, n + 0),
        (BPF_LD | BPF_H | BPF_IND, 0, 0, n + 0),  # sport
        (BPF_MISC | 0x00, 0, 0, 0),
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, n + 12),  # saddr
        "mix",
        (BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),
        (BPF_MISC | 0x00, 0, 0, 0),
        (BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        (BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),
        (BPF_ALU | BPF_MUL | BPF_K, 0, 0, 0x045D9F3B),
        (BPF_MISC | 0x00, 0, 0, 0),
        (BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        (BPF_ALU | BPF_XOR | BPF_X, 0, 0, 0),
        (BPF_ALU | BPF_MOD | BPF_K, 0, 0, max(1, workers)),
        (BPF_RET | BPF_A, 0, 0, 0),
        "zero",
        (BPF_RET | BPF_K, 0, 0, 0),
    ]
    return assemble(prog)


def fanout_worker(client_ip: str, client_port: int, workers: int) -> int:
    """The worker :func:`fanout_program` picks for a client (for tests and tools);
    IPv6: the low 32 bits of the address, ``client_port`` 0 unless TCP/UDP."""
    a = (int(ipaddress.ip_address(client_ip)) & 0xFFFFFFFF) ^ client_port
    a = ((a >> 16) ^ a) & 0xFFFFFFFF
    a = (a * 0x045D9F3B) & 0xFFFFFFFF
    a = ((a >> 16) ^ a) & 0xFFFFFFFF
    return a % workers


# -- offloads -----------------------------------------------------------------------------------
RX_AGGREGATION = ("generic-receive-offload", "large-receive-offload", "rx-gro-hw", "rx-gro-list")


def offload_state(ifname: str) -> dict[str, bool] | None:
    """``ethtool -k`` as {feature: on}; None when ethtool is not available."""
    try:
        out = subprocess.run(["ethtool", "-k", ifname], capture_output=True, text=True,
                             timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    state: dict[str, bool] = {}
    for line in out.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            state[k.strip()] = v.strip().startswith("on")
    return state


def check_offloads(ifname: str, fix: bool, log: Callable[[str], None]) -> None:
    """Warn about receive aggregation (GRO/LRO hand the socket frames larger than the
    MTU, which cannot be sent again); with ``fix`` turn it off."""
    st = offload_state(ifname)
    if st is None:
        log(f"warning: ethtool not found; cannot check receive offloads on {ifname} "
            "(GRO/LRO must be off: frames above the MTU are dropped as oversize)")
        return
    on = [f for f in RX_AGGREGATION if st.get(f)]
    if not on:
        return
    if fix:
        args = {"generic-receive-offload": "gro", "large-receive-offload": "lro",
                "rx-gro-hw": "rx-gro-hw", "rx-gro-list": "rx-gro-list"}
        cmd = ["ethtool", "-K", ifname]
        for f in on:
            cmd += [args[f], "off"]
        subprocess.run(cmd, capture_output=True, check=False)
        still = [f for f in RX_AGGREGATION if (offload_state(ifname) or {}).get(f)]
        if not still:
            log(f"{ifname}: turned off {', '.join(on)}")
            return
        on = still
    log(f"warning: {ifname}: {', '.join(on)} on; aggregated frames larger than the MTU "
        f"are dropped as oversize (ethtool -K {ifname} gro off lro off, or --fix-offloads)")


# -- rules reload -------------------------------------------------------------------------------
def apply_rules(director: Any, new: Any) -> list[str]:
    """Bring a running director to ``new`` rules without dropping connections
    (``Director.reload``). Returns what changed, one line per change."""
    return list(director.reload(new))


def _load_rules(cfg: ForwardConfig) -> Any:
    from fastvs.control.rules import load_rules

    if not os.path.exists(cfg.rules):
        raise RulesError("no such file", source=cfg.rules)
    return load_rules(cfg.rules, order=cfg.rules_order)  # type: ignore[arg-type]


def rules_addresses(rules: Any) -> tuple[set[str], set[str]]:
    """(VIPs, masqueraded real servers' addresses) of IPv4 and IPv6 TCP/UDP services."""
    vips: set[str] = set()
    rips: set[str] = set()
    for svc in rules.services:
        if svc.proto in ("tcp", "udp"):
            vips.add(svc.addr)
            rips.update(rs.addr for rs in svc.reals if rs.fwd == "masq")
    return vips, rips


def check_masq(rules: Any, log: Callable[[str], None]) -> None:
    for svc in rules.services:
        for rs in svc.reals:
            if rs.fwd != "masq":
                log(f"warning: {svc.spec()} -> {rs.addrport()} is {rs.fwd} (not -m): the "
                    "forwarder only sends masqueraded (NAT) traffic; add -m")


# -- one worker ---------------------------------------------------------------------------------
class Worker:
    """One engine, one Pump, the ARP sockets of each interface."""

    def __init__(self, cfg: ForwardConfig, wid: int, ifaces: list[Iface],
                 data: list[socket.socket], arp: list[socket.socket],
                 fanout_socks: list[socket.socket] | None = None) -> None:
        from fastvs.control.director import Director
        from fastvs.live import _afpacket as A
        from fastvs.live.neigh import Neighbours, Side, load_neigh_file

        self.cfg = cfg
        self.wid = wid
        self.log_prefix = f"fastvs forward[{wid}]: " if cfg.workers > 1 else "fastvs forward: "
        rules = _load_rules(cfg)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.director = Director(rules, capacity=cfg.capacity, seed=cfg.seed,
                                     keep_ttl=cfg.keep_ttl,
                                     expire_nodest_conn=cfg.expire_nodest_conn)
        if wid == 0:
            for w in caught:
                self.log(f"warning: {w.message}")
        self.fanout_socks = fanout_socks or []
        self.ifaces = ifaces
        mtu = max(i.mtu for i in ifaces)
        slot = max(2048, (mtu + 18 + 63) // 64 * 64)
        client, server = (data[0], data[-1])
        self.data = data
        self.pump = A.Pump(client.fileno(), server.fileno(), ifaces[0].mac, ifaces[-1].mac,
                           batch=cfg.batch, slot=slot, max_frame=mtu + 14 + 4,
                           aux_fds=[s.fileno() for s in arp], io=cfg.io,
                           ring_block_size=cfg.ring_block_size, ring_blocks=cfg.ring_blocks,
                           ring_frame_size=ring_frame_size(mtu, cfg.ring_block_size),
                           spin_us=cfg.spin_us)
        self.kernel = {"rx_kernel_packets": 0, "rx_kernel_drops": 0}
        for gw in cfg.client_gw:
            self.pump.set_gateway(gw)
        vips, rips = rules_addresses(rules)
        sides = [Side(name, i.name, i.mac, s)
                 for (name, _), i, s in zip(cfg.sides(), ifaces, arp, strict=True)]
        self.neigh = Neighbours(
            table=self.pump, sides=sides, answer_for=vips | set(cfg.addrs),
            own_addrs=list(cfg.addrs), resolve_set=rips | set(cfg.client_gw),
            answer=cfg.arp_reply and wid == 0, log=self.log)
        self.neigh.join_groups()
        if cfg.neigh_file:
            self.neigh.load_static(load_neigh_file(cfg.neigh_file))
        self.stop = False
        self.hup = False
        self.ready = False

    def log(self, msg: str) -> None:
        print(self.log_prefix + msg, file=sys.stderr, flush=True)

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        from fastvs.live import _afpacket as A

        for s in self.data:
            packets, drops = A.kernel_drops(s.fileno())
            self.kernel["rx_kernel_packets"] += packets
            self.kernel["rx_kernel_drops"] += drops
        io = self.pump.counters()
        io.update(self.kernel)
        io.update(self.neigh.counts)
        io["neighbours"] = len(self.pump.neigh_entries())
        return {
            "wid": self.wid,
            "final": final,
            "ready": self.ready,
            "services": self.director.services(),
            "counters": self.director.counters(),
            "summary": self.director.summary(),
            "io": io,
        }

    def reload(self) -> None:
        try:
            new = _load_rules(self.cfg)
        except FastvsError as e:
            self.log(f"SIGHUP: rules not reloaded: {e}")
            return
        try:
            msgs = apply_rules(self.director, new)
        except (FastvsError, ValueError, IndexError) as e:
            self.log(f"SIGHUP: reload failed part-way: {e}")
            return
        vips, rips = rules_addresses(new)
        self.neigh.answer_for = vips | set(self.cfg.addrs)
        self.neigh.resolve_set = rips | set(self.cfg.client_gw)
        self.neigh.join_groups()
        self.neigh.request(self.neigh.missing(), force=True)
        if self.fanout_socks:
            prog = fanout_program(vips, self.cfg.workers)
            for s in self.fanout_socks:
                from fastvs.live import _afpacket as A

                A.attach_filter(s.fileno(), prog, fanout=True)
        if self.wid == 0 or self.cfg.workers == 1:
            for m in msgs or ["no change"]:
                self.log(f"SIGHUP: {m}")

    def run(self, report: Callable[[dict[str, Any]], None], report_every: float = REPORT_EVERY) -> None:
        from fastvs.live._afpacket import monotonic_ns

        pump, engine, director, neigh = self.pump, self.director.engine, self.director, self.neigh
        neigh.announce()
        neigh.refresh()
        t_start = time.monotonic()
        next_report = t_start + report_every
        while not self.stop:
            n = pump.step(engine, 100)
            if n:
                if director.first_ts is None:
                    director.first_ts = monotonic_ns()
                director.packets += n
            if pump.aux_ready:
                neigh.handle(pump.aux_ready)
            wanted = pump.take_wanted()
            if wanted:
                neigh.request(wanted)
            now = time.monotonic()
            if not self.ready and (not neigh.missing() or now - t_start > READY_WAIT):
                self.ready = True
                missing = neigh.missing()
                if missing:
                    self.log(f"warning: no MAC yet for {', '.join(missing)}")
                report(self.snapshot())
            if now >= next_report:
                next_report = now + report_every
                engine.advance(monotonic_ns())
                neigh.refresh()
                report(self.snapshot())
            if self.hup:
                self.hup = False
                self.reload()
        engine.advance(monotonic_ns())
        report(self.snapshot(final=True))


# -- summing workers ----------------------------------------------------------------------------
_SUM_REAL = ("activeconns", "inactconns", "persistconns")


def merge_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the workers' snapshots: service and real-server stats and connection
    counts, verdict counters, summaries and I/O counters."""
    if not snaps:
        return {"services": [], "counters": {}, "summary": {}, "io": {}, "workers": 0}
    services: list[dict[str, Any]] = copy.deepcopy(snaps[0]["services"])
    by_svc = {(s["proto"], s["addr"], s["port"]): s for s in services}
    for snap in snaps[1:]:
        for s in snap["services"]:
            key = (s["proto"], s["addr"], s["port"])
            mine = by_svc.get(key)
            if mine is None:
                mine = by_svc[key] = copy.deepcopy(s)
                services.append(mine)
                continue
            _add(mine["stats"], s["stats"])
            reals = {(r["addr"], r["port"]): r for r in mine["reals"]}
            for r in s["reals"]:
                m = reals.get((r["addr"], r["port"]))
                if m is None:
                    mine["reals"].append(copy.deepcopy(r))
                    continue
                _add(m["stats"], r["stats"])
                for k in _SUM_REAL:
                    m[k] = m.get(k, 0) + r.get(k, 0)
    summary: dict[str, Any] = {}
    counters: dict[str, int] = {}
    io: dict[str, int] = {}
    for snap in snaps:
        _add(counters, snap["counters"])
        _add(io, snap["io"])
        for k, v in snap["summary"].items():
            if isinstance(v, dict):
                _add(summary.setdefault(k, {}), v)
            else:
                summary[k] = summary.get(k, 0) + v
    per_worker = [{"wid": snap["wid"], "rx": snap["io"].get("rx", 0), "tx": snap["io"].get("tx", 0),
                   "connections": snap["summary"].get("connections", 0)} for snap in snaps]
    return {"services": services, "counters": counters, "summary": summary, "io": io,
            "workers": len(snaps), "per_worker": per_worker}


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v


def format_report(merged: dict[str, Any]) -> str:
    from fastvs.control.listing import format_list, format_stats

    s, io = merged["summary"], merged["io"]
    lines = [
        format_list(merged["services"]),
        format_stats(merged["services"]),
        f"packets in {s.get('packets_in', 0)}  forwarded to real servers "
        f"{s.get('forwarded_in', 0)}  replies {s.get('forwarded_out', 0)}  "
        f"dropped {s.get('dropped', 0)}  connections {s.get('connections', 0)}"
        f"  (workers {merged.get('workers', 0)})",
        "  io " + "  ".join(f"{k} {v}" for k, v in sorted(io.items()) if v),
    ]
    drops = s.get("drops") or {}
    if drops:
        lines.append("  drops " + "  ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    return "\n".join(lines) + "\n"


def report_json(merged: dict[str, Any]) -> dict[str, Any]:
    from fastvs.control.listing import to_json

    doc = to_json(merged["services"], [], merged["summary"].get("drops") or {})
    doc["summary"] = merged["summary"]
    doc["verdicts"] = merged["counters"]
    doc["io"] = merged["io"]
    doc["workers"] = merged["workers"]
    doc["per_worker"] = merged.get("per_worker", [])
    doc["time"] = time.time()
    return doc


class Reporter:
    """Keeps each worker's latest snapshot; prints and writes the sum."""

    def __init__(self, cfg: ForwardConfig) -> None:
        self.cfg = cfg
        self.latest: dict[int, dict[str, Any]] = {}
        self.next_print = time.monotonic() + cfg.stats_every if cfg.stats_every > 0 else None
        self.announced = False

    def update(self, snap: dict[str, Any]) -> None:
        self.latest[int(snap["wid"])] = snap
        if not self.announced and len(self.latest) == self.cfg.workers and all(
                s.get("ready") for s in self.latest.values()):
            self.announced = True
            print("fastvs forward: ready", file=sys.stderr, flush=True)
        self.tick()

    def merged(self) -> dict[str, Any]:
        return merge_snapshots([self.latest[k] for k in sorted(self.latest)])

    def tick(self) -> None:
        if self.next_print is not None and time.monotonic() >= self.next_print:
            self.next_print = time.monotonic() + self.cfg.stats_every
            self.emit(final=False)

    def emit(self, final: bool) -> None:
        merged = self.merged()
        if self.cfg.stats_json:
            tmp = self.cfg.stats_json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(report_json(merged), f, indent=2, sort_keys=True)
            os.replace(tmp, self.cfg.stats_json)
        if final or not self.cfg.quiet:
            sys.stdout.write(format_report(merged))
            sys.stdout.write("\n")
            sys.stdout.flush()


# -- the command --------------------------------------------------------------------------------
def _open_all(cfg: ForwardConfig, ifaces: list[Iface], vips: set[str]) -> list[tuple[list[socket.socket], list[socket.socket]]]:
    """Per worker: (data sockets per side, ARP sockets per side), fanout joined in
    worker order so that socket i of every group belongs to worker i."""
    from fastvs.live.neigh import open_arp_socket

    out: list[tuple[list[socket.socket], list[socket.socket]]] = []
    prog = fanout_program(vips, cfg.workers) if cfg.workers > 1 else b""
    group_base = (os.getpid() * 7) & 0xFFFF
    for _w in range(cfg.workers):
        data = []
        for k, i in enumerate(ifaces):
            s = open_data_socket(i.name, cfg)
            if cfg.workers > 1:
                join_fanout(s, (group_base + k) & 0xFFFF, prog)
            data.append(s)
        arp = [open_arp_socket(i.name) for i in ifaces]
        out.append((data, arp))
    for data, _ in out:
        for s in data:
            drain(s)
    return out


def _install(handlers: dict[int, Callable[[int, Any], None]]) -> None:
    for sig, h in handlers.items():
        signal.signal(sig, h)


def run(cfg: ForwardConfig) -> int:
    cfg.check()
    rules = _load_rules(cfg)  # errors out early, before any socket
    log = lambda m: print(f"fastvs forward: {m}", file=sys.stderr, flush=True)  # noqa: E731
    check_masq(rules, log)
    if os.geteuid() != 0:
        log("warning: not root; AF_PACKET sockets need CAP_NET_RAW")
    ifaces = [iface_info(name) for _, name in cfg.sides()]
    for i in ifaces:
        check_offloads(i.name, cfg.fix_offloads, log)
    vips, _ = rules_addresses(rules)
    try:
        socks = _open_all(cfg, ifaces, vips)
    except PermissionError:
        raise ForwardError("AF_PACKET sockets need root (CAP_NET_RAW)") from None
    reporter = Reporter(cfg)
    if cfg.workers == 1:
        return _run_single(cfg, ifaces, socks[0], reporter)
    return _run_forked(cfg, ifaces, socks, reporter, log)


def _run_single(cfg: ForwardConfig, ifaces: list[Iface],
                socks: tuple[list[socket.socket], list[socket.socket]], reporter: Reporter) -> int:
    data, arp = socks
    w = Worker(cfg, 0, ifaces, data, arp)

    def on_stop(_sig: int, _frame: Any) -> None:
        w.stop = True

    def on_hup(_sig: int, _frame: Any) -> None:
        w.hup = True

    _install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_hup})
    every = min(REPORT_EVERY, cfg.stats_every / 2) if cfg.stats_every > 0 else REPORT_EVERY
    w.run(reporter.update, every)
    reporter.emit(final=True)
    return 0


def _child(cfg: ForwardConfig, wid: int, ifaces: list[Iface],
           socks: tuple[list[socket.socket], list[socket.socket]], wfd: int) -> int:
    data, arp = socks
    w = Worker(cfg, wid, ifaces, data, arp, fanout_socks=data)

    def on_stop(_sig: int, _frame: Any) -> None:
        w.stop = True

    def on_hup(_sig: int, _frame: Any) -> None:
        w.hup = True

    _install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_hup})
    out = os.fdopen(wfd, "w", buffering=1)

    def send(snap: dict[str, Any]) -> None:
        try:
            out.write(json.dumps(snap) + "\n")
        except BrokenPipeError:
            w.stop = True

    every = min(REPORT_EVERY, cfg.stats_every / 2) if cfg.stats_every > 0 else REPORT_EVERY
    w.run(send, every)
    with contextlib.suppress(OSError):
        out.close()
    return 0


def _run_forked(cfg: ForwardConfig, ifaces: list[Iface],
                socks: list[tuple[list[socket.socket], list[socket.socket]]],
                reporter: Reporter, log: Callable[[str], None]) -> int:
    children: dict[int, int] = {}  # read fd -> pid
    bufs: dict[int, bytes] = {}
    # block the signals while forking so that a child never runs the parent's handlers
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        for wid, pair in enumerate(socks):
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                for other, (d, a) in enumerate(socks):
                    if other != wid:
                        for s in (*d, *a):
                            s.close()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
                code = 1
                try:
                    code = _child(cfg, wid, ifaces, pair, wfd)
                except FastvsError as e:
                    print(f"fastvs forward[{wid}]: {e}", file=sys.stderr, flush=True)
                    code = e.exit_code
                except BaseException as e:  # noqa: BLE001 - a child must never return
                    print(f"fastvs forward[{wid}]: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            os.close(wfd)
            children[r] = pid
            bufs[r] = b""
        for d, a in socks:
            for s in (*d, *a):
                s.close()
        state = {"stopping": False, "hup": False}

        def on_stop(_sig: int, _frame: Any) -> None:
            state["stopping"] = True

        def on_hup(_sig: int, _frame: Any) -> None:
            state["hup"] = True

        _install({signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_hup})
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})

    pids = list(children.values())
    signalled = False
    failed = False
    open_fds = set(children)
    while open_fds:
        if state["stopping"] and not signalled:
            signalled = True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if state["hup"]:
            state["hup"] = False
            try:
                _load_rules(cfg)
            except FastvsError as e:
                log(f"SIGHUP: rules not reloaded: {e}")
            else:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGHUP)
        try:
            ready, _, _ = select.select(list(open_fds), [], [], 0.2)
        except InterruptedError:
            continue
        for fd in ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                open_fds.discard(fd)
                os.close(fd)
                if not state["stopping"]:
                    log(f"worker pid {children[fd]} exited; stopping")
                    failed = True
                    state["stopping"] = True
                continue
            bufs[fd] += chunk
            *lines, bufs[fd] = bufs[fd].split(b"\n")
            for line in lines:
                if line:
                    reporter.update(json.loads(line))
        reporter.tick()
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    reporter.emit(final=True)
    return 1 if failed else 0


# -- command line -------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--rules", required=True, help="rules in ipvsadm -S -n format (masquerading, -m)")
    p.add_argument("--client-if", metavar="IF", help="interface facing the clients")
    p.add_argument("--server-if", metavar="IF", help="interface facing the real servers")
    p.add_argument("--if", dest="one_arm_if", metavar="IF",
                   help="one-arm director: clients and real servers on one interface")
    p.add_argument("--workers", type=int, default=1, help="worker processes (PACKET_FANOUT)")
    p.add_argument("--stats-every", type=float, default=0.0, metavar="S",
                   help="print the listing every S seconds (default: only at exit)")
    p.add_argument("--stats-json", metavar="FILE", help="keep JSON statistics in FILE")
    p.add_argument("--neigh", metavar="FILE", help="static neighbours: 'ip mac' per line (IPv4 or IPv6)")
    p.add_argument("--addr", action="append", default=[], metavar="IP",
                   help="an address of the director fastvs answers ARP / neighbour solicitations "
                   "for (e.g. the real servers' default gateway), IPv4 or IPv6; repeatable")
    p.add_argument("--client-gw", action="append", default=[], metavar="IP",
                   help="router for replies to clients whose MAC is not known (one IPv4 and "
                   "one IPv6 at most)")
    p.add_argument("--batch", type=int, default=256, help="frames taken per socket per round")
    p.add_argument("--io", choices=("ring-v2", "ring-v3", "mmsg"), default="ring-v2",
                   help="receive from a memory-mapped TPACKET_V2 ring (default: frame by frame), "
                   "a TPACKET_V3 ring (blocks, handed over full or after --ring-tov-ms) or with recvmmsg")
    p.add_argument("--ring-block-size", type=int, default=1 << 16, metavar="BYTES",
                   help="ring block size (a power of two; default 65536)")
    p.add_argument("--ring-blocks", type=int, default=64, metavar="N", help="ring blocks per socket")
    p.add_argument("--spin-us", type=int, default=0, metavar="US",
                   help="rings: watch an empty ring this many microseconds before sleeping "
                   "(fewer wake-ups under load, at the price of CPU)")
    p.add_argument("--ring-tov-ms", type=int, default=1, metavar="MS",
                   help="a ring block is handed over at the latest MS ms after its first frame")
    p.add_argument("--capacity", type=int, default=1 << 20, help="connection table size")
    p.add_argument("--seed", type=int, default=None, help="connection-table hash seed")
    p.add_argument("--rules-order", choices=("kernel", "file"), default="kernel")
    p.add_argument("--keep-ttl", action="store_true", help="do not decrement TTL")
    p.add_argument("--expire-nodest-conn", action="store_true")
    p.add_argument("--fix-offloads", action="store_true",
                   help="turn off GRO/LRO on the interfaces (ethtool -K)")
    p.add_argument("--no-arp-reply", action="store_true",
                   help="do not answer ARP or neighbour solicitations for the VIPs (another "
                   "box announces them)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final listing")


def config_from_args(a: argparse.Namespace) -> ForwardConfig:
    return ForwardConfig(
        rules=a.rules, client_if=a.client_if, server_if=a.server_if, one_arm_if=a.one_arm_if,
        workers=a.workers, stats_every=a.stats_every, stats_json=a.stats_json,
        neigh_file=a.neigh, addrs=list(a.addr), client_gw=list(a.client_gw), batch=a.batch,
        io=a.io, ring_block_size=a.ring_block_size, ring_blocks=a.ring_blocks,
        ring_tov_ms=a.ring_tov_ms, spin_us=a.spin_us,
        capacity=a.capacity, seed=a.seed, rules_order=a.rules_order, keep_ttl=a.keep_ttl,
        expire_nodest_conn=a.expire_nodest_conn, fix_offloads=a.fix_offloads,
        arp_reply=not a.no_arp_reply, quiet=a.quiet,
    )


def cmd_forward(a: argparse.Namespace) -> int:
    return run(config_from_args(a))


def add_cli(subparsers: Any) -> None:
    """Register ``fastvs forward`` on the ``fastvs`` command's subparsers."""
    p = subparsers.add_parser(
        "forward",
        help="forward live traffic as an LVS-NAT director (AF_PACKET)",
        description="Carry live TCP/UDP traffic between clients and real servers as an "
        "LVS director in NAT mode, on raw AF_PACKET sockets.",
    )
    add_arguments(p)
    p.set_defaults(func=cmd_forward)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastvs")
    sub = p.add_subparsers(dest="cmd")
    add_cli(sub)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "forward":
        args = ["forward", *args]
    a = p.parse_args(args)
    try:
        return int(a.func(a) or 0)
    except FastvsError as e:
        print(f"fastvs: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
