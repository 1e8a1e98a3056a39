"""Each checker against real servers on loopback: TCP_CHECK (refused, timed out, bindto),
HTTP_GET (status codes, digest, virtualhost), SSL_GET (a self-signed certificate,
accepted as keepalived accepts it), MISC_CHECK (exit codes, misc_dynamic, a script killed
on its timeout)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from fastvs.control.keepalived import CheckerConfig, Url
from fastvs.health.checks import run_check
from fastvs.health.state import CheckResult

from .servers import Listener, Pages, http_server, self_signed


def run(c: CheckerConfig) -> CheckResult:
    return asyncio.run(run_check(c))


def tcp(port: int, **kw: object) -> CheckerConfig:
    opts: dict[str, object] = {"connect_timeout": 2.0, **kw}
    return CheckerConfig("TCP_CHECK", "t:1", connect_ip="127.0.0.1", connect_port=port,
                         **opts)  # type: ignore[arg-type]


def test_tcp_check_up_refused_and_back() -> None:
    lis = Listener()
    assert run(tcp(lis.port)) == CheckResult(True, f"connected to 127.0.0.1:{lis.port}")
    lis.close()
    res = run(tcp(lis.port))
    assert not res.ok
    assert res.detail == f"connect to 127.0.0.1:{lis.port} failed: Connection refused"
    lis.open()
    assert run(tcp(lis.port)).ok
    lis.close()


def test_tcp_check_times_out() -> None:
    # a listener that never accepts, its queue full: further SYNs are dropped
    lis = Listener(backlog=0)
    held = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", lis.port))
        held.append(s)
    try:
        t0 = time.monotonic()
        res = run(tcp(lis.port, connect_timeout=0.5))
        if res.ok:
            pytest.skip("this kernel accepted past a full backlog")
        assert res.detail == f"connect to 127.0.0.1:{lis.port} timed out after 0.5 s"
        assert time.monotonic() - t0 < 30
    finally:
        for s in held:
            s.close()
        lis.close()


def test_tcp_check_binds_to_bindto_and_bind_port() -> None:
    lis = Listener()
    with socket.socket() as probe:  # a free port to bind from
        probe.bind(("127.0.0.2", 0))
        src_port = probe.getsockname()[1]
    res = run(tcp(lis.port, bindto="127.0.0.2", bind_port=src_port))
    assert res.ok
    assert lis.accept_peer() == ("127.0.0.2", src_port)
    lis.close()


@pytest.fixture
def pages() -> Pages:
    p = Pages()
    p.pages["/ok"] = (200, b"hello\n")
    p.pages["/down"] = (503, b"maintenance\n")
    p.pages["/moved"] = (302, b"")
    return p


def http(port: int, *urls: Url, kind: str = "HTTP_GET", **kw: object) -> CheckerConfig:
    opts: dict[str, object] = {"connect_timeout": 3.0, **kw}
    return CheckerConfig(kind, "t:1", connect_ip="127.0.0.1", connect_port=port,
                         urls=list(urls), **opts)  # type: ignore[arg-type]


def test_http_get_status_codes(pages: Pages) -> None:
    with http_server(pages) as srv:
        port = srv.server_address[1]
        assert run(http(port, Url("/ok"))) == CheckResult(
            True, f"GET http://127.0.0.1:{port}/ok: status 200")
        res = run(http(port, Url("/down")))
        assert res == CheckResult(
            False, f"GET http://127.0.0.1:{port}/down: status 503 (accepted: 200-299)")
        assert not run(http(port, Url("/moved"))).ok
        assert run(http(port, Url("/moved", status_codes=((300, 399),)))).ok
        assert run(http(port, Url("/down", status_codes=((200, 200), (503, 503))))).ok
        # every url must pass; the first that fails is the reason
        res = run(http(port, Url("/ok"), Url("/nope"), Url("/down")))
        assert res.detail.endswith("/nope: status 404 (accepted: 200-299)")
    req = pages.requests[0]
    # keepalived's request: HTTP/1.0, its User-Agent, Host IP:PORT without virtualhost
    assert req == {"path": "/ok", "host": f"127.0.0.1:{port}", "agent": "KeepAliveClient",
                   "line": "GET /ok HTTP/1.0"}


def test_http_get_digest(pages: Pages) -> None:
    good = hashlib.md5(b"hello\n").hexdigest()
    with http_server(pages) as srv:
        port = srv.server_address[1]
        res = run(http(port, Url("/ok", digest=good)))
        assert res == CheckResult(True, f"GET http://127.0.0.1:{port}/ok: status 200, MD5 {good}")
        pages.pages["/ok"] = (200, b"hello, changed\n")
        res = run(http(port, Url("/ok", digest=good)))
        assert not res.ok
        assert res.detail.endswith(
            f"body MD5 {hashlib.md5(b'hello, changed' + bytes([10])).hexdigest()}, "
            f"expected {good}")


def test_http_get_virtualhost_url_before_checker(pages: Pages) -> None:
    with http_server(pages) as srv:
        port = srv.server_address[1]
        assert run(http(port, Url("/ok"), virtualhost="www.example.com")).ok
        assert run(http(port, Url("/ok", virtualhost="api.example.com"),
                        virtualhost="www.example.com", http_protocol="1.1")).ok
    assert [r["host"] for r in pages.requests] == ["www.example.com", "api.example.com"]
    assert pages.requests[1]["line"] == "GET /ok HTTP/1.1"


def test_http_get_refused_and_silent_server() -> None:
    lis = Listener()
    port = lis.port
    # accepts (the kernel does) but never answers: the read times out
    res = run(http(port, Url("/"), connect_timeout=0.5))
    assert res == CheckResult(False, f"GET http://127.0.0.1:{port}/: read timed out after 0.5 s")
    lis.close()
    res = run(http(port, Url("/")))
    assert res.detail == f"connect to 127.0.0.1:{port} failed: Connection refused"


def test_ssl_get_with_a_self_signed_certificate(pages: Pages, tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    good = hashlib.md5(b"hello\n").hexdigest()
    with http_server(pages, cert=cert) as srv:
        port = srv.server_address[1]
        res = run(http(port, Url("/ok", digest=good), kind="SSL_GET"))
        assert res == CheckResult(True, f"GET https://127.0.0.1:{port}/ok: status 200, MD5 {good}")
        assert not run(http(port, Url("/down"), kind="SSL_GET")).ok
        # plain HTTP to a TLS server is no answer keepalived accepts
        assert not run(http(port, Url("/ok"), connect_timeout=1.0)).ok
    with http_server(pages) as plain:  # and TLS to a plain server fails the handshake
        res = run(http(plain.server_address[1], Url("/ok"), kind="SSL_GET", connect_timeout=1.0))
        assert not res.ok and "TLS handshake" in res.detail


def script(tmp: Path, name: str, body: str) -> str:
    p = tmp / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def misc(path: str, *args: str, **kw: object) -> CheckerConfig:
    opts: dict[str, object] = {"misc_timeout": 10.0, **kw}
    return CheckerConfig("MISC_CHECK", "t:1", misc_path=[path, *args],
                         **opts)  # type: ignore[arg-type]


def test_misc_check_exit_codes(tmp_path: Path) -> None:
    ok = script(tmp_path, "ok", "exit 0\n")
    bad = script(tmp_path, "bad", "exit 1\n")
    code = script(tmp_path, "code", 'exit "$1"\n')
    assert run(misc(ok)) == CheckResult(True, f"{ok} exited 0")
    assert run(misc(bad)) == CheckResult(False, f"{bad} exited 1")
    assert run(misc(code, "7")) == CheckResult(False, f"{code} 7 exited 7")  # not dynamic
    assert run(misc(code, "7", misc_dynamic=True)) == CheckResult(
        True, f"{code} 7 exited 7 (misc_dynamic: weight 5)", weight=5)
    assert run(misc(code, "2", misc_dynamic=True)).weight == 0
    assert not run(misc(code, "1", misc_dynamic=True)).ok
    res = run(misc(str(tmp_path / "missing")))
    assert not res.ok and "cannot run" in res.detail


def test_misc_check_killed_on_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    slow = script(tmp_path, "slow", f'echo $$ > {pidfile}\nsleep 60 &\necho $! >> {pidfile}\nwait\n')
    t0 = time.monotonic()
    res = run(misc(slow, misc_timeout=0.5))
    assert res == CheckResult(False, f"{slow} timed out after 0.5 s (killed)")
    assert time.monotonic() - t0 < 30
    pids = [int(x) for x in pidfile.read_text().split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the script and its sleep: the whole group is gone
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped by its parent counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_tcp_and_http_host_header(pages: Pages) -> None:
    lis = Listener("::1")
    c = CheckerConfig("TCP_CHECK", "t:1", connect_ip="::1", connect_port=lis.port,
                      connect_timeout=2.0)
    assert run(c) == CheckResult(True, f"connected to [::1]:{lis.port}")
    lis.close()
    assert not run(c).ok
    with http_server(pages, host="::1") as srv:
        port = srv.server_address[1]
        h = CheckerConfig("HTTP_GET", "t:1", connect_ip="::1", connect_port=port,
                          connect_timeout=3.0, urls=[Url("/ok")])
        assert run(h) == CheckResult(True, f"GET http://[::1]:{port}/ok: status 200")
    assert pages.requests[-1]["host"] == f"[::1]:{port}"  # RFC 2732, as keepalived sends it
