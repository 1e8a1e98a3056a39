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


# -- fastvs ctl, fastvs check, fastvs sync decode ------------------------------------------------
def test_ctl_talks_to_a_control_server(tmp_path: Path) -> None:
    from fastvs.control.ctl import ControlServer

    seen: list[tuple[str, dict]] = []

    def handle(cmd: str, args: dict) -> object:
        seen.append((cmd, args))
        if cmd == "list":
            return {"services": [], "conns": []}
        if cmd == "health":
            return [{"service": "TCP 10.0.0.1:80", "server": "10.1.0.1:80", "up": False, "why": "refused"}]
        return [f"-e -t {args['service']} -r {args['server']} -m -w {args['weight']}"]

    sock = tmp_path / "c.sock"
    with ControlServer(str(sock), handle):
        r = run("ctl", "--control", str(sock), "weight", "10.0.0.1:80", "10.1.0.1:80", "3")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 3\n"
        r = run("ctl", "--control", str(sock), "health")
        assert r.returncode == 0 and "10.1.0.1:80" in r.stdout and "down" in r.stdout and "refused" in r.stdout
        r = run("ctl", "--control", str(sock), "list", "--json")
        assert r.returncode == 0 and json.loads(r.stdout) == {"services": [], "conns": []}
    assert [c for c, _ in seen] == ["weight", "health", "list"]
    assert seen[0][1] == {"service": "10.0.0.1:80", "server": "10.1.0.1:80", "weight": 3}
    r = run("ctl", "--control", str(tmp_path / "none.sock"), "list")
    assert r.returncode == 1 and r.stderr.startswith("fastvs: cannot reach"), r.stderr
    assert run("ctl", "--control", str(sock), "bogus").returncode == 2


def test_check_runs_the_checks_once(tmp_path: Path) -> None:
    import socket

    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(8)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    down_port = free.getsockname()[1]
    free.close()  # nothing listens there now
    conf = tmp_path / "keepalived.conf"

    def write(*ports: int) -> None:
        reals = "".join(f"    real_server 127.0.0.1 {p} {{\n        TCP_CHECK {{\n"
                        "            connect_timeout 1\n        }\n    }\n" for p in ports)
        conf.write_text(f"virtual_server 10.0.0.1 80 {{\n    lb_algo rr\n    lb_kind NAT\n"
                        f"    protocol TCP\n{reals}}}\n")

    try:
        write(up.getsockname()[1])
        r = run("check", "-r", str(conf))
        assert r.returncode == 0, r.stderr
        assert f"127.0.0.1:{up.getsockname()[1]}" in r.stdout and "-A -t 10.0.0.1:80" in r.stdout
        write(up.getsockname()[1], down_port)
        r = run("check", "-r", str(conf), "--json")
        assert r.returncode == 1, r.stderr
        doc = json.loads(r.stdout)
        states = {s["server"]: s["state"] for s in doc["servers"]}
        assert states == {f"127.0.0.1:{up.getsockname()[1]}": "up", f"127.0.0.1:{down_port}": "down"}
        assert f"127.0.0.1:{down_port}" not in doc["rules"]
    finally:
        up.close()
    conf.write_text("virtual_server 10.0.0.1 80 {\n    lb_algo nosuch\n")
    r = run("check", "-r", str(conf))
    assert r.returncode == 2 and r.stderr.startswith("fastvs: "), r.stderr


def test_sync_decode_is_a_subcommand() -> None:
    g = Path(__file__).resolve().parent / "golden" / "sync"
    r = run("sync", "decode", str(g / "s3-own.sync.pcap"), "--json", "--syncid", "7", "-r", str(g / "s3-own.rules"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)
    r = run("sync", "decode", "--syncid", "300", str(g / "s3-own.sync.pcap"))
    assert r.returncode == 2
