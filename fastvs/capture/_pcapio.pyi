"""Stub for the compiled capture record indexer/writer (fastvs/capture/_pcapio.pyx)."""

import numpy as np
import numpy.typing as npt

ST_NEED_MORE: int
ST_FULL: int
ST_SHB: int
ST_IDB: int
ST_ERR_CAPLEN: int
ST_ERR_BLOCKLEN: int
ST_ERR_TRAILER: int
ST_ERR_IFACE: int
ST_ERR_EPBLEN: int
ST_ERR_TOOBIG: int

_U8 = npt.NDArray[np.uint8]
_U16 = npt.NDArray[np.uint16]
_U32 = npt.NDArray[np.uint32]
_I32 = npt.NDArray[np.int32]
_I64 = npt.NDArray[np.int64]

def index_pcap(
    buf: _U8,
    start: int,
    end: int,
    big_endian: bool,
    nanosecond: bool,
    limit: int,
    off: _U32,
    caplen: _U32,
    wirelen: _U32,
    ts: _I64,
    n: int,
) -> tuple[int, int, int, int, int]: ...
def index_pcapng(
    buf: _U8,
    start: int,
    end: int,
    big_endian: bool,
    if_linktype: _U16,
    if_limit: _U32,
    if_mul: _I64,
    if_div: _I64,
    if_shift: _I32,
    if_offset: _I64,
    if_base: int,
    if_count: int,
    max_block: int,
    off: _U32,
    caplen: _U32,
    wirelen: _U32,
    ts: _I64,
    linktype: _U16,
    iface: _U16,
    n: int,
) -> tuple[int, int, int, int, int]: ...
def pcap_out_size(caplen: _U32, sel: _U8, pcapng: bool) -> int: ...
def write_pcap(
    out: _U8,
    buf: _U8,
    off: _U32,
    caplen: _U32,
    wirelen: _U32,
    ts: _I64,
    sel: _U8,
    big_endian: bool,
    nanosecond: bool,
) -> int: ...
def write_pcapng(
    out: _U8,
    buf: _U8,
    off: _U32,
    caplen: _U32,
    wirelen: _U32,
    ts: _I64,
    iface: _U16,
    sel: _U8,
    if_div: _I64,
    big_endian: bool,
) -> int: ...
