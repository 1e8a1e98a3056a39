"""Stub of the compiled fastvs.sched.lc: Least-connection (ip_vs_lc.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
