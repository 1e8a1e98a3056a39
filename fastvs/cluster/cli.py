"""``fastvs process ... --directors N [--ecmp-hash FIELDS] [--dask ADDRESS]``: the
process command's many-directors mode. Prints, for each director and then for all of
them, the listing the process command prints for one (``ipvsadm -L -n``, ``--stats``,
``-c`` with ``-c``, the packet accounting); ``--json`` gives the same as one document."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import TYPE_CHECKING, Any

from fastvs.errors import OptionError

if TYPE_CHECKING:  # the engine loads only when the mode runs, not to build the parser
    from fastvs.cluster.run import ClusterResult
    from fastvs.control.rules import Rules

__all__ = ["add_options", "process_cluster", "wants_cluster"]


def add_options(pr: argparse.ArgumentParser) -> None:
    """The process command's options for many directors."""
    pr.add_argument("--directors", type=int, metavar="N",
                    help="shard the capture over N directors behind an ECMP router, one "
                    "engine each, and merge their outputs in timestamp order")
    pr.add_argument("--ecmp-hash", metavar="FIELDS",
                    help="what the router hashes of the client side of a flow: l4 (address, "
                    "port, protocol; default), l3 (address), net/LEN[,LEN6] (client network)")
    pr.add_argument("--dask", metavar="ADDRESS",
                    help="run the directors as tasks on this dask.distributed scheduler "
                    "(default: local processes)")


def wants_cluster(a: argparse.Namespace) -> bool:
    return any(getattr(a, k, None) is not None for k in ("directors", "ecmp_hash", "dask"))


def process_cluster(a: argparse.Namespace, inp: str, rules_path: str, rules: Rules,
                    rules_at: list[tuple[int, str]], marks: Any, neigh: Any, demo: bool) -> int:
    from fastvs.cli import _check_output_dir, _load_rules
    from fastvs.cluster.run import run_cluster
    from fastvs.cluster.shard import parse_ecmp_hash
    from fastvs.control.director import Director

    if a.directors is None:
        flag = "--ecmp-hash" if a.ecmp_hash is not None else "--dask"
        raise OptionError(flag, "needs --directors N")
    for opt in ("sync_out", "sync_in"):
        # one sync stream is one director's; N directors would each need their own
        if getattr(a, opt, None):
            raise OptionError(opt, "is one director's; it cannot be used with --directors")
    ecmp = parse_ecmp_hash(a.ecmp_hash or "l4")
    _check_output_dir("output", a.output)
    _check_output_dir("dropped", a.dropped)
    options = dict(
        capacity=a.capacity, seed=a.seed, keep_ttl=a.keep_ttl, director_view=a.director_view,
        truncated=a.truncated, expire_nodest_conn=a.expire_nodest_conn,
        expire_quiescent_template=a.expire_quiescent_template, marks=marks, neigh=neigh,
        tunnel_source=a.tunnel_source, tunnel_mtu=a.tunnel_mtu, drop_entry=a.drop_entry,
        drop_packet=a.drop_packet, secure_tcp=a.secure_tcp,
    )
    with warnings.catch_warnings(record=True) as caught:  # one director built here: its
        warnings.simplefilter("always")  # errors and warnings show once, before any work
        Director(rules, **options)
    for w in caught:
        print(f"fastvs: warning: {w.message}", file=sys.stderr)
    changes = [(ns, _load_rules(path, a.rules_order)) for ns, path in rules_at]
    res = run_cluster(
        inp, rules, directors=a.directors, ecmp=ecmp, options=options, rules_at=changes,
        output=a.output, dropped=a.dropped, out_format=a.out_format, chunk_bytes=a.chunk_mb << 20,
        keep_going=a.keep_going, dask=a.dask, conns=a.conns or a.json,
    )
    res.total_summary.update(input=inp, rules=rules_path, output=a.output,
                             bad_records=res.bad_records)
    if a.json:
        json.dump(to_json(res), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    if not a.quiet:
        if demo:
            sys.stdout.write(f"fastvs demo: {inp}\n  rules: {rules_path}\n\n")
        sys.stdout.write(format_cluster(res, a.conns))
    return 0


def _block(services: list[dict[str, Any]], conns: list[dict[str, Any]] | None,
           summary: dict[str, Any], counters: dict[str, int]) -> str:
    from fastvs.cli import _summary_text
    from fastvs.control.listing import format_conns, format_list, format_stats

    out = [format_list(services), "\n", format_stats(services)]
    if conns is not None:
        out += ["\n", format_conns(conns)]
    out += ["\n", _summary_text(summary, counters)]
    return "".join(out)


def format_cluster(res: ClusterResult, conns: bool = False) -> str:
    """Each director's listing and accounting, then all directors' together."""
    n = len(res.directors)
    out = []
    for r in res.directors:
        out.append(f"== director {r.index + 1} of {n} (ECMP hash {res.ecmp.name}): "
                   f"{r.summary['packets_in']} packets ==\n")
        out.append(_block(r.services, r.connections if conns else None, r.summary, r.counters))
        out.append("\n")
    out.append(f"== all {n} directors ==\n")
    out.append(_block(res.total_services, res.total_connections if conns else None,
                      res.total_summary, res.total_counters))
    return "".join(out)


def to_json(res: ClusterResult) -> dict[str, Any]:
    from fastvs.control.listing import to_json as listing_json

    def doc(services: list[dict[str, Any]], conns: list[dict[str, Any]], summary: dict[str, Any],
            counters: dict[str, int]) -> dict[str, Any]:
        d = listing_json(services, conns, summary.get("drops", {}))
        d["summary"] = summary
        d["verdicts"] = counters
        return d

    return {
        "ecmp_hash": res.ecmp.name,
        "directors": [doc(r.services, r.connections, r.summary, r.counters) for r in res.directors],
        "total": doc(res.total_services, res.total_connections, res.total_summary, res.total_counters),
    }
