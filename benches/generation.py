"""Generation of a 2x650 tied LSTM language model one word at a time, steps/s: the book's
BetterRnnlm (``fastrnn.reference.models``) as the book's BetterRnnlmGen runs it, with fastrnn's
TimeLSTM swapped in for the NumPy one (the drop-in use) and all NumPy, and fastrnn's own model
(the ``medium-vd-tied`` preset's, through ``fastrnn.train.generate``), each step sampling the
next word from the softmax of the scores.  Each variant in
processes of its own, alternating --pairs times, medians, at each --threads.

The rest of that model is NumPy, so each step's read-out (1 x 650 by 650 x 10,000) runs on
NumPy's threaded OpenBLAS, whose idle workers then spin for about 0.1 s: the LSTM steps run
with the second core taken.  This is the case the pool's back-off is for (src/parallel/fr_pool.h).

    PYTHONPATH=. python benches/generation.py [--threads 1 2] [--pairs 3] [--steps 300]

(ratios: to the all-NumPy book model; fastrnn's model is `medium-vd-tied`'s, the same sizes.)
"""

import argparse
import multiprocessing
import statistics
import time

VARIANTS = ("fastrnn model", "book + fastrnn TimeLSTM", "book NumPy")


def measure(variant, threads, steps):
    import numpy as np
    from threadpoolctl import threadpool_limits

    from fastrnn.layers import TimeLSTM
    from fastrnn.reference.models import BetterRnnlm
    from fastrnn.train import generate
    from fastrnn.train.config import build_model
    from fastrnn.train.presets import preset

    with threadpool_limits(threads):
        if variant == "fastrnn model":
            model = build_model(preset("medium-vd-tied"), 10000)

            def run():
                generate(model, 1, steps, seed=0)
        else:
            book = BetterRnnlm(10000, 650, 650, 0.5, seed=0)
            if variant == "book + fastrnn TimeLSTM":
                for i in (2, 4):
                    book.layers[i] = TimeLSTM(*book.layers[i].params, stateful=True)
            rng = np.random.default_rng(0)

            def run():  # the book's BetterRnnlmGen.generate: predict, softmax, sample
                x = 1
                for _ in range(steps):
                    score = book.predict(np.array([[x]])).ravel()
                    p = np.exp(score - score.max())
                    x = int(rng.choice(len(p), p=p / p.sum()))

        rates = []
        for _ in range(4):
            t0 = time.perf_counter()
            run()
            rates.append(steps / (time.perf_counter() - t0))
        return statistics.median(rates[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    for threads in args.threads:
        rates = {v: [] for v in VARIANTS}
        for _ in range(args.pairs):
            for v in VARIANTS:
                with ctx.Pool(1) as pool:
                    rates[v].append(pool.apply(measure, (v, threads, args.steps)))
        med = {v: statistics.median(r) for v, r in rates.items()}
        book = med["book NumPy"]
        print(
            f"threads {threads}: "
            + ", ".join(f"{v} {med[v]:,.0f} steps/s ({med[v] / book:.2f}x)" for v in VARIANTS),
            flush=True,
        )


if __name__ == "__main__":
    main()
