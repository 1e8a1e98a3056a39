#!/usr/bin/env python3
"""Record the kernel's IPVS sync daemon in the kernel lab (tests/golden/sync/).

    python tools/kernlab_sync.py gen tests/golden/sync
        write the input captures and rules of every scenario (deterministic)
    python tools/kernlab_sync.py master NAME [--v0] [--sysctl K=V --tag T] [--outdir DIR]
                                             [--kernlab DIR]
        replay NAME.pcap through the lab with a master sync daemon on eth1 (syncid 7)
        and keep NAME[-v0].kernel.sync.pcap (the sync datagrams the guest sent) and
        NAME[-v0].kernel.ipvsadm.txt (the master's listings)
    python tools/kernlab_sync.py own
        write s3-own.sync.pcap: messages made by fastvs's encoder (see own_messages)
    python tools/kernlab_sync.py backup SYNC.pcap RULES OUTNAME [--outdir DIR] [--kernlab DIR]
        inject the sync datagrams of SYNC.pcap from the client side into a backup
        daemon on eth0 (syncid 7) and keep OUTNAME.ipvsadm.txt (the backup's listing)

master and backup need root and the kernel lab (outside this repository): --kernlab DIR
or the KERNLAB environment variable, and its artefacts (build.sh). The lab
runs qemu's TCG by default (set KL_ACCEL/KL_CPU to try KVM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fastvs.sync.frames import build_frame, iter_datagrams  # noqa: E402

KERNLAB = Path()  # set by main() from --kernlab DIR or $KERNLAB (master, backup)
GUEST_MAC0 = bytes.fromhex("525400770001")
CLIENT_MAC = bytes.fromhex("027700000002")
SYNCID = 7
PPS = 100
FILLER_S = 3.5  # seconds of filler after the last packet: the master flushes a buffer after 2 s


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(
    src: str, dst: str, proto: int, l4: bytes, ident: int, ttl: int = 64, bad: bool = False
) -> bytes:
    h = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(l4),
        ident & 0xFFFF,
        0x4000,
        ttl,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    c = csum(h) ^ (0x5555 if bad else 0)
    return h[:10] + struct.pack("!H", c) + h[12:] + l4


def tcp(
    src: str, sport: int, dst: str, dport: int, flags: int, seq: int, ack: int, data: bytes = b""
) -> bytes:
    seg = (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            5 << 4,
            flags,
            65535,
            0,
            0,
        )
        + data
    )
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(ph + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src: str, sport: int, dst: str, dport: int, data: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    ph = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(seg))
    c = csum(ph + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def eth(ip: bytes) -> bytes:
    fr = GUEST_MAC0 + CLIENT_MAC + b"\x08\x00" + ip
    return fr + b"\0" * max(0, 60 - len(fr))


F, S, R, P, A = 1, 2, 4, 8, 16
FLAGS = {"S": S, "F": F, "R": R, "P": P, "A": A}


class Traffic:
    """Frames in replay order, with timestamps PPS apart (the lab ignores them)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ident = 1

    def add(self, ip: bytes) -> None:
        self.frames.append(eth(ip))
        self.ident += 1

    def tcp_conv(
        self, c: tuple[str, int], v: tuple[str, int], r: tuple[str, int], script: str
    ) -> None:
        """script: 'c:S s:SA c:A c:PA ...' as kl.py step; data segments carry 10 bytes."""
        cseq, sseq = 1000, 5000
        for step in script.split():
            who, fl = step.split(":")
            flags = 0
            for ch in fl:
                flags |= FLAGS[ch]
            data = b"x" * 10 if flags & P else b""
            if who == "c":
                seg = tcp(c[0], c[1], v[0], v[1], flags, cseq, sseq if flags & A else 0, data)
                self.add(ip4(c[0], v[0], 6, seg, self.ident))
                cseq += len(data) + (1 if flags & (S | F) else 0)
            else:
                seg = tcp(r[0], r[1], c[0], c[1], flags, sseq, cseq if flags & A else 0, data)
                self.add(ip4(r[0], c[0], 6, seg, self.ident))
                sseq += len(data) + (1 if flags & (S | F) else 0)

    def udp_flow(self, c: tuple[str, int], v: tuple[str, int], n: int) -> None:
        for i in range(n):
            self.add(ip4(c[0], v[0], 17, udp(c[0], c[1], v[0], v[1], b"q%02d" % i), self.ident))

    def filler(self, seconds: float, pps: int = PPS) -> None:
        """Frames with a bad IPv4 header checksum: ip_rcv drops them silently, the lab
        spends 1/pps on each, so the master's 2-second flush happens before the end."""
        for _ in range(int(seconds * pps)):
            self.add(
                ip4(
                    "10.77.0.99",
                    "10.77.0.1",
                    17,
                    udp("10.77.0.99", 9, "10.77.0.1", 9, b"fill"),
                    self.ident,
                    bad=True,
                )
            )

    def write(self, path: Path, pps: int = PPS) -> None:
        """Timestamps 1/pps apart, as the lab sends the frames."""
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            t = 1_700_000_000_000_000  # µs
            for fr in self.frames:
                f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(fr), len(fr)))
                f.write(fr)
                t += 1_000_000 // pps


