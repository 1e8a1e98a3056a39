"""``fastvs forward`` end to end: client / director / switch / two real-server network
namespaces (tests/netns.py), ``python -m fastvs.live`` in the director namespace, real
clients (curl, wrk, a UDP client) talking to the VIP over every I/O backend.

Every wait is :func:`netns.wait_for` on a condition (a log line, the statistics file, a
capture) with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dpkt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import CLIENT_IP, UDP_PORT, VIP, Forwarder, Topology, have_netns, wait_for  # noqa: E402

_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_why)]


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def l4_checksum_ok(ip: dpkt.ip.IP) -> bool:
    seg = bytes(ip.data)
    ph = ip.src + ip.dst + struct.pack("!BBH", 0, ip.p, len(seg))
    return csum16(ph + seg) == 0xFFFF


def ip_checksum_ok(ip: dpkt.ip.IP) -> bool:
    return csum16(bytes(ip)[: ip.hl * 4]) == 0xFFFF


def pcap_frames(path: Path, family: type) -> list:
    """The IP (``dpkt.ip.IP``) or IPv6 datagrams of a capture being written (a record
    cut short at the end is left for the next look)."""
    out = []
    with open(path, "rb") as f:
        try:
            for _, buf in dpkt.pcap.Reader(f):
                ip = dpkt.ethernet.Ethernet(buf).data
                if isinstance(ip, family):
                    out.append(ip)
        except (dpkt.NeedData, dpkt.UnpackError, ValueError):
            pass
    return out


def vip_only_valid_checksums(pcap: Path) -> int:
    """The client's capture holds IPv4 only to and from the VIP, and every datagram it
    received has valid IP and TCP/UDP checksums; returns how many it received."""
    peers, checked = set(), 0
    for ip in pcap_frames(pcap, dpkt.ip.IP):
        src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
        peers.add(dst if src == CLIENT_IP else src)
        if dst == CLIENT_IP:
            assert ip_checksum_ok(ip) and l4_checksum_ok(ip), (src, dst, ip.p)
            checked += 1
    assert peers == {VIP}, peers
    return checked


def start_tcpdump(topo: Topology, pcap: Path, expr: str) -> subprocess.Popen[bytes]:
    dump = topo.spawn(topo.client, "tcpdump", "-Z", "root", "--immediate-mode", "-i", "eth0", "-n", "-U",
                      "-w", str(pcap), expr, stderr=subprocess.PIPE)
    assert dump.stderr is not None
    line = dump.stderr.readline().decode()  # "listening on eth0 ..."
    assert "listening" in line, line
    return dump


def stop_tcpdump(dump: subprocess.Popen[bytes]) -> None:
    dump.send_signal(signal.SIGTERM)
    dump.wait(10)


IO_KINDS = ["ring-v3", "ring-v2", "mmsg", "xdp"]


@pytest.fixture(params=IO_KINDS)
def io(request: pytest.FixtureRequest) -> str:
    """Every receive path: the TPACKET_V3 ring, the TPACKET_V2 ring, recvmmsg, AF_XDP."""
    return request.param


def assert_backend(io: str, err: str) -> None:
    """With ``--io xdp`` the frames really went through AF_XDP (no fallback line)."""
    if io == "xdp":
        assert "AF_XDP unavailable" not in err, err[-2000:]


@pytest.fixture(scope="module")
def topo():
    if not _ok:
        pytest.skip(_why)
    t = Topology()
    yield t
    t.close()


def curl(topo: Topology, n: int = 1, *, timeout: float = 10) -> list[str]:
    out = []
    for _ in range(n):
        r = topo.nsx(topo.client, "curl", "-s", "--max-time", str(timeout), f"http://{VIP}/", check=False)
        out.append(r.stdout.strip() if r.returncode == 0 else f"error {r.returncode}")
    return out


UDP_CLIENT = r"""
import socket, sys, json
n = int(sys.argv[1]); out = []
family = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
for i in range(n):
    s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"ping%d" % i, (sys.argv[2], int(sys.argv[3])))
    try:
        data, peer = s.recvfrom(2048); out.append([data.decode(), peer[0], peer[1]])
    except socket.timeout:
        out.append(None)
    s.close()
