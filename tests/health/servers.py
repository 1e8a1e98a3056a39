"""Real servers on loopback for the health-check tests: a TCP listener that can be
closed and reopened on the same port, a threading HTTP(S) server with known bodies and
status codes that records the requests it got, and a self-signed certificate made with
the openssl command."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class Listener:
    """A TCP listener on ``host``; :meth:`close` makes connects fail (refused),
    :meth:`open` listens again on the same port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 128):
        self.host = host
        self.backlog = backlog
        self.sock: socket.socket | None = None
        self.port = port
        self.open()

    def open(self) -> None:
        s = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(self.backlog)
        self.port = s.getsockname()[1]
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def accept_peer(self, timeout: float = 5.0) -> tuple[str, int]:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        conn, peer = self.sock.accept()
        conn.close()
        return peer[0], peer[1]


class Pages:
    """What the HTTP server serves: path -> (status, body); and what it was asked."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, bytes]] = {}
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()


def _handler(pages: Pages) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            with pages.lock:
                pages.requests.append({"path": self.path, "host": self.headers.get("Host", ""),
                                       "agent": self.headers.get("User-Agent", ""),
                                       "line": self.requestline})
                status, body = pages.pages.get(self.path, (404, b"not found\n"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@contextlib.contextmanager
def http_server(pages: Pages, cert: tuple[Path, Path] | None = None,
                host: str = "127.0.0.1") -> Iterator[ThreadingHTTPServer]:
    cls = ThreadingHTTPServer
    if ":" in host:
        cls = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    srv = cls((host, 0), _handler(pages))
    srv.daemon_threads = True
    if cert is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A throw-away certificate and key (the openssl command; skip when it is missing)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=fastvs-test"],
                   check=True, capture_output=True)
    return cert, key