TCP_VIP, TCP_RS = ("10.77.1.1", 80), ("10.78.0.11", 8080)
UDP_VIP, UDP_RS = ("10.77.1.2", 53), ("10.78.0.12", 5353)
PTCP_VIP, PTCP_RS = ("10.77.1.3", 80), ("10.78.0.13", 80)
PUDP_VIP, PUDP_RS = ("10.77.1.4", 53), ("10.78.0.14", 53)

RULES = {
    "s1-tcp-udp": (
        f"-A -t {TCP_VIP[0]}:{TCP_VIP[1]} -s rr\n"
        f"-a -t {TCP_VIP[0]}:{TCP_VIP[1]} -r {TCP_RS[0]}:{TCP_RS[1]} -m -w 1\n"
        f"-A -u {UDP_VIP[0]}:{UDP_VIP[1]} -s rr\n"
        f"-a -u {UDP_VIP[0]}:{UDP_VIP[1]} -r {UDP_RS[0]}:{UDP_RS[1]} -m -w 1\n"
    ),
    "s2-persist": (
        f"-A -t {PTCP_VIP[0]}:{PTCP_VIP[1]} -s rr -p 300\n"
        f"-a -t {PTCP_VIP[0]}:{PTCP_VIP[1]} -r {PTCP_RS[0]}:{PTCP_RS[1]} -m -w 1\n"
        f"-A -u {PUDP_VIP[0]}:{PUDP_VIP[1]} -s rr -p 60\n"
        f"-a -u {PUDP_VIP[0]}:{PUDP_VIP[1]} -r {PUDP_RS[0]}:{PUDP_RS[1]} -m -w 1\n"
    ),
}

SCRIPTS = {
    "client_close": "c:S s:SA c:A c:PA s:PA c:FA s:FA c:A",
    "server_close": "c:S s:SA c:A c:PA s:PA s:FA c:A c:FA s:A",
    "reset": "c:S s:SA c:A c:PA c:R",
    "syn_only": "c:S",
    "handshake": "c:S s:SA c:A",
    "short": "c:S s:SA c:A c:PA",
}


GEN_PPS = {"s1-tcp-udp": PPS, "s2-persist": 50}


