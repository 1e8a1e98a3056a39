"""Tests for fastvs.control.listing: ipvsadm-shaped listings rebuilt from plain data and
compared, character for character, with what a real ipvsadm printed (tests/golden)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastvs.control.listing import (
    format_conns,
    format_largenum,
    format_list,
    format_persistent_conns,
    format_rate,
    format_stats,
    format_thresholds,
    format_timeout,
    to_json,
)

from conftest import GOLDEN

# every kernel listing in tests/golden: the five g* cases and the x* ones (CASES.md)
CASES = sorted(p.name[: -len(".kernel.ipvsadm.txt")] for p in GOLDEN.glob("*.kernel.ipvsadm.txt"))

ZERO_STATS = dict.fromkeys(
    ("conns", "inpkts", "outpkts", "inbytes", "outbytes", "cps", "inpps", "outpps",
     "inbps", "outbps"), 0)  # fmt: skip


# ---------------------------------------------------------------------------
# golden text -> plain data


def sections(case: str) -> dict[str, str]:
    """Split NAME.kernel.ipvsadm.txt at its '== ipvsadm ...' headers."""
    out: dict[str, str] = {}
    name = None
    for line in (GOLDEN / f"{case}.kernel.ipvsadm.txt").read_text().splitlines(keepends=True):
        if line.startswith("== "):
            name = line[3:].strip()
            out[name] = ""
        elif name is not None:
            out[name] += line
    return out


def split_addrport(text: str) -> tuple[str, int]:
    addr, _, port = text.rpartition(":")
    return addr.strip("[]"), int(port)


def unscale(text: str) -> int:
    """Undo print_largenum's K/M/G/T (the printed text comes out the same)."""
    mult = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    if text[-1] in mult:
        return int(text[:-1]) * mult[text[-1]]
    return int(text)


def parse_stats(text: str) -> tuple[int, list[dict[str, Any]]]:
    lines = text.splitlines()
    size = int(lines[0].rsplit("size=", 1)[1].rstrip(")"))
    services: list[dict[str, Any]] = []
    for line in lines[3:]:
        words = line.split()
        if words[0] == "->":
            addr, port = split_addrport(words[1])
            nums = [unscale(w) for w in words[2:]]
            services[-1]["reals"].append(
                {
                    "addr": addr,
                    "port": port,
                    "fwd": "masq",
                    "weight": 1,
                    "activeconns": 0,
                    "inactconns": 0,
                    "stats": {
                        **ZERO_STATS,
                        **dict(
                            zip(
                                ("conns", "inpkts", "outpkts", "inbytes", "outbytes"),
                                nums,
                                strict=True,
                            )
                        ),
                    },
                }
            )
        else:
            addr, port = split_addrport(words[1])
            nums = [unscale(w) for w in words[2:]]
            services.append(
                {
                    "proto": words[0].lower(),
                    "addr": addr,
                    "port": port,
                    "fwmark": 0,
                    "scheduler": "rr",
                    "persistent": None,
                    "netmask": None,
                    "stats": {
                        **ZERO_STATS,
                        **dict(
                            zip(
                                ("conns", "inpkts", "outpkts", "inbytes", "outbytes"),
                                nums,
                                strict=True,
                            )
                        ),
                    },
                    "reals": [],
                }
            )
    return size, services


