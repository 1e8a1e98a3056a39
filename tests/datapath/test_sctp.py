"""SCTP: fastvs/datapath/_proto_sctp.pxd against the kernel's definitions
(net/netfilter/ipvs/ip_vs_proto_sctp.c and ip_vs_core.c, Linux 6.1) and the CRC32c
against RFC 3720 / RFC 4960 vectors, dpkt's implementation and real captures.

The parts that run on their own go through tests/datapath/_sctp_test.pyx (def wrappers
around the .pxd, built on demand by benchmarks/cybuild.py; it does not ship in the
package). The end-to-end cases at the bottom run SCTP services through the engine,
where the protocol is registered in _proto.pxd like TCP and UDP
(docs/sctp-integration.md).
"""

from __future__ import annotations

import random
import socket
import struct
import sys
from pathlib import Path

import dpkt
import dpkt.crc32c
import pytest

from fastvs import verdicts as V
from fastvs.control.rules import parse_rules

from packets import CLIENT_MAC, DIR_MAC

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.cybuild import load_pyx  # noqa: E402

S = load_pyx(Path(__file__).with_name("_sctp_test.pyx"))

PKT_OK = 255
INPUT, OUTPUT, INPUT_ONLY = 0, 1, 2
CONN_F_NOOUTPUT = 0x0004

# chunk types
DATA, INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK = range(9)
ERROR, COOKIE_ECHO, COOKIE_ACK, ECNE, CWR, SHUTDOWN_COMPLETE = range(9, 15)

# states (IP_VS_SCTP_S_*)
NAMES = ("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE", "C-ECHOED",
         "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED", "CLOSED")
ST = {a: i for i, a in enumerate(
    ("sNO", "sI1", "sIN", "sCS", "sCR", "sCW", "sCO", "sCE", "sES", "sSS", "sSR", "sSA", "sRJ", "sCL"))}

# The kernel's sctp_states[], transcribed a second time from ip_vs_proto_sctp.c (rows:
# events d i i_a c_e c_a s s_a s_c err ab; columns: the states above, in order).
KERNEL_TABLE = {
    INPUT: """
        sES sI1 sIN sCS sCR sCW sCO sCE sES sSS sSR sSA sRJ sCL
        sI1 sIN sIN sCS sCR sCW sCO sCE sES sSS sSR sSA sIN sIN
        sCW sCW sCW sCS sCR sCO sCO sCE sES sSS sSR sSA sRJ sCL
        sCR sIN sIN sCR sCR sCW sCO sCE sES sSS sSR sSA sRJ sCL
        sES sI1 sIN sCS sCR sCW sCO sES sES sSS sSR sSA sRJ sCL
        sSR sI1 sIN sCS sCR sCW sCO sCE sSR sSS sSR sSA sRJ sCL
        sCL sIN sIN sCS sCR sCW sCO sCE sES sCL sSR sCL sRJ sCL
        sCL sCL sCL sCS sCR sCW sCO sCE sES sSS sSR sCL sRJ sCL
        sCL sI1 sIN sCS sCR sCW sCO sCL sES sSS sSR sSA sRJ sCL
        sCL sCL sCL sCL sCL sRJ sCL sCL sCL sCL sCL sCL sCL sCL""",
    OUTPUT: """
        sES sI1 sIN sCS sCR sCW sCO sCE sES sSS sSR sSA sRJ sCL
        sCW sCW sCW sCW sCW sCW sCW sCW sES sCW sCW sCW sCW sCW
        sCS sCS sCS sCS sCR sCW sCO sCE sES sSS sSR sSA sRJ sCL
        sCE sCE sCE sCE sCE sCE sCE sCE sES sSS sSR sSA sRJ sCL
        sES sES sES sES sES sES sES sES sES sSS sSR sSA sRJ sCL
        sSS sSS sSS sSS sSS sSS sSS sSS sSS sSS sSR sSA sRJ sCL
        sSA sSA sSA sSA sSA sCW sCO sCE sES sSA sSA sSA sRJ sCL
        sCL sI1 sIN sCS sCR sCW sCO sCE sES sSS sSR sSA sRJ sCL
        sCL sCL sCL sCL sCL sCW sCO sCE sES sSS sSR sSA sRJ sCL
        sCL sRJ sCL sCL sCL sCL sCL sCL sCL sCL sCL sCL sCL sCL""",
    INPUT_ONLY: """
        sES sI1 sIN sCS sCR sES sCO sCE sES sSS sSR sSA sRJ sCL
        sI1 sIN sIN sIN sIN sIN sCO sCE sES sSS sSR sSA sIN sIN
        sCE sCE sCE sCE sCE sCE sCO sCE sES sSS sSR sSA sRJ sCL
        sES sES sES sES sES sES sCO sCE sES sSS sSR sSA sRJ sCL
        sES sI1 sIN sES sES sCW sES sES sES sSS sSR sSA sRJ sCL
        sSR sI1 sIN sCS sCR sCW sCO sCE sSR sSS sSR sSA sRJ sCL
        sCL sIN sIN sCS sCR sCW sCO sCE sCL sCL sSR sCL sRJ sCL
        sCL sCL sCL sCL sCL sCW sCO sCE sES sSS sCL sCL sRJ sCL
        sCL sI1 sIN sCS sCR sCW sCO sCE sES sSS sSR sSA sRJ sCL
        sCL sCL sCL sCL sCL sRJ sCL sCL sCL sCL sCL sCL sCL sCL""",
}
# sctp_events[]: the event row of chunk types 0..14 (15..255: DATA)
KERNEL_EVENTS = [0, 1, 2, 0, 0, 0, 9, 5, 6, 8, 3, 4, 0, 0, 7]
# a chunk type that leads to each event row
EVENT_CHUNK = [DATA, INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK, SHUTDOWN, SHUTDOWN_ACK,
               SHUTDOWN_COMPLETE, ERROR, ABORT]