def gen_s1() -> Traffic:
    t = Traffic()
    t.filler(1.0)  # as in gen_s2: let the guest settle before the first connection
    t.tcp_conv(("10.77.0.10", 40001), TCP_VIP, TCP_RS, SCRIPTS["client_close"])
    t.tcp_conv(("10.77.0.10", 40002), TCP_VIP, TCP_RS, SCRIPTS["server_close"])
    t.tcp_conv(("10.77.0.10", 40003), TCP_VIP, TCP_RS, SCRIPTS["reset"])
    t.tcp_conv(("10.77.0.10", 40004), TCP_VIP, TCP_RS, SCRIPTS["syn_only"])
    t.tcp_conv(("10.77.0.10", 40005), TCP_VIP, TCP_RS, SCRIPTS["handshake"])
    t.tcp_conv(("100.64.0.1", 40006), TCP_VIP, TCP_RS, SCRIPTS["handshake"] + " c:PA" * 52)
    t.udp_flow(("10.77.0.11", 5001), UDP_VIP, 1)
    t.udp_flow(("10.77.0.11", 5002), UDP_VIP, 2)
    t.udp_flow(("10.77.0.11", 5003), UDP_VIP, 3)
    t.udp_flow(("10.77.0.11", 5004), UDP_VIP, 5)
    t.filler(FILLER_S)
    # 45 short connections in one burst: more than the 40 records a 1472-byte message holds
    for i in range(45):
        t.tcp_conv(("10.77.0.12", 41000 + i), TCP_VIP, TCP_RS, SCRIPTS["short"])
    t.filler(FILLER_S)
    return t


def gen_s2() -> Traffic:
    t = Traffic()
    # 1 s of filler first: right after the daemon starts, a slow (TCG) guest was seen
    # to take the first connection's client and server frames out of order (two NICs)
    t.filler(1.0, GEN_PPS["s2-persist"])
    for i in range(3):
        t.tcp_conv(("10.77.0.20", 42001 + i), PTCP_VIP, PTCP_RS, SCRIPTS["client_close"])
    t.tcp_conv(("10.77.0.21", 42010), PTCP_VIP, PTCP_RS, SCRIPTS["short"])
    t.tcp_conv(("10.77.0.21", 42011), PTCP_VIP, PTCP_RS, SCRIPTS["syn_only"])
    t.udp_flow(("10.77.0.22", 6001), PUDP_VIP, 3)
    t.udp_flow(("10.77.0.22", 6002), PUDP_VIP, 4)
    t.udp_flow(("10.77.0.23", 6003), PUDP_VIP, 1)
    t.filler(FILLER_S, GEN_PPS["s2-persist"])
    return t


GENS = {"s1-tcp-udp": gen_s1, "s2-persist": gen_s2}


OWN_RULES = (
    f"-A -t {TCP_VIP[0]}:{TCP_VIP[1]} -s rr\n"
    f"-a -t {TCP_VIP[0]}:{TCP_VIP[1]} -r 10.78.0.11:8080 -m -w 1\n"
    f"-a -t {TCP_VIP[0]}:{TCP_VIP[1]} -r 10.78.0.12:8080 -m -w 1\n"
    f"-A -u {UDP_VIP[0]}:{UDP_VIP[1]} -s rr\n"
    f"-a -u {UDP_VIP[0]}:{UDP_VIP[1]} -r {UDP_RS[0]}:{UDP_RS[1]} -m -w 1\n"
    f"-A -t {PTCP_VIP[0]}:{PTCP_VIP[1]} -s rr -p 300\n"
    f"-a -t {PTCP_VIP[0]}:{PTCP_VIP[1]} -r {PTCP_RS[0]}:{PTCP_RS[1]} -m -w 1\n"
)


