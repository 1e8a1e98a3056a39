"""rtnetlink for XDP: attach / detach a program on an interface (IFLA_XDP) and ask which
program is attached (RTM_GETLINK). Extended acks are on, so a refusal carries the
kernel's own one-line reason (e.g. "Native and generic XDP can't be active at the same time").
And generic netlink's ``netdev`` family (Linux 6.3+): what a driver's XDP can do
(:func:`xdp_features`, e.g. whether it has AF_XDP zero-copy).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

RTM_GETLINK, RTM_SETLINK = 18, 19
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1
NLM_F_ACK_TLVS = 0x200
NLM_F_CAPPED = 0x100

IFLA_XDP = 43
IFLA_EXT_MASK = 29
IFLA_XDP_FD, IFLA_XDP_ATTACHED, IFLA_XDP_FLAGS, IFLA_XDP_PROG_ID = 1, 2, 3, 4
IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID, IFLA_XDP_HW_PROG_ID, IFLA_XDP_EXPECTED_FD = 5, 6, 7, 8

XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4
XDP_FLAGS_HW_MODE = 8
XDP_FLAGS_REPLACE = 16

XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = range(5)
MODE_NAMES = {XDP_ATTACHED_DRV: "native", XDP_ATTACHED_SKB: "generic", XDP_ATTACHED_HW: "offload",
              XDP_ATTACHED_MULTI: "multi"}
# generic netlink: the controller (family ids by name) and the netdev family (netdev.yaml)
NETLINK_GENERIC = 16
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
NETDEV_CMD_DEV_GET, NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES = 1, 1, 3
# NETDEV_A_DEV_XDP_FEATURES bits (enum netdev_xdp_act)
XDP_ACT = {"basic": 1, "redirect": 2, "ndo-xmit": 4, "xsk-zerocopy": 8, "hw-offload": 16, "rx-sg": 32,
           "ndo-xmit-sg": 64}
XDP_ACT_XSK_ZEROCOPY = XDP_ACT["xsk-zerocopy"]
MODE_FLAGS = {"skb": XDP_FLAGS_SKB_MODE, "generic": XDP_FLAGS_SKB_MODE,
              "drv": XDP_FLAGS_DRV_MODE, "native": XDP_FLAGS_DRV_MODE}


class NetlinkError(OSError):
    def __init__(self, err: int, what: str, detail: str = "") -> None:
        msg = f"{what}: {detail or os.strerror(err)}"
        super().__init__(err, msg)
        self.msg = msg

    def __str__(self) -> str:
        return self.msg


@dataclass(frozen=True)
class XdpState:
    """What is attached to an interface: mode ('native', 'generic', ... or None) and the
    program ids per mode (0 = none)."""

    mode: str | None
    prog_id: int
    drv_id: int
    skb_id: int

    def ids(self) -> list[tuple[str, int]]:
        return [(m, i) for m, i in (("drv", self.drv_id), ("skb", self.skb_id)) if i]


def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, i)
        if n < 4:
            break
        out[kind & ~NLA_F_NESTED & 0x7FFF] = data[i + 4:i + n]
        i += (n + 3) & ~3
    return out


def _request(msg_type: int, flags: int, body: bytes, what: str,
             protocol: int = socket.NETLINK_ROUTE) -> list[bytes]:
    """Send one request; returns the payloads of the replies (after the nlmsghdr).
    An error reply raises NetlinkError with the extended-ack message if there is one."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol) as s:
        try:
            s.setsockopt(270, NETLINK_EXT_ACK, 1)  # SOL_NETLINK
        except OSError:
            pass
        s.bind((0, 0))
        seq = 1
        s.send(struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | flags, seq, 0) + body)
        out: list[bytes] = []
        while True:
            data = s.recv(65536)
            i = 0
            while i + 16 <= len(data):
                n, kind, fl, _, _ = struct.unpack_from("=IHHII", data, i)
                payload = data[i + 16:i + n]
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload, 0)
                    if err == 0:
                        return out
                    detail = ""
                    if fl & NLM_F_ACK_TLVS:
                        skip = 4 + (16 if fl & NLM_F_CAPPED else (struct.unpack_from("=I", payload, 4)[0]))
                        tl = _attrs(payload[(skip + 3) & ~3:])
                        if NLMSGERR_ATTR_MSG in tl:
                            detail = tl[NLMSGERR_ATTR_MSG].split(b"\0", 1)[0].decode(errors="replace")
                    raise NetlinkError(-err, what, detail)
                if kind == NLMSG_DONE:
                    return out
                out.append(payload)
                i += (n + 3) & ~3
            if not flags & NLM_F_ACK:
                return out


