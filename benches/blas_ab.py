"""A/B of the sgemm in the OpenBLAS builds present: the one fastrnn calls (scipy's bundled
OpenBLAS, via scipy.linalg.cython_blas), NumPy's bundled OpenBLAS, and any other OpenBLAS shared
library given with --lib (e.g. the scipy-openblas32 wheel's lib/libscipy_openblas.so).

Every library gets the exact same call (row-major C = A @ B issued as column-major C^T = B^T A^T,
as fastrnn's src/gemm/_blas.pxd does) through ctypes, 1 thread, interleaved; the shapes are the
products of fastrnn's per-step and whole-sequence GEMMs in the benchmark table.

    python benches/blas_ab.py [--lib PATH ...] [--threads 1]
"""

import argparse
import ctypes
import glob
import os
import time

import numpy as np

SHAPES = [  # (M, K, N): per-step forward / backward products, then whole-sequence ones
    (20, 100, 400),
    (20, 400, 100),
    (20, 650, 2600),
    (20, 2600, 650),
    (64, 256, 1024),
    (64, 1024, 256),
    (128, 512, 2048),
    (128, 2048, 512),
    (700, 100, 400),
    (700, 650, 2600),
    (6400, 256, 1024),
]


def _bundled(pkg, pattern):
    mod = __import__(pkg)
    root = os.path.dirname(os.path.dirname(os.path.abspath(mod.__file__)))
    hits = glob.glob(os.path.join(root, f"{pkg}.libs", pattern))
    return hits[0] if hits else None


def _open(path):
    """(name, sgemm function, integer type, set_num_threads) for an OpenBLAS shared library."""
    lib = ctypes.CDLL(path)
    for prefix, suffix, itype in (
        ("scipy_", "64_", ctypes.c_int64),
        ("scipy_", "", ctypes.c_int),
        ("", "64_", ctypes.c_int64),
        ("", "", ctypes.c_int),
    ):
        try:
            f = getattr(lib, f"{prefix}sgemm_{suffix}")
        except AttributeError:
            continue
        f.restype = None
        f.argtypes = [ctypes.c_void_p] * 13
        config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
        name = os.path.basename(path)
        if config is not None:
            config.restype = ctypes.c_char_p
            name = config().decode().split(" DYNAMIC")[0] + f" ({name})"
        setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if setter is not None:
            setter.argtypes = [ctypes.c_int]
        return name, f, itype, setter
    raise SystemExit(f"{path}: no sgemm symbol found")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", action="append", default=[], help="another OpenBLAS .so to compare")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS)

    paths = [
        ("fastrnn's (scipy)", _bundled("scipy", "libscipy_openblas*.so")),
        ("numpy's", _bundled("numpy", "libscipy_openblas*.so")),
    ]
    paths += [(p, p) for p in args.lib]
    libs = []
    for label, path in paths:
        if path is None:
            print(f"{label}: not found, skipped")
            continue
        name, f, itype, setter = _open(path)
        if setter is not None:
            setter(args.threads)
        libs.append((f"{label}: {name}", f, itype))
    keep = []

    def ref(obj):
        keep.append(obj)
        return ctypes.addressof(obj)

    print(f"us per call (median of {args.rounds}, interleaved), {args.threads} thread(s)")
    for i, (label, _, _) in enumerate(libs):
        print(f"  [{i}] {label}")
    print(
        "(M,K)x(K,N)".ljust(22)
        + "".join(f"{f'[{i}]':>12}" for i in range(len(libs)))
        + "".join(f"{f'[{i}]/[0]':>10}" for i in range(1, len(libs)))
    )
    rng = np.random.default_rng(0)
    for M, K, N in SHAPES:
        A = rng.standard_normal((M, K)).astype(np.float32)
        B = rng.standard_normal((K, N)).astype(np.float32)
        C = np.zeros((M, N), np.float32)
        calls = []
        for _, f, it in libs:
            a = (
                ref(ctypes.c_char(b"N")),
                ref(ctypes.c_char(b"N")),
                ref(it(N)),
                ref(it(M)),
                ref(it(K)),
                ref(ctypes.c_float(1)),
                B.ctypes.data,
                ref(it(N)),
                A.ctypes.data,
                ref(it(K)),
                ref(ctypes.c_float(0)),
                C.ctypes.data,
                ref(it(N)),
            )
            f(*a)
            calls.append((f, a))
        reps = max(1, int(3e6 / (M * N * K)))
        times = [[] for _ in calls]
        for _ in range(args.rounds):
            for j, (f, a) in enumerate(calls):
                t0 = time.perf_counter()
                for _ in range(reps):
                    f(*a)
                times[j].append((time.perf_counter() - t0) / reps)
        med = [float(np.median(t)) * 1e6 for t in times]
        print(
            f"({M},{K})x({K},{N})".ljust(22)
            + "".join(f"{m:12.1f}" for m in med)
            + "".join(f"{m / med[0]:10.2f}" for m in med[1:])
        )


if __name__ == "__main__":
    main()
