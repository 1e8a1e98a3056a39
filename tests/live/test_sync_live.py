"""Live connection sync (fastvs/live/sync.py): the options as the kernel's sysctl
handlers check them, a master's sender and a backup's receiver on real multicast UDP
sockets between two network namespaces, malformed datagrams counted and dropped,
the split of connections between workers, and ``fastvs ctl role``.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvs.control.rules import parse_rules
from fastvs.errors import FastvsError, OptionError
from fastvs.live.sync import (
    SyncOptions,
    SyncReceiver,
    SyncSender,
    add_sync_arguments,
    owner,
    receive_sockets,
    send_socket,
    sync_options_from_args,
)
from fastvs.sync.backup import BACKUP_CONN_DTYPE
from fastvs.sync.master import SYNC_EVENT_DTYPE
from fastvs.sync.proto import F_INACTIVE, F_TEMPLATE, SyncConn, encode_message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netns import NsPair, have_netns, in_netns, wait_for  # noqa: E402

_ok, _why = have_netns() if sys.platform.startswith("linux") else (False, "Linux only")
needs_netns = [pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_why)]

RULES = parse_rules("""
-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.1.0.11:80 -m -w 1
-a -t 10.0.0.100:80 -r 10.1.0.12:80 -m -w 1
""")
ESTABLISHED = 1  # IP_VS_TCP_S_ESTABLISHED


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "option"), [
    ({"threshold": 50, "period": 50}, "sync_threshold"),  # proc_do_sync_threshold: T < P
    ({"threshold": -1}, "sync_threshold"),
    ({"version": 2}, "sync_version"),
    ({"retries": 4}, "sync_retries"),
    ({"ports": 3}, "sync_ports"),  # proc_do_sync_ports: a power of two
    ({"ports": 128}, "sync_ports"),
    ({"group": "10.0.0.1"}, "mcast_group"),
    ({"group": "nonsense"}, "mcast_group"),
    ({"ttl": 0}, "mcast_ttl"),
    ({"port": 0}, "mcast_port"),
    ({"port": 65535, "ports": 2}, "mcast_port"),
    ({"syncid": 256}, "syncid"),
    ({"refresh_period": -1}, "sync_refresh_period"),
])
def test_options_refused_as_the_kernel_refuses(change: dict[str, Any], option: str) -> None:
    opts = SyncOptions(role="master", ifname="eth0", **change)
    with pytest.raises(OptionError) as e:
        opts.check()
    assert e.value.option == option


def test_options_accepted() -> None:
    opts = SyncOptions(role="backup", ifname="eth0", threshold=0, period=0, ports=4, group="ff02::81")
    opts.check()
    assert opts.ipv6
    assert opts.engine_kwargs() == {"version": 1, "threshold": 0, "period": 0, "refresh_period": 0,
                                    "retries": 0, "persist_mode": False}


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_sync_arguments(p)
    return p.parse_args(list(argv))


def test_options_from_the_command_line() -> None:
    assert sync_options_from_args(_args()) is None
    o = sync_options_from_args(_args("--sync-backup", "dh", "--syncid", "7", "--sync-threshold", "2", "10",
                                     "--mcast-group", "239.1.2.3", "--mcast-port", "9000", "--mcast-ttl",
                                     "3", "--sync-ports", "2", "--sync-version", "0", "--sync-persist-mode"))
    assert o is not None
    assert (o.role, o.ifname, o.syncid, o.threshold, o.period, o.group, o.port, o.ttl, o.ports, o.version,
            o.persist_mode) == ("backup", "dh", 7, 2, 10, "239.1.2.3", 9000, 3, 2, 0, True)
    with pytest.raises(OptionError) as e:
        sync_options_from_args(_args("--syncid", "3"))
    assert e.value.flag == "--syncid"
    with pytest.raises(SystemExit):
        _args("--sync-master", "a", "--sync-backup", "b")


def test_forward_refuses_bad_sync_options_in_one_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.write_text("-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.1.0.11:80 -m\n")
    r = subprocess.run([sys.executable, "-m", "fastvs.live", "-r", str(rules), "--if", "lo",
                        "--sync-master", "lo", "--sync-threshold", "5", "5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "--sync-threshold" in r.stderr and "Traceback" not in r.stderr


def test_sync_interface_errors_are_one_line() -> None:
    with pytest.raises(FastvsError, match="no such interface"):
        send_socket(SyncOptions(role="master", ifname="fvt-none0"))


# -- helpers ------------------------------------------------------------------------------------
def events(n: int, *, cport0: int = 10000, template: bool = False) -> np.ndarray:
    ev = np.zeros(n, SYNC_EVENT_DTYPE)
    for i in range(n):
        e = ev[i]
        e["af"], e["protocol"], e["state"] = 4, 6, ESTABLISHED
        e["cport"], e["vport"], e["dport"] = (0 if template else cport0 + i), 80, 80
        e["timeout_s"] = 900
        e["flags"] = F_TEMPLATE if template else 0
        e["caddr"] = np.void(socket.inet_aton(f"10.0.{i // 250}.{i % 250 + 2}") + bytes(12))
        e["vaddr"] = np.void(socket.inet_aton("10.0.0.100") + bytes(12))
        e["daddr"] = np.void(socket.inet_aton(("10.1.0.11", "10.1.0.12")[i % 2]) + bytes(12))
    return ev


class Sink:
    """Collects what a receiver inserts."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def __call__(self, rows: np.ndarray, now_ns: int) -> int:
        assert rows.dtype == BACKUP_CONN_DTYPE
        self.rows.append(rows.copy())
        return len(rows)

    def all(self) -> np.ndarray:
        return np.concatenate(self.rows) if self.rows else np.zeros(0, BACKUP_CONN_DTYPE)


