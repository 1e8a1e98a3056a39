"""Prometheus metrics of a director: node_exporter's IPVS series, and fastvs's own.

The ``node_ipvs_*`` series carry node_exporter's ipvs collector names, help texts, types
and labels (``local_address``, ``local_port``, ``remote_address``, ``remote_port``,
``proto``, ``local_mark``), so a dashboard built for a kernel director reads a fastvs
one unchanged: the totals of ``/proc/net/ip_vs_stats`` and, per real server, its active
and inactive connections and weight. As node_exporter does, a fwmark service has an empty
``local_address``, ``local_port`` 0 and its mark in ``local_mark`` as ``/proc/net/ip_vs``
prints it (eight hex digits); real servers with the same label values are summed.

fastvs's own series (``fastvs_*``): packets by verdict (``fwd_in``, ``drop_no_dest``, ...),
health-check state and last transition per real server, and the live path's receive and
transmit counters, each per worker. A scrape reads one :class:`Snapshot` per worker,
taken between batches, and sums them: the series agree with the listings.

Use :class:`DirectorCollector` with a ``prometheus_client`` registry, or :func:`serve` to
answer ``GET /metrics`` on an address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["DirectorCollector", "HealthState", "Snapshot", "registry_for", "serve"]

BACKEND_LABELS = ("local_address", "local_port", "remote_address", "remote_port", "proto",
                  "local_mark")  # fmt: skip
_PROC_PROTO = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "fwmark": "FWM"}


@dataclass(frozen=True)
class HealthState:
    """One real server's health, as the checkers last decided it."""

    service: str  # "TCP 10.0.0.1:80", "FWM 1", as ipvsadm -L -n names it
    server: str  # "10.1.0.1:80"
    up: bool
    last_transition: float  # Unix time of the last change (0: never changed)
    weight: int = 0


@dataclass
class Snapshot:
    """What one worker's director shows between batches.

    ``services`` and ``verdicts`` are :meth:`fastvs.control.director.Director.services`
    and :meth:`~fastvs.control.director.Director.counters` (packets per verdict name),
    ``connections`` the table's entries; ``io`` maps counter names of the live path
    (``rx_packets``, ``tx_packets``, ``kernel_drops``, ...) to values.
    """

    services: Sequence[Mapping[str, Any]]
    verdicts: Mapping[str, int]
    connections: int = 0
    worker: str = "0"
    io: Mapping[str, int] = field(default_factory=dict)
    health: Sequence[HealthState] = ()

    @classmethod
    def of(cls, director: Any, worker: str = "0", io: Mapping[str, int] | None = None,
           health: Sequence[HealthState] = ()) -> Snapshot:
        """A director's snapshot now (call it between batches)."""
        return cls(director.services(), director.counters(),
                   int(director.summary()["connections"]), worker, dict(io or {}), health)


def _backend_labels(svc: Mapping[str, Any], rs: Mapping[str, Any]) -> tuple[str, ...]:
    proto = _PROC_PROTO[svc["proto"]]
    if svc["proto"] == "fwmark":
        local_address, local_port, mark = "", "0", f"{svc['fwmark']:08X}"
    else:
        local_address, local_port, mark = _ip(svc["addr"]), str(svc["port"]), ""
    return (local_address, local_port, _ip(rs["addr"]), str(rs["port"]), proto, mark)


def _ip(addr: str) -> str:
    """As Go's net.IP.String() writes it (node_exporter): the short IPv6 form."""
    return str(ipaddress.ip_address(addr))


