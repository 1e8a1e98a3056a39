"""The offline master: sync records in, sync datagrams out (``--sync-out SYNC.pcap``).

The engine decides *which* records a master sends (the kernel's rules are
``fastvs.sync.policy``; the engine runs the same logic in its per-packet loop and
emits one event per record) and hands them over in numpy arrays of
``SYNC_EVENT_DTYPE``. ``SyncMaster`` packs them into messages as the kernel's sync
buffer does (``MessageBuilder``: 1472 bytes, padding, v0/v1) and times them as its
thread does (``policy.Batcher``: when full, else 2 s after the first record - packet
time, so the output is deterministic), and writes them as frames of UDP datagrams to
224.0.0.81:8848 with TTL 1 (``frames.build_frame``).
"""

from __future__ import annotations

import os
import socket

import numpy as np

from fastvs.capture.batch import PacketBatch
from fastvs.capture.pcap import Writer
from fastvs.sync.frames import build_frame
from fastvs.sync.policy import Batcher
from fastvs.sync.proto import SYNC_GROUP, SYNC_PORT, MessageBuilder, SyncConn

__all__ = ["SYNC_EVENT_DTYPE", "SyncMaster", "events_to_records"]

# One record to send, as the engine emits it (host byte order; addresses as 16 bytes,
# IPv4 in the first 4). ``timeout_s`` is the connection's timeout in whole seconds
# (cp->timeout / HZ), ``ts_ns`` the time of the packet that caused it.
SYNC_EVENT_DTYPE = np.dtype(
    [
        ("ts_ns", "<i8"),
        ("af", "u1"),
        ("protocol", "u1"),
        ("state", "<u2"),
        ("flags", "<u4"),
        ("cport", "<u2"),
        ("vport", "<u2"),
        ("dport", "<u2"),
        ("fwmark", "<u4"),
        ("timeout_s", "<u4"),
        ("caddr", "V16"),
        ("vaddr", "V16"),
        ("daddr", "V16"),
    ]
)


def _ntop(af: int, raw: bytes) -> str:
    if af == 6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def events_to_records(events: np.ndarray) -> list[SyncConn]:
    """SyncConn objects of an event array (rows in order). Columns are read once as
    Python lists (a structured array read row by row costs ~20x more)."""
    if len(events) == 0:
        return []
    cols = {name: events[name].tolist() for name in SYNC_EVENT_DTYPE.names or ()}
    out = []
    for i in range(len(events)):
        af = 6 if cols["af"][i] == 6 else 4
        out.append(
            SyncConn(
                protocol=cols["protocol"][i],
                caddr=_ntop(af, cols["caddr"][i]),
                cport=cols["cport"][i],
                vaddr=_ntop(af, cols["vaddr"][i]),
                vport=cols["vport"][i],
                daddr=_ntop(af, cols["daddr"][i]),
                dport=cols["dport"][i],
                flags=cols["flags"][i] & ~0x40,  # never IP_VS_CONN_F_HASHED
                state=cols["state"][i],
                fwmark=cols["fwmark"][i],
                timeout=cols["timeout_s"][i],
                af=af,
            )
        )
    return out


class SyncMaster:
    """Collects a master's records and turns them into timed messages."""

    def __init__(
        self,
        syncid: int = 0,
        *,
        version: int = 1,
        maxlen: int = 1472,
        src: str = "0.0.0.0",
        group: str = SYNC_GROUP,
        port: int = SYNC_PORT,
        ttl: int = 1,
    ) -> None:
        if not 0 <= syncid <= 255:
            raise ValueError("syncid must be 0..255")
        self.batcher = Batcher(MessageBuilder(syncid, maxlen, version))
        self.version = version
        self.src, self.group, self.port, self.ttl = src, group, port, ttl
        self.records = 0

    def add(self, record: SyncConn, ts_ns: int) -> None:
        self.batcher.add(record, ts_ns / 1e9, self.version)
        self.records += 1

    def feed(self, events: np.ndarray) -> None:
        """Add every event of an array of SYNC_EVENT_DTYPE, in order."""
        for rec, ts in zip(events_to_records(events), events["ts_ns"].tolist(), strict=True):
            self.add(rec, int(ts))

    def close(self) -> list[tuple[float, bytes]]:
        """End of input: the last partial message goes 2 s after its first record.
        Returns every message with its send time (seconds)."""
        self.batcher.close()
        return self.batcher.out

    @property
    def messages(self) -> list[tuple[float, bytes]]:
        return self.batcher.out

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write the messages (closing first) as an Ethernet pcap; returns how many."""
        msgs = self.close()
        frames = [
            build_frame(m, self.src, group=self.group, port=self.port, ttl=self.ttl, ident=i + 1)
            for i, (_, m) in enumerate(msgs)
        ]
        ts = [int(round(t * 1e9)) for t, _ in msgs]
        batch = PacketBatch.from_packets(frames, ts_ns=ts)
        with Writer(path, linktype=1, nanosecond=True) as w:
            if frames:
                w.write(batch)
        return len(frames)
