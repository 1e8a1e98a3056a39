"""Live connection sync for ``fastvs forward``: the kernel's sync daemon on real sockets
(net/netfilter/ipvs/ip_vs_sync.c, Linux 6.1), and the master/backup role.

- :class:`SyncOptions`: ``--sync-master IF`` / ``--sync-backup IF`` and the sysctls
  (``sync_version``, ``sync_threshold``, ``sync_refresh_period``, ``sync_retries``,
  ``sync_persist_mode``, ``sync_ports``) and ipvsadm ``--start-daemon``'s ``--syncid``,
  ``--mcast-group``, ``--mcast-port``, ``--mcast-ttl``, ``--sync-maxlen``, checked as the
  kernel's sysctl handlers and ipvsadm check them.
- :class:`SyncSender`: a master's sender. The engine decides which records go
  (``Director.take_sync_events``); they are packed as the kernel's sync buffer does
  (:class:`fastvs.sync.proto.MessageBuilder`) and timed as its thread does
  (:class:`fastvs.sync.policy.Batcher`: a message leaves when full, else 2 s after its
  first record), and sent from a UDP socket made as ``make_send_sock`` makes it:
  multicast out of the interface, loop off, TTL ``--mcast-ttl`` (1), bound to the
  interface's address, connected to the group and ``port + id`` (``sync_ports``: one
  sender per worker, worker w being the kernel's master thread ``w % sync_ports``).
- :class:`SyncReceiver`: a backup's receiver. One socket per port
  (``make_receive_sock``: bound to the group and port, to the device, the group
  joined on it), read into a ``sync_maxlen`` buffer; every datagram is checked as
  ``ip_vs_process_message`` checks it (:func:`fastvs.sync.proto.decode_message`; a
  bad one is counted under its reason and dropped, never raised), its records applied
  to a :class:`fastvs.sync.backup.BackupTable` (``ip_vs_proc_conn``: create, update,
  replace, unbound entries, timeouts) and the entries they touched given to the
  worker's engine (``Director.insert_sync_conns``), which applies them the same way
  (an upsert: an entry it holds is updated, one to another real server replaced).

Workers. With ``--workers N`` every worker opens its own receiver: a multicast
datagram reaches every socket bound to its group and port, so each worker reads every
message and keeps only the connections whose flows its fanout steers to it
(:func:`owner`, the model of the fanout program in fastvs/live/bpf.py: a hash of the
client's address and port); persistence templates (client port 0, shared by all of a
client's connections, which the fanout spreads over workers) go to every worker. So no
connection is held twice and the listing's sums stay true.

Roles. A *master* forwards, answers ARP/ND for the VIPs and ``--addr``, and sends sync
messages; datagrams that still reach its receiver are read and counted
(``sync_rx_ignored``), not applied. A *backup* keeps its connection table filled from
the master's messages but forwards nothing: it does not answer ARP/ND for the VIPs or
``--addr`` (as keepalived removes the VIPs from a backup, so the backup's IPVS never
sees their traffic), and a frame that still reaches it (a peer's stale neighbour
entry) is dropped and counted (``backup_dropped``); TCP sends it again, to the master,
once the master's gratuitous ARP / unsolicited NA has updated the peer. ``fastvs ctl
role master|backup`` switches (keepalived's notify scripts call it); a new master
announces its addresses at once and again one second later.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastvs.errors import FastvsError, OptionError
from fastvs.live.bpf import fanout_worker
from fastvs.sync.backup import BACKUP_CONN_DTYPE, BackupConn, BackupTable
from fastvs.sync.master import events_to_records
from fastvs.sync.policy import Batcher
from fastvs.sync.proto import (
    F_TEMPLATE,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SYNC_GROUP,
    SYNC_PORT,
    MessageBuilder,
    SyncConn,
    decode_message,
    sync_maxlen,
)

ROLES = ("master", "backup")
SYNC_PORTS_MAX = 64  # IPVS_SYNC_PORTS_MAX: start_sync_thread clamps sync_ports to 1..64
MAX_DATAGRAMS_PER_POLL = 256  # a backup reads at most this many datagrams between batches
ANNOUNCE_AGAIN_S = 1.0  # a new master announces its addresses again after this long
_PROTO_NUM = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "sctp": IPPROTO_SCTP}
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class SyncError(FastvsError):
    """A sync socket cannot be opened (no such interface, no address on it)."""

    exit_code = 1


# -- options ------------------------------------------------------------------------------------
@dataclass
class SyncOptions:
    """What ``fastvs forward`` is told about sync (defaults: the kernel's)."""

    role: str  # the role at start: "master" (--sync-master) or "backup" (--sync-backup)
    ifname: str
    syncid: int = 0
    version: int = 1  # sync_version
    threshold: int = 3  # sync_threshold[0]
    period: int = 50  # sync_threshold[1]
    refresh_period: int = 0  # sync_refresh_period, seconds
    retries: int = 0  # sync_retries
    persist_mode: bool = False  # sync_persist_mode
    ports: int = 1  # sync_ports
    group: str = SYNC_GROUP
    port: int = SYNC_PORT
    ttl: int = 1
    maxlen: int = 0  # --sync-maxlen (0: from the MTU, as the kernel)

    def check(self) -> None:
        """Refuse what the kernel's handlers refuse, as one line (OptionError)."""
        if self.role not in ROLES:
            raise OptionError("sync_role", f"must be master or backup, not {self.role!r}")
        if not self.ifname:
            raise OptionError(f"sync_{self.role}", "needs an interface")
        if not 0 <= self.syncid <= 255:  # ipvsadm --syncid: 0..255
            raise OptionError("syncid", f"must be 0..255, not {self.syncid}")
        if self.version not in (0, 1):  # proc_do_sync_mode
            raise OptionError("sync_version", f"must be 0 or 1, not {self.version}")
        # proc_do_sync_threshold: both >= 0, threshold < period unless period is 0
        if self.threshold < 0 or self.period < 0 or (self.period and self.threshold >= self.period):
            raise OptionError("sync_threshold", f"{self.threshold} {self.period}: needs 0 <= "
                              "THRESHOLD < PERIOD (or PERIOD 0: send on state changes only)")
        if self.refresh_period < 0:
            raise OptionError("sync_refresh_period", f"must be 0 or more seconds, not {self.refresh_period}")
        if not 0 <= self.retries <= 3:  # sync_retries: proc_dointvec_minmax 0..3
            raise OptionError("sync_retries", f"must be 0..3, not {self.retries}")
        # proc_do_sync_ports: a power of two, at least 1 (start_sync_thread takes at most 64)
        if self.ports < 1 or self.ports & (self.ports - 1) or self.ports > SYNC_PORTS_MAX:
            raise OptionError("sync_ports", f"must be a power of two 1..{SYNC_PORTS_MAX}, not {self.ports}")
        try:
            g = ipaddress.ip_address(self.group)
        except ValueError:
            raise OptionError("mcast_group", f"bad address {self.group!r}") from None
        if not g.is_multicast:  # ipvsadm: the group must be multicast
            raise OptionError("mcast_group", f"{self.group} is not a multicast address")
        self.group = str(g)
        if not 1 <= self.port or self.port + self.ports - 1 > 65535:
            raise OptionError("mcast_port", f"must be 1..65535 (with sync_ports), not {self.port}")
        if not 1 <= self.ttl <= 255:  # ipvsadm --mcast-ttl 1..255
            raise OptionError("mcast_ttl", f"must be 1..255, not {self.ttl}")
        if self.maxlen < 0 or self.maxlen > 65535:
            raise OptionError("sync_maxlen", f"must be 0..65535, not {self.maxlen}")

    @property
    def ipv6(self) -> bool:
        return ":" in self.group

    def engine_kwargs(self) -> dict[str, Any]:
        """The keywords of ``Director.enable_sync_master`` / ``Engine.set_sync``."""
        return {"version": self.version, "threshold": self.threshold, "period": self.period,
                "refresh_period": self.refresh_period, "retries": self.retries,
                "persist_mode": self.persist_mode}


# -- interfaces ---------------------------------------------------------------------------------
def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise SyncError(f"sync interface {ifname}: no such interface") from None


def _if_mtu(ifname: str) -> int:
    try:
        with open(f"/sys/class/net/{ifname}/mtu") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1500


def if_addr4(ifname: str) -> str:
    """The interface's first IPv4 address (SIOCGIFADDR), as bind_mcastif_addr takes it."""
    import fcntl

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16s16x", ifname.encode()[:15])
        res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
    except OSError:
        raise SyncError(f"sync interface {ifname}: no IPv4 address (the kernel's sync "
                        "daemon binds to it too)") from None
    finally:
        s.close()
    return socket.inet_ntoa(res[20:24])


def send_socket(opts: SyncOptions, wid: int = 0) -> socket.socket:
    """A master's socket as ``make_send_sock`` makes it, for master thread
    ``wid % sync_ports``: multicast out of the interface, loop off, TTL, bound to the
    interface's address, connected to (group, port + id). Non-blocking."""
    idx = _ifindex(opts.ifname)
    port = opts.port + wid % opts.ports
    if opts.ipv6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, opts.ttl)
            s.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, opts.ifname.encode())
            s.connect((opts.group, port, 0, idx))
        except OSError as e:
            s.close()
            raise SyncError(f"sync socket on {opts.ifname}: {e.strerror or e}") from None
    else:
        addr = if_addr4(opts.ifname)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                         struct.pack("4s4si", socket.inet_aton(opts.group), socket.inet_aton(addr), idx))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, opts.ttl)
            s.bind((addr, 0))
            s.connect((opts.group, port))
        except OSError as e:
            s.close()
            raise SyncError(f"sync socket on {opts.ifname}: {e.strerror or e}") from None
    s.setblocking(False)
    return s


