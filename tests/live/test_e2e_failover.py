"""Failover of two fastvs directors in network namespaces, as an operator runs it:
keepalived's VRRP (the Debian package, VRRP only, no virtual servers) decides which
director is the master and calls ``fastvs ctl role master|backup`` from its notify
scripts; the master sends connection sync messages to the backup over the VRRP link
(``--sync-backup dh``: both start as backups, keepalived promotes one).

A client holds long-lived TCP connections through the VIP (slow downloads, and idle
keep-alive connections that send again after the switch), probes new connections every
0.2 s, and wrk loads the HTTP service. The master's fastvs and keepalived are killed
(SIGKILL); the backup's keepalived notices (VRRP: three advertisement intervals plus
the skew time), makes it the master, and it announces the VIP and the real servers'
gateway (gratuitous ARP). Counted: resets and failed downloads or echoes of the
established connections (target 0), failed wrk requests, and the window in which new
connections failed, against VRRP's detection time. ``pytest -s`` prints the figures.

Topology: tests/netns.py's FailoverTopology.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import HTTP_PORT, RS_IPS, VIP, FailoverTopology, Forwarder, have_netns, wait_for  # noqa: E402

_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_why)]

SLOW_PORT = 8000
ADVERT_INT = 1  # VRRP advertisement interval (s): the backup takes over 3 * 1 + skew later
SYNCID = 7
N_DOWN, N_IDLE = 4, 4
CHUNKS, CHUNK, CHUNK_MS = 300, 1000, 100  # each download: 300 KB over 30 s

SLOW_SERVER = r"""
import socket, sys, threading, time
def handle(c):
    f = c.makefile("rb", buffering=0)
    try:
        while True:
            line = f.readline()
            if not line:
                return
            w = line.split()
            if w and w[0] == b"DOWNLOAD":
                n, size, ms = int(w[1]), int(w[2]), int(w[3])
                for i in range(n):
                    c.sendall(bytes([65 + i % 26]) * size)
                    time.sleep(ms / 1000)
                return
            c.sendall(b"ECHO " + line)
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(128)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import json, os, socket, sys, threading, time
cfg = json.loads(sys.argv[1])
vip, port, go = cfg["vip"], cfg["port"], cfg["go"]
res = {"downloads": [], "idle": [], "probes": []}
lock = threading.Lock()
def err(e):
    return "reset" if isinstance(e, ConnectionResetError) else f"{type(e).__name__}: {e}"
def download(i):
    want = cfg["chunks"] * cfg["chunk"]
    got, error, t0 = 0, None, time.monotonic()
    try:
        s = socket.create_connection((vip, port), timeout=10)
        s.settimeout(60)
        s.sendall(f"DOWNLOAD {cfg['chunks']} {cfg['chunk']} {cfg['ms']}\n".encode())
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
        s.close()
    except OSError as e:
        error = err(e)
    with lock:
        res["downloads"].append({"i": i, "bytes": got, "want": want, "error": error,
                                 "seconds": round(time.monotonic() - t0, 2)})
idle = []
for i in range(cfg["idle"]):
    s = socket.create_connection((vip, port), timeout=10)
    s.settimeout(30)
    s.sendall(b"hello %d\n" % i)
    idle.append((s, s.makefile("rb")))
    assert idle[-1][1].readline() == b"ECHO hello %d\n" % i
threads = [threading.Thread(target=download, args=(i,)) for i in range(cfg["down"])]
for t in threads:
    t.start()
stop = False
def probe():
    while not stop:
        t = time.time()
        ok = False
        try:
            s = socket.create_connection((vip, 80), timeout=1)
            s.settimeout(1)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            ok = s.recv(100).startswith(b"HTTP/1.")
            s.close()
        except OSError:
            pass
        with lock:
            res["probes"].append((t, ok))
        time.sleep(max(0.0, 0.2 - (time.time() - t)))
pt = threading.Thread(target=probe)
pt.start()
print("READY", flush=True)
while not os.path.exists(go):
    time.sleep(0.05)
for i, (s, f) in enumerate(idle):
    try:
        s.sendall(b"again %d\n" % i)
        line = f.readline()
        res["idle"].append({"i": i, "ok": line == b"ECHO again %d\n" % i, "error": None if line else "closed"})
    except OSError as e:
        res["idle"].append({"i": i, "ok": False, "error": err(e)})
