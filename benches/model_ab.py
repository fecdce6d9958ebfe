"""fastrnn's whole training iteration (a `fastrnn bench` model row) from two or more builds or
settings, each in a process of its own, round-robin, so that they see the same machine.

Each variant is `NAME=ROOT[:ENV=VALUE,...]`: ROOT is the folder holding that build of fastrnn
(a git worktree built in place), ENV its extra environment (FASTRNN_BLAS=scipy, say).  Prints
the median ms of each variant per case and thread count, and its ratio to the first variant.

    python benches/model_ab.py base=/work/wt/base new=. new-scipy=.:FASTRNN_BLAS=scipy \
        [--cases rnnlm,2x200] [--threads 1,2] [--rounds 5] [--iters 10]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
from threadpoolctl import threadpool_limits
from fastrnn.bench import MODEL_CASES, make_model_runner
case = {c.name: c for c in MODEL_CASES}[sys.argv[1]]
threads, iters = int(sys.argv[2]), int(sys.argv[3])
with threadpool_limits(threads):
    runner = make_model_runner("fastrnn", case)
    for _ in range(3):
        runner.iteration()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        runner.iteration()
        times.append(time.perf_counter() - t0)
json.dump(times, sys.stdout)
"""


def parse_variant(text):
    name, _, rest = text.partition("=")
    root, _, envs = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return name, os.path.abspath(root), env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="NAME=ROOT[:ENV=VALUE,...]")
    ap.add_argument("--cases", default="rnnlm,2x200")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    for case in args.cases.split(","):
        for th in args.threads.split(","):
            samples = {name: [] for name, _, _ in variants}
            for _ in range(args.rounds):
                for name, root, extra in variants:
                    env = dict(os.environ, PYTHONPATH=root, **extra)
                    proc = subprocess.run(
                        [sys.executable, "-c", CHILD, case, th, str(args.iters)],
                        env=env,
                        cwd=root,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    samples[name].append(statistics.median(json.loads(proc.stdout)) * 1e3)
            first = statistics.median(samples[variants[0][0]])
            spread = {n: (min(s), max(s)) for n, s in samples.items()}
            row = []
            for name, _, _ in variants:
                med = statistics.median(samples[name])
                lo, hi = spread[name]
                row.append(f"{name} {med:7.2f} ms [{lo:.1f}-{hi:.1f}] ({first / med:4.2f}x)")
            print(f"{case:6} {th}T  " + "  ".join(row), flush=True)


if __name__ == "__main__":
    main()
