"""Live control (fastvs.control.ctl): edits planned against the rules and applied as
ipvsadm would, the Unix-socket server with a real Director behind it, `fastvs ctl`'s
output, and hostile requests that get an error reply and never stop the server."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

import fastvs.control.ctl as C
from fastvs.control.director import Director
from fastvs.control.listing import format_list
from fastvs.control.rules import Rules, format_rules, parse_rules
from fastvs.errors import FastvsError, RulesError

RULES = """\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 1
-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 2 -x 100
-A -u 10.0.0.1:80 -s wlc
-a -u 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3
-A -t 10.0.0.2:443 -s rr
-a -t 10.0.0.2:443 -r 10.1.0.1:8080 -m -w 1
"""


def test_weight_edits_every_service_on_the_address_and_keeps_method_and_thresholds() -> None:
    rules = parse_rules(RULES)
    lines = C.plan(rules, "weight", {"service": "10.0.0.1:80", "server": "10.1.0.1:8080", "weight": 7})
    assert lines == ["-e -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 7",
                     "-e -u 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 7"]  # fmt: skip
    new = C.apply_lines(rules, lines)
    assert "-a -t 10.0.0.2:443 -r 10.1.0.1:8080 -m -w 1" in format_rules(new)  # other VIP kept
    assert "-a -u 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 7" in format_rules(new)
    assert format_rules(rules) == format_rules(parse_rules(RULES))  # the original untouched


def test_drain_is_weight_0_everywhere_and_keeps_the_method() -> None:
    rules = parse_rules(RULES + "-A -t 10.0.0.4:80 -s rr\n-a -t 10.0.0.4:80 -r 10.1.0.2:8080 -g\n")
    new = C.apply_lines(rules, C.plan(rules, "drain", {"server": "10.1.0.2:8080"}))
    assert "-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 0 -x 100" in format_rules(new)
    # ipvsadm gives a direct-routing server the service's port: 10.1.0.2:80 is not drained
    assert "-a -t 10.0.0.4:80 -r 10.1.0.2:80 -g -w 1" in format_rules(new)
    new = C.apply_lines(new, C.plan(new, "drain", {"server": "10.1.0.2:80"}))
    assert "-a -t 10.0.0.4:80 -r 10.1.0.2:80 -g -w 0" in format_rules(new)


def test_add_and_remove_take_ipvsadm_words() -> None:
    rules = parse_rules(RULES)
    new = C.apply_lines(rules, C.plan(rules, "add", {"words": ["-a", "-t", "10.0.0.2:443", "-r",
                                                            "10.1.0.9:8443", "-m", "-w", "4"]}))
    new = C.apply_lines(new, C.plan(new, "remove", {"words": ["-D", "-u", "10.0.0.1:80"]}))
    text = format_rules(new)
    assert "-a -t 10.0.0.2:443 -r 10.1.0.9:8443 -m -w 4" in text and "-u 10.0.0.1:80" not in text


@pytest.mark.parametrize(
    ("cmd", "args", "message"),
    [
        ("weight", {"service": "10.0.0.1:80", "server": "10.1.0.7:8080", "weight": 1},
         "no real server 10.1.0.7:8080 in a service 10.0.0.1:80"),
        ("weight", {"service": "10.0.0.1:80", "server": "10.1.0.1:8080", "weight": 70000},
         "weight must be a whole number 0-65535"),
        ("weight", {"service": "10.0.0.1:80", "server": "10.1.0.1:8080", "weight": "3"},
         "weight must be a whole number"),
        ("weight", {"service": "nope", "server": "10.1.0.1:8080", "weight": 1}, "bad virtual service 'nope'"),
        ("drain", {"server": "10.1.0.7:8080"}, "no service has the real server 10.1.0.7:8080"),
        ("add", {"words": ["-d", "-t", "10.0.0.1:80", "-r", "10.1.0.1:8080"]}, "add takes -A or -a"),
        ("remove", {"words": []}, "remove needs ipvsadm words"),
    ],
)
def test_bad_edits_are_one_line(cmd: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(RulesError, match=message):
        C.plan(parse_rules(RULES), cmd, args)


def test_an_edit_the_rules_refuse_names_the_problem() -> None:
    rules = parse_rules(RULES)
    with pytest.raises(RulesError, match="control:1: .*10.0.0.9:80"):
        C.apply_lines(rules, C.plan(rules, "add", {"words": ["-a", "-t", "10.0.0.9:80", "-r", "10.1.0.1"]}))


class Forwarder:
    """What `fastvs forward` does with control requests, on one Director."""

    def __init__(self) -> None:
        self.rules: Rules = parse_rules(RULES)
        self.director = Director(self.rules, seed=1)
        self.lock = threading.Lock()

    def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        with self.lock:
            if cmd == "list":
                out: dict[str, Any] = {"services": self.director.services()}
                if args.get("conns"):
                    out["conns"] = self.director.connections()
                return out
            if cmd == "health":
                return [{"service": "TCP 10.0.0.1:80", "server": "10.1.0.1:8080", "up": True, "why": "no checks"}]
            if cmd == "reload":
                return self.director.reload(self.rules)
            if cmd == "explode":
                raise ZeroDivisionError("bug")
            lines = C.plan(self.rules, cmd, args)
            new = C.apply_lines(self.rules, lines)
            self.director.reload(new)
            self.rules = new
            return lines


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    fwd = Forwarder()
    path = str(tmp_path / "run" / "ctl.sock")
    with C.ControlServer(path, fwd.handle) as server:
        yield fwd, path, server


def run(path: str, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = C.main(["--control", path, *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_socket_is_private(served: Any) -> None:
    _, path, _ = served
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(path).st_mode)


def test_list_matches_the_directors_listing(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fwd, path, _ = served
    rc, out, _ = run(path, "list", capsys=capsys)
    assert rc == 0 and out == format_list(fwd.director.services())
    rc, out, _ = run(path, "list", "--json", capsys=capsys)
    assert rc == 0 and json.loads(out)["services"] == json.loads(json.dumps(fwd.director.services()))


def test_weight_and_drain_change_the_running_director(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fwd, path, _ = served
    rc, out, _ = run(path, "weight", "10.0.0.2:443", "10.1.0.1:8080", "9", capsys=capsys)
    assert rc == 0 and out == "-e -t 10.0.0.2:443 -r 10.1.0.1:8080 -m -w 9\n"
    svc = next(s for s in fwd.director.services() if s["port"] == 443)
    assert svc["reals"][0]["weight"] == 9
    rc, _, _ = run(path, "drain", "10.1.0.2:8080", capsys=capsys)
    svc = next(s for s in fwd.director.services() if s["port"] == 80 and s["proto"] == "tcp")
    assert rc == 0 and {r["addr"]: r["weight"] for r in svc["reals"]}["10.1.0.2"] == 0


def test_add_and_remove_through_the_socket(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fwd, path, _ = served
    rc, _, _ = run(path, "add", "-A", "-t", "10.0.0.3:25", "-s", "rr", capsys=capsys)
    rc2, _, _ = run(path, "add", "-a", "-t", "10.0.0.3:25", "-r", "10.1.0.5:25", "-m", capsys=capsys)
    assert (rc, rc2) == (0, 0)
    assert any(s["port"] == 25 and len(s["reals"]) == 1 for s in fwd.director.services())
    rc, _, _ = run(path, "remove", "-D", "-t", "10.0.0.3:25", capsys=capsys)
    # the director unlinks a deleted service's real servers (Director.reload)
    assert rc == 0 and not any(s.port == 25 for s in fwd.rules.services)
    assert all(not s["reals"] for s in fwd.director.services() if s["port"] == 25)


def test_a_refused_edit_is_one_line_and_changes_nothing(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fwd, path, _ = served
    before = format_rules(fwd.rules)
    rc, out, err = run(path, "weight", "10.0.0.1:80", "10.9.9.9:1", "3", capsys=capsys)
    assert rc == 1 and out == ""
    assert err == "fastvs: no real server 10.9.9.9:1 in a service 10.0.0.1:80\n"
    assert format_rules(fwd.rules) == before


def test_health_and_reload(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, path, _ = served
    rc, out, _ = run(path, "health", capsys=capsys)
    assert rc == 0 and out.split() == ["TCP", "10.0.0.1:80", "10.1.0.1:8080", "up", "no", "checks"]
    assert run(path, "reload", capsys=capsys)[0] == 0


def test_no_forwarder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(str(tmp_path / "none.sock"), "list", capsys=capsys)
    assert rc == 1 and out == "" and err.startswith("fastvs: cannot reach the forwarder at ")


def raw(path: str, data: bytes, shut: bool = True) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        return json.loads(s.makefile("rb").readline())


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not json\n", "request is not one line of JSON"),
        (b"\xff\xfe\n", "request is not one line of JSON"),
        (b"[1, 2]\n", 'request must be {"cmd": NAME'),
        (b'{"cmd": "format-disk"}\n', "unknown command 'format-disk'"),
        (b'{"cmd": "list", "args": [1]}\n', "args must be a JSON object"),
        (b'{"cmd": "weight", "args": {"weight": null}}\n', "bad virtual service ''"),
        (b"x" * (C.MAX_REQUEST + 10), f"request longer than {C.MAX_REQUEST} bytes"),
    ],
)
def test_hostile_requests_get_an_error_and_the_server_goes_on(served: Any, data: bytes, error: str) -> None:
    _, path, _ = served
    reply = raw(path, data)
    assert reply["ok"] is False and reply["error"].startswith(error)
    assert C.request(path, "list", {})["services"]  # still serving


def test_a_bug_in_the_handler_is_an_error_reply(tmp_path: Path) -> None:
    def handle(cmd: str, args: dict[str, Any]) -> Any:
        raise ZeroDivisionError("division by zero")

    with C.ControlServer(str(tmp_path / "c.sock"), handle) as server:
        with pytest.raises(FastvsError, match="internal error: ZeroDivisionError"):
            C.request(server.path, "list")


def test_a_slow_client_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "READ_TIMEOUT", 0.3)
    fwd = Forwarder()
    with C.ControlServer(str(tmp_path / "c.sock"), fwd.handle) as server:
        reply = raw(server.path, b'{"cmd": "li', shut=False)
        assert reply == {"ok": False, "error": "no complete request within 0.3 s"}
        assert C.request(server.path, "list")["services"]


def test_stale_socket_replaced_live_one_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on: a killed forwarder's
    fwd = Forwarder()
    with C.ControlServer(path, fwd.handle):
        with pytest.raises(FastvsError, match="another forwarder is listening on it"):
            C.ControlServer(path, fwd.handle)
    Path(path).write_text("")
    with pytest.raises(FastvsError, match="exists and is not a socket"):
        C.ControlServer(path, fwd.handle)
