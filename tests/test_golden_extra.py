"""More golden captures from a real Linux 6.1 IPVS director: the corners the first five
(tests/test_golden.py) do not reach. See tests/golden/CASES.md; the inputs are made and
recorded by ``tools/kernlab_golden.py record NAME`` (kernlab, ``run.sh --pps 100``).

For each case fastvs processes ``NAME.pcap`` with ``NAME.rules`` and must send the same IP
datagrams as the kernel did (``NAME.kernel.pcap``; from the IP header to the IP total
length, Ethernet differs), per side (client-facing NIC, server-facing NIC) in order, and
end with the same connections (``ipvsadm -L -n -c``) and ActiveConn/InActConn
(``ipvsadm -L -n``) and connection counts (``--stats``).

Where the kernel sends something fastvs does not model (its own stack's answers: ICMP
errors, RSTs, echo replies, reassembly, IP option processing), the full comparison is an
``xfail(strict=True)`` naming the reason, and ``test_known_differences`` pins the
difference down exactly: which datagrams only one side sent, summarised (the kernel's own
ICMP and RST packets carry IP IDs it picks at random, so they are compared by fields).
"""

from __future__ import annotations

import re
import socket
import struct
from collections import Counter
from pathlib import Path

import dpkt
import pytest

from fastvs.capture.pcap import open_capture
from fastvs.control.director import Director
from fastvs.control.rules import load_rules

pytestmark = pytest.mark.kernel

GOLDEN = Path(__file__).resolve().parent / "golden"
GUEST_MAC_CLIENT_SIDE = bytes.fromhex("525400770001")
GUEST_MAC_SERVER_SIDE = bytes.fromhex("525400780001")

# name -> Director options (the case's reason for them)
CASES: dict[str, dict] = {
    "x1-udp-csum0": {},
    "x2-ttl": {},
    "x3-reuse-lc": {},
    "x4-reuse-lc-mode0": {"conn_reuse_mode": 0},  # recorded with net.ipv4.vs.conn_reuse_mode=0
    "x5-stray": {"director_view": True},  # non-IPVS traffic: the director's own view
    "x6-malformed": {},
    "x7-lc-wlc-200": {},
    "x8-onepacket": {"director_view": True},  # the answers without a connection are routed
    "x9-ftp-persist": {},
    "x10-sloppy-tcp": {"sloppy_tcp": True},  # recorded with net.ipv4.vs.sloppy_tcp=1
}
# control-plane cases (issue 11): c1 was recorded with net.ipv4.vs.drop_packet=3
CASES.update({
    "c1-drop-packet": {"drop_packet": 3, "drop_entry": 0},
    "c2-rules-seq": {},
})

# Where fastvs and the kernel differ. KNOWN[name] = (reason, {summary: n} only the kernel
# sent, {summary: n} only fastvs sent), summaries as summarize() makes them; the full
# per-side comparison of these cases is xfail(strict=True) with the reason.
X2_REASON = ("the kernel answers a packet whose TTL runs out (TTL <= 1 on the forwarding "
             "path, both directions) with ICMP time exceeded, from the VIP to a client, from "
             "10.78.0.1 to a real server; fastvs drops it (drop_ttl) and sends nothing")
X5_REASON = ("the director's own stack answers what IPVS does not take: RST for TCP to a VIP "
             "without a connection or to a port without a service, ICMP port/protocol "
             "unreachable, echo replies, ICMP time exceeded for transit TTL 1; and the "
             "director's interface address 10.77.0.1 is local (fastvs's director_view knows "
             "only the VIPs, so it routes 10.77.0.1's packets on)")
X6_REASON = ("IP options: the kernel fills a Record Route slot (with the VIP) and answers "
             "malformed options with ICMP parameter problem; the kernel holds a lone "
             "first fragment for reassembly (fastvs NATs and forwards it and makes a "
             "connection); the snap-cut record reaches the kernel cut, so it is dropped "
             "(fastvs's default --truncated balance forwards it). (Source-routed packets "
             "are dropped and TCP with a bad data offset forwarded by both.)")
