"""A/B of single steps: fastrnn's cells (RNN, LSTM, GRU with reset_after) against the NumPy
cells they replace (fastrnn.reference), and one generation step of a stateful TimeLSTM against
the NumPy TimeLSTM, all in one process, interleaved round by round, float32, medians.

A single step is where a layer's fixed costs show (argument checks, the thread plan, a pass over
the weights for NaN/Inf) and where sgemm packs all of the weights for a few rows: the measurement
behind fastrnn._checks, gemm_direct_tn and layers._weights_checked_by_kernel (BENCHMARKS.md).

With --threads above 1, the NumPy cells run in a spawned process of their own per case (same
seed, same arrays), which exits before fastrnn runs again: NumPy's threaded BLAS keeps its
workers spinning for a while after each call, and interleaved in one process they took the
second core from fastrnn's kernel threads (LSTM cell N64 H256 forward at 2 threads: 782 µs
interleaved with NumPy, 525 µs alone).

    python benches/cells_ab.py [--rounds 9] [--threads 1]
"""

import argparse
import multiprocessing
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import reference

CELLS = [
    ("rnn", 20, 100, 100),
    ("lstm", 20, 100, 100),
    ("gru", 20, 100, 100),
    ("rnn", 64, 256, 256),
    ("lstm", 64, 256, 256),
    ("lstm", 4, 650, 650),
    ("lstm", 20, 650, 650),
    ("lstm", 1, 128, 128),
]
GENERATION = [100, 650]  # H = D of a TimeLSTM fed one token at a time


def cell_calls(mod, cell, N, D, H, rng):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    Wx = (0.1 * rng.standard_normal((D, G * H))).astype(np.float32)
    Wh = (0.1 * rng.standard_normal((H, G * H))).astype(np.float32)
    b = np.zeros((2, G * H) if cell == "gru" else G * H, np.float32)
    x = rng.standard_normal((N, D)).astype(np.float32)
    h = rng.standard_normal((N, H)).astype(np.float32)
    if cell == "lstm":
        layer = mod.LSTM(Wx, Wh, b)
        return (
            lambda: layer.forward(x, h, h),
            lambda: (layer.forward(x, h, h), layer.backward(h, h)),
        )
    layer = mod.RNN(Wx, Wh, b) if cell == "rnn" else mod.GRU(Wx, Wh, b, reset_after=True)
    return lambda: layer.forward(x, h), lambda: (layer.forward(x, h), layer.backward(h))


def generation_call(mod, H, rng):
    Wx = (0.1 * rng.standard_normal((H, 4 * H))).astype(np.float32)
    Wh = (0.1 * rng.standard_normal((H, 4 * H))).astype(np.float32)
    layer = mod.TimeLSTM(Wx, Wh, np.zeros(4 * H, np.float32), stateful=True)
    x = rng.standard_normal((1, 1, H)).astype(np.float32)
    return lambda: layer.forward(x)


def interleaved_us(fns, rounds):
    """Median microseconds per call of each fn, rounds interleaved in rotating order."""
    for f in fns.values():
        f()
    t0 = time.perf_counter()
    for f in fns.values():
        f()
    reps = max(3, int(0.02 * len(fns) / max(time.perf_counter() - t0, 1e-6)))
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            for _ in range(reps):
                fns[k]()
            times[k].append((time.perf_counter() - t) / reps * 1e6)
    return {k: float(np.median(v)) for k, v in times.items()}


def reference_us(cell, N, D, H, seed, rounds, threads):
    """{"r": forward, "rb": forward+backward} µs of the NumPy cell (run in its own process)."""
    with threadpool_limits(threads):
        slow = cell_calls(reference, cell, N, D, H, np.random.default_rng(seed))
        return interleaved_us({"r": slow[0], "rb": slow[1]}, rounds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (threadpoolctl)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    with threadpool_limits(args.threads):
        print(
            f"{'cell':22s} {'fwd us':>9s} {'NumPy':>9s} {'ratio':>6s}   {'fwd+bwd us':>10s}"
            f" {'NumPy':>9s} {'ratio':>6s}"
        )
        for cell, N, D, H in CELLS:
            seed = rng.integers(2**32)
            fast = cell_calls(fastrnn, cell, N, D, H, np.random.default_rng(seed))
            if args.threads == 1:
                slow = cell_calls(reference, cell, N, D, H, np.random.default_rng(seed))
                us = interleaved_us(
                    {"f": fast[0], "r": slow[0], "fb": fast[1], "rb": slow[1]}, args.rounds
                )
            else:
                us = interleaved_us({"f": fast[0], "fb": fast[1]}, args.rounds)
                case = (cell, N, D, H, int(seed), args.rounds, args.threads)
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    us.update(pool.apply(reference_us, case))
            print(
                f"{cell} N{N} D{D} H{H}".ljust(22)
                + f" {us['f']:9.1f} {us['r']:9.1f} {us['r'] / us['f']:6.2f}   {us['fb']:10.1f}"
                f" {us['rb']:9.1f} {us['rb'] / us['fb']:6.2f}",
                flush=True,
            )
        for H in GENERATION:
            seed = rng.integers(2**32)
            us = interleaved_us(
                {
                    "f": generation_call(fastrnn, H, np.random.default_rng(seed)),
                    "r": generation_call(reference, H, np.random.default_rng(seed)),
                },
                args.rounds,
            )
            print(
                f"generation step H{H}".ljust(22)
                + f" {us['f']:9.1f} {us['r']:9.1f} {us['r'] / us['f']:6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
