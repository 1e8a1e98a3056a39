"""HealthMonitor end to end against real servers on loopback: a real server taken out
when its listener closes and back when it reopens, the sorry server when all are down,
the changes delivered by callback and by take() and applied to a running Director as
`fastvs forward` will; check_once for `fastvs check`; and a few hundred real servers
checked at once by one thread with a bounded number of sockets.

Timing is never asserted tightly: every wait polls against a generous deadline."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from fastvs.control.keepalived import KeepalivedConfig, read_keepalived
from fastvs.control.rules import format_rules
from fastvs.health import Change, HealthMonitor, check_once

from .servers import Listener, Pages, http_server

DEADLINE = 30.0


def config(text: str) -> KeepalivedConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_keepalived(text, source="k.conf")


def wait_for(what: Callable[[], bool], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if what():
            return
        time.sleep(0.02)
    raise AssertionError(f"not reached within {deadline} s")


FAST = """
  delay_loop 0.2
  retry 1
  delay_before_retry 0.1
  connect_timeout 2
  warmup 0
"""


def two_servers(a: int, b: int, extra: str = "") -> str:
    return f"""
virtual_server 10.0.0.1 80 {{
  protocol TCP
  lb_algo rr
  {extra}
  real_server 127.0.0.1 {a} {{
    weight 2
    TCP_CHECK {{ {FAST} }}
  }}
  real_server 127.0.0.1 {b} {{
    weight 3
    TCP_CHECK {{ {FAST} }}
  }}
}}
"""


def test_a_closed_listener_is_taken_out_and_comes_back() -> None:
    a, b = Listener(), Listener()
    changes: list[Change] = []
    lines: list[str] = []
    mon = HealthMonitor(config(two_servers(a.port, b.port)), on_change=changes.append,
                        log=lines.append, seed=1)
    assert mon.take() is None
    with mon:
        assert mon.running
        time.sleep(0.5)  # several rounds: nothing changes while both listen
        assert mon.take() is None and not changes
        a.close()
        wait_for(lambda: f"127.0.0.1:{a.port}" not in format_rules(mon.rules()))
        change = mon.take()
        assert change is not None and change.generation == 1
        assert change.edit_lines() == [f"-d -t 10.0.0.1:80 -r 127.0.0.1:{a.port}"]
        assert change.rules_text() == (f"-A -t 10.0.0.1:80 -s rr\n"
                                       f"-a -t 10.0.0.1:80 -r 127.0.0.1:{b.port} -m -w 3\n")
        # retry 1: the second refused connect in a row (the first ever needs only one,
        # but these had passed before)
        assert lines[0].endswith(f"TCP 10.0.0.1:80 127.0.0.1:{a.port}: up -> down (removed): "
                                 f"TCP_CHECK connect to 127.0.0.1:{a.port} failed: Connection "
                                 "refused, 2nd failure")
        a.open()
        wait_for(lambda: f"127.0.0.1:{a.port} -m -w 2" in format_rules(mon.rules()))
        change = mon.take()
        assert change is not None
        assert change.edit_lines() == [f"-a -t 10.0.0.1:80 -r 127.0.0.1:{a.port} -m -w 2"]
        assert f"127.0.0.1:{a.port}: down -> up: TCP_CHECK 127.0.0.1:{a.port}: connected" \
            in lines[1]
    assert not mon.running
    assert [c.generation for c in changes] == [1, 2]
    snap = mon.snapshot()
    assert [s["state"] for s in snap] == ["up", "up"]
    assert snap[0]["checkers"][0]["attempts"] >= 3
    a.close()
    b.close()


def test_take_accumulates_edits_between_polls() -> None:
    a, b = Listener(), Listener()
    mon = HealthMonitor(config(two_servers(a.port, b.port, "inhibit_on_failure")), seed=2)
    with mon:
        a.close()
        b.close()
        wait_for(lambda: mon.generation >= 2)
        change = mon.take()
        assert change is not None
        assert sorted(change.edit_lines()) == sorted([
            f"-e -t 10.0.0.1:80 -r 127.0.0.1:{a.port} -m -w 0",
            f"-e -t 10.0.0.1:80 -r 127.0.0.1:{b.port} -m -w 0",
        ])
        assert len(change.transitions) == 3  # two servers down, then the quorum
        assert mon.take() is None


def test_sorry_server_when_both_are_down_with_http_get() -> None:
    pages = Pages()
    pages.pages["/health"] = (200, b"ok\n")
    with http_server(pages) as srv:
        port = srv.server_address[1]
        lis = Listener()
        text = f"""
