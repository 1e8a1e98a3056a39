"""The IPVS connection-sync wire format (net/netfilter/ipvs/ip_vs_sync.c, Linux 6.1).

A master director multicasts UDP datagrams (224.0.0.81:8848 by default, TTL 1), each
one *message*: a header and ``nr_conns`` connection records. Two versions exist:

Version 1 (the default since 2.6.39, ``net.ipv4.vs.sync_version=1``)::

    header, 8 bytes:  reserved=0 | syncid | size (be16, whole datagram)
                      nr_conns | version=1 | spare=0 (2 bytes)
    record:           type (bit 0: IPv6) | protocol | ver_size (be16: version in the
                      top 4 bits, must be 0; record size in the low 12 bits)
                      flags (be32) | state (be16) | cport | vport | dport (be16 each)
                      fwmark (be32) | timeout (be32, seconds)
                      caddr | vaddr | daddr (4 bytes each for IPv4: 36-byte record;
                      16 bytes each for IPv6: 72-byte record)
                      options: type (1 byte), length (1 byte), data
                        1 SEQ_DATA  24 bytes: in_seq, out_seq (init_seq, delta,
                                    previous_delta: be32 each)
                        2 PE_DATA   persistence-engine data (<= 255 bytes)
                        3 PE_NAME   persistence-engine name (<= 16 bytes)
                        a type with bit 6 (0x40) set is optional: skipped if unknown
    records start on 4-byte boundaries: the master pads the previous record with
    zeros *before* adding the next one, so the last record is never padded and
    ``size`` counts only what was written.

Version 0 (read by every backup, still sent with ``sync_version=0``)::

    header, 4 bytes:  nr_conns | syncid | size (be16)
    record, 24 bytes: reserved | protocol | cport | vport | dport (be16)
                      caddr | vaddr | daddr (IPv4 only) | flags (be16) | state (be16)
    followed, when flags & IP_VS_CONN_F_SEQ_MASK, by 24 bytes of in_seq/out_seq
    copied from the master's memory (``memcpy``): *host* byte order, little-endian on
    the x86 masters everyone runs (``V0_SEQ_ORDER``).

A backup tells the versions apart by the v1 header alone: version byte 1 *and*
reserved 0 *and* spare 0 means version 1; anything else is read as version 0
(``ip_vs_process_message``). So a v1-looking message with a non-zero reserved byte is
not "rejected": it is parsed as v0, whose ``nr_conns`` is that reserved byte.

``decode_message`` applies exactly the receiving checks of ``ip_vs_process_message``,
``ip_vs_process_message_v0``, ``ip_vs_proc_sync_conn`` and
``ip_vs_sync_validate_flags`` (Debian's 6.1.0-57, i.e. 6.1.192, the kernel the lab
runs: it refuses ONE_PACKET records and NO_CPORT templates, masks v0 flags with
IP_VS_CONN_F_BACKUP_MASK too, and drops templates whose state is out of range -
older 6.1 releases did none of these) and never raises: it returns
the records the backup would act on and named counts of what it dropped. As in the
kernel, records before a fatal error in a message are kept (the kernel has already
applied them) and the rest of the message is dropped; a record-level problem
(unsupported protocol, state out of range, unknown mandatory option, missing
persistence engine) drops only that record.

``encode_message`` / ``MessageBuilder`` write messages byte for byte as the master
does (``ip_vs_sync_conn`` / ``ip_vs_sync_conn_v0``), including where a message is cut:
a record goes into the current message while ``size + pad + len <= sync_maxlen``
(``sync_maxlen``: 1472 for a master, whatever the interface MTU, unless configured).
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "DecodeResult",
    "MessageBuilder",
    "SeqAdj",
    "SyncConn",
    "decode_message",
    "encode_message",
    "record_len",
    "sync_maxlen",
]

SYNC_GROUP = "224.0.0.81"  # IP_VS_SYNC_GROUP
SYNC_PORT = 8848  # IP_VS_SYNC_PORT
SYNC_PROTO_VER = 1

HDR_V0 = 4  # struct ip_vs_sync_mesg_v0
HDR_V1 = 8  # struct ip_vs_sync_mesg
REC_V4 = 36  # struct ip_vs_sync_v4
REC_V6 = 72  # struct ip_vs_sync_v6
REC_V0 = 24  # SIMPLE_CONN_SIZE
SEQ_OPT = 24  # struct ip_vs_sync_conn_options: two struct ip_vs_seq
REC_V0_FULL = REC_V0 + SEQ_OPT  # FULL_CONN_SIZE

STYPE_F_INET6 = 1
SVER_SHIFT = 12
SVER_MASK = 0x0FFF

IPVS_OPT_SEQ_DATA = 1
IPVS_OPT_PE_DATA = 2
IPVS_OPT_PE_NAME = 3
IPVS_OPT_PARAM = 7
IPVS_OPT_F_PARAM = 1 << (IPVS_OPT_PARAM - 1)  # 0x40: optional parameter

IP_VS_PENAME_MAXLEN = 16
IP_VS_PEDATA_MAXLEN = 255

# connection flags (include/uapi/linux/ip_vs.h)
F_FWD_MASK = 0x0007
F_MASQ = 0x0000
F_LOCALNODE = 0x0001
F_TUNNEL = 0x0002
F_DROUTE = 0x0003
F_BYPASS = 0x0004
F_SYNC = 0x0020
F_HASHED = 0x0040
F_NOOUTPUT = 0x0080
F_INACTIVE = 0x0100
F_OUT_SEQ = 0x0200
F_IN_SEQ = 0x0400
F_SEQ_MASK = 0x0600
F_NO_CPORT = 0x0800
F_TEMPLATE = 0x1000
F_ONE_PACKET = 0x2000
F_BACKUP_MASK = F_FWD_MASK | F_NOOUTPUT | F_INACTIVE | F_SEQ_MASK | F_NO_CPORT | F_TEMPLATE
F_BACKUP_UPD_MASK = F_INACTIVE | F_SEQ_MASK

IPPROTO_IP = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_SCTP = 132

# ip_vs_proto_get() -> num_states for the protocols a Debian 6.1 kernel registers
# (CONFIG_IP_VS_PROTO_TCP/UDP/SCTP/AH/ESP=y): IP_VS_TCP_S_LAST, IP_VS_UDP_S_LAST,
# IP_VS_SCTP_S_LAST, and 1 for AH/ESP.
NUM_STATES: dict[int, int] = {
    IPPROTO_TCP: 11,
    IPPROTO_UDP: 1,
    IPPROTO_SCTP: 14,
    IPPROTO_AH: 1,
    IPPROTO_ESP: 1,
}
IP_VS_CTPL_S_LAST = 2  # template states NONE, ASSURED

# Byte order of the v0 seq option: the master memcpy()s its host-order struct.
V0_SEQ_ORDER = "<"

_HDR1 = struct.Struct("!BBHBBH")  # reserved, syncid, size, nr_conns, version, spare
_HDR0 = struct.Struct("!BBH")  # nr_conns, syncid, size
_REC_HEAD = struct.Struct("!BBHIHHHHII")  # type..timeout: 24 bytes
_REC_V0 = struct.Struct("!BBHHH4s4s4sHH")
_SEQ_BE = struct.Struct("!6I")
_SEQ_V0 = struct.Struct(V0_SEQ_ORDER + "6I")


@dataclass(frozen=True)
class SeqAdj:
    """struct ip_vs_seq: TCP sequence-number adjustment of one direction."""

    init_seq: int = 0
    delta: int = 0
    previous_delta: int = 0

    def to_tuple(self) -> tuple[int, int, int]:
        return (self.init_seq, self.delta, self.previous_delta)


@dataclass
class SyncConn:
    """One connection record as it travels (both versions).

    ``flags`` are the raw flags of the record (the backup masks them); ``timeout`` is
    in seconds (always 0 in version 0, which has no such field); addresses are
    numeric text. ``options`` keeps every option of a v1 record in wire order as
    ``(type, data)`` so that a decoded record encodes back to the same bytes; the
    parsed views are ``seq``, ``pe_data`` and ``pe_name``. ``rtype`` is the raw type
    byte (0 for IPv4, bit 0 for IPv6). ``version`` is the message version it came in.
    """

    protocol: int
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    flags: int = 0
    state: int = 0
    fwmark: int = 0
    timeout: int = 0
    af: int = 4
    in_seq: SeqAdj | None = None
    out_seq: SeqAdj | None = None
    pe_data: bytes | None = None
    pe_name: bytes | None = None
    options: list[tuple[int, bytes]] | None = None
    rtype: int | None = None
    version: int = 1
    reserved_v0: int = 0  # the v0 record's first byte (the kernel writes 0)

    @property
    def is_template(self) -> bool:
        return bool(self.flags & F_TEMPLATE)

    def wire_options(self) -> list[tuple[int, bytes]]:
        """The v1 options in the order the master writes them (SEQ, PE_DATA,
        PE_NAME - the name only after PE data), unless ``options`` is set."""
        if self.options is not None:
            return self.options
        out: list[tuple[int, bytes]] = []
        if self.flags & F_SEQ_MASK:
            ins = self.in_seq or SeqAdj()
            outs = self.out_seq or SeqAdj()
            out.append((IPVS_OPT_SEQ_DATA, _SEQ_BE.pack(*ins.to_tuple(), *outs.to_tuple())))
        if self.pe_data:
            out.append((IPVS_OPT_PE_DATA, bytes(self.pe_data)))
            if self.pe_name:
                out.append((IPVS_OPT_PE_NAME, bytes(self.pe_name[:IP_VS_PENAME_MAXLEN])))
        return out

    def key(self) -> tuple[int, int, str, int, str, int]:
        """(af, protocol, caddr, cport, vaddr, vport): the backup's lookup key."""
        return (self.af, self.protocol, self.caddr, self.cport, self.vaddr, self.vport)


