"""The read-out of a word language model, fastrnn's TimeAffine against torch's nn.Linear: the
10,000-way vocabulary projection, forward + both gradients (dx, dW, db), float32, the same
weights, at the row counts of the model rows (N*T = 400: the 2x200 LM, 700: the book's Rnnlm
and the 2x650 LM).

Both in this process, in alternating blocks (torch's threads set with torch.set_num_threads,
fastrnn's and BLAS's with threadpoolctl); medians of the blocks' medians; GF/s counts the three
products, 3 x 2 R D M.

    python benches/readout_torch.py [--threads 1 2] [--rounds 3]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = ((400, 200), (700, 100), (700, 650))  # (rows R = N*T, features D)
V = 10000


def _median_ms(fn, n=15):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def measure(R, D, threads, rounds):
    """(torch ms, fastrnn ms) of the read-out's forward + backward at R rows, D features."""
    import torch
    from threadpoolctl import threadpool_limits

    import fastrnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, R, D)).astype(np.float32)
    W = (rng.standard_normal((D, V)) * 0.01).astype(np.float32)
    b = np.zeros(V, np.float32)
    dy = (rng.standard_normal((1, R, V)) * 1e-4).astype(np.float32)
    lin = torch.nn.Linear(D, V)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W.T.copy()))
        lin.bias.zero_()
    xt = torch.from_numpy(x[0]).requires_grad_(True)
    dyt = torch.from_numpy(dy[0])

    def torch_step():
        lin.zero_grad(set_to_none=False)
        xt.grad = None
        lin(xt).backward(dyt)

    aff = fastrnn.TimeAffine(W, b)
    out = np.empty((1, R, V), np.float32)
    dx = np.empty((1, R, D), np.float32)

    def fastrnn_step():
        aff.forward(x, out=out)
        aff.backward(dy, out=dx)

    t_torch, t_fr = [], []
    with threadpool_limits(threads):
        for _ in range(rounds):
            t_torch.append(_median_ms(torch_step))
            t_fr.append(_median_ms(fastrnn_step))
    return float(np.median(t_torch)), float(np.median(t_fr))


def main():
    import torch

    import fastrnn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    info = fastrnn.blas_info()
    print(
        f"fastrnn's BLAS: {info['library']}'s {info['api']} {info['version']} "
        f"({info['architecture']} kernels); torch {torch.__version__}"
    )
    for th in args.threads:
        torch.set_num_threads(th)
        for R, D in SHAPES:
            a, c = measure(R, D, th, args.rounds)
            flops = 3 * 2 * R * D * V
            print(
                f"{th} thread(s) R{R} D{D} V{V}: torch {a:.2f} ms ({flops / a / 1e6:.0f} GF/s)"
                f"  fastrnn {c:.2f} ms ({flops / c / 1e6:.0f} GF/s)  torch/fastrnn {a / c:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