def own_messages() -> list[bytes]:
    """Messages written by fastvs's encoder for the kernel's backup (s3-own): every
    kind of record a backup accepts, updates, replacements, and records and messages
    it must drop."""
    from fastvs.sync.proto import SeqAdj, SyncConn, encode_message

    def c(
        cport: int,
        state: int,
        timeout: int,
        dst: str = "10.78.0.11",
        dport: int = 8080,
        **kw: object,
    ) -> SyncConn:
        base: dict[str, object] = dict(
            protocol=6,
            caddr="10.77.0.30",
            cport=cport,
            vaddr=TCP_VIP[0],
            vport=TCP_VIP[1],
            daddr=dst,
            dport=dport,
            state=state,
            timeout=timeout,
        )
        base.update(kw)
        return SyncConn(**base)  # type: ignore[arg-type]

    m1 = [
        c(50001, 1, 900),  # ESTABLISHED
        c(50002, 1, 1234),  # the record's own timeout
        c(50003, 7, 60, flags=0x100),  # CLOSE_WAIT, inactive
        SyncConn(
            6,
            "10.77.0.31",
            0,
            PTCP_VIP[0],
            PTCP_VIP[1],
            PTCP_RS[0],
            PTCP_RS[1],
            flags=0x1000,
            state=1,
            timeout=300,
        ),  # template ASSURED
        c(50005, 1, 900, dst="10.78.0.99"),  # no such real server: unbound
        c(
            50006,
            1,
            900,
            flags=0x600,
            in_seq=SeqAdj(1000, 5, 0),
            out_seq=SeqAdj(2000, -3 & 0xFFFFFFFF, 0),
        ),
        c(50007, 1, 900, options=[(0x45, b"abcd")]),  # unknown optional option: kept
        SyncConn(
            6,
            "2001:db8::1",
            50008,
            "2001:db8::100",
            80,
            "2001:db8::11",
            8080,
            state=1,
            timeout=900,
            af=6,
        ),
        SyncConn(
            17,
            "10.77.0.30",
            5009,
            UDP_VIP[0],
            UDP_VIP[1],
            UDP_RS[0],
            UDP_RS[1],
            flags=0x100,
            timeout=300,
        ),
        SyncConn(
            132, "10.77.0.30", 50010, "10.77.1.9", 9999, "10.78.0.19", 9999, state=8, timeout=900
        ),
        c(50011, 1, 900, options=[(5, b"abcd")]),  # unknown mandatory option: dropped
        c(50012, 11, 900),  # TCP state 11: dropped
        SyncConn(47, "10.77.0.30", 0, "10.77.1.1", 0, "10.78.0.11", 0, timeout=900),  # GRE: dropped
        c(50014, 1, 0),  # v1 without timeout: the state's (900)
        SyncConn(
            17,
            "10.77.0.30",
            5015,
            UDP_VIP[0],
            UDP_VIP[1],
            UDP_RS[0],
            UDP_RS[1],
            flags=0x2100,
            timeout=300,
        ),  # ONE_PACKET: refused (ip_vs_sync_validate_flags)
        SyncConn(
            6,
            "10.77.0.34",
            0,
            PTCP_VIP[0],
            PTCP_VIP[1],
            PTCP_RS[0],
            PTCP_RS[1],
            flags=0x1000,
            state=2,
            timeout=300,
        ),  # template state 2: refused
        c(50017, 1, 900, pe_data=b"call-id", pe_name=b"sip"),  # PE not loaded: refused
        c(50018, 1, 900, options=[(2, b"call-id")]),  # PE data without a name: refused
        c(50019, 1, 900, options=[(3, b"sip")]),  # a PE name alone: ignored, record kept
        c(50020, 1, 900),  # X: later an INACTIVE record with another server (ignored)
        c(50021, 1, 900),  # Y: later an active record with another server (replaced)
    ]
    m2 = [
        c(50001, 4, 120, flags=0x100),  # update: FIN_WAIT, inactive
        c(50020, 5, 120, dst="10.78.0.12", flags=0x100),  # ignored
        c(50021, 1, 900, dst="10.78.0.12"),  # replaced
    ]
    m3 = [  # version 0: timeouts from the state tables, 180 s for templates
        SyncConn(
            6, "10.77.0.32", 50030, TCP_VIP[0], TCP_VIP[1], "10.78.0.12", 8080, state=1, version=0
        ),
        SyncConn(
            6,
            "10.77.0.32",
            50031,
            TCP_VIP[0],
            TCP_VIP[1],
            "10.78.0.12",
            8080,
            flags=0x600,
            state=7,
            in_seq=SeqAdj(1, 2, 3),
            out_seq=SeqAdj(4, 5, 6),
            version=0,
        ),
        SyncConn(
            6,
            "10.77.0.33",
            0,
            PTCP_VIP[0],
            PTCP_VIP[1],
            PTCP_RS[0],
            PTCP_RS[1],
            flags=0x1000,
            state=0,
            version=0,
        ),
    ]
    bad_size = bytearray(encode_message([c(50040, 1, 900)], SYNCID))
    bad_size += b"\0\0\0\0"  # longer than its size field: dropped whole
    other_id = encode_message([c(50041, 1, 900)], 9)  # another sync id: ignored
    partial = bytearray(
        encode_message([c(50042, 1, 900), c(50043, 1, 900, options=[(0x41, b"x")])], SYNCID)
    )
    # the second record's option length is 1 (SEQ with the optional bit): a bad seq option
    # is fatal (-50): the first record is applied, the second and the rest are not
    return [
        encode_message(m1, SYNCID),
        encode_message(m2, SYNCID),
        encode_message(m3, SYNCID, version=0),
        bytes(bad_size),
        other_id,
        bytes(partial),
    ]


