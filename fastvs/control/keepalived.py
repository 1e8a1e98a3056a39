"""keepalived.conf as a rules source: the IPVS table keepalived's checker process builds,
and the model of its virtual servers, real servers and health checkers.

keepalived reads ``virtual_server`` blocks (by address and port, by firewall mark, or by
``virtual_server_group``), each with its real servers, and configures IPVS through
netlink one service and one real server at a time. :func:`parse_keepalived` reads such a
file and returns the :class:`~fastvs.control.rules.Rules` that keepalived would have
configured at start, before any health check ran:

- a real server is in the table with its weight, unless it is in ``alpha`` mode and has
  health checkers: then it starts down, and is left out, or kept with weight 0 when
  ``inhibit_on_failure`` is set (check_api's ``num_failed_checkers``, ipwrapper.c's
  ``init_service_rs``);
- quorum is the sum of the live real servers' weights; a service that starts below
  ``quorum + hysteresis`` and has a ``sorry_server`` gets the sorry server, and its live
  real servers are taken out (``update_quorum_state``); ``sorry_server_inhibit`` keeps
  an unused sorry server at weight 0;
- the defaults and corrections of keepalived's ``validate_check_config``: scheduler wlc,
  method NAT, weight 1 (or the service's ``weight``), a bare ``persistence_timeout`` or a
  ``persistence_granularity`` alone means 360 s, a service with no protocol is UDP, a
  port-0 service is made persistent, ``ops`` only for UDP, quorum at most the number of
  real servers and hysteresis below the quorum, a service with no real servers dropped.

Real servers are added in file order, so the kernel's list is the reverse (IPVS links a
new destination at the head), as with ``ipvsadm -R``.

What fastvs does not act on — VRRP and global blocks, notification scripts and mail,
health-checker kinds, and settings that only matter to them — is reported once each as
a :class:`KeepalivedWarning` naming the file and line. Errors (an unbalanced brace, a bad
address, an unknown scheduler) raise :class:`~fastvs.errors.RulesError` with the file
and line.

:func:`read_keepalived` returns that model (:class:`KeepalivedConfig`: each
:class:`VirtualServerConfig` with its :class:`RealServerConfig` and their
:class:`CheckerConfig`), which :mod:`fastvs.health` runs; its ``initial_rules()`` is what
:func:`parse_keepalived` returns. Checker settings are inherited as keepalived's
``validate_check_config`` does: ``connect_timeout`` (5 s), ``delay_loop`` (60 s),
``retry`` (1; MISC_CHECK 0; ``nb_get_retry`` for HTTP_GET/SSL_GET), ``delay_before_retry``
(1 s; HTTP_GET/SSL_GET 3 s), ``warmup`` (the checker's ``delay_loop``), ``alpha`` and
``virtualhost`` from the checker, else its real_server, else its virtual_server.
``connect_ip``/``connect_port`` default to the real server's address and port.

The syntax: whitespace-separated words, ``{`` ``}`` blocks, comments from ``!`` or ``#``
to the end of the line, double-quoted strings, and ``include GLOB`` (relative to the
including file) anywhere.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import shlex
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastvs.control.rules import Order, Rules, VirtualService
from fastvs.errors import RulesError

__all__ = [
    "CheckerConfig", "KeepalivedConfig", "KeepalivedWarning", "RealServerConfig", "Url",
    "VirtualServerConfig", "is_keepalived", "load_keepalived", "parse_keepalived",
    "read_keepalived", "read_keepalived_file",
]  # fmt: skip

PERSISTENT_TIMEOUT = 360  # keepalived's IPVS_SVC_PERSISTENT_TIMEOUT (6 * 60)
DEFAULT_SCHEDULER = "wlc"  # IPVS_DEF_SCHED
MAX_INCLUDE_DEPTH = 8

# Health checkers: their blocks inside real_server (check_*.c install_keyword calls).
CHECKERS = frozenset({
    "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK",
    "UDP_CHECK", "PING_CHECK", "FILE_CHECK", "BFD_CHECK",
})  # fmt: skip
_METHODS = {"NAT": "masq", "DR": "route", "TUN": "tunnel"}
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_SCHED_FLAG_WORDS = ("flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port",
                     "mh-fallback")  # fmt: skip
# Recognising the format: a top-level word only keepalived uses, at a line's start.
_TOP_WORDS = re.compile(
    r"^\s*(virtual_server(_group)?|global_defs|vrrp_(instance|sync_group|script)|"
    r"static_(ipaddress|routes|rules)|include)\b",
    re.MULTILINE,
)


class KeepalivedWarning(UserWarning):
    """Something in a keepalived configuration that fastvs reads but does not act on."""


@dataclass
class _Node:
    """One statement: a keyword, its arguments, and its block if it opened one."""

    word: str
    args: list[str]
    source: str
    line: int
    block: list[_Node] | None = None

    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def error(self, message: str) -> RulesError:
        return RulesError(message, source=self.source, line=self.line)


# ---------------------------------------------------------------------------
# Reading: words, includes, blocks


def _words(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, words) for each line; braces are words of their own."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        words: list[str] = []
        i, n = 0, len(raw)
        while i < n:
            c = raw[i]
            if c.isspace():
                i += 1
            elif c in "!#":
                break
            elif c in "{}":
                words.append(c)
                i += 1
            elif c == '"':
                end = raw.find('"', i + 1)
                end = n if end < 0 else end
                words.append(raw[i + 1 : end])
                i = end + 1
            else:
                j = i
                while j < n and not raw[j].isspace() and raw[j] not in '{}"':
                    j += 1
                words.append(raw[i:j])
                i = j
        yield lineno, words


def _lines(text: str, source: str, depth: int = 0) -> Iterator[tuple[str, int, list[str]]]:
    """(source, line, words), with ``include`` lines replaced by the files they name."""
    for lineno, words in _words(text):
        if words and words[0] == "include":
            if len(words) != 2:
                raise RulesError("include takes one file name or pattern", source=source, line=lineno)
            if depth >= MAX_INCLUDE_DEPTH:
                raise RulesError(f"includes nested deeper than {MAX_INCLUDE_DEPTH}",
                                 source=source, line=lineno)
            pattern = words[1]
            if not os.path.isabs(pattern) and source != "<keepalived>":
                pattern = os.path.join(os.path.dirname(source), pattern)
            names = sorted(glob.glob(pattern))
            if not names:
                warnings.warn(f"{source}:{lineno}: include {words[1]}: no file matches",
                              KeepalivedWarning, stacklevel=2)
            for name in names:
                yield from _lines(_read(name, source, lineno), name, depth + 1)
            continue
        if words:
            yield source, lineno, words


def _read(path: str, source: str | None = None, line: int | None = None) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        where = {"source": source, "line": line} if source else {"source": path}
        raise RulesError(f"cannot read {path}: {exc.strerror or exc}", **where) from None
    except UnicodeDecodeError:
        raise RulesError(f"{path} is not UTF-8 text", source=source or path, line=line) from None


def _tree(text: str, source: str) -> list[_Node]:
    """The statements of a configuration, blocks nested."""
    top: list[_Node] = []
    stack: list[list[_Node]] = [top]
    opened: list[_Node] = []
    for src, lineno, words in _lines(text, source):
        stmt: list[str] = []

        def flush(stmt: list[str] = stmt, src: str = src, lineno: int = lineno) -> _Node | None:
            if not stmt:
                return None
            node = _Node(stmt[0], stmt[1:], src, lineno)
            stack[-1].append(node)
            stmt.clear()
            return node

        for w in words:
            if w == "{":
                node = flush()
                if node is None:  # "{" on a line of its own opens the previous statement
                    if not stack[-1] or stack[-1][-1].block is not None:
                        raise RulesError("'{' with no keyword before it", source=src, line=lineno)
                    node = stack[-1][-1]
                node.block = []
                stack.append(node.block)
                opened.append(node)
            elif w == "}":
                flush()
                if len(stack) == 1:
                    raise RulesError("'}' with no block to close", source=src, line=lineno)
                stack.pop()
                opened.pop()
            else:
                stmt.append(w)
        flush()
    if opened:
        raise opened[-1].error(f"block '{opened[-1].word}' is not closed")
    return top


# ---------------------------------------------------------------------------
# Interpreting: what validate_check_config and init_services leave in IPVS


# Checker kinds fastvs runs (fastvs.health); the others are kept in the model, warned
# about, and hold the state they start in (up, or down in alpha mode).
SUPPORTED_CHECKERS = frozenset({"TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK"})
DEFAULT_DELAY_LOOP = 60.0  # KEEPALIVED_DEFAULT_DELAY
DEFAULT_CONNECT_TIMEOUT = 5.0  # alloc_vs: connection_to = 5 * TIMER_HZ
HTTP_DEFAULT_STATUS = (200, 299)  # HTTP_DEFAULT_STATUS_CODE_MIN/MAX


@dataclass
class Url:
    """One ``url`` block of HTTP_GET/SSL_GET: the body's MD5 (``digest``, lower-case hex)
    and the accepted status codes (``status_code``, 200-299 when none is given)."""

    path: str
    status_codes: tuple[tuple[int, int], ...] = (HTTP_DEFAULT_STATUS,)
    digest: str | None = None
    virtualhost: str | None = None

    def accepts(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.status_codes)


@dataclass
class CheckerConfig:
    """One health checker of a real server, with keepalived's defaults and inheritance
    (checker, then real_server, then virtual_server) already applied.

    Times are seconds. ``retry`` is the number of retries after a failed attempt: the
    checker fails on the ``retry + 1``-th failure in a row (and on the first one before it
    has ever run). ``supported`` is False for the kinds fastvs does not run.
    """

    kind: str
    where: str
    connect_ip: str = ""
    connect_port: int = 0
    bindto: str | None = None
    bind_port: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: int = 1
    delay_before_retry: float = 1.0
    delay_loop: float = DEFAULT_DELAY_LOOP
    warmup: float = DEFAULT_DELAY_LOOP
    alpha: bool = False
    urls: list[Url] = field(default_factory=list)
    virtualhost: str | None = None
    http_protocol: str = "1.0"
    misc_path: list[str] = field(default_factory=list)
    misc_timeout: float = 0.0
    misc_dynamic: bool = False
    supported: bool = True

    def target(self) -> str:
        """What the checker talks to, as its log lines name it."""
        if self.kind == "MISC_CHECK":
            return " ".join(self.misc_path)
        return _addrport(self.connect_ip, self.connect_port)


@dataclass
class RealServerConfig:
    """A ``real_server`` (or ``sorry_server``) block. ``port`` is None when the file gave
    none (the service's port is used)."""

    addr: str
    port: int | None
    node: _Node
    weight: int | None = None
    fwd: str | None = None
    u_threshold: int = 0
    l_threshold: int = 0
    inhibit: bool | None = None
    alpha: bool | None = None
    connect_timeout: float | None = None
    delay_loop: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    virtualhost: str | None = None
    checker_nodes: list[_Node] = field(default_factory=list)
    checkers: list[CheckerConfig] = field(default_factory=list)

    @property
    def where(self) -> str:
        return self.node.where()

    def name(self, vs_port: int = 0) -> str:
        return _addrport(self.addr, self.port if self.port is not None else vs_port)

    def starts_down(self) -> bool:
        """In alpha mode a checker starts failed: the server starts out of the pool."""
        return any(c.alpha for c in self.checkers)


@dataclass
class VirtualServerConfig:
    """A ``virtual_server`` block: its kernel services (``targets``: one per group entry)
    and what decides its real servers' place in them."""

    node: _Node
    targets: list[tuple[str, str, int]]  # (proto or "fwmark", addr, port or mark)
    family: int | None = None
    scheduler: str | None = None
    fwd: str | None = None
    persistent: int | None = None
    granularity: str | None = None
    protocol: str | None = None
    ops: bool = False
    sched_flags: list[str] = field(default_factory=list)
    weight: int = 1
    inhibit: bool = False
    alpha: bool = False
    quorum: int = 1
    hysteresis: int = 0
    sorry: RealServerConfig | None = None
    sorry_inhibit: bool = False
    servers: list[RealServerConfig] = field(default_factory=list)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    delay_loop: float = DEFAULT_DELAY_LOOP
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    virtualhost: str | None = None
    group: str | None = None

    @property
    def where(self) -> str:
        return self.node.where()

    def name(self) -> str:
        """The service as keepalived's logs name it (FMT_VS): ``[10.0.0.1]:tcp:80``-like
        forms are replaced by fastvs's ``TCP 10.0.0.1:80``, ``FWM 5``, ``group G``."""
        if self.group is not None:
            return f"group {self.group}"
        kind, addr, num = self.targets[0]
        if kind == "fwmark":
            return f"FWM {num}"
        return f"{(self.protocol or 'udp').upper()} {_addrport(addr, num)}"

    def port(self) -> int:
        """The virtual port real servers without one take (0 for firewall marks)."""
        ports = [p for k, _, p in self.targets if k != "fwmark"]
        return ports[0] if ports else 0


@dataclass
class KeepalivedConfig:
    """The virtual servers of a keepalived.conf, as :func:`read_keepalived` leaves them."""

    services: list[VirtualServerConfig]
    source: str = "<keepalived>"

    def initial_rules(self, order: Order = "kernel") -> Rules:
        """The IPVS table keepalived configures at start, before any check ran."""
        rules = Rules(order=order)
        for svc in self.services:
            _configure(rules, svc)
        rules.source = self.source
        return rules

    def addresses(self) -> tuple[set[str], set[str]]:
        """(VIPs of the TCP/UDP services, addresses of every NAT real server and sorry
        server) — every one the checks may put in the table, so that a forwarder can
        resolve their MACs before it needs them."""
        vips: set[str] = set()
        rips: set[str] = set()
        for svc in self.services:
            if (svc.protocol or "udp") in ("tcp", "udp"):
                vips.update(addr for kind, addr, _ in svc.targets if kind != "fwmark")
            for rs in [*svc.servers, *([svc.sorry] if svc.sorry is not None else [])]:
                if (rs.fwd or "masq") == "masq":
                    rips.add(rs.addr)
        return vips, rips

    def checkers(self) -> Iterator[tuple[VirtualServerConfig, RealServerConfig, CheckerConfig]]:
        for svc in self.services:
            for rs in svc.servers:
                for c in rs.checkers:
                    yield svc, rs, c


def _addrport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _warn(node: _Node, what: str) -> None:
    warnings.warn(f"{node.where()}: {what}", KeepalivedWarning, stacklevel=3)


def _int(node: _Node, lo: int, hi: int, index: int = 0) -> int:
    if len(node.args) <= index:
        raise node.error(f"{node.word} needs a value")
    text = node.args[index]
    try:
        value = int(text, 10)
    except ValueError:
        raise node.error(f"{node.word}: {text!r} is not a number") from None
    if not lo <= value <= hi:
        raise node.error(f"{node.word}: {value} is out of range ({lo}-{hi})")
    return value


def _flag(node: _Node) -> bool:
    """A keyword that is on by itself, or followed by on/off words (check_true_false)."""
    if not node.args:
        return True
    word = node.args[0].lower()
    if word in ("true", "on", "yes"):
        return True
    if word in ("false", "off", "no"):
        return False
    raise node.error(f"{node.word}: {node.args[0]!r} is not true/false, on/off or yes/no")


def _ip(node: _Node, text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise node.error(f"bad {what} address {text!r}") from None


def _port(node: _Node, text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise node.error(f"bad port {text!r}") from None
    if not 0 <= port <= 65535:
        raise node.error(f"port {port} is out of range (0-65535)")
    return port


def _server(node: _Node, what: str) -> RealServerConfig:
    if not 1 <= len(node.args) <= 2:
        raise node.error(f"{node.word} takes an address and a port")
    addr = str(_ip(node, node.args[0], what))
    port = _port(node, node.args[1]) if len(node.args) == 2 else None
    return RealServerConfig(addr, port, node)


def _group_entries(node: _Node) -> list[tuple[str, str, int]]:
    """A virtual_server_group's entries: ``IP PORT``, ``IP-LAST PORT`` ranges (the last
    byte, or the last 16-bit group of an IPv6 address in hex) and ``fwmark N``."""
    out: list[tuple[str, str, int]] = []
    for e in node.block or []:
        if e.word == "fwmark":
            out.append(("fwmark", "", _int(e, 1, 2**32 - 1)))
            continue
        if len(e.args) != 1:
            raise e.error("a group entry is 'IP PORT', 'IP-LAST PORT' or 'fwmark N'")
        first, dash, last = e.word.partition("-")
        ip = _ip(e, first, "virtual server")
        port = _port(e, e.args[0])
        if not dash:
            out.append(("", str(ip), port))
            continue
        try:
            end = int(last, 10 if ip.version == 4 else 16)
        except ValueError:
            raise e.error(f"bad range end {last!r}") from None
        low = int(ip) & (0xFF if ip.version == 4 else 0xFFFF)
        if not low <= end <= (0xFF if ip.version == 4 else 0xFFFF):
            raise e.error(f"range {e.word} runs backwards or past its last byte")
        for k in range(end - low + 1):
            out.append(("", str(ipaddress.ip_address(int(ip) + k)), port))
    return out


def _timer(node: _Node, lo: float = 0.0) -> float:
    """A keepalived timer: seconds, fractions allowed (read_timer)."""
    if not node.args:
        raise node.error(f"{node.word} needs a value")
    text = node.args[0]
    try:
        value = float(text)
    except ValueError:
        raise node.error(f"{node.word}: {text!r} is not a number of seconds") from None
    if not lo <= value < 2**32 or value != value:
        raise node.error(f"{node.word}: {text} is out of range")
    return value


def _timing(obj: RealServerConfig | VirtualServerConfig, n: _Node) -> bool:
    """The check timing keywords a real_server or virtual_server block may hold, as
    defaults for its checkers. True when ``n`` was one."""
    w = n.word
    if w == "connect_timeout":
        obj.connect_timeout = max(_timer(n), 1e-6)
    elif w == "delay_loop":
        obj.delay_loop = max(_timer(n), 1e-6)
    elif w == "retry":
        obj.retry = _int(n, 0, 2**32 - 1)
    elif w == "delay_before_retry":
        obj.delay_before_retry = _timer(n)
    elif w == "warmup":
        obj.warmup = _timer(n)
    elif w == "virtualhost":
        if not n.args:
            raise n.error("virtualhost needs a host name")
        obj.virtualhost = n.args[0]
    else:
        return False
    return True


def _read_server(rs: RealServerConfig, checkers: dict[str, list[_Node]]) -> None:
    for n in rs.node.block or []:
        w = n.word
        if w == "weight":
            rs.weight = _int(n, 0, 65535)
        elif w in ("lvs_method", "lb_kind"):
            rs.fwd = _method(n)
        elif w == "uthreshold":
            rs.u_threshold = _int(n, 0, 2**31 - 1)
        elif w == "lthreshold":
            rs.l_threshold = _int(n, 0, 2**31 - 1)
        elif w == "inhibit_on_failure":
            rs.inhibit = _flag(n)
        elif w == "alpha":
            rs.alpha = _flag(n)
        elif w in CHECKERS:
            rs.checker_nodes.append(n)
            checkers.setdefault(w, []).append(n)
        elif _timing(rs, n):
            pass
        elif w in ("notify_up", "notify_down", "smtp_alert"):
            _warn(n, f"{w} is not acted on by fastvs")
        else:
            _warn(n, f"unknown real_server keyword {w!r} ignored")


# Checker keywords that only tune what fastvs does not do (logging, SNI, mail).
_CHECKER_QUIET = frozenset({"log_all_failures", "enable_sni"})
_CHECKER_UNACTED = {
    "bind_if": ("TCP_CHECK", "HTTP_GET", "SSL_GET"), "fwmark": ("TCP_CHECK", "HTTP_GET", "SSL_GET"),
    "fast_recovery": ("HTTP_GET", "SSL_GET"), "user": ("MISC_CHECK",),
}  # fmt: skip
_URL_UNACTED = frozenset({"regex", "regex_no_match", "regex_options", "regex_min_offset",
                          "regex_max_offset", "regex_stack"})  # fmt: skip


_CONNECT_WORDS = frozenset({"connect_ip", "connect_port", "bindto", "bind_port",
                            "connect_timeout"})  # fmt: skip


def _status_codes(n: _Node) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for text in n.args:
        lo_s, dash, hi_s = text.partition("-")
        try:
            lo = int(lo_s, 10)
            hi = int(hi_s, 10) if dash else lo
        except ValueError:
            raise n.error(f"status_code: bad code or range {text!r}") from None
        if not 100 <= lo <= hi <= 599:
            raise n.error(f"status_code: {text!r} is not a code or range within 100-599")
        out.append((lo, hi))
    if not out:
        raise n.error("status_code needs at least one code or range")
    return tuple(out)


def _read_url(n: _Node) -> Url | None:
    url = Url(path="")
    codes: list[tuple[int, int]] = []
    for u in n.block or []:
        if u.word == "path":
            if not u.args:
                raise u.error("path needs a value")
            url.path = u.args[0]
        elif u.word == "digest":
            if len(u.args) != 1 or not re.fullmatch(r"[0-9a-fA-F]{32}", u.args[0]):
                raise u.error("digest takes the 32 hex digits of an MD5 sum")
            url.digest = u.args[0].lower()
        elif u.word == "status_code":
            codes.extend(_status_codes(u))
        elif u.word == "virtualhost":
            if not u.args:
                raise u.error("virtualhost needs a host name")
            url.virtualhost = u.args[0]
        elif u.word in _URL_UNACTED:
            _warn(u, f"{u.word} is not acted on by fastvs (the url is checked without it)")
        else:
            _warn(u, f"unknown url keyword {u.word!r} ignored")
    if not url.path:
        _warn(n, "url has no path: ignored, as keepalived does")
        return None
    if codes:
        url.status_codes = tuple(codes)
    return url


def _read_checker(
    n: _Node, svc: VirtualServerConfig, rs: RealServerConfig, port: int
) -> CheckerConfig | None:
    """A checker block, with validate_check_config's inheritance applied."""
    kind = n.word
    c = CheckerConfig(kind, n.where(), connect_ip=rs.addr, connect_port=port,
                      supported=kind in SUPPORTED_CHECKERS)  # fmt: skip
    default_retry = 0 if kind == "MISC_CHECK" else 1
    default_dbr = 3.0 if kind in ("HTTP_GET", "SSL_GET") else 1.0
    retry: int | None = None
    dbr: float | None = None
    delay: float | None = None
    warmup: float | None = None
    timeout: float | None = None
    alpha: bool | None = None
    misc_path_seen = False
    for k in n.block or [] if c.supported else []:
        w = k.word
        if kind == "MISC_CHECK" and w in _CONNECT_WORDS:
            _warn(k, f"unknown {kind} keyword {w!r} ignored")  # no connection to set up
        elif w == "connect_ip":
            if not k.args:
                raise k.error("connect_ip needs an address")
            c.connect_ip = str(_ip(k, k.args[0], "connect_ip"))
        elif w == "connect_port":
            c.connect_port = _int(k, 1, 65535)
        elif w == "bindto":
            if not k.args:
                raise k.error("bindto needs an address")
            c.bindto = str(_ip(k, k.args[0], "bindto"))
        elif w == "bind_port":
            c.bind_port = _int(k, 1, 65535)
        elif w == "connect_timeout":
            timeout = max(_timer(k), 1e-6)
        elif w == "retry" or (w == "nb_get_retry" and kind in ("HTTP_GET", "SSL_GET")):
            retry = _int(k, 0, 2**32 - 1)
        elif w == "delay_before_retry":
            dbr = _timer(k)
        elif w == "delay_loop":
            delay = max(_timer(k), 1e-6)
        elif w == "warmup":
            warmup = _timer(k)
        elif w == "alpha":
            alpha = _flag(k)
        elif kind in ("HTTP_GET", "SSL_GET") and w == "url":
            url = _read_url(k)
            if url is not None:
                c.urls.append(url)
        elif kind in ("HTTP_GET", "SSL_GET") and w == "virtualhost":
            if not k.args:
                raise k.error("virtualhost needs a host name")
            c.virtualhost = k.args[0]
        elif kind in ("HTTP_GET", "SSL_GET") and w == "http_protocol":
            if not k.args or k.args[0] not in ("1.0", "1.1", "1.0C", "1.0c"):
                raise k.error("http_protocol takes 1.0, 1.0C or 1.1")
            c.http_protocol = k.args[0].upper()
        elif kind == "MISC_CHECK" and w == "misc_path":
            if not k.args:
                raise k.error("misc_path needs a command")
            try:
                c.misc_path = shlex.split(" ".join(k.args))
            except ValueError as exc:
                raise k.error(f"misc_path: {exc}") from None
            misc_path_seen = True
        elif kind == "MISC_CHECK" and w == "misc_timeout":
            c.misc_timeout = _timer(k)
        elif kind == "MISC_CHECK" and w == "misc_dynamic":
            c.misc_dynamic = True
        elif w in _CHECKER_QUIET:
            pass
        elif kind in _CHECKER_UNACTED.get(w, ()):
            _warn(k, f"{kind} {w} is not acted on by fastvs")
        else:
            _warn(k, f"unknown {kind} keyword {w!r} ignored")
    if kind in ("HTTP_GET", "SSL_GET") and not c.urls:
        _warn(n, f"{kind} has no url: ignored, as keepalived does")
        return None
    if kind == "MISC_CHECK" and not misc_path_seen:
        _warn(n, "MISC_CHECK has no misc_path: ignored, as keepalived does")
        return None
    if c.supported and kind != "MISC_CHECK" and c.connect_port == 0:
        _warn(n, f"{kind} has no port to connect to (set connect_port): it will fail")
    c.alpha = rs.alpha if alpha is None else alpha  # rs.alpha holds the service's default
    c.retry = retry if retry is not None else rs.retry if rs.retry is not None else default_retry
    c.connect_timeout = timeout if timeout is not None else (
        rs.connect_timeout if rs.connect_timeout is not None else svc.connect_timeout)
    c.delay_loop = delay if delay is not None else (
        rs.delay_loop if rs.delay_loop is not None else svc.delay_loop)
    c.warmup = warmup if warmup is not None else rs.warmup if rs.warmup is not None else c.delay_loop
    c.delay_before_retry = dbr if dbr is not None else (
        rs.delay_before_retry if rs.delay_before_retry is not None else default_dbr)
    if c.virtualhost is None:
        c.virtualhost = rs.virtualhost if rs.virtualhost is not None else svc.virtualhost
    if kind == "MISC_CHECK" and not c.misc_timeout:
        c.misc_timeout = svc.delay_loop  # check_misc.c: the service's delay_loop
    return c


def _method(n: _Node) -> str:
    if not n.args or n.args[0].upper() not in _METHODS:
        raise n.error(f"{n.word} takes NAT, DR or TUN")
    return _METHODS[n.args[0].upper()]


def _read_service(
    node: _Node, groups: dict[str, list[tuple[str, str, int]]], checkers: dict[str, list[_Node]]
) -> VirtualServerConfig:
    a = node.args
    if len(a) == 2 and a[0] == "fwmark":
        mark = _int(node, 1, 2**32 - 1, 1)
        svc = VirtualServerConfig(node, [("fwmark", "", mark)])
    elif len(a) == 2 and a[0] == "group":
        if a[1] not in groups:
            raise node.error(f"no virtual_server_group named {a[1]!r}")
        svc = VirtualServerConfig(node, groups[a[1]], group=a[1])
    elif len(a) in (1, 2):
        ip = _ip(node, a[0], "virtual server")
        port = _port(node, a[1]) if len(a) == 2 else 0
        svc = VirtualServerConfig(node, [("", str(ip), port)], family=ip.version)
    else:
        raise node.error("virtual_server takes 'IP PORT', 'fwmark N' or 'group NAME'")
    for n in node.block or []:
        w = n.word
        if w in ("lb_algo", "lvs_sched"):
            if not n.args:
                raise n.error(f"{w} needs a scheduler name")
            svc.scheduler = n.args[0]
        elif w in ("lb_kind", "lvs_method"):
            svc.fwd = _method(n)
        elif w == "persistence_timeout":
            svc.persistent = _int(n, 1, 2**32 - 1) if n.args else PERSISTENT_TIMEOUT
        elif w == "persistence_granularity":
            if not n.args:
                raise n.error("persistence_granularity needs a netmask or prefix length")
            svc.granularity = n.args[0]
        elif w == "protocol":
            if not n.args or n.args[0].upper() not in _PROTOCOLS:
                raise n.error("protocol takes TCP, UDP or SCTP")
            svc.protocol = _PROTOCOLS[n.args[0].upper()]
        elif w == "ip_family":
            if not n.args or n.args[0] not in ("inet", "inet6"):
                raise n.error("ip_family takes inet or inet6")
            svc.family = 4 if n.args[0] == "inet" else 6
        elif w == "ops":
            svc.ops = True
        elif w in _SCHED_FLAG_WORDS:
            svc.sched_flags.append(w)
        elif w == "hashed":
            pass  # IP_VS_SVC_F_HASHED: the kernel sets it on every service anyway
        elif w == "weight":
            svc.weight = _int(n, 0, 65535)
        elif w == "inhibit_on_failure":
            svc.inhibit = _flag(n)
        elif w == "alpha":
            svc.alpha = _flag(n)
        elif w == "quorum":
            svc.quorum = max(1, _int(n, 0, 2**32 - 1))
        elif w == "hysteresis":
            svc.hysteresis = _int(n, 0, 2**32 - 1)
        elif w == "sorry_server":
            svc.sorry = _server(n, "sorry server")
        elif w == "sorry_server_inhibit":
            svc.sorry_inhibit = True
        elif w == "sorry_server_lvs_method":
            if svc.sorry is None:
                raise n.error("sorry_server_lvs_method before sorry_server")
            svc.sorry.fwd = _method(n)
        elif w == "real_server":
            rs = _server(n, "real server")
            _read_server(rs, checkers)
            svc.servers.append(rs)
        elif _timing(svc, n):
            pass
        elif w in ("omega", "quorum_up", "quorum_down", "ha_suspend", "smtp_alert",
                   "persistence_engine"):
            _warn(n, f"{w} is not acted on by fastvs")
        else:
            _warn(n, f"unknown virtual_server keyword {w!r} ignored")
    return svc


def _finish(svc: VirtualServerConfig) -> None:
    """keepalived's validate_check_config corrections, each said as a warning."""
    node = svc.node
    by_address = any(kind != "fwmark" for kind, _, _ in svc.targets)
    if by_address:
        if svc.protocol is None:
            _warn(node, "no protocol set: UDP, as keepalived (and the kernel) default")
            svc.protocol = "udp"
        if svc.ops and svc.protocol != "udp":
            _warn(node, "ops (one-packet scheduling) needs UDP: not set")
            svc.ops = False
        if svc.persistent is None and any(p == 0 for k, _, p in svc.targets if k != "fwmark"):
            _warn(node, f"port 0 is only for persistent services: persistence {PERSISTENT_TIMEOUT} s")
            svc.persistent = PERSISTENT_TIMEOUT
    if svc.granularity is not None and svc.persistent is None:
        svc.persistent = PERSISTENT_TIMEOUT
    total = sum(svc.weight if rs.weight is None else rs.weight for rs in svc.servers)
    if svc.quorum > total:
        _warn(node, f"quorum {svc.quorum} exceeds the {len(svc.servers)} real servers' total "
                    f"weight {total}: quorum {total}")
        svc.quorum = total
    if svc.hysteresis >= svc.quorum:
        svc.hysteresis = svc.quorum - 1
    if svc.family is None:
        fams = {ipaddress.ip_address(rs.addr).version for rs in svc.servers
                if (rs.fwd or svc.fwd) != "tunnel"}
        svc.family = fams.pop() if len(fams) == 1 else 4
    for rs in svc.servers:
        rs.fwd = rs.fwd or svc.fwd or "masq"
        rs.weight = svc.weight if rs.weight is None else rs.weight
        rs.inhibit = svc.inhibit if rs.inhibit is None else rs.inhibit
        rs.alpha = svc.alpha if rs.alpha is None else rs.alpha
        for name in ("connect_timeout", "delay_loop", "retry", "delay_before_retry", "warmup"):
            if getattr(rs, name) is None:
                setattr(rs, name, getattr(svc, name))
        port = rs.port if rs.port is not None else svc.port()
        rs.checkers = [c for c in (_read_checker(n, svc, rs, port) for n in rs.checker_nodes)
                       if c is not None]
    if svc.sorry is not None:
        svc.sorry.fwd = svc.sorry.fwd or svc.fwd or "masq"
        svc.sorry.weight = 1 if svc.sorry.weight is None else svc.sorry.weight


def _configure(rules: Rules, svc: VirtualServerConfig) -> None:
    """The services and real servers init_services adds, in its order."""
    alive = [rs for rs in svc.servers if not rs.starts_down()]
    weight_sum = sum(rs.weight or 0 for rs in alive)
    quorum_up = weight_sum >= svc.quorum + svc.hysteresis
    use_sorry = svc.sorry is not None and not quorum_up
    members: list[tuple[RealServerConfig, int]] = []  # (server, weight in IPVS)
    for rs in svc.servers:
        up = rs in alive
        if use_sorry:
            # update_quorum_state takes the live ones out again (to weight 0 when
            # inhibit_on_failure keeps them); down ones stay as init_service_rs left them
            if rs.inhibit:
                members.append((rs, 0))
        elif up:
            members.append((rs, rs.weight or 0))
        elif rs.inhibit:
            members.append((rs, 0))
    if svc.sorry is not None and use_sorry:
        members.append((svc.sorry, svc.sorry.weight or 0))
    elif svc.sorry is not None and svc.sorry_inhibit:
        members.append((svc.sorry, 0))
    where = svc.node
    for kind, addr, port in svc.targets:
        try:
            if kind == "fwmark":
                vs = rules.add_service(
                    "fwmark", fwmark=port, ipv6=svc.family == 6, scheduler=svc.scheduler or
                    DEFAULT_SCHEDULER, persistent=svc.persistent, netmask=_netmask(svc),
                    ops=svc.ops, sched_flags=svc.sched_flags,
                )
            else:
                vs = rules.add_service(
                    svc.protocol or "udp", addr, port, scheduler=svc.scheduler or
                    DEFAULT_SCHEDULER, persistent=svc.persistent, netmask=_netmask(svc),
                    ops=svc.ops, sched_flags=svc.sched_flags,
                )
            vs.line = where.line
            _add_members(rules, vs, members)
        except RulesError as exc:  # the rules were built without a source: a bare message
            raise where.error(str(exc)) from None


def _netmask(svc: VirtualServerConfig) -> str | None:
    if svc.granularity is None:
        return None
    return svc.granularity


def _add_members(rules: Rules, vs: VirtualService, members: list[tuple[RealServerConfig, int]]) -> None:
    for rs, weight in members:
        if vs.find_server(rs.addr, rs.port if rs.port is not None else vs.port) is not None:
            _warn(rs.node, f"{rs.addr} is already a real server of {vs.spec()}: skipped")
            continue
        rules.add_server(vs, rs.addr, rs.port if rs.port else None, weight=weight,
                         fwd=rs.fwd or "masq", u_threshold=rs.u_threshold,
                         l_threshold=rs.l_threshold)


_IGNORED_TOP = {
    "global_defs": "global settings", "vrrp_instance": "VRRP", "vrrp_sync_group": "VRRP",
    "vrrp_script": "VRRP", "vrrp_track_process": "VRRP", "static_ipaddress": "VRRP",
    "static_routes": "VRRP", "static_rules": "VRRP", "linkbeat_interfaces": "VRRP",
    "garp_group": "VRRP", "SSL": "health-check TLS settings", "bfd_instance": "BFD",
    "track_file": "tracking", "net_namespace": "namespace",
}  # fmt: skip


def _read_config(text: str, source: str) -> tuple[KeepalivedConfig, dict[str, list[_Node]]]:
    groups: dict[str, list[tuple[str, str, int]]] = {}
    checkers: dict[str, list[_Node]] = {}
    services: list[VirtualServerConfig] = []
    for node in _tree(text, source):
        if node.word == "virtual_server_group":
            if len(node.args) != 1 or node.block is None:
                raise node.error("virtual_server_group takes a name and a block")
            entries = _group_entries(node)
            if not entries:
                _warn(node, f"virtual server group {node.args[0]} has no entries: removed")
                continue
            groups[node.args[0]] = entries
        elif node.word == "virtual_server":
            if node.block is None:
                raise node.error("virtual_server needs a block")
            svc = _read_service(node, groups, checkers)
            if not svc.servers:
                _warn(node, "virtual server has no real servers: ignored, as keepalived does")
                continue
            _finish(svc)
            services.append(svc)
        elif node.word in _IGNORED_TOP:
            _warn(node, f"{node.word} ({_IGNORED_TOP[node.word]}) is not acted on by fastvs")
        else:
            _warn(node, f"unknown top-level keyword {node.word!r} ignored")
    return KeepalivedConfig(services, source), checkers


def _kinds_warning(kind: str, nodes: list[_Node], what: str) -> None:
    count = f"{len(nodes)} {kind} health checks (the first here) are" if len(nodes) > 1 \
        else f"the {kind} health check is"
    _warn(nodes[0], f"{count} {what}")


def read_keepalived(text: str, source: str = "<keepalived>") -> KeepalivedConfig:
    """The virtual servers, real servers and health checkers of a keepalived
    configuration, for :class:`fastvs.health.HealthMonitor` (which runs TCP_CHECK,
    HTTP_GET, SSL_GET and MISC_CHECK). The checker kinds fastvs lacks are warned about
    once per kind, naming the first's file and line: real servers start as passing them
    (failing, in alpha mode) and stay so."""
    config, checkers = _read_config(text, source)
    for kind, nodes in checkers.items():
        if kind not in SUPPORTED_CHECKERS:
            _kinds_warning(kind, nodes, "not run by fastvs: real servers start as passing "
                                        "them (failing, in alpha mode) and stay so")
    return config


def read_keepalived_file(path: str | Path) -> KeepalivedConfig:
    """:func:`read_keepalived` on a file; includes are relative to it."""
    return read_keepalived(_read(str(path)), source=str(path))


def parse_keepalived(text: str, source: str = "<keepalived>", order: Order = "kernel") -> Rules:
    """The IPVS rules keepalived would configure from ``text`` (see the module's doc).
    No check runs here (``fastvs forward`` and ``fastvs check`` run them): every checker
    block is warned about as not run."""
    config, checkers = _read_config(text, source)
    for kind, nodes in checkers.items():
        _kinds_warning(kind, nodes, "not run here (fastvs forward and fastvs check run "
                                    "them): real servers start as passing them (failing, "
                                    "in alpha mode)")
    return config.initial_rules(order)


def load_keepalived(path: str | Path, order: Order = "kernel") -> Rules:
    """:func:`parse_keepalived` on a file; includes are relative to it."""
    return parse_keepalived(_read(str(path)), source=str(path), order=order)


def is_keepalived(text: str) -> bool:
    """True when ``text`` reads as a keepalived configuration rather than ipvsadm rules."""
    return bool(_TOP_WORDS.search(text)) and not re.search(r"^\s*(ipvsadm\s+)?-[AaC]\b", text,
                                                           re.MULTILINE)
