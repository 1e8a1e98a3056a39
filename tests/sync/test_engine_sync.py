"""The sync master inside the engine (fastvs/datapath/_sync.pxd) and the backup's bulk
insert (Engine.insert_conns / Director.insert_sync_conns).

- run on the kernel lab's inputs, the engine's records, packed by SyncMaster, are the
  kernel master's datagrams byte for byte (every recorded sysctl variant), and the
  reference walk's (refmaster.py: fastvs.sync.policy);
- the refresh period and retries follow policy.sync_conn_needed packet by packet;
- v0 sends no IPv6 connection; direct routing's records carry the kernel's flags;
- a template kept alive by its connections is sent again when its timer runs
  (ip_vs_conn_expire's expire_later);
- connections inserted from a backup's table are found, counted and forwarded as the
  master's were; templates are found by persistence; unbound entries forward by their
  own address.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from refmaster import simulate

from fastvs import verdicts as V
from fastvs.capture.pcap import open_capture
from fastvs.control.director import Director
from fastvs.control.rules import load_rules, parse_rules
from fastvs.datapath._engine import Engine
from fastvs.errors import OptionError
from fastvs.sync.backup import BACKUP_CONN_DTYPE, BackupTable
from fastvs.sync.frames import iter_datagrams
from fastvs.sync.master import SYNC_EVENT_DTYPE, SyncMaster, events_to_records
from fastvs.sync.policy import ConnSync, SyncSysctls, sync_conn_needed
from fastvs.sync.proto import F_DROUTE, F_INACTIVE, F_NOOUTPUT, F_TEMPLATE, SyncConn

from packets import tcp, tcp6, udp

G = Path(__file__).resolve().parent.parent / "golden" / "sync"
S = 1_000_000_000
SYNCID = 7
MASTER = [
    "s1-tcp-udp",
    "s2-persist",
    "s1-tcp-udp-v0",
    "s2-persist-v0",
    "s1-tcp-udp-t1p4",
    "s1-tcp-udp-t3p0",
    "s2-persist-pm1",
]
VARIANTS: dict[str, dict[str, int]] = {
    "t1p4": dict(threshold=1, period=4),
    "t3p0": dict(threshold=3, period=0),
    "pm1": dict(persist_mode=1),
}
POLICY_NAMES = {"threshold": "sync_threshold", "period": "sync_period", "persist_mode": "sync_persist_mode"}


def _case(name: str) -> tuple[str, int, dict[str, int]]:
    base = next(b for b in ("s1-tcp-udp", "s2-persist") if name.startswith(b))
    tag = name[len(base) + 1 :]
    return base, 0 if tag == "v0" else 1, VARIANTS.get(tag, {})


def engine_master(pcap: Path, rules: Path, version: int, **kw: int) -> SyncMaster:
    d = Director(load_rules(rules), seed=1)
    d.enable_sync_master(version=version, **kw)  # type: ignore[arg-type]
    m = SyncMaster(SYNCID, version=version)
    with open_capture(str(pcap)) as rd:
        for b in rd:
            d.process(b)
            m.feed(d.take_sync_events())
    m.close()
    return m


def kernel_payloads(name: str) -> list[bytes]:
    return [d.payload for d in iter_datagrams(G / f"{name}.kernel.sync.pcap", 8848, "224.0.0.81")]


@pytest.mark.parametrize("name", MASTER)
def test_engine_sends_the_kernels_datagrams(name: str) -> None:
    base, version, kw = _case(name)
    m = engine_master(G / f"{base}.pcap", G / f"{base}.rules", version, **kw)
    assert [msg for _, msg in m.messages] == kernel_payloads(name)
    # and the reference walk's, with the same send times
    _, ref = simulate(str(G / f"{base}.pcap"), str(G / f"{base}.rules"), SYNCID, version,
                      **{POLICY_NAMES[k]: v for k, v in kw.items()})
    assert m.messages == ref


def test_events_are_empty_when_off_and_dtype_is_stable() -> None:
    d = Director(load_rules(G / "s1-tcp-udp.rules"), seed=1)
    with open_capture(str(G / "s1-tcp-udp.pcap")) as rd:
        for b in rd:
            d.process(b)
    ev = d.take_sync_events()
    assert ev.dtype == SYNC_EVENT_DTYPE and len(ev) == 0
    assert d.engine.sync is None


def test_events_are_taken_once() -> None:
    d = Director(load_rules(G / "s1-tcp-udp.rules"), seed=1)
    d.enable_sync_master()
    with open_capture(str(G / "s1-tcp-udp.pcap")) as rd:
        for b in rd:
            d.process(b)
    ev = d.take_sync_events()
    assert len(ev) == 57 and len(d.take_sync_events()) == 0
    assert (np.diff(ev["ts_ns"]) >= 0).all()
    d.disable_sync_master()
    assert d.engine.sync is None


RULES_TXT = (
    "-A -t 10.1.0.1:80 -s rr\n"
    "-a -t 10.1.0.1:80 -r 10.2.0.1:8080 -m\n"
    "-a -t 10.1.0.1:80 -r 10.2.0.2:8080 -m\n"
    "-A -u 10.1.0.2:53 -s rr\n"
    "-a -u 10.1.0.2:53 -r 10.2.0.3:53 -m\n"
    "-A -u 10.1.0.3:53 -s rr -p 10\n"
    "-a -u 10.1.0.3:53 -r 10.2.0.4:53 -m\n"
    "-A -t 10.1.0.4:80 -s rr\n"
    "-a -t 10.1.0.4:80 -r 10.2.0.5:80 -g\n"
    "-A -t [2001:db8::1]:80 -s rr\n"
    "-a -t [2001:db8::1]:80 -r [2001:db8:1::1]:80 -m\n"
)


def _director(**kw: object) -> Director:
    """A master with these sysctls (the kernel's defaults for the rest)."""
    d = Director(parse_rules(RULES_TXT), seed=3)
    d.enable_sync_master(**kw)  # type: ignore[arg-type]
    return d


@pytest.mark.parametrize("refresh,retries", [(20, 0), (20, 2), (40, 3)])
def test_refresh_period_follows_the_policy(refresh: int, retries: int) -> None:
    """A UDP flow, one packet a second for 200 s (sync_period 0: only the refresh
    period decides): the records go exactly when policy.sync_conn_needed says so."""
    d = _director(threshold=3, period=0, refresh_period=refresh, retries=retries)
    t0 = 1000 * S
    times = [t0 + i * S + (i * 7919 % 1000) * 1_000_000 for i in range(200)]
    frames = [udp("10.0.0.1", 5000, "10.1.0.2", 53) for _ in times]
    sent = []
    for fr, t in zip(frames, times, strict=True):
        d.process_packets([fr], [t])
        sent += [int(x) for x in d.take_sync_events()["ts_ns"]]
    ctl = SyncSysctls(sync_threshold=3, sync_period=0, sync_refresh_period=refresh,
                      sync_retries=retries)
    cp = ConnSync.new(17, times[0] // 4_000_000, 250, timeout=300 * 250)
    want = []
    for t in times:
        cp.in_pkts += 1
        if sync_conn_needed(ctl, cp, cp.in_pkts, t // 4_000_000):
            want.append(t)
    assert sent == want and len(want) >= 200 // refresh


def test_v0_never_sends_ipv6_and_v1_does() -> None:
    def run(version: int) -> np.ndarray:
        d = _director(version=version)
        c, v = "2001:db8:2::9", "2001:db8::1"
        pkts = [tcp6(c, 4000, v, 80, "S"), tcp6(c, 4000, v, 80, "A"), tcp6(c, 4000, v, 80, "PA")]
        d.process_packets(pkts, [S, 2 * S, 3 * S])
        return d.take_sync_events()

    assert len(run(0)) == 0
    ev = run(1)
    assert len(ev) == 1 and ev["af"][0] == 6 and ev["state"][0] == 1
    assert events_to_records(ev)[0].caddr == "2001:db8:2::9"


def test_direct_routing_records_carry_the_kernels_flags() -> None:
    d = _director()
    pkts = [tcp("10.0.0.5", 4000, "10.1.0.4", 80, f) for f in ("S", "A", "PA")]
    d.process_packets(pkts, [S, 2 * S, 3 * S])
    (r,) = events_to_records(d.take_sync_events())
    # IP_VS_CONN_F_DROUTE | NOOUTPUT: a DR connection never sees the server's replies
    assert r.flags == F_DROUTE | F_NOOUTPUT and r.daddr == "10.2.0.5" and r.state == 1


def test_held_template_is_sent_again_when_its_timer_runs() -> None:
    """ip_vs_conn_expire, expire_later: a template whose connection still lives gets
    60 s more and a master sends it then."""
    d = _director(threshold=1, period=0)
    d.process_packets([udp("10.0.0.7", 6000, "10.1.0.3", 53)], [S])
    first = events_to_records(d.take_sync_events())
    assert [r.flags & F_TEMPLATE for r in first] == [0, F_TEMPLATE]
    # the template (-p 10) runs out at 11 s; a packet at 15 s runs its timer
    d.process_packets([udp("10.0.0.8", 6000, "10.1.0.2", 53)], [15 * S])
    ev = d.take_sync_events()
    recs = events_to_records(ev)
    tpl = [(int(t), r) for t, r in zip(ev["ts_ns"], recs, strict=True) if r.flags & F_TEMPLATE]
    assert len(tpl) == 1
    ts, r = tpl[0]
    assert ts == 11 * S and r.timeout == 60 and r.cport == 0 and r.daddr == "10.2.0.4"


def test_template_becomes_assured() -> None:
    d = _director()
    d.process_packets([udp("10.0.0.7", 6000, "10.1.0.3", 53)], [S])
    (t,) = [c for c in d.connections() if c["template"]]
    assert t["state"] == "NONE"
    d.process_packets([udp("10.2.0.4", 53, "10.0.0.7", 6000)], [2 * S])  # the reply
    (t,) = [c for c in d.connections() if c["template"]]
    assert t["state"] == "ASSURED"


def test_one_packet_entries_are_not_sent_but_their_template_is() -> None:
    """ip_vs_sync_conn (v1): a ONE_PACKET connection is skipped ("goto control") and its
    template, counting each datagram in its in_pkts, is sent by the template's own
    threshold; v0 sends neither."""
    rules = RULES_TXT.replace("-A -u 10.1.0.3:53 -s rr -p 10", "-A -u 10.1.0.3:53 -s rr -p 10 -o")

    def run(version: int) -> list[SyncConn]:
        d = Director(parse_rules(rules), seed=3)
        d.enable_sync_master(version=version, threshold=1, period=0)
        for i in range(3):
            d.process_packets([udp("10.0.0.7", 6000 + i, "10.1.0.3", 53)], [(1 + i) * S])
        assert not [c for c in d.connections() if not c["template"]]
        return events_to_records(d.take_sync_events())

    recs = run(1)
    assert recs and all(r.flags & F_TEMPLATE for r in recs)
    assert {(r.caddr, r.cport, r.daddr) for r in recs} == {("10.0.0.7", 0, "10.2.0.4")}
    assert run(0) == []


@pytest.mark.parametrize("kw,flag", [
    (dict(version=2), "sync_version"),
    (dict(threshold=50, period=50), "sync_threshold"),
    (dict(retries=4), "sync_retries"),
    (dict(refresh_period=-1), "sync_refresh_period"),
])  # fmt: skip
def test_bad_sysctls_are_refused(kw: dict[str, int], flag: str) -> None:
    d = Director(parse_rules(RULES_TXT))
    with pytest.raises(OptionError) as e:
        d.enable_sync_master(**kw)  # type: ignore[arg-type]
    assert e.value.flag == "--" + flag.replace("_", "-")
    with pytest.raises(ValueError):
        Engine(16).set_sync(True, **kw)


# -- the backup's table into an engine ----------------------------------------------------------

def _rec(**kw: object) -> SyncConn:
    base: dict[str, object] = dict(protocol=6, caddr="10.0.0.1", cport=1000, vaddr="10.1.0.1",
                                   vport=80, daddr="10.2.0.2", dport=8080, state=1, timeout=900)
    base.update(kw)
    return SyncConn(**base)  # type: ignore[arg-type]


def test_inserted_connections_carry_on() -> None:
    rules = parse_rules(RULES_TXT)
    t = BackupTable(rules)
    t.apply(_rec(), 100.0)  # ESTABLISHED to the second real server
    t.apply(_rec(cport=1001, state=4, flags=F_INACTIVE, timeout=120), 100.0)  # FIN_WAIT
    t.apply(_rec(protocol=17, caddr="10.0.0.7", cport=6000, vaddr="10.1.0.3", vport=53,
                 daddr="10.2.0.4", dport=53, state=0, timeout=300), 100.0)
    t.apply(_rec(protocol=17, caddr="10.0.0.7", cport=0, vaddr="10.1.0.3", vport=53,
                 daddr="10.2.0.4", dport=53, state=0, timeout=10, flags=F_TEMPLATE), 100.0)
    # no such real server: kept unbound, forwarded to its own address
    t.apply(_rec(cport=1002, daddr="10.2.0.99", dport=9999), 100.0)
    rows = t.to_array(101.0)
    assert rows.dtype == BACKUP_CONN_DTYPE and len(rows) == 5
    d = Director(rules, seed=5)
    assert d.insert_sync_conns(rows, 50 * S) == 5
    assert d.engine.conn_count == 5
    reals = {(r["addr"], r["port"]): r for s in d.services() for r in s["reals"]}
    assert (reals[("10.2.0.2", 8080)]["activeconns"], reals[("10.2.0.2", 8080)]["inactconns"]) == (1, 1)
    # (the UDP record came without INACTIVE: the backup counts it active, as it was sent)
    assert reals[("10.2.0.4", 53)]["persistconns"] == 1 and reals[("10.2.0.4", 53)]["activeconns"] == 1
    c = d.lookup("tcp", "10.0.0.1", 1000, "10.1.0.1", 80)
    assert c is not None and c["daddr"] == "10.2.0.2" and c["state"] == "ESTABLISHED"
    assert c["expires_ns"] == 899 * S  # 900 s from the record at 100 s, listed at 101 s
    # the established connection's next packet goes to its real server, nothing scheduled
    out, v = d.process_packets([tcp("10.0.0.1", 1000, "10.1.0.1", 80, "PA")], [50 * S])
    assert v == [V.FWD_IN] and socket.inet_ntoa(out[0][30:34]) == "10.2.0.2"
    # the unbound one goes by its own address and port
    out, v = d.process_packets([tcp("10.0.0.1", 1002, "10.1.0.1", 80, "A")], [50 * S])
    assert v == [V.FWD_IN] and socket.inet_ntoa(out[0][30:34]) == "10.2.0.99"
    assert int.from_bytes(out[0][36:38], "big") == 9999
    # persistence: a new flow of the templated client goes to the template's server
    out, v = d.process_packets([udp("10.0.0.7", 6001, "10.1.0.3", 53)], [51 * S])
    assert v == [V.FWD_IN] and socket.inet_ntoa(out[0][30:34]) == "10.2.0.4"
    assert sum(r["stats"]["conns"] for r in reals.values()) == 0  # (read before: stale)
    conns = sum(r["stats"]["conns"] for s in d.services() for r in s["reals"])
    assert conns == 1  # only the new UDP flow was scheduled


def test_insert_skips_what_it_cannot_take() -> None:
    e = Engine(64, seed=1)
    rows = np.zeros(3, BACKUP_CONN_DTYPE)
    rows["af"] = 4
    rows["protocol"] = [6, 99, 6]  # 99: no such protocol
    rows["state"] = [1, 0, 40]  # 40: no such TCP state
    rows["expire_ns"] = S
    rows["cport"] = 1000  # (a cport of 0 finds only a NO_CPORT entry: ip_vs_conn_in_get)
    rows["svc"] = rows["real"] = -1
    assert e.insert_conns(rows, 5 * S) == 1
    assert e.insert_skipped == 2 and e.conn_count == 1
    assert e.insert_conns(rows[:1], 5 * S) == 1  # already there: updated (an upsert)
    assert e.insert_updated == 1 and e.insert_skipped == 2 and e.conn_count == 1
    with pytest.raises(ValueError):
        e.insert_conns(np.zeros(2, SYNC_EVENT_DTYPE), 0)
