"""AF_XDP sockets end to end on veth: frames for a VIP land in the socket, are rewritten
(reflected) in the UMEM and sent back out; other traffic still reaches the director's
stack; a frame received on one interface leaves by another from the same UMEM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from xdplab import (
    Lab,
    inside,
    lab_fixture,  # noqa: F401  (the "lab" fixture)
    needs_lab,
    run,
)

from fastvs.live._l2 import complete_partial
from fastvs.live.xdp._xsk import Umem, XskSocket, reflect
from fastvs.live.xdp.attach import attach
from fastvs.live.xdp.program import XDP_PASS, XDP_REDIRECT, AddressSets, XdpProgram

VIP = "10.9.0.100"

CLIENT = """
import socket, sys
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
ok = 0
for i in range(n):
    s.sendto(b"ping %d" % i, ("10.9.0.100", 7))
    try:
        data, peer = s.recvfrom(100)
        ok += data == b"ping %d" % i and peer == ("10.9.0.100", 7)
    except socket.timeout:
        pass
print(ok)
"""

SNIFF = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("s0", 0))
s.settimeout(3.0)
print("ready", flush=True)
got = 0
try:
    while got < int(sys.argv[1]):
        f = s.recv(2048)
        if f[30:34] == bytes([10, 9, 0, 100]) and f[42:].startswith(b"ping"):
            got += 1
except socket.timeout:
    pass
print(got)
"""


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="frame_size"):
        Umem(64, 1000)
    with pytest.raises(ValueError, match="power of two"):
        XskSocket(Umem(64), 1, 0, rx_size=1000)
    with pytest.raises(ValueError, match="batch"):
        XskSocket(Umem(64), 1, 0, rx_size=64, batch=128)
    with pytest.raises(ValueError, match="mode"):
        XskSocket(Umem(64), 1, 0, mode="fast")


@contextmanager
def pump(s: XskSocket, out: XskSocket | None = None, rewrite: str = "reflect",
         fix_csum: bool = False) -> Iterator[None]:
    """A thread: receive from ``s``, rewrite, transmit on ``out`` (default ``s``)."""
    stop = threading.Event()
    dst = out or s

    def loop() -> None:
        while not stop.is_set():
            if not s.poll(20):
                s.refill()
                dst.refill()
                continue
            n = s.receive()
            if fix_csum:
                fixed[0] += complete_partial(s.umem.buf, s.off, s.caplen, n)
            if rewrite == "reflect":
                reflect(s.umem.buf, s.off, s.caplen, n)
            else:  # to the server side: new MACs, addresses untouched
                buf = np.frombuffer(s.umem.buf, dtype=np.uint8)
                for i in range(n):  # a test: a few frames
                    o = int(s.off[i])
                    buf[o:o + 12] = np.frombuffer(rewrite_macs, dtype=np.uint8)
            dst.transmit(s.off, s.caplen, n)
            dst.refill()

    fixed = [0]
    rewrite_macs = b""
    if rewrite != "reflect":
        rewrite_macs = bytes.fromhex(rewrite)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


