"""Every real-world capture in pcaps/real goes through fastvs.

For each file, twice: with rules that match a service seen in it (the busiest TCP
destination that receives a SYN, and the busiest UDP destination) and with rules that
match nothing. What must hold: no error; packets in = written + dropped; packets fastvs
did not rewrite leave byte-identical; rewritten packets carry checksums that dpkt
verifies when the input's verified (a capture with offloaded, invalid checksums stays
exactly as invalid); the CLI runs on each file and exits 0. And the folder itself is
whole: every file its manifest lists, with the manifest's sha256, and nothing else.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import struct
from contextlib import redirect_stdout
from pathlib import Path

import dpkt
import numpy as np
import pytest

from fastvs import verdicts as V
from fastvs.capture.pcap import open_capture
from fastvs.cli import main as cli_main
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules
from fastvs.datapath._packet import parse

from conftest import REAL, REAL_FILES

FILES = [p.name for p in REAL_FILES]


def test_real_captures_are_all_there_and_intact() -> None:
    """pcaps/real holds exactly the captures manifest.json lists, byte for byte (the
    parametrized tests here and in tests/capture/test_pcap.py run over the folder, so a
    missing or partial copy must fail here rather than quietly thin them out)."""
    manifest = json.loads((REAL / "manifest.json").read_text())["files"]
    assert len(manifest) == 39
    assert FILES == sorted(f["name"] for f in manifest)
    for f in manifest:
        data = (REAL / f["name"]).read_bytes()
        assert len(data) == f["size"], f["name"]
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["name"]
    assert (REAL / "PROVENANCE.md").is_file()
    assert (REAL.parent / "PROVENANCE.md").is_file()


def pick_rules(path: Path) -> str:
    """Services aimed at the capture's busiest TCP (SYN-receiving) and UDP destinations."""
    b = open_capture(path).read_all()
    tcp: collections.Counter[tuple[str, int]] = collections.Counter()
    udp: collections.Counter[tuple[str, int]] = collections.Counter()
    sctp: collections.Counter[tuple[str, int]] = collections.Counter()
    for i in range(len(b)):
        code, f = parse(b.packet(i), int(b.linktype[i]), int(b.wirelen[i]))
        if code != 255:
            continue
        if f["proto"] == 6 and f["tcpflags"] & 0x02 and not f["tcpflags"] & 0x10:
            tcp[(f["dst"], f["dport"])] += 1
        elif f["proto"] == 17:
            udp[(f["dst"], f["dport"])] += 1
        elif f["proto"] == 132 and f["tcpflags"] == 1:  # SCTP INIT
            sctp[(f["dst"], f["dport"])] += 1
    lines = []
    for opt, counter, rs in (("-t", tcp, "198.51.100."), ("-u", udp, "203.0.113."),
                             ("--sctp-service", sctp, "192.0.2.")):
        if counter:
            (addr, port), _ = counter.most_common(1)[0]
            vip = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
            real = (lambda i: f"[2001:db8::{i}]:{port}") if ":" in addr else (lambda i: f"{rs}{i}:{port}")  # noqa: B023
            lines.append(f"-A {opt} {vip} -s rr")
            lines.append(f"-a {opt} {vip} -r {real(1)} -m -w 1")
            lines.append(f"-a {opt} {vip} -r {real(2)} -m -w 1")
    return "\n".join(lines) + "\n"


NOTHING = "-A -t 192.0.2.77:9 -s rr\n-a -t 192.0.2.77:9 -r 192.0.2.78:9 -m\n"


def l4_checksum_ok(frame: bytes, linktype: int, wirelen: int) -> bool | None:
    """dpkt's verdict on the IPv4 header and TCP/UDP checksums; None if not checkable."""
    code, f = parse(frame, linktype, wirelen)
    if not f or "cut" not in f or f["cut"] or f["frag"]:
        return None
    raw = frame[f["l3off"]: f["l3off"] + f["l3len"]]
    if f["af"] == 4:
        ip = dpkt.ip.IP(raw)
        if dpkt.in_cksum(raw[: ip.hl * 4]) != 0:
            return False
        src, dst = ip.src, ip.dst
    else:
        src, dst = raw[8:24], raw[24:40]
    if f["proto"] not in (6, 17) or code != 255:
        return None
    l4 = raw[f["l4off"] - f["l3off"]:]
    if f["proto"] == 17 and l4[6:8] == b"\x00\x00":
        return True
    if f["af"] == 4:
        pseudo = src + dst + bytes([0, f["proto"]]) + struct.pack("!H", len(l4))
    else:
        pseudo = src + dst + struct.pack("!I", len(l4)) + bytes([0, 0, 0, f["proto"]])
    return dpkt.in_cksum(pseudo + l4) == 0


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("which", ["matching", "nothing"])
def test_real_capture(name: str, which: str) -> None:
    path = REAL / name
    rules = pick_rules(path) if which == "matching" else NOTHING
    d = Director(parse_rules(rules or NOTHING), seed=3)
    reader = open_capture(path, chunk_bytes=1 << 20)
    n_in = n_written = n_dropped = rewritten = 0
    for batch in reader:
        before = [batch.packet(i) for i in range(len(batch))]
        ok_before = [l4_checksum_ok(p, int(batch.linktype[i]), int(batch.wirelen[i])) for i, p in enumerate(before)]
        written = d.process(batch)
        v = batch.verdict
        n_in += len(batch)
        n_written += written
        n_dropped += int(np.count_nonzero(v >= V.DROP_BASE))
        for i in range(len(batch)):
            after = batch.packet(i)
            if v[i] < V.FWD_IN or v[i] >= V.DROP_BASE:
                assert after == before[i], f"{name} packet {i} changed with verdict {V.name(int(v[i]))}"
            else:
                rewritten += 1
                if ok_before[i]:
                    assert l4_checksum_ok(after, int(batch.linktype[i]), int(batch.wirelen[i])) is not False
    assert n_in == reader.packets == n_written + n_dropped
    s = d.summary()
    assert s["packets_in"] == s["packets_out"] + s["dropped"] == n_in
    if which == "nothing":
        assert rewritten == 0
    # and the command line takes it too
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main(["process", str(path), "-r", _write_rules(path.name, rules or NOTHING), "--json", "--seed", "3"])
    assert rc == 0
    doc = json.loads(out.getvalue())
    assert doc["summary"]["packets_in"] == n_in


