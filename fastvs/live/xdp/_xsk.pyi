"""Stub for the compiled AF_XDP sockets (fastvs/live/xdp/_xsk.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

COUNTER_NAMES: tuple[str, ...]
MODES: tuple[str, ...]

def xdp_available() -> str | None: ...
def reflect(buf: Any, off: npt.NDArray[np.uint32], length: npt.NDArray[np.uint32], n: int) -> None: ...

@disjoint_base
class Umem:
    buf: memoryview
    mode: str
    need_wakeup: bool
    frame_size: int
    nframes: int
    def __new__(cls, nframes: int = 8192, frame_size: int = 2048, headroom: int = 0) -> Umem: ...
    @property
    def free_frames(self) -> int: ...

@disjoint_base
class XskSocket:
    umem: Umem
    ifindex: int
    queue: int
    mode: str
    batch: int
    off: npt.NDArray[np.uint32]
    caplen: npt.NDArray[np.uint32]
    wirelen: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.uint16]
    verdict: npt.NDArray[np.uint8]
    def __new__(
        cls,
        umem: Umem,
        ifindex: int,
        queue: int = 0,
        *,
        rx_size: int = 2048,
        tx_size: int = 2048,
        fill_size: int = 2048,
        comp_size: int = 2048,
        batch: int = 64,
        mode: str = "copy",
        need_wakeup: bool = True,
    ) -> XskSocket: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...
    def poll(self, timeout_ms: int = 100) -> bool: ...
    def receive(self) -> int: ...
    def transmit(self, off: npt.NDArray[np.uint32], length: npt.NDArray[np.uint32], n: int = -1) -> int: ...
    def recycle(self, off: npt.NDArray[np.uint32], n: int = -1) -> None: ...
    def refill(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def zerocopy_active(self) -> bool: ...

def set_macs(buf: Any, off: npt.NDArray[np.uint32], n: int, dst: bytes, src: bytes) -> None: ...
def run_reflect(
    s: XskSocket, seconds: float, idle_poll_ms: int = 10, dst_mac: bytes | None = None, src_mac: bytes | None = None
) -> tuple[int, int, float]: ...
