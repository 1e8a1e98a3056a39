"""The XDP program against its Python model: the kernel runs it on crafted frames
(BPF_PROG_TEST_RUN) and its verdict and outcome counters must be the model's. Also the
assembler's encoding and the verifier's one-line complaint."""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import struct

import pytest

from fastvs.live.xdp import asm, bpf
from fastvs.live.xdp.program import (
    PASS_OTHER,
    PASS_SHORT,
    REASONS,
    REDIR_L2,
    REDIR_RS,
    REDIR_VIP,
    XDP_PASS,
    AddressSets,
    XdpProgram,
    model,
    model_verdict,
)


def _bpf_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        fd = bpf.map_create(bpf.MAP_TYPE_ARRAY, 4, 4, 1, "fastvs_probe")
    except bpf.BpfError as e:
        return str(e)
    os.close(fd)
    return None


_why = _bpf_usable()
needs_bpf = pytest.mark.skipif(_why is not None, reason=_why or "")

VIP, VIP6 = "10.0.0.100", "2001:db8::100"
RS, RS6 = "10.1.0.11", "2001:db8:1::11"
OWN, OWN6 = "10.1.0.1", "2001:db8:1::1"
GW = "10.0.0.254"
CLIENT, CLIENT6 = "10.0.0.2", "2001:db8::2"
SETS = AddressSets.of(vips=[VIP, VIP6, "10.0.0.101"], real_servers=[RS, RS6, "10.1.0.12"],
                      own=[OWN, OWN6], neighbours=[GW])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def ip(a: str) -> bytes:
    return ipaddress.ip_address(a).packed


def eth(et: int, payload: bytes, dst: bytes = MAC_A) -> bytes:
    return dst + MAC_B + struct.pack("!H", et) + payload


def ip4(src: str, dst: str, proto: int = 17, payload: bytes = bytes(12)) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, ip(src), ip(dst))
    return eth(0x0800, hdr + payload)


def ip6(src: str, dst: str, nxt: int = 17, payload: bytes = bytes(12)) -> bytes:
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(payload), nxt, 255, ip(src), ip(dst))
    return eth(0x86DD, hdr + payload)


def arp(op: int, sender: str, target: str) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, MAC_B, ip(sender), bytes(6), ip(target))
    return eth(0x0806, body, b"\xff" * 6)


def nd(kind: int, src: str, dst: str, target: str, ext: bool = False) -> bytes:
    icmp = struct.pack("!BBHI16s", kind, 0, 0, 0, ip(target)) + b"\x01\x01" + MAC_B
    if ext:  # a hop-by-hop header first: the program (and the model) pass it
        return ip6(src, dst, 0, bytes([58, 0, 1, 4, 0, 0, 0, 0]) + icmp)
    return ip6(src, dst, 58, icmp)


CASES = {
    "udp to VIP": (ip4(CLIENT, VIP), REDIR_VIP),
    "tcp to second VIP": (ip4(CLIENT, "10.0.0.101", 6, bytes(20)), REDIR_VIP),
    "reply from real server": (ip4(RS, CLIENT), REDIR_RS),
    "real server to VIP": (ip4(RS, VIP), REDIR_VIP),
    "to the director's own address": (ip4(CLIENT, OWN), PASS_OTHER),
    "unrelated IPv4": (ip4(CLIENT, "192.0.2.1"), PASS_OTHER),
    "from the gateway (neighbour only)": (ip4(GW, CLIENT), PASS_OTHER),
    "ARP who-has VIP": (arp(1, CLIENT, VIP), REDIR_L2),
    "ARP who-has --addr": (arp(1, RS, OWN), REDIR_L2),
    "ARP reply from real server": (arp(2, RS, "0.0.0.0"), REDIR_L2),
    "ARP reply from gateway": (arp(2, GW, OWN), REDIR_L2),
    "ARP for someone else": (arp(1, CLIENT, "10.0.0.3"), PASS_OTHER),
    "IPv6 to VIP": (ip6(CLIENT6, VIP6), REDIR_VIP),
    "IPv6 reply from real server": (ip6(RS6, CLIENT6), REDIR_RS),
    "IPv6 unrelated": (ip6(CLIENT6, "2001:db8::5"), PASS_OTHER),
    "NS for VIP6": (nd(135, CLIENT6, "ff02::1:ff00:100", VIP6), REDIR_L2),
    "NS for --addr6 (link-local source)": (nd(135, "fe80::11", "ff02::1:ff00:1", OWN6), REDIR_L2),
    "NS from a real server (by its source)": (nd(135, RS6, "ff02::1:ff00:1", OWN6), REDIR_RS),
    "NA from real server": (nd(136, "fe80::1", OWN6, RS6), REDIR_L2),
    "NS for someone else": (nd(135, CLIENT6, "ff02::1:ff00:5", "2001:db8::5"), PASS_OTHER),
    "router solicitation": (nd(133, CLIENT6, "ff02::2", VIP6), PASS_OTHER),
    "NS behind an extension header": (nd(135, CLIENT6, "ff02::1:ff00:100", VIP6, ext=True), PASS_OTHER),
    "VLAN-tagged frame to VIP": (eth(0x8100, b"\x00\x05\x08\x00" + ip4(CLIENT, VIP)[14:]), PASS_OTHER),
    "LLDP": (eth(0x88CC, bytes(40)), PASS_OTHER),
    "Ethernet header only": (eth(0x0800, b""), PASS_SHORT),
}


def test_model_on_the_cases() -> None:
    a4, a6 = SETS.flags()
    for name, (frame, want) in CASES.items():
        assert model(frame, a4, a6) == want, name


