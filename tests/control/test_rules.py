"""Tests for fastvs.control.rules: the ipvsadm -S/-R format, list order, validation, the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastvs.control.rules import (
    KEEP,
    KNOWN_SCHEDULERS,
    Event,
    RealServer,
    Rules,
    Timeouts,
    VirtualService,
    format_rules,
    load_rules,
    parse_rules,
    sort_servers,
)
from fastvs.errors import RulesError

# the five g* cases (the x* ones of CASES.md add an -L -n listing after -S -n)
from conftest import GOLDEN, GOLDEN_CASES

CASES = GOLDEN_CASES


def save_section(case: str) -> str:
    text = (GOLDEN / f"{case}.kernel.ipvsadm.txt").read_text()
    return text.split("== ipvsadm -S -n\n", 1)[1]


# ---------------------------------------------------------------------------
# golden: format_rules(parse_rules(x)) == what ipvsadm -S -n printed


@pytest.mark.parametrize("case", CASES)
def test_golden_save_roundtrip(case: str) -> None:
    rules = load_rules(GOLDEN / f"{case}.rules")
    assert format_rules(rules) == save_section(case)
    assert format_rules(rules, strict=True) == save_section(case)


@pytest.mark.parametrize("case", CASES)
def test_golden_save_reparses_to_same(case: str) -> None:
    saved = save_section(case)
    assert format_rules(parse_rules(saved)) == saved


def test_golden_kernel_order_g2() -> None:
    """ipvsadm -R links each new real server at the head: reverse of the file."""
    rules = load_rules(GOLDEN / "g2-wrr.rules")
    (svc,) = rules.services
    assert [rs.addr for rs in svc.reals] == ["192.168.0.12", "192.168.0.11", "192.168.0.10"]
    assert [rs.weight for rs in svc.reals] == [2, 2, 1]
    assert svc.scheduler == "wrr"
    assert all(rs.fwd == "masq" and rs.port == 8080 for rs in svc.reals)


# ---------------------------------------------------------------------------
# order


ORDER_TEXT = """\
-A -t 10.0.0.1:80 -s wrr
-a -t 10.0.0.1:80 -r 192.168.0.13:80 -m -w 4
-a -t 10.0.0.1:80 -r 192.168.0.11:80 -m -w 3
-a -t 10.0.0.1:80 -r 192.168.0.12:80 -m -w 2
"""


def test_kernel_order_is_reverse_of_file() -> None:
    svc = parse_rules(ORDER_TEXT).services[0]
    assert [r.addr[-2:] for r in svc.reals] == ["12", "11", "13"]
    assert svc.add_order == [2, 1, 0]
    assert [r.addr[-2:] for r in svc.kernel_list()] == ["12", "11", "13"]
    assert [r.addr[-2:] for r in svc.file_list()] == ["13", "11", "12"]
    assert svc.link_at_head


def test_file_order_option() -> None:
    rules = parse_rules(ORDER_TEXT, order="file")
    svc = rules.services[0]
    assert rules.order == "file"
    assert [r.addr[-2:] for r in svc.reals] == ["13", "11", "12"]
    assert svc.add_order == [0, 1, 2]
    assert [r.addr[-2:] for r in svc.kernel_list()] == ["12", "11", "13"]
    assert not svc.link_at_head


def test_replay_kernel_and_file() -> None:
    svc = parse_rules(ORDER_TEXT).services[0]
    steps = [(rs.addr[-2:], [r.addr[-2:] for r in lst]) for rs, lst in svc.replay()]
    assert steps == [("13", ["13"]), ("11", ["11", "13"]), ("12", ["12", "11", "13"])]
    svc = parse_rules(ORDER_TEXT, order="file").services[0]
    steps = [(rs.addr[-2:], [r.addr[-2:] for r in lst]) for rs, lst in svc.replay()]
    assert steps == [("13", ["13"]), ("11", ["13", "11"]), ("12", ["13", "11", "12"])]


def test_edit_keeps_position_delete_and_readd_goes_to_head() -> None:
    text = ORDER_TEXT + (
        "-e -t 10.0.0.1:80 -r 192.168.0.13:80 -m -w 9\n"
        "-d -t 10.0.0.1:80 -r 192.168.0.11:80\n"
        "-a -t 10.0.0.1:80 -r 192.168.0.11:80 -m -w 1\n"
    )
    svc = parse_rules(text).services[0]
    assert [(r.addr[-2:], r.weight) for r in svc.reals] == [("11", 1), ("12", 2), ("13", 9)]
    assert [r.addr[-2:] for r in svc.file_list()] == ["13", "12", "11"]
    assert svc.kernel_list() == svc.reals
    assert svc.add_order == [2, 1, 0]
    svc = parse_rules(text, order="file").services[0]
    assert [r.addr[-2:] for r in svc.reals] == ["13", "12", "11"]
    assert svc.add_order == [0, 1, 2]


def test_events_in_file_order() -> None:
    text = ORDER_TEXT + "-e -t 10.0.0.1:80 -r 192.168.0.13:80 -m -w 9\n--set 1 2 3\n-C\n"
    rules = parse_rules(text)
    key = ("tcp", 4, "10.0.0.1", 80)
    assert rules.events == [
        Event("add_service", key, None, 1),
        Event("add_server", key, ("192.168.0.13", 80), 2),
        Event("add_server", key, ("192.168.0.11", 80), 3),
        Event("add_server", key, ("192.168.0.12", 80), 4),
        Event("edit_server", key, ("192.168.0.13", 80), 5),
        Event("set_timeouts", None, None, 6),
        Event("clear", None, None, 7),
    ]
    assert rules.services == []


def test_bad_order_value() -> None:
    with pytest.raises(RulesError, match="bad order"):
        parse_rules("", order="sideways")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# the grammar


def test_comments_blank_lines_and_ipvsadm_prefix() -> None:
    rules = parse_rules(
        "# a comment\n\n   \n"
        "ipvsadm -A -t 10.0.0.1:80 -s rr   # trailing comment\n"
        "sudo /sbin/ipvsadm --add-server --tcp-service 10.0.0.1:80 --real-server "
        "10.1.0.1:8080 --masquerading --weight=3\n"
    )
    (svc,) = rules.services
    assert svc.scheduler == "rr"
    assert svc.reals == [RealServer("10.1.0.1", 8080, 3, "masq")]


def test_defaults_as_ipvsadm() -> None:
    rules = parse_rules("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.1.0.1\n")
    svc = rules.services[0]
    assert svc.scheduler == "wlc"
    assert svc.persistent is None and svc.netmask is None and not svc.ops
    # no -m/-g/-i: direct routing; no port: the service's port; weight 1
    assert svc.reals == [RealServer("10.1.0.1", 80, 1, "route", 0, 0)]


def test_route_and_tunnel_take_the_service_port() -> None:
    rules = parse_rules(
        "-A -t 10.0.0.1:80\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -g\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -i\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.3:8080 -m\n"
    )
    assert [(r.addr, r.port, r.fwd) for r in rules.services[0].file_list()] == [
        ("10.1.0.1", 80, "route"),
        ("10.1.0.2", 80, "tunnel"),
        ("10.1.0.3", 8080, "masq"),
    ]


def test_persistent_forms() -> None:
    rules = parse_rules(
        "-A -t 10.0.0.1:80 -p\n"
        "-A -t 10.0.0.2:80 -p 60 -M 255.255.0.0\n"
        "-A -t 10.0.0.3:80 -p -M 255.255.255.0\n"
        "-A -t 10.0.0.4:80 --persistent=7200\n"
        "-A -t 10.0.0.5:80 -p900\n"
        "-A -t 10.0.0.6:0 -p\n"
        "-A -t [2001:db8::1]:80 -p 30 -M 64\n"
    )
    got = [(s.persistent, s.netmask) for s in rules.services]
    assert got == [
        (300, None),
        (60, "255.255.0.0"),
        (300, "255.255.255.0"),
        (7200, None),
        (900, None),
        (300, None),
        (30, "64"),
    ]
    assert rules.services[1].netmask_value == 0xFFFF0000
    assert rules.services[0].netmask_value == 0xFFFFFFFF
    assert rules.services[6].netmask_value == 64


def test_ipv6_services_and_servers() -> None:
    rules = parse_rules(
        "-A -u [2001:DB8:0:0::1]:53 -s rr\n"
        "-a -u [2001:db8::1]:53 -r [2001:db8::a]:5353 -m\n"
        "-a -u [2001:db8::1]:53 -r 2001:db8::b -m\n"
    )
    svc = rules.services[0]
    assert svc.addr == "2001:db8::1" and svc.family == 6
    assert [(r.addr, r.port) for r in svc.file_list()] == [
        ("2001:db8::a", 5353),
        ("2001:db8::b", 53),
    ]
    assert format_rules(rules) == (
        "-A -u [2001:db8::1]:53 -s rr\n"
        "-a -u [2001:db8::1]:53 -r [2001:db8::a]:5353 -m -w 1\n"
        "-a -u [2001:db8::1]:53 -r [2001:db8::b]:53 -m -w 1\n"
    )


def test_ipv4_server_in_ipv6_service_allowed_for_tunnel() -> None:
    rules = parse_rules("-A -t [2001:db8::1]:80\n-a -t [2001:db8::1]:80 -r 10.0.0.1 -i\n")
    assert rules.services[0].reals[0].fwd == "tunnel"
    assert format_rules(rules).splitlines()[1] == (
        "-a -t [2001:db8::1]:80 -r 10.0.0.1:80 -i -w 1 --tun-type ipip"
    )


def test_fwmark_services() -> None:
    rules = parse_rules(
        "-A -f 1 -s rr\n"
        "-a -f 1 -r 10.0.0.1:8080 -m -w 2\n"
        "-a -f 1 -r 10.0.0.2 -g\n"
        "-A -f 1 -6 -s sh -b sh-port\n"
        "-a -f 1 -6 -r [2001:db8::1]:80 -m\n"
    )
    v4, v6 = rules.services
    assert v4.proto == "fwmark" and v4.fwmark == 1 and v4.family == 4 and v4.port == 0
    assert v6.family == 6 and v6.sched_flags == ("sh-port",)
    assert v4.key != v6.key
    assert [(r.addr, r.port) for r in v4.file_list()] == [("10.0.0.1", 8080), ("10.0.0.2", 0)]
    assert format_rules(rules) == (
        "-A -f 1 -s rr\n"
        "-a -f 1 -r 10.0.0.1:8080 -m -w 2\n"
        "-a -f 1 -r 10.0.0.2:0 -g -w 1\n"
        "-A -f 1 -6 -s sh -b sh-port\n"
        "-a -f 1 -6 -r [2001:db8::1]:80 -m -w 1\n"
    )


def test_sctp_and_ops_and_sched_flags() -> None:
    rules = parse_rules(
        "-A --sctp-service 10.0.0.1:9 -s mh -b mh-port,mh-fallback\n-A -u 10.0.0.1:53 -o -s rr\n"
    )
    sctp, udp = rules.services
    assert sctp.proto == "sctp" and sctp.sched_flags == ("mh-fallback", "mh-port")
    assert sctp.flags == 0x18
    assert udp.ops and udp.flags == 0x4
    assert format_rules(rules) == (
        "-A -u 10.0.0.1:53 -s rr -o\n-A --sctp-service 10.0.0.1:9 -s mh -b mh-fallback,mh-port\n"
    )


def test_all_known_schedulers_accepted() -> None:
    text = "".join(f"-A -t 10.0.0.1:{i + 1} -s {s}\n" for i, s in enumerate(KNOWN_SCHEDULERS))
    assert [s.scheduler for s in parse_rules(text).services] == list(KNOWN_SCHEDULERS)


def test_edit_service_resets_like_ipvsadm() -> None:
    rules = parse_rules("-A -t 10.0.0.1:80 -s rr -p 60\n-E -t 10.0.0.1:80\n")
    svc = rules.services[0]
    assert svc.scheduler == "wlc" and svc.persistent is None


def test_edit_server_resets_like_ipvsadm() -> None:
    rules = parse_rules(
        "-A -t 10.0.0.1:80\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 5 -x 10 -y 2\n"
        "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n"
    )
    assert rules.services[0].reals == [RealServer("10.1.0.1", 80, 1, "masq", 0, 0)]


def test_delete_service_and_clear() -> None:
    rules = parse_rules("-A -t 10.0.0.1:80\n-A -u 10.0.0.1:80\n-D -t 10.0.0.1:80\n")
    assert [s.proto for s in rules.services] == ["udp"]
    rules = parse_rules("-A -t 10.0.0.1:80\n-C\n-A -t 10.0.0.1:80 -s rr\n")
    assert [s.scheduler for s in rules.services] == ["rr"]


def test_set_timeouts() -> None:
    rules = parse_rules("--set 900 0 300\n--set 0 60 0\n")
    assert rules.timeouts == Timeouts(900, 60, 300)
    assert Timeouts(0, 10, 0).effective() == Timeouts(900, 10, 300)
    assert format_rules(rules).splitlines()[0] == "--set 900 60 300"
    assert format_rules(rules, strict=True) == ""


def test_short_option_clusters_and_attached_values() -> None:
    rules = parse_rules("-A -t 10.0.0.1:80 -srr\n-a -t 10.0.0.1:80 -r 10.1.0.1:81 -mw7\n")
    assert rules.services[0].scheduler == "rr"
    assert rules.services[0].reals[0].weight == 7
    assert rules.services[0].reals[0].fwd == "masq"


def test_numeric_flag_ignored() -> None:
    rules = parse_rules("ipvsadm -A -n -t 10.0.0.1:80\n")
    assert len(rules.services) == 1


def test_thresholds_written_unless_strict() -> None:
    rules = parse_rules("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.1.0.1 -m -x 100 -y 10\n")
    assert format_rules(rules).splitlines()[1] == (
        "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1 -x 100 -y 10"
    )
    assert format_rules(rules, strict=True).splitlines()[1] == (
        "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1"
    )


def test_save_sorts_services_and_servers() -> None:
    rules = parse_rules(
        "-A -u 10.0.0.2:53\n-A -t 10.0.0.2:80\n-A -t 10.0.0.1:443\n-A -f 3\n"
        "-A -t [::1]:80\n-A -t 10.0.0.1:80\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m\n-a -t 10.0.0.1:80 -r 10.1.0.1:90 -m\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.1:81 -m\n"
    )
    assert [ln for ln in format_rules(rules).splitlines()] == [
        "-A -t 10.0.0.1:80 -s wlc",
        "-a -t 10.0.0.1:80 -r 10.1.0.1:81 -m -w 1",
        "-a -t 10.0.0.1:80 -r 10.1.0.1:90 -m -w 1",
        "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 1",
        "-A -t 10.0.0.1:443 -s wlc",
        "-A -t 10.0.0.2:80 -s wlc",
        "-A -u 10.0.0.2:53 -s wlc",
        "-A -t [::1]:80 -s wlc",
        "-A -f 3 -s wlc",
    ]


def test_sort_servers_libipvs_quirk() -> None:
    """libipvs compares addresses by an int difference, so across 2**31 the order
    depends on the list order, exactly as ipvsadm prints it."""
    reals = [RealServer(a, 80) for a in ("192.168.1.1", "100.1.1.1", "10.1.0.1")]
    assert [r.addr for r in sort_servers(reals)] == ["192.168.1.1", "10.1.0.1", "100.1.1.1"]
    assert [r.addr for r in sort_servers(reals[::-1])] == ["10.1.0.1", "100.1.1.1", "192.168.1.1"]


def test_ipv6_mapped_text_like_inet_ntop() -> None:
    rules = parse_rules("-A -t [::ffff:10.0.0.1]:80\n-A -t [::10.0.0.2]:80\n")
    assert [s.addr for s in rules.services] == ["::ffff:10.0.0.1", "::10.0.0.2"]


def test_load_rules_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x.rules"
    p.write_text("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.1.0.1 -w lots\n")
    with pytest.raises(RulesError) as ei:
        load_rules(p)
    assert str(ei.value).startswith(f"{p}:2: ")
    assert ei.value.line == 2 and ei.value.source == str(p)
    with pytest.raises(RulesError, match="cannot read rules"):
        load_rules(tmp_path / "missing.rules")
    b = tmp_path / "bin.rules"
    b.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(b)


# ---------------------------------------------------------------------------
# every error names its line

SVC = "-A -t 10.0.0.1:80\n"
SVC6 = "-A -t [2001:db8::1]:80\n"

ERRORS = [
    # (text, line, fragment of the message)
    ("-A -t 10.0.0.300:80\n", 1, "bad virtual service address '10.0.0.300'"),
    ("-A -t www.example.com:80\n", 1, "no host names"),
    ("-A -t 80\n", 1, "bad virtual service '80'"),
    ("-A -t 10.0.0.1:http\n", 1, "bad port 'http'"),
    ("-A -t 10.0.0.1:\n", 1, "bad port ''"),
    ("-A -t 10.0.0.1:65536\n", 1, "port 65536 out of range 0..65535"),
    ("-A -t 10.0.0.1\n", 1, "zero port for non-persistent service"),
    ("-A -t 10.0.0.1:0\n", 1, "zero port for non-persistent service"),
    ("-A -t [2001:db8::1]\n", 1, "must be followed by :port"),
    ("-A -t [2001:db8::1:80\n", 1, "missing ']'"),
    ("-A -t [10.0.0.1]:80\n", 1, "brackets are only for IPv6"),
    ("-A -t [fe80::1%eth0]:80\n", 1, "no host names"),
    ("-A -t 010.0.0.1:80\n", 1, "bad virtual service address '010.0.0.1'"),
    ("-A -t 10.0.0.1:80 -s fastest\n", 1, "unknown scheduler 'fastest'"),
    ("-A -t 10.0.0.1:80 --frobnicate\n", 1, "unknown option '--frobnicate'"),
    ("-A -t 10.0.0.1:80 -Q\n", 1, "unknown option '-Q'"),
    ("-A -t 10.0.0.1:80 -u 10.0.0.1:80\n", 1, "more than one service given (-t and -u)"),
    ("-A -t 10.0.0.1:80 -t 10.0.0.1:81\n", 1, "option -t given more than once"),
    ("-A -t 10.0.0.1:80 -s rr -s wrr\n", 1, "option -s given more than once"),
    ("-A -a -t 10.0.0.1:80\n", 1, "more than one command (-A and -a)"),
    ("-t 10.0.0.1:80\n", 1, "no command"),
    ("-A\n", 1, "-A needs a service"),
    ("-A -s rr\n", 1, "-A needs a service"),
    ("-A -t\n", 1, "option -t needs a value"),
    (SVC + SVC, 2, "service -t 10.0.0.1:80 already exists"),
    ("-a -t 10.0.0.1:80 -r 10.1.0.1\n", 1, "no service -t 10.0.0.1:80"),
    (SVC + "-a -t 10.0.0.1:81 -r 10.1.0.1\n", 2, "no service -t 10.0.0.1:81"),
    (SVC + "-a -u 10.0.0.1:80 -r 10.1.0.1\n", 2, "no service -u 10.0.0.1:80"),
    (SVC + "-a -t 10.0.0.1:80\n", 2, "-a needs a real server (-r)"),
    (
        SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -m\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n",
        3,
        "real server 10.1.0.1:80 already exists in service -t 10.0.0.1:80",
    ),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -w x\n", 2, "bad weight 'x'"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -w 1.5\n", 2, "bad weight '1.5'"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -w -1\n", 2, "weight -1 out of range 0..65535"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -w 65536\n", 2, "weight 65536 out of range"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -x -1\n", 2, "upper threshold (-x) -1 out of range"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -y -3\n", 2, "lower threshold (-y) -3 out of range"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -x 2147483648\n", 2, "out of range 0..2147483647"),
    (
        SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -x 5 -y 6\n",
        2,
        "lower threshold 6 is above upper threshold 5",
    ),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -m -g\n", 2, "option -g given more than once"),
    (SVC + "-a -t 10.0.0.1:80 -r host.example -m\n", 2, "bad real server address 'host.example'"),
    (SVC + "-a -t 10.0.0.1:80 -r 224.0.0.1 -m\n", 2, "not a unicast address"),
    (SVC + "-a -t 10.0.0.1:80 -r 0.0.0.0 -m\n", 2, "not a unicast address"),
    # ip_vs_new_dest ip_vs_ctl.c:1013-1031: inet_addr_type says BROADCAST for 0.0.0.0/8;
    # ipv6_addr_type gives no UNICAST for ::ffff:0:0/96 and LINKLOCAL for fe80::/10
    (SVC + "-a -t 10.0.0.1:80 -r 0.1.2.3 -m\n", 2, "0.1.2.3 is not a unicast address"),
    (SVC + "-a -t 10.0.0.1:80 -r 255.255.255.255 -m\n", 2, "not a unicast address"),
    (SVC6 + "-a -t [2001:db8::1]:80 -r fe80::1 -m\n", 2, "fe80::1 is not a unicast address"),
    (SVC6 + "-a -t [2001:db8::1]:80 -r ::ffff:10.1.0.1 -m\n", 2, "is not a unicast address"),
    (
        SVC + "-a -t 10.0.0.1:80 -r 2001:db8::1 -m\n",
        2,
        "real server 2001:db8::1 is IPv6 but service -t 10.0.0.1:80 is IPv4",
    ),
    (
        "-A -t [2001:db8::1]:80\n-a -t [2001:db8::1]:80 -r 10.0.0.1 -m\n",
        2,
        "different families only with -i",
    ),
    (
        SVC + "-e -t 10.0.0.1:80 -r 10.1.0.1 -m\n",
        2,
        "no real server 10.1.0.1:80 in service -t 10.0.0.1:80",
    ),
    (
        SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m\n-e -t 10.0.0.1:80 -r 10.1.0.1:8080 -w 2\n",
        3,
        "did you mean -m?",
    ),
    (SVC + "-d -t 10.0.0.1:80 -r 10.1.0.1\n", 2, "no real server 10.1.0.1:80"),
    ("-E -t 10.0.0.1:80 -s rr\n", 1, "no service -t 10.0.0.1:80"),
    ("-D -t 10.0.0.1:80\n", 1, "no service -t 10.0.0.1:80"),
    ("-A -f 0\n", 1, "fwmark 0 out of range 1..4294967295"),
    ("-A -f mark\n", 1, "bad fwmark 'mark'"),
    ("-A -f 4294967296\n", 1, "fwmark 4294967296 out of range"),
    ("-A -t 10.0.0.1:80 -6\n", 1, "-6 used before -f"),
    ("-A -6 -f 1\n", 1, "-6 used before -f"),
    ("-A -t 10.0.0.1:80 -p 0\n", 1, "persistent timeout 0 out of range 1..2678400"),
    ("-A -t 10.0.0.1:80 -p 2678401\n", 1, "persistent timeout 2678401 out of range"),
    ("-A -t 10.0.0.1:80 -p soon\n", 1, "bad persistent timeout 'soon'"),
    ("-A -t 10.0.0.1:80 -p 60 -M 255.255.0\n", 1, "bad netmask '255.255.0'"),
    ("-A -t [2001:db8::1]:80 -p 60 -M 129\n", 1, "IPv6 netmask (-M prefix length) 129"),
    ("-A -t 10.0.0.1:80 -o\n", 1, "one-packet scheduling (-o) is only for UDP"),
    ("-A -t 10.0.0.1:80 -s rr -b sh-port\n", 1, "scheduler flag 'sh-port' needs scheduler 'sh'"),
    ("-A -t 10.0.0.1:80 -s sh -b sh-bogus\n", 1, "invalid scheduler flag 'sh-bogus'"),
    ("-A -t 10.0.0.1:80 -w 3\n", 1, "option -w is not allowed with -A"),
    ("-A -t 10.0.0.1:80 -r 10.0.0.2\n", 1, "option -r is not allowed with -A"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -s rr\n", 2, "option -s is not allowed with -a"),
    (SVC + "-d -t 10.0.0.1:80 -r 10.1.0.1 -w 1\n", 2, "option -w is not allowed with -d"),
    (SVC + "-D -t 10.0.0.1:80 -s rr\n", 2, "option -s is not allowed with -D"),
    ("-C -t 10.0.0.1:80\n", 1, "not allowed with -C"),
    ("--set 1 2\n", 1, "--set needs 3 timeout values"),
    ("--set 1 2 x\n", 1, "bad udp timeout 'x'"),
    ("--set 1 2 2678401\n", 1, "udp timeout 2678401 out of range 0..2678400"),
    ("-A -t 10.0.0.1:80 extra\n", 1, "unexpected argument 'extra'"),
    ("-L -n\n", 1, "does not belong in a rules file"),
    ("ipvsadm -Z\n", 1, "does not belong in a rules file"),
    ("-A -t 10.0.0.1:80 -o=1\n", 1, "unknown option '-=' in '-o=1'"),
    ("-A -t 10.0.0.1:80 --ops=1\n", 1, "--ops takes no value"),
    ("-A -t 10.0.0.1:80 --pe sip\n", 1, "unknown option '--pe'"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -m --tun-type ipip\n", 2, "--tun-type needs -i"),
    (SVC + "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue\n", 2, "tunnel type 'gue'"),
    ("-A -t 10.0.0.1:80 -s 'rr\n", 1, "cannot split line"),
    ("# ok\n\n-A -t 10.0.0.1:80 -s nope\n", 3, "unknown scheduler 'nope'"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), ERRORS)
def test_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(RulesError) as ei:
        parse_rules(text, source="my.rules")
    msg = str(ei.value)
    assert msg.startswith(f"my.rules:{line}: "), msg
    assert fragment in msg, msg
    assert ei.value.line == line
    assert ei.value.source == "my.rules"
    assert "\n" not in msg


def test_errors_are_fastvs_errors_with_exit_code() -> None:
    from fastvs.errors import FastvsError

    with pytest.raises(FastvsError) as ei:
        parse_rules("-A -t x:1\n")
    assert ei.value.exit_code == 2


# ---------------------------------------------------------------------------
# the Python API


def test_api_builds_the_same_as_the_file() -> None:
    rules = Rules()
    svc = rules.add_service("tcp", "10.10.0.1", 80, scheduler="rr")
    rules.add_server(svc, "192.168.0.10", 8080, weight=2)
    rules.add_server("-t 10.10.0.1:80", "192.168.0.11", 8080, weight=5)
    text = (
        "-A -t 10.10.0.1:80 -s rr\n"
        "-a -t 10.10.0.1:80 -r 192.168.0.10:8080 -m -w 2\n"
        "-a -t 10.10.0.1:80 -r 192.168.0.11:8080 -m -w 5\n"
    )
    parsed = parse_rules(text)
    assert rules == parsed
    assert format_rules(rules) == text
    assert rules.services[0].add_order == parsed.services[0].add_order
    assert [e.op for e in rules.events] == ["add_service", "add_server", "add_server"]
    assert all(e.line is None for e in rules.events)


def test_api_defaults() -> None:
    rules = Rules()
    svc = rules.add_service("udp", "10.0.0.1", 53)
    assert svc.scheduler == "wlc"
    rs = rules.add_server(svc, "10.1.0.1")
    assert rs == RealServer("10.1.0.1", 53, 1, "masq", 0, 0)


def test_api_lookup() -> None:
    rules = parse_rules(ORDER_TEXT + "-A -f 9 -6\n")
    assert rules.service("-t 10.0.0.1:80").scheduler == "wrr"
    assert rules.service("--tcp-service 10.0.0.1:80") is rules.services[0]
    assert rules.service("-f 9 -6").fwmark == 9
    assert rules.find_service("-f 9") is None
    assert rules.find_service(rules.services[0]) is rules.services[0]
    with pytest.raises(RulesError, match="no service -u 10.0.0.1:80"):
        rules.service("-u 10.0.0.1:80")
    with pytest.raises(RulesError, match="not allowed with a service name"):
        rules.service("-s rr")
    with pytest.raises(RulesError, match="needs a service"):
        rules.service("-n")
    with pytest.raises(RulesError, match="bad service"):
        rules.service("-t '10.0.0.1")
    with pytest.raises(RulesError, match="unexpected command"):
        rules.service("-A -t 10.0.0.1:80")


def test_api_edit_keeps_unspecified() -> None:
    rules = parse_rules(ORDER_TEXT)
    svc = rules.edit_service("-t 10.0.0.1:80", persistent=120)
    assert svc.scheduler == "wrr" and svc.persistent == 120
    rules.edit_service(svc, scheduler="rr", persistent=None)
    assert svc.scheduler == "rr" and svc.persistent is None
    rs = rules.edit_server(svc, "192.168.0.11", 80, weight=8)
    assert rs == RealServer("192.168.0.11", 80, 8, "masq")
    assert [r.addr[-2:] for r in svc.reals] == ["12", "11", "13"]
    assert rules.edit_server(svc, "192.168.0.11", 80, u_threshold=9).weight == 8
    with pytest.raises(RulesError, match="no real server 192.168.0.99:80"):
        rules.edit_server(svc, "192.168.0.99", 80, weight=1)


def test_api_edit_sched_flags_follow_scheduler() -> None:
    rules = Rules()
    svc = rules.add_service("tcp", "10.0.0.1", 80, scheduler="sh", sched_flags="sh-port")
    rules.edit_service(svc, scheduler="mh")  # the bit is kept, now named for mh
    assert svc.sched_flags == ("mh-port",)
    rules.edit_service(svc, sched_flags=["mh-fallback"])
    assert svc.sched_flags == ("mh-fallback",)
    with pytest.raises(RulesError, match="needs scheduler 'sh'"):
        rules.edit_service(svc, sched_flags=["sh-port"])
    assert svc.sched_flags == ("mh-fallback",)  # unchanged after a failed edit
    rules.edit_service(svc, scheduler="rr", sched_flags=())
    assert svc.sched_flags == () and svc.flags == 0


def test_api_delete_and_clear() -> None:
    rules = parse_rules(ORDER_TEXT)
    rules.delete_server("-t 10.0.0.1:80", "192.168.0.11", 80)
    svc = rules.services[0]
    assert [r.addr[-2:] for r in svc.reals] == ["12", "13"]
    assert svc.add_order == [1, 0]
    rules.delete_service(svc)
    assert rules.services == []
    rules.add_service("tcp", "10.0.0.1", 80)
    rules.clear()
    assert rules.services == []
    with pytest.raises(RulesError, match="no service"):
        rules.delete_service("-t 10.0.0.1:80")


def test_api_validation() -> None:
    rules = Rules()
    with pytest.raises(RulesError, match="bad protocol 'icmp'"):
        rules.add_service("icmp", "10.0.0.1", 80)
    with pytest.raises(RulesError, match="a fwmark service has no address"):
        rules.add_service("fwmark", "10.0.0.1", fwmark=1)
    with pytest.raises(RulesError, match="fwmark 0 out of range"):
        rules.add_service("fwmark")
    with pytest.raises(RulesError, match="fwmark given for a tcp service"):
        rules.add_service("tcp", "10.0.0.1", 80, fwmark=3)
    with pytest.raises(RulesError, match="-6"):
        rules.add_service("tcp", "10.0.0.1", 80, ipv6=True)
    with pytest.raises(RulesError, match="port 70000 out of range"):
        rules.add_service("tcp", "10.0.0.1", 70000)
    with pytest.raises(RulesError, match="bad port True"):
        rules.add_service("tcp", "10.0.0.1", True)  # type: ignore[arg-type]
    svc = rules.add_service("tcp", "10.0.0.1", 80)
    with pytest.raises(RulesError, match="bad forwarding method 'nat'"):
        rules.add_server(svc, "10.1.0.1", fwd="nat")
    with pytest.raises(RulesError, match="weight 70000 out of range"):
        rules.add_server(svc, "10.1.0.1", weight=70000)
    with pytest.raises(RulesError, match="unknown scheduler"):
        rules.edit_service(svc, scheduler="best")
    with pytest.raises(RulesError, match="already exists"):
        rules.add_service("tcp", "10.0.0.1", 80)
    assert rules.set_timeouts(10, 0, 0) == Timeouts(10, 0, 0)
    with pytest.raises(RulesError, match="tcpfin timeout -1"):
        rules.set_timeouts(0, -1, 0)
    assert str(RulesError("x")) == "x"  # API errors carry no line


def test_api_errors_name_the_source_when_given() -> None:
    rules = Rules(source="api")
    with pytest.raises(RulesError) as ei:
        rules.add_service("tcp", "nope", 80)
    assert str(ei.value).startswith("api: ")


def test_constructor_adopts_services_in_given_order() -> None:
    given = VirtualService(
        "tcp",
        "10.0.0.1",
        80,
        scheduler="rr",
        reals=[RealServer("10.1.0.3", 80), RealServer("10.1.0.1", 80)],
    )
    rules = Rules([given])
    assert [r.addr for r in rules.services[0].reals] == ["10.1.0.3", "10.1.0.1"]
    assert [r.addr for r in rules.services[0].kernel_list()] == ["10.1.0.3", "10.1.0.1"]
    rules = Rules(
        [
            VirtualService(
                "tcp",
                "10.0.0.1",
                80,
                reals=[RealServer("10.1.0.3", 80), RealServer("10.1.0.1", 80)],
            )
        ],
        order="file",
    )
    assert [r.addr for r in rules.services[0].reals] == ["10.1.0.3", "10.1.0.1"]
    with pytest.raises(RulesError, match="already exists"):
        Rules([VirtualService("tcp", "10.0.0.1", 80), VirtualService("tcp", "10.0.0.1", 80)])
    fw = Rules([VirtualService("fwmark", "::", 0, fwmark=4)]).services[0]
    assert fw.key == ("fwmark", 6, "", 4)


def test_keep_sentinel_and_repr() -> None:
    assert KEEP is KEEP
    rules = parse_rules(ORDER_TEXT)
    assert "1 services" in repr(rules)
    assert rules.services[0].spec() == "-t 10.0.0.1:80"
    assert rules.services[0].reals[0].addrport() == "192.168.0.12:80"
    assert RealServer("2001:db8::1", 80).addrport() == "[2001:db8::1]:80"
    assert rules != object()


def test_sched_flag_names_normalised_like_ipvsadm() -> None:
    rules = parse_rules(
        "-A -t 10.0.0.1:1 -s sh -b flag-2,sh-fallback,flag-3\n"
        "-A -t 10.0.0.1:2 -s rr -b flag-3,flag-1,flag-1\n"
    )
    assert rules.services[0].sched_flags == ("sh-fallback", "sh-port", "flag-3")
    assert rules.services[0].flags == 0x38
    assert rules.services[1].sched_flags == ("flag-1", "flag-3")


def test_constructor_checks_timeouts() -> None:
    assert Rules(timeouts=Timeouts(1, 2, 3)).timeouts == Timeouts(1, 2, 3)
    with pytest.raises(RulesError, match="udp timeout -3"):
        Rules(timeouts=Timeouts(1, 2, -3))
