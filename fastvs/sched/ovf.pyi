"""Stub of the compiled fastvs.sched.ovf: Overflow (ip_vs_ovf.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
