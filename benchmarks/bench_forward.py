"""Live forwarding: ``fastvs forward`` against the kernel's own NAT load balancing.

One topology (tests/netns.py: client, director, switch, two real servers running nginx
if installed, else busybox httpd), measured in one run with the director namespace as

- **fastvs**: ``fastvs forward`` (``--workers`` 1, and N if asked), no addresses, no
  forwarding, the kernel's IP stack fenced off by a netdev ingress drop;
- **kernel**: addresses on both interfaces (VIP on the client side), ``ip_forward=1``,
  nftables ``dnat to numgen inc mod 2 map { 0 : rs1, 1 : rs2 }`` with conntrack.

For each: HTTP requests/s and latency percentiles with ``wrk`` (keep-alive), new
connections/s (``Connection: close``: one TCP connection per request), and 64-byte UDP
frames/s forwarded (a client blasting 18-byte datagrams over 64 flows; counted at the
real servers' interfaces) with the forwarder's CPU time per frame forwarded (user +
system time of its processes: the one UDP figure the host's other load hardly moves),
and TCP bulk Gbit/s (``wrk`` fetching a 256 MiB file over 4 keep-alive connections).
Prints a table with the ratios fastvs/kernel. Needs root, ``ip netns``, ``wrk`` and
``nft``; run as a script::

    python benchmarks/bench_forward.py [--seconds 5] [--workers 1 2] [--io ring-v2 ring-v3 mmsg xdp]
        [--repeat 3] [--queues 2] [--xdp-ring-sizes 512 2048] [--xdp-busy-polls 0 50]
        [--xdp-modes auto skb drv] [--tests http newconn udp tcp] [--loops c python] [--spins 0 20] [--rps]
        [--json out.json]

With ``--queues N`` the director's veths (and their peers) are made with N queues; each
``--io xdp --workers W`` column runs with W of them (``ethtool -L``: worker k binds queue
k), every other column (and the kernel's) with one.

Every measurement also reads the host's CPU time (/proc/stat) before and after: the
busy share of all CPUs, the softirq share of that, and busy CPU microseconds per
request, connection, frame or MB -- client, director and servers together, so the
difference between two columns is their directors'. ``--loops c python`` runs each
fastvs column with the worker's batches in C (FrameIO.run, the default) and with
FASTVS_LIVE_LOOP=python; ``--rps`` spreads every lab interface's receive path over all
CPUs (receive packet steering) instead of the sender's thread.

Nothing is asserted; pytest collects no test from this file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from netns import GW_IP, RS_IPS, VIP, Topology, have_netns  # noqa: E402

BLAST_PORT = 9
BLASTER = r"""
import socket, struct, sys
from fastvs.live._afpacket import blast
dst_mac, src_mac, src, dst = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
port, secs, flows = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])

def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s

frames = bytearray()
payload = b"x" * 18          # 14 eth + 20 ip + 8 udp + 18 = 60 bytes (+ FCS = 64 on a wire)
for i in range(flows):
    sport = 20000 + i
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, i, 0, 64, 17, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    ip[10:12] = struct.pack("!H", 0xffff - csum(bytes(ip)))
    udp = bytearray(struct.pack("!HHHH", sport, port, 26, 0) + payload)
    ph = ip[12:20] + struct.pack("!BBH", 0, 17, 26)
    c = 0xffff - csum(bytes(ph + udp))
    udp[6:8] = struct.pack("!H", c or 0xffff)
    frames += dst_mac + src_mac + b"\x08\x00" + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.setsockopt(263, 20, 1)   # PACKET_QDISC_BYPASS
