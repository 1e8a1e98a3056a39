"""The L2 stage (fastvs/live/_l2.pyx, _l2.pxd): checksum completion of CHECKSUM_PARTIAL
frames (IPv4 and IPv6, checked with dpkt and an independent checksum; with
``partial_only``, as AF_XDP copy mode needs: only frames whose field holds the
pseudo-header sum, every other checksum left as it came) and the
neighbour table of both families (static entries, bounded under a flood)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import dpkt
import numpy as np

from fastvs.live import neigh as N
from fastvs.live._l2 import L2_COUNTER_NAMES, L2Stage, complete_l4_checksum, complete_partial

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
MAC_C = bytes.fromhex("02000000cc01")  # a client
MAC_D = bytes.fromhex("020000000d01")  # the director's interface
MAC_R = bytes.fromhex("020000001101")  # a real server
CLIENT_IP = "10.0.0.2"
VIP = "10.0.0.100"
CLIENT_IP6 = "2001:db8::2"
VIP6 = "2001:db8::100"


def a6(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def l4_checksum_ok(ip: dpkt.ip.IP) -> bool:
    seg = bytes(ip.data)
    ph = ip.src + ip.dst + struct.pack("!BBH", 0, ip.p, len(seg))
    return csum16(ph + seg) == 0xFFFF


def tcp_frame(payload: bytes = b"hello", *, partial: bool = False) -> bytearray:
    tcp = dpkt.tcp.TCP(sport=40000, dport=80, seq=1, ack=0, flags=dpkt.tcp.TH_SYN, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(CLIENT_IP), dst=socket.inet_aton(VIP), p=6, ttl=64, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    raw = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip)))
    if partial:  # what a CHECKSUM_PARTIAL frame carries: the pseudo-header sum only
        seglen = len(raw) - 34
        ph = raw[26:34] + struct.pack("!BBH", 0, 6, seglen)
        raw[50:52] = struct.pack("!H", csum16(bytes(ph)))
    return raw


def test_complete_l4_checksum_tcp_and_udp() -> None:
    f = tcp_frame(b"x" * 101, partial=True)
    ip = dpkt.ethernet.Ethernet(bytes(f)).data
    assert not l4_checksum_ok(ip)
    assert complete_l4_checksum(f)
    assert l4_checksum_ok(dpkt.ethernet.Ethernet(bytes(f)).data)

    udp = dpkt.udp.UDP(sport=5000, dport=53, data=b"abc")
    udp.ulen = 11
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.2"), dst=socket.inet_aton("10.0.0.1"), p=17, data=udp)
    ip.len = 31
    u = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip)))
    u[40:42] = b"\x12\x34"
    assert complete_l4_checksum(u)
    assert l4_checksum_ok(dpkt.ethernet.Ethernet(bytes(u)).data)
    # not TCP/UDP over IPv4: untouched
    arp = bytearray(N.arp_frame(1, MAC_A, "10.0.0.1", N.BROADCAST, bytes(6), "10.0.0.2"))
    before = bytes(arp)
    assert not complete_l4_checksum(arp)
    assert bytes(arp) == before
    # truncated IPv4 total length beyond the frame: refused, untouched
    bad = tcp_frame()
    bad[16:18] = b"\x05\xdc"
    assert not complete_l4_checksum(bad)


def test_l4_checksum_completion_ipv6() -> None:
    for proto, l4 in ((6, dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_SYN, data=b"x" * 33)),
                      (17, dpkt.udp.UDP(sport=5000, dport=53, data=b"abc"))):
        if proto == 17:
            l4.ulen = 11
        ip = dpkt.ip6.IP6(src=a6(CLIENT_IP6), dst=a6(VIP6), nxt=proto, hlim=64, data=l4, plen=len(bytes(l4)))
        ip.extension_hdrs = {}
        f = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_C, dst=MAC_D, type=0x86DD, data=ip)))
        coff = 54 + (16 if proto == 6 else 6)
        good = bytes(f[coff:coff + 2])
        f[coff:coff + 2] = b"\x12\x34"  # what CHECKSUM_PARTIAL leaves there
        assert complete_l4_checksum(f)
        assert bytes(f[coff:coff + 2]) == good
        ph = bytes(f[22:54]) + struct.pack("!IxxxB", len(bytes(l4)), proto)
        assert csum16(ph + bytes(f[54:])) == 0xFFFF
    # payload length beyond the frame: refused
    f[18:20] = b"\x05\xdc"
    assert not complete_l4_checksum(f)


def test_neighbour_table_static_entries_survive_learning() -> None:
    # a one-fd pump never touches its sockets until step()
    p = L2Stage(MAC_A, MAC_A, neigh_capacity=64, seed=1)
    assert p.neigh_capacity == 64
    assert p.neigh_set("10.1.0.11", "02:00:00:00:00:11", static=True)
    assert not p.neigh_set("10.1.0.11", MAC_B)  # learning never replaces a static entry
    assert p.neigh_get("10.1.0.11") == bytes.fromhex("020000000011")
    for i in range(1000):  # flood with learnt entries: bounded, static entry kept
        p.neigh_set(f"172.16.{i // 250}.{i % 250 + 1}", MAC_B)
    assert len(p.neigh_entries()) <= 64
    assert p.neigh_get("10.1.0.11") == bytes.fromhex("020000000011")
    assert p.neigh_del("10.1.0.11") and p.neigh_get("10.1.0.11") is None
    assert p.counters() == dict.fromkeys(L2_COUNTER_NAMES, 0) and p.take_wanted() == []


def test_neighbour_table_holds_both_families() -> None:
    p = L2Stage(MAC_D, MAC_D, neigh_capacity=64, seed=4)
    assert p.neigh_set("10.1.0.11", MAC_R, static=True)
    assert p.neigh_set("2001:db8:1::11", MAC_C)
    assert p.neigh_get("10.1.0.11") == MAC_R and p.neigh_get("2001:db8:1::11") == MAC_C
    assert p.neigh_get("::a01:b") is None and p.neigh_get("2001:db8:1::12") is None
    assert not p.neigh_set("2001:db8:1::12", N.ALL_NODES_MAC)  # a multicast MAC: refused
    for i in range(2000):  # a flood of learnt IPv6 sources: bounded, the static v4 entry kept
        p.neigh_set(f"2001:db8:99::{i:x}", MAC_C)
    entries = p.neigh_entries()
    assert len(entries) <= 64 and ("10.1.0.11", MAC_R.hex(":"), True) in [e[:3] for e in entries]
    p.set_gateway("2001:db8::1")
    p.set_gateway("10.0.0.1")
    p.set_gateway(None)


# -- AF_XDP copy mode: CHECKSUM_PARTIAL frames arrive without a flag (partial_only)
def l4_frame(v6: bool, tcp: bool, payload: bytes = b"hello world!") -> bytes:
    l4: dpkt.Packet = dpkt.tcp.TCP(sport=1234, dport=80, data=payload) if tcp else dpkt.udp.UDP(
        sport=1234, dport=53, data=payload)
    if v6:
        ip: dpkt.Packet = dpkt.ip6.IP6(src=bytes(15) + b"\x02", dst=bytes(15) + b"\x64", nxt=6 if tcp else 17,
                                       hlim=64, data=l4)
        ip.plen = len(bytes(l4))
        et = 0x86DD
    else:
        ip = dpkt.ip.IP(src=bytes([10, 0, 0, 2]), dst=bytes([10, 0, 0, 100]), p=6 if tcp else 17, data=l4)
        et = 0x0800
    eth = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=et, data=ip)
    return bytes(eth)


def pseudo(f: bytes) -> tuple[int, int]:
    """(checksum offset in the frame, folded pseudo-header sum)."""
    v6 = f[12:14] == b"\x86\xdd"
    if v6:
        proto, l4, n = f[20], 54, struct.unpack("!H", f[18:20])[0]
        words = f[22:54]
    else:
        proto, l4 = f[23], 34
        n = struct.unpack("!H", f[16:18])[0] - 20
        words = f[26:34]
    s = sum(struct.unpack(f"!{len(words) // 2}H", words)) + proto + n
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return l4 + (16 if proto == 6 else 6), s


def run_partial(frames: list[bytes]) -> tuple[int, list[bytes]]:
    buf = np.zeros(2048 * len(frames), dtype=np.uint8)
    off = np.arange(len(frames), dtype=np.uint32) * 2048
    ln = np.array([len(f) for f in frames], dtype=np.uint32)
    for f, o in zip(frames, off, strict=True):
        buf[o:o + len(f)] = np.frombuffer(f, dtype=np.uint8)
    k = complete_partial(buf, off, ln, len(frames))
    return k, [bytes(buf[o:o + n]) for o, n in zip(off, ln, strict=True)]


def test_partial_checksums_are_completed_and_others_left() -> None:
    good = [l4_frame(v6, tcp) for v6 in (False, True) for tcp in (False, True)]
    partial = []
    for f in good:
        at, ph = pseudo(f)
        partial.append(f[:at] + struct.pack("!H", ph) + f[at + 2:])
    bad = [f[:pseudo(f)[0]] + b"\x12\x34" + f[pseudo(f)[0] + 2:] for f in good]
    frag = bytearray(good[0])
    frag[20] = 0x20  # more fragments
    at, ph = pseudo(bytes(frag))
    frag[at:at + 2] = struct.pack("!H", ph)
    k, out = run_partial(partial + good + bad + [bytes(frag)])
    assert k == 4
    assert out[:4] == good                 # completed to what dpkt computes
    assert out[4:8] == good                # already complete: untouched
    assert out[8:12] == bad                # wrong stays wrong
    assert out[12] == bytes(frag)          # fragments are not touched


def test_partial_completion_every_length() -> None:
    """Every payload length from 0 to 1,500 bytes (all of the 64-bit loop's rounds and
    tails, odd lengths included), TCP and UDP over IPv4 and IPv6, one batch: each
    completed to the checksum dpkt writes."""
    good = [l4_frame(v6, tcp, bytes((i * 7 + n) & 0xFF for i in range(n)))
            for n in range(0, 1501, 1) for v6 in (False, True) for tcp in (False, True)
            if n < 80 or n % 37 == 0 or n > 1440]
    partial = []
    for f in good:
        at, ph = pseudo(f)
        partial.append(f[:at] + struct.pack("!H", ph) + f[at + 2:])
    k, out = run_partial(partial)
    assert k == len(good)
    assert out == good
