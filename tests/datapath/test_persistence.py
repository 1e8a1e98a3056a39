"""Persistence templates (-p, -M), firewall-mark services (-f) and the classifier,
port-zero services: ip_vs_sched_persist, ip_vs_check_template, ip_vs_service_find."""

from __future__ import annotations

from fastvs import verdicts as V
from fastvs.control.director import Director, parse_marks
from fastvs.control.rules import parse_rules

from packets import tcp, udp

VIP = "10.10.0.1"
S = 1_000_000_000


def rr_persistent(extra: str = "-p 300") -> str:
    return (f"-A -t {VIP}:80 -s rr {extra}\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m\n"
            f"-a -t {VIP}:80 -r 192.168.0.11:8080 -m\n")


def picks(d: Director, clients: list[tuple[str, int]], t0: int = 0, vport: int = 80) -> list[str]:
    out = []
    for i, (c, port) in enumerate(clients):
        _, v = d.process_packets([tcp(c, port, VIP, vport, "S")], [t0 + i * S // 10])
        assert v == [V.FWD_IN]
        out.append(d.lookup("tcp", c, port, VIP, vport)["daddr"])
    return out


def test_a_client_keeps_its_real_server_across_connections() -> None:
    d = Director(parse_rules(rr_persistent()), seed=1)
    got = picks(d, [("100.64.0.1", 1000), ("100.64.0.2", 1000), ("100.64.0.1", 1001), ("100.64.0.1", 1002),
                    ("100.64.0.2", 1001)])
    assert got[0] == got[2] == got[3] and got[1] == got[4] and got[0] != got[1]
    templates = [c for c in d.connections() if c["template"]]
    assert len(templates) == 2 and all(t["cport"] == 0 and t["state"] == "NONE" for t in templates)
    reals = d.services()[0]["reals"]
    assert sorted(r["persistconns"] for r in reals) == [1, 1]


def test_netmask_groups_clients() -> None:
    d = Director(parse_rules(rr_persistent("-p 300 -M 255.255.255.0")), seed=1)
    got = picks(d, [("100.64.0.1", 1000), ("100.64.0.99", 1000), ("100.64.1.1", 1000)])
    assert got[0] == got[1] != got[2]


def test_template_outlives_its_timeout_while_it_controls_connections() -> None:
    d = Director(parse_rules(rr_persistent("-p 10")), seed=1)
    picks(d, [("100.64.0.1", 1000)])
    d.engine.advance(30 * S)  # the connection (SYN_RECV, 60 s) still holds the template
    assert any(c["template"] for c in d.connections())
    d.engine.advance(200 * S)  # connection gone at 60 s, template at its next 60 s check
    assert d.engine.conn_count == 0
    assert all(r["persistconns"] == 0 for r in d.services()[0]["reals"])


def test_template_expires_and_client_is_rescheduled() -> None:
    d = Director(parse_rules(rr_persistent("-p 10")), seed=1)
    first = picks(d, [("100.64.0.1", 1000)])[0]
    d.engine.advance(200 * S)
    again = picks(d, [("100.64.0.1", 1001)], t0=201 * S)[0]
    assert again != first  # rr moved on


def test_removed_real_server_invalidates_the_template() -> None:
    d = Director(parse_rules(rr_persistent()), seed=1)
    first = picks(d, [("100.64.0.1", 1000)])[0]
    di = next(r["index"] for r in d.services()[0]["reals"] if r["addr"] == first)
    d.engine.remove_dest(di)
    assert picks(d, [("100.64.0.1", 1001)], t0=S)[0] != first


def test_quiescent_template_only_with_the_sysctl() -> None:
    for sysctl, stays in ((False, True), (True, False)):
        d = Director(parse_rules(rr_persistent()), seed=1, expire_quiescent_template=sysctl)
        first = picks(d, [("100.64.0.1", 1000)])[0]
        di = next(r["index"] for r in d.services()[0]["reals"] if r["addr"] == first)
        d.engine.edit_dest(di, weight=0)
        assert (picks(d, [("100.64.0.1", 1001)], t0=S)[0] == first) is stays


def test_fwmark_service_with_classifier() -> None:
    rules = "-A -f 7 -s rr -p 60\n-a -f 7 -r 192.168.0.10:0 -m\n-a -f 7 -r 192.168.0.11:0 -m\n"
    marks = parse_marks("7 tcp 10.10.0.0/24 80\n7 udp 10.10.0.0/24\n")
    d = Director(parse_rules(rules), seed=1, marks=marks)
    frames = [tcp("100.64.0.1", 1000, VIP, 80, "S"), udp("100.64.0.1", 2000, "10.10.0.2", 53),
              tcp("100.64.0.1", 1000, "10.99.0.1", 80, "S")]
    out, v = d.process_packets(frames)
    assert v == [V.FWD_IN, V.FWD_IN, V.PASS_NOT_SERVICE]
    # one template for the client (fwmark persistence spans protocols and VIPs)
    assert out[0][30:34] == out[1][30:34]
    assert int.from_bytes(out[0][36:38], "big") == 80  # dest port 0 keeps the packet's
    assert d.services()[0]["proto"] == "fwmark"


def test_port_zero_persistent_service_catches_every_port() -> None:
    rules = f"-A -t {VIP}:0 -s rr -p 60\n-a -t {VIP}:0 -r 192.168.0.10 -m\n-a -t {VIP}:0 -r 192.168.0.11 -m\n"
    d = Director(parse_rules(rules), seed=1)
    got = picks(d, [("100.64.0.1", 1000)], vport=443) + picks(d, [("100.64.0.1", 1001)], t0=S, vport=22)
    assert got[0] == got[1]


def test_marks_file_errors_name_the_line() -> None:
    import pytest

    from fastvs.errors import RulesError

    with pytest.raises(RulesError, match="m.txt:2"):
        parse_marks("1 tcp 10.0.0.0/8 80\n1 icmp 10.0.0.0/8\n", source="m.txt")
