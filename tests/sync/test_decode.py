"""``fastvs sync decode`` (fastvs.sync.decode.main) and sync frames in captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import Writer
from fastvs.sync.decode import decode_capture, main
from fastvs.sync.frames import build_frame, iter_datagrams, mcast_mac
from fastvs.sync.proto import SyncConn, encode_message

G = Path(__file__).resolve().parent.parent / "golden" / "sync"


def conn(cport: int, state: int = 1) -> SyncConn:
    return SyncConn(
        6, "10.0.0.1", cport, "10.1.0.1", 80, "10.2.0.1", 8080, state=state, timeout=900
    )


def write_capture(path: Path, frames: list[bytes], linktype: int = 1, step_ns: int = 10**9) -> None:
    batch = PacketBatch.from_packets(
        frames, ts_ns=[i * step_ns for i in range(len(frames))], linktype=linktype
    )
    with Writer(str(path), linktype=linktype) as w:
        w.write(batch)


def test_listing_and_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "s.pcap"
    frames = [
        build_frame(encode_message([conn(1), conn(2)], 7), "10.9.0.1"),
        build_frame(encode_message([conn(1, state=5)], 7)[:-1], "10.9.0.1"),  # cut: dropped
        build_frame(b"\x00", "10.9.0.1"),
    ]
    write_capture(p, frames)
    assert main([str(p), "--syncid", "7"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "IPVS connection entries"
    assert lines[2].split() == [
        "TCP",
        "14:58",
        "ESTABLISHED",
        "10.0.0.1:1",
        "10.1.0.1:80",
        "10.2.0.1:8080",
    ]
    assert len(lines) == 4
    assert (
        err.startswith("fastvs: sync: 3 datagrams")
        and "short 1" in err
        and "size_mismatch 1" in err
    )


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [str(G / "s3-own.sync.pcap"), "--json", "--syncid", "7", "-r", str(G / "s3-own.rules")]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1 and doc["summary"]["connections"] == len(doc["connections"]) == 18
    assert doc["summary"]["drops_total"] == 10
    unbound = [c for c in doc["connections"] if not c["bound"]]
    assert {c["daddr"] for c in unbound} >= {"10.78.0.99", "2001:db8::11", "10.78.0.19"}


def test_group_port_and_syncid_filters(tmp_path: Path) -> None:
    p = tmp_path / "s.pcap"
    write_capture(
        p,
        [
            build_frame(encode_message([conn(1)], 1), "10.9.0.1"),
            build_frame(encode_message([conn(2)], 2), "10.9.0.1", group="224.0.0.99"),
            build_frame(encode_message([conn(3)], 3), "10.9.0.1", port=9000),
        ],
    )
    assert len(decode_capture(str(p)).entries()) == 1
    assert len(decode_capture(str(p), group=None).entries()) == 2
    assert len(decode_capture(str(p), port=9000).entries()) == 1
    rep = decode_capture(str(p), syncid=2, group=None)
    assert [e["cport"] for e in rep.entries()] == [2] and rep.drops == {"syncid": 1}


def test_listing_time_and_expiry(tmp_path: Path) -> None:
    p = tmp_path / "s.pcap"
    short = SyncConn(6, "10.0.0.1", 5, "10.1.0.1", 80, "10.2.0.1", 8080, state=6, timeout=10)
    write_capture(p, [build_frame(encode_message([short, conn(6)]), "10.9.0.1")] * 1)
    assert len(decode_capture(str(p)).entries()) == 2
    assert len(decode_capture(str(p), at=10.0).entries()) == 1  # the CLOSE one is gone


def test_raw_ip_and_sll_link_types(tmp_path: Path) -> None:
    fr = build_frame(encode_message([conn(1)]), "10.9.0.1")
    for lt, wrap in ((101, fr[14:]), (113, b"\0\0\0\1\0\6" + bytes(8) + b"\x08\x00" + fr[14:])):
        p = tmp_path / f"l{lt}.pcap"
        write_capture(p, [wrap], linktype=lt)
        assert [len(d.payload) for d in iter_datagrams(p)] == [44]


def test_fragments_are_reassembled(tmp_path: Path) -> None:
    import socket
    import struct

    payload = encode_message([conn(i) for i in range(30)])  # 1088 bytes
    udp = struct.pack("!HHHH", 8848, 8848, 8 + len(payload), 0) + payload
    frags = []
    for off, more in ((0, True), (504, True), (1008, False)):
        part = udp[off : off + 504] if more else udp[off:]
        hdr = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(part),
            77,
            (0x2000 if more else 0) | off // 8,
            1,
            17,
            0,
            socket.inet_aton("10.9.0.1"),
            socket.inet_aton("224.0.0.81"),
        )
        frags.append(mcast_mac("224.0.0.81") + bytes(6) + b"\x08\x00" + hdr + part)
    p = tmp_path / "f.pcap"
    write_capture(p, frags)
    assert [d.payload for d in iter_datagrams(p)] == [payload]


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main([str(tmp_path / "x.pcap"), "--syncid", "300"]) == 2
    assert main([str(tmp_path / "x.pcap"), "--bogus"]) == 2
    assert main([str(tmp_path / "missing.pcap")]) == 3
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    assert main([str(bad)]) == 3
    err = capsys.readouterr().err
    assert all(line.startswith("fastvs: ") for line in err.splitlines())
    assert len(err.splitlines()) == 5


def test_cli_registration() -> None:
    """add_cli wires ``fastvs sync decode`` into an argparse tree (for fastvs.cli)."""
    import argparse

    from fastvs.sync.decode import add_cli

    p = argparse.ArgumentParser(prog="fastvs")
    add_cli(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["sync", "decode", str(G / "s3-own.sync.pcap"), "--json"])
    assert a.func(a) == 0


def test_master_events_to_capture_and_back(tmp_path: Path) -> None:
    """The --sync-out path: engine events -> SyncMaster -> pcap -> decode."""
    import socket

    import numpy as np

    from fastvs.sync.master import SYNC_EVENT_DTYPE, SyncMaster

    ev = np.zeros(45, SYNC_EVENT_DTYPE)
    ev["ts_ns"] = np.arange(45) * 10_000_000
    ev["af"], ev["protocol"], ev["state"], ev["timeout_s"] = 4, 6, 1, 900
    ev["cport"] = np.arange(45) + 1000
    ev["vport"], ev["dport"] = 80, 8080
    for name, a in (("caddr", "10.0.0.1"), ("vaddr", "10.1.0.1"), ("daddr", "10.2.0.1")):
        ev[name] = np.void(socket.inet_aton(a) + bytes(12))
    m = SyncMaster(7, src="10.9.0.1")
    m.feed(ev)
    p = tmp_path / "out.pcap"
    assert m.write(p) == 2
    dgs = list(iter_datagrams(p))
    assert [len(d.payload) for d in dgs] == [1448, 8 + 5 * 36]
    # the full message leaves when the 41st record does not fit; the rest 2 s after it
    assert dgs[0].ts == 400_000_000 and dgs[1].ts == 400_000_000 + 2_000_000_000
    rep = decode_capture(str(p), syncid=7)
    assert len(rep.entries()) == 45 and not rep.drops
