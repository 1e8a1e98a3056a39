#!/usr/bin/env python3
"""Build the fuzz harnesses' seed corpora (not committed; ``make corpus`` runs this).

    fuzz/corpus/engine/  frames of tests/golden/*.pcap, pcaps/real/* and pcaps/demo/,
                         in runs of up to 16, plus hand-built conversations with the
                         harness' services, in the engine harness' encoding
    fuzz/corpus/pcap/    the capture files themselves (small ones whole, every one also
                         cut down to its first records, re-written in its own format)
    fuzz/corpus/rules/   tests/golden/*.rules, the demo rules and the harness' rules

Usage: ``python fuzz/make_corpus.py [--out fuzz/corpus]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _common import RULES_TEXT, encode, flows  # noqa: E402

WHOLE_LIMIT = 64 << 10  # capture files up to this size go in whole
HEAD_RECORDS = 24  # records kept in the cut-down copies
RUN = 16  # frames per engine input


PCAPS = REPO / "pcaps"


def capture_files() -> list[Path]:
    """The repository's captures: the golden inputs and outputs, the real-world ones and
    the demo. A missing folder is an error (the corpus would silently shrink)."""
    groups = {
        REPO / "tests" / "golden": "*.pcap",
        PCAPS / "real": "*.pcap*",
        PCAPS / "demo": "*.pcap",
    }
    files: list[Path] = []
    for folder, pattern in groups.items():
        found = sorted(folder.glob(pattern))
        if not found:
            raise FileNotFoundError(f"no {pattern} in {folder}: the repository's captures are missing")
        files += found
    return files


def _save(d: Path, data: bytes) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def _frames(path: Path) -> list[tuple[int, bytes, int]]:
    from fastvs.capture.pcap import open_capture
    from fastvs.errors import CaptureError

    out: list[tuple[int, bytes, int]] = []
    try:
        with open_capture(path, keep_going=True) as r:
            for b in r:
                for i in range(len(b)):
                    out.append((int(b.linktype[i]), b.packet(i), int(b.wirelen[i])))
                    if len(out) >= 2000:
                        return out
    except CaptureError:
        pass
    return out


def engine_corpus(out: Path) -> int:
    count = 0
    for path in capture_files():
        fr = _frames(path)
        for k in range(0, min(len(fr), 400), RUN):
            run = fr[k : k + RUN]
            enc = [(lt, data, 0 if wl == len(data) else 200, 1) for lt, data, wl in run]
            _save(out, encode(enc, opts_byte=(k // RUN) & 31))
            count += 1
    conv = list(flows())
    for opts in (0, 1, 2, 3, 4, 8, 16):
        _save(out, encode([(lt, f, 0, 3) for lt, f in conv], opts_byte=opts))
        count += 1
    # the same conversation with time jumps past the timeouts, and cut by a snap length
    _save(out, encode([(lt, f, 0, 60 if i % 4 == 3 else 0) for i, (lt, f) in enumerate(conv)]))
    _save(out, encode([(lt, f[:54], 200, 1) for lt, f in conv]))
    # a burst of SYNs from many ports: fills the harness' 32-entry table
    from _common import eth, tcp_ip

    syns = [(1, eth(tcp_ip("172.16.0.9", 1024 + i, "10.10.0.1", 80, 2)), 0, 0) for i in range(40)]
    _save(out, encode(syns))
    return count + 3


def pcap_corpus(out: Path) -> int:
    from fastvs.capture.pcap import Writer, open_capture
    from fastvs.errors import CaptureError

    count = 0
    tmp = out / ".tmp.cap"
    for path in capture_files():
        data = path.read_bytes()
        if len(data) <= WHOLE_LIMIT:
            _save(out, data)
            count += 1
        try:
            with open_capture(path, chunk_bytes=1 << 16, keep_going=True) as r:
                batch = next(iter(r), None)
                if batch is None:
                    continue
                keep = min(len(batch), HEAD_RECORDS)
                mask = [i < keep for i in range(len(batch))]
                out.mkdir(parents=True, exist_ok=True)
                with Writer(tmp, like=r) as w:
                    w.write(batch, mask=__import__("numpy").array(mask))
            _save(out, tmp.read_bytes())
            count += 1
        except CaptureError:
            continue
        finally:
            if tmp.exists():
                tmp.unlink()
    return count


def rules_corpus(out: Path) -> int:
    files = sorted((REPO / "tests" / "golden").glob("*.rules")) + [PCAPS / "demo" / "demo.rules"]
    count = 0
    for f in files:
        _save(out, f.read_bytes())  # a missing file is an error, not a smaller corpus
        count += 1
    extra = [
        RULES_TEXT,
        "-A -t [2001:db8::1]:80 -s wlc -p 300 -M 64\n-a -t [2001:db8::1]:80 -r [2001:db8::10]:80 -m -w 1\n",
        "-A -f 7 -s sh -b sh-fallback,sh-port\n-a -f 7 -r 10.0.0.1:0 -g -w 1\n",
        "-A -u 10.0.0.1:53 -s mh -b mh-port -o\n-a -u 10.0.0.1:53 -r 10.1.0.1:53 -i -w 10 -x 100 -y 50\n"
        "-e -u 10.0.0.1:53 -s rr\n-d -u 10.0.0.1:53 -r 10.1.0.1:53\n-D -u 10.0.0.1:53\n-C\n",
        "# comment\nipvsadm -A -t 10.0.0.1:80 -s rr\n--set 900 120 300\n",
    ]
    for t in extra:
        _save(out, t.encode())
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "corpus"), help="corpus root (default fuzz/corpus)")
    a = ap.parse_args(argv)
    root = Path(a.out)
    n_e = engine_corpus(root / "engine")
    n_p = pcap_corpus(root / "pcap")
    n_r = rules_corpus(root / "rules")
    print(f"corpus in {root}: engine {n_e}, pcap {n_p}, rules {n_r} inputs")
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
