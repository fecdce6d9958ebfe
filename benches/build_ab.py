"""A/B of two builds in one process: the time layers of another built checkout (its compiled
_rnn/_lstm/_gru and its fastrnn/layers/recurrent.py) against this tree's, forward + backward,
interleaved call by call, medians; and whether the two give the same bits.

    PYTHONPATH=. python benches/build_ab.py /path/to/other/checkout \
        [--threads 1] [--reps 21] [--float64]

The other checkout's kernels are loaded from their own files under the same module names, so both
builds' kernels live side by side; everything else (checks, packing, the thread pool) is this
tree's.  Only the default path is timed (no h_mask): the other build may not have one.
"""

import argparse
import glob
import importlib.util
import os
import time

import numpy as np

from fastrnn.layers import recurrent as this

SHAPES = [(20, 35, 100, 100), (64, 100, 256, 256)]
CLASSES = {"TimeLSTM": 4, "TimeGRU": 3, "TimeRNN": 1}


def _load(name, path, package=None):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    if package:
        mod.__package__ = package
    spec.loader.exec_module(mod)
    return mod


def other_build(root):
    """The other checkout's layers module, wired to its own kernels."""
    from fastrnn import io

    register = io.register  # its classes have this tree's names: not registered for loading
    io.register = lambda cls=None, **kw: (lambda c: c) if cls is None else cls
    try:
        layers = _load(
            "fastrnn.layers.recurrent_other",
            os.path.join(root, "fastrnn", "layers", "recurrent.py"),
            "fastrnn.layers",
        )
    finally:
        io.register = register
    for name in ("_rnn", "_lstm", "_gru"):
        (path,) = glob.glob(os.path.join(root, "fastrnn", f"{name}.cpython*.so"))
        setattr(layers, name, _load(f"fastrnn.{name}", path))
    return layers


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="the other checkout, built in place")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--float64", action="store_true")
    args = ap.parse_args(argv)
    other = other_build(args.root)
    dtype = np.float64 if args.float64 else np.float32
    rng = np.random.default_rng(0)
    for cls, G in CLASSES.items():
        for N, T, D, H in SHAPES:
            Wx = (0.1 * rng.standard_normal((D, G * H))).astype(dtype)
            Wh = (0.1 * rng.standard_normal((H, G * H))).astype(dtype)
            b = np.zeros(G * H, dtype)
            xs = rng.standard_normal((N, T, D)).astype(dtype)
            dhs = rng.standard_normal((N, T, H)).astype(dtype)
            layers = {}
            results = {}
            for tag, mod in (("other", other), ("this", this)):
                layer = getattr(mod, cls)(Wx, Wh, b)
                layer.threads = args.threads
                hs = layer.forward(xs).copy()
                results[tag] = [hs, layer.backward(dhs).copy()] + [g.copy() for g in layer.grads]
                layers[tag] = layer
            same = all(np.array_equal(a, c) for a, c in zip(results["other"], results["this"]))
            times = {"other": [], "this": []}
            for r in range(args.reps):
                for tag in ("other", "this") if r % 2 == 0 else ("this", "other"):
                    layer = layers[tag]
                    t = time.perf_counter()
                    layer.forward(xs)
                    layer.backward(dhs)
                    times[tag].append(time.perf_counter() - t)
            a, c = np.median(times["other"]), np.median(times["this"])
            print(
                f"{cls:8s} N{N} T{T} H{H} threads {args.threads}: other {a * 1e3:8.2f} ms  "
                f"this {c * 1e3:8.2f} ms  this/other {c / a:.3f}  same bits: {same}",
                flush=True,
            )


if __name__ == "__main__":
    main()
