"""Drive the real engine (through Director) and a naive model side by side.

A :class:`Bench` builds services (one per VIP, all with the same real servers) from
ipvsadm rules, opens connections with client SYNs (or UDP datagrams), and returns what
the engine chose next to what the model in sched_models chose.  The model keeps its
own connection counters: a TCP SYN opens an active connection (SYN_RECV, gone 60 s
after the SYN), a UDP datagram an inactive one (gone after 300 s); -x thresholds set
and clear the overload flag as ip_vs_bind_dest / ip_vs_unbind_dest do.
"""

from __future__ import annotations

import random
from typing import Any

from reference.sched_models import MODELS, RS

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import tcp, udp

S = 1_000_000_000
TIMEOUT = {"tcp": 60 * S, "udp": 300 * S}


class Bench:
    def __init__(self, sched: str, reals: list[tuple[Any, ...]], *, vips: list[str] | None = None,
                 proto: str = "tcp", flags: str = "", model_kw: dict[str, Any] | None = None) -> None:
        """``reals``: (addr, weight[, u_threshold]) in file order."""
        self.proto = proto
        self.vips = vips or ["10.10.0.1"]
        opt = "-t" if proto == "tcp" else "-u"
        lines = []
        for vip in self.vips:
            lines.append(f"-A {opt} {vip}:80 -s {sched}" + (f" -b {flags}" if flags else ""))
            for r in reals:
                x = f" -x {r[2]}" if len(r) > 2 else ""
                lines.append(f"-a {opt} {vip}:80 -r {r[0]}:8080 -m -w {r[1]}{x}")
        self.d = Director(parse_rules("\n".join(lines)), seed=1)
        kw = dict(model_kw or {})
        if flags:
            kw.update(fallback="fallback" in flags, port="port" in flags)
        self.models: dict[str, Any] = {}
        self.lists: dict[str, list[RS]] = {}
        self.uth: dict[int, int] = {}
        for vip in self.vips:
            model = MODELS[sched](**kw)
            lst: list[RS] = []
            for r in reals:  # ipvsadm -R links each new server at the head
                rs = RS(r[0], 8080, r[1])
                self.uth[id(rs)] = r[2] if len(r) > 2 else 0
                lst.insert(0, rs)
                if hasattr(model, "changed"):
                    model.changed(lst)
            self.models[vip], self.lists[vip] = model, lst
        self.conns: list[tuple[int, RS]] = []
        self.now = 0

    def _expire(self, now: int) -> None:
        keep = []
        for exp, rs in self.conns:
            if exp <= now:
                if self.proto == "tcp":
                    rs.active -= 1
                else:
                    rs.inactive -= 1
                u = self.uth[id(rs)]
                if u and (rs.active + rs.inactive) * 4 < u * 3:
                    rs.overloaded = False
            else:
                keep.append((exp, rs))
        self.conns = keep

    def connect(self, caddr: str, cport: int, now: int | None = None,
                vip: str | None = None) -> tuple[str | None, str | None]:
        """One new connection; (engine's real server, model's), addresses or None."""
        vip = vip or self.vips[0]
        if now is None:
            now = self.now
        self.now = now
        frame = tcp(caddr, cport, vip, 80, "S") if self.proto == "tcp" else udp(caddr, cport, vip, 80)
        self.d.process_packets([frame], [now])
        c = self.d.lookup(self.proto, caddr, cport, vip, 80)
        got = c["daddr"] if c else None
        self._expire(now)
        lst = self.lists[vip]
        want = self.models[vip].pick(lst, caddr=caddr, cport=cport, vaddr=vip, now=now)
        if want is not None:
            if self.proto == "tcp":
                want.active += 1
            else:
                want.inactive += 1
            u = self.uth[id(want)]
            if u and want.active + want.inactive >= u:
                want.overloaded = True
            self.conns.append((now + TIMEOUT[self.proto], want))
        return got, (want.addr if want else None)

    def engine_reals(self, vip: str | None = None) -> list[dict[str, Any]]:
        vip = vip or self.vips[0]
        svc = next(s for s in self.d.engine.services() if s["addr"] == vip)
        return svc["reals"]

    def check_counters(self) -> None:
        for vip in self.vips:
            eng = [(r["addr"], r["activeconns"], r["inactconns"]) for r in self.engine_reals(vip)]
            mod = [(r.addr, r.active, r.inactive) for r in self.lists[vip]]
            assert eng == mod

    def edit(self, addr: str, weight: int) -> None:
        """ipvsadm -e on every service."""
        for vip in self.vips:
            r = next(r for r in self.engine_reals(vip) if r["addr"] == addr)
            self.d.engine.edit_dest(r["index"], weight=weight)
            rs = next(x for x in self.lists[vip] if x.addr == addr)
            rs.set_weight(weight)
            if hasattr(self.models[vip], "changed"):
                self.models[vip].changed(self.lists[vip])

    def remove(self, addr: str) -> None:
        """ipvsadm -d on every service."""
        for vip in self.vips:
            r = next(r for r in self.engine_reals(vip) if r["addr"] == addr)
            self.d.engine.remove_dest(r["index"])
            rs = next(x for x in self.lists[vip] if x.addr == addr)
            rs.available = False
            if hasattr(self.models[vip], "removing"):
                self.models[vip].removing(self.lists[vip], rs)
            self.lists[vip].remove(rs)
            if hasattr(self.models[vip], "changed"):
                self.models[vip].changed(self.lists[vip])

    def run_random(self, n: int, seed: int = 7, step: int = S // 1000, clients: int = 1 << 30) -> list[str | None]:
        """n connections from random clients; asserts engine == model for each."""
        rng = random.Random(seed)
        picks = []
        t = self.now
        for _ in range(n):
            t += step
            caddr = f"100.{rng.randrange(64, 128)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            if clients < 1 << 30:
                caddr = f"100.64.{rng.randrange(clients) // 250}.{rng.randrange(clients) % 250 + 1}"
            vip = rng.choice(self.vips)
            got, want = self.connect(caddr, rng.randrange(1024, 65536), t, vip)
            assert got == want, (caddr, vip, got, want)
            picks.append(got)
        return picks


def real(i: int) -> str:
    return f"192.168.0.{i}"