def _pton(af: int, addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if af == 6 else socket.AF_INET, addr)


def _ntop(af: int, raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if af == 6 else socket.AF_INET, raw)


def record_len(conn: SyncConn) -> int:
    """Bytes of a v1 record: base size plus every option's 2-byte header and data."""
    n = REC_V6 if conn.af == 6 else REC_V4
    return n + sum(2 + len(d) for _, d in conn.wire_options())


def record_len_v0(conn: SyncConn) -> int:
    return REC_V0_FULL if conn.flags & F_SEQ_MASK else REC_V0


def encode_record(conn: SyncConn) -> bytes:
    """One v1 record, unpadded (``ip_vs_sync_conn``'s copy of the members)."""
    size = record_len(conn)
    if size > SVER_MASK:
        raise ValueError(f"record of {size} bytes does not fit the 12-bit size field")
    rtype = conn.rtype if conn.rtype is not None else (STYPE_F_INET6 if conn.af == 6 else 0)
    head = _REC_HEAD.pack(
        rtype,
        conn.protocol,
        size & SVER_MASK,
        conn.flags & 0xFFFFFFFF,
        conn.state,
        conn.cport,
        conn.vport,
        conn.dport,
        conn.fwmark & 0xFFFFFFFF,
        conn.timeout & 0xFFFFFFFF,
    )
    parts = [
        head,
        _pton(conn.af, conn.caddr),
        _pton(conn.af, conn.vaddr),
        _pton(conn.af, conn.daddr),
    ]
    for t, d in conn.wire_options():
        if not 0 <= len(d) <= 255:
            raise ValueError(f"option {t} of {len(d)} bytes")
        parts.append(bytes((t, len(d))) + d)
    return b"".join(parts)


