"""The NumPy-only runtime (``export_numpy``'s fastrnn_numpy.py) against fastrnn on the same model:
batch-1 perplexity (words/s, windows of 512) and generation (steps/s, one word a call), for the
presets' models with random weights (the same in both: the preset's seed), at each --threads.

Each implementation runs in a process of its own, the two alternating --pairs times (inside a
process, the perplexity and generation runs alternate round by round, the first round
discarded); the rates are the medians over the processes.  Interleaved in one process, the
runtime's threaded OpenBLAS calls left their threads spinning into fastrnn's turns and took the
second core from fastrnn's kernel threads (2x650 generation at 2 threads: 0.72-0.81x the
runtime in one process, 0.84-1.2x in processes of their own, the same minutes).

    PYTHONPATH=. python benches/numpy_runtime.py [--presets zaremba-small medium-vd-tied]
        [--threads 1 2] [--words 7000] [--steps 200] [--rounds 3] [--pairs 3]
"""

import argparse
import multiprocessing
import os
import tempfile

import numpy as np


def measure(name, impl, threads, words, steps, rounds):
    """{what: rate} of implementation `impl` ("fastrnn" or "numpy") for preset `name` at
    `threads`, what being "perplexity" (words/s) and "generation" (steps/s)."""
    from eval_window import alternating_medians  # (benches/ is the script's directory)
    from threadpoolctl import threadpool_limits

    from fastrnn.interop import export_numpy, numpy_runtime
    from fastrnn.train import evaluate_perplexity, generate
    from fastrnn.train.config import build_model
    from fastrnn.train.presets import preset

    model = build_model(preset(name), 10000)
    ids = np.random.default_rng(0).integers(0, 10000, words + 1)
    if impl == "fastrnn":
        runs = {
            "perplexity": lambda: evaluate_perplexity(model, ids),
            "generation": lambda: generate(model, 1, steps, seed=0),
        }
    else:
        with tempfile.TemporaryDirectory() as d:
            export_numpy(model, d)
            copy = numpy_runtime.load(os.path.join(d, "model.npz"))
        runs = {
            "perplexity": lambda: numpy_runtime.perplexity(copy, ids),
            "generation": lambda: numpy_runtime.generate(copy, 1, steps, seed=0),
        }
    with threadpool_limits(threads):
        seconds, _ = alternating_medians(runs, rounds)
    work = {"perplexity": words, "generation": steps}
    return {k: work[k] / s for k, s in seconds.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["zaremba-small", "medium-vd-tied"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--words", type=int, default=7000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    for name in args.presets:
        for threads in args.threads:
            rates = {"fastrnn": [], "numpy": []}
            for _ in range(args.pairs):
                for impl in rates:
                    with ctx.Pool(1) as pool:
                        rates[impl].append(
                            pool.apply(
                                measure, (name, impl, threads, args.words, args.steps, args.rounds)
                            )
                        )
            rate = {
                (what, impl): float(np.median([r[what] for r in runs]))
                for impl, runs in rates.items()
                for what in ("perplexity", "generation")
            }
            print(
                f"{name} threads {threads}: perplexity fastrnn "
                f"{rate['perplexity', 'fastrnn']:,.0f} words/s, NumPy runtime "
                f"{rate['perplexity', 'numpy']:,.0f} "
                f"({rate['perplexity', 'fastrnn'] / rate['perplexity', 'numpy']:.2f}x); "
                f"generation fastrnn {rate['generation', 'fastrnn']:,.0f} steps/s, NumPy "
                f"runtime {rate['generation', 'numpy']:,.0f} "
                f"({rate['generation', 'fastrnn'] / rate['generation', 'numpy']:.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
