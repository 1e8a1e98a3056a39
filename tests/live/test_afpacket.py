"""The AF_PACKET pump's C loop (fastvs/live/_afpacket.pyx ``Pump.run`` over ``io_run``
in _l2.pxd) and the engine's batch entry it calls (``Engine.batch_entry``): refused
before an engine is bound, with something that is not an engine, and once closed; the
engine stays alive as long as the pump holds it. Forwarding through ``run`` is
tests/live/test_e2e.py's (every backend, and FASTVS_LIVE_LOOP=python beside it)."""

from __future__ import annotations

import ctypes
import gc
import os
import socket
import sys

import pytest

from fastvs.datapath._engine import Engine
from fastvs.live._afpacket import Pump
from fastvs.live._l2 import L2Stage

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET sockets need root")


def pump() -> tuple[Pump, list[socket.socket]]:
    socks = [socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) for _ in range(2)]
    return Pump(socks[0].fileno(), socks[1].fileno(), L2Stage(b"\x02" * 6, b"\x04" * 6), io="mmsg"), socks


def test_batch_entry_is_a_named_capsule() -> None:
    cap = Engine(1024).batch_entry()
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    assert get_name(cap) == b"fastvs.datapath.BatchEntry"


def test_run_needs_a_bound_engine_and_an_open_pump() -> None:
    p, socks = pump()
    try:
        with pytest.raises(ValueError, match="run before bind_engine"):
            p.run(0, 1_000_000)
        with pytest.raises(AttributeError):
            p.bind_engine(object())
        with pytest.raises(ValueError, match="run before bind_engine"):
            p.run(0, 1_000_000)  # a refused bind binds nothing

        class NotAnEngine:
            def batch_entry(self) -> object:
                return object()

        with pytest.raises((TypeError, ValueError)):
            p.bind_engine(NotAnEngine())
        e = Engine(1024)
        before = sys.getrefcount(e)
        p.bind_engine(e)
        assert sys.getrefcount(e) == before + 1  # the pump keeps its engine
        del e
        gc.collect()
        assert p.run(0, 1_000_000) == 0  # nothing on the sockets: back at once
        p.close()
        with pytest.raises(ValueError, match="closed"):
            p.run(0, 1_000_000)
    finally:
        for s in socks:
            s.close()