def _ip(raw: Any) -> str:
    return socket.inet_ntoa(bytes(raw)[:4])


@pytest.fixture
def pair():
    if not _ok:
        pytest.skip(_why)
    with NsPair() as p:
        yield p


def _master(pair: NsPair, **kw: Any) -> SyncSender:
    opts = SyncOptions(role="master", ifname="va", **kw)
    opts.check()
    return SyncSender(opts, in_netns(pair.a, lambda: send_socket(opts)))


def _backup(pair: NsPair, sink: Sink | None, **kw: Any) -> SyncReceiver:
    wid, workers = kw.pop("wid", 0), kw.pop("workers", 1)
    opts = SyncOptions(role="backup", ifname="vb", **kw)
    opts.check()
    socks = in_netns(pair.b, lambda: receive_sockets(opts))
    return SyncReceiver(opts, RULES, sink, wid=wid, workers=workers, socks=socks, mtu=1500)


def _drain(rx: SyncReceiver, datagrams: int, timeout: float = 10) -> None:
    wait_for(lambda: (rx.poll(), rx.counts["sync_rx_datagrams"])[1], timeout,
             f"{datagrams} datagrams at the backup", until=lambda n: n >= datagrams)


# -- master -> backup over real sockets ---------------------------------------------------------
@pytest.mark.netns
def test_master_to_backup_partial_message_after_2s(pair: NsPair) -> None:
    tx, sink = _master(pair, syncid=7), Sink()
    rx = _backup(pair, sink, syncid=7)
    try:
        tx.feed(events(3), now=100.0)
        tx.tick(101.9)
        assert tx.counts["sync_tx_messages"] == 0  # not 2 s old yet
        tx.tick(102.0)  # sync_thread_master: the current buffer once 2 s old
        assert tx.counts["sync_tx_messages"] == 1 and tx.counts["sync_tx_records"] == 3
        _drain(rx, 1)
        rows = sink.all()
        assert len(rows) == 3 and rx.counts["sync_rx_bad"] == 0
        assert sorted(int(r["cport"]) for r in rows) == [10000, 10001, 10002]
        r0 = rows[rows["cport"] == 10000][0]
        assert _ip(r0["caddr"]) == "10.0.0.2" and _ip(r0["vaddr"]) == "10.0.0.100"
        assert int(r0["state"]) == ESTABLISHED and int(r0["timeout_s"]) == 900
        assert 899e9 < int(r0["expire_ns"]) <= 900e9
        assert int(r0["in_pkts"]) == 3  # ip_vs_proc_conn: in_pkts = sync_threshold
        # bound to the backup's own real server (RULES' index order)
        svc = RULES.services[int(r0["svc"])]
        assert (svc.reals[int(r0["real"])].addr, svc.reals[int(r0["real"])].port) == ("10.1.0.11", 80)
        assert not int(r0["flags"]) & F_INACTIVE
    finally:
        tx.close()
        rx.close()


