"""Printing the health state: one block per virtual server, one line per real server
with its state, weight, place in the table and each checker's last result."""

from __future__ import annotations

from typing import Any

__all__ = ["format_states"]


def format_states(snapshot: list[dict[str, Any]]) -> str:
    """``snapshot`` (:meth:`HealthMonitor.snapshot`) as text::

        TCP 10.0.0.1:80 (quorum up)
          10.1.0.1:80  up    weight 2  in table, weight 2
            TCP_CHECK 10.1.0.1:80: up, connected to 10.1.0.1:80
    """
    out: list[str] = []
    service = None
    width = max((len(s["server"]) for s in snapshot), default=0)
    for s in snapshot:
        if s["service"] != service:
            service = s["service"]
            out.append(f"{service} (quorum {s['quorum']})")
        place = "not in table" if s["in_table"] is None else f"in table, weight {s['in_table']}"
        out.append(f"  {s['server']:<{width}}  {s['state']:<4}  weight {s['weight']}  {place}")
        for c in s["checkers"]:
            if not c["run"]:
                out.append(f"    {c['kind']}: not run by fastvs, held {c['state']}")
                continue
            out.append(f"    {c['kind']} {c['target']}: {c['state']}, {c['last']}")
    return "".join(line + "\n" for line in out)
