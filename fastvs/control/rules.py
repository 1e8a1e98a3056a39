"""Rules: the ``ipvsadm -S -n`` / ``ipvsadm -R`` format, read and written, and a Python
API that builds the same configuration (the ipvsadm.c + ip_vs_ctl.c checks, no kernel).

Reading follows ``ipvsadm -R``: one ipvsadm command per line (``-A``, ``-E``, ``-D``,
``-a``, ``-e``, ``-d``, ``-C``, ``--set``), ``#`` comments and blank lines ignored, an
optional leading ``ipvsadm`` word ignored so that pasted commands work.

Real-server order decides scheduling. The kernel links each new real server at the
*head* of its service's list (``list_add_rcu`` in ``__ip_vs_update_dest``), so a rules
file read as ``ipvsadm -R`` does gives, per service, the reverse of the order of the
``-a`` lines; an ``-e`` edit keeps the position. ``order="kernel"`` (the default) builds
that list, ``order="file"`` the file order. Either way each service also records the
order in which its real servers were added (:attr:`VirtualService.add_order`) and
:meth:`VirtualService.replay` yields the list after each add, so that an engine can
rebuild scheduler state (wrr recomputes after every add) exactly as the kernel did;
:attr:`Rules.events` is the complete command history in file order.

Writing (:func:`format_rules`) prints what ``ipvsadm -S -n`` prints: services sorted
and real servers sorted by address the way libipvs' comparators sort them.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from fastvs.datapath._engine import PROTO_NUMBERS
from fastvs.errors import RulesError
from fastvs.sched import NAMES

__all__ = [
    "KEEP",
    "KNOWN_SCHEDULERS",
    "Event",
    "RealServer",
    "Rules",
    "Timeouts",
    "VirtualService",
    "format_rules",
    "load_rules",
    "parse_rules",
]

# ---------------------------------------------------------------------------
# Constants (ipvsadm.c / ip_vs.h)

KNOWN_SCHEDULERS = NAMES  # the scheduler registry's list (fastvs/sched/__init__.py)
DEFAULT_SCHEDULER = "wlc"  # ipvsadm DEF_SCHED
DEFAULT_PERSISTENT_TIMEOUT = 300  # IPVS_SVC_PERSISTENT_TIMEOUT, for a bare -p
MAX_TIMEOUT = 86400 * 31  # ipvsadm MAX_TIMEOUT (31 days)
MAX_WEIGHT = 65535  # ipvsadm: string_to_number(optarg, 0, 65535)
INT_MAX = 2**31 - 1  # thresholds: string_to_number(optarg, 0, INT_MAX)
UINT_MAX = 2**32 - 1  # fwmark upper bound
DEFAULT_TIMEOUTS = (900, 120, 300)  # kernel defaults for tcp, tcpfin, udp

# IP_VS_SVC_F_* service flags
SVC_F_PERSISTENT = 0x0001
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020

# -b sched-flags names -> (bit, scheduler they belong to or None for any)
_SCHED_FLAGS: dict[str, tuple[int, str | None]] = {
    "flag-1": (SVC_F_SCHED1, None),
    "flag-2": (SVC_F_SCHED2, None),
    "flag-3": (SVC_F_SCHED3, None),
    "sh-fallback": (SVC_F_SCHED1, "sh"),
    "sh-port": (SVC_F_SCHED2, "sh"),
    "mh-fallback": (SVC_F_SCHED1, "mh"),
    "mh-port": (SVC_F_SCHED2, "mh"),
}

# the protocols the engine registered (fastvs/datapath/_proto.pxd), with their numbers
PROTOS = (*PROTO_NUMBERS, "fwmark")
_PROTO_NUM = {**PROTO_NUMBERS, "fwmark": 0}
_PROTO_OPT = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
FWDS = ("masq", "route", "tunnel")
_FWD_OPT = {"masq": "-m", "route": "-g", "tunnel": "-i"}

Proto = Literal["tcp", "udp", "sctp", "fwmark"]
Fwd = Literal["masq", "route", "tunnel"]
Order = Literal["kernel", "file"]
ServiceKey = tuple[str, int, str, int]  # (proto, family, addr or "", port or fwmark)
ServerKey = tuple[str, int]  # (addr, port)


class _Keep(enum.Enum):
    KEEP = 0


#: Sentinel for the ``edit_*`` API: leave this setting as it is.
KEEP = _Keep.KEEP


# ---------------------------------------------------------------------------
# Data


@dataclass
class RealServer:
    """One real server (destination) of a virtual service.

    ``fwd`` is ``"masq"`` (-m, NAT), ``"route"`` (-g, direct routing) or ``"tunnel"``
    (-i, IPIP). The dataclass and :meth:`Rules.add_server` default to ``"masq"`` (fastvs
    is a NAT director); a rules-file ``-a`` line without -m/-g/-i gets ``"route"``, as
    ipvsadm gives it. ``u_threshold``/``l_threshold`` are -x/-y, 0 meaning no limit.
    """

    addr: str
    port: int
    weight: int = 1
    fwd: str = "masq"
    u_threshold: int = 0
    l_threshold: int = 0

    @property
    def family(self) -> int:
        return 6 if ":" in self.addr else 4

    @property
    def key(self) -> ServerKey:
        return (self.addr, self.port)

    def addrport(self) -> str:
        """``addr:port`` as ipvsadm prints it numerically (``[v6]:port``)."""
        return _addrport(self.addr, self.port)


@dataclass
class VirtualService:
    """A virtual service: ``proto`` is ``"tcp"``, ``"udp"``, ``"sctp"`` or ``"fwmark"``.

    For fwmark services ``fwmark`` is the mark, ``port`` is 0 and ``addr`` is
    ``"0.0.0.0"`` (or ``"::"`` for ``-f N -6``) so that :attr:`family` still tells the
    address family of the real servers.

    ``persistent`` is the -p timeout in seconds or ``None``; ``netmask`` the -M value
    (dotted IPv4 mask, or an IPv6 prefix length as a string) or ``None`` for the default
    (255.255.255.255 / 128). ``ops`` is -o (one-packet scheduling), ``sched_flags`` the -b
    names (``"sh-port"``, ``"mh-fallback"``, ``"flag-1"`` ...).

    ``reals`` is the real-server list in the order the engine must use: the kernel's
    (newest first) when read with ``order="kernel"``, the file's with ``order="file"``.
    ``add_order`` holds indices into ``reals`` in the order the servers were added
    (file order; an edit keeps its place, a deleted server drops out). So, for lines
    ``-a .. r1``, ``-a .. r2``, ``-a .. r3``: kernel order gives ``reals == [r3, r2, r1]``
    and ``add_order == [2, 1, 0]``; file order gives ``[r1, r2, r3]`` and ``[0, 1, 2]``.
    To rebuild scheduler state as the kernel did, create the service, then add
    ``reals[i] for i in add_order`` one by one (see :meth:`replay`).
    """

    proto: str
    addr: str
    port: int
    fwmark: int = 0
    scheduler: str = DEFAULT_SCHEDULER
    persistent: int | None = None
    netmask: str | None = None
    ops: bool = False
    sched_flags: tuple[str, ...] = ()
    reals: list[RealServer] = field(default_factory=list)
    add_order: list[int] = field(default_factory=list)
    link_at_head: bool = True
    line: int | None = field(default=None, compare=False)

    @property
    def family(self) -> int:
        return 6 if ":" in self.addr else 4

    @property
    def key(self) -> ServiceKey:
        if self.proto == "fwmark":
            return ("fwmark", self.family, "", self.fwmark)
        return (self.proto, self.family, self.addr, self.port)

    @property
    def flags(self) -> int:
        """The kernel's IP_VS_SVC_F_* bits (persistent, one-packet, scheduler flags)."""
        bits = SVC_F_PERSISTENT if self.persistent is not None else 0
        if self.ops:
            bits |= SVC_F_ONEPACKET
        for name in self.sched_flags:
            bits |= _SCHED_FLAGS[name][0]
        return bits

    @property
    def netmask_value(self) -> int:
        """-M as the kernel holds it: a host-order IPv4 mask, or an IPv6 prefix length."""
        if self.family == 6:
            return int(self.netmask) if self.netmask is not None else 128
        mask = self.netmask if self.netmask is not None else "255.255.255.255"
        return int(ipaddress.IPv4Address(mask))

    def spec(self) -> str:
        """The service as ipvsadm -S -n names it: ``-t 10.0.0.1:80``, ``-f 5 -6``."""
        if self.proto == "fwmark":
            return f"-f {self.fwmark}" + (" -6" if self.family == 6 else "")
        return f"{_PROTO_OPT[self.proto]} {_addrport(self.addr, self.port)}"

    def kernel_list(self) -> list[RealServer]:
        """Real servers in the kernel's list order (each add linked at the head)."""
        return [self.reals[i] for i in reversed(self.add_order)]

    def file_list(self) -> list[RealServer]:
        """Real servers in the order they were added (file order)."""
        return [self.reals[i] for i in self.add_order]

    def replay(self) -> Iterator[tuple[RealServer, list[RealServer]]]:
        """Yield ``(server_added, list_after_the_add)`` for each add, in file order.

        The lists are built the way this service's order builds them (at the head for
        ``order="kernel"``, at the tail for ``order="file"``); the last one equals
        :attr:`reals`. Edits and deletions in between are in :attr:`Rules.events`.
        """
        cur: list[RealServer] = []
        for i in self.add_order:
            rs = self.reals[i]
            cur = [rs, *cur] if self.link_at_head else [*cur, rs]
            yield rs, list(cur)

    def find_server(self, addr: str, port: int) -> RealServer | None:
        for rs in self.reals:
            if rs.addr == addr and rs.port == port:
                return rs
        return None


