"""HealthProcess: the monitor in a child process, its changes, log lines, snapshot and
reload over a pipe; the child ends with stop()."""

from __future__ import annotations

import select
import time
import warnings

from fastvs.control.keepalived import KeepalivedConfig, read_keepalived
from fastvs.control.rules import format_rules
from fastvs.health import Change
from fastvs.health.process import HealthProcess

from .servers import Listener
from .test_monitor import DEADLINE, two_servers


def config(text: str) -> KeepalivedConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_keepalived(text, source="k.conf")


def test_changes_and_log_lines_come_through_the_pipe() -> None:
    a, b = Listener(), Listener()
    lines: list[str] = []
    changes: list[Change] = []
    proc = HealthProcess(config(two_servers(a.port, b.port)), log=lines.append, seed=1)
    assert format_rules(proc.rules()) == format_rules(proc.config.initial_rules())
    with proc:
        assert proc.running
        a.close()
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and not changes:
            select.select([proc.fileno()], [], [], 0.5)  # as a poll loop would wait
            ch = proc.take()
            if ch is not None:
                changes.append(ch)
        assert changes and changes[0].edit_lines() == [f"-d -t 10.0.0.1:80 -r 127.0.0.1:{a.port}"]
        assert f"127.0.0.1:{a.port} -m" not in format_rules(proc.rules())
        assert any("up -> down (removed)" in line for line in lines)
        snap = proc.snapshot()
        assert [s["state"] for s in snap] == ["down", "up"]
        text = two_servers(a.port, b.port).replace("weight 3", "weight 4")
        proc.reload(config(text))
        end = time.monotonic() + DEADLINE
        got = None
        while time.monotonic() < end and got is None:
            got = proc.take()
            time.sleep(0.02)
        assert got is not None
        assert got.edit_lines() == [f"-e -t 10.0.0.1:80 -r 127.0.0.1:{b.port} -m -w 4"]
        assert [s["state"] for s in proc.snapshot()] == ["down", "up"]  # kept down
    assert not proc.running
    a.close()
    b.close()