def encode_record_v0(conn: SyncConn) -> bytes:
    """One v0 record (IPv4 only), with the seq option when flags ask for it."""
    if conn.af != 4:
        raise ValueError("version 0 carries IPv4 connections only")
    rec = _REC_V0.pack(
        conn.reserved_v0,
        conn.protocol,
        conn.cport,
        conn.vport,
        conn.dport,
        _pton(4, conn.caddr),
        _pton(4, conn.vaddr),
        _pton(4, conn.daddr),
        conn.flags & 0xFFFF,
        conn.state,
    )
    if conn.flags & F_SEQ_MASK:
        ins = conn.in_seq or SeqAdj()
        outs = conn.out_seq or SeqAdj()
        rec += _SEQ_V0.pack(*ins.to_tuple(), *outs.to_tuple())
    return rec


def encode_message(conns: Sequence[SyncConn], syncid: int = 0, version: int = 1) -> bytes:
    """One message holding ``conns`` (no size limit: see ``MessageBuilder``)."""
    if len(conns) > 255:
        raise ValueError("a message holds at most 255 records (nr_conns is one byte)")
    if version == 0:
        body = b"".join(encode_record_v0(c) for c in conns)
        size = HDR_V0 + len(body)
        if size > 0xFFFF:
            raise ValueError("message longer than 65535 bytes")
        return _HDR0.pack(len(conns), syncid, size) + body
    parts: list[bytes] = []
    size = HDR_V1
    for c in conns:
        pad = (4 - size) & 3
        rec = encode_record(c)
        parts.append(b"\0" * pad + rec)
        size += pad + len(rec)
    if size > 0xFFFF:
        raise ValueError("message longer than 65535 bytes")
    return _HDR1.pack(0, syncid, size, len(conns), SYNC_PROTO_VER, 0) + b"".join(parts)


