"""Text listings shaped exactly like ipvsadm's (``-L -n``, ``--stats``, ``--rate``,
``--thresholds``, ``-c``, ``--timeout``), and a stable JSON form, built from plain data.

The inputs are dicts and lists (shapes below), never engine objects, so this module
has no compiled dependency. Column formats are ipvsadm 1.31's printf formats
(``print_title``, ``print_service_entry``, ``print_largenum``, ``print_conn``), and
services and real servers are sorted the way libipvs sorts them, unless
``sort=False`` (``--nosort``). Every line ends with ``\\n``; like ipvsadm, the plain
listing keeps the trailing blanks of its last ``%-10u`` column.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from fastvs.control.rules import (
    _ntop,
    cmp_dests,
    cmp_services,
    glibc_msort,
    service_sort_key,
)

__all__ = [
    "ConnEntry",
    "RealServerEntry",
    "ServiceEntry",
    "Stats",
    "format_conns",
    "format_largenum",
    "format_list",
    "format_persistent_conns",
    "format_rate",
    "format_stats",
    "format_thresholds",
    "format_timeout",
    "to_json",
]

IPVS_VERSION = "1.2.1"  # what IP_VS_VERSION_CODE 0x010201 prints

STATS_KEYS = (
    "conns",
    "inpkts",
    "outpkts",
    "inbytes",
    "outbytes",
    "cps",
    "inpps",
    "outpps",
    "inbps",
    "outbps",
)
_FWD_NAME = {"masq": "Masq", "route": "Route", "tunnel": "Tunnel", "local": "Local"}
_PROTO_NAME = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
_CONN_PROTO = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6", 0: "IP"}


# ---------------------------------------------------------------------------
# Input shapes


class Stats(TypedDict):
    """Counters of a service or real server (ip_vs_stats64): totals and rates.
    ``cps``... ``outbps`` are the estimator's per-second rates."""

    conns: int
    inpkts: int
    outpkts: int
    inbytes: int
    outbytes: int
    cps: int
    inpps: int
    outpps: int
    inbps: int
    outbps: int


class _RealServerOptional(TypedDict, total=False):
    u_threshold: int  # -x, for format_thresholds (0 if absent)
    l_threshold: int  # -y
    persistconns: int  # for format_persistent_conns (0 if absent)


class RealServerEntry(_RealServerOptional):
    """One real server: ``fwd`` is ``"masq"``, ``"route"``, ``"tunnel"`` or ``"local"``;
    ``addr`` a numeric IPv4/IPv6 address (no brackets)."""

    addr: str
    port: int
    fwd: str
    weight: int
    activeconns: int
    inactconns: int
    stats: Stats


class _ServiceOptional(TypedDict, total=False):
    ops: bool  # -o one-packet scheduling
    sched_flags: list[str]  # -b names, printed "(sh-port)" after the scheduler
    family: int  # 4 or 6; for fwmark services (default: from addr)


class ServiceEntry(_ServiceOptional):
    """One virtual service: ``proto`` is ``"tcp"``, ``"udp"``, ``"sctp"`` or
    ``"fwmark"`` (then ``fwmark`` > 0, ``addr`` may be ``""``, ``"0.0.0.0"`` or ``"::"``);
    ``persistent`` the timeout or None; ``netmask`` a dotted IPv4 mask or an IPv6
    prefix length (string or int) or None; ``reals`` in any order (they are sorted)."""

    proto: str
    addr: str
    port: int
    fwmark: int
    scheduler: str
    persistent: int | None
    netmask: str | None
    stats: Stats
    reals: list[RealServerEntry]


class ConnEntry(TypedDict):
    """One connection (a row of /proc/net/ip_vs_conn): ``proto`` "TCP"/"UDP"/"SCTP"
    (or a protocol number), client ``caddr:cport``, virtual ``vaddr:vport``,
    destination ``daddr:dport``, ``state`` name ("ESTABLISHED", "TIME_WAIT", "UDP" ...)
    and ``expire``, the seconds left before it expires."""

    proto: str
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    state: str
    expire: float


# ---------------------------------------------------------------------------
# Pieces


