"""The NumPy-only runtime (``export_numpy``'s fastrnn_numpy.py) against fastrnn on the same model:
batch-1 perplexity (words/s, windows of 512) and generation (steps/s, one word a call), for the
presets' models with random weights, at each --threads.  Both in one process per (preset,
threads), alternating round by round, the first round discarded.

    PYTHONPATH=. python benches/numpy_runtime.py [--presets zaremba-small medium-vd-tied]
        [--threads 1 2] [--words 7000] [--steps 200] [--rounds 3]
"""

import argparse
import multiprocessing
import os
import tempfile

import numpy as np


def measure(name, threads, words, steps, rounds):
    """{(what, impl): rate} for preset `name` at `threads`."""
    from eval_window import alternating_medians  # (benches/ is the script's directory)
    from threadpoolctl import threadpool_limits

    from fastrnn.interop import export_numpy, numpy_runtime
    from fastrnn.train import evaluate_perplexity, generate
    from fastrnn.train.config import build_model
    from fastrnn.train.presets import preset

    model = build_model(preset(name), 10000)
    with tempfile.TemporaryDirectory() as d:
        export_numpy(model, d)
        copy = numpy_runtime.load(os.path.join(d, "model.npz"))
    ids = np.random.default_rng(0).integers(0, 10000, words + 1)
    runs = {
        ("perplexity", "fastrnn"): lambda: evaluate_perplexity(model, ids),
        ("perplexity", "numpy"): lambda: numpy_runtime.perplexity(copy, ids),
        ("generation", "fastrnn"): lambda: generate(model, 1, steps, seed=0),
        ("generation", "numpy"): lambda: numpy_runtime.generate(copy, 1, steps, seed=0),
    }
    with threadpool_limits(threads):
        seconds, _ = alternating_medians(runs, rounds)
    work = {"perplexity": words, "generation": steps}
    return {k: work[k[0]] / s for k, s in seconds.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["zaremba-small", "medium-vd-tied"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--words", type=int, default=7000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    for name in args.presets:
        for threads in args.threads:
            with ctx.Pool(1) as pool:
                rate = pool.apply(measure, (name, threads, args.words, args.steps, args.rounds))
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
