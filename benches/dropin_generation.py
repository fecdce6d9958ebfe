"""Generation with the book's BetterRnnlm (2x650, tied; ``fastrnn.reference.models``) one word
at a time, as the book's BetterRnnlmGen does it, with fastrnn's TimeLSTM swapped in for the
NumPy one (the drop-in use) against the all-NumPy model: steps/s at each --threads, each variant
in processes of its own, alternating --pairs times, medians.

The rest of that model is NumPy, so each step's read-out (1 x 650 by 650 x 10,000) runs on
NumPy's threaded OpenBLAS, whose idle workers then spin for about 0.1 s: the LSTM steps run
with the second core taken.  This is the case the pool's back-off is for (src/parallel/fr_pool.h).

    PYTHONPATH=. python benches/dropin_generation.py [--threads 1 2] [--pairs 3] [--steps 300]
"""

import argparse
import multiprocessing
import statistics
import time


def measure(swap, threads, steps):
    import numpy as np
    from threadpoolctl import threadpool_limits

    from fastrnn.layers import TimeLSTM
    from fastrnn.reference.models import BetterRnnlm

    with threadpool_limits(threads):
        model = BetterRnnlm(10000, 650, 650, 0.5, seed=0)
        if swap:
            for i in (2, 4):
                model.layers[i] = TimeLSTM(*model.layers[i].params, stateful=True)
        x = np.array([[1]])
        rates = []
        for _ in range(4):
            t0 = time.perf_counter()
            for _ in range(steps):
                model.predict(x)
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
        rates = {True: [], False: []}
        for _ in range(args.pairs):
            for swap in (True, False):
                with ctx.Pool(1) as pool:
                    rates[swap].append(pool.apply(measure, (swap, threads, args.steps)))
        fast, book = statistics.median(rates[True]), statistics.median(rates[False])
        print(
            f"threads {threads}: book + fastrnn TimeLSTM {fast:,.0f} steps/s, book NumPy "
            f"{book:,.0f} ({fast / book:.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
