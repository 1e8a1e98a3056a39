"""The health-check state machine (fastvs.health.state) with made-up results and a fake
wall clock: keepalived's retry counting and delays, alpha, inhibit_on_failure, quorum and
hysteresis with a sorry server, misc_dynamic weights, the edits and the log lines."""

from __future__ import annotations

import warnings

from fastvs.control.keepalived import read_keepalived
from fastvs.control.rules import format_rules
from fastvs.health.state import CheckerState, CheckResult, HealthState, Transition

OK = CheckResult(True, "connected to 10.1.0.1:80")
FAIL = CheckResult(False, "connect to 10.1.0.1:80 timed out after 3 s")


def state(text: str) -> HealthState:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = read_keepalived(text, source="k.conf")
    return HealthState(cfg, wall=lambda: 1_700_000_000.25)


def table(st: HealthState) -> str:
    return format_rules(st.rules)


def checker(st: HealthState, addr: str, index: int = 0) -> CheckerState:
    for c in st.checkers():
        if c.server.config.addr == addr:
            if index == 0:
                return c
            index -= 1
    raise KeyError(addr)


TWO = """
virtual_server 10.0.0.1 80 {
  protocol TCP
  lb_algo rr
  delay_loop 10
  %s
  real_server 10.1.0.1 80 {
    weight 2
    %s
    TCP_CHECK {
      connect_timeout 3
      retry 2
      delay_before_retry 4
    }
  }
  real_server 10.1.0.2 80 {
    weight 3
    TCP_CHECK {
      connect_timeout 3
    }
  }
}
"""


def test_first_failure_is_enough_then_retry_plus_one_in_a_row() -> None:
    st = state(TWO % ("", ""))
    c = checker(st, "10.1.0.1")
    # never run: one failure takes it down at once (validate_check_config: retry_it = retry)
    delay, ts = st.report(c, FAIL)
    assert [(t.server, t.old, t.new) for t in ts] == [("10.1.0.1:80", "up", "down (removed)")]
    assert delay == 10  # while down, TCP_CHECK cycles its retries...
    assert st.report(c, FAIL) == (4, [])  # ...delay_before_retry apart
    delay, ts = st.report(c, OK)
    assert delay == 10 and [(t.old, t.new) for t in ts] == [("down", "up")]
    # now up: retry 2 means the 3rd failure in a row takes it down, retries 4 s apart
    assert st.report(c, FAIL) == (4, [])
    assert st.report(c, FAIL) == (4, [])
    delay, ts = st.report(c, FAIL)
    assert delay == 10
    assert [t.why for t in ts] == ["TCP_CHECK connect to 10.1.0.1:80 timed out after 3 s, "
                                   "3rd failure"]


def test_a_success_between_failures_resets_the_count() -> None:
    st = state(TWO % ("", ""))
    c = checker(st, "10.1.0.1")
    st.report(c, OK)
    for _ in range(5):
        assert st.report(c, FAIL)[1] == []
        assert st.report(c, FAIL)[1] == []
        assert st.report(c, OK) == (10, [])
    assert "10.1.0.1:80" in table(st)


def test_removed_and_back_with_its_weight_as_ipvsadm_edits() -> None:
    st = state(TWO % ("", ""))
    c = checker(st, "10.1.0.1")
    st.report(c, FAIL)
    assert [e.line() for e in st.take_edits()] == ["-d -t 10.0.0.1:80 -r 10.1.0.1:80"]
    assert table(st) == "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 3\n"
    st.report(c, OK)
    assert [e.line() for e in st.take_edits()] == ["-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 2"]
    # back at the head of the kernel's list, as a fresh ipvsadm -a puts it
    assert [rs.addr for rs in st.rules.services[0].reals] == ["10.1.0.1", "10.1.0.2"]


def test_inhibit_on_failure_sets_weight_0_and_back() -> None:
    st = state(TWO % ("", "inhibit_on_failure"))
    c = checker(st, "10.1.0.1")
    _, ts = st.report(c, FAIL)
    assert [(t.old, t.new) for t in ts] == [("up", "down (weight 0)")]
    assert [e.line() for e in st.take_edits()] == ["-e -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 0"]
    st.report(c, OK)
    assert [e.line() for e in st.take_edits()] == ["-e -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 2"]