print(json.dumps(out))
"""


def udp(topo: Topology, n: int, vip: str = VIP, timeout: float = 60) -> list:
    r = topo.nsx(topo.client, sys.executable, "-c", UDP_CLIENT, str(n), vip, str(UDP_PORT), timeout=timeout)
    return json.loads(r.stdout)


def write_rules(topo: Topology, weights=(1, 1), name: str = "rules.txt") -> Path:
    p = topo.tmp / name
    p.write_text(topo.rules_text(weights))
    return p


def tcp_conns(doc: dict) -> int:
    """Connections the TCP service scheduled, from the statistics file."""
    return sum(s["stats"]["conns"] for s in doc["services"] if s["proto"] == "tcp")


def rs_weights(doc: dict) -> dict[str, int]:
    """The TCP service's real servers and their weights, from the statistics file."""
    return {r["addr"]: r["weight"] for s in doc["services"] if s["proto"] == "tcp" for r in s["reals"]}


def drain_second(fwd: Forwarder, topo: Topology, rules: Path, what: str) -> tuple[str, dict]:
    """Rewrite the rules with 10.1.0.12 at weight 0 and SIGHUP: the reload's log line and
    the first statistics showing reload 1 with those weights."""
    rules.write_text(topo.rules_text((1, 0)))
    mark = fwd.hup()
    line = fwd.wait_log("SIGHUP: ", after=mark)
    drained = fwd.wait_stats(lambda d: d["reloads"] == 1 and rs_weights(d) == {"10.1.0.11": 1, "10.1.0.12": 0},
                             10, what)
    return line, drained


def test_e2e_http_rr_alternates_and_client_sees_only_the_vip(topo: Topology, io: str) -> None:
    fwd = Forwarder(topo, write_rules(topo), "--io", io)
    pcap = topo.tmp / "client.pcap"
    dump = start_tcpdump(topo, pcap, "ip") if shutil.which("tcpdump") else None
    try:
        got = curl(topo, 20)
        replies = udp(topo, 4)
    finally:
        rc, out, err = fwd.stop()
        if dump is not None:
            try:  # every reply the forwarder sent, in the client's capture
                sent = fwd.json()["summary"]["forwarded_out"]
                wait_for(lambda: len([ip for ip in pcap_frames(pcap, dpkt.ip.IP) if ip.dst == socket.inet_aton(CLIENT_IP)]),
                         10, f"the {sent} replies the forwarder sent in the client's capture", until=lambda k: k >= sent)
            finally:
                stop_tcpdump(dump)
    # (a) 20 sequential requests, all answered, alternating between the servers (rr)
    assert all(g in ("rs1", "rs2") for g in got), (got, err)
    assert all(a != b for a, b in zip(got, got[1:], strict=False)), got
    assert Counter(got) == {"rs1": 10, "rs2": 10}
    # (c) UDP request/response through the VIP
    assert all(r is not None and r[1] == VIP and r[2] == UDP_PORT for r in replies), replies
    assert {r[0].split(":")[0] for r in replies} == {"rs1", "rs2"}
    # the final listing on SIGTERM
    assert rc == 0, err
    assert "TCP  10.0.0.100:80 rr" in out and "-> 10.1.0.11:80" in out and "Conns" in out
    m = re.search(r"TCP  10\.0\.0\.100:80\s+(\d+)", out)
    assert m and int(m.group(1)) == 20, out
    stats = fwd.json()
    assert stats["drops"] == {} or set(stats["drops"]) <= {"drop_tcp_no_conn"}, stats["drops"]
    assert stats["io"]["csum_completed"] > 0  # the peers' frames arrived CHECKSUM_PARTIAL
    assert stats["io"]["drop_oversize"] == 0 and stats["io"]["drop_tx_error"] == 0
    # (d) the client only ever talks to the VIP, and what it receives has valid checksums
    if dump is None:
        pytest.skip("tcpdump not installed: capture check skipped")
    assert vip_only_valid_checksums(pcap) >= 20 * 3


def test_e2e_wrk_without_errors(topo: Topology, io: str) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk not installed")
    fwd = Forwarder(topo, write_rules(topo), "--io", io)
    try:
        r = topo.nsx(topo.client, "wrk", "-t2", "-c10", "-d3s", f"http://{VIP}/", timeout=60, check=False)
    finally:
        rc, out, err = fwd.stop()
    assert_backend(io, err)
    assert r.returncode == 0, r.stderr
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    m = re.search(r"(\d+) requests in", r.stdout)
    assert m and int(m.group(1)) > 100, r.stdout
    assert rc == 0, err


