"""``fastvs forward -r keepalived.conf`` end to end, run as an operator runs a director:
keepalived's HTTP_GET checks take a stopped real server out and put it back (or set its
weight to 0 with ``inhibit_on_failure``), the sorry server takes traffic when both are
down, ``/metrics`` agrees with ``fastvs ctl list --json``, and ``fastvs ctl weight``
moves new connections at once.

The topology is tests/netns.py's, plus one management interface of the director on the
real servers' segment (``dm``, 10.1.0.2): the checks leave from the director's own stack,
as keepalived's do; the interfaces fastvs forwards on have no address (their IP traffic
never reaches the kernel). Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import HTTP_PORT, RS_IPS, VIP, Forwarder, Topology, have_netns, wait_for  # noqa: E402

_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_why)]

MGMT_IP = "10.1.0.2"
SORRY_PORT = 8080
DELAY_LOOP, CONNECT_TIMEOUT, RETRY = 1, 1, 1
# keepalived's bound for taking a failed server out, plus one second
OUT_WITHIN = DELAY_LOOP * (RETRY + 1) + CONNECT_TIMEOUT + 1
SLACK = 4.0  # a loaded two-core machine: the bound is measured and reported, asserted with this slack


def keepalived_conf(*, inhibit: bool = False, sorry: bool = False) -> str:
    reals = "".join(f"""
    real_server {ip} {HTTP_PORT} {{
        weight 1
        {"inhibit_on_failure" if inhibit else ""}
        HTTP_GET {{
            url {{
                path /index.html
                status_code 200
            }}
            connect_timeout {CONNECT_TIMEOUT}
            retry {RETRY}
            delay_before_retry 1
        }}
    }}""" for ip in RS_IPS)
    return f"""! a director of two web servers
