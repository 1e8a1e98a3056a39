"""keepalived.conf as a rules source (fastvs.control.keepalived): keepalived's own
sample configurations, its start-up semantics (alpha, inhibit_on_failure, quorum,
sorry_server), what it corrects, include, and errors naming the file and line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from fastvs.control.keepalived import (
    KeepalivedWarning,
    is_keepalived,
    load_keepalived,
    parse_keepalived,
)
from fastvs.control.rules import format_rules
from fastvs.errors import RulesError

SAMPLES = Path(__file__).resolve().parent / "keepalived"
SAMPLE_NAMES = sorted(p.name.removeprefix("keepalived.conf.") for p in SAMPLES.glob("keepalived.conf.*"))


def listing(text: str) -> tuple[str, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rules = parse_keepalived(text, source="k.conf")
    return format_rules(rules, strict=True), [str(w.message) for w in caught]


def test_all_six_samples_are_here() -> None:
    assert SAMPLE_NAMES == ["IPv6", "fwmark", "inhibit", "quorum", "sample", "virtual_server_group"]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_gives_what_keepalived_configures(name: str) -> None:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        rules = load_keepalived(SAMPLES / f"keepalived.conf.{name}")
    assert format_rules(rules, strict=True) == (SAMPLES / f"{name}.ipvsadm").read_text()


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_is_recognised(name: str) -> None:
    assert is_keepalived((SAMPLES / f"keepalived.conf.{name}").read_text())


def test_ipvsadm_rules_are_not_taken_for_keepalived() -> None:
    assert not is_keepalived("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n")
    assert not is_keepalived("ipvsadm -A -u 10.0.0.1:53 -s rr\n")


def test_what_is_not_acted_on_is_said_once_with_file_and_line() -> None:
    text, msgs = listing((SAMPLES / "keepalived.conf.sample").read_text())
    assert msgs == [
        "k.conf:3: global_defs (global settings) is not acted on by fastvs",
        "k.conf:13: vrrp_instance (VRRP) is not acted on by fastvs",
        "k.conf:37: the HTTP_GET health check is not run by fastvs yet: real servers start "
        "as passing them (failing, in alpha mode) and stay so",
    ]


BASE = """
virtual_server 10.0.1.1 80 {
  lb_algo wrr
  protocol TCP
  %s
  real_server 10.0.0.1 8080 {
    weight 1
    TCP_CHECK {
      connect_timeout 3
    }
  }
  real_server 10.0.0.2 8080 {
    weight 2
    inhibit_on_failure
    TCP_CHECK {
      connect_timeout 3
    }
  }
  real_server 10.0.0.3 8080 {
    weight 2
  }
}
"""


def test_without_alpha_every_real_server_starts_up() -> None:
    text, _ = listing(BASE % "")
    assert text == (
        "-A -t 10.0.1.1:80 -s wrr\n"
        "-a -t 10.0.1.1:80 -r 10.0.0.1:8080 -m -w 1\n"
        "-a -t 10.0.1.1:80 -r 10.0.0.2:8080 -m -w 2\n"
        "-a -t 10.0.1.1:80 -r 10.0.0.3:8080 -m -w 2\n"
    )


def test_alpha_servers_with_checkers_start_down_inhibited_ones_at_weight_0() -> None:
    # .1 is left out, .2 (inhibit_on_failure) is kept at weight 0, .3 has no checker
    text, _ = listing(BASE % "alpha")
    assert text == (
        "-A -t 10.0.1.1:80 -s wrr\n"
        "-a -t 10.0.1.1:80 -r 10.0.0.2:8080 -m -w 0\n"
        "-a -t 10.0.1.1:80 -r 10.0.0.3:8080 -m -w 2\n"
    )


def test_sorry_server_when_the_live_weight_is_below_quorum() -> None:
    # live weight 2 (.3) < quorum 3: the sorry server goes in, the live .3 comes out, the
    # inhibited .2 stays at weight 0
    text, _ = listing(BASE % "alpha\n  quorum 3\n  sorry_server 10.9.9.9 80")
    assert text == (
        "-A -t 10.0.1.1:80 -s wrr\n"
        "-a -t 10.0.1.1:80 -r 10.0.0.2:8080 -m -w 0\n"
        "-a -t 10.0.1.1:80 -r 10.9.9.9:80 -m -w 1\n"
    )


def test_hysteresis_raises_the_start_threshold() -> None:
    # quorum 2 is met by .3's weight 2, but start-up asks for quorum + hysteresis = 3
    down, _ = listing(BASE % "alpha\n  quorum 2\n  hysteresis 1\n  sorry_server 10.9.9.9 80")
    assert "10.9.9.9:80" in down and "10.0.0.3" not in down
    up, _ = listing(BASE % "alpha\n  quorum 2\n  sorry_server 10.9.9.9 80")
    assert "10.9.9.9" not in up and "10.0.0.3:8080 -m -w 2" in up


def test_sorry_server_inhibit_keeps_an_unused_sorry_server_at_weight_0() -> None:
    text, _ = listing(BASE % "sorry_server 10.9.9.9 80\n  sorry_server_inhibit")
    assert "-a -t 10.0.1.1:80 -r 10.9.9.9:80 -m -w 0\n" in text


def test_defaults_and_corrections() -> None:
    text, msgs = listing("""
