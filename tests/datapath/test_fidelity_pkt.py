"""Packet-path behaviours of a Linux 6.1 IPVS director that issue 11 found missing: the
kernel function that decides each is named in the test, with its lines in Debian's
linux-source-6.1 (6.1.192-3). Those the kernel lab can show (IPv4 NAT) are also
golden captures: x8-onepacket, x9-ftp-persist, x10-sloppy-tcp (tests/golden/CASES.md).
"""

from __future__ import annotations

import struct

import dpkt
import pytest

from fastvs import verdicts as V
from fastvs.control.director import Director, parse_neigh
from fastvs.control.rules import parse_rules

from packets import checksums6_ok, icmp6_error, icmp_error, tcp, tcp6, udp

VIP, CL = "10.10.0.1", "100.64.0.1"
R1, R2 = "192.168.0.10", "192.168.0.11"
S = 10**9


def director(rules: str, **kw: object) -> Director:
    return Director(parse_rules(rules), seed=1, **kw)  # type: ignore[arg-type]


def dst_of(frame: bytes) -> tuple[str, int]:
    ip = dpkt.ethernet.Ethernet(frame).data
    return ".".join(map(str, ip.dst)), ip.data.dport


def real(d: Director, addr: str) -> dict:
    return next(r for s in d.services() for r in s["reals"] if r["addr"] == addr)


# -- 1. one-packet scheduling -------------------------------------------------------------
ONEPACKET = f"""
-A -u {VIP}:53 -s rr -o
-a -u {VIP}:53 -r {R1}:5353 -m
-a -u {VIP}:53 -r {R2}:5353 -m
"""


def test_one_packet_schedules_every_datagram_and_keeps_no_entry() -> None:
    """ip_vs_schedule (ip_vs_core.c:537) flags a UDP connection of a -o service
    IP_VS_CONN_F_ONE_PACKET; ip_vs_conn_hash (ip_vs_conn.c:168) does not hash it and
    ip_vs_conn_put (ip_vs_conn.c:470) expires it at once: each datagram is scheduled
    (rr alternates within one flow) and counted as a connection."""
    d = director(ONEPACKET)
    out, v = d.process_packets([udp(CL, 5000, VIP, 53, b"q%d" % i) for i in range(4)], [0, 1, 2, 3])
    assert v == [V.FWD_IN] * 4
    assert [dst_of(f)[0] for f in out] == [R2, R1, R2, R1]
    assert d.connections() == []
    assert d.lookup("udp", CL, 5000, VIP, 53) is None
    st = d.services()[0]["stats"]
    assert st["conns"] == 4 and st["inpkts"] == 4
    for r in (R1, R2):
        assert real(d, r)["inactconns"] == 0 and real(d, r)["activeconns"] == 0
    # the real server's answer finds no connection: not IPVS's (not translated)
    reply = udp(R1, 5353, CL, 5000, b"a")
    out, v = d.process_packets([reply], [4])
    assert v == [V.PASS_NOT_SERVICE] and out == [reply]


def test_one_packet_with_persistence_keeps_the_template_only() -> None:
    """ip_vs_sched_persist (ip_vs_core.c:390): the template is an ordinary entry, the
    connections one-packet ones controlled by it."""
    d = director(f"-A -u {VIP}:123 -s rr -p 60 -o\n-a -u {VIP}:123 -r {R1}:123 -m\n"
                 f"-a -u {VIP}:123 -r {R2}:123 -m\n")
    out, v = d.process_packets([udp(CL, 6000 + i, VIP, 123) for i in range(3)], [0, 1, 2])
    assert v == [V.FWD_IN] * 3 and len({dst_of(f)[0] for f in out}) == 1
    conns = d.connections()
    assert len(conns) == 1 and conns[0]["template"]
    assert d.services()[0]["stats"]["conns"] == 3
    rs = real(d, conns[0]["daddr"])
    assert rs["persistconns"] == 1 and rs["inactconns"] == 0


