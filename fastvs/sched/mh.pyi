"""Stub of the compiled fastvs.sched.mh: Maglev hashing (ip_vs_mh.c; Eisenbud et al., NSDI 2016, section 3.4)."""

from typing import Final

from typing_extensions import CapsuleType

NAME: Final[str]
OPS: Final[CapsuleType]  # its SchedOps, for fastvs.sched.get
TAB_SIZE: Final[int]

def siphash(data: bytes, k0: int, k1: int, c: int = 2, d: int = 4) -> int: ...
def hsiphash_u32(v: int, k0: int, k1: int) -> int: ...
