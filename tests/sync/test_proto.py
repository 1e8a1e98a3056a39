"""fastvs.sync.proto: the wire format and the backup's checks, record by record.

Line numbers are Debian's linux-source-6.1 (6.1.192), net/netfilter/ipvs/ip_vs_sync.c.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvs.sync.proto import (
    F_INACTIVE,
    F_NO_CPORT,
    F_ONE_PACKET,
    F_SEQ_MASK,
    F_TEMPLATE,
    MessageBuilder,
    SeqAdj,
    SyncConn,
    decode_message,
    encode_message,
    record_len,
    reencode,
    sync_maxlen,
)


def tcp(cport: int = 40000, **kw: object) -> SyncConn:
    base: dict[str, object] = dict(
        protocol=6,
        caddr="10.0.0.1",
        cport=cport,
        vaddr="10.1.0.1",
        vport=80,
        daddr="10.2.0.1",
        dport=8080,
        state=1,
        timeout=900,
    )
    base.update(kw)
    return SyncConn(**base)  # type: ignore[arg-type]


def v6(**kw: object) -> SyncConn:
    return tcp(caddr="2001:db8::1", vaddr="2001:db8::2", daddr="2001:db8::3", af=6, **kw)


# -- layout (struct ip_vs_sync_mesg / ip_vs_sync_v4 / ip_vs_sync_v6, lines 70-236) ------------


def test_v1_header_and_ipv4_record_layout() -> None:
    m = encode_message([tcp(flags=F_INACTIVE, state=7, timeout=60, fwmark=5)], syncid=7)
    assert len(m) == 8 + 36
    assert m[:8] == bytes([0, 7]) + struct.pack("!H", 44) + bytes([1, 1, 0, 0])
    rec = m[8:]
    assert rec[0] == 0 and rec[1] == 6
    assert struct.unpack("!H", rec[2:4])[0] == 36  # version 0 in the top 4 bits, size 36
    assert struct.unpack("!IHHHHII", rec[4:24]) == (F_INACTIVE, 7, 40000, 80, 8080, 5, 60)
    assert rec[24:36] == bytes([10, 0, 0, 1, 10, 1, 0, 1, 10, 2, 0, 1])


def test_ipv6_record_is_72_bytes_with_type_bit() -> None:
    m = encode_message([v6()], syncid=1)
    assert len(m) == 8 + 72 and m[8] == 1
    res = decode_message(m)
    assert res.conns[0].af == 6 and res.conns[0].caddr == "2001:db8::1"


def test_options_seq_pe_data_pe_name_in_kernel_order() -> None:
    """ip_vs_sync_conn lines 738-767: SEQ (24 bytes, network order), then PE data,
    then PE name, each with a 2-byte header."""
    c = tcp(
        flags=F_SEQ_MASK,
        in_seq=SeqAdj(1, 2, 3),
        out_seq=SeqAdj(4, 5, 6),
        pe_data=b"callid",
        pe_name=b"sip",
    )
    assert record_len(c) == 36 + 26 + 8 + 5
    rec = encode_message([c])[8:]
    assert rec[36:38] == b"\x01\x18" and struct.unpack("!6I", rec[38:62]) == (1, 2, 3, 4, 5, 6)
    assert rec[62:70] == b"\x02\x06callid" and rec[70:75] == b"\x03\x03sip"
    res = decode_message(encode_message([c]), pe_names=["sip"])
    assert not res.drops
    assert res.conns[0].in_seq == SeqAdj(1, 2, 3) and res.conns[0].pe_name == b"sip"


def test_padding_before_each_record_never_after_the_last() -> None:
    """ip_vs_sync_conn line 691: pad = (4 - head) & 3 before a record; size counts it."""
    a = tcp(flags=F_SEQ_MASK)  # 36 + 26 = 62 bytes: the next record needs 2 bytes of pad
    b = tcp(cport=2)
    m = encode_message([a, b])
    assert len(m) == 8 + 62 + 2 + 36
    assert m[8 + 62 : 8 + 64] == b"\0\0"
    assert len(encode_message([b, a])) == 8 + 36 + 62  # no pad at the end
    res = decode_message(m)
    assert not res.drops and [c.cport for c in res.conns] == [40000, 2]


def test_v0_layout_and_host_order_seq() -> None:
    """ip_vs_sync_conn_v0 lines 585-605: 4-byte header, 24-byte record, the seq
    option memcpy'd in host (little-endian) order when flags have SEQ bits."""
    c = tcp(flags=F_SEQ_MASK | F_INACTIVE, state=7, in_seq=SeqAdj(1, 2, 3), out_seq=SeqAdj(4, 5, 6))
    m = encode_message([c, tcp(cport=2)], syncid=9, version=0)
    assert m[:4] == bytes([2, 9]) + struct.pack("!H", 4 + 48 + 24)
    assert struct.unpack("<6I", m[28:52]) == (1, 2, 3, 4, 5, 6)
    res = decode_message(m, 9)
    assert res.version == 0 and not res.drops
    assert res.conns[0].in_seq == SeqAdj(1, 2, 3) and res.conns[0].timeout == 0
    assert reencode(res) == m