def format_largenum(n: int, exact: bool = False) -> str:
    """ipvsadm's print_largenum: 9 columns, scaled K/M/G/T from 100 million on
    (``--exact`` widens instead of scaling)."""
    i = max(0, int(n))
    if exact:
        text = str(i)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    if i < 100_000_000:
        return f"{i:9d}"
    if i < 1_000_000_000:
        return f"{i // 1000:8d}K"
    if i < 100_000_000_000:
        return f"{i // 1_000_000:8d}M"
    if i < 100_000_000_000_000:
        return f"{i // 1_000_000_000:8d}G"
    return f"{i // 1_000_000_000_000:8d}T"


def _canon(addr: str) -> str:
    """Numeric address text as inet_ntop would print it; anything unparsable as is."""
    try:
        return _ntop(ipaddress.ip_address(addr))
    except ValueError:
        return addr


def _is_v6(addr: str) -> bool:
    return ":" in addr


def _addrport(addr: str, port: int) -> str:
    a = _canon(addr)
    return f"[{a}]:{int(port)}" if _is_v6(a) else f"{a}:{int(port)}"


def _stat(entry: Mapping[str, Any], key: str) -> int:
    stats = entry.get("stats") or {}
    return int(stats.get(key, 0) or 0)


def _proto(entry: Mapping[str, Any]) -> str:
    """The service protocol as "tcp", "udp", "sctp" or "fwmark" (numbers accepted)."""
    p = entry.get("proto", "tcp")
    if isinstance(p, str):
        return p.lower()
    return {6: "tcp", 17: "udp", 132: "sctp"}.get(int(p), str(p))


def _svc_family(svc: Mapping[str, Any]) -> int:
    fam = svc.get("family")
    if fam in (4, 6):
        return int(fam)
    return 6 if _is_v6(str(svc.get("addr") or "")) else 4


def _svc_name(svc: Mapping[str, Any]) -> str:
    """svc_name of print_service_entry in listing (not rule) format."""
    fwmark = int(svc.get("fwmark") or 0)
    proto = _proto(svc)
    if proto == "fwmark" or fwmark:
        return f"FWM  {fwmark}" + (" IPv6" if _svc_family(svc) == 6 else "")
    name = f"{_PROTO_NAME.get(proto, '?'):<4} {_addrport(svc['addr'], svc['port'])}"
    if _svc_family(svc) != 6:
        name = name[:33]
    return name


def _dest_name(rs: Mapping[str, Any]) -> str:
    name = _addrport(rs["addr"], rs["port"])
    return name if _is_v6(_canon(rs["addr"])) else name[:28]


def _sorted_services(services: Iterable[Mapping[str, Any]], sort: bool) -> list[Mapping[str, Any]]:
    svcs = list(services)
    if not sort:
        return svcs
    keyed = []
    for s in svcs:
        proto = _proto(s)
        fwmark = int(s.get("fwmark") or 0)
        addr = (
            "::" if proto == "fwmark" and _svc_family(s) == 6 else _canon(str(s.get("addr") or ""))
        )
        if proto == "fwmark" or fwmark or proto not in _PROTO_NAME:
            key = service_sort_key("fwmark", addr or "0.0.0.0", 0, fwmark)
        else:
            key = service_sort_key(proto, addr, int(s.get("port") or 0), 0)
        keyed.append((key, s))
    return [s for _k, s in glibc_msort(keyed, lambda a, b: cmp_services(a[0], b[0]))]


def _sorted_reals(svc: Mapping[str, Any], sort: bool) -> list[Mapping[str, Any]]:
    reals = list(svc.get("reals") or [])
    if not sort:
        return reals
    keyed = [((_canon(r["addr"]), int(r["port"])), r) for r in reals]
    return [r for _k, r in glibc_msort(keyed, lambda a, b: cmp_dests(a[0], b[0]))]


def _header(size: int) -> str:
    return f"IP Virtual Server version {IPVS_VERSION} (size={int(size)})\n"


def _title(cols: Sequence[str], fmt: str) -> str:
    return (
        f"{'Prot LocalAddress:Port':<33}"
        + "".join(fmt.format(c) for c in cols)
        + "\n  -> RemoteAddress:Port\n"
    )


def _sched_flags_text(svc: Mapping[str, Any]) -> str:
    flags = svc.get("sched_flags") or []
    return ",".join(flags)


# ---------------------------------------------------------------------------
# Listings