@pytest.mark.netns
def test_full_message_goes_at_once_and_updates_are_reinserted(pair: NsPair) -> None:
    tx, sink = _master(pair), Sink()
    rx = _backup(pair, sink)
    try:
        tx.feed(events(41), now=5.0)  # 40 IPv4 records fill 1472 bytes: the 41st opens a new one
        assert tx.counts["sync_tx_messages"] == 1
        _drain(rx, 1)
        assert len(sink.all()) == 40
        tx.flush()
        _drain(rx, 2)
        assert len(sink.all()) == 41
        # the same connection again, now FIN_WAIT: an update, re-inserted
        ev = events(1)
        ev["state"], ev["timeout_s"] = 4, 120  # IP_VS_TCP_S_FIN_WAIT
        tx.feed(ev, now=6.0)
        tx.flush()
        _drain(rx, 3)
        last = sink.rows[-1]
        assert len(last) == 1 and int(last[0]["state"]) == 4 and int(last[0]["timeout_s"]) == 120
        assert rx.table.counts.get("updated") == 1 and len(rx.table.conns) == 41
    finally:
        tx.close()
        rx.close()


@pytest.mark.netns
def test_workers_split_connections_and_share_templates(pair: NsPair) -> None:
    tx = _master(pair)
    sinks = [Sink(), Sink()]
    rxs = [_backup(pair, sinks[w], wid=w, workers=2) for w in range(2)]
    try:
        tx.feed(events(30), now=1.0)
        tx.feed(events(2, template=True), now=1.0)
        tx.flush()
        for rx in rxs:
            _drain(rx, 1)  # each worker's socket gets every datagram
        got = [sinks[w].all() for w in range(2)]
        conns = [{(_ip(r["caddr"]), int(r["cport"])) for r in g if not int(r["flags"]) & F_TEMPLATE} for g in got]
        assert conns[0].isdisjoint(conns[1]) and len(conns[0]) + len(conns[1]) == 30
        assert conns[0] and conns[1]
        for w in range(2):  # each holds what the fanout steers to it
            assert all(owner(ip, port, 2) == w for ip, port in conns[w])
            assert sum(1 for r in got[w] if int(r["flags"]) & F_TEMPLATE) == 2
        assert rxs[0].counts["sync_rx_other_worker"] == len(conns[1])
    finally:
        tx.close()
        for rx in rxs:
            rx.close()


@pytest.mark.netns
def test_sync_ports_spread_workers_over_ports(pair: NsPair) -> None:
    opts = SyncOptions(role="master", ifname="va", ports=2)
    socks = in_netns(pair.a, lambda: [send_socket(opts, wid) for wid in range(3)])
    try:
        assert [s.getpeername()[1] for s in socks] == [8848, 8849, 8848]
        sink = Sink()
        rx = _backup(pair, sink, ports=2)
        for wid, s in enumerate(socks[:2]):
            tx = SyncSender(opts, s)
            tx.feed(events(1, cport0=20000 + wid), now=0.0)
            tx.flush()
        _drain(rx, 2)
        assert sorted(int(r["cport"]) for r in sink.all()) == [20000, 20001]
        rx.close()
    finally:
        for s in socks:
            s.close()


