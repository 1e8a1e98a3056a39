"""keepalived.conf as a rules source (fastvs.control.keepalived): keepalived's own
sample configurations, its start-up semantics (alpha, inhibit_on_failure, quorum,
sorry_server), what it corrects, include, and errors naming the file and line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from fastvs.control.keepalived import (
    KeepalivedConfig,
    KeepalivedWarning,
    is_keepalived,
    load_keepalived,
    parse_keepalived,
    read_keepalived,
    read_keepalived_file,
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
        "k.conf:37: the HTTP_GET health check is not run here (fastvs forward and fastvs "
        "check run them): real servers start as passing them (failing, in alpha mode)",
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
        "here (fastvs forward and fastvs check run them): real servers start as passing them "
        "(failing, in alpha mode)",
    ]


# ---------------------------------------------------------------------------
# The checkers' model (read_keepalived), for fastvs.health


def model(text: str) -> tuple[KeepalivedConfig, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = read_keepalived(text, source="k.conf")
    return cfg, [str(w.message) for w in caught]


def test_checker_settings_inherit_checker_real_server_virtual_server() -> None:
    cfg, msgs = model("""
virtual_server 10.0.0.1 80 {
  protocol TCP
  delay_loop 20
  retry 4
  connect_timeout 7
  virtualhost vs.example
  real_server 10.1.0.1 8080 {
    delay_before_retry 2.5
    warmup 0
    TCP_CHECK {
    }
    HTTP_GET {
      nb_get_retry 6
      url {
        path /a
      }
      url {
        path /b
        virtualhost b.example
        status_code 200 301-302
        digest 640205B7B0FC66C1EA91C463FAC6334D
      }
    }
  }
  real_server 10.1.0.2 8080 {
    virtualhost rs.example
    MISC_CHECK {
      misc_path "/usr/bin/check --host 10.1.0.2"
      misc_dynamic
      connect_timeout 1
    }
    SSL_GET {
      connect_ip 10.2.0.2
      connect_port 443
      bindto 10.0.0.9
      bind_port 5000
      connect_timeout 1.5
      delay_loop 3
      alpha
      url {
        path /
      }
    }
  }
}
""")
    (vs,) = cfg.services
    tcp, http = vs.servers[0].checkers
    misc, ssl_get = vs.servers[1].checkers
    assert (tcp.kind, tcp.connect_ip, tcp.connect_port) == ("TCP_CHECK", "10.1.0.1", 8080)
    assert (tcp.retry, tcp.delay_loop, tcp.connect_timeout) == (4, 20, 7)
    assert (tcp.delay_before_retry, tcp.warmup, tcp.alpha) == (2.5, 0, False)
    assert tcp.where == "k.conf:11"
    assert http.retry == 6 and http.virtualhost == "vs.example"
    assert [(u.path, u.status_codes, u.digest, u.virtualhost) for u in http.urls] == [
        ("/a", ((200, 299),), None, None),
        ("/b", ((200, 200), (301, 302)), "640205b7b0fc66c1ea91c463fac6334d", "b.example"),
    ]
    assert http.urls[1].accepts(302) and not http.urls[1].accepts(204)
    assert misc.misc_path == ["/usr/bin/check", "--host", "10.1.0.2"]
    assert misc.misc_dynamic and misc.misc_timeout == 20  # the service's delay_loop
    assert misc.retry == 4  # the service's retry; MISC_CHECK's own default is 0
    assert (misc.delay_before_retry, misc.warmup) == (1.0, 20)  # warmup: its delay_loop
    assert (ssl_get.connect_ip, ssl_get.connect_port, ssl_get.bindto, ssl_get.bind_port) == (
        "10.2.0.2", 443, "10.0.0.9", 5000)
    assert (ssl_get.connect_timeout, ssl_get.delay_loop, ssl_get.warmup) == (1.5, 3, 3)
    assert ssl_get.delay_before_retry == 3.0 and ssl_get.virtualhost == "rs.example"
    assert ssl_get.alpha and vs.servers[1].starts_down() and not vs.servers[0].starts_down()
    # MISC_CHECK takes no connect_timeout; the rest is as keepalived reads it
    assert msgs == ["k.conf:31: unknown MISC_CHECK keyword 'connect_timeout' ignored"]


def test_checker_defaults_without_settings() -> None:
    cfg, _ = model("virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.1.0.1 {\n"
                   "  TCP_CHECK {\n  }\n  MISC_CHECK {\n   misc_path /bin/true\n  }\n }\n}\n")
    tcp, misc = cfg.services[0].servers[0].checkers
    assert tcp.connect_port == 80  # the service's port
    assert (tcp.retry, tcp.delay_before_retry, tcp.delay_loop, tcp.warmup) == (1, 1.0, 60, 60)
    assert tcp.connect_timeout == 5
    assert (misc.retry, misc.misc_timeout) == (0, 60)


def test_checker_kinds_fastvs_lacks_are_kept_and_warned_with_file_and_line() -> None:
    cfg, msgs = model("""