def receive_sockets(opts: SyncOptions) -> list[socket.socket]:
    """A backup's sockets as ``make_receive_sock`` makes them, one per sync port:
    address reuse, bound to the device and to (group, port + id), the group joined on
    the interface. Non-blocking."""
    idx = _ifindex(opts.ifname)
    out: list[socket.socket] = []
    try:
        for i in range(opts.ports):
            fam = socket.AF_INET6 if opts.ipv6 else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            out.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, opts.ifname.encode())
            if opts.ipv6:
                s.bind((opts.group, opts.port + i, 0, idx))
                mreq = socket.inet_pton(socket.AF_INET6, opts.group) + struct.pack("@I", idx)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            else:
                s.bind((opts.group, opts.port + i))
                mreq = struct.pack("4s4si", socket.inet_aton(opts.group), bytes(4), idx)  # ip_mreqn
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            s.setblocking(False)
    except OSError as e:
        for s in out:
            s.close()
        raise SyncError(f"sync socket on {opts.ifname}: {e.strerror or e}") from None
    return out


# -- master -------------------------------------------------------------------------------------
class SyncSender:
    """A master's records -> messages -> datagrams, timed by a monotonic clock
    (seconds). ``sock`` is any connected datagram socket (tests pass their own)."""

    def __init__(self, opts: SyncOptions, sock: socket.socket, *, maxlen: int | None = None) -> None:
        self.opts = opts
        self.sock = sock
        if maxlen is None:
            maxlen = sync_maxlen(ipv6=opts.ipv6, configured=opts.maxlen)
        self.batcher = Batcher(MessageBuilder(opts.syncid, maxlen, opts.version))
        self.counts = {"sync_tx_records": 0, "sync_tx_messages": 0, "sync_tx_bytes": 0,
                       "sync_tx_errors": 0}

    def feed(self, events: np.ndarray, now: float) -> None:
        """Records of the engine's events (``SYNC_EVENT_DTYPE``), at time ``now``."""
        for rec in events_to_records(events):
            self.add(rec, now)

    def add(self, rec: SyncConn, now: float) -> None:
        self.batcher.add(rec, now, self.opts.version)
        self.counts["sync_tx_records"] += 1
        self._send_out()

    def tick(self, now: float) -> None:
        """Send the partial message once it is 2 s old (sync_thread_master's
        get_curr_sync_buff(IPVS_SYNC_FLUSH_TIME))."""
        if self.batcher.firstuse is not None:
            self.batcher.tick(now)
            self._send_out()

    def flush(self) -> None:
        """Send what is pending now (a demotion or a stop; the kernel's thread drops
        its queue when stopped, fastvs hands it to the peer that takes over)."""
        self.batcher.close()
        self._send_out()

    def _send_out(self) -> None:
        out = self.batcher.out
        if not out:
            return
        for _, msg in out:
            try:
                self.sock.send(msg)
            except OSError:  # ip_vs_send_async: a full queue or no route loses the message
                self.counts["sync_tx_errors"] += 1
                continue
            self.counts["sync_tx_messages"] += 1
            self.counts["sync_tx_bytes"] += len(msg)
        out.clear()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# -- backup -------------------------------------------------------------------------------------
