"""The compiled modules: built with setup.py's one directive set, and described truly by
their type stubs.

* No ``.pyx``/``.pxd`` overrides the build's directives (a ``# cython: boundscheck=False``
  header or a ``@cython.boundscheck(False)`` decorator wins over setup.py, so the
  FASTVS_DEBUG=1 build would not bounds-check that module).
* Every compiled module has a ``.pyi`` stub that mypy's stubtest finds true of the
  module as built (names, signatures, defaults). Without mypy the check skips, which
  CI does not allow (tests/ci_skips.py); in CI it fails outright.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import ci_skips
import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "fastvs"
ALLOWLIST = ROOT / ".ci" / "stubtest-allowlist"
CONFIG = ROOT / ".ci" / "stubtest.ini"

MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PKG.glob("**/*.pyx"))

# stubs known to disagree with their module, with the reason (none today)
PENDING: dict[str, str] = {}

# directives the build decides (setup.py); language_level=3 is setup.py's own value too
BUILD_DIRECTIVES = ("boundscheck", "wraparound", "initializedcheck", "cdivision", "nonecheck",
                    "overflowcheck", "linetrace", "profile")
HEADER = re.compile(r"^#\s*cython\s*:(.*)$", re.M)
DECORATOR = re.compile(r"\bcython\.(" + "|".join(BUILD_DIRECTIVES) + r")\s*\(")


def test_modules_found() -> None:
    assert "fastvs.capture._pcapio" in MODULES and "fastvs.sched.rr" in MODULES


# headers their owners are removing (issue 12)
PENDING_HEADERS: dict[str, str] = {}


def _sources() -> list[object]:
    paths = sorted(p.relative_to(ROOT).as_posix() for p in [*PKG.glob("**/*.pyx"), *PKG.glob("**/*.pxd")])
    return [pytest.param(p, marks=pytest.mark.xfail(reason=PENDING_HEADERS[p], strict=False))
            if p in PENDING_HEADERS else p for p in paths]


@pytest.mark.parametrize("path", _sources())
def test_no_directive_overrides(path: str) -> None:
    text = (ROOT / path).read_text()
    for m in HEADER.finditer(text):
        settings = [s.strip().replace(" ", "") for s in m.group(1).split(",") if s.strip()]
        assert settings == ["language_level=3"], (
            f"{path}: '# cython:{m.group(1)}' overrides setup.py's directive set; remove it")
    bad = DECORATOR.findall(text)
    assert not bad, f"{path}: cython.{bad[0]}(...) overrides setup.py's directive set"


@pytest.fixture(scope="module")
def stubtest_report() -> dict[str, list[str]]:
    """Run stubtest once over every compiled module; its error lines by module."""
    if importlib.util.find_spec("mypy") is None:
        if ci_skips.ci_enabled():
            pytest.fail("mypy is not installed: pip install -e '.[test]'")
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *MODULES, "--allowlist", str(ALLOWLIST),
         "--mypy-config-file", str(CONFIG), "--ignore-unused-allowlist"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    out = r.stdout + r.stderr
    if r.returncode != 0 and "error: " not in out:
        pytest.fail(f"stubtest did not run:\n{out}")
    found: dict[str, list[str]] = {m: [] for m in MODULES}
    for block in re.split(r"\n(?=error: )", out):
        m = re.match(r"error: ([\w.]+)", block)
        if not m:
            continue
        name = m.group(1)
        owner = max((mod for mod in MODULES if name == mod or name.startswith(mod + ".")), key=len, default=None)
        if owner is None:
            pytest.fail(f"stubtest error outside the compiled modules:\n{block}")
        found[owner].append(block.strip())
    return found


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.xfail(reason=PENDING[m], strict=False)) if m in PENDING else m
    for m in MODULES
])  # fmt: skip
def test_stub_matches_compiled_module(module: str, stubtest_report: dict[str, list[str]]) -> None:
    stub = ROOT.joinpath(*module.split(".")).with_suffix(".pyi")
    assert stub.exists(), f"{module} has no stub: write {stub.relative_to(ROOT)}"  # stubtest may not say
    errors = stubtest_report[module]
    assert not errors, f"stubtest on {module}:\n" + "\n\n".join(errors)
