"""mh (ip_vs_mh.c): Maglev hashing over a 4093-slot table; -b mh-fallback / mh-port.

The table is compared with a naive population written from the paper (full
permutation lists, turns per weight/gcd) and a SipHash spelled out in Python; the
C SipHash is checked against the reference test vectors.
"""

from __future__ import annotations

from collections import Counter

import pytest
from reference.sched_harness import Bench, real
from reference.sched_models import hsiphash32, siphash

from fastvs.sched import mh

KEY = (0x0706050403020100, 0x0F0E0D0C0B0A0908)

# SipHash-2-4 reference vectors (github.com/veorq/SipHash): key 00..0f, message 00..(n-1)
SIPHASH24 = [
    0x726FDB47DD0E0E31, 0x74F839C593DC67FD, 0x0D6C8009D9A94F5A, 0x85676696D7FB7E2D,
    0xCF2794E0277187B7, 0x18765564CD99A68D, 0xCBC9466E58FEE3CE, 0xAB0200F58B01D137,
    0x93F5F5799A932462, 0x9E0082DF0BA9E4B0, 0x7A5DBBC594DDB9F3, 0xF4B32F46226BADA7,
    0x751E8FBC860EE5FB, 0x14EA5627C0843D90, 0xF723CA908E7AF2EE, 0xA129CA6149BE45E5,
    0x3F2ACC7F57C29BDB, 0x699AE9F52CBE4794, 0x4BC1B3F0968DD39C, 0xBB6DC91DA77961BD,
    0xBED65CF21AA2EE98, 0xD0F2CBB02E3B67C7, 0x93536795E3A33E88, 0xA80C038CCD5CCEC8,
    0xB8AD50C6F649AF94, 0xBCE192DE8A85B8EA, 0x17D835B85BBB15F3, 0x2F2E6163076BCFAD,
    0xDE4DAAACA71DC9A5, 0xA6A2506687956571, 0xAD87A3535C49EF28, 0x32D892FAD841C342,
    0x7127512F72F27CCE, 0xA7F32346F95978E3, 0x12E0B01ABB051238, 0x15E034D40FA197AE,
    0x314DFFBE0815A3B4, 0x027990F029623981, 0xCADCD4E59EF40C4D, 0x9ABFD8766A33735C,
    0x0E3EA96B5304A7D0, 0xAD0C42D6FC585992, 0x187306C89BC215A9, 0xD4A60ABCF3792B95,
    0xF935451DE4F21DF2, 0xA9538F0419755787, 0xDB9ACDDFF56CA510, 0xD06C98CD5C0975EB,
    0xE612A3CB9ECBA951, 0xC766E62CFCADAF96, 0xEE64435A9752FE72, 0xA192D576B245165A,
    0x0A8787BF8ECB74B2, 0x81B3E73D20B49B6F, 0x7FA8220BA3B2ECEA, 0x245731C13CA42499,
    0xB78DBFAF3A8D83BD, 0xEA1AD565322A1A0B, 0x60E61C23A3795013, 0x6606D7E446282B93,
    0x6CA4ECB15C5F91E1, 0x9F626DA15C9625F3, 0xE51B38608EF25F57, 0x958A324CEB064572,
]

# The kernel's 64-bit hsiphash (SipHash-1-3, low 32 bits) on the same inputs
# (lib/test_siphash.c), the first 16
HSIPHASH = [
    0x050FC4DC, 0x7D57CA93, 0x4DC7D44D, 0xE7DDF7FB, 0x88D38328, 0x49533B67, 0xC59F22A7,
    0x9BB11140, 0x8D299A8E, 0x6C063DE4, 0x92FF097F, 0xF94DC352, 0x57B4D9A2, 0x1229FFA7,
    0xC0F95D34, 0x2A519956,
]


@pytest.mark.parametrize("n", range(64))
def test_siphash24_reference_vectors(n: int) -> None:
    assert mh.siphash(bytes(range(n)), *KEY) == SIPHASH24[n]
    assert siphash(*KEY, bytes(range(n))) == SIPHASH24[n]


@pytest.mark.parametrize("n", range(16))
def test_hsiphash_kernel_vectors(n: int) -> None:
    assert mh.siphash(bytes(range(n)), *KEY, 1, 3) & 0xFFFFFFFF == HSIPHASH[n]


def test_hsiphash_of_one_u32() -> None:
    assert mh.hsiphash_u32(0x03020100, *KEY) == HSIPHASH[4]
    for v in (0, 1, 0xDEADBEEF, 0xFFFFFFFF):
        assert mh.hsiphash_u32(v, 2654435761, 2654435761) == hsiphash32(2654435761, v)


def test_table_matches_naive_population() -> None:
    b = Bench("mh", [(real(1), 1), (real(2), 2), (real(3), 3), (real(4), 1)])
    picks = Counter(b.run_random(600))
    assert picks[real(3)] > picks[real(1)]


def test_consistent_after_removal_most_clients_stay() -> None:
    """Maglev's point: removing one server moves few of the others' clients."""
    reals = [(real(i), 1) for i in range(1, 9)]
    b = Bench("mh", reals)
    clients = [(f"100.64.{i // 200}.{i % 200 + 1}", 40000) for i in range(400)]
    before = {c: b.connect(*c, 0)[0] for c in clients}
    b.remove(real(3))
    moved = 0
    for i, c in enumerate(clients):
        got, want = b.connect(c[0], c[1] + 1, i + 1)
        assert got == want
        if before[c] != real(3) and got != before[c]:
            moved += 1
    assert moved < len(clients) * 0.1


def test_quiesced_server_keeps_slots_fallback_skips_it() -> None:
    """last_weight: weight 0 keeps a server's slots; without fallback its clients
    get no destination, with mh-fallback they go on through the table."""
    b = Bench("mh", [(real(1), 2), (real(2), 2), (real(3), 4)])
    b.edit(real(3), 0)
    assert None in b.run_random(200)
    f = Bench("mh", [(real(1), 2), (real(2), 2), (real(3), 4)], flags="mh-fallback")
    f.edit(real(3), 0)
    picks = f.run_random(200)
    assert None not in picks and real(3) not in picks


def test_port_flag_and_weight_edits() -> None:
    b = Bench("mh", [(real(i), w) for i, w in enumerate([1, 5, 10, 0, 3], 1)],
              flags="mh-fallback,mh-port")
    b.run_random(200)
    b.edit(real(4), 2)
    b.edit(real(2), 0)
    b.run_random(200, seed=2)


def test_big_weights_are_shifted() -> None:
    """rshift: weight/gcd above 6 bits is scaled down before taking turns."""
    b = Bench("mh", [(real(1), 1), (real(2), 1000), (real(3), 300)])
    b.run_random(300)


def test_overloaded_without_fallback_is_no_destination() -> None:
    b = Bench("mh", [(real(1), 1, 2), (real(2), 1, 2)])
    picks = b.run_random(40)
    assert picks.count(None) >= 36