def owner(caddr: str, cport: int, workers: int) -> int:
    """The worker whose fanout gets a connection's frames (fastvs/live/bpf.py)."""
    if workers <= 1:
        return 0
    return fanout_worker(caddr, cport, workers)


def _svc_index(rules: Any) -> tuple[dict[tuple[Any, ...], int], list[dict[tuple[str, int], int]]]:
    svcs: dict[tuple[Any, ...], int] = {}
    reals: list[dict[tuple[str, int], int]] = []
    for i, s in enumerate(rules.services if rules is not None else ()):
        key = ("fwmark", s.fwmark, s.family) if s.proto == "fwmark" else (s.proto, s.addr, s.port, s.family)
        svcs.setdefault(key, i)
        reals.append({(rs.addr, rs.port): j for j, rs in enumerate(s.reals)})
    return svcs, reals


def _pton16(af: int, addr: str) -> bytes:
    if af == 6:
        return socket.inet_pton(socket.AF_INET6, addr)
    return socket.inet_aton(addr) + bytes(12)


def conn_rows(conns: list[BackupConn], now: float, rules: Any, threshold: int) -> np.ndarray:
    """Rows of ``BACKUP_CONN_DTYPE`` for these entries at ``now`` (as
    ``BackupTable.to_array`` for a subset): ``expire_ns`` the time left, ``svc`` /
    ``real`` the indexes of the bound real server in ``rules`` (-1: unbound),
    ``in_pkts`` = sync_threshold (ip_vs_proc_conn)."""
    out = np.zeros(len(conns), BACKUP_CONN_DTYPE)
    if not conns:
        return out
    svcs, reals = _svc_index(rules)
    # column by column: a structured row assignment costs microseconds per field
    for name in ("af", "protocol", "state", "flags", "fwmark", "cport", "vport", "dport"):
        out[name] = [getattr(c, name) for c in conns]
    out["timeout_s"] = [c.timeout for c in conns]
    for name in ("caddr", "vaddr", "daddr"):
        raw = b"".join(_pton16(c.af, getattr(c, name)) for c in conns)
        out[name] = np.frombuffer(raw, "V16")
    out["expire_ns"] = [max(0, int(round((c.expires - now) * 1e9))) for c in conns]
    out["in_pkts"] = threshold
    idx: list[tuple[int, int]] = []
    for c in conns:
        si = ri = -1
        d = c.dest
        if d is not None:
            sv = d.svc
            key = ("fwmark", sv.fwmark, sv.family) if sv.proto == "fwmark" else (sv.proto, sv.addr, sv.port, sv.family)
            si = svcs.get(key, -1)
            if si >= 0:
                ri = reals[si].get((d.addr, d.port), -1)
                if ri < 0:
                    si = -1
        idx.append((si, ri))
    out["svc"] = [i for i, _ in idx]
    out["real"] = [j for _, j in idx]
    return out


