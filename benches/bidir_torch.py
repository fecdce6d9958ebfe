"""A bidirectional 2-layer encoder over a variable-length batch, forward + backward: fastrnn's
Stack of Bidirectional layers (with lengths) against torch.nn.LSTM/GRU(num_layers=2,
bidirectional=True) on pack_padded_sequence(enforce_sorted=False) and on the padded batch,
float32, at each --threads (threadpoolctl / torch.set_num_threads).

fastrnn runs in this process; torch's two variants, alternating call by call, in a spawned
process of their own per shape and thread count, which exits before fastrnn runs again: after a
call, torch's OpenMP workers keep spinning for a while, and at 2 threads they took a core from
fastrnn's kernels in the same process (benches/lengths.py).  Both processes build the torch
module from the same seed (fastrnn's weights are its copy: interop.from_torch) and draw the
same batch and lengths.

Prints median times, torch / fastrnn ratios (> 1: fastrnn faster) and each one's rate: GF/s of
the products the work needs, 2 * rows * G * H * (D_l + H) per direction and layer over
rows = sum(lengths) (D_l = D, then 2H), times 3 for forward + backward; and that rate as a
percent of one core's FMA peak (fastrnn._cpu.peak_gflops) times the threads.  "3x needs" is
the percent fastrnn would need to be 3x faster than torch packed.

    PYTHONPATH=. python benches/bidir_torch.py [--threads 1 2] [--reps 9]
"""

import argparse
import multiprocessing
import sys
import time

import numpy as np

SHAPES = [("LSTM", 32, 50, 128, 128), ("GRU", 32, 50, 128, 128), ("LSTM", 16, 100, 64, 64)]
GATES = {"LSTM": 4, "GRU": 3}
SEED = 0


def make_case(name, N, T, D, H):
    """The seeded torch module and batch: (module, xs, lengths, dhs)."""
    import torch

    torch.manual_seed(SEED)
    m = getattr(torch.nn, name)(D, H, num_layers=2, bidirectional=True, batch_first=True)
    rng = np.random.default_rng(SEED)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    lengths = rng.integers(T // 4, T + 1, N)
    dhs = rng.standard_normal((N, T, 2 * H)).astype(np.float32)
    return m, xs, lengths, dhs


def product_flops(name, D, H, lengths):
    """Flops of the products of forward + backward: 3 * sum over layers and directions of
    2 * rows * G * H * (D_l + H), rows = sum(lengths)."""
    rows, G = int(np.sum(lengths)), GATES[name]
    return 3 * 2 * sum(2 * rows * G * H * (d + H) for d in (D, 2 * H))


def median_ms(runs, reps):
    """{name: median ms} of the callables, alternating order round by round (first round
    discarded: warm-up)."""
    times = {k: [] for k in runs}
    for r in range(reps + 1):
        for k in list(runs) if r % 2 else list(runs)[::-1]:
            t0 = time.perf_counter()
            runs[k]()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def torch_ms(shape, threads, reps):
    """Medians of torch packed and padded for shape at `threads` (run in its own process)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(threads)
    m, xs, lengths, dhs = make_case(*shape)
    T = shape[2]
    x_t, dh_t, len_t = torch.tensor(xs), torch.tensor(dhs), torch.tensor(lengths)

    def torch_packed():
        x = x_t.clone().requires_grad_()
        packed = pack_padded_sequence(x, len_t, batch_first=True, enforce_sorted=False)
        out, _ = m(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        out.backward(dh_t)

    def torch_padded():
        x = x_t.clone().requires_grad_()
        out, _ = m(x)
        out.backward(dh_t)

    return median_ms({"torch packed": torch_packed, "torch padded": torch_padded}, reps)


def fastrnn_ms(shape, threads, reps):
    from threadpoolctl import threadpool_limits

    from fastrnn.interop import from_torch

    m, xs, lengths, dhs = make_case(*shape)
    ours = from_torch(m)

    def fastrnn_step():
        ours.forward(xs, lengths)
        ours.backward(dhs)

    with threadpool_limits(threads):
        return median_ms({"fastrnn": fastrnn_step}, reps), lengths


def rates(flops, ms, peak):
    """{name: "GF/s and percent of peak"} of each timing in ms."""
    gfs = {k: flops / t / 1e6 for k, t in ms.items()}
    return {k: f"{gf:.0f} GF/s {100 * gf / peak:.0f} %" for k, gf in gfs.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args(argv)
    sys.path.insert(0, ".")
    from fastrnn._cpu import peak_gflops

    peak = peak_gflops()
    print(f"one core's float32 FMA peak: {peak:.1f} GF/s")
    ctx = multiprocessing.get_context("spawn")
    for threads in args.threads:
        for shape in SHAPES:
            name, N, T, D, H = shape
            ms, lengths = fastrnn_ms(shape, threads, args.reps)
            with ctx.Pool(1) as pool:
                ms.update(pool.apply(torch_ms, (shape, threads, args.reps)))
            flops = product_flops(name, D, H, lengths)

            rate = rates(flops, ms, peak * threads)
            need = 100 * 3 * flops / ms["torch packed"] / 1e6 / (peak * threads)
            print(
                f"{name} N{N} T{T} D{D} H{H} threads {threads}: fastrnn {ms['fastrnn']:.1f} ms"
                f" ({rate['fastrnn']}), torch packed {ms['torch packed']:.1f} ms"
                f" ({rate['torch packed']}; {ms['torch packed'] / ms['fastrnn']:.2f}x),"
                f" torch padded {ms['torch padded']:.1f} ms"
                f" ({ms['torch padded'] / ms['fastrnn']:.2f}x); 3x needs {need:.0f} % of peak",
                flush=True,
            )


if __name__ == "__main__":
    main()