s.bind(("eth0", 0))
print(blast(s.fileno(), frames, 60, secs))
"""


def run_wrk(t: Topology, args: list[str], seconds: float) -> tuple[str, str]:
    """wrk's output and errors; a wrk that has not finished a minute after its duration
    is stopped and said in one line (its column then reads 0, not the run lost)."""
    try:
        r = t.nsx(t.client, *args, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired:
        print(f"{' '.join(args)}: did not finish within {seconds + 60:g} s; stopped, counted as 0", file=sys.stderr)
        return "", "timed out"
    return r.stdout, r.stderr


def wrk(t: Topology, seconds: float, conns: int, close: bool) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    out, err = run_wrk(t, [*args, f"http://{VIP}/"], seconds)
    res: dict[str, float] = {"rps": 0.0, "errors": 0.0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    else:
        print(f"wrk failed: {out.strip()} {err.strip()}", file=sys.stderr)
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
        if m:
            scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            res[f"p{pct}_ms"] = float(m.group(1)) * scale
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = float(sum(int(x) for x in m.groups()))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += float(m.group(1))
    return res


def rs_rx(t: Topology) -> int:
    total = 0
    for ns in t.rs:
        total += int(t.nsx(ns, "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)
    return total


def mac_of(t: Topology, ns: str, ip: str | None, dev: str = "eth0") -> str:
    if ip is None:
        out = t.nsx(ns, "cat", f"/sys/class/net/{dev}/address").stdout
    else:
        t.nsx(ns, "ping", "-c1", "-W1", ip, check=False)
        out = t.nsx(ns, "ip", "neigh", "show", ip, "dev", dev).stdout
    m = re.search(r"([0-9a-f]{2}(?::[0-9a-f]{2}){5})", out)
    if not m:
        raise RuntimeError(f"no MAC for {ip or dev} in {ns}: {out!r}")
    return m.group(1).replace(":", "")


def forwarder_cpu() -> float:
    """CPU seconds (user + system) used so far by the running ``fastvs.live`` processes."""
    tck, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in os.listdir("/proc"):
        try:
            if not pid.isdigit() or b"-m\0fastvs.live\0" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total / tck


def udp_pps(t: Topology, seconds: float, senders: int = 1) -> dict[str, float]:
    """A raw AF_PACKET blaster (sendmmsg of prebuilt frames) over 64 flows; with the
    forwarder's CPU time per frame forwarded (µs; none for the kernel's NAT: it runs in
    the sender's softirq)."""
    from netns import CLIENT_IP

    dmac, smac = mac_of(t, t.client, VIP), mac_of(t, t.client, None)
    cpu0 = forwarder_cpu()
    before = rs_rx(t)
    procs = [t.spawn(t.client, sys.executable, "-c", BLASTER, dmac, smac, CLIENT_IP, VIP, str(BLAST_PORT),
                     str(seconds), "64", stdout=subprocess.PIPE) for _ in range(senders)]
    sent = 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 30)
        sent += int(out or 0)
        t.procs.remove(p)
    time.sleep(0.3)
    got = rs_rx(t) - before
    cpu = forwarder_cpu() - cpu0
    res = {"sent_pps": sent / seconds, "fwd_pps": got / seconds}
    if cpu > 0:  # not the kernel's NAT (no forwarder process)
        res["cpu_us"] = cpu * 1e6 / max(1, got)
    return res


def rules_text() -> str:
    lines = [f"-A -t {VIP}:80 -s rr"]
    lines += [f"-a -t {VIP}:80 -r {ip}:80 -m -w 1" for ip in RS_IPS]
    lines += [f"-A -u {VIP}:{BLAST_PORT} -s rr"]
    lines += [f"-a -u {VIP}:{BLAST_PORT} -r {ip}:{BLAST_PORT} -m -w 1" for ip in RS_IPS]
    return "\n".join(lines) + "\n"


TESTS = ("http", "newconn", "udp", "tcp")
BIG_MIB = 256  # the bulk-transfer file each real server serves


def cpu_times() -> list[int]:
    """The host's CPU time so far (/proc/stat, all CPUs, clock ticks): user, nice,
    system, idle, iowait, irq, softirq, steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def host_cpu(before: list[int], after: list[int], units: float) -> dict[str, float]:
    """Where the host's CPU went during one measurement: busy share of all CPUs, the
    softirq share of the busy time (the kernel's forwarding, and veth's receive paths,
    run there), and busy CPU microseconds per unit of work (request, frame, MB) --
    client, director and servers together, so the director's part is the difference
    between columns."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    busy = total - d[3] - d[4]
    tck = os.sysconf("SC_CLK_TCK")
    return {"host_busy": 100.0 * busy / total, "host_softirq": 100.0 * d[6] / max(1, busy),
            "host_us": busy / tck * 1e6 / units if units > 0 else float("nan")}


def measure(t: Topology, seconds: float, conns: int, tests: tuple[str, ...] = TESTS) -> dict[str, Any]:
    t.nsx(t.client, "curl", "-s", "--max-time", "3", f"http://{VIP}/", check=False)  # warm ARP
    res: dict[str, Any] = {}
    runs = {"http": (lambda: wrk(t, seconds, conns, close=False), lambda r: r["rps"] * seconds),
            "newconn": (lambda: wrk(t, seconds, conns, close=True), lambda r: r["rps"] * seconds),
            "udp": (lambda: udp_pps(t, seconds), lambda r: r["fwd_pps"] * seconds),
            "tcp": (lambda: tcp_bulk(t, seconds), lambda r: r["gbps"] * seconds * 1e9 / 8 / 1e6)}
    for name in TESTS:
        if name in tests:
            run, units = runs[name]
            c0 = cpu_times()
            r = run()
            r.update(host_cpu(c0, cpu_times(), units(r)))
            res[name] = r
    return res


