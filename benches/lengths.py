"""Variable-length batches: what lengths and reverse cost in the recurrent layers, side by side.

For each cell and shape, one process times forward + backward of the same batch (D = H,
float32) interleaved call by call, medians of --reps calls:

- full: lengths=None (every row all T steps), today's path;
- lengths: lengths uniform in [T/4, T] (seeded), forward direction;
- reverse: the same lengths, reverse=True;

and reports lengths / full (the target is <= 0.7x; the real work is sum(lengths) / (N T),
printed as "work") and reverse / lengths.  With --torch, torch.nn.LSTM/GRU (one direction,
float32, torch.set_num_threads as --threads) on the padded batch and on
pack_padded_sequence(enforce_sorted=False) of the same lengths, padded and packed interleaved,
each case timed in a process of its own (multiprocessing "spawn", which exits before the next
fastrnn case): after a call, torch's OpenMP workers keep spinning for a while, and at 2 threads
they took a core from fastrnn's kernels in the same process (LSTM N64 T100 H256 full 206 ms
with --torch, 111 ms without).  The torch process gets the same lengths and the same seed.

    PYTHONPATH=. python benches/lengths.py [--threads 1 2] [--reps 9] [--torch]

For lengths=None against another build (no slower than main), use benches/build_ab.py.
"""

import argparse
import time

import numpy as np

from fastrnn.layers import recurrent

SHAPES = [(64, 100, 256), (20, 35, 100)]  # (N, T, H), D = H
CELLS = {"LSTM": ("TimeLSTM", 4), "GRU": ("TimeGRU", 3)}


def _median_times(runs, reps):
    """{name: median seconds} of the callables in `runs`, called in turn `reps` times."""
    times = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up (allocations, packing buffers)
    for _ in range(reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


def fastrnn_case(cell, N, T, H, threads, reps, rng):
    name, G = CELLS[cell]
    cls = getattr(recurrent, name)
    D = H
    scale = 1 / np.sqrt(H)
    Wx = (rng.standard_normal((D, G * H)) * scale).astype(np.float32)
    Wh = (rng.standard_normal((H, G * H)) * scale).astype(np.float32)
    b = np.zeros(G * H, np.float32)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    dhs = rng.standard_normal((N, T, H)).astype(np.float32)
    lengths = rng.integers(T // 4, T + 1, N)
    fwd, rev = cls(Wx, Wh, b), cls(Wx, Wh, b, reverse=True)
    fwd.threads = rev.threads = threads

    def run(layer, lens):
        def go():
            layer.forward(xs, lens)
            layer.backward(dhs)

        return go

    t = _median_times(
        {"full": run(fwd, None), "lengths": run(fwd, lengths), "reverse": run(rev, lengths)}, reps
    )
    return t, lengths


def torch_case(cell, N, T, H, lengths, threads, reps):
    """torch_times in a spawned process of its own (see the module doc), which exits after."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(torch_times, (cell, N, T, H, list(map(int, lengths)), threads, reps))


def torch_times(cell, N, T, H, lengths, threads, reps):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(threads)
    torch.manual_seed(21)
    module = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[cell](H, H, batch_first=True)
    x = torch.randn(N, T, H, requires_grad=True)
    dy = torch.randn(N, T, H)
    lens = torch.tensor(lengths)

    def padded():
        out, _ = module(x)
        out.backward(dy)

    def packed():
        p = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        out, _ = module(p)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        out.backward(dy)

    return _median_times({"torch padded": padded, "torch packed": packed}, reps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--torch", action="store_true")
    args = ap.parse_args(argv)
    for threads in args.threads:
        for cell in CELLS:
            for N, T, H in SHAPES:
                rng = np.random.default_rng(21)
                t, lengths = fastrnn_case(cell, N, T, H, threads, args.reps, rng)
                work = lengths.sum() / (N * T)
                line = (
                    f"{cell:4s} N{N} T{T} H{H} threads {threads}: full {t['full'] * 1e3:7.2f} ms, "
                    f"lengths {t['lengths'] * 1e3:7.2f} ms, reverse {t['reverse'] * 1e3:7.2f} ms;"
                    f" lengths/full {t['lengths'] / t['full']:.3f} (work {work:.3f}), "
                    f"reverse/lengths {t['reverse'] / t['lengths']:.3f}"
                )
                if args.torch:
                    tt = torch_case(cell, N, T, H, lengths, threads, args.reps)
                    line += (
                        f"; torch padded {tt['torch padded'] * 1e3:7.2f} ms, packed "
                        f"{tt['torch packed'] * 1e3:7.2f} ms (packed/padded "
                        f"{tt['torch packed'] / tt['torch padded']:.2f}, fastrnn lengths vs torch "
                        f"packed {tt['torch packed'] / t['lengths']:.2f}x faster)"
                    )
                print(line, flush=True)


if __name__ == "__main__":
    main()
