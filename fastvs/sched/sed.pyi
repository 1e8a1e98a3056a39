"""Stub of the compiled fastvs.sched.sed: Shortest expected delay (ip_vs_sed.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