class SyncReceiver:
    """A backup's datagrams -> checked records -> the table -> engine rows.

    ``insert(rows, now_ns)`` takes the rows (``Director.insert_sync_conns``); with
    ``workers`` > 1 only the connections worker ``wid`` owns are kept (and every
    template). ``socks``: the receive sockets (default: :func:`receive_sockets`)."""

    def __init__(self, opts: SyncOptions, rules: Any, insert: Callable[[np.ndarray, int], int] | None,
                 *, wid: int = 0, workers: int = 1, socks: Iterable[socket.socket] | None = None,
                 mtu: int | None = None) -> None:
        self.opts = opts
        self.rules = rules
        self.insert = insert
        self.wid, self.workers = wid, workers
        self.socks = list(socks) if socks is not None else receive_sockets(opts)
        if mtu is None:
            mtu = _if_mtu(opts.ifname)
        self.maxlen = sync_maxlen(mtu, backup=True, ipv6=opts.ipv6, configured=opts.maxlen)
        self.table = BackupTable(rules, sync_threshold=opts.threshold)
        self.applying = True  # False as a master: datagrams are read and counted only
        self.counts: dict[str, int] = {
            "sync_rx_datagrams": 0, "sync_rx_bad": 0, "sync_rx_records": 0,
            "sync_rx_other_worker": 0, "sync_rx_inserted": 0, "sync_rx_ignored": 0}
        self.drops: dict[str, int] = {}
        self._ep = select.epoll()
        for s in self.socks:
            self._ep.register(s.fileno(), select.EPOLLIN)

    def fileno(self) -> int:
        """One descriptor for all the sockets (an epoll), for the worker's poll."""
        return self._ep.fileno()

    def set_rules(self, rules: Any) -> None:
        """The rules changed: entries bind to the new table's real servers from now on."""
        self.rules = rules
        self.table.rules = rules
        self.table._dests.clear()  # noqa: SLF001 - the cache of real servers of the old rules

    def poll(self, now: float | None = None, now_ns: int | None = None) -> int:
        """Read what is waiting (at most MAX_DATAGRAMS_PER_POLL datagrams); returns the
        number of datagrams read."""
        if now is None:
            now = time.monotonic()
        if now_ns is None:
            now_ns = time.monotonic_ns()
        got = 0
        touched: dict[int, BackupConn] = {}
        for s in self.socks:
            while got < MAX_DATAGRAMS_PER_POLL:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self.counts["sync_rx_bad"] += 1
                    break
                got += 1
                self.datagram(data, now, touched)
        self.table.expire(now)
        if touched:
            alive = self.table._all  # noqa: SLF001
            self._insert([c for c in touched.values() if c.seq in alive], now, now_ns)
        return got

    def datagram(self, data: bytes, now: float, touched: dict[int, BackupConn] | None = None) -> int:
        """One datagram: checked, counted, applied (as a backup). Returns the records
        kept. Never raises on bad input.

        ``touched`` collects, in order, the entries for the engine: each entry once,
        as it is after the last record (the engine's upsert of it is the same as of
        every record in turn), and a replaced connection also as it was made (under
        ``-seq``, before its own key), so that the engine replaces the old one even
        when a later record of the same poll made the new one INACTIVE: the engine
        would take that one for the old connection's expiry news."""
        self.counts["sync_rx_datagrams"] += 1
        if not self.applying:
            self.counts["sync_rx_ignored"] += 1
            return 0
        res = decode_message(data, self.opts.syncid, maxlen=self.maxlen)
        if res.drops:
            self.counts["sync_rx_bad"] += 1
            for why, n in res.drops.items():
                key = "sync_rx_drop_" + why
                self.drops[key] = self.drops.get(key, 0) + n
        kept = 0
        for r in res.conns:
            self.counts["sync_rx_records"] += 1
            if not r.flags & F_TEMPLATE and owner(r.caddr, r.cport, self.workers) != self.wid:
                self.counts["sync_rx_other_worker"] += 1
                continue
            action = self.table.apply(r, now)
            kept += 1
            if action == "ignored" or touched is None:
                continue
            c = self.table._ct_in_get(r) if r.flags & F_TEMPLATE else self.table._conn_in_get(r)  # noqa: SLF001
            if c is not None:
                if action == "replaced":
                    touched[-c.seq] = copy.copy(c)
                touched[c.seq] = c
        return kept

    def _insert(self, conns: list[BackupConn], now: float, now_ns: int) -> None:
        if not conns:
            return
        rows = conn_rows(conns, now, self.rules, self.opts.threshold)
        if self.insert is not None:
            n = self.insert(rows, now_ns)
            self.counts["sync_rx_inserted"] += int(n if n is not None else len(rows))

    def all_counts(self) -> dict[str, int]:
        out = dict(self.counts)
        out.update(self.drops)
        out["sync_table"] = len(self.table._all)  # noqa: SLF001
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._ep.close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()


