"""Stub of the compiled fastvs.sched.rr: Round-robin (ip_vs_rr.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
