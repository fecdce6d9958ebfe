"""A/B of a wide LSTM's calls that share their steps between threads (the pool's jobs in phases,
src/parallel/fr_pool.h): two builds of fastrnn, each case in processes of its own, alternating,
at 2 threads, float32, H = D = 650 unless given.

Cases: a batch-1 step (N1 T1: split over the rows of [Wx; Wh]), batch-1 windows (N1 T35 and
T512: by hidden units), a training batch (N20 T35 forward+backward: by hidden units).  With
--spin, each call follows a threaded NumPy product (600 x 600 at 2 threads), whose OpenBLAS
workers then spin on the second core for about 0.1 s: the case the claimed shares and the
back-off are for.

Each variant is NAME=ROOT, ROOT the folder holding that build (a git worktree built in place).

    python benches/units_ab.py base=/tmp/wt_base new=. [--pairs 5] [--spin]
"""

import argparse
import os
import statistics
import subprocess
import sys

CASES = [(1, 1, False), (1, 35, False), (1, 512, False), (20, 35, True)]  # N, T, with backward

CHILD = """
import statistics, sys, time
import numpy as np
import fastrnn
N, T, H, bwd, spin = (int(a) for a in sys.argv[1:6])
rng = np.random.default_rng(0)
Wx, Wh = [(rng.standard_normal((H, 4 * H)) / H**0.5).astype(np.float32) for _ in range(2)]
layer = fastrnn.TimeLSTM(Wx, Wh, np.zeros(4 * H, np.float32))
layer.threads = 2
xs = rng.standard_normal((N, T, H)).astype(np.float32)
dhs = rng.standard_normal((N, T, H)).astype(np.float32)
A = rng.standard_normal((600, 600)).astype(np.float32)
reps = 200 if T == 1 else 40
times = []
for i in range(reps):
    if spin:
        A @ A
    t0 = time.perf_counter()
    layer.forward(xs)
    if bwd:
        layer.backward(dhs)
    times.append(time.perf_counter() - t0)
print(statistics.median(times[reps // 8:]) * 1e3)
"""


def run(root, N, T, H, bwd, spin):
    root = os.path.abspath(root)
    env = dict(os.environ, PYTHONPATH=root)
    args = [sys.executable, "-c", CHILD, str(N), str(T), str(H), str(int(bwd)), str(int(spin))]
    # (cwd: `python -c` puts the working directory first on sys.path)
    out = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True, check=True)
    return float(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", help="NAME=ROOT, the first the baseline")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=650)
    ap.add_argument("--spin", action="store_true", help="a threaded NumPy product before each call")
    args = ap.parse_args()
    variants = [v.split("=", 1) for v in args.variants]
    for N, T, bwd in CASES:
        ms = {name: [] for name, _ in variants}
        for _ in range(args.pairs):
            for name, root in variants:
                ms[name].append(run(root, N, T, args.hidden, bwd, args.spin))
        base = variants[0][0]
        what = "forward+backward" if bwd else "forward"
        cells = []
        for name, _ in variants:
            ratios = [b / x for b, x in zip(ms[base], ms[name])]
            cells.append(
                f"{name} {statistics.median(ms[name]):.3f} ms"
                + ("" if name == base else f" ({statistics.median(ratios):.2f}x)")
            )
        spin = ", after a threaded NumPy product" if args.spin else ""
        print(f"N{N} T{T} H{args.hidden} {what}{spin}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