CL, VIP, RIP = "100.64.0.1", "10.10.0.1", "192.168.0.10"


# -- frames ----------------------------------------------------------------------------

def chunk(ctype: int, body: bytes = b"", flags: int = 0) -> bytes:
    raw = struct.pack(">BBH", ctype, flags, 4 + len(body)) + body
    return raw + b"\0" * (-len(raw) % 4)


def sctp_packet(sport: int, dport: int, chunks: list[bytes], vtag: int = 0x1234ABCD) -> bytes:
    """An SCTP packet with its CRC32c from dpkt's implementation (not ours)."""
    hdr = struct.pack(">HHII", sport, dport, vtag, 0)
    body = b"".join(chunks)
    crc = dpkt.crc32c.cksum(hdr + body)         # dpkt's value packs big-endian to the wire
    return hdr[:8] + struct.pack(">I", crc) + body


def sctp_frame(src: str, sport: int, dst: str, dport: int, chunks: list[bytes],
               vtag: int = 0x1234ABCD) -> bytes:
    payload = sctp_packet(sport, dport, chunks, vtag)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=132, ttl=64,
                    id=7, data=payload)
    ip.len = 20 + len(payload)
    return bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x0800, data=ip))


def sctp6_frame(src: str, sport: int, dst: str, dport: int, chunks: list[bytes],
                ext: bytes = b"") -> bytes:
    payload = sctp_packet(sport, dport, chunks)
    nh = 60 if ext else 132
    hdr = struct.pack(">IHBB", 6 << 28, len(ext) + len(payload), nh, 64)
    hdr += socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return CLIENT_MAC + DIR_MAC + b"\x86\xdd" + hdr + ext + payload


def wire_crc_ok(frame: bytes) -> bool:
    """The CRC32c of the frame's SCTP packet verifies, by dpkt's implementation."""
    ip = dpkt.ethernet.Ethernet(frame).data
    sh = bytes(ip)[ip.hl * 4: ip.len]
    want = struct.pack(">I", dpkt.crc32c.cksum(sh[:8] + b"\0\0\0\0" + sh[12:]))
    return sh[8:12] == want


def read_pcap(path: Path) -> tuple[int, list[bytes]]:
    with path.open("rb") as f:
        r = dpkt.pcap.Reader(f)
        return r.datalink(), [bytes(buf) for _, buf in r]


# -- CRC32c ------------------------------------------------------------------------------

