"""One training iteration of a word-level language model, whole: forward + backward + gradient
clipping + SGD, side by side: each implementation timed in a process of its own (10 iterations
after 3 of warm-up, the median), processes alternating round after round, the median over
rounds; at 1 and 2 threads (threadpoolctl for NumPy's BLAS and fastrnn, torch.set_num_threads
for torch).

Cases:
- rnnlm:  the book's Rnnlm, V 10000, 1 x 100, N 20, T 35: the book-style NumPy model
          (fastrnn.reference.models.Rnnlm, the book's clip_grads) vs fastrnn.models.Rnnlm
          (fastrnn.clip_grads);
- 2x200:  LanguageModel(10000, 200, [200, 200]) N 20 T 20 vs torch (nn.Embedding, 2-layer
          nn.LSTM, nn.Linear, cross-entropy, clip_grad_norm_, torch.optim.SGD);
- 2x650:  the same at 650 units, N 20 T 35.

Both sides carry the recurrent state between iterations (truncated BPTT), as training does.
GF/s counts the matrix products' flops of the whole iteration (each LSTM: 3 x 2 N T 4H (D + H);
the read-out: 3 x 2 N T H V); element-wise work, the embedding, clipping and SGD are not
counted.  Then a per-part profile of fastrnn's iteration (embedding, each LSTM, affine,
softmax-loss, clip, SGD; forward and backward separately), medians of separate timings, and for
rnnlm the book NumPy model's beside it.

    python benches/lm_iteration.py [--cases rnnlm,2x200,2x650] [--threads 1,2] [--rounds 5]
"""

import argparse
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import reference
from fastrnn.models import LanguageModel, Rnnlm
from fastrnn.reference import models as ref_models
from fastrnn.train import SGD

CASES = {  # name: (V, E, hidden sizes, N, T)
    "rnnlm": (10000, 100, [100], 20, 35),
    "2x200": (10000, 200, [200, 200], 20, 20),
    "2x650": (10000, 650, [650, 650], 20, 35),
}
LR, MAX_GRAD = 1.0, 0.25


def iteration_flops(V, E, Hs, N, T):
    flops, D = 0, E
    for H in Hs:
        flops += 3 * 2 * N * T * 4 * H * (D + H)
        D = H
    return flops + 3 * 2 * N * T * Hs[-1] * V


class Batches:
    """Random word ids, a new (xs, ts) per call (the same sequence for every runner)."""

    def __init__(self, V, N, T, seed=0):
        rng = np.random.default_rng(seed)
        self.data = [rng.integers(0, V, (N, T + 1)).astype(np.int32) for _ in range(4)]
        self.i = 0

    def __call__(self):
        d = self.data[self.i % len(self.data)]
        self.i += 1
        return d[:, :-1], d[:, 1:]


def numpy_runner(model, batches, clip):
    opt = SGD(LR)

    def step():
        xs, ts = batches()
        model.forward(xs, ts)
        model.backward()
        clip(model.grads, MAX_GRAD)
        opt.update(model.params, model.grads)

    return step


def torch_runner(V, E, Hs, N, T, batches):
    import torch
    import torch.nn.functional as F

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(V, E)
            self.lstm = torch.nn.LSTM(E, Hs[0], num_layers=len(Hs), batch_first=True)
            self.out = torch.nn.Linear(Hs[-1], V)

        def forward(self, xs, state):
            hs, state = self.lstm(self.embed(xs), state)
            return self.out(hs), state

    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    state = [None]

    def step():
        xs, ts = batches()
        xs, ts = torch.from_numpy(xs.astype(np.int64)), torch.from_numpy(ts.astype(np.int64))
        opt.zero_grad()
        scores, st = model(xs, state[0])
        state[0] = tuple(s.detach() for s in st)
        F.cross_entropy(scores.reshape(-1, V), ts.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD)
        opt.step()

    return step


def runners_for(case):
    V, E, Hs, N, T = CASES[case]
    if case == "rnnlm":
        return {
            "book NumPy": numpy_runner(
                ref_models.Rnnlm(V, E, Hs[0], seed=0), Batches(V, N, T), reference.clip_grads
            ),
            "fastrnn": numpy_runner(
                Rnnlm(V, E, Hs[0], seed=0), Batches(V, N, T), fastrnn.clip_grads
            ),
        }
    return {
        "torch": torch_runner(V, E, Hs, N, T, Batches(V, N, T)),
        "fastrnn": numpy_runner(
            LanguageModel(V, E, Hs, seed=0), Batches(V, N, T), fastrnn.clip_grads
        ),
    }