def test_one_packet_ttl_expired_still_counts_a_connection() -> None:
    """ip_vs_in_hook: ip_vs_conn_stats at scheduling, ip_vs_in_stats before the xmit
    drops the datagram (decrement_ttl); the entry goes with ip_vs_conn_put."""
    d = director(ONEPACKET)
    _, v = d.process_packets([udp(CL, 5000, VIP, 53, ttl=1)])
    assert v == [V.DROP_TTL]
    assert d.services()[0]["stats"]["conns"] == 1 and d.connections() == []


# -- 2. FTP data connections through a persistent FTP service ------------------------------
FTP = f"""
-A -t {VIP}:21 -s rr -p 300
-a -t {VIP}:21 -r {R1}:2121 -m
-a -t {VIP}:21 -r {R2}:2121 -m
"""


def test_persistent_ftp_service_takes_data_connections_port_kept() -> None:
    """ip_vs_service_find (ip_vs_ctl.c:437-446): TCP to port 20 or an unprivileged port
    of a VIP with a port-21 service (ftpsvc_counter) finds the FTP service;
    ip_vs_sched_persist (ip_vs_core.c:308-320) builds its template with vport 0 for
    the FTP port and for the data port alike, and keeps the data port (:386-388)."""
    d = director(FTP)
    out, v = d.process_packets([tcp(CL, 41000, VIP, 21, "S")])
    assert v == [V.FWD_IN]
    rip, rport = dst_of(out[0])
    assert rport == 2121
    for t, port in enumerate((30000, 20, 1024, 65535), 1):
        out, v = d.process_packets([tcp(CL, 41000 + t, VIP, port, "S")], [t * S])
        assert v == [V.FWD_IN] and dst_of(out[0]) == (rip, port)
    tpl = [c for c in d.connections() if c["template"]]
    assert len(tpl) == 1
    assert (tpl[0]["cport"], tpl[0]["vport"], tpl[0]["dport"]) == (0, 0, 0)
    assert real(d, rip)["stats"]["conns"] == 5
    # a privileged port other than 20, and UDP, are not the FTP service's
    out, v = d.process_packets([tcp(CL, 41010, VIP, 1023, "S"), udp(CL, 41011, VIP, 30000)], [9 * S] * 2)
    assert v == [V.PASS_NOT_SERVICE] * 2


def test_ftp_data_connection_first_makes_the_template() -> None:
    d = director(FTP)
    out, _ = d.process_packets([tcp(CL, 42000, VIP, 40000, "S")])
    out2, _ = d.process_packets([tcp(CL, 42001, VIP, 21, "S")], [S])
    assert dst_of(out[0])[0] == dst_of(out2[0])[0]
    assert dst_of(out[0])[1] == 40000 and dst_of(out2[0])[1] == 2121


def test_non_persistent_ftp_service_lets_data_connections_pass() -> None:
    """ip_vs_schedule (ip_vs_core.c:516): a non-persistent service takes only its own
    port; ip_vs_leave (:648) accepts the rest of an FTP service's VIP."""
    d = director(f"-A -t {VIP}:21 -s rr\n-a -t {VIP}:21 -r {R1}:21 -m\n")
    syn = tcp(CL, 43000, VIP, 30000, "S")
    out, v = d.process_packets([syn])
    assert v == [V.PASS_NOT_SERVICE] and out == [syn]
    assert d.connections() == []
    _, v = d.process_packets([tcp(CL, 43001, VIP, 21, "S")])
    assert v == [V.FWD_IN]


def test_client_port_20_is_never_scheduled() -> None:
    """ip_vs_schedule (ip_vs_core.c:479): "Never schedule Active FTPDATA connections"."""
    d = director(FTP)
    syn = tcp(CL, 20, VIP, 21, "S")
    out, v = d.process_packets([syn])
    assert v == [V.PASS_NOT_SERVICE] and out == [syn] and d.connections() == []


