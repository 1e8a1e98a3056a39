"""Can this host use the AF_XDP path? One line saying why not, so the forwarder can say
it and fall back to AF_PACKET."""

from __future__ import annotations

import os

from fastvs.live.xdp import bpf


def unavailable(ifnames: list[str] | tuple[str, ...] = ()) -> str | None:
    """None if AF_XDP sockets and BPF maps can be made here (and the interfaces exist),
    else one line: the kernel has no AF_XDP, the process lacks the privileges, ..."""
    from fastvs.live.xdp._xsk import xdp_available

    why = xdp_available()
    if why is not None:
        return why
    try:
        fd = bpf.map_create(bpf.MAP_TYPE_XSKMAP, 4, 4, 1, "fastvs_probe")
    except bpf.BpfError as e:
        return f"cannot create BPF maps: {e}"
    os.close(fd)
    from fastvs.live.xdp.attach import XdpError, ifindex_of

    for name in ifnames:
        try:
            ifindex_of(name)
        except XdpError as e:
            return str(e)
    return None