@pytest.mark.parametrize("data, crc", [
    (bytes(32), 0x8A9136AA),                    # RFC 3720 B.4, stored aa 36 91 8a
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),                 # the CRC catalogue's check value
    (b"", 0),
])
def test_crc32c_vectors(data: bytes, crc: int) -> None:
    assert S.crc32c(data) == crc
    assert S.crc32c_table(data) == crc


def test_crc32c_iscsi_read_pdu_vector() -> None:
    """RFC 3720 B.4: the iSCSI SCSI Read (10) command PDU, CRC 56 3a 96 d9."""
    pdu = bytes.fromhex(
        "01c00000000000000000000000000000"
        "14000000000004000000001400000018"
        "28000000000000000200000000000000")
    assert S.crc32c(pdu).to_bytes(4, "little") == bytes.fromhex("563a96d9")


def test_crc32c_hardware_table_and_dpkt_agree_on_every_length_and_alignment() -> None:
    rng = random.Random(9)
    blob = bytes(rng.randrange(256) for _ in range(3000))
    for n in list(range(0, 80)) + [255, 256, 1023, 1500, 2999]:
        for off in range(0, 9):
            data = blob[off: off + n]
            want = int.from_bytes(struct.pack(">I", dpkt.crc32c.cksum(data)), "little")
            assert S.crc32c(data) == want
            assert S.crc32c_table(data) == want


def test_crc32c_shift_is_zero_extension() -> None:
    """fv_crc32c_shift(raw, n) = the raw register after n more zero bytes."""
    rng = random.Random(3)
    for n in (0, 1, 2, 3, 7, 64, 1000, 65531):
        head = bytes(rng.randrange(256) for _ in range(4))
        raw_head = S.crc32c(head) ^ S.crc32c(bytes(4))      # register from 0, no complement
        raw_all = S.crc32c(head + bytes(n)) ^ S.crc32c(bytes(4 + n))
        assert S.crc32c_shift(raw_head, n) == raw_all


def test_real_capture_zeek_sctp_crcs_verify(real_dir: Path) -> None:
    """Every packet of a real association: the CRC32c on the wire is what we compute."""
    linktype, frames = read_pcap(real_dir / "zeek_communityid-sctp.pcap")
    assert len(frames) == 74
    seen = set()
    for f in frames:
        rc, m = S.parse(f, linktype)
        assert rc == PKT_OK and not m["cut"]
        sh = f[m["l4off"]: m["l3off"] + m["l3len"]]
        assert S.sctp_packet_crc(sh).to_bytes(4, "little") == sh[8:12]
        assert S.csum_ok(f, linktype)
        seen.add(m["chunk"])
    assert {INIT, INIT_ACK, COOKIE_ECHO, COOKIE_ACK, DATA, SACK} <= seen


def test_real_capture_isup_carries_the_old_adler32_checksum(real_dir: Path) -> None:
    """tcpdump_isup.pcap predates RFC 3309: its checksum field holds Adler-32 (RFC
    2960), so CRC32c does not verify there. The kernel does not check incoming CRCs
    (without an application helper); when it rewrites a port it writes a fresh CRC32c,
    and so do we: after NAT every packet carries a good CRC32c."""
    import zlib
    linktype, frames = read_pcap(real_dir / "tcpdump_isup.pcap")
    assert len(frames) == 6
    for f in frames:
        rc, m = S.parse(f, linktype)
        assert rc == PKT_OK
        sh = f[m["l4off"]: m["l3off"] + m["l3len"]]
        assert sh[8:12] == zlib.adler32(sh[:8] + bytes(4) + sh[12:]).to_bytes(4, "big")
        assert not S.csum_ok(f, linktype)
        buf = bytearray(f)
        assert S.nat_port(buf, 3905, 2, linktype) == 1
        assert S.csum_ok(bytes(buf), linktype)
        assert wire_crc_ok(bytes(buf))


# -- parse -------------------------------------------------------------------------------

def test_parse_ports_and_first_chunk() -> None:
    f = sctp_frame(CL, 40000, VIP, 3868, [chunk(INIT, bytes(16))])
    rc, m = S.parse(f)
    assert rc == PKT_OK
    assert (m["sport"], m["dport"], m["chunk"], m["l4off"]) == (40000, 3868, INIT, 34)
    rc, m = S.parse(sctp_frame(CL, 1, VIP, 2, [chunk(SACK, bytes(12)), chunk(DATA, bytes(16))]))
    assert m["chunk"] == SACK                    # only the first chunk counts