# -- 3. ICMP errors about direct-routing and tunnel connections ----------------------------
def test_icmp_error_about_a_dr_connection_goes_by_direct_routing() -> None:
    """ip_vs_in_icmp (ip_vs_core.c:1730-1812): the checksum is checked for NAT only,
    the error is counted (ip_vs_in_stats) and ip_vs_icmp_xmit (ip_vs_xmit.c) hands it
    to the connection's own packet_xmit, here ip_vs_dr_xmit."""
    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {R1} -g\n"
    d = director(rules, neigh=parse_neigh(f"{R1} 02:52:c0:a8:00:0a\n"))
    d.process_packets([tcp(CL, 1000, VIP, 80, "S")])
    # the real server answered the client directly (VIP -> client); the client side
    # sends back an error about that answer, to the VIP
    err = bytearray(icmp_error("100.64.9.9", VIP, tcp(VIP, 80, CL, 1000, "SA"), icmp_type=3, code=4))
    err[14 + 20 + 2] ^= 0x55  # a wrong ICMP checksum does not matter off NAT
    out, v = d.process_packets([bytes(err)], [S])
    assert v == [V.FWD_DR]
    assert out[0][:6] == bytes.fromhex("0252c0a8000a")
    assert out[0][14 + 8] == 63 and out[0][14 + 20:] == bytes(err)[14 + 20:]
    assert real(d, R1)["stats"]["inpkts"] == 2


def test_icmp_error_about_a_tunnel_connection_is_tunnelled() -> None:
    rules = f"-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r {R1} -i\n"
    d = director(rules, tunnel_source="10.0.0.254")
    d.process_packets([udp(CL, 5000, VIP, 53)])
    err = icmp_error("100.64.9.9", VIP, udp(VIP, 53, CL, 5000), icmp_type=3, code=3)
    out, v = d.process_packets([err], [S])
    assert v == [V.FWD_TUN]
    outer = dpkt.ethernet.Ethernet(out[0]).data
    assert outer.p == 4 and outer.dst == bytes([192, 168, 0, 10])
    assert bytes(outer)[20 + 20:] == err[14 + 20:]  # the ICMP message itself unchanged


def test_icmp_error_from_the_server_side_of_a_dr_connection_is_counted_and_routed() -> None:
    """ip_vs_out_icmp -> handle_response_icmp (ip_vs_core.c:862-863, after_nat): not
    translated, counted as output."""
    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {R1}:80 -g\n"
    d = director(rules, neigh=parse_neigh(f"{R1} 02:52:c0:a8:00:0a\n"))
    d.process_packets([tcp(CL, 1000, VIP, 80, "S")])
    # (the director sent the client's packet on unchanged: to the VIP; ip_vs_conn_out_get
    # (ip_vs_conn.c:401-441) matches a DR connection by the VIP, not the real server)
    err = icmp_error("192.168.0.1", CL, tcp(CL, 1000, VIP, 80, "S"), icmp_type=3, code=1)
    out, v = d.process_packets([err], [S])
    assert v == [V.PASS_NOT_MASQ]
    assert out[0][14 + 12:14 + 20] == err[14 + 12:14 + 20] and out[0][14 + 8] == 63
    assert real(d, R1)["stats"]["outpkts"] == 1
    # one quoting the real server's address is not about the connection
    err = icmp_error("192.168.0.1", CL, tcp(CL, 1000, R1, 80, "S"), icmp_type=3, code=1)
    _, v = d.process_packets([err], [2 * S])
    assert v == [V.PASS_PROTO] and real(d, R1)["stats"]["outpkts"] == 1


