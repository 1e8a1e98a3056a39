"""Network interfaces as the forwarder needs them: MAC and MTU, and the receive
offloads (GRO/LRO) that must be off."""

from __future__ import annotations

import fcntl
import socket
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from fastvs.live.config import ForwardError

SIOCGIFMTU = 0x8921
RX_AGGREGATION = ("generic-receive-offload", "large-receive-offload", "rx-gro-hw", "rx-gro-list")


@dataclass
class Iface:
    name: str
    mac: bytes
    mtu: int


def iface_info(name: str) -> Iface:
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise ForwardError(f"no such interface: {name}") from None
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((name, 0))
        mac = s.getsockname()[4]
        req = struct.pack("16si12x", name.encode(), 0)
        mtu = struct.unpack("16si12x", fcntl.ioctl(s.fileno(), SIOCGIFMTU, req))[1]
    finally:
        s.close()
    if len(mac) != 6:
        raise ForwardError(f"{name}: not an Ethernet interface")
    return Iface(name, bytes(mac), mtu)


def offload_state(ifname: str) -> dict[str, bool] | None:
    """``ethtool -k`` as {feature: on}; None when ethtool is not available."""
    try:
        out = subprocess.run(["ethtool", "-k", ifname], capture_output=True, text=True,
                             timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    state: dict[str, bool] = {}
    for line in out.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            state[k.strip()] = v.strip().startswith("on")
    return state


def check_offloads(ifname: str, fix: bool, log: Callable[[str], None]) -> None:
    """Warn about receive aggregation (GRO/LRO hand the socket frames larger than the
    MTU, which cannot be sent again); with ``fix`` turn it off."""
    st = offload_state(ifname)
    if st is None:
        log(f"warning: ethtool not found; cannot check receive offloads on {ifname} "
            "(GRO/LRO must be off: frames above the MTU are dropped as oversize)")
        return
    on = [f for f in RX_AGGREGATION if st.get(f)]
    if not on:
        return
    if fix:
        args = {"generic-receive-offload": "gro", "large-receive-offload": "lro",
                "rx-gro-hw": "rx-gro-hw", "rx-gro-list": "rx-gro-list"}
        cmd = ["ethtool", "-K", ifname]
        for f in on:
            cmd += [args[f], "off"]
        subprocess.run(cmd, capture_output=True, check=False)
        still = [f for f in RX_AGGREGATION if (offload_state(ifname) or {}).get(f)]
        if not still:
            log(f"{ifname}: turned off {', '.join(on)}")
            return
        on = still
    log(f"warning: {ifname}: {', '.join(on)} on; aggregated frames larger than the MTU "
        f"are dropped as oversize (ethtool -K {ifname} gro off lro off, or --fix-offloads)")


__all__ = ["Iface", "check_offloads", "iface_info", "offload_state"]
