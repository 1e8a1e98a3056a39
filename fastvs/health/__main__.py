"""``python -m fastvs.health KEEPALIVED.CONF [--json] [--watch]``: run the health checks
of a keepalived configuration.

Without ``--watch``: every checker once, at the same time (keepalived's first round: one
failure is enough), then each real server's state is printed and the table the checks
imply (``ipvsadm -S -n`` form); exit status 0 when every real server is up, 1 when one is
down, 2 for a bad configuration. With ``--watch``: the checkers run as ``fastvs forward``
will run them, each transition printed as it happens, until interrupted.

This is the reference for ``fastvs check -r FILE`` in the CLI.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings

from fastvs.control.keepalived import read_keepalived_file
from fastvs.control.rules import format_rules
from fastvs.errors import FastvsError
from fastvs.health.monitor import HealthMonitor, check_once
from fastvs.health.report import format_states


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastvs.health", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="keepalived.conf")
    ap.add_argument("--json", action="store_true", help="the states as JSON")
    ap.add_argument("--watch", action="store_true", help="run until interrupted, print transitions")
    args = ap.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = read_keepalived_file(args.config)
    except FastvsError as e:
        print(f"fastvs: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"fastvs: warning: {w.message}", file=sys.stderr)
    if args.watch:
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with HealthMonitor(config, log=lambda line: print(line, flush=True)):
            stop.wait()
        return 0
    mon = check_once(config)
    snap = mon.snapshot()
    if args.json:
        print(json.dumps({"servers": snap, "rules": format_rules(mon.rules())}, indent=1))
    else:
        sys.stdout.write(format_states(snap))
        sys.stdout.write("\n" + format_rules(mon.rules()))
    return 0 if all(s["state"] == "up" for s in snap) else 1


if __name__ == "__main__":
    sys.exit(main())
