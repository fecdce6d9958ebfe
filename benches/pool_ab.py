"""A/B of the kernels' threads: one thread, two threads on the persistent pool
(src/parallel/fr_pool.h), and two threads started and joined per job (the pool bypassed, as
before it existed).

All three run interleaved in one process, round after round, so that machine drift hits them
alike; forward+backward, float32, BLAS limited to 2 threads (the kernels hold it at one while
they run threaded).  This is the measurement behind MIN_PARALLEL_MACS in fastrnn/_threads.py.

    python benches/pool_ab.py [--rounds 11] [--shape 'rnn 8 35 64 64' ...]
"""

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import _pool

SHAPES = [
    "lstm 2 10 16 16",
    "rnn 4 10 32 32",
    "rnn 2 35 32 32",
    "lstm 4 35 32 32",
    "gru 4 20 64 64",
    "rnn 8 35 64 64",
    "rnn 20 35 100 100",
    "gru 20 35 100 100",
    "lstm 20 35 100 100",
    "lstm 64 100 256 256",
]
LAYERS = {"rnn": (fastrnn.TimeRNN, 1), "gru": (fastrnn.TimeGRU, 3), "lstm": (fastrnn.TimeLSTM, 4)}
MODES = {"1 thread": (1, False), "2 on pool": (2, False), "2 per job": (2, True)}


def measure(spec, rounds, min_time):
    cell, *dims = spec.split()
    N, T, D, H = map(int, dims)
    cls, G = LAYERS[cell]
    rng = np.random.default_rng(0)
    layer = cls(
        *(
            0.1 * rng.standard_normal(s).astype(np.float32)
            for s in ((D, G * H), (H, G * H), (G * H,))
        )
    )
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    dhs = rng.standard_normal((N, T, H)).astype(np.float32)

    def per_call(k):
        t = time.perf_counter()
        for _ in range(k):
            layer.forward(xs)
            layer.backward(dhs)
        return (time.perf_counter() - t) / k

    k = max(3, int(min_time / per_call(3)))
    times = {m: [] for m in MODES}
    old = _pool.set_bypass(False)
    try:
        for r in range(rounds):
            order = list(MODES)[r % 3 :] + list(MODES)[: r % 3]
            for m in order:
                layer.threads, bypass = MODES[m]
                _pool.set_bypass(bypass)
                per_call(2)
                times[m].append(per_call(k))
    finally:
        _pool.set_bypass(old)
    return {m: float(np.median(v)) * 1e3 for m, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--min-time", type=float, default=0.1, help="seconds per sample")
    ap.add_argument("--shape", action="append", help="'CELL N T D H' (repeatable)")
    args = ap.parse_args(argv)
    with threadpool_limits(2):
        print(
            f"{'case':22s} {'step MACs':>10s}"
            + "".join(f"{m:>12s}" for m in MODES)
            + "   1/pool  1/per-job"
        )
        for spec in args.shape or SHAPES:
            cell, N, T, D, H = spec.split()
            macs = int(N) * int(T) * int(H) * LAYERS[cell][1] * int(H)
            ms = measure(spec, args.rounds, args.min_time)
            print(
                f"{spec:22s} {macs:10,d}"
                + "".join(f"{ms[m]:9.3f} ms" for m in MODES)
                + f"   {ms['1 thread'] / ms['2 on pool']:6.2f}"
                f"  {ms['1 thread'] / ms['2 per job']:9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