def parse_conns(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines()[2:]:
        proto, expire, state, src, virt, dst = line.split()
        mm, ss = expire.split(":")
        caddr, cport = split_addrport(src)
        vaddr, vport = split_addrport(virt)
        daddr, dport = split_addrport(dst)
        rows.append(
            {
                "proto": proto,
                "expire": int(mm) * 60 + int(ss),
                "state": state,
                "caddr": caddr,
                "cport": cport,
                "vaddr": vaddr,
                "vport": vport,
                "daddr": daddr,
                "dport": dport,
            }
        )
    return rows


# ---------------------------------------------------------------------------
# golden comparisons


@pytest.mark.parametrize("case", CASES)
def test_stats_matches_golden(case: str) -> None:
    text = sections(case)["ipvsadm -L -n --stats"]
    size, services = parse_stats(text)
    got = format_stats(services, size=size)
    assert got.splitlines() == text.splitlines()
    assert got == text


@pytest.mark.parametrize("case", CASES)
def test_stats_sorts_kernel_order_like_ipvsadm(case: str) -> None:
    """The engine hands real servers in kernel list order (reverse of the file) and
    services in hash order; the listing must sort them as ipvsadm does."""
    text = sections(case)["ipvsadm -L -n --stats"]
    size, services = parse_stats(text)
    for svc in services:
        svc["reals"].reverse()
    services.reverse()
    assert format_stats(services, size=size) == text


@pytest.mark.parametrize("case", CASES)
def test_conns_match_golden(case: str) -> None:
    text = sections(case)["ipvsadm -L -n -c"]
    rows = parse_conns(text)
    assert rows, "golden -c section has rows"
    got = format_conns(rows)
    assert got.splitlines() == text.splitlines()
    assert got == text


@pytest.mark.parametrize("case", CASES)
def test_list_is_consistent_with_golden(case: str) -> None:
    """-L -n built from the golden -S (weights, schedulers) and -c (connection
    counts): one line per service and server, columns where printf puts them."""
    from fastvs.control.rules import parse_rules

    sec = sections(case)
    rules = parse_rules(sec["ipvsadm -S -n"])
    conns = parse_conns(sec["ipvsadm -L -n -c"])
    services = []
    for svc in rules.services:
        reals = []
        for rs in svc.reals:
            mine = [
                c
                for c in conns
                if (c["daddr"], c["dport"]) == rs.key
                and (c["vaddr"], c["vport"]) == (svc.addr, svc.port)
            ]
            active = sum(c["state"] in ("ESTABLISHED", "SYN_RECV", "SYN_SENT") for c in mine)
            reals.append(
                {
                    "addr": rs.addr,
                    "port": rs.port,
                    "fwd": rs.fwd,
                    "weight": rs.weight,
                    "activeconns": active,
                    "inactconns": len(mine) - active,
                    "stats": ZERO_STATS,
                }
            )
        services.append(
            {
                "proto": svc.proto,
                "addr": svc.addr,
                "port": svc.port,
                "fwmark": 0,
                "scheduler": svc.scheduler,
                "persistent": None,
                "netmask": None,
                "stats": ZERO_STATS,
                "reals": reals,
            }
        )
    lines = format_list(services).splitlines()
    assert lines[0] == "IP Virtual Server version 1.2.1 (size=4096)"
    body = [ln for ln in lines[3:]]
    save = sec["ipvsadm -S -n"].splitlines()
    assert len(body) == len(save)
    for got, saved in zip(body, save, strict=True):
        words = saved.split()
        if saved.startswith("-A"):
            proto = {"-t": "TCP", "-u": "UDP"}[words[1]]
            assert got == f"{proto}  {words[2]} {words[4]}"
        else:
            assert got.startswith(f"  -> {words[4]:<28} Masq    {int(words[7]):<6d} ")
            assert len(got) == 5 + 28 + 1 + 7 + 1 + 6 + 1 + 10 + 1 + 10


# ---------------------------------------------------------------------------
# layout details


def svc(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "proto": "tcp",
        "addr": "10.10.0.1",
        "port": 80,
        "fwmark": 0,
        "scheduler": "rr",
        "persistent": None,
        "netmask": None,
        "stats": ZERO_STATS,
        "reals": [],
    }
    base.update(kw)
    return base


def real(addr: str, port: int = 8080, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "addr": addr,
        "port": port,
        "fwd": "masq",
        "weight": 1,
        "activeconns": 0,
        "inactconns": 0,
        "stats": ZERO_STATS,
    }
    base.update(kw)
    return base


def test_list_layout_exact() -> None:
    text = format_list([svc(reals=[real("192.168.0.10", weight=2)])])
    assert text == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  10.10.0.1:80 rr\n"
        "  -> 192.168.0.10:8080            Masq    2      0          0         \n"
    )


def test_list_size_and_flags() -> None:
    text = format_list(
        [
            svc(
                proto="udp",
                port=53,
                scheduler="sh",
                persistent=360,
                netmask="255.255.255.0",
                ops=True,
                sched_flags=["sh-fallback", "sh-port"],
                reals=[
                    real(
                        "10.0.0.2", 53, fwd="route", weight=0, activeconns=3, inactconns=12345678901
                    )
                ],
            ),
        ],
        size=1048576,
    )
    lines = text.splitlines()
    assert lines[0] == "IP Virtual Server version 1.2.1 (size=1048576)"
    assert lines[3] == (
        "UDP  10.10.0.1:53 sh (sh-fallback,sh-port) persistent 360 mask 255.255.255.0 ops"
    )
    assert lines[4] == "  -> 10.0.0.2:53                  Route   0      3          12345678901"


