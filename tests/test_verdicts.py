"""fastvs/verdicts.py and the engine's V_* enum (fastvs/datapath/_types.pxd) agree."""

from __future__ import annotations

import re
from pathlib import Path

from fastvs import verdicts as V

TYPES_PXD = Path(V.__file__).parent / "datapath" / "_types.pxd"


def _pxd_codes() -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s+V_(\w+)\s*=\s*(\d+)\s*$", TYPES_PXD.read_text(), re.M)}


def test_codes_match_the_engine_enum() -> None:
    pxd = _pxd_codes()
    pxd.pop("NCODES")
    py = {k: v for k, v in vars(V).items() if k.isupper() and isinstance(v, int)}
    assert py == pxd


def test_every_code_has_a_name_and_a_side() -> None:
    codes = {v for k, v in vars(V).items() if k.isupper() and isinstance(v, int) and k != "DROP_BASE"}
    assert set(V.NAMES) == codes
    assert len(set(V.NAMES.values())) == len(V.NAMES)
    for code, name in V.NAMES.items():
        assert V.name(code) == name
        assert V.is_written(code) == (not name.startswith("drop_"))
