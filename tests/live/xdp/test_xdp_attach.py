"""Attaching the XDP program: attach/detach, leftovers after SIGKILL, a foreign program,
a second running instance, bpf_link, refusals and missing privileges as one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from xdplab import (
    Lab,
    inside,
    lab_fixture,  # noqa: F401  (the "lab" fixture)
    needs_lab,
    run,
)

from fastvs.live.xdp import asm, bpf, netlink
from fastvs.live.xdp.attach import XdpError, attach, ifindex_of, lock_path
from fastvs.live.xdp.program import PROG_NAME, XdpProgram

pytestmark = needs_lab

HOLDER = """
import sys, time
from fastvs.live.xdp.program import XdpProgram
from fastvs.live.xdp.attach import attach
p = XdpProgram()
a = attach("d0", p, mode="skb", method=sys.argv[1])
print(p.prog_id, flush=True)
time.sleep(60)
"""


def _state() -> netlink.XdpState:
    return netlink.query(ifindex_of("d0"))


def _name(prog_id: int) -> str:
    fd = bpf.prog_fd_by_id(prog_id)
    try:
        return str(bpf.prog_info(fd)["name"])
    finally:
        os.close(fd)


def _killed_holder(lab: Lab, method: str) -> int:
    """Attach from a process, SIGKILL it; returns the program id it had attached."""
    p = subprocess.Popen(["ip", "netns", "exec", lab.director, sys.executable, "-c", HOLDER, method],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip().isdigit(), line
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(0.2)
    return int(line)


def test_attach_and_detach(lab: Lab) -> None:
    with inside(lab.director), XdpProgram() as p:
        a = attach("d0", p, mode="skb")
        assert os.path.exists(lock_path(ifindex_of("d0")))
        st = _state()
        assert (a.mode, st.mode, st.skb_id) == ("skb", "generic", p.prog_id)
        a.detach()
        assert _state().prog_id == 0
        assert not os.path.exists(lock_path(ifindex_of("d0")))
        a.detach()  # twice is harmless
        with attach("d0", p, mode="auto") as b:  # veth has native XDP
            assert b.mode == "drv" and _state().drv_id == p.prog_id
        assert _state().prog_id == 0


def test_leftover_after_sigkill_is_removed(lab: Lab) -> None:
    pid = _killed_holder(lab, "netlink")
    with inside(lab.director):
        st = _state()
        assert st.skb_id == pid and _name(pid) == PROG_NAME  # left behind
        with XdpProgram() as p, attach("d0", p, mode="skb") as a:
            assert [x.prog_id for x in a.leftovers] == [pid]
            assert _state().skb_id == p.prog_id
        assert _state().prog_id == 0


def test_bpf_link_leaves_nothing_after_sigkill(lab: Lab) -> None:
    _killed_holder(lab, "link")
    with inside(lab.director):
        assert _state().prog_id == 0


def test_foreign_program_is_left_alone(lab: Lab) -> None:
    a = asm.Asm()
    a.movi(asm.R0, 2)
    a.exit()
    with inside(lab.director):
        fd = bpf.prog_load(a.assemble(), "someone_else")
        try:
            netlink.set_xdp(ifindex_of("d0"), fd, netlink.XDP_FLAGS_SKB_MODE)
            other = _state().skb_id
            with XdpProgram() as p, pytest.raises(XdpError) as ei:
                attach("d0", p, mode="skb")
            msg = str(ei.value)
            assert "\n" not in msg and "someone_else" in msg and "not ours" in msg, msg
            assert _state().skb_id == other  # untouched
        finally:
            netlink.set_xdp(ifindex_of("d0"), -1, netlink.XDP_FLAGS_SKB_MODE)
            os.close(fd)


def test_second_running_instance_is_refused(lab: Lab) -> None:
    with inside(lab.director), XdpProgram() as p, attach("d0", p, mode="skb"):
        with XdpProgram() as q, pytest.raises(XdpError, match="another running fastvs"):
            attach("d0", q, mode="skb")
        assert _state().skb_id == p.prog_id


def test_refusals_are_one_line(lab: Lab) -> None:
    with inside(lab.director):
        run("ip", "link", "add", "dm0", "type", "bridge")
        with XdpProgram() as p:
            with pytest.raises(XdpError) as ei:
                attach("dm0", p, mode="drv")  # no native XDP on a bridge
            assert "\n" not in str(ei.value) and "native" in str(ei.value), str(ei.value)
            assert netlink.query(ifindex_of("dm0")).prog_id == 0
            with pytest.raises(XdpError, match="nosuch0: no such interface"):
                attach("nosuch0", p)


def test_unprivileged_gets_one_line() -> None:
    code = ("import os\nfrom fastvs.live.xdp.probe import unavailable\n"
            "import fastvs.live.xdp._xsk, fastvs.live.xdp.attach\n"
            "os.setgid(65534); os.setuid(65534)\nprint(unavailable())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = r.stdout.strip()
    assert r.returncode == 0 and "\n" not in line and line != "None", (r.stdout, r.stderr)
    assert "CAP_" in line or "root" in line, line


def test_xdp_features_of_a_veth(lab: Lab) -> None:
    """The netdev family's XDP features (Linux 6.3+): veth redirects, has no AF_XDP
    zero-copy; an interface that is not there is an OSError."""
    with inside(lab.director):
        feats = netlink.xdp_features(ifindex_of("d0"))
        if feats is None:
            pytest.fail("the kernel has no netdev generic netlink family (Linux < 6.3)")
        assert feats & netlink.XDP_ACT["basic"] and feats & netlink.XDP_ACT["redirect"], feats
        assert not feats & netlink.XDP_ACT_XSK_ZEROCOPY, feats
        with pytest.raises(OSError):
            netlink.xdp_features(0x7FFFFFF0)
