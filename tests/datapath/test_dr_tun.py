"""Direct routing (-g) and tunnelling (-i): ip_vs_dr_xmit, ip_vs_tunnel_xmit."""

from __future__ import annotations

import dpkt

from fastvs import verdicts as V
from fastvs.control.director import Director, parse_neigh
from fastvs.control.rules import parse_rules

from packets import DIR_MAC, checksums_ok, tcp

VIP = "10.10.0.1"


def test_direct_routing_changes_only_macs_and_ttl() -> None:
    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10 -g\n"
    d = Director(parse_rules(rules), seed=1, neigh=parse_neigh("192.168.0.10 02:52:c0:a8:00:0a\n"))
    frame = tcp("100.64.0.1", 1000, VIP, 80, "S")
    out, v = d.process_packets([frame])
    assert v == [V.FWD_DR]
    assert out[0][:6] == bytes.fromhex("0252c0a8000a") and out[0][6:12] == DIR_MAC
    ip_in, ip_out = dpkt.ethernet.Ethernet(frame).data, dpkt.ethernet.Ethernet(out[0]).data
    assert ip_out.dst == ip_in.dst and ip_out.ttl == ip_in.ttl - 1
    assert bytes(ip_out.data) == bytes(ip_in.data)  # TCP untouched
    assert checksums_ok(out[0])
    # the real server answers the client directly; a reply through the director is routed
    c = d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)
    assert c["state"] == "SYN_RECV"
    # INPUT-ONLY table: a FIN from the client in ESTABLISHED goes to FIN_WAIT, not CLOSE_WAIT
    d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, "A")], [1])
    d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, "FA")], [2])
    assert d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["state"] == "FIN_WAIT"


def test_tunnel_wraps_in_ipip_toward_the_real_server() -> None:
    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10 -i\n"
    d = Director(parse_rules(rules), seed=1, tunnel_source="10.0.0.254")
    frame = tcp("100.64.0.1", 1000, VIP, 80, "S", payload=b"x" * 10)
    out, v = d.process_packets([frame])
    assert v == [V.FWD_TUN]
    outer = dpkt.ethernet.Ethernet(out[0]).data
    assert outer.p == 4 and outer.src == bytes([10, 0, 0, 254]) and outer.dst == bytes([192, 168, 0, 10])
    assert dpkt.in_cksum(bytes(outer)[:20]) == 0 and outer.len == len(frame) - 14 + 20
    inner = bytes(outer)[20:]
    assert inner[16:20] == bytes([10, 10, 0, 1]) and inner[8] == 63  # VIP kept, TTL - 1
    assert checksums_ok(out[0][:14] + inner)
    assert outer.ttl == 63 and outer.df == 0  # the inner header had no DF


def test_tunnel_mtu_drops_big_df_packets() -> None:
    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10 -i\n"
    d = Director(parse_rules(rules), seed=1, tunnel_mtu=100)
    big = bytearray(tcp("100.64.0.1", 1000, VIP, 80, "S", payload=b"y" * 80))
    big[14 + 6] |= 0x40  # DF
    big[14 + 10: 14 + 12] = b"\0\0"
    big[14 + 10: 14 + 12] = dpkt.in_cksum(bytes(big[14:34])).to_bytes(2, "big")
    _, v = d.process_packets([bytes(big)])
    assert v == [V.DROP_MTU]


def test_mixed_methods_in_one_batch() -> None:
    rules = (f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m\n"
             f"-a -t {VIP}:80 -r 192.168.0.11 -i\n-a -t {VIP}:80 -r 192.168.0.12 -g\n")
    d = Director(parse_rules(rules), seed=1)
    out, v = d.process_packets([tcp("100.64.0.1", 1000 + i, VIP, 80, "S") for i in range(6)])
    assert sorted(v) == sorted([V.FWD_IN, V.FWD_TUN, V.FWD_DR] * 2)
    for f, code in zip(out, v, strict=True):
        if code == V.FWD_TUN:
            assert len(f) == 14 + 20 + 40  # the outer header in front of the whole datagram


def test_tunnel_stage_with_empty_and_out_of_buffer_slots() -> None:
    """Regression (found by the fuzzer on the bounds-checked build): the tunnel output
    stage must not read a slot the engine refused as outside the buffer, nor index
    past the end for an empty last record."""
    import numpy as np

    from fastvs.capture.batch import PacketBatch

    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10 -i\n"
    d = Director(parse_rules(rules), seed=1)
    syn = tcp("100.64.0.1", 1000, VIP, 80, "S")
    b = PacketBatch.from_packets([syn, syn, b""])
    b.off[1] = len(b.buf) - 4  # claims 54 bytes where only 4 remain
    d.process(b)
    assert [int(v) for v in b.verdict] == [V.FWD_TUN, V.DROP_BAD_SLOT, V.DROP_L2_TRUNCATED]
    assert int(b.caplen[0]) == len(syn) + 20 and int(b.caplen[1]) == 0 and int(b.caplen[2]) == 0
    assert int(b.off[2]) <= len(b.buf) and np.all(b.off[:1] + b.caplen[:1] <= len(b.buf))


def test_summary_counts_dr_and_tunnel_forwarding(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    rules = tmp_path / "r.rules"
    rules.write_text(f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10 -i\n-a -t {VIP}:80 -r 192.168.0.11 -g\n")
    cap = tmp_path / "in.pcap"
    with open(cap, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i in range(4):
            w.writepkt(tcp("100.64.0.1", 1000 + i, VIP, 80, "S"), 1.0 + i)
    r = subprocess.run([sys.executable, "-m", "fastvs.cli", "process", str(cap), "-r", str(rules)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "forwarded to real servers 4" in r.stdout
    assert "fwd_dr" in r.stdout and "fwd_tun" in r.stdout
