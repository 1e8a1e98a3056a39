"""pytest plugin: in CI, a skipped test fails the run unless it is on the allow-list below.

A skip is how a suite stops proving what it claims without anyone noticing: a missing
tool, a missing file, a lost privilege turns a test into an "s" and the run stays green.
With ``CI`` set to ``1`` or ``true`` (``.ci/run`` sets it, and so do most CI systems), this
plugin lists every skipped test that ``ALLOWED`` does not name and makes the session
fail (exit status 1). Locally nothing changes: skips are reported as pytest reports them.

Loaded from pyproject.toml (``-p ci_skips`` with ``tests`` on ``pythonpath``). An xfail
is not a skip (it ran); a test deselected with ``-m``/``-k`` is not a skip either.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any

import pytest

# node id pattern (fnmatch) -> why it may skip in CI. Keep this short: each entry is a
# claim the suite does not check in CI.
ALLOWED: dict[str, str] = {}


def ci_enabled(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return env.get("CI", "").strip().lower() in ("1", "true", "yes")


def allowed_reason(nodeid: str, allowed: dict[str, str] = ALLOWED) -> str | None:
    for pattern, why in allowed.items():
        if fnmatch.fnmatchcase(nodeid, pattern):
            return why
    return None


class SkipGuard:
    def __init__(self, allowed: dict[str, str]) -> None:
        self.allowed = allowed
        self.offending: list[tuple[str, str]] = []  # (node id, skip reason)

    def _note(self, report: Any) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        if allowed_reason(report.nodeid, self.allowed) is not None:
            return
        why = ""
        if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            why = str(report.longrepr[2])
        elif report.longrepr is not None:
            why = str(report.longrepr)
        self.offending.append((report.nodeid or "<collection>", why.removeprefix("Skipped: ")))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)  # a module skipped whole (importorskip, allow_module_level)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.offending and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.offending:
            return
        tr = terminalreporter
        tr.section("skipped in CI (not on the allow-list in tests/ci_skips.py)", sep="=", red=True)
        for nodeid, why in self.offending:
            tr.line(f"SKIPPED {nodeid}: {why}", red=True)
        tr.line(f"{len(self.offending)} test(s) skipped in CI: make them run, or add them to "
                "ALLOWED in tests/ci_skips.py with the reason", red=True)


def pytest_configure(config: pytest.Config) -> None:
    if ci_enabled():
        config.pluginmanager.register(SkipGuard(ALLOWED), "ci_skips_guard")
