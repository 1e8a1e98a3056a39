"""Capture files <-> PacketBatch: classic pcap (µs/ns, both byte orders) and pcapng.

``open_capture(path)`` returns a ``Reader`` that yields one ``PacketBatch`` per chunk of
the file: each chunk is read with one ``readinto`` into a fresh numpy buffer (the engine
rewrites batches in place, so each batch owns its bytes), the record headers are indexed
by one nogil pass (``fastvs.capture._pcapio``), and a record cut by the chunk boundary is carried
into the next chunk. ``Writer`` serialises the packets a batch kept (verdict < 64) in one
nogil pass and one ``write``; it writes ``path + ".tmp"`` and renames it on ``close()``,
so a failed run never leaves a truncated file that looks complete.

Only rare pcapng blocks (section and interface headers) are parsed in Python.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Literal

import numpy as np

from fastvs.capture import _pcapio
from fastvs.capture.batch import (
    IFACE_DTYPE,
    LEN_DTYPE,
    LINK_DTYPE,
    OFF_DTYPE,
    TS_DTYPE,
    PacketBatch,
)
from fastvs.errors import CaptureError, OptionError

DEFAULT_CHUNK = 64 << 20  # bytes read per batch
MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN: larger records are corrupt
MAX_BLOCK = 64 << 20  # a pcapng block longer than this is taken as corrupt
KEEP_BELOW = 64  # fastvs.verdicts.DROP_BASE: verdicts below it are written

PCAP_MAGIC_US = 0xA1B2C3D4  # classic pcap, microsecond timestamps
PCAP_MAGIC_NS = 0xA1B23C4D  # classic pcap, nanosecond timestamps
PCAPNG_SHB = 0x0A0D0D0A  # pcapng Section Header Block type (byte-order neutral)
PCAPNG_BOM = 0x1A2B3C4D  # pcapng byte-order magic
PCAPNG_IDB = 1  # Interface Description Block
PCAPNG_EPB = 6  # Enhanced Packet Block
PCAPNG_SPB = 3  # Simple Packet Block
OPT_ENDOFOPT = 0
OPT_SHB_USERAPPL = 4
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

PCAP_HDR_LEN = 24
PCAP_REC_LEN = 16

Format = Literal["pcap", "pcapng"]
ByteOrder = Literal["little", "big"]


@dataclass
class Interface:
    """One capture interface: a pcapng IDB, or the classic pcap global header."""

    linktype: int
    snaplen: int = 0
    tsresol: int = 6  # raw if_tsresol: 10**-v s, or 2**-(v & 0x7F) s when bit 7 is set
    tsoffset: int = 0  # if_tsoffset, seconds added to every timestamp
    name: str | None = None
    section: int = 0  # pcapng section the interface was defined in

    @property
    def finer_than_us(self) -> bool:
        if self.tsresol & 0x80:
            return (self.tsresol & 0x7F) > 19  # 2**-20 s < 1 µs
        return self.tsresol > 6


def _ts_conversion(tsresol: int) -> tuple[int, int, int]:
    """(mul, div, shift) turning timestamp units into ns, as the nogil loop applies them."""
    if tsresol & 0x80:
        v = tsresol & 0x7F
        if v > 63:
            raise ValueError(f"if_tsresol 2**-{v} is out of range")
        return 1, 1, v
    if tsresol <= 9:
        return 10 ** (9 - tsresol), 1, -1
    if tsresol - 9 <= 18:
        return 1, 10 ** (tsresol - 9), -1
    raise ValueError(f"if_tsresol 10**-{tsresol} is out of range")


def _caplen_limit(snaplen: int, max_caplen: int | None) -> int:
    if max_caplen is not None:
        return max_caplen
    return snaplen if 0 < snaplen <= MAX_CAPLEN else MAX_CAPLEN


class _Stop(Exception):
    """Internal: a bad record or block; message already names the file and place.

    ``rows`` is how many good records the failing index pass had already stored: they
    are yielded before the error (or, with ``keep_going``, before the clean stop).
    """

    rows = 0


class Reader:
    """Iterate a capture file as ``PacketBatch`` chunks (use ``open_capture``).

    Attributes: ``path``, ``format`` ("pcap"/"pcapng"), ``byteorder`` ("little"/"big";
    pcapng: the first section's), ``nanosecond``, ``snaplen``, ``linktypes`` and
    ``interfaces`` (one per interface; a pcapng file may define more as it goes, and
    sections' interfaces are numbered one after another), ``packets`` (records read so
    far), ``zero_length_records``, ``bad_records`` (only with ``keep_going``).

    A truncated final record, a captured length above the snap length (or
    ``max_caplen``) and a malformed pcapng block raise ``CaptureError``; with
    ``keep_going=True`` they are counted in ``bad_records`` and reading stops cleanly
    after the last good record.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        chunk_bytes: int = DEFAULT_CHUNK,
        *,
        keep_going: bool = False,
        max_caplen: int | None = None,
    ) -> None:
        if chunk_bytes < 1:
            raise OptionError("chunk_bytes", f"must be at least 1, not {chunk_bytes}")
        self.path = os.fspath(path)
        self.chunk_bytes = int(chunk_bytes)
        self.keep_going = keep_going
        self.max_caplen = max_caplen
        self.packets = 0
        self.zero_length_records = 0
        self.bad_records = 0
        self.interfaces: list[Interface] = []
        self.sections = 0
        self.format: Format = "pcap"
        self.byteorder: ByteOrder = "little"
        # classic pcap global header fields, kept so a writer can reproduce the header
        self.version = (2, 4)
        self.thiszone = 0
        self.sigfigs = 0
        self.linktype_field = 0
        self._nanosecond = False
        self._big = False
        self._buf = np.empty(0, np.uint8)
        self._pos = 0  # next unindexed byte in _buf
        self._end = 0  # bytes of _buf filled
        self._foff = 0  # file offset of _buf[0]
        self._eof = False
        self._done = False
        self._error: CaptureError | None = None
        self._pending: PacketBatch | None = None
        self._rec_bytes = 80.0  # running mean record size, sizes the index arrays
        # pcapng section state
        self._sec_base = 0
        self._sec_count = 0
        self._if_tables: tuple[np.ndarray, ...] = ()
        self._first_big = False
        self._shb_need = 12
        self._limit = MAX_CAPLEN
        try:
            self._f: BinaryIO = open(self.path, "rb", buffering=0)  # noqa: SIM115
        except OSError as e:
            raise CaptureError(f"{self.path}: cannot open: {e.strerror or e}") from None
        try:
            st = os.fstat(self._f.fileno())
            self._fsize: int | None = st.st_size if os.path.isfile(self.path) else None
            self._open()
        except BaseException:
            self._f.close()
            raise

    # -- header ---------------------------------------------------------------------------

    def _open(self) -> None:
        if self._fsize == 0:
            raise CaptureError(f"{self.path}: empty file (0 bytes), not a capture")
        self._refill(PCAP_HDR_LEN)
        if self._end == 0:
            raise CaptureError(f"{self.path}: empty file (0 bytes), not a capture")
        head = bytes(self._buf[: min(self._end, PCAP_HDR_LEN)])
        if len(head) < 4:
            raise CaptureError(
                f"{self.path}: only {len(head)} bytes, too short for a capture header"
            )
        (le_magic,) = struct.unpack("<I", head[:4])
        (be_magic,) = struct.unpack(">I", head[:4])
        if le_magic == PCAPNG_SHB:
            self.format = "pcapng"
            # the first batch is read now, so the interfaces before it are known at once
            self._pending = self._next_batch()
            if self.sections == 0 and self._error is not None:
                err, self._error = self._error, None
                raise err
            if self.interfaces:
                self.byteorder = "big" if self._first_big else "little"
            return
        if le_magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self._big = False
            self._nanosecond = le_magic == PCAP_MAGIC_NS
        elif be_magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self._big = True
            self._nanosecond = be_magic == PCAP_MAGIC_NS
        else:
            raise CaptureError(
                f"{self.path}: not a pcap or pcapng file (magic 0x{be_magic:08x} at byte offset 0)"
            )
        if len(head) < PCAP_HDR_LEN:
            raise CaptureError(
                f"{self.path}: truncated pcap global header ({len(head)} of {PCAP_HDR_LEN} bytes)"
            )
        self.byteorder = "big" if self._big else "little"
        e = ">" if self._big else "<"
        vmaj, vmin, self.thiszone, self.sigfigs, snaplen, self.linktype_field = struct.unpack(
            e + "HHiIII", head[4:24]
        )
        self.version = (vmaj, vmin)
        self.interfaces.append(
            Interface(
                linktype=self.linktype_field & 0xFFFF,
                snaplen=snaplen,
                tsresol=9 if self._nanosecond else 6,
            )
        )
        self._limit = _caplen_limit(snaplen, self.max_caplen)
        self._pos = PCAP_HDR_LEN

    @property
    def nanosecond(self) -> bool:
        """Classic pcap: nanosecond magic. pcapng: an interface resolves below 1 µs."""
        if self.format == "pcap":
            return self._nanosecond
        return any(i.finer_than_us for i in self.interfaces)

    @property
    def snaplen(self) -> int:
        """The global header's snap length (pcapng: the first interface's; 0 = none)."""
        return self.interfaces[0].snaplen if self.interfaces else 0

    @property
    def linktypes(self) -> list[int]:
        return [i.linktype for i in self.interfaces]

    # -- chunks ---------------------------------------------------------------------------

    def _refill(self, need: int) -> None:
        """Start a fresh buffer: the unindexed tail of the old one, then one chunk of file."""
        carry = self._end - self._pos
        size = max(self.chunk_bytes, need, carry)
        if self._fsize is not None:
            # never allocate past the end of a regular file (a bogus length stays cheap)
            left = self._fsize - (self._foff + self._end)
            size = max(carry, min(size, carry + max(left, 0)))
        buf = np.empty(size, np.uint8)
        buf[:carry] = self._buf[self._pos : self._end]
        self._foff += self._pos
        view = memoryview(buf)
        got = carry
        while got < size:
            try:
                k = self._f.readinto(view[got:])
            except OSError as e:
                raise CaptureError(
                    f"{self.path}: read failed at byte offset {self._foff + got}: {e}"
                ) from None
            if not k:
                self._eof = True
                break
            got += k
        if got == carry and size == carry:
            self._eof = True
        self._buf, self._pos, self._end = buf, 0, got

    def _alloc(self, cap: int, pcapng: bool) -> list[np.ndarray]:
        arrays = [
            np.empty(cap, OFF_DTYPE),
            np.empty(cap, LEN_DTYPE),
            np.empty(cap, LEN_DTYPE),
            np.empty(cap, TS_DTYPE),
        ]
        if pcapng:
            arrays += [np.empty(cap, LINK_DTYPE), np.empty(cap, IFACE_DTYPE)]
        return arrays

    @staticmethod
    def _grow(arrays: list[np.ndarray], n: int) -> list[np.ndarray]:
        out = []
        for a in arrays:
            b = np.empty(max(2 * len(a), 16), a.dtype)
            b[:n] = a[:n]
            out.append(b)
        return out

    def _fail(self, msg: str) -> None:
        if self.keep_going:
            self.bad_records += 1
            self._done = True
        else:
            self._error = CaptureError(msg)

    def _index(self) -> tuple[list[np.ndarray], int, int]:
        """Index ``_buf[_pos:_end]``; returns (arrays, rows, bytes the next record needs)."""
        pcapng = self.format == "pcapng"
        cap = int((self._end - self._pos) / self._rec_bytes * 1.25) + 16
        arrays = self._alloc(cap, pcapng)
        n = 0
        need = 0
        pos0 = self._pos
        try:
            if pcapng:
                n, need = self._index_pcapng(arrays)
            else:
                # ``n`` is updated before any raise, so records before a bad one are kept
                while True:
                    n, stop, st, need, aux = _pcapio.index_pcap(
                        self._buf, self._pos, self._end, self._big, self._nanosecond,
                        self._limit, *arrays, n,
                    )  # fmt: skip
                    self._pos = stop
                    if st == _pcapio.ST_FULL:
                        arrays = self._grow(arrays, n)
                        continue
                    if st == _pcapio.ST_ERR_CAPLEN:
                        raise _Stop(
                            f"{self.path}: record {self.packets + n + 1} at byte offset "
                            f"{self._foff + stop}: captured length {aux} exceeds the snap "
                            f"length limit {self._limit}"
                        )
                    break
        except _Stop as e:
            if pcapng:
                n = e.rows
            self._fail(str(e))
        if n:
            self._rec_bytes = max((self._pos - pos0) / n, 16.0)
        return arrays, n, need

    def _index_pcapng(self, arrays: list[np.ndarray]) -> tuple[int, int]:
        """Index pcapng blocks into ``arrays`` (grown in place); returns (rows, need).

        A bad block raises ``_Stop`` with ``rows`` set to the records stored before it.
        """
        n = 0
        try:
            while True:
                t = self._if_tables or self._tables()
                n, stop, st, need, aux = _pcapio.index_pcapng(
                    self._buf, self._pos, self._end, self._big, *t, self._sec_base,
                    self._sec_count, MAX_BLOCK, *arrays[:4], arrays[4], arrays[5], n,
                )  # fmt: skip
                self._pos = stop
                where = f"{self.path}: block at byte offset {self._foff + stop}"
                if st == _pcapio.ST_FULL:
                    arrays[:] = self._grow(arrays, n)
                elif st == _pcapio.ST_SHB:
                    blen = self._section_header()
                    if blen is None:
                        return n, self._shb_need
                    self._pos += blen
                elif st == _pcapio.ST_IDB:
                    self._interface_block()
                elif st == _pcapio.ST_NEED_MORE:
                    return n, need
                else:
                    raise _Stop(f"{where}: " + self._pcapng_error(st, aux, self.packets + n + 1))
        except _Stop as e:
            e.rows = n
            raise

    def _pcapng_error(self, st: int, aux: int, packet: int) -> str:
        """What a pcapng index error code means, for the message naming the block."""
        if st == _pcapio.ST_ERR_BLOCKLEN:
            return f"bad block length {aux} (must be >= 12 and a multiple of 4)"
        if st == _pcapio.ST_ERR_TOOBIG:
            return f"block length {aux} is implausibly large (limit {MAX_BLOCK})"
        if st == _pcapio.ST_ERR_TRAILER:
            return f"trailing block length {aux} differs from the leading one"
        if st == _pcapio.ST_ERR_IFACE:
            return (f"packet {packet} names interface {aux}, but section {self.sections} "
                    f"defines {self._sec_count} interface(s)")
        if st == _pcapio.ST_ERR_EPBLEN:
            return f"packet {packet}: captured length {aux} does not fit in its block"
        if st == _pcapio.ST_ERR_CAPLEN:
            return f"packet {packet}: captured length {aux} exceeds the interface's snap length limit"
        raise AssertionError(st)  # pragma: no cover - the loop returns no other code

    def _tables(self) -> tuple[np.ndarray, ...]:
        """Per-interface arrays the nogil loop reads (rebuilt only when an IDB arrives)."""
        conv = [_ts_conversion(i.tsresol) for i in self.interfaces]
        self._if_tables = (
            np.array([i.linktype for i in self.interfaces], np.uint16),
            np.array(
                [_caplen_limit(i.snaplen, self.max_caplen) for i in self.interfaces], np.uint32
            ),
            np.array([c[0] for c in conv], np.int64),
            np.array([c[1] for c in conv], np.int64),
            np.array([c[2] for c in conv], np.int32),
            np.array([i.tsoffset * 1_000_000_000 for i in self.interfaces], np.int64),
        )
        return self._if_tables

    def _section_header(self) -> int | None:
        """Parse the SHB at ``_pos``; returns its length, or None when it is incomplete."""
        where = f"{self.path}: section header at byte offset {self._foff + self._pos}"
        avail = self._end - self._pos
        if avail < 12:
            self._shb_need = 12
            return None
        b = self._buf
        p = self._pos
        bom = bytes(b[p + 8 : p + 12])
        if bom == struct.pack("<I", PCAPNG_BOM):
            big = False
        elif bom == struct.pack(">I", PCAPNG_BOM):
            big = True
        else:
            raise _Stop(f"{where}: bad byte-order magic 0x{bom.hex()}")
        e = ">" if big else "<"
        (blen,) = struct.unpack(e + "I", bytes(b[p + 4 : p + 8]))
        if blen < 28 or blen % 4:
            raise _Stop(f"{where}: bad block length {blen} (must be >= 28 and a multiple of 4)")
        if blen > MAX_BLOCK:
            raise _Stop(f"{where}: block length {blen} is implausibly large (limit {MAX_BLOCK})")
        if avail < blen:
            self._shb_need = blen
            return None
        block = bytes(b[p : p + blen])
        (trailer,) = struct.unpack(e + "I", block[-4:])
        if trailer != blen:
            raise _Stop(f"{where}: trailing block length {trailer} differs from the leading one")
        major, minor = struct.unpack(e + "HH", block[12:16])
        if major != 1:
            raise _Stop(f"{where}: unsupported pcapng version {major}.{minor}")
        if self.sections == 0:
            self._first_big = big
        self.sections += 1
        self._big = big
        self._sec_base = len(self.interfaces)
        self._sec_count = 0
        return blen

    def _interface_block(self) -> None:
        """Parse the complete IDB at ``_pos`` (the nogil walk checked its lengths)."""
        where = f"{self.path}: interface block at byte offset {self._foff + self._pos}"
        e = ">" if self._big else "<"
        p = self._pos
        (blen,) = struct.unpack(e + "I", bytes(self._buf[p + 4 : p + 8]))
        block = bytes(self._buf[p : p + blen])
        if blen < 20:
            raise _Stop(f"{where}: block length {blen} is too short for an IDB (20)")
        linktype, _, snaplen = struct.unpack(e + "HHI", block[8:16])
        iface = Interface(linktype=linktype, snaplen=snaplen, section=self.sections - 1)
        q = 16
        while q + 4 <= blen - 4:
            code, olen = struct.unpack(e + "HH", block[q : q + 4])
            if code == OPT_ENDOFOPT or q + 4 + olen > blen - 4:
                break
            val = block[q + 4 : q + 4 + olen]
            if code == OPT_IF_TSRESOL and olen >= 1:
                iface.tsresol = val[0]
            elif code == OPT_IF_TSOFFSET and olen == 8:
                (iface.tsoffset,) = struct.unpack(e + "q", val)
            elif code == OPT_IF_NAME:
                iface.name = val.decode("utf-8", "replace").rstrip("\0")
            q += 4 + (olen + 3) // 4 * 4
        try:
            _ts_conversion(iface.tsresol)
        except ValueError as err:
            raise _Stop(f"{where}: {err}") from None
        if len(self.interfaces) >= 65536:
            raise _Stop(f"{where}: more than 65536 interfaces")
        self.interfaces.append(iface)
        self._sec_count += 1
        self._if_tables = ()
        self._pos += blen

    def _truncated(self, need: int) -> None:
        left = self._end - self._pos
        at = self._foff + self._pos
        k = self.packets + 1
        if self.format == "pcap":
            if left < PCAP_REC_LEN:
                what = f"truncated record header ({left} of {PCAP_REC_LEN} bytes)"
            else:
                what = f"truncated record: {need - PCAP_REC_LEN} captured bytes announced, {left - PCAP_REC_LEN} present"
            self._fail(f"{self.path}: record {k} at byte offset {at}: {what}")
        elif left < 12:
            self._fail(
                f"{self.path}: block at byte offset {at}: truncated block header ({left} of 12 bytes)"
            )
        else:
            self._fail(
                f"{self.path}: block at byte offset {at}: block length {need} runs past the end "
                f"of the file ({left} bytes left)"
            )

    def _next_batch(self) -> PacketBatch | None:
        while True:
            if self._pending is not None:
                batch, self._pending = self._pending, None
                return batch
            if self._error is not None:
                err, self._error = self._error, None
                self._done = True
                raise err
            if self._done:
                return None
            arrays, n, need = self._index()
            if n:
                return self._make_batch(arrays, n)
            if self._error is not None or self._done:
                continue
            if self._eof:
                if self._pos < self._end:
                    self._truncated(need)
                self._done = True
                continue
            self._refill(need)

    def _make_batch(self, arrays: list[np.ndarray], n: int) -> PacketBatch:
        off, caplen, wirelen, ts = (a[:n] for a in arrays[:4])
        if self.format == "pcapng":
            linktype, iface = arrays[4][:n], arrays[5][:n]
        else:
            linktype = np.full(n, self.interfaces[0].linktype, LINK_DTYPE)
            iface = np.zeros(n, IFACE_DTYPE)
        self.packets += n
        self.zero_length_records += int(np.count_nonzero(caplen == 0))
        return PacketBatch(
            buf=self._buf, off=off, caplen=caplen, wirelen=wirelen, ts=ts,
            linktype=linktype, iface=iface,
        )  # fmt: skip

    # -- public ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[PacketBatch]:
        return self

    def __next__(self) -> PacketBatch:
        batch = self._next_batch()
        if batch is None:
            raise StopIteration
        return batch

    def read_all(self) -> PacketBatch:
        """The rest of the file as one batch (copies the chunks into one buffer)."""
        batches = list(self)
        if len(batches) == 1:
            return batches[0]
        used = [int(b.off[-1] + b.caplen[-1]) if len(b) else 0 for b in batches]
        base = np.cumsum([0, *used[:-1]], dtype=np.int64)
        if sum(used) >= 2**32:
            raise CaptureError(f"{self.path}: too large for one batch (>= 4 GiB); iterate instead")
        buf = (
            np.concatenate([b.buf[:u] for b, u in zip(batches, used, strict=True)])
            if batches
            else np.zeros(0, np.uint8)
        )

        def cat(name: str, dtype: type) -> np.ndarray:
            parts = [getattr(b, name) for b in batches]
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        off = (
            np.concatenate([b.off.astype(np.int64) + o for b, o in zip(batches, base, strict=True)])
            if batches
            else np.zeros(0)
        )
        return PacketBatch(
            buf=buf, off=off.astype(OFF_DTYPE), caplen=cat("caplen", LEN_DTYPE),
            wirelen=cat("wirelen", LEN_DTYPE), ts=cat("ts", TS_DTYPE),
            linktype=cat("linktype", LINK_DTYPE), iface=cat("iface", IFACE_DTYPE),
        )  # fmt: skip

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Reader {self.path!r} {self.format} {self.byteorder}-endian "
            f"{'ns' if self.nanosecond else 'us'} linktypes={self.linktypes}>"
        )


