"""fastvs.capture.pcap: reading, writing and rejecting classic pcap and pcapng captures.

Real captures (the repository's pcaps/real/) are checked against dpkt and
against a small struct-based reference parser written here; synthetic files cover
byte orders, resolutions, chunk boundaries and every kind of damage.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import dpkt
import numpy as np
import pytest

from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import Reader, Writer, open_capture
from fastvs.errors import CaptureError

from conftest import REAL, REAL_FILES

MANIFEST = {f["name"]: f for f in json.loads((REAL / "manifest.json").read_text())["files"]}
real_param = pytest.mark.parametrize("path", REAL_FILES, ids=[p.name for p in REAL_FILES])

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


# -- builders for synthetic captures ---------------------------------------------------


def pcap_bytes(
    records: list[tuple[int, int, bytes, int]],
    *,
    big: bool = False,
    ns: bool = False,
    snaplen: int = 65535,
    linktype: int = 1,
) -> bytes:
    """Classic pcap: records are (sec, frac, data, wirelen)."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for sec, frac, data, wirelen in records:
        out.append(struct.pack(e + "IIII", sec, frac, len(data), wirelen) + data)
    return b"".join(out)


def block(btype: int, body: bytes, e: str = "<") -> bytes:
    body = body + b"\0" * (-len(body) % 4)
    blen = 12 + len(body)
    return struct.pack(e + "II", btype, blen) + body + struct.pack(e + "I", blen)