def test_parse_ipv6_behind_an_extension_header() -> None:
    """The chunk is read at the parsed transport offset (Linux 6.1's set_sctp_state
    used 40 + 12 for IPv6 and misread packets with extension headers; later kernels
    use the parsed offset, as here)."""
    ext = bytes([132, 0, 1, 4, 0, 0, 0, 0])      # destination options, PadN
    f = sctp6_frame("2001:db8::1", 5000, "2001:db8::2", 3868, [chunk(INIT, bytes(16))], ext)
    rc, m = S.parse(f)
    assert rc == PKT_OK and m["af"] == 6 and m["l4off"] == 14 + 40 + 8 and m["chunk"] == INIT


def test_parse_cookie_then_abort_look_ahead() -> None:
    """COOKIE ECHO / COOKIE ACK followed by an ABORT: the ABORT decides the state
    (set_sctp_state looks one chunk on, at ALIGN(length, 4))."""
    for first in (COOKIE_ECHO, COOKIE_ACK):
        f = sctp_frame(CL, 1, VIP, 2, [chunk(first, b"abcde"), chunk(ABORT)])
        assert S.parse(f)[1]["chunk"] == S.COOKIE_ABORT
        f = sctp_frame(CL, 1, VIP, 2, [chunk(first, b"abcde"), chunk(DATA, bytes(12))])
        assert S.parse(f)[1]["chunk"] == first
        f = sctp_frame(CL, 1, VIP, 2, [chunk(first, b"abcde")])      # nothing after it
        assert S.parse(f)[1]["chunk"] == first
    # other first chunks are not looked past (the kernel does it for the two COOKIEs only)
    f = sctp_frame(CL, 1, VIP, 2, [chunk(SACK, bytes(12)), chunk(ABORT)])
    assert S.parse(f)[1]["chunk"] == SACK
    # a chunk length under 4 is not followed
    f = bytearray(sctp_frame(CL, 1, VIP, 2, [chunk(COOKIE_ECHO), chunk(ABORT)]))
    f[34 + 12 + 2: 34 + 12 + 4] = b"\x00\x02"
    assert S.parse(bytes(f))[1]["chunk"] == COOKIE_ECHO


def test_parse_reserved_chunk_255_is_kept_apart_from_the_abort_marker() -> None:
    rc, m = S.parse(sctp_frame(CL, 1, VIP, 2, [chunk(255, bytes(4))]))
    assert rc == PKT_OK and m["chunk"] == S.REMAPPED_255
    assert S.event(S.REMAPPED_255) == S.event(255 - 1) == 0 and S.event(S.COOKIE_ABORT) == 9


def test_parse_short_and_cut() -> None:
    full = sctp_frame(CL, 1, VIP, 2, [chunk(INIT, bytes(16))])
    # the common header and the chunk header not all captured: truncated
    for caplen in (14 + 20 + 8, 14 + 20 + 12, 14 + 20 + 15):
        assert S.parse(full[:caplen], wirelen=len(full))[0] == V.DROP_L4_TRUNCATED
    # the datagram itself too short for them: malformed
    payload = sctp_packet(1, 2, [])                  # 12 bytes, no chunk
    ip = dpkt.ip.IP(src=socket.inet_aton(CL), dst=socket.inet_aton(VIP), p=132, data=payload)
    ip.len = 32
    f = bytes(dpkt.ethernet.Ethernet(src=CLIENT_MAC, dst=DIR_MAC, type=0x0800, data=ip))
    assert S.parse(f)[0] == V.DROP_L4_MALFORMED
    # the headers captured but the chunk body cut: fine, marked cut
    rc, m = S.parse(full[:14 + 20 + 16], wirelen=len(full))
    assert rc == PKT_OK and m["cut"] and m["chunk"] == INIT
    # bare helper: l4 + 16 against the datagram end and the capture
    assert S.parse_sctp(bytes(16), 0, 15)[0] == V.DROP_L4_MALFORMED
    assert S.parse_sctp(bytes(15), 0, 16)[0] == V.DROP_L4_TRUNCATED
    assert S.parse_sctp(bytes(16), 0, 16)[0] == PKT_OK