def test_list_default_mask_not_printed_and_ipv6() -> None:
    text = format_list(
        [
            svc(
                addr="2001:db8::1",
                persistent=300,
                netmask="128",
                reals=[real("2001:db8::10", 80, fwd="tunnel")],
            ),
            svc(addr="2001:0db8:0000::2", persistent=300, netmask=64),
            svc(addr="10.0.0.1", persistent=300, netmask="255.255.255.255"),
        ]
    )
    lines = text.splitlines()[3:]
    assert lines == [
        "TCP  10.0.0.1:80 rr persistent 300",
        "TCP  [2001:db8::1]:80 rr persistent 300",
        "  -> [2001:db8::10]:80            Tunnel  1      0          0         ",
        "TCP  [2001:db8::2]:80 rr persistent 300 mask 64",
    ]


def test_list_fwmark_and_sctp_order() -> None:
    text = format_list(
        [
            svc(proto="fwmark", addr="", port=0, fwmark=7, scheduler="wlc"),
            svc(proto="fwmark", addr="::", port=0, fwmark=3, scheduler="wlc"),
            svc(proto="sctp", port=9),
            svc(proto="udp", port=9),
            svc(proto="tcp", port=9),
        ]
    )
    assert text.splitlines()[3:] == [
        "TCP  10.10.0.1:9 rr",
        "UDP  10.10.0.1:9 rr",
        "SCTP 10.10.0.1:9 rr",
        "FWM  3 IPv6 wlc",
        "FWM  7 wlc",
    ]


def test_nosort_keeps_input_order() -> None:
    services = [svc(port=90, reals=[real("10.0.0.9"), real("10.0.0.1")]), svc(port=80)]
    lines = format_list(services, sort=False).splitlines()[3:]
    assert [ln.split()[1] for ln in lines] == [
        "10.10.0.1:90",
        "10.0.0.9:8080",
        "10.0.0.1:8080",
        "10.10.0.1:80",
    ]


def test_sort_follows_libipvs_int_difference() -> None:
    """libipvs compares addresses by a C int difference: across 2**31 apart the order
    is not numeric (ipvsadm prints 192.168.x before 10.x in this arrangement)."""
    lines = format_list(
        [svc(reals=[real("192.168.0.1"), real("100.0.0.1"), real("10.0.0.1")])]
    ).splitlines()[4:]
    assert [ln.split()[1] for ln in lines] == [
        "192.168.0.1:8080",
        "10.0.0.1:8080",
        "100.0.0.1:8080",
    ]


def test_sort_by_port_within_address() -> None:
    lines = format_list([svc(reals=[real("10.0.0.1", 90), real("10.0.0.1", 81)])])
    assert [ln.split()[1] for ln in lines.splitlines()[4:]] == ["10.0.0.1:81", "10.0.0.1:90"]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "        0"),
        (99_999_999, " 99999999"),
        (100_000_000, "  100000K"),
        (999_999_999, "  999999K"),
        (1_000_000_000, "    1000M"),
        (99_999_999_999, "   99999M"),
        (100_000_000_000, "     100G"),
        (100_000_000_000_000, "     100T"),
        (-5, "        0"),
    ],
)
def test_largenum_scaling(n: int, text: str) -> None:
    assert format_largenum(n) == text


def test_largenum_exact() -> None:
    assert format_largenum(12, exact=True) == "       12"
    assert format_largenum(123456789012, exact=True) == " 123456789012"


def test_stats_scaled_columns() -> None:
    stats = {**ZERO_STATS, "conns": 5, "inpkts": 150_000_000, "inbytes": 12_345_678_901_234}
    text = format_stats([svc(stats=stats, reals=[real("10.0.0.1", stats=stats)])])
    lines = text.splitlines()
    assert lines[1] == (
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
    )
    assert lines[2] == "  -> RemoteAddress:Port"
    # "%-33s" then five print_largenum columns ("%9llu" or "%8lluK"...)
    cols = "        5  150000K        0   12345G        0"
    assert lines[3] == "TCP  10.10.0.1:80".ljust(33) + cols
    assert lines[4] == "  -> " + "10.0.0.1:8080".ljust(28) + cols
    exact = format_stats([svc(stats=stats)], exact=True).splitlines()[3]
    assert exact.endswith("        5 150000000        0 12345678901234        0")


