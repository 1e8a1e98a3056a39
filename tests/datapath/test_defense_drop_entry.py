"""drop_entry beyond the handshake (ip_vs_conn.c, 6.1: ip_vs_random_dropentry and
todrop_entry): an entry idle for 60 s or more whose incoming packets number i in 1..8
is dropped by a countdown per i (every i-th such entry visited), whatever its
protocol: UDP, TCP and SCTP in ESTABLISHED; entries with 0 or more than 8 packets,
or idle less than 60 s, stay."""

from __future__ import annotations

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import tcp, udp

VIP = "10.10.0.1"
RULES = (f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m\n"
         f"-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r 192.168.0.10:53 -m\n")
S = 1_000_000_000


def director() -> Director:
    # 64 slots: every second the defense looks at 64 >> 5 = 2 random slots
    return Director(parse_rules(RULES), seed=1, capacity=64, drop_entry=3)


def tick_until(d: Director, start_s: int, end_s: int) -> None:
    """One packet a second that is no connection's (a bare ACK to a port without a
    service): the defense timer runs on packet time."""
    frames = [tcp("100.99.0.1", 1, VIP, 9999, "A") for _ in range(start_s, end_s)]
    d.process_packets(frames, [t * S for t in range(start_s, end_s)])


def live(d: Director, client: str) -> set[int]:
    return {c["cport"] for c in d.connections() if c["caddr"] == client}


def test_idle_udp_entries_with_one_packet_go_after_60_s() -> None:
    d = director()
    d.process_packets([udp("100.64.0.1", 5000 + i, VIP, 53) for i in range(20)], [0] * 20)
    tick_until(d, 1, 60)
    assert len(live(d, "100.64.0.1")) == 20          # idle < 60 s: never
    tick_until(d, 60, 250)
    left = len(live(d, "100.64.0.1"))
    assert left <= 2                                  # rate 1: every visit drops
    assert d.engine.entries_dropped == 20 - left


def test_packet_count_decides_udp_eight_yes_nine_never() -> None:
    """todrop_rate[8] = 8: an entry with 8 incoming packets goes at every 8th visit;
    one with 9 never (so each input packet must count once, as cp->in_pkts does)."""
    d = director()
    frames, ts = [], []
    for n, client in ((8, "100.64.0.8"), (9, "100.64.0.9")):
        for i in range(10):
            for k in range(n):
                frames.append(udp(client, 6000 + i, VIP, 53, payload=bytes([k])))
                ts.append(0)
    d.process_packets(frames, ts)
    tick_until(d, 1, 280)
    assert len(live(d, "100.64.0.9")) == 10
    assert len(live(d, "100.64.0.8")) < 10


def test_idle_established_tcp_goes_busy_or_closing_tcp_stays() -> None:
    d = director()
    frames: list[bytes] = []
    for i in range(10):        # established with 2 incoming packets (SYN, ACK)
        frames += [tcp("100.64.1.2", 7000 + i, VIP, 80, "S"), tcp("192.168.0.10", 8080, "100.64.1.2", 7000 + i, "SA"),
                   tcp("100.64.1.2", 7000 + i, VIP, 80, "A")]
    for i in range(10):        # established with 12 incoming packets
        frames += [tcp("100.64.1.12", 7100 + i, VIP, 80, "S"), tcp("192.168.0.10", 8080, "100.64.1.12", 7100 + i, "SA")]
        frames += [tcp("100.64.1.12", 7100 + i, VIP, 80, "A")] * 11
    d.process_packets(frames, [0] * len(frames))
    tick_until(d, 1, 600)
    assert len(live(d, "100.64.1.12")) == 10
    assert len(live(d, "100.64.1.2")) < 10
    assert all(c["state"] == "ESTABLISHED" for c in d.connections() if c["caddr"].startswith("100.64.1."))


def test_entries_in_use_stay() -> None:
    """A flow with a packet every 30 s is never 60 s idle."""
    d = director()
    for t in range(0, 300, 30):
        d.process_packets([udp("100.64.2.1", 5000, VIP, 53)], [t * S])
        tick_until(d, t + 1, t + 30)
    assert live(d, "100.64.2.1") == {5000}
