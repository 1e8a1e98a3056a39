"""Scheduler differences found reading Debian's linux-source-6.1 (6.1.192-3, the kernel
the lab boots) function by function against fastvs/sched (docs/fidelity.md lists every
function read). Each test names the kernel function and its file:line there.
"""

from __future__ import annotations

from fastvs.control.director import Director
from fastvs.control.rules import parse_rules

from packets import tcp

VIP = "10.10.0.1"
R1, R2 = "192.168.0.10", "192.168.0.11"
S = 10**9


def director(rules: str) -> Director:
    return Director(parse_rules(rules), seed=1)


def reals(d: Director) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["addr"]: r for r in d.engine.services()[0]["reals"]}


def picked(d: Director, cport: int, now: int) -> str:
    d.process_packets([tcp("100.64.0.1", cport, VIP, 80, "S")], [now])
    c = d.lookup("tcp", "100.64.0.1", cport, VIP, 80)
    assert c is not None
    return str(c["daddr"])


def test_lc_overhead_counts_active_connections_in_totalconns() -> None:
    """ip_vs_dest_conn_overhead (include/net/ip_vs.h:1746) is activeconns * 256 +
    totalconns in 6.1.192, and ip_vs_bind_dest (ip_vs_conn.c:635) counts every
    connection in totalconns: one active connection weighs 257 inactive ones. With R2
    (first in list order) holding 1 active connection and R1 256 inactive ones, lc
    (ip_vs_lc.c:45) takes R1 (256 < 257); * 256 + inactive would tie and take R2."""
    d = director(f"-A -t {VIP}:80 -s lc\n-a -t {VIP}:80 -r {R1}:80 -m\n-a -t {VIP}:80 -r {R2}:80 -m\n")
    r2 = reals(d)[R2]["index"]
    d.engine.edit_dest(r2, weight=0)
    now = 0
    for i in range(256):  # 256 connections to R1, each closed by a client FIN (TIME_WAIT)
        now += 1000
        assert picked(d, 1000 + i, now) == R1
        d.process_packets([tcp("100.64.0.1", 1000 + i, VIP, 80, "F")], [now])
    assert (reals(d)[R1]["activeconns"], reals(d)[R1]["inactconns"]) == (0, 256)
    d.engine.edit_dest(r2, weight=1)
    assert picked(d, 5000, now + 1000) == R2
    assert picked(d, 5001, now + 2000) == R1


def _lblc_flood(sched: str, n: int) -> tuple[Director, list[str]]:
    """A firewall-mark lblc/lblcr service over 10.20.0.0/16 and n SYNs to n
    destinations (one cache entry each)."""
    from fastvs.control.director import parse_marks

    rules = f"-A -f 1 -s {sched}\n-a -f 1 -r {R1}:80 -m\n-a -f 1 -r {R2}:80 -m\n"
    d = Director(parse_rules(rules), seed=1, marks=parse_marks("1 tcp 10.20.0.0/16 80\n"),
                 capacity=1 << 17)
    dsts = [f"10.20.{i >> 8}.{i & 255}" for i in range(n)]
    frames = [tcp("100.64.0.1", 1024 + (i % 60000), dst, 80, "S") for i, dst in enumerate(dsts)]
    d.process_packets(frames, [i * 1000 for i in range(n)])
    return d, dsts


def test_lblc_cache_stops_growing_at_max_size_and_a_half() -> None:
    """ip_vs_lblc_new (ip_vs_lblc.c:210 in 6.1.192): no new entry while tbl->entries
    >= max_size * 3 / 2 (24576); replacing an entry first decrements the counter
    (ip_vs_lblc.c:208), so a replacement is still cached at the bound."""
    from fastvs.sched import lblc

    d, dsts = _lblc_flood("lblc", 24576)
    before = lblc.cache_full()
    d.process_packets([tcp("100.64.0.2", 7000, "10.20.200.1", 80, "S")], [10**8])
    assert lblc.cache_full() == before + 1  # the 24577th destination is not cached
    # the cached server of dsts[0] quiesced: its entry is replaced, not refused
    first = d.lookup("tcp", "100.64.0.1", 1024, dsts[0], 80)["daddr"]  # type: ignore[index]
    d.engine.edit_dest(reals(d)[first]["index"], weight=0)
    d.process_packets([tcp("100.64.0.3", 7001, dsts[0], 80, "S")], [10**8 + 1])
    assert lblc.cache_full() == before + 1


def test_lblcr_cache_stops_growing_at_max_size_and_a_half() -> None:
    """ip_vs_lblcr_new (ip_vs_lblcr.c:368 in 6.1.192): no new entry while tbl->entries
    >= max_size * 3 / 2 (24576)."""
    from fastvs.sched import lblcr

    d, _ = _lblc_flood("lblcr", 24576)
    before = lblcr.cache_full()
    d.process_packets([tcp("100.64.0.2", 7000, "10.20.200.1", 80, "S")], [10**8])
    assert lblcr.cache_full() == before + 1


def test_mh_folds_a_real_servers_address_as_the_services_family() -> None:
    """ip_vs_mh_permutate (ip_vs_mh.c:143-147) hashes each real server's address with
    ip_vs_mh_hashkey(svc->af, ...): for an IPv6 (tunnel) real server of an IPv4
    service only its first 32 bits are folded. The lookup table, and so every pick,
    is the model's with the server standing as the IPv4 address of those bits. The
    connection lists its real server in the server's family (cp->daf,
    ip_vs_conn_seq_show in ip_vs_conn.c)."""
    import ipaddress

    from reference.sched_models import MH, RS

    r6 = "2001:db8:5::6"
    d = director(f"-A -t {VIP}:80 -s mh\n-a -t {VIP}:80 -r {R1}:80 -i\n"
                 f"-a -t {VIP}:80 -r [{r6}]:80 -i\n")
    as4 = str(ipaddress.IPv4Address(ipaddress.IPv6Address(r6).packed[:4]))
    model, lst = MH(), [RS(as4, 80, 1), RS(R1, 80, 1)]  # list order: reversed file
    model.changed(lst)
    got, want = [], []
    for i in range(64):
        client = f"100.64.{i}.{i + 1}"
        d.process_packets([tcp(client, 2000, VIP, 80, "S")], [i * 1000])
        c = d.lookup("tcp", client, 2000, VIP, 80)
        got.append(c["daddr"] if c else None)
        rs = model.pick(lst, caddr=client, cport=2000)
        want.append(r6 if rs is lst[0] else R1)
    assert got == want and len(set(got)) == 2
