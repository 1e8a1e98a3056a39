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
    log: list[str] = []
    h = afxdp.XdpHandle([_Prog(log)], [_Att(log, "a")])

    def boom(*a: Any) -> Any:
        raise OSError(22, "AF_XDP bind: Invalid argument")

    monkeypatch.setattr(afxdp, "XdpIO", boom)
    with pytest.raises(OSError):
        afxdp.BACKEND.open(h, cfg(), IFACES, None)  # type: ignore[arg-type]
    assert log == ["detach a", "close"]
