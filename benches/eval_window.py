"""The batch-1 evaluation of a word language model against its window length: milliseconds per
35 words and the perplexity (the same for every window: the state is carried), for the presets'
models with random weights on random ids, at each --threads.

Each (preset, threads) runs in a process of its own; inside it the windows alternate round by
round, the first round discarded.

    PYTHONPATH=. python benches/eval_window.py [--presets zaremba-small medium-vd-tied]
        [--windows 35 140 512] [--threads 1 2] [--words 14000] [--rounds 3]
"""

import argparse
import multiprocessing
import time

import numpy as np


def alternating_medians(runs, rounds):
    """({name: median seconds}, {name: last result}) of the callables in `runs`, called in turn
    for rounds + 1 rounds, the order reversed every other round and the first round discarded
    (warm-up).  (benches/numpy_runtime.py times with this too.)"""
    times, results = {k: [] for k in runs}, {}
    for r in range(rounds + 1):
        for k in runs if r % 2 else list(runs)[::-1]:
            t0 = time.perf_counter()
            results[k] = runs[k]()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}, results


def measure(name, threads, windows, words, rounds):
    """{window: (ms per 35 words, perplexity)} for preset `name` at `threads`."""
    from threadpoolctl import threadpool_limits

    from fastrnn.train.config import build_model
    from fastrnn.train.presets import preset
    from fastrnn.train.trainer import evaluate_perplexity

    model = build_model(preset(name), 10000)
    ids = np.random.default_rng(0).integers(0, 10000, words + 1)
    runs = {T: (lambda T=T: evaluate_perplexity(model, ids, T)) for T in windows}
    with threadpool_limits(threads):
        seconds, ppl = alternating_medians(runs, rounds)
    return {T: (seconds[T] / words * 35e3, ppl[T]) for T in windows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["zaremba-small", "medium-vd-tied"])
    ap.add_argument("--windows", type=int, nargs="+", default=[35, 140, 512])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--words", type=int, default=14000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    for name in args.presets:
        for threads in args.threads:
            with ctx.Pool(1) as pool:
                res = pool.apply(measure, (name, threads, args.windows, args.words, args.rounds))
            base = res[args.windows[0]][0]
            cells = ", ".join(
                f"T {T}: {ms:.2f} ms ({base / ms:.2f}x)" for T, (ms, _) in res.items()
            )
            spread = max(p for _, p in res.values()) / min(p for _, p in res.values()) - 1
            print(
                f"{name} threads {threads}: per 35 words {cells}; perplexities agree to "
                f"{spread:.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
