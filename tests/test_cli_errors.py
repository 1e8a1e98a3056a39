"""Bad captures and bad rules through the ``fastvs`` command, as a user meets them.

Each case runs ``python -m fastvs.cli process ...`` in a subprocess and checks the
contract of ``fastvs/cli.py`` and ``fastvs/errors.py``: one line on stderr,
``fastvs: <file>[:<line>| record N | block at byte offset B]: what is wrong``, no
traceback, the documented exit status (2 bad rules or usage, 3 bad or missing capture,
0 success), and no output file (nor ``out.pcap.tmp``) left behind by a failed run.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
PCAP = GOLDEN / "g1-rr.pcap"
RULES = GOLDEN / "g1-rr.rules"

EXIT_RULES = 2
EXIT_CAPTURE = 3


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastvs.cli", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def assert_error(r: subprocess.CompletedProcess[str], code: int, *names: str) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    msg = lines[0]
    assert msg.startswith("fastvs: "), msg
    for n in names:
        assert n in msg, (n, msg)
    return msg


def assert_no_output(out: Path) -> None:
    assert not out.exists(), f"{out} left behind"
    assert not Path(str(out) + ".tmp").exists(), f"{out}.tmp left behind"


def process(cap: Path, tmp: Path, rules: Path = RULES, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp / "out.pcap"
    return run("process", cap, "-r", rules, "-o", out, "-q", *extra), out


# -- captures ------------------------------------------------------------------------------
def _golden() -> bytes:
    return PCAP.read_bytes()


def _first_record_len(data: bytes) -> int:
    return struct.unpack("<I", data[24 + 8 : 24 + 12])[0]


def test_truncated_last_record(tmp_path: Path) -> None:
    g = _golden()
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(g[:-7])
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "record ", "truncated")
    assert_no_output(out)


def test_truncated_record_header(tmp_path: Path) -> None:
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(_golden()[:24 + 10])
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "record 1", "record header")
    assert_no_output(out)


@pytest.mark.parametrize("size", [0, 3, 10])
def test_truncated_or_empty_global_header(tmp_path: Path, size: int) -> None:
    cap = tmp_path / "short.pcap"
    cap.write_bytes(_golden()[:size])
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap))
    assert_no_output(out)


def test_wrong_magic(tmp_path: Path) -> None:
    cap = tmp_path / "magic.pcap"
    cap.write_bytes(b"GIF89a" + _golden()[6:])
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "magic")
    assert_no_output(out)


def test_record_longer_than_file(tmp_path: Path) -> None:
    cap = tmp_path / "long.pcap"
    cap.write_bytes(_golden()[:24] + struct.pack("<IIII", 1, 0, 5000, 5000) + b"x" * 10)
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "record 1", "5000")
    assert_no_output(out)


def test_record_longer_than_snaplen(tmp_path: Path) -> None:
    g = bytearray(_golden())
    struct.pack_into("<I", g, 16, 40)  # snaplen 40, records are longer
    cap = tmp_path / "snap.pcap"
    cap.write_bytes(bytes(g))
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "record 1", "snap length")
    assert_no_output(out)


def test_record_above_max_caplen_without_snaplen(tmp_path: Path) -> None:
    g = bytearray(_golden()[:24])
    struct.pack_into("<I", g, 16, 0)
    cap = tmp_path / "huge.pcap"
    cap.write_bytes(bytes(g) + struct.pack("<IIII", 1, 0, 1 << 30, 1 << 30) + b"\0" * 64)
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "record 1")
    assert_no_output(out)


def test_zero_length_records_are_valid(tmp_path: Path) -> None:
    g = _golden()
    cap = tmp_path / "zero.pcap"
    zero = struct.pack("<IIII", 1, 0, 0, 0)
    cap.write_bytes(g[:24] + zero + g[24:] + zero)
    out = tmp_path / "out.pcap"
    r = run("process", cap, "-r", RULES, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["summary"]
    base = json.loads(run("process", PCAP, "-r", RULES, "--json").stdout)["summary"]
    assert s["packets_in"] == base["packets_in"] + 2
    assert s["packets_in"] == s["packets_out"] + s["dropped"]
    assert out.exists()


def test_unknown_link_type_passes_through_counted(tmp_path: Path) -> None:
    g = bytearray(_golden())
    struct.pack_into("<I", g, 20, 147)  # LINKTYPE_USER0
    cap = tmp_path / "user0.pcap"
    cap.write_bytes(bytes(g))
    out = tmp_path / "out.pcap"
    r = run("process", cap, "-r", RULES, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    n = doc["summary"]["packets_in"]
    assert n > 0 and doc["verdicts"] == {"pass_not_ip": n}
    assert out.read_bytes() == bytes(g)  # written unchanged, header included


# pcapng ------------------------------------------------------------------------------------
def _shb() -> bytes:
    return struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)


def _idb(linktype: int = 1) -> bytes:
    return struct.pack("<IIHHII", 1, 20, linktype, 0, 0, 20)


def _epb(data: bytes) -> bytes:
    pad = (-len(data)) % 4
    blen = 32 + len(data) + pad
    return struct.pack("<IIIIIII", 6, blen, 0, 0, 1, len(data), len(data)) + data + b"\0" * pad + struct.pack("<I", blen)


def _frame() -> bytes:
    return _golden()[24 + 16 : 24 + 16 + _first_record_len(_golden())]


@pytest.mark.parametrize(
    "tail,words",
    [
        (struct.pack("<II", 6, 30) + b"\0" * 22 + struct.pack("<I", 30), "bad block length 30"),
        (struct.pack("<II", 6, 8) + b"\0" * 4, "bad block length 8"),
        (struct.pack("<II", 6, 1 << 30) + b"\0" * 40, "block length"),
        (struct.pack("<IIIIIII", 6, 32, 0, 0, 0, 0, 0) + struct.pack("<I", 36), "trailing block length"),
        (struct.pack("<IIIIIII", 6, 64, 0, 0, 0, 0, 0) + b"\0" * 8, "runs past the end"),
        (struct.pack("<I", 6) + b"\0\0", "truncated block header"),
        (struct.pack("<IIIIIII", 6, 36, 0, 0, 0, 40, 40) + b"\0" * 4 + struct.pack("<I", 36), "block at byte offset"),
    ],
    ids=["len-not-mult-4", "len-below-12", "len-huge", "trailer-differs", "past-eof", "cut-header", "epb-caplen-beyond-block"],
)  # fmt: skip
def test_pcapng_bad_blocks(tmp_path: Path, tail: bytes, words: str) -> None:
    cap = tmp_path / "bad.pcapng"
    # the bad block sits in a later chunk than the good packets (--chunk-mb 1 and padding),
    # so that the error is what is tested here (see test_regressions for the same chunk)
    cap.write_bytes(_shb() + _idb() + _epb(_frame()) + tail)
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "block at byte offset", words)
    assert_no_output(out)


def test_pcapng_bad_byte_order_magic(tmp_path: Path) -> None:
    cap = tmp_path / "bom.pcapng"
    cap.write_bytes(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x11223344, 1, 0, -1, 28) + _idb())
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "byte-order magic")
    assert_no_output(out)


def test_keep_going_counts_bad_record_and_continues(tmp_path: Path) -> None:
    g = _golden()
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(g[:-7])
    out = tmp_path / "out.pcap"
    r = run("process", cap, "-r", RULES, "-o", out, "--json", "--keep-going")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads(r.stdout)["summary"]
    base = json.loads(run("process", PCAP, "-r", RULES, "--json").stdout)["summary"]
    assert s["bad_records"] == 1
    assert s["packets_in"] == base["packets_in"] - 1
    assert s["packets_in"] == s["packets_out"] + s["dropped"]
    assert out.exists() and not Path(str(out) + ".tmp").exists()


def test_missing_capture(tmp_path: Path) -> None:
    cap = tmp_path / "nope.pcap"
    r, out = process(cap, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(cap), "no such file")
    assert_no_output(out)


def test_capture_is_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "dir.pcap"
    d.mkdir()
    r, out = process(d, tmp_path)
    assert_error(r, EXIT_CAPTURE, str(d))
    assert_no_output(out)


def test_output_directory_missing(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "out.pcap"
    r = run("process", PCAP, "-r", RULES, "-o", out, "-q")
    assert_error(r, EXIT_CAPTURE, str(out))
    assert_no_output(out)


# -- rules ---------------------------------------------------------------------------------
BAD_RULES = {
    "bad-address": ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.300:80 -m\n", 2, "10.0.0.300"),
    "bad-vip": ("-A -t 10.0.0.999:80 -s rr\n", 1, "10.0.0.999"),
    "bad-port": ("-A -t 10.0.0.1:99999 -s rr\n", 1, "99999"),
    "bad-port-text": ("-A -t 10.0.0.1:http8 -s rr\n", 1, "http8"),
    "bad-weight": ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m -w -4\n", 2, "weight"),
    "huge-weight": ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m -w 99999999999\n", 2, "weight"),
    "bad-scheduler": ("-A -t 10.0.0.1:80 -s nosuch\n", 1, "nosuch"),
    "duplicate-service": ("-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s wlc\n", 2, "already exists"),
    "duplicate-server": (
        "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m\n-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m\n",
        3, "10.0.0.3",
    ),
    "server-without-service": ("-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m\n", 1, "10.0.0.1:80"),
    "unknown-option": ("-A -t 10.0.0.1:80 -s rr --frobnicate\n", 1, "--frobnicate"),
    "unbalanced-quote": ('-A -t 10.0.0.1:80 -s "rr\n', 1, ""),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_RULES))
def test_bad_rules(tmp_path: Path, name: str) -> None:
    text, line, word = BAD_RULES[name]
    rules = tmp_path / f"{name}.rules"
    rules.write_text(text)
    r, out = process(PCAP, tmp_path, rules)
    msg = assert_error(r, EXIT_RULES, f"{rules}:{line}:")
    assert word in msg
    assert_no_output(out)


def test_rules_not_utf8(tmp_path: Path) -> None:
    rules = tmp_path / "latin1.rules"
    rules.write_bytes(b"# caf\xe9\n-A -t 10.0.0.1:80 -s rr\n")
    r, out = process(PCAP, tmp_path, rules)
    assert_error(r, EXIT_RULES, str(rules), "UTF-8")
    assert_no_output(out)


def test_missing_rules_file(tmp_path: Path) -> None:
    rules = tmp_path / "nope.rules"
    r, out = process(PCAP, tmp_path, rules)
    assert_error(r, EXIT_RULES, str(rules), "no such file")
    assert_no_output(out)


def test_no_rules_given(tmp_path: Path) -> None:
    out = tmp_path / "out.pcap"
    r = run("process", PCAP, "-o", out)
    assert_error(r, EXIT_RULES, "-r")
    assert_no_output(out)


def test_usage_error_exit_status(tmp_path: Path) -> None:
    r = run("process", PCAP, "--no-such-option")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("fastvs")


def test_list_bad_rules(tmp_path: Path) -> None:
    rules = tmp_path / "bad.rules"
    rules.write_text("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m -w x\n")
    assert_error(run("list", "-r", rules), EXIT_RULES, f"{rules}:2:")


# -- option values ---------------------------------------------------------------------------
# Every value an option refuses: one line naming the option, exit 2, no output file. These run
# ``fastvs.cli.main`` in-process (a traceback would fail the test as an error); the subprocess
# tests above hold the same contract for the installed command.
EXIT_USAGE = 2
EXIT_ENGINE = 4

PROCESS_BAD = [
    (["--capacity", "0"], "--capacity", "between 1 and"),
    (["--capacity", "-5"], "--capacity", "between 1 and"),
    (["--capacity", str(1 << 40)], "--capacity", "between 1 and"),
    (["--capacity", "many"], "--capacity", "invalid int"),
    (["--tunnel-mtu", "10"], "--tunnel-mtu", "between 68 and 65535"),
    (["--tunnel-mtu", "70000"], "--tunnel-mtu", "between 68 and 65535"),
    (["--tunnel-mtu", "-1"], "--tunnel-mtu", "between 68 and 65535"),
    (["--tunnel-source", "somewhere"], "--tunnel-source", "not an IP address"),
    (["--chunk-mb", "0"], "--chunk-mb", "between 1 and"),
    (["--chunk-mb", "-1"], "--chunk-mb", "between 1 and"),
    (["--chunk-mb", "99999"], "--chunk-mb", "between 1 and"),
    (["--rules-at", f"inf:{RULES}"], "--rules-at", "SECONDS:FILE"),
    (["--rules-at", f"nan:{RULES}"], "--rules-at", "SECONDS:FILE"),
    (["--rules-at", f"1e300:{RULES}"], "--rules-at", "between 0 and"),
    (["--rules-at=-1:" + str(RULES)], "--rules-at", "between 0 and"),
    (["--rules-at", "soon"], "--rules-at", "SECONDS:FILE"),
    (["--rules-at", "5:"], "--rules-at", "SECONDS:FILE"),
    (["--drop-entry", "2"], "--drop-entry", "invalid choice"),
    (["--drop-packet", "7"], "--drop-packet", "invalid choice"),
    (["--secure-tcp", "-1"], "--secure-tcp", "invalid choice"),
    (["--truncated", "keep"], "--truncated", "invalid choice"),
    (["--out-format", "erf"], "--out-format", "invalid choice"),
    (["--rules-order", "random"], "--rules-order", "invalid choice"),
    (["--seed", "0x10"], "--seed", "invalid int"),
]  # fmt: skip


def main_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from fastvs.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's refusals
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def assert_option_error(code: int, err: str, flag: str, words: str, exit_code: int = EXIT_USAGE) -> None:
    assert code == exit_code, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fastvs: {flag}: "), lines[0]
    assert words in lines[0], lines[0]


@pytest.mark.parametrize("args,flag,words", PROCESS_BAD, ids=[" ".join(a[0]) for a in PROCESS_BAD])
def test_process_bad_option_value(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], flag: str, words: str) -> None:
    out = tmp_path / "out.pcap"
    dropped = tmp_path / "dropped.pcap"
    code, err = main_run(["process", PCAP, "-r", RULES, "-o", out, "--dropped", dropped, "-q", *args], capsys)
    assert_option_error(code, err, flag, words)
    assert_no_output(out)
    assert_no_output(dropped)


def test_process_dropped_same_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.pcap"
    code, err = main_run(["process", PCAP, "-r", RULES, "-o", out, "--dropped", out, "-q"], capsys)
    assert_option_error(code, err, "--dropped", "same file as --output")
    assert_no_output(out)


def test_process_dropped_unwritable_leaves_no_output(tmp_path: Path) -> None:
    # the second writer failing must take the first one's OUT.tmp away too
    out = tmp_path / "out.pcap"
    bad = tmp_path / "no" / "dropped.pcap"
    r = run("process", PCAP, "-r", RULES, "-o", out, "--dropped", bad, "-q")
    assert_error(r, EXIT_CAPTURE, str(bad))
    assert_no_output(out)
    assert_no_output(bad)


@pytest.mark.parametrize("option", ["--marks", "--neigh"])
def test_side_files_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    out = tmp_path / "out.pcap"
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"# caf\xe9\n")
    for path, words in ((tmp_path, "cannot read"), (tmp_path / "nope", "no such file"), (latin1, "UTF-8")):
        code, err = main_run(["process", PCAP, "-r", RULES, "-o", out, "-q", option, path], capsys)
        assert code == EXIT_RULES, err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"fastvs: {path}: ") and words in err, err
        assert_no_output(out)


GEN_BAD = [
    (["--flows", "0"], "--flows", "between 1 and"),
    (["--flows", "-1"], "--flows", "between 1 and"),
    (["--flows", str(1 << 40)], "--flows", "between 1 and"),
    (["--flows", "x"], "--flows", "invalid int"),
    (["--packets", "-1"], "--packets", "must not be negative"),
    (["--udp-share", "nan"], "--udp-share", "between 0 and 1"),
    (["--udp-share", "2"], "--udp-share", "between 0 and 1"),
    (["--udp-share", "-0.1"], "--udp-share", "between 0 and 1"),
    (["--rst-share", "1.5"], "--rst-share", "between 0 and 1"),
    (["--payload", "-1"], "--payload", "between 0 and 1460"),
    (["--payload", "2000"], "--payload", "between 0 and 1460"),
    (["--seed", "-1"], "--seed", "must not be negative"),
    (["--rules-order", "x"], "--rules-order", "invalid choice"),
]  # fmt: skip


@pytest.mark.parametrize("args,flag,words", GEN_BAD, ids=[" ".join(a[0]) for a in GEN_BAD])
def test_gen_bad_option_value(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              args: list[str], flag: str, words: str) -> None:
    out = tmp_path / "gen.pcap"
    code, err = main_run(["gen", "-o", out, "-q", "--flows", "10", "--packets", "100", *args], capsys)
    assert_option_error(code, err, flag, words)
    assert_no_output(out)


def test_gen_output_folder_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "gen.pcap"
    code, err = main_run(["gen", "-o", out, "-q", "--flows", "10"], capsys)
    assert_option_error(code, err, "--output", "no such directory")
    assert_no_output(out)


def test_gen_rules_without_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "fwmark.rules"
    rules.write_text("-A -f 5 -s rr\n")
    out = tmp_path / "gen.pcap"
    code, err = main_run(["gen", "-o", out, "-q", "-r", rules], capsys)
    assert code == EXIT_RULES and err.count("\n") == 1, err
    assert err.startswith(f"fastvs: {rules}: ") and "no IPv4 TCP or UDP service" in err, err
    assert_no_output(out)


BENCH_BAD = [
    (["--flows", "0"], "--flows", "between 1 and"),
    (["--flows", "1000", "-3"], "--flows", "between 1 and"),
    (["--flows", str(1 << 40)], "--flows", "between 1 and"),
    (["--packets", "0"], "--packets", "at least 1"),
    (["--rounds", "0"], "--rounds", "at least 1"),
    (["--rounds", "x"], "--rounds", "invalid int"),
]  # fmt: skip


@pytest.mark.parametrize("args,flag,words", BENCH_BAD, ids=[" ".join(a[0]) for a in BENCH_BAD])
def test_bench_bad_option_value(capsys: pytest.CaptureFixture[str], args: list[str], flag: str, words: str) -> None:
    code, err = main_run(["bench", "--no-refs", *args], capsys)
    assert_option_error(code, err, flag, words)


def test_bench_outputs_checked_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # refused at once, not after minutes of measuring
    code, err = main_run(["bench", "--no-refs", "--json", tmp_path / "no" / "b.json"], capsys)
    assert_option_error(code, err, "--json", "no such directory")
    code, err = main_run(["bench", "--no-refs", "--plot", tmp_path], capsys)
    assert_option_error(code, err, "--plot", "is a directory")


def test_list_bad_option_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = main_run(["list", "-r", RULES, "--rules-order", "x"], capsys)
    assert_option_error(code, err, "--rules-order", "invalid choice")
    code, err = main_run(["list"], capsys)
    assert code == EXIT_USAGE and err.count("\n") == 1 and "-r/--rules" in err, err
    code, err = main_run(["list", "-r", tmp_path], capsys)
    assert code == EXIT_RULES and err.startswith(f"fastvs: {tmp_path}: ") and err.count("\n") == 1, err


# forward: the options it checks before it touches an interface (nosuch0/1 do not exist,
# so a value that is not refused ends on "no such interface", exit 1)
FORWARD_BAD = [
    (["--workers", "0"], "--workers"),
    (["--workers", "65"], "--workers"),
    (["--batch", "0"], "--batch"),
    (["--batch", "5000"], "--batch"),
    (["--ring-block-size", "1000"], "--ring-block-size"),
    (["--ring-blocks", "0"], "--ring-blocks"),
    (["--spin-us", "-1"], "--spin-us"),
    (["--ring-tov-ms", "0"], "--ring-tov-ms"),
    (["--addr", "somewhere"], "--addr"),
    (["--client-gw", "224.0.0.1"], "--client-gw"),
    (["--io", "dpdk"], "--io"),
    (["--workers", "many"], "--workers"),
    (["--capacity", "0"], "--capacity"),
    (["--stats-every", "-1"], "--stats-every"),
    (["--xdp-ring-size", "1000"], "--xdp-ring-size"),
    (["--xdp-ring-size", "0"], "--xdp-ring-size"),
    (["--xdp-ring-size", "big"], "--xdp-ring-size"),
    (["--xdp-busy-poll", "-5"], "--xdp-busy-poll"),
    (["--xdp-mode", "native"], "--xdp-mode"),
    (["--xdp-copy", "zc"], "--xdp-copy"),
]  # fmt: skip


@pytest.mark.parametrize("args,flag", FORWARD_BAD)
def test_forward_bad_option_value(capsys: pytest.CaptureFixture[str], args: list[str], flag: str) -> None:
    code, err = main_run(["forward", "-r", RULES, "--client-if", "nosuch0", "--server-if", "nosuch1", *args], capsys)
    assert code == EXIT_USAGE, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastvs: ") and flag in lines[0], err


def test_engine_failure_is_exit_4(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """EngineError is for the engine failing on what it accepted, here a connection table
    that cannot be allocated (a large --capacity on a small machine)."""
    import fastvs.control.director as D

    def no_memory(capacity: int, seed: int | None) -> None:
        raise MemoryError()

    monkeypatch.setattr(D, "Engine", no_memory)
    out = tmp_path / "out.pcap"
    code, err = main_run(["process", PCAP, "-r", RULES, "-o", out, "-q", "--capacity", str(1 << 30)], capsys)
    assert code == EXIT_ENGINE, err
    assert err.strip().splitlines() == [f"fastvs: cannot allocate a connection table for {1 << 30} "
                                        "connections (try a smaller --capacity)"]
    assert_no_output(out)


# -- connection sync (--sync-out, --sync-in) ---------------------------------------------------
SYNC_BAD = [
    (["--syncid", "256"], "--syncid", "between 0 and 255"),
    (["--syncid", "-1"], "--syncid", "between 0 and 255"),
    (["--sync-version", "2"], "--sync-version", "invalid choice"),
    (["--sync-threshold", "50", "50"], "--sync-threshold", "below the period"),
    (["--sync-threshold", "-1", "50"], "--sync-threshold", "between 0 and"),
    (["--sync-threshold", "3"], "--sync-threshold", "expected 2 arguments"),
    (["--sync-retries", "4"], "--sync-retries", "between 0 and 3"),
    (["--sync-refresh-period", "-5"], "--sync-refresh-period", "between 0 and"),
    (["--sync-maxlen", "0"], "--sync-maxlen", "between 1 and 65507"),
    (["--sync-maxlen", "70000"], "--sync-maxlen", "between 1 and 65507"),
    (["--sync-src", "2001:db8::1"], "--sync-src", "not an IPv4 address"),
    (["--sync-src", "nowhere"], "--sync-src", "not an IPv4 address"),
    (["--sync-in-syncid", "300"], "--sync-in-syncid", "between 0 and 255"),
]  # fmt: skip


@pytest.mark.parametrize("args,flag,words", SYNC_BAD, ids=[" ".join(a[0]) for a in SYNC_BAD])
def test_process_bad_sync_option(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 args: list[str], flag: str, words: str) -> None:
    out = tmp_path / "out.pcap"
    sync = tmp_path / "sync.pcap"
    code, err = main_run(["process", PCAP, "-r", RULES, "-o", out, "--sync-out", sync, "-q", *args], capsys)
    assert_option_error(code, err, flag, words)
    assert_no_output(out)
    assert_no_output(sync)


def test_process_sync_out_same_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.pcap"
    code, err = main_run(["process", PCAP, "-r", RULES, "-o", out, "--sync-out", out, "-q"], capsys)
    assert_option_error(code, err, "--sync-out", "same file as --output")
    assert_no_output(out)


def test_process_sync_out_directory_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.pcap"
    sync = tmp_path / "no" / "sync.pcap"
    code, err = main_run(["process", PCAP, "-r", RULES, "-o", out, "--sync-out", sync, "-q"], capsys)
    assert_option_error(code, err, "--sync-out", "no such directory")
    assert_no_output(out)


@pytest.mark.parametrize("what", ["missing", "directory", "garbage"])
def test_process_sync_in_bad_capture(tmp_path: Path, what: str) -> None:
    out = tmp_path / "out.pcap"
    sync = tmp_path / "sync.pcap"
    if what == "directory":
        sync.mkdir()
    elif what == "garbage":
        sync.write_bytes(b"this is not a capture at all")
    r = run("process", PCAP, "-r", RULES, "-o", out, "--sync-in", sync, "-q")
    assert_error(r, EXIT_CAPTURE, str(sync))
    assert_no_output(out)


def test_process_sync_in_malformed_datagrams_are_counted(tmp_path: Path) -> None:
    """A sync capture whose datagrams are not sync messages: counted, never fatal."""
    from fastvs.capture.batch import PacketBatch
    from fastvs.capture.pcap import Writer
    from fastvs.sync.frames import build_frame

    sync = tmp_path / "sync.pcap"
    frames = [build_frame(b"\x00\x07\x00\x30" + bytes(8), "10.0.0.9", ident=1),
              build_frame(b"\xff" * 3, "10.0.0.9", ident=2)]
    with Writer(sync, linktype=1) as w:
        w.write(PacketBatch.from_packets(frames, ts_ns=[1_000_000_000, 2_000_000_000]))
    r = run("process", PCAP, "-r", RULES, "--sync-in", sync, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    si = doc["summary"]["sync_in"]
    assert si["datagrams"] == 2 and si["inserted"] == 0 and sum(si["drops"].values()) >= 2


# -- many directors (fastvs/cluster) ----------------------------------------------------------
CLUSTER_BAD = [
    (["--directors", "0"], "--directors", "between 1 and"),
    (["--directors", "-2"], "--directors", "between 1 and"),
    (["--directors", "two"], "--directors", "invalid int"),
    (["--directors", "2", "--ecmp-hash", "l5"], "--ecmp-hash", "unknown hash fields"),
    (["--directors", "2", "--ecmp-hash", "net/33"], "--ecmp-hash", "net/LEN"),
    (["--ecmp-hash", "l3"], "--ecmp-hash", "needs --directors"),
    (["--dask", "tcp://127.0.0.1:1"], "--dask", "needs --directors"),
    (["--directors", "2", "--sync-out", "fastvs-never.pcap"], "--sync-out", "cannot be used with --directors"),
    (["--directors", "2", "--sync-in", PCAP], "--sync-in", "cannot be used with --directors"),
    (["--directors", "2", "--dask", "nonsense://x"], "--dask", "unknown address scheme"),
    # nothing listens on port 1: refused until the connect timeout, then one line
    (["--directors", "2", "--dask", "tcp://127.0.0.1:1"], "--dask", "cannot reach a Dask scheduler"),
]  # fmt: skip


@pytest.mark.parametrize("args,flag,words", CLUSTER_BAD)
def test_cluster_bad_options(tmp_path: Path, args: list[str], flag: str, words: str) -> None:
    r, out = process(PCAP, tmp_path, RULES, *args)
    assert_error(r, EXIT_RULES, flag, words)
    assert_no_output(out)


def test_cluster_bad_capture(tmp_path: Path) -> None:
    """A truncated capture fails the many-directors run as it fails one director's."""
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(_golden()[:-7])
    r, out = process(cap, tmp_path, RULES, "--directors", "3")
    assert_error(r, EXIT_CAPTURE, str(cap), "record ", "truncated")
    assert_no_output(out)
