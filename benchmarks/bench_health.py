"""Health checks beside the data path: ``fastvs forward`` with 100 real servers, each under
keepalived's HTTP_GET every second, against the same forwarder with no checkers.

The topology is tests/netns.py's (client, director, switch, two real-server namespaces
running nginx), plus 49 more addresses on each real server's interface, so that the
virtual server has 100 real servers (``10.1.0.11``, ``10.1.0.12`` and ``10.1.0.20`` -
``10.1.0.117``). The director gets a management interface on the servers' segment
(10.1.0.2), from which the checks leave, as keepalived's do. Both variants read a
keepalived.conf with the same 100 real servers (rr, NAT); in ``checks`` every real server
has ``HTTP_GET { url { path /index.html status_code 200 } }`` with ``delay_loop 1``; in
``none`` the real servers have no checker (keepalived then keeps them up).

Measured, the variants interleaved (none, checks, none, checks, ...): HTTP requests/s
(keep-alive) and new connections/s (``Connection: close``) with ``wrk``, and the checks
the real servers actually received per second (an nftables counter of SYNs from the
management address), and the CPU time the director's processes (forwarder, workers,
health-check process) use per second, under load and with no traffic. Prints per-variant medians and the ratio checks/none. Needs root,
``ip netns``, ``wrk``, ``nft`` and nginx (busybox httpd otherwise); run as a script::

    python benchmarks/bench_health.py [--seconds 5] [--repeat 3] [--workers 1] [--json out.json]

Nothing is asserted; pytest collects no test from this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_forward import wrk  # noqa: E402
from netns import HTTP_PORT, RS_IPS, VIP, Forwarder, Topology, have_netns, wait_for  # noqa: E402

MGMT_IP = "10.1.0.2"
EXTRA_PER_RS = 49


def real_servers() -> list[list[str]]:
    """The addresses of each real-server namespace: its own plus 49 aliases."""
    out = []
    for i, ip in enumerate(RS_IPS):
        base = 20 + i * EXTRA_PER_RS
        out.append([ip] + [f"10.1.0.{base + k}" for k in range(EXTRA_PER_RS)])
    return out


def keepalived_conf(reals: list[str], checks: bool) -> str:
    check = """
        HTTP_GET {
            url {
                path /index.html
                status_code 200
            }
            connect_timeout 2
            retry 1
            delay_before_retry 1
        }""" if checks else ""
    body = "".join(f"""
    real_server {ip} {HTTP_PORT} {{
        weight 1{check}
    }}""" for ip in reals)
    return f"""! bench_health: 100 real servers, {"HTTP_GET every second" if checks else "no checkers"}