virtual_server 10.0.0.1 53 {
  protocol UDP
  real_server 10.1.0.1 53 {
    DNS_CHECK {
      type A
    }
    PING_CHECK {
    }
  }
  real_server 10.1.0.2 53 {
    DNS_CHECK {
    }
  }
}
""")
    kinds = [(c.kind, c.supported) for rs in cfg.services[0].servers for c in rs.checkers]
    assert kinds == [("DNS_CHECK", False), ("PING_CHECK", False), ("DNS_CHECK", False)]
    assert msgs == [
        "k.conf:5: 2 DNS_CHECK health checks (the first here) are not run by fastvs: real "
        "servers start as passing them (failing, in alpha mode) and stay so",
        "k.conf:8: the PING_CHECK health check is not run by fastvs: real servers start as "
        "passing them (failing, in alpha mode) and stay so",
    ]


def test_checkers_keepalived_would_drop_and_bad_values() -> None:
    cfg, msgs = model("""
virtual_server 10.0.0.1 80 {
  protocol TCP
  real_server 10.1.0.1 80 {
    HTTP_GET {
      url {
        digest 640205b7b0fc66c1ea91c463fac6334d
      }
    }
    MISC_CHECK {
      misc_timeout 3
    }
    TCP_CHECK {
      fast_recovery
    }
  }
}
""")
    assert [c.kind for c in cfg.services[0].servers[0].checkers] == ["TCP_CHECK"]
    assert msgs == [
        "k.conf:6: url has no path: ignored, as keepalived does",
        "k.conf:5: HTTP_GET has no url: ignored, as keepalived does",
        "k.conf:10: MISC_CHECK has no misc_path: ignored, as keepalived does",
        "k.conf:14: unknown TCP_CHECK keyword 'fast_recovery' ignored",
    ]
    for bad, message in [
        ("url {\n path /\n status_code 99\n }", "k.conf:7: status_code: '99' is not a code"),
        ("url {\n path /\n digest abc\n }", "k.conf:7: digest takes the 32 hex digits"),
        ("connect_port 0", "k.conf:5: connect_port: 0 is out of range (1-65535)"),
        ("connect_ip 10.1.0.300", "k.conf:5: bad connect_ip address '10.1.0.300'"),
        ("delay_loop soon", "k.conf:5: delay_loop: 'soon' is not a number of seconds"),
    ]:
        text = ("virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.1.0.1 80 {\n"
                f" HTTP_GET {{\n{bad}\n }}\n }}\n}}\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(RulesError) as exc:
                read_keepalived(text, source="k.conf")
        assert str(exc.value).startswith(message), (bad, str(exc.value))


def test_the_model_gives_the_same_start_table_as_parse_keepalived() -> None:
    for name in SAMPLE_NAMES:
        path = SAMPLES / f"keepalived.conf.{name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = read_keepalived_file(path)
        assert format_rules(cfg.initial_rules(), strict=True) == \
            (SAMPLES / f"{name}.ipvsadm").read_text()
        kinds = {(c.kind, c.supported) for _, _, c in cfg.checkers()}
        assert kinds <= {("HTTP_GET", True), ("TCP_CHECK", True), ("SMTP_CHECK", False)}, name


def test_a_bare_real_server_has_no_checker_and_names() -> None:
    cfg, _ = model("virtual_server fwmark 5 {\n real_server 10.1.0.1 {\n }\n}\n"
                   "virtual_server_group G {\n 10.0.0.1 80\n}\n"
                   "virtual_server group G {\n protocol TCP\n real_server 10.1.0.2 {\n }\n}\n"
                   "virtual_server 2001:db8::1 443 {\n protocol TCP\n"
                   " real_server 2001:db8::2 443 {\n }\n}\n")
    assert [vs.name() for vs in cfg.services] == ["FWM 5", "group G", "TCP [2001:db8::1]:443"]
    assert [vs.servers[0].name(vs.port()) for vs in cfg.services] == [
        "10.1.0.1:0", "10.1.0.2:80", "[2001:db8::2]:443"]
    assert all(not vs.servers[0].checkers for vs in cfg.services)


def test_addresses_include_sorry_and_down_servers() -> None:
    cfg, _ = model("""
virtual_server 10.0.0.1 80 {
  protocol TCP
  alpha
  sorry_server 10.9.9.9 80
  real_server 10.1.0.1 80 {
    TCP_CHECK {
    }
  }
  real_server 10.1.0.2 80 {
    lb_kind DR
  }
}
virtual_server fwmark 3 {
  real_server 10.1.0.3 80 {
  }
}
""")
    assert "10.1.0.1" not in format_rules(cfg.initial_rules())  # alpha: starts down
    assert cfg.addresses() == ({"10.0.0.1"}, {"10.9.9.9", "10.1.0.1", "10.1.0.3"})
