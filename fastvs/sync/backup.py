"""The connection table a backup director builds from sync records
(``ip_vs_proc_conn`` and what it calls, Linux 6.1).

For each record the backup:

- looks the connection up: a template by ``ip_vs_ct_in_get`` (client, cport, VIP or
  mark, vport, protocol, TEMPLATE), a connection by ``ip_vs_conn_in_get`` (the same
  key; a cport of 0 only matches a NO_CPORT entry);
- a connection found with another real server is *replaced* (the old one expires at
  once) unless the record is INACTIVE: then it is the expiry news of a connection the
  backup already replaced and is ignored. A template is never replaced: its real server
  stays whatever it was;
- an existing entry takes the record's INACTIVE and SEQ flags (the rest of its flags
  stay), moving the real server's active/inactive counter; an unbound one tries to
  bind again (``ip_vs_try_bind_dest``);
- a new entry is bound to the real server ``ip_vs_find_dest`` finds (service by mark,
  else by protocol/VIP/vport, else a port-zero service; real server by address and
  port - port 0 for a mark service not in NAT). No such real server: the entry is
  created *unbound* and still listed (it would be forwarded by its own flags).
  Binding takes the real server's forwarding method (``ip_vs_bind_dest``);
- records are first masked with IP_VS_CONN_F_BACKUP_MASK plus SYNC (both versions);
- state = the record's; timeout = the record's seconds (v1), or for a record without
  one (v0, or v1 with 0): the protocol's table by state, 180 s for templates;
- the entry's timer restarts: it expires ``timeout`` after this record.

The table is driven by the records' arrival time (seconds, float) and never by a
clock; ``expire(now)`` drops what the backup's timers would have dropped by ``now``.
"""

from __future__ import annotations

import heapq
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastvs.control.rules import Rules, VirtualService
from fastvs.sync.proto import (
    F_BACKUP_MASK,
    F_BACKUP_UPD_MASK,
    F_DROUTE,
    F_FWD_MASK,
    F_INACTIVE,
    F_LOCALNODE,
    F_MASQ,
    F_NO_CPORT,
    F_NOOUTPUT,
    F_ONE_PACKET,
    F_SYNC,
    F_TEMPLATE,
    F_TUNNEL,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SeqAdj,
    SyncConn,
)
from fastvs.sync.states import TCP_S, state_name, state_timeout

__all__ = ["BACKUP_CONN_DTYPE", "BackupConn", "BackupTable"]

MAX_TIMEOUT_S = (2**63 - 1) // 250  # MAX_SCHEDULE_TIMEOUT / HZ on a 64-bit HZ=250 kernel
_FWD_FLAGS = {"masq": F_MASQ, "local": F_LOCALNODE, "tunnel": F_TUNNEL, "route": F_DROUTE}
_PROTO_NUM = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "sctp": IPPROTO_SCTP}


@dataclass
class Dest:
    """A real server as the backup binds connections to it, with its counters."""

    svc: VirtualService
    addr: str
    port: int
    conn_flags: int
    activeconns: int = 0
    totalconns: int = 0
    persistconns: int = 0

    @property
    def inactconns(self) -> int:
        """ip_vs_dest_inactconns(): total - active."""
        return max(0, self.totalconns - self.activeconns)


@dataclass
class BackupConn:
    af: int
    protocol: int
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    fwmark: int
    flags: int
    state: int
    timeout: int  # seconds
    expires: float  # seconds: the time it goes
    dest: Dest | None = None
    in_seq: SeqAdj | None = None
    out_seq: SeqAdj | None = None
    pe_data: bytes | None = None
    pe_name: bytes | None = None
    updates: int = 1
    seq: int = 0  # creation number in its table

    def key(self) -> tuple[int, int, str, int, str, int]:
        return (self.af, self.protocol, self.caddr, self.cport, self.vaddr, self.vport)

    @property
    def is_template(self) -> bool:
        return bool(self.flags & F_TEMPLATE)

    def entry(self, now: float) -> dict[str, Any]:
        """A fastvs.control.listing ConnEntry (plus flags, bound, timeout)."""
        proto: Any = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP"}.get(
            self.protocol, self.protocol
        )
        vaddr = self.vaddr
        return {
            "proto": proto,
            "caddr": self.caddr,
            "cport": self.cport,
            "vaddr": vaddr,
            "vport": self.vport,
            "daddr": self.daddr,
            "dport": self.dport,
            "state": state_name(self.protocol, self.state, self.flags),
            "expire": max(0.0, self.expires - now),
            "flags": self.flags,
            "template": self.is_template,
            "bound": self.dest is not None,
            "timeout": self.timeout,
            "fwmark": self.fwmark,
        }


