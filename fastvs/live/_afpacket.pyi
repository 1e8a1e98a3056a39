"""Stub for the compiled AF_PACKET batch I/O (fastvs/live/_afpacket.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

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

def monotonic_ns() -> int: ...
def complete_l4_checksum(frame: Any) -> bool: ...
def attach_filter(fd: int, program: bytes, fanout: bool = False) -> None: ...
def ring_geometry(block_size: int, block_nr: int) -> int: ...
def setup_rx_ring(
    fd: int, block_size: int, block_nr: int, tov_ms: int = 1, version: int = 3, frame_size: int = 2048
) -> None: ...
def kernel_drops(fd: int) -> tuple[int, int]: ...

class Pump:
    buf: Any  # numpy array (mmsg) or a memoryview over the mapped rings (ring)
    io: str
    off: npt.NDArray[np.uint32]
    caplen: npt.NDArray[np.uint32]
    wirelen: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.uint16]
    verdict: npt.NDArray[np.uint8]
    def __init__(
        self,
        client_fd: int,
        server_fd: int,
        client_mac: bytes | str,
        server_mac: bytes | str,
        *,
        batch: int = 64,
        slot: int = 2048,
        max_frame: int = 1518,
        neigh_capacity: int = 65536,
        seed: int | None = None,
        aux_fds: tuple[int, ...] | list[int] = (),
        io: str = "mmsg",
        ring_block_size: int = 65536,
        ring_blocks: int = 64,
        ring_frame_size: int = 2048,
        spin_us: int = 0,
    ) -> None: ...
    def step(self, engine: Any, timeout_ms: int = 100) -> int: ...
    @property
    def aux_ready(self) -> int: ...
    def counters(self) -> dict[str, int]: ...
    def take_wanted(self) -> list[str]: ...
    def set_gateway(self, ip: str | None) -> None: ...
    def neigh_set(self, ip: str, mac: bytes | str, static: bool = False) -> bool: ...
    def neigh_get(self, ip: str) -> bytes | None: ...
    def neigh_del(self, ip: str) -> bool: ...
    def neigh_entries(self) -> list[tuple[str, str, bool, int]]: ...
    @property
    def neigh_capacity(self) -> int: ...

def blast(fd: int, frames: Any, frame_len: int, seconds: float, burst: int = 64) -> int: ...