def test_reply_through_the_director_on_a_dr_connection_counts_and_steps_state() -> None:
    """handle_response (ip_vs_core.c:1269-1314): a connection that is not NAT skips the
    rewrite but is counted (ip_vs_out_stats) and steps its state on output. The reply
    is the real server's answer as it sends it, from the VIP: ip_vs_conn_out_get
    (ip_vs_conn.c:401-441) matches a DR/TUN connection by vaddr:vport; a packet from
    the real server's own address is not the connection's."""
    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {R1}:80 -g\n"
    d = director(rules, neigh=parse_neigh(f"{R1} 02:52:c0:a8:00:0a\n"))
    d.process_packets([tcp(CL, 1000, VIP, 80, "S")])
    _, v = d.process_packets([tcp(R1, 80, CL, 1000, "SA")], [S // 2])
    assert v == [V.PASS_NOT_SERVICE] and real(d, R1)["stats"]["outpkts"] == 0
    reply = tcp(VIP, 80, CL, 1000, "SA")
    _, v = d.process_packets([reply], [S])
    assert v == [V.PASS_NOT_MASQ]
    assert real(d, R1)["stats"]["outpkts"] == 1
    d.process_packets([tcp(CL, 1000, VIP, 80, "A")], [2 * S])
    d.process_packets([tcp(CL, 1000, VIP, 80, "FA")], [3 * S])
    # output seen: the INPUT table (CLOSE_WAIT), not INPUT-ONLY's FIN_WAIT
    assert d.lookup("tcp", CL, 1000, VIP, 80)["state"] == "CLOSE_WAIT"


# -- 4. ICMPv6: every type below 128 is an error ------------------------------------------
VIP6, R6, C6 = "2001:db8::1", "2001:db8:1::10", "2001:db8:2::5"


def test_icmpv6_parameter_problem_about_a_connection_is_translated() -> None:
    """ip_vs_in_icmp_v6 / ip_vs_out_icmp_v6 (ip_vs_core.c:1849, 1014): only
    ICMPV6_INFOMSG_MASK (types >= 128) marks a message as not an error."""
    d = director(f"-A -t [{VIP6}]:80 -s rr\n-a -t [{VIP6}]:80 -r [{R6}]:8080 -m\n")
    fwd, _ = d.process_packets([tcp6(C6, 40000, VIP6, 80, "S")])
    for t, icmp_type in enumerate((4, 0, 127), 1):
        err = icmp6_error("2001:db8:1::1", C6, fwd[0], icmp_type=icmp_type, code=0)
        out, v = d.process_packets([err], [t * S])
        assert v == [V.FWD_OUT]
        assert out[0][14 + 8:14 + 24] == bytes.fromhex("20010db8000000000000000000000001")
    echo = icmp6_error("2001:db8:1::1", C6, fwd[0], icmp_type=128, code=0)
    out, v = d.process_packets([echo], [9 * S])
    assert v == [V.PASS_PROTO] and out == [echo]


def test_icmpv6_bad_checksum_about_a_nat_connection_is_dropped() -> None:
    """ip_vs_in_icmp_v6 (ip_vs_core.c:1899-1906) checks the ICMPv6 checksum of an error
    about a NAT connection (ip_vs_checksum_common_check -> nf_ip6_checksum) and drops a
    bad one: issue 11 item 4 says otherwise; the 6.1 source decides."""
    d = director(f"-A -t [{VIP6}]:80 -s rr\n-a -t [{VIP6}]:80 -r [{R6}]:8080 -m\n")
    d.process_packets([tcp6(C6, 40000, VIP6, 80, "S")])
    reply, _ = d.process_packets([tcp6(R6, 8080, C6, 40000, "SA")], [S])
    err = bytearray(icmp6_error("2001:db8:2::1", VIP6, reply[0], icmp_type=1, code=4))
    err[14 + 40 + 2] ^= 0x0F
    _, v = d.process_packets([bytes(err)], [2 * S])
    assert v == [V.DROP_ICMP_CSUM]


# -- 10. statistics only while the real server is available -------------------------------
def test_reply_statistics_stop_when_the_real_server_is_removed() -> None:
    """ip_vs_out_stats (ip_vs_core.c:163) counts only with IP_VS_DEST_CF_AVAILABLE; the
    reply itself is still translated (handle_response does not look)."""
    d = director(f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {R1}:8080 -m\n")
    d.process_packets([tcp(CL, 1000, VIP, 80, "S")])
    d.process_packets([tcp(R1, 8080, CL, 1000, "SA")], [S])
    assert real(d, R1)["stats"]["outpkts"] == 1
    d.engine.remove_dest(0)
    out, v = d.process_packets([tcp(R1, 8080, CL, 1000, "A")], [2 * S])
    assert v == [V.FWD_OUT]
    assert d.engine.services()[0]["stats"]["outpkts"] == 1


# -- 9 (second half). sloppy_tcp --------------------------------------------------------
def test_sloppy_tcp_lets_any_segment_without_rst_make_a_connection() -> None:
    """tcp_conn_schedule (ip_vs_proto_tcp.c:52): th->rst || !(sloppy_tcp || th->syn)."""
    rules = f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {R1}:8080 -m\n"
    strict = director(rules)
    _, v = strict.process_packets([tcp(CL, 1000, VIP, 80, "A")])
    assert v == [V.DROP_TCP_NO_CONN]
    d = director(rules, sloppy_tcp=True)
    pkts = [tcp(CL, 1000, VIP, 80, "A"), tcp(CL, 1001, VIP, 80, "FA"), tcp(CL, 1002, VIP, 80, "-"),
            tcp(CL, 1003, VIP, 80, "R"), tcp(CL, 1004, VIP, 80, "RA"), tcp(CL, 1005, VIP, 80, "PA", b"x")]
    _, v = d.process_packets(pkts, [0] * 6)
    assert v == [V.FWD_IN] * 3 + [V.DROP_TCP_NO_CONN] * 2 + [V.FWD_IN]
    states = {p: d.lookup("tcp", CL, p, VIP, 80)["state"] for p in (1000, 1001, 1002, 1005)}
    # set_tcp_state from NONE: ACK -> ESTABLISHED, FIN -> CLOSE, no flags -> CLOSE
    assert states == {1000: "ESTABLISHED", 1001: "CLOSE", 1002: "CLOSE", 1005: "ESTABLISHED"}
    assert real(d, R1)["activeconns"] == 2


def test_sloppy_tcp_option_on_the_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastvs.cli import main

    rules = tmp_path / "r.txt"
    rules.write_text(f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {R1}:8080 -m\n")
    pcap = tmp_path / "in.pcap"
    fr = tcp(CL, 1000, VIP, 80, "A")
    pcap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                     + struct.pack("<IIII", 1, 0, len(fr), len(fr)) + fr)
    out = tmp_path / "out.pcap"
    assert main(["process", str(pcap), "-r", str(rules), "-o", str(out), "--sloppy-tcp", "-q", "--json"]) == 0
    assert out.stat().st_size == len(pcap.read_bytes())  # the ACK was forwarded


# -- 11. IPv6 extension headers and the TCP state ---------------------------------------
def test_ipv6_tcp_state_reads_the_header_after_extension_headers() -> None:
    """tcp_state_transition (ip_vs_proto_tcp.c:558) reads the TCP header at iph_len,
    which ip_vs_in_hook (ip_vs_core.c:2080) and handle_response (:1314) pass as
    iph.len: ipv6_find_hdr's offset past hop-by-hop, routing and destination options
    (include/net/ip_vs.h:91-95). Issue 11 item 11 describes a fixed 40-byte offset: that
    is what older kernels (6.1.0 among them) do; the lab's 6.1.192 passes the parsed
    offset (ip_vs_proto_tcp.c:551-558) and steps the state on the right bytes, as fastvs does."""
    d = director(f"-A -t [{VIP6}]:80 -s rr\n-a -t [{VIP6}]:80 -r [{R6}]:8080 -m\n")
    # hop-by-hop (PadN) then destination options (PadN), then TCP
    ext = bytes([60, 0, 1, 4, 0, 0, 0, 0]) + bytes([6, 0, 1, 4, 0, 0, 0, 0])
    syn = tcp6(C6, 40000, VIP6, 80, "S", ext=ext, ext_nh=0)
    out, v = d.process_packets([syn])
    assert v == [V.FWD_IN] and checksums6_ok(out[0])
    assert d.lookup("tcp", C6, 40000, VIP6, 80)["state"] == "SYN_RECV"
    ack = tcp6(C6, 40000, VIP6, 80, "A", ext=ext, ext_nh=0)
    d.process_packets([ack], [S])
    assert d.lookup("tcp", C6, 40000, VIP6, 80)["state"] == "ESTABLISHED"
    fin = tcp6(C6, 40000, VIP6, 80, "FA", ext=ext, ext_nh=0)
    d.process_packets([fin], [2 * S])
    assert d.lookup("tcp", C6, 40000, VIP6, 80)["state"] == "CLOSE_WAIT"


# -- differences found in the read, pinned -------------------------------------------------
def test_icmpv6_error_behind_a_fragment_header_is_dropped() -> None:
    """ip_vs_in_icmp_v6 (ip_vs_core.c:1856): "Fragment header that is before ICMP header
    tells us that: it's not an error message since they can't be fragmented"."""
    d = director(f"-A -t [{VIP6}]:80 -s rr\n-a -t [{VIP6}]:80 -r [{R6}]:8080 -m\n")
    fwd, _ = d.process_packets([tcp6(C6, 40000, VIP6, 80, "S")])
    err = icmp6_error("2001:db8:1::1", C6, fwd[0], icmp_type=1, code=4)
    ip = bytearray(err[14:])
    frag = bytes([58, 0, 0, 1, 0, 0, 0, 7])  # next header ICMPv6, offset 0, MF
    ip[6] = 44
    ip = ip[:40] + frag + ip[40:]
    ip[4:6] = (len(ip) - 40).to_bytes(2, "big")
    _, v = d.process_packets([err[:14] + bytes(ip)], [S])
    assert v == [V.DROP_L4_MALFORMED]


@pytest.mark.xfail(strict=True, reason=(
    "ip_vs_check_template (ip_vs_conn.c) invalidates a template whose real server is "
    "gone by rehashing it with vport and dport 65535 and cport 0: the kernel lists it "
    "until its timer runs; fastvs unhashes it, so the listing drops it at once"))
def test_invalidated_template_stays_listed_with_port_65535() -> None:
    d = director(f"-A -t {VIP}:80 -s rr -p 300\n-a -t {VIP}:80 -r {R1}:80 -m\n-a -t {VIP}:80 -r {R2}:80 -m\n")
    out, _ = d.process_packets([tcp(CL, 1000, VIP, 80, "S")])
    gone = dst_of(out[0])[0]
    d.engine.remove_dest(next(r["index"] for r in d.engine.services()[0]["reals"] if r["addr"] == gone))
    d.process_packets([tcp(CL, 1001, VIP, 80, "S")], [S])
    tpl = [c for c in d.connections() if c["template"]]
    assert any(c["vport"] == 65535 and c["dport"] == 65535 and c["daddr"] == gone for c in tpl)


@pytest.mark.xfail(strict=True, reason=(
    "__ip_vs_get_out_rt -> ensure_mtu_is_adequate checks the route MTU for NAT and "
    "direct routing too (a DF datagram above it is dropped, ICMP fragmentation needed); "
    "fastvs models a route MTU only toward tunnels (--tunnel-mtu)"))
def test_nat_route_mtu_drops_big_df_datagrams() -> None:
    d = director(f"-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r {R1}:53 -m\n")
    big = bytearray(udp(CL, 5000, VIP, 53, b"z" * 1600))
    big[14 + 6] |= 0x40
    big[14 + 10:14 + 12] = b"\0\0"
    big[14 + 10:14 + 12] = dpkt.in_cksum(bytes(big[14:34])).to_bytes(2, "big")
    _, v = d.process_packets([bytes(big)])
    assert v == [V.DROP_MTU]


@pytest.mark.xfail(strict=True, reason=(
    "ip_vs_in_icmp's tunnel case (ip_vs_core.c:1649-1662, 1740-1808): an error about the "
    "director's own IPIP packet to a tunnel real server is consumed and the kernel sends "
    "its own ICMP to the client (icmp_send); fastvs sends no packets of its own and "
    "passes the error"))
def test_error_about_our_ipip_packet_is_consumed() -> None:
    d = director(f"-A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r {R1} -i\n", tunnel_source="10.0.0.254")
    out, _ = d.process_packets([udp(CL, 5000, VIP, 53)])
    err = icmp_error("192.168.0.1", "10.0.0.254", out[0], icmp_type=3, code=4, quote_len=48)
    _, v = d.process_packets([err], [S])
    assert v[0] >= V.DROP_BASE


@pytest.mark.xfail(strict=True, reason=(
    "__ip_vs_conn_in_get (ip_vs_conn.c:277): a packet with client port 0 matches only an "
    "entry flagged NO_CPORT (sync), so a client sending from port 0 never finds its own "
    "connection: its SYN makes a new one each time, its ACK is not IPVS's; fastvs finds "
    "the connection like any other"))
def test_client_port_zero_never_finds_its_connection() -> None:
    d = director(f"-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r {R1}:80 -m\n")
    d.process_packets([tcp(CL, 0, VIP, 80, "S")])
    _, v = d.process_packets([tcp(CL, 0, VIP, 80, "A")], [S])
    assert v == [V.DROP_TCP_NO_CONN]
