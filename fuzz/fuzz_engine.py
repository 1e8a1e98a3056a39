#!/usr/bin/env python3
"""Fuzz the engine: arbitrary frames through a Director, invariants checked after.

Each input decodes (``fuzz/_common.py``) into options and up to 48 frames with their
link types, captured/wire lengths and timestamps. They are laid into one buffer with
guard bytes between the packets, run through a ``Director`` configured with TCP and UDP
services the corpus' frames address, and checked:

* every verdict is a known code; the return value and ``summary()`` balance
  (in = written + dropped);
* no guard byte changed (nothing outside a packet's slot was written);
* a packet written untouched (pass_*) or dropped is byte-identical to its input (TTL
  and header checksum aside for the routed / not-masq passes when TTL is decremented);
* a rewritten packet (fwd_*) changed only header bytes, has a valid IPv4 header
  checksum, and a valid TCP/UDP checksum if it came in with one;
* a second Director with another hash seed gives the same bytes and verdicts.

Run: ``python fuzz/fuzz_engine.py [corpus dir] -max_total_time=60`` (atheris flags).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    RULES_TEXT,
    Frame,
    Options,
    decode,
    ipv4_header_ok,
    l4_csum_ok,
)

GUARD = 16
GUARD_BYTE = 0xA5
CAPACITY = 32  # small: a burst of SYNs fills it (drop_conn_full)

_rules_cache: dict[str, object] = {}


def _rules(order: str) -> object:
    if order not in _rules_cache:
        from fastvs.rules import parse_rules

        _rules_cache[order] = parse_rules(RULES_TEXT, source="<fuzz>", order=order)  # type: ignore[arg-type]
    return _rules_cache[order]


def _director(opts: Options, seed: int) -> object:
    import warnings

    from fastvs.director import Director

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
        )


def build_batch(frames: list[Frame]) -> tuple[object, np.ndarray]:
    """Frames -> (PacketBatch with guard bytes between packets, guard mask)."""
    from fastvs.batch import PacketBatch

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


def _l3off(frame: bytes, linktype: int, wirelen: int) -> int | None:
    from fastvs._packet import parse

    _, fields = parse(frame, linktype, wirelen)
    return fields.get("l3off") if fields.get("af") == 4 else None


def check_packet(i: int, before: bytes, after: bytes, v: int, f: Frame, opts: Options) -> None:
    from fastvs import verdicts as V

    if len(before) != len(after):
        raise AssertionError(f"packet {i}: length changed")
    if before == after:
        if V.FWD_IN <= v <= V.FWD_OUT:
            # a rewrite that changes nothing is possible only in contrived cases
            # (RIP == VIP, same port): accept, the checksum checks below still apply
            pass
        else:
            return
    diff = [k for k in range(len(before)) if before[k] != after[k]]
    l3 = _l3off(before, f.linktype, f.wirelen)
    if v >= V.DROP_BASE or v < V.FWD_IN and v not in (V.PASS_NOT_MASQ, V.PASS_ROUTED):
        raise AssertionError(
            f"packet {i}: verdict {V.name(v)} but bytes {diff[:8]} changed (l3off {l3})"
        )
    if l3 is None:
        raise AssertionError(f"packet {i}: {V.name(v)} changed a non-IPv4 frame at {diff[:8]}")
    ttl_only = {l3 + 8, l3 + 10, l3 + 11}
    if v in (V.PASS_NOT_MASQ, V.PASS_ROUTED, V.FWD_DR, V.FWD_TUN):
        if not set(diff) <= ttl_only or opts.keep_ttl:
            raise AssertionError(f"packet {i}: {V.name(v)} changed {diff[:8]} beyond TTL")
        if after[l3 + 8] != (before[l3 + 8] - 1) & 0xFF:
            raise AssertionError(f"packet {i}: TTL {before[l3 + 8]} -> {after[l3 + 8]}")
        if not ipv4_header_ok(after[l3:]):
            raise AssertionError(f"packet {i}: {V.name(v)}: IPv4 header checksum invalid")
        return
    if v not in (V.FWD_IN, V.FWD_OUT):
        raise AssertionError(f"packet {i}: unexpected verdict {v} changed bytes")
    ihl = (before[l3] & 15) * 4
    l4 = l3 + ihl
    allowed = {l3 + 8, l3 + 10, l3 + 11, *range(l3 + 12, l3 + 20), *range(l4, l4 + 4)}
    allowed |= {l4 + 16, l4 + 17} if before[l3 + 9] == 6 else {l4 + 6, l4 + 7}
    if not set(diff) <= allowed:
        raise AssertionError(f"packet {i}: {V.name(v)} changed {sorted(set(diff) - allowed)[:8]}")
    if not ipv4_header_ok(after[l3:]):
        raise AssertionError(f"packet {i}: {V.name(v)}: IPv4 header checksum invalid after rewrite")
    if l4_csum_ok(before[l3:]) and l4_csum_ok(after[l3:]) is False:
        raise AssertionError(f"packet {i}: {V.name(v)}: L4 checksum valid in, invalid out")


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


def run_once(opts: Options, frames: list[Frame], seed: int) -> tuple[object, object, np.ndarray]:
    d = _director(opts, seed)
    batch, guard = build_batch(frames)
    written = d.process(batch)  # type: ignore[attr-defined]
    if written != int(np.count_nonzero(batch.verdict < 64)):  # type: ignore[attr-defined]
        raise AssertionError(f"process() returned {written}, verdicts say otherwise")
    return d, batch, guard


def test_one_input(data: bytes) -> None:
    from fastvs import verdicts as V

    opts, frames = decode(data)
    if not frames:
        return
    d, batch, guard = run_once(opts, frames, seed=1)
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
    # guards
    if not np.all(buf[guard] == GUARD_BYTE):
        bad = np.flatnonzero(guard & (buf != GUARD_BYTE))
        raise AssertionError(f"guard bytes overwritten at buffer offsets {bad[:8].tolist()}")
    # per packet
    for i, f in enumerate(frames):
        o = int(b.off[i])  # type: ignore[attr-defined]
        check_packet(i, f.data, bytes(buf[o : o + len(f.data)]), int(verdict[i]), f, opts)
    codes = [int(x) for x in verdict]
    states = {str(c.get("state")) for c in d.connections()}  # type: ignore[attr-defined]
    _feedback(list(zip([-1, *codes], codes, strict=False)), states)  # type: ignore[operator]
    # determinism across hash seeds
    d2, b2, _ = run_once(opts, frames, seed=0x5EED1234)
    if not np.array_equal(b2.verdict, verdict) or not np.array_equal(b2.buf, buf):  # type: ignore[attr-defined]
        raise AssertionError("output depends on the hash seed")
    if d2.summary() != s:  # type: ignore[attr-defined]
        raise AssertionError("summary depends on the hash seed")


def main() -> None:
    import atheris

    global _feedback
    _feedback = atheris.instrument_func(_feedback)

    with atheris.instrument_imports():
        import fastvs.batch  # noqa: F401
        import fastvs.director  # noqa: F401
        import fastvs.rules  # noqa: F401
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
