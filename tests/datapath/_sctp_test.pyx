# cython: language_level=3
"""Python handles on fastvs/datapath/_proto_sctp.pxd for tests/datapath/test_sctp.py, built
on demand by benchmarks/cybuild.py (not part of the package); the data path cimports the
.pxd directly."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memset
from fastvs.datapath._types cimport *
from fastvs.datapath._packet cimport pkt_parse
from fastvs.datapath._proto_sctp cimport (
                                    SCTP_S_LAST, SCTP_EV_LAST, SCTP_CT_COOKIE_ABORT, SCTP_CT_REMAPPED_255,
                                    fv_crc32c, fv_crc32c_sw, fv_crc32c_shift, fv_crc32c_hw_active,
                                    fv_sctp_active, fv_sctp_timeouts, fv_sctp_state_names,
                                    sctp_parse, sctp_event, sctp_table, sctp_next_state, sctp_state_active,
                                    sctp_can_schedule, sctp_is_new_conn, sctp_new_conn_expected, sctp_crc32c,
                                    sctp_csum_ok, sctp_nat_port,
                                    )

STATE_NAMES = tuple(fv_sctp_state_names[i].decode() for i in range(SCTP_S_LAST))
TIMEOUTS = tuple(fv_sctp_timeouts[i] for i in range(SCTP_S_LAST))
ACTIVE = tuple(bool(fv_sctp_active[i]) for i in range(SCTP_S_LAST))
N_EVENTS = SCTP_EV_LAST
COOKIE_ABORT = SCTP_CT_COOKIE_ABORT
REMAPPED_255 = SCTP_CT_REMAPPED_255


def crc32c(const uint8_t[::1] data not None):
    """The standard CRC32c of ``data`` (hardware path if the CPU has SSE4.2)."""
    if data.shape[0] == 0:
        return 0
    return fv_crc32c(&data[0], data.shape[0])


def crc32c_table(const uint8_t[::1] data not None):
    """The same through the 256-entry table only."""
    if data.shape[0] == 0:
        return 0
    return ~fv_crc32c_sw(0xffffffffu, &data[0], data.shape[0]) & 0xffffffff


def crc32c_shift(uint32_t crc, unsigned long long n):
    """A raw CRC register carried through ``n`` zero bytes."""
    return fv_crc32c_shift(crc, n)


def hw_active():
    return bool(fv_crc32c_hw_active())


def sctp_packet_crc(const uint8_t[::1] sctp not None):
    """CRC32c of an SCTP packet (common header on) with the checksum field as 0."""
    if sctp.shape[0] < 12:
        raise ValueError("shorter than the SCTP common header")
    return sctp_crc32c(&sctp[0], sctp.shape[0])


cdef dict _meta(const PacketMeta* m):
    return {"sport": ((m.sport_be & 0xff) << 8) | (m.sport_be >> 8),
            "dport": ((m.dport_be & 0xff) << 8) | (m.dport_be >> 8),
            "chunk": m.tcpflags, "l3off": m.l3off, "l4off": m.l4off,
            "l3len": m.l3len, "cut": bool(m.cut), "frag": m.frag, "af": m.af}


def parse_sctp(const uint8_t[::1] data not None, uint32_t l4, uint32_t dgram_end):
    """sctp_parse on a bare buffer: (rc, fields)."""
    cdef PacketMeta m
    cdef int rc
    memset(&m, 0, sizeof(m))
    if data.shape[0] == 0:
        return V_DROP_L4_TRUNCATED, None
    rc = sctp_parse(&data[0], data.shape[0], l4, dgram_end, &m)
    return rc, (_meta(&m) if rc == PKT_OK else None)


cdef int _frame(const uint8_t* p, uint32_t caplen, uint32_t wirelen, uint16_t linktype,
                PacketMeta* m):
    """The engine's parse up to the transport header, then sctp_parse for SCTP
    (what parse_l4 will do once its proto == 132 branch is in)."""
    cdef int rc
    memset(m, 0, sizeof(PacketMeta))
    rc = pkt_parse(p, caplen, wirelen, linktype, m)
    if rc == V_PASS_PROTO and m.proto == IPPROTO_SCTP_:
        rc = sctp_parse(p, caplen, m.l4off, m.l3off + m.l3len, m)
    return rc


def parse(const uint8_t[::1] frame not None, uint16_t linktype=1, wirelen=None):
    """A whole frame: (rc, fields or None)."""
    cdef PacketMeta m
    cdef uint32_t wl = frame.shape[0] if wirelen is None else wirelen
    cdef int rc
    if frame.shape[0] == 0:
        return V_DROP_L2_TRUNCATED, None
    rc = _frame(&frame[0], frame.shape[0], wl, linktype, &m)
    return rc, (_meta(&m) if rc == PKT_OK else None)


def csum_ok(const uint8_t[::1] frame not None, uint16_t linktype=1):
    """The CRC32c on the wire of an SCTP frame is right (sctp_csum_check)."""
    cdef PacketMeta m
    if frame.shape[0] == 0 or _frame(&frame[0], frame.shape[0], frame.shape[0], linktype,
                                     &m) != PKT_OK:
        raise ValueError("not a whole SCTP packet")
    return bool(sctp_csum_ok(&frame[0], &m))


def nat_port(bytearray frame not None, uint16_t new_port, int port_off,
             uint16_t linktype=1, wirelen=None):
    """sctp_nat_port on a frame in place (``port_off`` 2 = DNAT, 0 = SNAT);
    returns its code (0 untouched, 1 recomputed, 2 adjusted, 3 fragment)."""
    cdef PacketMeta m
    cdef uint8_t[::1] buf = frame
    cdef uint32_t wl = len(frame) if wirelen is None else wirelen
    cdef uint16_t be = <uint16_t>((new_port >> 8) | ((new_port & 0xff) << 8))
    if len(frame) == 0 or _frame(&buf[0], len(frame), wl, linktype, &m) != PKT_OK:
        raise ValueError("not an SCTP packet")
    return sctp_nat_port(&buf[0], &m, be, port_off)


def event(uint8_t chunk):
    return sctp_event(chunk)


def next_state(int table, uint8_t state, uint8_t chunk):
    """sctp_states[table][event(chunk)][state] (0 INPUT, 1 OUTPUT, 2 INPUT-ONLY)."""
    return sctp_next_state(table, state, chunk)


def transition(int direction, uint8_t state, uint8_t chunk, int flags):
    """set_sctp_state's choice of table plus the move: (new state, new flags)."""
    cdef uint16_t f = <uint16_t>flags
    cdef int tbl = sctp_table(direction, &f)
    return sctp_next_state(tbl, state, chunk), f


def state_active(uint8_t state):
    return bool(sctp_state_active(state))


def can_schedule(uint8_t chunk, bint sloppy=False):
    return bool(sctp_can_schedule(chunk, sloppy))


def is_new_conn(uint8_t chunk):
    return bool(sctp_is_new_conn(chunk))


def new_conn_expected(uint8_t state, uint32_t control=0):
    cdef Conn c
    memset(&c, 0, sizeof(c))
    c.proto = IPPROTO_SCTP_
    c.state = state
    c.control = control
    return bool(sctp_new_conn_expected(&c))