@needs_lab
@pytest.mark.parametrize("mode", ["skb", "drv"])
def test_vip_frames_reflected_other_traffic_passes(lab: Lab, mode: str) -> None:
    n = 40
    with inside(lab.director), XdpProgram() as p:
        p.set_addresses(AddressSets.of(vips=[VIP]))
        frame = bytes.fromhex("02" * 6 + "04" * 6 + "0800") + bytes(
            [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 9, 0, 2, 10, 9, 0, 100]) + bytes(8)
        assert p.test_run(frame) == XDP_PASS  # no socket yet
        with attach("d0", p, mode=mode) as a:
            u = Umem(1024)
            s = XskSocket(u, socket.if_nametoindex("d0"), 0, rx_size=256, tx_size=256,
                          fill_size=256, comp_size=256, batch=32, mode="copy")
            p.set_socket(0, s.fileno())
            assert a.mode == mode and s.mode == "copy" and not s.zerocopy_active()
            assert p.test_run(frame) == XDP_REDIRECT  # the kernel's verdict with a socket
            with pump(s):
                r = lab.cl(sys.executable, "-c", CLIENT, str(n))
                ping = lab.cl("busybox", "ping", "-c", "2", "-W", "1", "10.9.0.1", check=False)
            c = s.counters()
            pc = p.counters()
            s.close()
        assert int(r.stdout) == n, r.stderr
        assert ping.returncode == 0, ping.stdout + ping.stderr  # the director's stack still answers
        assert c["rx"] == n and c["tx"] == n and c["completed"] == n, (c, pc)
        assert c["tx_ring_full"] == 0 and c["kernel_rx_dropped"] == 0
        assert pc["redirect_vip"] == n + 1 and pc["pass_other"] >= 2  # + the test run
        assert u.free_frames == 1024 - 256  # all frames back: the fill ring holds 256


@needs_lab
def test_shared_umem_forwards_between_interfaces(lab: Lab) -> None:
    """Received on d0, sent from the same UMEM frames out of d1 (a second socket sharing
    the UMEM, with its own fill and completion rings)."""
    n = 20
    with inside(lab.director), XdpProgram() as p:
        p.set_addresses(AddressSets.of(vips=[VIP]))
        smac = lab.sv("cat", "/sys/class/net/s0/address").stdout.strip().replace(":", "")
        d1mac = run("ip", "netns", "exec", lab.director, "cat", "/sys/class/net/d1/address").stdout
        d1mac = d1mac.strip().replace(":", "")
        with attach("d0", p, mode="skb"):
            u = Umem(2048)
            s0 = XskSocket(u, socket.if_nametoindex("d0"), 0, fill_size=512, batch=16)
            s1 = XskSocket(u, socket.if_nametoindex("d1"), 0, fill_size=512, batch=16)
            p.set_socket(0, s0.fileno())
            sniff = subprocess.Popen(["ip", "netns", "exec", lab.server, sys.executable, "-c", SNIFF, str(n)],
                                     stdout=subprocess.PIPE, text=True)
            assert sniff.stdout is not None and sniff.stdout.readline().strip() == "ready"
            with pump(s0, s1, rewrite=smac + d1mac):
                lab.cl(sys.executable, "-c", CLIENT.replace("1.0", "0.05"), str(n))
                out, _ = sniff.communicate(timeout=10)
            c0, c1 = s0.counters(), s1.counters()
            s1.close()
            s0.close()
    assert int(out) == n
    assert c0["rx"] == n and c0["tx"] == 0 and c1["tx"] == n and c1["completed"] == n
    assert u.free_frames == 2048 - 1024  # two fill rings of 512


@needs_lab
@pytest.mark.parametrize("fix", [False, True])
def test_offloaded_checksums_arrive_partial(lab: Lab, fix: bool) -> None:
    """The client's veth keeps TX checksum offload: through copy mode its UDP checksums
    arrive as the pseudo-header sum only. Reflected as they are, the client's stack drops
    them; completed first (complete_partial), every reply arrives."""
    n = 10
    lab.cl("ethtool", "-K", "c0", "tx", "on")
    with inside(lab.director), XdpProgram() as p:
        p.set_addresses(AddressSets.of(vips=[VIP]))
        with attach("d0", p, mode="skb"):
            s = XskSocket(Umem(512), socket.if_nametoindex("d0"), 0, fill_size=256, batch=16)
            p.set_socket(0, s.fileno())
            with pump(s, fix_csum=fix):
                r = lab.cl(sys.executable, "-c", CLIENT.replace("1.0", "0.2"), str(n))
            s.close()
    assert int(r.stdout) == (n if fix else 0)


