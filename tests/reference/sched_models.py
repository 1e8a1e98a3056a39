"""Naive pure-Python models of the IPVS schedulers, written from the kernel's
descriptions (net/netfilter/ipvs/ip_vs_*.c) without looking at fastvs's code.

A model sees the service's real servers as a list of :class:`RS` in the kernel's list
order and returns the picked RS or None.  Tables (sh, dh, mh) are rebuilt from
scratch by ``changed``; counters are the caller's to keep.  Clarity over speed:
Maglev permutations are materialised in full, SipHash is spelled out round by round.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


@dataclass(eq=False)
class RS:
    addr: str
    port: int
    weight: int = 1
    active: int = 0
    inactive: int = 0
    overloaded: bool = False
    available: bool = True
    last_weight: int | None = None

    def __post_init__(self) -> None:
        if self.last_weight is None:
            self.last_weight = self.weight

    @property
    def key(self) -> tuple[str, int]:
        return (self.addr, self.port)

    def set_weight(self, w: int) -> None:
        """ipvsadm -e: last_weight keeps the latest non-zero weight."""
        self.weight = w
        if w != 0:
            self.last_weight = w


def overhead(d: RS) -> int:
    """ip_vs_dest_conn_overhead in 6.1.192: activeconns * 256 + totalconns."""
    return d.active * 256 + (d.active + d.inactive)


def ip_int(addr: str) -> int:
    return int(ipaddress.IPv4Address(addr))


def usable(d: RS) -> bool:
    return not d.overloaded and d.weight > 0


# -- round robin and weighted round robin ---------------------------------------------

class RR:
    def __init__(self) -> None:
        self.last: RS | None = None

    def changed(self, dests: list[RS]) -> None:
        if self.last is not None and self.last not in dests:
            self.last = None

    def removing(self, dests: list[RS], rs: RS) -> None:
        """ip_vs_rr_del_dest: the cursor on the removed server moves to the one
        before it (or the head), so the walk goes on with the server after it."""
        if self.last is rs:
            i = dests.index(rs)
            self.last = dests[i - 1] if i > 0 else None

    def pick(self, dests: list[RS], **_: object) -> RS | None:
        start = dests.index(self.last) + 1 if self.last in dests else 0
        order = dests[start:] + dests[:start]
        for d in order:
            if usable(d):
                self.last = d
                return d
        return None


class WRR:
    """ip_vs_wrr.c literally: current weight cw stepping down by the gcd di from mw."""

    def __init__(self) -> None:
        self.pos = -1  # -1 = the list head
        self.di, self.mw, self.cw = 1, 0, 0

    @staticmethod
    def _gcd(dests: list[RS]) -> int:
        g = 0
        for d in dests:
            if d.weight > 0:
                g = math.gcd(g, d.weight)
        return g or 1

    def changed(self, dests: list[RS]) -> None:
        self.pos = -1
        self.di = self._gcd(dests)
        self.mw = max((d.weight for d in dests), default=0) - (self.di - 1)
        if self.cw > self.mw or self.cw == 0:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def pick(self, dests: list[RS], **_: object) -> RS | None:
        if self.mw == 0:
            return None
        last = self.pos
        i = self.pos
        stop = None
        last_pass = restarted = False
        while True:
            for j in range(i + 1, len(dests)):
                d = dests[j]
                if not d.overloaded and d.weight >= self.cw:
                    self.pos = j
                    return d
                if stop is not None and j == stop:
                    return None
            i = -1
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last < 0:
                    self.pos = -1  # err_over: the walk ended at the head (mark->cl)
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last >= 0:
                stop = last


# -- the connection-counting schedulers ----------------------------------------------

def weighted_least(dests: list[RS], cost) -> RS | None:  # type: ignore[no-untyped-def]
    """The wlc/sed rule: least cost/weight, the first usable server as the start."""
    best = None
    for d in dests:
        if best is None:
            if usable(d):
                best = d
            continue
        if d.overloaded:
            continue
        if cost(best) * d.weight > cost(d) * best.weight:
            best = d
    return best


class LC:
    def pick(self, dests: list[RS], **_: object) -> RS | None:
        best = None
        for d in dests:
            if d.overloaded or d.weight == 0:
                continue
            if best is None or overhead(d) < overhead(best):
                best = d
        return best


class WLC:
    def pick(self, dests: list[RS], **_: object) -> RS | None:
        return weighted_least(dests, overhead)


class SED:
    def pick(self, dests: list[RS], **_: object) -> RS | None:
        return weighted_least(dests, lambda d: d.active + 1)


class NQ:
    def pick(self, dests: list[RS], **_: object) -> RS | None:
        best = None
        for d in dests:
            if d.overloaded or d.weight == 0:
                continue
            if d.active == 0:
                return d
            if best is None or (best.active + 1) * d.weight > (d.active + 1) * best.weight:
                best = d
        return best


class FO:
    def pick(self, dests: list[RS], **_: object) -> RS | None:
        cands = [d for d in dests if not d.overloaded and d.weight > 0]
        if not cands:
            return None
        top = max(d.weight for d in cands)
        return next(d for d in cands if d.weight == top)


class OVF:
    def pick(self, dests: list[RS], **_: object) -> RS | None:
        cands = [d for d in dests if not d.overloaded and d.weight > 0 and d.active <= d.weight]
        if not cands:
            return None
        top = max(d.weight for d in cands)
        return next(d for d in cands if d.weight == top)


class Xorshift:
    """The documented twos generator: xorshift64* from a fixed seed, draws by
    multiply-shift with rejection."""

    def __init__(self, seed: int = 0x9E3779B97F4A7C15) -> None:
        self.s = seed

    def u32(self) -> int:
        x = self.s
        x ^= x >> 12
        x ^= (x << 25) & M64
        x ^= x >> 27
        self.s = x
        return ((x * 0x2545F4914F6CDD1D) & M64) >> 32

    def below(self, ceil: int) -> int:
        threshold = (-ceil % (1 << 32)) % ceil
        while True:
            mult = ceil * self.u32()
            if mult & M32 >= threshold:
                return mult >> 32


def wrap32(x: int) -> int:
    x &= M32
    return x - (1 << 32) if x >= 1 << 31 else x


class TWOS:
    def __init__(self) -> None:
        self.rng = Xorshift()

    def pick(self, dests: list[RS], **_: object) -> RS | None:
        cands = [d for d in dests if usable(d)]
        if not cands:
            return None
        total = sum(d.weight for d in cands) + 1
        r1, r2 = self.rng.below(total), self.rng.below(total)
        c1 = next(d for d in cands if r1 - sum(x.weight for x in cands[: cands.index(d) + 1]) <= 0)
        c2 = next(d for d in cands if r2 - sum(x.weight for x in cands[: cands.index(d) + 1]) <= 0)
        if wrap32(c2.weight * overhead(c1)) > wrap32(c1.weight * overhead(c2)):
            return c2
        return c1


# -- hashing schedulers -------------------------------------------------------------

def hash_32(val: int, bits: int) -> int:
    return ((val * 0x61C88647) & M32) >> (32 - bits)


def down(d: RS) -> bool:
    return d.weight <= 0 or d.overloaded


class SH:
    SIZE = 256

    def __init__(self, fallback: bool = False, port: bool = False) -> None:
        self.fallback, self.port = fallback, port
        self.buckets: list[RS | None] = [None] * self.SIZE

    def changed(self, dests: list[RS]) -> None:
        # each server in turn fills max(weight, 1) consecutive buckets, round and round
        seq: list[RS] = []
        while dests and len(seq) < self.SIZE:
            for d in dests:
                seq.extend([d] * max(d.weight, 1))
        self.buckets = seq[: self.SIZE] if dests else [None] * self.SIZE

    def bucket(self, caddr: str, cport: int, offset: int) -> int:
        port = cport if self.port else 0
        return (offset + hash_32((port + ip_int(caddr)) & M32, 8)) % self.SIZE

    def pick(self, dests: list[RS], caddr: str = "", cport: int = 0, **_: object) -> RS | None:
        first = self.bucket(caddr, cport, 0)
        d = self.buckets[first]
        if d is None or not down(d):
            return d
        if not self.fallback:
            return None
        for k in range(self.SIZE):
            d = self.buckets[self.bucket(caddr, cport, (k + first) % self.SIZE)]
            if d is None:
                return None
            if not down(d):
                return d
        return None


class DH:
    SIZE = 256

    def __init__(self) -> None:
        self.buckets: list[RS | None] = [None] * self.SIZE

    def changed(self, dests: list[RS]) -> None:
        self.buckets = [dests[i % len(dests)] if dests else None for i in range(self.SIZE)]

    def pick(self, dests: list[RS], vaddr: str = "", **_: object) -> RS | None:
        d = self.buckets[hash_32(ip_int(vaddr), 8)]
        if d is None or not d.available or down(d):
            return None
        return d


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & M64


def siphash(key0: int, key1: int, msg: bytes, c: int = 2, d: int = 4) -> int:
    """SipHash-c-d, straight from the paper's description."""
    v0 = 0x736F6D6570736575 ^ key0
    v1 = 0x646F72616E646F6D ^ key1
    v2 = 0x6C7967656E657261 ^ key0
    v3 = 0x7465646279746573 ^ key1

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    padded = msg + b"\0" * (7 - len(msg) % 8) + bytes([len(msg) & 0xFF])
    for i in range(0, len(padded), 8):
        m = int.from_bytes(padded[i: i + 8], "little")
        v3 ^= m
        rounds(c)
        v0 ^= m
    v2 ^= 0xFF
    rounds(d)
    return v0 ^ v1 ^ v2 ^ v3


