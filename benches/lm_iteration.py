"""One training iteration of a word-level language model, whole: forward + backward + gradient
clipping + SGD, side by side, then a per-part profile of it.

The side-by-side timing is `fastrnn bench`'s model rows (fastrnn/bench/: ModelCase, the model
runners, the worker processes, the interleaved rounds and the load check): fastrnn's model
(fastrnn.models.Rnnlm / LanguageModel, fastrnn.clip_grads, fastrnn.train.SGD), the book's NumPy
model (fastrnn.reference.models.Rnnlm, or the book's structure stacked on fastrnn.reference's
layers; the book's clip_grads loop and SGD) and torch (nn.Embedding, nn.LSTM(num_layers=k),
nn.Linear, cross-entropy, clip_grad_norm_, torch.optim.SGD), from the same weights, each in a
process of its own, the recurrent state carried between iterations (truncated BPTT); at 1 and
2 threads.  The same table as

    fastrnn bench --no-layers --no-clip --models rnnlm,2x200,2x650 --threads 1,2

Cases (fastrnn.bench.MODEL_CASES):
- rnnlm:  the book's Rnnlm, V 10000, 1 x 100, N 20, T 35;
- 2x200:  a 2 x 200 LSTM LM (LanguageModel(10000, 200, [200, 200])), N 20 T 20;
- 2x650:  the same at 650 units, N 20 T 35.

GF/s counts the matrix products' flops of the whole iteration (ModelCase.flops: each LSTM
3 x 2 N T 4H (D + H), the read-out 3 x 2 N T H V); element-wise work, the embedding, clipping and
SGD are not counted.  Then the per-part profile of fastrnn's iteration and of the book NumPy
model's (embedding, each recurrent layer, affine, softmax-loss, clip, SGD; forward and backward
separately), medians of separate timings in this process.

    python benches/lm_iteration.py [--cases rnnlm,2x200,2x650] [--threads 1,2] [--rounds 5]
"""

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastrnn.bench import (  # noqa: E402
    MODEL_CASES,
    MODEL_MAX_GRAD,
    BenchConfig,
    format_model_table,
    make_model_runner,
    run_bench,
)


def _parts(runner):
    """(embedding, recurrent layers, affine, loss layer) of a model runner's model."""
    model = runner.model
    if hasattr(model, "stack"):  # fastrnn's
        return model.embedding, model.stack.layers, model.affine, model.loss_layer
    return model.layers[0], model.layers[1:-1], model.layers[-1], model.loss_layer


def profile(case, impl, threads, rounds):
    """Median ms of each part of implementation impl's iteration (fastrnn or reference, the
    book NumPy model), the recurrent state carried as in the timed iterations."""
    runner = make_model_runner(impl, case)
    emb, layers, affine, loss_layer = _parts(runner)
    parts = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        parts.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    with threadpool_limits(threads):
        for r in range(rounds + 2):
            xs, ts = runner._next()
            h = timed("embedding fwd", emb.forward, xs)
            for k, layer in enumerate(layers):
                h = timed(f"{case.cell}{k} fwd", layer.forward, h)
            s = timed("affine fwd", affine.forward, h)
            timed("softmax-loss fwd", loss_layer.forward, s, ts)
            d = timed("softmax-loss bwd", loss_layer.backward)
            d = timed("affine bwd", affine.backward, d)
            for k in reversed(range(len(layers))):
                d = timed(f"{case.cell}{k} bwd", layers[k].backward, d)
            timed("embedding bwd", emb.backward, d)
            if runner._tied is not None:
                timed("tied grad sum", runner.grads[0].__iadd__, runner._tied.T)
            timed("clip_grads", runner.clip, runner.grads, MODEL_MAX_GRAD)
            timed("SGD", runner.update, runner.params, runner.grads)
            if r < 2:
                parts.clear()
    med = {k: 1e3 * float(np.median(v)) for k, v in parts.items()}
    return med, sum(med.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(c.name for c in MODEL_CASES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (samples)")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per sample")
    ap.add_argument("--impls", default="fastrnn,reference,torch")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    known = {c.name: c for c in MODEL_CASES}
    cases = tuple(known[n] for n in args.cases.split(","))
    threads = tuple(int(t) for t in args.threads.split(","))
    results = run_bench(
        BenchConfig(
            cases=(),
            clip_cases=(),
            model_cases=cases,
            threads=threads,
            repeats=args.rounds,
            model_min_time=args.min_time,
            impls=tuple(args.impls.split(",")),
            memory=False,
            command=" ".join(["python"] + sys.argv),
        )
    )
    print("\n".join(format_model_table(results)).lstrip("\n"))
    for note in results["meta"]["notes"]:
        print(f"note: {note}")
    if args.no_profile:
        return
    for case in cases:
        for th in threads:
            runs = [
                (name, profile(case, impl, th, 9))
                for name, impl in (("fastrnn", "fastrnn"), ("book NumPy", "reference"))
            ]
            print(f"\nprofile {case.label}, {th} thread(s): ms (% of the parts' sum)")
            print(f"  {'part':18}" + "".join(f" {name:>18}" for name, _ in runs))
            for part in dict.fromkeys(p for _, (med, _) in runs for p in med):
                print(
                    f"  {part:18}"
                    + "".join(
                        f" {med[part]:9.2f} ({100 * med[part] / total:4.1f}%)"
                        if part in med
                        else f" {'-':>18}"
                        for _, (med, total) in runs
                    )
                )
            print(f"  {'sum':18}" + "".join(f" {total:9.2f}         " for _, (_, total) in runs))


if __name__ == "__main__":
    main()