def _active(conn: BackupConn) -> bool:
    return not conn.flags & F_INACTIVE


@dataclass
class BackupTable:
    """What a backup holds. ``rules``: the backup's own services (None: none, every
    connection stays unbound); ``threshold``: its sync_threshold (the in_pkts a
    synced entry starts with: only matters once it is a master)."""

    rules: Rules | None = None
    timeout_overrides: dict[tuple[int, int], int] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    sync_threshold: int = 3

    def __post_init__(self) -> None:
        self._dests: dict[tuple[int, str, int], Dest] = {}
        # entries in creation order, by lookup key, and by expiry (a heap whose stale
        # items are skipped): every record costs O(log n)
        self._all: dict[int, BackupConn] = {}
        self._by_key: dict[tuple[int, int, str, int, str, int], list[BackupConn]] = {}
        self._heap: list[tuple[float, int, BackupConn]] = []
        self._seq = 0
        self._push = 0
        if self.rules is not None and self.timeout_overrides is None:
            t = self.rules.timeouts
            ov: dict[tuple[int, int], int] = {}
            if t.tcp:
                ov[(IPPROTO_TCP, TCP_S["ESTABLISHED"])] = t.tcp
            if t.tcpfin:
                ov[(IPPROTO_TCP, TCP_S["FIN_WAIT"])] = t.tcpfin
            if t.udp:
                ov[(IPPROTO_UDP, 0)] = t.udp
            self.timeout_overrides = ov

    # -- lookups ------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    @property
    def conns(self) -> list[BackupConn]:
        """Every entry, oldest first."""
        return list(self._all.values())

    def _conn_in_get(self, r: SyncConn) -> BackupConn | None:
        for c in self._by_key.get(r.key(), ()):
            if (
                c.cport == r.cport
                and c.vport == r.vport
                and c.af == r.af
                and c.caddr == r.caddr
                and c.vaddr == r.vaddr
                and ((r.cport == 0) ^ (not c.flags & F_NO_CPORT))
                and c.protocol == r.protocol
            ):
                return c
        return None

    def _ct_in_get(self, r: SyncConn) -> BackupConn | None:
        for c in self._by_key.get(r.key(), ()):
            # a mark template (IPPROTO_IP) holds the mark in vaddr's first 4 bytes; the
            # kernel compares only those, the rest is zero on both sides
            vaddr_eq = c.vaddr == r.vaddr
            if (
                c.af == r.af
                and c.caddr == r.caddr
                and vaddr_eq
                and c.vport == r.vport
                and c.cport == r.cport
                and c.flags & F_TEMPLATE
                and c.protocol == r.protocol
            ):
                return c
        return None

    def _service_find(
        self, af: int, fwmark: int, protocol: int, vaddr: str, vport: int
    ) -> VirtualService | None:
        """ip_vs_service_find: by mark first, then protocol/VIP/vport, then port 0."""
        if self.rules is None:
            return None
        svcs = self.rules.services
        if fwmark:
            for s in svcs:
                if s.proto == "fwmark" and s.fwmark == fwmark and s.family == af:
                    return s
        for port in (vport, 0):
            for s in svcs:
                if (
                    s.proto != "fwmark"
                    and _PROTO_NUM.get(s.proto) == protocol
                    and s.family == af
                    and s.addr == vaddr
                    and s.port == port
                ):
                    return s
        return None

    def _find_dest(self, r: BackupConn) -> Dest | None:
        """ip_vs_find_dest(svc_af = dest_af = the record's af)."""
        svc = self._service_find(r.af, r.fwmark, r.protocol, r.vaddr, r.vport)
        if svc is None:
            return None
        port = r.dport
        if r.fwmark and (r.flags & F_FWD_MASK) != F_MASQ:
            port = 0
        for p in (port, port ^ r.dport):
            for rs in svc.reals:
                if rs.addr == r.daddr and rs.port == p and rs.family == r.af:
                    key = (id(svc), rs.addr, rs.port)
                    d = self._dests.get(key)
                    if d is None:
                        # dest->conn_flags: the method and INACTIVE (__ip_vs_update_dest,
                        # ip_vs_ctl.c:925-926), which a synced template keeps
                        conn_flags = _FWD_FLAGS.get(rs.fwd, F_MASQ) | F_INACTIVE
                        d = Dest(svc, rs.addr, rs.port, conn_flags)
                        self._dests[key] = d
                    return d
        return None

    # -- binding ------------------------------------------------------------------

    def _bind(self, c: BackupConn, d: Dest) -> None:
        """ip_vs_bind_dest for an entry created by sync."""
        conn_flags = d.conn_flags
        if c.protocol != IPPROTO_UDP:
            conn_flags &= ~F_ONE_PACKET
        flags = c.flags
        if flags & F_SYNC:
            if not flags & F_TEMPLATE:
                conn_flags &= ~F_INACTIVE
            flags &= ~(F_FWD_MASK | F_NOOUTPUT)
        c.flags = flags | conn_flags
        c.dest = d
        if not c.flags & F_TEMPLATE:
            if _active(c):
                d.activeconns += 1
            d.totalconns += 1
        else:
            d.persistconns += 1

    def _unbind(self, c: BackupConn) -> None:
        d = c.dest
        if d is None:
            return
        if not c.flags & F_TEMPLATE:
            if _active(c):
                d.activeconns -= 1
            d.totalconns -= 1
        else:
            d.persistconns -= 1
        c.dest = None

    # -- records ------------------------------------------------------------------

    def apply(self, r: SyncConn, now: float) -> str:
        """Apply one decoded record at time ``now`` (seconds). Returns what happened:
        "created", "updated", "replaced" or "ignored" (the expiry of a replaced one)."""
        self.expire(now)
        flags = (r.flags & F_BACKUP_MASK) | F_SYNC  # both versions (6.1.192)
        action = "created"
        if not flags & F_TEMPLATE:
            cp = self._conn_in_get(r)
            if cp is not None and (cp.dport != r.dport or cp.daddr != r.daddr):
                if not flags & F_INACTIVE:
                    self._remove(cp)
                    cp = None
                    action = "replaced"
                else:
                    self._count("ignored")
                    return "ignored"
        else:
            cp = self._ct_in_get(r)
        if cp is not None:
            action = "updated"
            d = cp.dest
            if (cp.flags ^ flags) & F_INACTIVE and not flags & F_TEMPLATE and d is not None:
                # inactive = total - active (6.1.192 keeps totalconns)
                d.activeconns += -1 if flags & F_INACTIVE else 1
            cp.flags = (flags & F_BACKUP_UPD_MASK) | (cp.flags & ~F_BACKUP_UPD_MASK)
            cp.updates += 1
            if d is None:
                nd = self._find_dest(cp)
                if nd is not None:
                    self._bind(cp, nd)
        else:
            cp = BackupConn(
                af=r.af,
                protocol=r.protocol,
                caddr=r.caddr,
                cport=r.cport,
                vaddr=r.vaddr,
                vport=r.vport,
                daddr=r.daddr,
                dport=r.dport,
                fwmark=r.fwmark,
                flags=flags,
                state=r.state,
                timeout=0,
                expires=now,
                pe_data=r.pe_data if flags & F_TEMPLATE else None,
                pe_name=r.pe_name if flags & F_TEMPLATE else None,
            )
            d = self._find_dest(cp)
            if d is not None:
                self._bind(cp, d)
            self._seq += 1
            cp.seq = self._seq
            self._all[cp.seq] = cp
            self._by_key.setdefault(cp.key(), []).append(cp)
        if r.in_seq is not None:  # the record had seq data (v1 option, v0 SEQ flags)
            cp.in_seq, cp.out_seq = r.in_seq, r.out_seq
        cp.state = r.state
        if r.timeout:
            cp.timeout = min(r.timeout, MAX_TIMEOUT_S)
        else:
            cp.timeout = state_timeout(r.protocol, r.state, flags, self.timeout_overrides)
        cp.expires = now + cp.timeout
        self._push += 1  # unique: the same entry may be pushed twice with one time
        heapq.heappush(self._heap, (cp.expires, self._push, cp))
        self._count(action)
        return action

    def apply_all(self, records: Iterable[SyncConn], now: float) -> None:
        for r in records:
            self.apply(r, now)

    def _remove(self, c: BackupConn) -> None:
        self._unbind(c)
        del self._all[c.seq]
        bucket = self._by_key[c.key()]
        bucket.remove(c)
        if not bucket:
            del self._by_key[c.key()]

    def expire(self, now: float) -> int:
        """Drop the entries whose timer ran out by ``now``; returns how many."""
        n = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            exp, _, c = heapq.heappop(heap)
            if self._all.get(c.seq) is c and c.expires == exp:
                self._remove(c)
                n += 1
        if n:
            self.counts["expired"] = self.counts.get("expired", 0) + n
        return n

    def entries(self, now: float) -> list[dict[str, Any]]:
        """ConnEntry rows (fastvs.control.listing.format_conns) of what is left at ``now``."""
        return [c.entry(now) for c in self._all.values() if c.expires > now]

    def dests(self) -> list[Dest]:
        return list(self._dests.values())

    def to_array(self, now: float) -> np.ndarray:
        """The entries alive at ``now`` as rows of ``BACKUP_CONN_DTYPE``, for an engine's
        bulk insert (``--sync-in``): ``expire_ns`` is the time left at ``now``;
        ``svc`` / ``real`` index ``rules.services`` and that service's ``reals`` (-1:
        unbound); ``in_pkts`` is what ip_vs_proc_conn sets (sync_threshold, default
        3)."""
        alive = [c for c in self._all.values() if c.expires > now]
        out = np.zeros(len(alive), BACKUP_CONN_DTYPE)
        svcs = {id(s): i for i, s in enumerate(self.rules.services)} if self.rules else {}
        for i, c in enumerate(alive):
            row = out[i]
            row["af"], row["protocol"], row["state"] = c.af, c.protocol, c.state
            row["flags"], row["fwmark"] = c.flags, c.fwmark
            row["cport"], row["vport"], row["dport"] = c.cport, c.vport, c.dport
            for name in ("caddr", "vaddr", "daddr"):
                row[name] = np.void(_pton16(c.af, getattr(c, name)))
            row["timeout_s"] = c.timeout
            row["expire_ns"] = int(round((c.expires - now) * 1e9))
            row["in_pkts"] = self.sync_threshold
            if c.dest is not None:
                si = svcs[id(c.dest.svc)]
                row["svc"] = si
                reals = c.dest.svc.reals
                row["real"] = next(
                    j
                    for j, rs in enumerate(reals)
                    if (rs.addr, rs.port) == (c.dest.addr, c.dest.port)
                )
            else:
                row["svc"] = row["real"] = -1
        return out


BACKUP_CONN_DTYPE = np.dtype(
    [
        ("af", "u1"),
        ("protocol", "u1"),
        ("state", "<u2"),
        ("flags", "<u4"),
        ("cport", "<u2"),
        ("vport", "<u2"),
        ("dport", "<u2"),
        ("fwmark", "<u4"),
        ("timeout_s", "<u4"),
        ("expire_ns", "<i8"),
        ("in_pkts", "<u4"),
        ("svc", "<i4"),
        ("real", "<i4"),
        ("caddr", "V16"),
        ("vaddr", "V16"),
        ("daddr", "V16"),
    ]
)


def _pton16(af: int, addr: str) -> bytes:
    if af == 6:
        return socket.inet_pton(socket.AF_INET6, addr)
    return socket.inet_aton(addr) + bytes(12)
