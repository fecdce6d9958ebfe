"""Cost of gradient-flow tracking (layer.track_grad_norms = True) on forward+backward.

On and off runs are interleaved (on-off, off-on, ...) in one process with 1 BLAS thread; the medians
are compared.  Usage: python benches/grad_norms_overhead.py
"""

import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn

SHAPES = [
    ("TimeRNN", 1, 20, 35, 100, 100),
    ("TimeLSTM", 4, 20, 35, 100, 100),
    ("TimeGRU", 3, 20, 35, 100, 100),
    ("TimeRNN", 1, 64, 100, 256, 256),
    ("TimeLSTM", 4, 64, 100, 256, 256),
]


def main():
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        for name, G, N, T, D, H in SHAPES:
            p = [
                (rng.standard_normal(s) * 0.1).astype(np.float32)
                for s in [(D, G * H), (H, G * H), (G * H,)]
            ]
            xs = rng.standard_normal((N, T, D)).astype(np.float32)
            dhs = rng.standard_normal((N, T, H)).astype(np.float32)
            layer = getattr(fastrnn, name)(*p)
            times = {True: [], False: []}
            reps = 200 if H <= 100 else 20
            for i in range(reps):
                for flag in (True, False) if i % 2 else (False, True):
                    layer.track_grad_norms = flag
                    t = time.perf_counter()
                    layer.forward(xs)
                    layer.backward(dhs)
                    times[flag].append(time.perf_counter() - t)
            on, off = np.median(times[True]), np.median(times[False])
            print(
                f"{name:8s} N{N} T{T} H{H}: off {off * 1e3:8.3f} ms  on {on * 1e3:8.3f} ms  "
                f"overhead {100 * (on / off - 1):+.1f}%"
            )


if __name__ == "__main__":
    main()
