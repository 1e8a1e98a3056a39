"""A naive reference master for the golden tests: replays an input capture as the
kernel lab's director saw it (NAT, one real server per service, optional persistence)
and produces the sync messages a 6.1 master sends, through fastvs.sync.policy and
fastvs.sync.proto. Only what the recordings need: IPv4 TCP/UDP, no scheduling
choice, no expiry (the runs are shorter than every timeout).

TCP states follow ip_vs_proto_tcp.c's tcp_states (INPUT/OUTPUT; tcp_state_idx picks
rst, then syn, fin, ack; no flag -> CLOSE); the INACTIVE flag follows
tcp_state_active_table from the dest's conn_flags (which carry INACTIVE, so a new
entry starts inactive); a template becomes ASSURED when its TCP connection enters
ESTABLISHED, or on a UDP reply (ip_vs_control_assure_ct).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from fastvs.capture.pcap import open_capture
from fastvs.control.rules import Rules, load_rules
from fastvs.sync.policy import Batcher, ConnSync, SyncSysctls, on_input_packet
from fastvs.sync.proto import F_INACTIVE, F_TEMPLATE, MessageBuilder, SyncConn

HZ = 250
NO, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA = range(11)
TCP_INPUT = (
    (SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR),  # syn
    (CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW),  # fin
    (ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES),  # ack
    (CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR),  # rst
)
TCP_OUTPUT = (
    (SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR),
    (TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW),
    (ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES),
    (CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL),
)
TCP_ACTIVE = {ES, SS, SR, SA}
TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)


def _idx(flags: int) -> int:
    if flags & 4:
        return 3
    if flags & 2:
        return 0
    if flags & 1:
        return 1
    if flags & 16:
        return 2
    return -1


@dataclass
class Entry:
    sync: ConnSync
    proto: int
    caddr: str
    cport: int
    vaddr: str
    vport: int
    daddr: str
    dport: int
    template: Entry | None = None
    extra: dict[str, int] = field(default_factory=dict)

    def record(self) -> SyncConn:
        return SyncConn(
            protocol=self.proto,
            caddr=self.caddr,
            cport=self.cport,
            vaddr=self.vaddr,
            vport=self.vport,
            daddr=self.daddr,
            dport=self.dport,
            flags=self.sync.flags,
            state=self.sync.state,
            timeout=self.sync.timeout // HZ,
        )


def simulate(
    pcap: str, rules_path: str, syncid: int = 7, version: int = 1, **sysctls: int
) -> tuple[list[SyncConn], list[tuple[float, bytes]]]:
    """(every record in send order, the messages with their send times); ``sysctls``
    are SyncSysctls fields (sync_threshold=1, sync_period=4 ...)."""
    rules: Rules = load_rules(rules_path)
    svcs = {}
    for s in rules.services:
        proto = 6 if s.proto == "tcp" else 17
        rs = s.reals[0]
        svcs[(proto, s.addr, s.port)] = (rs.addr, rs.port, s.persistent)
    reals = {
        (6 if s.proto == "tcp" else 17, s.reals[0].addr, s.reals[0].port) for s in rules.services
    }
    ctl = SyncSysctls(sync_version=version, hz=HZ, **sysctls)
    conns: dict[tuple[int, str, int, str, int], Entry] = {}
    by_out: dict[tuple[int, str, int, str, int], Entry] = {}
    templates: dict[tuple[int, str, str, int], Entry] = {}
    records: list[SyncConn] = []
    batcher = Batcher(MessageBuilder(syncid, 1472, version))
    with open_capture(pcap) as rd:
        for batch in rd:
            for i in range(len(batch)):
                fr = batch.packet(i)
                now_s = int(batch.ts[i]) / 1e9
                now = int(now_s * HZ)
                batcher.tick(now_s)
                if fr[12:14] != b"\x08\x00":
                    continue
                ip = fr[14:]
                ihl = (ip[0] & 15) * 4
                # the lab's filler frames have a bad header checksum: ip_rcv drops them
                s = sum(struct.unpack(f"!{ihl // 2}H", ip[:ihl]))
                while s >> 16:
                    s = (s & 0xFFFF) + (s >> 16)
                if s != 0xFFFF:
                    continue
                proto = ip[9]
                src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
                l4 = ip[ihl:]
                sport, dport = struct.unpack("!HH", l4[:4])
                tflags = l4[13] if proto == 6 else 0
                if (proto, dst, dport) in svcs:  # input
                    key = (proto, src, sport, dst, dport)
                    e = conns.get(key)
                    if e is None:
                        if proto == 6 and not (tflags & 2 and not tflags & 4):
                            continue
                        raddr, rport, pers = svcs[(proto, dst, dport)]
                        tpl = None
                        if pers is not None:
                            tk = (proto, src, dst, dport)
                            tpl = templates.get(tk)
                            if tpl is None:
                                tpl = Entry(
                                    ConnSync.new(
                                        proto,
                                        now,
                                        HZ,
                                        flags=F_TEMPLATE | F_INACTIVE,
                                        timeout=pers * HZ,
                                    ),
                                    proto,
                                    src,
                                    0,
                                    dst,
                                    dport,
                                    raddr,
                                    rport,
                                )
                                templates[tk] = tpl
                        e = Entry(
                            ConnSync.new(proto, now, HZ, flags=F_INACTIVE),
                            proto,
                            src,
                            sport,
                            dst,
                            dport,
                            raddr,
                            rport,
                            template=tpl,
                        )
                        if tpl is not None:
                            e.sync.control = tpl.sync
                        conns[key] = e
                        by_out[(proto, raddr, rport, src, sport)] = e
                    _transition(e, tflags, TCP_INPUT)
                    for cs in on_input_packet(ctl, e.sync, now):
                        ent = e if cs is e.sync else e.template
                        assert ent is not None
                        rec = ent.record()
                        records.append(rec)
                        batcher.add(rec, now_s)
                elif (proto, src, sport) in reals:  # output (a reply)
                    e = by_out.get((proto, src, sport, dst, dport))
                    if e is None:
                        continue
                    _transition(e, tflags, TCP_OUTPUT)
                    if proto == 17 and e.template is not None:
                        e.template.sync.state |= 1
    batcher.close()
    return records, batcher.out


def _transition(e: Entry, tflags: int, table: tuple[tuple[int, ...], ...]) -> None:
    c = e.sync
    if e.proto == 17:
        c.timeout = 300 * HZ
        return
    idx = _idx(tflags)
    new = table[idx][c.state] if idx >= 0 else CL
    if new != c.state:
        if new in TCP_ACTIVE:
            c.flags &= ~F_INACTIVE
        else:
            c.flags |= F_INACTIVE
        if new == ES and e.template is not None:
            e.template.sync.state |= 1
    c.state = new
    c.timeout = TCP_TIMEOUTS[new] * HZ
