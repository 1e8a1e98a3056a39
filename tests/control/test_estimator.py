"""The rate estimator behind ``ipvsadm -L --rate`` (ip_vs_est.c, Debian 6.1.192): counters
fed at given tick times, the averages compared with the kernel's arithmetic."""

from __future__ import annotations

from fastvs.control.director import Director
from fastvs.control.estimator import RateEstimator
from fastvs.control.listing import format_rate
from fastvs.control.rules import parse_rules

from packets import udp

S = 1_000_000_000
VIP, RIP, CL = "10.10.0.1", "192.168.0.10", "100.64.0.1"
RULES = f"""
-A -u {VIP}:53 -s rr
-a -u {VIP}:53 -r {RIP}:5353 -m -w 1
"""
UDP_IP_LEN = 20 + 8 + 5  # the bytes counters count IP datagrams (payload b"hello")


def counters(conns: int, inpkts: int, outpkts: int, inbytes: int, outbytes: int) -> dict[str, int]:
    return {"conns": conns, "inpkts": inpkts, "outpkts": outpkts,
            "inbytes": inbytes, "outbytes": outbytes}


def test_estimation_timer_moves_a_quarter_of_the_way_each_tick() -> None:
    # estimation_timer ip_vs_est.c:114-116: rate = diff << 9 (x 2^10, / 2 s), avg += (rate -
    # avg) >> 2; ip_vs_read_estimator :181: (avg + 0x1FF) >> 10. A steady 1000 packets/s
    # reads 250, 437, 578 on the first three ticks, not 1000
    e = RateEstimator()
    seen = []
    for k in range(1, 4):
        e.tick(counters(0, 2000 * k, 0, 0, 0))
        seen.append(e.read()["inpps"])
    assert seen == [250, 437, 578]


def test_byte_rates_are_scaled_by_2_to_the_5() -> None:
    # ip_vs_est.c:126-133: bytes shifted by 4 (x 2^5, / 2 s); read back (avg + 0xF) >> 5
    e = RateEstimator()
    e.tick(counters(0, 0, 0, 3000, 7))
    r = e.read()
    assert r["inbps"] == (((3000 << 4) >> 2) + 0xF) >> 5 == 375
    assert r["outbps"] == (((7 << 4) >> 2) + 0xF) >> 5 == 1


def test_a_quiet_estimator_decays_to_zero() -> None:
    # the signed shift floors, so (0 - avg) >> 2 is at least -1: the average reaches 0
    e = RateEstimator()
    e.tick(counters(10, 10, 10, 10, 10))
    for _ in range(60):
        e.tick(counters(10, 10, 10, 10, 10))
    assert e.avg == [0, 0, 0, 0, 0]
    assert set(e.read().values()) == {0}


def test_director_rates_come_from_two_second_ticks_of_packet_time() -> None:
    d = Director(parse_rules(RULES), seed=1)
    # 100 new UDP connections in the first 2 s (one per 20 ms), then one at exactly 2 s
    frames = [udp(CL, 10000 + i, VIP, 53) for i in range(101)]
    ts = [i * (S // 50) for i in range(100)] + [2 * S]
    d.process_packets(frames, ts)
    (svc,) = d.services()
    # the tick at 2 s saw the first 100 (the packet at 2 s comes after the timer)
    assert svc["stats"]["conns"] == 101
    assert svc["stats"]["cps"] == svc["stats"]["inpps"] == ((100 << 9 >> 2) + 0x1FF) >> 10 == 12
    assert svc["stats"]["inbps"] == ((100 * UDP_IP_LEN << 4 >> 2) + 0xF) >> 5
    assert svc["reals"][0]["stats"]["cps"] == 12
    assert f"{12:8d}" in format_rate(d.services())


def test_director_rates_are_zero_before_the_first_tick_and_decay_over_quiet_ticks() -> None:
    d = Director(parse_rules(RULES), seed=1)
    d.process_packets([udp(CL, 10000 + i, VIP, 53) for i in range(40)], [i * S // 40 for i in range(40)])
    assert d.services()[0]["stats"]["inpps"] == 0  # ip_vs_start_estimator: averages start at 0
    d.process_packets([udp(CL, 10000, VIP, 53)], [2 * S])
    first = d.services()[0]["stats"]["inpps"]
    assert first == ((40 << 9 >> 2) + 0x1FF) >> 10 == 5
    # 20 s without traffic: ten ticks with no new packets between them
    d.process_packets([udp(CL, 10000, VIP, 53)], [22 * S])
    assert d.services()[0]["stats"]["inpps"] < first


def test_ticks_run_when_the_clock_moves_without_packets() -> None:
    # the kernel's timer fires on time whether packets come or not: an idle director
    # moved on by engine.advance (the live worker's clock) shows the decayed rate
    d = Director(parse_rules(RULES), seed=1)
    d.process_packets([udp(CL, 10000 + i, VIP, 53) for i in range(40)], [i * S // 40 for i in range(40)])
    d.engine.advance(2 * S)
    assert d.services()[0]["stats"]["inpps"] == 5
    d.engine.advance(4 * S)  # one more tick with no new packets: 5120 + (0 - 5120) / 4
    assert d.services()[0]["stats"]["inpps"] == ((5120 - (5120 >> 2)) + 0x1FF) >> 10 == 4


def test_a_long_quiet_gap_ends_with_zero_rates_without_ticking_through_it() -> None:
    # 10^9 quiet seconds: the averages reach 0 within a few hundred ticks, after which
    # the director jumps to the next packet instead of running 5 * 10^8 ticks
    d = Director(parse_rules(RULES), seed=1)
    d.process_packets([udp(CL, 10000 + i, VIP, 53) for i in range(40)], [i * S // 40 for i in range(40)])
    d.process_packets([udp(CL, 20000, VIP, 53)], [10**9 * S])
    stats = d.services()[0]["stats"]
    assert stats["inpkts"] == 41 and stats["inpps"] == stats["cps"] == 0
    assert d._next_tick == 10**9 * S + 2 * S
    d.process_packets([udp(CL, 20001, VIP, 53)], [10**9 * S + 2 * S])
    assert d.services()[0]["stats"]["inpps"] == ((1 << 9 >> 2) + 0x1FF) >> 10 == 0
