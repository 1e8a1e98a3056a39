"""fastvs forward: unit tests of its pieces, and end to end in network namespaces.

The end-to-end tests build client / director / switch / two real-server namespaces
(tests/netns.py), run ``python -m fastvs.live.forwarder`` in the director namespace and talk
to the VIP with real clients (curl, wrk, a UDP client). They skip when not root or
when ``ip netns`` does not work.
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
import threading
import time
from collections import Counter
from pathlib import Path

import dpkt
import pytest

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules
from fastvs.errors import RulesError
from fastvs.live import _afpacket as A
from fastvs.live import forwarder as F
from fastvs.live import neigh as N

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import CLIENT_IP, UDP_PORT, VIP, Topology, have_netns  # noqa: E402

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


# -- helpers ------------------------------------------------------------------------------------
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


def tcp_frame(payload: bytes = b"hello", *, partial: bool = False) -> bytearray:
    tcp = dpkt.tcp.TCP(sport=40000, dport=80, seq=1, ack=0, flags=dpkt.tcp.TH_SYN, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(CLIENT_IP), dst=socket.inet_aton(VIP), p=6, ttl=64, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    raw = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip)))
    if partial:  # what a CHECKSUM_PARTIAL frame carries: the pseudo-header sum only
        seglen = len(raw) - 34
        ph = raw[26:34] + struct.pack("!BBH", 0, 6, seglen)
        raw[50:52] = struct.pack("!H", csum16(bytes(ph)))
    return raw


# -- unit tests (no privileges) ---------------------------------------------------------------
def test_complete_l4_checksum_tcp_and_udp() -> None:
    f = tcp_frame(b"x" * 101, partial=True)
    ip = dpkt.ethernet.Ethernet(bytes(f)).data
    assert not l4_checksum_ok(ip)
    assert A.complete_l4_checksum(f)
    assert l4_checksum_ok(dpkt.ethernet.Ethernet(bytes(f)).data)

    udp = dpkt.udp.UDP(sport=5000, dport=53, data=b"abc")
    udp.ulen = 11
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.2"), dst=socket.inet_aton("10.0.0.1"), p=17, data=udp)
    ip.len = 31
    u = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip)))
    u[40:42] = b"\x12\x34"
    assert A.complete_l4_checksum(u)
    assert l4_checksum_ok(dpkt.ethernet.Ethernet(bytes(u)).data)
    # not TCP/UDP over IPv4: untouched
    arp = bytearray(N.arp_frame(1, MAC_A, "10.0.0.1", N.BROADCAST, bytes(6), "10.0.0.2"))
    before = bytes(arp)
    assert not A.complete_l4_checksum(arp)
    assert bytes(arp) == before
    # truncated IPv4 total length beyond the frame: refused, untouched
    bad = tcp_frame()
    bad[16:18] = b"\x05\xdc"
    assert not A.complete_l4_checksum(bad)


def test_neighbour_table_static_entries_survive_learning() -> None:
    # a one-fd pump never touches its sockets until step()
    p = A.Pump(-1, -1, MAC_A, MAC_A, neigh_capacity=64, seed=1)
    assert p.neigh_capacity == 64
    assert p.neigh_set("10.1.0.11", "02:00:00:00:00:11", static=True)
    assert not p.neigh_set("10.1.0.11", MAC_B)  # learning never replaces a static entry
    assert p.neigh_get("10.1.0.11") == bytes.fromhex("020000000011")
    for i in range(1000):  # flood with learnt entries: bounded, static entry kept
        p.neigh_set(f"172.16.{i // 250}.{i % 250 + 1}", MAC_B)
    assert len(p.neigh_entries()) <= 64
    assert p.neigh_get("10.1.0.11") == bytes.fromhex("020000000011")
    assert p.neigh_del("10.1.0.11") and p.neigh_get("10.1.0.11") is None
    assert p.counters()["rx"] == 0 and p.take_wanted() == []


def test_neigh_file(tmp_path: Path) -> None:
    f = tmp_path / "neigh"
    f.write_text("# real servers\n10.1.0.11 02:00:00:00:00:11\n\n10.1.0.12 02-00-00-00-00-12  # two\n")
    assert N.load_neigh_file(f) == [("10.1.0.11", bytes.fromhex("020000000011")),
                                    ("10.1.0.12", bytes.fromhex("020000000012"))]
    f.write_text("10.1.0.11 02:00:00:00:00\n")
    with pytest.raises(RulesError, match=r"neigh:1: bad MAC"):
        N.load_neigh_file(f)
    f.write_text("10.1.0.300 02:00:00:00:00:11\n")
    with pytest.raises(RulesError, match="bad IP address"):
        N.load_neigh_file(f)
    f.write_text("2001:db8:1::11 02:00:00:00:01:11\nff02::1 02:00:00:00:01:11\n")
    with pytest.raises(RulesError, match=r"neigh:2: not a neighbour"):
        N.load_neigh_file(f)
    f.write_text("2001:DB8:1:0::11 02:00:00:00:01:11\n")
    assert N.load_neigh_file(f) == [("2001:db8:1::11", bytes.fromhex("020000000111"))]


class FakeSock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, b: bytes) -> int:
        self.sent.append(bytes(b))
        return len(b)


def test_arp_answers_for_vips_and_learns_what_it_asked() -> None:
    p = A.Pump(-1, -1, MAC_A, MAC_A, seed=2)
    sock = FakeSock()
    nb = N.Neighbours(table=p, sides=[N.Side("client", "eth0", MAC_A, sock)], answer_for={VIP, "10.1.0.1"},
                      own_addrs=["10.1.0.1"], resolve_set={"10.1.0.11"})
    client_mac = bytes.fromhex("02000000cccc")
    req = N.arp_frame(N.ARP_REQUEST, client_mac, CLIENT_IP, N.BROADCAST, bytes(6), VIP)
    nb.on_frame(nb.sides[0], req)
    reply = N.parse_arp(sock.sent[-1])
    assert reply is not None and reply.op == N.ARP_REPLY
    assert (reply.sha, reply.spa, reply.tha, reply.tpa) == (MAC_A, VIP, client_mac, CLIENT_IP)
    assert sock.sent[-1][:6] == client_mac
    # a request for someone else: no reply
    nb.on_frame(nb.sides[0], N.arp_frame(N.ARP_REQUEST, client_mac, CLIENT_IP, N.BROADCAST, bytes(6), "10.0.0.7"))
    assert len(sock.sent) == 1
    # resolving: sender IP is our closest address; the reply is learnt and pinned
    assert nb.request(["10.1.0.11"]) == 1
    asked = N.parse_arp(sock.sent[-1])
    assert asked is not None and asked.op == N.ARP_REQUEST and asked.spa == "10.1.0.1" and asked.tpa == "10.1.0.11"
    assert nb.request(["10.1.0.11"]) == 0  # rate-limited
    rs_mac = bytes.fromhex("020000001111")
    nb.on_frame(nb.sides[0], N.arp_frame(N.ARP_REPLY, rs_mac, "10.1.0.11", MAC_A, MAC_A, "10.1.0.1"))
    assert p.neigh_get("10.1.0.11") == rs_mac and nb.missing() == []
    # unsolicited chatter about strangers is not learnt
    nb.on_frame(nb.sides[0], N.arp_frame(N.ARP_REPLY, rs_mac, "10.9.9.9", MAC_A, MAC_A, "10.9.9.8"))
    assert p.neigh_get("10.9.9.9") is None


def test_bpf_programs_assemble() -> None:
    assert len(F.socket_filter()) % 8 == 0
    prog = F.fanout_program([VIP, "10.0.0.101"], 4)
    assert len(prog) % 8 == 0 and len(prog) // 8 < 64
    # the model of the hash spreads clients over the workers
    hits = Counter(F.fanout_worker(f"10.0.{i // 200}.{i % 200}", 30000 + i, 4) for i in range(4000))
    assert len(hits) == 4 and min(hits.values()) > 700


RULES = """-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.1.0.11:80 -m -w 1
-a -t 10.0.0.100:80 -r 10.1.0.12:80 -m -w 1
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.1.0.11:53 -m
"""


def test_apply_rules_diff_keeps_connections() -> None:
    d = Director(parse_rules(RULES), seed=1)
    syn = bytes(tcp_frame(b""))
    frames, verdicts = d.process_packets([syn], [1_000_000_000])
    assert verdicts == [32]
    new = parse_rules(RULES.replace("10.1.0.12:80 -m -w 1", "10.1.0.12:80 -m -w 0")
                      .replace("-a -u 10.0.0.100:53 -r 10.1.0.11:53 -m\n", "-a -u 10.0.0.100:53 -r 10.1.0.13:53 -m\n")
                      + "-A -t 10.0.0.101:443 -s wlc\n-a -t 10.0.0.101:443 -r 10.1.0.11:443 -m\n")
    msgs = F.apply_rules(d, new)
    text = "\n".join(msgs)
    assert "10.1.0.12:80 weight 1->0" in text
    assert "added real server 10.1.0.13:53" in text and "removed real server 10.1.0.11:53" in text
    assert "added service -t 10.0.0.101:443" in text
    assert d.engine.conn_count == 1  # the connection survived
    svcs = {(s["proto"], s["addr"], s["port"]): s for s in d.services()}
    tcp = svcs[("tcp", VIP, 80)]
    assert {r["addr"]: r["weight"] for r in tcp["reals"]} == {"10.1.0.11": 1, "10.1.0.12": 0}
    assert [r["addr"] for r in svcs[("udp", VIP, 53)]["reals"]] == ["10.1.0.13"]
    assert ("tcp", "10.0.0.101", 443) in svcs
    assert F.apply_rules(d, new) == []  # idempotent


def test_merge_snapshots_sums_workers() -> None:
    d1, d2 = Director(parse_rules(RULES), seed=1), Director(parse_rules(RULES), seed=2)
    d1.process_packets([bytes(tcp_frame(b""))], [1])
    snaps = [{"wid": i, "services": d.services(), "counters": d.counters(), "summary": d.summary(),
              "io": {"rx": 1 + i}} for i, d in enumerate((d1, d2))]
    m = F.merge_snapshots(snaps)
    tcp = next(s for s in m["services"] if s["proto"] == "tcp")
    assert tcp["stats"]["conns"] == 1 and m["io"]["rx"] == 3 and m["workers"] == 2
    assert m["summary"]["packets_in"] == 1
    assert "TCP  10.0.0.100:80 rr" in F.format_report(m)
    assert F.report_json(m)["services"][0]["stats"]["conns"] in (0, 1)


def test_cli_registers_forward() -> None:
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    F.add_cli(sub)
    a = p.parse_args(["forward", "-r", "x", "--client-if", "a", "--server-if", "b", "--workers", "2"])
    cfg = F.config_from_args(a)
    assert a.func is F.cmd_forward and cfg.workers == 2 and cfg.sides() == [("client", "a"), ("server", "b")]
    with pytest.raises(RulesError):
        F.ForwardConfig(rules="x", client_if="a").check()
    assert F.main(["-r", "/nonexistent/rules", "--if", "lo"]) == 2


# -- end to end --------------------------------------------------------------------------------
_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
netns = pytest.mark.skipif(not _ok, reason=_why)


class Forwarder:
    """``python -m fastvs.live.forwarder`` running in the director namespace."""

    def __init__(self, topo: Topology, rules: Path, *extra: str) -> None:
        self.topo = topo
        self.rules = rules
        self.stats = topo.tmp / f"stats-{time.monotonic_ns()}.json"
        args = [sys.executable, "-m", "fastvs.live.forwarder", "-r", str(rules), *topo.forward_args(),
                "--fix-offloads", "--stats-json", str(self.stats), "-q", *extra]
        topo.flush_neighbours()
        self.p = topo.spawn(topo.director, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err: list[str] = []
        self.ready = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        if not self.ready.wait(20):
            self.stop()
            raise AssertionError("forwarder not ready:\n" + "".join(self.err))

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in iter(self.p.stderr.readline, b""):
            text = line.decode(errors="replace")
            self.err.append(text)
            if "ready" in text:
                self.ready.set()

    def hup(self) -> None:
        self.p.send_signal(signal.SIGHUP)

    def stop(self) -> tuple[int, str, str]:
        self.p.send_signal(signal.SIGTERM)
        try:
            out, _ = self.p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
        self._t.join(5)
        return self.p.returncode, out.decode(), "".join(self.err)

    def json(self) -> dict:
        return json.loads(self.stats.read_text())


@pytest.fixture(params=["ring-v3", "ring-v2", "mmsg"])
def io(request: pytest.FixtureRequest) -> str:
    """Every receive path: the TPACKET_V3 ring, the TPACKET_V2 ring, recvmmsg."""
    return request.param


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


@netns
def test_e2e_http_rr_alternates_and_client_sees_only_the_vip(topo: Topology, io: str) -> None:
    fwd = Forwarder(topo, write_rules(topo), "--io", io)
    pcap = topo.tmp / "client.pcap"
    dump = None
    if shutil.which("tcpdump"):
        dump = topo.spawn(topo.client, "tcpdump", "-Z", "root", "--immediate-mode", "-i", "eth0", "-n", "-U", "-w", str(pcap), "ip",
                          stderr=subprocess.PIPE)
        assert dump.stderr is not None
        line = dump.stderr.readline().decode()  # "listening on eth0 ..."
        assert "listening" in line, line
    try:
        got = curl(topo, 20)
        replies = udp(topo, 4)
    finally:
        if dump is not None:
            time.sleep(0.3)
            dump.send_signal(signal.SIGTERM)
            dump.wait(10)
        rc, out, err = fwd.stop()
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
    peers, checked = set(), 0
    with open(pcap, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
            peers.add(dst if src == CLIENT_IP else src)
            if dst == CLIENT_IP:
                assert ip_checksum_ok(ip) and l4_checksum_ok(ip), (src, dst, ip.p)
                checked += 1
    assert peers == {VIP}, peers
    assert checked >= 20 * 3


@netns
def test_e2e_wrk_without_errors(topo: Topology, io: str) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk not installed")
    fwd = Forwarder(topo, write_rules(topo), "--io", io)
    try:
        r = topo.nsx(topo.client, "wrk", "-t2", "-c10", "-d3s", f"http://{VIP}/", timeout=60, check=False)
    finally:
        rc, out, err = fwd.stop()
    assert r.returncode == 0, r.stderr
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    m = re.search(r"(\d+) requests in", r.stdout)
    assert m and int(m.group(1)) > 100, r.stdout
    assert rc == 0, err


@netns
def test_e2e_sighup_weight_zero_drains(topo: Topology, io: str) -> None:
    rules = write_rules(topo, name="hup.txt")
    fwd = Forwarder(topo, rules, "--io", io)
    try:
        before = curl(topo, 4)
        rules.write_text(topo.rules_text((1, 0)))
        fwd.hup()
        deadline = time.monotonic() + 10
        while not any("weight 1->0" in e for e in fwd.err) and time.monotonic() < deadline:
            time.sleep(0.05)
        after = curl(topo, 10)
        udp_after = udp(topo, 4)
        rules.write_text(topo.rules_text((1, 1)))
        fwd.hup()
        deadline = time.monotonic() + 10
        while not any("weight 0->1" in e for e in fwd.err) and time.monotonic() < deadline:
            time.sleep(0.05)
        again = curl(topo, 4)
    finally:
        rc, out, err = fwd.stop()
    # the forwarder's final listing (connections, counters) says which scheduling was extra
    assert Counter(before) == {"rs1": 2, "rs2": 2}, (before, err[-3000:])
    assert after == ["rs1"] * 10, (after, err)
    assert [r[0].split(":")[0] for r in udp_after] == ["rs1"] * 4
    assert Counter(again) == {"rs1": 2, "rs2": 2}, again
    assert rc == 0 and "TCP  10.0.0.100:80" in out


@netns
def test_e2e_two_workers_keep_flows_together(topo: Topology, io: str) -> None:
    fwd = Forwarder(topo, write_rules(topo), "--workers", "2", "--stats-every", "0.5", "--io", io)
    try:
        got = curl(topo, 20)
        replies = udp(topo, 40)
        time.sleep(1.2)
        stats = fwd.json()
    finally:
        rc, out, err = fwd.stop()
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


@netns
def test_e2e_one_arm(io: str) -> None:
    with Topology(one_arm=True, prefix=f"fvt-{os.getpid()}-o") as t:
        spin = ["--spin-us", "50"] if io != "mmsg" else []  # rings watched before sleeping
        fwd = Forwarder(t, write_rules(t), "--io", io, *spin)
        try:
            got = curl(t, 6)
            replies = udp(t, 2)
        finally:
            rc, out, err = fwd.stop()
        assert Counter(got) == {"rs1": 3, "rs2": 3}, (got, err)
        assert all(r is not None and r[1] == VIP for r in replies)
        assert rc == 0

