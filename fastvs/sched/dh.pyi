"""Stub of the compiled fastvs.sched.dh: Destination hashing (ip_vs_dh.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
TAB_SIZE: Final[int]
