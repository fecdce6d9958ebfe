"""A/B of the per-step recurrent product: fastrnn's packed-weights kernel (src/gemm/fr_gemm_impl.h)
against the BLAS sgemm it replaced (scipy's OpenBLAS via scipy.linalg.cython_blas) and NumPy's
matmul (NumPy's own OpenBLAS build), at the per-step shapes of the benchmark table.

Each product is C (M, N) += A (M, K) @ B (K, N), repeated in a loop with the GIL released; the
packed kernel packs B once outside the loop, exactly as the layers pack Wh once per call.  One
BLAS thread, interleaved rounds, medians; GF/s are 2*M*K*N per second.

    python benches/packed_ab.py [--rounds 7]
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastrnn import _packed

SHAPES = [  # (M, K, N): h_{t-1} @ Wh (forward) and dG_t @ Wh^T (backward) of the table's cases
    ("lstm N20 H100", 20, 100, 400),
    ("lstm N20 H100 bwd", 20, 400, 100),
    ("lstm N20 H650", 20, 650, 2600),
    ("lstm N20 H650 bwd", 20, 2600, 650),
    ("lstm N64 H256", 64, 256, 1024),
    ("lstm N64 H256 bwd", 64, 1024, 256),
    ("lstm N1 H128", 1, 128, 512),
    ("lstm N128 H512", 128, 512, 2048),
    ("gru N64 H256", 64, 256, 768),
    ("rnn N64 H256", 64, 256, 256),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per sample")
    args = ap.parse_args(argv)
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    print(
        f"{'product':20s} {'M':>4s} {'K':>5s} {'N':>5s}   packed GF/s  scipy-BLAS GF/s"
        f"  numpy GF/s   BLAS/packed  numpy/packed"
    )
    for name, M, K, N in SHAPES:
        A = rng.standard_normal((M, K)).astype(np.float32)
        B = rng.standard_normal((K, N)).astype(np.float32)
        C = np.zeros((M, N), np.float32)
        P = _packed.pack(B)
        reps = max(1, int(args.min_time * 60e9 / (2 * M * K * N)))

        def numpy_loop(A=A, B=B, C=C, reps=reps):  # bound now: timed in this iteration
            for _ in range(reps):
                np.matmul(A, B, out=C)

        impls = {
            "packed": lambda A=A, P=P, N=N, C=C, reps=reps: _packed.matmul_packed(
                A, P, N, C, True, reps
            ),
            "blas": lambda A=A, B=B, C=C, reps=reps: _packed.matmul_blas(A, B, C, True, reps),
            "numpy": numpy_loop,
        }
        times = {k: [] for k in impls}
        for r in range(args.rounds):
            order = list(impls)[r % 3 :] + list(impls)[: r % 3]
            for k in order:
                t = time.perf_counter()
                impls[k]()
                times[k].append((time.perf_counter() - t) / reps)
        med = {k: float(np.median(v)) for k, v in times.items()}
        gf = {k: 2 * M * K * N / v / 1e9 for k, v in med.items()}
        print(
            f"{name:20s} {M:4d} {K:5d} {N:5d}   {gf['packed']:11.1f}  {gf['blas']:15.1f}"
            f"  {gf['numpy']:10.1f}   {med['blas'] / med['packed']:11.2f}"
            f"  {med['numpy'] / med['packed']:12.2f}"
        )


if __name__ == "__main__":
    main()