def cmd_own(a: argparse.Namespace) -> int:
    out = Path(a.outdir)
    frames = [build_frame(m, "10.77.0.50", ident=i + 1) for i, m in enumerate(own_messages())]
    t = Traffic()
    t.frames = frames
    t.write(out / "s3-own.sync.pcap")
    (out / "s3-own.rules").write_text(OWN_RULES)
    print(f"wrote {out}/s3-own.sync.pcap ({len(frames)} messages), s3-own.rules")
    return 0


def cmd_gen(a: argparse.Namespace) -> int:
    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, gen in GENS.items():
        gen().write(out / f"{name}.pcap", GEN_PPS[name])
        (out / f"{name}.rules").write_text(RULES[name])
        print(f"wrote {out / name}.pcap, .rules")
    return 0


def kernlab_dir(option: str | None) -> Path:
    """kernlab's location: --kernlab DIR, else $KERNLAB; one clear message otherwise."""
    src = option or os.environ.get("KERNLAB")
    if not src:
        raise SystemExit("kernlab_sync: where is kernlab? give --kernlab DIR or set KERNLAB=DIR "
                         "(the kernel lab, holding lab.sh; not part of this repository)")
    if not Path(src, "lab.sh").is_file():
        raise SystemExit(f"kernlab_sync: {src} is not kernlab (no lab.sh in it); "
                         "give --kernlab DIR or set KERNLAB=DIR")
    return Path(src).resolve()


def run_lab(rules: Path, inp: Path, prefix: Path, cmds: list[str], pps: int = PPS) -> None:
    env = dict(os.environ)  # TCG unless KL_ACCEL=kvm (here "-cpu host" fails on MSR 0x10a)
    argv = [
        "bash",
        str(KERNLAB / "lab.sh"),
        "replay",
        str(rules),
        str(inp),
        str(prefix),
        "--pps",
        str(pps),
    ]
    for c in cmds:
        argv += ["--guest-cmd", c]
    print("+", " ".join(argv), file=sys.stderr)
    subprocess.run(argv, check=True, env=env)


