"""The checks themselves, as asyncio coroutines: one attempt each, never raising.

- TCP_CHECK: a TCP connect to ``connect_ip:connect_port`` (from ``bindto:bind_port`` when
  set) within ``connect_timeout``; the connection is closed at once.
- HTTP_GET / SSL_GET: for each ``url`` in turn, a connection (TLS for SSL_GET, no
  certificate check, as keepalived), keepalived's request (``GET PATH HTTP/1.0``,
  ``User-Agent: KeepAliveClient``, ``Host:`` the url's, checker's, real server's or
  service's ``virtualhost``, else ``IP:PORT``), the response read to its end with
  ``connect_timeout`` as the limit for each read; the status must be one of the url's
  ``status_code`` (200-299 by default), and with ``digest`` the MD5 of the body (up to
  Content-Length) must match. The first url that fails fails the attempt.
- MISC_CHECK: ``misc_path`` run (no shell) in its own process group, stdin/stdout/stderr
  on /dev/null, its exit awaited through a pidfd (no thread per script); after ``misc_timeout`` (default: the service's ``delay_loop``) it gets
  SIGTERM, and SIGKILL 2 s later, and the attempt fails. Exit 0 passes; with
  ``misc_dynamic`` 2-255 pass too and set the weight to ``code - 2``; anything else fails.

Each returns a :class:`~fastvs.health.state.CheckResult` whose ``detail`` says what was
tried and what happened, for the transition log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import ssl
import subprocess
from typing import Any

from fastvs.control.keepalived import CheckerConfig, Url
from fastvs.health.state import CheckResult

__all__ = ["misc_check", "http_check", "run_check", "tcp_check"]

MAX_HEADER = 64 * 1024
KILL_GRACE = 2.0  # check_misc.c: SIGTERM, then SIGKILL two seconds later


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _secs(x: float) -> str:
    return f"{x:g} s"


def _errtext(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text names the address again
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _connect(c: CheckerConfig) -> socket.socket:
    """A connected non-blocking socket, or OSError / TimeoutError."""
    family = socket.AF_INET6 if ":" in c.connect_ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if c.bindto is not None or c.bind_port is not None:
            if c.bind_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            any_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
            sock.bind((c.bindto or any_addr, c.bind_port or 0))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (c.connect_ip, c.connect_port)),
                               c.connect_timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def tcp_check(c: CheckerConfig) -> CheckResult:
    target = _addr(c.connect_ip, c.connect_port)
    try:
        sock = await _connect(c)
    except (TimeoutError, asyncio.TimeoutError):
        return CheckResult(False, f"connect to {target} timed out after {_secs(c.connect_timeout)}")
    except OSError as exc:
        return CheckResult(False, f"connect to {target} failed: {_errtext(exc)}")
    sock.close()
    return CheckResult(True, f"connected to {target}")


def _ssl_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # keepalived verifies no certificate by default
    return ctx


_SSL_CONTEXT: ssl.SSLContext | None = None


def _request(c: CheckerConfig, url: Url) -> tuple[bytes, str]:
    vhost = url.virtualhost or c.virtualhost
    host = vhost if vhost else _addr(c.connect_ip, c.connect_port)
    minor = 1 if c.http_protocol == "1.1" else 0
    close = "Connection: close\r\n" if c.http_protocol in ("1.1", "1.0C") else ""
    text = (f"GET {url.path} HTTP/1.{minor}\r\nUser-Agent: KeepAliveClient\r\n{close}"
            f"Host: {host}\r\n\r\n")
    scheme = "https" if c.kind == "SSL_GET" else "http"
    return text.encode("latin-1", "replace"), f"GET {scheme}://{host}{url.path}"


async def _read(reader: asyncio.StreamReader, n: int, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(n), timeout)


async def _one_url(c: CheckerConfig, url: Url) -> CheckResult:
    global _SSL_CONTEXT
    target = _addr(c.connect_ip, c.connect_port)
    request, what = _request(c, url)
    to = _secs(c.connect_timeout)
    try:
        sock = await _connect(c)
    except (TimeoutError, asyncio.TimeoutError):
        return CheckResult(False, f"connect to {target} timed out after {to}")
    except OSError as exc:
        return CheckResult(False, f"connect to {target} failed: {_errtext(exc)}")
    writer: asyncio.StreamWriter | None = None
    try:
        if c.kind == "SSL_GET":
            if _SSL_CONTEXT is None:
                _SSL_CONTEXT = _ssl_context()
            vhost = url.virtualhost or c.virtualhost
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    sock=sock, ssl=_SSL_CONTEXT, server_hostname=vhost or "",
                    ssl_handshake_timeout=c.connect_timeout), c.connect_timeout + 1)
            except (TimeoutError, asyncio.TimeoutError):
                return CheckResult(False, f"TLS handshake with {target} timed out after {to}")
            except (OSError, ssl.SSLError) as exc:
                return CheckResult(False, f"TLS handshake with {target} failed: {_errtext(exc)}")
        else:
            reader, writer = await asyncio.open_connection(sock=sock)
        sock = None  # type: ignore[assignment]  # the writer owns it now
        writer.write(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await _read(reader, 65536, c.connect_timeout)
            if not chunk:
                break
            head += chunk
            if len(head) > MAX_HEADER and b"\r\n\r\n" not in head:
                return CheckResult(False, f"{what}: response header longer than {MAX_HEADER} bytes")
        if not head:
            return CheckResult(False, f"{what}: no data received")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return CheckResult(False, f"{what}: not an HTTP response ({status_line[:60]!r})")
        status = int(parts[1])
        if not url.accepts(status):
            codes = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in url.status_codes)
            return CheckResult(False, f"{what}: status {status} (accepted: {codes})")
        if url.digest is None:
            return CheckResult(True, f"{what}: status {status}")
        header, sep, body = head.partition(b"\r\n\r\n")
        if not sep:
            return CheckResult(False, f"{what}: the response ended inside its header")
        length: int | None = None
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        md5 = hashlib.md5(usedforsecurity=False)
        got = 0

        def feed(data: bytes) -> None:
            nonlocal got
            if length is not None:
                data = data[: max(0, length - got)]
            md5.update(data)
            got += len(data)

        feed(body)
        while length is None or got < length:
            chunk = await _read(reader, 65536, c.connect_timeout)
            if not chunk:
                break
            feed(chunk)
        digest = md5.hexdigest()
        if digest != url.digest:
            return CheckResult(False, f"{what}: body MD5 {digest}, expected {url.digest}")
        return CheckResult(True, f"{what}: status {status}, MD5 {digest}")
    except (TimeoutError, asyncio.TimeoutError):
        return CheckResult(False, f"{what}: read timed out after {to}")
    except (OSError, ssl.SSLError, EOFError) as exc:
        return CheckResult(False, f"{what}: {_errtext(exc)}")
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        elif sock is not None:
            sock.close()


async def http_check(c: CheckerConfig) -> CheckResult:
    last = CheckResult(False, "no url")
    for url in c.urls:
        last = await _one_url(c, url)
        if not last.ok:
            return last
    return last


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _Script:
    """A script in its own session, awaited through a pidfd (no thread per child, as
    asyncio's ThreadedChildWatcher would start), or through asyncio's subprocess support
    where pidfd_open is missing."""

    def __init__(self) -> None:
        self.pid = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self._aproc: asyncio.subprocess.Process | None = None

    async def start(self, argv: list[str]) -> None:
        opts: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                                "stderr": subprocess.DEVNULL, "start_new_session": True,
                                "close_fds": True}
        if hasattr(os, "pidfd_open"):
            popen = subprocess.Popen(argv, **opts)  # noqa: S603 - the configured check
            self._popen, self.pid = popen, popen.pid
            try:
                self._pidfd = os.pidfd_open(popen.pid)
            except OSError:  # an old kernel: poll for the exit instead
                self._pidfd = -1
            return
        self._aproc = await asyncio.create_subprocess_exec(*argv, **opts)
        self.pid = self._aproc.pid

    async def wait(self) -> int:
        if self._aproc is not None:
            return await self._aproc.wait()
        popen = self._popen
        assert popen is not None
        if self._pidfd < 0:
            while popen.poll() is None:
                await asyncio.sleep(0.05)
            return popen.returncode
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def ready() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(self._pidfd, ready)
        try:
            await done
        finally:
            loop.remove_reader(self._pidfd)
        return popen.wait()

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


async def misc_check(c: CheckerConfig) -> CheckResult:
    cmd = " ".join(c.misc_path)
    proc = _Script()
    try:
        await proc.start(c.misc_path)
    except (OSError, ValueError) as exc:
        return CheckResult(False, f"{cmd}: cannot run: {_errtext(exc)}")
    try:
        try:
            code = await asyncio.wait_for(proc.wait(), c.misc_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            _killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), KILL_GRACE)
            except (TimeoutError, asyncio.TimeoutError):
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            _killpg(proc.pid, signal.SIGKILL)  # whatever it started
            return CheckResult(False, f"{cmd} timed out after {_secs(c.misc_timeout)} (killed)")
        except asyncio.CancelledError:
            _killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 1.0)
            raise
    finally:
        proc.close()
    if code < 0:
        return CheckResult(False, f"{cmd} killed by signal {-code}")
    if code == 0:
        return CheckResult(True, f"{cmd} exited 0")
    if c.misc_dynamic and 2 <= code <= 255:
        return CheckResult(True, f"{cmd} exited {code} (misc_dynamic: weight {code - 2})",
                           weight=code - 2)
    return CheckResult(False, f"{cmd} exited {code}")


async def run_check(c: CheckerConfig) -> CheckResult:
    """One attempt of any supported checker; unexpected errors become failures."""
    try:
        if c.kind == "TCP_CHECK":
            return await tcp_check(c)
        if c.kind in ("HTTP_GET", "SSL_GET"):
            return await http_check(c)
        if c.kind == "MISC_CHECK":
            return await misc_check(c)
        return CheckResult(False, f"{c.kind} is not run by fastvs")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a checker must never take the monitor down
        return CheckResult(False, f"internal error: {type(exc).__name__}: {exc}")