def open_capture(
    path: str | os.PathLike[str],
    chunk_bytes: int = DEFAULT_CHUNK,
    *,
    keep_going: bool = False,
    max_caplen: int | None = None,
) -> Reader:
    """Open a classic pcap or pcapng file (told apart by magic, not by name)."""
    return Reader(path, chunk_bytes, keep_going=keep_going, max_caplen=max_caplen)


def _out_tsresol(iface: Interface, nanosecond: bool | None) -> int:
    """Output resolution: forced by ``nanosecond``, else the input's if decimal and >= 1 ns."""
    if nanosecond is not None:
        return 9 if nanosecond else 6
    if iface.tsresol & 0x80 or iface.tsresol > 9:
        return 9
    return iface.tsresol


class Writer:
    """Write batches to a classic pcap or pcapng file, atomically.

    ``like`` (a Reader) supplies the defaults: its format, byte order, link type(s), time
    resolution, snap length and, for classic pcap, the rest of the global header, so a
    file read and written unchanged comes out byte for byte the same (classic pcap) or
    with the same interfaces, packets and timestamps (pcapng). Without ``like``: classic
    pcap, little-endian, ``linktype`` (default 1), µs unless ``nanosecond``; a pcapng
    output gets one interface per ``batch.iface`` seen, with that packet's link type.

    Data goes to ``path + ".tmp"``, renamed to ``path`` by ``close()``; leaving the
    ``with`` block by an exception (or calling ``abort()``) removes the temporary file.
    ``path == "-"`` writes to standard output.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        like: Reader | None = None,
        format: Format | None = None,  # noqa: A002 - the user-facing name
        linktype: int | None = None,
        nanosecond: bool | None = None,
        *,
        snaplen: int | None = None,
        byteorder: ByteOrder | None = None,
    ) -> None:
        fmt = format or (like.format if like is not None else "pcap")
        if fmt not in ("pcap", "pcapng"):
            raise ValueError(f"unknown capture format {fmt!r} (pcap or pcapng)")
        self.format: Format = fmt
        self.path = os.fspath(path)
        if byteorder is None:
            byteorder = like.byteorder if like is not None and like.format == fmt else "little"
        if byteorder not in ("little", "big"):
            raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
        self.byteorder: ByteOrder = byteorder
        self._big = byteorder == "big"
        self._e = ">" if self._big else "<"
        self.packets = 0
        self._closed = False
        self._like = like
        self._nanosecond_opt = nanosecond
        self._default_linktype = linktype
        self._snaplen_opt = snaplen
        # pcapng: interfaces written so far and ns per timestamp unit of each
        self.interfaces: list[Interface] = []
        self._if_div = np.zeros(0, np.int64)
        self._out = np.empty(0, np.uint8)

        if fmt == "pcap":
            src = like.interfaces[0] if like is not None and like.interfaces else None
            self.linktype = linktype if linktype is not None else (src.linktype if src else 1)
            if nanosecond is None:
                nanosecond = like.nanosecond if like is not None else False
            self.nanosecond = bool(nanosecond)
            if snaplen is None:
                snaplen = (
                    max((i.snaplen for i in like.interfaces), default=0) if like is not None else 0
                )
                snaplen = snaplen or MAX_CAPLEN
            self.snaplen = snaplen
        else:
            self.linktype = linktype if linktype is not None else 1
            self.nanosecond = bool(nanosecond)
            self.snaplen = snaplen or 0

        self._stdout = self.path == "-"
        self._tmp = self.path if self._stdout else self.path + ".tmp"
        try:
            # unbuffered: each batch is one large write straight from the output array
            self._f: BinaryIO = (
                sys.stdout.buffer if self._stdout else open(self._tmp, "wb", buffering=0)  # noqa: SIM115
            )
        except OSError as e:
            raise CaptureError(f"{self._tmp}: cannot create: {e.strerror or e}") from None
        try:
            self._write_bytes(self._file_header())
            if fmt == "pcapng" and like is not None:
                self._add_interfaces(len(like.interfaces) - 1, None)
        except BaseException:
            self.abort()
            raise

    # -- headers --------------------------------------------------------------------------

    def _file_header(self) -> bytes:
        e = self._e
        like = self._like
        if self.format == "pcap":
            magic = PCAP_MAGIC_NS if self.nanosecond else PCAP_MAGIC_US
            same = like is not None and like.format == "pcap" and self._default_linktype is None
            version = like.version if same else (2, 4)
            thiszone = like.thiszone if same else 0
            sigfigs = like.sigfigs if same else 0
            ltfield = like.linktype_field if same else self.linktype
            return struct.pack(
                e + "IHHiIII", magic, *version, thiszone, sigfigs, self.snaplen, ltfield
            )
        userappl = b"fastvs"
        opts = struct.pack(e + "HH", OPT_SHB_USERAPPL, len(userappl)) + userappl.ljust(8, b"\0")
        opts += struct.pack(e + "HH", OPT_ENDOFOPT, 0)
        blen = 28 + len(opts)
        return (
            struct.pack(e + "IIIHHq", PCAPNG_SHB, blen, PCAPNG_BOM, 1, 0, -1)
            + opts
            + struct.pack(e + "I", blen)
        )

    def _idb(self, iface: Interface) -> bytes:
        e = self._e
        opts = b""
        if iface.name:
            name = iface.name.encode()
            opts += struct.pack(e + "HH", OPT_IF_NAME, len(name)) + name.ljust(
                (len(name) + 3) // 4 * 4, b"\0"
            )
        if iface.tsresol != 6:
            opts += struct.pack(e + "HHB3x", OPT_IF_TSRESOL, 1, iface.tsresol)
        if opts:
            opts += struct.pack(e + "HH", OPT_ENDOFOPT, 0)
        blen = 20 + len(opts)
        return (
            struct.pack(e + "IIHHI", PCAPNG_IDB, blen, iface.linktype, 0, iface.snaplen)
            + opts
            + struct.pack(e + "I", blen)
        )

    def _add_interfaces(self, upto: int, batch: PacketBatch | None) -> None:
        """Write IDBs so that interfaces 0..upto exist (pcapng only)."""
        new: list[Interface] = []
        for k in range(len(self.interfaces), upto + 1):
            like = self._like
            if like is not None and like.format == "pcapng":
                if k >= len(like.interfaces):
                    raise CaptureError(
                        f"{self.path}: a packet names interface {k}, but {like.path} defines "
                        f"{len(like.interfaces)}"
                    )
                src = like.interfaces[k]
            elif like is not None and k < len(like.interfaces):
                src = like.interfaces[k]
            else:
                lt = self._default_linktype
                if lt is None and batch is not None:
                    hits = np.flatnonzero(batch.iface == k)
                    lt = int(batch.linktype[hits[0]]) if len(hits) else None
                src = Interface(linktype=1 if lt is None else lt, snaplen=self.snaplen)
            out = Interface(
                linktype=src.linktype,
                snaplen=src.snaplen if self._snaplen_opt is None else self._snaplen_opt,
                tsresol=_out_tsresol(src, self._nanosecond_opt),
                name=src.name,
            )
            new.append(out)
        if not new:
            return
        self._write_bytes(b"".join(self._idb(i) for i in new))
        self.interfaces += new
        self._if_div = np.array([10 ** (9 - i.tsresol) for i in self.interfaces], np.int64)
        if any(i.tsresol > 6 for i in self.interfaces):
            self.nanosecond = True

    # -- packets --------------------------------------------------------------------------

    def _write_bytes(self, data: bytes | np.ndarray) -> None:
        try:
            view = memoryview(data).cast("B")
            while view:  # a raw file may take less than asked (signals, pipes)
                k = self._f.write(view)
                if k is None:  # non-blocking stdout with a full pipe: nothing taken yet
                    continue
                view = view[k:]
        except OSError as e:
            raise CaptureError(f"{self._tmp}: write failed: {e.strerror or e}") from None

    def write(self, batch: PacketBatch, mask: np.ndarray | None = None) -> int:
        """Append the packets of ``batch`` selected by ``mask`` (default: verdict < 64).

        Returns the number of packets written.
        """
        if self._closed:
            raise ValueError("write to a closed Writer")
        n = len(batch)
        if n == 0:
            return 0
        if mask is None:
            sel = batch.verdict < KEEP_BELOW
        else:
            sel = np.asarray(mask)
            if sel.shape != (n,):
                raise ValueError(f"mask has shape {sel.shape}, batch has {n} packets")
            if sel.dtype != np.bool_:
                sel = sel != 0
        sel8 = np.ascontiguousarray(sel).view(np.uint8)
        buf = np.ascontiguousarray(batch.buf, np.uint8)
        off = np.ascontiguousarray(batch.off, np.uint32)
        caplen = np.ascontiguousarray(batch.caplen, np.uint32)
        wirelen = np.ascontiguousarray(batch.wirelen, np.uint32)
        ts = np.ascontiguousarray(batch.ts, np.int64)
        pcapng = self.format == "pcapng"
        if pcapng:
            iface = np.ascontiguousarray(batch.iface, np.uint16)
            top = int(iface.max())
            if top >= len(self.interfaces):
                self._add_interfaces(top, batch)
        elif batch.linktype.min() != self.linktype or batch.linktype.max() != self.linktype:
            bad = np.flatnonzero(sel & (batch.linktype != self.linktype))
            if len(bad):
                raise CaptureError(
                    f"{self.path}: packet {int(bad[0])} of the batch has link type "
                    f"{int(batch.linktype[bad[0]])}, the classic pcap file has {self.linktype}"
                )
        size = _pcapio.pcap_out_size(caplen, sel8, pcapng)
        if size > len(self._out):
            # kept across batches: refilling warm pages beats faulting in fresh ones
            self._out = np.empty(size, np.uint8)
        out = self._out[:size]
        try:
            if pcapng:
                k = _pcapio.write_pcapng(
                    out, buf, off, caplen, wirelen, ts, iface, sel8, self._if_div, self._big
                )
            else:
                k = _pcapio.write_pcap(
                    out, buf, off, caplen, wirelen, ts, sel8, self._big, self.nanosecond
                )
        except IndexError as e:
            raise CaptureError(f"{self.path}: bad batch: {e}") from None
        self._write_bytes(out)
        self.packets += k
        return k

    def close(self) -> None:
        """Flush, close and move the temporary file into place."""
        if self._closed:
            return
        self._closed = True
        try:
            self._f.flush()
            if not self._stdout:
                self._f.close()
                os.replace(self._tmp, self.path)
        except OSError as e:
            self._remove_tmp()
            raise CaptureError(f"{self.path}: cannot finish writing: {e.strerror or e}") from None

    def abort(self) -> None:
        """Close and delete the temporary file: no output appears."""
        self._closed = True
        if not self._stdout:
            try:
                self._f.close()
            except OSError:
                pass
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        if not self._stdout:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