virtual_server 10.0.0.1 80 {{
  protocol TCP
  sorry_server 10.9.9.9 80
  real_server 127.0.0.1 {port} {{
    HTTP_GET {{
      url {{
        path /health
        status_code 200
      }}
      {FAST}
    }}
  }}
  real_server 127.0.0.1 {lis.port} {{
    TCP_CHECK {{ {FAST} }}
  }}
}}
"""
        with HealthMonitor(config(text), seed=3) as mon:
            time.sleep(0.3)
            assert "10.9.9.9" not in format_rules(mon.rules())
            pages.pages["/health"] = (503, b"down\n")
            lis.close()
            wait_for(lambda: "10.9.9.9:80" in format_rules(mon.rules()))
            assert format_rules(mon.rules()) == ("-A -t 10.0.0.1:80 -s wlc\n"
                                                 "-a -t 10.0.0.1:80 -r 10.9.9.9:80 -m -w 1\n")
            pages.pages["/health"] = (200, b"ok again\n")
            wait_for(lambda: "10.9.9.9" not in format_rules(mon.rules()))
            assert f"127.0.0.1:{port} -m -w 1" in format_rules(mon.rules())
            assert snap_states(mon) == ["up", "down"]


def snap_states(mon: HealthMonitor) -> list[str]:
    return [s["state"] for s in mon.snapshot()]


def test_misc_dynamic_weight_reaches_the_table(tmp_path: Path) -> None:
    weight_file = tmp_path / "code"
    weight_file.write_text("9\n")
    script = tmp_path / "load"
    script.write_text(f'#!/bin/sh\nexit "$(cat {weight_file})"\n')
    script.chmod(0o755)
    text = f"""