def hsiphash32(key: int, v: int) -> int:
    """hsiphash(&v, 4, {key, key}) on a 64-bit kernel: SipHash-1-3, low 32 bits."""
    return siphash(key, key, (v & M32).to_bytes(4, "little"), 1, 3) & M32


class MH:
    M = 4093
    K1, K2 = 2654435761, 2654446892

    def __init__(self, fallback: bool = False, port: bool = False) -> None:
        self.fallback, self.port = fallback, port
        self.table: list[RS | None] = [None] * self.M

    def changed(self, dests: list[RS]) -> None:
        lws = [d.last_weight or 0 for d in dests]
        g = 0
        for w in lws:
            if w > 0:
                g = math.gcd(g, w)
        if g == 0:
            self.table = [None] * self.M
            return
        shift = max(0, (max(lws) // g).bit_length() - 6)
        prefs, turns = [], []
        for d, w in zip(dests, lws, strict=True):
            offset = hsiphash32(self.K1, d.port + ip_int(d.addr)) % self.M
            skip = hsiphash32(self.K2, d.port + ip_int(d.addr)) % (self.M - 1) + 1
            prefs.append([(offset + j * skip) % self.M for j in range(self.M)])
            turns.append((w // g) >> shift or (1 if w else 0))
        table: list[RS | None] = [None] * self.M
        nxt = [0] * len(dests)
        filled = 0
        while filled < self.M:
            for i, d in enumerate(dests):
                for _ in range(turns[i]):
                    while table[prefs[i][nxt[i]]] is not None:
                        nxt[i] += 1
                    table[prefs[i][nxt[i]]] = d
                    filled += 1
                    if filled == self.M:
                        self.table = table
                        return
        self.table = table

    def slot(self, caddr: str, cport: int, offset: int) -> int:
        port = cport if self.port else 0
        return hsiphash32(self.K1, offset + port + ip_int(caddr)) % self.M

    def pick(self, dests: list[RS], caddr: str = "", cport: int = 0, **_: object) -> RS | None:
        first = self.slot(caddr, cport, 0)
        d = self.table[first]
        if d is None or not down(d):
            return d
        if not self.fallback:
            return None
        for k in range(self.M):
            d = self.table[self.slot(caddr, cport, (k + first) % self.M)]
            if d is None:
                return None
            if not down(d):
                return d
        return None


# -- locality-based schedulers --------------------------------------------------------

S = 1_000_000_000


def lblc_overloaded(d: RS, dests: list[RS]) -> bool:
    return d.active > d.weight and any(x.active * 2 < x.weight for x in dests)


@dataclass(eq=False)
class _Entry:
    addr: str
    lastuse: int
    dest: RS | None = None
    members: list[RS] = field(default_factory=list)  # lblcr: newest first
    lastmod: int = 0


class _Cache:
    """The kernel's lblc/lblcr cache: 1024 chains (newest first) and the 60 s
    collector; ``entries`` is the kernel's counter."""

    def __init__(self, expiration: int = 24 * 3600 * S) -> None:
        self.chains: list[list[_Entry]] = [[] for _ in range(1024)]
        self.entries = 0
        self.rover = 0
        self.counter = 1
        self.next_tick: int | None = None
        self.expiration = expiration

    def get(self, addr: str) -> _Entry | None:
        return next((e for e in self.chains[hash_32(ip_int(addr), 10)] if e.addr == addr), None)

    def add(self, e: _Entry) -> None:
        """ip_vs_lblc_hash; 6.1.192 makes no entry at max_size * 3 / 2 or more."""
        if self.entries >= 16384 * 3 // 2:
            return
        self.chains[hash_32(ip_int(e.addr), 10)].insert(0, e)
        self.entries += 1

    def remove(self, e: _Entry) -> None:
        self.chains[hash_32(ip_int(e.addr), 10)].remove(e)

    def __len__(self) -> int:
        return sum(map(len, self.chains))

    def _sweep(self, j: int, now: int, age: int) -> int:
        old = [e for e in self.chains[j] if now >= e.lastuse + age]
        self.chains[j] = [e for e in self.chains[j] if e not in old]
        self.entries -= len(old)
        return len(old)

    def tick(self, now: int) -> None:
        j = self.rover
        if self.counter % 30 == 0:
            for _ in range(1024):
                j = (j + 1) % 1024
                self._sweep(j, now, self.expiration)
            self.rover, self.counter = j, 1
            return
        if self.entries <= 16384:
            self.counter += 1
            return
        goal = min((self.entries - 16384) * 4 // 3, 8192)
        for _ in range(1024):
            j = (j + 1) % 1024
            goal -= self._sweep(j, now, 360 * S)
            if goal <= 0:
                break
        self.rover = j

    def advance(self, now: int) -> None:
        if self.next_tick is None:
            self.next_tick = now + 60 * S
        while self.next_tick <= now:
            self.tick(self.next_tick)
            self.next_tick += 60 * S


class LBLC:
    def __init__(self, expiration: int = 24 * 3600 * S) -> None:
        self.cache = _Cache(expiration)

    def pick(self, dests: list[RS], vaddr: str = "", now: int = 0, **_: object) -> RS | None:
        self.cache.advance(now)
        e = self.cache.get(vaddr)
        if e is not None:
            e.lastuse = now
            d = e.dest
            assert d is not None
            if d.available and d.weight > 0 and not lblc_overloaded(d, dests):
                return d
        d = weighted_least(dests, overhead)
        if d is None:
            return None
        if e is not None:
            if e.dest is d:
                return d
            self.cache.remove(e)
            self.cache.entries -= 1  # ip_vs_lblc_new (ip_vs_lblc.c:208 in 6.1.192)
        self.cache.add(_Entry(vaddr, now, dest=d))
        return d


class LBLCR:
    def __init__(self, expiration: int = 24 * 3600 * S) -> None:
        self.cache = _Cache(expiration)

    @staticmethod
    def set_min(e: _Entry) -> RS | None:
        best = None
        for d in e.members:
            if d.overloaded:
                continue
            if best is None:
                if d.weight > 0 and d.available:
                    best = d
                continue
            if overhead(best) * d.weight > overhead(d) * best.weight and d.available:
                best = d
        return best

    @staticmethod
    def set_max(e: _Entry) -> RS | None:
        most = None
        for d in e.members:
            if most is None:
                if d.weight > 0:
                    most = d
                continue
            if overhead(most) * d.weight < overhead(d) * most.weight and d.weight > 0:
                most = d
        return most

    def pick(self, dests: list[RS], vaddr: str = "", now: int = 0, **_: object) -> RS | None:
        self.cache.advance(now)
        e = self.cache.get(vaddr)
        if e is None:
            d = weighted_least(dests, overhead)
            if d is not None:
                self.cache.add(_Entry(vaddr, now, members=[d], lastmod=now))
            return d
        e.lastuse = now
        d = self.set_min(e)
        if len(e.members) > 1 and now > e.lastmod + self.cache.expiration:
            m = self.set_max(e)
            if m is not None:
                e.members.remove(m)
                e.lastmod = now
        if d is not None and not lblc_overloaded(d, dests):
            return d
        d = weighted_least(dests, overhead)
        if d is not None and d not in e.members:
            e.members.insert(0, d)
            e.lastmod = now
        return d


MODELS = {
    "rr": RR, "wrr": WRR, "lc": LC, "wlc": WLC, "sed": SED, "nq": NQ, "fo": FO,
    "ovf": OVF, "twos": TWOS, "sh": SH, "dh": DH, "mh": MH, "lblc": LBLC, "lblcr": LBLCR,
}
