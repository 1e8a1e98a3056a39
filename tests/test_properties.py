"""Property tests (hypothesis) for the invariants the design holds (the README's semantics):
incremental checksums equal full ones, the parser stays inside the captured bytes,
every packet is accounted for, output is deterministic, untouched packets stay
byte-identical, and rewritten packets verify with an independent checker (dpkt).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastvs import verdicts as V
from fastvs.capture.batch import PacketBatch
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules
from fastvs.datapath import _csum
from fastvs.datapath._packet import parse

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fuzz"))
sys.path.insert(0, str(REPO / "tests"))
from _common import RULES_TEXT, flows, inet_csum  # noqa: E402

from packets import checksums_ok, tcp, udp  # noqa: E402

LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RULES = {order: parse_rules(RULES_TEXT, source="<props>", order=order) for order in ("kernel", "file")}


def _director(seed: int = 1, **kw: object) -> Director:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Director(RULES["kernel"], capacity=256, seed=seed, **kw)  # type: ignore[arg-type]


# -- checksums ---------------------------------------------------------------------------
even_bytes = st.binary(min_size=4, max_size=256).map(lambda b: b if len(b) % 2 == 0 else b[:-1])


@given(st.binary(max_size=512))
@SETTINGS
def test_checksum_matches_independent_sum(data: bytes) -> None:
    assert _csum.checksum(data) == inet_csum(data)


def _fold_stepwise(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(
    [0, 1, 0xFFFF, 0x10000, 0xFFFF_FFFF, 0x1_0000_0000, 0xFFFF_0001, 2**64 - 1, 0xFFFF_FFFF_0000_0001])))
@SETTINGS
def test_fold_matches_stepwise(s: int) -> None:
    # the rotate-and-add fold gives the same 16 bits as folding carry by carry
    assert _csum.fold(s) == _fold_stepwise(s)


def _equal_csum(a: int, b: int) -> bool:
    # one's complement has two zeros; RFC 1624 eqn. 3 never produces 0x0000 from a
    # non-zero sum, and full recomputation gives 0xFFFF only for all-zero data
    return a == b


@given(even_bytes, st.data())
@SETTINGS
def test_update32_equals_full_recomputation(data: bytes, d: st.DataObject) -> None:
    words = len(data) // 2
    pos = 2 * d.draw(st.integers(0, words - 2))
    new = d.draw(st.integers(0, 0xFFFFFFFF))
    old = struct.unpack(">I", data[pos : pos + 4])[0]
    after = data[:pos] + struct.pack(">I", new) + data[pos + 4 :]
    inc = _csum.update32(_csum.checksum(data), old, new)
    full = _csum.checksum(after)
    assume(any(after))  # all-zero data: the sum is -0, both zeros are right
    assert _equal_csum(inc, full), (hex(inc), hex(full))


@given(even_bytes, st.data())
@SETTINGS
def test_update16_equals_full_recomputation(data: bytes, d: st.DataObject) -> None:
    pos = 2 * d.draw(st.integers(0, len(data) // 2 - 1))
    new = d.draw(st.integers(0, 0xFFFF))
    old = struct.unpack(">H", data[pos : pos + 2])[0]
    after = data[:pos] + struct.pack(">H", new) + data[pos + 2 :]
    assume(any(after))
    assert _csum.update16(_csum.checksum(data), old, new) == _csum.checksum(after)


@given(even_bytes, st.lists(st.tuples(st.integers(0, 127), st.integers(0, 0xFFFF)), max_size=8))
@SETTINGS
def test_chained_updates_equal_full_recomputation(data: bytes, edits: list[tuple[int, int]]) -> None:
    """Any sequence of rewrites (as DNAT then SNAT apply them) keeps the sum exact."""
    buf = bytearray(data)
    c = _csum.checksum(bytes(buf))
    for word, new in edits:
        pos = 2 * (word % (len(buf) // 2))
        old = struct.unpack(">H", buf[pos : pos + 2])[0]
        buf[pos : pos + 2] = struct.pack(">H", new)
        c = _csum.update16(c, old, new)
    assume(any(buf))
    assert c == _csum.checksum(bytes(buf))


# -- parser ------------------------------------------------------------------------------
SEED_FRAMES = [f for _, f in flows()]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid frame with random edits, cuts and extensions."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    b = bytearray(draw(st.sampled_from(SEED_FRAMES)))
    for _ in range(draw(st.integers(0, 4))):
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        b[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(b)))
    return bytes(b[: cut if draw(st.booleans()) else len(b)])


@given(frames(), st.sampled_from(LINKTYPES), st.integers(0, 3000))
@settings(max_examples=1000, deadline=None)
def test_parser_offsets_within_capture(frame: bytes, linktype: int, wirelen: int) -> None:
    code, f = parse(frame, linktype, wirelen)
    caplen = len(frame)
    # 255: a TCP/UDP candidate; 254: ICMP, which the engine looks into (errors about a
    # connection); anything else is the verdict itself
    assert code in (255, 254) or code in V.NAMES
    if "l3off" in f:
        assert 0 <= f["l3off"] <= caplen
    if f.get("af") == 4 and "l3len" in f:
        assert f["l3off"] + 20 <= caplen
        assert f["l3off"] + 20 <= f["l4off"] <= caplen
    if code == 255:
        need = 20 if f["proto"] == 6 else 8
        assert f["l4off"] + need <= caplen


# -- batches through the director ---------------------------------------------------------
@st.composite
def batches(draw: st.DrawFn) -> tuple[list[bytes], list[int], list[int], list[int]]:
    n = draw(st.integers(1, 40))
    fr = [draw(frames()) for _ in range(n)]
    lts = [draw(st.sampled_from([1, 1, 1, *LINKTYPES])) for _ in range(n)]
    wl = [len(f) + draw(st.sampled_from([0, 0, 0, 10, 1000])) for f in fr]
    steps = draw(st.lists(st.integers(-5, 30), min_size=n, max_size=n))
    ts = list(np.cumsum(steps) * 100_000_000 + 10**18)
    return fr, lts, wl, ts


def _batch(fr: list[bytes], lts: list[int], wl: list[int], ts: list[int]) -> PacketBatch:
    b = PacketBatch.from_packets(fr, ts)
    b.linktype[:] = lts
    b.wirelen[:] = wl
    return b


@given(batches(), st.booleans(), st.booleans())
@SETTINGS
def test_every_packet_accounted_and_untouched_identical(
    bt: tuple[list[bytes], list[int], list[int], list[int]], director_view: bool, keep_ttl: bool
) -> None:
    fr, lts, wl, ts = bt
    d = _director(director_view=director_view, keep_ttl=keep_ttl)
    b = _batch(fr, lts, wl, ts)
    written = d.process(b)
    v = b.verdict
    assert written == int(np.count_nonzero(v < V.DROP_BASE))
    s = d.summary()
    assert s["packets_in"] == len(fr) == s["packets_out"] + s["dropped"]
    assert s["packets_out"] == written
    assert s["dropped"] == int(np.count_nonzero(v >= V.DROP_BASE))
    assert sum(d.counters().values()) == len(fr)
    for i, f in enumerate(fr):
        code = int(v[i])
        out = b.packet(i)
        if code < V.FWD_IN and code != V.PASS_ROUTED and code != V.PASS_NOT_MASQ:
            assert out == f, (i, V.name(code))
        elif code in (V.PASS_ROUTED, V.PASS_NOT_MASQ):
            # routed by the director's stack: only the TTL and the IPv4 header checksum
            # change (IPv6: the hop limit)
            _, fields = parse(f, lts[i], wl[i])
            l3 = fields["l3off"]
            if fields["af"] == 4:
                assert out[: l3 + 8] == f[: l3 + 8] and out[l3 + 12 :] == f[l3 + 12 :]
                assert out[l3 + 8] == f[l3 + 8] - (0 if keep_ttl else 1)
            else:
                assert out[: l3 + 7] == f[: l3 + 7] and out[l3 + 8 :] == f[l3 + 8 :]
                assert out[l3 + 7] == f[l3 + 7] - (0 if keep_ttl else 1)
        elif code >= V.DROP_BASE:
            assert out == f, (i, V.name(code))


@given(batches(), st.integers(0, 2**63 - 1))
@SETTINGS
def test_deterministic_across_directors_and_hash_seeds(
    bt: tuple[list[bytes], list[int], list[int], list[int]], seed: int
) -> None:
    fr, lts, wl, ts = bt
    outs = []
    for s in (1, 1, seed):
        d = _director(seed=s)
        b = _batch(fr, lts, wl, ts)
        d.process(b)
        outs.append((b.buf.tobytes(), b.verdict.tobytes(), d.summary(), d.connections()))
    assert outs[0] == outs[1] == outs[2]


@given(batches(), st.lists(st.integers(1, 20), min_size=1, max_size=40))
@SETTINGS
def test_same_result_whatever_the_batch_split(
    bt: tuple[list[bytes], list[int], list[int], list[int]], sizes: list[int]
) -> None:
    """The batch loop parses and prefetches up to two windows of 8 ahead and handles a
    batch's head and tail separately: cutting the packets into batches of any sizes
    (1, 7, 9, 17, ...) gives the same packets, verdicts and state as one batch."""
    fr, lts, wl, ts = bt
    whole = _director()
    b = _batch(fr, lts, wl, ts)
    whole.process(b)
    want = [(b.packet(i), int(b.verdict[i])) for i in range(len(fr))]
    parts = _director()
    got: list[tuple[bytes, int]] = []
    i = k = 0
    while i < len(fr):
        j = min(len(fr), i + sizes[k % len(sizes)])
        c = _batch(fr[i:j], lts[i:j], wl[i:j], ts[i:j])
        parts.process(c)
        got += [(c.packet(x), int(c.verdict[x])) for x in range(j - i)]
        i, k = j, k + 1
    assert got == want
    assert parts.summary() == whole.summary() and parts.connections() == whole.connections()


def test_cli_output_independent_of_python_hash_seed(tmp_path: Path) -> None:
    g = REPO / "tests" / "golden"
    outs = []
    for hs, seed in (("0", "1"), ("1", "2"), ("12345", "99")):
        out = tmp_path / f"out{hs}.pcap"
        env = dict(os.environ, PYTHONHASHSEED=hs)
        r = subprocess.run(
            [sys.executable, "-m", "fastvs.cli", "process", str(g / "g5-mix.pcap"), "-r",
             str(g / "g5-mix.rules"), "-o", str(out), "--seed", seed, "-q"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


# -- rewrites verify with dpkt --------------------------------------------------------------
ips = st.sampled_from(["172.16.0.5", "172.16.0.6", "203.0.113.9", "198.51.100.77"])
tcp_svcs = st.sampled_from([("10.10.0.1", 80), ("10.10.0.2", 80), ("10.10.0.3", 443)])
udp_svcs = st.sampled_from([("10.10.0.1", 53), ("10.10.0.4", 9000)])


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("t"), ips, st.integers(1024, 65535), tcp_svcs,
                      st.sampled_from(["S", "A", "PA", "FA", "R", "SA"]), st.binary(max_size=64),
                      st.integers(1, 255)),
            st.tuples(st.just("u"), ips, st.integers(1024, 65535), udp_svcs, st.booleans(),
                      st.binary(max_size=64), st.integers(1, 255)),
        ),
        min_size=1, max_size=30,
    ),
    st.booleans(),
)  # fmt: skip
@SETTINGS
def test_rewritten_packets_verify_with_dpkt(specs: list[tuple], replies: bool) -> None:
    fr: list[bytes] = []
    for kind, c, cport, (vip, vport), x, payload, ttl in specs:
        if kind == "t":
            fr.append(tcp(c, cport, vip, vport, flags=x, payload=payload, ttl=ttl))
        else:
            fr.append(udp(c, cport, vip, vport, payload=payload, ttl=ttl, zero_csum=x))
    d = _director()
    outs, verdicts = d.process_packets(fr)
    if replies:
        # the real servers answer every connection the director made
        back = []
        for conn in d.connections():
            mk = tcp if conn["proto"] == "TCP" else udp
            kw = {"flags": "SA"} if conn["proto"] == "TCP" else {}
            back.append(mk(conn["daddr"], conn["dport"], conn["caddr"], conn["cport"], **kw))
        fr2 = back
        outs2, verdicts2 = d.process_packets(fr2)
        fr, outs, verdicts = fr + fr2, outs + outs2, verdicts + verdicts2
    for f, out, code in zip(fr, outs, verdicts, strict=True):
        assert checksums_ok(f)
        if code in (V.FWD_IN, V.FWD_OUT, V.FWD_DR, V.FWD_TUN):
            assert checksums_ok(out), V.name(code)
        elif code < V.FWD_IN and code != V.PASS_NOT_MASQ:  # a DR reply is routed: TTL - 1
            assert out == f, V.name(code)
