"""A bidirectional 2-layer encoder over a variable-length batch, forward + backward: fastrnn's
Stack of Bidirectional layers (with lengths) against torch.nn.LSTM/GRU(num_layers=2,
bidirectional=True) on pack_padded_sequence(enforce_sorted=False) and on the padded batch,
float32, 1 thread each (threadpoolctl / torch.set_num_threads), alternating in one process.
Prints median times and torch / fastrnn ratios (> 1: fastrnn faster)."""

import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, ".")
from fastrnn.interop import from_torch  # noqa: E402

SHAPES = [("LSTM", 32, 50, 128, 128), ("GRU", 32, 50, 128, 128), ("LSTM", 16, 100, 64, 64)]


def main(reps=9):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        measure(*shape, rng, reps)


def measure(name, N, T, D, H, rng, reps):
    m = getattr(torch.nn, name)(D, H, num_layers=2, bidirectional=True, batch_first=True)
    ours = from_torch(m)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    lengths = rng.integers(T // 4, T + 1, N)
    dhs = rng.standard_normal((N, T, 2 * H)).astype(np.float32)
    x_t, dh_t, len_t = torch.tensor(xs), torch.tensor(dhs), torch.tensor(lengths)

    def fastrnn_step():
        ours.forward(xs, lengths)
        ours.backward(dhs)

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

    runs = {"fastrnn": fastrnn_step, "torch packed": torch_packed, "torch padded": torch_padded}
    times = {k: [] for k in runs}
    with threadpool_limits(1):
        for r in range(reps + 1):
            order = list(runs) if r % 2 else list(runs)[::-1]
            for k in order:
                t0 = time.perf_counter()
                runs[k]()
                if r:
                    times[k].append(time.perf_counter() - t0)
    med = {k: np.median(v) * 1e3 for k, v in times.items()}
    print(
        f"{name} N{N} T{T} D{D} H{H}: fastrnn {med['fastrnn']:.1f} ms, torch packed "
        f"{med['torch packed']:.1f} ms ({med['torch packed'] / med['fastrnn']:.2f}x), "
        f"torch padded {med['torch padded']:.1f} ms "
        f"({med['torch padded'] / med['fastrnn']:.2f}x)"
    )


if __name__ == "__main__":
    main()