@pytest.mark.parametrize("kind", ["ring-v2", "xdp"])
def test_e2e_python_loop_forwards_as_the_c_loop(topo: Topology, kind: str) -> None:
    """FASTVS_LIVE_LOOP=python (receive, Engine.process, transmit called from Python
    per batch: the loop kept for side-by-side measurement) forwards as FrameIO.run does:
    rr alternation, UDP, wrk without errors, every frame the engine saw counted."""
    fwd = Forwarder(topo, write_rules(topo), "--io", kind, env={"FASTVS_LIVE_LOOP": "python"})
    try:
        got = curl(topo, 6)
        replies = udp(topo, 2)
        r = (topo.nsx(topo.client, "wrk", "-t1", "-c4", "-d2s", f"http://{VIP}/", timeout=60, check=False)
             if shutil.which("wrk") else None)
    finally:
        rc, out, err = fwd.stop()
    assert_backend(kind, err)
    assert got == ["rs1", "rs2"] * 3 or got == ["rs2", "rs1"] * 3, got
    assert all(x is not None for x in replies), replies
    if r is not None:
        assert r.returncode == 0 and "Socket errors" not in r.stdout, r.stdout
    assert rc == 0, err
    stats = fwd.json()
    assert stats["summary"]["packets_in"] == stats["io"]["rx"], (stats["summary"], stats["io"])


def test_e2e_sighup_weight_zero_drains(topo: Topology, io: str) -> None:
    rules = write_rules(topo, name="hup.txt")
    fwd = Forwarder(topo, rules, "--io", io)
    try:
        before = curl(topo, 4)
        # the forwarder scheduled exactly the four connections (no extra rr pick)
        stats0 = fwd.wait_stats(lambda d: tcp_conns(d) >= 4, 10, "4 TCP connections in the statistics")
        # the reload happened: its log line, and the listing shows the new weight
        line, drained = drain_second(fwd, topo, rules, "reload 1 with 10.1.0.12 at weight 0 in the listing")
        after = curl(topo, 10)
        udp_after = udp(topo, 4)
        rules.write_text(topo.rules_text((1, 1)))
        mark = fwd.hup()
        fwd.wait_log("weight 0->1", after=mark)
        fwd.wait_stats(lambda d: d["reloads"] == 2 and rs_weights(d) == {"10.1.0.11": 1, "10.1.0.12": 1},
                       10, "reload 2 with both real servers at weight 1 in the listing")
        again = curl(topo, 4)
    finally:
        rc, out, err = fwd.stop()
    assert_backend(io, err)
    assert tcp_conns(stats0) == 4, (before, stats0["services"], err[-3000:])
    assert Counter(before) == {"rs1": 2, "rs2": 2}, (before, err[-3000:])
    assert "10.1.0.12:80 weight 1->0" in line and drained["reloads"] == 1, line
    assert after == ["rs1"] * 10, (after, err)
    assert [r[0].split(":")[0] for r in udp_after] == ["rs1"] * 4
    assert Counter(again) == {"rs1": 2, "rs2": 2}, again
    assert rc == 0 and "TCP  10.0.0.100:80" in out


@pytest.mark.parametrize("io", ["ring-v3", "ring-v2", "mmsg", "xdp"])
def test_e2e_two_workers_keep_flows_together(topo: Topology, io: str) -> None:
    """Two workers on the lab's single-queue veths; ``--io xdp`` falls back to ring-v2
    (worker k binds queue k: one line says the interface has too few queues)."""
    fwd = Forwarder(topo, write_rules(topo), "--workers", "2", "--io", io)
    try:
        got = curl(topo, 20)
        replies = udp(topo, 40)
        # both workers' snapshots after the traffic (each reports once a second)
        stats = fwd.wait_stats(lambda d: d["workers"] == 2 and d["summary"]["packets_in"] >= 20 * 3 + 40,
                               10, "2 workers' snapshots covering the traffic")
    finally:
        rc, out, err = fwd.stop()
    if io == "xdp":
        assert "AF_XDP unavailable (dc has 1 queue for --workers 2" in err, err[-2000:]
        assert "using AF_PACKET ring-v2" in err
    assert all(g in ("rs1", "rs2") for g in got) and set(got) == {"rs1", "rs2"}, (got, err)
    assert all(r is not None and r[1] == VIP for r in replies), replies
    assert stats["workers"] == 2
    # both workers carried traffic, each flow on one worker (else replies would be lost)
    assert all(w["rx"] > 0 for w in stats["per_worker"]), stats["per_worker"]
    assert rc == 0, err
    m = re.search(r"UDP  10\.0\.0\.100:5353\s+(\d+)", out)
    # 40 requests from fresh sockets: the client's kernel may hand out an ephemeral
    # port twice, and then two requests are one UDP connection
    assert m and 30 <= int(m.group(1)) <= 40, out