KNOWN: dict[str, tuple[str, dict[str, int], dict[str, int]]] = {
    "x2-ttl": (X2_REASON, {
        "icmp 10.77.0.100 > 10.77.0.21 type=11 code=0 ttl=64 len=68 quoting (tcp 10.77.0.21:40001 > 10.77.0.100:80 [S] ttl=1)": 1,
        "icmp 10.78.0.1 > 10.78.0.12 type=11 code=0 ttl=64 len=78 quoting (tcp 10.78.0.12:8080 > 10.77.0.21:40001 [PA] ttl=1)": 1,
        "icmp 10.77.0.100 > 10.77.0.22 type=11 code=0 ttl=64 len=68 quoting (tcp 10.77.0.22:40002 > 10.77.0.100:80 [FA] ttl=0)": 1,
        "icmp 10.78.0.1 > 10.78.0.11 type=11 code=0 ttl=64 len=68 quoting (tcp 10.78.0.11:8080 > 10.77.0.22:40002 [FA] ttl=0)": 1,
        "icmp 10.77.0.100 > 10.77.0.23 type=11 code=0 ttl=64 len=59 quoting (udp 10.77.0.23:5001 > 10.77.0.100:53 ttl=1)": 1,
        "icmp 10.78.0.1 > 10.78.0.11 type=11 code=0 ttl=64 len=61 quoting (udp 10.78.0.11:5353 > 10.77.0.23:5001 ttl=1)": 1,
        "icmp 10.77.0.100 > 10.77.0.24 type=11 code=0 ttl=64 len=60 quoting (udp 10.77.0.24:5002 > 10.77.0.100:53 ttl=0)": 1,
        "icmp 10.77.0.100 > 10.77.0.25 type=11 code=0 ttl=64 len=68 quoting (tcp 10.77.0.25:40003 > 10.77.0.100:80 [S] ttl=1)": 1,
    }, {}),
    "x8-onepacket": (X2_REASON, {
        "icmp 10.77.0.100 > 10.77.0.5 type=11 code=0 ttl=64 len=60 quoting (udp 10.77.0.5:7000 > 10.77.0.100:53 ttl=1)": 1,
    }, {}),
    "x5-stray": (X5_REASON, {
        "tcp 10.77.0.100:80 > 10.77.0.30:42000 [R] ttl=64 len=40": 1,  # reply to a bare ACK
        "tcp 10.77.0.100:80 > 10.77.0.30:42002 [R] ttl=64 len=40": 1,  # FIN+ACK
        "tcp 10.77.0.100:80 > 10.77.0.30:42003 [R] ttl=64 len=40": 1,  # PSH+ACK with data
        "tcp 10.77.0.100:80 > 10.77.0.30:42005 [RA] ttl=64 len=40": 1,  # no flags
        "tcp 10.77.0.100:80 > 10.77.0.30:42007 [RA] ttl=64 len=40": 1,  # FIN alone
        "tcp 10.77.0.100:80 > 10.77.0.30:42008 [RA] ttl=64 len=40": 1,  # URG alone
        "tcp 10.77.0.100:22 > 10.77.0.31:42010 [RA] ttl=64 len=40": 1,  # SYN, no service
        "tcp 10.77.0.100:22 > 10.77.0.31:42011 [R] ttl=64 len=40": 1,
        "tcp 10.77.0.100:8080 > 10.77.0.31:42012 [RA] ttl=64 len=40": 1,
        "icmp 10.77.0.100 > 10.77.0.32 type=3 code=3 ttl=64 len=62 quoting (udp 10.77.0.32:42020 > 10.77.0.100:5353 ttl=64)": 1,
        "icmp 10.77.0.100 > 10.77.0.33 type=3 code=3 ttl=64 len=81 quoting (udp 10.77.0.33:42021 > 10.77.0.100:80 ttl=64)": 1,
        "icmp 10.77.0.100 > 10.77.0.34 type=0 code=0 ttl=64 len=32": 1,
        "tcp 10.77.0.1:80 > 10.77.0.35:42030 [RA] ttl=64 len=40": 1,
        "icmp 10.77.0.1 > 10.77.0.35 type=0 code=0 ttl=64 len=32": 1,
        "icmp 10.77.0.100 > 10.77.0.36 type=3 code=2 ttl=64 len=56 quoting (proto 47 10.77.0.36 > 10.77.0.100 ttl=64)": 1,
        "icmp 10.77.0.1 > 10.77.0.38 type=11 code=0 ttl=64 len=68 quoting (tcp 10.77.0.38:42042 > 10.99.0.5:80 [S] ttl=1)": 1,
    }, {
        "tcp 10.77.0.35:42030 > 10.77.0.1:80 [S] ttl=63 len=40": 1,  # routed, not local
        "icmp 10.77.0.35 > 10.77.0.1 type=8 code=0 ttl=63 len=32": 1,
    }),
    "x6-malformed": (X6_REASON, {
        # record route: the kernel wrote the VIP into the slot and moved the pointer
        "tcp 10.77.0.50:44002 > 10.78.0.11:8080 [S] ttl=63 len=48 opts=0707080a4d006400": 1,
        "icmp 10.77.0.100 > 10.77.0.51 type=12 code=0 ttl=64 len=72 quoting (tcp 10.77.0.51:44006 > 10.77.0.100:80 [S] ttl=64)": 1,
        "icmp 10.77.0.100 > 10.77.0.52 type=12 code=0 ttl=64 len=72 quoting (tcp 10.77.0.52:44007 > 10.77.0.100:80 [S] ttl=64)": 1,
        # (the two fragments of one datagram: the kernel reassembles, NATs and fragments
        # again at the same size; fastvs NATs each fragment: the same bytes)
    }, {
        "tcp 10.77.0.50:44002 > 10.78.0.11:8080 [S] ttl=63 len=48 opts=0707040000000000": 1,
        "udp 10.77.0.50:45021 > 10.78.0.11:5353 ttl=63 len=36": 1,  # the lone first fragment
        "tcp 10.77.0.2:44900 > 10.78.0.11:8080 [PA] ttl=63 len=50": 1,  # cut by the snap length
    }),
}
# c2: clients that hash to mh's slots of a server edited to weight 0 get no destination;
# the kernel answers them (ip_vs_leave: icmp_send port unreachable), fastvs drops them
C2_REASON = ("ip_vs_leave answers a SYN that finds no destination with ICMP port "
             "unreachable from the VIP; fastvs drops it (drop_no_dest) and sends nothing")