def test_alpha_servers_start_down_and_come_up_on_the_first_success() -> None:
    st = state(TWO % ("alpha", "inhibit_on_failure"))
    assert table(st) == "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 0\n"
    _, ts = st.report(checker(st, "10.1.0.2"), OK)
    # no live weight at start: the quorum (1) was down and comes up with .2
    assert [(t.server, t.old, t.new) for t in ts] == [("10.1.0.2:80", "down", "up"),
                                                      ("(quorum)", "down", "up")]
    _, ts = st.report(checker(st, "10.1.0.1"), OK)
    assert [(t.server, t.old, t.new) for t in ts] == [("10.1.0.1:80", "down", "up")]
    assert "-r 10.1.0.1:80 -m -w 2" in table(st) and "-r 10.1.0.2:80 -m -w 3" in table(st)
    # a failure of an alpha checker that was down changes nothing
    st2 = state(TWO % ("alpha", ""))
    assert st2.report(checker(st2, "10.1.0.1"), FAIL) == (10, [])


def test_a_server_is_up_only_when_all_its_checkers_are() -> None:
    st = state("""
virtual_server 10.0.0.1 80 {
  protocol TCP
  real_server 10.1.0.1 80 {
    TCP_CHECK {
    }
    MISC_CHECK {
      misc_path /bin/true
    }
  }
}
""")
    tcp, misc = checker(st, "10.1.0.1", 0), checker(st, "10.1.0.1", 1)
    assert st.report(tcp, FAIL)[1][0].new == "down (removed)"
    assert st.report(misc, CheckResult(False, "/bin/true exited 1"))[1] == []
    assert st.report(tcp, OK)[1] == []  # MISC_CHECK still down
    assert "10.1.0.1" not in table(st)
    assert st.report(misc, CheckResult(True, "/bin/true exited 0"))[1][0].new == "up"
    assert "10.1.0.1" in table(st)


QUORUM = """
virtual_server 10.0.0.1 80 {
  protocol TCP
  quorum 4
  hysteresis 1
  sorry_server 10.9.9.9 80
  %s
  real_server 10.1.0.1 80 {
    weight 2
    TCP_CHECK {
    }
  }
  real_server 10.1.0.2 80 {
    weight 2
    TCP_CHECK {
    }
  }
  real_server 10.1.0.3 80 {
    weight 2
    inhibit_on_failure
    TCP_CHECK {
    }
  }
}
"""


def test_quorum_lost_below_quorum_minus_hysteresis_and_regained_above_plus() -> None:
    st = state(QUORUM % "")
    a, b, c = (checker(st, f"10.1.0.{i}") for i in (1, 2, 3))
    assert "10.9.9.9" not in table(st)
    st.report(a, FAIL)  # live weight 4 >= 4 - 1: quorum kept
    assert "10.9.9.9" not in table(st)
    _, ts = st.report(b, FAIL)  # live 2 < 3: lost
    assert [(t.server, t.old, t.new) for t in ts] == [
        ("10.1.0.2:80", "up", "down (removed)"), ("(quorum)", "up", "down")]
    assert ts[1].why == ("live weight 2 < quorum 4 - hysteresis 1; sorry server 10.9.9.9:80 "
                         "in, alive servers out")
    # the alive .3 (inhibit_on_failure) stays at weight 0, the sorry server takes traffic
    assert table(st) == (
        "-A -t 10.0.0.1:80 -s wlc\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 0\n"
        "-a -t 10.0.0.1:80 -r 10.9.9.9:80 -m -w 1\n"
    )
    _, ts = st.report(a, OK)  # live 4 < 4 + 1: still down, .1 held out
    assert [(t.old, t.new) for t in ts] == [("down", "up (held out: the sorry server is in)")]
    assert "10.1.0.1" not in table(st)
    _, ts = st.report(b, OK)  # live 6 >= 5: regained
    assert ts[-1].server == "(quorum)" and ts[-1].new == "up"
    assert table(st) == (
        "-A -t 10.0.0.1:80 -s wlc\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 2\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 2\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 2\n"
    )