def test_v0_refuses_ipv6() -> None:
    with pytest.raises(ValueError):
        encode_message([v6()], version=0)
    b = MessageBuilder(version=0)
    assert b.add(v6()) is None and len(b) == 0  # ip_vs_sync_conn_v0 line 550: not sent


# -- message size (start_sync_thread lines 1826-1839, ip_vs_sync_conn lines 686-700) ------


def test_sync_maxlen() -> None:
    assert sync_maxlen(9000) == 1472  # a master always takes 1500
    assert sync_maxlen(9000, backup=True) == 8972
    assert sync_maxlen(1280, backup=True) == 1472  # clamped up to 1500
    assert sync_maxlen(ipv6=True) == 1452
    assert sync_maxlen(configured=100) == 100
    assert sync_maxlen(configured=100, backup=True) == 1024
    assert sync_maxlen(configured=70000) == 65507


def test_builder_cuts_at_40_ipv4_records() -> None:
    b = MessageBuilder(syncid=7)
    out = [m for i in range(45) if (m := b.add(tcp(cport=i))) is not None]
    last = b.flush()
    assert [len(m) for m in out] == [1448] and last is not None and len(last) == 8 + 5 * 36
    assert out[0][4] == 40


def test_builder_pads_into_the_limit() -> None:
    """The test is size + pad + len > maxlen (the buffer end), so a record fits
    exactly to the byte."""
    b = MessageBuilder(maxlen=8 + 62 + 2 + 36)
    assert b.add(tcp(flags=F_SEQ_MASK)) is None
    assert b.add(tcp(cport=1)) is None
    assert b.size == 108
    assert b.add(tcp(cport=2)) is not None


def test_builder_switching_versions_closes_the_message() -> None:
    b = MessageBuilder(version=1)
    assert b.add(tcp()) is None
    m = b.add(tcp(), version=0)
    assert m is not None and decode_message(m).version == 1
    assert decode_message(b.flush() or b"").version == 0


# -- the backup's checks (ip_vs_process_message lines 1228-1290) -------------------------


def test_size_must_equal_the_datagram() -> None:
    m = encode_message([tcp()])
    assert decode_message(m + b"\0").drops == {"size_mismatch": 1}
    assert decode_message(m[:-1]).drops == {"size_mismatch": 1}
    assert decode_message(m[:3]).drops == {"short": 1}
    assert decode_message(m, maxlen=40).drops == {"truncated": 1}


def test_syncid_filter() -> None:
    m = encode_message([tcp()], syncid=7)
    assert decode_message(m, 8).drops == {"syncid": 1}
    assert len(decode_message(m, 0).conns) == 1  # a backup with id 0 takes all
    assert len(decode_message(m, 7).conns) == 1


def test_reserved_or_spare_not_zero_reads_as_v0() -> None:
    """A v1 header with reserved != 0 is not refused: it is read as version 0 with
    nr_conns = the reserved byte, whose records then run past the end."""
    m = bytearray(encode_message([tcp()]))
    m[0] = 3
    res = decode_message(bytes(m))
    assert res.version == 0 and res.nr_conns == 3 and not res.conns
    # the v1 header's second half and the record read as a garbage v0 record (protocol
    # 0x24), then the second record runs past the end
    assert res.drops == {"unsupported_protocol": 1, "v0_conn_past_end": 1}
    m = bytearray(encode_message([tcp()]))
    m[6] = 1  # spare
    assert decode_message(bytes(m)).version == 0


