"""``fastvs sync decode SYNC.pcap``: the connections a backup would build from the sync
datagrams in a capture, listed as ``ipvsadm -L -n -c`` lists them, or as JSON.

Every UDP datagram to the sync port (8848; ``--port``) - and to the group, 224.0.0.81
by default (``--group``; ``--any-group`` takes unicast too) - goes through the
backup's checks (``fastvs.sync.proto.decode_message``) and its table
(``fastvs.sync.backup.BackupTable``) at the datagram's capture time. The listing is
the table at the last datagram's time (``--at SECONDS`` moves it, relative to the
first datagram), so ``expire`` is what ``ipvsadm -L -n -c`` on the backup would have
shown right after the last message. Malformed datagrams are counted and reported in
the summary line (standard error; ``"summary"`` in JSON), never fatal.

With ``-r RULES`` (the backup's own services) connections are bound to its real
servers as the kernel binds them; without, every connection is listed unbound (the
listing is the same: the kernel lists unbound connections too).

Exit status: 0, 2 on bad arguments, 3 on a missing or unreadable capture.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastvs.control.listing import format_conns
from fastvs.errors import CaptureError, FastvsError
from fastvs.sync.backup import BackupTable
from fastvs.sync.frames import iter_datagrams
from fastvs.sync.proto import SYNC_GROUP, SYNC_PORT, decode_message, sync_maxlen

__all__ = ["DecodeReport", "add_cli", "decode_capture", "main"]


@dataclass
class DecodeReport:
    """What decoding a capture gave: the backup's table, when it was listed (``now``,
    seconds), and counts."""

    table: BackupTable
    now: float = 0.0
    datagrams: int = 0
    messages_ok: int = 0
    messages_partial: int = 0  # some records used, then a fatal error
    messages_dropped: int = 0  # nothing used
    versions: Counter[int] = field(default_factory=Counter)
    records: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def entries(self) -> list[dict[str, Any]]:
        return self.table.entries(self.now)

    def summary(self) -> dict[str, Any]:
        return {
            "datagrams": self.datagrams,
            "messages_ok": self.messages_ok,
            "messages_partial": self.messages_partial,
            "messages_dropped": self.messages_dropped,
            "v1": self.versions.get(1, 0),
            "v0": self.versions.get(0, 0),
            "records": self.records,
            "connections": len(self.entries()),
            "table": dict(sorted(self.table.counts.items())),
            "drops": dict(sorted(self.drops.items())),
            "drops_total": sum(self.drops.values()),
        }

    def summary_line(self) -> str:
        s = self.summary()
        drops = ", ".join(f"{k} {v}" for k, v in s["drops"].items()) or "none"
        return (
            f"fastvs: sync: {s['datagrams']} datagrams ({s['v1']} v1, {s['v0']} v0; "
            f"{s['messages_partial']} partial, {s['messages_dropped']} dropped), "
            f"{s['records']} records, {s['connections']} connections; dropped: {drops}"
        )


def decode_capture(
    path: str,
    *,
    syncid: int = 0,
    port: int | None = SYNC_PORT,
    group: str | None = SYNC_GROUP,
    table: BackupTable | None = None,
    mtu: int = 1500,
    at: float | None = None,
) -> DecodeReport:
    """Feed every sync datagram of a capture to a backup table. Raises CaptureError for
    an unreadable capture; malformed datagrams are only counted."""
    rep = DecodeReport(table if table is not None else BackupTable())
    maxlen = sync_maxlen(mtu, backup=True)
    t0: float | None = None
    last = 0.0
    for d in iter_datagrams(path, port, group):
        ts = d.ts / 1e9
        if t0 is None:
            t0 = ts
        last = max(last, ts)  # the backup's clock never runs backwards
        rep.datagrams += 1
        res = decode_message(d.payload, syncid, maxlen=maxlen)
        rep.drops.update(res.drops)
        if res.version is not None:
            rep.versions[res.version] += 1
        if res.drops and not res.conns and (res.fatal or res.version is None):
            rep.messages_dropped += 1
        elif res.fatal:
            rep.messages_partial += 1
        else:
            rep.messages_ok += 1
        rep.records += len(res.conns)
        rep.table.apply_all(res.conns, last)
    rep.now = last if at is None else (t0 or 0.0) + at
    rep.table.expire(rep.now)
    return rep


def _parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    if p is None:
        p = argparse.ArgumentParser(
            prog="fastvs sync decode",
            description="List the connections a backup director would build from the "
            "IPVS sync messages in a capture.",
        )
    p.add_argument("capture", help="capture of sync datagrams (pcap or pcapng)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the listing")
    p.add_argument("--syncid", type=int, default=0, help="the backup's sync id (0: take every id)")
    p.add_argument("--port", type=int, default=SYNC_PORT, help="UDP port (default 8848)")
    p.add_argument("--group", default=SYNC_GROUP, help="multicast group (default 224.0.0.81)")
    p.add_argument("--any-group", action="store_true", help="any destination address")
    p.add_argument("-r", "--rules", help="the backup's rules (to bind its real servers)")
    p.add_argument(
        "--mtu", type=int, default=1500, help="the backup interface's MTU (default 1500)"
    )
    p.add_argument("--at", type=float, help="list at this many seconds after the first datagram")
    return p


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def run(a: argparse.Namespace) -> int:
    """Run a parsed ``decode`` command; raises FastvsError subclasses."""
    if not 0 <= a.syncid <= 255:
        raise _ArgError(f"--syncid {a.syncid}: must be 0..255")
    if not 1 <= a.port <= 65535:
        raise _ArgError(f"--port {a.port}: must be 1..65535")
    if not 68 <= a.mtu <= 65535:
        raise _ArgError(f"--mtu {a.mtu}: must be 68..65535")
    table = BackupTable()
    if a.rules:
        from fastvs.control.rules import load_rules

        table = BackupTable(load_rules(a.rules))
    try:
        rep = decode_capture(
            a.capture,
            syncid=a.syncid,
            port=a.port,
            group=None if a.any_group else a.group,
            table=table,
            mtu=a.mtu,
            at=a.at,
        )
    except FileNotFoundError as e:
        raise CaptureError(f"{a.capture}: {e.strerror}") from None
    except IsADirectoryError:
        raise CaptureError(f"{a.capture}: is a directory") from None
    except OSError as e:
        raise CaptureError(f"{a.capture}: {e.strerror or e}") from None
    entries = rep.entries()
    if a.json:
        out = {
            "version": 1,
            "connections": [
                {
                    **{k: v for k, v in e.items() if k != "expire"},
                    "expire": int(e["expire"]),
                }
                for e in entries
            ],
            "summary": rep.summary(),
        }
        sys.stdout.write(json.dumps(out, indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write(format_conns(entries))
        print(rep.summary_line(), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``fastvs sync decode`` as a function: exit 0, 2 (bad arguments: one line),
    3 (bad capture: one line)."""
    p = _parser(_Parser(prog="fastvs sync decode", add_help=True))
    try:
        a = p.parse_args(argv)
        return run(a)
    except _ArgError as e:
        print(f"fastvs: sync decode: {e}", file=sys.stderr)
        return 2
    except FastvsError as e:
        print(f"fastvs: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 0


def add_cli(sub: Any) -> None:
    """Register ``fastvs sync decode`` on the CLI's subparsers (for whoever wires it):
    ``a.func(a)`` runs it. Argument errors then come from argparse (exit 2)."""
    s = sub.add_parser("sync", help="the IPVS connection-sync protocol")
    ss = s.add_subparsers(dest="sync_cmd", required=True)
    d = ss.add_parser("decode", help="list the connections a backup builds from a sync capture")
    _parser(d)

    def _run(a: argparse.Namespace) -> int:
        try:
            return run(a)
        except _ArgError as e:
            print(f"fastvs: sync decode: {e}", file=sys.stderr)
            return 2

    d.set_defaults(func=_run)


if __name__ == "__main__":
    sys.exit(main())
