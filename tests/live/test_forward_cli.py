"""The forwarder's configuration, command line, rules reload and the supervisor's sum of
the workers' snapshots (fastvs/live/config.py, cli.py, supervisor.py)."""

from __future__ import annotations

import socket
import struct

import dpkt
import pytest

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules
from fastvs.errors import RulesError
from fastvs.live import cli
from fastvs.live import config as C
from fastvs.live import supervisor as S

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
CLIENT_IP = "10.0.0.2"
VIP = "10.0.0.100"
GW_IP6 = "2001:db8:1::1"


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def tcp_frame(payload: bytes = b"hello", *, partial: bool = False) -> bytearray:
    tcp = dpkt.tcp.TCP(sport=40000, dport=80, seq=1, ack=0, flags=dpkt.tcp.TH_SYN, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(CLIENT_IP), dst=socket.inet_aton(VIP), p=6, ttl=64, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    raw = bytearray(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, type=0x0800, data=ip)))
    if partial:  # what a CHECKSUM_PARTIAL frame carries: the pseudo-header sum only
        seglen = len(raw) - 34
        ph = raw[26:34] + struct.pack("!BBH", 0, 6, seglen)
        raw[50:52] = struct.pack("!H", csum16(bytes(ph)))
    return raw


RULES = """-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.1.0.11:80 -m -w 1
-a -t 10.0.0.100:80 -r 10.1.0.12:80 -m -w 1
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.1.0.11:53 -m
"""


def test_apply_rules_diff_keeps_connections() -> None:
    d = Director(parse_rules(RULES), seed=1)
    syn = bytes(tcp_frame(b""))
    frames, verdicts = d.process_packets([syn], [1_000_000_000])
    assert verdicts == [32]
    new = parse_rules(RULES.replace("10.1.0.12:80 -m -w 1", "10.1.0.12:80 -m -w 0")
                      .replace("-a -u 10.0.0.100:53 -r 10.1.0.11:53 -m\n", "-a -u 10.0.0.100:53 -r 10.1.0.13:53 -m\n")
                      + "-A -t 10.0.0.101:443 -s wlc\n-a -t 10.0.0.101:443 -r 10.1.0.11:443 -m\n")
    msgs = C.apply_rules(d, new)
    text = "\n".join(msgs)
    assert "10.1.0.12:80 weight 1->0" in text
    assert "added real server 10.1.0.13:53" in text and "removed real server 10.1.0.11:53" in text
    assert "added service -t 10.0.0.101:443" in text
    assert d.engine.conn_count == 1  # the connection survived
    svcs = {(s["proto"], s["addr"], s["port"]): s for s in d.services()}
    tcp = svcs[("tcp", VIP, 80)]
    assert {r["addr"]: r["weight"] for r in tcp["reals"]} == {"10.1.0.11": 1, "10.1.0.12": 0}
    assert [r["addr"] for r in svcs[("udp", VIP, 53)]["reals"]] == ["10.1.0.13"]
    assert ("tcp", "10.0.0.101", 443) in svcs
    assert C.apply_rules(d, new) == []  # idempotent


def test_merge_snapshots_sums_workers() -> None:
    d1, d2 = Director(parse_rules(RULES), seed=1), Director(parse_rules(RULES), seed=2)
    d1.process_packets([bytes(tcp_frame(b""))], [1])
    snaps = [{"wid": i, "services": d.services(), "counters": d.counters(), "summary": d.summary(),
              "io": {"rx": 1 + i}} for i, d in enumerate((d1, d2))]
    m = S.merge_snapshots(snaps)
    tcp = next(s for s in m["services"] if s["proto"] == "tcp")
    assert tcp["stats"]["conns"] == 1 and m["io"]["rx"] == 3 and m["workers"] == 2
    assert m["summary"]["packets_in"] == 1
    assert "TCP  10.0.0.100:80 rr" in S.format_report(m)
    assert S.report_json(m)["services"][0]["stats"]["conns"] in (0, 1)


