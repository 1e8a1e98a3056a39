"""Regression tests for what the fuzzers (fuzz/) and the sanitizer runs found.

Each test names the harness and input that found the bug. Bugs in files owned by
someone else stay ``xfail(strict=True)`` until the owner fixes them: the test then
passes, strict xfail turns that into a failure, and the marker comes off.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fastvs.capture.pcap import open_capture
from fastvs.errors import CaptureError

FRAME = bytes(range(60))


def _shb() -> bytes:
    return struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)


def _idb(linktype: int = 1) -> bytes:
    return struct.pack("<IIHHII", 1, 20, linktype, 0, 0, 20)


def _epb(data: bytes, ts_us: int = 1_000_000) -> bytes:
    pad = (-len(data)) % 4
    blen = 32 + len(data) + pad
    return (
        struct.pack("<IIIIIII", 6, blen, 0, ts_us >> 32, ts_us & 0xFFFFFFFF, len(data), len(data))
        + data
        + b"\0" * pad
        + struct.pack("<I", blen)
    )


def _bad_trailer_block() -> bytes:
    # an EPB whose trailing length (36) differs from the leading one (32)
    return struct.pack("<IIIIIII", 6, 32, 0, 0, 0, 0, 0) + struct.pack("<I", 36)


def _read(path: Path, chunk: int, keep_going: bool = False) -> tuple[list[bytes], str | None]:
    pkts: list[bytes] = []
    try:
        with open_capture(path, chunk_bytes=chunk, keep_going=keep_going) as r:
            for b in r:
                pkts += [b.packet(i) for i in range(len(b))]
    except CaptureError as e:
        return pkts, str(e)
    return pkts, None


BAD_PCAPNG = _shb() + _idb() + _epb(FRAME) + _epb(FRAME[::-1]) + _bad_trailer_block()


def test_pcapng_bad_block_small_chunks_reference(tmp_path: Path) -> None:
    """Read in chunks smaller than a block, the good records come out, then the error."""
    p = tmp_path / "bad.pcapng"
    p.write_bytes(BAD_PCAPNG)
    pkts, err = _read(p, 40)
    assert pkts == [FRAME, FRAME[::-1]]
    assert err is not None and "trailing block length" in err


def test_pcapng_records_before_bad_block_are_kept(tmp_path: Path) -> None:
    """fuzz/fuzz_pcap.py (chunk 43 vs 4 MiB read 2 vs 0 packets): the good records indexed
    before a bad block in the same chunk come out, then the error (pcap.py Reader._index)."""
    p = tmp_path / "bad.pcapng"
    p.write_bytes(BAD_PCAPNG)
    pkts, err = _read(p, 1 << 20)
    assert pkts == [FRAME, FRAME[::-1]]
    assert err is not None and "trailing block length" in err


def test_pcapng_keep_going_keeps_records_before_bad_block(tmp_path: Path) -> None:
    """As above with keep_going: the good records, then a clean stop counting the bad block."""
    p = tmp_path / "bad.pcapng"
    p.write_bytes(BAD_PCAPNG)
    pkts, err = _read(p, 1 << 20, keep_going=True)
    assert err is None
    assert pkts == [FRAME, FRAME[::-1]]
    with open_capture(p, chunk_bytes=1 << 20, keep_going=True) as r:
        assert sum(len(b) for b in r) == 2
        assert r.bad_records == 1 and r.packets == 2


@pytest.mark.parametrize("chunk", [40, 100, 150, 1 << 20])
@pytest.mark.parametrize("keep_going", [False, True])
def test_pcapng_bad_block_after_several_chunks(
    tmp_path: Path, chunk: int, keep_going: bool
) -> None:
    """Whatever chunk the bad block lands in, every record before it comes out once."""
    frames = [bytes([i]) * (40 + i) for i in range(6)]
    p = tmp_path / "bad.pcapng"
    p.write_bytes(_shb() + _idb() + b"".join(_epb(f) for f in frames) + _bad_trailer_block())
    pkts, err = _read(p, chunk, keep_going=keep_going)
    assert pkts == frames
    if keep_going:
        assert err is None
    else:
        assert err is not None and "trailing block length" in err


def _pcap(records: list[tuple[bytes, int]], snaplen: int = 100) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
    for data, caplen in records:
        out += struct.pack("<IIII", 1, 0, caplen, caplen) + data
    return out


@pytest.mark.parametrize("chunk", [30, 100, 1 << 20])
@pytest.mark.parametrize("keep_going", [False, True])
def test_pcap_records_before_bad_caplen_are_kept(
    tmp_path: Path, chunk: int, keep_going: bool
) -> None:
    """Classic pcap counterpart: a record over the snap length ends the file after the good
    records before it, whether or not they share its chunk."""
    frames = [bytes([i]) * (40 + i) for i in range(4)]
    p = tmp_path / "bad.pcap"
    p.write_bytes(_pcap([(f, len(f)) for f in frames] + [(b"", 5000)]))
    pkts, err = _read(p, chunk, keep_going=keep_going)
    assert pkts == frames
    if keep_going:
        assert err is None
    else:
        assert err is not None and "exceeds the snap length limit" in err


# -- tunnel output stage (fastvs/datapath/_xmit.pyx encap_tunnel), found while bringing
#    fuzz/fuzz_engine.py's invariants up to DR/TUN ------------------------------------


def _tun_director() -> object:
    from fastvs.control.director import Director
    from fastvs.control.rules import parse_rules

    rules = (
        "-A -t 10.10.0.1:80 -s rr\n-a -t 10.10.0.1:80 -r 192.168.0.10 -i\n"
        "-A -t [2001:db8::1]:80 -s rr\n-a -t [2001:db8::1]:80 -r 192.168.0.11 -i\n"
    )
    return Director(parse_rules(rules), seed=1)


def _ip4_syn() -> bytes:
    import socket

    tcp = struct.pack(">HHIIBBHHH", 1000, 80, 1, 0, 5 << 4, 2, 65535, 0, 0)
    hdr = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
        socket.inet_aton("100.64.0.1"), socket.inet_aton("10.10.0.1"),
    )  # fmt: skip
    s = sum(struct.unpack(">10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    hdr = hdr[:10] + struct.pack(">H", ~s & 0xFFFF) + hdr[12:]
    return hdr + tcp  # the TCP checksum does not matter here


ETH4 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"


def test_tunnel_outer_length_leaves_out_ethernet_padding() -> None:
    """A 40-byte datagram in a padded 60-byte frame: the outer total length is 60
    (ip_rcv trims the padding), not 66, and the padding is not tunnelled."""
    d = _tun_director()
    out, v = d.process_packets([ETH4 + _ip4_syn() + b"\0" * 6])  # type: ignore[attr-defined]
    assert v == [35]
    o = out[0]
    assert int.from_bytes(o[16:18], "big") == 60
    assert len(o) == 14 + 20 + 40


def test_tunnel_output_buffer_has_no_uninitialised_tail() -> None:
    """fuzz/fuzz_engine.py (smoke input 16, seed-determinism check): with the padding
    left out, the new buffer was sized for it and its tail left uninitialised."""
    from fastvs.capture.batch import PacketBatch

    d = _tun_director()
    b = PacketBatch.from_packets([ETH4 + _ip4_syn() + b"\0" * 6, ETH4 + _ip4_syn()], [0, 1])
    d.process(b)  # type: ignore[attr-defined]
    assert [int(x) for x in b.verdict] == [35, 35]
    assert len(b.buf) == int(b.caplen.sum()) == 2 * 74


def test_tunnel_outer_length_ignores_a_short_wire_length() -> None:
    """A record whose wire length is below its captured length (the parser takes the
    captured one): the outer length came from wirelen - l3 and wrapped around."""
    from fastvs.capture.batch import PacketBatch

    d = _tun_director()
    b = PacketBatch.from_packets([ETH4 + _ip4_syn()], [0])
    b.wirelen[:] = 0
    d.process(b)  # type: ignore[attr-defined]
    assert int(b.verdict[0]) == 35
    o = b.packet(0)
    assert int.from_bytes(o[16:18], "big") == 60
    assert int(b.caplen[0]) == int(b.wirelen[0]) == 74


@pytest.mark.parametrize("linktype", [113, 276, 0, 108])
def test_tunnel_link_layer_names_the_outer_family(linktype: int) -> None:
    """IPv6 in IPv4: the link layer must say IPv4 now (it said so only on Ethernet)."""
    from fastvs.datapath._packet import parse

    ip6 = (
        struct.pack(">IHBB", 6 << 28, 20, 6, 64)
        + bytes.fromhex("20010db8000200000000000000000005")
        + bytes.fromhex("20010db8000000000000000000000001")
        + struct.pack(">HHIIBBHHH", 1000, 80, 1, 0, 5 << 4, 2, 65535, 0, 0)
    )
    l2 = {
        113: struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x86DD),
        276: b"\x86\xdd" + bytes(18),
        0: struct.pack("<I", 24),
        108: struct.pack(">I", 24),
    }[linktype]
    d = _tun_director()
    out, v = d.process_packets([l2 + ip6], linktype=linktype)  # type: ignore[attr-defined]
    assert v == [35]
    _, fields = parse(out[0], linktype)
    assert fields.get("af") == 4 and fields.get("l3off") == len(l2)
    assert out[0][len(l2) + 9] == 41  # IPv6 inside
