"""The directors as tasks on a Dask cluster (a ``distributed.LocalCluster`` of worker
processes): the same bytes, listings and counters as N local processes, through the API
(a Client or a scheduler address) and through ``fastvs process --dask ADDRESS``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from test_real_pcaps import pick_rules

from fastvs.cluster.run import ClusterResult, run_cluster
from fastvs.cluster.shard import parse_ecmp_hash
from fastvs.control.rules import load_rules

from conftest import DEMO, REAL

DEMO_PCAP = DEMO / "demo.pcap"
DEMO_RULES = DEMO / "demo.rules"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c:
        yield c


def _same(a: ClusterResult, b: ClusterResult) -> None:
    assert a.shard_sizes == b.shard_sizes
    assert a.total_counters == b.total_counters
    assert a.total_services == b.total_services
    for x, y in zip(a.directors, b.directors, strict=True):
        assert x.counters == y.counters and x.services == y.services
        assert x.connections == y.connections


@pytest.mark.parametrize("cap,sched,fields", [
    (DEMO_PCAP, "wlc", "l4"),
    (DEMO_PCAP, "rr", "net/24"),
    (REAL / "zeek_http-methods.pcap", "mh", "l4"),
    (REAL / "ppp_pcapng-example.pcapng", "wrr", "l3"),
])  # fmt: skip
def test_local_cluster_gives_the_bytes_of_local_processes(
        cluster: LocalCluster, tmp_path: Path, cap: Path, sched: str, fields: str) -> None:
    rules = tmp_path / "r.rules"
    text = DEMO_RULES.read_text() if cap == DEMO_PCAP else pick_rules(cap)
    rules.write_text(text.replace(" -s wlc", f" -s {sched}").replace(" -s rr", f" -s {sched}"))
    kw = dict(directors=3, ecmp=parse_ecmp_hash(fields), options={"seed": 5}, conns=True)
    local = run_cluster(cap, load_rules(rules), output=tmp_path / "p.out", dropped=tmp_path / "p.drop",
                        workers=2, **kw)  # type: ignore[arg-type]
    with Client(cluster) as client:
        dask = run_cluster(cap, load_rules(rules), output=tmp_path / "d.out",
                           dropped=tmp_path / "d.drop", dask=client, **kw)  # type: ignore[arg-type]
    assert (tmp_path / "d.out").read_bytes() == (tmp_path / "p.out").read_bytes()
    assert (tmp_path / "d.drop").read_bytes() == (tmp_path / "p.drop").read_bytes()
    _same(local, dask)
    # by address, as the command line does
    by_addr = run_cluster(cap, load_rules(rules), output=tmp_path / "a.out",
                          dask=cluster.scheduler_address, **kw)  # type: ignore[arg-type]
    assert (tmp_path / "a.out").read_bytes() == (tmp_path / "p.out").read_bytes()
    _same(local, by_addr)


def test_cli_with_dask(cluster: LocalCluster, tmp_path: Path) -> None:
    """End to end: ``fastvs process --directors 4 --dask ADDRESS`` in a subprocess writes
    the capture the local processes write, and prints the same listing."""
    common = ["-m", "fastvs.cli", "process", str(DEMO_PCAP), "-r", str(DEMO_RULES),
              "--directors", "4", "--ecmp-hash", "l3", "--seed", "9", "--json"]
    p = subprocess.run([sys.executable, *common, "-o", str(tmp_path / "p.pcap")],
                       capture_output=True, text=True, timeout=300)
    d = subprocess.run([sys.executable, *common, "-o", str(tmp_path / "d.pcap"),
                        "--dask", cluster.scheduler_address],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and d.returncode == 0, (p.stderr, d.stderr)
    assert (tmp_path / "d.pcap").read_bytes() == (tmp_path / "p.pcap").read_bytes()
    jp, jd = json.loads(p.stdout), json.loads(d.stdout)
    for doc in (jp, jd):  # wall-clock times differ, nothing else
        for part in [doc["total"], *doc["directors"]]:
            part["summary"].pop("seconds")
        doc["total"]["summary"]["output"] = None
    assert jp == jd
    assert jd["ecmp_hash"] == "l3" and len(jd["directors"]) == 4
