"""How much of the machine a forward+backward uses: GF/s of the matrix products' arithmetic for
fastrnn and torch (interleaved in one process, medians), against one core's peak FMA rate and
the packed kernel's register block fed from L1 (benches/peak_fma.c, compiled and run here when
gcc is present), and the rate fastrnn would need for a given torch/fastrnn ratio.

The products of a forward+backward, as counted by the GEMM floor of `fastrnn bench`: forward
X Wx and the steps' h Wh, backward the steps' dG Wh^T and the three whole-sequence products (dWx,
dWh, dX): 3 x 2 N T GH (D + H) floating-point operations, GH = gate blocks x H.  Element-wise
work is not counted, so the rate is what the whole call would need if it were all products.

    python benches/gflops.py [--threads 1] [--rounds 9] [--ratio 1.4] [rnn,64,100,256,256 ...]
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastrnn.bench import Case, make_layer_runner


def peak_fma():
    """One core's float32 FMA rates and the register block's from peak_fma.c (a line of
    text), or None without gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_fma.c")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "peak_fma")
        built = subprocess.run(
            [gcc, "-O2", "-mavx512f", "-mfma", src, "-o", exe], capture_output=True
        )
        if built.returncode != 0:
            return None
        run = subprocess.run([exe], capture_output=True, text=True)
        return run.stdout.strip().splitlines()[-1] if run.returncode == 0 else None


def measure(case, threads, rounds):
    """Median seconds of a forward+backward for fastrnn and torch (`fastrnn bench`'s runners:
    the same weights, torch's dX computed), interleaved in this process."""
    import torch

    runners = {impl: make_layer_runner(impl, case) for impl in ("fastrnn", "torch")}
    order = list(runners.items())
    times = {impl: [] for impl in runners}
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        for _ in range(2):  # warm the heap and the caches' pages
            for runner in runners.values():
                runner.fwdbwd()
        for r in range(rounds):
            for impl, runner in order[r % 2 :] + order[: r % 2]:  # alternate who goes first
                t0 = time.perf_counter()
                runner.fwdbwd()
                times[impl].append(time.perf_counter() - t0)
    return {impl: float(np.median(v)) for impl, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "shapes",
        nargs="*",
        default=["gru,64,100,256,256", "rnn,64,100,256,256"],
        help="CELL,N,T,D,H as for fastrnn bench (default: the table's two N64 "
        "shapes; gru is the reset_after form, torch's)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument(
        "--ratio",
        type=float,
        default=1.4,
        help="the torch/fastrnn ratio to express as a rate (default 1.4)",
    )
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("gflops.py compares with torch: pip install torch==2.13.0") from None
    peak = peak_fma()
    print(f"peak: {peak}" if peak else "peak: not measured (needs gcc)")
    for spec in args.shapes:
        case = Case.parse(spec)
        if case.cell == "gru_classic":
            raise SystemExit("gflops.py compares with torch, which has no classic GRU")
        flop = 3 * 2 * case.N * case.T * case.blocks * case.H * (case.D + case.H)
        ms = measure(case, args.threads, args.rounds)
        need = ms["torch"] / args.ratio
        print(
            f"{case.name}, {args.threads} thread(s), {flop / 1e9:.2f} GFLOP of products: "
            f"fastrnn {ms['fastrnn'] * 1e3:.2f} ms = {flop / ms['fastrnn'] / 1e9:.0f} GF/s, "
            f"torch {ms['torch'] * 1e3:.2f} ms = {flop / ms['torch'] / 1e9:.0f} GF/s; "
            f"torch/fastrnn {ms['torch'] / ms['fastrnn']:.2f}, {args.ratio:g}x needs "
            f"{need * 1e3:.2f} ms = {flop / need / 1e9:.0f} GF/s"
        )


if __name__ == "__main__":
    main()