def test_cli_registers_forward() -> None:
    import argparse

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cli.add_cli(sub)
    a = p.parse_args(["forward", "-r", "x", "--client-if", "a", "--server-if", "b", "--workers", "2"])
    cfg = cli.config_from_args(a)
    assert a.func is cli.cmd_forward and cfg.workers == 2 and cfg.sides() == [("client", "a"), ("server", "b")]
    with pytest.raises(RulesError):
        C.ForwardConfig(rules="x", client_if="a").check()
    assert cli.main(["-r", "/nonexistent/rules", "--if", "lo"]) == 2


def test_config_accepts_ipv6_addresses() -> None:
    cfg = C.ForwardConfig(rules="x", client_if="a", server_if="b",
                          addrs=["10.1.0.1", "2001:DB8:1:0::1"], client_gw=["2001:db8::1", "10.0.0.1"])
    cfg.check()
    assert cfg.addrs == ["10.1.0.1", GW_IP6]
    with pytest.raises(RulesError, match="at most one IPv4"):
        C.ForwardConfig(rules="x", client_if="a", server_if="b", client_gw=["10.0.0.1", "10.0.0.2"]).check()


def test_control_and_metrics_options(tmp_path) -> None:
    import argparse

    from fastvs.errors import OptionError

    p = argparse.ArgumentParser()
    cli.add_cli(p.add_subparsers())
    a = p.parse_args(["forward", "-r", "x", "--if", "a", "--control", "--metrics", "127.0.0.1:9100"])
    cfg = cli.config_from_args(a)
    assert cfg.control == "/run/fastvs/control.sock" and cfg.metrics_addr() == ("127.0.0.1", 9100)
    cfg.check()
    for bad in ("127.0.0.1", "127.0.0.1:0", "nosuch:80", "1.2.3.4:http"):
        with pytest.raises(OptionError, match="metrics"):
            C.ForwardConfig(rules="x", one_arm_if="a", metrics=bad).check()


def test_rules_source_edits_reload_and_health(tmp_path) -> None:
    from types import SimpleNamespace

    from fastvs.health.state import Transition

    rules = tmp_path / "rules"
    rules.write_text("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1\n"
                     "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 1\n")
    logs: list[str] = []
    src = S.RulesSource(C.ForwardConfig(rules=str(rules), one_arm_if="a"), logs.append)
    pushed: list[tuple[object, str]] = []
    src.sinks.append(lambda r, tag: pushed.append((r, tag)))

    def weights() -> dict[str, int]:
        return {rs.addr: rs.weight for rs in src.current.services[0].reals}

    lines = src.edit("weight", {"service": "10.0.0.1:80", "server": "10.1.0.2:80", "weight": 5})
    assert lines == ["-e -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 5"] and weights()["10.1.0.2"] == 5
    assert pushed[-1][1] == "control" and src.version == 1
    with pytest.raises(RulesError):
        src.edit("drain", {"server": "10.9.9.9:80"})
    assert src.version == 1
    # a health change of another server keeps the edit; one of that server drops it
    base = parse_rules(rules.read_text())
    base.services[0].reals = [r for r in base.services[0].reals if r.addr != "10.1.0.1"]
    t = Transition(0.0, "TCP 10.0.0.1:80", "10.1.0.1:80", "up", "down", "refused")
    src._on_change(SimpleNamespace(rules=base, transitions=[t]))
    assert weights() == {"10.1.0.2": 5} and pushed[-1][1] == "health"
    t2 = Transition(0.0, "TCP 10.0.0.1:80", "10.1.0.2:80", "up", "down", "refused")
    src._on_change(SimpleNamespace(rules=base, transitions=[t2]))
    assert weights() == {"10.1.0.2": 1} and src.overlay == []
    # reload: the file again, edits dropped
    src.edit("drain", {"server": "10.1.0.2:80"})
    assert src.reload("SIGHUP") and weights() == {"10.1.0.1": 1, "10.1.0.2": 1} and pushed[-1][1] == "SIGHUP"
