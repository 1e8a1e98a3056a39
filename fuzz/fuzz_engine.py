#!/usr/bin/env python3
"""Fuzz the engine: arbitrary frames through a Director, invariants checked after.

Each input decodes (``fuzz/_common.py``) into options and up to 48 frames with their
link types, captured/wire lengths and timestamps. They are laid into one buffer with
guard bytes between the packets, run through a ``Director`` configured with IPv4 and
IPv6 TCP and UDP services the corpus' frames address (masq, direct-routing and tunnel
real servers, tunnels across families), and checked:

* every verdict is a known code; the return value and ``summary()`` balance
  (in = written + dropped);
* no guard byte of the input buffer changed (nothing outside a packet's slot was
  written); after tunnelling (a new buffer) every slot lies inside the buffer and no
  two overlap;
* dropped and passed-untouched packets (pass_* but routed / not-masq) are
  byte-identical to their input, with the same lengths;
* routed / not-masq passes, fwd_dr, and the inner datagram of fwd_tun changed only
  the TTL / hop limit (by exactly 1, and not at all with keep_ttl) and the IPv4
  header checksum (valid after), plus for fwd_dr on Ethernet the MACs (to a
  direct-routing server's, from the one the frame came to);
* fwd_tun: the link header is kept (naming the outer family), then an outer IPv4
  (IPIP / 6in4) or IPv6 header from the tunnel source to a tunnel real server of that
  family, its length the inner datagram's (padding left out), TTL / hop limit the
  inner one's, a valid checksum, then the inner datagram;
* fwd_in / fwd_out rewrite only what DNAT / SNAT rewrites: TTL / hop limit,
  destination (in) or source (out) address to a real server's / a VIP, the port
  and transport checksum of TCP/UDP (not of later fragments, which carry none); an
  ICMP error additionally the quoted packet's address, port and header checksum and
  the ICMP checksum. Checksums valid in stay valid out; a complete UDP datagram that
  came without a checksum leaves with a valid one;
* a second Director with another hash seed gives the same bytes and verdicts.

Run: ``python fuzz/fuzz_engine.py [corpus dir] -max_total_time=60`` (atheris flags).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    NEIGH,
    RULES_TEXT,
    Frame,
    Options,
    decode,
    icmp_csum_ok,
    ipv4_header_ok,
    l4_csum_ok,
)

GUARD = 16
GUARD_BYTE = 0xA5
CAPACITY = 32  # small: a burst of SYNs fills it (drop_conn_full)

_rules_cache: dict[str, object] = {}


def _rules(order: str) -> object:
    if order not in _rules_cache:
        from fastvs.control.rules import parse_rules

        _rules_cache[order] = parse_rules(RULES_TEXT, source="<fuzz>", order=order)  # type: ignore[arg-type]
    return _rules_cache[order]


def _director(opts: Options, seed: int) -> object:
    import warnings

    from fastvs.control.director import Director

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Director(
            _rules(opts.order),  # type: ignore[arg-type]
            capacity=CAPACITY,
            seed=seed,
            keep_ttl=opts.keep_ttl,
            director_view=opts.director_view,
            truncated=opts.truncated,
            expire_nodest_conn=opts.expire_nodest_conn,
            neigh=NEIGH,
        )


def build_batch(frames: list[Frame]) -> tuple[object, np.ndarray]:
    """Frames -> (PacketBatch with guard bytes between packets, guard mask)."""
    from fastvs.capture.batch import PacketBatch

    n = len(frames)
    total = GUARD + sum(len(f.data) + GUARD for f in frames)
    buf = np.full(total, GUARD_BYTE, np.uint8)
    guard = np.ones(total, bool)
    off = np.zeros(n, np.uint32)
    pos = GUARD
    for i, f in enumerate(frames):
        k = len(f.data)
        off[i] = pos
        buf[pos : pos + k] = np.frombuffer(f.data, np.uint8)
        guard[pos : pos + k] = False
        pos += k + GUARD
    batch = PacketBatch(
        buf=buf,
        off=off,
        caplen=np.array([len(f.data) for f in frames], np.uint32),
        wirelen=np.array([f.wirelen for f in frames], np.uint32),
        ts=np.array([f.ts_ns for f in frames], np.int64),
        linktype=np.array([f.linktype for f in frames], np.uint16),
        iface=np.zeros(n, np.uint16),
    )
    return batch, guard


class Topology:
    """What the rules say packets may be rewritten to (addresses as packed bytes)."""

    def __init__(self) -> None:
        import ipaddress

        rules = _rules("kernel")
        self.vips: set[bytes] = set()
        self.masq: set[bytes] = set()
        self.vports: set[int] = set()
        self.mports: set[int] = set()
        self.tun: dict[int, set[bytes]] = {4: set(), 6: set()}
        # the tunnel source: the first VIP of each family (no tunnel_source given)
        self.src: dict[int, bytes] = {4: bytes(4), 6: bytes(16)}
        for svc in rules.services:  # type: ignore[attr-defined]
            vip = ipaddress.ip_address(svc.addr).packed
            self.vips.add(vip)
            self.vports.add(svc.port)
            fam = 4 if len(vip) == 4 else 6
            if self.src[fam] == bytes(len(vip)):
                self.src[fam] = vip
            for rs in svc.reals:
                raw = ipaddress.ip_address(rs.addr).packed
                if rs.fwd == "masq":
                    self.masq.add(raw)
                    self.mports.add(rs.port or svc.port)
                elif rs.fwd == "tunnel":
                    self.tun[4 if len(raw) == 4 else 6].add(raw)
        self.dr_macs = {bytes.fromhex(m.replace(":", "")) for m in NEIGH.values()}


_topo: Topology | None = None


def topology() -> Topology:
    global _topo
    if _topo is None:
        _topo = Topology()
    return _topo


def _parse(frame: bytes, linktype: int, wirelen: int) -> dict:
    from fastvs.datapath._packet import parse

    _, fields = parse(frame, linktype, wirelen)
    return fields


def _addr(af: int, l3: int, which: str) -> range:
    """Byte range of the source or destination address of an IP header at ``l3``."""
    if af == 4:
        return range(l3 + 12, l3 + 16) if which == "src" else range(l3 + 16, l3 + 20)
    return range(l3 + 8, l3 + 24) if which == "src" else range(l3 + 24, l3 + 40)


def _hop(af: int, l3: int) -> int:
    return l3 + 8 if af == 4 else l3 + 7


def _quoted_l4(p: bytes, af: int, q: int, end: int) -> int | None:
    """Transport header offset of the packet an ICMP error quotes at ``q``."""
    if af == 4:
        return q + (p[q] & 15) * 4
    nh, off = p[q + 6], q + 40
    for _ in range(8):
        if nh in (0, 43, 60) and off + 8 <= end:
            nh, off = p[off], off + (p[off + 1] + 1) * 8
        elif nh == 44 and off + 8 <= end:
            nh, off = p[off], off + 8
        else:
            break
    return off


class Bad(AssertionError):
    pass


def _check_hop(i: int, what: str, before: bytes, after: bytes, af: int, l3: int,
               opts: Options) -> set[int]:
    """TTL / hop limit - 1 (unchanged with keep_ttl); returns the bytes it may change."""
    h = _hop(af, l3)
    want = before[h] if opts.keep_ttl else (before[h] - 1) & 0xFF
    if after[h] != want:
        raise Bad(f"packet {i}: {what}: TTL/hop limit {before[h]} -> {after[h]}, want {want}")
    if af == 4 and not ipv4_header_ok(after[l3:]):
        raise Bad(f"packet {i}: {what}: IPv4 header checksum invalid")
    return {h, l3 + 10, l3 + 11} if af == 4 else {h}


def _only(i: int, what: str, before: bytes, after: bytes, allowed: set[int]) -> None:
    diff = {k for k in range(len(before)) if before[k] != after[k]}
    if not diff <= allowed:
        raise Bad(f"packet {i}: {what} changed bytes {sorted(diff - allowed)[:8]}")


def check_packet(i: int, before: bytes, after: bytes, v: int, f: Frame, opts: Options,
                 caplen: int, wirelen: int) -> None:
    from fastvs import verdicts as V

    name = V.name(v)
    if v != V.FWD_TUN and (caplen != len(before) or wirelen != f.wirelen):
        raise Bad(f"packet {i}: {name}: lengths {len(before)}/{f.wirelen} -> {caplen}/{wirelen}")
    if v >= V.DROP_BASE or v < V.FWD_IN and v not in (V.PASS_NOT_MASQ, V.PASS_ROUTED):
        if before != after:
            diff = [k for k in range(len(before)) if before[k] != after[k]]
            raise Bad(f"packet {i}: verdict {name} but bytes {diff[:8]} changed")
        return
    fields = _parse(before, f.linktype, f.wirelen)
    if "l3len" not in fields:
        raise Bad(f"packet {i}: {name} for a frame with no IP header ({fields})")
    af, l3 = int(fields["af"]), int(fields["l3off"])
    if v in (V.PASS_NOT_MASQ, V.PASS_ROUTED):
        _only(i, name, before, after, _check_hop(i, name, before, after, af, l3, opts))
        return
    if v == V.FWD_DR:
        allowed = _check_hop(i, name, before, after, af, l3, opts)
        if f.linktype == 1 and len(before) >= 14:
            if after[:6] not in topology().dr_macs or after[6:12] != before[:6]:
                raise Bad(f"packet {i}: fwd_dr MACs {before[:12].hex()} -> {after[:12].hex()}")
            allowed |= set(range(12))
        _only(i, name, before, after, allowed)
        return
    if v == V.FWD_TUN:
        check_tunnel(i, before, after, f, opts, fields, caplen, wirelen)
        return
    if v not in (V.FWD_IN, V.FWD_OUT):
        raise Bad(f"packet {i}: unexpected verdict {v}")
    check_nat(i, before, after, v, f, opts, fields)


def check_tunnel(i: int, before: bytes, after: bytes, f: Frame, opts: Options,
                 fields: dict, caplen: int, wirelen: int) -> None:
    import struct

    af, l3, l3len = int(fields["af"]), int(fields["l3off"]), int(fields["l3len"])
    if len(after) < l3 + 20:
        raise Bad(f"packet {i}: fwd_tun: {len(after)} bytes out")
    outer = 4 if after[l3] >> 4 == 4 else 6
    hl = 20 if outer == 4 else 40
    inner_cap = min(len(before) - l3, l3len)
    if caplen != l3 + hl + inner_cap or wirelen != l3 + hl + l3len:
        raise Bad(f"packet {i}: fwd_tun lengths {caplen}/{wirelen}, want "
                  f"{l3 + hl + inner_cap}/{l3 + hl + l3len}")
    inner = after[l3 + hl :]
    # the inner datagram: as it came, TTL / hop limit - 1
    want_inner = before[l3 : l3 + inner_cap]
    if len(inner) != len(want_inner):
        raise Bad(f"packet {i}: fwd_tun inner datagram {len(inner)} bytes, want {len(want_inner)}")
    _only(i, "fwd_tun (inner)", want_inner, inner, _check_hop(i, "fwd_tun (inner)", want_inner, inner, af, 0, opts))
    # the link header: the same, but naming the outer family
    if af != outer and f.linktype in (228, 229):
        pass  # LINKTYPE_IPV4/IPV6 cannot name the other family (reported, not fixed)
    else:
        back = _parse(after, f.linktype, wirelen)
        if back.get("af") != outer or back.get("l3off") != l3:
            raise Bad(f"packet {i}: fwd_tun: link header names {back.get('af')} at "
                      f"{back.get('l3off')}, the outer header is IPv{outer} at {l3}")
        fam = set()  # where the link header names the family
        if af != outer:
            fam = {
                1: {l3 - 2, l3 - 1}, 113: {l3 - 2, l3 - 1}, 276: {0, 1}, 0: {0, 1, 2, 3},
                108: {0, 1, 2, 3},
            }.get(f.linktype, set())  # fmt: skip
        _only(i, "fwd_tun (link header)", before[:l3], after[:l3], fam)
    h = after[l3 : l3 + hl]
    topo = topology()
    hop_in = inner[8] if af == 4 else inner[7]
    nh = 4 if af == 4 else 41
    # the inner TOS / traffic class, ECN-encapsulated: CE goes out as ECT(0)
    # (ip_vs_prepare_tunneled_skb, INET_ECN_encapsulate)
    tos = inner[1] if af == 4 else ((inner[0] & 15) << 4) | (inner[1] >> 4)
    if tos & 3 == 3:
        tos = (tos & ~3) | 2
    if outer == 4:
        df = (inner[6] & 0x40) if af == 4 else 0  # DF copied from IPv4 only
        want = struct.pack(">BBHHBBB", 0x45, tos, l3len + 20, 0, df, 0, hop_in)
        if h[:9] != want or h[9] != nh or not ipv4_header_ok(h):
            raise Bad(f"packet {i}: fwd_tun outer IPv4 header {h.hex()}")
    else:
        want = struct.pack(">IHBB", (6 << 28) | (tos << 20), l3len, nh, hop_in)
        if h[:8] != want:
            raise Bad(f"packet {i}: fwd_tun outer IPv6 header {h.hex()}")
    src, dst = (h[12:16], h[16:20]) if outer == 4 else (h[8:24], h[24:40])
    if src != topo.src[outer] or dst not in topo.tun[outer]:
        raise Bad(f"packet {i}: fwd_tun outer {src.hex()} -> {dst.hex()}")


def check_nat(i: int, before: bytes, after: bytes, v: int, f: Frame, opts: Options,
              fields: dict) -> None:
    from fastvs import verdicts as V

    name = V.name(v)
    af, l3, l4 = int(fields["af"]), int(fields["l3off"]), int(fields["l4off"])
    l3len, proto = int(fields["l3len"]), int(fields["proto"])
    end = min(len(before), l3 + l3len)
    topo = topology()
    inward = v == V.FWD_IN
    which = "dst" if inward else "src"
    allowed = _check_hop(i, name, before, after, af, l3, opts)
    a = _addr(af, l3, which)
    allowed |= set(a)
    new_addr = after[a.start : a.stop]
    if before != after and new_addr not in (topo.masq if inward else topo.vips):
        raise Bad(f"packet {i}: {name} rewrote the {which} address to {new_addr.hex()}")
    if proto == (1 if af == 4 else 58):
        # an ICMP error about a connection: the quoted packet goes the other way
        q = l4 + 8
        ql4 = _quoted_l4(before, af, q, end)
        if ql4 is None or ql4 + 4 > end:
            raise Bad(f"packet {i}: {name} for an ICMP error quoting no ports")
        qa = _addr(af, q, "src" if inward else "dst")
        if after[qa.start : qa.stop] != new_addr:
            raise Bad(f"packet {i}: {name}: quoted address differs from the outer one")
        allowed |= set(qa) | {l4 + 2, l4 + 3}
        allowed |= {ql4, ql4 + 1} if inward else {ql4 + 2, ql4 + 3}
        if af == 4:
            allowed |= {q + 10, q + 11}
            qihl = (before[q] & 15) * 4
            if q + qihl <= end and not ipv4_header_ok(after[q:end]):
                raise Bad(f"packet {i}: {name}: quoted IPv4 header checksum invalid")
        if icmp_csum_ok(before[l3:], l4 - l3) and icmp_csum_ok(after[l3:], l4 - l3) is False:
            raise Bad(f"packet {i}: {name}: ICMP checksum valid in, invalid out")
    elif fields.get("frag") != 1:
        if proto not in (6, 17):
            raise Bad(f"packet {i}: {name} for IP protocol {proto}")
        pa = l4 + 2 if inward else l4
        allowed |= {pa, pa + 1}
        port = int.from_bytes(after[pa : pa + 2], "big")
        if before != after and port not in (topo.mports if inward else topo.vports):
            raise Bad(f"packet {i}: {name} rewrote the {which} port to {port}")
        allowed |= {l4 + 16, l4 + 17} if proto == 6 else {l4 + 6, l4 + 7}
        ok_in, ok_out = l4_csum_ok(before[l3:], l4 - l3), l4_csum_ok(after[l3:], l4 - l3)
        if ok_in and ok_out is False:
            raise Bad(f"packet {i}: {name}: L4 checksum valid in, invalid out")
        if (proto == 17 and before[l4 + 6 : l4 + 8] == b"\0\0" and not fields["cut"]
                and fields.get("frag") == 0 and ok_out is not True):
            raise Bad(f"packet {i}: {name}: UDP without a checksum did not get a valid one")
    _only(i, name, before, after, allowed)


def _make_feedback() -> object:
    """A function with one branch per (previous verdict, verdict) pair and per
    connection state. The engine is C, which atheris does not see; instrumented, this
    turns what the engine did into coverage, so inputs reaching new verdict sequences
    and states are kept in the corpus."""
    from fastvs import verdicts as V

    codes = sorted(V.NAMES)
    lines = ["def feedback(pairs, states):", "    for a, b in pairs:"]
    for j, a in enumerate(codes):
        lines.append(f"        {'if' if j == 0 else 'elif'} a == {a}:")
        for k, b in enumerate(codes):
            lines.append(f"            {'if' if k == 0 else 'elif'} b == {b}:")
            lines.append("                pass")
    lines.append("    for st in states:")
    for j, name in enumerate(("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT",
                              "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN",
                              "SYNACK", "UDP")):
        lines.append(f"        {'if' if j == 0 else 'elif'} st == {name!r}:")
        lines.append("            pass")
    ns: dict[str, object] = {}
    exec("\n".join(lines), ns)  # noqa: S102 - generated above, no input involved
    return ns["feedback"]


_feedback = _make_feedback()


def run_once(
    opts: Options, frames: list[Frame], seed: int
) -> tuple[object, object, np.ndarray, np.ndarray]:
    """(director, batch after process, input buffer, its guard mask). The output stage
    replaces the batch's buffer when it tunnels: the input buffer is kept apart."""
    d = _director(opts, seed)
    batch, guard = build_batch(frames)
    inbuf = batch.buf  # type: ignore[attr-defined]
    written = d.process(batch)  # type: ignore[attr-defined]
    if written != int(np.count_nonzero(batch.verdict < 64)):  # type: ignore[attr-defined]
        raise AssertionError(f"process() returned {written}, verdicts say otherwise")
    return d, batch, inbuf, guard


