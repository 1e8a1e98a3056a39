"""Network-namespace topologies for the forwarder's end-to-end tests and benchmark.

``Topology`` builds, with names that start with ``fvt-<pid>-``::

    client ns             director ns           switch ns          rs1 / rs2 ns
    eth0 10.0.0.2 ------- dc      ds ---------- p0  [br0]  p1 ---- eth0 10.1.0.11
         2001:db8::2      (no addresses)                   p2 ---- eth0 10.1.0.12
                                                                   2001:db8:1::11 / ::12

The VIPs (10.0.0.100 and 2001:db8::100) are configured nowhere: only the forwarder
answers for them (ARP, neighbour discovery). The director namespace has ip_forward=0,
no addresses, IPv6 off on its interfaces (so its kernel neither answers neighbour
solicitations nor forwards) and (when nft is installed) a netdev ingress rule that drops
every IP and IPv6 frame before the kernel's stack sees it -- AF_PACKET taps still see
them, the kernel never acts on them. Real servers route through 10.1.0.1 and
2001:db8:1::1, addresses only the forwarder answers for (``--addr``). IPv6 addresses
are added ``nodad`` and router advertisements are ignored. The peers' veths have TSO/GSO/GRO off (as a wire would: frames
at most one MTU), transmit checksum offload left on so that frames reach the director
with TP_STATUS_CSUMNOTREADY.

``queues=N`` gives the director's veths (and their peers) N receive and transmit queues
(``--io xdp --workers N`` binds one per worker).

``one_arm=True`` puts clients and real servers on one L2 segment (the switch) and the
director on a single interface ``d0``.

Everything is torn down by :meth:`Topology.close` (also on errors half-way).

:class:`Forwarder` runs ``python -m fastvs.live`` in the director namespace;
:func:`wait_for` is the one way the tests wait (for stats, a log line, a capture): a
deadline, never a fixed sleep, and a failure that names what it waited for.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

VIP = "10.0.0.100"
CLIENT_IP = "10.0.0.2"
GW_IP = "10.1.0.1"
RS_IPS = ("10.1.0.11", "10.1.0.12")
VIP6 = "2001:db8::100"
CLIENT_IP6 = "2001:db8::2"
GW_IP6 = "2001:db8:1::1"
RS_IPS6 = ("2001:db8:1::11", "2001:db8:1::12")
HTTP_PORT = 80
UDP_PORT = 5353

UDP_ECHO = r"""
import socket, sys
name = sys.argv[1].encode()
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)   # IPv4 peers as ::ffff:a.b.c.d
s.bind(("::", int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(name + b":" + data, peer)
"""


def wait_for(probe: Callable[[], T], timeout: float, what: str, *,
             until: Callable[[T], object] = bool, interval: float = 0.02) -> T:
    """Call ``probe`` until ``until(value)`` holds (true by default) and return that
    value, or fail after ``timeout`` seconds naming ``what`` was awaited and the last
    value seen (an exception raised by ``probe`` counts as a value: the file was not
    there yet, say)."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - kept as the last value seen
            last = e
        else:
            if until(last):
                return last  # type: ignore[no-any-return]
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def have_netns() -> tuple[bool, str]:
    """(usable, reason): root and a working ``ip netns``."""
    if os.geteuid() != 0:
        return False, "needs root"
    if shutil.which("ip") is None:
        return False, "ip (iproute2) not installed"
    name = f"fvt-{os.getpid()}-probe"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"ip netns unavailable: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return True, ""


def tool_env(args: list[str] | tuple[str, ...]) -> dict[str, str] | None:
    """The environment for a command: as ours, but under tools/asan_test.sh (which
    preloads libasan) only our own Python keeps LD_PRELOAD. Other programs do not need
    it, and some break under it: curl hangs past its own --max-time."""
    if "LD_PRELOAD" not in os.environ:
        return None
    prog = args[4] if list(args[:3]) == ["ip", "netns", "exec"] and len(args) > 4 else args[0]
    if prog == sys.executable:
        return None
    env = dict(os.environ)
    del env["LD_PRELOAD"]
    return env


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=tool_env(args))
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.returncode}: {r.stderr.strip()}")
    return r


