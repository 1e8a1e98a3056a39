"""What the forwarder is told: its options (:class:`ForwardConfig`, checked before
anything is opened) and its rules (loaded, reloaded, and the addresses they name).

Imported by every other piece of the live path; imports none of them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastvs.errors import FastvsError, OptionError, RulesError

IO_KINDS = ("ring-v2", "ring-v3", "mmsg", "xdp")  # the I/O backends (fastvs/live/io.py)
XDP_MODES = ("auto", "skb", "drv")  # --xdp-mode: native else generic, generic, native
XDP_COPY = ("auto", "copy", "zerocopy")  # --xdp-copy: the AF_XDP sockets' bind mode


class ForwardError(FastvsError):
    """The forwarder cannot start (no such interface, not root, bad options)."""

    exit_code = 1


@dataclass
class ForwardConfig:
    rules: str
    client_if: str | None = None
    server_if: str | None = None
    one_arm_if: str | None = None
    workers: int = 1
    stats_every: float = 0.0
    stats_json: str | None = None
    neigh_file: str | None = None
    addrs: list[str] = field(default_factory=list)
    client_gw: list[str] = field(default_factory=list)
    batch: int = 256
    io: str = "ring-v2"
    ring_block_size: int = 1 << 16
    ring_blocks: int = 64
    ring_tov_ms: int = 1
    spin_us: int = 0
    capacity: int = 1 << 20
    seed: int | None = None
    rules_order: str = "kernel"
    keep_ttl: bool = False
    expire_nodest_conn: bool = False
    fix_offloads: bool = False
    arp_reply: bool = True
    quiet: bool = False
    control: str | None = None  # --control PATH: the ControlServer's Unix socket
    metrics: str | None = None  # --metrics ADDR:PORT: Prometheus /metrics
    sync: Any = None  # --sync-master/--sync-backup: fastvs.live.sync.SyncOptions
    # --io xdp (fastvs/live/afxdp.py): ring sizes, busy polling, attach and socket modes
    xdp_ring_size: int = 2048
    xdp_busy_poll: int = 0  # microseconds; 0: off
    xdp_mode: str = field(default_factory=lambda: os.environ.get("FASTVS_XDP_MODE", "auto"))
    xdp_copy: str = field(default_factory=lambda: os.environ.get("FASTVS_XDP_COPY", "copy"))

    def metrics_addr(self) -> tuple[str, int]:
        """``--metrics`` as (address, port); checked by :meth:`check`."""
        assert self.metrics
        host, _, port = self.metrics.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)

    def sides(self) -> list[tuple[str, str]]:
        """``[(side, ifname)]``: client then server, or the single one-arm interface."""
        if self.one_arm_if:
            return [("one-arm", self.one_arm_if)]
        assert self.client_if and self.server_if
        return [("client", self.client_if), ("server", self.server_if)]

    def check(self) -> None:
        if self.one_arm_if and (self.client_if or self.server_if):
            raise RulesError("use either --if (one-arm) or --client-if and --server-if")
        if not self.one_arm_if and not (self.client_if and self.server_if):
            raise RulesError("give --client-if and --server-if, or --if for a one-arm director")
        if self.client_if and self.client_if == self.server_if:
            self.one_arm_if, self.client_if, self.server_if = self.client_if, None, None
        if not 1 <= self.workers <= 64:
            raise RulesError("--workers must be 1..64")
        if not 1 <= self.batch <= 4096:
            raise RulesError("--batch must be 1..4096")
        if self.io not in IO_KINDS:
            raise RulesError(f"--io must be {', '.join(IO_KINDS)}")
        if self.io != "mmsg":
            from fastvs.live._afpacket import ring_geometry

            try:
                ring_geometry(self.ring_block_size, self.ring_blocks)
            except ValueError as e:
                raise RulesError(f"--ring-block-size/--ring-blocks: {e}") from None
            if not 1 <= self.ring_tov_ms <= 1000:
                raise RulesError("--ring-tov-ms must be 1..1000")
        from fastvs.control.director import check_options

        check_options(capacity=self.capacity, seed=self.seed)
        if not self.stats_every >= 0 or self.stats_every != self.stats_every:
            raise OptionError("stats_every", f"must be 0 or more seconds, not {self.stats_every:g}")
        if self.metrics is not None:
            host, _, port = self.metrics.rpartition(":")
            try:
                if not 1 <= int(port) <= 65535:
                    raise ValueError
                if host.strip("[]"):
                    ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise OptionError("metrics", f"must be ADDR:PORT (e.g. 127.0.0.1:9100), not {self.metrics!r}") from None
        if self.control is not None and not self.control:
            raise OptionError("control", "needs a socket path")
        if self.sync is not None:
            self.sync.check()
        self.check_xdp()
        if not 0 <= self.spin_us <= 100_000:
            raise RulesError("--spin-us must be 0..100000")
        self.addrs = [_canonical_ip(a, "--addr") for a in self.addrs]
        self.client_gw = [_canonical_ip(a, "--client-gw") for a in self.client_gw]
        if len({ipaddress.ip_address(a).version for a in self.client_gw}) < len(self.client_gw):
            raise RulesError("--client-gw: at most one IPv4 and one IPv6 gateway")


    def check_xdp(self) -> None:
        """The ``--xdp-*`` options (their defaults from FASTVS_XDP_MODE/FASTVS_XDP_COPY)."""
        n = self.xdp_ring_size
        if not 64 <= n <= 16384 or n & (n - 1):
            raise OptionError("xdp_ring_size", f"must be a power of two 64..16384, not {n}")
        if not 0 <= self.xdp_busy_poll <= 1_000_000:
            raise OptionError("xdp_busy_poll", f"must be 0..1000000 microseconds, not {self.xdp_busy_poll}")
        if self.xdp_mode not in XDP_MODES:
            raise OptionError("xdp_mode", f"must be {', '.join(XDP_MODES)} (or FASTVS_XDP_MODE), "
                              f"not {self.xdp_mode!r}")
        if self.xdp_copy not in XDP_COPY:
            raise OptionError("xdp_copy", f"must be {', '.join(XDP_COPY)} (or FASTVS_XDP_COPY), "
                              f"not {self.xdp_copy!r}")


def _canonical_ip(text: str, what: str) -> str:
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        raise RulesError(f"{what}: bad IP address {text!r}") from None
    if a.is_multicast or a.is_unspecified:
        raise RulesError(f"{what}: not a unicast address: {text!r}")
    return str(a)


# -- rules --------------------------------------------------------------------------------------
def load_rules(cfg: ForwardConfig) -> Any:
    """The rules file, read as ``ipvsadm -R`` would (``--rules-order``)."""
    from fastvs.control.rules import load_rules as _load

    if not os.path.exists(cfg.rules):
        raise RulesError("no such file", source=cfg.rules)
    return _load(cfg.rules, order=cfg.rules_order)  # type: ignore[arg-type]


def apply_rules(director: Any, new: Any) -> list[str]:
    """Bring a running director to ``new`` rules without dropping connections
    (``Director.reload``). Returns what changed, one line per change."""
    return list(director.reload(new))


def rules_addresses(rules: Any) -> tuple[set[str], set[str]]:
    """(VIPs, masqueraded real servers' addresses) of IPv4 and IPv6 TCP/UDP services."""
    vips: set[str] = set()
    rips: set[str] = set()
    for svc in rules.services:
        if svc.proto in ("tcp", "udp"):
            vips.add(svc.addr)
            rips.update(rs.addr for rs in svc.reals if rs.fwd == "masq")
    return vips, rips


def check_masq(rules: Any, log: Callable[[str], None]) -> None:
    for svc in rules.services:
        for rs in svc.reals:
            if rs.fwd != "masq":
                log(f"warning: {svc.spec()} -> {rs.addrport()} is {rs.fwd} (not -m): the "
                    "forwarder only sends masqueraded (NAT) traffic; add -m")


__all__ = ["IO_KINDS", "ForwardConfig", "ForwardError", "apply_rules", "check_masq", "load_rules",
           "rules_addresses"]
