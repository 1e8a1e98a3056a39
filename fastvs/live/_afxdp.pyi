"""Stub for the compiled AF_XDP frame I/O (fastvs/live/_afxdp.pyx)."""

import mmap
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from typing_extensions import Self, disjoint_base

from fastvs.datapath._engine import Engine
from fastvs.live._l2 import L2Stage
from fastvs.live.xdp._xsk import XskSocket

COUNTER_NAMES: tuple[str, ...]

def handoff_size(workers: int, slots: int) -> int: ...
def frame_owner(frame: bytes | bytearray, vips: Iterable[bytes], workers: int) -> int: ...

@disjoint_base
class XdpPump:
    buf: memoryview | None
    off: npt.NDArray[np.uint32]
    caplen: npt.NDArray[np.uint32]
    wirelen: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.uint16]
    verdict: npt.NDArray[np.uint8]
    l2: L2Stage
    client: XskSocket
    server: XskSocket
    def __new__(
        cls,
        client: XskSocket,
        server: XskSocket,
        l2: L2Stage,
        *,
        batch: int = 256,
        max_frame: int = 1518,
        spin_us: int = 0,
    ) -> Self: ...
    def close(self) -> None: ...
    def handoff(self, area: mmap.mmap | bytearray, workers: int, worker: int, efds: Sequence[int],
                slots: int) -> None: ...
    def set_vips(self, vips: Iterable[bytes]) -> None: ...
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