global_defs {{
    router_id fastvs-test
}}
virtual_server {VIP} {HTTP_PORT} {{
    delay_loop {DELAY_LOOP}
    lb_algo rr
    lb_kind NAT
    protocol TCP
    {f"sorry_server {RS_IPS[0]} {SORRY_PORT}" if sorry else ""}
{reals}
}}
"""


class Director:
    """A topology with a management interface, a forwarder from a keepalived.conf with
    --control and --metrics, and helpers to stop and start the real servers."""

    def __init__(self, topo: Topology, conf: str, *extra: str) -> None:
        self.topo = topo
        d, sw = topo.director, topo.switch
        if not topo.nsx(d, "ip", "link", "show", "dm", check=False).returncode == 0:
            topo._veth(d, "dm", sw, "pm")
            topo.nsx(sw, "ip", "link", "set", "pm", "master", "br0")
            topo.nsx(sw, "ip", "link", "set", "pm", "up")
            topo.nsx(d, "ip", "addr", "add", f"{MGMT_IP}/24", "dev", "dm")
            topo.nsx(d, "ip", "link", "set", "dm", "up")
        self.sock = topo.tmp / f"control-{time.monotonic_ns()}.sock"
        self.port = 9100 + int(time.monotonic_ns() % 500)
        path = topo.tmp / f"keepalived-{time.monotonic_ns()}.conf"
        path.write_text(conf)
        self.conf = path
        self.fwd = Forwarder(topo, path, "--control", str(self.sock),
                             "--metrics", f"127.0.0.1:{self.port}", *extra, ready_timeout=30)

    # -- the real servers' web servers (nginx, as tests/netns.py starts them) ------------
    def server(self, i: int, port: int = HTTP_PORT) -> subprocess.Popen[bytes]:
        """The running nginx of real server ``i`` listening on ``port``."""
        names = {f"rs{i + 1}-nginx-{port}.conf"} | ({f"rs{i + 1}-nginx.conf"} if port == HTTP_PORT else set())
        return next(p for p in self.topo.procs if p.poll() is None and isinstance(p.args, list)
                    and "nginx" in p.args and any(str(a).endswith(tuple(names)) for a in p.args))

    def stop_rs(self, i: int, port: int = HTTP_PORT) -> None:
        p = self.server(i, port)
        p.terminate()  # nginx's fast shutdown: listening sockets closed at once
        p.wait(10)
        self.topo.procs.remove(p)

    def start_rs(self, i: int, port: int = HTTP_PORT) -> None:
        tmp = self.topo.tmp
        conf = tmp / f"rs{i + 1}-nginx-{port}.conf"
        conf.write_text(
            f"user root; worker_processes 1; daemon off; pid {tmp / f'rs{i + 1}-{port}.pid'};\n"
            "error_log /dev/null crit;\n"
            "events { worker_connections 1024; }\n"
            "http { access_log off;\n"
            f"  server {{ listen {port} reuseport; root {tmp / f'rs{i + 1}'}; }} }}\n")
        self.topo.spawn(self.topo.rs[i], "nginx", "-c", str(conf), "-p", str(tmp))
        self.topo.wait_port(self.topo.rs[i], RS_IPS[i], port)

    # -- asking the forwarder --------------------------------------------------------------
    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fastvs.cli", "ctl", "--control", str(self.sock), *args],
                              capture_output=True, text=True, timeout=30)

    def health(self) -> dict[str, dict[str, Any]]:
        from fastvs.control.ctl import request

        return {h["server"]: h for h in request(str(self.sock), "health")}

    def listing(self) -> dict[str, Any]:
        r = self.ctl("list", "--json")
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def weights(self) -> dict[str, int]:
        from fastvs.control.ctl import request

        svcs = request(str(self.sock), "list")["services"]
        return {f"{r['addr']}:{r['port']}": r["weight"] for s in svcs for r in s["reals"]}

    def curl(self, timeout: float = 5) -> str:
        r = self.topo.nsx(self.topo.client, "curl", "-s", "--max-time", str(timeout),
                          f"http://{VIP}/index.html", check=False, timeout=timeout + 10)
        return r.stdout.strip() if r.returncode == 0 else f"error {r.returncode}"

    def metrics(self) -> str:
        r = self.topo.nsx(self.topo.director, "curl", "-s", "--max-time", "10",
                          f"http://127.0.0.1:{self.port}/metrics", check=False, timeout=20)
        assert r.returncode == 0, r.stderr
        return r.stdout


def rs(i: int) -> str:
    return f"{RS_IPS[i]}:{HTTP_PORT}"


@pytest.fixture(scope="module")
def topo():
    with Topology(server="nginx") as t:
        yield t


def _all_up(d: Director) -> None:
    """Every real server up after its checks ran at least twice (a checker that never
    ran goes down on its first failure; after a pass it takes retry + 1 failures)."""

    def ok() -> bool:
        h = d.health()
        return len(h) >= 2 and all(s["up"] and all(c["attempts"] >= 2 for c in s["checkers"] if c["run"])
                                   for s in h.values())

    wait_for(ok, 20, "every real server up, its checks run")


@pytest.mark.parametrize("workers", [1, 2])
def test_health_takes_out_and_back(topo: Topology, workers: int) -> None:
    d = Director(topo, keepalived_conf(), "--workers", str(workers))
    try:
        _all_up(d)
        got = [d.curl() for _ in range(10)]
        assert set(got) == {"rs1", "rs2"}, got
        if workers == 1:  # rr alternates (each worker has its own rr otherwise)
            assert all(a != b for a, b in zip(got, got[1:], strict=False)), got
        # stop rs2: out within keepalived's bound
        t0 = time.monotonic()
        d.stop_rs(1)
        wait_for(lambda: not d.health()[rs(1)]["up"], OUT_WITHIN + SLACK, "rs2 reported down")
        wait_for(lambda: rs(1) not in d.weights(), OUT_WITHIN + SLACK, "rs2 out of the listing")
        took = time.monotonic() - t0
        print(f"rs2 out of the table {took:.2f} s after its nginx stopped (bound {OUT_WITHIN} s)")
        assert took <= OUT_WITHIN + SLACK, took
        log = d.fwd.wait_log(f"{rs(1)}: up -> down")
        assert "health: " in log, log
        got = [d.curl() for _ in range(10)]
        assert got == ["rs1"] * 10, got
        # start it again: back in
        d.start_rs(1)
        wait_for(lambda: d.health()[rs(1)]["up"] and rs(1) in d.weights(), 20, "rs2 back")
        d.fwd.wait_log(f"{rs(1)}: down -> up")
        got = [d.curl() for _ in range(6)]
        assert set(got) == {"rs1", "rs2"}, got
        # ctl health as an operator types it
        r = d.ctl("health")
        assert r.returncode == 0 and rs(0) in r.stdout and " up " in r.stdout, (r.stdout, r.stderr)
        print(r.stdout)
        # SIGHUP re-reads the keepalived.conf into the checkers: states kept, weight changed
        changed = d.health()[rs(1)]["changed"]
        d.conf.write_text(keepalived_conf().replace("weight 1", "weight 3", 2))
        d.fwd.hup()
        wait_for(lambda: d.weights() == {rs(0): 3, rs(1): 3}, 15, "weights 3 after SIGHUP")
        h = d.health()
        assert h[rs(1)]["up"] and h[rs(1)]["changed"] == changed, h
    finally:
        code, _, err = d.fwd.stop()
    print(err)  # the forwarder's log: transitions, table changes (pytest -s)
    assert code == 0, err
    assert "not run by fastvs" not in err, err


@pytest.mark.parametrize("workers", [1, 2])
def test_inhibit_on_failure_and_metrics_and_weight(topo: Topology, workers: int) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    d = Director(topo, keepalived_conf(inhibit=True), "--workers", str(workers))
    try:
        _all_up(d)
        for _ in range(6):
            assert d.curl() in ("rs1", "rs2")
        d.stop_rs(1)
        wait_for(lambda: d.weights().get(rs(1)) == 0, OUT_WITHIN + SLACK, "rs2 at weight 0")
        assert d.weights()[rs(0)] == 1
        assert [d.curl() for _ in range(6)] == ["rs1"] * 6
        d.start_rs(1)
        wait_for(lambda: d.weights().get(rs(1)) == 1, 20, "rs2 at weight 1 again")

        # /metrics against ctl list --json (no traffic in between: the same counters)
        def agree() -> tuple[bool, str]:
            lst = d.listing()
            fams = {f.name: f for f in text_string_to_metric_families(d.metrics())}
            svc = lst["services"][0]
            want = {"connections": svc["stats"]["conns"], "incoming_packets": svc["stats"]["inpkts"],
                    "outgoing_packets": svc["stats"]["outpkts"], "incoming_bytes": svc["stats"]["inbytes"],
                    "outgoing_bytes": svc["stats"]["outbytes"]}
            got = {k: int(fams[f"node_ipvs_{k}"].samples[0].value) for k in want}
            weights = {s.labels["remote_address"]: int(s.value) for s in fams["node_ipvs_backend_weight"].samples}
            active = {s.labels["remote_address"]: int(s.value)
                      for s in fams["node_ipvs_backend_connections_active"].samples}
            want_w = {r["addr"]: r["weight"] for r in svc["reals"]}
            want_a = {r["addr"]: r["activeconns"] for r in svc["reals"]}
            up = {s.labels["server"]: s.value for s in fams["fastvs_realserver_up"].samples}
            ok = (got == want and weights == want_w and active == want_a
                  and up == {rs(0): 1.0, rs(1): 1.0} and "fastvs_io" in fams)
            return ok, f"metrics {got} {weights} {active} {up} vs list {want} {want_w} {want_a}"

        wait_for(lambda: agree()[0], 15, "metrics agreeing with ctl list --json")
        assert agree()[1]  # printed on failure above

        # ctl weight: new connections move at once
        mark = len(d.fwd.err)
        r0 = d.listing()["reloads"]
        r = d.ctl("weight", f"{VIP}:{HTTP_PORT}", rs(1), "0")
        assert r.returncode == 0 and "-e -t" in r.stdout, (r.stdout, r.stderr)
        d.fwd.wait_log(f"{rs(1)} weight 1->0", after=mark)
        wait_for(lambda: d.listing()["reloads"] > r0, 10, "every worker applied the edit")
        assert [d.curl() for _ in range(6)] == ["rs1"] * 6
        r0 = d.listing()["reloads"]
        r = d.ctl("weight", f"{VIP}:{HTTP_PORT}", rs(1), "1")
        assert r.returncode == 0, r.stderr
        d.fwd.wait_log(f"{rs(1)} weight 0->1", after=mark)
        wait_for(lambda: d.listing()["reloads"] > r0, 10, "every worker applied the edit")
        assert set(d.curl() for _ in range(10)) == {"rs1", "rs2"}
        # the connection listing, taken by every worker between batches
        r = d.ctl("list", "-c")
        assert r.returncode == 0 and "IPVS connection entries" in r.stdout, r.stderr
        assert f"{VIP}:{HTTP_PORT}" in r.stdout, r.stdout
        # a malformed request is refused, forwarding goes on
        r = d.ctl("weight", "nonsense", rs(1), "1")
        assert r.returncode == 1 and r.stderr.startswith("fastvs: "), r.stderr
        assert d.curl() in ("rs1", "rs2")
    finally:
        code, _, err = d.fwd.stop()
    assert code == 0, err


def test_sorry_server_when_both_down(topo: Topology) -> None:
    d = Director(topo, keepalived_conf(sorry=True))
    try:
        d.start_rs(0, SORRY_PORT)
        _all_up(d)
        d.stop_rs(0)
        d.stop_rs(1)
        wait_for(lambda: set(d.weights()) == {f"{RS_IPS[0]}:{SORRY_PORT}"}, 2 * (OUT_WITHIN + SLACK),
                 "only the sorry server in the table")
        assert [d.curl() for _ in range(4)] == ["rs1"] * 4  # rs1's directory, port 8080
        d.start_rs(0)
        d.start_rs(1)
        wait_for(lambda: set(d.weights()) == {rs(0), rs(1)}, 20, "both back, sorry server out")
    finally:
        code, _, err = d.fwd.stop()
    assert code == 0, err


def _wrk_failures(out: str) -> tuple[int, int]:
    """(requests, failed: socket errors + non-2xx/3xx responses) of a wrk report."""
    import re

    m = re.search(r"(\d+) requests in", out)
    assert m, out
    failed = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(m.group(1)), failed + (int(m2.group(1)) if m2 else 0)


def test_server_stopped_under_wrk(topo: Topology) -> None:
    import shutil

    if shutil.which("wrk") is None:
        pytest.skip("wrk not installed")
    d = Director(topo, keepalived_conf())
    try:
        _all_up(d)
        url = f"http://{VIP}/index.html"
        wrk = topo.spawn(topo.client, "wrk", "-t1", "-c4", "-d8s", "--timeout", "2s", url,
                         stdout=subprocess.PIPE)
        time.sleep(2)
        t0 = time.monotonic()
        d.stop_rs(1)
        wait_for(lambda: rs(1) not in d.weights(), OUT_WITHIN + SLACK, "rs2 out under load")
        took = time.monotonic() - t0
        out, _ = wrk.communicate(timeout=60)
        requests, failed = _wrk_failures(out.decode())
        print(f"under wrk: rs2 out {took:.2f} s after its nginx stopped; {failed} of {requests} "
              "requests failed before that")
        assert requests > 0 and took <= OUT_WITHIN + SLACK
        # every request after it is out succeeds
        r = topo.nsx(topo.client, "wrk", "-t1", "-c4", "-d3s", "--timeout", "2s", url, timeout=60, check=False)
        requests, failed = _wrk_failures(r.stdout)
        assert requests > 0 and failed == 0, r.stdout
        assert [d.curl() for _ in range(20)] == ["rs1"] * 20
    finally:
        d.start_rs(1)
        code, _, err = d.fwd.stop()
    assert code == 0, err