class DirectorCollector(Collector):
    """Collects the series from ``snapshots()``, one :class:`Snapshot` per worker."""

    def __init__(self, snapshots: Callable[[], Iterable[Snapshot]]):
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        snaps = list(self._snapshots())
        yield from self._ipvs(snaps)
        yield from self._own(snaps)

    @staticmethod
    def _ipvs(snaps: list[Snapshot]) -> Iterator[Metric]:
        totals = dict.fromkeys(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), 0)
        active: dict[tuple[str, ...], int] = {}
        inactive: dict[tuple[str, ...], int] = {}
        weight: dict[tuple[str, ...], int] = {}
        for snap in snaps:
            for svc in snap.services:
                for k in totals:
                    totals[k] += int(svc["stats"][k])
                for rs in svc["reals"]:
                    key = _backend_labels(svc, rs)
                    active[key] = active.get(key, 0) + int(rs["activeconns"])
                    inactive[key] = inactive.get(key, 0) + int(rs["inactconns"])
                    # every worker holds the same rules: the weight is the rules', once
                    weight.setdefault(key, 0)
                    if snap is snaps[0]:
                        weight[key] += int(rs["weight"])
        for name, key, text in (
            ("connections", "conns", "The total number of connections made."),
            ("incoming_packets", "inpkts", "The total number of incoming packets."),
            ("outgoing_packets", "outpkts", "The total number of outgoing packets."),
            ("incoming_bytes", "inbytes", "The total amount of incoming data."),
            ("outgoing_bytes", "outbytes", "The total amount of outgoing data."),
        ):
            yield CounterMetricFamily(f"node_ipvs_{name}", text, value=totals[key])
        for name, values, text in (
            ("backend_connections_active", active,
             "The current active connections by local and remote address."),
            ("backend_connections_inactive", inactive,
             "The current inactive connections by local and remote address."),
            ("backend_weight", weight, "The current backend weight by local and remote address."),
        ):  # fmt: skip
            fam = GaugeMetricFamily(f"node_ipvs_{name}", text, labels=BACKEND_LABELS)
            for labels, value in values.items():
                fam.add_metric(labels, value)
            yield fam

    @staticmethod
    def _own(snaps: list[Snapshot]) -> Iterator[Metric]:
        packets = CounterMetricFamily(
            "fastvs_packets", "Packets by the verdict the director gave them.",
            labels=("worker", "verdict"),
        )
        conns = GaugeMetricFamily(
            "fastvs_connection_entries", "Entries in the connection table (templates included).",
            labels=("worker",),
        )
        io = CounterMetricFamily(
            "fastvs_io", "Receive and transmit counters of the live path (rings, sockets, "
            "the kernel's drops).", labels=("worker", "counter"),
        )
        for snap in snaps:
            for verdict, n in sorted(snap.verdicts.items()):
                packets.add_metric((snap.worker, verdict), int(n))
            conns.add_metric((snap.worker,), snap.connections)
            for name, n in sorted(snap.io.items()):
                io.add_metric((snap.worker, name), int(n))
        yield packets
        yield conns
        yield io
        up = GaugeMetricFamily("fastvs_realserver_up",
                               "1 when the real server passes its health checks.",
                               labels=("service", "server"))  # fmt: skip
        changed = GaugeMetricFamily(
            "fastvs_realserver_last_transition_timestamp_seconds",
            "When the real server's health state last changed (Unix time; 0: never).",
            labels=("service", "server"),
        )
        seen: set[tuple[str, str]] = set()
        for snap in snaps:  # health is the supervisor's, the same for every worker
            for h in snap.health:
                if (h.service, h.server) in seen:
                    continue
                seen.add((h.service, h.server))
                up.add_metric((h.service, h.server), 1 if h.up else 0)
                changed.add_metric((h.service, h.server), h.last_transition)
        yield up
        yield changed


def registry_for(snapshots: Callable[[], Iterable[Snapshot]]) -> CollectorRegistry:
    """A registry holding only the director's series (no process or Python metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DirectorCollector(snapshots))
    return registry


def serve(addr: str, port: int, snapshots: Callable[[], Iterable[Snapshot]]) -> Any:
    """Answer ``GET /metrics`` on ``addr:port`` from a daemon thread; returns the server
    (call ``shutdown()`` on it to stop)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry_for(snapshots))
    return server
