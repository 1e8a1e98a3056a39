"""tests/ci_skips.py: with CI set, a skip outside the allow-list fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ci_skips
import pytest

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest

def test_runs():
    pass

@pytest.mark.xfail(reason="a known difference")
def test_known():
    assert 0

def test_skips():
    pytest.skip("tool missing")
'''


def pytest_in(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "ci_skips", "-p", "no:cacheprovider", "-c", os.devnull,
         "--rootdir", str(folder), str(folder)],
        capture_output=True, text=True, env=env, timeout=120, cwd=folder,
    )  # fmt: skip


@pytest.mark.parametrize("ci", ["1", "true", "TRUE"])
def test_skip_fails_the_run_in_ci(tmp_path: Path, ci: str) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    r = pytest_in(tmp_path, ci)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "SKIPPED test_sample.py::test_skips: tool missing" in r.stdout, r.stdout
    assert "1 passed, 1 skipped, 1 xfailed" in r.stdout  # the xfail is not a skip


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_skip_is_a_skip_outside_ci(tmp_path: Path, ci: str | None) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    r = pytest_in(tmp_path, ci)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped in CI" not in r.stdout


def test_module_skipped_at_collection_counts(tmp_path: Path) -> None:
    (tmp_path / "test_mod.py").write_text("import pytest\npytest.importorskip('no_such_module_xyz')\n"
                                          "def test_a():\n    pass\n")
    (tmp_path / "test_ok.py").write_text("def test_b():\n    pass\n")
    r = pytest_in(tmp_path, "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "SKIPPED test_mod.py: " in r.stdout and "no_such_module_xyz" in r.stdout, r.stdout


def test_allow_list_matches_node_ids() -> None:
    allowed = {"tests/live/*::test_wrk*": "wrk is not packaged here"}
    assert ci_skips.allowed_reason("tests/live/test_forwarder.py::test_wrk_load", allowed) == "wrk is not packaged here"
    assert ci_skips.allowed_reason("tests/live/test_forwarder.py::test_curl", allowed) is None
    for pattern, why in ci_skips.ALLOWED.items():  # every entry explains itself
        assert pattern and len(why) > 10


def test_ci_detection() -> None:
    assert ci_skips.ci_enabled({"CI": "true"}) and ci_skips.ci_enabled({"CI": "1"})
    assert not ci_skips.ci_enabled({}) and not ci_skips.ci_enabled({"CI": "0"})
