"""Live control of a running director over a Unix socket: ``fastvs ctl``.

The forwarder opens a :class:`ControlServer` on a Unix stream socket (mode 0600) and hands
it one function, ``handle(command, args) -> result``. A request is one line of JSON,
``{"cmd": "weight", "args": {...}}``, at most :data:`MAX_REQUEST` bytes, read within
:data:`READ_TIMEOUT` seconds; the reply is one line, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "one line"}``. The server runs in its own thread and serves one
client at a time; a malformed, oversized or slow request gets an error reply (or the
connection closed) and never reaches the forwarder's loop.

Commands (what ``handle`` must answer; :func:`plan` turns the editing ones into ipvsadm
lines against the current rules, so that the forwarder applies them as it applies a
SIGHUP reload — between batches, on every worker, connections kept):

``list``     the services (``Director.services()``), with ``conns`` when asked
``weight``   ``VIP:PORT RIP:PORT N`` — every service on that address and port
``drain``    ``RIP:PORT`` — weight 0 in every service that has it
``add``      ipvsadm ``-A``/``-a`` words; ``remove``: ``-D``/``-d`` words
``reload``   re-read the rules file, as SIGHUP
``health``   each checker's state
``role``     ``master`` / ``backup``: switch the director's role (fastvs/live/sync.py);
             without one, the current role
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ipaddress
import json
import os
import shlex
import socket
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastvs.control import rules as R
from fastvs.errors import FastvsError, RulesError

__all__ = ["ControlServer", "DEFAULT_PATH", "plan", "request", "main"]

DEFAULT_PATH = "/run/fastvs/control.sock"
MAX_REQUEST = 64 * 1024
MAX_REPLY = 64 * 1024 * 1024
READ_TIMEOUT = 2.0
COMMANDS = ("list", "weight", "drain", "add", "remove", "reload", "health", "role")

Handler = Callable[[str, dict[str, Any]], Any]


class ControlError(FastvsError):
    """A control request failed: the reply's one line."""

    exit_code = 1


# ---------------------------------------------------------------------------
# Edits: from a command to ipvsadm lines, checked against the current rules


def _addrport(text: str, what: str) -> tuple[str, int]:
    try:
        host, _, port = text.rpartition(":")
        host = host.strip("[]")
        return str(ipaddress.ip_address(host)), int(port, 10)
    except ValueError:
        raise RulesError(f"bad {what} {text!r} (ADDRESS:PORT, [IPv6]:PORT)") from None


def _server_line(op: str, svc: R.VirtualService, rs: R.RealServer, weight: int) -> str:
    line = f"{op} {svc.spec()} -r {R._addrport(rs.addr, rs.port)} {R._FWD_OPT[rs.fwd]} -w {weight}"
    if rs.u_threshold:
        line += f" -x {rs.u_threshold}"
    if rs.l_threshold:
        line += f" -y {rs.l_threshold}"
    return line


def plan(rules: R.Rules, cmd: str, args: dict[str, Any]) -> list[str]:
    """The ipvsadm lines an editing command means for ``rules`` (``weight``, ``drain``,
    ``add``, ``remove``). Raises :class:`RulesError` when it names nothing or is wrong."""
    if cmd == "weight":
        vaddr, vport = _addrport(str(args.get("service", "")), "virtual service")
        raddr, rport = _addrport(str(args.get("server", "")), "real server")
        weight = args.get("weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= R.MAX_WEIGHT:
            raise RulesError(f"weight must be a whole number 0-{R.MAX_WEIGHT}")
        lines = [_server_line("-e", svc, rs, weight)
                 for svc in rules.services if svc.addr == vaddr and svc.port == vport
                 for rs in svc.reals if rs.addr == raddr and rs.port == rport]  # fmt: skip
        if not lines:
            raise RulesError(f"no real server {raddr}:{rport} in a service {vaddr}:{vport}")
        return lines
    if cmd == "drain":
        raddr, rport = _addrport(str(args.get("server", "")), "real server")
        lines = [_server_line("-e", svc, rs, 0) for svc in rules.services
                 for rs in svc.reals if rs.addr == raddr and rs.port == rport]  # fmt: skip
        if not lines:
            raise RulesError(f"no service has the real server {raddr}:{rport}")
        return lines
    if cmd in ("add", "remove"):
        words = args.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or not words:
            raise RulesError(f"{cmd} needs ipvsadm words (e.g. -a -t VIP:PORT -r RIP:PORT -m)")
        allowed = ("-A", "--add-service", "-a", "--add-server") if cmd == "add" else \
            ("-D", "--delete-service", "-d", "--delete-server")
        if words[0] not in allowed:
            raise RulesError(f"{cmd} takes {' or '.join(allowed[::2])}, not {words[0]!r}")
        return [shlex.join(words)]
    raise RulesError(f"{cmd!r} is not an editing command")


def apply_lines(rules: R.Rules, lines: Sequence[str]) -> R.Rules:
    """A copy of ``rules`` with the ipvsadm ``lines`` applied in order, as ``ipvsadm``
    would run them one by one; ``rules`` itself is left as it was."""
    new = copy.deepcopy(rules)
    for n, line in enumerate(lines, start=1):
        where = R._Where("control", n)
        R._apply(new, R._parse_tokens(shlex.split(line), where), where)
    return new


# ---------------------------------------------------------------------------
# The server


class ControlServer:
    """Serves control requests on a Unix socket from a daemon thread."""

    def __init__(self, path: str, handle: Handler):
        self.path = path
        self._handle = handle
        self._stop = threading.Event()
        self.sock = _listen(path)
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, name="fastvs-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(READ_TIMEOUT)
        try:
            data = _read_line(conn, MAX_REQUEST)
        except TimeoutError:
            return _reply(conn, error=f"no complete request within {READ_TIMEOUT:g} s")
        except OverflowError:
            return _reply(conn, error=f"request longer than {MAX_REQUEST} bytes")
        except OSError:
            return None
        try:
            req = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return _reply(conn, error="request is not one line of JSON")
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return _reply(conn, error='request must be {"cmd": NAME, "args": {...}}')
        cmd, args = req["cmd"], req.get("args", {})
        if cmd not in COMMANDS:
            return _reply(conn, error=f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})")
        if not isinstance(args, dict):
            return _reply(conn, error="args must be a JSON object")
        try:
            result = self._handle(cmd, args)
        except FastvsError as exc:
            return _reply(conn, error=str(exc))
        except Exception as exc:  # a bug must not stop the server: say it and go on
            return _reply(conn, error=f"internal error: {type(exc).__name__}: {exc}")
        return _reply(conn, result=result)


