"""The fuzz harnesses (fuzz/) in pytest: each harness' test-one-input function over its
seed corpus plus seeded random mutations, with no atheris needed, so CI runs them in
seconds. With atheris installed, each harness also gets a short real fuzzing run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "fuzz"
sys.path.insert(0, str(FUZZ))

MUTATIONS = {"engine": 2000, "pcap": 600, "rules": 3000}
ATHERIS_SECONDS = int(os.environ.get("FASTVS_ATHERIS_SECONDS", "10"))


def _harness(name: str) -> Callable[[bytes], None]:
    mod = importlib.import_module(f"fuzz_{name}")
    return mod.test_one_input  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import make_corpus

    root = tmp_path_factory.mktemp("corpus")
    make_corpus.engine_corpus(root / "engine")
    make_corpus.pcap_corpus(root / "pcap")
    make_corpus.rules_corpus(root / "rules")
    return root


def test_corpus_is_built_from_the_repository_captures() -> None:
    """The seeds come from the repository's own captures: every golden capture, every
    real-world one in pcaps/real and the demo (nothing from outside the repository)."""
    import make_corpus

    files = make_corpus.capture_files()
    assert all(REPO in p.parents for p in files)
    names = {p.relative_to(REPO).as_posix() for p in files}
    real = sorted((REPO / "pcaps" / "real").glob("*.pcap*"))
    assert len(real) == 39
    assert {p.relative_to(REPO).as_posix() for p in real} <= names
    assert "pcaps/demo/demo.pcap" in names
    assert {f"tests/golden/{c}.pcap" for c in ("g1-rr", "g5-mix", "x6-malformed")} <= names


def _seeds(corpus: Path, name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((corpus / name).iterdir())]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four libFuzzer-like mutations: bit flips, byte sets, interesting values,
    inserts, erases, copies, splices with another seed, truncation."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(b)
        if op == 0 and n:
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n >= 4:
            i = rng.randrange(n - 3)
            v = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000])
            b[i : i + 4] = v.to_bytes(4, rng.choice(["little", "big"]))
        elif op == 3:
            i = rng.randrange(n + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4 and n:
            i = rng.randrange(n)
            del b[i : i + rng.randint(1, 32)]
        elif op == 5 and n >= 8:
            i, j = rng.randrange(n), rng.randrange(n)
            k = rng.randint(1, min(64, n - i))
            b[j : j + k] = b[i : i + k]
        elif op == 6 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(b) + 1)
            b = b[:cut] + other[rng.randrange(len(other) + 1) :]
        elif op == 7 and n:
            del b[rng.randrange(n) :]
        elif op == 8 and n:
            i = rng.randrange(n)
            b[i] = (b[i] + rng.choice([-1, 1])) & 0xFF
    return bytes(b)


def _inputs(corpus: Path, name: str, seed: int) -> Iterator[bytes]:
    seeds = _seeds(corpus, name)
    yield from seeds
    rng = random.Random(seed)
    for _ in range(MUTATIONS[name]):
        yield mutate(rng, rng.choice(seeds), seeds)


@pytest.mark.parametrize("name", ["engine", "pcap", "rules"])
def test_harness_on_corpus_and_mutations(corpus: Path, name: str) -> None:
    fn = _harness(name)
    for k, data in enumerate(_inputs(corpus, name, seed=20240501)):
        try:
            fn(data)
        except Exception as e:  # name the input so it can be replayed
            crash = FUZZ / "crashes" / f"smoke-{name}-{k}"
            crash.parent.mkdir(exist_ok=True)
            crash.write_bytes(data)
            raise AssertionError(f"fuzz_{name} failed on input {k} (saved to {crash}): {e!r}") from e


def test_rules_harness_accepts_empty_and_garbage() -> None:
    fn = _harness("rules")
    for data in (b"", b"\xff\xfe", b"-A", b"-A -t", b"\x00" * 10, b"-a -t 1.2.3.4:80 -r x"):
        fn(data)


def test_engine_harness_decodes_anything() -> None:
    from _common import decode

    rng = random.Random(7)
    for _ in range(500):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        opts, frames = decode(data)
        assert len(frames) <= 48
        assert all(f.wirelen >= 0 for f in frames)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
@pytest.mark.parametrize("name", ["engine", "pcap", "rules"])
def test_atheris_short_run(corpus: Path, name: str, tmp_path: Path) -> None:
    work = tmp_path / "corpus"
    work.mkdir()
    for p in (corpus / name).iterdir():
        (work / p.name).write_bytes(p.read_bytes())
    # under ASan (tools/asan_test.sh) the quarantine alone passes libFuzzer's 2 GB limit
    rss = ["-rss_limit_mb=0"] if "libasan" in os.environ.get("LD_PRELOAD", "") else []
    r = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{name}.py"), str(work),
         f"-max_total_time={ATHERIS_SECONDS}", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
         "-seed=1",  # CI explores the same mutations each run; `make fuzz` runs free
         *rss],
        capture_output=True, text=True, timeout=ATHERIS_SECONDS + 120, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done" in r.stderr