KNOWN["c2-rules-seq"] = (C2_REASON, {
    f"icmp 10.77.0.100 > 10.77.0.{h} type=3 code=3 ttl=64 len=68 quoting "
    f"(tcp 10.77.0.{h}:{40090 + h} > 10.77.0.100:80 [S] ttl=64)": 1 for h in (27, 30, 31, 32, 33)
}, {})
# x6: the connections only one side made also change the connection listing and counters
X6_CONNS = ("fastvs has a connection for the lone first fragment (the kernel still holds it "
            "for reassembly)")
XFAIL: dict[tuple[str, str], str] = {
    ("x6-malformed", "connections"): X6_CONNS,
    ("x6-malformed", "active"): X6_CONNS,
    ("x6-malformed", "stats"): X6_CONNS,
}
KNOWN_CONNS: dict[str, tuple[list[str], list[str]]] = {
    "x6-malformed": ([], [
        "UDP UDP 10.77.0.50:45021 10.77.0.100:53 10.78.0.11:5353",  # the lone fragment
    ]),
}


# ------------------------------------------------------------------------------ helpers
def _ip(b: bytes) -> str:
    return socket.inet_ntoa(b)


def summarize(dg: bytes, quoted: bool = False) -> str:
    """A datagram by the fields that identify it (no IP ID, no checksums). An ICMP error
    names the datagram it quotes (which is cut after 8 bytes of transport header)."""
    ihl = (dg[0] & 15) * 4
    p, src, dst, ttl = dg[9], _ip(dg[12:16]), _ip(dg[16:20]), dg[8]
    size = "" if quoted else f" len={len(dg)}"
    if ihl > 20 and not quoted:
        size += f" opts={dg[20:ihl].hex()}"
    l4 = dg[ihl:]
    if p == 6 and len(l4) >= 4:
        sp, dp = struct.unpack("!HH", l4[:4])
        fl = ""
        if len(l4) >= 14:
            fl = " [" + ("".join(c for c, b in zip("FSRPAU", (1, 2, 4, 8, 16, 32), strict=True)
                                 if l4[13] & b) or ".") + "]"
        return f"tcp {src}:{sp} > {dst}:{dp}{fl} ttl={ttl}{size}"
    if p == 17 and len(l4) >= 4:
        sp, dp = struct.unpack("!HH", l4[:4])
        return f"udp {src}:{sp} > {dst}:{dp} ttl={ttl}{size}"
    if p == 1 and len(l4) >= 8:
        s = f"icmp {src} > {dst} type={l4[0]} code={l4[1]} ttl={ttl}{size}"
        if l4[0] in (3, 11, 12) and len(l4) >= 28:
            s += f" quoting ({summarize(l4[8:], quoted=True)})"
        return s
    return f"proto {p} {src} > {dst} ttl={ttl}{size}"