# -- a worker's sync ----------------------------------------------------------------------------
class LiveSync:
    """One worker's sync: its sender (as a master), its receiver (always open; applied
    as a backup) and its role. ``director`` is the worker's
    :class:`fastvs.control.director.Director`."""

    def __init__(self, opts: SyncOptions, director: Any, rules: Any, *, wid: int = 0,
                 workers: int = 1, log: Callable[[str], None] = lambda m: None) -> None:
        self.opts = opts
        self.director = director
        self.log = log
        self.role = opts.role
        enable = getattr(director, "enable_sync_master", None)
        self.engine_sync = enable is not None
        if enable is not None:
            enable(**opts.engine_kwargs())
        insert = getattr(director, "insert_sync_conns", None)
        self.receiver = SyncReceiver(opts, rules, insert, wid=wid, workers=workers)
        try:
            self.sender = SyncSender(opts, send_socket(opts, wid))
        except BaseException:
            self.receiver.close()
            raise
        self.receiver.applying = self.role == "backup"
        self.counts = {"backup_dropped": 0, "role_changes": 0}
        self.closed = False

    @property
    def master(self) -> bool:
        return self.role == "master"

    def fileno(self) -> int:
        return self.receiver.fileno()

    def set_role(self, role: str) -> bool:
        """Switch; True if the role changed."""
        if role not in ROLES:
            raise OptionError("role", f"must be master or backup, not {role!r}")
        if role == self.role:
            return False
        if self.role == "master":
            self.take_events(time.monotonic())
            self.sender.flush()
        self.role = role
        self.receiver.applying = role == "backup"
        self.counts["role_changes"] += 1
        return True

    def take_events(self, now: float) -> None:
        """A master: the engine's events since the last call, to the sender."""
        if self.engine_sync and self.role == "master":
            ev = self.director.take_sync_events()
            if len(ev):
                self.sender.feed(ev, now)

    def tick(self, now: float) -> None:
        if self.role == "master":
            self.sender.tick(now)

    def counters(self) -> dict[str, int]:
        out = dict(self.counts)
        out.update(self.sender.counts)
        out.update(self.receiver.all_counts())
        out["sync_master"] = int(self.role == "master")
        return out

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.role == "master":
            with contextlib.suppress(Exception):
                self.take_events(time.monotonic())
                self.sender.flush()
        self.sender.close()
        self.receiver.close()


