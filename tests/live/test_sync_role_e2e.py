"""The master/backup role of a running forwarder (fastvs/live/sync.py), in network
namespaces (tests/netns.py's Topology, plus an addressed link ``dh`` for sync):

- a backup (``--sync-backup``) answers no ARP for the VIP nor for the real servers'
  gateway (``--addr``), asks for the real servers' MACs with ARP probes (sender
  0.0.0.0: the real servers must not learn the backup's MAC for their gateway), and
  forwards nothing: what reaches it is dropped and counted (``backup_dropped``);
- ``fastvs ctl role master`` makes it forward at once and announce the VIP and the
  gateway (gratuitous ARP): a peer's neighbour entry moves to the director's MAC
  without asking;
- ``fastvs ctl role backup`` stops it again; a master's sync messages go out of ``dh``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import GW_IP, VIP, Forwarder, Topology, have_netns, wait_for  # noqa: E402

_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_why)]


def _ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastvs.cli", "ctl", "--control", str(sock), *args],
                          capture_output=True, text=True, timeout=60)


def _neigh(topo: Topology, ns: str, ip: str) -> str:
    """The lladdr of ``ip`` in the namespace's neighbour table ('' if none)."""
    out = topo.nsx(ns, "ip", "neigh", "show", ip, "dev", "eth0", check=False).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def _mac(topo: Topology, dev: str) -> str:
    return topo.nsx(topo.director, "cat", f"/sys/class/net/{dev}/address").stdout.strip()


def test_backup_is_silent_until_made_master() -> None:
    with Topology() as topo:
        d = topo.director
        topo._veth(d, "dh", topo.switch, "ph")  # a link of its own (no dummy driver everywhere)
        topo.nsx(topo.switch, "ip", "link", "set", "ph", "up")
        topo.nsx(d, "ip", "addr", "add", "192.168.91.1/24", "dev", "dh")
        topo.nsx(d, "ip", "link", "set", "dh", "up")
        rules = topo.tmp / "rules"
        rules.write_text(topo.rules_text())
        sock = topo.tmp / "ctl.sock"
        fwd = Forwarder(topo, rules, "--control", str(sock), "--sync-backup", "dh", "--syncid", "3")
        try:
            r = _ctl(sock, "role")
            assert r.returncode == 0 and r.stdout.startswith("backup"), (r.stdout, r.stderr)

            def curl() -> str:
                r = topo.nsx(topo.client, "curl", "-s", "--max-time", "1", f"http://{VIP}/", check=False, timeout=10)
                return r.stdout.strip() if r.returncode == 0 else f"error {r.returncode}"

            # a backup: no ARP answer for the VIP, nothing forwarded
            assert curl().startswith("error")
            assert _neigh(topo, topo.client, VIP) == ""
            # its ARP requests were probes: no real server learnt it as the gateway
            assert all(_neigh(topo, rs, GW_IP) == "" for rs in topo.rs)
            # stale entries, as a dead master leaves them in its peers
            stale = "02:00:00:00:00:01"
            for ns, ip in ((topo.client, VIP), *((rs, GW_IP) for rs in topo.rs)):
                topo.nsx(ns, "ip", "neigh", "replace", ip, "lladdr", stale, "dev", "eth0", "nud", "stale")
            # master: at once, and the gratuitous ARP moves the peers' entries to it
            t = _ctl(sock, "role", "master")
            assert t.returncode == 0 and t.stdout == "role backup -> master\n", (t.stdout, t.stderr)
            fwd.wait_log("role: backup -> master")
            wait_for(lambda: [_neigh(topo, ns, ip) for ns, ip in ((topo.client, VIP), *((rs, GW_IP) for rs in topo.rs))],
                     5, "the peers' entries for the VIP and the gateway moved by the gratuitous ARP",
                     until=lambda macs: macs == [_mac(topo, "dc"), _mac(topo, "ds"), _mac(topo, "ds")])
            assert wait_for(curl, 10, "the VIP answers", until=lambda out: out in ("rs1", "rs2"))
            # back to backup: the client's cached entry still sends to it; dropped, counted
            assert _ctl(sock, "role", "backup").stdout == "role master -> backup\n"
            fwd.wait_log("role: master -> backup")
            assert curl().startswith("error")
            doc = fwd.wait_stats(lambda s: s["io"].get("backup_dropped", 0) > 0, 10, "backup_dropped counted")
            io = doc["io"]
            assert io["role_changes"] == 2 and io["sync_master"] == 0 and io["sync_rx_bad"] == 0
        finally:
            code, _, err = fwd.stop()
        assert code == 0, err
