"""A/B of the language-model layers: fastrnn.layers.lm against the book-style NumPy reference
(fastrnn.reference.lm) and PyTorch's equivalents, at the book's PTB shapes.

Every variant of one operation runs interleaved in one process, round after round (the order
rotated each round), so that drift of a shared machine hits them alike; the table gives the
median time per forward+backward and the ratios to fastrnn.  float32, as the book trains.

    python benches/lm_ab.py [--rounds 9] [--threads 1 2] [--D 100 650] [--json out.json]
"""

import argparse
import json
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import reference as ref

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the table then has no torch column
    torch = None

V, N, T = 10000, 20, 35


def cases(D, rng):
    """{operation: {variant: callable running one forward + backward}}"""
    f32 = np.float32
    W = (0.01 * rng.standard_normal((V, D))).astype(f32)
    ids = rng.integers(0, V, (N, T))
    d_emb = rng.standard_normal((N, T, D)).astype(f32)
    A = (0.01 * rng.standard_normal((D, V))).astype(f32)
    b = np.zeros(V, f32)
    x = rng.standard_normal((N, T, D)).astype(f32)
    d_aff = (1e-4 * rng.standard_normal((N, T, V))).astype(f32)
    logits = rng.standard_normal((N, T, V)).astype(f32)
    ts = rng.integers(0, V, (N, T))
    out = {}

    fe, re_ = fastrnn.TimeEmbedding(W), ref.TimeEmbedding(W)
    emb = {
        "fastrnn": lambda: (fe.forward(ids), fe.backward(d_emb)),
        "book NumPy": lambda: (re_.forward(ids), re_.backward(d_emb)),
    }

    fa, ra = fastrnn.TimeAffine(A, b), ref.TimeAffine(A, b)
    aff = {
        "fastrnn": lambda: (fa.forward(x), fa.backward(d_aff)),
        "book NumPy": lambda: (ra.forward(x), ra.backward(d_aff)),
    }
    Et = np.ascontiguousarray(A.T)  # tied: W given as embed_W.T
    fat, rat = fastrnn.TimeAffine(Et.T, b), ref.TimeAffine(Et.T, b)
    tied = {
        "fastrnn": lambda: (fat.forward(x), fat.backward(d_aff)),
        "book NumPy": lambda: (rat.forward(x), rat.backward(d_aff)),
    }

    fs, rs = fastrnn.TimeSoftmaxWithLoss(), ref.TimeSoftmaxWithLoss()
    buf = np.empty_like(logits)  # (a model's affine layer would write the logits here)

    def fast_out():
        np.copyto(buf, logits)
        fs.forward(buf, ts)
        fs.backward(out=buf)

    def copy_only():
        np.copyto(buf, logits)

    fi = fastrnn.TimeSoftmaxWithLoss(inplace=True)

    def fused():
        np.copyto(buf, logits)
        fi.forward(buf, ts)
        fi.backward()

    soft = {
        "fastrnn": lambda: (fs.forward(logits, ts), fs.backward()),
        "fastrnn out=logits (+copy)": fast_out,
        "fastrnn inplace=True (+copy)": fused,
        "(the copy alone)": copy_only,
        "book NumPy": lambda: (rs.forward(logits, ts), rs.backward()),
    }

    fd, rd = fastrnn.TimeDropout(0.5, seed=0), ref.TimeDropout(0.5, seed=0)
    fv, rv = fastrnn.VariationalDropout(0.5, seed=0), ref.VariationalDropout(0.5, seed=0)
    drop = {
        "fastrnn": lambda: (fd.forward(x), fd.backward(x)),
        "book NumPy": lambda: (rd.forward(x), rd.backward(x)),
    }
    vdrop = {
        "fastrnn": lambda: (fv.forward(x), fv.backward(x)),
        "book NumPy": lambda: (rv.forward(x), rv.backward(x)),
    }

    if torch is not None:
        temb = torch.nn.Embedding(V, D)
        tids = torch.from_numpy(ids)
        tde = torch.from_numpy(d_emb)
        emb["torch"] = lambda: temb(tids).backward(tde)
        tW = torch.from_numpy(A.T.copy()).requires_grad_()
        tb = torch.zeros(V, requires_grad=True)
        tx = torch.from_numpy(x).requires_grad_()
        tda = torch.from_numpy(d_aff)
        aff["torch"] = lambda: F.linear(tx, tW, tb).backward(tda)
        tl = torch.from_numpy(logits.reshape(N * T, V)).requires_grad_()
        tts = torch.from_numpy(ts.reshape(-1))
        soft["torch"] = lambda: F.cross_entropy(tl, tts, ignore_index=-1).backward()
        txd = torch.from_numpy(x).requires_grad_()
        tdx = torch.from_numpy(x)
        drop["torch"] = lambda: F.dropout(txd, 0.5, True).backward(tdx)

    out["embedding"] = emb
    out["affine"] = aff
    out["affine, tied W (embed_W.T)"] = tied
    out["softmax cross-entropy"] = soft
    out["TimeDropout"] = drop
    out["VariationalDropout"] = vdrop
    return out


def measure(fns, rounds, min_time):
    for f in fns.values():
        f()
    reps = {}
    for name, f in fns.items():
        t = time.perf_counter()
        f()
        reps[name] = max(1, int(min_time / max(time.perf_counter() - t, 1e-7)))
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            f, k = fns[name], reps[name]
            t = time.perf_counter()
            for _ in range(k):
                f()
            times[name].append((time.perf_counter() - t) / k)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--min-time", type=float, default=0.05)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--D", type=int, nargs="+", default=[100, 650])
    p.add_argument("--json")
    args = p.parse_args()
    results = []
    for threads in args.threads:
        if torch is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(threads):
            for D in args.D:
                rng = np.random.default_rng(0)
                for op, fns in cases(D, rng).items():
                    med = measure(fns, args.rounds, args.min_time)
                    fast = med["fastrnn"]
                    for name, t in med.items():
                        results.append(
                            {
                                "threads": threads,
                                "D": D,
                                "op": op,
                                "variant": name,
                                "ms": t * 1e3,
                                "vs_fastrnn": t / fast,
                            }
                        )
                        print(
                            f"threads {threads}  D {D:4d}  {op:28s} {name:26s} "
                            f"{t * 1e3:9.3f} ms  {t / fast:7.2f}x fastrnn's time",
                            flush=True,
                        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
