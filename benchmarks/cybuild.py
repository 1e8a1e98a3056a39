"""Build a Cython module that does not ship in the package, on demand, and import it.

The benchmark stages (``benchmarks/_stages.pyx``) and the SCTP test handles
(``tests/datapath/_sctp_test.pyx``) cimport the data path's inline ``.pxd`` modules,
so they compile against the installed fastvs sources: the include path is the
directory holding the ``fastvs`` package (its ``.pxd`` files) plus every folder of a
``.h`` under it and numpy's headers. The directives are setup.py's set, release or
debug as the installed package was built (``fastvs.datapath._engine.DEBUG_BUILD``: a
``FASTVS_DEBUG=1`` build gets bounds checks here too). The result is cached in
``build/cybuild/`` under the repository, keyed by a hash of the source, of every
``.pxd``/``.h`` it may include, of the directives and of the interpreter: a changed
input builds again, an unchanged one is only imported.

    from benchmarks.cybuild import load_pyx
    stages = load_pyx(Path("benchmarks/_stages.pyx"))
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "cybuild"
_loaded: dict[Path, ModuleType] = {}


def _debug_build() -> bool:
    from fastvs.datapath import _engine

    return bool(_engine.DEBUG_BUILD)


def build_settings(debug: bool) -> tuple[dict[str, Any], list[tuple[str, str]], list[str]]:
    """(directives, macros, cflags) as setup.py chooses them for a release or debug
    build. The directive dict is read from setup.py itself when it is there."""
    directives: dict[str, Any] = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }
    setup_py = ROOT / "setup.py"
    if setup_py.is_file():
        for node in ast.parse(setup_py.read_text()).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "directives"):
                expr = ast.Expression(node.value)
                directives = eval(compile(expr, str(setup_py), "eval"), {"DEBUG": debug})
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    cflags = ["-O3", "-fno-strict-aliasing"]
    if debug:
        directives["linetrace"] = True
        macros += [("CYTHON_TRACE_NOGIL", "1"), ("FASTVS_DEBUG", "1")]
        cflags = ["-O1", "-g"]
    return directives, macros, cflags


def _key(pyx: Path, pkg_root: Path, settings: object) -> str:
    h = hashlib.sha256()
    h.update(pyx.read_bytes())
    for f in sorted((pkg_root / "fastvs").rglob("*")):
        if f.suffix in (".pxd", ".h"):
            h.update(str(f.relative_to(pkg_root)).encode())
            h.update(f.read_bytes())
    h.update(repr(settings).encode())
    h.update(sys.version.encode())
    h.update(sysconfig.get_config_var("EXT_SUFFIX").encode())
    return h.hexdigest()[:16]


def _compile(pyx: Path, out: Path, pkg_root: Path, debug: bool) -> None:
    import numpy as np
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    directives, macros, cflags = build_settings(debug)
    headers = sorted({str(h.parent) for h in (pkg_root / "fastvs").rglob("*.h")})
    ext = Extension(pyx.stem, [str(pyx)], include_dirs=[np.get_include(), *headers],
                    define_macros=macros, extra_compile_args=cflags)
    tmp = out / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    exts = cythonize([ext], compiler_directives=directives, include_path=[str(pkg_root)],
                     build_dir=str(tmp), quiet=True, force=True)
    dist = Distribution({"ext_modules": exts})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out)
    cmd.build_temp = str(tmp)
    cmd.ensure_finalized()
    cmd.run()


def load_pyx(pyx: Path | str) -> ModuleType:
    """Build ``pyx`` (if its cached build is missing or stale) and import it."""
    pyx = Path(pyx).resolve()
    if pyx in _loaded:
        return _loaded[pyx]
    import fastvs

    pkg_root = Path(fastvs.__file__).resolve().parents[1]
    debug = _debug_build()
    key = _key(pyx, pkg_root, build_settings(debug))
    out = CACHE / f"{pyx.stem}-{'debug' if debug else 'release'}-{key}"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = out / f"{pyx.stem}{suffix}"
    if not so.is_file():
        _compile(pyx, out, pkg_root, debug)
        if not so.is_file():
            raise ImportError(f"building {pyx} gave no {so.name}")
    spec = importlib.util.spec_from_file_location(pyx.stem, so)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {so}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _loaded[pyx] = mod
    return mod


def stages() -> ModuleType:
    """``benchmarks/_stages.pyx``: one data-path stage at a time (see its docstring)."""
    return load_pyx(ROOT / "benchmarks" / "_stages.pyx")


if __name__ == "__main__":
    # build (or find) every on-demand module: python benchmarks/cybuild.py
    for path in (ROOT / "benchmarks" / "_stages.pyx", ROOT / "tests" / "datapath" / "_sctp_test.pyx"):
        print(path.relative_to(ROOT), "->", load_pyx(path).__file__, flush=True)
