"""The benchmark references are correct: same rewrite, valid checksums, clean refusals.

Speed is not tested here (see benchmarks/bench_refs.py).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from fastvs.bench import refs

dpkt = pytest.importorskip("dpkt")

FLOWS = 100
PACKETS = 2000


@pytest.fixture(scope="module")
def natloop() -> Path:
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler (cc) on this machine")
    return refs.build_natloop()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("refs") / "est.pcap"
    table = refs.make_established_capture(path, FLOWS, PACKETS, seed=7)
    return path, table


def _records(path: Path) -> list[tuple[float, bytes]]:
    with open(path, "rb") as f:
        return list(dpkt.pcap.Reader(f))


def _pcap(path: Path, frames: list[bytes], magic: int = 0xA1B2C3D4, linktype: int = 1) -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, linktype))
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000, i, len(frame), len(frame)))
            f.write(frame)
    return path


# ------------------------------------------------------------------ the traffic


def test_generated_capture_shape_and_checksums(capture: tuple[Path, dict]) -> None:
    path, table = capture
    assert len(table) == FLOWS
    assert refs.count_bad_checksums(path) == (PACKETS, 0)
    recs = _records(path)
    assert len(recs) == PACKETS
    seen: dict[tuple[bytes, int], list[int]] = {}
    last_ts = -1.0
    for ts, buf in recs:
        assert len(buf) == 64
        assert ts > last_ts
        last_ts = ts
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        tcp = ip.data
        assert isinstance(tcp, dpkt.tcp.TCP)
        assert (ip.dst, tcp.dport) == (refs.VIP, refs.VPORT)
        assert ip.len == 50 and ip.ttl == 64
        assert tcp.flags == dpkt.tcp.TH_ACK and len(tcp.data) == 10
        seen.setdefault((ip.src, tcp.sport), []).append(tcp.seq)
    # every flow has packets, interleaved, with sequence numbers advancing per flow
    assert set(seen) == set(table)
    for seqs in seen.values():
        assert all((b - a) % 2**32 == 10 for a, b in zip(seqs, seqs[1:], strict=False))
    first_flows = [dpkt.ethernet.Ethernet(buf).data.src for _, buf in recs[:20]]
    assert len(set(first_flows)) > 10
    # real servers round-robin over the clients
    backends = list(table.values())
    assert backends[:5] == [refs.REAL_SERVERS[i % 4] for i in range(5)]
    counts = {b: backends.count(b) for b in refs.REAL_SERVERS}
    assert set(counts.values()) == {FLOWS // 4}


def test_generated_capture_is_deterministic_and_sizes(tmp_path: Path) -> None:
    a = refs.make_established_capture(tmp_path / "a.pcap", 50, 300, seed=3)
    b = refs.make_established_capture(tmp_path / "b.pcap", 50, 300, seed=3)
    assert a == b
    assert (tmp_path / "a.pcap").read_bytes() == (tmp_path / "b.pcap").read_bytes()
    # odd and larger frame sizes, and fewer packets than flows
    for size in (54, 65, 128):
        p = tmp_path / f"s{size}.pcap"
        refs.make_established_capture(p, 500, 200, seed=size, size=size)
        recs = _records(p)
        assert len(recs) == 200 and {len(buf) for _, buf in recs} == {size}
        assert refs.count_bad_checksums(p) == (200, 0)
    flows = np.fromfile(refs.flows_path_for(tmp_path / "s65.pcap"), np.uint8)
    assert flows[:8].tobytes() == refs.FLOW_MAGIC and flows.size == 16 + 500 * 20


# --------------------------------------------------------------- the references


def test_natloop_file_and_dpkt_are_byte_identical(
    natloop: Path, capture: tuple[Path, dict], tmp_path: Path
) -> None:
    path, table = capture
    c_out, py_out = tmp_path / "c.pcap", tmp_path / "py.pcap"
    res = refs.run_natloop(path, "file", passes=2, out=c_out, binary=natloop)
    assert res["mode"] == "file" and res["packets"] == PACKETS and res["flows"] == FLOWS
    assert (res["rewritten"], res["missed"], res["passed"]) == (PACKETS, 0, 0)
    for key in ("seconds", "mpps", "ns_per_pkt", "memcpy_mpps_equiv", "filecopy_mpps_equiv"):
        assert float(res[key]) > 0  # type: ignore[arg-type]
    packets, seconds = refs.dpkt_nat_pipeline(path, py_out, table)
    assert packets == PACKETS and seconds > 0
    c_bytes = c_out.read_bytes()
    assert c_bytes == py_out.read_bytes()
    assert c_bytes != path.read_bytes() and len(c_bytes) == path.stat().st_size
    assert refs.count_bad_checksums(c_out) == (PACKETS, 0)
    # the rewrite is the table's: destination = the client's real server, rest unchanged
    for (ts_in, raw_in), (ts_out, raw_out) in zip(_records(path), _records(c_out), strict=True):
        assert ts_in == ts_out
        ip_in, ip_out = dpkt.ethernet.Ethernet(raw_in).data, dpkt.ethernet.Ethernet(raw_out).data
        rip, rport = table[(ip_in.src, ip_in.data.sport)]
        assert (ip_out.dst, ip_out.data.dport) == (rip, rport)
        assert ip_out.src == ip_in.src and ip_out.data.sport == ip_in.data.sport
        assert ip_out.ttl == ip_in.ttl and ip_out.data.data == ip_in.data.data


def test_natloop_mem_mode(natloop: Path, capture: tuple[Path, dict]) -> None:
    path, _ = capture
    res = refs.run_natloop(path, "mem", passes=3, binary=natloop)
    assert res["mode"] == "mem" and res["packets"] == PACKETS and res["passes"] == 3
    assert (res["rewritten"], res["missed"], res["passed"]) == (PACKETS, 0, 0)
    assert float(res["mpps"]) > 0 and float(res["memcpy_mpps_equiv"]) > 0  # type: ignore[arg-type]
    again = refs.run_natloop(path, "mem", passes=1, binary=natloop)
    assert again["digest"] == res["digest"]  # same bytes out, whatever the hash seed


def _frame(ip: dpkt.ip.IP) -> bytes:
    eth = dpkt.ethernet.Ethernet(
        dst=b"\x02\x00\x00\x00\xfa\x01", src=b"\x02\x00\x00\x00\xaa\x01", data=ip
    )
    eth.type = dpkt.ethernet.ETH_TYPE_IP
    return bytes(eth)


def _ip(src: str, dst: str, l4: dpkt.Packet, p: int, opts: bytes = b"") -> dpkt.ip.IP:
    ip = dpkt.ip.IP(
        src=bytes(map(int, src.split("."))),
        dst=bytes(map(int, dst.split("."))),
        p=p,
        ttl=64,
        id=1,
        data=l4,
        opts=opts,
    )
    ip.hl = (20 + len(opts)) // 4
    ip.len = 20 + len(opts) + len(bytes(l4))
    return dpkt.ip.IP(bytes(ip))


def test_mixed_traffic_same_in_both(natloop: Path, tmp_path: Path) -> None:
    """Hits, misses, UDP, IP options, non-IP and cut frames: both references agree."""
    vip = "10.10.0.1"
    a = bytes([100, 64, 0, 1])
    table = {
        (a, 40000, refs.VIP, 80, 6): (bytes([192, 168, 0, 10]), 8080),
        (a, 40001, refs.VIP, 53, 17): (bytes([192, 168, 0, 11]), 5353),
    }
    tcp = dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_ACK, seq=5, data=b"hello")
    miss = dpkt.tcp.TCP(sport=40002, dport=80, flags=dpkt.tcp.TH_ACK, data=b"x")
    udp = dpkt.udp.UDP(sport=40001, dport=53, data=b"query")
    udp.ulen = 8 + 5
    frames = [
        _frame(_ip("100.64.0.1", vip, tcp, 6)),
        _frame(_ip("100.64.0.1", vip, miss, 6)),
        _frame(_ip("100.64.0.1", vip, udp, 17)),
        _frame(_ip("100.64.0.1", vip, tcp, 6, opts=b"\x01\x01\x01\x00")),  # IHL 6
        bytes(
            dpkt.ethernet.Ethernet(
                type=dpkt.ethernet.ETH_TYPE_ARP, data=dpkt.arp.ARP(), dst=b"\xff" * 6
            )
        ),
        _frame(_ip("100.64.0.1", vip, tcp, 6))[:40],  # cut inside the TCP header
    ]
    inp = _pcap(tmp_path / "mixed.pcap", frames)
    refs.write_flow_file(tmp_path / "mixed.flows", table)
    res = refs.run_natloop(
        inp, "file", 1, flows=tmp_path / "mixed.flows", out=tmp_path / "c.pcap", binary=natloop
    )
    assert (res["rewritten"], res["missed"], res["passed"]) == (3, 1, 2)
    refs.dpkt_nat_pipeline(inp, tmp_path / "py.pcap", table)
    assert (tmp_path / "c.pcap").read_bytes() == (tmp_path / "py.pcap").read_bytes()
    out = [buf for _, buf in _records(tmp_path / "c.pcap")]
    assert out[1] == frames[1] and out[4] == frames[4] and out[5] == frames[5]
    assert refs.count_bad_checksums(tmp_path / "c.pcap") == (4, 0)
    udp_out = dpkt.ethernet.Ethernet(out[2]).data
    assert (udp_out.dst, udp_out.data.dport) == (bytes([192, 168, 0, 11]), 5353)


def test_natloop_leaves_udp_zero_checksum_and_later_fragments(
    natloop: Path, tmp_path: Path
) -> None:
    a = bytes([100, 64, 0, 1])
    table = {(a, 40001, refs.VIP, 53, 17): (bytes([192, 168, 0, 11]), 5353)}
    udp = dpkt.udp.UDP(sport=40001, dport=53, data=b"query", sum=0)
    udp.ulen = 13
    ip = _ip("100.64.0.1", "10.10.0.1", udp, 17)
    raw = bytearray(_frame(ip))
    raw[14 + 20 + 6 : 14 + 20 + 8] = b"\x00\x00"  # no UDP checksum
    frag = bytearray(raw)
    frag[14 + 6 : 14 + 8] = b"\x00\x10"  # fragment offset 16: no L4 header here
    frag[14 + 10 : 14 + 12] = b"\x00\x00"
    hdr = dpkt.ip.IP(bytes(frag[14:]))
    hdr.sum = 0
    frag[14:34] = bytes(hdr)[:20]
    inp = _pcap(tmp_path / "u.pcap", [bytes(raw), bytes(frag)])
    refs.write_flow_file(tmp_path / "u.flows", table)
    res = refs.run_natloop(
        inp, "file", 1, flows=tmp_path / "u.flows", out=tmp_path / "o.pcap", binary=natloop
    )
    assert (res["rewritten"], res["passed"]) == (1, 1)
    out = [buf for _, buf in _records(tmp_path / "o.pcap")]
    assert out[0][14 + 20 + 6 : 14 + 20 + 8] == b"\x00\x00"
    assert out[0][14 + 16 : 14 + 20] == bytes([192, 168, 0, 11])
    assert out[1] == bytes(frag)


# ---------------------------------------------------------------- refusing input


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (b"GIF89a" + b"\x00" * 40, "bad magic"),
        (struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1), "unsupported pcap variant"),
        (struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), "unsupported pcap variant"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 113), "link type"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"\x00" * 10, "truncated"),
        (
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
            + struct.pack("<IIII", 0, 0, 64, 64)
            + b"\x00" * 20,
            "truncated",
        ),
        (
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
            + struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 64),
            "claims",
        ),
    ],
    ids=[
        "empty",
        "wrong-magic",
        "nanosecond",
        "big-endian",
        "linktype",
        "cut-hdr",
        "cut-rec",
        "huge",
    ],
)
@pytest.mark.parametrize("mode", ["mem", "file"])
def test_natloop_refuses_bad_input(
    natloop: Path,
    capture: tuple[Path, dict],
    tmp_path: Path,
    content: bytes,
    message: str,
    mode: str,
) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    out = tmp_path / "out.pcap"
    flows = refs.flows_path_for(capture[0])
    with pytest.raises(refs.NatloopError) as err:
        refs.run_natloop(bad, mode, 1, flows=flows, out=out, binary=natloop)
    assert err.value.returncode == 2
    assert message in err.value.stderr
    if message in ("too short", "bad magic", "unsupported pcap variant", "link type"):
        assert not out.exists()  # refused before anything is written


def test_natloop_refuses_bad_flows_file(
    natloop: Path, capture: tuple[Path, dict], tmp_path: Path
) -> None:
    flows = tmp_path / "bad.flows"
    flows.write_bytes(b"NOTFLOWS" + b"\x00" * 8)
    with pytest.raises(refs.NatloopError) as err:
        refs.run_natloop(capture[0], "mem", 1, flows=flows, binary=natloop)
    assert err.value.returncode == 2 and "flows" in err.value.stderr
    flows.write_bytes(refs.FLOW_MAGIC + struct.pack("<Q", 5) + b"\x01" * 20)
    with pytest.raises(refs.NatloopError) as err:
        refs.run_natloop(capture[0], "mem", 1, flows=flows, binary=natloop)
    assert err.value.returncode == 2 and "truncated" in err.value.stderr


def test_build_natloop_is_cached(natloop: Path) -> None:
    assert refs.build_natloop() == natloop
    assert natloop.parent == refs.cache_dir() and natloop.exists()