@dataclass
class Timeouts:
    """``--set tcp tcpfin udp`` in seconds; 0 leaves the value unchanged (as ipvsadm)."""

    tcp: int = 0
    tcpfin: int = 0
    udp: int = 0

    def effective(self, defaults: tuple[int, int, int] = DEFAULT_TIMEOUTS) -> Timeouts:
        """The values in force: each 0 replaced by the kernel default (900 120 300)."""
        return Timeouts(
            self.tcp or defaults[0], self.tcpfin or defaults[1], self.udp or defaults[2]
        )

    def is_set(self) -> bool:
        return bool(self.tcp or self.tcpfin or self.udp)


@dataclass(frozen=True)
class Event:
    """One applied command, in file (or call) order.

    ``op`` is one of ``add_service``, ``edit_service``, ``delete_service``,
    ``add_server``, ``edit_server``, ``delete_server``, ``clear``, ``set_timeouts``.
    ``service`` is the service key (``VirtualService.key``), ``server`` the real
    server's ``(addr, port)``; ``line`` the rules-file line or ``None`` for API calls.
    """

    op: str
    service: ServiceKey | None = None
    server: ServerKey | None = None
    line: int | None = None
    #: the settings the command gave, frozen at that moment (so that an engine can
    #: apply the commands one by one, as ``ipvsadm -R`` does): the real server for
    #: ``add_server``/``edit_server``, the service (without real servers) for
    #: ``add_service``/``edit_service``
    real: RealServer | None = field(default=None, compare=False)
    settings: VirtualService | None = field(default=None, compare=False)


# ---------------------------------------------------------------------------
# Small parsers shared by the file reader and the API


