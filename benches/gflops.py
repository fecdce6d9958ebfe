"""How much of the machine a forward+backward uses: GF/s of the matrix products' arithmetic for
fastrnn and torch (interleaved in one process, medians), against one core's peak FMA rate
(benches/peak_fma.c, compiled and run here when gcc is present), and the rate fastrnn would need
for a given torch/fastrnn ratio.

The products of a forward+backward, as counted by the GEMM floor of `fastrnn bench`: forward
X Wx and the steps' h Wh, backward the steps' dG Wh^T and the three whole-sequence products (dWx,
dWh, dX): 3 x 2 N T GH (D + H) floating-point operations, GH = gate blocks x H.  Element-wise
work is not counted, so the rate is what the whole call would need if it were all products.

    python benches/gflops.py [--threads 1] [--rounds 9] [--ratio 1.4] [rnn:64:100:256:256 ...]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastrnn.layers import TimeGRU, TimeLSTM, TimeRNN

BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}


def peak_fma():
    """One core's float32 FMA rates from peak_fma.c (a line of text), or None without gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_fma.c")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "peak_fma")
        built = subprocess.run([gcc, "-O2", "-mavx512f", "-mfma", src, "-o", exe],
                               capture_output=True)
        if built.returncode != 0:
            return None
        run = subprocess.run([exe], capture_output=True, text=True)
        return run.stdout.strip().splitlines()[-1] if run.returncode == 0 else None


def layers(cell, N, T, D, H, rng):
    """A fastrnn layer and the torch module with the same weights, and their inputs."""
    import torch
    GH = BLOCKS[cell] * H
    Wx = (rng.standard_normal((D, GH)) * 0.05).astype(np.float32)
    Wh = (rng.standard_normal((H, GH)) * 0.05).astype(np.float32)
    if cell == "gru":           # torch's GRU is the reset_after variant
        ours = TimeGRU(Wx, Wh, np.zeros((2, GH), np.float32), reset_after=True)
    else:
        ours = {"rnn": TimeRNN, "lstm": TimeLSTM}[cell](Wx, Wh, np.zeros(GH, np.float32))
    theirs = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        D, H, batch_first=True)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    dhs = rng.standard_normal((N, T, H)).astype(np.float32)
    return ours, theirs, xs, dhs


def measure(cell, N, T, D, H, threads, rounds, rng):
    import torch
    ours, theirs, xs, dhs = layers(cell, N, T, D, H, rng)
    xt = torch.from_numpy(xs).requires_grad_(True)     # dX computed, as fastrnn does
    dt = torch.from_numpy(dhs)
    ours.threads = threads

    def fastrnn_call():
        ours.forward(xs)
        ours.backward(dhs)

    def torch_call():
        y, _ = theirs(xt)
        y.backward(dt)
        theirs.zero_grad()
        xt.grad = None

    times = {"fastrnn": [], "torch": []}
    calls = (("fastrnn", fastrnn_call), ("torch", torch_call))
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        for _ in range(2):                      # warm the heap and the caches' pages
            fastrnn_call()
            torch_call()
        for r in range(rounds):
            for name, fn in calls[r % 2:] + calls[:r % 2]:     # alternate who goes first
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shapes", nargs="*", default=["gru:64:100:256:256", "rnn:64:100:256:256"],
                    help="cell:N:T:D:H (default: the two N64 shapes of the table)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--ratio", type=float, default=1.4,
                    help="the torch/fastrnn ratio to express as a rate (default 1.4)")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("gflops.py compares with torch: pip install torch==2.13.0")
    peak = peak_fma()
    print(f"peak: {peak}" if peak else "peak: not measured (needs gcc)")
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        cell, *dims = shape.split(":")
        N, T, D, H = map(int, dims)
        flop = 3 * 2 * N * T * BLOCKS[cell] * H * (D + H)
        ms = measure(cell, N, T, D, H, args.threads, args.rounds, rng)
        need = ms["torch"] / args.ratio
        print(f"{cell} N{N} T{T} D{D} H{H}, {args.threads} thread(s), {flop / 1e9:.2f} GFLOP "
              f"of products: fastrnn {ms['fastrnn'] * 1e3:.2f} ms = "
              f"{flop / ms['fastrnn'] / 1e9:.0f} GF/s, torch {ms['torch'] * 1e3:.2f} ms = "
              f"{flop / ms['torch'] / 1e9:.0f} GF/s; torch/fastrnn "
              f"{ms['torch'] / ms['fastrnn']:.2f}, {args.ratio:g}x needs {need * 1e3:.2f} ms = "
              f"{flop / need / 1e9:.0f} GF/s")


if __name__ == "__main__":
    main()
