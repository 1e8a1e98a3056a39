"""Build every Cython module under fastvs/ with one directive set.

FASTVS_DEBUG=1 turns on bounds checks, wraparound and line tracing, and defines the
FASTVS_DEBUG C macro; FASTVS_SANITIZE=1 adds AddressSanitizer/UBSan flags.

The directive set below is the only one: no .pyx/.pxd may override it with a
``# cython:`` header or a decorator (tests/test_stubs.py checks). The C that Cython
generates goes to build/cython-release/ or build/cython-debug/, one tree per directive
set: cythonize decides what to regenerate by timestamps alone, so C generated with the
other set next to the sources would be reused (a "debug" build without bounds checks).
"""

import os
import sysconfig
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTVS_DEBUG") == "1"
SANITIZE = os.environ.get("FASTVS_SANITIZE") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
cflags = ["-O3", "-fno-strict-aliasing"]
if "clang" not in (os.environ.get("CC") or sysconfig.get_config_var("CC") or ""):
    # GCC: let the per-packet function be inlined into the batch loop (measured
    # 494 -> 462 instructions per packet in callgrind)
    cflags += ["--param=large-function-growth=400", "--param=large-function-insns=8000"]
    # and keep it from merging the tails of the per-packet paths: the merged blocks
    # joined values that then went through the stack (est-1k 433.0 -> 429.0
    # instructions per packet in callgrind)
    cflags += ["-fno-tree-tail-merge"]
ldflags: list[str] = []
if DEBUG:
    directives["linetrace"] = True
    macros += [("CYTHON_TRACE_NOGIL", "1"), ("FASTVS_DEBUG", "1")]
    cflags = ["-O1", "-g"]
if SANITIZE:
    cflags += ["-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    ldflags += ["-fsanitize=address,undefined"]

here = Path(__file__).parent
# every folder holding a C header a .pxd names (cdef extern from "x.h")
header_dirs = sorted({str(h.parent.relative_to(here)) for h in here.glob("fastvs/**/*.h")})
extensions = []
for pyx in sorted(here.glob("fastvs/**/*.pyx")):
    rel = pyx.relative_to(here)
    name = ".".join(rel.with_suffix("").parts)
    extensions.append(
        Extension(
            name,
            [str(rel)],
            include_dirs=[np.get_include(), *header_dirs],
            define_macros=macros,
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=os.environ.get("FASTVS_ANNOTATE") == "1",
        build_dir=f"build/cython-{'debug' if DEBUG else 'release'}",
        nthreads=2,
    ),
)