def test_rate_layout() -> None:
    stats = {
        **ZERO_STATS,
        "cps": 3,
        "inpps": 123_456_789,
        "outpps": 4,
        "inbps": 500_000_000,
        "outbps": 7,
    }
    lines = format_rate([svc(stats=stats, reals=[real("10.0.0.1", stats=stats)])]).splitlines()
    assert lines[1] == (
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
    )
    assert lines[3] == (
        "TCP  10.10.0.1:80                        3  123456K        4  500000K        7"
    )
    # a real server's first three rates are printed "%8llu", never scaled
    assert lines[4] == (
        "  -> " + "10.0.0.1:8080".ljust(28) + "        3 123456789        4  500000K        7"
    )


def test_thresholds_and_persistent_conn_layout() -> None:
    s = svc(
        reals=[
            real(
                "10.0.0.1",
                u_threshold=100,
                l_threshold=50,
                persistconns=4,
                activeconns=2,
                inactconns=1,
                weight=3,
            )
        ]
    )
    t = format_thresholds([s]).splitlines()
    assert t[1] == ("Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ")
    assert t[3] == "TCP  10.10.0.1:80"
    assert t[4] == "  -> 10.0.0.1:8080                100        50         2          1         "
    p = format_persistent_conns([s]).splitlines()
    assert p[1] == ("Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ")
    assert p[4] == "  -> 10.0.0.1:8080                3         4           2          1         "


def test_conns_layout_and_expire() -> None:
    text = format_conns(
        [
            {
                "proto": "tcp",
                "expire": 899.9,
                "state": "ESTABLISHED",
                "caddr": "100.64.0.1",
                "cport": 40000,
                "vaddr": "10.10.0.1",
                "vport": 80,
                "daddr": "192.168.0.10",
                "dport": 8080,
            },
            {
                "proto": 17,
                "expire": 6000,
                "state": "UDP",
                "caddr": "2001:db8::5",
                "cport": 53,
                "vaddr": "2001:db8::1",
                "vport": 53,
                "daddr": "2001:db8::10",
                "dport": 5353,
            },
            {
                "proto": "TCP",
                "expire": -1,
                "state": "CLOSE",
                "caddr": "1.2.3.4",
                "cport": 1,
                "vaddr": "5.6.7.8",
                "vport": 2,
                "daddr": "9.9.9.9",
                "dport": 3,
            },
        ]
    )
    assert text.splitlines() == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
        "TCP 14:59  ESTABLISHED 100.64.0.1:40000   10.10.0.1:80       192.168.0.10:8080",
        "UDP 100:00 UDP         [2001:db8::5]:53   [2001:db8::1]:53   [2001:db8::10]:5353",
        "TCP 00:00  CLOSE       1.2.3.4:1          5.6.7.8:2          9.9.9.9:3",
    ]


def test_conns_empty() -> None:
    assert format_conns([]) == (
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
    )


def test_timeout_line() -> None:
    assert format_timeout(900, 120, 300) == "Timeout (tcp tcpfin udp): 900 120 300\n"


def test_missing_stats_count_as_zero() -> None:
    s = svc()
    del s["stats"]
    assert format_stats([s]).splitlines()[3].split()[2:] == ["0"] * 5


# ---------------------------------------------------------------------------
# JSON


def test_to_json_is_stable_and_jsonable() -> None:
    services = [
        svc(port=90, reals=[real("10.0.0.9"), real("10.0.0.1")]),
        svc(proto="fwmark", addr="", port=0, fwmark=5),
    ]
    conns = [
        {
            "proto": "TCP",
            "expire": 12.7,
            "state": "ESTABLISHED",
            "caddr": "1.1.1.1",
            "cport": 1,
            "vaddr": "10.10.0.1",
            "vport": 90,
            "daddr": "10.0.0.1",
            "dport": 8080,
        }
    ]
    drops = {"ttl": 2, "bad_csum": 3}
    a = to_json(services, conns, drops)
    b = to_json(list(reversed(services)), conns, dict(reversed(list(drops.items()))))
    assert json.dumps(a, sort_keys=False) == json.dumps(b, sort_keys=False)
    assert a["version"] == 1
    assert [s["port"] for s in a["services"]] == [90, 0]
    assert a["services"][1]["proto"] == "fwmark"
    assert [r["addr"] for r in a["services"][0]["reals"]] == ["10.0.0.1", "10.0.0.9"]
    assert a["connections"][0]["expire"] == 12
    assert list(a["drops"]) == ["bad_csum", "ttl"]
    assert a["drops_total"] == 5
    assert set(a["services"][0]["stats"]) == set(ZERO_STATS)
    json.loads(json.dumps(a))


def test_to_json_defaults() -> None:
    out = to_json([])
    assert out == {"version": 1, "services": [], "connections": [], "drops": {}, "drops_total": 0}
