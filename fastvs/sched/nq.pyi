"""Stub of the compiled fastvs.sched.nq: Never queue (ip_vs_nq.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
