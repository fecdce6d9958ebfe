"""A/B of the whole-sequence weight gradients: fastrnn's gemm_tn_packed (src/gemm/fr_gemm_impl.h),
C = A^T @ B with A (K, M) and B (K, N) both packed per k-slice, against the scipy sgemm call the
kernels make otherwise.

These are [X | Hprev]^T @ dG over all K = N*T rows of a backward (M = D + H, N = gate columns,
or a thread's share of them).  Part 1 times the product alone, one BLAS thread, and two threads
each making half the columns (as the layers share them), interleaved rounds, medians.  Part 2
(--layers) times the layers' backward with the weight gradients made by the rule
(worth_tn_packed in src/gemm/_packed.pxd) and by BLAS, each run in a fresh process, the two
alternating.  The measurement behind worth_tn_packed.

    python benches/tn_ab.py [--rounds 7] [--layers | --layers-only] [--layer-rounds 5]
"""

import argparse
import os
import subprocess
import sys
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastrnn import _packed

# (M, N, K): C (M, N) = A^T @ B summed over K rows (N: all columns; two threads take half each)
SHAPES = [
    (200, 400, 700),
    (200, 100, 700),
    (256, 512, 200),
    (512, 128, 6400),
    (512, 256, 6400),
    (512, 512, 6400),
    (512, 768, 6400),
    (512, 1024, 6400),
    (512, 2048, 6400),
    (1024, 2048, 6400),
    (1300, 2600, 700),
]
# the benchmark table's layers (cell N T D H)
LAYERS = [
    ("rnn", 64, 100, 256, 256),
    ("gru", 64, 100, 256, 256),
    ("lstm", 64, 100, 256, 256),
    ("lstm", 20, 35, 100, 100),
    ("gru", 20, 35, 100, 100),
    ("rnn", 20, 35, 100, 100),
    ("lstm", 1, 200, 128, 128),
    ("lstm", 20, 35, 650, 650),
]


def _on_two_threads(fn):
    """fn(0) and fn(1) at once, on two threads (the products release the GIL)."""
    t = threading.Thread(target=fn, args=(1,))
    t.start()
    fn(0)
    t.join()


def measure(M, N, K, rounds, rng, threads):
    A = rng.standard_normal((K, M)).astype(np.float32)
    # one thread: all N columns; two: each thread a half (whole 16-column panels)
    half = min((N // 2 + 15) // 16 * 16, N) if threads == 2 else N
    widths = [half, N - half] if threads == 2 else [N]
    Bs = [rng.standard_normal((K, w)).astype(np.float32) for w in widths]
    Cs = [np.zeros((M, w), np.float32) for w in widths]

    reps = max(1, int(0.02 * 100e9 * threads / (2 * M * N * K)))  # about 20 ms a sample

    def packed(i):
        _packed.matmul_tn_packed(A, Bs[i], Cs[i], False, reps)

    def sgemm(i):
        _packed.matmul_blas(A, Bs[i], Cs[i], False, reps, False, True)

    impls = {"packed": packed, "sgemm": sgemm}
    if threads == 2:
        impls = {k: (lambda f=f: _on_two_threads(f)) for k, f in impls.items()}
    else:
        impls = {k: (lambda f=f: f(0)) for k, f in impls.items()}
    times = {k: [] for k in impls}
    for r in range(rounds):
        for k in list(impls)[r % 2 :] + list(impls)[: r % 2]:
            impls[k]()
            t = time.perf_counter()
            impls[k]()
            times[k].append((time.perf_counter() - t) / reps)
    return {k: float(np.median(v)) for k, v in times.items()}


LAYER_RUN = """
import sys, time, numpy as np
from threadpoolctl import threadpool_limits
from fastrnn import _isa
from fastrnn.layers import TimeLSTM, TimeGRU, TimeRNN
how, cell, N, T, D, H, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
rng = np.random.default_rng(0)
G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
Wx = (0.1 * rng.standard_normal((D, G * H))).astype(np.float32)
Wh = (0.1 * rng.standard_normal((H, G * H))).astype(np.float32)
layer_class = {"lstm": TimeLSTM, "gru": TimeGRU, "rnn": TimeRNN}[cell]
layer = layer_class(Wx, Wh, np.zeros(G * H, np.float32))
layer.threads = threads
xs = rng.standard_normal((N, T, D)).astype(np.float32)
dhs = rng.standard_normal((N, T, H)).astype(np.float32)
times = []
with threadpool_limits(threads), _isa.tn_packed(how):
    for r in range(3):                          # warm: heap, caches, BLAS
        layer.forward(xs)
        layer.backward(dhs)
    while len(times) < 10 or sum(times) < 1.0:  # at least 10 samples and a second of them
        layer.forward(xs)
        t = time.perf_counter()
        layer.backward(dhs)
        times.append(time.perf_counter() - t)
print(np.median(times) * 1e3)
"""


def layer_ms(how, cell, N, T, D, H, threads):
    out = subprocess.run(
        [sys.executable, "-c", LAYER_RUN, how, cell, str(N), str(T), str(D), str(H), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    return float(out.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--layers", action="store_true", help="also time the layers' backward")
    ap.add_argument("--layer-rounds", type=int, default=5)
    ap.add_argument("--layers-only", action="store_true", help="skip the products alone")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    if not args.layers_only:
        with threadpool_limits(1):
            print(
                f"{'threads':>7s} {'M':>5s} {'N':>5s} {'K':>5s}  packed GF/s  sgemm GF/s  "
                "sgemm/packed"
            )
            for threads in (1, 2):
                for M, N, K in SHAPES:
                    ms = measure(M, N, K, args.rounds, rng, threads)
                    gf = 2.0 * M * N * K / 1e9
                    print(
                        f"{threads:7d} {M:5d} {N:5d} {K:5d}  {gf / ms['packed']:11.0f} "
                        f"{gf / ms['sgemm']:11.0f}  {ms['sgemm'] / ms['packed']:12.2f}",
                        flush=True,
                    )
    if not (args.layers or args.layers_only):
        return
    print(
        f"\nbackward, median of {args.layer_rounds} processes each (ms): by the rule "
        "(worth_tn_packed) and by BLAS, alternating"
    )
    for threads in (1, 2):
        for cell, N, T, D, H in LAYERS:
            got = {"rule": [], "blas": []}
            for r in range(args.layer_rounds):
                for how in ("rule", "blas") if r % 2 else ("blas", "rule"):
                    got[how].append(layer_ms(how, cell, N, T, D, H, threads))
            rule, blas = np.median(got["rule"]), np.median(got["blas"])
            print(
                f"{cell} N{N} T{T} D{D} H{H} threads {threads}: rule {rule:.3f}  "
                f"blas {blas:.3f}  blas/rule {blas / rule:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