def _listen(path: str) -> socket.socket:
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FastvsError(f"control socket {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale, left by a forwarder that was killed
        else:
            raise FastvsError(f"control socket {path}: another forwarder is listening on it")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise FastvsError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(8)
    return sock


def _read_line(conn: socket.socket, limit: int) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise OverflowError
    line = bytes(buf).split(b"\n", 1)[0]
    if len(line) > limit:
        raise OverflowError
    return line


def _reply(conn: socket.socket, *, result: Any = None, error: str | None = None) -> None:
    msg = {"ok": False, "error": error} if error is not None else {"ok": True, "result": result}
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(msg).encode() + b"\n")


# ---------------------------------------------------------------------------
# The client


def request(path: str, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Send one request and return its result; raises :class:`ControlError` with the
    reply's error line, or when the socket cannot be reached."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ControlError(f"cannot reach the forwarder at {path}: {exc.strerror or exc}") from None
        sock.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        try:
            line = _read_line(sock, MAX_REPLY)
        except (OSError, OverflowError) as exc:
            raise ControlError(f"no reply from {path}: {exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError(f"bad reply from {path}") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "request refused")))
    return reply.get("result")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastvs ctl", description="Control a running fastvs forward.")
    p.add_argument("--control", default=DEFAULT_PATH, metavar="PATH",
                   help=f"the forwarder's control socket (default {DEFAULT_PATH})")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="the ipvsadm -L -n listing")
    shape = ls.add_mutually_exclusive_group()
    shape.add_argument("--stats", action="store_true")
    shape.add_argument("--rate", action="store_true")
    shape.add_argument("-c", "--connection", action="store_true")
    ls.add_argument("--json", action="store_true")
    w = sub.add_parser("weight", help="set a real server's weight")
    w.add_argument("service", metavar="VIP:PORT")
    w.add_argument("server", metavar="RIP:PORT")
    w.add_argument("weight", type=int)
    d = sub.add_parser("drain", help="weight 0 for a real server in every service")
    d.add_argument("server", metavar="RIP:PORT")
    for name in ("add", "remove"):
        e = sub.add_parser(name, help=f"{name} services or real servers, in ipvsadm syntax",
                           prefix_chars="+")
        e.add_argument("words", nargs=argparse.REMAINDER)
    sub.add_parser("reload", help="re-read the rules, as SIGHUP")
    sub.add_parser("health", help="each health checker's state")
    r = sub.add_parser("role", help="make this director the master or a backup (keepalived "
                       "notify scripts); without an argument, print the role")
    r.add_argument("role", nargs="?", choices=("master", "backup"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``fastvs ctl``: one request, its answer on stdout; errors as one line, exit 1
    (2 for usage)."""
    from fastvs.control import listing as L

    a = _parser().parse_args(argv)
    args: dict[str, Any] = {}
    if a.cmd == "list":
        args = {"conns": bool(a.connection)}
    elif a.cmd == "weight":
        args = {"service": a.service, "server": a.server, "weight": a.weight}
    elif a.cmd == "drain":
        args = {"server": a.server}
    elif a.cmd in ("add", "remove"):
        args = {"words": a.words}
    elif a.cmd == "role" and a.role is not None:
        args = {"role": a.role}
    try:
        result = request(a.control, a.cmd, args)
    except FastvsError as exc:
        print(f"fastvs: {exc}", file=sys.stderr)
        return exc.exit_code
    out = sys.stdout
    if a.cmd == "list":
        if a.json:
            json.dump(result, out, indent=2, sort_keys=True)
            out.write("\n")
        elif a.connection:
            out.write(L.format_conns(result.get("conns", [])))
        elif a.stats:
            out.write(L.format_stats(result["services"]))
        elif a.rate:
            out.write(L.format_rate(result["services"]))
        else:
            out.write(L.format_list(result["services"]))
    elif a.cmd == "role" and isinstance(result, dict):
        workers = " ".join(f"{w}:{r}" for w, r in result.get("workers", {}).items())
        out.write(f"{result.get('role')}" + (f"  (workers {workers})" if workers else "") + "\n")
    elif a.cmd == "health":
        for h in result:
            state = "up" if h["up"] else "down"
            out.write(f"{h['service']:<28} {h['server']:<24} {state:<5} {h.get('why', '')}\n")
    else:
        for line in result or []:
            out.write(f"{line}\n")
    return 0