virtual_server 10.0.0.1 0 {
  ops
  persistence_granularity 255.255.255.0
  real_server 10.1.0.1 {
  }
}
virtual_server 10.0.0.2 53 {
  protocol UDP
  lb_kind DR
  persistence_timeout
  weight 7
  ops
  real_server 10.1.0.2 53 {
    lvs_method TUN
  }
  real_server 10.1.0.3 53 {
  }
}
""")
    assert text == (
        # no protocol: UDP; port 0: persistent, 360 s; ops kept (UDP); scheduler wlc
        "-A -u 10.0.0.1:0 -s wlc -p 360 -M 255.255.255.0 -o\n"
        "-a -u 10.0.0.1:0 -r 10.1.0.1:0 -m -w 1\n"
        "-A -u 10.0.0.2:53 -s wlc -p 360 -o\n"
        "-a -u 10.0.0.2:53 -r 10.1.0.2:53 -i -w 7 --tun-type ipip\n"
        "-a -u 10.0.0.2:53 -r 10.1.0.3:53 -g -w 7\n"
    )
    assert "k.conf:2: no protocol set: UDP, as keepalived (and the kernel) default" in msgs


def test_ops_needs_udp_and_quorum_is_capped() -> None:
    text, msgs = listing("""
virtual_server 10.0.0.1 80 {
  protocol TCP
  ops
  quorum 5
  real_server 10.1.0.1 80 {
  }
}
""")
    assert text == "-A -t 10.0.0.1:80 -s wlc\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1\n"
    assert any("ops (one-packet scheduling) needs UDP" in m for m in msgs)
    assert any("quorum 5 exceeds the 1 real servers" in m for m in msgs)


def test_a_service_without_real_servers_is_dropped() -> None:
    text, msgs = listing("virtual_server 10.0.0.1 80 {\n  protocol TCP\n}\n")
    assert text == ""
    assert msgs == ["k.conf:1: virtual server has no real servers: ignored, as keepalived does"]


def test_ipv6_group_range_and_fwmark_family() -> None:
    text, _ = listing("""
