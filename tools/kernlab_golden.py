#!/usr/bin/env python3
"""Record what a real Linux IPVS director does, as golden files for fastvs's tests.

The referee is kernlab (a Linux 6.1 IPVS director in a qemu VM, kept outside this
repository; see its README). This script makes the inputs, runs them through kernlab and
stores the kernel's answers under tests/golden/ so that CI can compare fastvs without the
VM.

  tools/kernlab_golden.py gen NAME|all [--out DIR]      write NAME.pcap, NAME.rules
                                                          (+ NAME.sysctl) only
  tools/kernlab_golden.py record NAME|all [--pps 100] [--kernlab DIR]
                                                        gen + run through the kernel +
                                                          store tests/golden/NAME.*
  tools/kernlab_golden.py step [--from PREFIX] [--kernlab DIR]
                                                        lab.sh step --matrix + the
                                                          scenarios below, stored in
                                                          tests/golden/step/
  tools/kernlab_golden.py list                          the cases and what they test

``record`` and ``step`` need root (kernlab makes a network namespace and taps and boots
qemu) and kernlab's location: ``--kernlab DIR`` or the KERNLAB environment variable;
it is copied to a private directory first, where its end-of-run dump waits 2.5 s (one
tick of the rate estimator, so that ``--stats`` counts every packet) and also lists
``ipvsadm -L -n`` (ActiveConn/InActConn), which the stock dump lacks.

Record with the host otherwise idle: under CPU load the guest may handle the server-side
NIC's queue before the client side's (a SYN-ACK then passes un-NATed, its SYN not yet
seen). The golden tests show such a recording at once.

Cases (each < 300 packets, replayed at --pps 100, i.e. one packet per 10 ms of capture
time, so capture timestamps and the VM's wall clock agree; no case relies on a timeout):

  x1-udp-csum0     UDP with checksum 0 both ways (and datagrams whose computed checksum
                   is 0, sent as 0xFFFF), next to normal and wrong checksums
  x2-ttl           TTL 0, 1 and 2 both ways on TCP and UDP connections
  x3-reuse-lc      SYN re-using a client port in TIME_WAIT / CLOSE / FIN_WAIT / CLOSE_WAIT,
                   lc so that the old entry's counters decide the pick (conn_reuse_mode=1)
  x4-reuse-lc-mode0  the same with net.ipv4.vs.conn_reuse_mode=0
  x5-stray         stray ACK/RST/FIN/... to a VIP with no connection, non-service ports
                   on the VIP, ICMP echo, the director's own address, transit traffic
                   both ways (compare with director_view=True)
  x6-malformed     IPv4 options (NOP, RR, LSRR, RA, unknown, malformed), bad header
                   checksum, total length longer/shorter than the frame, IHL < 5, bad
                   version, TCP data offset < 5 or too big, short TCP/UDP headers, bad UDP
                   length, wrong L4 checksums, a snap-length-cut record, fragments
  x7-lc-wlc-200    200 TCP and UDP flows interleaved over an lc and a wlc service
  x8-onepacket     one-packet scheduling (-o) on UDP services, with and without -p
  x9-ftp-persist   a persistent FTP service catching the client's data connections
  x10-sloppy-tcp   net.ipv4.vs.sloppy_tcp=1: non-SYN segments make connections

Control-plane cases (recorded at --pps 20):

  c1-drop-packet   net.ipv4.vs.drop_packet=3: ip_vs_todrop refuses the 1st, 11th, 21st
                   new connection (TCP and UDP share the counter)
  c2-rules-seq     a rules file with -e, -d and -E lines, applied line by line: mh keeps
                   the slots of a server edited to weight 0, -E binds wrr over the
                   servers already there
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
STEP_DIR = GOLDEN / "step"

GUEST_MAC0 = bytes.fromhex("525400770001")  # kernlab guest eth0 (client side)
GUEST_MAC1 = bytes.fromhex("525400780001")  # guest eth1 (server side)
CLIENT_MAC = bytes.fromhex("027700000002")
NS = 1_000_000_000
T0 = 1_700_000_000 * NS

# lab.sh step: these plus --matrix (kl.py's 7 states x 10 packet kinds + 7 extras)
STEP_SCENARIOS = [
    "c:S s:SA c:A c:FA", "c:S c:RA", "c:S s:SA c:A c:PA s:PA c:FA s:FA c:A", "c:S s:R",
    "c:S c:-", "c:SA", "c:S s:SA c:A s:FA c:A", "c:S s:SA c:A c:FA s:A s:FA c:A",
    "c:S s:SA c:A c:FA s:FA c:A c:S", "c:S s:R c:S", "c:S s:SA c:A c:S", "c:S s:S",
    "c:S s:SA c:A c:R", "c:S s:SA c:A s:R", "c:S c:F", "c:S c:A", "c:S s:A", "c:SF", "c:SR",
    "c:S s:SA c:A c:PA c:PA s:A", "c:S s:SA c:A c:FA s:FA c:A c:A",
    "c:S s:SA c:A s:FA c:FA s:A c:S", "c:S c:R c:S", "c:S s:SA c:A c:RA c:S",
    "c:S s:SA c:A c:RA c:A",
]


# ------------------------------------------------------------------------------ packets
def ip2b(s: str) -> bytes:
    return socket.inet_aton(s)


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def real_mac(ip: str) -> bytes:
    return bytes([0x02, 0x52]) + ip2b(ip)


def ipv4(src: str, dst: str, proto: int, l4: bytes, *, ttl: int = 64, ident: int = 1,
         options: bytes = b"", frag: int = 0x4000, tot: int | None = None, ihl: int | None = None,
         version: int = 4, bad_csum: bool = False) -> bytes:
    hl = 20 + len(options)
    assert hl % 4 == 0
    ihl = hl // 4 if ihl is None else ihl
    tot = hl + len(l4) if tot is None else tot
    h = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tot, ident, frag, ttl, proto, 0,
                    ip2b(src), ip2b(dst)) + options
    c = csum(h)
    if bad_csum:
        c ^= 0x5A5A
    return h[:10] + struct.pack("!H", c) + h[12:] + l4


def tcp_seg(src: str, sport: int, dst: str, dport: int, flags: str, *, seq: int = 0, ack: int = 0,
            payload: bytes = b"", doff: int = 5, bad_csum: bool = False) -> bytes:
    f = sum({"F": 1, "S": 2, "R": 4, "P": 8, "A": 16, "U": 32}[c] for c in flags.replace("-", ""))
    t = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, f, 65535, 0, 0) + payload
    c = csum(ip2b(src) + ip2b(dst) + struct.pack("!BBH", 0, 6, len(t)) + t)
    if bad_csum:
        c ^= 0x00FF
    return t[:16] + struct.pack("!H", c) + t[18:]


def udp_dgram(src: str, sport: int, dst: str, dport: int, payload: bytes, *, zero: bool = False,
              ulen: int | None = None, bad_csum: bool = False) -> bytes:
    ulen = 8 + len(payload) if ulen is None else ulen
    u = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    if zero:
        return u
    c = csum(ip2b(src) + ip2b(dst) + struct.pack("!BBH", 0, 17, len(u)) + u) or 0xFFFF
    if bad_csum:
        c ^= 0x00FF
    return u[:6] + struct.pack("!H", c) + u[8:]


def payload_for_zero_csum(src: str, dst: str, sport: int, dport: int, n: int) -> bytes:
    """n payload bytes (n even, >= 2) such that the UDP checksum over src->dst:dport,
    computed in full, is 0 (sent as 0xFFFF, RFC 768)."""
    body = bytes((i * 7 + 1) & 0xFF for i in range(n - 2)) + b"\0\0"
    u = struct.pack("!HHHH", sport, dport, 8 + n, 0) + body
    c = csum(ip2b(src) + ip2b(dst) + struct.pack("!BBH", 0, 17, len(u)) + u)
    return body[:-2] + struct.pack("!H", c)


def ether(ip: bytes, server_side: bool, src_ip: str) -> bytes:
    if server_side:
        fr = GUEST_MAC1 + real_mac(src_ip) + b"\x08\x00" + ip
    else:
        fr = GUEST_MAC0 + CLIENT_MAC + b"\x08\x00" + ip
    return fr + b"\0" * max(0, 60 - len(fr))


def write_pcap(path: Path, records: list[tuple[int, bytes, int]]) -> None:
    """records: (ts_ns, captured bytes, original length); classic pcap, µs."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, fr, orig in records:
            f.write(struct.pack("<IIII", ts // NS, (ts % NS) // 1000, len(fr), orig))
            f.write(fr)


# ------------------------------------------------------------------------------ cases
class Capture:
    """Builds a capture packet by packet. A fastvs Director follows along so that a real
    server's reply can be addressed from the server the connection went to (the kernel is
    expected to pick the same one; if it does not, the golden test shows it at once)."""

    def __init__(self, rules: str, **director_kw: object) -> None:
        try:
            import fastvs  # noqa: F401
        except ImportError:
            sys.path.insert(0, str(REPO))
        from fastvs.control.director import Director
        from fastvs.control.rules import parse_rules

        self.rules = rules.strip() + "\n"
        self.d = Director(parse_rules(self.rules), seed=1, **director_kw)  # type: ignore[arg-type]
        self.records: list[tuple[int, bytes, int]] = []
        self.ident = 0
        self.seqs: dict[tuple, list[int]] = {}

    def now(self) -> int:
        return T0 + len(self.records) * NS // 100

    def add(self, frame: bytes, orig: int | None = None) -> None:
        self.d.process_packets([frame], [self.now()])
        self.records.append((self.now(), frame, len(frame) if orig is None else orig))

    def next_id(self) -> int:
        self.ident += 1
        return self.ident

    def server_of(self, proto: str, client: str, cport: int, vip: str, vport: int) -> tuple[str, int]:
        c = self.d.lookup(proto, client, cport, vip, vport)
        if c is None:
            raise SystemExit(f"no connection for {proto} {client}:{cport} -> {vip}:{vport}")
        return c["daddr"], c["dport"]

    # client -> VIP and real server -> client, with seq/ack bookkeeping per flow
    def c_tcp(self, client: str, cport: int, vip: str, vport: int, flags: str, *,
              payload: bytes = b"", ttl: int = 64, **kw: object) -> None:
        s = self.seqs.setdefault((client, cport, vip, vport), [1000 + cport, 0])
        if "S" in flags and "A" not in flags:
            s[1] = 0
        ack = s[1] if "A" in flags else 0
        seg = tcp_seg(client, cport, vip, vport, flags, seq=s[0], ack=ack, payload=payload)
        s[0] += len(payload) + ("S" in flags) + ("F" in flags)
        self.add(ether(ipv4(client, vip, 6, seg, ttl=ttl, ident=self.next_id(), **kw), False, client))

    def s_tcp(self, client: str, cport: int, vip: str, vport: int, flags: str, *,
              payload: bytes = b"", ttl: int = 64) -> None:
        rip, rport = self.server_of("tcp", client, cport, vip, vport)
        s = self.seqs.setdefault((client, cport, vip, vport), [1000 + cport, 0])
        if "S" in flags:
            s[1] = 900000 + cport
        seg = tcp_seg(rip, rport, client, cport, flags, seq=s[1], ack=s[0] if "A" in flags else 0,
                      payload=payload)
        s[1] += len(payload) + ("S" in flags) + ("F" in flags)
        self.add(ether(ipv4(rip, client, 6, seg, ttl=ttl, ident=self.next_id()), True, rip))

    def c_udp(self, client: str, cport: int, vip: str, vport: int, payload: bytes, *,
              ttl: int = 64, zero: bool = False, **kw: object) -> None:
        u = udp_dgram(client, cport, vip, vport, payload, zero=zero)
        self.add(ether(ipv4(client, vip, 17, u, ttl=ttl, ident=self.next_id(), **kw), False, client))

    def s_udp(self, client: str, cport: int, vip: str, vport: int, payload: bytes, *,
              ttl: int = 64, zero: bool = False) -> None:
        rip, rport = self.server_of("udp", client, cport, vip, vport)
        u = udp_dgram(rip, rport, client, cport, payload, zero=zero)
        self.add(ether(ipv4(rip, client, 17, u, ttl=ttl, ident=self.next_id()), True, rip))

    def raw(self, src: str, ip: bytes, server_side: bool = False, orig: int | None = None) -> None:
        self.add(ether(ip, server_side, src), orig)

    def handshake(self, client: str, cport: int, vip: str, vport: int) -> None:
        self.c_tcp(client, cport, vip, vport, "S")
        self.s_tcp(client, cport, vip, vport, "SA")
        self.c_tcp(client, cport, vip, vport, "A")


VIP = "10.77.0.100"


def case_x1() -> tuple[Capture, str]:
    cap = Capture(f"""
-A -u {VIP}:53 -s rr
-a -u {VIP}:53 -r 10.78.0.11:5353 -m -w 1
-a -u {VIP}:53 -r 10.78.0.12:5353 -m -w 1
-A -u {VIP}:123 -s rr
-a -u {VIP}:123 -r 10.78.0.13:123 -m -w 1
""")
    for i in range(8):
        cl, cp = f"10.77.0.{10 + i}", 20000 + i
        vport = 123 if i % 4 == 3 else 53
        size = (0, 1, 5, 16, 33, 100, 2, 7)[i]
        cap.c_udp(cl, cp, VIP, vport, bytes(range(size)), zero=True)
        cap.s_udp(cl, cp, VIP, vport, bytes(range(size, 0, -1)), zero=True)
        cap.c_udp(cl, cp, VIP, vport, b"q" * (size + 3), zero=i % 2 == 0)
        cap.s_udp(cl, cp, VIP, vport, b"r" * (size + 1), zero=i % 2 == 1)
    # checksum 0 in, and the full checksum the director computes comes out as 0 -> 0xFFFF
    for i in range(3):
        cl, cp = f"10.77.0.{30 + i}", 21000 + i
        cap.c_udp(cl, cp, VIP, 53, b"hello", zero=True)
        rip, rport = cap.server_of("udp", cl, cp, VIP, 53)
        pl = payload_for_zero_csum(cl, rip, cp, rport, 8 + 2 * i)  # after DNAT
        cap.raw(cl, ipv4(cl, VIP, 17, udp_dgram(cl, cp, VIP, 53, pl, zero=True), ident=cap.next_id()))
        pl = payload_for_zero_csum(VIP, cl, 53, cp, 6 + 2 * i)  # after SNAT
        cap.raw(rip, ipv4(rip, cl, 17, udp_dgram(rip, rport, cl, cp, pl, zero=True), ident=cap.next_id()),
                server_side=True)
    # a wrong non-zero checksum stays wrong by the same amount; a right one stays right
    cl, cp = "10.77.0.40", 22000
    cap.raw(cl, ipv4(cl, VIP, 17, udp_dgram(cl, cp, VIP, 53, b"bad", bad_csum=True), ident=cap.next_id()))
    rip, rport = cap.server_of("udp", cl, cp, VIP, 53)
    cap.raw(rip, ipv4(rip, cl, 17, udp_dgram(rip, rport, cl, cp, b"bad!", bad_csum=True),
                      ident=cap.next_id()), server_side=True)
    cap.c_udp(cl, cp, VIP, 53, b"good")
    cap.s_udp(cl, cp, VIP, 53, b"good")
    return cap, "UDP, checksum 0 both ways (full checksum computed; a computed 0 sent as 0xFFFF), bad and good checksums"


def _tcp_rules(sched: str, n: int = 2, udp: bool = True) -> str:
    r = f"-A -t {VIP}:80 -s {sched}\n"
    r += "".join(f"-a -t {VIP}:80 -r 10.78.0.{11 + i}:8080 -m -w 1\n" for i in range(n))
    if udp:
        r += f"-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r 10.78.0.11:5353 -m -w 1\n"
    return r


def case_x2() -> tuple[Capture, str]:
    cap = Capture(_tcp_rules("rr"))
    # ICMP time exceeded is rate-limited per peer (burst 6): every expiring packet comes
    # from (or goes to) its own address where possible
    a, b, c = "10.77.0.21", "10.77.0.22", "10.77.0.23"
    cap.c_tcp(a, 40001, VIP, 80, "S", ttl=1)        # conn created, packet dies
    cap.c_tcp(a, 40001, VIP, 80, "S")               # retransmission goes through
    cap.s_tcp(a, 40001, VIP, 80, "SA")
    cap.c_tcp(a, 40001, VIP, 80, "A", ttl=2)        # leaves with TTL 1
    cap.s_tcp(a, 40001, VIP, 80, "PA", payload=b"x" * 10, ttl=1)  # dies in ip_forward
    cap.s_tcp(a, 40001, VIP, 80, "PA", payload=b"y" * 10, ttl=2)
    cap.c_tcp(b, 40002, VIP, 80, "S", ttl=2)
    cap.s_tcp(b, 40002, VIP, 80, "SA", ttl=2)
    cap.c_tcp(b, 40002, VIP, 80, "A")
    cap.c_tcp(b, 40002, VIP, 80, "FA", ttl=0)       # TTL 0
    cap.s_tcp(b, 40002, VIP, 80, "FA", ttl=0)
    cap.c_tcp(b, 40002, VIP, 80, "FA", ttl=255)
    cap.c_udp(c, 5001, VIP, 53, b"one", ttl=1)
    cap.c_udp(c, 5001, VIP, 53, b"two", ttl=2)
    cap.s_udp(c, 5001, VIP, 53, b"r-one", ttl=1)
    cap.s_udp(c, 5001, VIP, 53, b"r-two", ttl=2)
    cap.c_udp("10.77.0.24", 5002, VIP, 53, b"zero", ttl=0)
    cap.c_tcp("10.77.0.25", 40003, VIP, 80, "S", ttl=1)  # never completed: stays SYN_RECV
    return cap, "TTL 0/1/2/255 both ways, TCP and UDP; the kernel answers expiring packets with ICMP time exceeded"


def _reuse(mode: int) -> tuple[Capture, str]:
    cap = Capture(_tcp_rules("lc", 3, udp=False), conn_reuse_mode=mode)
    cl = "10.77.0.2"
    # kernel list order .13 .12 .11 (ipvsadm -R links each at the head)
    cap.c_tcp(cl, 41000, VIP, 80, "S")                       # -> .13
    cap.s_tcp(cl, 41000, VIP, 80, "R")                       # CLOSE, inactive
    cap.c_tcp(cl, 41001, VIP, 80, "S")                       # -> .12
    cap.s_tcp(cl, 41001, VIP, 80, "R")                       # CLOSE, inactive
    cap.handshake(cl, 41002, VIP, 80)                        # -> .11
    cap.c_tcp(cl, 41002, VIP, 80, "FA")
    cap.s_tcp(cl, 41002, VIP, 80, "FA")
    cap.c_tcp(cl, 41002, VIP, 80, "A")                       # TIME_WAIT, inactive
    # all three at overhead 1; a SYN re-using 41002 (TIME_WAIT on .11): does the old entry
    # still count when the new one is scheduled?
    cap.c_tcp(cl, 41002, VIP, 80, "S")
    cap.s_tcp(cl, 41002, VIP, 80, "SA")
    cap.c_tcp(cl, 41002, VIP, 80, "A")
    cap.c_tcp(cl, 41000, VIP, 80, "S")                       # re-use a CLOSE entry
    cap.s_tcp(cl, 41000, VIP, 80, "SA")
    cap.c_tcp(cl, 41000, VIP, 80, "A")
    # FIN_WAIT and CLOSE_WAIT are not re-used (mode 1 re-uses TIME_WAIT and CLOSE only)
    cap.handshake(cl, 41003, VIP, 80)
    cap.s_tcp(cl, 41003, VIP, 80, "FA")                      # FIN_WAIT
    cap.c_tcp(cl, 41003, VIP, 80, "S")
    cap.handshake(cl, 41004, VIP, 80)
    cap.c_tcp(cl, 41004, VIP, 80, "FA")                      # CLOSE_WAIT
    cap.c_tcp(cl, 41004, VIP, 80, "S")
    # a CLOSE by client RST, re-used twice in a row, then a few more new ones for lc
    cap.handshake(cl, 41005, VIP, 80)
    cap.c_tcp(cl, 41005, VIP, 80, "RA")
    cap.c_tcp(cl, 41005, VIP, 80, "S")
    cap.c_tcp(cl, 41005, VIP, 80, "R")                       # client RST in SYN_RECV: stays
    cap.s_tcp(cl, 41005, VIP, 80, "R")                       # server RST: CLOSE
    cap.c_tcp(cl, 41005, VIP, 80, "S")
    for p in range(41006, 41010):
        cap.c_tcp(cl, p, VIP, 80, "S")
    # a second round of TIME_WAIT re-use, on whatever lc chose
    cap.s_tcp(cl, 41006, VIP, 80, "SA")
    cap.c_tcp(cl, 41006, VIP, 80, "A")
    cap.c_tcp(cl, 41006, VIP, 80, "FA")
    cap.s_tcp(cl, 41006, VIP, 80, "FA")
    cap.c_tcp(cl, 41006, VIP, 80, "A")
    cap.c_tcp(cl, 41006, VIP, 80, "S")
    cap.c_tcp(cl, 41010, VIP, 80, "S")
    return cap, (f"SYN re-using a client port in TIME_WAIT, CLOSE, FIN_WAIT, CLOSE_WAIT; lc, "
                 f"3 real servers; net.ipv4.vs.conn_reuse_mode={mode}")


def case_x3() -> tuple[Capture, str]:
    return _reuse(1)


def case_x4() -> tuple[Capture, str]:
    return _reuse(0)


def case_x5() -> tuple[Capture, str]:
    cap = Capture(_tcp_rules("rr"), director_view=True)
    t = "10.77.0.30"
    for i, fl in enumerate(("A", "R", "FA", "PA", "SR", "-", "RA", "F", "U")):
        cap.c_tcp(t, 42000 + i, VIP, 80, fl, payload=b"data" if fl == "PA" else b"")
    cap.c_tcp("10.77.0.31", 42010, VIP, 22, "S")          # a port with no service
    cap.c_tcp("10.77.0.31", 42011, VIP, 22, "A")
    cap.c_tcp("10.77.0.31", 42012, VIP, 8080, "S")        # the real servers' port, on the VIP
    cap.c_udp("10.77.0.32", 42020, VIP, 5353, b"nobody")  # ICMP port unreachable
    cap.c_udp("10.77.0.33", 42021, VIP, 80, b"udp-to-a-tcp-service-port")
    echo = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"ping"
    echo = echo[:2] + struct.pack("!H", csum(echo)) + echo[4:]
    cap.raw("10.77.0.34", ipv4("10.77.0.34", VIP, 1, echo, ident=cap.next_id()))
    # the director's own address
    cap.c_tcp("10.77.0.35", 42030, "10.77.0.1", 80, "S")
    cap.raw("10.77.0.35", ipv4("10.77.0.35", "10.77.0.1", 1, echo, ident=cap.next_id()))
    # a protocol nobody handles, to the VIP
    cap.raw("10.77.0.36", ipv4("10.77.0.36", VIP, 47, b"\0\0\x08\0" + b"gre!", ident=cap.next_id()))
    # transit, client side -> out of the client side (default route) and to the server side
    cap.c_tcp("10.77.0.37", 42040, "10.99.0.5", 80, "S")
    cap.c_tcp("10.77.0.37", 42041, "10.99.0.5", 80, "A", ttl=2)
    cap.c_tcp("10.77.0.38", 42042, "10.99.0.5", 80, "S", ttl=1)  # time exceeded
    cap.c_tcp("10.77.0.37", 42043, "10.78.0.11", 22, "S")
    cap.c_udp("10.77.0.37", 42044, "10.78.0.12", 53, b"transit")
    cap.raw("10.77.0.37", ipv4("10.77.0.37", "10.78.0.12", 1, echo, ident=cap.next_id()))
    # a real server talking to a client without a connection: routed, not SNAT'd
    for fl in ("A", "SA", "R"):
        seg = tcp_seg("10.78.0.11", 8080, "10.77.0.39", 43000, fl, seq=77, ack=88)
        cap.raw("10.78.0.11", ipv4("10.78.0.11", "10.77.0.39", 6, seg, ident=cap.next_id()), server_side=True)
    seg = tcp_seg("10.78.0.12", 33000, "10.99.0.9", 443, "S", seq=5)
    cap.raw("10.78.0.12", ipv4("10.78.0.12", "10.99.0.9", 6, seg, ident=cap.next_id()), server_side=True)
    # and one real connection in the middle of it, to see that IPVS still works
    cap.handshake("10.77.0.2", 42050, VIP, 80)
    cap.c_tcp("10.77.0.2", 42050, VIP, 80, "FA")
    cap.s_tcp("10.77.0.2", 42050, VIP, 80, "FA")
    cap.c_tcp("10.77.0.2", 42050, VIP, 80, "A")
    cap.c_tcp("10.77.0.2", 42050, VIP, 80, "A")  # after the close: still the connection's
    return cap, "non-IPVS traffic: stray TCP to a VIP, non-service ports, ICMP, GRE, the director's address, transit both ways"


def case_x6() -> tuple[Capture, str]:
    # one real server per service: a packet one side forwards and the other drops must not
    # shift the scheduler for the packets after it
    cap = Capture(_tcp_rules("rr", 1))
    c = "10.77.0.50"
    port = [44000]

    def syn(opts: bytes = b"", src: str = c, **kw: object) -> bytes:
        port[0] += 1
        seg = tcp_seg(src, port[0], VIP, 80, "S", seq=1)
        return ipv4(src, VIP, 6, seg, ident=cap.next_id(), options=opts, **kw)

    cap.raw(c, syn(b"\x01\x01\x01\x00"))                                 # NOP NOP NOP EOL
    cap.raw(c, syn(b"\x07\x07\x04" + bytes(4) + b"\x00"))                # record route, 1 slot
    cap.raw(c, syn(b"\x94\x04\x00\x00"))                                 # router alert
    cap.raw(c, syn(b"\x9e\x04\xab\xcd"))                                 # unknown option
    cap.raw(c, syn(b"\x83\x07\x04" + ip2b("10.78.0.11") + b"\x00"))      # LSRR
    cap.raw("10.77.0.51", syn(b"\x07\x28\x04\x00", src="10.77.0.51"))   # option longer than header
    cap.raw("10.77.0.52", syn(b"\x01\x02\x00\x00", src="10.77.0.52"))   # option length < 2
    cap.raw(c, syn(bad_csum=True))                                       # IP header checksum
    cap.raw(c, syn(tot=60))                                              # longer than the frame
    cap.raw(c, syn(tot=16))                                              # shorter than the header
    cap.raw(c, syn(ihl=4))
    cap.raw(c, syn(version=6))
    ip = syn()                                                           # shorter than the frame:
    cap.raw(c, ip + b"TRAILER-BYTES-AFTER-THE-DATAGRAM" * 2)            # trailing bytes trimmed
    # TCP header oddities
    for doff in (4, 15, 6):
        port[0] += 1
        seg = tcp_seg(c, port[0], VIP, 80, "S", seq=1, doff=doff)
        cap.raw(c, ipv4(c, VIP, 6, seg, ident=cap.next_id()))
    port[0] += 1
    seg = tcp_seg(c, port[0], VIP, 80, "S", seq=1)
    cap.raw(c, ipv4(c, VIP, 6, seg[:12], ident=cap.next_id()))           # 12-byte TCP header
    port[0] += 1
    seg = tcp_seg(c, port[0], VIP, 80, "S", seq=1, bad_csum=True)        # wrong TCP checksum
    cap.raw(c, ipv4(c, VIP, 6, seg, ident=cap.next_id()))
    rip, rport = cap.server_of("tcp", c, port[0], VIP, 80)
    seg = tcp_seg(rip, rport, c, port[0], "SA", seq=9, ack=2, bad_csum=True)
    cap.raw(rip, ipv4(rip, c, 6, seg, ident=cap.next_id()), server_side=True)
    # UDP oddities
    for i, (ulen, body) in enumerate(((100, b"short"), (4, b"tiny-ulen"), (10, b"ab"), (None, b""))):
        u = udp_dgram(c, 45000 + i, VIP, 53, body, ulen=ulen)
        cap.raw(c, ipv4(c, VIP, 17, u, ident=cap.next_id()))
    u = udp_dgram(c, 45010, VIP, 53, b"abcd")
    cap.raw(c, ipv4(c, VIP, 17, u[:4], ident=cap.next_id()))             # 4-byte UDP header
    # fragments of one UDP datagram to the VIP (reassembled before IPVS sees them)
    u = udp_dgram(c, 45020, VIP, 53, b"fragmented-datagram!" * 2)        # 48 bytes
    ident = cap.next_id()
    cap.raw(c, ipv4(c, VIP, 17, u[:24], ident=ident, frag=0x2000))       # MF, offset 0
    cap.raw(c, ipv4(c, VIP, 17, u[24:], ident=ident, frag=3))            # offset 24
    # a lone first fragment (never completed)
    u = udp_dgram(c, 45021, VIP, 53, b"lonely-fragment!" * 2)
    cap.raw(c, ipv4(c, VIP, 17, u[:16], ident=cap.next_id(), frag=0x2000))
    # still working: one normal connection
    cap.handshake("10.77.0.2", 44900, VIP, 80)
    # its next data segment cut by the capture's snap length (orig_len > caplen): the kernel
    # gets only the captured bytes (IP total length > frame: dropped); fastvs by default
    # balances a cut packet by its headers
    seg = tcp_seg("10.77.0.2", 44900, VIP, 80, "PA", seq=1000 + 44900 + 1, ack=900000 + 44900 + 1,
                  payload=b"P" * 100)
    full = ether(ipv4("10.77.0.2", VIP, 6, seg, ident=cap.next_id()), False, "10.77.0.2")
    cap.add(full[:14 + 20 + 20 + 10], orig=len(full))
    cap.c_tcp("10.77.0.2", 44900, VIP, 80, "FA")
    return cap, "malformed IPv4/TCP/UDP, IP options, snap-cut record, fragments"


def case_x7() -> tuple[Capture, str]:
    v1, v2 = "10.77.0.100", "10.77.0.101"
    cap = Capture(f"""
-A -t {v1}:80 -s lc
-a -t {v1}:80 -r 10.78.0.11:8080 -m -w 1
-a -t {v1}:80 -r 10.78.0.12:8080 -m -w 1
-a -t {v1}:80 -r 10.78.0.13:8080 -m -w 1
-A -u {v1}:53 -s lc
-a -u {v1}:53 -r 10.78.0.11:5353 -m -w 1
-a -u {v1}:53 -r 10.78.0.12:5353 -m -w 1
-A -t {v2}:80 -s wlc
-a -t {v2}:80 -r 10.78.0.21:8080 -m -w 1
-a -t {v2}:80 -r 10.78.0.22:8080 -m -w 3
-a -t {v2}:80 -r 10.78.0.23:8080 -m -w 2
-a -t {v2}:80 -r 10.78.0.24:8080 -m -w 0
-A -u {v2}:53 -s wlc
-a -u {v2}:53 -r 10.78.0.21:5353 -m -w 2
-a -u {v2}:53 -r 10.78.0.22:5353 -m -w 5
""")
    rnd = random.Random(7)
    # 200 flows: 140 TCP (SYN, then maybe a server RST / SYN-ACK+ACK / client FIN later),
    # 60 UDP (one datagram, maybe a reply); follow-ups are interleaved with new flows
    flows = []
    for i in range(200):
        vip = v1 if rnd.random() < 0.5 else v2
        proto = "tcp" if i % 10 < 7 else "udp"
        flows.append((proto, f"10.77.0.{2 + i % 90}", 46000 + i, vip))
    pending: list[tuple[str, tuple]] = []
    budget = 290
    for fl in flows:
        proto, cl, cp, vip = fl
        if proto == "tcp":
            cap.c_tcp(cl, cp, vip, 80, "S")
            r = rnd.random()
            if r < 0.25:
                pending.append(("sR", fl))
            elif r < 0.35:
                pending.append(("sSA", fl))
        else:
            cap.c_udp(cl, cp, vip, 53, b"u%d" % cp)
            if rnd.random() < 0.2:
                pending.append(("uR", fl))
        # release a follow-up now and then, so that counters change between picks
        while pending and rnd.random() < 0.45 and len(cap.records) < budget - len(pending):
            kind, (proto, cl, cp, vip) = pending.pop(rnd.randrange(len(pending)))
            if kind == "sR":
                cap.s_tcp(cl, cp, vip, 80, "R")
            elif kind == "sSA":
                cap.s_tcp(cl, cp, vip, 80, "SA")
                pending.append(("cA", (proto, cl, cp, vip)))
            elif kind == "cA":
                cap.c_tcp(cl, cp, vip, 80, "A")
                if rnd.random() < 0.5:
                    pending.append(("cFA", (proto, cl, cp, vip)))
            elif kind == "cFA":
                cap.c_tcp(cl, cp, vip, 80, "FA")
            else:
                cap.s_udp(cl, cp, vip, 53, b"r%d" % cp)
    while pending and len(cap.records) < budget:
        kind, (proto, cl, cp, vip) = pending.pop(0)
        if kind == "sR":
            cap.s_tcp(cl, cp, vip, 80, "R")
        elif kind == "uR":
            cap.s_udp(cl, cp, vip, 53, b"r%d" % cp)
    return cap, "200 TCP/UDP flows interleaved over lc and wlc services (weights 1/3/2/0, 2/5), with RSTs and closes in between"


def case_x8() -> tuple[Capture, str]:
    cap = Capture(f"""
-A -u {VIP}:53 -s rr -o
-a -u {VIP}:53 -r 10.78.0.11:5353 -m -w 1
-a -u {VIP}:53 -r 10.78.0.12:5353 -m -w 1
-A -u {VIP}:123 -s rr -p 60 -o
-a -u {VIP}:123 -r 10.78.0.11:123 -m -w 1
-a -u {VIP}:123 -r 10.78.0.12:123 -m -w 1
-A -u {VIP}:161 -s rr
-a -u {VIP}:161 -r 10.78.0.11:161 -m -w 1
-a -u {VIP}:161 -r 10.78.0.12:161 -m -w 1
""", director_view=True)
    # one-packet: every datagram of one flow is scheduled on its own (rr alternates),
    # no connection stays, each counts as a connection
    for i in range(5):
        cap.c_udp("10.77.0.2", 5000, VIP, 53, b"q%d" % i)
    # the real servers' answers find no connection: routed on as they are (TTL - 1)
    for rip in ("10.78.0.11", "10.78.0.12"):
        cap.raw(rip, ipv4(rip, "10.77.0.2", 17, udp_dgram(rip, 5353, "10.77.0.2", 5000, b"answer"),
                          ident=cap.next_id()), server_side=True)
    # persistent and one-packet: the template keeps the client on one real server
    for i in range(4):
        cap.c_udp("10.77.0.3", 6000 + i % 2, VIP, 123, b"t%d" % i)
    cap.c_udp("10.77.0.4", 6000, VIP, 123, b"other client")
    cap.c_udp("10.77.0.3", 6000, VIP, 123, b"again")
    # TTL 1: the one-packet connection is made and counted, the datagram dies
    cap.c_udp("10.77.0.5", 7000, VIP, 53, b"ttl1", ttl=1)
    cap.c_udp("10.77.0.5", 7000, VIP, 53, b"ttl-ok")
    # a normal UDP service next to them keeps its connections
    for i in range(3):
        cap.c_udp("10.77.0.6", 8000, VIP, 161, b"n%d" % i)
        cap.s_udp("10.77.0.6", 8000, VIP, 161, b"r%d" % i)
    return cap, "one-packet scheduling (-o): UDP datagrams scheduled one by one, with and without persistence, no entries kept"


def case_x9() -> tuple[Capture, str]:
    cap = Capture(f"""
-A -t {VIP}:21 -s rr -p 300
-a -t {VIP}:21 -r 10.78.0.11:2121 -m -w 1
-a -t {VIP}:21 -r 10.78.0.12:2121 -m -w 1
-a -t {VIP}:21 -r 10.78.0.13:2121 -m -w 1
""")
    a, b, c = "10.77.0.2", "10.77.0.3", "10.77.0.4"
    # control connection, then passive data to an unprivileged VIP port and active-style
    # data to VIP port 20: the same real server (the template has vport 0), port kept
    cap.handshake(a, 41000, VIP, 21)
    cap.c_tcp(a, 41000, VIP, 21, "PA", payload=b"PASV\r\n")
    cap.s_tcp(a, 41000, VIP, 21, "PA", payload=b"227 ok\r\n")
    cap.handshake(a, 41001, VIP, 30000)
    cap.c_tcp(a, 41001, VIP, 30000, "PA", payload=b"data")
    cap.s_tcp(a, 41001, VIP, 30000, "FA")
    cap.c_tcp(a, 41001, VIP, 30000, "FA")
    cap.s_tcp(a, 41001, VIP, 30000, "A")
    cap.handshake(a, 41002, VIP, 20)
    cap.handshake(a, 41003, VIP, 1024)
    # a data connection first: it makes the template, the control connection follows it
    cap.handshake(b, 42000, VIP, 65000)
    cap.handshake(b, 42001, VIP, 21)
    # another client: the next real server, every port with it
    cap.handshake(c, 43000, VIP, 21)
    cap.handshake(c, 43001, VIP, 5000)
    cap.c_tcp(c, 43000, VIP, 21, "FA")
    cap.s_tcp(c, 43000, VIP, 21, "FA")
    cap.c_tcp(c, 43000, VIP, 21, "A")
    return cap, "persistent FTP service (port 21): data connections to VIP ports 20 and >= 1024 follow the control connection's template, port kept"


def case_x10() -> tuple[Capture, str]:
    cap = Capture(_tcp_rules("rr", 2, udp=False), sloppy_tcp=True)
    a = "10.77.0.2"
    # mid-stream segments make connections (sloppy_tcp): ACK, data, FIN, no flags
    cap.c_tcp(a, 44000, VIP, 80, "A")
    cap.s_tcp(a, 44000, VIP, 80, "A")
    cap.c_tcp(a, 44000, VIP, 80, "PA", payload=b"hello")
    cap.s_tcp(a, 44000, VIP, 80, "PA", payload=b"world")
    cap.c_tcp(a, 44001, VIP, 80, "PA", payload=b"data first")
    cap.c_tcp(a, 44002, VIP, 80, "FA")
    cap.c_tcp(a, 44003, VIP, 80, "-")
    cap.c_tcp(a, 44003, VIP, 80, "A")
    # RST never makes one (no answer from the stack to a RST)
    cap.c_tcp(a, 44004, VIP, 80, "R")
    cap.c_tcp(a, 44005, VIP, 80, "RA")
    # a normal handshake still works, and a SYN-ACK from a client makes one too
    cap.handshake(a, 44006, VIP, 80)
    cap.c_tcp(a, 44007, VIP, 80, "SA")
    cap.c_tcp(a, 44000, VIP, 80, "FA")
    cap.s_tcp(a, 44000, VIP, 80, "FA")
    cap.c_tcp(a, 44000, VIP, 80, "A")
    return cap, "net.ipv4.vs.sloppy_tcp=1: ACK, data, FIN and flagless segments make connections, RST does not"


CASES = {
    "x1-udp-csum0": case_x1, "x2-ttl": case_x2, "x3-reuse-lc": case_x3,
    "x4-reuse-lc-mode0": case_x4, "x5-stray": case_x5, "x6-malformed": case_x6,
    "x7-lc-wlc-200": case_x7, "x8-onepacket": case_x8, "x9-ftp-persist": case_x9,
    "x10-sloppy-tcp": case_x10,
}
SYSCTL = {"x4-reuse-lc-mode0": "net.ipv4.vs.conn_reuse_mode = 0\n",
          "x10-sloppy-tcp": "net.ipv4.vs.sloppy_tcp = 1\n"}


# -- control-plane cases (issue 11 items 5 and 7) ----------------------------------------
def case_c1() -> tuple[Capture, str]:
    """drop_packet=3 (am_droprate 10): ip_vs_todrop's signed counter starts at 0, so the
    first new connection is refused, then one in ten; a connection's own packets pass."""
    cap = Capture(_tcp_rules("rr"), drop_packet=3, drop_entry=0)
    for i in range(25):
        cap.c_tcp("10.77.0.2", 47000 + i, VIP, 80, "S")
    for i in range(25):
        if cap.d.lookup("tcp", "10.77.0.2", 47000 + i, VIP, 80) is not None and i % 4 == 1:
            cap.s_tcp("10.77.0.2", 47000 + i, VIP, 80, "SA")
            cap.c_tcp("10.77.0.2", 47000 + i, VIP, 80, "A")
    for i in range(6):
        cap.c_udp("10.77.0.3", 48000 + i, VIP, 53, b"q%d" % i)
    return cap, "net.ipv4.vs.drop_packet=3: 25 SYNs (the 1st, 11th, 21st refused), handshakes, UDP"


C2_VIP2, C2_VIP3 = "10.77.0.101", "10.77.0.102"


def case_c2() -> tuple[Capture, str]:
    """A rules file with -e, -d and -E lines, applied line by line (ipvsadm -R): mh keeps
    the slots of a server edited to weight 0 (its clients get no destination: the kernel
    answers port unreachable, ip_vs_leave), wrr recomputes after every line, a deleted
    and re-added server goes to the list's head, -E rebinds the scheduler."""
    cap = Capture(f"""
-A -t {VIP}:80 -s mh
-a -t {VIP}:80 -r 10.78.0.11:8080 -m -w 1
-a -t {VIP}:80 -r 10.78.0.12:8080 -m -w 1
-a -t {VIP}:80 -r 10.78.0.13:8080 -m -w 1
-e -t {VIP}:80 -r 10.78.0.12:8080 -m -w 0
-A -t {C2_VIP2}:80 -s wrr
-a -t {C2_VIP2}:80 -r 10.78.0.21:8080 -m -w 1
-a -t {C2_VIP2}:80 -r 10.78.0.22:8080 -m -w 2
-e -t {C2_VIP2}:80 -r 10.78.0.21:8080 -m -w 4
-a -t {C2_VIP2}:80 -r 10.78.0.23:8080 -m -w 3
-d -t {C2_VIP2}:80 -r 10.78.0.22:8080
-a -t {C2_VIP2}:80 -r 10.78.0.22:8080 -m -w 2
-A -t {C2_VIP3}:80 -s rr
-a -t {C2_VIP3}:80 -r 10.78.0.31:8080 -m -w 1
-a -t {C2_VIP3}:80 -r 10.78.0.32:8080 -m -w 3
-E -t {C2_VIP3}:80 -s wrr
-a -t {C2_VIP3}:80 -r 10.78.0.33:8080 -m -w 2
""")
    # mh: one SYN from each of 24 clients (ICMP errors are rate-limited per peer)
    for i in range(24):
        cap.c_tcp(f"10.77.0.{10 + i}", 40100 + i, VIP, 80, "S")
    for i in range(16):
        cap.c_tcp("10.77.0.2", 40200 + i, C2_VIP2, 80, "S")
    for i in range(12):
        cap.c_tcp("10.77.0.2", 40300 + i, C2_VIP3, 80, "S")
    return cap, "rules with -e/-d/-E lines applied in order: mh weight 0 keeps its slots, wrr, -E rebinds"


CASES.update({"c1-drop-packet": case_c1, "c2-rules-seq": case_c2})
SYSCTL.update({"c1-drop-packet": "net.ipv4.vs.drop_packet = 3\n"})


def gen(name: str, out: Path) -> tuple[Path, Path, Path | None, str]:
    cap, what = CASES[name]()
    out.mkdir(parents=True, exist_ok=True)
    pcap, rules = out / f"{name}.pcap", out / f"{name}.rules"
    write_pcap(pcap, cap.records)
    rules.write_text(cap.rules)
    sysctl = None
    if name in SYSCTL:
        sysctl = out / f"{name}.sysctl"
        sysctl.write_text(SYSCTL[name])
    print(f"{name}: {len(cap.records)} packets -> {pcap}")
    return pcap, rules, sysctl, what


# ------------------------------------------------------------------------------ kernlab
KERNLAB_FILES = ("kl.py", "run.sh", "lab.sh")


def kernlab_dir(option: str | None) -> Path:
    """kernlab's location: --kernlab DIR, else $KERNLAB; one clear message when neither
    names a kernlab (there is no default: kernlab is not part of this repository)."""
    src = option or os.environ.get("KERNLAB")
    if not src:
        raise SystemExit("kernlab_golden: where is kernlab? give --kernlab DIR or set KERNLAB=DIR "
                         "(the kernel lab, holding kl.py, run.sh and lab.sh; not part of this repository)")
    missing = [f for f in KERNLAB_FILES if not Path(src, f).is_file()]
    if missing:
        raise SystemExit(f"kernlab_golden: {src} is not kernlab (no {', '.join(missing)} in it); "
                         "give --kernlab DIR or set KERNLAB=DIR")
    return Path(src).resolve()


def kernlab_copy(src: Path) -> Path:
    """A private copy of kernlab whose end-of-run dump also has ipvsadm -L -n."""
    dst = Path(tempfile.mkdtemp(prefix="kernlab-golden."))
    shutil.copytree(src, dst, dirs_exist_ok=True)
    kl = dst / "kl.py"
    text = kl.read_text()
    old = 'dump = self.sh("kl-dump", timeout=30)'
    if old in text:
        # wait out one tick of the 2 s rate estimator, so that --stats has every packet
        text = text.replace(old, 'dump = self.sh("sleep 2.5; kl-dump; echo \'== ipvsadm -L -n\'; '
                                 'ipvsadm -L -n", timeout=30)')
        kl.write_text(text)
    for f in dst.iterdir():
        f.chmod(0o755)
    return dst


def record(names: list[str], pps: float, kernlab: Path) -> None:
    kl = kernlab_copy(kernlab)
    cases_md = GOLDEN / "CASES.md"
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"golden-{name}."))
        pcap, rules, sysctl, what = gen(name, work)
        cmd = ["bash", str(kl / "run.sh"), str(rules), str(pcap), str(work / "kern.pcap"), "--pps", str(pps)]
        if sysctl:
            cmd += ["--sysctl", str(sysctl)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        for f in (pcap, rules) + ((sysctl,) if sysctl else ()):
            shutil.copy(f, GOLDEN / f.name)
        shutil.copy(work / "kern.pcap", GOLDEN / f"{name}.kernel.pcap")
        shutil.copy(work / "kern.ipvsadm.txt", GOLDEN / f"{name}.kernel.ipvsadm.txt")
        summ = json.loads((work / "kern.summary.json").read_text())
        print(f"{name}: kernel {summ.get('kernel')} sent {summ.get('out_packets')} packets "
              f"for {summ.get('in_packets')} in")
        _cases_md_line(cases_md, name, what, summ)
    shutil.rmtree(kl, ignore_errors=True)


def _cases_md_line(path: Path, name: str, what: str, summ: dict) -> None:
    """Add or replace the case's row in CASES.md's table (rows sorted by name); any other
    text in the file is kept."""
    head = ("# Extra golden cases (tools/kernlab_golden.py)\n\n"
            "Recorded from a real kernel with `sudo tools/kernlab_golden.py record NAME` (kernlab, "
            "`run.sh --pps 100`); checked by `tests/test_golden_extra.py`.\n\n"
            "| name | what | packets in / kernel sent | kernel |\n|---|---|---|---|\n")
    text = path.read_text() if path.exists() else head
    lines = text.splitlines(keepends=True)
    is_row = [ln.startswith(("| x", "| c")) for ln in lines]
    at = is_row.index(True) if any(is_row) else next(
        i + 1 for i, ln in enumerate(lines) if ln.startswith("|---"))
    rows = [ln for ln, r in zip(lines, is_row, strict=True) if r and not ln.startswith(f"| {name} |")]
    rows.append(f"| {name} | {what} | {summ.get('in_packets')} / {summ.get('out_packets')} | "
                f"{summ.get('kernel')} |\n")
    rest = [ln for ln, r in zip(lines, is_row, strict=True) if not r]
    path.write_text("".join(rest[:at] + sorted(rows) + rest[at:]))


def step(from_prefix: str | None, kernlab: str | None) -> None:
    if from_prefix is None:
        kl = kernlab_copy(kernlab_dir(kernlab))
        work = Path(tempfile.mkdtemp(prefix="golden-step."))
        from_prefix = str(work / "kstep")
        cmd = ["bash", str(kl / "lab.sh"), "step", from_prefix, *STEP_SCENARIOS, "--matrix"]
        print("+", " ".join(repr(c) if " " in c else c for c in cmd), flush=True)
        subprocess.run(cmd, check=True)
    data = json.loads(Path(from_prefix + ".step.json").read_text())
    STEP_DIR.mkdir(parents=True, exist_ok=True)
    with open(STEP_DIR / "kstep.step.json", "w") as f:  # one scenario per line
        f.write("[\n" + ",\n".join(json.dumps(sc, separators=(",", ":")) for sc in data) + "\n]\n")
    shutil.copy(from_prefix + ".step.rules", STEP_DIR / "kstep.step.rules")
    print(f"{len(data)} scenarios -> {STEP_DIR}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gen")
    p.add_argument("name", choices=[*CASES, "all"])
    p.add_argument("--out", default=".")
    p = sub.add_parser("record")
    p.add_argument("name", nargs="+", choices=[*CASES, "all"])
    p.add_argument("--pps", type=float, default=100.0)
    p.add_argument("--kernlab", metavar="DIR", help="the kernel lab (default: $KERNLAB)")
    p = sub.add_parser("step")
    p.add_argument("--from", dest="from_prefix", help="store an existing lab.sh step run (PREFIX.step.json)")
    p.add_argument("--kernlab", metavar="DIR", help="the kernel lab (default: $KERNLAB)")
    sub.add_parser("list")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for n, f in CASES.items():
            print(f"{n:20} {f()[1]}")
        return 0
    if a.cmd == "gen":
        for n in CASES if a.name == "all" else [a.name]:
            gen(n, Path(a.out))
        return 0
    if a.cmd == "record":
        record(list(CASES) if "all" in a.name else a.name, a.pps, kernlab_dir(a.kernlab))
        return 0
    step(a.from_prefix, a.kernlab)
    return 0


if __name__ == "__main__":
    sys.exit(main())
