"""natloop, the C reference of ``fastvs bench``, is compiled on first use into the user's
cache and reused after; without a compiler the bench says so in one line and leaves the
C rows out. A wrapper around the system compiler (``$CC``) counts the compilations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastvs.bench import refs
from fastvs.cli import main as cli_main

SYSTEM_CC = shutil.which(os.environ.get("CC") or "cc")
needs_cc = pytest.mark.skipif(SYSTEM_CC is None, reason="no C compiler (cc) on this machine")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty XDG cache; returns where natloop must land in it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "fastvs"


def counting_cc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$CC := a script that logs each call and runs the system compiler; returns the log."""
    log = tmp_path / "cc.log"
    cc = tmp_path / "counting-cc"
    cc.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{SYSTEM_CC}" "$@"\n')
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    return log


def compilations(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@needs_cc
def test_first_use_compiles_into_the_cache(cache: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    log = counting_cc(tmp_path, monkeypatch)
    told: list[str] = []
    exe = refs.build_natloop(log=told.append)
    assert exe.parent == cache == refs.cache_dir()
    assert exe.name.startswith("natloop-") and os.access(exe, os.X_OK)
    assert compilations(log) == 1 and "natloop.c" in log.read_text()
    assert len(told) == 1 and "first use" in told[0]
    assert [p.name for p in cache.iterdir()] == [exe.name]  # no temporary left behind
    # and what was built is the working reference: it rewrites every packet
    pcap = tmp_path / "est.pcap"
    refs.make_established_capture(pcap, 20, 200, seed=5)
    res = refs.run_natloop(pcap, "mem", 1, binary=exe)
    assert res["packets"] == 200 and res["rewritten"] == 200


@needs_cc
def test_later_uses_hit_the_cache(cache: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    log = counting_cc(tmp_path, monkeypatch)
    exe = refs.build_natloop()
    mtime = exe.stat().st_mtime_ns
    told: list[str] = []
    assert refs.build_natloop(log=told.append) == exe
    # another process (as a second `fastvs bench` would be) finds it too
    out = subprocess.run([sys.executable, "-c",
                          "from fastvs.bench import refs; print(refs.build_natloop())"],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    assert Path(out.stdout.strip()) == exe
    assert compilations(log) == 1 and told == [] and exe.stat().st_mtime_ns == mtime


@needs_cc
def test_an_edited_source_is_compiled_again(cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = counting_cc(tmp_path, monkeypatch)
    first = refs.build_natloop()
    edited = tmp_path / "natloop.c"
    edited.write_bytes(refs.NATLOOP_SRC.read_bytes() + b"\n/* edited */\n")
    monkeypatch.setattr(refs, "NATLOOP_SRC", edited)
    second = refs.build_natloop()
    assert second != first and second.parent == first.parent == cache
    assert compilations(log) == 2
    assert refs.build_natloop() == second and compilations(log) == 2


def test_cache_location_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert refs.cache_dir() == tmp_path / "xdg" / "fastvs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored (XDG spec)
    assert refs.cache_dir() == tmp_path / "home" / ".cache" / "fastvs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert refs.cache_dir() == tmp_path / "home" / ".cache" / "fastvs"


def test_no_compiler_is_one_clear_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    with pytest.raises(refs.NatloopUnavailable) as err:
        refs.build_natloop()
    msg = str(err.value)
    assert "\n" not in msg and "no C compiler" in msg and "/nonexistent/bin/cc" in msg
    assert not cache.exists()  # nothing created


def test_a_failing_compiler_is_one_line(cache: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cc = tmp_path / "broken-cc"
    cc.write_text('#!/bin/sh\necho "natloop.c: In function main:" >&2\n'
                  'echo "natloop.c:1:1: error: this compiler is broken" >&2\n'
                  'echo "   1 | #define" >&2\nexit 1\n')
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    with pytest.raises(refs.NatloopUnavailable) as err:
        refs.build_natloop()
    msg = str(err.value)
    assert "\n" not in msg and "cannot compile natloop.c" in msg
    assert msg.endswith("natloop.c:1:1: error: this compiler is broken")
    assert list(cache.iterdir()) == []  # no half-built binary left


@needs_cc
def test_an_unwritable_cache_is_one_line(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    # as a read-only cache directory would (the tests may run as root, who writes anyway)
    monkeypatch.setattr(refs.tempfile, "mkstemp", refuse)
    with pytest.raises(refs.NatloopUnavailable) as err:
        refs.build_natloop()
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(f"cannot write to {cache}: Permission denied")


def test_bench_without_compiler_skips_the_c_column(cache: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    doc_path = tmp_path / "b.json"
    rc = cli_main(["bench", "--flows", "40", "--packets", "300", "--rounds", "1",
                   "--json", str(doc_path)])
    assert rc == 0
    out = capsys.readouterr()
    mentions = [ln for ln in (out.out + out.err).splitlines() if "C reference" in ln or "compiler" in ln]
    assert mentions == ["note: C reference skipped: no C compiler ('/nonexistent/bin/cc' not "
                        "found; install one or set CC)"]
    doc = json.loads(doc_path.read_text())
    assert not [r for r in doc["results"] if r["case"].startswith("C natloop")]
    assert all("ratio_c" not in r for r in doc["results"])
    assert not [p for p in doc["paired"] if "C " in p["case"]]
    # the table's x C column is empty; the rest of the comparison is there
    head = next(ln for ln in out.out.splitlines() if ln.lstrip().startswith("flows"))
    col = head.index("x C")
    rows = [ln for ln in out.out.splitlines() if ln.lstrip().startswith("40 ")]
    assert rows and all(ln[col:col + 3].strip() in ("", "-") for ln in rows)
    assert "fastvs engine fwd" in out.out
    if "dpkt file" in {r["case"] for r in doc["results"]}:
        assert any("ratio_dpkt" in r for r in doc["results"])


@needs_cc
def test_bench_with_compiler_has_the_c_rows(cache: Path, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    doc_path = tmp_path / "b.json"
    rc = cli_main(["bench", "--flows", "40", "--packets", "300", "--rounds", "1",
                   "--json", str(doc_path)])
    assert rc == 0
    out = capsys.readouterr().out
    doc = json.loads(doc_path.read_text())
    cases = {r["case"] for r in doc["results"]}
    assert {"C natloop mem", "C natloop file"} <= cases
    assert not [n for n in doc["notes"] if n.startswith("C reference")]
    assert all(r["same_bytes_as_fastvs"] for r in doc["results"] if "same_bytes_as_fastvs" in r)
    assert "C natloop file output identical to fastvs's at 40 flows: yes" in out
    assert len(list(cache.glob("natloop-*"))) == 1