# -- the state table ---------------------------------------------------------------------

def test_state_table_is_the_kernels() -> None:
    for table, text in KERNEL_TABLE.items():
        rows = [line.split() for line in text.strip().splitlines()]
        assert len(rows) == 10 and all(len(r) == 14 for r in rows)
        for ev, row in enumerate(rows):
            for state, want in enumerate(row):
                assert S.next_state(table, state, EVENT_CHUNK[ev]) == ST[want], (table, ev, state)


def test_events_of_every_chunk_type() -> None:
    for ct in range(256):
        want = KERNEL_EVENTS[ct] if ct < 15 else 0
        if ct == S.COOKIE_ABORT:
            want = 9                             # the marker, not chunk type 255
        assert S.event(ct) == want, ct


def test_names_timeouts_active() -> None:
    assert S.STATE_NAMES == NAMES
    # sctp_timeouts[]: NONE 2 s, INIT1 and REJECTED 4 s, ESTABLISHED 15 min, the rest
    # IP_VS_SCTP_MAX_RTO = 61 s
    assert S.TIMEOUTS == (2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61)
    assert S.ACTIVE == tuple(n == "ESTABLISHED" for n in NAMES)
    assert [S.state_active(i) for i in range(14)] == list(S.ACTIVE)
    assert S.N_EVENTS == 10


def walk(steps: list[tuple[str, int]], flags: int = 0) -> list[str]:
    """Drive set_sctp_state's choice and move: ``c`` client (input), ``s`` server."""
    state, out = 0, []
    for who, ct in steps:
        state, flags = S.transition(INPUT if who == "c" else OUTPUT, state, ct, flags)
        out.append(NAMES[state])
    return out


def test_association_nat_client_closes() -> None:
    steps = [("c", INIT), ("s", INIT_ACK), ("c", COOKIE_ECHO), ("s", COOKIE_ACK),
             ("c", DATA), ("s", SACK), ("s", DATA), ("c", HEARTBEAT),
             ("c", SHUTDOWN), ("s", SHUTDOWN_ACK), ("c", SHUTDOWN_COMPLETE)]
    assert walk(steps) == ["INIT1", "C-SENT", "C-REPLIED", "ESTABLISHED", "ESTABLISHED",
                           "ESTABLISHED", "ESTABLISHED", "ESTABLISHED", "S-RECEIVED",
                           "S-ACK-SENT", "CLOSED"]


def test_association_nat_server_closes() -> None:
    steps = [("c", INIT), ("s", INIT_ACK), ("c", COOKIE_ECHO), ("s", COOKIE_ACK),
             ("s", SHUTDOWN), ("c", SHUTDOWN_ACK), ("s", SHUTDOWN_COMPLETE)]
    assert walk(steps)[-3:] == ["S-SENT", "CLOSED", "CLOSED"]


def test_retransmitted_init_and_abort() -> None:
    assert walk([("c", INIT), ("c", INIT)]) == ["INIT1", "INIT"]
    # INIT refused by the server with an ABORT: REJECTED (4 s)
    assert walk([("c", INIT), ("s", ABORT)]) == ["INIT1", "REJECTED"]
    # an ABORT from either side of an association closes it
    est = [("c", INIT), ("s", INIT_ACK), ("c", COOKIE_ECHO), ("s", COOKIE_ACK)]
    assert walk(est + [("c", ABORT)])[-1] == "CLOSED"
    assert walk(est + [("s", ABORT)])[-1] == "CLOSED"
    # COOKIE ECHO bundled with an ABORT goes by the ABORT
    assert walk([("c", INIT), ("s", INIT_ACK), ("c", S.COOKIE_ABORT)])[-1] == "CLOSED"
    # an INIT on a closed association starts again
    assert walk(est + [("c", ABORT), ("c", INIT)])[-1] == "INIT"