def tcp_bulk(t: Topology, seconds: float, conns: int = 4) -> dict[str, float]:
    """TCP bulk throughput: ``wrk`` fetching a 256 MiB file over ``conns``
    keep-alive connections (full-size segments through the director both ways: the
    data from the real servers, the ACKs from the client); Gbit/s of HTTP bodies."""
    for i in range(len(t.rs)):
        big = t.tmp / f"rs{i + 1}" / "big.bin"
        if not big.exists():
            with big.open("wb") as f:
                f.truncate(BIG_MIB << 20)
    args = ["wrk", "-t2", f"-c{conns}", f"-d{max(1, round(seconds))}s", f"http://{VIP}/big.bin"]
    out, err = run_wrk(t, args, seconds)
    res = {"gbps": 0.0, "errors": 0.0}
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?)B", out)
    if m:
        scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
        res["gbps"] = float(m.group(1)) * scale * 8 / 1e9
    else:
        print(f"wrk failed: {out.strip()} {err.strip()}", file=sys.stderr)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = float(sum(int(x) for x in m.groups()))
    return res


def spread_rps(t: Topology) -> None:
    """Receive packet steering over every CPU on every interface of the lab (--rps):
    a veth's receive path then runs on the CPU the flow hashes to, not always on the
    sender's thread -- closer to a network, where the next hop is another machine."""
    mask = format((1 << (os.cpu_count() or 1)) - 1, "x")
    for ns in (t.client, t.director, t.switch, *t.rs):
        t.nsx(ns, "sh", "-c", f"for q in /sys/class/net/*/queues/rx-*/rps_cpus; do echo {mask} > $q; done",
              check=False)


# the kernel's NAT director: its addresses on the client and server sides, its rules
KERNEL_ADDRS = (["10.0.0.1/24", f"{VIP}/32"], [f"{GW_IP}/24"])


def kernel_nat_rules() -> str:
    m = f"{{ 0 : {RS_IPS[0]}, 1 : {RS_IPS[1]} }}"
    return ("table ip fvtlb {\n"
            "  chain pre { type nat hook prerouting priority -100;\n"
            f"    ip daddr {VIP} tcp dport 80 dnat to numgen inc mod 2 map {m}\n"
            f"    ip daddr {VIP} udp dport {BLAST_PORT} dnat to numgen inc mod 2 map {m}\n"
            "  }\n"
            "  chain post { type nat hook postrouting priority 100; }\n"
            "}\n")


