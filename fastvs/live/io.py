"""The receive/transmit interface between a worker and its frames.

A worker's loop (fastvs/live/worker.py) is the same whatever carries the frames::

    n = io.receive(timeout_ms)              # a batch, PacketBatch-shaped, in io.buf/off/...
    engine.process(io.buf, io.off[:n], ...) # the data path rewrites it in place
    io.transmit(n)                          # L2 output stage (fastvs/live/_l2.pxd) + send

or, the same in C for as long as frames keep coming (``io.bind_engine(engine)`` once)::

    n = io.run(timeout_ms, budget_ns)       # receive, Engine.process, transmit, repeat

A backend is one module with a :class:`Backend` object (``BACKEND``) registered by
name in :data:`BACKENDS`: ``prepare`` opens what must exist before the workers fork
(AF_PACKET: every socket, joined to its fanout group in worker order), ``open`` turns
one worker's share into a :class:`FrameIO` in the worker, around the worker's
:class:`fastvs.live._l2.L2Stage`. The AF_PACKET backends (``ring-v2``, ``ring-v3``,
``mmsg``) are fastvs/live/afpacket.py over fastvs/live/_afpacket.pyx; an AF_XDP backend
would be ``afxdp.py`` over ``_afxdp.pyx``, cimporting the same L2 stage, and one line
here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from fastvs.live._l2 import L2Stage
    from fastvs.live.config import ForwardConfig
    from fastvs.live.iface import Iface

# backend name -> module holding its BACKEND object
BACKENDS: dict[str, str] = {
    "ring-v2": "fastvs.live.afpacket",
    "ring-v3": "fastvs.live.afpacket",
    "mmsg": "fastvs.live.afpacket",
    "xdp": "fastvs.live.afxdp",
}


class FrameIO(Protocol):
    """One worker's frames in and out on its interfaces (one or two sides)."""

    kind: str
    # the batch, shaped like fastvs.capture.batch.PacketBatch; valid until close()
    buf: Any
    off: npt.NDArray[np.uint32]
    caplen: npt.NDArray[np.uint32]
    wirelen: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.uint16]
    verdict: npt.NDArray[np.uint8]

    def receive(self, timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms`` for frames, take a batch; the number taken."""
        ...

    def transmit(self, n: int) -> None:
        """Send the forwarded frames among the first ``n`` (after the engine), through
        the L2 stage; frames not sent are released."""
        ...

    def release(self) -> None:
        """Release the last batch without sending anything."""
        ...

    def bind_engine(self, engine: Any) -> None:
        """The engine :meth:`run` hands batches to."""
        ...

    def run(self, timeout_ms: int, budget_ns: int) -> int:
        """``receive``, the bound engine's ``process`` and ``transmit``, batch after
        batch in C, until the input is idle for ``timeout_ms``, a watched descriptor is
        readable, the L2 stage wants a neighbour, or ``budget_ns`` has passed since the
        first batch; the frames handed to the engine."""
        ...

    def watch(self, fds: Iterable[int]) -> None:
        """Poll these descriptors too (ARP/ND sockets); see :attr:`aux_ready`."""
        ...

    @property
    def aux_ready(self) -> int:
        """Bit i: watched descriptor i was readable at the last receive."""
        ...

    def fds(self) -> list[int]:
        """The descriptors frames arrive on (for an outer poll loop)."""
        ...

    def counters(self) -> dict[str, int]:
        """I/O counters since opening ({name: count}, summed over workers)."""
        ...

    def update_vips(self, vips: set[str], rips: set[str] | None = None) -> None:
        """The rules changed (SIGHUP, ``fastvs ctl``): re-steer frames to workers if the
        backend steers; ``rips`` are the new rules' masqueraded real servers."""
        ...

    def close(self) -> None: ...


class Handle(Protocol):
    """What a backend opens before the workers fork, for one worker."""

    def close(self) -> None: ...


class Backend(Protocol):
    """An I/O backend: how the frames of each worker are opened."""

    def prepare(self, cfg: ForwardConfig, ifaces: Sequence[Iface], vips: set[str]) -> list[Handle]:
        """In the supervisor, before forking: one handle per worker (``cfg.workers``)."""
        ...

    def open(self, handle: Handle, cfg: ForwardConfig, ifaces: Sequence[Iface], l2: L2Stage) -> FrameIO:
        """In the worker: its FrameIO over ``handle``."""
        ...


def get_backend(kind: str) -> Backend:
    """The backend registered under ``kind`` (one of :data:`BACKENDS`)."""
    try:
        module = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"no I/O backend {kind!r} (have {', '.join(BACKENDS)})") from None
    backend: Backend = importlib.import_module(module).BACKEND
    return backend


__all__ = ["BACKENDS", "Backend", "FrameIO", "Handle", "get_backend"]
