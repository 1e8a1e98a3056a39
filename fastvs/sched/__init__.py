"""Schedulers, one module each, found by name (the kernel's ip_vs_sched.c registry).

Each compiled module exports ``NAME`` and ``OPS`` (a capsule holding its SchedOps);
adding a scheduler is one file and one entry in ``_MODULES``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_MODULES = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "sh", "dh", "mh", "lblc", "lblcr")

_registry: dict[str, Any] = {}


def _load() -> dict[str, Any]:
    if not _registry:
        for mod in _MODULES:
            m = import_module(f"fastvs.sched.{mod}")
            if m.NAME in _registry:
                raise RuntimeError(f"scheduler {m.NAME!r} registered twice")
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