def shb(e: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def idb(
    linktype: int = 1,
    snaplen: int = 0,
    tsresol: int | None = None,
    e: str = "<",
    tsoffset: int | None = None,
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HHB3x", 9, 1, tsresol)
    if tsoffset is not None:
        opts += struct.pack(e + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, e)


def epb(iface: int, units: int, data: bytes, wirelen: int | None = None, e: str = "<") -> bytes:
    wl = len(data) if wirelen is None else wirelen
    hdr = struct.pack(e + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), wl)
    return block(6, hdr + data, e)


def spb(data: bytes, wirelen: int | None = None, e: str = "<") -> bytes:
    return block(3, struct.pack(e + "I", len(data) if wirelen is None else wirelen) + data, e)


def random_frames(n: int, seed: int = 1, zero_every: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 300, n)
    if zero_every:
        lens[::zero_every] = 0
    return [rng.integers(0, 256, int(k), dtype=np.uint8).tobytes() for k in lens]


def write_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def packets(batch: PacketBatch) -> list[bytes]:
    return [batch.packet(i) for i in range(len(batch))]


# -- independent reference parser (struct, one Python object per packet) ---------------


def ref_parse(data: bytes) -> list[dict]:
    """Every packet of a pcap/pcapng file: data, wirelen, ts (ns), global iface, linktype."""
    out: list[dict] = []
    if data[:4] != PCAPNG_MAGIC:
        e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        ns = struct.unpack(e + "I", data[:4])[0] == 0xA1B23C4D
        lt = struct.unpack(e + "I", data[20:24])[0] & 0xFFFF
        o = 24
        while o + 16 <= len(data):
            s, f, cl, wl = struct.unpack(e + "IIII", data[o : o + 16])
            out.append(
                dict(
                    data=data[o + 16 : o + 16 + cl],
                    wirelen=wl,
                    ts=s * 10**9 + f * (1 if ns else 1000),
                    iface=0,
                    linktype=lt,
                )
            )
            o += 16 + cl
        return out
    ifaces: list[tuple[int, int, int, int]] = []  # linktype, tsresol, offset s, snaplen
    base = 0
    o = 0
    e = "<"
    while o + 12 <= len(data):
        if data[o : o + 4] == PCAPNG_MAGIC:
            e = "<" if data[o + 8 : o + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            base = len(ifaces)
        bt, bl = struct.unpack(e + "II", data[o : o + 8])
        body = data[o + 8 : o + bl - 4]
        if bt == 1:
            lt, _, snap = struct.unpack(e + "HHI", body[:8])
            res, off, q = 6, 0, 8
            while q + 4 <= len(body):
                code, ol = struct.unpack(e + "HH", body[q : q + 4])
                if code == 0:
                    break
                if code == 9:
                    res = body[q + 4]
                if code == 14:
                    off = struct.unpack(e + "q", body[q + 4 : q + 12])[0]
                q += 4 + (ol + 3) // 4 * 4
            ifaces.append((lt, res, off, snap))
        elif bt == 6:
            ifid, hi, lo, cl, wl = struct.unpack(e + "IIIII", body[:20])
            g = base + ifid
            lt, res, off, _ = ifaces[g]
            units = (hi << 32) | lo
            if units >= 2**63:
                units -= 2**64
            if res & 0x80:
                ns = (units * 10**9) >> (res & 0x7F)
            else:
                ns = units * 10**9 // 10**res
            ts = ns + off * 10**9
            out.append(dict(data=body[20 : 20 + cl], wirelen=wl, ts=ts, iface=g, linktype=lt))
        elif bt == 3:
            (wl,) = struct.unpack(e + "I", body[:4])
            cl = min(wl, len(body) - 4, ifaces[base][3] or wl)
            out.append(
                dict(data=body[4 : 4 + cl], wirelen=wl, ts=0, iface=base, linktype=ifaces[base][0])
            )
        o += bl
    return out


def assert_batch_equals_ref(batch: PacketBatch, ref: list[dict]) -> None:
    assert len(batch) == len(ref)
    assert packets(batch) == [r["data"] for r in ref]
    assert batch.wirelen.tolist() == [r["wirelen"] for r in ref]
    assert batch.ts.tolist() == [r["ts"] for r in ref]
    assert batch.iface.tolist() == [r["iface"] for r in ref]
    assert batch.linktype.tolist() == [r["linktype"] for r in ref]


def assert_same_batches(a: PacketBatch, b: PacketBatch) -> None:
    assert packets(a) == packets(b)
    for name in ("caplen", "wirelen", "ts", "iface", "linktype"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name


# -- real captures -----------------------------------------------------------------------


@real_param
def test_real_matches_dpkt(path: Path) -> None:
    with open_capture(path) as r:
        batch = r.read_all()
    with open(path, "rb") as f:
        ng = f.read(4) == PCAPNG_MAGIC
        f.seek(0)
        ref = list(dpkt.pcapng.Reader(f) if ng else dpkt.pcap.Reader(f))
    if ng:
        # dpkt reads the first section's EPBs only, with the first interface's resolution
        first = [i for i in range(len(batch)) if r.interfaces[batch.iface[i]].section == 0]
        idx = first[: len(ref)]
        assert len(idx) == len(ref)
        assert [batch.packet(i) for i in idx] == [bytes(p) for _, p in ref]
        res0 = r.interfaces[0].tsresol
        pairs = [
            (int(batch.ts[i]), t)
            for i, (t, _) in zip(idx, ref, strict=True)
            if r.interfaces[batch.iface[i]].tsresol == res0
        ]
    else:
        assert packets(batch) == [bytes(p) for _, p in ref]
        pairs = [(int(batch.ts[i]), t) for i, (t, _) in enumerate(ref)]
    for ours, t in pairs:
        exp = round(float(t) * 1e9)
        exp = (exp + 2**63) % 2**64 - 2**63
        assert abs(ours - exp) <= max(1000, 2e9 * math.ulp(float(t)))


@real_param
def test_real_matches_reference_parser(path: Path) -> None:
    data = path.read_bytes()
    with open_capture(path) as r:
        batch = r.read_all()
        assert r.bad_records == 0
        assert r.packets == len(batch)
    assert_batch_equals_ref(batch, ref_parse(data))
    assert r.format == ("pcapng" if data[:4] == PCAPNG_MAGIC else "pcap")
    meta = MANIFEST[path.name]
    assert len(batch) == meta["packets"]
    assert sorted(set(r.linktypes)) == sorted(set(meta["linktype"]))


@real_param
def test_real_chunked_like_whole(path: Path) -> None:
    whole = open_capture(path).read_all()
    chunk = 100 if path.stat().st_size < 1 << 20 else 4096
    r = open_capture(path, chunk_bytes=chunk)
    parts = list(r)
    biggest = max(int(whole.caplen.max()) if len(whole) else 0, 0) + 1024
    assert all(len(b.buf) <= max(chunk, biggest) for b in parts)
    assert sum(len(b) for b in parts) == len(whole)
    assert_same_batches(open_capture(path, chunk_bytes=chunk).read_all(), whole)


@real_param
def test_real_roundtrip(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open_capture(path, chunk_bytes=8192) as r, Writer(out, like=r) as w:
        for b in r:
            w.write(b)
    if r.format == "pcap":
        assert out.read_bytes() == path.read_bytes()
    else:
        again = open_capture(out)
        assert_same_batches(again.read_all(), open_capture(path).read_all())
        assert again.linktypes == r.linktypes
        assert again.format == "pcapng"


# -- classic pcap, synthetic -------------------------------------------------------------


@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("ns", [False, True], ids=["us", "ns"])
def test_classic_roundtrip_byte_identical(tmp_path: Path, big: bool, ns: bool) -> None:
    frames = random_frames(500, seed=7, zero_every=50)
    fracmax = 10**9 if ns else 10**6
    recs = [
        (1_700_000_000 + i, (i * 7919) % fracmax, d, len(d) + (i % 3)) for i, d in enumerate(frames)
    ]
    src = write_file(
        tmp_path, "in.pcap", pcap_bytes(recs, big=big, ns=ns, snaplen=400, linktype=113)
    )
    r = open_capture(src, chunk_bytes=1000)
    assert (r.format, r.byteorder, r.nanosecond, r.snaplen, r.linktypes) == (
        "pcap",
        "big" if big else "little",
        ns,
        400,
        [113],
    )
    with Writer(tmp_path / "out.pcap", like=r) as w:
        for b in r:
            assert (b.linktype == 113).all()
            w.write(b)
    assert r.zero_length_records == sum(1 for d in frames if not d) >= 10
    assert (tmp_path / "out.pcap").read_bytes() == src.read_bytes()
    batch = open_capture(src).read_all()
    assert packets(batch) == frames
    mul = 1 if ns else 1000
    assert batch.ts.tolist() == [s * 10**9 + f * mul for s, f, _, _ in recs]
    assert batch.wirelen.tolist() == [w for *_, w in recs]


def test_chunk_smaller_than_one_record(tmp_path: Path) -> None:
    frames = [bytes([i]) * 200 for i in range(5)]
    src = write_file(tmp_path, "a.pcap", pcap_bytes([(1, 0, d, len(d)) for d in frames]))
    r = open_capture(src, chunk_bytes=10)
    parts = list(r)
    assert [packets(p) for p in parts] == [[d] for d in frames]
    assert r.packets == 5


def test_zero_length_records_are_valid(tmp_path: Path) -> None:
    src = write_file(
        tmp_path, "z.pcap", pcap_bytes([(1, 0, b"", 0), (2, 0, b"ab", 2), (3, 0, b"", 60)])
    )
    r = open_capture(src)
    b = r.read_all()
    assert packets(b) == [b"", b"ab", b""]
    assert b.wirelen.tolist() == [0, 2, 60]
    assert r.zero_length_records == 2


def test_no_records(tmp_path: Path) -> None:
    src = write_file(tmp_path, "h.pcap", pcap_bytes([]))
    r = open_capture(src)
    assert list(r) == []
    assert len(open_capture(src).read_all()) == 0


def test_writer_mask_and_verdicts(tmp_path: Path) -> None:
    frames = [bytes([i]) * (10 + i) for i in range(6)]
    batch = PacketBatch.from_packets(frames, ts_ns=[i * 1_000_000_123 for i in range(6)])
    batch.verdict[:] = [0, 64, 32, 80, 63, 255]
    with Writer(tmp_path / "v.pcap", nanosecond=True) as w:
        assert w.write(batch) == 3
        assert w.write(batch, mask=np.array([1, 0, 0, 0, 0, 1], np.uint8)) == 2
    got = open_capture(tmp_path / "v.pcap").read_all()
    assert packets(got) == [frames[0], frames[2], frames[4], frames[0], frames[5]]
    assert got.ts.tolist() == [0, 2_000_000_246, 4_000_000_492, 0, 5_000_000_615]


def test_writer_us_truncates_ns(tmp_path: Path) -> None:
    batch = PacketBatch.from_packets([b"x"], ts_ns=[1_500_000_999])
    with Writer(tmp_path / "u.pcap") as w:
        w.write(batch)
    assert open_capture(tmp_path / "u.pcap").read_all().ts.tolist() == [1_500_000_000]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    batch = PacketBatch.from_packets([b"abc"] * 3)
    with pytest.raises(RuntimeError), Writer(out) as w:
        w.write(batch)
        raise RuntimeError("engine failed")
    assert not out.exists()
    assert not Path(str(out) + ".tmp").exists()
    # an older output stays as it was
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), Writer(out) as w:
        w.write(batch)
        raise RuntimeError("engine failed")
    assert out.read_bytes() == b"old"


def test_unclosed_writer_is_not_visible(tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    w = Writer(out)
    w.write(PacketBatch.from_packets([b"abc"]))
    assert not out.exists()
    w.close()
    assert out.exists()


def test_writer_rejects_mixed_linktypes_in_classic(tmp_path: Path) -> None:
    batch = PacketBatch.from_packets([b"a", b"b"], linktype=1)
    batch.linktype[1] = 113
    with pytest.raises(CaptureError, match="link type 113"), Writer(tmp_path / "m.pcap") as w:
        w.write(batch)
    assert not (tmp_path / "m.pcap").exists()


def test_writer_bad_slot(tmp_path: Path) -> None:
    batch = PacketBatch.from_packets([b"abc", b"de"])
    batch.caplen[1] = 100
    with pytest.raises(CaptureError, match="packet 1"), Writer(tmp_path / "b.pcap") as w:
        w.write(batch)


# -- pcapng, synthetic -------------------------------------------------------------------


@pytest.mark.parametrize("e", ["<", ">"], ids=["le", "be"])
def test_pcapng_resolutions_sections_and_blocks(tmp_path: Path, e: str) -> None:
    other = "<" if e == ">" else ">"
    data = b"".join(
        [
            shb(e),
            idb(1, 6, None, e),  # µs default, snaplen 6 (cuts the SPB)
            idb(101, 0, 9, e),  # ns
            idb(228, 0, 0x80 | 10, e),  # 2**-10 s
            idb(229, 0, 3, e, tsoffset=100),  # ms, +100 s
            block(0x4, b"name resolution", e),  # NRB: skipped
            epb(0, 1_000_001, b"us", e=e),
            epb(1, 2_000_000_002, b"ns", e=e),
            block(0x12345678, b"unknown block type", e),
            epb(2, 3 * 1024 + 512, b"b2", e=e),
            epb(3, 4_005, b"ms", wirelen=99, e=e),
            spb(b"simple", 1000, e),
            block(0x5, b"\0" * 12, e),  # ISB: skipped
            shb(other),  # a second section in the other byte order
            idb(113, 0, 9, other),
            epb(0, 7, b"sec2", e=other),
        ]
    )
    path = write_file(tmp_path, "x.pcapng", data)
    r = open_capture(path)
    b = r.read_all()
    assert r.format == "pcapng" and r.byteorder == ("big" if e == ">" else "little")
    assert r.linktypes == [1, 101, 228, 229, 113]
    assert r.nanosecond
    assert packets(b) == [b"us", b"ns", b"b2", b"ms", b"simple", b"sec2"]
    assert b.ts.tolist() == [1_000_001_000, 2_000_000_002, 3_500_000_000, 104_005_000_000, 0, 7]
    assert b.iface.tolist() == [0, 1, 2, 3, 0, 4]
    assert b.linktype.tolist() == [1, 101, 228, 229, 1, 113]
    assert b.wirelen.tolist() == [2, 2, 2, 99, 1000, 4]
    assert_batch_equals_ref(b, ref_parse(data))
    for chunk in (1, 13, 64):
        assert_same_batches(open_capture(path, chunk_bytes=chunk).read_all(), b)
    # re-written: one section, the same interfaces, packets and timestamps
    with Writer(tmp_path / "y.pcapng", like=open_capture(path)) as w:
        for part in open_capture(path, chunk_bytes=64):
            w.write(part)
    again = open_capture(tmp_path / "y.pcapng")
    assert again.linktypes == r.linktypes
    assert_same_batches(again.read_all(), b)


def test_pcapng_writer_without_like(tmp_path: Path) -> None:
    batch = PacketBatch.from_packets(
        [b"a", b"bb", b"ccc"], ts_ns=[1, 2_000, 3_000_000_000], wirelen=[10, 20, 30]
    )
    batch.iface[:] = [0, 1, 0]
    batch.linktype[:] = [1, 113, 1]
    with Writer(tmp_path / "n.pcapng", format="pcapng", nanosecond=True) as w:
        w.write(batch)
    r = open_capture(tmp_path / "n.pcapng")
    assert r.linktypes == [1, 113]
    assert_same_batches(r.read_all(), batch)
    dp = list(dpkt.pcapng.Reader(open(tmp_path / "n.pcapng", "rb")))
    assert [bytes(p) for _, p in dp] == [b"a", b"bb", b"ccc"]


def test_pcapng_from_classic(tmp_path: Path) -> None:
    src = write_file(tmp_path, "c.pcap", pcap_bytes([(5, 6, b"abc", 9)], ns=True, linktype=276))
    r = open_capture(src)
    with Writer(tmp_path / "c.pcapng", like=r, format="pcapng") as w:
        w.write(r.read_all())
    again = open_capture(tmp_path / "c.pcapng")
    assert again.linktypes == [276] and again.nanosecond
    assert_same_batches(again.read_all(), open_capture(src).read_all())


def test_classic_from_pcapng_mixed_linktypes_fails(tmp_path: Path) -> None:
    path = write_file(
        tmp_path, "m.pcapng", shb() + idb(1) + idb(113) + epb(0, 1, b"a") + epb(1, 2, b"b")
    )
    r = open_capture(path)
    with (
        pytest.raises(CaptureError, match="link type 113"),
        Writer(tmp_path / "m.pcap", like=r, format="pcap") as w,
    ):
        w.write(r.read_all())
    assert not (tmp_path / "m.pcap").exists()


def test_pcapng_idb_after_packets(tmp_path: Path) -> None:
    data = shb() + idb(1) + epb(0, 1, b"a") + idb(0) + epb(1, 2, b"b")
    path = write_file(tmp_path, "late.pcapng", data)
    r = open_capture(path, chunk_bytes=40)
    assert r.linktypes == [1]
    out = tmp_path / "late2.pcapng"
    with Writer(out, like=r) as w:
        for b in r:
            w.write(b)
    assert r.linktypes == [1, 0]
    assert open_capture(out).linktypes == [1, 0]
    assert_same_batches(open_capture(out).read_all(), open_capture(path).read_all())


# -- bad files ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"nope\.pcap: cannot open"):
        open_capture(tmp_path / "nope.pcap")


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="e.pcap: empty file"):
        open_capture(write_file(tmp_path, "e.pcap", b""))


def test_wrong_magic(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"w.pcap: not a pcap or pcapng file \(magic 0x3c68746d"):
        open_capture(write_file(tmp_path, "w.pcap", b"<html>hello</html>" * 3))


def test_truncated_global_header(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"truncated pcap global header \(20 of 24 bytes\)"):
        open_capture(write_file(tmp_path, "t.pcap", pcap_bytes([])[:20]))


def test_too_short_for_magic(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="only 2 bytes"):
        open_capture(write_file(tmp_path, "s.pcap", b"\xd4\xc3"))


@pytest.mark.parametrize("cut", [3, 10, 17], ids=["in-data", "in-header", "one-byte-short"])
def test_truncated_last_record(tmp_path: Path, cut: int) -> None:
    data = pcap_bytes([(1, 0, b"a" * 20, 20), (2, 0, b"b" * 20, 20), (3, 0, b"c" * 20, 20)])
    data = data[: len(data) - (36 - cut)] if cut != 17 else data[:-1]
    path = write_file(tmp_path, "t.pcap", data)
    r = open_capture(path)
    with pytest.raises(CaptureError, match=r"t.pcap: record 3 at byte offset 96: truncated record"):
        r.read_all()
    r = open_capture(path, keep_going=True)
    b = r.read_all()
    assert packets(b) == [b"a" * 20, b"b" * 20]
    assert r.bad_records == 1
    # chunked, the good records still arrive before the error
    r = open_capture(path, chunk_bytes=30)
    got: list[bytes] = []
    with pytest.raises(CaptureError, match="record 3"):
        for part in r:
            got += packets(part)
    assert got == [b"a" * 20, b"b" * 20]


def test_caplen_over_snaplen(tmp_path: Path) -> None:
    data = pcap_bytes([(1, 0, b"a" * 10, 10), (2, 0, b"b" * 70, 70)], snaplen=64)
    path = write_file(tmp_path, "c.pcap", data)
    with pytest.raises(
        CaptureError,
        match=r"record 2 at byte offset 50: captured length 70 exceeds the snap length limit 64",
    ):
        open_capture(path).read_all()
    r = open_capture(path, keep_going=True)
    assert packets(r.read_all()) == [b"a" * 10]
    assert r.bad_records == 1
    assert len(open_capture(path, max_caplen=100).read_all()) == 2


def test_caplen_over_sane_maximum(tmp_path: Path) -> None:
    hdr = pcap_bytes([], snaplen=0)
    data = hdr + struct.pack("<IIII", 1, 0, 300_000, 300_000) + b"\0" * 100
    with pytest.raises(
        CaptureError, match="record 1 at byte offset 24: captured length 300000 exceeds"
    ):
        open_capture(write_file(tmp_path, "big.pcap", data)).read_all()


def _ng_error(tmp_path: Path, data: bytes, match: str) -> None:
    path = write_file(tmp_path, "bad.pcapng", data)
    with pytest.raises(CaptureError, match=match):
        open_capture(path).read_all()
    r = open_capture(path, keep_going=True)
    r.read_all()
    assert r.bad_records == 1


def test_pcapng_block_length_not_multiple_of_4(tmp_path: Path) -> None:
    good = shb() + idb(1) + epb(0, 1, b"abcd")
    bad = struct.pack("<II", 6, 30) + b"\0" * 22
    _ng_error(
        tmp_path, good + bad, rf"bad.pcapng: block at byte offset {len(good)}: bad block length 30"
    )


def test_pcapng_block_length_below_12(tmp_path: Path) -> None:
    good = shb() + idb(1)
    _ng_error(tmp_path, good + struct.pack("<II", 6, 8) + b"\0" * 8, "bad block length 8")


def test_pcapng_trailer_mismatch(tmp_path: Path) -> None:
    b = bytearray(epb(0, 1, b"abcd"))
    b[-4:] = struct.pack("<I", 40)
    _ng_error(tmp_path, shb() + idb(1) + bytes(b), "trailing block length 40 differs")


def test_pcapng_block_past_eof(tmp_path: Path) -> None:
    head = shb() + idb(1) + epb(0, 1, b"x")
    _ng_error(
        tmp_path,
        head + epb(0, 2, b"abcdefgh")[:-6],
        rf"block at byte offset {len(head)}: block length 40 runs past the end of the file \(34 bytes left\)",
    )
    _ng_error(tmp_path, head + b"\x06\0\0\0", r"truncated block header \(4 of 12 bytes\)")


def test_pcapng_epb_undefined_interface(tmp_path: Path) -> None:
    _ng_error(
        tmp_path,
        shb() + idb(1) + epb(0, 1, b"a") + epb(3, 1, b"b"),
        "packet 2 names interface 3, but section 1 defines 1 interface",
    )
    _ng_error(
        tmp_path, shb() + epb(0, 1, b"a"), "packet 1 names interface 0, but section 1 defines 0"
    )


def test_pcapng_interfaces_are_per_section(tmp_path: Path) -> None:
    _ng_error(
        tmp_path,
        shb() + idb(1) + idb(1) + shb() + idb(1) + epb(1, 1, b"a"),
        "names interface 1, but section 2 defines 1",
    )


def test_pcapng_caplen_beyond_block(tmp_path: Path) -> None:
    b = bytearray(epb(0, 1, b"abcd"))
    b[20:24] = struct.pack("<I", 9)
    _ng_error(
        tmp_path, shb() + idb(1) + bytes(b), "packet 1: captured length 9 does not fit in its block"
    )


def test_pcapng_caplen_over_snaplen(tmp_path: Path) -> None:
    _ng_error(
        tmp_path,
        shb() + idb(1, snaplen=4) + epb(0, 1, b"abcdef"),
        "packet 1: captured length 6 exceeds",
    )


def test_pcapng_bad_byte_order_magic(tmp_path: Path) -> None:
    bad = bytearray(shb())
    bad[8:12] = b"\x01\x02\x03\x04"
    with pytest.raises(CaptureError, match="section header at byte offset 0: bad byte-order magic"):
        open_capture(write_file(tmp_path, "bom.pcapng", bytes(bad) + idb(1)))


def test_pcapng_zero_length_packets(tmp_path: Path) -> None:
    r = open_capture(
        write_file(tmp_path, "z.pcapng", shb() + idb(1) + epb(0, 1, b"") + epb(0, 2, b"a", 64))
    )
    b = r.read_all()
    assert packets(b) == [b"", b"a"] and b.wirelen.tolist() == [0, 64]
    assert r.zero_length_records == 1


def test_reader_is_a_context_manager(tmp_path: Path) -> None:
    path = write_file(tmp_path, "a.pcap", pcap_bytes([(1, 2, b"x", 1)]))
    with Reader(path) as r:
        assert "pcap" in repr(r)
    assert r._f.closed
