"""Variable-length batches: what lengths and reverse cost in the recurrent layers, side by side.

For each cell and shape, one process times forward + backward of the same batch (D = H,
float32) interleaved call by call, medians of --reps calls:

- full: lengths=None (every row all T steps), today's path;
- lengths: lengths uniform in [T/4, T], forward direction, for each of --draws seeded batches
  of lengths (the same draws for every cell: one batch of N = 20 rows alone may hold 0.57 or
  0.70 of the full work, so one draw says more about the draw than about the kernels);
- reverse: the same lengths, reverse=True;

and reports lengths / full averaged over the draws (the target is <= 0.7x; the real work is
sum(lengths) / (N T), printed as "work", its expectation (T//4 + T) / 2T: 0.614 at T 35, 0.625
at T 100), the spread of lengths / full over the draws, lengths / full / work (what the
kernels add to the real work: 1.00 is ideal) and reverse / lengths.  With --torch,
torch.nn.LSTM/GRU (one direction, float32, torch.set_num_threads as --threads) on the padded
batch and on pack_padded_sequence(enforce_sorted=False) of the same lengths, interleaved,
each case timed in a process of its own (multiprocessing "spawn", which exits before the next
fastrnn case): after a call, torch's OpenMP workers keep spinning for a while, and at 2 threads
they took a core from fastrnn's kernels in the same process (LSTM N64 T100 H256 full 206 ms
with --torch, 111 ms without).  The torch process gets the same lengths and the same seed.

    PYTHONPATH=. python benches/lengths.py [--threads 1 2] [--reps 9] [--torch]

For lengths=None against another build (no slower than main), use benches/build_ab.py.
"""

import argparse
import statistics
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


def draw_lengths(N, T, draws, seed=21):
    """`draws` batches of N lengths uniform in [T/4, T]; the same for every cell."""
    rng = np.random.default_rng([seed, N, T])
    return [rng.integers(T // 4, T + 1, N) for _ in range(draws)]


def fastrnn_case(cell, N, T, H, threads, reps, rng, draws):
    name, G = CELLS[cell]
    cls = getattr(recurrent, name)
    D = H
    scale = 1 / np.sqrt(H)
    Wx = (rng.standard_normal((D, G * H)) * scale).astype(np.float32)
    Wh = (rng.standard_normal((H, G * H)) * scale).astype(np.float32)
    b = np.zeros(G * H, np.float32)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    dhs = rng.standard_normal((N, T, H)).astype(np.float32)
    fwd, rev = cls(Wx, Wh, b), cls(Wx, Wh, b, reverse=True)
    fwd.threads = rev.threads = threads

    def run(layer, lens):
        def go():
            layer.forward(xs, lens)
            layer.backward(dhs)

        return go

    runs = {"full": run(fwd, None)}
    for k, lengths in enumerate(draws):
        runs[f"lengths{k}"] = run(fwd, lengths)
        runs[f"reverse{k}"] = run(rev, lengths)
    return _median_times(runs, reps)


def torch_case(cell, N, T, H, draws, threads, reps):
    """torch_times in a spawned process of its own (see the module doc), which exits after."""
    import multiprocessing

    draws = [list(map(int, lengths)) for lengths in draws]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(torch_times, (cell, N, T, H, draws, threads, reps))


def torch_times(cell, N, T, H, draws, threads, reps):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(threads)
    torch.manual_seed(21)
    module = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[cell](H, H, batch_first=True)
    x = torch.randn(N, T, H, requires_grad=True)
    dy = torch.randn(N, T, H)

    def padded():
        out, _ = module(x)
        out.backward(dy)

    def packed(lengths):
        lens = torch.tensor(lengths)

        def go():
            p = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
            out, _ = module(p)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            out.backward(dy)

        return go

    runs = {"padded": padded}
    runs.update({f"packed{k}": packed(lengths) for k, lengths in enumerate(draws)})
    return _median_times(runs, reps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--draws", type=int, default=5, help="seeded batches of lengths per shape")
    ap.add_argument("--torch", action="store_true")
    args = ap.parse_args(argv)
    mean = statistics.fmean
    for threads in args.threads:
        for cell in CELLS:
            for N, T, H in SHAPES:
                draws = draw_lengths(N, T, args.draws)
                t = fastrnn_case(
                    cell, N, T, H, threads, args.reps, np.random.default_rng(21), draws
                )
                K = range(len(draws))
                ratio = [t[f"lengths{k}"] / t["full"] for k in K]
                work = [d.sum() / (N * T) for d in draws]
                t_len = mean(t[f"lengths{k}"] for k in K)
                line = (
                    f"{cell:4s} N{N} T{T} H{H} threads {threads}: full {t['full'] * 1e3:7.2f} ms, "
                    f"lengths {t_len * 1e3:7.2f} ms (mean of "
                    f"{len(draws)} draws); lengths/full {mean(ratio):.3f} (draws {min(ratio):.3f}"
                    f"-{max(ratio):.3f}; work {mean(work):.3f}, per work "
                    f"{mean(r / w for r, w in zip(ratio, work)):.3f}), reverse/lengths "
                    f"{mean(t[f'reverse{k}'] / t[f'lengths{k}'] for k in K):.3f}"
                )
                if args.torch:
                    tt = torch_case(cell, N, T, H, draws, threads, args.reps)
                    packed = mean(tt[f"packed{k}"] for k in K)
                    line += (
                        f"; torch padded {tt['padded'] * 1e3:7.2f} ms, packed {packed * 1e3:7.2f} "
                        f"ms (packed/padded {packed / tt['padded']:.2f}, fastrnn lengths vs torch "
                        f"packed {mean(tt[f'packed{k}'] / t[f'lengths{k}'] for k in K):.2f}x "
                        f"faster, vs torch padded {tt['padded'] / t_len:.2f}x)"
                    )
                print(line, flush=True)


if __name__ == "__main__":
    main()
