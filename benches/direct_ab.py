"""A/B of the products of a few rows: fastrnn's direct kernels (src/gemm/fr_gemm_impl.h: gemm_direct
for A @ B, gemm_direct_nt for A @ W^T, both reading the weights in place, gemm_direct_tn for
A^T @ B) against the scipy sgemm call the kernels make otherwise, and NumPy's matmul (NumPy's own
OpenBLAS build).

These are the products of a single step (a cell, a generation step with a batch): x @ Wx and
h @ Wh forward, dG @ Wx^T and dG @ Wh^T backward, M = batch rows; and its weight gradients
X^T @ dG, summed over K = batch rows.  One BLAS thread, interleaved rounds, medians; the
measurement behind worth_direct and worth_direct_tn in src/gemm/_packed.pxd.

    python benches/direct_ab.py [--rounds 7]
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastrnn import _packed

# (M, K, N): C (M, N) = A (M, K) @ B (K, N); for "nt", W = B.T is given as an (N, K) matrix
SHAPES = [(M, 650, 2600) for M in (1, 2, 4, 8, 20, 32, 64)] + [(20, 100, 400), (64, 256, 1024)]
NT_SHAPES = [(M, 2600, 650) for M in (1, 2, 4, 8, 20, 32, 64)] + [(20, 400, 100), (64, 1024, 256)]
# for "tn", A is given as the (K, M) matrix A.T: a weight gradient summed over K rows
TN_SHAPES = [(650, K, 2600) for K in (1, 4, 8, 20, 24, 32)] + [(100, 20, 400), (256, 64, 1024)]


def median_ms(fn, rounds, reps):
    times = []
    for _ in range(rounds):
        fn()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / reps)
    return float(np.median(times)) * 1e3


def measure(kind, M, K, N, rounds, rng):
    A = rng.standard_normal((M, K)).astype(np.float32)
    AT = np.ascontiguousarray(A.T)
    B = rng.standard_normal((K, N)).astype(np.float32)
    W = np.ascontiguousarray(B.T)
    C = np.zeros((M, N), np.float32)
    reps = max(1, int(0.02 * 60e9 / (2 * M * K * N)))
    if kind == "nn":
        impls = {
            "direct": lambda: _packed.matmul_direct(A, B, C, False, reps),
            "sgemm": lambda: _packed.matmul_blas(A, B, C, False, reps),
            "numpy": lambda: [np.matmul(A, B, out=C) for _ in range(reps)],
        }
    elif kind == "tn":
        impls = {
            "direct": lambda: _packed.matmul_direct_tn(AT, B, C, False, reps),
            "sgemm": lambda: _packed.matmul_blas(AT, B, C, False, reps, False, True),
            "numpy": lambda: [np.matmul(AT.T, B, out=C) for _ in range(reps)],
        }
    else:
        impls = {
            "direct": lambda: _packed.matmul_direct_nt(A, W, C, False, reps),
            "sgemm": lambda: _packed.matmul_blas(A, W, C, False, reps, True),
            "numpy": lambda: [np.matmul(A, W.T, out=C) for _ in range(reps)],
        }
    times = {k: [] for k in impls}
    for r in range(rounds):
        for k in list(impls)[r % 3 :] + list(impls)[: r % 3]:
            times[k].append(median_ms(impls[k], 1, reps))
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        print(
            f"{'product':22s} {'M':>3s} {'K':>5s} {'N':>5s}  direct ms  sgemm ms  numpy ms"
            "  sgemm/direct  numpy/direct"
        )
        for kind, shapes in (("nn", SHAPES), ("nt", NT_SHAPES), ("tn", TN_SHAPES)):
            for M, K, N in shapes:
                ms = measure(kind, M, K, N, args.rounds, rng)
                name = {"nn": "A @ B", "nt": "A @ W^T", "tn": "A^T @ B"}[kind]
                print(
                    f"{name:22s} {M:3d} {K:5d} {N:5d}  {ms['direct']:9.3f} {ms['sgemm']:9.3f}"
                    f" {ms['numpy']:9.3f}  {ms['sgemm'] / ms['direct']:12.2f}"
                    f"  {ms['numpy'] / ms['direct']:12.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
