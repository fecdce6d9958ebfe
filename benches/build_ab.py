"""A/B of two builds in one process: the time layers of another built checkout (its compiled
time-loop kernels, _recurrent or the older _rnn/_lstm/_gru, and its fastrnn/layers/recurrent.py)
against this tree's, forward + backward, interleaved call by call, medians; and whether the two
give the same bits.

    PYTHONPATH=. python benches/build_ab.py /path/to/other/checkout \
        [--threads 1] [--reps 21] [--float64] [--shape 20x35x100x100 ...] [--layer TimeLSTM ...]

The other checkout's kernels are loaded from their own files under the same module names, so both
builds' kernels live side by side; everything else (checks, packing, the thread pool) is this
tree's.  Only the default path is timed (no h_mask): the other build may not have one.
"""

import argparse
import glob
import importlib.util
import os
import sys
import time

import numpy as np

from fastrnn.layers import recurrent as this

SHAPES = [(20, 35, 100, 100), (64, 100, 256, 256)]
CLASSES = {"TimeLSTM": 4, "TimeGRU": 3, "TimeRNN": 1}
# the time-loop kernels a build may have: one driver, or (before it) one module per cell
KERNEL_MODULES = ("_recurrent", "_rnn", "_lstm", "_gru")


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

    kernels = {}
    for name in KERNEL_MODULES:
        for path in glob.glob(os.path.join(root, "fastrnn", f"{name}.cpython*.so")):
            kernels[name] = _load(f"fastrnn.{name}", path)
    # its layers import their kernels by name while loading: these, where this tree has none
    saved = {name: sys.modules.get(f"fastrnn.{name}") for name in kernels}
    sys.modules.update({f"fastrnn.{name}": mod for name, mod in kernels.items()})
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
        for name, mod in saved.items():
            if mod is None:
                del sys.modules[f"fastrnn.{name}"]
            else:
                sys.modules[f"fastrnn.{name}"] = mod
    for name, mod in kernels.items():
        setattr(layers, name, mod)
    return layers


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="the other checkout, built in place")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--float64", action="store_true")
    ap.add_argument(
        "--shape", action="append", help="NxTxDxH, repeatable (default: " + str(SHAPES) + ")"
    )
    ap.add_argument("--layer", action="append", choices=list(CLASSES), help="repeatable")
    args = ap.parse_args(argv)
    shapes = [tuple(map(int, s.split("x"))) for s in args.shape] if args.shape else SHAPES
    other = other_build(args.root)
    dtype = np.float64 if args.float64 else np.float32
    rng = np.random.default_rng(0)
    for cls, G in CLASSES.items():
        if args.layer and cls not in args.layer:
            continue
        for N, T, D, H in shapes:
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