class _Where:
    """Where an error points: a source name and a line, both optional."""

    __slots__ = ("source", "line")

    def __init__(self, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line

    def error(self, message: str) -> RulesError:
        return RulesError(message, source=self.source, line=self.line)


_NOWHERE = _Where()
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")


def _to_int(text: str | int, lo: int, hi: int, what: str, where: _Where) -> int:
    """ipvsadm's string_to_number: a whole decimal integer within [lo, hi]."""
    if isinstance(text, bool):
        raise where.error(f"bad {what} {text!r} (an integer {lo}..{hi})")
    if isinstance(text, int):
        value = text
    elif isinstance(text, str) and _INT_RE.match(text.strip()):
        value = int(text.strip())
    else:
        raise where.error(f"bad {what} {text!r} (an integer {lo}..{hi})")
    if not lo <= value <= hi:
        raise where.error(f"{what} {value} out of range {lo}..{hi}")
    return value


def _parse_ip(text: str, what: str, where: _Where) -> tuple[str, int]:
    """A numeric IPv4 or IPv6 address -> (canonical text, family). No host names."""
    if "%" in text or "/" in text or not text:
        raise where.error(f"bad {what} {text!r} (an IPv4 or IPv6 address; no host names)")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise where.error(f"bad {what} {text!r} (an IPv4 or IPv6 address; no host names)") from None
    return _ntop(ip), ip.version


def _parse_addrport(text: str, what: str, where: _Where) -> tuple[str, int, int | None]:
    """ipvsadm's parse_service: ``a.b.c.d[:port]``, ``[v6]:port`` or a bare v6 address.

    Returns (address, family, port or None when no port was given).
    """
    if not text or text.isdigit():
        raise where.error(f"bad {what} {text!r} (address[:port])")
    port_text: str | None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise where.error(f"bad {what} {text!r}: missing ']'")
        host, rest = text[1:close], text[close + 1 :]
        if not rest.startswith(":"):
            raise where.error(f"bad {what} {text!r}: '[address]' must be followed by :port")
        port_text = rest[1:]
        addr, fam = _parse_ip(host, f"{what} address", where)
        if fam != 6:
            raise where.error(f"bad {what} {text!r}: brackets are only for IPv6 addresses")
    elif text.count(":") >= 2:
        addr, fam = _parse_ip(text, f"{what} address", where)  # bare IPv6, no port
        port_text = None
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
        addr, fam = _parse_ip(host, f"{what} address", where)
        if fam != 4:  # pragma: no cover - a one-colon string is never IPv6
            raise where.error(f"bad {what} {text!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit():
            raise where.error(f"bad port {port_text!r} in {what} {text!r} (0..65535)")
        port = int(port_text)
        if port > 65535:
            raise where.error(f"port {port} out of range 0..65535 in {what} {text!r}")
    return addr, fam, port


def _ntop(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Address text as glibc inet_ntop writes it (IPv4-mapped/compatible tails dotted)."""
    if ip.version == 4:
        return str(ip)
    packed = ip.packed
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    # glibc: "::a.b.c.d" when the first 6 words are zero (but not :: or ::1 style runs
    # that extend into word 6), "::ffff:a.b.c.d" for v4-mapped.
    if words[:5] == [0] * 5 and (words[5] == 0xFFFF or (words[5] == 0 and words[6] != 0)):
        v4 = ".".join(str(b) for b in packed[12:])
        return ("::ffff:" if words[5] == 0xFFFF else "::") + v4
    return ip.compressed


def _addrport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _check_scheduler(name: str, where: _Where) -> str:
    if name not in KNOWN_SCHEDULERS:
        raise where.error(f"unknown scheduler {name!r} (known: {' '.join(KNOWN_SCHEDULERS)})")
    return name


def _check_sched_flags(flags: Iterable[str] | str, sched: str, where: _Where) -> tuple[str, ...]:
    """Check -b names against the scheduler and return them as ipvsadm's
    print_sched_flags names the resulting bits (``flag-1`` is ``sh-fallback`` for sh)."""
    names = flags.split(",") if isinstance(flags, str) else list(flags)
    bits = 0
    for name in names:
        if name not in _SCHED_FLAGS:
            raise where.error(f"invalid scheduler flag {name!r} (known: {' '.join(_SCHED_FLAGS)})")
        bit, owner = _SCHED_FLAGS[name]
        if owner is not None and owner != sched:
            raise where.error(f"scheduler flag {name!r} needs scheduler {owner!r}, not {sched!r}")
        bits |= bit
    out = []
    for bit in (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3):
        if bits & bit:
            # the scheduler's own name for the bit if it has one, else flag-N
            own = [n for n, (b, o) in _SCHED_FLAGS.items() if b == bit and o == sched]
            out.append(own[0] if own else f"flag-{bit.bit_length() - 3}")
    return tuple(out)


def _check_netmask(mask: str | int, family: int, where: _Where) -> str:
    if family == 6:
        return str(_to_int(mask, 1, 128, "IPv6 netmask (-M prefix length)", where))
    text = str(mask)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise where.error(
            f"bad netmask {text!r} (a dotted IPv4 mask such as 255.255.255.0)"
        ) from None


def _check_fwd(fwd: str, where: _Where) -> str:
    if fwd not in FWDS:
        raise where.error(f"bad forwarding method {fwd!r} (masq, route or tunnel)")
    return fwd


def _check_unicast(addr: str, what: str, where: _Where) -> None:
    """ip_vs_new_dest (ip_vs_ctl.c:1013-1031) refuses what is not unicast (EINVAL).
    IPv4: ``inet_addr_type`` must be LOCAL or UNICAST, and 0.0.0.0/8 and 255.255.255.255
    are BROADCAST, 224/4 MULTICAST (``__inet_dev_addr_type``). IPv6: ``ipv6_addr_type``
    must say UNICAST and not LINKLOCAL (fe80::/10, accepted by the kernel only when it is
    one of the director's own addresses, which fastvs does not know); ::, multicast and
    IPv4-mapped ::ffff:0:0/96 (IPV6_ADDR_MAPPED, no UNICAST bit) are not unicast."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        bad = ip.packed[0] == 0 or ip.is_multicast or addr == "255.255.255.255"
    else:
        bad = (ip.is_unspecified or ip.is_multicast or ip.is_link_local
               or ip.packed[:12] == bytes(10) + b"\xff\xff")
    if bad:
        raise where.error(f"{what} {addr} is not a unicast address")


# ---------------------------------------------------------------------------
# The rule set and its API


class Rules:
    """A complete IPVS configuration: services (with real servers) and timeouts.

    The methods mirror the ipvsadm commands and check what ipvsadm and the kernel
    check, raising :class:`fastvs.errors.RulesError`. ``services`` keeps creation
    order (the listings sort, as ipvsadm does). ``order`` decides where a new real
    server goes: ``"kernel"`` at the head of its service's list, ``"file"`` at the tail.
    """

    def __init__(
        self,
        services: list[VirtualService] | None = None,
        timeouts: Timeouts | None = None,
        *,
        order: Order = "kernel",
        source: str | None = None,
    ):
        if order not in ("kernel", "file"):
            raise RulesError(f"bad order {order!r} (kernel or file)", source=source)
        self.services: list[VirtualService] = []
        self.timeouts = Timeouts()
        if timeouts is not None:
            where = _Where(source)
            self.timeouts = Timeouts(
                *(
                    _to_int(v, 0, MAX_TIMEOUT, f"{n} timeout", where)
                    for v, n in zip(
                        timeouts.__dict__.values(), ("tcp", "tcpfin", "udp"), strict=True
                    )
                )
            )
        self.order: Order = order
        self.source = source
        self.events: list[Event] = []
        for svc in services or []:
            self._adopt(svc)

    def __repr__(self) -> str:
        return (
            f"Rules({len(self.services)} services, order={self.order!r}, "
            f"timeouts={self.timeouts!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rules):
            return NotImplemented
        return self.services == other.services and self.timeouts == other.timeouts

    # -- lookup -----------------------------------------------------------------

    def service(self, spec: str | VirtualService) -> VirtualService:
        """The service named by a VirtualService or by ipvsadm notation
        (``"-t 10.0.0.1:80"``, ``"--udp-service [::1]:53"``, ``"-f 7"``, ``"-f 7 -6"``).
        Raises RulesError when there is no such service."""
        return self._lookup(self._key_of(spec, _NOWHERE), _NOWHERE)

    def find_service(self, spec: str | VirtualService) -> VirtualService | None:
        key = self._key_of(spec, _NOWHERE)
        return self._by_key(key)

    def _by_key(self, key: ServiceKey) -> VirtualService | None:
        for svc in self.services:
            if svc.key == key:
                return svc
        return None

    def _lookup(self, key: ServiceKey, where: _Where) -> VirtualService:
        svc = self._by_key(key)
        if svc is None:
            raise where.error(f"no service {_key_spec(key)} (add it with -A first)")
        return svc

    def _key_of(self, spec: str | VirtualService, where: _Where) -> ServiceKey:
        if isinstance(spec, VirtualService):
            return spec.key
        try:
            tokens = shlex.split(spec)
        except ValueError as exc:
            raise where.error(f"bad service {spec!r}: {exc}") from None
        return _service_key(_parse_tokens(tokens, where, default_cmd="lookup"), where)

    # -- services ---------------------------------------------------------------

    def add_service(
        self,
        proto: str,
        addr: str = "",
        port: int = 0,
        *,
        fwmark: int = 0,
        ipv6: bool = False,
        scheduler: str = DEFAULT_SCHEDULER,
        persistent: int | None = None,
        netmask: str | int | None = None,
        ops: bool = False,
        sched_flags: Iterable[str] | str = (),
    ) -> VirtualService:
        """``-A``: add a virtual service. For ``proto="fwmark"`` give ``fwmark`` (and
        ``ipv6=True`` for ``-f N -6``) and leave ``addr`` empty."""
        return self._add_service(
            proto,
            addr,
            port,
            fwmark=fwmark,
            ipv6=ipv6,
            scheduler=scheduler,
            persistent=persistent,
            netmask=netmask,
            ops=ops,
            sched_flags=sched_flags,
            where=_Where(self.source),
        )

    def _add_service(
        self,
        proto: str,
        addr: str,
        port: int | None,
        *,
        fwmark: int,
        ipv6: bool,
        scheduler: str,
        persistent: int | None,
        netmask: str | int | None,
        ops: bool,
        sched_flags: Iterable[str] | str,
        where: _Where,
    ) -> VirtualService:
        svc = self._make_service(proto, addr, port, fwmark, ipv6, where)
        self._configure(svc, scheduler, persistent, netmask, ops, sched_flags, where)
        svc.line = where.line
        return self._insert_service(svc, where)

    def _make_service(
        self, proto: str, addr: str, port: int | None, fwmark: int, ipv6: bool, where: _Where
    ) -> VirtualService:
        if proto not in PROTOS:
            raise where.error(f"bad protocol {proto!r} (tcp, udp, sctp or fwmark)")
        if proto == "fwmark":
            if addr:
                raise where.error("a fwmark service has no address")
            mark = _to_int(fwmark, 1, UINT_MAX, "fwmark", where)
            return VirtualService("fwmark", "::" if ipv6 else "0.0.0.0", 0, fwmark=mark)
        if fwmark:
            raise where.error(f"fwmark given for a {proto} service")
        if ipv6:
            raise where.error("-6 (ipv6) is only for fwmark services; give an IPv6 address")
        canon, _fam = _parse_ip(addr, "virtual address", where)
        p = _to_int(port if port is not None else 0, 0, 65535, "port", where)
        return VirtualService(proto, canon, p)

    def _configure(
        self,
        svc: VirtualService,
        scheduler: str,
        persistent: int | None,
        netmask: str | int | None,
        ops: bool,
        sched_flags: Iterable[str] | str,
        where: _Where,
    ) -> None:
        """Set and check the -s -p -M -o -b settings of ``svc`` (add and edit)."""
        sched = _check_scheduler(scheduler, where)
        pers = (
            None
            if persistent is None
            else _to_int(persistent, 1, MAX_TIMEOUT, "persistent timeout", where)
        )
        if svc.proto != "fwmark" and svc.port == 0 and pers is None:
            raise where.error(
                f"zero port for non-persistent service {svc.spec()} (port 0 needs -p)"
            )
        if ops and svc.proto not in ("udp", "fwmark"):
            raise where.error("one-packet scheduling (-o) is only for UDP (or fwmark) services")
        mask = None if netmask is None else _check_netmask(netmask, svc.family, where)
        if mask in ("255.255.255.255", "128"):
            mask = None  # the default granularity
        svc.scheduler = sched
        svc.persistent = pers
        svc.netmask = mask
        svc.ops = bool(ops)
        svc.sched_flags = _check_sched_flags(sched_flags, sched, where)

    def _insert_service(self, svc: VirtualService, where: _Where) -> VirtualService:
        if self._by_key(svc.key) is not None:
            raise where.error(f"service {svc.spec()} already exists")
        svc.link_at_head = self.order == "kernel"
        svc.reals, svc.add_order = [], []
        self.services.append(svc)
        self.events.append(Event("add_service", svc.key, None, where.line, settings=_settings(svc)))
        return svc

    def _adopt(self, given: VirtualService) -> None:
        """Take a VirtualService built by hand, checking it as ``-A`` and ``-a`` would.
        Its ``reals`` list is kept in the order given (added so as to end up so)."""
        where = _Where(self.source, given.line)
        addr = "" if given.proto == "fwmark" else given.addr
        svc = self._add_service(
            given.proto,
            addr,
            given.port,
            fwmark=given.fwmark,
            ipv6=given.proto == "fwmark" and given.family == 6,
            scheduler=given.scheduler,
            persistent=given.persistent,
            netmask=given.netmask,
            ops=given.ops,
            sched_flags=given.sched_flags,
            where=where,
        )
        reals = reversed(given.reals) if svc.link_at_head else iter(given.reals)
        for rs in reals:
            self._add_server(
                svc.key, rs.addr, rs.port, rs.weight, rs.fwd, rs.u_threshold, rs.l_threshold, where
            )

    def edit_service(
        self,
        service: str | VirtualService,
        *,
        scheduler: str | _Keep = KEEP,
        persistent: int | None | _Keep = KEEP,
        netmask: str | int | None | _Keep = KEEP,
        ops: bool | _Keep = KEEP,
        sched_flags: Iterable[str] | str | _Keep = KEEP,
    ) -> VirtualService:
        """``-E``: change a service's settings; omitted ones are kept (:data:`KEEP`).
        (A rules-file ``-E`` line resets omitted settings to ipvsadm's defaults.)"""
        return self._edit_service(
            self._key_of(service, _NOWHERE),
            scheduler,
            persistent,
            netmask,
            ops,
            sched_flags,
            _Where(self.source),
        )

    def _edit_service(
        self,
        key: ServiceKey,
        scheduler: str | _Keep,
        persistent: int | None | _Keep,
        netmask: str | int | None | _Keep,
        ops: bool | _Keep,
        sched_flags: Iterable[str] | str | _Keep,
        where: _Where,
    ) -> VirtualService:
        svc = self._lookup(key, where)
        new_sched = svc.scheduler if scheduler is KEEP else scheduler
        new_flags = svc.sched_flags if sched_flags is KEEP else sched_flags
        if sched_flags is KEEP:  # keep the bits; their names follow the scheduler
            new_flags = tuple(
                f"flag-{_SCHED_FLAGS[f][0].bit_length() - 3}" for f in svc.sched_flags
            )
        trial = VirtualService(svc.proto, svc.addr, svc.port, fwmark=svc.fwmark)
        self._configure(
            trial,
            str(new_sched),
            svc.persistent if persistent is KEEP else persistent,
            svc.netmask if netmask is KEEP else netmask,
            svc.ops if ops is KEEP else bool(ops),
            new_flags,
            where,
        )
        svc.scheduler, svc.persistent, svc.netmask = (
            trial.scheduler,
            trial.persistent,
            trial.netmask,
        )
        svc.ops, svc.sched_flags = trial.ops, trial.sched_flags
        self.events.append(Event("edit_service", svc.key, None, where.line, settings=_settings(svc)))
        return svc

    def delete_service(self, service: str | VirtualService) -> None:
        """``-D``: remove a service and its real servers."""
        self._delete_service(self._key_of(service, _NOWHERE), _Where(self.source))

    def _delete_service(self, key: ServiceKey, where: _Where) -> None:
        svc = self._lookup(key, where)
        self.services.remove(svc)
        self.events.append(Event("delete_service", key, None, where.line))

    def clear(self) -> None:
        """``-C``: remove every service (timeouts stay, as in the kernel)."""
        self._clear(_Where(self.source))

    def _clear(self, where: _Where) -> None:
        self.services.clear()
        self.events.append(Event("clear", None, None, where.line))

    def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> Timeouts:
        """``--set tcp tcpfin udp``: 0 leaves a value unchanged."""
        return self._set_timeouts(tcp, tcpfin, udp, _Where(self.source))

    def _set_timeouts(
        self, tcp: int | str, tcpfin: int | str, udp: int | str, where: _Where
    ) -> Timeouts:
        vals = [
            _to_int(v, 0, MAX_TIMEOUT, f"{n} timeout", where)
            for v, n in ((tcp, "tcp"), (tcpfin, "tcpfin"), (udp, "udp"))
        ]
        t = self.timeouts
        self.timeouts = Timeouts(vals[0] or t.tcp, vals[1] or t.tcpfin, vals[2] or t.udp)
        self.events.append(Event("set_timeouts", None, None, where.line))
        return self.timeouts

    # -- real servers -----------------------------------------------------------

    def add_server(
        self,
        service: str | VirtualService,
        addr: str,
        port: int | None = None,
        *,
        weight: int = 1,
        fwd: str = "masq",
        u_threshold: int = 0,
        l_threshold: int = 0,
    ) -> RealServer:
        """``-a``: add a real server. ``port=None`` takes the service's port; with
        ``fwd`` "route" or "tunnel" the port is always the service's (ipvsadm forces it,
        fwmark services excepted)."""
        return self._add_server(
            self._key_of(service, _NOWHERE),
            addr,
            port,
            weight,
            fwd,
            u_threshold,
            l_threshold,
            _Where(self.source),
        )

    def _server_from(
        self,
        svc: VirtualService,
        addr: str,
        port: int | None,
        weight: int | str,
        fwd: str,
        u_threshold: int | str,
        l_threshold: int | str,
        where: _Where,
    ) -> RealServer:
        canon, fam = _parse_ip(addr, "real server address", where)
        fwd = _check_fwd(fwd, where)
        if fam != svc.family and fwd != "tunnel":
            raise where.error(
                f"real server {canon} is IPv{fam} but service {svc.spec()} is "
                f"IPv{svc.family} (different families only with -i tunnelling)"
            )
        _check_unicast(canon, "real server", where)
        p = svc.port if port is None else _to_int(port, 0, 65535, "real server port", where)
        if svc.proto != "fwmark" and fwd in ("route", "tunnel"):
            p = svc.port  # ipvsadm: DR and TUN servers listen on the virtual port
        w = _to_int(weight, 0, MAX_WEIGHT, "weight", where)
        ut = _to_int(u_threshold, 0, INT_MAX, "upper threshold (-x)", where)
        lt = _to_int(l_threshold, 0, INT_MAX, "lower threshold (-y)", where)
        if lt > ut:
            raise where.error(
                f"lower threshold {lt} is above upper threshold {ut} (-y must not exceed -x)"
            )
        return RealServer(canon, p, w, fwd, ut, lt)

    def _add_server(
        self,
        key: ServiceKey,
        addr: str,
        port: int | None,
        weight: int | str,
        fwd: str,
        u_threshold: int | str,
        l_threshold: int | str,
        where: _Where,
    ) -> RealServer:
        svc = self._lookup(key, where)
        rs = self._server_from(svc, addr, port, weight, fwd, u_threshold, l_threshold, where)
        self._insert_server(svc, rs, where)
        return rs

    def _insert_server(self, svc: VirtualService, rs: RealServer, where: _Where) -> None:
        if svc.find_server(rs.addr, rs.port) is not None:
            raise where.error(f"real server {rs.addrport()} already exists in service {svc.spec()}")
        if svc.link_at_head:
            svc.reals.insert(0, rs)
            svc.add_order = [i + 1 for i in svc.add_order] + [0]
        else:
            svc.reals.append(rs)
            svc.add_order.append(len(svc.reals) - 1)
        self.events.append(Event("add_server", svc.key, rs.key, where.line, real=dataclasses.replace(rs)))

    def edit_server(
        self,
        service: str | VirtualService,
        addr: str,
        port: int | None = None,
        *,
        weight: int | _Keep = KEEP,
        fwd: str | _Keep = KEEP,
        u_threshold: int | _Keep = KEEP,
        l_threshold: int | _Keep = KEEP,
    ) -> RealServer:
        """``-e``: change a real server in place (its list position is kept); omitted
        settings are kept. (A rules-file ``-e`` line resets omitted ones, as ipvsadm.)"""
        where = _Where(self.source)
        svc = self._lookup(self._key_of(service, _NOWHERE), where)
        i = self._server_index(svc, addr, port, where)
        canon, p, old = svc.reals[i].addr, svc.reals[i].port, svc.reals[i]
        return self._edit_server(
            svc.key,
            canon,
            p,
            old.weight if weight is KEEP else weight,
            old.fwd if fwd is KEEP else str(fwd),
            old.u_threshold if u_threshold is KEEP else u_threshold,
            old.l_threshold if l_threshold is KEEP else l_threshold,
            where,
        )

    def _edit_server(
        self,
        key: ServiceKey,
        addr: str,
        port: int | None,
        weight: int | str,
        fwd: str,
        u_threshold: int | str,
        l_threshold: int | str,
        where: _Where,
    ) -> RealServer:
        svc = self._lookup(key, where)
        new = self._server_from(svc, addr, port, weight, fwd, u_threshold, l_threshold, where)
        for i, rs in enumerate(svc.reals):
            if rs.key == new.key:
                svc.reals[i] = new
                self.events.append(Event("edit_server", svc.key, new.key, where.line,
                                         real=dataclasses.replace(new)))
                return new
        hint = ""
        if port is not None and new.port != port:
            hint = " (-g/-i servers use the service's port; did you mean -m?)"
        raise where.error(f"no real server {new.addrport()} in service {svc.spec()}{hint}")

    def delete_server(
        self, service: str | VirtualService, addr: str, port: int | None = None
    ) -> None:
        """``-d``: remove a real server (``port=None``: the service's port)."""
        self._delete_server(self._key_of(service, _NOWHERE), addr, port, _Where(self.source))

    def _delete_server(self, key: ServiceKey, addr: str, port: int | None, where: _Where) -> None:
        svc = self._lookup(key, where)
        i = self._server_index(svc, addr, port, where)
        rs = svc.reals.pop(i)
        svc.add_order = [j - (j > i) for j in svc.add_order if j != i]
        self.events.append(Event("delete_server", svc.key, rs.key, where.line))

    @staticmethod
    def _server_index(svc: VirtualService, addr: str, port: int | None, where: _Where) -> int:
        """Where ``addr``:``port`` (``None``: the service's port) is in ``svc.reals``;
        the one check -e and -d share (the server must exist)."""
        canon, _fam = _parse_ip(addr, "real server address", where)
        p = svc.port if port is None else _to_int(port, 0, 65535, "real server port", where)
        for i, rs in enumerate(svc.reals):
            if rs.key == (canon, p):
                return i
        raise where.error(f"no real server {_addrport(canon, p)} in service {svc.spec()}")


def _settings(svc: VirtualService) -> VirtualService:
    """A service's settings as they are now, without its real servers."""
    return dataclasses.replace(svc, reals=[], add_order=[], sched_flags=tuple(svc.sched_flags))


def _key_spec(key: ServiceKey) -> str:
    proto, fam, addr, num = key
    if proto == "fwmark":
        return f"-f {num}" + (" -6" if fam == 6 else "")
    return f"{_PROTO_OPT[proto]} {_addrport(addr, num)}"


# ---------------------------------------------------------------------------
# The ipvsadm command-line grammar (popt table of ipvsadm.c, restricted to rules)

# option name -> (canonical id, argument: "none" | "required" | "optional")
_COMMANDS = {
    "-A": "A", "--add-service": "A",
    "-E": "E", "--edit-service": "E",
    "-D": "D", "--delete-service": "D",
    "-C": "C", "--clear": "C",
    "-a": "a", "--add-server": "a",
    "-e": "e", "--edit-server": "e",
    "-d": "d", "--delete-server": "d",
    "--set": "set",
}  # fmt: skip
_NOT_IN_RULES = {
    "-L": "-L (list)",
    "-l": "-l (list)",
    "--list": "--list",
    "-Z": "-Z (zero)",
    "--zero": "--zero",
    "-S": "-S (save)",
    "--save": "--save",
    "-R": "-R (restore)",
    "--restore": "--restore",
    "-h": "-h",
    "--help": "--help",
    "-v": "-v",
    "--version": "--version",
    "--start-daemon": "--start-daemon",
    "--stop-daemon": "--stop-daemon",
}
_OPTIONS: dict[str, tuple[str, str]] = {
    "-t": ("svc-tcp", "required"), "--tcp-service": ("svc-tcp", "required"),
    "-u": ("svc-udp", "required"), "--udp-service": ("svc-udp", "required"),
    "--sctp-service": ("svc-sctp", "required"),
    "-f": ("svc-fwmark", "required"), "--fwmark-service": ("svc-fwmark", "required"),
    "-6": ("ipv6", "none"), "--ipv6": ("ipv6", "none"),
    "-s": ("sched", "required"), "--scheduler": ("sched", "required"),
    "-p": ("persistent", "optional"), "--persistent": ("persistent", "optional"),
    "-M": ("netmask", "required"), "--netmask": ("netmask", "required"),
    "-o": ("ops", "none"), "--ops": ("ops", "none"),
    "-b": ("schedflags", "required"), "--sched-flags": ("schedflags", "required"),
    "-r": ("server", "required"), "--real-server": ("server", "required"),
    "-m": ("fwd-masq", "none"), "--masquerading": ("fwd-masq", "none"),
    "-g": ("fwd-route", "none"), "--gatewaying": ("fwd-route", "none"),
    "-i": ("fwd-tunnel", "none"), "--ipip": ("fwd-tunnel", "none"),
    "-w": ("weight", "required"), "--weight": ("weight", "required"),
    "-x": ("uthreshold", "required"), "--u-threshold": ("uthreshold", "required"),
    "-y": ("lthreshold", "required"), "--l-threshold": ("lthreshold", "required"),
    "--tun-type": ("tuntype", "required"),
    "-n": ("numeric", "none"), "--numeric": ("numeric", "none"),
}  # fmt: skip
_SHORT_ARG = {k[1]: v[1] for k, v in _OPTIONS.items() if len(k) == 2}
_SHORT_CMD = {k[1]: k for k in _COMMANDS if len(k) == 2}

# option group -> name used in messages and the set of commands that accept it
_GROUP_NAME = {
    "service": "service (-t/-u/--sctp-service/-f)",
    "sched": "-s",
    "persistent": "-p",
    "netmask": "-M",
    "ops": "-o",
    "schedflags": "-b",
    "server": "-r",
    "fwd": "forwarding method (-m/-g/-i)",
    "weight": "-w",
    "uthreshold": "-x",
    "lthreshold": "-y",
    "tuntype": "--tun-type",
    "ipv6": "-6",
    "numeric": "-n",
}
_ALLOWED = {
    "A": {"service", "sched", "persistent", "netmask", "ops", "schedflags", "ipv6"},
    "E": {"service", "sched", "persistent", "netmask", "ops", "schedflags", "ipv6"},
    "D": {"service", "ipv6"},
    "a": {"service", "server", "fwd", "weight", "uthreshold", "lthreshold", "tuntype", "ipv6"},
    "e": {"service", "server", "fwd", "weight", "uthreshold", "lthreshold", "tuntype", "ipv6"},
    "d": {"service", "server", "ipv6"},
    "C": set(),
    "set": set(),
    "lookup": {"service", "ipv6"},
}
_CMD_NAME = {
    "A": "-A",
    "E": "-E",
    "D": "-D",
    "a": "-a",
    "e": "-e",
    "d": "-d",
    "C": "-C",
    "set": "--set",
    "lookup": "a service name (e.g. '-t 10.0.0.1:80')",
}


@dataclass
class _Cmd:
    """One parsed command line, before it is applied."""

    cmd: str = ""
    cmd_opt: str = ""
    svc: tuple[str, str] | None = None  # (proto, argument text)
    ipv6: bool = False
    sched: str | None = None
    persistent: int | None = None
    netmask: str | None = None
    ops: bool = False
    schedflags: str | None = None
    server: str | None = None
    fwd: str | None = None
    weight: str | None = None
    uthreshold: str | None = None
    lthreshold: str | None = None
    args: list[str] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)  # group -> option as written


def _split_tokens(tokens: list[str]) -> Iterator[tuple[str, str | None, bool, str]]:
    """Expand clusters (``-Ln``, ``-w3``) and ``--opt=value``: yield
    (option, attached value or None, value_is_attached, word as written).
    Positional words come as ("", word, True, word)."""
    for tok in tokens:
        if tok.startswith("--"):
            name, eq, val = tok.partition("=")
            yield name, (val if eq else None), bool(eq), tok
        elif tok == "-6" or (tok.startswith("-") and len(tok) > 1 and not _INT_RE.match(tok)):
            body = tok[1:]
            for j, ch in enumerate(body):
                opt = "-" + ch
                rest = body[j + 1 :]
                if ch in _SHORT_ARG and _SHORT_ARG[ch] != "none":
                    yield opt, (rest or None), bool(rest), tok
                    break
                yield opt, None, False, tok
        else:
            yield "", tok, True, tok


def _parse_tokens(tokens: list[str], where: _Where, default_cmd: str = "") -> _Cmd:
    """Parse one ipvsadm command line (already split into words)."""
    c = _Cmd(cmd=default_cmd)
    items = list(_split_tokens(tokens))
    i = 0
    while i < len(items):
        opt, val, attached, word = items[i]
        i += 1
        if opt == "":
            c.args.append(val or "")
            continue
        if opt in _COMMANDS:
            if val is not None and attached:
                raise where.error(f"{opt} takes no value")
            new = _COMMANDS[opt]
            if c.cmd and c.cmd != "lookup":
                raise where.error(f"more than one command ({c.cmd_opt} and {opt})")
            if c.cmd == "lookup":
                raise where.error(f"unexpected command {opt} in a service name")
            c.cmd, c.cmd_opt = new, opt
            continue
        if opt in _NOT_IN_RULES:
            raise where.error(f"command {_NOT_IN_RULES[opt]} does not belong in a rules file")
        if opt not in _OPTIONS:
            raise where.error(f"unknown option {opt!r}" + (f" in {word!r}" if word != opt else ""))
        oid, argkind = _OPTIONS[opt]
        if argkind == "none":
            if val is not None and attached:
                raise where.error(f"{opt} takes no value")
        elif argkind == "required":
            if val is None:
                if i >= len(items) or items[i][0] != "":
                    raise where.error(f"option {opt} needs a value")
                val = items[i][1]
                i += 1
        else:  # optional (-p): the next word if it does not look like an option
            if val is None and i < len(items) and items[i][0] == "":
                val = items[i][1]
                i += 1
        group = oid.split("-")[0] if oid.startswith(("svc-", "fwd-")) else oid
        group = {"svc": "service"}.get(group, group)
        if group in c.seen:
            prev = c.seen[group]
            if group == "service" and prev != opt:
                raise where.error(f"more than one service given ({prev} and {opt})")
            raise where.error(f"option {opt} given more than once")
        c.seen[group] = opt
        assert val is not None or argkind != "required"
        if oid.startswith("svc-"):
            c.svc = (oid[4:], val or "")
        elif oid.startswith("fwd-"):
            c.fwd = oid[4:]
        elif oid == "ipv6":
            if c.svc is None or c.svc[0] != "fwmark":
                raise where.error("-6 used before -f (it marks a fwmark service as IPv6)")
            c.ipv6 = True
        elif oid == "sched":
            c.sched = val
        elif oid == "persistent":
            c.persistent = (
                DEFAULT_PERSISTENT_TIMEOUT
                if val is None
                else _to_int(val, 1, MAX_TIMEOUT, "persistent timeout", where)
            )
        elif oid == "netmask":
            c.netmask = val
        elif oid == "ops":
            c.ops = True
        elif oid == "schedflags":
            c.schedflags = val
        elif oid == "server":
            c.server = val
        elif oid in ("weight", "uthreshold", "lthreshold"):
            setattr(c, oid, val)
        elif oid == "tuntype":
            if val != "ipip":
                raise where.error(f"tunnel type {val!r} is not supported (only ipip)")
        # "numeric" is accepted and ignored (users paste "ipvsadm -a -n ...")
    if not c.cmd:
        raise where.error("no command (one of -A -E -D -a -e -d -C --set)")
    allowed = _ALLOWED[c.cmd]
    for group, written in c.seen.items():
        if group == "numeric":
            continue
        if group not in allowed:
            raise where.error(f"option {written} is not allowed with {_CMD_NAME[c.cmd]}")
    if c.cmd == "set":
        if len(c.args) != 3:
            raise where.error("--set needs 3 timeout values: tcp tcpfin udp")
    elif c.args:
        raise where.error(f"unexpected argument {c.args[0]!r}")
    if c.cmd not in ("C", "set") and c.svc is None:
        raise where.error(f"{_CMD_NAME[c.cmd]} needs a service (-t, -u, --sctp-service or -f)")
    if c.cmd in ("a", "e", "d") and c.server is None:
        raise where.error(f"{_CMD_NAME[c.cmd]} needs a real server (-r)")
    if "tuntype" in c.seen and c.fwd != "tunnel":
        raise where.error("--tun-type needs -i (tunnelling)")
    return c


def _service_parts(c: _Cmd, where: _Where) -> tuple[str, str, int, int]:
    """(proto, address, port, fwmark) of the command's service; port may be 0."""
    assert c.svc is not None
    proto, text = c.svc
    if proto == "fwmark":
        return "fwmark", "", 0, _to_int(text, 1, UINT_MAX, "fwmark", where)
    addr, _fam, port = _parse_addrport(text, "virtual service", where)
    return proto, addr, port or 0, 0


def _service_key(c: _Cmd, where: _Where) -> ServiceKey:
    proto, addr, port, mark = _service_parts(c, where)
    if proto == "fwmark":
        return ("fwmark", 6 if c.ipv6 else 4, "", mark)
    return (proto, 6 if ":" in addr else 4, addr, port)


def _apply(rules: Rules, c: _Cmd, where: _Where) -> None:
    """Apply one parsed command line, the way ipvsadm -R applies it."""
    if c.cmd == "C":
        rules._clear(where)
        return
    if c.cmd == "set":
        rules._set_timeouts(c.args[0], c.args[1], c.args[2], where)
        return
    key = _service_key(c, where)
    if c.cmd in ("A", "E"):
        sched = c.sched if c.sched is not None else DEFAULT_SCHEDULER
        flags = c.schedflags.split(",") if c.schedflags else ()
        if c.cmd == "A":
            proto, addr, port, mark = _service_parts(c, where)
            rules._add_service(
                proto,
                addr,
                port,
                fwmark=mark,
                ipv6=c.ipv6,
                scheduler=sched,
                persistent=c.persistent,
                netmask=c.netmask,
                ops=c.ops,
                sched_flags=flags,
                where=where,
            )
        else:
            # ipvsadm -E sends a whole new service: what is not given is reset
            rules._edit_service(key, sched, c.persistent, c.netmask, c.ops, flags, where)
        return
    if c.cmd == "D":
        rules._delete_service(key, where)
        return
    svc = rules._lookup(key, where)
    assert c.server is not None
    raddr, _fam, rport = _parse_addrport(c.server, "real server", where)
    if c.cmd == "d":
        rules._delete_server(key, raddr, rport, where)
        return
    fwd = c.fwd or "route"  # ipvsadm: direct routing unless -m or -i
    weight = c.weight if c.weight is not None else 1
    ut = c.uthreshold if c.uthreshold is not None else 0
    lt = c.lthreshold if c.lthreshold is not None else 0
    if c.cmd == "a":
        rules._add_server(svc.key, raddr, rport, weight, fwd, ut, lt, where)
    else:
        rules._edit_server(svc.key, raddr, rport, weight, fwd, ut, lt, where)


_LEAD_WORDS = ("sudo",)


def parse_rules(text: str, source: str = "<rules>", order: Order = "kernel") -> Rules:
    """Read rules in ``ipvsadm -S`` / ``ipvsadm -R`` format.

    ``order="kernel"`` (default) links each new real server at the head of its
    service's list, as ``ipvsadm -R`` into a real kernel does; ``order="file"`` keeps
    the file's order. See :class:`VirtualService` for ``add_order`` and ``replay()``.
    Raises :class:`fastvs.errors.RulesError` naming ``source:line`` on the first error.
    """
    rules = Rules(order=order, source=source)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = _Where(source, lineno)
        try:
            tokens = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise where.error(f"cannot split line: {exc}") from None
        while tokens and tokens[0] in _LEAD_WORDS:
            tokens = tokens[1:]
        if tokens and tokens[0].rsplit("/", 1)[-1] == "ipvsadm":
            tokens = tokens[1:]
        if not tokens:
            continue
        _apply(rules, _parse_tokens(tokens, where), where)
    return rules


def load_rules(path: str | Path, order: Order = "kernel") -> Rules:
    """:func:`parse_rules` on a file, or :func:`fastvs.control.keepalived.parse_keepalived`
    when the file reads as a keepalived.conf; errors name the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules: {exc.strerror or exc}", source=str(p)) from None
    except UnicodeDecodeError:
        raise RulesError("rules file is not UTF-8 text", source=str(p)) from None
    from fastvs.control.keepalived import is_keepalived, parse_keepalived

    if is_keepalived(text):
        return parse_keepalived(text, source=str(p), order=order)
    return parse_rules(text, source=str(p), order=order)


# ---------------------------------------------------------------------------
# Writing: ipvsadm -S -n


def _c_int(diff: int) -> int:
    """A 32-bit unsigned difference read as a C int, as libipvs' comparators do."""
    diff &= 0xFFFFFFFF
    return diff - (1 << 32) if diff >= 1 << 31 else diff


def _addr_words(addr: str) -> list[int]:
    """The address as libipvs' ``union nf_inet_addr``: four 32-bit words, an IPv4
    address in the first one."""
    packed = ipaddress.ip_address(addr).packed.ljust(16, b"\0")
    return [int.from_bytes(packed[i : i + 4], "big") for i in range(0, 16, 4)]


def cmp_addr(a1: str, a2: str, v6: bool) -> int:
    """libipvs' address comparison: differences of 32-bit words read as a C int
    (four words when ``v6``, else the first one).

    Not a total order across 2**31 (10.0.0.1 sorts *after* 192.168.0.1); that is
    what ipvsadm prints, so it is kept.
    """
    w1, w2 = _addr_words(a1), _addr_words(a2)
    r = 0
    for x, y in zip(w1[: 4 if v6 else 1], w2[: 4 if v6 else 1], strict=True):
        r = _c_int(x - y)
        if r:
            break
    return r


T = TypeVar("T")


def glibc_msort(items: Sequence[T], cmp: Callable[[T, T], int]) -> list[T]:
    """glibc qsort's merge sort (msort_with_tmp), so that the comparators above, which
    are not total orders, give the same order as ipvsadm on glibc <= 2.36."""
    n = len(items)
    if n <= 1:
        return list(items)
    n1 = n // 2
    b1, b2 = glibc_msort(items[:n1], cmp), glibc_msort(items[n1:], cmp)
    out: list[T] = []
    i = j = 0
    while i < len(b1) and j < len(b2):
        if cmp(b1[i], b2[j]) <= 0:
            out.append(b1[i])
            i += 1
        else:
            out.append(b2[j])
            j += 1
    out.extend(b1[i:])
    out.extend(b2[j:])
    return out


def cmp_services(s1: tuple[int, int, int, str, int], s2: tuple[int, int, int, str, int]) -> int:
    """ipvs_cmp_services on (fwmark, af, protocol number, addr, port) tuples;
    af is 2 (AF_INET) or 10 (AF_INET6)."""
    r = _c_int(s1[0] - s2[0])
    if r:
        return r
    r = s1[1] - s2[1]
    if r:
        return r
    r = s1[2] - s2[2]
    if r:
        return r
    if s1[3] and s2[3]:
        r = cmp_addr(s1[3], s2[3], s1[1] == 10)
        if r:
            return r
    return s1[4] - s2[4]


def cmp_dests(d1: tuple[str, int], d2: tuple[str, int]) -> int:
    """ipvs_cmp_dests on (addr, port): address words (as many as the first one's
    family has), then port."""
    r = cmp_addr(d1[0], d2[0], ":" in d1[0])
    if r:
        return r
    return d1[1] - d2[1]


def service_sort_key(
    proto: str, addr: str, port: int, fwmark: int
) -> tuple[int, int, int, str, int]:
    """The tuple :func:`cmp_services` compares, for a service given as plain values.
    As the kernel reports them, fwmark services carry no protocol, address or port."""
    af = 10 if ":" in addr else 2
    if proto == "fwmark" or fwmark:
        return (fwmark, af, 0, "", 0)
    return (0, af, _PROTO_NUM[proto], addr, port)


def sort_services(services: list[VirtualService]) -> list[VirtualService]:
    """Services in the order ipvsadm -L / -S prints them."""
    keyed = [(service_sort_key(s.proto, s.addr, s.port, s.fwmark), s) for s in services]
    return [s for _k, s in glibc_msort(keyed, lambda a, b: cmp_services(a[0], b[0]))]


def sort_servers(reals: list[RealServer]) -> list[RealServer]:
    """Real servers in the order ipvsadm -L / -S prints them (sorted by address, port)."""
    return glibc_msort(list(reals), lambda a, b: cmp_dests(a.key, b.key))


def format_rules(rules: Rules, *, strict: bool = False) -> str:
    """The rules as ``ipvsadm -S -n`` writes them: services sorted as libipvs sorts
    them, each followed by its real servers sorted by address.

    Lines: ``-A <svc> -s <sched>[ -p N[ -M mask]][ -o][ -b flags]`` and
    ``-a <svc> -r <addr:port> -m|-g|-i -w N``. ipvsadm 1.31 leaves out -x/-y and the
    timeouts; by default this writes ``-x``/``-y`` when non-zero and a leading
    ``--set`` line when timeouts are set, so nothing is lost. ``strict=True`` writes
    exactly what ipvsadm 1.31 writes. Tunnel servers get ``--tun-type ipip`` as 1.31
    prints it.
    """
    out: list[str] = []
    if not strict and rules.timeouts.is_set():
        t = rules.timeouts
        out.append(f"--set {t.tcp} {t.tcpfin} {t.udp}")
    for svc in sort_services(rules.services):
        name = svc.spec()
        line = f"-A {name} -s {svc.scheduler}"
        if svc.persistent is not None:
            line += f" -p {svc.persistent}"
            if svc.netmask is not None:
                line += f" -M {svc.netmask}"
        if svc.ops:
            line += " -o"
        if svc.sched_flags:
            line += " -b " + ",".join(svc.sched_flags)
        out.append(line)
        for rs in sort_servers(svc.reals):
            line = f"-a {name} -r {rs.addrport()} {_FWD_OPT[rs.fwd]} -w {rs.weight}"
            if rs.fwd == "tunnel":
                line += " --tun-type ipip"
            if not strict:
                if rs.u_threshold:
                    line += f" -x {rs.u_threshold}"
                if rs.l_threshold:
                    line += f" -y {rs.l_threshold}"
            out.append(line)
    return "".join(s + "\n" for s in out)