def _write_rules(tag: str, text: str) -> str:
    import tempfile

    f = tempfile.NamedTemporaryFile("w", suffix=f".{tag}.rules", delete=False)
    f.write(text)
    f.close()
    return f.name


def test_some_real_traffic_is_balanced() -> None:
    """The matching rules really take traffic: the clients' packets are DNAT'd. (The
    servers' replies in these captures come from the original server, which is the
    VIP here, not from a real server, so they pass as non-IPVS traffic.)"""
    for name in ("dpkt_http.pcap", "zeek_http-methods.pcap", "zeek_echo-connections.pcap",
                 "zeek_communityid-sctp.pcap"):
        path = REAL / name
        d = Director(parse_rules(pick_rules(path)), seed=3)
        for b in open_capture(path):
            d.process(b)
        c = d.counters()
        assert c.get("fwd_in", 0) > 0, (name, c)


# What fastvs does to real captures of each kind, with rules aimed at their own traffic
# (pick_rules). Each line says why; the counts are the verdicts fastvs gave.
EXPECTED = {
    # QinQ-tagged HTTP: the client's 7 packets are DNAT'd through two VLAN tags
    "zeek_http-qinq-0.pcap": {"fwd_in": 7, "pass_not_service": 7},
    # Linux cooked capture (SLL), nanosecond pcap: the handshake's client packets
    "tcpdump_tcp-handshake-nano.pcap": {"fwd_in": 2, "pass_not_service": 1},
    # raw IP (DLT 101) with IPv6 HTTP balanced; its IPv4 packets carry header checksum 0
    # (offloaded on the capturing host), which ip_rcv refuses
    "ppp_raw_ip.pcap": {"fwd_in": 30, "drop_ip_csum": 46},
    # IPv6 ssh session balanced; ICMPv6 (ND, echo, errors about other flows) untouched
    "arkime_v6.pcap": {"fwd_in": 51, "pass_proto": 48},
    # pcapng, two interfaces: one SYN opens a connection, the rest of the flows began
    # before the capture (no SYN: not forwarded, as the kernel's tcp_conn_schedule)
    "ppp_pcapng-example.pcapng": {"fwd_in": 1, "drop_tcp_no_conn": 28},
    # ICMP 3/4 from the client's router about the client's own packets: not IPVS's
    "zeek_smtp.pcap": {"fwd_in": 29, "pass_proto": 4},
    # AFS over UDP in IPv4 fragments: fragments to the service follow their first
    "tcpdump_afs.pcap": {"fwd_in": 149, "pass_proto": 25},
    # IPv6 fragments of DNS answers from the server: replies from the VIP itself
    "zeek_ipv6-fragmented-dns.pcap": {"fwd_in": 3, "pass_fragment": 3},
    # the first fragment arrives last: the 7 before it have nothing to follow
    "ppp_frag_with_padding.pcap": {"fwd_in": 1, "pass_fragment": 7},
    # raw IPv4 (DLT 228): a syslog TCP session
    "zeek_tcp-syslog.pcap": {"fwd_in": 8},
    # SCTP association: INIT opens it, the client's chunks follow
    "zeek_communityid-sctp.pcap": {"fwd_in": None},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_what_fastvs_did(name: str) -> None:
    d = Director(parse_rules(pick_rules(REAL / name)), seed=3)
    for b in open_capture(REAL / name):
        d.process(b)
    got = d.counters()
    for verdict, n in EXPECTED[name].items():
        if n is None:
            assert got.get(verdict, 0) > 0, got
        else:
            assert got.get(verdict, 0) == n, (verdict, got)
