"""Build the Cython kernels in src/ into fastrnn._* extension modules.

Environment switches (all off by default, so wheels stay portable):
  FASTRNN_NATIVE=1      add -march=native (local builds only: such a binary can crash elsewhere)
  FASTRNN_DEBUG=1       -O0 -g and Cython bounds checks, for debugging the kernels
"""

import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# extension module -> its source; src/ is grouped by concept (see src/README.md): the cells'
# time loops, the GEMM micro-kernels and packing, the thread pool, the norms and input checks,
# the language-model layers' kernels
KERNELS = {
    "_recurrent": "cells",
    "_packed": "gemm",
    "_pool": "parallel",
    "_norms": "checks",
    "_checks": "checks",
    "_lm": "lm",
    "_cpu": "common",
}
SRC_DIRS = ["src/common", "src/cells", "src/gemm", "src/parallel", "src/checks", "src/lm"]

debug = os.environ.get("FASTRNN_DEBUG") == "1"
# -fno-trapping-math only promises that no code watches floating-point exception flags; it lets
# GCC if-convert the clamps in fr_math.h and so vectorise the gate loops.  -fno-math-errno: no
# code reads errno after sqrt, so sqrt is one instruction and vectorises (Adam's step).  Results,
# NaN and Inf are unchanged by both (unlike -ffast-math, which is never used).
compile_args = ["-O0", "-g"] if debug else ["-O3", "-fno-trapping-math", "-fno-math-errno"]
if os.environ.get("FASTRNN_NATIVE") == "1":
    compile_args.append("-march=native")

extensions = [
    Extension(
        f"fastrnn.{name}",
        [f"src/{group}/{name}.pyx"],
        include_dirs=SRC_DIRS + [np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        depends=sorted(glob.glob("src/*/*.h") + glob.glob("src/*/*.pxd")),
    )
    for name, group in KERNELS.items()
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=SRC_DIRS,
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": False,
            "initializedcheck": debug,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