virtual_server_group G {
  2001:db8::1-3 443
  fwmark 9
}
virtual_server group G {
  protocol TCP
  lb_algo mh
  mh-port
  real_server 2001:db8:1::10 8443 {
  }
}
""")
    assert text == (
        "-A -t [2001:db8::1]:443 -s mh -b mh-port\n"
        "-a -t [2001:db8::1]:443 -r [2001:db8:1::10]:8443 -m -w 1\n"
        "-A -t [2001:db8::2]:443 -s mh -b mh-port\n"
        "-a -t [2001:db8::2]:443 -r [2001:db8:1::10]:8443 -m -w 1\n"
        "-A -t [2001:db8::3]:443 -s mh -b mh-port\n"
        "-a -t [2001:db8::3]:443 -r [2001:db8:1::10]:8443 -m -w 1\n"
        "-A -f 9 -6 -s mh -b mh-port\n"
        "-a -f 9 -6 -r [2001:db8:1::10]:8443 -m -w 1\n"
    )


def test_real_servers_go_in_at_the_head_as_ipvsadm_r_does() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rules = parse_keepalived(
            "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n"
            " real_server 10.1.0.1 80 {\n }\n real_server 10.1.0.2 80 {\n }\n}\n"
        )
    assert [rs.addr for rs in rules.services[0].kernel_list()] == ["10.1.0.2", "10.1.0.1"]


def test_include_with_a_glob_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    for i in (1, 2):
        (tmp_path / "conf.d" / f"vs{i}.conf").write_text(
            f"virtual_server 10.0.0.{i} 80 {{ # service {i}\n  protocol TCP\n"
            f"  real_server 10.1.0.{i} 80 {{\n  }}\n}}\n"
        )
    (tmp_path / "conf.d" / "notes.txt").write_text("not included\n")
    main = tmp_path / "keepalived.conf"
    main.write_text("! main file\ninclude conf.d/*.conf\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rules = load_keepalived(main)
    assert [s.addr for s in rules.services] == ["10.0.0.1", "10.0.0.2"]


def test_a_warning_inside_an_include_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "vrrp.conf").write_text("\nvrrp_instance V {\n  priority 100\n}\n")
    main = tmp_path / "keepalived.conf"
    main.write_text("include vrrp.conf\n")
    with pytest.warns(KeepalivedWarning, match=r"vrrp\.conf:2: vrrp_instance"):
        load_keepalived(main)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("virtual_server 10.0.0.1 80 {\n  protocol TCP\n", "k.conf:1: block 'virtual_server' is not closed"),
        ("}\n", "k.conf:1: '}' with no block to close"),
        ("virtual_server 10.0.0.300 80 {\n}\n", "k.conf:1: bad virtual server address '10.0.0.300'"),
        ("virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.1.0.1 99999 {\n }\n}\n",
         "k.conf:3: port 99999 is out of range (0-65535)"),
        ("virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo xyz\n real_server 10.1.0.1 80 {\n }\n}\n",
         "k.conf:1: unknown scheduler 'xyz'"),
        ("virtual_server 10.0.0.1 80 {\n protocol ICMP\n}\n", "k.conf:2: protocol takes TCP, UDP or SCTP"),
        ("virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.1.0.1 80 {\n  weight x\n }\n}\n",
         "k.conf:4: weight: 'x' is not a number"),
        ("virtual_server group NOPE {\n}\n", "k.conf:1: no virtual_server_group named 'NOPE'"),
        ("virtual_server_group G {\n 10.0.0.9-3 80\n}\n", "k.conf:2: range 10.0.0.9-3 runs backwards"),
    ],
)
def test_errors_name_the_file_and_line(text: str, message: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RulesError) as exc:
            parse_keepalived(text, source="k.conf")
    assert str(exc.value).startswith(message)


def test_include_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("include a.conf\n")
    with pytest.raises(RulesError, match="nested deeper than 8"):
        load_keepalived(tmp_path / "a.conf")


def test_cli_lists_a_keepalived_conf_as_ipvsadm_would(tmp_path: Path) -> None:
    import subprocess
    import sys

    conf = SAMPLES / "keepalived.conf.virtual_server_group"
    out = subprocess.run(
        [sys.executable, "-m", "fastvs.cli", "list", "-r", str(conf), "-S"],
        capture_output=True, text=True, check=True,
    )
    # ipvsadm -S -n without --strict adds nothing here: no thresholds or timeouts set
    assert out.stdout == (SAMPLES / "virtual_server_group.ipvsadm").read_text()
    assert out.stderr.splitlines() == [
        f"fastvs: warning: {conf}:3: global_defs (global settings) is not acted on by fastvs",
        f"fastvs: warning: {conf}:31: 2 HTTP_GET health checks (the first here) are not run "
        "by fastvs yet: real servers start as passing them (failing, in alpha mode) and stay so",
    ]