def test_association_dr_input_only() -> None:
    """DR/TUN: no output seen (NOOUTPUT), the INPUT-ONLY table; the flag goes on the
    first output packet and the INPUT table takes over."""
    steps = [("c", INIT), ("c", COOKIE_ECHO), ("c", DATA), ("c", SHUTDOWN),
             ("c", SHUTDOWN_COMPLETE)]
    assert walk(steps, CONN_F_NOOUTPUT) == ["INIT1", "ESTABLISHED", "ESTABLISHED",
                                            "S-RECEIVED", "CLOSED"]
    st, fl = S.transition(OUTPUT, 1, INIT_ACK, CONN_F_NOOUTPUT)
    assert (NAMES[st], fl) == ("C-SENT", 0)
    st, fl = S.transition(INPUT, 1, INIT_ACK, CONN_F_NOOUTPUT)
    assert (NAMES[st], fl) == ("C-ECHOED", CONN_F_NOOUTPUT)


def test_out_of_range_state_closes() -> None:
    assert S.next_state(INPUT, 14, DATA) == 13 and S.next_state(3, 0, DATA) == 13


# -- scheduling and reuse ----------------------------------------------------------------

def test_schedule_gate() -> None:
    """sctp_conn_schedule: INIT only; sloppy_sctp: anything but an ABORT."""
    for ct in range(256):
        assert S.can_schedule(ct) == (ct == INIT)
        assert S.can_schedule(ct, True) == (ct != ABORT)
    assert S.can_schedule(S.COOKIE_ABORT, True)      # first chunk is a COOKIE, not ABORT


def test_is_new_conn_and_expected() -> None:
    assert [ct for ct in range(256) if S.is_new_conn(ct)] == [INIT]
    assert [s for s in range(14) if S.new_conn_expected(s)] == [NAMES.index("CLOSED")]
    assert not S.new_conn_expected(NAMES.index("CLOSED"), control=5)


# -- NAT: port and CRC -------------------------------------------------------------------

def test_dnat_and_snat_port_rewrite_recompute_crc() -> None:
    f = bytearray(sctp_frame(CL, 40000, VIP, 3868, [chunk(DATA, b"x" * 37), chunk(SACK, bytes(12))]))
    assert S.nat_port(f, 13868, 2) == 1
    assert f[36:38] == (13868).to_bytes(2, "big") and wire_crc_ok(bytes(f))
    assert S.nat_port(f, 1234, 0) == 1
    assert f[34:36] == (1234).to_bytes(2, "big") and wire_crc_ok(bytes(f))


def test_same_port_leaves_the_packet_alone_even_with_a_bad_crc() -> None:
    """Only a port change makes the kernel recompute; the CRC covers no address."""
    f = bytearray(sctp_frame(CL, 40000, VIP, 3868, [chunk(DATA, b"abc")]))
    f[34 + 8] ^= 0xFF
    before = bytes(f)
    assert S.nat_port(f, 3868, 2) == 0 and bytes(f) == before


def test_cut_capture_crc_adjusted_from_the_ip_length() -> None:
    """Snap length cut the payload: the port change is folded into the CRC on the
    wire with the packet's length only, giving the full recompute's bytes."""
    rng = random.Random(5)
    for size in (4, 100, 1400):
        full = bytearray(sctp_frame(CL, 40000, VIP, 3868,
                                    [chunk(DATA, bytes(rng.randrange(256) for _ in range(size)))]))
        whole = bytearray(full)
        assert S.nat_port(whole, 8080, 2) == 1
        for caplen in (14 + 20 + 16, 14 + 20 + 30, len(full) - 1):
            if caplen >= len(full):
                continue
            cut = bytearray(full[:caplen])
            assert S.nat_port(cut, 8080, 2, wirelen=len(full)) == 2
            assert bytes(cut) == bytes(whole[:caplen])
        snat = bytearray(full[:60])
        S.nat_port(snat, 999, 0, wirelen=len(full))
        whole = bytearray(full)
        S.nat_port(whole, 999, 0)
        assert bytes(snat) == bytes(whole[:60])


def test_real_capture_dnat_snat_every_packet(real_dir: Path) -> None:
    linktype, frames = read_pcap(real_dir / "zeek_communityid-sctp.pcap")
    for f in frames:
        for off in (0, 2):
            buf = bytearray(f)
            assert S.nat_port(buf, 54321, off, linktype) == 1
            assert S.csum_ok(bytes(buf), linktype) and wire_crc_ok(bytes(buf))


