"""``fastvs process --sync-out`` and ``--sync-in`` end to end.

- on the kernel lab's inputs, ``--sync-out`` writes the datagrams the kernel's master
  sent (tests/golden/sync: default sysctls, v0, ``sync_threshold`` "1 4" and "3 0",
  ``sync_persist_mode``), the same on every run;
- a failover replay: a capture cut in two, the first half through a master writing
  ``--sync-out``, the second through a fresh director started with ``--sync-in`` of
  that file. Every connection the backup took over goes on as it did in one director
  that saw the whole capture: the same packets out (same real servers, same NAT
  rewrites), and none of them is scheduled again.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import Writer, open_capture
from fastvs.cli import main
from fastvs.control.director import Director
from fastvs.control.rules import load_rules, parse_rules
from fastvs.sync.backup import BackupTable
from fastvs.sync.decode import decode_capture
from fastvs.sync.frames import iter_datagrams
from fastvs.sync.proto import decode_message

HERE = Path(__file__).resolve().parent
G = HERE.parent / "golden" / "sync"
REAL = HERE.parent.parent / "pcaps" / "real"
GOLDEN = HERE.parent / "golden"

CASES = {
    "s1-tcp-udp": [],
    "s2-persist": [],
    "s1-tcp-udp-v0": ["--sync-version", "0"],
    "s2-persist-v0": ["--sync-version", "0"],
    "s1-tcp-udp-t1p4": ["--sync-threshold", "1", "4"],
    "s1-tcp-udp-t3p0": ["--sync-threshold", "3", "0"],
    "s2-persist-pm1": ["--sync-persist-mode"],
}


def _payloads(path: Path) -> list[bytes]:
    return [d.payload for d in iter_datagrams(path, 8848, "224.0.0.81")]


def _run(argv: list[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(CASES))
def test_sync_out_is_the_kernels(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = next(b for b in ("s1-tcp-udp", "s2-persist") if name.startswith(b))
    sync = tmp_path / "sync.pcap"
    code, _, err = _run(["process", G / f"{base}.pcap", "-r", G / f"{base}.rules", "--syncid", "7",
                         "--sync-out", sync, "--sync-src", "10.78.0.1", "-q", *CASES[name]], capsys)
    assert code == 0, err
    kernel = _payloads(G / f"{name}.kernel.sync.pcap")
    assert _payloads(sync) == kernel
    # the frames: UDP 10.78.0.1 -> 224.0.0.81:8848, TTL 1, as the kernel's master sent
    with open_capture(str(sync)) as rd:
        frames = [b.packet(i) for b in rd for i in range(len(b))]
    assert len(frames) == len(kernel)
    for fr in frames:
        ip = fr[14:]
        assert ip[8] == 1 and ip[9] == 17
        assert socket.inet_ntoa(ip[12:16]) == "10.78.0.1" and socket.inet_ntoa(ip[16:20]) == "224.0.0.81"


def test_sync_out_is_deterministic_and_summarised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for i in range(2):
        sync = tmp_path / f"sync{i}.pcap"
        code, out, err = _run(["process", G / "s2-persist.pcap", "-r", G / "s2-persist.rules", "--syncid", "7",
                               "--sync-out", sync, "--json"], capsys)
        assert code == 0, err
        outs.append(sync.read_bytes())
        s = json.loads(out)["summary"]["sync_out"]
        assert s == {"path": str(sync), "messages": 1, "records": 39, "lost": 0}
    assert outs[0] == outs[1]
    code, out, _ = _run(["process", G / "s2-persist.pcap", "-r", G / "s2-persist.rules", "--syncid", "7",
                         "--sync-out", tmp_path / "s.pcap"], capsys)
    assert code == 0 and "sync out: 39 records in 1 messages written to" in out


def test_sync_maxlen_cuts_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sync = tmp_path / "sync.pcap"
    code, _, err = _run(["process", G / "s1-tcp-udp.pcap", "-r", G / "s1-tcp-udp.rules", "--syncid", "7",
                         "--sync-out", sync, "--sync-maxlen", "200", "-q"], capsys)
    assert code == 0, err
    small = _payloads(sync)
    assert all(len(m) <= 200 for m in small) and len(small) > 3
    records = [c for m in small for c in decode_message(m, 7).conns]
    kernel = [c for m in _payloads(G / "s1-tcp-udp.kernel.sync.pcap") for c in decode_message(m, 7).conns]
    assert records == kernel


# -- failover replay ---------------------------------------------------------------------------

GNUTELLA_RULES = (
    "-A -u 10.0.2.15:28681 -s rr\n"
    "-a -u 10.0.2.15:28681 -r 192.168.7.1:28681 -m\n"
    "-a -u 10.0.2.15:28681 -r 192.168.7.2:28681 -m\n"
    "-a -u 10.0.2.15:28681 -r 192.168.7.3:28681 -m\n"
)


def _read(path: Path) -> tuple[list[bytes], list[int]]:
    frames, ts = [], []
    with open_capture(str(path)) as rd:
        for b in rd:
            assert (b.linktype == 1).all()
            frames += [b.packet(i) for i in range(len(b))]
            ts += [int(t) for t in b.ts]
    return frames, ts


def _write(path: Path, frames: list[bytes], ts: list[int]) -> None:
    with Writer(path, linktype=1, nanosecond=True) as w:
        w.write(PacketBatch.from_packets(frames, ts_ns=ts))


def _client(fr: bytes, vips: set[str]) -> tuple[int, str, int] | None:
    """(proto, client address, client port) of an IPv4 TCP/UDP frame to or from a VIP
    (before the director) or to or from the client (after it)."""
    if fr[12:14] != b"\x08\x00":
        return None
    ip = fr[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] not in (6, 17) or len(ip) < ihl + 4:
        return None
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    if dst in vips:
        return ip[9], src, sport
    return ip[9], dst, dport


@pytest.mark.parametrize("capture,rules", [
    (REAL / "ndpi_gnutella.pcap", GNUTELLA_RULES),
    (GOLDEN / "g4-wlc.pcap", (GOLDEN / "g4-wlc.rules").read_text()),
])  # fmt: skip
def test_failover_replay_carries_connections_on(capture: Path, rules: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rules_path = tmp_path / "rules"
    rules_path.write_text(rules)
    vips = {s.addr for s in parse_rules(rules).services}
    frames, ts = _read(capture)
    cut = len(frames) // 2
    first, second = tmp_path / "first.pcap", tmp_path / "second.pcap"
    _write(first, frames[:cut], ts[:cut])
    _write(second, frames[cut:], ts[cut:])
    whole_out, b_out, sync = tmp_path / "whole.out.pcap", tmp_path / "b.out.pcap", tmp_path / "sync.pcap"

    code, _, err = _run(["process", capture, "-r", rules_path, "-o", whole_out, "--seed", "1", "-q"], capsys)
    assert code == 0, err
    code, _, err = _run(["process", first, "-r", rules_path, "--sync-out", sync, "--seed", "1", "-q"], capsys)
    assert code == 0, err
    code, out, err = _run(["process", second, "-r", rules_path, "--sync-in", sync, "-o", b_out, "--seed", "2",
                           "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)["summary"]["sync_in"]

    rep = decode_capture(str(sync), table=BackupTable(load_rules(rules_path)))
    rows = rep.table.to_array(rep.now)
    carried = {(int(r["protocol"]), socket.inet_ntop(socket.AF_INET, bytes(r["caddr"])[:4]), int(r["cport"]))
               for r in rows if not r["flags"] & 0x1000}
    assert summary["inserted"] == len(rows) > 0 and summary["skipped"] == 0
    assert len(carried) >= 5

    # every packet of a carried connection after the cut leaves as the single director's did
    w_frames, w_ts = _read(whole_out)
    b_frames, _ = _read(b_out)
    t_cut = ts[cut]
    want = [f for f, t in zip(w_frames, w_ts, strict=True) if t >= t_cut and _client(f, vips) in carried]
    got = [f for f in b_frames if _client(f, vips) in carried]
    assert len(want) >= 5
    assert got == want

    # and none of them is scheduled again: only those connections' packets through the
    # taken-over table make no new connection
    d = Director(load_rules(rules_path), seed=3)
    assert d.insert_sync_conns(rows, ts[cut]) == len(rows)
    mine = [(f, t) for f, t in zip(frames[cut:], ts[cut:], strict=True) if _client(f, vips) in carried]
    _, verdicts = d.process_packets([f for f, _ in mine], [t for _, t in mine])
    assert all(v < 64 for v in verdicts)
    assert sum(r["stats"]["conns"] for s in d.services() for r in s["reals"]) == 0
