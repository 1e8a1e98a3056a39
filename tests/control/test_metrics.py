"""Prometheus metrics (fastvs.control.metrics): node_exporter's ipvs series with its
names and labels, and fastvs's own, checked against the director's listings after the
bundled demo capture, parsed back with prometheus-client's own text parser."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fastvs.capture.pcap import open_capture
from fastvs.control.director import Director
from fastvs.control.metrics import HealthState, Snapshot, registry_for, serve
from fastvs.control.rules import load_rules, parse_rules

DEMO = Path(__file__).resolve().parents[2] / "fastvs" / "demo"


def demo_director() -> Director:
    d = Director(load_rules(DEMO / "demo.rules"), seed=1)
    with open_capture(str(DEMO / "demo.pcap")) as reader:
        for batch in reader:
            d.process(batch)
    return d


def scrape(*snaps: Snapshot) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(registry_for(lambda: snaps)).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def snapshot(d: Director, worker: str = "0", **kw: object) -> Snapshot:
    return Snapshot.of(d, worker, **kw)  # type: ignore[arg-type]


def test_node_exporter_totals_are_the_services_sums() -> None:
    d = demo_director()
    m = scrape(snapshot(d))
    svcs = d.services()
    for name, key in (("connections", "conns"), ("incoming_packets", "inpkts"),
                      ("outgoing_packets", "outpkts"), ("incoming_bytes", "inbytes"),
                      ("outgoing_bytes", "outbytes")):  # fmt: skip
        assert m[f"node_ipvs_{name}_total"] == [({}, sum(s["stats"][key] for s in svcs))]
    assert m["node_ipvs_connections_total"][0][1] == d.summary()["connections"] > 0


def test_node_exporter_backend_series_match_the_listing() -> None:
    d = demo_director()
    m = scrape(snapshot(d))
    want = {}
    for svc in d.services():
        for rs in svc["reals"]:
            labels = {"local_address": svc["addr"], "local_port": str(svc["port"]),
                      "remote_address": rs["addr"], "remote_port": str(rs["port"]),
                      "proto": svc["proto"].upper(), "local_mark": ""}  # fmt: skip
            want[tuple(sorted(labels.items()))] = (rs["activeconns"], rs["inactconns"], rs["weight"])
    for i, name in enumerate(("backend_connections_active", "backend_connections_inactive",
                              "backend_weight")):  # fmt: skip
        got = {tuple(sorted(lab.items())): v for lab, v in m[f"node_ipvs_{name}"]}
        assert got == {k: v[i] for k, v in want.items()}
    assert sum(v for _, v in m["node_ipvs_backend_connections_inactive"]) > 0


def test_fwmark_and_ipv6_labels_are_node_exporters() -> None:
    rules = parse_rules(
        "-A -f 10 -s rr\n-a -f 10 -r 10.1.0.1:0 -m -w 2\n"
        "-A -t [2001:db8:0::100]:443 -s rr\n-a -t [2001:db8::100]:443 -r [2001:db8:1:0::11]:8443 -m\n"
    )
    d = Director(rules, seed=1)
    m = scrape(snapshot(d))
    got = sorted(tuple(sorted(lab.items())) for lab, _ in m["node_ipvs_backend_weight"])
    assert got == sorted([
        tuple(sorted({"local_address": "", "local_port": "0", "remote_address": "10.1.0.1",
                      "remote_port": "0", "proto": "FWM", "local_mark": "0000000A"}.items())),
        tuple(sorted({"local_address": "2001:db8::100", "local_port": "443",
                      "remote_address": "2001:db8:1::11", "remote_port": "8443",
                      "proto": "TCP", "local_mark": ""}.items())),
    ])  # fmt: skip


def test_workers_are_summed_and_verdicts_kept_per_worker() -> None:
    a, b = demo_director(), demo_director()
    m = scrape(snapshot(a, "0", io={"rx_packets": 320, "kernel_drops": 1}),
               snapshot(b, "1", io={"rx_packets": 320, "kernel_drops": 0}))
    one = scrape(snapshot(a))
    assert m["node_ipvs_connections_total"][0][1] == 2 * one["node_ipvs_connections_total"][0][1]
    # weights are the rules', not doubled
    assert m["node_ipvs_backend_weight"] == one["node_ipvs_backend_weight"]
    fwd = {lab["worker"]: v for lab, v in m["fastvs_packets_total"] if lab["verdict"] == "fwd_in"}
    assert fwd == {"0": a.counters()["fwd_in"], "1": b.counters()["fwd_in"]} and fwd["0"] > 0
    per_worker = {}
    for lab, v in m["fastvs_packets_total"]:
        per_worker[lab["worker"]] = per_worker.get(lab["worker"], 0) + v
    # every packet has exactly one verdict: the per-verdict series add up to packets in
    assert per_worker == {"0": a.summary()["packets_in"], "1": b.summary()["packets_in"]}
    assert ({"worker": "0", "counter": "kernel_drops"}, 1.0) in m["fastvs_io_total"]


def test_drop_reasons_are_series() -> None:
    import packets as P

    d = Director(parse_rules("-A -t 10.0.0.1:80 -s rr\n"), seed=1)  # no real server
    d.process_packets([P.tcp("10.9.0.1", 1000, "10.0.0.1", 80, flags="S")])
    m = scrape(snapshot(d))
    drops = {lab["verdict"]: v for lab, v in m["fastvs_packets_total"] if v}
    assert drops == {"drop_no_dest": 1.0}


def test_health_series() -> None:
    d = demo_director()
    health = [HealthState("TCP 10.10.0.1:80", "192.168.0.10:8080", True, 0.0),
              HealthState("TCP 10.10.0.1:80", "192.168.0.11:8080", False, 1764790000.5)]
    m = scrape(snapshot(d, health=health), snapshot(d, "1", health=health))
    assert m["fastvs_realserver_up"] == [
        ({"service": "TCP 10.10.0.1:80", "server": "192.168.0.10:8080"}, 1.0),
        ({"service": "TCP 10.10.0.1:80", "server": "192.168.0.11:8080"}, 0.0),
    ]
    assert m["fastvs_realserver_last_transition_timestamp_seconds"][1][1] == 1764790000.5


def test_served_over_http() -> None:
    d = demo_director()
    server = serve("127.0.0.1", 0, lambda: [snapshot(d)])
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    finally:
        server.shutdown()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"node_ipvs_connections", "node_ipvs_backend_weight", "fastvs_packets"} <= names
    assert "python_gc_objects_collected" not in text  # only the director's series


@pytest.mark.parametrize("bad", [-1, 70000])
def test_serve_refuses_a_bad_port(bad: int) -> None:
    with pytest.raises((OverflowError, OSError, ValueError)):
        serve("127.0.0.1", bad, lambda: [])