def kernel_mode(t: Topology, on: bool) -> None:
    d = t.director
    if on:
        t.nsx(d, "nft", "delete", "table", "netdev", "fvt", check=False)
        t.nsx(d, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for dev, addrs in zip((t.client_if, t.server_if), KERNEL_ADDRS, strict=True):
            for a in addrs:
                t.nsx(d, "ip", "addr", "add", a, "dev", dev)
        conf = t.tmp / "lb.nft"
        conf.write_text(kernel_nat_rules())
        t.nsx(d, "nft", "-f", str(conf))
    else:
        t.nsx(d, "nft", "delete", "table", "ip", "fvtlb", check=False)
        t.nsx(d, "ip", "addr", "flush", "dev", t.client_if, check=False)
        t.nsx(d, "ip", "addr", "flush", "dev", t.server_if, check=False)
        t.nsx(d, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    t.flush_neighbours()


def run_fastvs(t: Topology, rules: Path, workers: int, seconds: float, conns: int,
               io: str = "ring-v2", extra: tuple[str, ...] = (), tests: tuple[str, ...] = TESTS,
               loop: str = "c") -> dict[str, Any]:
    t.flush_neighbours()
    env = dict(os.environ, FASTVS_LIVE_LOOP=loop)
    p = t.spawn(t.director, sys.executable, "-m", "fastvs.live", "-r", str(rules),
                *t.forward_args(), "--fix-offloads", "-q", "--workers", str(workers),
                "--io", io, "--capacity", str(1 << 21), *extra,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stderr is not None
    end = time.monotonic() + 20
    while time.monotonic() < end:
        line = p.stderr.readline().decode()
        if "unavailable" in line or "warning" in line:  # --io xdp fell back, an option refused
            print(line.rstrip(), file=sys.stderr)
        if "ready" in line or not line:
            break
    try:
        return measure(t, seconds, conns, tests)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        t.procs.remove(p)
        tail = out.decode().strip().splitlines()
        print("\n".join(line for line in tail if line.startswith(("packets in", "  io", "  drops"))),
              file=sys.stderr)


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit in ("ms", "us", "Gb"):
        return f"{v:.2f}"
    return f"{v:,.0f}"


def table(results: dict[str, dict[str, Any]], base: str = "kernel") -> str:
    """The figures of every column, and each column's ratio to the ``base`` column."""
    cols = list(results)
    kern = results.get(base)
    def cpu(test: str, per: str) -> list[tuple[str, Any, str]]:
        return [("  host CPU busy %", lambda r: r[test].get("host_busy"), ""),
                ("    of it softirq %", lambda r: r[test].get("host_softirq"), ""),
                (f"  host CPU us per {per}", lambda r: r[test].get("host_us"), "us")]

    rows = [
        ("HTTP req/s (keep-alive)", lambda r: r["http"]["rps"], ""),
        ("  latency p50 ms", lambda r: r["http"].get("p50_ms"), "ms"),
        ("  latency p90 ms", lambda r: r["http"].get("p90_ms"), "ms"),
        ("  latency p99 ms", lambda r: r["http"].get("p99_ms"), "ms"),
        ("  errors", lambda r: r["http"]["errors"], ""),
        *cpu("http", "request"),
        ("new connections/s (no keep-alive)", lambda r: r["newconn"]["rps"], ""),
        ("  latency p99 ms", lambda r: r["newconn"].get("p99_ms"), "ms"),
        ("  errors", lambda r: r["newconn"]["errors"], ""),
        *cpu("newconn", "connection"),
        ("UDP 64 B frames/s forwarded", lambda r: r["udp"]["fwd_pps"], ""),
        ("  offered by the client", lambda r: r["udp"]["sent_pps"], ""),
        ("  forwarder CPU us per frame", lambda r: r["udp"].get("cpu_us"), "us"),
        *cpu("udp", "frame"),
        ("TCP bulk Gbit/s (wrk -c4, 256 MiB file)", lambda r: r["tcp"]["gbps"], "Gb"),
        ("  errors", lambda r: r["tcp"]["errors"], ""),
        *cpu("tcp", "MB"),
    ]
    fast = [c for c in cols if c != base]
    head = f"{'':36}" + "".join(f"{c:>14}" for c in cols) + "".join(f"{c + '/' + base:>20}" for c in fast)
    out = [head, "-" * len(head)]
    first = next(iter(results.values()))
    for name, get, unit in rows:
        try:
            get(first)
        except KeyError:  # a test not run (--tests)
            continue
        line = f"{name:36}" + "".join(f"{fmt(get(results[c]), unit):>14}" for c in cols)
        if kern is not None:
            for c in fast:
                a, b = get(results[c]), get(kern)
                line += f"{(a / b if a is not None and b else float('nan')):>20.2f}"
        out.append(line)
    return "\n".join(out)


def variants(a: argparse.Namespace, io: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Every combination of the column axes asked for, for one receive path: (column
    suffix, ``fastvs forward`` options, worker loop). An axis at its default (0, auto, c)
    adds neither; the ``--xdp-*`` axes apply to ``--io xdp`` only."""
    xdp = io == "xdp"
    axes = [("-r", "--xdp-ring-size", a.xdp_ring_sizes if xdp else [0], 0),
            ("-bp", "--xdp-busy-poll", a.xdp_busy_polls if xdp else [0], 0),
            ("-", "--xdp-mode", a.xdp_modes if xdp else ["auto"], "auto"),
            ("-spin", "--spin-us", a.spins, 0)]
    out = []
    for values in itertools.product(*(vals for _, _, vals, _ in axes)):
        suffix, more = "", ()
        for (tag, opt, _, default), v in zip(axes, values, strict=True):
            if v != default:
                suffix += f"{tag}{v}"
                more += (opt, str(v))
        out += [(suffix + ("-py" if loop == "python" else ""), more, loop) for loop in a.loops]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=50, help="wrk connections")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--io", nargs="+", default=["ring-v2", "ring-v3", "mmsg"],
                    choices=("ring-v2", "ring-v3", "mmsg", "xdp"),
                    help="fastvs receive paths to measure")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds (each measures every column once, in turn); the table "
                    "shows per-column medians")
    ap.add_argument("--fastvs-args", default="", help="extra arguments for fastvs forward")
    ap.add_argument("--queues", type=int, default=1, help="queues of the director's veths (xdp -wN uses N)")
    ap.add_argument("--xdp-ring-sizes", type=int, nargs="+", default=[0],
                    help="--io xdp: one column per --xdp-ring-size (0: the default)")
    ap.add_argument("--xdp-busy-polls", type=int, nargs="+", default=[0],
                    help="--io xdp: one column per --xdp-busy-poll microseconds (0: off)")
    ap.add_argument("--xdp-modes", nargs="+", default=["auto"], choices=("auto", "skb", "drv"),
                    help="--io xdp: one column per --xdp-mode (attach: native drv, generic skb)")
    ap.add_argument("--spins", type=int, nargs="+", default=[0],
                    help="one column per --spin-us microseconds (0: off; rings and xdp)")
    ap.add_argument("--loops", nargs="+", default=["c"], choices=("c", "python"),
                    help="one column per worker loop: c (FrameIO.run, batches in C) or python "
                    "(FASTVS_LIVE_LOOP=python: receive, process, transmit called per batch)")
    ap.add_argument("--tests", nargs="+", default=list(TESTS), choices=TESTS,
                    help="measurements to run (all by default)")
    ap.add_argument("--rps", action="store_true",
                    help="receive packet steering over all CPUs on every lab interface (see spread_rps)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    ok, why = have_netns()
    if not ok:
        print(f"bench_forward: {why}", file=sys.stderr)
        return 1
    for tool in ("wrk", "nft"):
        if shutil.which(tool) is None:
            print(f"bench_forward: {tool} not installed", file=sys.stderr)
            return 1
    rounds: list[dict[str, dict[str, Any]]] = []
    with Topology(server="nginx", queues=a.queues) as t:
        print(f"servers: {'nginx' if shutil.which('nginx') else 'busybox httpd'}; "
              f"{a.seconds:g} s per measurement, wrk -t2 -c{a.conns}", file=sys.stderr)
        rules = t.tmp / "bench.rules"
        rules.write_text(rules_text())
        # each run opens tens of thousands of connections: keep the servers' TIME_WAIT
        # sockets from one run out of the next (a SYN that meets one is answered with a
        # challenge ACK and retried a second later), and give the client all ports
        for r in t.rs:
            t.nsx(r, "sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0")
        t.nsx(t.client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
        if shutil.which("nft"):
            for r in t.rs:  # no ICMP port unreachable storms from the UDP sink port
                t.nsx(r, "nft", "add table ip sink; add chain ip sink in { type filter hook input priority 0; }; "
                      f"add rule ip sink in udp dport {BLAST_PORT} drop", check=False)
        extra = tuple(a.fastvs_args.split())
        for rnd in range(a.repeat):
            results: dict[str, dict[str, Any]] = {}
            for io in a.io:
                for w in a.workers:
                    for suffix, more, loop in variants(a, io):
                        q = w if io == "xdp" and w <= a.queues else 1
                        if a.queues > 1:
                            t.set_queues(q)
                        if a.rps:
                            spread_rps(t)
                        print(f"-- round {rnd + 1}: fastvs forward --io {io} --workers {w} {' '.join(more)} "
                              + ("(FASTVS_LIVE_LOOP=python) " if loop == "python" else "")
                              + f"({q} queue{'s' if q > 1 else ''})", file=sys.stderr)
                        results[f"{io}-w{w}{suffix}"] = run_fastvs(t, rules, w, a.seconds, a.conns, io,
                                                                   extra + more, tuple(a.tests), loop)
            if a.queues > 1:
                t.set_queues(1)
            if a.rps:
                spread_rps(t)
            print(f"-- round {rnd + 1}: kernel: nftables dnat numgen + conntrack", file=sys.stderr)
            kernel_mode(t, True)
            try:
                results["kernel"] = measure(t, a.seconds, a.conns, tuple(a.tests))
            finally:
                kernel_mode(t, False)
            rounds.append(results)
            if a.repeat > 1:
                print(table(results), file=sys.stderr)
    med = median_results(rounds)
    if a.repeat > 1:
        print(f"medians of {a.repeat} rounds:")
    print(table(med))
    if a.json:
        Path(a.json).write_text(json.dumps({"rounds": rounds, "median": med}, indent=2))
    return 0


def median_results(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per column and figure, the median over the rounds."""
    out: dict[str, dict[str, Any]] = {}
    for col in rounds[0]:
        out[col] = {}
        for test in rounds[0][col]:
            keys = set().union(*(r[col][test] for r in rounds))
            out[col][test] = {k: statistics.median(r[col][test][k] for r in rounds if k in r[col][test])
                              for k in keys}
    return out


if __name__ == "__main__":
    sys.exit(main())
