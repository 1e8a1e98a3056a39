"""The TCP state machine as a real Linux 6.1 IPVS director runs it, packet by packet.

``tests/golden/step/kstep.step.json`` was recorded with kernlab
(``tools/kernlab_golden.py step``, i.e. ``lab.sh step OUT --matrix SCENARIO...``): every
reachable state x every packet kind, plus hand-picked scenarios. Each scenario had its own
service ``10.77.1.N:80 -> 10.78.0.(99+N):8080`` (rr, one real server; the rules are
``kstep.step.rules``), client ``10.77.0.2:(30000+N-1)``, and after every packet kernlab
recorded whether the packet was forwarded (and where to), the connection's state and
expiry from ``ipvsadm -L -n -c``, and ActiveConn/InActConn from ``ipvsadm -L -n``.

Here every scenario is replayed through :class:`fastvs.control.director.Director` with the same
frames (built as kl.py's ``build_tcp`` builds them: the same seq/ack bookkeeping), and
after every packet fastvs must agree on: forwarded or not and to which address, the state
name, ActiveConn/InActConn. The kernel's expiry is wall-clock seconds left ("00:59" a
moment after a 60 s timeout was set); fastvs's is packet time, so the state's timeout is
compared instead: fastvs's connection expires exactly ``timeout(state)`` after the
packet, and the kernel's remaining time lies in ``(timeout - 3 s, timeout]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastvs import verdicts as V
from fastvs.control.director import Director
from fastvs.control.rules import load_rules

from packets import tcp

pytestmark = pytest.mark.kernel

STEP = Path(__file__).resolve().parent / "golden" / "step"
SCENARIOS: list[dict] = json.loads((STEP / "kstep.step.json").read_text())
RULES = load_rules(STEP / "kstep.step.rules")
CLIENT = "10.77.0.2"
NS = 1_000_000_000
READ_DELAY = 50_000_000  # ns

# Where fastvs and the kernel differ (scenario -> reason). Empty: they agree everywhere.
KNOWN_DIFFERENCES: dict[str, str] = {}


def _flags(txt: str) -> int:
    return sum({"F": 1, "S": 2, "R": 4, "P": 8, "A": 16, "U": 32}[c] for c in txt.replace("-", ""))


def _mmss(s: str) -> int:
    m, sec = s.split(":")
    return int(m) * 60 + int(sec)


def replay(sc: dict) -> list[dict]:
    """Run one scenario; after each packet return what fastvs shows (the kernel's keys)."""
    n = int(sc["vip"].rsplit(".", 1)[1])  # 10.77.1.N
    vip, vport, rip, rport = sc["vip"], 80, f"10.78.0.{99 + n}", 8080
    cport = sc["cport"]
    d = Director(RULES, seed=1)
    cseq, sseq = 1000, 5000
    rows = []
    for i, st in enumerate(sc["scenario"].split()):
        side, fl = st.split(":")
        flags = _flags(fl)
        if side == "c":
            frame = tcp(CLIENT, cport, vip, vport, fl, seq=cseq, ack=sseq if flags & 16 else 0)
            cseq += 1 if flags & 3 else 0
        else:
            frame = tcp(rip, rport, CLIENT, cport, fl, seq=sseq, ack=cseq if flags & 16 else 0)
            sseq += 1 if flags & 3 else 0
        now = (i + 1) * NS  # 1 s apart: the kernel's steps were ~0.1-0.4 s apart, far below any timeout
        out, v = d.process_packets([frame], [now])
        # kernlab reads the listing >= 50 ms after the packet (--gap 0.05): by then the
        # kernel's timers have run, e.g. the one ip_vs_conn_expire_now set for an entry a
        # SYN replaced (TIME_WAIT/CLOSE re-use). Read fastvs at the same moment.
        d.engine.advance(now + READ_DELAY)
        fwd = "-"
        if v[0] in (V.FWD_IN, V.FWD_OUT):
            ip = out[0][14:]
            if side == "c":
                fwd = f"{'.'.join(map(str, ip[16:20]))}:{int.from_bytes(ip[22:24], 'big')}"
            else:
                fwd = f"{'.'.join(map(str, ip[12:16]))}:{int.from_bytes(ip[20:22], 'big')}"
        conns = [c for c in d.connections() if c["vaddr"] == vip and c["vport"] == vport]
        real = d.services()[n - 1]["reals"][0]
        assert real["addr"] == rip
        rows.append({
            "pkt": st, "fwd": fwd, "verdict": V.name(v[0]),
            "states": [c["state"] for c in conns],
            "left_s": [(c["expires_ns"] + READ_DELAY) / NS for c in conns],  # left after the packet
            "active": real["activeconns"], "inact": real["inactconns"],
        })
    return rows


def _ids() -> list[str]:
    return [f"{i:03d}:{sc['scenario']}" for i, sc in enumerate(SCENARIOS)]


def _params() -> list:
    out = []
    for i, sc in enumerate(SCENARIOS):
        marks = []
        if sc["scenario"] in KNOWN_DIFFERENCES:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[sc["scenario"]])]
        out.append(pytest.param(sc, id=_ids()[i], marks=marks))
    return out


def test_recording_is_complete() -> None:
    """The matrix (7 states x 10 packet kinds + 7 extras) and the hand-picked cases."""
    assert len(SCENARIOS) >= 77
    assert RULES.services and len(RULES.services) == len(SCENARIOS)
    for sc in SCENARIOS:
        assert len(sc["steps"]) == len(sc["scenario"].split())


@pytest.mark.parametrize("sc", _params())
def test_same_steps_as_the_kernel(sc: dict) -> None:
    mine = replay(sc)
    timeouts = Director(RULES, seed=1).timeouts
    for k, m in zip(sc["steps"], mine, strict=True):
        where = f"{sc['scenario']!r} after {k['pkt']}"
        assert m["fwd"] == k["fwd"], f"{where}: forwarded to {m['fwd']} ({m['verdict']}), kernel {k['fwd']}"
        kstates = [c.split("(")[0] for c in k["conns"]]
        assert m["states"] == kstates, f"{where}: states {m['states']}, kernel {kstates}"
        assert (m["active"], m["inact"]) == (k["active"], k["inact"]), \
            f"{where}: ActiveConn/InActConn {m['active']}/{m['inact']}, kernel {k['active']}/{k['inact']}"
        for state, kexp, left in zip(kstates, k["conns"], m["left_s"], strict=True):
            t = timeouts[state]
            assert left == t, f"{where}: fastvs {state} expires in {left} s, timeout {t} s"
            kleft = _mmss(kexp.split("(")[1].rstrip(")"))
            assert t - 3 < kleft <= t, f"{where}: kernel {state} expires in {kleft} s, fastvs timeout {t} s"
