"""Flood defenses (ip_vs_ctl.c update_defense_level, ip_vs_random_dropentry,
ip_vs_todrop), with the connection table's free slots as the "available memory"."""

from __future__ import annotations

import random

from fastvs import verdicts as V
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import tcp

VIP = "10.10.0.1"
RULES = f"-A -t {VIP}:80 -s wlc\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m\n-a -t {VIP}:80 -r 192.168.0.11:8080 -m\n"
S = 1_000_000_000


def flood(drop_entry: int, drop_packet: int = 0) -> tuple[Director, int, int, list[int]]:
    """20 s of spoofed SYNs (3000/s) at a 2000-slot table, with an established client
    sending data throughout and a new legitimate client connecting every 100 ms."""
    rnd = random.Random(1)
    d = Director(parse_rules(RULES), seed=1, capacity=2000, drop_entry=drop_entry, drop_packet=drop_packet)
    d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, "S"), tcp("100.64.0.1", 1000, VIP, 80, "A")], [0, 1])
    accepted = offered = 0
    est_verdicts = []
    t = 2
    for sec in range(20):
        frames, ts, kinds = [], [], []
        for i in range(3000):
            src = f"{rnd.randrange(1, 223)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
            frames.append(tcp(src, rnd.randrange(1024, 65535), VIP, 80, "S"))
            kinds.append("flood")
            if i % 300 == 0:
                frames.append(tcp("100.64.9.9", 20000 + sec * 100 + i // 300, VIP, 80, "S"))
                kinds.append("legit")
            if i % 1000 == 0:
                frames.append(tcp("100.64.0.1", 1000, VIP, 80, "PA", payload=b"data"))
                kinds.append("est")
        for _ in frames:
            ts.append(sec * S + t)
            t += 1000
        _, v = d.process_packets(frames, ts)
        for k, code in zip(kinds, v, strict=True):
            if k == "legit":
                offered += 1
                accepted += code == V.FWD_IN
            elif k == "est":
                est_verdicts.append(code)
    return d, accepted, offered, est_verdicts


def test_established_connections_survive_a_syn_flood() -> None:
    for mode in (0, 1):
        d, _, _, est = flood(mode)
        assert est and all(v == V.FWD_IN for v in est)
        assert d.engine.conn_count <= 2000


def test_drop_entry_keeps_accepting_new_connections() -> None:
    _, acc_off, offered, _ = flood(0)
    d, acc_on, offered2, _ = flood(1)
    assert offered == offered2 == 200
    # without the defense the table stays full of half-open entries for 60 s
    assert acc_off < offered * 0.2
    assert acc_on > acc_off * 2
    assert d.engine.entries_dropped > 0
    assert d.summary()["defense_entries_dropped"] == d.engine.entries_dropped


def test_drop_packet_refuses_some_new_connections_when_full() -> None:
    d, _, _, _ = flood(0, drop_packet=1)
    assert d.counters().get("drop_defense", 0) > 0


def test_defense_is_idle_while_the_table_has_room() -> None:
    d = Director(parse_rules(RULES), seed=1, capacity=1000, drop_packet=1)
    _, v = d.process_packets([tcp(f"100.64.0.{i}", 1000, VIP, 80, "S") for i in range(1, 200)],
                             [i * S // 100 for i in range(199)])
    assert v == [V.FWD_IN] * 199 and d.engine.entries_dropped == 0


def test_secure_tcp_uses_the_dos_state_table() -> None:
    """tcp_states_dos: a client's ACK no longer establishes a SYN_RECV connection;
    the real server's SYN-ACK moves it to SYNACK, where only the server's own next
    segment establishes it (a spoofed client cannot)."""
    for mode, states in ((0, ["SYN_RECV", "ESTABLISHED"]), (3, ["SYN_RECV", "SYN_RECV"])):
        d = Director(parse_rules(RULES), seed=1, secure_tcp=mode)
        seen = []
        for i, flags in enumerate(["S", "A"]):
            d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, flags)], [i])
            seen.append(d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["state"])
        assert seen == states
    d = Director(parse_rules(RULES), seed=1, secure_tcp=3)
    d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, "S")], [0])
    rs = d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["daddr"]
    d.process_packets([tcp(rs, 8080, "100.64.0.1", 1000, "SA")], [1])
    assert d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["state"] == "SYNACK"
    d.process_packets([tcp("100.64.0.1", 1000, VIP, 80, "A")], [2])
    assert d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["state"] == "SYNACK"
    d.process_packets([tcp(rs, 8080, "100.64.0.1", 1000, "PA", payload=b"hi")], [3])
    assert d.lookup("tcp", "100.64.0.1", 1000, VIP, 80)["state"] == "ESTABLISHED"
