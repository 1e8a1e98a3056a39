"""HealthMonitor: keepalived's health checkers in a thread of their own.

One thread runs an asyncio loop with one task per checker (TCP_CHECK, HTTP_GET, SSL_GET,
MISC_CHECK); attempts run at most ``max_concurrent`` at a time, so hundreds of real
servers cost one thread and a bounded number of sockets. Results go through
:class:`~fastvs.health.state.HealthState`; whenever the IPVS table they imply changes,
the monitor

- publishes a :class:`Change` (the complete desired :class:`~fastvs.control.rules.Rules`,
  the ipvsadm edits since the last one taken, the transitions) that :meth:`take` returns
  — cheap to poll between batches from any thread;
- calls ``on_change(change)`` from the monitor's thread, if given (it must not block:
  hand the change over, e.g. write it to a pipe);
- logs each transition as one line through ``log``.

The data path never waits on it: :meth:`take` only takes a lock held for a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastvs.control.keepalived import KeepalivedConfig
from fastvs.control.rules import Order, Rules, format_rules
from fastvs.health.checks import run_check
from fastvs.health.state import (
    CheckerState,
    CheckResult,
    Edit,
    HealthState,
    Transition,
    copy_rules,
)

__all__ = ["Change", "HealthMonitor", "check_once"]

DEFAULT_MAX_CONCURRENT = 256


@dataclass
class Change:
    """What the checks changed: ``rules`` is the whole table they imply now (a copy the
    receiver owns), ``edits`` the ipvsadm edits since the previous change its receiver
    got (``on_change``: the previous call; :meth:`HealthMonitor.take`: the previous
    take) — applied in order to the table of that previous change they give ``rules`` —
    and ``transitions`` what happened meanwhile. ``generation`` counts the state's
    changes from 0 (the table at start)."""

    generation: int
    rules: Rules
    edits: list[Edit] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    def rules_text(self) -> str:
        """``rules`` as ``ipvsadm -S -n`` prints them (what ``fastvs.control.rules.
        parse_rules`` reads back), to hand to another process."""
        return format_rules(self.rules)

    def edit_lines(self) -> list[str]:
        return [e.line() for e in self.edits]


class HealthMonitor:
    """Runs the checkers of ``config`` off the caller's thread (see the module's doc)."""

    def __init__(
        self,
        config: KeepalivedConfig,
        *,
        order: Order = "kernel",
        on_change: Callable[[Change], None] | None = None,
        log: Callable[[str], None] | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        seed: int | None = None,
        wall: Callable[[], float] = time.time,
    ):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.state = HealthState(config, order=order, wall=wall)
        self.on_change = on_change
        self.log = log or (lambda _line: None)
        self.max_concurrent = max_concurrent
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._pending: Change | None = None
        self._edits: list[Edit] = []
        self._transitions: list[Transition] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._publish_due = False
        self._published = self.state.copy_rules()
        self._published_generation = self.state.generation
        self._sem: asyncio.Semaphore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []

    # -- for the integrator ----------------------------------------------------------

    @property
    def generation(self) -> int:
        """The generation of the last change published."""
        return self._published_generation

    def rules(self) -> Rules:
        """The table of the last change published (a copy): what :meth:`take` and
        ``on_change`` have handed out, or will at once."""
        with self._lock:
            return copy_rules(self._published)

    def take(self) -> Change | None:
        """The change since the last :meth:`take`, or None when nothing changed. Its
        ``rules`` is the latest table; ``edits`` and ``transitions`` accumulate."""
        with self._lock:
            change, self._pending = self._pending, None
            return change

    def snapshot(self) -> list[dict[str, Any]]:
        """Every real server's state (see :meth:`HealthState.snapshot`)."""
        with self._lock:
            return self.state.snapshot()

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("HealthMonitor already started")
        self._thread = threading.Thread(target=self._run, name="fastvs-health", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the checkers (running scripts are killed) and join the thread."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> HealthMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - report, never kill the process
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.log(f"health: monitor stopped: {type(exc).__name__}: {exc}")
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._sem = asyncio.Semaphore(self.max_concurrent)
        self._spawn()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self._cancel()

    def _spawn(self) -> None:
        assert self._sem is not None
        sem = self._sem
        self._tasks = [asyncio.create_task(self._loop_one(c, sem), name=c.name)
                       for c in self.state.checkers() if c.config.supported]

    async def _cancel(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- reload ----------------------------------------------------------------------

    def reload(self, config: KeepalivedConfig, timeout: float = 30.0) -> Change:
        """Switch to a new configuration (SIGHUP), keeping the state of the services,
        real servers and checkers found again, as keepalived does
        (:meth:`HealthState.migrate`). Returns the change (also published as any other:
        ``take()`` and ``on_change``); its ``edits`` take the old table to the new one.
        Call it from any thread but the monitor's own."""
        new = HealthState(config, order=self.state.rules.order, wall=self.state.wall)
        loop = self._loop
        if loop is None or not self.running:
            return self._swap(new)
        fut = asyncio.run_coroutine_threadsafe(self._reload(new), loop)
        return fut.result(timeout)

    async def _reload(self, new: HealthState) -> Change:
        await self._cancel()
        change = self._swap(new)
        self._spawn()
        return change

    def _swap(self, new: HealthState) -> Change:
        with self._lock:
            transitions = new.migrate(self.state)
            self.state = new
            self._edits.extend(new.take_edits())
            self._transitions.extend(transitions)
        for t in transitions:
            self.log(t.line())
        change = self._publish(force=True)
        assert change is not None
        return change

    async def _loop_one(self, checker: CheckerState, sem: asyncio.Semaphore) -> None:
        await asyncio.sleep(self.state.first_delay(checker, self.rng))
        while True:
            async with sem:
                result = await run_check(checker.config)
            try:
                delay = self.apply(checker, result)
            except Exception as exc:  # noqa: BLE001 - one checker's bug must not stop it
                self.log(f"health: {checker.name}: {type(exc).__name__}: {exc}")
                delay = checker.config.delay_loop
            await asyncio.sleep(delay)

    def apply(self, checker: CheckerState, result: CheckResult) -> float:
        """Feed one result in (the monitor's thread does; tests may too). Returns the
        delay before the checker's next attempt. Changes made in one turn of the loop
        are published together, once."""
        with self._lock:
            delay, transitions = self.state.report(checker, result)
            if transitions:
                self._edits.extend(self.state.take_edits())
                self._transitions.extend(transitions)
        for t in transitions:
            self.log(t.line())
        if transitions and not self._publish_due:
            self._publish_due = True
            try:
                asyncio.get_running_loop().call_soon(self._publish)
            except RuntimeError:  # no loop (a direct call): publish now
                self._publish()
        return delay

    def _publish(self, force: bool = False) -> Change | None:
        """Hand out what changed since the last publication: to ``on_change`` as it is,
        and merged into the change :meth:`take` returns next."""
        self._publish_due = False
        with self._lock:
            if not (self._edits or self._transitions or force):
                return None
            edits, self._edits = self._edits, []
            transitions, self._transitions = self._transitions, []
            rules = self.state.copy_rules()
            change = Change(self.state.generation, rules, edits, transitions)
            self._published = rules
            self._published_generation = change.generation
            pending = self._pending
            if pending is None:
                self._pending = Change(change.generation, copy_rules(rules), list(edits),
                                       list(transitions))
            else:
                pending.generation, pending.rules = change.generation, copy_rules(rules)
                pending.edits.extend(edits)
                pending.transitions.extend(transitions)
        if self.on_change is not None:
            try:
                self.on_change(change)
            except Exception as exc:  # noqa: BLE001 - a bad callback must not stop checks
                self.log(f"health: on_change failed: {type(exc).__name__}: {exc}")
        return change


def check_once(
    config: KeepalivedConfig, *, max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    log: Callable[[str], None] | None = None,
) -> HealthMonitor:
    """Run every supported checker once, at the same time (no warmup, no retries: as
    keepalived's first round, where one failure is enough), and return the monitor with
    the states and table that round leaves (``snapshot()``, ``rules()``). For
    ``fastvs check``. Blocks the caller until every attempt has finished (each is bounded
    by its connect_timeout / misc_timeout)."""
    mon = HealthMonitor(config, max_concurrent=max_concurrent, log=log)

    async def main() -> None:
        sem = asyncio.Semaphore(max_concurrent)

        async def one(c: CheckerState) -> None:
            async with sem:
                result = await run_check(c.config)
            mon.apply(c, result)

        await asyncio.gather(*(one(c) for c in mon.state.checkers() if c.config.supported))
        if mon._publish_due:
            mon._publish()

    asyncio.run(main())
    return mon