def test_e2e_xdp_two_workers_on_two_queues() -> None:
    """``--io xdp --workers 2`` on veths with two queues: worker k's sockets on queue k.
    The veth peers pick a transmit queue per socket hash, so a connection's requests
    and replies land on unrelated queues; the workers hand each other the frames of
    connections they do not own, and curl, UDP and wrk see no error."""
    with Topology(queues=2, prefix=f"fvt-{os.getpid()}-q") as t:
        fwd = Forwarder(t, write_rules(t), "--workers", "2", "--io", "xdp")
        try:
            got = curl(t, 20)
            replies = udp(t, 40)
            r = t.nsx(t.client, "wrk", "-t2", "-c10", "-d3s", f"http://{VIP}/", timeout=60,
                      check=False) if shutil.which("wrk") else None
            stats = fwd.wait_stats(lambda d: d["workers"] == 2 and d["summary"]["packets_in"] >= 20 * 3 + 40,
                                   10, "2 workers' snapshots covering the traffic")
        finally:
            rc, out, err = fwd.stop()
    assert_backend("xdp", err)
    assert all(g in ("rs1", "rs2") for g in got) and set(got) == {"rs1", "rs2"}, (got, err[-2000:])
    assert all(x is not None and x[1] == VIP for x in replies), replies
    if r is not None:
        assert r.returncode == 0 and "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    assert all(w["rx"] > 0 for w in stats["per_worker"]), stats["per_worker"]
    io = stats["io"]
    # frames were handed between workers, none lost on the way
    assert io["handoff_out"] > 0 and io["drop_handoff_full"] == 0, io
    assert rc == 0, err


HELD_CLIENT = r"""
import json, socket, sys
n, vip, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
held = [socket.create_connection((vip, port), timeout=10) for _ in range(n)]  # handshakes done
print("HELD", flush=True)
sys.stdin.readline()  # the forwarder has reloaded
out = []
for s in held:
    try:
        s.settimeout(10)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        out.append(data.decode(errors="replace").rsplit("\r\n\r\n", 1)[-1].strip())
    except OSError as e:
        out.append(f"error {e}")
print(json.dumps(out), flush=True)
"""


