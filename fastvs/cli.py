"""The ``fastvs`` command: process captures, list rules, generate traffic, benchmark.

Exit status: 0 success; 1 other fastvs error; 2 bad rules, bad option value or bad
command-line usage; 3 bad or missing capture file; 4 engine error; 130 interrupted.
Every error is one line on stderr: ``fastvs: WHERE: what is wrong``, WHERE being a file
(and line or record) or an option (``--capacity``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from fastvs.errors import CaptureError, FastvsError, OptionError, RulesError

DEMO_FILES = ("demo.pcap", "demo.rules")
MAX_CHUNK_MB = 4095  # a chunk's offsets are 32-bit


class _Parser(argparse.ArgumentParser):
    """argparse with fastvs's one-line errors: ``fastvs: --capacity: invalid int value:
    'x' (see fastvs process --help)``, exit status 2."""

    def error(self, message: str) -> Any:  # argparse's signature returns NoReturn
        if message.startswith("argument "):
            message = message[len("argument "):]
        self.exit(2, f"fastvs: {message} (see {self.prog} --help)\n")


def _read_text(path: str, what: str) -> str:
    """A small text input named by an option (--marks, --neigh): read errors are bad input."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError("no such file", source=path) from None
    except UnicodeDecodeError as e:
        raise RulesError(f"{what} is not UTF-8 text (byte {e.start})", source=path) from None
    except OSError as e:
        raise RulesError(f"cannot read {what}: {e.strerror}", source=path) from None


