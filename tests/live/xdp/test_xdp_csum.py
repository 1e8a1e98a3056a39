"""Checksums a sender left to offload (CHECKSUM_PARTIAL: only the pseudo-header sum in
the field) arrive that way through AF_XDP copy mode, with no flag: complete_partial
finishes exactly those and leaves every other checksum as it came."""

from __future__ import annotations

import struct

import dpkt
import numpy as np

from fastvs.live.xdp._xsk import complete_partial


def frame(v6: bool, tcp: bool, payload: bytes = b"hello world!") -> bytes:
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


def run(frames: list[bytes]) -> tuple[int, list[bytes]]:
    buf = np.zeros(2048 * len(frames), dtype=np.uint8)
    off = np.arange(len(frames), dtype=np.uint32) * 2048
    ln = np.array([len(f) for f in frames], dtype=np.uint32)
    for f, o in zip(frames, off, strict=True):
        buf[o:o + len(f)] = np.frombuffer(f, dtype=np.uint8)
    k = complete_partial(buf, off, ln, len(frames))
    return k, [bytes(buf[o:o + n]) for o, n in zip(off, ln, strict=True)]


def test_partial_checksums_are_completed_and_others_left() -> None:
    good = [frame(v6, tcp) for v6 in (False, True) for tcp in (False, True)]
    partial = []
    for f in good:
        at, ph = pseudo(f)
        partial.append(f[:at] + struct.pack("!H", ph) + f[at + 2:])
    bad = [f[:pseudo(f)[0]] + b"\x12\x34" + f[pseudo(f)[0] + 2:] for f in good]
    frag = bytearray(good[0])
    frag[20] = 0x20  # more fragments
    at, ph = pseudo(bytes(frag))
    frag[at:at + 2] = struct.pack("!H", ph)
    k, out = run(partial + good + bad + [bytes(frag)])
    assert k == 4
    assert out[:4] == good                 # completed to what dpkt computes
    assert out[4:8] == good                # already complete: untouched
    assert out[8:12] == bad                # wrong stays wrong
    assert out[12] == bytes(frag)          # fragments are not touched
