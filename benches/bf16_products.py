"""Products at bfloat16 precision (``matmul_precision="medium"``, src/gemm/fr_bf16.h) against
float32 (``"highest"``): the read-out's three products alone, the recurrent layers (forward +
backward at `fastrnn bench`'s shapes) and a whole training iteration of fastrnn's models
(forward, backward, clip_grads, SGD: `fastrnn bench`'s model rows,
fastrnn.bench.make_model_runner), the variants alternating round by round in one process, at
each thread count.

Products: the three of a word LM's read-out at the case's shape (N T rows, H features, V 10000):
logits = x E^T (tied layout), [dW; db] = [x | 1]^T dS, dx = dS E, each fastrnn's bfloat16 kernel
against NumPy's sgemm (the BLAS the float32 read-out calls), GF/s and percent of one core's
float32 FMA peak (the bfloat16 instruction's own peak is twice that); one thread only (the
layer shares the columns between threads, as it does the float32 products).

    PYTHONPATH=. python benches/bf16_products.py [--cases rnnlm,2x200,2x650] [--threads 1 2]
        [--no-layers]
"""

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastrnn import _lm, bf16_supported  # noqa: E402
from fastrnn._cpu import peak_gflops  # noqa: E402
from fastrnn.bench import MODEL_CASES, make_model_runner  # noqa: E402


def medians(runs, rounds, min_time):
    """{name: median seconds per call}: rounds of each callable, alternating in order, each
    sample repeating its call for at least min_time seconds (first round discarded)."""
    times = {k: [] for k in runs}
    for r in range(rounds + 1):
        for k in list(runs) if r % 2 else list(runs)[::-1]:
            f, n, t0 = runs[k], 0, time.perf_counter()
            while True:
                f()
                n += 1
                t = time.perf_counter() - t0
                if t >= min_time:
                    break
            if r:
                times[k].append(t / n)
    return {k: float(np.median(v)) for k, v in times.items()}


def product_rows(case, rounds, min_time, peak):
    rng = np.random.default_rng(0)
    R, H, V = case.N * case.T, case.hidden[-1], case.V
    x1 = np.ones((R, H + 1), np.float32)
    x1[:, :H] = rng.standard_normal((R, H))
    E = rng.standard_normal((V, H)).astype(np.float32)
    dS = rng.standard_normal((R, V)).astype(np.float32)
    x = x1[:, :H]
    outs = {"logits": np.empty((R, V), np.float32), "dWb": np.empty((H + 1, V), np.float32)}
    outs["dx"] = np.empty((R, H), np.float32)
    xc = np.ascontiguousarray(x)
    products = {  # name: (a, b, out, flops)
        "logits = x E^T": (xc, E.T, outs["logits"], 2 * R * H * V),
        "[dW; db] = [x|1]^T dS": (x1.T, dS, outs["dWb"], 2 * R * (H + 1) * V),
        "dx = dS E": (dS, E, outs["dx"], 2 * R * H * V),
    }
    for name, (a, b, out, flops) in products.items():
        runs = {
            "float32 sgemm": lambda a=a, b=b, out=out: np.matmul(a, b, out=out),
            "bfloat16": lambda a=a, b=b, out=out: _lm.matmul_bf16(a, b, out),
        }
        t = medians(runs, rounds, min_time)
        rates = {k: flops / v / 1e9 for k, v in t.items()}
        print(
            f"  {name:24s} float32 {1e3 * t['float32 sgemm']:7.2f} ms "
            f"({rates['float32 sgemm']:5.0f} GF/s {100 * rates['float32 sgemm'] / peak:3.0f} %)"
            f"   bfloat16 {1e3 * t['bfloat16']:7.2f} ms ({rates['bfloat16']:5.0f} GF/s "
            f"{100 * rates['bfloat16'] / peak:3.0f} %)   {t['float32 sgemm'] / t['bfloat16']:.2f}x"
        )


