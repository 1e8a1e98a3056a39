"""What a worker's batches can hold that a capture rarely does: a client's SYN and its
retransmission in one batch (the forwarder fell a retransmission timeout behind, as a
debug build on a loaded machine can), and again in the next batch. Each connection is
scheduled once -- the round robin moves once per connection, not per SYN -- which
rules out a duplicated SYN as the cause of an extra rr pick in the SIGHUP test."""

from __future__ import annotations

import socket

import dpkt

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

MAC_C = bytes.fromhex("02000000cc01")
MAC_D = bytes.fromhex("020000000d01")
VIP = "10.0.0.100"
RULES = """-A -t 10.0.0.100:80 -s rr
-a -t 10.0.0.100:80 -r 10.1.0.11:80 -m -w 1
-a -t 10.0.0.100:80 -r 10.1.0.12:80 -m -w 1
"""


def syn(sport: int) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=80, seq=1000, flags=dpkt.tcp.TH_SYN)
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.2"), dst=socket.inet_aton(VIP), p=6, ttl=64, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    return bytes(dpkt.ethernet.Ethernet(src=MAC_C, dst=MAC_D, type=0x0800, data=ip))


def dest_of(frame: bytes) -> str:
    return socket.inet_ntoa(dpkt.ethernet.Ethernet(frame).data.dst)


def test_retransmitted_syns_in_one_batch_are_scheduled_once() -> None:
    d = Director(parse_rules(RULES), seed=7)
    t = 1_000_000_000
    picks = []
    for k, sport in enumerate((40001, 40003, 40005, 40007)):
        # the SYN, its retransmission in the same batch, another one a batch later
        frames, verdicts = d.process_packets([syn(sport), syn(sport)], [t + k * 10**8] * 2)
        assert verdicts == [32, 32]
        assert dest_of(frames[0]) == dest_of(frames[1])
        again, v2 = d.process_packets([syn(sport)], [t + k * 10**8 + 10**9])
        assert v2 == [32] and dest_of(again[0]) == dest_of(frames[0])
        picks.append(dest_of(frames[0]))
    assert picks == ["10.1.0.12", "10.1.0.11", "10.1.0.12", "10.1.0.11"]  # kernel list order: reversed
    tcp = next(s for s in d.services() if s["proto"] == "tcp")
    assert tcp["stats"]["conns"] == 4