def keep_sync(src: Path, dst: Path) -> int:
    """Copy the frames of src that are UDP to 224.0.0.81:8848 into dst (pcap)."""
    wanted = {d.index for d in iter_datagrams(src, 8848, "224.0.0.81")}
    data = src.read_bytes()
    out = [data[:24]]
    off, i = 24, 0
    e = "<" if struct.unpack("<I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    while off + 16 <= len(data):
        incl = struct.unpack(e + "I", data[off + 8 : off + 12])[0]
        if i in wanted:
            out.append(data[off : off + 16 + incl])
        off += 16 + incl
        i += 1
    dst.write_bytes(b"".join(out))
    return len(wanted)


def cmd_master(a: argparse.Namespace) -> int:
    out = Path(a.outdir)
    name = a.name
    tag = name + ("-v0" if a.v0 else "") + (f"-{a.tag}" if a.tag else "")
    cmds = []
    if a.v0:
        cmds.append("sysctl -w net.ipv4.vs.sync_version=0")
    for kv in a.sysctl or ():
        k, _, v = kv.partition("=")
        cmds.append(f"sysctl -w {k}='{v}'")
    cmds.append(f"ipvsadm --start-daemon master --mcast-interface eth1 --syncid {SYNCID}")
    with tempfile.TemporaryDirectory() as td:
        prefix = Path(td) / tag
        run_lab(out / f"{name}.rules", out / f"{name}.pcap", prefix, cmds, GEN_PPS.get(name, PPS))
        n = keep_sync(Path(f"{prefix}.out-server.pcap"), out / f"{tag}.kernel.sync.pcap")
        shutil.copy(f"{prefix}.ipvsadm.txt", out / f"{tag}.kernel.ipvsadm.txt")
        print(f"{tag}: {n} sync datagrams", file=sys.stderr)
    return 0


def cmd_backup(a: argparse.Namespace) -> int:
    """Re-frame the sync payloads as datagrams from a client-side host to the group
    (the lab strips Ethernet and sends every frame not from a real server into eth0)."""
    out = Path(a.outdir)
    frames = [
        build_frame(d.payload, "10.77.0.50", ident=i + 1, dmac=b"\x01\x00\x5e\x00\x00\x51")
        for i, d in enumerate(iter_datagrams(a.sync, 8848, None))
    ]
    t = Traffic()
    t.frames = frames
    # leave the backup a second to start before the first datagram
    pre = Traffic()
    pre.filler(1.0)
    t.frames = pre.frames + frames
    with tempfile.TemporaryDirectory() as td:
        inj = Path(td) / "inject.pcap"
        t.write(inj)
        prefix = Path(td) / a.outname
        run_lab(
            Path(a.rules),
            inj,
            prefix,
            [f"ipvsadm --start-daemon backup --mcast-interface eth0 --syncid {SYNCID}"],
            pps=20,
        )
        shutil.copy(f"{prefix}.ipvsadm.txt", out / f"{a.outname}.ipvsadm.txt")
        shutil.copy(inj, out / f"{a.outname}.inject.pcap")
    print(f"{a.outname}: injected {len(frames)} datagrams", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    global KERNLAB
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("outdir")
    m = sub.add_parser("master")
    m.add_argument("name")
    m.add_argument("--v0", action="store_true")
    m.add_argument("--sysctl", action="append", help="KEY=VALUE set in the guest first (repeatable)")
    m.add_argument("--tag", help="suffix of the output names")
    m.add_argument("--outdir", default=str(REPO / "tests/golden/sync"))
    m.add_argument("--kernlab", metavar="DIR", help="the kernel lab (default: $KERNLAB)")
    b = sub.add_parser("backup")
    b.add_argument("sync")
    b.add_argument("rules")
    b.add_argument("outname")
    b.add_argument("--outdir", default=str(REPO / "tests/golden/sync"))
    b.add_argument("--kernlab", metavar="DIR", help="the kernel lab (default: $KERNLAB)")
    o = sub.add_parser("own")
    o.add_argument("--outdir", default=str(REPO / "tests/golden/sync"))
    a = p.parse_args(argv)
    if a.cmd in ("master", "backup"):
        KERNLAB = kernlab_dir(a.kernlab)
    return {"gen": cmd_gen, "master": cmd_master, "backup": cmd_backup, "own": cmd_own}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