def sync_maxlen(
    mtu: int = 1500, *, backup: bool = False, ipv6: bool = False, configured: int = 0
) -> int:
    """The longest message (UDP payload) a sync daemon sends or receives, as
    ``start_sync_thread`` computes it: ``mtu - hlen`` with hlen the IP + UDP headers
    (28 for IPv4, 48 for IPv6), where the master always takes mtu 1500 (whatever the
    interface's) and a backup its interface MTU clamped to 1500..65535; a configured
    ``--sync-maxlen`` wins, clamped to 1 (backup: 1024) .. 65535 - hlen."""
    hlen = 48 if ipv6 else 28
    if configured:
        return max(1024 if backup else 1, min(configured, 65535 - hlen))
    m = max(1500, min(mtu, 65535)) if backup else 1500
    return m - hlen


class MessageBuilder:
    """Packs records into messages the way the master's sync buffer does.

    ``add(conn)`` returns the message that had to be closed to make room (or that was
    of the other version), else None; ``flush()`` closes the current one. The cut
    rule is the kernel's: v1 pads to 4 bytes before a record and closes the buffer
    when ``size + pad + len > maxlen``; a message never exceeds ``maxlen`` unless a
    single record does (the buffer is then made just large enough, as
    ``ip_vs_sync_buff_create``'s ``max(len + header, maxlen)``), nor 255 records
    (the kernel's nr_conns would wrap; a 1472-byte message holds at most 40).
    """

    def __init__(self, syncid: int = 0, maxlen: int = 1472, version: int = 1) -> None:
        self.syncid = syncid
        self.maxlen = maxlen
        self.version = version
        self._conns: list[SyncConn] = []
        self._size = 0
        self._cap = 0
        self._ver = version

    def __len__(self) -> int:
        return len(self._conns)

    @property
    def size(self) -> int:
        return self._size

    def add(self, conn: SyncConn, version: int | None = None) -> bytes | None:
        ver = self.version if version is None else version
        if ver == 0 and conn.af != 4:
            return None  # ip_vs_sync_conn_v0: IPv6 connections are not sent
        ln = record_len_v0(conn) if ver == 0 else record_len(conn)
        out = None
        if self._conns:
            pad = 0 if ver == 0 else (4 - self._size) & 3
            if self._ver != ver or self._size + pad + ln > self._cap or len(self._conns) >= 255:
                out = self.flush()
        if not self._conns:
            self._ver = ver
            hdr = HDR_V0 if ver == 0 else HDR_V1
            self._cap = max(ln + hdr, self.maxlen)
            self._size = hdr
        pad = 0 if ver == 0 else (4 - self._size) & 3
        self._conns.append(conn)
        self._size += pad + ln
        return out

    def flush(self) -> bytes | None:
        if not self._conns:
            return None
        msg = encode_message(self._conns, self.syncid, self._ver)
        self._conns = []
        self._size = 0
        return msg


@dataclass
class DecodeResult:
    """What a backup takes from one datagram: ``conns`` in message order, and named
    counts of what it dropped (``drops``). ``version`` is 0 or 1 as the backup read
    it, None when the header was refused; ``fatal`` names the error that ended the
    message early (records after it were dropped), if any."""

    conns: list[SyncConn] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    version: int | None = None
    syncid: int | None = None
    nr_conns: int = 0
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        return not self.drops


# Names of drops. Message level (nothing of the datagram is used):
#   short            shorter than the 4-byte v0 header
#   truncated        longer than the backup's receive buffer (sync_maxlen): recvmsg
#                    cuts it, so its size field no longer matches
#   size_mismatch    size field != datagram length
#   syncid           another sync id than the backup's (when the backup's is not 0)
# Fatal, ending the message (records before it are kept):
#   v1_conn_past_end     fewer than 36 bytes left for the next record
#   v1_size_past_end     the record's size runs past the datagram
#   v1_record_version    ver_size's top 4 bits not 0
#   v1_bad_type          type byte neither 0 nor with the IPv6 bit (-10)
#   v1_size_too_small    record size below the 36/72-byte base (-20)
#   v1_opt_header        an option header cut by the record's end (-30)
#   v1_opt_len           an option of length 0 or past the record's end (-40)
#   v1_opt_seq           a seq option not 24 bytes long, or twice (-50)
#   v1_opt_pe_data       PE data twice (-60)
#   v1_opt_pe_name       PE name longer than 16 bytes, or twice (-70)
#   v0_conn_past_end     fewer than 24 bytes left for the next record
#   v0_opt_past_end      a record whose flags ask for seq data cut short
# Record level (that record only):
#   unknown_option       an unknown option without the optional bit (0x40) (20)
#   bad_flags            ONE_PACKET, or NO_CPORT on a template (ip_vs_sync_validate_flags) (25)
#   unsupported_protocol no IPVS protocol handler (30)
#   bad_state            state >= the protocol's number of states, or >= 2 for a
#                        template (40)
#   pe_unavailable       PE data without a name, or a PE the backup has not loaded (50)


