"""``fastvs forward``'s command line: its options, the subcommand for the ``fastvs``
command (fastvs/cli.py), and ``python -m fastvs.live`` (the same, standalone). See
docs/forwarder.md for the setup (addresses, sysctls, offloads) and its reasons.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fastvs.errors import FastvsError, OptionError
from fastvs.live.config import IO_KINDS, ForwardConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-r", "--rules", required=True,
                   help="rules in ipvsadm -S -n format (masquerading, -m), or a keepalived.conf "
                   "(its health checks then run and take failed real servers out)")
    p.add_argument("--client-if", metavar="IF", help="interface facing the clients")
    p.add_argument("--server-if", metavar="IF", help="interface facing the real servers")
    p.add_argument("--if", dest="one_arm_if", metavar="IF",
                   help="one-arm director: clients and real servers on one interface")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (AF_PACKET: PACKET_FANOUT; --io xdp: worker k on queue k)")
    p.add_argument("--stats-every", type=float, default=0.0, metavar="S",
                   help="print the listing every S seconds (default: only at exit)")
    p.add_argument("--stats-json", metavar="FILE", help="keep JSON statistics in FILE")
    p.add_argument("--neigh", metavar="FILE", help="static neighbours: 'ip mac' per line (IPv4 or IPv6)")
    p.add_argument("--addr", action="append", default=[], metavar="IP",
                   help="an address of the director fastvs answers ARP / neighbour solicitations "
                   "for (e.g. the real servers' default gateway), IPv4 or IPv6; repeatable")
    p.add_argument("--client-gw", action="append", default=[], metavar="IP",
                   help="router for replies to clients whose MAC is not known (one IPv4 and "
                   "one IPv6 at most)")
    p.add_argument("--batch", type=int, default=256, help="frames taken per socket per round")
    p.add_argument("--io", choices=IO_KINDS, default="ring-v2",
                   help="receive from a memory-mapped TPACKET_V2 ring (default: frame by frame), "
                   "a TPACKET_V3 ring (blocks, handed over full or after --ring-tov-ms) or with recvmmsg")
    p.add_argument("--ring-block-size", type=int, default=1 << 16, metavar="BYTES",
                   help="ring block size (a power of two; default 65536)")
    p.add_argument("--ring-blocks", type=int, default=64, metavar="N", help="ring blocks per socket")
    p.add_argument("--spin-us", type=int, default=0, metavar="US",
                   help="rings and xdp: watch the empty RX rings this many microseconds before "
                   "sleeping (fewer wake-ups under load, at the price of CPU)")
    p.add_argument("--ring-tov-ms", type=int, default=1, metavar="MS",
                   help="a ring block is handed over at the latest MS ms after its first frame")
    p.add_argument("--xdp-ring-size", type=int, default=2048, metavar="N",
                   help="--io xdp: fill, completion, RX and TX ring entries per socket "
                   "(a power of two)")
    p.add_argument("--xdp-busy-poll", type=int, default=0, metavar="US",
                   help="--io xdp: busy-poll the sockets (SO_PREFER_BUSY_POLL, SO_BUSY_POLL US, "
                   "SO_BUSY_POLL_BUDGET --batch); 0: off")
    p.add_argument("--xdp-mode", default=None, metavar="auto|skb|drv",
                   help="--io xdp: attach native (drv), generic (skb) or native else generic "
                   "(auto; default: $FASTVS_XDP_MODE or auto)")
    p.add_argument("--xdp-copy", default=None, metavar="auto|copy|zerocopy",
                   help="--io xdp: socket bind mode (default: $FASTVS_XDP_COPY or copy)")
    p.add_argument("--capacity", type=int, default=1 << 20, help="connection table size")
    p.add_argument("--seed", type=int, default=None, help="connection-table hash seed")
    p.add_argument("--rules-order", choices=("kernel", "file"), default="kernel")
    p.add_argument("--keep-ttl", action="store_true", help="do not decrement TTL")
    p.add_argument("--expire-nodest-conn", action="store_true")
    p.add_argument("--fix-offloads", action="store_true",
                   help="turn off GRO/LRO on the interfaces (ethtool -K)")
    p.add_argument("--no-arp-reply", action="store_true",
                   help="do not answer ARP or neighbour solicitations for the VIPs (another "
                   "box announces them)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final listing")
    p.add_argument("--control", nargs="?", const="/run/fastvs/control.sock", default=None,
                   metavar="PATH", help="serve `fastvs ctl` on this Unix socket (mode 0600; "
                   "without PATH: /run/fastvs/control.sock)")
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="serve Prometheus metrics at http://ADDR:PORT/metrics")
    # connection sync and the master/backup role (fastvs/live/sync.py)
    from fastvs.live.sync import add_sync_arguments

    add_sync_arguments(p)


def config_from_args(a: argparse.Namespace) -> ForwardConfig:
    from fastvs.live.sync import sync_options_from_args

    return ForwardConfig(
        rules=a.rules, client_if=a.client_if, server_if=a.server_if, one_arm_if=a.one_arm_if,
        workers=a.workers, stats_every=a.stats_every, stats_json=a.stats_json,
        neigh_file=a.neigh, addrs=list(a.addr), client_gw=list(a.client_gw), batch=a.batch,
        io=a.io, ring_block_size=a.ring_block_size, ring_blocks=a.ring_blocks,
        ring_tov_ms=a.ring_tov_ms, spin_us=a.spin_us,
        capacity=a.capacity, seed=a.seed, rules_order=a.rules_order, keep_ttl=a.keep_ttl,
        expire_nodest_conn=a.expire_nodest_conn, fix_offloads=a.fix_offloads,
        arp_reply=not a.no_arp_reply, quiet=a.quiet, control=a.control, metrics=a.metrics,
        sync=sync_options_from_args(a), xdp_ring_size=a.xdp_ring_size,
        xdp_busy_poll=a.xdp_busy_poll, **xdp_modes(a),
    )


def xdp_modes(a: argparse.Namespace) -> dict[str, str]:
    """--xdp-mode/--xdp-copy when given (else ForwardConfig takes the environment's)."""
    return {k: v for k in ("xdp_mode", "xdp_copy") if (v := getattr(a, k)) is not None}


def cmd_forward(a: argparse.Namespace) -> int:
    from fastvs.live.supervisor import run

    return run(config_from_args(a))


def add_cli(subparsers: Any) -> None:
    """Register ``fastvs forward`` on the ``fastvs`` command's subparsers."""
    p = subparsers.add_parser(
        "forward",
        help="forward live traffic as an LVS-NAT director (AF_PACKET)",
        description="Carry live TCP/UDP traffic between clients and real servers as an "
        "LVS director in NAT mode, on raw AF_PACKET sockets.",
    )
    add_arguments(p)
    p.set_defaults(func=cmd_forward)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastvs")
    sub = p.add_subparsers(dest="cmd")
    add_cli(sub)
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "forward":
        args = ["forward", *args]
    a = p.parse_args(args)
    try:
        return int(a.func(a) or 0)
    except OptionError as e:
        print(f"fastvs: {e.flag}: {e.message}", file=sys.stderr)
        return e.exit_code
    except FastvsError as e:
        print(f"fastvs: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


__all__ = ["add_arguments", "add_cli", "cmd_forward", "config_from_args", "main"]