def rules_addrs(name: str) -> tuple[set[str], set[str]]:
    rules = load_rules(GOLDEN / f"{name}.rules")
    vips = {s.addr for s in rules.services}
    rips = {r.addr for s in rules.services for r in s.reals}
    return vips, rips


def side_by_ip(dg: bytes, rips: set[str]) -> str:
    dst = _ip(dg[16:20])
    return "server" if dst in rips or dst.startswith("10.78.0.") else "client"


def run_fastvs(name: str) -> tuple[Director, list[bytes]]:
    d = Director(load_rules(GOLDEN / f"{name}.rules"), seed=1, **CASES[name])
    b = open_capture(GOLDEN / f"{name}.pcap").read_all()
    d.process(b)
    out = []
    for i in range(len(b)):
        if b.verdict[i] >= 64:
            continue
        fr = b.packet(i)
        if fr[12:14] != b"\x08\x00":
            continue
        ip = fr[14:]
        out.append(bytes(ip[: struct.unpack("!H", ip[2:4])[0]]))
    return d, out


def kernel_out(name: str) -> list[tuple[str, bytes]]:
    """(side by the guest NIC that sent it, IP datagram); ARP and other non-IP skipped."""
    res = []
    with open(GOLDEN / f"{name}.kernel.pcap", "rb") as f:
        for _, fr in dpkt.pcap.Reader(f):
            if fr[12:14] != b"\x08\x00":
                continue
            side = {GUEST_MAC_CLIENT_SIDE: "client", GUEST_MAC_SERVER_SIDE: "server"}[fr[6:12]]
            ip = fr[14:]
            res.append((side, bytes(ip[: struct.unpack("!H", ip[2:4])[0]])))
    return res