SEND_ON_CPU = r"""
import os, socket, sys
cpu, n = int(sys.argv[1]), int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(263, 20, 1)   # PACKET_QDISC_BYPASS: the transmit queue is cpu % queues
s.bind(("c2", 0))
mac = bytes.fromhex(open("/sys/class/net/c2/address").read().strip().replace(":", ""))
f = b"\x02" * 6 + mac + b"\x08\x00" + bytes(
    [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 7, 0, 2, 10, 7, 0, 100]) + bytes(8)
for i in range(n):
    s.send(f)
"""


@needs_lab
@pytest.mark.parametrize("slot", [1, 0])
def test_a_socket_receives_only_its_own_queue(slot: int) -> None:
    """The kernel's rule the several-worker design rests on (docs/forwarder.md): a veth
    peer sending on transmit queue q puts the frame on receive queue q (native XDP);
    the socket bound to queue 1 in XSKMAP slot 1 receives exactly queue 1's frames (slot
    0 empty: queue 0's pass as pass_no_socket). Put in slot 0 instead, queue 0's frames
    are redirected into it and lost (xsk_rcv_check: not its queue), never received."""
    cpus = sorted(os.sched_getaffinity(0))
    even = [c for c in cpus if c % 2 == 0]
    odd = [c for c in cpus if c % 2 == 1]
    assert even and odd, f"needs an even and an odd CPU to pick both queues, have {cpus}"
    tag = f"fvq-{os.getpid()}"
    d, c = f"{tag}-d", f"{tag}-c"
    made: list[str] = []
    n = 10
    try:
        for ns in (d, c):
            run("ip", "netns", "add", ns)
            made.append(ns)
        q = ["numtxqueues", "2", "numrxqueues", "2"]
        run("ip", "link", "add", "name", "d2", "netns", d, *q, "type", "veth", "peer", "name", "c2", "netns", c, *q)
        for ns, dev in ((d, "d2"), (c, "c2")):
            run("ip", "-n", ns, "link", "set", dev, "up")
        with inside(d), XdpProgram() as p:
            p.set_addresses(AddressSets.of(vips=["10.7.0.100"]))
            with attach("d2", p, mode="drv"):
                s = XskSocket(Umem(1024), socket.if_nametoindex("d2"), 1, rx_size=256, tx_size=256,
                              fill_size=256, comp_size=256, batch=32, mode="copy")
                try:
                    s.refill()
                    p.set_socket(slot, s.fileno())
                    for cpu in (even[0], odd[0]):  # transmit queue 0, then 1
                        run("ip", "netns", "exec", c, sys.executable, "-c", SEND_ON_CPU, str(cpu), str(n))
                    got = 0
                    while s.poll(200):
                        got += s.receive()
                    pc = p.counters()
                finally:
                    s.close()
    finally:
        for ns in made:
            run("ip", "netns", "del", ns, check=False)
    assert pc["redirect_vip"] == n and pc["pass_no_socket"] == n, pc
    assert got == (n if slot == 1 else 0), (got, pc)


@needs_lab
def test_busy_poll_options_on_an_xsk_socket(lab: Lab) -> None:
    """--xdp-busy-poll's three socket options on a bound AF_XDP socket: taken, or one
    line naming what the kernel refused (never an exception)."""
    from fastvs.live.afxdp import SO_BUSY_POLL, busy_poll

    with inside(lab.director):
        s = XskSocket(Umem(1024), socket.if_nametoindex("d0"), 0, rx_size=256, tx_size=256,
                      fill_size=256, comp_size=256, batch=32, mode="copy")
        try:
            why = busy_poll([s], 30, 32)
            fd = os.dup(s.fileno())
            with socket.socket(44, socket.SOCK_RAW, 0, fileno=fd) as so:
                got = so.getsockopt(socket.SOL_SOCKET, SO_BUSY_POLL)
        finally:
            s.close()
    assert why == "" and got == 30 or "refused" in why and "\n" not in why, why