def iteration_rows(case, rounds, min_time):
    """float32; bfloat16 in the read-out only; bfloat16 in the read-out and the recurrent
    layers' whole-sequence products (LanguageModel(matmul_precision="medium"))."""
    runners = {}
    for variant in ("float32", "read-out", "all"):
        r = make_model_runner("fastrnn", case, seed=0)
        if variant == "read-out":
            r.model.affine.matmul_precision = "medium"
        elif variant == "all":
            r.model.matmul_precision = "medium"
        r.iteration()  # warm-up: buffers allocated
        runners[variant] = r
    t = medians({k: r.iteration for k, r in runners.items()}, rounds, min_time)
    f32 = t["float32"]
    print(
        f"  whole iteration          float32 {1e3 * f32:7.2f} ms   bfloat16 read-out "
        f"{1e3 * t['read-out']:7.2f} ms ({f32 / t['read-out']:.2f}x)   bfloat16 read-out and "
        f"recurrent {1e3 * t['all']:7.2f} ms ({f32 / t['all']:.2f}x)"
    )


LAYERS = [  # (class name, gate blocks, N, T, D, H)
    ("TimeRNN", 1, 20, 35, 100, 100),
    ("TimeRNN", 1, 64, 100, 256, 256),
    ("TimeLSTM", 4, 20, 35, 100, 100),
    ("TimeLSTM", 4, 64, 100, 256, 256),
    ("TimeLSTM", 4, 20, 35, 650, 650),
    ("TimeGRU", 3, 20, 35, 100, 100),
    ("TimeGRU", 3, 64, 100, 256, 256),
]


def layer_rows(threads, rounds, min_time):
    """Forward + backward of each recurrent layer at "highest" and "medium" (the same weights
    and batch)."""
    import fastrnn

    rng = np.random.default_rng(0)
    for name, G, N, T, D, H in LAYERS:
        cls = getattr(fastrnn, name)
        Wx = (0.1 * rng.standard_normal((D, G * H))).astype(np.float32)
        Wh = (0.1 * rng.standard_normal((H, G * H))).astype(np.float32)
        b = np.zeros(G * H, np.float32)
        xs = rng.standard_normal((N, T, D)).astype(np.float32)
        dhs = rng.standard_normal((N, T, H)).astype(np.float32)
        runs = {}
        for mp in ("highest", "medium"):
            layer = cls(Wx, Wh, b, matmul_precision=mp)
            runs[mp] = lambda layer=layer, xs=xs, dhs=dhs: (layer.forward(xs), layer.backward(dhs))
        t = medians(runs, rounds, min_time)
        print(
            f"  {name} N{N} T{T} D{D} H{H}: float32 {1e3 * t['highest']:8.2f} ms   bfloat16 "
            f"{1e3 * t['medium']:8.2f} ms   {t['highest'] / t['medium']:.2f}x"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="rnnlm,2x200,2x650")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--no-layers", action="store_true", help="skip the recurrent layers")
    args = ap.parse_args(argv)
    if not bf16_supported():
        sys.exit("this CPU has no AVX512-BF16: matmul_precision='medium' runs float32 here")
    cases = {c.name: c for c in MODEL_CASES}
    peak1 = peak_gflops()
    print(f"one core's float32 FMA peak: {peak1:.1f} GF/s")
    for threads in args.threads:
        with threadpool_limits(threads):
            if not args.no_layers:
                print(f"recurrent layers, forward + backward, {threads} thread(s)")
                layer_rows(threads, args.rounds, args.min_time)
            for name in args.cases.split(","):
                case = cases[name]
                shape = f"V {case.V}, {case.hidden}, N{case.N} T{case.T}"
                print(f"{name} ({shape}), {threads} thread(s)")
                if threads == 1:  # (matmul_bf16 is one thread; the layer splits columns)
                    product_rows(case, args.rounds, args.min_time, peak1)
                iteration_rows(case, args.rounds, args.min_time)


if __name__ == "__main__":
    main()
