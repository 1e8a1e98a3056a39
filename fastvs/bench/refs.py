"""Reference implementations fastvs's benchmarks compare against, and their traffic.

Two references do the same NAT job as fastvs's established-connection fast path (rewrite
the destination of client -> VIP packets to the connection's real server, fix the
checksums), on the same bytes:

* ``natloop`` (``natloop.c``, shipped beside this module): a small C program doing the
  minimum per packet (parse, open-addressing lookup, rewrite, RFC 1624 incremental
  checksums), compiled on first use with the system C compiler (``$CC``, else ``cc``)
  into the user's cache (:func:`cache_dir`), under a name that hashes the source, the
  compiler, the flags and the CPU, so later runs reuse it. ``mode="mem"`` times the loop over a capture already in
  memory (plus a memcpy of the same bytes as the floor); ``mode="file"`` times pcap file ->
  pcap file with fread/fwrite (plus a plain file copy as the floor).
* :func:`dpkt_nat_pipeline`: the idiomatic pure-Python pipeline (dpkt Reader, parse, dict,
  rewrite, Writer), when dpkt is installed.

This module is part of the installed package, so ``fastvs bench`` from a wheel compares
with the same references as a checkout; ``benchmarks/`` imports it from here.

Neither decrements the TTL, keeps connection state or does anything else a director does:
compare them with fastvs run with TTL kept, on captures of established flows made by
:func:`make_established_capture`.

Tables: a *client table* maps ``(saddr, sport) -> (rip, rport)`` for traffic to
``VIP:VPORT``/TCP; a *5-tuple table* maps ``(saddr, sport, daddr, dport, proto) ->
(rip, rport)``. Addresses are 4-byte ``bytes`` (as dpkt gives ``ip.src``), ports and
protocol ``int``. natloop reads a table from a binary *flows file* (see
:func:`write_flow_file`); :func:`make_established_capture` writes one beside the capture
(``<capture>.flows``), which :func:`run_natloop` uses by default.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NATLOOP_SRC = HERE / "natloop.c"
# -march=native first, plain -O2 when the compiler refuses it
NATLOOP_FLAGS: tuple[tuple[str, ...], ...] = (("-O2", "-march=native"), ("-O2",))

VIP = bytes([10, 10, 0, 1])
VPORT = 80
REAL_SERVERS: tuple[tuple[bytes, int], ...] = tuple(
    (bytes([192, 168, 0, 10 + i]), 8080) for i in range(4)
)
CLIENT_NET = 0x64400000  # 100.64.0.0/10: the clients' addresses
CLIENT_NET_SIZE = 1 << 22
SPORT_MIN = 1024
SPORT_SPAN = 65536 - SPORT_MIN
HEADER_BYTES = 54  # Ethernet 14 + IPv4 20 + TCP 20
T0 = 1_700_000_000  # capture start, seconds since the epoch

ClientKey = tuple[bytes, int]
FiveTuple = tuple[bytes, int, bytes, int, int]
Backend = tuple[bytes, int]

FLOW_MAGIC = b"NATFLOW1"
# one flows-file record; addresses and ports in network byte order
FLOW_DTYPE = np.dtype(
    [
        ("saddr", ">u4"),
        ("daddr", ">u4"),
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("rip", ">u4"),
        ("rport", ">u2"),
        ("proto", "u1"),
        ("pad", "u1"),
    ]
)
assert FLOW_DTYPE.itemsize == 20

_PCAP_GLOBAL = (
    np.array([0xA1B2C3D4], "<u4").tobytes()
    + np.array([2, 4], "<u2").tobytes()
    + np.array([0, 0, 65535, 1], "<u4").tobytes()
)


class NatloopError(RuntimeError):
    """natloop exited non-zero (2: bad input, 1: usage or I/O)."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"natloop exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


class NatloopUnavailable(RuntimeError):
    """natloop cannot be built here (no C compiler, or it fails); the message is one
    line, fit to print as the reason the C reference is skipped."""


# ------------------------------------------------------------------------- natloop


def cache_dir() -> Path:
    """Where the compiled natloop lives: ``$XDG_CACHE_HOME/fastvs``, else
    ``~/.cache/fastvs`` (an XDG_CACHE_HOME that is not absolute is ignored, as the XDG
    spec says)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastvs"


def _cpu_id() -> str:
    """What -march=native depends on: the machine and its CPU's model and flags."""
    ident = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    ident += line
                if line.strip() == "":
                    break  # the first CPU is enough
    except OSError:
        pass
    return ident


