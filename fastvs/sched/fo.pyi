"""Stub of the compiled fastvs.sched.fo: Weighted fail-over (ip_vs_fo.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