virtual_server {VIP} {HTTP_PORT} {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
{body}
}}
"""


def setup(t: Topology, addrs: list[list[str]]) -> None:
    d, sw = t.director, t.switch
    t._veth(d, "dm", sw, "pm")
    t.nsx(sw, "ip", "link", "set", "pm", "master", "br0")
    t.nsx(sw, "ip", "link", "set", "pm", "up")
    t.nsx(d, "ip", "addr", "add", f"{MGMT_IP}/24", "dev", "dm")
    t.nsx(d, "ip", "link", "set", "dm", "up")
    for ns, ips in zip(t.rs, addrs, strict=True):
        for ip in ips[1:]:
            t.nsx(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        # count the checks that arrive (SYNs from the director's management address)
        t.nsx(ns, "nft", "add table ip hc; add chain ip hc in { type filter hook input priority 0; }; "
              f"add rule ip hc in ip saddr {MGMT_IP} tcp flags & (syn|ack) == syn counter")
        t.nsx(ns, "sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0")
    t.nsx(t.client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")


def checks_seen(t: Topology) -> int:
    total = 0
    for ns in t.rs:
        out = t.nsx(ns, "nft", "list", "table", "ip", "hc").stdout
        m = re.search(r"counter packets (\d+)", out)
        total += int(m.group(1)) if m else 0
    return total


def director_cpu(t: Topology) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each process in the director's namespace
    (the forwarder, its workers and its health-check process)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in t.nsx(t.director, "ip", "netns", "pids", t.director, check=False).stdout.split():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(pid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def run(t: Topology, conf: Path, workers: int, seconds: float, conns: int, checks: bool,
        ctl: Path) -> dict[str, Any]:
    fwd = Forwarder(t, conf, "--workers", str(workers), "--control", str(ctl), ready_timeout=60)
    try:
        if checks:  # every server checked up once before measuring
            from fastvs.control.ctl import request

            def all_up() -> bool | None:
                snap = request(str(ctl), "health")
                return len(snap) == 100 and all(s["state"] == "up" and all(c["last"] for c in s["checkers"])
                                                for s in snap) or None
            wait_for(all_up, 60, "100 real servers checked up")
        t.nsx(t.client, "curl", "-s", "--max-time", "3", f"http://{VIP}/", check=False)
        c0, t0, cpu0 = checks_seen(t), time.monotonic(), director_cpu(t)
        res: dict[str, Any] = {"http": wrk(t, seconds, conns, close=False),
                               "newconn": wrk(t, seconds, conns, close=True)}
        took = time.monotonic() - t0
        res["checks_per_s"] = (checks_seen(t) - c0) / took
        res["director_cpu"] = cpu_used(cpu0, director_cpu(t)) / took
        # the checks alone, no traffic: what they cost the director per second
        cpu0, t0 = director_cpu(t), time.monotonic()
        time.sleep(seconds)
        res["idle_cpu"] = cpu_used(cpu0, director_cpu(t)) / (time.monotonic() - t0)
        return res
    finally:
        fwd.stop()


def median(rounds: list[dict[str, Any]], get: Any) -> float:
    return statistics.median(get(r) for r in rounds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=50, help="wrk connections")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of (none, checks)")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    ok, why = have_netns()
    if not ok:
        print(f"bench_health: {why}", file=sys.stderr)
        return 1
    for tool in ("wrk", "nft"):
        if shutil.which(tool) is None:
            print(f"bench_health: {tool} not installed", file=sys.stderr)
            return 1
    results: dict[str, list[dict[str, Any]]] = {"none": [], "checks": []}
    with Topology(server="nginx") as t:
        addrs = real_servers()
        setup(t, addrs)
        reals = [ip for ips in addrs for ip in ips]
        confs = {}
        for name in results:
            confs[name] = t.tmp / f"bench-{name}.conf"
            confs[name].write_text(keepalived_conf(reals, name == "checks"))
        print(f"{len(reals)} real servers; servers: {'nginx' if shutil.which('nginx') else 'busybox httpd'}; "
              f"{a.seconds:g} s per measurement, wrk -t2 -c{a.conns}, --workers {a.workers}", file=sys.stderr)
        for rnd in range(a.repeat):
            for name in results:
                ctl = t.tmp / f"ctl-{rnd}-{name}.sock"
                r = run(t, confs[name], a.workers, a.seconds, a.conns, name == "checks", ctl)
                results[name].append(r)
                print(f"-- round {rnd + 1} {name:6}: {r['http']['rps']:9,.0f} req/s  "
                      f"{r['newconn']['rps']:8,.0f} conn/s  errors {r['http']['errors']:.0f}/"
                      f"{r['newconn']['errors']:.0f}  checks/s {r['checks_per_s']:.1f}  "
                      f"director CPU {r['director_cpu']:.2f} (idle {r['idle_cpu']:.3f})", file=sys.stderr)
    rows = [("HTTP req/s (keep-alive)", lambda r: r["http"]["rps"]),
            ("  latency p99 ms", lambda r: r["http"].get("p99_ms", float("nan"))),
            ("new connections/s", lambda r: r["newconn"]["rps"]),
            ("  latency p99 ms", lambda r: r["newconn"].get("p99_ms", float("nan"))),
            ("checks received/s", lambda r: r["checks_per_s"]),
            ("director CPU s/s under load", lambda r: r["director_cpu"]),
            ("director CPU s/s, no traffic", lambda r: r["idle_cpu"])]
    print(f"medians of {a.repeat} interleaved rounds, 100 real servers")
    print(f"{'':28}{'none':>12}{'checks':>12}{'checks/none':>14}")
    for label, get in rows:
        n, c = median(results["none"], get), median(results["checks"], get)
        print(f"{label:28}{n:12,.2f}{c:12,.2f}{(c / n if n else float('nan')):14.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
