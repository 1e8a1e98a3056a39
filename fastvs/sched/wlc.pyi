"""Stub of the compiled fastvs.sched.wlc: Weighted least-connection (ip_vs_wlc.c)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
