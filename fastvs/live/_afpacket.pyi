"""Stub for the compiled AF_PACKET frame I/O (fastvs/live/_afpacket.pyx)."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from fastvs.datapath._engine import Engine
from fastvs.live._l2 import L2Stage

SOL_PACKET: int
OPT_AUXDATA: int
OPT_FANOUT: int
OPT_FANOUT_DATA: int
OPT_QDISC_BYPASS: int
OPT_IGNORE_OUTGOING: int
OPT_ADD_MEMBERSHIP: int
MR_MULTICAST: int
FANOUT_CBPF: int
IO_MODES: tuple[str, ...]
COUNTER_NAMES: tuple[str, ...]

def attach_filter(fd: int, program: bytes, fanout: bool = False) -> None: ...
def ring_geometry(block_size: int, block_nr: int) -> int: ...
def setup_rx_ring(
    fd: int, block_size: int, block_nr: int, tov_ms: int = 1, version: int = 3, frame_size: int = 2048
) -> None: ...
def kernel_drops(fd: int) -> tuple[int, int]: ...

@disjoint_base
class Pump:
    buf: Any  # numpy array (mmsg) or a memoryview over the mapped rings (ring)
    io: str
    l2: L2Stage
    off: npt.NDArray[np.uint32]
    caplen: npt.NDArray[np.uint32]
    wirelen: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.uint16]
    verdict: npt.NDArray[np.uint8]
    def __new__(
        cls,
        client_fd: int,
        server_fd: int,
        l2: L2Stage,
        *,
        batch: int = 64,
        slot: int = 2048,
        max_frame: int = 1518,
        io: str = "mmsg",
        ring_block_size: int = 65536,
        ring_blocks: int = 64,
        ring_frame_size: int = 2048,
        spin_us: int = 0,
    ) -> Pump: ...
    def close(self) -> None: ...
    def watch(self, fds: Iterable[int]) -> None: ...
    def fds(self) -> list[int]: ...
    def receive(self, timeout_ms: int = 100) -> int: ...
    def transmit(self, n: int) -> None: ...
    def bind_engine(self, engine: Engine) -> None: ...
    def run(self, timeout_ms: int, budget_ns: int) -> int: ...
    def release(self) -> None: ...
    @property
    def aux_ready(self) -> int: ...
    def counters(self) -> dict[str, int]: ...

def blast(fd: int, frames: Any, frame_len: int, seconds: float, burst: int = 64) -> int: ...
