"""Adam's step, fused (fastrnn._norms.adam_step, what fastrnn.train.Adam runs) against the book's
NumPy lines it replaced, and the training step of a text classifier around it, at 1 and 2
threads (threadpoolctl), float32.

The parameters are those of a word-level bidirectional LSTM classifier (vocabulary 20,000,
embedding 100, 128 units a direction: 2.2 M parameters, the embedding table 2 M of them), the
batch 32 sentences of up to 30 words; medians of alternating rounds.

    PYTHONPATH=. python benches/adam_step.py [--rounds 30]
"""

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastrnn import clip_grads  # noqa: E402
from fastrnn._norms import adam_step  # noqa: E402
from fastrnn._threads import blas_threads  # noqa: E402
from fastrnn.classify import build_model  # noqa: E402

V, E, H, N, T = 20000, 100, 128, 32, 30


def numpy_lines(P, G, M, V_, lr_t, b1=0.9, b2=0.999, eps=1e-7):
    for p, g, m, v in zip(P, G, M, V_):
        m += (1 - b1) * (g - m)
        v += (1 - b2) * (g * g - v)
        p -= (lr_t * m / (np.sqrt(v) + eps)).astype(p.dtype, copy=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    settings = {"cell": "lstm", "embed": E, "hidden": H, "layers": 1, "pooling": "last"}
    model = build_model(True, settings, V, 2, 0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (N, T))
    lengths = rng.integers(T // 4, T + 1, N)
    y = rng.integers(0, 2, N)
    P, G = model.params, model.grads
    M = [np.zeros_like(p) for p in P]
    Vs = [np.zeros_like(p) for p in P]
    size = sum(p.size for p in P)
    # (a float64 scalar, as Adam.update computes it: the quotient is then taken in float64)
    lr_t = 1e-3 * np.sqrt(1.0 - 0.999) / (1.0 - 0.9)
    print(f"{size:,} parameters in {len(P)} arrays; batch {N} x {T}")
    for threads in (1, 2):
        with threadpool_limits(threads):
            parts = {"forward + backward": [], "clip": [], "adam fused": [], "adam NumPy": []}
            for r in range(args.rounds + 2):
                t0 = time.perf_counter()
                model.forward(ids, y, lengths)
                model.backward()
                t1 = time.perf_counter()
                clip_grads(G, 5.0)
                t2 = time.perf_counter()
                adam_step(P, G, M, Vs, lr_t, 0.9, 0.999, 1e-7, threads=blas_threads())
                t3 = time.perf_counter()
                numpy_lines(P, G, M, Vs, lr_t)
                t4 = time.perf_counter()
                if r >= 2:  # (warm-up)
                    for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                        parts[k].append(dt * 1e3)
            med = {k: float(np.median(v)) for k, v in parts.items()}
            base = med["forward + backward"] + med["clip"]
            print(
                f"threads {threads}: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
                + f"; Adam fused {med['adam NumPy'] / med['adam fused']:.1f}x the NumPy lines; "
                f"training step {base + med['adam NumPy']:.1f} -> {base + med['adam fused']:.1f} ms"
            )


if __name__ == "__main__":
    main()
