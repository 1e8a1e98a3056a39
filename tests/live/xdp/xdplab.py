"""Network namespaces for the XDP tests: a director namespace joined to a client (and
optionally a server) namespace by veth pairs; the test process enters the director
namespace (this thread only) with setns while it attaches programs and binds sockets."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run this thread in network namespace ``ns`` for the block."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        _libc.setns(back, CLONE_NEWNET)
        os.close(fd)
        os.close(back)


@dataclass
class Lab:
    director: str
    client: str
    server: str
    dmac: str  # d0's MAC (director, client side)

    def cl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.client, *args, check=check)

    def sv(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.server, *args, check=check)


def _usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        from fastvs.live.xdp.probe import unavailable
    except ImportError as e:
        return f"fastvs.live.xdp not built: {e}"
    return unavailable()


WHY = _usable()
needs_lab = pytest.mark.skipif(WHY is not None, reason=WHY or "")


@pytest.fixture(name="lab")
def lab_fixture() -> Iterator[Lab]:
    """client ns: c0 10.9.0.2 (tx checksum offload off) <-> director ns: d0 10.9.0.1;
    director ns: d1 10.8.0.1 <-> server ns: s0 10.8.0.2. The VIP 10.9.0.100 is
    configured nowhere; the client's neighbour entry for it points at d0."""
    tag = f"fvx-{os.getpid()}"
    d, c, s = f"{tag}-d", f"{tag}-c", f"{tag}-s"
    made: list[str] = []
    try:
        for ns in (d, c, s):
            run("ip", "netns", "add", ns)
            made.append(ns)
        run("ip", "link", "add", "d0", "netns", d, "type", "veth", "peer", "name", "c0", "netns", c)
        run("ip", "link", "add", "d1", "netns", d, "type", "veth", "peer", "name", "s0", "netns", s)
        for ns, dev, addr in ((d, "d0", "10.9.0.1/24"), (c, "c0", "10.9.0.2/24"),
                              (d, "d1", "10.8.0.1/24"), (s, "s0", "10.8.0.2/24")):
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "netns", "exec", c, "ethtool", "-K", "c0", "tx", "off", check=False)
        dmac = run("ip", "netns", "exec", d, "cat", "/sys/class/net/d0/address").stdout.strip()
        run("ip", "-n", c, "neigh", "add", "10.9.0.100", "lladdr", dmac, "dev", "c0")
        yield Lab(d, c, s, dmac)
    finally:
        for ns in made:
            try:  # lock files a killed holder left (tests kill them on purpose)
                ino = os.stat(f"/run/netns/{ns}").st_ino
                for f in glob.glob(f"/run/fastvs/xdp-{ino}-*.lock"):
                    os.unlink(f)
            except OSError:
                pass
            run("ip", "netns", "del", ns, check=False)
