"""drop_packet (ip_vs_todrop in include/net/ip_vs.h, update_defense_level in
ip_vs_ctl.c): the counter is a signed int that counts down per new connection and is
re-armed to the rate when it reaches zero or below; mode 3 sets only the rate (so the
first SYN after the switch is refused: 0 - 1 is not > 0), mode 1 with memory low sets
the rate and re-arms the counter on every defense tick (once a second)."""

from __future__ import annotations

from fastvs import verdicts as V
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import tcp, udp

VIP = "10.10.0.1"
RULES = (f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m\n"
         f"-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r 192.168.0.10:53 -m\n")
S = 1_000_000_000


class KernelDropPacket:
    """A literal model: netns_ipvs's int drop_rate / drop_counter."""

    def __init__(self, mode: int, amemthresh: int, am_droprate: int = 10) -> None:
        self.mode, self.amemthresh, self.am_droprate = mode, amemthresh, am_droprate
        self.rate = self.counter = 0

    def tick(self, avail: int) -> None:  # update_defense_level's drop_packet part
        nomem = avail < self.amemthresh
        if self.mode == 3:
            self.rate = self.am_droprate
        elif self.mode == 1 and nomem:
            self.rate = self.counter = self.amemthresh // (self.amemthresh - avail)
        else:
            self.rate = 0

    def todrop(self) -> bool:  # ip_vs_todrop
        if not self.rate:
            return False
        self.counter -= 1
        if self.counter > 0:
            return False
        self.counter = self.rate
        return True


def test_mode_3_drops_the_first_syn_and_then_one_in_ten() -> None:
    """The kernel lab's observation (issue 11 item 5): 25 SYNs with drop_packet=3 and
    am_droprate 10, the kernel refuses SYNs 1, 11 and 21 (golden x8-drop-packet)."""
    d = Director(parse_rules(RULES), seed=1, drop_packet=3, drop_entry=0)
    frames = [tcp("100.64.0.2", 40000 + i, VIP, 80, "S") for i in range(25)]
    _, v = d.process_packets(frames, [i * S // 100 for i in range(25)])
    dropped = [i for i, code in enumerate(v) if code == V.DROP_DEFENSE]
    assert dropped == [0, 10, 20]
    assert all(code == V.FWD_IN for i, code in enumerate(v) if i not in dropped)


def test_mode_3_counts_udp_and_tcp_alike() -> None:
    """udp_conn_schedule calls ip_vs_todrop too: one counter for every protocol."""
    d = Director(parse_rules(RULES), seed=1, drop_packet=3, drop_entry=0)
    frames = [tcp("100.64.0.2", 40000 + i, VIP, 80, "S") if i % 2 else
              udp("100.64.0.3", 50000 + i, VIP, 53) for i in range(21)]
    _, v = d.process_packets(frames, [i * S // 100 for i in range(21)])
    assert [i for i, code in enumerate(v) if code == V.DROP_DEFENSE] == [0, 10, 20]


def test_packets_of_existing_connections_are_never_refused() -> None:
    """ip_vs_todrop is asked in conn_schedule only: a connection's own packets pass."""
    d = Director(parse_rules(RULES), seed=1, drop_packet=3, drop_entry=0)
    frames = [tcp("100.64.0.2", 40001, VIP, 80, "S"), tcp("100.64.0.2", 40001, VIP, 80, "S")] + [
        tcp("100.64.0.2", 40001, VIP, 80, "PA", payload=b"x") for _ in range(30)]
    _, v = d.process_packets(frames, [i * S // 100 for i in range(32)])
    assert v[0] == V.DROP_DEFENSE          # the first new connection: refused
    assert v[1:] == [V.FWD_IN] * 31


def test_mode_1_rearms_the_counter_every_tick_like_the_kernel() -> None:
    """With the table nearly full, every second the rate is amemthresh / (amemthresh -
    free) and the counter starts again from it: the drop pattern over several
    seconds, SYN by SYN, is the model's."""
    cap, thresh = 400, 100
    d = Director(parse_rules(RULES), seed=1, capacity=cap, drop_packet=1, drop_entry=0,
                 amemthresh=thresh)
    model = KernelDropPacket(1, thresh)
    next_tick = None
    conns = 0
    frames, ts, want = [], [], []
    t = 0
    for i in range(390):
        t += S // 37                        # about 37 SYNs a second: ticks fall between them
        if next_tick is None or t >= next_tick:
            model.tick(cap - conns)
            next_tick = t + S
        drop = model.todrop()
        if not drop:
            conns += 1
        frames.append(tcp("100.64.1.1", 1024 + i, VIP, 80, "S"))
        ts.append(t)
        want.append(V.DROP_DEFENSE if drop else V.FWD_IN)
    _, got = d.process_packets(frames, ts)
    assert got == want
    assert want.count(V.DROP_DEFENSE) > 5
