"""Hash flooding: keys an attacker picked for a known table seed, against a random seed.

The connection table's hash is keyed with a per-process random seed (the kernel's
ip_vs_conn_rnd). If an attacker knew the seed, they could choose clients whose keys all
land in one bucket: every insert and lookup would walk one long cluster. This builds such
clients for seed S (``colliding_clients`` of ``benchmarks/_stages.pyx``) and times the same traffic —
their SYNs, then data from each — through an engine seeded with S and through one with a
random seed, in one run. The ratio is what secrecy of the seed buys.

    python benchmarks/bench_hashflood.py [--clients 2000] [--rounds 3]
    pytest benchmarks/bench_hashflood.py --benchmark-enable
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import time

import numpy as np
from cybuild import stages  # benchmarks/, on sys.path as a script and under pytest

from fastvs.capture.batch import PacketBatch
from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

colliding_clients = stages().colliding_clients

KNOWN_SEED = 0x5EED
VIP = "10.10.0.1"
RULES = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.10:8080 -m\n-a -t {VIP}:80 -r 192.168.0.11:8080 -m\n"


def _frame(src: int, sport: int, flags: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, struct.pack("!I", src), socket.inet_aton(VIP))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
    tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 0x50, flags, 65535, 0, 0)
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + tcp


def traffic(n: int) -> tuple[list[bytes], list[bytes]]:
    """SYNs and ACKs from ``n`` clients that all collide under KNOWN_SEED."""
    bits = max(10, int(np.ceil(np.log2(n * 8))))  # the bucket array at its largest (capacity 2n)
    addrs, ports = colliding_clients(KNOWN_SEED, bits, int.from_bytes(socket.inet_aton(VIP), "big"), 80, n)
    syn = [_frame(int(a), int(p), 0x02) for a, p in zip(addrs, ports, strict=True)]
    ack = [_frame(int(a), int(p), 0x10) for a, p in zip(addrs, ports, strict=True)]
    return syn, ack


def run_once(seed: int, syn: list[bytes], ack: list[bytes]) -> float:
    """Seconds per packet in the engine alone (batches built and copied untimed)."""
    d = Director(parse_rules(RULES), seed=seed, capacity=len(syn) * 2, keep_ttl=True)
    b = PacketBatch.from_packets(syn, list(range(len(syn))))
    acks = [PacketBatch.from_packets(ack, [len(syn) + k * len(ack) + i for i in range(len(ack))])
            for k in range(5)]
    elapsed = 0.0
    for batch in (b, *acks):
        t0 = time.perf_counter()
        d.process(batch)
        elapsed += time.perf_counter() - t0
    return elapsed / (len(syn) * 6)


def measure(n: int, rounds: int) -> dict[str, float]:
    syn, ack = traffic(n)
    known = statistics.median(run_once(KNOWN_SEED, syn, ack) for _ in range(rounds))
    rand = statistics.median(run_once(0xC0FFEE ^ r, syn, ack) for r in range(rounds))
    return {"clients": n, "known_seed_ns": known * 1e9, "random_seed_ns": rand * 1e9,
            "slowdown": known / rand}


def test_hash_flood(benchmark) -> None:  # type: ignore[no-untyped-def]
    syn, ack = traffic(500)
    benchmark.pedantic(run_once, args=(KNOWN_SEED, syn, ack), rounds=3)
    benchmark.extra_info.update(measure(500, 3))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    r = measure(a.clients, a.rounds)
    print(f"{r['clients']} clients chosen to collide under a known seed: "
          f"{r['known_seed_ns']:.0f} ns/packet with that seed, {r['random_seed_ns']:.0f} ns/packet "
          f"with a random seed ({r['slowdown']:.1f}x)")