for t in threads:
    t.join()
stop = True
pt.join()
print(json.dumps(res), flush=True)
"""


def keepalived_conf(name: str, priority: int, notify: Path) -> str:
    return f"""! VRRP only: which fastvs director is the master (no virtual_server, no VIPs:
! fastvs announces the VIPs itself when `fastvs ctl role master` makes it the master)
global_defs {{
    router_id {name}
    script_user root
    enable_script_security
}}
vrrp_instance VI_FASTVS {{
    state BACKUP
    interface dh
    virtual_router_id 51
    priority {priority}
    advert_int {ADVERT_INT}
    notify_master "{notify} master"
    notify_backup "{notify} backup"
    notify_fault "{notify} backup"
}}
"""


class Director:
    """One director namespace: fastvs forward (starting as a backup) and keepalived."""

    def __init__(self, topo: FailoverTopology, i: int, rules: Path, workers: int = 1) -> None:
        self.topo, self.i = topo, i
        self.ns = topo.directors[i]
        self.sock = topo.tmp / f"control-{i}.sock"
        self.fwd = Forwarder(topo, rules, "--control", str(self.sock), "--sync-backup", "dh",
                             "--syncid", str(SYNCID), "--workers", str(workers), director=self.ns, flush=i == 0, ready_timeout=40)
        self.notify_log = topo.tmp / f"notify-{i}.log"
        notify = topo.tmp / f"notify-{i}.sh"
        notify.write_text(f"#!/bin/sh\necho \"$(date +%s.%N) $1\" >> {self.notify_log}\n"
                          f"exec {sys.executable} -m fastvs.cli ctl --control {self.sock} role \"$1\" "
                          f">> {self.notify_log} 2>&1\n")
        notify.chmod(0o755)
        conf = topo.tmp / f"keepalived-{i}.conf"
        conf.write_text(keepalived_conf(f"fastvs_d{i}", 150 - 50 * i, notify))
        self.pidfiles = [topo.tmp / f"keepalived-{i}.pid", topo.tmp / f"vrrp-{i}.pid"]
        self.ka = topo.spawn(self.ns, "keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
                             "-f", str(conf), "-p", str(self.pidfiles[0]), "-r", str(self.pidfiles[1]),
                             stdout=open(topo.tmp / f"keepalived-{i}.log", "wb"), stderr=subprocess.STDOUT)

    def role(self) -> str:
        from fastvs.control.ctl import request

        return str(request(str(self.sock), "role")["role"])

    def conns(self) -> list[dict[str, Any]]:
        from fastvs.control.ctl import request

        return list(request(str(self.sock), "list", {"conns": True}).get("conns", []))

    def kill(self) -> None:
        """SIGKILL fastvs and keepalived (both its processes), as a crash would."""
        pids = [self.fwd.p.pid]
        for f in self.pidfiles:
            try:
                pids.append(int(f.read_text().strip()))
            except (OSError, ValueError):
                pass
        # the forwarder runs under `ip netns exec`, which execs: the Popen pid is python's
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.fwd.p.wait(10)
        self.ka.wait(10)

    def stop(self) -> str:
        if self.ka.poll() is None:
            self.ka.terminate()
            try:
                self.ka.wait(10)
            except subprocess.TimeoutExpired:
                self.ka.kill()
        if self.fwd.p.poll() is None:
            return self.fwd.stop()[2]
        return self.fwd.log()


def _wrk(out: str) -> tuple[int, int]:
    """(requests, failed) of a wrk report: socket errors and non-2xx/3xx."""
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    failed = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        failed += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        failed += int(m.group(1))
    return requests, failed


@pytest.mark.parametrize("workers", [1, 2])
def test_failover_keeps_established_connections(workers: int) -> None:
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived not installed (apt-get install keepalived)")
    with FailoverTopology() as topo:
        for i, r in enumerate(topo.rs):
            topo.spawn(r, sys.executable, "-c", SLOW_SERVER, str(SLOW_PORT))
            topo.wait_port(r, RS_IPS[i], SLOW_PORT)
        rules = topo.tmp / "rules"
        rules.write_text(topo.rules_text() + f"-A -t {VIP}:{SLOW_PORT} -s rr\n" + "".join(
            f"-a -t {VIP}:{SLOW_PORT} -r {ip}:{SLOW_PORT} -m -w 1\n" for ip in RS_IPS))
        ds = [Director(topo, i, rules, workers) for i in range(2)]
        a, b = ds
        logs: list[str] = []
        try:
            wait_for(lambda: (a.role(), b.role()), 30, "keepalived: d master, d2 backup",
                     until=lambda r: r == ("master", "backup"), interval=0.2)
            wait_for(lambda: topo.nsx(topo.client, "curl", "-s", "--max-time", "2", f"http://{VIP}/",
                                      check=False, timeout=10).stdout.strip(), 20, "the VIP answers",
                     until=lambda out: out in ("rs1", "rs2"), interval=0.2)
            go = topo.tmp / "go"
            cfg = {"vip": VIP, "port": SLOW_PORT, "go": str(go), "down": N_DOWN, "idle": N_IDLE,
                   "chunks": CHUNKS, "chunk": CHUNK, "ms": CHUNK_MS}
            client = topo.spawn(topo.client, sys.executable, "-c", CLIENT, json.dumps(cfg),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert client.stdout is not None
            assert client.stdout.readline().strip() == b"READY", client.stderr.read() if client.stderr else ""
            wrk = None
            if shutil.which("wrk"):
                wrk = topo.spawn(topo.client, "wrk", "-t1", "-c4", "-d25s", "--timeout", "2s", f"http://{VIP}:{HTTP_PORT}/",
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

            # the backup holds every long-lived connection (a message leaves at most 2 s
            # after its first record)
            def synced() -> int:
                return sum(1 for c in b.conns() if c.get("vport") == SLOW_PORT and c.get("state") == "ESTABLISHED")

            t_sync0 = time.monotonic()
            wait_for(synced, 20, "the backup's copy of the long-lived connections",
                     until=lambda n: n >= N_DOWN + N_IDLE, interval=0.2)
            sync_took = time.monotonic() - t_sync0
            time.sleep(1.0)
            t_kill = time.time()
            a.kill()
            wait_for(b.role, 30, "d2 made the master by keepalived", until=lambda r: r == "master", interval=0.05)
            t_master = time.time()
            b.fwd.wait_log("role: backup -> master", 10)
            time.sleep(2.0)
            go.write_text("go")  # the idle connections send again
            out, err = client.communicate(timeout=180)
            res = json.loads(out.decode().strip().splitlines()[-1])
            wrk_req, wrk_failed = (0, 0)
            if wrk is not None:
                wout, _ = wrk.communicate(timeout=120)
                wrk_req, wrk_failed = _wrk(wout.decode())
            notify = (b.notify_log.read_text() if b.notify_log.exists() else "")
        finally:
            for d in ds:
                logs.append(d.stop())

        downloads, idle, probes = res["downloads"], res["idle"], res["probes"]
        resets = sum(1 for d in downloads if d["error"] == "reset") + sum(1 for i in idle if i["error"] == "reset")
        lost = [d for d in downloads if d["error"] or d["bytes"] != d["want"]] + [i for i in idle if not i["ok"]]
        failed_probes = [t for t, ok in probes if not ok]
        window = (max(failed_probes) - min(failed_probes) + 0.2) if failed_probes else 0.0
        outside = [t for t in failed_probes if not t_kill - 0.5 <= t <= t_master + 3.0]
        detection = t_master - t_kill
        print(f"\nfailover ({workers} worker{'s' if workers > 1 else ''} per director): the backup held "
              f"the {N_DOWN + N_IDLE} long-lived connections (waited {sync_took:.1f} s); master killed; d2 master {detection:.2f} s later (VRRP advert_int "
              f"{ADVERT_INT} s: 3 intervals + skew, and the notify script)")
        print(f"established connections lost: {len(lost)} of {N_DOWN + N_IDLE} (resets {resets}); "
              f"downloads {[d['bytes'] for d in downloads]} bytes in {[d['seconds'] for d in downloads]} s")
        print(f"new connections (probe every 0.2 s): {len(failed_probes)} of {len(probes)} failed, "
              f"within {window:.1f} s; {len(outside)} outside the takeover")
        print(f"wrk: {wrk_failed} of {wrk_req} requests failed")
        print("notify (d2):\n" + notify)
        assert not lost, (lost, logs[1][-3000:])
        assert resets == 0
        assert not outside, (outside, t_kill, t_master)
        assert "role: backup -> master" in logs[1] and "sync_rx_drop" not in logs[1]