def format_list(
    services: Iterable[ServiceEntry | Mapping[str, Any]], size: int = 4096, *, sort: bool = True
) -> str:
    """``ipvsadm -L -n``."""
    out = [
        _header(size),
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
    ]
    for svc in _sorted_services(services, sort):
        line = f"{_svc_name(svc)} {svc.get('scheduler', '')}"
        flags = _sched_flags_text(svc)
        if flags:
            line += f" ({flags})"
        pers = svc.get("persistent")
        if pers is not None:
            line += f" persistent {int(pers)}"
            mask = svc.get("netmask")
            if mask is not None:
                if _svc_family(svc) == 6:
                    if int(mask) != 128:
                        line += f" mask {int(mask)}"
                elif str(mask) != "255.255.255.255":
                    line += f" mask {mask}"
        if svc.get("ops"):
            line += " ops"
        out.append(line + "\n")
        for rs in _sorted_reals(svc, sort):
            fwd = _FWD_NAME.get(str(rs.get("fwd", "")).lower(), str(rs.get("fwd", "")))
            out.append(
                f"  -> {_dest_name(rs):<28} {fwd:<7} {int(rs.get('weight', 0)):<6d} "
                f"{int(rs.get('activeconns', 0)):<10d} "
                f"{int(rs.get('inactconns', 0)):<10d}\n"
            )
    return "".join(out)


def _format_counters(
    services: Iterable[Mapping[str, Any]],
    size: int,
    sort: bool,
    exact: bool,
    cols: Sequence[str],
    keys: Sequence[str],
    rate: bool,
) -> str:
    out = [_header(size), _title(cols, " {:>8}")]
    for svc in _sorted_services(services, sort):
        out.append(
            f"{_svc_name(svc):<33}"
            + "".join(format_largenum(_stat(svc, k), exact) for k in keys)
            + "\n"
        )
        for rs in _sorted_reals(svc, sort):
            line = f"  -> {_dest_name(rs):<28}"
            if rate:  # ipvsadm prints the first three rates of a server unscaled
                line += "".join(f" {_stat(rs, k):8d}" for k in keys[:3])
                line += "".join(format_largenum(_stat(rs, k), exact) for k in keys[3:])
            else:
                line += "".join(format_largenum(_stat(rs, k), exact) for k in keys)
            out.append(line + "\n")
    return "".join(out)


def format_stats(
    services: Iterable[ServiceEntry | Mapping[str, Any]],
    size: int = 4096,
    *,
    sort: bool = True,
    exact: bool = False,
) -> str:
    """``ipvsadm -L -n --stats`` (``exact=True``: ``--exact``)."""
    return _format_counters(
        services,
        size,
        sort,
        exact,
        ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"),
        STATS_KEYS[:5],
        rate=False,
    )


def format_rate(
    services: Iterable[ServiceEntry | Mapping[str, Any]],
    size: int = 4096,
    *,
    sort: bool = True,
    exact: bool = False,
) -> str:
    """``ipvsadm -L -n --rate``."""
    return _format_counters(
        services,
        size,
        sort,
        exact,
        ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"),
        STATS_KEYS[5:],
        rate=True,
    )


def _counter_table(
    services: Iterable[ServiceEntry | Mapping[str, Any]], size: int, sort: bool,
    columns: Sequence[tuple[str, str, int]],
) -> str:
    """A per-real-server table of integer columns ``(title, key, width)`` after the
    service line, as ipvsadm's --thresholds and --persistent-conn views print."""
    titles = " ".join(f"{title:<{width}}" for title, _, width in columns)
    out = [_header(size), f"{'Prot LocalAddress:Port':<33} {titles}\n  -> RemoteAddress:Port\n"]
    for svc in _sorted_services(services, sort):
        out.append(f"{_svc_name(svc)}\n")
        for rs in _sorted_reals(svc, sort):
            cells = " ".join(f"{int(rs.get(key, 0)):<{width}d}" for _, key, width in columns)
            out.append(f"  -> {_dest_name(rs):<28} {cells}\n")
    return "".join(out)


def format_thresholds(
    services: Iterable[ServiceEntry | Mapping[str, Any]], size: int = 4096, *, sort: bool = True
) -> str:
    """``ipvsadm -L -n --thresholds``."""
    return _counter_table(services, size, sort, (
        ("Uthreshold", "u_threshold", 10), ("Lthreshold", "l_threshold", 10),
        ("ActiveConn", "activeconns", 10), ("InActConn", "inactconns", 10)))