# -- through the engine --------------------------------------------------------------------

RULES = f"""
-A --sctp-service {VIP}:3868 -s rr
-a --sctp-service {VIP}:3868 -r {RIP}:13868 -m
"""
SEC = 1_000_000_000


def _director():
    from fastvs.control.director import Director
    return Director(parse_rules(RULES), seed=1)


def _conn(d) -> dict | None:
    return d.lookup("sctp", CL, 40000, VIP, 3868)


def test_engine_association_nat() -> None:
    """An association through the director: DNAT/SNAT with valid CRCs, the kernel's
    states, ESTABLISHED counted active."""
    d = _director()
    c_steps = {INIT: bytes(16), COOKIE_ECHO: bytes(8), DATA: bytes(16), SHUTDOWN: bytes(4),
               SHUTDOWN_COMPLETE: b""}
    s_steps = {INIT_ACK: bytes(16), COOKIE_ACK: b"", SHUTDOWN_ACK: b""}
    plan = [("c", INIT, "INIT1"), ("s", INIT_ACK, "C-SENT"), ("c", COOKIE_ECHO, "C-REPLIED"),
            ("s", COOKIE_ACK, "ESTABLISHED"), ("c", DATA, "ESTABLISHED"),
            ("c", SHUTDOWN, "S-RECEIVED"), ("s", SHUTDOWN_ACK, "S-ACK-SENT"),
            ("c", SHUTDOWN_COMPLETE, "CLOSED")]
    t = 0
    for who, ct, state in plan:
        if who == "c":
            f = sctp_frame(CL, 40000, VIP, 3868, [chunk(ct, c_steps[ct])])
        else:
            f = sctp_frame(RIP, 13868, CL, 40000, [chunk(ct, s_steps[ct])])
        out, v = d.process_packets([f], [t])
        t += SEC // 100
        assert v == [V.FWD_IN if who == "c" else V.FWD_OUT], (who, ct)
        assert wire_crc_ok(out[0])
        ip = dpkt.ethernet.Ethernet(out[0]).data
        if who == "c":
            assert socket.inet_ntoa(ip.dst) == RIP and bytes(ip)[22:24] == (13868).to_bytes(2, "big")
        else:
            assert socket.inet_ntoa(ip.src) == VIP and bytes(ip)[20:22] == (3868).to_bytes(2, "big")
        c = _conn(d)
        assert c is not None and c["state"] == state, (ct, c)
        assert c["active"] == (state == "ESTABLISHED")


def test_engine_only_init_schedules() -> None:
    """A DATA chunk with no association is not IPVS's (NF_ACCEPT, no connection);
    an ABORT neither."""
    d = _director()
    for ct in (DATA, ABORT, COOKIE_ECHO):
        _, v = d.process_packets([sctp_frame(CL, 40000, VIP, 3868, [chunk(ct, bytes(8))])], [0])
        assert v == [V.PASS_NOT_SERVICE]
        assert _conn(d) is None


def test_engine_init_replaces_closed_association() -> None:
    """conn_reuse_mode: an INIT for a CLOSED association makes a new connection."""
    d = _director()
    for ct in (INIT, ABORT):
        d.process_packets([sctp_frame(CL, 40000, VIP, 3868, [chunk(ct, bytes(16))])], [0])
    assert _conn(d)["state"] == "CLOSED"
    _, v = d.process_packets([sctp_frame(CL, 40000, VIP, 3868, [chunk(INIT, bytes(16))])], [SEC])
    assert v == [V.FWD_IN] and _conn(d)["state"] == "INIT1"


def test_engine_timeouts_follow_the_state() -> None:
    d = _director()
    d.process_packets([sctp_frame(CL, 40000, VIP, 3868, [chunk(INIT, bytes(16))])], [0])
    assert _conn(d)["expires_ns"] == 4 * SEC                      # INIT1
    d.process_packets([sctp_frame(RIP, 13868, CL, 40000, [chunk(ABORT)])], [0])
    assert _conn(d)["state"] == "REJECTED" and _conn(d)["expires_ns"] == 4 * SEC