virtual_server 10.0.0.1 80 {{
  protocol TCP
  real_server 10.1.0.1 80 {{
    weight 1
    MISC_CHECK {{
      misc_path {script}
      misc_dynamic
      misc_timeout 10
      {FAST}
    }}
  }}
}}
"""
    with HealthMonitor(config(text), seed=4) as mon:
        wait_for(lambda: "-r 10.1.0.1:80 -m -w 7" in format_rules(mon.rules()))
        weight_file.write_text("1\n")
        wait_for(lambda: "10.1.0.1" not in format_rules(mon.rules()))
        weight_file.write_text("0\n")
        wait_for(lambda: "-r 10.1.0.1:80 -m -w 7" in format_rules(mon.rules()))


def test_changes_apply_to_a_running_director() -> None:
    """What `fastvs forward` will do between batches: Director.reload(change.rules)."""
    from fastvs.control.director import Director

    a, b = Listener(), Listener()
    cfg = config(two_servers(a.port, b.port))
    director = Director(cfg.initial_rules(), seed=1)
    with HealthMonitor(cfg, seed=5) as mon:
        a.close()
        wait_for(lambda: mon.generation >= 1)
        change = mon.take()
        assert change is not None
        msgs = director.reload(change.rules)
        assert msgs == [f"-t 10.0.0.1:80: removed real server 127.0.0.1:{a.port}"]
        a.open()
        wait_for(lambda: mon.generation >= 2)
        change = mon.take()
        assert change is not None
        assert director.reload(change.rules) == [
            f"-t 10.0.0.1:80: added real server 127.0.0.1:{a.port} weight 2"]
    a.close()
    b.close()


def test_check_once_reports_each_server_once() -> None:
    up = Listener()
    down = Listener()
    down.close()
    text = two_servers(up.port, down.port).replace("alpha", "")
    t0 = time.monotonic()
    mon = check_once(config(text))
    assert time.monotonic() - t0 < DEADLINE
    assert snap_states(mon) == ["up", "down"]
    assert f"127.0.0.1:{down.port}" not in format_rules(mon.rules())
    up.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_three_hundred_real_servers_one_thread_bounded_sockets() -> None:
    n = 300
    listeners = [Listener() for _ in range(n)]
    for lis in listeners[::3]:  # a third of them down
        lis.close()
    servers = "\n".join(f"""
  real_server 127.0.0.1 {lis.port} {{
    TCP_CHECK {{
      delay_loop 2
      warmup 1
      connect_timeout 3
    }}
  }}""" for lis in listeners)
    text = f"virtual_server 10.0.0.1 80 {{\n  protocol TCP\n{servers}\n}}\n"
    cfg = config(text)
    threads0, fds0 = threading.active_count(), _fds()
    peak_fds = 0
    mon = HealthMonitor(cfg, max_concurrent=32, seed=6)
    t0 = time.monotonic()
    mon.start()
    try:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            peak_fds = max(peak_fds, _fds())
            assert threading.active_count() <= threads0 + 1
            if all(s["checkers"][0]["attempts"] >= 1 for s in mon.snapshot()):
                break
            time.sleep(0.01)
        first_round = time.monotonic() - t0
        states = snap_states(mon)
    finally:
        mon.stop()
        for lis in listeners:
            lis.close()
    assert all(s["checkers"][0]["attempts"] >= 1 for s in mon.snapshot())
    assert states.count("down") == n // 3 and states.count("up") == n - n // 3
    # one loop thread; sockets: at most max_concurrent checks open at once (+ the loop's own)
    assert peak_fds - fds0 <= 32 + 8
    print(f"\n300 real servers: first round {first_round:.2f} s (warmup 1 s, delay_loop 2 s), "
          f"threads +1, peak fds +{peak_fds - fds0}")


def test_reload_while_running_keeps_a_down_server_down() -> None:
    a, b, c = Listener(), Listener(), Listener()
    changes: list[Change] = []
    with HealthMonitor(config(two_servers(a.port, b.port)), on_change=changes.append,
                       seed=7) as mon:
        a.close()
        wait_for(lambda: mon.generation >= 1)
        text = two_servers(a.port, b.port).replace(
            "  real_server 127.0.0.1", f"  real_server 127.0.0.1 {c.port} {{\n"
            f"    TCP_CHECK {{ {FAST} }}\n  }}\n  real_server 127.0.0.1", 1)
        change = mon.reload(config(text))
        assert change.edit_lines() == [f"-a -t 10.0.0.1:80 -r 127.0.0.1:{c.port} -m -w 1"]
        rules = format_rules(mon.rules())
        assert f"127.0.0.1:{a.port}" not in rules and f"127.0.0.1:{c.port}" in rules
        a.open()  # the migrated checker goes on and brings it back
        wait_for(lambda: f"127.0.0.1:{a.port}" in format_rules(mon.rules()))
    # on_change got each delta once; take() merged them all
    assert [e for ch in changes for e in ch.edit_lines()] == [
        f"-d -t 10.0.0.1:80 -r 127.0.0.1:{a.port}",
        f"-a -t 10.0.0.1:80 -r 127.0.0.1:{c.port} -m -w 1",
        f"-a -t 10.0.0.1:80 -r 127.0.0.1:{a.port} -m -w 2",
    ]
    merged = mon.take()
    assert merged is not None and merged.edit_lines() == [
        e for ch in changes for e in ch.edit_lines()]
    for lis in (a, b, c):
        lis.close()


def test_many_scripts_at_once_start_no_thread_each(tmp_path: Path) -> None:
    script = tmp_path / "slowish"
    script.write_text("#!/bin/sh\nsleep 0.3\nexit 0\n")
    script.chmod(0o755)
    servers = "\n".join(f"""
  real_server 10.1.0.{i} 80 {{
    MISC_CHECK {{
      misc_path {script}
      misc_timeout 20
      delay_loop 5
      warmup 0
    }}
  }}""" for i in range(1, 81))
    cfg = config(f"virtual_server 10.0.0.1 80 {{\n  protocol TCP\n{servers}\n}}\n")
    threads0 = threading.active_count()
    peak = 0
    with HealthMonitor(cfg, seed=8) as mon:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            peak = max(peak, threading.active_count())
            if all(s["checkers"][0]["attempts"] >= 1 for s in mon.snapshot()):
                break
            time.sleep(0.01)
        assert all(s["state"] == "up" for s in mon.snapshot())
    assert peak <= threads0 + 1
