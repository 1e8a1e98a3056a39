"""The ``xdp`` backend's wiring (fastvs/live/afxdp.py): registered, accepted by
``--io``, and every reason it cannot run (one line) falls back to AF_PACKET ring-v2
with nothing left attached. Frames through it: tests/live/test_e2e*.py with ``xdp``."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from fastvs.live import afpacket, afxdp, cli
from fastvs.live import config as C
from fastvs.live.iface import Iface
from fastvs.live.io import BACKENDS, get_backend

IFACES = [Iface("lo", b"\0" * 6, 1500)]


def cfg(**kw: Any) -> C.ForwardConfig:
    c = C.ForwardConfig(rules="/nonexistent", one_arm_if="lo", io="xdp", **kw)
    c.check()
    return c


def test_registered_and_accepted_by_io() -> None:
    assert BACKENDS["xdp"] == "fastvs.live.afxdp" and get_backend("xdp") is afxdp.BACKEND
    assert "xdp" in C.IO_KINDS
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    assert cli.config_from_args(p.parse_args(["-r", "x", "--if", "lo", "--io", "xdp"])).io == "xdp"


def test_rx_queues_reads_sysfs() -> None:
    assert afxdp.rx_queues("lo") >= 1
    assert afxdp.rx_queues("no-such-if-x") == 1


def test_several_workers_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastvs.live.xdp import probe

    monkeypatch.setattr(probe, "unavailable", lambda names=(): None)
    why = afxdp.unavailable(cfg(workers=2), IFACES)
    assert why is not None and "--workers 2" in why and "\n" not in why


def _fallback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[list[Any], str]:
    seen: list[str] = []

    def prepare(c: C.ForwardConfig, ifaces: Any, vips: Any) -> list[Any]:
        seen.append(c.io)
        return ["afpacket-handle"]

    monkeypatch.setattr(afpacket.BACKEND, "prepare", prepare)
    out = afxdp.BACKEND.prepare(cfg(), IFACES, {"10.0.0.1"})
    assert seen == ["ring-v2"]
    return out, capsys.readouterr().err


def test_unavailable_falls_back_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(afxdp, "unavailable", lambda c, i: "the kernel has no AF_XDP")
    out, err = _fallback(monkeypatch, capsys)
    assert out == ["afpacket-handle"]
    assert err.splitlines() == ["fastvs forward: --io xdp: AF_XDP unavailable (the kernel has no "
                                "AF_XDP); using AF_PACKET ring-v2"]


def test_zerocopy_on_a_driver_without_it_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--xdp-copy zerocopy`` where the driver's XDP features lack zero-copy (lo has
    none at all): one line naming the interface, before anything is attached."""
    from fastvs.live.xdp import netlink, probe

    if netlink.xdp_features(1) is None:
        pytest.fail("the kernel has no netdev generic netlink family (Linux < 6.3)")
    why = afxdp.no_zerocopy(["lo"])
    assert why == ("--xdp-copy zerocopy: lo's driver has no AF_XDP zero-copy "
                   "(--xdp-copy auto takes copy mode there)"), why
    monkeypatch.setattr(probe, "unavailable", lambda names=(): None)
    assert afxdp.unavailable(cfg(xdp_copy="zerocopy"), IFACES) == why
    assert afxdp.unavailable(cfg(xdp_copy="auto"), IFACES) is None


