"""PacketBatch: many packets in one contiguous buffer, described by numpy arrays.

The engine works on a batch in place and never creates a Python object per packet.
A pcap chunk read from disk is already such a buffer; the reader only indexes the
record headers. ``linktype`` is per packet because a pcapng file may mix interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OFF_DTYPE = np.uint32
LEN_DTYPE = np.uint32
TS_DTYPE = np.int64  # nanoseconds since the epoch
LINK_DTYPE = np.uint16
IFACE_DTYPE = np.uint16
VERDICT_DTYPE = np.uint8


@dataclass
class PacketBatch:
    """``buf[off[i] : off[i] + caplen[i]]`` is packet ``i``'s captured bytes.

    ``wirelen[i]`` is its length on the wire (>= caplen when a snap length cut it),
    ``ts[i]`` its time in ns, ``linktype[i]`` its DLT, ``iface[i]`` its pcapng interface
    (0 for classic pcap), and ``verdict[i]`` what the engine did (fastvs.verdicts).
    """

    buf: np.ndarray
    off: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts: np.ndarray
    linktype: np.ndarray
    iface: np.ndarray
    verdict: np.ndarray = field(default=None)  # type: ignore[assignment,arg-type]  # filled in __post_init__

    def __post_init__(self) -> None:
        n = len(self.off)
        if self.verdict is None:
            self.verdict = np.zeros(n, dtype=VERDICT_DTYPE)
        for name in ("caplen", "wirelen", "ts", "linktype", "iface", "verdict"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PacketBatch.{name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.off)

    def packet(self, i: int) -> bytes:
        """Packet ``i``'s captured bytes (a copy; for tests and tools, not hot paths)."""
        o = int(self.off[i])
        return bytes(self.buf[o : o + int(self.caplen[i])])

    @classmethod
    def from_packets(
        cls,
        packets: list[bytes],
        ts_ns: list[int] | None = None,
        linktype: int = 1,
        wirelen: list[int] | None = None,
    ) -> PacketBatch:
        """Build a batch from a list of frames (tests, generators, small tools)."""
        n = len(packets)
        lens = np.fromiter((len(p) for p in packets), dtype=np.int64, count=n)
        off = np.zeros(n, dtype=np.int64)
        if n:
            np.cumsum(lens[:-1], out=off[1:])
        total = int(lens.sum()) if n else 0
        if total >= 2**32:
            raise ValueError("a batch buffer must stay under 4 GiB")
        buf = np.frombuffer(bytearray(b"".join(packets)), dtype=np.uint8) if n else np.zeros(0, np.uint8)
        return cls(
            buf=buf,
            off=off.astype(OFF_DTYPE),
            caplen=lens.astype(LEN_DTYPE),
            wirelen=(np.asarray(wirelen, dtype=LEN_DTYPE) if wirelen is not None else lens.astype(LEN_DTYPE)),
            ts=(np.asarray(ts_ns, dtype=TS_DTYPE) if ts_ns is not None else np.zeros(n, TS_DTYPE)),
            linktype=np.full(n, linktype, dtype=LINK_DTYPE),
            iface=np.zeros(n, dtype=IFACE_DTYPE),
        )
