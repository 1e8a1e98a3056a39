"""The real engine on AF_XDP sockets: a minimal two-arm director (a prototype of the
backend adapter). Client UDP to the VIP arrives on d0's socket, the engine DNATs it in
the UMEM, it leaves by d1's socket (same UMEM frame) to the real server; the reply comes
back on d1's socket, is SNATed and leaves by d0's. One XDP program per interface (each
has its own XSKMAP: both sockets sit on queue 0). Offloaded checksums (the real server's
veth keeps TX offload) are completed before the engine."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import numpy as np
from xdplab import (
    Lab,
    inside,
    lab_fixture,  # noqa: F401  (the "lab" fixture)
    needs_lab,
    run,
)

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules
from fastvs.live._l2 import complete_partial
from fastvs.live.xdp._xsk import Umem, XskSocket, set_macs
from fastvs.live.xdp.attach import attach
from fastvs.live.xdp.program import AddressSets, XdpProgram

VIP, RS = "10.9.0.100", "10.8.0.2"
V_FWD_IN, V_FWD_OUT = 32, 33

ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.8.0.2", 7))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(b"rs:" + d, a)
"""

CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
ok = 0
for i in range(int(sys.argv[1])):
    s.sendto(b"q%d" % i, ("10.9.0.100", 7))
    try:
        d, a = s.recvfrom(100)
        ok += d == b"rs:q%d" % i and a == ("10.9.0.100", 7)
    except socket.timeout:
        pass
print(ok)
"""


def mac_of(lab: Lab, ns: str, dev: str) -> bytes:
    out = run("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/address").stdout
    return bytes.fromhex(out.strip().replace(":", ""))


def side_round(src: XskSocket, socks: dict[int, tuple[XskSocket, bytes, bytes]], engine: object) -> int:
    """One round for one socket: receive, complete offloaded checksums, engine, then per
    verdict: MACs and transmit on the output socket, or recycle. Numpy per batch only."""
    n = src.receive()
    if n == 0:
        return 0
    buf = src.umem.buf
    complete_partial(buf, src.off, src.caplen, n)
    engine.process(buf, src.off[:n], src.caplen[:n], src.wirelen[:n], src.ts[:n],  # type: ignore[attr-defined]
                   src.linktype[:n], src.verdict)
    v = src.verdict[:n]
    sent = np.zeros(n, dtype=bool)
    for verdict, (out, dst, smac) in socks.items():
        sel = v == verdict
        if sel.any():
            off = np.ascontiguousarray(src.off[:n][sel])
            ln = np.ascontiguousarray(src.caplen[:n][sel])
            set_macs(buf, off, len(off), dst, smac)
            out.transmit(off, ln)
            sent |= sel
    rest = np.ascontiguousarray(src.off[:n][~sent])
    if len(rest):
        src.recycle(rest)
    return n


@needs_lab
def test_engine_between_two_xsk_sockets(lab: Lab) -> None:
    n = 25
    rules = parse_rules(f"-A -u {VIP}:7 -s rr\n-a -u {VIP}:7 -r {RS}:7 -m -w 1\n")
    director = Director(rules)
    cmac, smac = mac_of(lab, lab.client, "c0"), mac_of(lab, lab.server, "s0")
    d0mac, d1mac = mac_of(lab, lab.director, "d0"), mac_of(lab, lab.director, "d1")
    lab.sv("ip", "route", "add", "10.9.0.0/24", "via", "10.8.0.1")
    echo = subprocess.Popen(["ip", "netns", "exec", lab.server, sys.executable, "-c", ECHO],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        # steer_l2=False: ARP stays with the director's stack, which owns 10.8.0.1 here
        # (with steering on, the real server's ARP for its gateway lands in the socket
        # and only fastvs's neighbour code could answer it)
        with inside(lab.director), XdpProgram(steer_l2=False) as p0, \
                XdpProgram(steer_l2=False, share_addresses=p0) as p1:
            sets = AddressSets.of(vips=[VIP], real_servers=[RS])
            p0.set_addresses(sets)  # p1 shares the maps
            with attach("d0", p0, mode="skb"), attach("d1", p1, mode="skb"):
                u = Umem(2048)
                s0 = XskSocket(u, socket.if_nametoindex("d0"), 0, fill_size=512, batch=32)
                s1 = XskSocket(u, socket.if_nametoindex("d1"), 0, fill_size=512, batch=32)
                p0.set_socket(0, s0.fileno())
                p1.set_socket(0, s1.fileno())
                socks = {V_FWD_IN: (s1, smac, d1mac), V_FWD_OUT: (s0, cmac, d0mac)}
                stop = threading.Event()

                def loop() -> None:
                    while not stop.is_set():
                        got = side_round(s0, socks, director.engine) + side_round(s1, socks, director.engine)
                        if not got:
                            s0.poll(5)
                            s1.refill()

                t = threading.Thread(target=loop, daemon=True)
                t.start()
                try:
                    r = lab.cl(sys.executable, "-c", CLIENT, str(n))
                finally:
                    stop.set()
                    t.join()
                c0, c1 = s0.counters(), s1.counters()
                pc0, pc1 = p0.counters(), p1.counters()
                s1.close()
                s0.close()
    finally:
        echo.kill()
        echo.wait()
    assert int(r.stdout) == n, (r.stdout, director.counters(), c0, c1, pc1)
    assert c0["rx"] == n and c1["tx"] == n and c1["rx"] == n and c0["tx"] == n
    assert pc0["redirect_vip"] == n and pc1["redirect_real_server"] == n
    assert director.engine.conn_count == 1