@pytest.mark.netns
def test_malformed_datagrams_are_counted_and_dropped(pair: NsPair) -> None:
    sink = Sink()
    rx = _backup(pair, sink, syncid=9)
    raw = in_netns(pair.a, lambda: _raw_sender(pair))
    good = encode_message([SyncConn(6, "10.0.0.7", 4000, "10.0.0.100", 80, "10.1.0.12", 80,
                                    state=ESTABLISHED, timeout=900)], syncid=9)
    rng = random.Random(14)
    bad = [b"", b"\x00", b"\x00\x09\x00\x10", good[:-1], good + b"\0",
           encode_message([], syncid=8),  # another sync id
           bytes(rng.randrange(256) for _ in range(70000 % 1400)),
           good[:8] + bytes(36)]  # a record of type 0 and size 0
    for _ in range(40):  # fuzz: flipped bytes of a good message
        b = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        bad.append(bytes(b))
    try:
        for d in bad:
            raw.send(d)
        raw.send(good)
        _drain(rx, len(bad) + 1)
        c = rx.all_counts()
        assert c["sync_rx_bad"] >= 7
        assert c.get("sync_rx_drop_size_mismatch", 0) >= 3 and c.get("sync_rx_drop_syncid", 0) >= 1
        assert c.get("sync_rx_drop_short", 0) >= 1
        # the good message still went in
        assert any(_ip(r["caddr"]) == "10.0.0.7" and int(r["cport"]) == 4000 for r in sink.all())
    finally:
        raw.close()
        rx.close()


def _raw_sender(pair: NsPair) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(pair.A_IP))
    s.connect(("224.0.0.81", 8848))
    return s


@pytest.mark.netns
def test_a_master_reads_but_does_not_apply(pair: NsPair) -> None:
    tx, sink = _master(pair), Sink()
    rx = _backup(pair, sink)
    rx.applying = False
    try:
        tx.feed(events(2), now=0.0)
        tx.flush()
        _drain(rx, 1)
        assert rx.counts["sync_rx_ignored"] == 1 and not sink.rows and not rx.table.conns
    finally:
        tx.close()
        rx.close()


@pytest.mark.netns
def test_send_socket_is_the_kernels(pair: NsPair) -> None:
    """make_send_sock: loop off, TTL 1 (or --mcast-ttl), bound to the interface's
    address, connected to the group."""
    opts = SyncOptions(role="master", ifname="va", ttl=3)
    s = in_netns(pair.a, lambda: send_socket(opts))
    try:
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
        assert s.getsockname()[0] == pair.A_IP
        assert s.getpeername() == ("224.0.0.81", 8848)
    finally:
        s.close()
    noaddr = SyncOptions(role="master", ifname="lo")
    with pytest.raises(FastvsError, match="no IPv4 address"):
        in_netns(pair.a, lambda: (subprocess.run(["ip", "addr", "flush", "dev", "lo"], check=True),
                                  send_socket(noaddr)))


# -- fastvs ctl role ----------------------------------------------------------------------------
def test_ctl_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fastvs.control.ctl import ControlServer, main, request
    from fastvs.live.config import ForwardConfig
    from fastvs.live.supervisor import Reporter, RoleControl, control_handler

    cfg = ForwardConfig(rules="x", one_arm_if="lo")
    reporter = Reporter(cfg)
    reporter.latest[0] = {"wid": 0, "role": "backup"}
    roles = RoleControl("backup")
    handed: list[str] = []
    roles.sink = handed.append

    class Src:
        log_lines: list[str] = []

        def log(self, m: str) -> None:
            self.log_lines.append(m)

    src = Src()
    path = str(tmp_path / "ctl.sock")
    with ControlServer(path, control_handler(src, reporter, roles)):  # type: ignore[arg-type]
        assert request(path, "role") == {"role": "backup", "changed": 0.0, "workers": {"0": "backup"}}
        assert main(["--control", path, "role", "master"]) == 0
        assert capsys.readouterr().out == "role backup -> master\n"
        assert handed == ["master"] and roles.role == "master"
        assert src.log_lines == ["control: role backup -> master"]
        assert request(path, "role", {"role": "master"}) == ["role master (unchanged)"]
        with pytest.raises(FastvsError, match="role must be master or backup"):
            request(path, "role", {"role": "primary"})
        reporter.latest[0]["role"] = "master"
        assert main(["--control", path, "role"]) == 0
        assert capsys.readouterr().out == "master  (workers 0:master)\n"
    r = subprocess.run([sys.executable, "-m", "fastvs.cli", "ctl", "--control", path, "role", "primary"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def test_owner_is_the_fanout_model() -> None:
    from fastvs.live.bpf import fanout_worker

    assert owner("10.0.0.2", 1234, 1) == 0
    assert all(owner(f"10.0.0.{i}", 1000 + i, 4) == fanout_worker(f"10.0.0.{i}", 1000 + i, 4) for i in range(50))
    assert {owner(f"10.0.0.{i}", 1000 + i, 4) for i in range(50)} == {0, 1, 2, 3}


def test_struct_sizes() -> None:
    assert struct.calcsize("4s4si") == 12  # ip_mreqn


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1600), workers=st.integers(1, 4))
def test_any_datagram_is_applied_or_counted(data: bytes, workers: int) -> None:
    """Whatever arrives: no exception; a datagram with a drop is counted as bad."""
    sink = Sink()
    rx = SyncReceiver(SyncOptions(role="backup", ifname="lo"), RULES, sink, workers=workers, socks=[], mtu=1500)
    touched: dict[int, Any] = {}
    for d in (data, b"\x00\x00" + len(data).to_bytes(2, "big")[:2] + data[4:] if len(data) >= 4 else data):
        rx.datagram(d, 10.0, touched)
    rx._insert(list(touched.values()), 10.0, 0)
    c = rx.all_counts()
    assert c["sync_rx_datagrams"] == 2
    assert c["sync_rx_bad"] <= 2 and c["sync_rx_inserted"] == sum(len(r) for r in sink.rows)
    if c["sync_rx_bad"]:
        assert any(k.startswith("sync_rx_drop_") for k in c)