def kernel_section(name: str, title: str) -> str:
    text = (GOLDEN / f"{name}.kernel.ipvsadm.txt").read_text()
    parts = re.split(r"^== (.*)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))[title]


def _params(test: str) -> list:
    out = []
    for name in CASES:
        reason = KNOWN[name][0] if name in KNOWN and test == "datagrams" else XFAIL.get((name, test))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_sides_follow_addresses(name: str) -> None:
    """The kernel's NIC for each datagram is the one its destination implies, so fastvs's
    output (which has no NIC) can be split the same way."""
    _, rips = rules_addrs(name)
    for side, dg in kernel_out(name):
        assert side == side_by_ip(dg, rips), summarize(dg)


@pytest.mark.parametrize("name", _params("datagrams"))
def test_same_datagrams_per_side_in_order(name: str) -> None:
    _, rips = rules_addrs(name)
    _, mine = run_fastvs(name)
    kern = kernel_out(name)
    for side in ("client", "server"):
        k = [dg for s, dg in kern if s == side]
        m = [dg for dg in mine if side_by_ip(dg, rips) == side]
        for i, (a, b) in enumerate(zip(m, k, strict=False)):
            assert a == b, (f"{side} side, datagram {i}:\n mine {summarize(a)}\n      {a.hex()}\n"
                            f" kern {summarize(b)}\n      {b.hex()}")
        assert len(m) == len(k), f"{side} side: fastvs {len(m)} datagrams, kernel {len(k)}"


@pytest.mark.parametrize("name", list(KNOWN))
def test_known_differences(name: str) -> None:
    """Exactly the listed datagrams differ (as a multiset); everything else is equal."""
    _, mine = run_fastvs(name)
    kc, mc = Counter(dg for _, dg in kernel_out(name)), Counter(mine)
    only_k = Counter(summarize(dg) for dg in (kc - mc).elements())
    only_m = Counter(summarize(dg) for dg in (mc - kc).elements())
    _, want_k, want_m = KNOWN[name]
    assert dict(only_k) == want_k
    assert dict(only_m) == want_m


def _conns(name: str) -> tuple[list[str], list[str]]:
    """(fastvs's, kernel's) connections as 'PROTO STATE client vip:vport real:port'."""
    d, _ = run_fastvs(name)
    rows = kernel_section(name, "ipvsadm -L -n -c").splitlines()[2:]
    kern = sorted(" ".join(r.split()[i] for i in (0, 2, 3, 4, 5)) for r in rows if r.strip())
    mine = sorted(
        f"{c['proto']} {c['state']} {c['caddr']}:{c['cport']} {c['vaddr']}:{c['vport']} "
        f"{c['daddr']}:{c['dport']}"
        for c in d.connections()
    )
    return mine, kern


@pytest.mark.parametrize("name", _params("connections"))
def test_same_connections_and_states(name: str) -> None:
    mine, kern = _conns(name)
    assert mine == kern


@pytest.mark.parametrize("name", list(KNOWN_CONNS))
def test_known_connection_differences(name: str) -> None:
    mine, kern = _conns(name)
    only_k = sorted(set(kern) - set(mine))
    only_m = sorted(set(mine) - set(kern))
    assert (only_k, only_m) == KNOWN_CONNS[name]


def _active_inactive(text: str) -> dict[tuple[str, str], tuple[int, int]]:
    res, vs = {}, None
    for ln in text.splitlines():
        t = ln.split()
        if len(t) >= 2 and t[0] in ("TCP", "UDP"):
            vs = f"{t[0]} {t[1]}"
        elif len(t) >= 6 and t[0] == "->" and vs and t[1][0].isdigit():
            res[(vs, t[1])] = (int(t[4]), int(t[5]))
    return res


@pytest.mark.parametrize("name", _params("active"))
def test_same_active_inactive(name: str) -> None:
    d, _ = run_fastvs(name)
    kern = _active_inactive(kernel_section(name, "ipvsadm -L -n"))
    mine = {}
    for s in d.services():
        for r in s["reals"]:
            mine[(f"{s['proto'].upper()} {s['addr']}:{s['port']}", f"{r['addr']}:{r['port']}")] = (
                r["activeconns"], r["inactconns"])
    assert mine == kern


def _stats_rows(text: str) -> dict:
    res, vs = {}, None
    for ln in text.splitlines():
        t = ln.split()
        if len(t) == 7 and t[0] in ("TCP", "UDP"):
            vs = f"{t[0]} {t[1]}"
            res[vs] = tuple(int(x) for x in t[2:])
        elif len(t) == 7 and t[0] == "->" and vs:
            res[(vs, t[1])] = tuple(int(x) for x in t[2:])
    return res


def _my_stats(d: Director) -> dict:
    res = {}
    keys = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
    for s in d.services():
        vs = f"{s['proto'].upper()} {s['addr']}:{s['port']}"
        res[vs] = tuple(s["stats"][k] for k in keys)
        for r in s["reals"]:
            res[(vs, f"{r['addr']}:{r['port']}")] = tuple(r["stats"][k] for k in keys)
    return res


@pytest.mark.parametrize("name", _params("stats"))
def test_same_stats(name: str) -> None:
    """Connections, packets and bytes in and out per service and real server
    (``ipvsadm -L -n --stats``). The kernel's listing was taken 2.5 s after the run, one
    tick of its rate estimator later, so it counts every packet."""
    d, _ = run_fastvs(name)
    assert _my_stats(d) == _stats_rows(kernel_section(name, "ipvsadm -L -n --stats"))
