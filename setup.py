"""Build the Cython kernels in src/ into fastrnn._* extension modules.

Environment switches (all off by default, so wheels stay portable):
  FASTRNN_NATIVE=1      add -march=native (local builds only: such a binary can crash elsewhere)
  FASTRNN_DEBUG=1       -O0 -g and Cython bounds checks, for debugging the kernels
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["_rnn", "_lstm", "_gru", "_norms", "_packed", "_pool", "_checks"]

debug = os.environ.get("FASTRNN_DEBUG") == "1"
# -fno-trapping-math only promises that no code watches floating-point exception flags; it lets
# GCC if-convert the clamps in fr_math.h and so vectorise the gate loops.  Results, NaN and Inf
# are unchanged (unlike -ffast-math, which is never used).
compile_args = ["-O0", "-g"] if debug else ["-O3", "-fno-trapping-math"]
if os.environ.get("FASTRNN_NATIVE") == "1":
    compile_args.append("-march=native")

extensions = [
    Extension(
        f"fastrnn.{name}",
        [f"src/{name}.pyx"],
        include_dirs=["src", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        depends=["src/fr_math.h", "src/fr_cells.h", "src/fr_cells_impl.h",
                 "src/fr_reduce.h", "src/fr_copy.h", "src/fr_gemm.h", "src/fr_gemm_pack.h", "src/fr_gemm_dtype.h", "src/fr_parallel.h", "src/fr_pool.h", "src/fr_gemm_impl.h", "src/_packed.pxd", "src/_parallel.pxd", "src/_seq.pxd", "src/_blas.pxd", "src/_cells.pxd"],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src"],
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