class Topology:
    def __init__(self, *, one_arm: bool = False, server: str = "busybox",
                 prefix: str | None = None, queues: int = 1) -> None:
        self.prefix = prefix or f"fvt-{os.getpid()}-"
        self.one_arm = one_arm
        self.queues = queues  # receive and transmit queues of the director's veths (and peers)
        self.ns: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.client = self.prefix + "c"
        self.director = self.prefix + "d"
        self.switch = self.prefix + "sw"
        self.rs = [self.prefix + "r1", self.prefix + "r2"]
        self.server_kind = server
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- building --------------------------------------------------------------------------
    def nsx(self, ns: str, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.ns.append(name)
        self.nsx(name, "ip", "link", "set", "lo", "up")

    def _veth(self, ns_a: str, a: str, ns_b: str, b: str, queues: int = 1) -> None:
        q = ["numtxqueues", str(queues), "numrxqueues", str(queues)] if queues > 1 else []
        sh("ip", "link", "add", a, "netns", ns_a, *q, "type", "veth", "peer", "name", b, "netns", ns_b, *q)

    def set_queues(self, n: int) -> None:
        """Give the director's veths and their peers ``n`` receive and transmit queues
        (ethtool -L; at most the ``queues`` they were made with)."""
        ends = [(self.director, self.client_if), (self.switch, "p0")]
        if not self.one_arm:
            ends += [(self.director, self.server_if), (self.client, "eth0")]
        for ns, dev in ends:
            self.nsx(ns, "ethtool", "-L", dev, "rx", str(n), "tx", str(n))

    def _peer_offloads(self, ns: str, dev: str) -> None:
        if shutil.which("ethtool"):
            self.nsx(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", check=False)

    def _build(self) -> None:
        for n in (self.client, self.director, self.switch, *self.rs):
            self._add_ns(n)
        sw = self.switch
        self.nsx(sw, "ip", "link", "add", "br0", "type", "bridge")
        self.nsx(sw, "ip", "link", "set", "br0", "up")
        if self.one_arm:
            self.client_if, self.server_if = "d0", "d0"
            self._veth(self.director, "d0", sw, "p0", self.queues)
            self._veth(self.client, "eth0", sw, "pc")
            ports = [("p0", "br0"), ("pc", "br0")]
        else:
            self.client_if, self.server_if = "dc", "ds"
            self._veth(self.client, "eth0", self.director, "dc", self.queues)
            self._veth(self.director, "ds", sw, "p0", self.queues)
            ports = [("p0", "br0")]
        self._switch_ports(ports)
        self.nft = self._director_setup(self.director)
        self._peers()

    def _switch_ports(self, ports: list[tuple[str, str]]) -> None:
        """The real servers' veths (``p1``, ``p2`` on br0), then every (port, bridge) of
        the switch enslaved and up."""
        for i, r in enumerate(self.rs):
            self._veth(r, "eth0", self.switch, f"p{i + 1}")
            ports.append((f"p{i + 1}", "br0"))
        for p, br in ports:
            self.nsx(self.switch, "ip", "link", "set", p, "master", br)
            self.nsx(self.switch, "ip", "link", "set", p, "up")

    def _director_setup(self, d: str) -> bool:
        """A director namespace: no addresses, no forwarding, no IPv6, the stack kept
        out of IP on the forwarding interfaces. True if the nft rule went in."""
        self.nsx(d, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        for dev in sorted({self.client_if, self.server_if}):
            self.nsx(d, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            self.nsx(d, "ip", "link", "set", dev, "up")
        if not shutil.which("nft"):
            return False
        rules = "table netdev fvt {\n"
        for dev in sorted({self.client_if, self.server_if}):
            rules += (f"  chain in_{dev} {{ type filter hook ingress device {dev} priority 0; "
                      "meta protocol { ip, ip6 } drop; }\n")
        rules += "}\n"
        f = self.tmp / f"{d}.nft"
        f.write_text(rules)
        return self.nsx(d, "nft", "-f", str(f), check=False).returncode == 0

    def _peers(self) -> None:
        """The client and the real servers (with their servers)."""
        # client
        c = self.client
        self._ipv6_on(c)
        self.nsx(c, "ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        self.nsx(c, "ip", "addr", "add", f"{CLIENT_IP6}/64", "dev", "eth0", "nodad")
        self.nsx(c, "ip", "link", "set", "eth0", "up")
        self._peer_offloads(c, "eth0")
        # real servers
        for i, r in enumerate(self.rs):
            self._ipv6_on(r)
            self.nsx(r, "ip", "addr", "add", f"{RS_IPS[i]}/24", "dev", "eth0")
            self.nsx(r, "ip", "addr", "add", f"{RS_IPS6[i]}/64", "dev", "eth0", "nodad")
            self.nsx(r, "ip", "link", "set", "eth0", "up")
            self.nsx(r, "ip", "route", "add", "default", "via", GW_IP)
            self.nsx(r, "ip", "-6", "route", "add", "default", "via", GW_IP6, "dev", "eth0")
            self._peer_offloads(r, "eth0")
            self._start_servers(i)

    def _ipv6_on(self, ns: str) -> None:
        for conf in ("all", "default"):
            self.nsx(ns, "sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=0")
            self.nsx(ns, "sysctl", "-qw", f"net.ipv6.conf.{conf}.accept_ra=0")
            self.nsx(ns, "sysctl", "-qw", f"net.ipv6.conf.{conf}.accept_dad=0")

    def _start_servers(self, i: int) -> None:
        name = f"rs{i + 1}"
        www = self.tmp / name
        www.mkdir()
        (www / "index.html").write_text(f"{name}\n")
        ns = self.rs[i]
        if self.server_kind == "nginx" and shutil.which("nginx"):
            conf = self.tmp / f"{name}-nginx.conf"
            conf.write_text(
                "user root; worker_processes 1; daemon off; pid " + str(self.tmp / f"{name}.pid") + ";\n"
                "error_log /dev/null crit;\n"
                "events { worker_connections 4096; }\n"
                "http { access_log off; keepalive_requests 1000000;\n"
                f"  server {{ listen {HTTP_PORT} reuseport backlog=4096; listen [::]:{HTTP_PORT} reuseport backlog=4096;\n"
                f"    root {www}; }} }}\n")
            self.spawn(ns, "nginx", "-c", str(conf), "-p", str(self.tmp))
        elif shutil.which("busybox"):
            self.spawn(ns, "busybox", "httpd", "-f", "-p", str(HTTP_PORT), "-h", str(www))
        else:
            self.spawn(ns, sys.executable, "-m", "http.server", str(HTTP_PORT), "-d", str(www))
        self.spawn(ns, sys.executable, "-c", UDP_ECHO, name, str(UDP_PORT))
        self.wait_port(ns, RS_IPS[i], HTTP_PORT)
        self.wait_port(ns, RS_IPS6[i], HTTP_PORT)

    def spawn(self, ns: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        cmd = ["ip", "netns", "exec", ns, *args]
        kw.setdefault("env", tool_env(cmd))
        p = subprocess.Popen(cmd, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def wait_port(self, ns: str, ip: str, port: int, timeout: float = 10) -> None:
        fam = "socket.AF_INET6" if ":" in ip else "socket.AF_INET"
        probe = (f"import socket,sys\ns=socket.socket({fam})\ns.settimeout(0.5)\n"
                 f"sys.exit(s.connect_ex(('{ip}',{port})))")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.nsx(ns, sys.executable, "-c", probe, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{ip}:{port} did not come up in {ns}")

    # -- using -----------------------------------------------------------------------------
    def rules_text(self, weights: Sequence[int] = (1, 1), sched: str = "rr", *, ipv6: bool = False) -> str:
        """TCP (HTTP) and UDP services on the VIP, with IPv6 twins on VIP6 if ``ipv6``."""
        lines: list[str] = []
        fams = [(VIP, RS_IPS), (f"[{VIP6}]", tuple(f"[{a}]" for a in RS_IPS6))] if ipv6 else [(VIP, RS_IPS)]
        for vip, rips in fams:
            for opt, port in (("-t", HTTP_PORT), ("-u", UDP_PORT)):
                lines += [f"-A {opt} {vip}:{port} -s {sched}"]
                lines += [f"-a {opt} {vip}:{port} -r {ip}:{port} -m -w {w}"
                          for ip, w in zip(rips, weights, strict=True)]
        return "\n".join(lines) + "\n"

    def forward_args(self) -> list[str]:
        addrs = ["--addr", GW_IP, "--addr", GW_IP6]
        if self.one_arm:
            return ["--if", self.client_if, *addrs]
        return ["--client-if", self.client_if, "--server-if", self.server_if, *addrs]

    def flush_neighbours(self) -> None:
        """Forget the VIP/gateway MACs the peers learnt (between forwarder runs)."""
        for ns in (self.client, *self.rs):
            self.nsx(ns, "ip", "neigh", "flush", "dev", "eth0", check=False)
            self.nsx(ns, "ip", "-6", "neigh", "flush", "dev", "eth0", check=False)

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=3)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    p.kill()
                    p.wait(timeout=3)
        self.procs.clear()
        for n in reversed(self.ns):
            subprocess.run(["ip", "netns", "pids", n], capture_output=True)
            # anything still running inside (e.g. a stray server) goes with the namespace
            pids = subprocess.run(["ip", "netns", "pids", n], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        self.ns.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FailoverTopology(Topology):
    """Two directors sharing the VIP (tests/live/test_e2e_failover.py)::

        client ns              switch ns                 directors d, d2         rs1 / rs2
        eth0 10.0.0.2 --- pc [brc] p0c --- dc (d)   ds --- p0  [br0]  p1 --- eth0 10.1.0.11
                                 p2c --- dc (d2)  ds --- p9         p2 --- eth0 10.1.0.12
                                 [brh] ph1 --- dh 192.168.90.1 (d)
                                       ph2 --- dh 192.168.90.2 (d2)

    Both directors' ``dc``/``ds`` are set up as the one director of :class:`Topology`
    (no addresses, the stack kept out of IP); ``dh`` is an ordinary addressed link for
    VRRP and the sync messages, which the directors' own stacks handle.
    """

    HB_IPS = ("192.168.90.1", "192.168.90.2")

    def __init__(self, *, server: str = "busybox", prefix: str | None = None) -> None:
        prefix = prefix or f"fvt-{os.getpid()}-"
        self.director2 = prefix + "d2"
        super().__init__(server=server, prefix=prefix)

    @property
    def directors(self) -> list[str]:
        return [self.director, self.director2]

    def _build(self) -> None:
        for n in (self.client, self.director, self.director2, self.switch, *self.rs):
            self._add_ns(n)
        sw = self.switch
        for br in ("br0", "brc", "brh"):
            self.nsx(sw, "ip", "link", "add", br, "type", "bridge")
            self.nsx(sw, "ip", "link", "set", br, "up")
        self.client_if, self.server_if = "dc", "ds"
        ports: list[tuple[str, str]] = []
        self._veth(self.client, "eth0", sw, "pc")
        ports.append(("pc", "brc"))
        for i, d in enumerate(self.directors):
            self._veth(d, "dc", sw, f"p{i}c")
            self._veth(d, "ds", sw, f"p{i}s")
            self._veth(d, "dh", sw, f"p{i}h")
            ports += [(f"p{i}c", "brc"), (f"p{i}s", "br0"), (f"p{i}h", "brh")]
        self._switch_ports(ports)
        self.nft = all([self._director_setup(d) for d in self.directors])
        for d, ip in zip(self.directors, self.HB_IPS, strict=True):
            self.nsx(d, "ip", "addr", "add", f"{ip}/24", "dev", "dh")
            self.nsx(d, "ip", "link", "set", "dh", "up")
        self._peers()


class Forwarder:
    """``python -m fastvs.live`` running in the director namespace, with its stderr
    collected line by line (:attr:`err`) and its JSON statistics rewritten every
    ``stats_every`` seconds (:meth:`json`)."""

    def __init__(self, topo: Topology, rules: Path, *extra: str, stats_every: float = 0.2,
                 ready_timeout: float = 20, director: str | None = None, ready_text: str = "fastvs forward: ready",
                 flush: bool = True, env: dict[str, str] | None = None) -> None:
        self.topo = topo
        self.rules = rules
        self.stats = topo.tmp / f"stats-{time.monotonic_ns()}.json"
        args = [sys.executable, "-m", "fastvs.live", "-r", str(rules), *topo.forward_args(),
                "--fix-offloads", "--stats-json", str(self.stats), "--stats-every", str(stats_every),
                "-q", *extra]
        if flush:
            topo.flush_neighbours()
        kw: dict[str, Any] = {} if env is None else {"env": dict(os.environ, **env)}
        self.p = topo.spawn(director or topo.director, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        self.err: list[str] = []
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        try:
            self.wait_log(ready_text, ready_timeout)
        except AssertionError:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in iter(self.p.stderr.readline, b""):
            with self._lock:
                self.err.append(line.decode(errors="replace"))

    def log(self) -> str:
        with self._lock:
            return "".join(self.err)

    def wait_log(self, text: str, timeout: float = 10, *, after: int = 0) -> str:
        """Wait for a stderr line containing ``text`` (among lines ``after`` onwards);
        returns the line."""

        def probe() -> str | None:
            if self.p.poll() is not None and not self._t.is_alive():
                raise AssertionError(f"forwarder exited ({self.p.returncode}):\n{self.log()}")
            with self._lock:
                return next((line for line in self.err[after:] if text in line), None)

        return wait_for(probe, timeout, f"forwarder log line {text!r}")

    def hup(self) -> int:
        """Send SIGHUP; returns the number of log lines before it (for wait_log)."""
        with self._lock:
            n = len(self.err)
        self.p.send_signal(signal.SIGHUP)
        return n

    def stop(self) -> tuple[int, str, str]:
        self.p.send_signal(signal.SIGTERM)
        try:
            out, _ = self.p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
        self._t.join(5)
        if self.p in self.topo.procs:
            self.topo.procs.remove(self.p)
        return self.p.returncode, out.decode(), self.log()

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stats.read_text())
        return doc

    def wait_stats(self, cond: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """Wait for a statistics file (a fresh one: written after this call) for which
        ``cond`` holds; returns it."""
        since = time.time()
        return wait_for(self.json, timeout, what, until=lambda d: d.get("time", 0) >= since and cond(d))


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread switched into network namespace ``ns`` (``ip netns``'s
    name) and return its result: sockets it opens live in that namespace for good,
    whichever thread uses them afterwards."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newnet = 0x40000000
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, clone_newnet) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class NsPair:
    """Two namespaces joined by a veth (``a`` 192.168.77.1/24 on ``va``, ``b``
    192.168.77.2/24 on ``vb``), for socket tests (sync, multicast). Removed by
    :meth:`close`."""

    A_IP, B_IP = "192.168.77.1", "192.168.77.2"

    def __init__(self, prefix: str | None = None) -> None:
        prefix = prefix or f"fvt-{os.getpid()}-"
        self.a, self.b = prefix + f"pa{id(self) % 10000}", prefix + f"pb{id(self) % 10000}"
        self.ns: list[str] = []
        try:
            for n in (self.a, self.b):
                sh("ip", "netns", "add", n)
                self.ns.append(n)
                sh("ip", "netns", "exec", n, "ip", "link", "set", "lo", "up")
            sh("ip", "link", "add", "va", "netns", self.a, "type", "veth", "peer", "name", "vb", "netns", self.b)
            for n, dev, ip in ((self.a, "va", self.A_IP), (self.b, "vb", self.B_IP)):
                sh("ip", "netns", "exec", n, "ip", "addr", "add", f"{ip}/24", "dev", dev)
                sh("ip", "netns", "exec", n, "ip", "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for n in self.ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        self.ns.clear()

    def __enter__(self) -> NsPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