__all__ = ["ROLES", "LiveSync", "SyncError", "SyncOptions", "SyncReceiver", "SyncSender", "conn_rows",
           "if_addr4", "owner", "receive_sockets", "send_socket"]


# -- command line -------------------------------------------------------------------------------
def add_sync_arguments(p: Any) -> None:
    """``fastvs forward``'s sync options (ipvsadm --start-daemon's and the sysctls)."""
    g = p.add_argument_group("connection sync (ipvsadm --start-daemon, net.ipv4.vs.sync_*)")
    role = g.add_mutually_exclusive_group()
    role.add_argument("--sync-master", metavar="IF",
                      help="start as the master: forward, and send connection sync messages "
                      "out of IF (an interface with an address, e.g. the VRRP link)")
    role.add_argument("--sync-backup", metavar="IF",
                      help="start as a backup: take the master's sync messages on IF, keep its "
                      "connections, forward nothing until `fastvs ctl role master`")
    g.add_argument("--syncid", type=int, default=None, metavar="N",
                   help="sync id 0..255 in messages sent; a backup takes only this id (0: any)")
    g.add_argument("--sync-version", type=int, default=None, metavar="0|1", help="sync_version (1)")
    g.add_argument("--sync-threshold", type=int, nargs=2, default=None, metavar=("T", "P"),
                   help="sync_threshold: send at the T-th packet, then every P (3 50)")
    g.add_argument("--sync-refresh-period", type=int, default=None, metavar="S",
                   help="sync_refresh_period in seconds (0: off)")
    g.add_argument("--sync-retries", type=int, default=None, metavar="N", help="sync_retries 0..3 (0)")
    g.add_argument("--sync-persist-mode", action="store_true", default=None,
                   help="sync_persist_mode: sync persistent connections less often")
    g.add_argument("--sync-ports", type=int, default=None, metavar="N",
                   help="sync_ports: ports group port .. port+N-1 (a power of two; 1)")
    g.add_argument("--mcast-group", default=None, metavar="ADDR", help=f"multicast group ({SYNC_GROUP})")
    g.add_argument("--mcast-port", type=int, default=None, metavar="PORT", help=f"UDP port ({SYNC_PORT})")
    g.add_argument("--mcast-ttl", type=int, default=None, metavar="N", help="multicast TTL 1..255 (1)")
    g.add_argument("--sync-maxlen", type=int, default=None, metavar="BYTES",
                   help="longest sync message (default: from the MTU, as the kernel)")


_SYNC_DESTS = {"syncid": "syncid", "sync_version": "version", "sync_refresh_period": "refresh_period",
               "sync_retries": "retries", "sync_persist_mode": "persist_mode", "sync_ports": "ports",
               "mcast_group": "group", "mcast_port": "port", "mcast_ttl": "ttl", "sync_maxlen": "maxlen"}


def sync_options_from_args(a: Any) -> SyncOptions | None:
    """The SyncOptions of parsed arguments (None without --sync-master/--sync-backup;
    a sync option without either is an error)."""
    given = [k for k in (*_SYNC_DESTS, "sync_threshold") if getattr(a, k, None) is not None]
    master, backup = getattr(a, "sync_master", None), getattr(a, "sync_backup", None)
    if master is None and backup is None:
        if given:
            raise OptionError(given[0], "needs --sync-master IF or --sync-backup IF")
        return None
    opts = SyncOptions(role="master" if master is not None else "backup", ifname=master or backup or "")
    for k, field_name in _SYNC_DESTS.items():
        v = getattr(a, k, None)
        if v is not None:
            setattr(opts, field_name, v)
    if getattr(a, "sync_threshold", None) is not None:
        opts.threshold, opts.period = a.sync_threshold
    return opts


__all__ += ["add_sync_arguments", "sync_options_from_args"]