class FakeDirector:
    """The Director's sync face (enable_sync_master, take_sync_events, insert_sync_conns)."""

    def __init__(self) -> None:
        self.enabled: dict[str, Any] | None = None
        self.pending = np.zeros(0, SYNC_EVENT_DTYPE)
        self.inserted = Sink()

    def enable_sync_master(self, **kw: Any) -> None:
        self.enabled = kw

    def take_sync_events(self) -> np.ndarray:
        out, self.pending = self.pending, np.zeros(0, SYNC_EVENT_DTYPE)
        return out

    def insert_sync_conns(self, rows: np.ndarray, now_ns: int) -> int:
        return self.inserted(rows, now_ns)


@pytest.mark.netns
def test_live_sync_roles_end_to_end(pair: NsPair) -> None:
    from fastvs.live.sync import LiveSync

    da, db = FakeDirector(), FakeDirector()
    oa = SyncOptions(role="master", ifname="va", syncid=5, threshold=2, period=20)
    ob = SyncOptions(role="backup", ifname="vb", syncid=5)
    a = in_netns(pair.a, lambda: LiveSync(oa, da, RULES))
    b = in_netns(pair.b, lambda: LiveSync(ob, db, RULES))
    try:
        assert da.enabled == {"version": 1, "threshold": 2, "period": 20, "refresh_period": 0,
                              "retries": 0, "persist_mode": False}
        da.pending = events(3)
        a.take_events(0.0)
        a.tick(1.0)
        assert a.counters()["sync_tx_messages"] == 0
        a.set_role("backup")  # a demotion sends what is pending
        assert a.counters()["sync_tx_messages"] == 1 and not a.master
        wait_for(lambda: (b.receiver.poll(), len(db.inserted.all()))[1], 10, "the backup's insert",
                 until=lambda n: n == 3)
        # roles swapped: b sends, a (now a backup) applies
        assert b.set_role("master") and not b.set_role("master")
        db.pending = events(2, cport0=30000)
        b.take_events(5.0)
        b.tick(7.0)  # 2 s after its first record
        wait_for(lambda: (a.receiver.poll(), len(da.inserted.all()))[1], 10, "the new backup's insert",
                 until=lambda n: n == 2)
        assert a.counters()["role_changes"] == 1 and b.counters()["sync_master"] == 1
        with pytest.raises(OptionError):
            a.set_role("primary")
    finally:
        a.close()
        b.close()