def test_sorry_server_when_all_are_down_and_sorry_server_inhibit() -> None:
    st = state(QUORUM % "sorry_server_inhibit")
    assert "-r 10.9.9.9:80 -m -w 0" in table(st)
    for i in (1, 2, 3):
        st.report(checker(st, f"10.1.0.{i}"), FAIL)
    assert table(st) == (
        "-A -t 10.0.0.1:80 -s wlc\n"
        "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 0\n"
        "-a -t 10.0.0.1:80 -r 10.9.9.9:80 -m -w 1\n"
    )
    for i in (1, 2, 3):
        st.report(checker(st, f"10.1.0.{i}"), OK)
    assert "-r 10.9.9.9:80 -m -w 0" in table(st)  # inhibited: back to weight 0, not removed


def test_misc_dynamic_weights_and_quorum() -> None:
    st = state("""
virtual_server 10.0.0.1 80 {
  protocol TCP
  quorum 3
  sorry_server 10.9.9.9 80
  real_server 10.1.0.1 80 {
    weight 5
    MISC_CHECK {
      misc_path "/usr/local/bin/load 10.1.0.1"
      misc_dynamic
    }
  }
}
""")
    c = checker(st, "10.1.0.1")
    assert c.config.retry == 0  # MISC_CHECK's own default
    _, ts = st.report(c, CheckResult(True, "load exited 9", weight=7))
    assert [(t.old, t.new) for t in ts] == [("weight 5", "weight 7")]
    assert "-r 10.1.0.1:80 -m -w 7" in table(st)
    assert [e.line() for e in st.take_edits()] == ["-e -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 7"]
    _, ts = st.report(c, CheckResult(True, "load exited 3", weight=1))  # 1 < quorum 3
    assert [(t.server, t.new) for t in ts] == [("10.1.0.1:80", "weight 1"), ("(quorum)", "down")]
    assert "10.1.0.1" not in table(st) and "10.9.9.9" in table(st)
    assert st.report(c, CheckResult(True, "load exited 0"))[1] == []  # 0: up, weight kept
    _, ts = st.report(c, CheckResult(True, "load exited 6", weight=4))
    assert ts[-1].new == "up" and "-r 10.1.0.1:80 -m -w 4" in table(st)
    _, ts = st.report(c, CheckResult(False, "load exited 1"))
    assert ts[0].new == "down (removed)"


def test_http_waits_the_longer_delay_while_down_misc_the_loop() -> None:
    st = state("""
virtual_server 10.0.0.1 80 {
  protocol TCP
  delay_loop 5
  real_server 10.1.0.1 80 {
    HTTP_GET {
      url {
        path /
      }
      delay_before_retry 8
    }
    MISC_CHECK {
      misc_path /bin/false
      delay_before_retry 8
    }
  }
}
""")
    http, misc = checker(st, "10.1.0.1", 0), checker(st, "10.1.0.1", 1)
    assert http.config.retry == 1 and http.config.delay_before_retry == 8
    assert st.report(http, FAIL)[0] == 8  # down: max(delay_loop, delay_before_retry)
    assert st.report(http, FAIL)[0] == 8
    assert st.report(misc, FAIL)[0] == 5
    assert st.report(misc, FAIL)[0] == 5


def test_unsupported_checkers_hold_their_start_state() -> None:
    st = state("""
virtual_server 10.0.0.1 53 {
  protocol UDP
  alpha
  real_server 10.1.0.1 53 {
    DNS_CHECK {
      name example.com
    }
  }
}
""")
    (c,) = list(st.checkers())
    assert not c.config.supported and not c.is_up
    assert st.snapshot()[0]["state"] == "down"
    assert st.snapshot()[0]["checkers"][0]["run"] is False


def test_groups_apply_each_edit_to_every_kernel_service() -> None:
    st = state("""
virtual_server_group G {
  10.0.0.1-2 80
  fwmark 7
}
virtual_server group G {
  protocol TCP
  real_server 10.1.0.1 80 {
    TCP_CHECK {
    }
  }
  real_server 10.1.0.2 80 {
  }
}
""")
    st.report(checker(st, "10.1.0.1"), FAIL)
    assert [e.line() for e in st.take_edits()] == [
        "-d -t 10.0.0.1:80 -r 10.1.0.1:80",
        "-d -t 10.0.0.2:80 -r 10.1.0.1:80",
        "-d -f 7 -r 10.1.0.1:80",
    ]