def decode_message(
    data: bytes | bytearray | memoryview,
    syncid: int = 0,
    *,
    maxlen: int | None = None,
    pe_names: Iterable[str] = (),
) -> DecodeResult:
    """Parse one sync datagram as a backup does. ``syncid`` is the backup's (0 takes
    every id); ``maxlen`` the backup's receive buffer (``sync_maxlen(mtu,
    backup=True)``; None: unlimited); ``pe_names`` the persistence engines the backup
    has loaded (the kernel has only "sip"; a fastvs backup none). Never raises."""
    res = DecodeResult()
    buf = bytes(data)
    if maxlen is not None and len(buf) > maxlen:
        buf = buf[:maxlen]
        res.drops["truncated"] += 1
        return res
    n = len(buf)
    if n < HDR_V0:
        res.drops["short"] += 1
        return res
    size = int.from_bytes(buf[2:4], "big")
    if n != size:
        res.drops["size_mismatch"] += 1
        return res
    res.syncid = buf[1]
    if syncid != 0 and buf[1] != syncid:
        res.drops["syncid"] += 1
        return res
    # bytes 4..7 of a shorter datagram are whatever the kernel's buffer held before:
    # read them as absent, which makes the message v0
    if n >= HDR_V1 and buf[5] == SYNC_PROTO_VER and buf[0] == 0 and buf[6:8] == b"\0\0":
        res.version = 1
        res.nr_conns = buf[4]
        _decode_v1(buf, res, frozenset(pe_names))
    else:
        res.version = 0
        res.nr_conns = buf[0]
        _decode_v0(buf, res)
    return res


def _valid_flags(flags: int) -> bool:
    """ip_vs_sync_validate_flags(): no NO_CPORT template, no ONE_PACKET entry."""
    if flags & F_NO_CPORT and flags & F_TEMPLATE:
        return False
    return not flags & F_ONE_PACKET


def _check_proto_state(protocol: int, state: int, flags: int) -> str | None:
    if flags & F_TEMPLATE:
        return "bad_state" if state >= IP_VS_CTPL_S_LAST else None
    nstates = NUM_STATES.get(protocol)
    if nstates is None:
        return "unsupported_protocol"
    if state >= nstates:
        return "bad_state"
    return None


def _decode_v0(buf: bytes, res: DecodeResult) -> None:
    n = len(buf)
    p = HDR_V0
    for _ in range(res.nr_conns):
        if p + REC_V0 > n:
            res.drops["v0_conn_past_end"] += 1
            res.fatal = "v0_conn_past_end"
            return
        (rsv, proto, cport, vport, dport, ca, va, da, fl, state) = _REC_V0.unpack_from(buf, p)
        flags = fl
        in_seq = out_seq = None
        if flags & F_SEQ_MASK:
            if p + REC_V0_FULL > n:
                res.drops["v0_opt_past_end"] += 1
                res.fatal = "v0_opt_past_end"
                return
            s = _SEQ_V0.unpack_from(buf, p + REC_V0)
            in_seq, out_seq = SeqAdj(*s[:3]), SeqAdj(*s[3:])
            p += REC_V0_FULL
        else:
            p += REC_V0
        if not _valid_flags(flags):
            res.drops["bad_flags"] += 1
            continue
        why = _check_proto_state(proto, state, flags & F_BACKUP_MASK)
        if why:
            res.drops[why] += 1
            continue
        res.conns.append(
            SyncConn(
                protocol=proto,
                caddr=_ntop(4, ca),
                cport=cport,
                vaddr=_ntop(4, va),
                vport=vport,
                daddr=_ntop(4, da),
                dport=dport,
                flags=fl,
                state=state,
                af=4,
                in_seq=in_seq,
                out_seq=out_seq,
                version=0,
                reserved_v0=rsv,
            )
        )


class _Fatal(Exception):
    pass


