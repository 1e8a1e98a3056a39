"""The scheduler registry: one list of names (fastvs.sched.NAMES), one module per name."""

from __future__ import annotations

from pathlib import Path

import fastvs.sched as S
from fastvs.control import rules

SCHED_DIR = Path(S.__file__).parent


def test_names_are_the_modules() -> None:
    modules = {p.stem for p in SCHED_DIR.glob("*.pyx") if not p.stem.startswith("_")}
    assert set(S.NAMES) == modules
    assert len(set(S.NAMES)) == len(S.NAMES)


def test_every_name_loads_and_registers_itself() -> None:
    assert S.available() == sorted(S.NAMES)
    for name in S.NAMES:
        assert S.get(name) is not None


def test_rules_parser_accepts_exactly_the_registry() -> None:
    assert rules.KNOWN_SCHEDULERS is S.NAMES
    text = "".join(f"-A -t 10.0.0.1:{i + 1} -s {s}\n" for i, s in enumerate(S.NAMES))
    assert [s.scheduler for s in rules.parse_rules(text).services] == list(S.NAMES)