def test_transition_line_and_snapshot() -> None:
    t = Transition(1_700_000_000.25, "TCP 10.0.0.1:80", "10.1.0.1:80", "up", "down (removed)",
                   "TCP_CHECK connect to 10.1.0.1:80 timed out after 3 s, 3rd failure")
    assert t.line() == ("2023-11-14T22:13:20.250Z TCP 10.0.0.1:80 10.1.0.1:80: up -> down "
                        "(removed): TCP_CHECK connect to 10.1.0.1:80 timed out after 3 s, "
                        "3rd failure")
    st = state(TWO % ("", ""))
    st.report(checker(st, "10.1.0.1"), FAIL)
    snap = st.snapshot()
    assert snap[0]["state"] == "down" and snap[0]["in_table"] is None and not snap[0]["up"]
    assert snap[0]["changed"] == 1_700_000_000.25
    assert snap[0]["why"] == "TCP_CHECK " + FAIL.detail + ", 1st failure"
    assert snap[1]["changed"] == 0.0 and snap[1]["why"] == ""
    assert snap[0]["last_transition"].startswith("2023-11-14T22:13:20.250Z TCP 10.0.0.1:80 ")
    assert snap[1]["state"] == "up" and snap[1]["in_table"] == 3
    assert snap[0]["checkers"][0]["last"] == FAIL.detail


def test_reload_keeps_the_state_of_what_it_finds_again() -> None:
    old = state(TWO % ("", ""))
    st1 = checker(old, "10.1.0.1")
    st1_ok = checker(old, "10.1.0.2")
    old.report(st1, FAIL)
    old.report(st1_ok, CheckResult(True, "ok"))
    new_text = (TWO % ("", "")).replace("weight 3", "weight 5").replace(
        "  real_server 10.1.0.2 80 {",
        "  real_server 10.1.0.3 80 {\n    TCP_CHECK {\n    }\n  }\n  real_server 10.1.0.2 80 {")
    new = state(new_text)
    assert new.migrate(old) == []
    assert new.generation == old.generation + 1
    c1 = checker(new, "10.1.0.1")
    assert not c1.is_up and c1.has_run and not c1.server.alive  # still down
    assert checker(new, "10.1.0.3").server.alive  # a new server starts as at start-up
    assert [e.line() for e in new.take_edits()] == [
        "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 1",
        "-e -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 5",
    ]
    _, ts = new.report(c1, OK)
    assert [(t.server, t.old, t.new) for t in ts] == [("10.1.0.1:80", "down", "up")]
    # a service that went away is deleted, a new one added with its servers
    other = state("virtual_server 10.0.0.2 80 {\n protocol TCP\n real_server 10.1.0.9 80 {\n"
                  " }\n}\n")
    other.migrate(new)
    assert [e.line() for e in other.take_edits()] == [
        "-D -t 10.0.0.1:80", "-A -t 10.0.0.2:80 -s wlc", "-a -t 10.0.0.2:80 -r 10.1.0.9:80 -m -w 1"]


def test_reload_keeps_misc_dynamic_weight_and_quorum_state() -> None:
    text = QUORUM % ""
    old = state(text)
    for i in (1, 2):
        old.report(checker(old, f"10.1.0.{i}"), FAIL)
    assert "10.9.9.9" in table(old)
    new = state(text)
    new.migrate(old)
    assert table(new) == table(old) and new.take_edits() == []
    # a lower quorum on reload: the live weight 2 now meets it and the sorry server goes
    lower = state(text.replace("quorum 4", "quorum 2").replace("hysteresis 1", ""))
    ts = lower.migrate(new)
    assert [(t.server, t.new) for t in ts] == [("(quorum)", "up")]
    assert "10.9.9.9" not in table(lower)


def test_the_states_at_start_imply_the_start_table_of_every_sample() -> None:
    from pathlib import Path

    from fastvs.control.keepalived import read_keepalived_file

    samples = Path(__file__).resolve().parent.parent / "control" / "keepalived"
    names = sorted(samples.glob("keepalived.conf.*"))
    assert len(names) == 6
    for path in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = read_keepalived_file(path)
        st = HealthState(cfg)
        assert format_rules(st.rules) == format_rules(cfg.initial_rules()), path.name
        before = len(st.edits)
        for svc in st.services:  # syncing again changes nothing
            st._sync(svc)
        assert len(st.edits) == before == 0, path.name