def test_bad_version_byte_reads_as_v0() -> None:
    m = bytearray(encode_message([tcp()]))
    m[5] = 2
    res = decode_message(bytes(m))
    assert res.version == 0 and not res.conns


def test_huge_nr_conns_stops_at_the_end() -> None:
    m = bytearray(encode_message([tcp()]))
    m[4] = 255
    res = decode_message(bytes(m))
    assert len(res.conns) == 1 and res.drops == {"v1_conn_past_end": 1} and res.fatal


def test_record_size_checks() -> None:
    m = bytearray(encode_message([tcp()]))
    m[10:12] = struct.pack("!H", 200)  # past the end
    assert decode_message(bytes(m)).drops == {"v1_size_past_end": 1}
    m[10:12] = struct.pack("!H", 0x1000 | 36)  # record version 1
    assert decode_message(bytes(m)).drops == {"v1_record_version": 1}
    m[10:12] = struct.pack("!H", 20)  # below the 36-byte base (-20)
    assert decode_message(bytes(m)).drops == {"v1_size_too_small": 1}
    m = bytearray(encode_message([tcp()]))
    m[8] = 2  # type neither 0 nor IPv6 bit (-10)
    assert decode_message(bytes(m)).drops == {"v1_bad_type": 1}


def _with_options(opts: list[tuple[int, bytes]], extra: bytes = b"") -> bytes:
    """A one-record message whose record carries ``opts`` then ``extra`` raw bytes."""
    c = tcp(options=opts)
    m = bytearray(encode_message([c]))
    if extra:
        size = record_len(c) + len(extra)
        m[10:12] = struct.pack("!H", size)
        m += extra
        m[2:4] = struct.pack("!H", len(m))
    return bytes(m)


def test_option_errors_are_fatal() -> None:
    """ip_vs_proc_sync_conn lines 1120-1160."""
    assert decode_message(_with_options([], b"\x01")).drops == {"v1_opt_header": 1}  # -30
    assert decode_message(_with_options([], b"\x01\x00")).drops == {
        "v1_opt_len": 1
    }  # zero length, -40
    assert decode_message(_with_options([], b"\x01\x05ab")).drops == {
        "v1_opt_len": 1
    }  # past the end
    assert decode_message(_with_options([(1, b"x" * 23)])).drops == {"v1_opt_seq": 1}  # -50
    seq = (1, bytes(24))
    assert decode_message(_with_options([seq, seq])).drops == {"v1_opt_seq": 1}
    pd = (2, b"a")
    assert decode_message(_with_options([pd, pd])).drops == {"v1_opt_pe_data": 1}  # -60
    assert decode_message(_with_options([(3, b"x" * 17)])).drops == {"v1_opt_pe_name": 1}  # -70


def test_fatal_error_keeps_the_records_before_it() -> None:
    m = encode_message([tcp(cport=1), tcp(cport=2, options=[(1, b"short")]), tcp(cport=3)])
    res = decode_message(m)
    assert [c.cport for c in res.conns] == [1] and res.fatal == "v1_opt_seq"


def test_record_level_drops_skip_only_that_record() -> None:
    recs = [
        tcp(cport=1, options=[(9, b"zz")]),  # unknown mandatory option (20)
        tcp(cport=2, options=[(0x49, b"zz")]),  # unknown optional option: kept
        tcp(cport=3, flags=F_ONE_PACKET),  # validate_flags (25)
        tcp(cport=0, flags=F_TEMPLATE | F_NO_CPORT),  # validate_flags (25)
        tcp(cport=5, protocol=47),  # unsupported protocol (30)
        tcp(cport=6, state=11),  # TCP has 11 states (40)
        tcp(cport=7, protocol=17, state=1),  # UDP has 1
        tcp(cport=0, flags=F_TEMPLATE, state=2),  # template states NONE/ASSURED (40)
        tcp(cport=9, options=[(2, b"data")]),  # PE data without a name (50)
        tcp(cport=10, pe_data=b"d", pe_name=b"sip"),  # PE not loaded (50)
        tcp(cport=11, options=[(3, b"sip")]),  # a PE name alone is ignored
        tcp(cport=12, protocol=132, state=13),  # SCTP CLOSED
        tcp(cport=13, protocol=50, state=0),  # ESP
    ]
    res = decode_message(encode_message(recs))
    assert [c.cport for c in res.conns] == [2, 11, 12, 13]
    assert res.drops == {
        "unknown_option": 1,
        "bad_flags": 2,
        "unsupported_protocol": 1,
        "bad_state": 3,
        "pe_unavailable": 2,
    }
    assert res.fatal is None
    res = decode_message(encode_message(recs), pe_names=["sip"])
    assert 10 in [c.cport for c in res.conns]