def baselines(case):
    return ["book NumPy", "fastrnn"] if case == "rnnlm" else ["torch", "fastrnn"]


def time_alone(case, name, threads, iters):
    """Median seconds of one implementation's iteration, this process running nothing else."""
    import torch

    torch.set_num_threads(threads)
    run = runners_for(case)[name]
    times = []
    with threadpool_limits(threads):
        for _ in range(3):
            run()
        for _ in range(iters):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure(case, threads, rounds, iters=10):
    """Median over rounds of each implementation's median iteration, every implementation timed
    in a process of its own, the order rotating round by round.  (In one process, at 2 threads,
    the idle-spinning BLAS/OpenMP threads of the implementation timed just before took a core
    from the next: fastrnn's Rnnlm measured 67 ms after the book model's iteration, 37 ms alone.)"""
    names = baselines(case)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            cmd = [sys.executable, __file__, "--alone", case, name, str(threads), str(iters)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            times[name].append(float(out.split()[-1]))
    return {name: float(np.median(v)) for name, v in times.items()}


def profile(case, threads, rounds, book=False):
    """Median ms of each part of fastrnn's iteration (book=True: of the book NumPy Rnnlm's)."""
    V, E, Hs, N, T = CASES[case]
    if book:
        model = ref_models.Rnnlm(V, E, Hs[0], seed=0)
        emb, layers, affine = model.layers[0], [model.layers[1]], model.layers[2]
        clip = reference.clip_grads
    else:
        model = Rnnlm(V, E, Hs[0], seed=0) if case == "rnnlm" else LanguageModel(V, E, Hs, seed=0)
        emb, layers, affine = model.embedding, model.stack.layers, model.affine
        clip = fastrnn.clip_grads
    batches, opt = Batches(V, N, T), SGD(LR)
    parts = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        parts.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    with threadpool_limits(threads):
        for r in range(rounds + 2):
            xs, ts = batches()
            h = timed("embedding fwd", emb.forward, xs)
            for k, layer in enumerate(layers):
                h = timed(f"lstm{k} fwd", layer.forward, h)
            s = timed("affine fwd", affine.forward, h)
            timed("softmax-loss fwd", model.loss_layer.forward, s, ts)
            d = timed("softmax-loss bwd", model.loss_layer.backward)
            d = timed("affine bwd", affine.backward, d)
            for k in reversed(range(len(layers))):
                d = timed(f"lstm{k} bwd", layers[k].backward, d)
            timed("embedding bwd", emb.backward, d)
            timed("clip_grads", clip, model.grads, MAX_GRAD)
            timed("SGD", opt.update, model.params, model.grads)
            if r < 2:
                parts.clear()
    med = {k: 1e3 * float(np.median(v)) for k, v in parts.items()}
    return med, sum(med.values())


def main():
    if sys.argv[1:2] == ["--alone"]:  # a worker of measure()
        case, name, threads, iters = sys.argv[2:6]
        print(time_alone(case, name, int(threads), int(iters)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="rnnlm,2x200,2x650")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5, help="processes per implementation")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    cases = args.cases.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    print(
        f"{'case':7} {'thr':>3}  {'baseline':>11} {'ms':>8} {'fastrnn ms':>10} "
        f"{'speed-up':>8}  {'GF/s base':>9} {'GF/s fastrnn':>12}"
    )
    for case in cases:
        flops = iteration_flops(*CASES[case])
        for th in threads:
            t = measure(case, th, args.rounds)
            base = next(k for k in t if k != "fastrnn")
            print(
                f"{case:7} {th:>3}  {base:>11} {1e3 * t[base]:8.1f} {1e3 * t['fastrnn']:10.1f} "
                f"{t[base] / t['fastrnn']:7.2f}x  {flops / t[base] / 1e9:9.1f} "
                f"{flops / t['fastrnn'] / 1e9:12.1f}",
                flush=True,
            )
    if args.no_profile:
        return
    for case in cases:
        for th in threads:
            runs = [("fastrnn", profile(case, th, 9))]
            if case == "rnnlm":
                runs.append(("book NumPy", profile(case, th, 9, book=True)))
            print(f"\nprofile {case}, {th} thread(s): ms (% of the parts' sum)")
            print(f"  {'part':18}" + "".join(f" {name:>18}" for name, _ in runs))
            for part in runs[0][1][0]:
                print(
                    f"  {part:18}"
                    + "".join(
                        f" {med[part]:9.2f} ({100 * med[part] / total:4.1f}%)"
                        for _, (med, total) in runs
                    )
                )
            print(f"  {'sum':18}" + "".join(f" {total:9.2f}         " for _, (_, total) in runs))


if __name__ == "__main__":
    main()
