"""What weight drop costs a whole training iteration: `medium-vd-tied` (2x650 LSTM, tied, V 10000,
N 20, T 35; forward, backward, clip_grads, SGD) built twice from the same seed, without and with
``--weight-drop``, timed in alternating blocks in one process; medians and ranges.

    PYTHONPATH=. python benches/weight_drop.py [--weight-drop 0.5] [--threads 1 2]
        [--precision medium highest] [--rounds 8]
"""

import argparse
import time

import numpy as np

import fastrnn
from fastrnn.train.config import build_model, thread_limit
from fastrnn.train.optim import SGD
from fastrnn.train.presets import preset


def iteration(model, xs, ts, opt):
    model.forward(xs, ts)
    model.backward()
    fastrnn.clip_grads(model.grads, 5.0)
    opt.update(model.params, model.grads)


def measure(precision, threads, p, rounds, block=5):
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, 10000, (2, 20, 35))
    models = {
        wd: build_model(
            dict(preset("medium-vd-tied"), matmul_precision=precision, weight_drop=wd), 10000
        )
        for wd in (0.0, p)
    }
    opt = SGD(0.01)
    times = {wd: [] for wd in models}
    with thread_limit(threads):
        for m in models.values():
            for _ in range(3):
                iteration(m, xs, ts, opt)
        for _ in range(rounds):
            for wd, m in models.items():
                t = time.perf_counter()
                for _ in range(block):
                    iteration(m, xs, ts, opt)
                times[wd].append((time.perf_counter() - t) / block * 1e3)
    a, b = (np.array(times[wd]) for wd in (0.0, p))
    print(
        f"{precision:8s} threads {threads}: without {np.median(a):6.1f} ms "
        f"({a.min():.1f}-{a.max():.1f}), weight drop {p:g} {np.median(b):6.1f} ms "
        f"({b.min():.1f}-{b.max():.1f}): {np.median(b) / np.median(a):.3f}x",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weight-drop", type=float, default=0.5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--precision", nargs="+", default=["medium", "highest"])
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    print(f"# fastrnn {fastrnn.__version__}, bf16 products: {fastrnn.bf16_supported()}")
    for precision in args.precision:
        for threads in args.threads:
            measure(precision, threads, args.weight_drop, args.rounds)


if __name__ == "__main__":
    main()
