"""The live path's modules import one another without a cycle, and each imports alone
(in a fresh interpreter, so no other test's imports hide a missing one)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LIVE = Path(__file__).resolve().parents[2] / "fastvs" / "live"
MODULES = sorted(p.stem for p in LIVE.glob("*.py") if p.stem not in ("__init__", "__main__"))
COMPILED = sorted(p.stem for p in LIVE.glob("*.pyx"))


def live_imports(path: Path) -> set[str]:
    """The fastvs.live modules a source file imports (at any depth: lazy imports too),
    its cimports included for a .pyx/.pxd."""
    out: set[str] = set()
    text = path.read_text()
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "fastvs.live":
                    out.update(a.name for a in node.names)
                elif node.module.startswith("fastvs.live."):
                    out.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("fastvs.live."))
    else:
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("from", "cimport", "import") and words[1].startswith("fastvs.live."):
                out.add(words[1].split(".")[2])
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for p in sorted(LIVE.iterdir()):
        if p.suffix in (".py", ".pyx", ".pxd") and p.stem != "__init__":
            g.setdefault(p.stem, set()).update(live_imports(p) - {p.stem})
    return g


def test_import_graph_is_acyclic() -> None:
    g = graph()
    assert {"bpf", "io", "afpacket", "_afpacket", "_l2", "neigh", "worker", "supervisor", "cli"} <= set(g)
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, "import cycle: " + " -> ".join([*path, m])
        state[m] = 1
        for dep in sorted(g.get(m, ())):
            visit(dep, [*path, m])
        state[m] = 2

    for m in sorted(g):
        visit(m, [])
    # the layering the split is for: the data plane never reaches the control side
    assert "neigh" not in g["bpf"] and g["bpf"] <= set()
    assert not g["_l2"] - {"_neightab", "_l2"}
    assert not (g["_afpacket"] - {"_l2", "_neightab"})
    assert "supervisor" not in g["worker"] and "cli" not in g["supervisor"]


@pytest.mark.parametrize("module", MODULES + COMPILED)
def test_each_module_imports_alone(module: str) -> None:
    r = subprocess.run([sys.executable, "-c", f"import fastvs.live.{module}"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