def format_persistent_conns(
    services: Iterable[ServiceEntry | Mapping[str, Any]], size: int = 4096, *, sort: bool = True
) -> str:
    """``ipvsadm -L -n --persistent-conn``."""
    return _counter_table(services, size, sort, (
        ("Weight", "weight", 9), ("PersistConn", "persistconns", 11),
        ("ActiveConn", "activeconns", 10), ("InActConn", "inactconns", 10)))


def _expire_text(seconds: float) -> str:
    s = max(0, math.floor(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def _conn_proto(p: Any) -> str:
    if isinstance(p, str):
        return p.upper()
    return _CONN_PROTO.get(int(p), f"IP_{int(p)}")


def format_conns(conns: Iterable[ConnEntry | Mapping[str, Any]]) -> str:
    """``ipvsadm -L -n -c``: rows in the order given (ipvsadm prints the kernel's
    hash-table order). ``expire`` is floored to whole seconds and shown as mm:ss."""
    out = [
        "IPVS connection entries\n",
        f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination\n",
    ]
    for c in conns:
        out.append(
            f"{_conn_proto(c['proto']):<3} {_expire_text(c['expire']):<6} "
            f"{c['state']:<11} {_addrport(c['caddr'], c['cport']):<18} "
            f"{_addrport(c['vaddr'], c['vport']):<18} {_addrport(c['daddr'], c['dport'])}\n"
        )
    return "".join(out)


def format_timeout(tcp: int, tcpfin: int, udp: int) -> str:
    """``ipvsadm -L --timeout``."""
    return f"Timeout (tcp tcpfin udp): {int(tcp)} {int(tcpfin)} {int(udp)}\n"


# ---------------------------------------------------------------------------
# JSON


def _json_stats(entry: Mapping[str, Any]) -> dict[str, int]:
    return {k: _stat(entry, k) for k in STATS_KEYS}


def to_json(
    services: Iterable[ServiceEntry | Mapping[str, Any]],
    conns: Iterable[ConnEntry | Mapping[str, Any]] = (),
    drops: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A JSON-able dict of the same data, stable across runs: services and real servers
    in listing order, connections in the order given, drops sorted by reason.

    ``{"version": 1, "services": [...], "connections": [...], "drops": {...},
    "drops_total": N}``; every number is an int, addresses are canonical text.
    """
    svcs_out: list[dict[str, Any]] = []
    for svc in _sorted_services(services, True):
        proto = _proto(svc)
        is_fwm = proto == "fwmark" or bool(svc.get("fwmark"))
        pers = svc.get("persistent")
        mask = svc.get("netmask")
        svcs_out.append(
            {
                "proto": "fwmark" if is_fwm else _PROTO_NAME.get(proto, str(proto)).lower(),
                "addr": "" if is_fwm else _canon(str(svc.get("addr", ""))),
                "port": 0 if is_fwm else int(svc.get("port") or 0),
                "fwmark": int(svc.get("fwmark") or 0),
                "family": _svc_family(svc),
                "scheduler": str(svc.get("scheduler", "")),
                "persistent": None if pers is None else int(pers),
                "netmask": None if mask is None else str(mask),
                "ops": bool(svc.get("ops", False)),
                "sched_flags": list(svc.get("sched_flags") or []),
                "stats": _json_stats(svc),
                "reals": [
                    {
                        "addr": _canon(str(rs["addr"])),
                        "port": int(rs["port"]),
                        "fwd": str(rs.get("fwd", "")).lower(),
                        "weight": int(rs.get("weight", 0)),
                        "activeconns": int(rs.get("activeconns", 0)),
                        "inactconns": int(rs.get("inactconns", 0)),
                        "stats": _json_stats(rs),
                    }
                    for rs in _sorted_reals(svc, True)
                ],
            }
        )
    conns_out = [
        {
            "proto": _conn_proto(c["proto"]),
            "caddr": _canon(str(c["caddr"])),
            "cport": int(c["cport"]),
            "vaddr": _canon(str(c["vaddr"])),
            "vport": int(c["vport"]),
            "daddr": _canon(str(c["daddr"])),
            "dport": int(c["dport"]),
            "state": str(c["state"]),
            "expire": max(0, math.floor(c["expire"])),
        }
        for c in conns
    ]
    drops_out = {str(k): int(v) for k, v in sorted((drops or {}).items())}
    return {
        "version": 1,
        "services": svcs_out,
        "connections": conns_out,
        "drops": drops_out,
        "drops_total": sum(drops_out.values()),
    }
