"""Raw receive + transmit packets/s through an AF_XDP socket on veth, against an
AF_PACKET TPACKET_V2 ring (fastvs's Pump) on the same setup.

    client ns: c0 --veth-- d0 :director ns

The client floods 64-byte UDP frames to the VIP (AF_PACKET sendmmsg, fastvs's blast);
the director takes each frame, rewrites its Ethernet addresses (back to the client) and
sends it out again. Backends (the director side):

    xdp-skb-c    XDP in generic (skb) mode, AF_XDP copy mode, the loop all in C
    xdp-drv-c    XDP native on veth, AF_XDP copy mode, the loop all in C
    xdp-skb-py   as xdp-skb-c, one Python round per batch (receive, set_macs, transmit),
                 as the forwarder's worker loop would be
    xdp-drv-py   the same in native mode
    ring-v2      AF_PACKET + TPACKET_V2 RX ring + sendmmsg (fastvs.live._afpacket.Pump),
                 a stub engine that forwards everything: one Python round per batch

Run as root:  python benchmarks/bench_xdp.py [--seconds 5] [--batch 64] [--only NAME ...]
Prints one line per backend: frames/s received and sent by the director, frames/s the
client sent, and the director process's CPU (user/system seconds per second).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time

BACKENDS = ("xdp-skb-c", "xdp-drv-c", "xdp-skb-py", "xdp-drv-py", "ring-v2")
VIP = "10.9.0.100"


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=check).stdout


def frames(src_mac: bytes, dst_mac: bytes, count: int = 256) -> bytes:
    """``count`` 60-byte UDP frames client -> VIP:9 from different source ports."""
    out = bytearray()
    for i in range(count):
        udp = struct.pack("!HHHH", 10000 + i, 9, 26, 0) + bytes(18)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                         socket.inet_aton("10.9.0.2"), socket.inet_aton(VIP))
        s = sum(struct.unpack("!10H", ip))
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
        out += dst_mac + src_mac + b"\x08\x00" + ip + udp
    return bytes(out)


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


# -- the two sides (run inside their namespaces) -------------------------------------------
def blast(seconds: float, dmac: str) -> None:
    from fastvs.live import _afpacket as A

    cmac = open("/sys/class/net/c0/address").read().strip()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind(("c0", 0))
    s.setsockopt(A.SOL_PACKET, A.OPT_QDISC_BYPASS, 1)
    buf = frames(mac(cmac), mac(dmac))
    sent = A.blast(s.fileno(), buf, 60, seconds)
    print(json.dumps({"sent": sent, "seconds": seconds}))


def serve(backend: str, seconds: float, batch: int, cmac: str) -> None:
    dmac = open("/sys/class/net/d0/address").read().strip()
    ifindex = socket.if_nametoindex("d0")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if backend.startswith("xdp"):
        from fastvs.live.xdp._xsk import Umem, XskSocket, run_reflect, set_macs
        from fastvs.live.xdp.attach import attach
        from fastvs.live.xdp.program import AddressSets, XdpProgram

        mode = "skb" if "skb" in backend else "drv"
        p = XdpProgram()
        p.set_addresses(AddressSets.of(vips=[VIP]))
        a = attach("d0", p, mode=mode)
        u = Umem(8192)
        x = XskSocket(u, ifindex, 0, batch=batch)
        p.set_socket(0, x.fileno())
        print("ready", flush=True)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        if backend.endswith("-c"):
            rx, tx, took = run_reflect(x, seconds, dst_mac=mac(cmac), src_mac=mac(dmac))
        else:
            t0 = time.monotonic()
            end = t0 + seconds
            dm, sm = mac(cmac), mac(dmac)
            while time.monotonic() < end:
                if not x.poll(10):
                    continue
                n = x.receive()
                set_macs(u.buf, x.off, n, dm, sm)
                x.transmit(x.off, x.caplen, n)
            took = time.monotonic() - t0
            c = x.counters()
            rx, tx = c["rx"], c["tx"]
        extra = {k: v for k, v in x.counters().items() if v and k.startswith(("kernel", "tx_ring"))}
        extra.update({k: v for k, v in p.counters().items() if v})
        a.detach()
    else:
        import numpy as np

        from fastvs.live import _afpacket as A

        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.setsockopt(A.SOL_PACKET, A.OPT_IGNORE_OUTGOING, 1)
        s.setsockopt(A.SOL_PACKET, A.OPT_QDISC_BYPASS, 1)
        A.setup_rx_ring(s.fileno(), 1 << 16, 64, version=2, frame_size=2048)
        s.bind(("d0", 0))
        pump = A.Pump(s.fileno(), s.fileno(), dmac, dmac, io="ring-v2", batch=batch)
        pump.neigh_set(VIP, cmac, static=True)  # "forward" everything back to the client

        class Stub:
            def process(self, buf: object, off: np.ndarray, *rest: object) -> None:
                verdict = rest[-1]
                verdict[: len(off)] = 32  # fwd_in  # type: ignore[index]

        eng = Stub()
        print("ready", flush=True)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        end = t0 + seconds
        rx = 0
        while time.monotonic() < end:
            rx += pump.step(eng, 10)
        took = time.monotonic() - t0
        tx = pump.counters().get("tx", 0)
        extra = {"kernel_drops": A.kernel_drops(s.fileno())[1]}
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rx": rx, "tx": tx, "seconds": took, "user": (r1.ru_utime - r0.ru_utime) / took,
                      "sys": (r1.ru_stime - r0.ru_stime) / took, "extra": extra}))


# -- the driver ----------------------------------------------------------------------------
def run(args: argparse.Namespace) -> None:
    tag = f"fvb-{os.getpid()}"
    d, c = f"{tag}-d", f"{tag}-c"
    try:
        sh("ip", "netns", "add", d)
        sh("ip", "netns", "add", c)
        sh("ip", "link", "add", "d0", "netns", d, "type", "veth", "peer", "name", "c0", "netns", c)
        for ns, dev in ((d, "d0"), (c, "c0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", c, "addr", "add", "10.9.0.2/24", "dev", "c0")
        dmac = sh("ip", "netns", "exec", d, "cat", "/sys/class/net/d0/address").strip()
        cmac = sh("ip", "netns", "exec", c, "cat", "/sys/class/net/c0/address").strip()
        me = os.path.abspath(__file__)
        print(f"# {args.seconds:g} s per backend, batch {args.batch}, 60-byte UDP frames, veth, "
              f"{os.cpu_count()} CPUs (shared)")
        for b in args.only or BACKENDS:
            srv = subprocess.Popen(["ip", "netns", "exec", d, sys.executable, me, "--serve", b,
                                    "--seconds", str(args.seconds + 1), "--batch", str(args.batch),
                                    "--cmac", cmac], stdout=subprocess.PIPE, text=True)
            assert srv.stdout is not None
            if srv.stdout.readline().strip() != "ready":
                srv.wait()
                print(f"{b:12s} failed to start")
                continue
            gen = subprocess.run(["ip", "netns", "exec", c, sys.executable, me, "--blast",
                                  "--seconds", str(args.seconds), "--dmac", dmac],
                                 capture_output=True, text=True)
            out, _ = srv.communicate(timeout=args.seconds + 30)
            g = json.loads(gen.stdout)
            r = json.loads(out)
            gs = g["seconds"]  # the director ran 1 s longer: rates over the flood's time
            print(f"{b:12s} rx {r['rx'] / gs / 1e6:6.3f} Mpps  tx {r['tx'] / gs / 1e6:6.3f} Mpps"
                  f"  offered {g['sent'] / gs / 1e6:6.3f} Mpps  sent/offered {r['tx'] / max(1, g['sent']):.2f}"
                  f"  cpu user {r['user']:.2f} sys {r['sys']:.2f}  {r['extra']}", flush=True)
    finally:
        for ns in (d, c):
            sh("ip", "netns", "del", ns, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--only", nargs="*", choices=BACKENDS)
    ap.add_argument("--serve", choices=BACKENDS, help=argparse.SUPPRESS)
    ap.add_argument("--blast", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dmac", help=argparse.SUPPRESS)
    ap.add_argument("--cmac", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.seconds, args.batch, args.cmac)
    elif args.blast:
        blast(args.seconds, args.dmac)
    else:
        run(args)


if __name__ == "__main__":
    main()
