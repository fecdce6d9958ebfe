"""A text classifier's whole training step, fastrnn against PyTorch: embedding -> bidirectional
LSTM over each row's own length -> last state -> linear -> softmax cross-entropy, backward,
global-norm clipping at 5, Adam; float32, at 1 and 2 threads.

fastrnn: ``fastrnn.classify.build_model`` (a ``SequenceClassifier``), ``fastrnn.clip_grads``,
``fastrnn.train.Adam`` (its fused step).  torch: ``fastrnn.interop.to_torch`` of the same model (a
``TorchSequenceClassifier``: ``nn.Embedding``, ``nn.LSTM(bidirectional=True)`` on
``pack_padded_sequence``, ``nn.Linear``), ``cross_entropy``, ``clip_grad_norm_``,
``torch.optim.Adam`` (its default foreach implementation).  Both start from the same weights and
see the same batches; their first losses are printed side by side.  Each framework runs in a
spawned process of its own (after its calls, torch's OpenMP workers spin and took a core from
fastrnn's threads in one process: benches/lengths.py); medians of the steps after a warm-up.

    PYTHONPATH=. python benches/classifier_torch.py [--threads 1 2] [--steps 60]
"""

import argparse
import multiprocessing
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [  # vocabulary, embedding, hidden a direction, batch, longest sentence
    (20000, 100, 128, 32, 30),
    (20000, 300, 256, 64, 50),
]


def batches(V, N, T, steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        lengths = rng.integers(T // 4, T + 1, N)
        ids = rng.integers(1, V, (N, T))
        ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
        yield ids, lengths, rng.integers(0, 2, N)


def model(V, E, H):
    sys.path.insert(0, ROOT)
    from fastrnn.classify import build_model

    return build_model(True, {"cell": "lstm", "embed": E, "hidden": H}, V, 2, seed=0)


def run_fastrnn(shape, threads, steps):
    sys.path.insert(0, ROOT)
    from threadpoolctl import threadpool_limits

    from fastrnn import clip_grads
    from fastrnn.train import Adam

    V, E, H, N, T = shape
    m = model(V, E, H)
    opt = Adam(1e-3)
    times, losses = [], []
    with threadpool_limits(threads):
        for ids, lengths, y in batches(V, N, T, steps):
            t0 = time.perf_counter()
            x = ids[:, : lengths.max()]
            losses.append(m.forward(x, y, lengths))
            m.backward()
            clip_grads(m.grads, 5.0)
            opt.update(m.params, m.grads)
            times.append(time.perf_counter() - t0)
    return times, losses


def run_torch(shape, threads, steps):
    sys.path.insert(0, ROOT)
    import torch

    from fastrnn.interop import to_torch

    torch.set_num_threads(threads)
    V, E, H, N, T = shape
    module = to_torch(model(V, E, H))
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, eps=1e-7)
    times, losses = [], []
    for ids, lengths, y in batches(V, N, T, steps):
        t0 = time.perf_counter()
        L = torch.from_numpy(lengths)
        x = torch.from_numpy(ids[:, : lengths.max()])
        loss = torch.nn.functional.cross_entropy(module(x, L), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return times, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    for threads in args.threads:
        for shape in SHAPES:
            res = {}
            for name, fn in (("fastrnn", run_fastrnn), ("torch", run_torch)):
                with ctx.Pool(1) as pool:
                    res[name] = pool.apply(fn, (shape, threads, args.steps))
            med = {k: float(np.median(t[10:])) * 1e3 for k, (t, _) in res.items()}
            V, E, H, N, T = shape
            print(
                f"V{V} E{E} H{H} (bidirectional LSTM) N{N} T<={T}, threads {threads}: "
                f"fastrnn {med['fastrnn']:.2f} ms, torch {med['torch']:.2f} ms a step "
                f"({med['torch'] / med['fastrnn']:.2f}x); first losses "
                f"{res['fastrnn'][1][0]:.6f} / {res['torch'][1][0]:.6f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
