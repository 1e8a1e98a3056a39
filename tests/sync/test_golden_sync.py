"""The kernel as referee (tests/golden/sync/, recorded with tools/kernlab_sync.py on
Debian's 6.1.0-57 kernel in the kernel lab; see tests/golden/sync/README.md):

- every sync datagram the kernel's master sent decodes without a drop, and encodes
  back to the same bytes;
- a reference master (refmaster.py: the input capture through fastvs.sync.policy and
  the message builder) sends the kernel's datagrams byte for byte;
- decoding what was injected into the kernel's backup gives the connections the
  backup listed (``ipvsadm -L -n -c``), for the kernel's own messages and for
  messages fastvs encoded (s3-own: templates, unbound, IPv6, SCTP, updates,
  replacements, v0, and records and messages the backup must refuse).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from refmaster import simulate

from fastvs.control.rules import load_rules
from fastvs.sync.backup import BackupTable
from fastvs.sync.decode import decode_capture
from fastvs.sync.frames import iter_datagrams
from fastvs.sync.proto import decode_message, encode_message, reencode

pytestmark = pytest.mark.kernel

G = Path(__file__).resolve().parent.parent / "golden" / "sync"
MASTER = [
    "s1-tcp-udp",
    "s2-persist",
    "s1-tcp-udp-v0",
    "s2-persist-v0",
    "s1-tcp-udp-t1p4",
    "s1-tcp-udp-t3p0",
    "s2-persist-pm1",
]
# recordings with other sync sysctls: (input, SyncSysctls fields)
VARIANTS = {
    "t1p4": dict(sync_threshold=1, sync_period=4),  # sync_threshold="1 4"
    "t3p0": dict(sync_threshold=3, sync_period=0),  # sync_threshold="3 0"
    "pm1": dict(sync_persist_mode=1),
}
SYNCID = 7


def _payloads(name: str) -> list[bytes]:
    return [d.payload for d in iter_datagrams(G / f"{name}.kernel.sync.pcap", 8848, "224.0.0.81")]


@pytest.mark.parametrize("name", MASTER)
def test_kernel_messages_decode_without_drop(name: str) -> None:
    msgs = _payloads(name)
    assert msgs
    for m in msgs:
        res = decode_message(m, SYNCID, maxlen=1472)
        assert not res.drops, res.drops
        assert res.version == (0 if name.endswith("-v0") else 1)
        assert len(res.conns) == res.nr_conns
        assert len(m) <= 1472  # the master's sync_maxlen: 1500 - 28


@pytest.mark.parametrize("name", MASTER)
def test_encode_decode_is_identity_on_kernel_messages(name: str) -> None:
    for m in _payloads(name):
        res = decode_message(m, SYNCID)
        assert reencode(res) == m
        assert encode_message(res.conns, SYNCID, res.version or 0) == m


@pytest.mark.parametrize("name", MASTER)
def test_reference_master_sends_the_kernels_datagrams(name: str) -> None:
    """Same input, same sysctls: the same records in the same order, cut into the
    same messages (40 records per 1472 bytes, flush 2 s after the first)."""
    base = next(b for b in ("s1-tcp-udp", "s2-persist") if name.startswith(b))
    tag = name[len(base) + 1 :]
    version = 0 if tag == "v0" else 1
    sysctls = VARIANTS.get(tag, {})
    _, msgs = simulate(
        str(G / f"{base}.pcap"), str(G / f"{base}.rules"), SYNCID, version, **sysctls
    )
    assert [m for _, m in msgs] == _payloads(name)


def test_templates_ride_on_every_input_packet() -> None:
    """Kernel surprise pinned: with the default sysctls a persistence template is
    re-sent with every input packet of its connections (v1), not only when a
    connection is sent; v0 sends it only after its connection."""
    v1 = [c for m in _payloads("s2-persist") for c in decode_message(m).conns]
    v0 = [c for m in _payloads("s2-persist-v0") for c in decode_message(m).conns]
    tpl1 = sum(c.is_template for c in v1)
    tpl0 = sum(c.is_template for c in v0)
    assert (tpl1, len(v1) - tpl1) == (27, 12)
    assert (tpl0, len(v0) - tpl0) == (12, 12)


_CONN_RE = re.compile(r"^(\S+)\s+(\d\d):(\d\d)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$")


def kernel_listing(path: Path) -> list[tuple[str, int, str, str, str, str]]:
    """(proto, expire seconds, state, source, virtual, destination) rows of the
    ``ipvsadm -L -n -c`` section of a kl-dump."""
    rows = []
    inside = False
    for line in path.read_text().splitlines():
        if line.startswith("== "):
            inside = line.strip() == "== ipvsadm -L -n -c"
            continue
        m = _CONN_RE.match(line.strip()) if inside else None
        if m:
            rows.append((m[1], int(m[2]) * 60 + int(m[3]), m[4], m[5], m[6], m[7]))
    return rows


def _ours(listing: str) -> list[tuple[str, int, str, str, str, str]]:
    rows = []
    for line in listing.splitlines():
        m = _CONN_RE.match(line.strip())
        if m:
            rows.append((m[1], int(m[2]) * 60 + int(m[3]), m[4], m[5], m[6], m[7]))
    return rows


def _compare(
    kernel: list[tuple[str, int, str, str, str, str]],
    ours: list[tuple[str, int, str, str, str, str]],
) -> None:
    """Same rows as a multiset; expire within 6 s (the kernel lists a few seconds
    after its last message, in real time)."""
    assert Counter(r[:1] + r[2:] for r in kernel) == Counter(r[:1] + r[2:] for r in ours)
    exp_k = sorted((r[3], r[4], r[5], r[2], r[1]) for r in kernel)
    exp_o = sorted((r[3], r[4], r[5], r[2], r[1]) for r in ours)
    for k, o in zip(exp_k, exp_o, strict=True):
        assert k[:4] == o[:4]
        assert 0 <= o[4] - k[4] <= 6, (k, o)


BACKUP = [
    ("s1-tcp-udp.backup", "s1-tcp-udp"),
    ("s2-persist.backup", "s2-persist"),
    ("s1-tcp-udp-v0.backup", "s1-tcp-udp"),
    ("s2-persist-v0.backup", "s2-persist"),
    ("s3-own.backup", "s3-own"),
]


@pytest.mark.parametrize("name,rules", BACKUP)
def test_backup_listing_equals_the_kernel_backups(name: str, rules: str) -> None:
    from fastvs.control.listing import format_conns

    kernel = kernel_listing(G / f"{name}.ipvsadm.txt")
    assert kernel
    rep = decode_capture(
        str(G / f"{name}.inject.pcap"),
        syncid=SYNCID,
        table=BackupTable(load_rules(G / f"{rules}.rules")),
    )
    _compare(kernel, _ours(format_conns(rep.entries())))


def test_own_messages_drops_are_counted() -> None:
    rep = decode_capture(str(G / "s3-own.backup.inject.pcap"), syncid=SYNCID)
    s = rep.summary()
    assert s["drops"] == {
        "bad_flags": 1,
        "bad_state": 2,
        "pe_unavailable": 2,
        "size_mismatch": 1,
        "syncid": 1,
        "unknown_option": 1,
        "unsupported_protocol": 1,
        "v1_opt_seq": 1,
    }
    assert (s["messages_ok"], s["messages_partial"], s["messages_dropped"]) == (3, 1, 2)
    assert rep.table.counts["replaced"] == 1 and rep.table.counts["ignored"] == 1