def natloop_key(src: bytes, cc: str, flags: tuple[str, ...]) -> str:
    """The cache key of one build: source, compiler, flags and (for -march=native) CPU."""
    h = hashlib.sha256(src)
    h.update(b"\0" + cc.encode() + b"\0" + " ".join(flags).encode())
    if any(f.startswith("-march=") for f in flags):
        h.update(b"\0" + _cpu_id().encode())
    return h.hexdigest()[:16]


def _try_compile(cc: list[str], flags: tuple[str, ...], src: Path, target: Path) -> str | None:
    """Compile to a temporary name and rename it into place (parallel builders never see
    half a binary); None on success, else the compiler's first error line."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
    except OSError as e:  # a cache directory we may not write to
        return f"cannot write to {target.parent}: {e.strerror}"
    os.close(fd)
    try:
        try:
            proc = subprocess.run([*cc, *flags, "-o", tmp, str(src)], capture_output=True,
                                  text=True, check=False)
        except OSError as e:
            return f"{cc[0]}: {e.strerror}"
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            errors = [ln for ln in lines if "error" in ln]
            return (errors or lines or [f"{cc[0]} exited {proc.returncode}"])[0].strip()
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_natloop(cc: str | None = None, build_dir: Path | None = None,
                  log: Callable[[str], None] | None = None) -> Path:
    """The natloop binary: from the cache when this source was already compiled with
    this compiler (and CPU), else compiled now (``-O2 -march=native``, else ``-O2``).

    ``cc`` defaults to ``$CC``, else ``cc``; ``build_dir`` to :func:`cache_dir`. ``log``
    is told when a compilation starts. Raises :class:`NatloopUnavailable` (one line)
    when there is no compiler or it cannot build the source.
    """
    cc = cc or os.environ.get("CC") or "cc"
    build_dir = build_dir or cache_dir()
    src = NATLOOP_SRC.read_bytes()
    targets = [build_dir / f"natloop-{natloop_key(src, cc, flags)}" for flags in NATLOOP_FLAGS]
    for target in targets:
        if target.is_file() and os.access(target, os.X_OK):
            return target
    cmd = shlex.split(cc)  # CC may carry a wrapper or options ("ccache gcc")
    if not cmd or shutil.which(cmd[0]) is None:
        raise NatloopUnavailable(f"no C compiler ({cc!r} not found; install one or set CC)")
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NatloopUnavailable(f"cannot create the cache directory {build_dir}: {e.strerror}") from e
    if log is not None:
        log(f"compiling the C reference (first use): {cc} {NATLOOP_SRC.name} -> {build_dir}")
    last = ""
    for flags, target in zip(NATLOOP_FLAGS, targets, strict=True):
        err = _try_compile(cmd, flags, NATLOOP_SRC, target)
        if err is None:
            return target
        last = err  # the last attempt's error: the one with the plainest flags
    raise NatloopUnavailable(f"{cc} cannot compile {NATLOOP_SRC.name}: {last}")


def flows_path_for(pcap: str | os.PathLike[str]) -> Path:
    """The flows file written beside a capture by :func:`make_established_capture`."""
    p = Path(pcap)
    return p.with_name(p.name + ".flows")


def run_natloop(
    pcap: str | os.PathLike[str],
    mode: str,
    passes: int = 3,
    *,
    flows: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    binary: Path | None = None,
    timeout: float | None = None,
) -> dict[str, object]:
    """Run natloop over ``pcap`` and return its JSON result.

    ``mode`` is ``"mem"`` or ``"file"``. ``flows`` defaults to ``<pcap>.flows``. In file
    mode the output goes to ``out`` (kept) or to a temporary file (removed). The result
    has ``mode, packets, flows, passes, seconds, mpps, ns_per_pkt, best_mpps,
    memcpy_mpps_equiv, bytes, rewritten, missed, passed`` and, in file mode,
    ``filecopy_mpps_equiv``; ``seconds`` is the total over all passes.
    Raises :class:`NatloopError` when natloop refuses the input.
    """
    if mode not in ("mem", "file"):
        raise ValueError(f"mode must be 'mem' or 'file', not {mode!r}")
    exe = binary or build_natloop()
    flows = Path(flows) if flows is not None else flows_path_for(pcap)
    with tempfile.TemporaryDirectory(prefix="natloop-") as tmp:
        args = [str(exe), mode, str(pcap), str(flows)]
        if mode == "file":
            args.append(str(out) if out is not None else str(Path(tmp) / "out.pcap"))
        args += ["--passes", str(int(passes))]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise NatloopError(proc.returncode, proc.stderr)
    result: dict[str, object] = json.loads(proc.stdout)
    return result


# ------------------------------------------------------------------------ tables


def five_tuple_table(
    clients: Mapping[ClientKey, Backend],
    vip: bytes = VIP,
    vport: int = VPORT,
    proto: int = 6,
) -> dict[FiveTuple, Backend]:
    """Expand a client table ``(saddr, sport) -> backend`` to 5-tuple keys."""
    return {(s, sp, vip, vport, proto): b for (s, sp), b in clients.items()}


def as_five_tuple_table(
    table: Mapping[ClientKey, Backend] | Mapping[FiveTuple, Backend],
) -> Mapping[FiveTuple, Backend]:
    """A 5-tuple table as it is; a client table expanded for ``VIP:VPORT``/TCP."""
    first = next(iter(table), None)
    if first is not None and len(first) == 2:
        return five_tuple_table(table)  # type: ignore[arg-type]
    return table  # type: ignore[return-value]


def write_flow_file(
    path: str | os.PathLike[str],
    table: Mapping[ClientKey, Backend] | Mapping[FiveTuple, Backend],
) -> Path:
    """Write a table (client or 5-tuple keys) as a natloop flows file."""
    t = as_five_tuple_table(table)
    rec = np.zeros(len(t), FLOW_DTYPE)
    if len(t):
        keys = list(t.keys())
        vals = list(t.values())
        rec["saddr"] = [int.from_bytes(k[0], "big") for k in keys]
        rec["sport"] = [k[1] for k in keys]
        rec["daddr"] = [int.from_bytes(k[2], "big") for k in keys]
        rec["dport"] = [k[3] for k in keys]
        rec["proto"] = [k[4] for k in keys]
        rec["rip"] = [int.from_bytes(v[0], "big") for v in vals]
        rec["rport"] = [v[1] for v in vals]
    _write_flow_records(Path(path), rec)
    return Path(path)


def _write_flow_records(path: Path, rec: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(FLOW_MAGIC)
        f.write(np.array([len(rec)], "<u8").tobytes())
        rec.tofile(f)


# ----------------------------------------------------------------------- traffic


def _fold(s: np.ndarray) -> np.ndarray:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s


def _be16_sum(cols: np.ndarray) -> np.ndarray:
    """Sum of big-endian 16-bit words over each row of a (n, even) uint8 array."""
    return (cols[:, 0::2].astype(np.uint64) << 8).sum(axis=1) + cols[:, 1::2].astype(np.uint64).sum(
        axis=1
    )


def _put(buf: np.ndarray, col: int, values: np.ndarray | int, dtype: str) -> None:
    width = np.dtype(dtype).itemsize
    arr = np.broadcast_to(np.asarray(values).astype(dtype), (buf.shape[0],))
    buf[:, col : col + width] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1, width)


def make_established_capture(
    path: str | os.PathLike[str],
    flows: int,
    packets: int,
    seed: int,
    size: int = 64,
) -> dict[ClientKey, Backend]:
    """Write a classic pcap of client -> VIP TCP ACKs on established flows.

    ``flows`` distinct clients ``(saddr, sport)`` in 100.64.0.0/10 talk to
    ``10.10.0.1:80``; every packet is Ethernet/IPv4/TCP ACK with ``size - 54`` bytes of
    payload (``size`` bytes on the wire, record length = frame length), valid IPv4 and
    TCP checksums, per-flow increasing IP id and sequence numbers, 1 µs apart. Packets of
    all flows are shuffled together; when ``packets >= flows`` every flow has at least one.
    Built with numpy, no Python work per packet.

    Returns the client table ``(saddr, sport) -> (rip, rport)``: real servers
    192.168.0.10..13:8080 round-robin over the clients. The same table is written beside
    the capture as ``<path>.flows`` for natloop.
    """
    if flows < 1:
        raise ValueError("flows must be >= 1")
    if packets < 0:
        raise ValueError("packets must be >= 0")
    if not HEADER_BYTES <= size <= 65535:
        raise ValueError(f"size must be in [{HEADER_BYTES}, 65535]")
    if flows > CLIENT_NET_SIZE * SPORT_SPAN // 2:
        raise ValueError("too many flows")
    rng = np.random.default_rng(seed)

    # distinct clients, in random order
    space = CLIENT_NET_SIZE * SPORT_SPAN
    keys = np.empty(0, np.int64)
    while keys.size < flows:
        draw = rng.integers(0, space, size=flows - keys.size + 16, dtype=np.int64)
        keys = np.unique(np.concatenate([keys, draw]))
    keys = rng.permutation(keys)[:flows]
    c_saddr = (CLIENT_NET + keys // SPORT_SPAN).astype(np.uint32)
    c_sport = (SPORT_MIN + keys % SPORT_SPAN).astype(np.uint16)
    rs = np.arange(flows) % len(REAL_SERVERS)
    rs_ip = np.array([int.from_bytes(ip, "big") for ip, _ in REAL_SERVERS], np.uint32)
    rs_port = np.array([port for _, port in REAL_SERVERS], np.uint16)
    isn = rng.integers(0, 1 << 32, size=flows, dtype=np.uint64)
    ack = rng.integers(0, 1 << 32, size=flows, dtype=np.uint64)
    ipid = rng.integers(0, 1 << 16, size=flows, dtype=np.uint64)
    vip = int.from_bytes(VIP, "big")

    # which flow each packet belongs to, and its number within the flow
    if packets >= flows:
        flow_of = np.concatenate([np.arange(flows), rng.integers(0, flows, size=packets - flows)])
        rng.shuffle(flow_of)
    else:
        flow_of = rng.choice(flows, size=packets, replace=False)
    n = packets
    order = np.argsort(flow_of, kind="stable")
    sf = flow_of[order]
    starts = np.flatnonzero(np.r_[True, sf[1:] != sf[:-1]]) if n else np.empty(0, np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    nth = np.empty(n, np.int64)
    nth[order] = np.arange(n) - first

    payload = size - HEADER_BYTES
    rec = 16 + size
    template = np.zeros(rec, np.uint8)
    frame = bytearray(HEADER_BYTES)
    frame[0:6] = bytes.fromhex("02000000fa01")  # director's MAC
    frame[6:12] = bytes.fromhex("02000000aa01")  # upstream router's MAC
    frame[12:14] = b"\x08\x00"
    frame[14] = 0x45
    frame[16:18] = (size - 14).to_bytes(2, "big")
    frame[20:22] = b"\x40\x00"  # DF
    frame[22] = 64  # TTL
    frame[23] = 6
    frame[30:34] = VIP
    frame[36:38] = VPORT.to_bytes(2, "big")
    frame[46] = 5 << 4  # data offset
    frame[47] = 0x10  # ACK
    frame[48:50] = (502).to_bytes(2, "big")  # window
    template[16 : 16 + HEADER_BYTES] = np.frombuffer(bytes(frame), np.uint8)
    buf = np.empty((n, rec), np.uint8)
    buf[:] = template
    if payload:
        buf[:, 16 + HEADER_BYTES :] = (np.arange(payload) * 7 + 0x41).astype(np.uint8)

    j = np.arange(n, dtype=np.int64)
    _put(buf, 0, T0 + j // 1_000_000, "<u4")
    _put(buf, 4, j % 1_000_000, "<u4")
    _put(buf, 8, size, "<u4")
    _put(buf, 12, size, "<u4")
    o = 16 + 14  # IPv4 header
    _put(buf, o + 4, (ipid[flow_of] + nth.astype(np.uint64)) & 0xFFFF, ">u2")
    _put(buf, o + 12, c_saddr[flow_of], ">u4")
    t = o + 20  # TCP header
    _put(buf, t, c_sport[flow_of], ">u2")
    _put(buf, t + 4, (isn[flow_of] + nth.astype(np.uint64) * payload) & 0xFFFFFFFF, ">u4")
    _put(buf, t + 8, ack[flow_of], ">u4")

    ip_sum = (~_fold(_be16_sum(buf[:, o : o + 20])).astype(np.uint32)) & 0xFFFF
    _put(buf, o + 10, ip_sum, ">u2")
    seg_len = size - 34
    seg = buf[:, t : 16 + size]
    if seg_len % 2:
        seg = np.concatenate([seg, np.zeros((n, 1), np.uint8)], axis=1)
    saddr64 = c_saddr[flow_of].astype(np.uint64)
    pseudo = (saddr64 >> 16) + (saddr64 & 0xFFFF) + (vip >> 16) + (vip & 0xFFFF) + 6 + seg_len
    tcp_sum = (~_fold(_be16_sum(seg) + pseudo).astype(np.uint32)) & 0xFFFF
    _put(buf, t + 16, tcp_sum, ">u2")

    path = Path(path)
    with open(path, "wb") as f:
        f.write(_PCAP_GLOBAL)
        buf.tofile(f)

    frec = np.zeros(flows, FLOW_DTYPE)
    frec["saddr"] = c_saddr
    frec["daddr"] = vip
    frec["sport"] = c_sport
    frec["dport"] = VPORT
    frec["rip"] = rs_ip[rs]
    frec["rport"] = rs_port[rs]
    frec["proto"] = 6
    _write_flow_records(flows_path_for(path), frec)

    sb = c_saddr.astype(">u4").tobytes()
    saddrs = [sb[i : i + 4] for i in range(0, 4 * flows, 4)]
    backends = [REAL_SERVERS[i % len(REAL_SERVERS)] for i in range(flows)]
    return dict(zip(zip(saddrs, c_sport.tolist(), strict=True), backends, strict=True))


# -------------------------------------------------------------------------- dpkt


def dpkt_nat_pipeline(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    table: Mapping[FiveTuple, Backend] | Mapping[ClientKey, Backend],
) -> tuple[int, float]:
    """The idiomatic pure-Python NAT: dpkt Reader, parse, dict, rewrite, Writer.

    Every TCP/UDP packet whose 5-tuple is in ``table`` gets the table's destination
    address and port; its IPv4 and L4 checksums are zeroed so that dpkt recomputes them
    when the packet is turned back into bytes. Everything else is written unchanged.
    ``table`` may be a client table (then it is taken as ``VIP:VPORT``/TCP; the expansion
    is not timed). Returns ``(packets, seconds)``, timed from opening the input to
    closing the output.
    """
    import dpkt  # imported here so that the rest of this module works without dpkt

    nat = as_five_tuple_table(table)
    start = time.perf_counter()
    packets = 0
    with open(in_path, "rb") as fin, open(out_path, "wb") as fout:
        reader = dpkt.pcap.Reader(fin)
        writer = dpkt.pcap.Writer(fout, snaplen=reader.snaplen, linktype=reader.datalink())
        for ts, buf in reader:
            packets += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                l4 = ip.data
                if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                    backend = nat.get((ip.src, l4.sport, ip.dst, l4.dport, ip.p))
                    if backend is not None:
                        ip.dst, l4.dport = backend
                        ip.sum = 0
                        l4.sum = 0
                        buf = bytes(eth)
            writer.writepkt(buf, ts)
    return packets, time.perf_counter() - start


def count_bad_checksums(path: str | os.PathLike[str], limit: int | None = None) -> tuple[int, int]:
    """Check IPv4 and TCP/UDP checksums with dpkt; return ``(checked, bad)``.

    Each IPv4 packet's checksums are recomputed by dpkt from scratch and compared with
    those in the file (a UDP checksum of 0 is accepted); packets that are not IPv4 or are
    cut shorter than their IPv4 total length are not counted. ``limit`` stops after that
    many checked packets.
    """
    import dpkt

    checked = bad = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            if limit is not None and checked >= limit:
                break
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or len(bytes(ip)) < ip.len:
                continue  # not IPv4, or cut short: nothing to check against
            checked += 1
            l4 = ip.data
            has_l4 = isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP))
            want_ip = ip.sum
            want_l4 = l4.sum if has_l4 else None
            ip.sum = 0
            if has_l4 and not (isinstance(l4, dpkt.udp.UDP) and want_l4 == 0):
                l4.sum = 0
            again = dpkt.ip.IP(bytes(ip))
            ok = again.sum == want_ip
            if has_l4 and want_l4 != 0:
                ok = ok and again.data.sum == want_l4
            bad += not ok
    return checked, bad