def _check_slots(b: object) -> None:
    off = b.off.astype(np.int64)  # type: ignore[attr-defined]
    end = off + b.caplen.astype(np.int64)  # type: ignore[attr-defined]
    if len(off) and int(end.max()) > len(b.buf):  # type: ignore[attr-defined]
        raise AssertionError("a slot runs past the batch buffer")
    order = np.argsort(off, kind="stable")
    if np.any(off[order][1:] < end[order][:-1]):
        raise AssertionError("two packet slots overlap")


def test_one_input(data: bytes) -> None:
    from fastvs import verdicts as V

    opts, frames = decode(data)
    if not frames:
        return
    d, batch, inbuf, guard = run_once(opts, frames, seed=1)
    b = batch  # type: ignore[assignment]
    verdict = b.verdict  # type: ignore[attr-defined]
    buf = b.buf  # type: ignore[attr-defined]
    # verdicts and accounting
    unknown = [int(x) for x in verdict if int(x) not in V.NAMES]
    if unknown:
        raise AssertionError(f"unknown verdict codes {unknown}")
    s = d.summary()  # type: ignore[attr-defined]
    n_written = int(np.count_nonzero(verdict < V.DROP_BASE))
    if s["packets_in"] != len(frames) or s["packets_out"] != n_written:
        raise AssertionError(f"summary {s} disagrees with verdicts ({n_written} written)")
    if s["packets_in"] != s["packets_out"] + s["dropped"]:
        raise AssertionError(f"in != out + dropped: {s}")
    # guards (of the input buffer: the engine rewrites in place), slots of the output
    if not np.all(inbuf[guard] == GUARD_BYTE):
        bad = np.flatnonzero(guard & (inbuf != GUARD_BYTE))
        raise AssertionError(f"guard bytes overwritten at buffer offsets {bad[:8].tolist()}")
    if buf is not inbuf:
        if not np.any(verdict == V.FWD_TUN):
            raise AssertionError("the batch buffer was replaced without a tunnelled packet")
        _check_slots(b)
    # per packet
    for i, f in enumerate(frames):
        o, n = int(b.off[i]), int(b.caplen[i])  # type: ignore[attr-defined]
        check_packet(
            i, f.data, bytes(buf[o : o + n]), int(verdict[i]), f, opts, n,
            int(b.wirelen[i]),  # type: ignore[attr-defined]
        )  # fmt: skip
    codes = [int(x) for x in verdict]
    states = {str(c.get("state")) for c in d.connections()}  # type: ignore[attr-defined]
    _feedback(list(zip([-1, *codes], codes, strict=False)), states)  # type: ignore[operator]
    # determinism across hash seeds
    d2, b2, _, _ = run_once(opts, frames, seed=0x5EED1234)
    same = all(
        np.array_equal(getattr(b2, k), getattr(b, k)) for k in ("verdict", "buf", "off", "caplen", "wirelen")
    )
    if not same:
        raise AssertionError("output depends on the hash seed")
    if d2.summary() != s:  # type: ignore[attr-defined]
        raise AssertionError("summary depends on the hash seed")


def main() -> None:
    import atheris

    global _feedback
    _feedback = atheris.instrument_func(_feedback)

    with atheris.instrument_imports():
        import fastvs.capture.batch  # noqa: F401
        import fastvs.control.director  # noqa: F401
        import fastvs.control.rules  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
