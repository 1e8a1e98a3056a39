"""Stub of the compiled fastvs.sched.sh: Source hashing (ip_vs_sh.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
TAB_SIZE: Final[int]
