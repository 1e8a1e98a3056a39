"""HealthProcess: the HealthMonitor in a process of its own.

A HealthMonitor thread shares its process's GIL with whatever else runs there: in the
process that forwards, every turn of its loop competes with the batch loop's Python
parts (300 TCP checks a second take about 9 % of a core; on a loaded two-core machine a
Director processing batches beside such a thread measured from 8 % to 50 % slower, too
noisy to say more). HealthProcess runs the monitor in a child process (started with ``spawn``, so it
inherits no sockets, rings or threads) and talks to it over one pipe:

- :meth:`take` (non-blocking, for the forwarder between batches) drains what the child
  sent: changes, merged into one :class:`~fastvs.health.monitor.Change`, and log lines,
  handed to ``log`` in the caller's thread;
- :meth:`fileno` is the pipe's descriptor, for a select/poll loop;
- :meth:`snapshot` and :meth:`reload` ask the child and wait for its answer;
- :meth:`stop` ends the child (its running scripts are killed).

The child exits when the pipe closes, so it never outlives its parent for long.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections.abc import Callable
from typing import Any

from fastvs.control.keepalived import KeepalivedConfig
from fastvs.control.rules import Order, Rules
from fastvs.health.monitor import DEFAULT_MAX_CONCURRENT, Change, HealthMonitor

__all__ = ["HealthProcess"]


def _child(conn: multiprocessing.connection.Connection, config: KeepalivedConfig,
           order: Order, max_concurrent: int, seed: int | None) -> None:
    lock = threading.Lock()

    def send(msg: tuple[Any, ...]) -> None:
        with lock:
            with contextlib.suppress(OSError, ValueError):
                conn.send(msg)

    mon = HealthMonitor(config, order=order, max_concurrent=max_concurrent, seed=seed,
                        on_change=lambda ch: send(("change", ch)),
                        log=lambda line: send(("log", line)))
    mon.start()
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            op = msg[0]
            if op == "stop":
                break
            if op == "snapshot":
                send(("snapshot", mon.snapshot()))
            elif op == "rules":
                send(("rules", mon.rules()))
            elif op == "reload":
                try:
                    mon.reload(msg[1])
                    send(("reloaded", None))
                except Exception as exc:  # noqa: BLE001 - answer, never die
                    send(("reloaded", f"{type(exc).__name__}: {exc}"))
    finally:
        mon.stop()
        send(("stopped", None))
        conn.close()


class HealthProcess:
    """The same service as :class:`HealthMonitor`, from a child process."""

    def __init__(
        self,
        config: KeepalivedConfig,
        *,
        order: Order = "kernel",
        log: Callable[[str], None] | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        seed: int | None = None,
    ):
        self.config = config
        self.order: Order = order
        self.log = log or (lambda _line: None)
        self.max_concurrent = max_concurrent
        self.seed = seed
        self._conn: multiprocessing.connection.Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._pending: Change | None = None
        self._replies: list[tuple[Any, ...]] = []
        self._rules = config.initial_rules(order)
        self.generation = 0

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("HealthProcess already started")
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        self._proc = ctx.Process(target=_child, name="fastvs-health",
                                 args=(theirs, self.config, self.order, self.max_concurrent,
                                       self.seed), daemon=True)
        self._proc.start()
        theirs.close()
        self._conn = mine

    def fileno(self) -> int:
        assert self._conn is not None, "not started"
        return self._conn.fileno()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _drain(self, block: float | None = None) -> None:
        conn = self._conn
        if conn is None:
            return
        timeout = 0.0 if block is None else block
        while True:
            try:
                if not conn.poll(timeout):
                    return
                msg = conn.recv()
            except (EOFError, OSError):
                return
            timeout = 0.0
            if msg[0] == "log":
                self.log(msg[1])
            elif msg[0] == "change":
                ch: Change = msg[1]
                self._rules = ch.rules
                self.generation = ch.generation
                if self._pending is None:
                    self._pending = ch
                else:
                    self._pending.generation, self._pending.rules = ch.generation, ch.rules
                    self._pending.edits.extend(ch.edits)
                    self._pending.transitions.extend(ch.transitions)
            else:
                self._replies.append(msg)
                if block is not None:
                    return

    def take(self) -> Change | None:
        """What changed since the last take (never blocks); log lines go to ``log``."""
        self._drain()
        change, self._pending = self._pending, None
        return change

    def rules(self) -> Rules:
        """The latest table received (the start table before the first change)."""
        self._drain()
        return self._rules

    def _ask(self, msg: tuple[Any, ...], answer: str, timeout: float) -> Any:
        assert self._conn is not None, "not started"
        self._conn.send(msg)
        end = time.monotonic() + timeout
        while True:
            for i, reply in enumerate(self._replies):
                if reply[0] == answer:
                    del self._replies[i]
                    return reply[1]
            left = end - time.monotonic()
            if left <= 0 or not self.running:
                raise TimeoutError(f"the health process gave no {answer} answer")
            self._drain(block=min(left, 0.5))

    def snapshot(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        return list(self._ask(("snapshot",), "snapshot", timeout))

    def reload(self, config: KeepalivedConfig, timeout: float = 30.0) -> None:
        """Switch the child to ``config`` keeping states (see HealthMonitor.reload); the
        change arrives through :meth:`take`."""
        err = self._ask(("reload", config), "reloaded", timeout)
        if err:
            raise RuntimeError(f"health reload failed: {err}")
        self.config = config

    def stop(self, timeout: float = 10.0) -> None:
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            conn.send(("stop",))
        end = time.monotonic() + timeout
        while proc.is_alive() and time.monotonic() < end:
            self._drain(block=0.1)
        proc.join(max(0.0, end - time.monotonic()))
        if proc.is_alive():
            proc.terminate()
            proc.join(2)
        self._drain()
        conn.close()
        self._conn = None

    def __enter__(self) -> HealthProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
