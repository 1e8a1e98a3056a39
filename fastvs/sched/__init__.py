"""Schedulers, one module each, found by name (the kernel's ip_vs_sched.c registry).

Each compiled module ``fastvs/sched/NAME.pyx`` exports ``NAME`` and ``OPS`` (a capsule
holding its SchedOps). ``NAMES`` is the one list of scheduler names: the rules parser
accepts exactly these, and adding a scheduler is one file and one entry here.
Importing this package loads no compiled module; :func:`get` loads them on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# ipvsadm's order (its man page lists them so), then fastvs's own
NAMES: tuple[str, ...] = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
    "twos",
)  # fmt: skip

_registry: dict[str, Any] = {}


def _load() -> dict[str, Any]:
    if not _registry:
        for mod in NAMES:
            m = import_module(f"fastvs.sched.{mod}")
            if m.NAME != mod:
                raise RuntimeError(f"fastvs.sched.{mod} registers itself as {m.NAME!r}")
            _registry[m.NAME] = m.OPS
    return _registry


def available() -> list[str]:
    """Names of the schedulers this build provides."""
    return sorted(_load())


def get(name: str) -> Any:
    """The scheduler's ops capsule; KeyError for an unknown name."""
    reg = _load()
    if name not in reg:
        raise KeyError(name)
    return reg[name]
