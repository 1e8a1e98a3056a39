"""Stub of the compiled fastvs.sched.twos: Power of two choices (ip_vs_twos.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
TWOS_SEED: Final[int]