def _ifinfo(ifindex: int) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, ifindex, 0, 0)


def query(ifindex: int) -> XdpState:
    """The XDP program(s) attached to an interface."""
    replies = _request(RTM_GETLINK, 0, _ifinfo(ifindex) + _nla(IFLA_EXT_MASK, struct.pack("=I", 1)),
                       f"netlink get link {ifindex}")
    for payload in replies:
        attrs = _attrs(payload[16:])
        if IFLA_XDP not in attrs:
            return XdpState(None, 0, 0, 0)
        x = _attrs(attrs[IFLA_XDP])

        def u32(k: int, x: dict[int, bytes] = x) -> int:
            return int(struct.unpack("=I", x[k][:4])[0]) if k in x else 0

        attached = x.get(IFLA_XDP_ATTACHED, b"\0")[0]
        prog = u32(IFLA_XDP_PROG_ID)
        drv, skb = u32(IFLA_XDP_DRV_PROG_ID), u32(IFLA_XDP_SKB_PROG_ID)
        if attached == XDP_ATTACHED_DRV:
            drv = drv or prog
        elif attached == XDP_ATTACHED_SKB:
            skb = skb or prog
        return XdpState(MODE_NAMES.get(attached), prog, drv, skb)
    raise NetlinkError(errno.ENODEV, f"netlink get link {ifindex}", "no such interface")


def set_xdp(ifindex: int, prog_fd: int, flags: int, expected_fd: int | None = None) -> None:
    """Attach ``prog_fd`` (or detach with -1) in the mode and with the flags given."""
    nested = _nla(IFLA_XDP_FD, struct.pack("=i", prog_fd)) + _nla(IFLA_XDP_FLAGS, struct.pack("=I", flags))
    if expected_fd is not None:
        nested += _nla(IFLA_XDP_EXPECTED_FD, struct.pack("=i", expected_fd))
    body = _ifinfo(ifindex) + _nla(IFLA_XDP | NLA_F_NESTED, nested)
    what = "attach XDP program" if prog_fd >= 0 else "detach XDP program"
    _request(RTM_SETLINK, NLM_F_ACK, body, f"{what} on ifindex {ifindex}")


def _genl(family: int, cmd: int, attrs: bytes, what: str) -> dict[int, bytes]:
    """One generic netlink request; the first reply's attributes."""
    body = struct.pack("=BBH", cmd, 1, 0) + attrs
    for payload in _request(family, 0, body, what, NETLINK_GENERIC):
        return _attrs(payload[4:])
    raise NetlinkError(errno.ENOMSG, what, "no reply")


def xdp_features(ifindex: int) -> int | None:
    """What the interface's driver can do with XDP (NETDEV_A_DEV_XDP_FEATURES: the bits
    of :data:`XDP_ACT`), or None where the kernel cannot say (before Linux 6.3: no
    ``netdev`` family)."""
    try:
        ctrl = _genl(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _nla(CTRL_ATTR_FAMILY_NAME, b"netdev\0"),
                     "generic netlink family netdev")
    except NetlinkError:
        return None
    if CTRL_ATTR_FAMILY_ID not in ctrl:
        return None
    (family,) = struct.unpack("=H", ctrl[CTRL_ATTR_FAMILY_ID][:2])
    dev = _genl(family, NETDEV_CMD_DEV_GET, _nla(NETDEV_A_DEV_IFINDEX, struct.pack("=I", ifindex)),
                f"netdev get {ifindex}")
    if NETDEV_A_DEV_XDP_FEATURES not in dev:
        return None
    (bits,) = struct.unpack("=Q", dev[NETDEV_A_DEV_XDP_FEATURES][:8])
    return int(bits)