@pytest.mark.netns
def test_ipv6_group(pair: NsPair) -> None:
    """--mcast-group ff02::81: the kernel's IPv6 sync (mcast_af AF_INET6), out of the
    interface's link-local address."""
    from netns import sh

    for n, dev in ((pair.a, "va"), (pair.b, "vb")):
        sh("ip", "netns", "exec", n, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0")
        sh("ip", "netns", "exec", n, "ip", "link", "set", dev, "down")
        sh("ip", "netns", "exec", n, "ip", "link", "set", dev, "up")
    o = SyncOptions(role="master", ifname="va", group="ff02::81")
    o.check()
    s = wait_for(lambda: in_netns(pair.a, lambda: send_socket(o)), 10, "a link-local address on va")
    tx, sink = SyncSender(o, s), Sink()
    assert tx.batcher.builder.maxlen == 1500 - 48
    rx = _backup(pair, sink, group="ff02::81")
    try:
        tx.feed(events(3), now=0.0)
        tx.flush()
        _drain(rx, 1)
        assert len(sink.all()) == 3 and rx.counts["sync_rx_bad"] == 0
    finally:
        tx.close()
        rx.close()


def _engine_backup() -> tuple[Any, SyncReceiver, socket.socket]:
    """A backup's receiver over a socket pair, inserting into a real Director."""
    from fastvs.control.director import Director

    d = Director(RULES, seed=1)
    tx, rx_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx_sock.setblocking(False)  # (as receive_sockets makes them)
    rx = SyncReceiver(SyncOptions(role="backup", ifname="lo"), RULES, d.insert_sync_conns,
                      socks=[rx_sock], mtu=1500)
    return d, rx, tx


def _conn(cport: int, daddr: str = "10.1.0.11", state: int = ESTABLISHED, flags: int = 0,
          timeout: int = 10) -> SyncConn:
    return SyncConn(6, "10.0.0.9", cport, "10.0.0.100", 80, daddr, 80, flags=flags, state=state,
                    timeout=timeout)


def _counts(d: Any) -> dict[str, tuple[int, int]]:
    return {r["addr"]: (r["activeconns"], r["inactconns"]) for s in d.services() for r in s["reals"]}


def test_a_resent_connection_is_updated_in_the_engine() -> None:
    """The master re-sends a connection every sync period: the engine's entry takes
    the new timer at once (Engine.insert_conns is an upsert, as ip_vs_proc_conn), its
    state and INACTIVE too."""
    d, rx, tx = _engine_backup()
    try:
        tx.send(encode_message([_conn(5000), _conn(5001)]))
        assert rx.poll(0.0, 0) == 1
        tx.send(encode_message([_conn(5000)]))  # the refresh: until 15 s
        rx.poll(5.0, 5 * 10**9)
        d.engine.advance(12 * 10**9)
        assert [c["cport"] for c in d.engine.connections()] == [5000]
        (c,) = d.engine.connections()
        assert c["expires_ns"] == 3 * 10**9 and _counts(d)["10.1.0.11"] == (1, 0)
        tx.send(encode_message([_conn(5000, state=4, flags=F_INACTIVE, timeout=120)]))  # FIN_WAIT
        rx.poll(13.0, 13 * 10**9)
        (c,) = d.engine.connections()
        assert c["state"] == "FIN_WAIT" and _counts(d)["10.1.0.11"] == (0, 1)
        assert d.engine.insert_updated == 2 and rx.counts["sync_rx_inserted"] == 4
    finally:
        tx.close()
        rx.close()


def test_a_replaced_connection_made_inactive_in_the_same_poll() -> None:
    """A connection replaced by one to another real server, which the next record of
    the same poll makes INACTIVE: the engine still replaces the old one (the receiver
    gives it the new entry as made first; INACTIVE alone would read as the old one's
    expiry news, ip_vs_sync.c:860-867)."""
    d, rx, tx = _engine_backup()
    try:
        tx.send(encode_message([_conn(5000, "10.1.0.11")]))
        rx.poll(0.0, 0)
        assert _counts(d) == {"10.1.0.11": (1, 0), "10.1.0.12": (0, 0)}
        tx.send(encode_message([_conn(5000, "10.1.0.12")]))
        tx.send(encode_message([_conn(5000, "10.1.0.12", state=4, flags=F_INACTIVE, timeout=120)]))
        assert rx.poll(1.0, 10**9) == 2
        (c,) = d.engine.connections()
        assert c["daddr"] == "10.1.0.12" and c["state"] == "FIN_WAIT"
        assert _counts(d) == {"10.1.0.11": (0, 0), "10.1.0.12": (0, 1)}
        assert d.engine.insert_replaced == 1
    finally:
        tx.close()
        rx.close()