def test_refused_attach_falls_back(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fastvs.live.xdp.attach import XdpError

    def refuse(c: Any, i: Any, v: Any) -> Any:
        raise XdpError("lo: a foreign XDP program is attached (id 7)")

    monkeypatch.setattr(afxdp, "unavailable", lambda c, i: None)
    monkeypatch.setattr(afxdp, "attach_all", refuse)
    _, err = _fallback(monkeypatch, capsys)
    assert len(err.splitlines()) == 1 and "foreign XDP program" in err and "ring-v2" in err


def test_open_of_a_fallback_handle_is_afpacket(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[str] = []
    monkeypatch.setattr(afpacket.BACKEND, "open", lambda h, c, i, l2: got.append(c.io) or "io")
    assert afxdp.BACKEND.open(object(), cfg(), IFACES, None) == "io"  # type: ignore[arg-type]
    assert got == ["ring-v2"]


class _Att:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def detach(self) -> None:
        self.log.append("detach " + self.name)


class _Prog:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def close(self) -> None:
        self.log.append("close")


def test_handle_close_detaches_everything_once() -> None:
    log: list[str] = []
    h = afxdp.XdpHandle([_Prog(log), _Prog(log)], [_Att(log, "a"), _Att(log, "b")])
    h.close()
    h.close()
    assert log == ["detach b", "detach a", "close", "close"]


def test_failed_open_detaches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bind the kernel refuses in a worker (after the programs were attached): the
    programs are detached and released, and the worker says why in one line."""
    log: list[str] = []
    h = afxdp.XdpHandle([_Prog(log)], [_Att(log, "a")])

    def boom(*a: Any) -> Any:
        raise OSError(95, "AF_XDP bind to ifindex 2 queue 0 (zerocopy mode): Operation not supported")

    monkeypatch.setattr(afxdp, "XdpIO", boom)
    with pytest.raises(C.ForwardError) as e:
        afxdp.BACKEND.open(h, cfg(), IFACES, None)  # type: ignore[arg-type]
    assert str(e.value) == ("--io xdp: [Errno 95] AF_XDP bind to ifindex 2 queue 0 (zerocopy mode): "
                            "Operation not supported")
    assert log == ["detach a", "close"]


def test_queue_count_must_match_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker k binds queue k: fewer queues than workers, or receive queues no worker
    binds, fall back (one line each); as many queues as workers is fine."""
    from fastvs.live.xdp import probe

    monkeypatch.setattr(probe, "unavailable", lambda names=(): None)
    counts = {"rx": 2, "tx": 2}
    monkeypatch.setattr(afxdp, "rx_queues", lambda name, kind="rx": counts[kind])
    assert afxdp.unavailable(cfg(workers=2), IFACES) is None
    why = afxdp.unavailable(cfg(workers=3), IFACES)
    assert why is not None and "lo has 2 queues for --workers 3" in why and "\n" not in why
    why = afxdp.unavailable(cfg(workers=1), IFACES)
    assert why is not None and "2 receive queues for --workers 1" in why
    counts["tx"] = 1  # a socket cannot bind a queue id at or above either count
    why = afxdp.unavailable(cfg(workers=2), IFACES)
    assert why is not None and "lo has 1 queue for --workers 2" in why


class _Shared(_Att):
    def share(self) -> _Shared:
        self.log.append(f"share {self.name}")
        return _Shared(self.log, self.name)

    def release(self) -> None:
        self.log.append(f"release {self.name}")


def test_shared_handles_release_never_detach() -> None:
    """Several workers: each handle holds duplicates; closing one releases its own
    descriptors (the kernel detaches the bpf_link with the last), never detaches."""
    log: list[str] = []

    class P(_Prog):
        def share(self) -> P:
            log.append("share prog")
            return P(log)

    h = afxdp.XdpHandle([P(log)], [_Shared(log, "a")])
    ho = afxdp.Handoff.make(2, ["10.0.0.1"])
    ws = [h.share(k, ho) for k in range(2)]
    h.shared = True
    h.close()
    ho.close()
    assert [w.queue for w in ws] == [0, 1] and all(w.handoff is not None for w in ws)
    assert ws[0].handoff is not None and ws[0].handoff.vips == [bytes([10, 0, 0, 1])]
    ws[1].close()
    ws[0].close()
    assert "detach a" not in log and log.count("release a") == 3, log
    assert log.count("close") == 3, log


def _eth(src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    import dpkt

    if ":" in src:
        import socket as so

        ip6 = dpkt.ip6.IP6(src=so.inet_pton(so.AF_INET6, src), dst=so.inet_pton(so.AF_INET6, dst), nxt=proto, hlim=64)
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport) if proto == 6 else dpkt.udp.UDP(sport=sport, dport=dport)
        ip6.data = l4
        ip6.plen = len(bytes(l4))
        return bytes(dpkt.ethernet.Ethernet(type=0x86DD, data=ip6))
    import ipaddress

    l4 = dpkt.tcp.TCP(sport=sport, dport=dport) if proto == 6 else dpkt.udp.UDP(sport=sport, dport=dport)
    ip = dpkt.ip.IP(src=ipaddress.ip_address(src).packed, dst=ipaddress.ip_address(dst).packed, p=proto, data=l4)
    return bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_frame_owner_is_the_fanout_workers_choice(workers: int) -> None:
    """The pump hands a frame to the worker fanout_worker picks for its client endpoint:
    requests (to a VIP) and replies (from a real server) of one connection agree."""
    import ipaddress

    from fastvs.live._afxdp import frame_owner
    from fastvs.live.bpf import fanout_worker

    vips = [ipaddress.ip_address(v).packed for v in ("10.0.0.100", "2001:db8::100")]
    seen = set()
    for i in range(64):
        for proto in (6, 17):
            c4, c6, port = f"10.0.{i}.2", f"2001:db8::{i + 2:x}", 20000 + 37 * i
            want4, want6 = fanout_worker(c4, port, workers), fanout_worker(c6, port, workers)
            assert frame_owner(_eth(c4, "10.0.0.100", proto, port, 80), vips, workers) == want4
            assert frame_owner(_eth("10.1.0.11", c4, proto, 80, port), vips, workers) == want4
            assert frame_owner(_eth(c6, "2001:db8::100", proto, port, 80), vips, workers) == want6
            assert frame_owner(_eth("2001:db8:1::11", c6, proto, 80, port), vips, workers) == want6
            seen.add(want4)
    assert seen == set(range(workers))
    assert frame_owner(b"\xff" * 12 + b"\x08\x06" + bytes(28), vips, workers) == 0  # ARP: stays


def test_xdp_options_checked_and_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastvs.errors import OptionError

    for kw, flag in (({"xdp_ring_size": 1000}, "--xdp-ring-size"), ({"xdp_ring_size": 32}, "--xdp-ring-size"),
                     ({"xdp_busy_poll": -1}, "--xdp-busy-poll"), ({"xdp_mode": "native"}, "--xdp-mode"),
                     ({"xdp_copy": "zc"}, "--xdp-copy")):
        with pytest.raises(OptionError) as e:
            cfg(**kw)
        assert e.value.flag == flag
    monkeypatch.setenv("FASTVS_XDP_MODE", "skb")
    monkeypatch.setenv("FASTVS_XDP_COPY", "auto")
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    c = cli.config_from_args(p.parse_args(["-r", "x", "--if", "lo", "--io", "xdp"]))
    assert (c.xdp_mode, c.xdp_copy, c.xdp_ring_size) == ("skb", "auto", 2048)
    c = cli.config_from_args(p.parse_args(["-r", "x", "--if", "lo", "--io", "xdp", "--xdp-mode", "drv",
                                           "--xdp-copy", "copy", "--xdp-ring-size", "512"]))
    assert (c.xdp_mode, c.xdp_copy, c.xdp_ring_size) == ("drv", "copy", 512)


def test_busy_poll_options_on_a_socket() -> None:
    """busy_poll sets the three options (a UDP socket takes them as an AF_XDP one does)
    and says in one line what a kernel refuses."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        why = afxdp.busy_poll([s], 50, 64)
        if why:
            assert "\n" not in why and "refused" in why
        else:
            assert s.getsockopt(socket.SOL_SOCKET, afxdp.SO_BUSY_POLL) == 50  # (budget: set-only)


def test_too_many_vips_for_the_handoff_fall_back(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(afxdp, "unavailable", lambda c, i: None)
    monkeypatch.setattr(afpacket.BACKEND, "prepare", lambda c, i, v: ["afpacket-handle"] * c.workers)
    vips = {f"10.0.{i // 250}.{i % 250 + 1}" for i in range(afxdp.HANDOFF_VIPS + 1)}
    out = afxdp.BACKEND.prepare(cfg(workers=2), IFACES, vips)
    err = capsys.readouterr().err
    assert out == ["afpacket-handle"] * 2
    assert err.splitlines() == ["fastvs forward: --io xdp: AF_XDP unavailable (more than 256 VIPs for the "
                                "workers' handoff (257)); using AF_PACKET ring-v2"], err


def test_reload_maps_take_the_applied_rules_real_servers() -> None:
    """A reload pushes the real servers of the rules the worker applied into the XDP
    address map (a server added by ``fastvs ctl add`` is in no rules file)."""
    got: list[Any] = []

    class Program:
        def set_addresses(self, sets: Any) -> None:
            got.append(sets)

    io = object.__new__(afxdp.XdpIO)
    io.cfg = cfg()  # its rules file does not exist: only the given servers can be used
    io.handle = argparse.Namespace(programs=[Program()], handoff=None)
    io.update_vips({"10.0.0.100"}, {"10.1.0.13"})
    want = afxdp.address_sets(io.cfg, {"10.0.0.100"}, {"10.1.0.13"})
    assert got == [want]
    io.update_vips({"10.0.0.100"})  # no servers given, the file unreadable: maps kept
    assert len(got) == 1