def test_v0_checks() -> None:
    """ip_vs_process_message_v0 lines 971-1040."""
    m = encode_message(
        [tcp(cport=1), tcp(cport=2, state=11), tcp(cport=3, flags=F_ONE_PACKET)], version=0
    )
    res = decode_message(m)
    assert [c.cport for c in res.conns] == [1] and res.drops == {"bad_state": 1, "bad_flags": 1}
    m = bytearray(encode_message([tcp(flags=F_SEQ_MASK)], version=0))
    del m[-4:]
    m[2:4] = struct.pack("!H", len(m))
    assert decode_message(bytes(m)).drops == {"v0_opt_past_end": 1}


# -- hostile input: never an exception ------------------------------------------------


@settings(max_examples=250, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 255))
def test_random_bytes_never_raise(data: bytes, syncid: int) -> None:
    res = decode_message(data, syncid)
    assert len(res.conns) <= 255
    # a datagram whose size field matches its length is looked at further
    fixed = bytearray(data[:4].ljust(4, b"\0")) + data[4:]
    fixed[2:4] = struct.pack("!H", len(fixed) & 0xFFFF)
    decode_message(bytes(fixed))


_ADDR4 = st.ip_addresses(v=4).map(str)
_ADDR6 = st.ip_addresses(v=6).map(str)
_PORT = st.integers(0, 65535)
_U32 = st.integers(0, 2**32 - 1)


@st.composite
def records(draw: st.DrawFn) -> SyncConn:
    af = draw(st.sampled_from([4, 6]))
    addr = _ADDR4 if af == 4 else _ADDR6
    proto = draw(st.sampled_from([6, 17, 132, 50, 51]))
    nstates = {6: 11, 17: 1, 132: 14, 50: 1, 51: 1}[proto]
    template = draw(st.booleans())
    flags = draw(st.integers(0, 0xFFFF)) & ~(F_ONE_PACKET | F_NO_CPORT)
    flags = (flags | F_TEMPLATE) if template else (flags & ~F_TEMPLATE)
    opts: list[tuple[int, bytes]] = []
    if draw(st.booleans()):
        opts.append((1, draw(st.binary(min_size=24, max_size=24))))
    if draw(st.booleans()):
        opts.append((0x40 | draw(st.integers(4, 63)), draw(st.binary(min_size=1, max_size=40))))
    return SyncConn(
        protocol=proto,
        caddr=draw(addr),
        cport=draw(_PORT),
        vaddr=draw(addr),
        vport=draw(_PORT),
        daddr=draw(addr),
        dport=draw(_PORT),
        flags=flags,
        state=draw(st.integers(0, 1 if template else nstates - 1)),
        fwmark=draw(_U32),
        timeout=draw(_U32),
        af=af,
        options=opts,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(records(), min_size=0, max_size=20), st.integers(0, 255))
def test_decode_encode_roundtrip(recs: list[SyncConn], syncid: int) -> None:
    m = encode_message(recs, syncid)
    res = decode_message(m, syncid)
    assert not res.drops and len(res.conns) == len(recs)
    assert encode_message(res.conns, syncid) == m


@settings(max_examples=200, deadline=None)
@given(st.lists(records(), min_size=1, max_size=6), st.data())
def test_mutated_messages_never_raise(recs: list[SyncConn], data: st.DataObject) -> None:
    m = bytearray(encode_message(recs))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(m) - 1))
        m[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        m = m[: data.draw(st.integers(0, len(m)))]
    if data.draw(st.booleans()) and len(m) >= 4:
        m[2:4] = struct.pack("!H", len(m))  # keep the size right so the records are read
    res = decode_message(bytes(m))
    total = sum(res.drops.values()) + len(res.conns)
    assert total >= 0
