"""Bidirectional: both directions one after the other (each layer on its own automatic thread
setting) against concurrently on two Python threads (one kernel thread each), forward+backward
with lengths uniform in [T/4, T], alternating A and B in one process.  Prints the median time of
each and the ratio sequential / concurrent (> 1: concurrent faster)."""

import sys
import time

import numpy as np

sys.path.insert(0, ".")
from fastrnn.layers import Bidirectional  # noqa: E402

SHAPES = [  # cell, N, T, D, H
    ("lstm", 8, 20, 32, 32),
    ("gru", 16, 35, 64, 64),
    ("lstm", 32, 50, 128, 128),
    ("lstm", 64, 35, 256, 256),
]


def main(reps=15):
    rng = np.random.default_rng(0)
    for cell, N, T, D, H in SHAPES:
        kw = {"reset_after": True} if cell == "gru" else {}
        bi = Bidirectional.create(cell, D, H, rng=rng, dtype=np.float32, **kw)
        xs = rng.standard_normal((N, T, D)).astype(np.float32)
        lengths = rng.integers(max(1, T // 4), T + 1, N)
        dhs = rng.standard_normal((N, T, 2 * H)).astype(np.float32)
        times = {1: [], 2: []}
        for r in range(reps + 2):
            for threads in (1, 2) if r % 2 else (2, 1):
                bi.threads = threads
                t0 = time.perf_counter()
                bi.forward(xs, lengths)
                bi.backward(dhs)
                if r >= 2:
                    times[threads].append(time.perf_counter() - t0)
        seq, con = np.median(times[1]), np.median(times[2])
        print(
            f"{cell} N{N} T{T} D{D} H{H}: sequential {seq * 1e3:.2f} ms, concurrent "
            f"{con * 1e3:.2f} ms, ratio {seq / con:.2f}"
        )


if __name__ == "__main__":
    main()