def _decode_v1(buf: bytes, res: DecodeResult, pe_names: frozenset[str]) -> None:
    n = len(buf)
    end = HDR_V1
    for _ in range(res.nr_conns):
        p = end
        if p + REC_V4 > n:
            _fatal(res, "v1_conn_past_end")
            return
        size = int.from_bytes(buf[p + 2 : p + 4], "big")
        rec_end = p + (size & SVER_MASK)
        if rec_end > n:
            _fatal(res, "v1_size_past_end")
            return
        if size >> SVER_SHIFT:
            _fatal(res, "v1_record_version")
            return
        try:
            conn, why = _decode_record(buf, p, rec_end, pe_names)
        except _Fatal as e:
            _fatal(res, str(e))
            return
        if why:
            res.drops[why] += 1
        elif conn is not None:
            res.conns.append(conn)
        end = p + (((size & SVER_MASK) + 3) & ~3)


def _fatal(res: DecodeResult, why: str) -> None:
    res.drops[why] += 1
    res.fatal = why


def _decode_record(
    buf: bytes, p: int, end: int, pe_names: frozenset[str]
) -> tuple[SyncConn | None, str | None]:
    """ip_vs_proc_sync_conn: (record, None), (None, record-level drop) or _Fatal."""
    rtype = buf[p]
    if rtype & STYPE_F_INET6:
        af, alen, base = 6, 16, REC_V6
    elif rtype == 0:
        af, alen, base = 4, 4, REC_V4
    else:
        raise _Fatal("v1_bad_type")
    q = p + base
    if q > end:
        raise _Fatal("v1_size_too_small")
    options: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    in_seq = out_seq = None
    pe_data = pe_name = None
    while q < end:
        if q + 2 > end:
            raise _Fatal("v1_opt_header")
        ptype, plen = buf[q], buf[q + 1]
        q += 2
        if not plen or q + plen > end:
            raise _Fatal("v1_opt_len")
        data = buf[q : q + plen]
        kind = ptype & ~IPVS_OPT_F_PARAM
        if kind == IPVS_OPT_SEQ_DATA:
            if plen != SEQ_OPT or kind in seen:
                raise _Fatal("v1_opt_seq")
            s = _SEQ_BE.unpack(data)
            in_seq, out_seq = SeqAdj(*s[:3]), SeqAdj(*s[3:])
        elif kind == IPVS_OPT_PE_DATA:
            if plen > IP_VS_PEDATA_MAXLEN or kind in seen:
                raise _Fatal("v1_opt_pe_data")
            pe_data = data
        elif kind == IPVS_OPT_PE_NAME:
            if plen > IP_VS_PENAME_MAXLEN or kind in seen:
                raise _Fatal("v1_opt_pe_name")
            pe_name = data
        elif not ptype & IPVS_OPT_F_PARAM:
            # unknown mandatory option: this record is dropped at once (retc 20),
            # the options after it are not looked at
            return None, "unknown_option"
        seen.add(kind)
        options.append((ptype, data))
        q += plen
    (_, proto, _vs, flags, state, cport, vport, dport, fwmark, timeout) = _REC_HEAD.unpack_from(
        buf, p
    )
    a = p + 24
    caddr = _ntop(af, buf[a : a + alen])
    vaddr = _ntop(af, buf[a + alen : a + 2 * alen])
    daddr = _ntop(af, buf[a + 2 * alen : a + 3 * alen])
    if not _valid_flags(flags):
        return None, "bad_flags"
    why = _check_proto_state(proto, state, flags & F_BACKUP_MASK)
    if why:
        return None, why
    if pe_data is not None:
        name = pe_name.decode("latin-1") if pe_name is not None else None
        if name is None or name not in pe_names:
            return None, "pe_unavailable"
    conn = SyncConn(
        protocol=proto,
        caddr=caddr,
        cport=cport,
        vaddr=vaddr,
        vport=vport,
        daddr=daddr,
        dport=dport,
        flags=flags,
        state=state,
        fwmark=fwmark,
        timeout=timeout,
        af=af,
        in_seq=in_seq,
        out_seq=out_seq,
        pe_data=pe_data,
        pe_name=pe_name,
        options=options,
        rtype=rtype,
        version=1,
    )
    return conn, None


def reencode(res: DecodeResult) -> bytes:
    """The message a decode came from, rebuilt from its records (for round trips):
    only meaningful for a message decoded without drops."""
    conns = [replace(c) for c in res.conns]
    return encode_message(conns, res.syncid or 0, res.version or 0)
