"""End-to-end tests of the ``fastvs`` command (run as a subprocess, as users run it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dpkt

from conftest import GOLDEN, ip_datagram

FASTVS = [sys.executable, "-m", "fastvs.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FASTVS, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_process_without_arguments_runs_the_demo() -> None:
    r = run("process")
    assert r.returncode == 0, r.stderr
    assert "fastvs demo" in r.stdout
    assert "IP Virtual Server version 1.2.1" in r.stdout
    assert "TCP  10.10.0.1:80 wlc" in r.stdout
    assert "packets in 320  out 320  dropped 0" in r.stdout


def test_process_writes_what_the_kernel_sent(tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    r = run("process", str(GOLDEN / "g2-wrr.pcap"), "-r", str(GOLDEN / "g2-wrr.rules"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        mine = [ip_datagram(b) for _, b in dpkt.pcap.Reader(f)]
    with open(GOLDEN / "g2-wrr.kernel.pcap", "rb") as f:
        kern = [ip_datagram(b) for _, b in dpkt.pcap.Reader(f)]
    assert mine == kern
    assert not (tmp_path / "out.pcap.tmp").exists()


def test_process_json_and_dropped(tmp_path: Path) -> None:
    # a stray ACK to the VIP is not forwarded: it goes to --dropped
    from packets import tcp

    cap = tmp_path / "in.pcap"
    with open(cap, "wb") as f:
        w = dpkt.pcap.Writer(f)
        w.writepkt(tcp("100.64.0.1", 1234, "10.10.0.1", 80, "S"), 1.0)
        w.writepkt(tcp("100.64.0.1", 1235, "10.10.0.1", 80, "A"), 1.1)
        w.writepkt(tcp("100.64.0.1", 1236, "10.99.0.1", 80, "S"), 1.2)
    drops = tmp_path / "drops.pcap"
    r = run("process", str(cap), "-r", str(GOLDEN / "g1-rr.rules"), "--json", "--dropped", str(drops), "--seed", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    s = doc["summary"]
    assert (s["packets_in"], s["packets_out"], s["dropped"]) == (3, 2, 1)
    assert doc["verdicts"] == {"pass_not_service": 1, "fwd_in": 1, "drop_tcp_no_conn": 1}
    assert doc["services"][0]["stats"]["conns"] == 1
    with open(drops, "rb") as f:
        assert len(list(dpkt.pcap.Reader(f))) == 1


def test_process_connections_listing() -> None:
    r = run("process", str(GOLDEN / "g1-rr.pcap"), "-r", str(GOLDEN / "g1-rr.rules"), "-c")
    assert r.returncode == 0
    assert "IPVS connection entries" in r.stdout and "TIME_WAIT" in r.stdout


def test_list_like_ipvsadm() -> None:
    r = run("list", "-r", str(GOLDEN / "g4-wlc.rules"))
    assert r.returncode == 0
    assert "  -> 192.168.0.10:8080            Masq    5      0          0" in r.stdout
    r = run("list", "-r", str(GOLDEN / "g4-wlc.rules"), "-S")
    assert r.stdout == (GOLDEN / "g4-wlc.rules").read_text()
    r = run("list", "-r", str(GOLDEN / "g4-wlc.rules"), "--json")
    assert json.loads(r.stdout)["services"][0]["scheduler"] == "wlc"


def test_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.300:80 -m\n")
    r = run("process", str(GOLDEN / "g1-rr.pcap"), "-r", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and ":2:" in r.stderr
    r = run("process", str(tmp_path / "missing.pcap"), "-r", str(GOLDEN / "g1-rr.rules"))
    assert r.returncode == 3 and "missing.pcap" in r.stderr and "Traceback" not in r.stderr
    r = run("process", str(GOLDEN / "g1-rr.pcap"), "-r", str(tmp_path / "nope.rules"))
    assert r.returncode == 2 and "nope.rules" in r.stderr


def test_output_keeps_or_changes_the_format(tmp_path: Path) -> None:
    ng = tmp_path / "out.pcapng"
    r = run("process", str(GOLDEN / "g1-rr.pcap"), "-r", str(GOLDEN / "g1-rr.rules"), "-o", str(ng),
            "--out-format", "pcapng")
    assert r.returncode == 0, r.stderr
    with open(ng, "rb") as f:
        assert f.read(4) == b"\x0a\x0d\x0d\x0a"
    back = tmp_path / "back.pcap"
    r = run("process", str(ng), "-r", str(GOLDEN / "g1-rr.rules"), "-o", str(back), "--keep-ttl",
            "--out-format", "pcap")
    assert r.returncode == 0, r.stderr
    with open(back, "rb") as f:
        assert len(list(dpkt.pcap.Reader(f))) == 240
