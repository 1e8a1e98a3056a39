# cython: language_level=3
"""Python view of the packet parser, for tests and tools (one call per packet)."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memset
from fastvs.datapath._types cimport PacketMeta, PKT_OK
from fastvs.datapath._packet cimport pkt_parse
import ipaddress


def parse(const uint8_t[::1] frame not None, int linktype=1, wirelen=None):
    """Parse one frame. Returns ``(code, fields)``: ``code`` is 255 for an IPVS
    candidate or the verdict the engine would give; ``fields`` describes the headers
    found (empty when parsing stopped before the IP header)."""
    cdef PacketMeta m
    cdef uint32_t caplen = frame.shape[0]
    cdef uint32_t wl = caplen if wirelen is None else wirelen
    cdef const uint8_t* p = &frame[0] if caplen else <const uint8_t*>b""
    memset(&m, 0, sizeof(m))
    cdef int rc = pkt_parse(p, caplen, wl, <uint16_t>linktype, &m)
    fields = {}
    if m.af and m.l3len:
        raw_s = (<uint8_t*>&m.saddr[0])[:16]
        raw_d = (<uint8_t*>&m.daddr[0])[:16]
        if m.af == 4:
            src, dst = ipaddress.IPv4Address(raw_s[:4]), ipaddress.IPv4Address(raw_d[:4])
        else:
            src, dst = ipaddress.IPv6Address(raw_s), ipaddress.IPv6Address(raw_d)
        fields = {
            "af": m.af,
            "l3off": m.l3off,
            "l4off": m.l4off,
            "l3len": m.l3len,
            "proto": m.proto,
            "ttl": m.ttl,
            "src": str(src),
            "dst": str(dst),
            "cut": bool(m.cut),
            "frag": m.frag,
        }
        if rc == PKT_OK:
            fields["sport"] = int.from_bytes((<uint8_t*>&m.sport_be)[:2], "big")
            fields["dport"] = int.from_bytes((<uint8_t*>&m.dport_be)[:2], "big")
            fields["tcpflags"] = m.tcpflags
    elif m.af:
        fields = {"af": m.af, "l3off": m.l3off}
    return rc, fields
