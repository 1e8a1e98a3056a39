"""IPVS semantics of the engine, case by case, each from the kernel's definition
(ip_vs_core.c, ip_vs_proto_tcp.c, ip_vs_proto_udp.c, ip_vs_conn.c, ip_vs_xmit.c)."""

from __future__ import annotations

import pytest

from fastvs import verdicts as V
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import checksums_ok, tcp, udp

VIP, RIP1, RIP2, CL = "10.10.0.1", "192.168.0.10", "192.168.0.11", "100.64.0.1"
S = 1_000_000_000

RULES_RR = f"""
-A -t {VIP}:80 -s rr
-a -t {VIP}:80 -r {RIP1}:8080 -m -w 1
-a -t {VIP}:80 -r {RIP2}:8080 -m -w 1
-A -u {VIP}:53 -s rr
-a -u {VIP}:53 -r {RIP1}:5353 -m -w 1
"""


def director(rules: str = RULES_RR, **kw: object) -> Director:
    return Director(parse_rules(rules), seed=1, **kw)  # type: ignore[arg-type]


def run(d: Director, frames: list[bytes], t0: int = 0, step: int = S // 100) -> tuple[list[bytes], list[int]]:
    return d.process_packets(frames, [t0 + i * step for i in range(len(frames))])


def conn(d: Director, cport: int, proto: str = "tcp", vport: int = 80) -> dict | None:
    return d.lookup(proto, CL, cport, VIP, vport)


def test_dnat_and_snat_rewrite_with_valid_checksums() -> None:
    d = director()
    out, v = run(d, [tcp(CL, 40000, VIP, 80, "S")])
    assert v == [V.FWD_IN]
    c = conn(d, 40000)
    assert c is not None and c["daddr"] == RIP2  # kernel list order: last -a line first
    ip = out[0][14:34]
    assert ip[16:20] == bytes([192, 168, 0, 11]) and out[0][36:38] == (8080).to_bytes(2, "big")
    assert ip[8] == 63  # TTL decremented by the forwarding path
    assert checksums_ok(out[0])
    out, v = run(d, [tcp(RIP2, 8080, CL, 40000, "SA")], t0=S)
    assert v == [V.FWD_OUT]
    assert out[0][26:30] == bytes([10, 10, 0, 1]) and out[0][34:36] == (80).to_bytes(2, "big")
    assert checksums_ok(out[0])


# kernlab step (Linux 6.1): c:S s:SA c:A c:FA -> SYN_RECV, SYN_RECV, ESTABLISHED, CLOSE_WAIT
STEP_CASES = [
    ("S SA A FA", ["SYN_RECV", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"], [(1, 0), (1, 0), (1, 0), (0, 1)]),
    ("S SA A PA sPA FA sFA A", ["SYN_RECV", "SYN_RECV", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED",
                              "CLOSE_WAIT", "TIME_WAIT", "TIME_WAIT"], None),
    ("S RA", ["SYN_RECV", "SYN_RECV"], [(1, 0), (1, 0)]),  # client RST in SYN_RECV stays
    ("S SA A -", ["SYN_RECV", "SYN_RECV", "ESTABLISHED", "CLOSE"], [(1, 0), (1, 0), (1, 0), (0, 1)]),
    ("S sR", ["SYN_RECV", "CLOSE"], [(1, 0), (0, 1)]),  # server RST closes
    ("S sFA", ["SYN_RECV", "TIME_WAIT"], None),
]


@pytest.mark.parametrize("scenario,states,counts", STEP_CASES)
def test_tcp_state_machine(scenario: str, states: list[str], counts: list[tuple[int, int]] | None) -> None:
    """Direction tables of tcp_states[]: a packet from the client uses INPUT, from the
    server OUTPUT. Tokens: client flags, or s<flags> / SA / sFA for server packets."""
    d = director()
    seen = []
    for i, tok in enumerate(scenario.split()):
        server = tok.startswith("s") or tok == "SA"
        flags = tok[1:] if tok.startswith("s") else tok
        if server:
            cfg = conn(d, 40000)
            assert cfg is not None
            frame = tcp(cfg["daddr"], 8080, CL, 40000, flags)
        else:
            frame = tcp(CL, 40000, VIP, 80, flags)
        _, v = run(d, [frame], t0=i * S)
        assert v[0] in (V.FWD_IN, V.FWD_OUT)
        c = conn(d, 40000)
        seen.append(c["state"])
        if counts:
            dest = d.engine.dest_info(c["dest"])
            assert (dest["activeconns"], dest["inactconns"]) == counts[i], (i, tok)
    assert seen == states


def test_tcp_non_syn_without_connection_is_not_forwarded() -> None:
    d = director()
    _, v = run(d, [tcp(CL, 40000, VIP, 80, "A"), tcp(CL, 40001, VIP, 80, "SR")])
    assert v == [V.DROP_TCP_NO_CONN, V.DROP_TCP_NO_CONN]
    assert d.engine.conn_count == 0


def test_syn_ack_opens_a_connection() -> None:
    # tcp_conn_schedule has no !ack test (active FTP): SYN+ACK schedules
    d = director()
    _, v = run(d, [tcp(CL, 40000, VIP, 80, "SA")])
    assert v == [V.FWD_IN]


def test_udp_creates_on_any_packet_and_counts_inactive() -> None:
    d = director()
    out, v = run(d, [udp(CL, 5000, VIP, 53), udp(CL, 5000, VIP, 53)])
    assert v == [V.FWD_IN, V.FWD_IN]
    c = conn(d, 5000, "udp", 53)
    assert c["state"] == "UDP" and not c["active"]
    dest = d.engine.dest_info(c["dest"])
    assert (dest["activeconns"], dest["inactconns"]) == (0, 1)
    assert all(checksums_ok(f) for f in out)


def test_udp_zero_checksum_gets_a_full_checksum() -> None:
    # udp_dnat_handler: check == 0 -> full computation (the kernel, not "left zero")
    d = director()
    out, v = run(d, [udp(CL, 5000, VIP, 53, b"abc", zero_csum=True)])
    assert v == [V.FWD_IN]
    assert out[0][40:42] != b"\x00\x00"
    assert checksums_ok(out[0])


def test_bad_l4_checksum_stays_bad_by_the_same_amount() -> None:
    d = director()
    good = bytearray(tcp(CL, 40000, VIP, 80, "S"))
    good[14 + 20 + 16] ^= 0x01  # corrupt the TCP checksum
    out, v = run(d, [bytes(good)])
    assert v == [V.FWD_IN]
    assert not checksums_ok(out[0])
    fixed = bytearray(out[0])
    fixed[14 + 20 + 16] ^= 0x01
    assert checksums_ok(bytes(fixed))


def test_ttl_one_is_dropped_and_keep_ttl_keeps_it() -> None:
    d = director()
    _, v = run(d, [tcp(CL, 40000, VIP, 80, "S", ttl=1)])
    assert v == [V.DROP_TTL]
    d = director(keep_ttl=True)
    out, v = run(d, [tcp(CL, 40000, VIP, 80, "S", ttl=1)])
    assert v == [V.FWD_IN] and out[0][22] == 1 and checksums_ok(out[0])


def test_connection_expires_at_last_seen_plus_timeout() -> None:
    d = director()
    run(d, [tcp(CL, 40000, VIP, 80, "S")], t0=0)  # SYN_RECV: 60 s
    d.engine.advance(60 * S - 1)
    assert d.engine.conn_count == 1
    d.engine.advance(60 * S)
    assert d.engine.conn_count == 0
    dest = d.engine.dest_info(0)
    assert dest["activeconns"] == 0 and dest["inactconns"] == 0


def test_packet_at_expiry_time_does_not_see_the_connection() -> None:
    d = director()
    run(d, [udp(CL, 5000, VIP, 53)], t0=0)
    _, v = run(d, [udp(RIP1, 5353, CL, 5000)], t0=300 * S)
    assert v == [V.PASS_NOT_SERVICE]  # gone for a packet at last-seen + 300 s


def test_clock_never_runs_backwards() -> None:
    d = director()
    run(d, [udp(CL, 5000, VIP, 53)], t0=100 * S)
    # an earlier timestamp is processed at the latest time seen
    run(d, [udp(CL, 5000, VIP, 53)], t0=10 * S)
    assert d.engine.now == 100 * S
    assert conn(d, 5000, "udp", 53)["expires_ns"] == 300 * S


def test_set_timeouts_like_ipvsadm_set() -> None:
    d = director(RULES_RR + "--set 100 20 30\n")
    assert d.timeouts["ESTABLISHED"] == 100 and d.timeouts["FIN_WAIT"] == 20 and d.timeouts["UDP"] == 30
    run(d, [udp(CL, 5000, VIP, 53)], t0=0)
    d.engine.advance(30 * S)
    assert d.engine.conn_count == 0


@pytest.mark.parametrize("state_flags", [["S", "sR"], ["S", "SA", "A", "FA", "sFA", "A"]])
def test_syn_reuses_time_wait_or_close(state_flags: list[str]) -> None:
    """conn_reuse_mode=1: a SYN hitting TIME_WAIT or CLOSE expires the entry and is
    scheduled anew (rr moves on to the other real server)."""
    d = director()
    first = None
    for i, tok in enumerate(state_flags):
        if tok.startswith("s") or tok == "SA":
            cfg = conn(d, 40000)
            frame = tcp(cfg["daddr"], 8080, CL, 40000, tok.lstrip("s"))
        else:
            frame = tcp(CL, 40000, VIP, 80, tok)
        run(d, [frame], t0=i * S)
        first = first or conn(d, 40000)["daddr"]
    assert conn(d, 40000)["state"] in ("TIME_WAIT", "CLOSE")
    _, v = run(d, [tcp(CL, 40000, VIP, 80, "S")], t0=10 * S)
    assert v == [V.FWD_IN]
    c = conn(d, 40000)
    assert c["state"] == "SYN_RECV" and c["daddr"] != first
    d.engine.advance(11 * S)  # the old entry's timer ran
    assert d.engine.conn_count == 1


def test_syn_in_established_keeps_the_connection() -> None:
    d = director()
    run(d, [tcp(CL, 40000, VIP, 80, "S"), tcp(CL, 40000, VIP, 80, "A"), tcp(CL, 40000, VIP, 80, "S")])
    assert d.engine.conn_count == 1 and conn(d, 40000)["state"] == "ESTABLISHED"


def test_weight_zero_is_quiescent() -> None:
    d = director(f"-A -t {VIP}:80 -s wlc\n-a -t {VIP}:80 -r {RIP1}:8080 -m -w 0\n"
                 f"-a -t {VIP}:80 -r {RIP2}:8080 -m -w 1\n")
    _, v = run(d, [tcp(CL, 40000 + i, VIP, 80, "S") for i in range(5)])
    assert v == [V.FWD_IN] * 5
    assert {conn(d, 40000 + i)["daddr"] for i in range(5)} == {RIP2}


def test_no_usable_dest_drops() -> None:
    d = director(f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {RIP1}:8080 -m -w 0\n")
    _, v = run(d, [tcp(CL, 40000, VIP, 80, "S")])
    assert v == [V.DROP_NO_DEST]


def test_removed_dest_drops_or_expires_its_connections() -> None:
    for expire in (False, True):
        d = director(expire_nodest_conn=expire)
        run(d, [tcp(CL, 40000, VIP, 80, "S")])
        di = conn(d, 40000)["dest"]
        d.engine.remove_dest(di)
        _, v = run(d, [tcp(CL, 40000, VIP, 80, "A")], t0=S)
        # expire_nodest_conn ends the connection; a plain ACK then has none
        assert v == ([V.DROP_TCP_NO_CONN] if expire else [V.DROP_DEST_UNAVAILABLE])


def test_upper_threshold_overloads_and_lower_threshold_clears() -> None:
    d = director(f"-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r {RIP1}:5353 -m -w 1 -x 2 -y 1\n")
    _, v = run(d, [udp(CL, 5000 + i, VIP, 53) for i in range(3)])
    assert v == [V.FWD_IN, V.FWD_IN, V.DROP_NO_DEST]
    assert d.engine.dest_info(0)["overloaded"]
    d.engine.advance(301 * S)  # both expire: 0 < l_threshold clears OVERLOAD
    assert not d.engine.dest_info(0)["overloaded"]
    _, v = run(d, [udp(CL, 6000, VIP, 53)], t0=302 * S)
    assert v == [V.FWD_IN]


def test_table_full_drops_new_connections_and_keeps_old() -> None:
    d = director(capacity=2)
    _, v = run(d, [udp(CL, 5000 + i, VIP, 53) for i in range(3)] + [udp(CL, 5000, VIP, 53)])
    assert v == [V.FWD_IN, V.FWD_IN, V.DROP_CONN_FULL, V.FWD_IN]


def test_table_takes_exactly_its_capacity() -> None:
    """The bucket array stops growing at 4 entries per slot and then fills past a
    quarter: every one of ``capacity`` connections fits, the next is refused."""
    n = 3000
    d = director(capacity=n)
    frames = [tcp(f"100.64.{i // 250}.{i % 250 + 1}", 1024 + i, VIP, 80, "S") for i in range(n + 1)]
    _, v = run(d, frames, step=1000)
    assert v == [V.FWD_IN] * n + [V.DROP_CONN_FULL]
    assert d.engine.conn_count == n
    assert all(d.lookup("tcp", f"100.64.{i // 250}.{i % 250 + 1}", 1024 + i, VIP, 80) for i in range(0, n, 7))


def test_not_ipvs_traffic_passes_unchanged_by_default() -> None:
    d = director()
    frames = [tcp(CL, 40000, "10.99.0.1", 80, "S"), udp(CL, 5000, VIP, 54), b"\x00" * 14 + b"junk"]
    out, v = run(d, frames)
    assert out == frames
    assert v[:2] == [V.PASS_NOT_SERVICE, V.PASS_NOT_SERVICE]


def test_director_view_routes_transit_and_keeps_local() -> None:
    d = director(director_view=True)
    frames = [tcp(CL, 40000, "10.99.0.1", 80, "S"), udp(CL, 5000, VIP, 54)]
    out, v = run(d, frames)
    assert v == [V.PASS_ROUTED, V.DROP_LOCAL]
    assert out[0][22] == 63 and checksums_ok(out[0])


def test_stats_count_ip_bytes() -> None:
    d = director()
    f = tcp(CL, 40000, VIP, 80, "S", payload=b"x" * 10)
    run(d, [f])
    svc = d.services()[0]
    assert svc["stats"]["inpkts"] == 1 and svc["stats"]["inbytes"] == len(f) - 14
    assert svc["stats"]["conns"] == 1


def test_same_input_same_output_any_seed() -> None:
    frames = [tcp(CL, 40000 + i, VIP, 80, "S") for i in range(50)]
    outs = [run(director(), frames)[0] for _ in range(2)]
    outs.append(Director(parse_rules(RULES_RR), seed=999).process_packets(frames)[0])
    assert outs[0] == outs[1] == outs[2]


def test_shorter_timeout_after_a_state_change_takes_effect() -> None:
    """ESTABLISHED (900 s) then a client FIN: CLOSE_WAIT's 60 s count from the FIN."""
    d = director()
    run(d, [tcp(CL, 40000, VIP, 80, "S")], t0=0)
    run(d, [tcp(CL, 40000, VIP, 80, "A")], t0=1 * S)
    d.engine.advance(4 * S)  # past the initial 3 s timer: the heap key moves to 901 s
    run(d, [tcp(CL, 40000, VIP, 80, "FA")], t0=5 * S)
    assert conn(d, 40000)["state"] == "CLOSE_WAIT"
    d.engine.advance(65 * S - 1)
    assert d.engine.conn_count == 1
    d.engine.advance(65 * S)
    assert d.engine.conn_count == 0


def test_many_connections_expire_exactly_on_time() -> None:
    """Expiry order against a plain model: UDP flows touched at random times."""
    import random

    rnd = random.Random(5)
    d = director()
    last: dict[int, int] = {}
    t = 0
    for _ in range(3000):
        t += rnd.randrange(0, 2 * S)
        port = 1024 + rnd.randrange(400)
        if last.get(port, -10**18) + 300 * S <= t:
            last.pop(port, None)
        run(d, [udp(CL, port, VIP, 53)], t0=t)
        last[port] = t
        alive = sum(1 for v in last.values() if v + 300 * S > t)
        assert d.engine.conn_count == alive


def test_table_grows_and_shrinks_with_many_connections() -> None:
    """The bucket array starts small and doubles as connections arrive (4000 here,
    past several doublings); every connection stays reachable, then all expire."""
    d = director(capacity=5000)
    frames = [udp(f"100.64.{i // 250}.{i % 250 + 1}", 1024 + i, VIP, 53) for i in range(4000)]
    _, v = run(d, frames, step=1000)
    assert v == [V.FWD_IN] * 4000
    assert d.engine.conn_count == 4000
    for i in (0, 1234, 3999):
        assert d.lookup("udp", f"100.64.{i // 250}.{i % 250 + 1}", 1024 + i, VIP, 53) is not None
    replies, v = run(d, [udp(RIP1, 5353, f"100.64.{i // 250}.{i % 250 + 1}", 1024 + i) for i in range(4000)],
                     t0=S)
    assert v == [V.FWD_OUT] * 4000
    d.engine.advance(400 * S)
    assert d.engine.conn_count == 0 and d.connections() == []


def _flag_class(f: int) -> str | None:
    """ip_vs_proto_tcp.c tcp_state_idx: RST beats SYN beats FIN beats ACK."""
    for bit, name in ((0x04, "rst"), (0x02, "syn"), (0x01, "fin"), (0x10, "ack")):
        if f & bit:
            return name
    return None


# tcp_states[] INPUT rows for the two columns reached here; no flag class -> CLOSE
_INPUT_FROM = {
    "SYN_RECV": {"syn": "SYN_RECV", "fin": "TIME_WAIT", "ack": "ESTABLISHED", "rst": "SYN_RECV"},
    "ESTABLISHED": {"syn": "ESTABLISHED", "fin": "CLOSE_WAIT", "ack": "ESTABLISHED", "rst": "CLOSE"},
}


@pytest.mark.parametrize("start", ["SYN_RECV", "ESTABLISHED"])
def test_every_tcp_flag_byte_takes_the_kernels_transition(start: str) -> None:
    """All 256 values of th->flags (ECE, CWR, URG, PSH included) from a client."""
    for f in range(256):
        d = director()
        opening = [tcp(CL, 40000, VIP, 80, "S")] + ([tcp(CL, 40000, VIP, 80, "A")] if start == "ESTABLISHED" else [])
        run(d, opening)
        assert conn(d, 40000)["state"] == start
        frame = bytearray(tcp(CL, 40000, VIP, 80, "A"))
        frame[14 + 20 + 13] = f
        _, v = run(d, [bytes(frame)], t0=S)
        cls = _flag_class(f)
        want = _INPUT_FROM[start][cls] if cls else "CLOSE"
        c = conn(d, 40000)
        assert v == [V.FWD_IN] and c is not None and c["state"] == want, (hex(f), c)


@pytest.mark.parametrize("size", [1, 3, 8, 13, 17, 64])
def test_established_traffic_same_bytes_in_any_batch_size(size: int) -> None:
    """3000 packets of 500 flows (both directions) through the pipelined batch loop in
    batches of ``size``, against one batch of everything."""
    import numpy as np

    from fastvs.bench import run as bench

    t = bench.Traffic(500, seed=7)
    t.warm(bench.make_director(4, "wlc", 1 << 12))
    traffic, _ = t.established(3000, replies=True)
    outs = []
    for bs in (3000, size):
        d = bench.make_director(4, "wlc", 1 << 12)
        t.warm(d)
        frames = traffic.copy()
        b = bench.batch_of(frames, bench.EST_T_NS)
        b.ts += np.arange(len(b), dtype=np.int64) * 1000
        for sub in bench.split(b, bs):
            d.process(sub)
        outs.append((frames.tobytes(), b.verdict.tobytes(), d.summary()))
    assert outs[0] == outs[1]
    assert set(np.unique(np.frombuffer(outs[0][1], np.uint8))) == {V.FWD_IN, V.FWD_OUT}


# -- options the director refuses, and what EngineError is for -----------------------------
@pytest.mark.parametrize("kw,option", [
    ({"capacity": 0}, "capacity"),
    ({"capacity": -5}, "capacity"),
    ({"capacity": (1 << 30) + 1}, "capacity"),
    ({"capacity": 2.5}, "capacity"),
    ({"seed": "abc"}, "seed"),
    ({"tunnel_mtu": 67}, "tunnel_mtu"),
    ({"tunnel_mtu": 65536}, "tunnel_mtu"),
    ({"tunnel_source": "nowhere"}, "tunnel_source"),
    ({"truncated": "keep"}, "truncated"),
    ({"drop_entry": 4}, "drop_entry"),
    ({"drop_packet": -1}, "drop_packet"),
    ({"secure_tcp": True}, "secure_tcp"),
    ({"amemthresh": 0}, "amemthresh"),
])  # fmt: skip
def test_director_refuses_option_values(kw: dict[str, object], option: str) -> None:
    from fastvs.errors import OptionError

    with pytest.raises(OptionError) as e:
        Director(parse_rules(RULES_RR), **{"seed": 1, **kw})  # type: ignore[arg-type]
    assert e.value.option == option and e.value.exit_code == 2
    assert isinstance(e.value, ValueError)  # what the API raised before OptionError
    assert e.value.flag == "--" + option.replace("_", "-")


def test_director_edge_values_accepted() -> None:
    for kw in ({"capacity": 1}, {"tunnel_mtu": 68}, {"tunnel_mtu": 65535}, {"drop_entry": 3},
               {"tunnel_source": "2001:db8::1"}, {"truncated": "drop"}):
        director(**kw)
    d = Director(parse_rules(RULES_RR), seed=-1)  # any integer seeds the hash
    assert run(d, [tcp(CL, 40000, VIP, 80, "S")])[1] == [V.FWD_IN]


def test_engine_refusing_a_batch_is_engine_error() -> None:
    import numpy as np

    from fastvs.capture.batch import PacketBatch
    from fastvs.errors import EngineError

    d = director()
    b = PacketBatch.from_packets([tcp(CL, 40000, VIP, 80, "S")] * 3, [0, 1, 2])
    b.verdict = np.zeros(1, dtype=b.verdict.dtype)  # shorter than the batch: a caller's bug
    with pytest.raises(EngineError, match="refused a batch of 3 packets") as e:
        d.process(b)
    assert e.value.exit_code == 4