def test_e2e_xdp_two_workers_sighup_weight_zero_drains() -> None:
    """``--io xdp --workers 2`` on two-queue veths, SIGHUP setting 10.1.0.12 to weight 0:
    both workers apply the reload (the merged ``reloads`` is the smallest of theirs),
    new connections all go to 10.1.0.11, connections established before it (some on
    10.1.0.12, on either worker) are still served, and a second SIGHUP brings 10.1.0.12
    back."""
    with Topology(queues=2, prefix=f"fvt-{os.getpid()}-h") as t:
        rules = write_rules(t, name="hup2.txt")
        # --spin-us: the RX and handoff rings watched before sleeping (the two-worker spin)
        fwd = Forwarder(t, rules, "--workers", "2", "--io", "xdp", "--spin-us", "20")
        held = None
        try:
            before = curl(t, 8)
            stats0 = fwd.wait_stats(lambda d: d["workers"] == 2 and tcp_conns(d) >= 8, 10,
                                    "both workers' snapshots with the 8 TCP connections")
            # four connections held open: whichever worker gets two of them (rr per
            # worker) sends one to 10.1.0.12
            held = t.spawn(t.client, sys.executable, "-c", HELD_CLIENT, "4", VIP, "80",
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert held.stdout is not None and held.stdin is not None
            assert held.stdout.readline().strip() == b"HELD"
            fwd.wait_stats(lambda d: tcp_conns(d) >= 12, 10, "the 4 held connections in the statistics")
            line, drained = drain_second(fwd, t, rules,
                                         "both workers at reload 1, 10.1.0.12 at weight 0 in the listing")
            after = curl(t, 10)
            udp_after = udp(t, 4)
            held.stdin.write(b"go\n")
            held.stdin.flush()
            held_out, _ = held.communicate(timeout=30)
            rules.write_text(t.rules_text((1, 1)))
            mark = fwd.hup()
            fwd.wait_log("weight 0->1", after=mark)
            fwd.wait_stats(lambda d: d["reloads"] == 2 and rs_weights(d) == {"10.1.0.11": 1, "10.1.0.12": 1},
                           10, "both workers at reload 2 with both real servers at weight 1")
            again = curl(t, 8)
        finally:
            if held is not None and held.poll() is None:
                held.kill()
            rc, out, err = fwd.stop()
    assert_backend("xdp", err)
    assert stats0["workers"] == 2 and all(w["rx"] > 0 for w in stats0["per_worker"]), stats0["per_worker"]
    assert all(g in ("rs1", "rs2") for g in before) and set(before) == {"rs1", "rs2"}, (before, err[-3000:])
    assert "10.1.0.12:80 weight 1->0" in line and drained["reloads"] == 1, line
    assert err.count("SIGHUP: rules not reloaded") == 0 and "reload failed" not in err, err[-3000:]
    assert after == ["rs1"] * 10, (after, err[-3000:])
    assert [r[0].split(":")[0] for r in udp_after] == ["rs1"] * 4, udp_after
    kept = json.loads(held_out.decode().strip().splitlines()[-1])
    assert all(k in ("rs1", "rs2") for k in kept) and "rs2" in kept, kept
    assert set(again) == {"rs1", "rs2"}, again
    assert rc == 0 and "TCP  10.0.0.100:80" in out, err[-3000:]
    m = re.search(r"TCP  10\.0\.0\.100:80\s+(\d+)", out)
    assert m and int(m.group(1)) == 8 + 4 + 10 + 8, out


def test_e2e_one_arm(io: str) -> None:
    with Topology(one_arm=True, prefix=f"fvt-{os.getpid()}-o") as t:
        spin = ["--spin-us", "50"] if io != "mmsg" else []  # rings watched before sleeping
        fwd = Forwarder(t, write_rules(t), "--io", io, *spin)
        try:
            got = curl(t, 6)
            replies = udp(t, 2)
        finally:
            rc, out, err = fwd.stop()
        assert_backend(io, err)
        assert Counter(got) == {"rs1": 3, "rs2": 3}, (got, err)
        assert all(r is not None and r[1] == VIP for r in replies)
        assert rc == 0


def test_e2e_xdp_sigkill_leftovers_removed_at_next_start(topo: Topology) -> None:
    """A SIGKILLed ``--io xdp`` forwarder leaves its XDP programs attached; the next
    start removes them (one line each) and forwards; a clean stop leaves none."""
    rules = write_rules(topo, name="xdp-kill.txt")
    first = Forwarder(topo, rules, "--io", "xdp")
    first.p.kill()
    first.p.wait(10)
    ifs = [a for k, a in zip(topo.forward_args(), topo.forward_args()[1:], strict=False)
           if k in ("--client-if", "--server-if", "--if")]
    left = [topo.nsx(topo.director, "ip", "link", "show", i).stdout for i in ifs]
    fwd = Forwarder(topo, rules, "--io", "xdp")
    try:
        got = curl(topo, 4)
    finally:
        rc, out, err = fwd.stop()
    after = [topo.nsx(topo.director, "ip", "link", "show", i).stdout for i in ifs]
    assert all("xdp" in s for s in left), left
    assert err.count("removed a leftover XDP program") == len(ifs), err
    assert_backend("xdp", err)
    assert Counter(got) == {"rs1": 2, "rs2": 2}, (got, err)
    assert rc == 0, err
    assert not any("xdp" in s for s in after), after


def test_e2e_xdp_zerocopy_on_veth_falls_back_in_one_line(topo: Topology) -> None:
    """``--xdp-copy zerocopy`` on veth (no AF_XDP zero-copy in its XDP features): one
    line naming the interface, the AF_PACKET path, nothing left attached, traffic
    carried. Zero-copy itself: tests/live/test_e2e_zerocopy.py (virtio_net in a guest)."""
    fwd = Forwarder(topo, write_rules(topo, name="xdp-zc.txt"), "--io", "xdp", "--xdp-copy", "zerocopy")
    try:
        got = curl(topo, 4)
        attached = topo.nsx(topo.director, "ip", "link", "show", topo.client_if).stdout
    finally:
        rc, out, err = fwd.stop()
    line = [s for s in err.splitlines() if "AF_XDP unavailable" in s]
    assert line == [f"fastvs forward: --io xdp: AF_XDP unavailable (--xdp-copy zerocopy: {topo.client_if}'s "
                    "driver has no AF_XDP zero-copy (--xdp-copy auto takes copy mode there)); using AF_PACKET "
                    "ring-v2"], err
    assert "xdp" not in attached, attached
    assert Counter(got) == {"rs1": 2, "rs2": 2}, (got, err)
    assert rc == 0, err
