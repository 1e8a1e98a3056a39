"""``fastvs forward`` over IPv6, end to end: curl -6 and UDP through the director over
every I/O backend, IPv4 beside it, the client's neighbour entry for the VIP learnt from
fastvs's advertisement, and two workers (tests/netns.py topology: dual-stack client and
real servers; the director namespace with IPv6 off on its interfaces and ip6 dropped at
ingress, so that only fastvs answers for the VIP and the gateway address).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dpkt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import CLIENT_IP6, UDP_PORT, VIP, VIP6, Forwarder, Topology, have_netns, wait_for  # noqa: E402
from test_e2e import csum16, pcap_frames, start_tcpdump, stop_tcpdump, udp  # noqa: E402

_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_why)]


def a6(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


@pytest.fixture(scope="module")
def topo():
    if not _ok:
        pytest.skip(_why)
    t = Topology()
    yield t
    t.close()


def curl6(t: Topology, n: int) -> list[str]:
    out = []
    for _ in range(n):
        r = t.nsx(t.client, "curl", "-6", "-s", "--max-time", "10", f"http://[{VIP6}]/", check=False)
        out.append(r.stdout.strip() if r.returncode == 0 else f"error {r.returncode}")
    return out


@pytest.mark.parametrize("io", ["ring-v3", "ring-v2", "mmsg", "xdp"])
def test_e2e_ipv6_curl_alternates_between_real_servers(topo: Topology, io: str) -> None:
    rules = topo.tmp / f"rules6-{io}.txt"
    rules.write_text(topo.rules_text(ipv6=True))
    fwd = Forwarder(topo, rules, "--io", io)
    pcap = topo.tmp / f"client6-{io}.pcap"
    dump = start_tcpdump(topo, pcap, "ip6 and not icmp6") if shutil.which("tcpdump") else None
    try:
        got = curl6(topo, 20)
        replies: list[Any] = udp(topo, 4, VIP6)
        v4 = topo.nsx(topo.client, "curl", "-s", "--max-time", "10", f"http://{VIP}/", check=False).stdout.strip()
        neigh = topo.nsx(topo.client, "ip", "-6", "neigh", "show", VIP6).stdout
    finally:
        rc, out, err = fwd.stop()
        if dump is not None:
            try:  # at least SYN-ACK, response and FIN per request and the UDP answers
                wait_for(lambda: len([ip for ip in pcap_frames(pcap, dpkt.ip6.IP6) if ip.dst == a6(CLIENT_IP6)]),
                         10, "the replies in the client's capture", until=lambda k: k >= 20 * 3 + 4)
            finally:
                stop_tcpdump(dump)
    if io == "xdp":  # the frames really went through AF_XDP (no fallback line)
        assert "AF_XDP unavailable" not in err, err[-2000:]
    # rr over the two IPv6 real servers, every request answered
    assert all(g in ("rs1", "rs2") for g in got), (got, err)
    assert all(a != b for a, b in zip(got, got[1:], strict=False)), got
    assert Counter(got) == {"rs1": 10, "rs2": 10}
    assert all(x is not None and x[1] == VIP6 and x[2] == UDP_PORT for x in replies), replies
    assert {x[0].split(":")[0] for x in replies} == {"rs1", "rs2"}
    assert v4 in ("rs1", "rs2")  # dual stack: IPv4 still goes through
    assert "lladdr" in neigh  # the client resolved the VIP through fastvs's advertisement
    assert rc == 0, err
    m = re.search(r"TCP  \[2001:db8::100\]:80\s+(\d+)", out)
    assert m and int(m.group(1)) == 20, out
    stats = fwd.json()
    io_c = stats["io"]
    # the client asked for the VIP; fastvs asked for both real servers and pinned them
    assert io_c["na_sent"] >= 1 and io_c["ns_sent"] >= 2 and io_c["nd_learnt"] >= 2, sorted(io_c.items())
    assert io_c["csum_completed"] > 0 and io_c["drop_oversize"] == 0 and io_c["drop_tx_error"] == 0
    if dump is None:
        pytest.skip("tcpdump not installed: capture check skipped")
    peers = set()
    checked = 0
    for ip in pcap_frames(pcap, dpkt.ip6.IP6):
        if ip.nxt in (6, 17):
            peer = ip.src if ip.dst == a6(CLIENT_IP6) else ip.dst
            peers.add(str(ipaddress.IPv6Address(peer)))
            if ip.dst == a6(CLIENT_IP6):
                seg = bytes(ip.data)
                ph = ip.src + ip.dst + struct.pack("!IxxxB", len(seg), ip.nxt)
                assert csum16(ph + seg) == 0xFFFF
                assert ip.hlim == 63  # one hop through the director
                checked += 1
    assert peers == {VIP6}, peers
    assert checked >= 20 * 3


def test_e2e_ipv6_two_workers_keep_flows_together(topo: Topology) -> None:
    rules = topo.tmp / "rules6-w2.txt"
    rules.write_text(topo.rules_text(ipv6=True))
    fwd = Forwarder(topo, rules, "--workers", "2")
    try:
        got = curl6(topo, 20)
        replies: list[Any] = udp(topo, 40, VIP6, timeout=90)
        stats = fwd.wait_stats(lambda d: d["workers"] == 2 and d["summary"]["packets_in"] >= 20 * 3 + 40,
                               10, "2 workers' snapshots covering the traffic")
    finally:
        rc, out, err = fwd.stop()
    # every request answered: the replies met their connection on the same worker
    assert all(g in ("rs1", "rs2") for g in got) and set(got) == {"rs1", "rs2"}, (got, err)
    assert all(x is not None and x[1] == VIP6 for x in replies), replies
    assert stats["workers"] == 2
    assert all(w["rx"] > 0 for w in stats["per_worker"]), stats["per_worker"]  # IPv6 only: spread
    assert rc == 0, err