def _check_output_dir(option: str, path: str | None) -> None:
    """Refuse an output path whose folder does not exist before the work starts."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OptionError(option, f"{path}: no such directory {folder}")
    if os.path.isdir(path):
        raise OptionError(option, f"{path} is a directory")


def demo_path(name: str) -> Path:
    """A bundled demo file (installed with the package)."""
    return Path(str(resources.files("fastvs") / "demo" / name))


def _load_rules(path: str, order: str) -> Any:
    from fastvs.control.rules import load_rules

    if not os.path.exists(path):
        raise RulesError("no such file", source=path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rules = load_rules(path, order=order)  # type: ignore[arg-type]
    for w in caught:  # keepalived.conf: what fastvs does not act on, once each
        print(f"fastvs: warning: {w.message}", file=sys.stderr)
    return rules


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="fastvs", leave=False)


# -- process ------------------------------------------------------------------------------
def cmd_process(a: argparse.Namespace) -> int:
    from fastvs.capture.pcap import Writer, open_capture
    from fastvs.control.director import Director
    from fastvs.control.listing import format_conns, format_list, format_stats, to_json

    demo = a.input is None
    inp = str(demo_path("demo.pcap")) if demo else a.input
    rules_path = a.rules or (str(demo_path("demo.rules")) if demo else None)
    if rules_path is None:
        raise RulesError("no rules given: use -r RULES (ipvsadm -S -n format)")
    if not 1 <= a.chunk_mb <= MAX_CHUNK_MB:
        raise OptionError("chunk_mb", f"must be between 1 and {MAX_CHUNK_MB}, not {a.chunk_mb}")
    if a.output and a.dropped and os.path.abspath(a.output) == os.path.abspath(a.dropped):
        raise OptionError("dropped", "the same file as --output")
    rules_at = [_rules_at_spec(spec) for spec in a.rules_at or []]
    rules = _load_rules(rules_path, a.rules_order)
    if not os.path.exists(inp):
        raise CaptureError(f"{inp}: no such file")
    marks = None
    if a.marks:
        from fastvs.control.director import parse_marks

        marks = parse_marks(_read_text(a.marks, "the marks file"), source=a.marks)
    neigh = None
    if a.neigh:
        from fastvs.control.director import parse_neigh

        neigh = parse_neigh(_read_text(a.neigh, "the neighbour file"), source=a.neigh)
    from fastvs.cluster.cli import process_cluster, wants_cluster  # many directors (ECMP)

    if wants_cluster(a):
        return process_cluster(a, inp, rules_path, rules, rules_at, marks, neigh, demo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        director = Director(
            rules,
            capacity=a.capacity,
            seed=a.seed,
            keep_ttl=a.keep_ttl,
            director_view=a.director_view,
            truncated=a.truncated,
            expire_nodest_conn=a.expire_nodest_conn,
            expire_quiescent_template=a.expire_quiescent_template,
            marks=marks,
            neigh=neigh,
            tunnel_source=a.tunnel_source,
            tunnel_mtu=a.tunnel_mtu,
            drop_entry=a.drop_entry,
            drop_packet=a.drop_packet,
            secure_tcp=a.secure_tcp,
            sloppy_tcp=a.sloppy_tcp,
        )
    for w in caught:
        print(f"fastvs: warning: {w.message}", file=sys.stderr)
    for ns, path in rules_at:
        director.rules_at(ns, _load_rules(path, a.rules_order))
    sync_master = _sync_master(a, director, inp)
    sync_in = _sync_in(a, rules) if a.sync_in else None
    sync_rows = sync_in[1] if sync_in is not None else None
    sync_inserted = 0

    t0 = time.perf_counter()
    reader = open_capture(inp, chunk_bytes=a.chunk_mb << 20, keep_going=a.keep_going)
    size = os.path.getsize(inp)
    show = not a.quiet and not a.no_progress and sys.stderr.isatty() and size > (8 << 20)
    bar = _progress(size, show)
    fmt = a.out_format if a.out_format != "same" else None
    writer = dropped = None
    try:
        writer = Writer(a.output, like=reader, format=fmt) if a.output else None
        dropped = Writer(a.dropped, like=reader, format=fmt) if a.dropped else None
        with reader:
            for batch in reader:
                if sync_rows is not None and len(batch):
                    # the backup takes over at the first packet: its entries' time left
                    # counts from there
                    sync_inserted = director.insert_sync_conns(sync_rows, int(batch.ts[0]))
                    sync_rows = None
                director.process(batch)
                if sync_master is not None:
                    sync_master.feed(director.take_sync_events())
                if writer is not None:
                    writer.write(batch)
                if dropped is not None:
                    dropped.write(batch, batch.verdict >= 64)
                if bar is not None:
                    bar.update(int(batch.caplen.sum()) + 16 * len(batch))
        if writer is not None:
            writer.close()
        if dropped is not None:
            dropped.close()
        if sync_master is not None:
            sync_master.write(a.sync_out)
    except BaseException:
        reader.close()
        if writer is not None:
            writer.abort()
        if dropped is not None:
            dropped.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0

    summary = director.summary()
    summary["input"] = inp
    summary["rules"] = rules_path
    summary["output"] = a.output
    summary["seconds"] = round(elapsed, 6)
    summary["bad_records"] = reader.bad_records
    summary["reloads"] = [f"t+{(at - (director.first_ts or at)) / 1e9:g}s {line}" for at, line in director.reload_log]
    if sync_master is not None:
        summary["sync_out"] = {"path": a.sync_out, "messages": len(sync_master.messages),
                               "records": sync_master.records,
                               "lost": director.engine.sync_events_lost}
    if sync_in is not None:
        rep = sync_in[0]
        summary["sync_in"] = {"path": a.sync_in, "datagrams": rep.datagrams,
                              "records": rep.records, "entries": len(sync_in[1]),
                              "inserted": sync_inserted,
                              "skipped": int(director.engine.insert_skipped),
                              "drops": dict(sorted(rep.drops.items()))}
    services = director.services()
    conns = director.connections() if a.conns or a.json else []
    if a.json:
        doc = to_json(services, conns, summary["drops"])
        doc["summary"] = summary
        doc["verdicts"] = director.counters()
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    if a.quiet:
        return 0
    out = sys.stdout
    if demo:
        out.write(f"fastvs demo: {inp}\n  rules: {rules_path}\n\n")
    out.write(format_list(services))
    out.write("\n")
    out.write(format_stats(services))
    if a.conns:
        out.write("\n")
        out.write(format_conns(conns))
    out.write("\n")
    out.write(_summary_text(summary, director.counters()))
    return 0


def _sync_master(a: argparse.Namespace, director: Any, inp: str) -> Any:
    """--sync-out and the sync sysctls: a SyncMaster fed by the director's engine (the
    kernel's master decision runs in the engine's loop), or None."""
    import ipaddress

    if not 0 <= a.syncid <= 255:
        raise OptionError("syncid", f"must be between 0 and 255, not {a.syncid}")
    threshold, period = a.sync_threshold
    if a.sync_maxlen is not None and not 1 <= a.sync_maxlen <= 65507:
        raise OptionError("sync_maxlen", f"must be between 1 and 65507, not {a.sync_maxlen}")
    if a.sync_in_syncid is not None and not 0 <= a.sync_in_syncid <= 255:
        raise OptionError("sync_in_syncid", f"must be between 0 and 255, not {a.sync_in_syncid}")
    try:
        ip = ipaddress.ip_address(a.sync_src)
    except ValueError:
        raise OptionError("sync_src", f"not an IPv4 address: {a.sync_src!r}") from None
    if ip.version != 4:
        raise OptionError("sync_src", f"not an IPv4 address: {a.sync_src!r}")
    kw = dict(version=a.sync_version, threshold=threshold, period=period,
              refresh_period=a.sync_refresh_period, retries=a.sync_retries,
              persist_mode=a.sync_persist_mode)
    _check_sync_values(kw)  # also without --sync-out: as the kernel's sysctls take them
    if a.sync_out is None:
        return None
    _check_output_dir("sync_out", a.sync_out)
    for opt, other in (("output", a.output), ("dropped", a.dropped), ("input", inp)):
        if other and os.path.abspath(other) == os.path.abspath(a.sync_out):
            raise OptionError("sync_out", f"the same file as --{opt}" if opt != "input"
                              else "the same file as the input capture")
    from fastvs.sync.master import SyncMaster
    from fastvs.sync.proto import sync_maxlen

    director.enable_sync_master(**kw)
    maxlen = sync_maxlen(configured=a.sync_maxlen) if a.sync_maxlen else sync_maxlen()
    return SyncMaster(a.syncid, version=a.sync_version, maxlen=maxlen, src=a.sync_src)


def _check_sync_values(kw: dict[str, Any]) -> None:
    from fastvs.control.director import _int_option

    for name, key, lo, hi in (("sync_threshold", "threshold", 0, 2**31 - 1),
                              ("sync_threshold", "period", 0, 2**31 - 1),
                              ("sync_retries", "retries", 0, 3),
                              ("sync_refresh_period", "refresh_period", 0, 86400 * 365)):
        _int_option(name, kw[key], lo, hi)
    if kw["period"] and kw["threshold"] >= kw["period"]:
        raise OptionError("sync_threshold", f"the threshold ({kw['threshold']}) must be below "
                          f"the period ({kw['period']}), or the period 0")


def _sync_in(a: argparse.Namespace, rules: Any) -> Any:
    """--sync-in: (the decode report, BACKUP_CONN_DTYPE rows of what the backup held at
    the capture's last sync message)."""
    from fastvs.sync.backup import BackupTable
    from fastvs.sync.decode import decode_capture

    if os.path.isdir(a.sync_in):
        raise CaptureError(f"{a.sync_in}: is a directory")
    if not os.path.exists(a.sync_in):
        raise CaptureError(f"{a.sync_in}: no such file")
    syncid = a.syncid if a.sync_in_syncid is None else a.sync_in_syncid
    table = BackupTable(rules, sync_threshold=a.sync_threshold[0])
    try:
        rep = decode_capture(a.sync_in, syncid=syncid, table=table)
    except OSError as e:
        raise CaptureError(f"{a.sync_in}: {e.strerror or e}") from None
    return rep, rep.table.to_array(rep.now)


# the latest --rules-at time: far beyond any capture, and an int64 of nanoseconds
MAX_RULES_AT_SECONDS = 100 * 365 * 86400


def _rules_at_spec(spec: str) -> tuple[int, str]:
    """``SECONDS:FILE`` -> (nanoseconds after the first packet, FILE)."""
    when, sep, path = spec.partition(":")
    try:
        seconds = float(when)
    except ValueError:
        seconds = math.nan
    if not sep or not path or not math.isfinite(seconds):
        raise OptionError("rules_at", f"{spec!r}: expected SECONDS:FILE (seconds after the first packet)")
    if not 0 <= seconds <= MAX_RULES_AT_SECONDS:
        raise OptionError("rules_at", f"{spec!r}: seconds must be between 0 and {MAX_RULES_AT_SECONDS}")
    return int(seconds * 1e9), path


def _summary_text(s: dict[str, Any], counters: dict[str, int]) -> str:
    rate = s["packets_in"] / s["seconds"] if s["seconds"] > 0 else 0.0
    lines = [
        f"packets in {s['packets_in']}  out {s['packets_out']}  dropped {s['dropped']}"
        f"  ({s['seconds']:.3f} s, {rate / 1e6:.2f} Mpps end to end)",
        f"  forwarded to real servers {s['forwarded_in'] + s['forwarded_dr'] + s['forwarded_tun']}"
        f"  replies rewritten {s['forwarded_out']}  not IPVS's (passed on) {s['passed']}"
        f"  connections live {s['connections']}",
    ]
    for name, n in counters.items():
        if not name.startswith("fwd_") or name in ("fwd_dr", "fwd_tun"):
            lines.append(f"  {name:<24} {n}")
    for line in s.get("reloads", []):
        lines.append(f"  rules change: {line}")
    if "sync_in" in s:
        si = s["sync_in"]
        drops = ", ".join(f"{k} {v}" for k, v in si["drops"].items()) or "none"
        lines.append(f"  sync in: {si['inserted']} connections taken over from {si['path']} "
                     f"({si['datagrams']} datagrams, {si['records']} records; dropped: {drops})")
    if "sync_out" in s:
        so = s["sync_out"]
        lines.append(f"  sync out: {so['records']} records in {so['messages']} messages "
                     f"written to {so['path']}")
    if s.get("bad_records"):
        lines.append(f"  bad capture records skipped {s['bad_records']}")
    if s.get("output"):
        lines.append(f"  written to {s['output']}")
    return "\n".join(lines) + "\n"


# -- list ---------------------------------------------------------------------------------
def cmd_list(a: argparse.Namespace) -> int:
    from fastvs.control.listing import format_list, format_stats, format_timeout, to_json
    from fastvs.control.rules import format_rules

    rules = _load_rules(a.rules, a.rules_order)
    if a.save:
        sys.stdout.write(format_rules(rules))
        return 0
    zero = dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes",
                          "cps", "inpps", "outpps", "inbps", "outbps"), 0)
    services = []
    for svc in rules.services:
        services.append({
            "proto": svc.proto, "addr": svc.addr, "port": svc.port, "fwmark": svc.fwmark,
            "scheduler": svc.scheduler, "persistent": svc.persistent, "netmask": svc.netmask,
            "ops": svc.ops, "sched_flags": list(svc.sched_flags), "stats": dict(zero),
            "reals": [{"addr": r.addr, "port": r.port, "fwd": r.fwd, "weight": r.weight,
                       "activeconns": 0, "inactconns": 0, "stats": dict(zero)} for r in svc.reals],
        })
    if a.json:
        json.dump(to_json(services), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif a.stats:
        sys.stdout.write(format_stats(services))
    elif a.timeout:
        t = rules.timeouts.effective()
        sys.stdout.write(format_timeout(t.tcp, t.tcpfin, t.udp))
    else:
        sys.stdout.write(format_list(services))
    return 0


# -- gen ----------------------------------------------------------------------------------
def cmd_gen(a: argparse.Namespace) -> int:
    from fastvs.gen.traffic import generate

    _check_output_dir("output", a.output)
    rules_path = a.replies_for or a.rules
    rules = _load_rules(rules_path, a.rules_order) if rules_path else None
    try:
        res = _generate(generate, a, rules)
    except RulesError as e:
        if e.source is None and rules_path:  # what the rules lack, said of the file
            raise RulesError(str(e), source=rules_path) from None
        raise
    if not a.quiet:
        print(f"wrote {res.packets} packets of {res.flows} flows "
              f"({res.tcp_flows} TCP, {res.udp_flows} UDP) to {a.output}")
    return 0


def _generate(generate: Any, a: argparse.Namespace, rules: Any) -> Any:
    return generate(
        a.output,
        flows=a.flows,
        packets=a.packets,
        rules=rules,
        replies=a.replies_for is not None,
        seed=a.seed,
        udp_share=a.udp_share,
        rst_share=a.rst_share,
        payload=a.payload,
        progress=not a.quiet and sys.stderr.isatty(),
    )


# -- bench --------------------------------------------------------------------------------
def cmd_bench(a: argparse.Namespace) -> int:
    from fastvs.gen.traffic import MAX_FLOWS

    for f in a.flows:
        if not 1 <= f <= MAX_FLOWS:
            raise OptionError("flows", f"must be between 1 and {MAX_FLOWS}, not {f}")
    if a.packets < 1:
        raise OptionError("packets", f"must be at least 1, not {a.packets}")
    if a.rounds < 1:
        raise OptionError("rounds", f"must be at least 1, not {a.rounds}")
    _check_output_dir("json", a.json)
    _check_output_dir("plot", a.plot)
    from fastvs.bench.run import main as bench_main

    return bench_main(a)


# -- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fastvs",
        description="The Linux LVS/IPVS director's data path in user space.",
    )
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser(
        "process",
        help="run a capture through the director (no arguments: the bundled demo)",
        description="Run every packet of a capture through an LVS director in NAT mode "
        "and write what the director would have sent on the wire.",
    )
    pr.add_argument("input", nargs="?", help="capture to read (pcap or pcapng); default: the demo")
    pr.add_argument("-o", "--output", help="write the balanced capture here")
    pr.add_argument("-r", "--rules", help="rules in ipvsadm -S -n format")
    pr.add_argument("--dropped", metavar="PCAP", help="write dropped packets here")
    pr.add_argument("--out-format", choices=("same", "pcap", "pcapng"), default="same",
                    help="output capture format (default: the input's)")
    pr.add_argument("--json", action="store_true", help="print listing, connections and counters as JSON")
    pr.add_argument("-c", "--conns", action="store_true", help="also list connections (ipvsadm -L -n -c)")
    pr.add_argument("--seed", type=int, default=None, help="connection-table hash seed (default random)")
    pr.add_argument("--capacity", type=int, default=1 << 20, help="connection table size (default 1048576)")
    pr.add_argument("--keep-ttl", action="store_true", help="do not decrement TTL on forwarded packets")
    pr.add_argument("--director-view", action="store_true",
                    help="non-IPVS traffic as the director's stack sees it: to a VIP is "
                    "delivered locally (dropped from the output), the rest routed (TTL-1)")
    pr.add_argument("--truncated", choices=("balance", "drop"), default="balance",
                    help="packets cut by the snap length: balance by headers (default) or drop")
    pr.add_argument("--expire-nodest-conn", action="store_true",
                    help="end connections whose real server was removed (sysctl expire_nodest_conn)")
    pr.add_argument("--expire-quiescent-template", action="store_true",
                    help="persistence templates of a weight-0 real server end (sysctl)")
    pr.add_argument("--neigh", metavar="FILE",
                    help="real servers' MAC addresses for direct routing: lines 'IP MAC'")
    pr.add_argument("--tunnel-source", metavar="ADDR",
                    help="outer source address of IPIP tunnels (default: the first VIP)")
    pr.add_argument("--tunnel-mtu", type=int, default=1500,
                    help="route MTU toward tunnelled real servers (DF packets above it are dropped)")
    pr.add_argument("--rules-at", action="append", metavar="SECONDS:FILE",
                    help="switch to the rules in FILE that many seconds after the first packet "
                    "(as ipvsadm commands would: connections are kept); repeatable")
    pr.add_argument("--drop-entry", type=int, choices=(0, 1, 3), default=1,
                    help="flood defense: drop random half-open entries when the table is "
                    "nearly full (1, default), never (0) or always (3)")
    pr.add_argument("--drop-packet", type=int, choices=(0, 1, 3), default=0,
                    help="flood defense: refuse 1 in N new connections when nearly full")
    pr.add_argument("--secure-tcp", type=int, choices=(0, 1, 3), default=0,
                    help="flood defense: the kernel's tcp_states_dos state table when nearly full")
    pr.add_argument("--sloppy-tcp", action="store_true",
                    help="any TCP segment without RST may make a connection, not only a SYN "
                    "(sysctl net.ipv4.vs.sloppy_tcp)")
    pr.add_argument("--marks", metavar="FILE",
                    help="firewall marks for -f services: lines 'MARK PROTO NETWORK [PORT]'")
    pr.add_argument("--rules-order", choices=("kernel", "file"), default="kernel",
                    help="real-server list order: as ipvsadm -R builds it (default) or file order")
    sy = pr.add_argument_group(
        "connection sync (the kernel's sync daemon, ip_vs_sync.c)",
        "--sync-out writes the sync messages a master would have sent while handling the "
        "input; --sync-in starts the director with the connections a backup built from a "
        "sync capture (a failover replay).")
    sy.add_argument("--sync-out", metavar="SYNC.pcap",
                    help="write the master's sync messages (UDP to 224.0.0.81:8848) here")
    sy.add_argument("--syncid", type=int, default=0,
                    help="sync id of the messages (0-255, default 0); also --sync-in's filter")
    sy.add_argument("--sync-version", type=int, choices=(0, 1), default=1,
                    help="message version (sysctl sync_version, default 1)")
    sy.add_argument("--sync-threshold", type=int, nargs=2, metavar=("T", "P"), default=[3, 50],
                    help="send a connection at its T-th input packet and every P after "
                    "(sysctl sync_threshold, default 3 50)")
    sy.add_argument("--sync-refresh-period", type=int, default=0, metavar="S",
                    help="re-send a connection when its timer moved by this many seconds "
                    "(sysctl sync_refresh_period, default 0: off)")
    sy.add_argument("--sync-retries", type=int, default=0, metavar="N",
                    help="re-sends within a refresh period (sysctl sync_retries, 0-3)")
    sy.add_argument("--sync-persist-mode", action="store_true",
                    help="send only the templates of persistent connections (sync_persist_mode)")
    sy.add_argument("--sync-maxlen", type=int, default=None, metavar="N",
                    help="longest message, UDP payload bytes (default 1472)")
    sy.add_argument("--sync-src", default="0.0.0.0", metavar="ADDR",
                    help="source address of the written sync datagrams (default 0.0.0.0)")
    sy.add_argument("--sync-in", metavar="SYNC.pcap",
                    help="start with the connections a backup built from these sync messages")
    sy.add_argument("--sync-in-syncid", type=int, default=None, metavar="N",
                    help="the backup's sync id for --sync-in (default --syncid; 0: any)")
    pr.add_argument("--chunk-mb", type=int, default=4, help="read the capture in chunks of this size")
    pr.add_argument("--keep-going", action="store_true", help="skip a truncated last record instead of failing")
    pr.add_argument("-q", "--quiet", action="store_true")
    pr.add_argument("--no-progress", action="store_true")
    from fastvs.cluster.cli import add_options as add_cluster_options

    add_cluster_options(pr)  # --directors N, --ecmp-hash FIELDS, --dask ADDRESS
    pr.set_defaults(func=cmd_process)

    ls = sub.add_parser("list", help="list rules like ipvsadm -L -n")
    ls.add_argument("-r", "--rules", required=True)
    ls.add_argument("--stats", action="store_true", help="ipvsadm -L -n --stats layout")
    ls.add_argument("--timeout", action="store_true", help="ipvsadm -L --timeout")
    ls.add_argument("-S", "--save", action="store_true", help="print the rules as ipvsadm -S -n")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--rules-order", choices=("kernel", "file"), default="kernel")
    ls.set_defaults(func=cmd_list)

    g = sub.add_parser("gen", help="generate synthetic traffic")
    g.add_argument("-o", "--output", required=True)
    g.add_argument("--flows", type=int, default=1000)
    g.add_argument("--packets", type=int, default=10000)
    g.add_argument("--replies-for", metavar="RULES",
                   help="add the real servers' replies, from the server these rules pick")
    g.add_argument("-r", "--rules", help="aim the traffic at these rules' services (no replies)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--udp-share", type=float, default=0.2)
    g.add_argument("--rst-share", type=float, default=0.1)
    g.add_argument("--payload", type=int, default=0, help="payload bytes per data segment")
    g.add_argument("--rules-order", choices=("kernel", "file"), default="kernel")
    g.add_argument("-q", "--quiet", action="store_true")
    g.set_defaults(func=cmd_gen)

    b = sub.add_parser("bench", help="measure throughput against references")
    b.add_argument("--flows", type=int, nargs="+", default=[1000, 100_000])
    b.add_argument("--packets", type=int, default=2_000_000)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--json", metavar="FILE", help="write results as JSON")
    b.add_argument("--plot", metavar="PNG", help="plot throughput (needs matplotlib)")
    b.add_argument("--no-refs", action="store_true", help="skip the C and dpkt references")
    b.set_defaults(func=cmd_bench)

    from fastvs.live.cli import add_cli

    add_cli(sub)

    c = sub.add_parser("ctl", help="control a running fastvs forward (list, weight, drain, "
                       "add, remove, reload, health)", add_help=False)
    c.add_argument("argv", nargs=argparse.REMAINDER, help="fastvs ctl --help")
    c.set_defaults(func=cmd_ctl)

    ch = sub.add_parser("check", help="run a keepalived.conf's health checks once",
                        description="Run every health checker of a keepalived.conf once and "
                        "print each real server's state and the table they imply. Exit 0: all "
                        "up, 1: some down, 2: bad configuration.")
    ch.add_argument("-r", "--rules", required=True, metavar="KEEPALIVED.CONF")
    ch.add_argument("--json", action="store_true", help="states and table as JSON")
    ch.set_defaults(func=cmd_check)

    from fastvs.sync.decode import add_cli as add_sync

    add_sync(sub)
    return p


def cmd_ctl(a: argparse.Namespace) -> int:
    from fastvs.control.ctl import main as ctl_main

    return ctl_main(a.argv)


def cmd_check(a: argparse.Namespace) -> int:
    from fastvs.health.__main__ import main as health_main

    return health_main([a.rules, *(["--json"] if a.json else [])])


def _version() -> str:
    from fastvs import __version__

    return f"fastvs {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:  # its own parser: options before and after the command
        from fastvs.control.ctl import main as ctl_main

        try:
            return ctl_main(args[1:])
        except BrokenPipeError:
            return 0
    parser = build_parser()
    a = parser.parse_args(args)
    try:
        return int(a.func(a) or 0)
    except OptionError as e:
        print(f"fastvs: {e.flag}: {e.message}", file=sys.stderr)
        return e.exit_code
    except FastvsError as e:
        print(f"fastvs: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fastvs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