def test_encoding() -> None:
    a = asm.Asm()
    a.movi(asm.R0, 2)
    a.jmp("jeq", asm.R1, 5, "end")
    a.ld_imm64(asm.R2, 0x1122334455667788)
    a.label("end")
    a.exit()
    prog = a.assemble()
    # r0 = 2; if r1 == 5 goto +2 (ld_imm64 is two slots); exit
    assert prog[:8] == bytes([0xB7, 0x00, 0, 0, 2, 0, 0, 0])
    assert prog[8:16] == bytes([0x15, 0x01, 2, 0, 5, 0, 0, 0])
    assert prog[16:32] == bytes([0x18, 0x02, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11])
    assert prog[32:] == bytes([0x95, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(asm.AsmError, match="undefined label"):
        b = asm.Asm()
        b.ja("nowhere")
        b.assemble()
    assert len(asm.disassemble(prog)) == 5


@needs_bpf
def test_verifier_rejection_is_one_line() -> None:
    a = asm.Asm()
    a.mov(asm.R0, asm.R2)  # r2 never written: the verifier refuses
    a.exit()
    with pytest.raises(bpf.BpfError) as ei:
        bpf.prog_load(a.assemble(), "fastvs_bad")
    msg = str(ei.value)
    assert "\n" not in msg and "verifier" in msg and "R2" in msg, msg
    assert ei.value.errno == errno.EACCES


def _short_versions(frame: bytes) -> list[bytes]:
    return [frame[:n] for n in range(14, len(frame))]


@needs_bpf
@pytest.mark.parametrize("steer_l2", [True, False])
def test_kernel_agrees_with_the_model(steer_l2: bool) -> None:
    """Every crafted frame, every truncation of it, and random frames built from the
    address sets: the kernel's return value and the outcome counter it bumps are the
    model's (no socket bound: a redirect falls back to XDP_PASS as pass_no_socket)."""
    rng = random.Random(15)
    frames = []
    for frame, _ in CASES.values():
        frames.append(frame)
        frames += _short_versions(frame)
    addrs4 = [VIP, RS, OWN, GW, CLIENT, "10.0.0.101", "10.1.0.12", "0.0.0.0"]
    addrs6 = [VIP6, RS6, OWN6, CLIENT6, "fe80::1"]
    for _ in range(400):
        k = rng.randrange(4)
        if k == 0:
            f = ip4(rng.choice(addrs4), rng.choice(addrs4), rng.choice((6, 17, 1)))
        elif k == 1:
            f = arp(rng.choice((1, 2)), rng.choice(addrs4), rng.choice(addrs4))
        elif k == 2:
            f = ip6(rng.choice(addrs6), rng.choice(addrs6), rng.choice((6, 17, 58)))
        else:
            f = nd(rng.choice((133, 134, 135, 136, 128)), rng.choice(addrs6), "ff02::1",
                   rng.choice(addrs6), ext=rng.random() < 0.2)
        frames.append(f[: rng.randrange(14, len(f) + 1)] if rng.random() < 0.2 else f)
    a4, a6 = SETS.flags()
    with XdpProgram(steer_l2=steer_l2) as p:
        p.set_addresses(SETS)
        before = p.counters()
        expect = dict.fromkeys(REASONS, 0)
        for f in frames:
            want_ret, want_reason = model_verdict(model(f, a4, a6, steer_l2), socket_bound=False)
            assert p.test_run(f) == want_ret == XDP_PASS, f.hex()
            expect[REASONS[want_reason]] += 1
        after = p.counters()
        got = {k: after[k] - before[k] for k in REASONS}
        assert got == expect
        assert got["pass_no_socket"] > 100 and got["pass_other"] > 50 and got["pass_short"] > 50
        arp_nd = [f for f in frames if model(f, a4, a6) == REDIR_L2]
        assert len(arp_nd) > 50
        assert all(model(f, a4, a6, steer_l2) == (REDIR_L2 if steer_l2 else PASS_OTHER) for f in arp_nd)


@needs_bpf
def test_maps_update_without_reloading() -> None:
    frame = ip4(CLIENT, "10.0.0.77")
    with XdpProgram() as p:
        prog_id = p.prog_id
        p.set_addresses(SETS)
        base = p.counters()["pass_no_socket"]
        p.test_run(frame)
        assert p.counters()["pass_no_socket"] == base  # not a VIP yet
        p.set_addresses(AddressSets.of(vips=[*SETS.vips, "10.0.0.77"], real_servers=SETS.real_servers))
        p.test_run(frame)
        assert p.counters()["pass_no_socket"] == base + 1
        assert p.prog_id == prog_id
        # removals: the old VIPs and own addresses are gone from the map
        assert sorted(bpf.map_keys(p.addr4_fd, 4)) == sorted(
            ip(a) for a in ["10.0.0.77", VIP, "10.0.0.101", RS, "10.1.0.12"])
        p.set_addresses(AddressSets())
        assert list(bpf.map_keys(p.addr4_fd, 4)) == [] and list(bpf.map_keys(p.addr6_fd, 16)) == []


@needs_bpf
def test_programs_share_address_maps() -> None:
    with XdpProgram() as p, XdpProgram(share_addresses=p) as q:
        assert q.xsk_fd != p.xsk_fd
        q.set_addresses(SETS)  # through either
        assert p.addr4 is q.addr4
        f = ip4(CLIENT, VIP)
        p.test_run(f)
        q.test_run(f)
        assert p.counters()["pass_no_socket"] == 1 == q.counters()["pass_no_socket"]
        p.set_addresses(AddressSets())
        q.test_run(f)
        assert q.counters()["pass_other"] == 1
