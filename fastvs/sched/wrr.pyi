"""Stub of the compiled fastvs.sched.wrr: Weighted round-robin (ip_vs_wrr.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
