"""``fastrnn demo``: vanishing/exploding gradients, and why LSTM and GRU exist, on built-in data.

Three experiments on the adding problem (synthetic, generated here: no downloads), each printed as
a table and drawn as a PNG chart in the output directory (``--out``, default ``fastrnn-out``):

1. **Learning a long-range dependency.**  TimeRNN, TimeLSTM and TimeGRU, with the same hidden
   size, initialisation recipe, optimizer (Adam), gradient clipping and training batches, are
   trained to add two numbers marked somewhere in the first half of a sequence of length T and
   reported at the end on held-out sequences.  Predicting the mean scores MSE 1/6 = 0.167; a model
   scores much lower only if it carries both values over at least T/2 steps.
2. **Gradient flow.**  ||dL/dh_t|| against t, measured inside the kernels
   (``layer.track_grad_norms``), at initialisation and after training, with the largest singular
   value of each gate block of Wh (``fastrnn.diagnostics``).  Through the vanilla RNN the gradient
   from the loss at step T shrinks geometrically on its way back to the marked steps.
3. **Exploding gradients and clipping.**  The same vanilla RNN started from a large Wh, trained
   with plain SGD twice from identical weights and batches: without and with ``clip_grads``.  A run
   that goes to NaN/Inf is stopped and reported ("diverged at step k"), not a crash.  (SGD, as in
   Pascanu et al. 2013, because Adam divides each step by a running RMS of the gradient and so
   already bounds it, which hides what clipping does.)

Everything is deterministic for a given ``--seed`` (NumPy ``default_rng`` streams derived from it;
the global NumPy random state is never used) and BLAS thread count (``--threads``, default 1: the
order of BLAS's floating-point sums depends on it, and so, slightly, do the results).  The
model and optimizers are in ``fastrnn.models``, small enough to read as an example.
``--quick`` runs a few steps of everything (for tests; too short to learn anything).
"""

import argparse
import contextlib
import json
import math
import os
import sys
import textwrap
import time

import numpy as np

from . import diagnostics
from .cli import positive, seed
from .diagnostics import GradClipper, flow_summary, spectral_norm
from .models import SGD, Adam, SequenceRegressor

__all__ = ["adding_problem", "MEAN_PREDICTOR_MSE", "add_parser", "build_parser", "run", "main"]

#: MSE of always predicting E[target] = 1: the variance of a sum of two U(0, 1) values
MEAN_PREDICTOR_MSE = 1.0 / 6.0

DESCRIPTION = (
    "Vanishing and exploding gradients, and why LSTM and GRU exist: RNN vs LSTM vs GRU "
    "on the adding problem (built-in data, no downloads), gradient flow through time, "
    "and gradient clipping."
)

CELL_LABELS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}

DEFAULTS = dict(
    cells="rnn,lstm,gru",
    length=50,
    hidden=64,
    steps=2000,
    batch=64,
    lr=1e-3,
    clip=1.0,
    wh_scale=2.0,
    sgd_lr=0.05,
    explode_steps=400,
    test_size=1000,
    seed=0,
    out="fastrnn-out",
    threads=1,
)
QUICK = dict(hidden=16, steps=25, test_size=128)


# ---- data ------------------------------------------------------------------------------------


def adding_problem(n, length, rng, dtype=np.float32):
    """n sequences of the adding problem of length T = ``length``, drawn from ``rng``.

    xs (n, T, 2): channel 0 holds values uniform on [0, 1), channel 1 is a marker that is 1 at
    exactly two positions and 0 elsewhere; ys (n, 1) is the sum of the two marked values.  As in
    Hochreiter & Schmidhuber (1997), both marked positions lie in the first half of the sequence
    (drawn uniformly, distinct), so the answer, read after the last step, needs both values to be
    remembered for at least T/2 steps.  Predicting the mean (1) scores MSE 1/6 = 0.167.
    """
    T = int(length)
    if T < 4:
        raise ValueError(f"the adding problem needs length >= 4, got {length}")
    half = T // 2
    xs = np.zeros((n, T, 2), dtype)
    xs[:, :, 0] = rng.random((n, T))
    first = rng.integers(0, half, n)
    second = (first + rng.integers(1, half, n)) % half  # uniform over the other positions
    rows = np.arange(n)
    xs[rows, first, 1] = 1
    xs[rows, second, 1] = 1
    ys = (xs[rows, first, 0] + xs[rows, second, 0]).reshape(n, 1)
    return xs, ys.astype(dtype)


# ---- progress --------------------------------------------------------------------------------


class _PlainProgress:
    """What the demo uses when tqdm is not installed: a line every 10% on stderr."""

    def __init__(self, total, file):
        self.total, self.n, self.file, self.desc, self._shown = total, 0, file, "", -1

    def set_description(self, desc):
        self.desc = desc

    def update(self, k=1):
        self.n += k
        tenth = int(10 * self.n / self.total) if self.total else 10
        if tenth != self._shown:
            self._shown = tenth
            print(
                f"  {self.desc:<22} {10 * tenth:3d}% ({self.n}/{self.total} steps)",
                file=self.file,
                flush=True,
            )

    def close(self):
        pass


class _NoProgress:
    def set_description(self, desc):
        pass

    def update(self, k=1):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, sys.stderr)
    return tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True)


# ---- training --------------------------------------------------------------------------------


def _train(model, optimizer, clipper, batches, steps, bar):
    """Run up to ``steps`` steps; stop at the first non-finite loss or gradient.

    Returns (losses, status, detail, seconds): status is None if all steps ran, else
    "diverged at step k", with the error that stopped it in detail.
    """
    losses = []
    status = detail = None
    start = time.perf_counter()
    # float overflow on the way to Inf is the expected end of a diverging run, not a warning
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(1, steps + 1):
            xs, ys = batches()
            try:
                loss = model.forward(xs, ys)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss is {loss}")
                model.backward()
                clipper(model.grads)
                optimizer.update(model.params, model.grads)
            except (FloatingPointError, ValueError) as exc:
                # the layers refuse NaN/Inf params and inputs (ValueError "... contains NaN or
                # Inf"); clip_grads/GradClipper refuse a non-finite norm (FloatingPointError).
                # Any other ValueError is a bug, not a divergence.
                if isinstance(exc, ValueError) and "NaN or Inf" not in str(exc):
                    raise
                status, detail = f"diverged at step {step}", str(exc)
                bar.update(steps - step + 1)
                break
            losses.append(loss)
            bar.update()
    return np.array(losses), status, detail, time.perf_counter() - start


def _grad_flow(model, xs, ys):
    """||dL/dh_t|| (and ||dL/dc_t|| for an LSTM) for one batch; the parameters are unchanged."""
    layer = model.rnn
    layer.track_grad_norms = True
    try:
        model.forward(xs, ys)
        model.backward()
        return layer.grad_norms_h.copy(), (
            None if layer.grad_norms_c is None else layer.grad_norms_c.copy()
        )
    finally:
        layer.track_grad_norms = False


def _test_mse(model, xs, ys, chunk=500):
    errs = []
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, len(xs), chunk):
            y = model.predict(xs[i : i + chunk]).astype(np.float64)
            errs.append(np.square(y - ys[i : i + chunk]).sum())
    return float(np.sum(errs) / len(xs))


def _verdict(mse):
    if not math.isfinite(mse):
        return "diverged"
    ratio = mse / MEAN_PREDICTOR_MSE
    if ratio < 0.06:
        return "solved (MSE < 0.01)"
    if ratio < 0.8:
        return "partly learned"
    return "no better than the mean"


def _probe_size(cfg):
    return min(256, cfg["test_size"])


def adding_experiment(cells, cfg, bar):
    """Experiment 1 and 2: train each cell, measure gradient flow before and after."""
    seed, T, H = cfg["seed"], cfg["length"], cfg["hidden"]
    test_x, test_y = adding_problem(cfg["test_size"], T, np.random.default_rng([seed, 2]))
    probe = slice(0, _probe_size(cfg))  # batch for the gradient-flow probes
    results = {}
    for cell in cells:
        bar.set_description(f"adding T={T}: {CELL_LABELS[cell]}")
        model = SequenceRegressor(cell, 2, H, np.random.default_rng([seed, 3]))
        flow0_h, flow0_c = _grad_flow(model, test_x[probe], test_y[probe])
        sigma0 = spectral_norm(model.rnn)
        data_rng = np.random.default_rng([seed, 1])  # the same batches for every cell
        losses, status, detail, seconds = _train(
            model,
            Adam(cfg["lr"]),
            GradClipper(cfg["clip"]),
            lambda data_rng=data_rng: adding_problem(cfg["batch"], T, data_rng),
            cfg["steps"],
            bar,
        )
        if status is None:
            mse = _test_mse(model, test_x, test_y)
            flow1_h, flow1_c = _grad_flow(model, test_x[probe], test_y[probe])
            sigma1 = spectral_norm(model.rnn)
        else:
            mse, flow1_h, flow1_c, sigma1 = math.nan, None, None, None
        results[cell] = dict(
            test_mse=mse,
            verdict=_verdict(mse) if status is None else status,
            status=status,
            error=detail,
            seconds=seconds,
            steps_done=len(losses),
            steps_per_s=len(losses) / seconds if seconds > 0 else math.nan,
            losses=losses,
            flow_init=flow0_h,
            flow_init_c=flow0_c,
            flow_final=flow1_h,
            flow_final_c=flow1_c,
            sigma_init=sigma0,
            sigma_final=sigma1,
        )
    return results


def exploding_experiment(cfg, bar):
    """Experiment 3: a vanilla RNN with a large Wh, trained by SGD with and without clipping."""
    seed, T, H = cfg["seed"], cfg["length"], cfg["hidden"]
    runs = {}
    probe_x, probe_y = adding_problem(_probe_size(cfg), T, np.random.default_rng([seed, 2]))
    for name, max_norm in (("no clipping", None), (f"clip_grads({cfg['clip']:g})", cfg["clip"])):
        bar.set_description(f"exploding: {name}")
        model = SequenceRegressor(
            "rnn", 2, H, np.random.default_rng([seed, 4]), wh_scale=cfg["wh_scale"]
        )
        flow0, _ = _grad_flow(model, probe_x, probe_y)
        sigma0 = spectral_norm(model.rnn)
        clipper = GradClipper(max_norm)
        data_rng = np.random.default_rng([seed, 5])  # the same batches for both runs
        losses, status, detail, seconds = _train(
            model,
            SGD(cfg["sgd_lr"]),
            clipper,
            lambda data_rng=data_rng: adding_problem(cfg["batch"], T, data_rng),
            cfg["explode_steps"],
            bar,
        )
        runs[name] = dict(
            max_norm=max_norm,
            losses=losses,
            status=status,
            error=detail,
            seconds=seconds,
            clipper=clipper,
            grad_norms=clipper.norms,
            clip_rate=clipper.rate,
            flow_init=flow0,
            sigma_init=sigma0,
        )
    return runs


# ---- report ----------------------------------------------------------------------------------


def _fmt(x, spec=".3g"):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _sigma_text(sigmas):
    return "-" if sigmas is None else " ".join(f"{k} {v:.2f}" for k, v in sigmas.items())


def _para(text, indent=""):
    return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent="   ")


def format_report(cfg, results, runs):
    T = cfg["length"]
    out = []
    out.append(
        _para(
            f"1. The adding problem, T = {T}: {cfg['steps']} steps of Adam (lr "
            f"{cfg['lr']:g}, batch {cfg['batch']}, clip_grads {cfg['clip']:g}), hidden "
            f"size {cfg['hidden']}, seed {cfg['seed']}. Test MSE on {cfg['test_size']} "
            "held-out sequences; predicting the mean scores "
            f"{MEAN_PREDICTOR_MSE:.3f}."
        )
    )
    rows = [
        [
            CELL_LABELS[c],
            _fmt(r["test_mse"], ".4f"),
            _fmt(r["test_mse"] / MEAN_PREDICTOR_MSE, ".3f"),
            r["verdict"],
            f"{r['seconds']:.1f} s",
            _fmt(r["steps_per_s"], ".0f"),
        ]
        for c, r in results.items()
    ]
    out.append(_table(["cell", "test MSE", "/ mean's", "result", "train time", "steps/s"], rows))
    out.append("")
    out.append(
        _para(
            f"2. Gradient flow: ||dL/dh_1|| / ||dL/dh_T||, how much of the gradient of "
            f"the loss at step {T} reaches step 1, and the per-step factor (geometric "
            "mean; < 1 vanishing, > 1 growing), at initialisation and after training, "
            f"on {_probe_size(cfg)} test sequences."
        )
    )
    rows = []
    for c, r in results.items():
        f0 = flow_summary(r["flow_init"])
        f1 = flow_summary(r["flow_final"]) if r["flow_final"] is not None else None
        rows.append(
            [
                CELL_LABELS[c],
                _sigma_text(r["sigma_init"]),
                _fmt(f0["ratio"], ".2e"),
                _fmt(f0["per_step"], ".3f"),
                _fmt(f1 and f1["ratio"], ".2e"),
                _fmt(f1 and f1["per_step"], ".3f"),
            ]
        )
    out.append(
        _table(
            [
                "cell",
                "sigma_max(Wh blocks) at init",
                "init: h_1/h_T",
                "per step",
                "trained: h_1/h_T",
                "per step",
            ],
            rows,
        )
    )
    if "rnn" in results:
        text = diagnostics.interpret(results["rnn"]["sigma_init"], "rnn").split("\n")[1]
        out.append(_para("RNN at init: " + text, indent="   "))
    out.append("")
    first = next(iter(runs.values()))
    f0 = flow_summary(first["flow_init"])
    out.append(
        _para(
            f"3. Exploding gradients: the vanilla RNN with Wh x {cfg['wh_scale']:g} "
            f"(sigma_max {max(first['sigma_init'].values()):.2f}; at init h_1/h_T "
            f"{f0['ratio']:.2g}), trained by SGD (lr {cfg['sgd_lr']:g}) for "
            f"{cfg['explode_steps']} steps without and with clipping, from the same "
            "initial weights on the same batches."
        )
    )
    rows = []
    for name, r in runs.items():
        c, losses = r["clipper"], r["losses"]
        norms = c.norms[np.isfinite(c.norms)]
        rows.append(
            [
                name,
                r["status"] or f"finished {len(losses)} steps",
                _fmt(float(losses[-20:].mean()) if r["status"] is None else None),
                _fmt(float(losses.max()) if len(losses) else None),
                _fmt(float(norms.max()) if norms.size else None),
                "-" if r["max_norm"] is None else f"{100 * c.rate:.0f}%",
            ]
        )
    out.append(
        _table(["run", "outcome", "final loss", "max loss", "max grad norm", "clipped"], rows)
    )
    for name, r in list(results.items()) + list(runs.items()):
        if r["error"]:
            label = CELL_LABELS.get(name, name)
            out.append(_para(f"{label}, {r['status']}: {r['error']}", indent="   "))
    return "\n".join(out)


def _plot(out_dir, cfg, results, runs):
    """Write the three charts; returns their paths."""
    Figure = diagnostics.require_matplotlib()
    paths = []
    colors = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for c, r in results.items():
        losses = r["losses"]
        if len(losses):
            w = max(1, min(25, len(losses) // 10))
            smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
            ax.plot(
                np.arange(w, len(losses) + 1),
                smooth,
                color=colors[c],
                label=f"{CELL_LABELS[c]} (test MSE {_fmt(r['test_mse'], '.3g')})",
            )
    ax.axhline(
        MEAN_PREDICTOR_MSE, color="k", linestyle="--", linewidth=1, label="predicting the mean"
    )
    diagnostics.log_axes(
        ax,
        "training step",
        "training MSE (running mean)",
        f"Adding problem, T = {cfg['length']}, hidden {cfg['hidden']}",
    )
    ax.legend()
    paths.append(os.path.join(out_dir, "adding_loss.png"))
    fig.savefig(paths[-1], dpi=110)

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2, sharey=True)
    init = {CELL_LABELS[c]: r["flow_init"] for c, r in results.items()}
    first = next(iter(runs.values()))
    init[f"RNN, Wh x {cfg['wh_scale']:g} (part 3)"] = first["flow_init"]
    diagnostics.plot_grad_flow(init, ax=ax0, title="At initialisation")
    trained = {
        CELL_LABELS[c]: r["flow_final"] for c, r in results.items() if r["flow_final"] is not None
    }
    if trained:
        diagnostics.plot_grad_flow(trained, ax=ax1, title=f"After {cfg['steps']} steps")
    for ax in (ax0, ax1):
        for line in ax.get_lines():
            for c, label in CELL_LABELS.items():
                if line.get_label() == label:
                    line.set_color(colors[c])
            if line.get_label().startswith("RNN, Wh"):
                line.set_color("tab:orange")
                line.set_linestyle("--")
        if ax.get_legend() is not None:
            ax.legend()
    fig.suptitle("||dL/dh_t|| for a loss at the last step (log scale)")
    paths.append(os.path.join(out_dir, "grad_flow.png"))
    fig.savefig(paths[-1], dpi=110)

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    for name, r in runs.items():
        losses = r["losses"]
        (line,) = ax0.plot(np.arange(1, len(losses) + 1), losses, linewidth=1, label=name)
        if r["status"] is not None:
            ax0.plot(
                [len(losses)],
                [losses[-1] if len(losses) else 1.0],
                "x",
                color=line.get_color(),
                markersize=10,
                label=f"{name}: {r['status'].split(':')[0]}",
            )
    ax0.axhline(
        MEAN_PREDICTOR_MSE, color="k", linestyle="--", linewidth=1, label="predicting the mean"
    )
    diagnostics.log_axes(
        ax0,
        "training step",
        "training MSE",
        f"Vanilla RNN, Wh x {cfg['wh_scale']:g}, SGD lr {cfg['sgd_lr']:g}",
    )
    ax0.legend()
    diagnostics.plot_norm_history(
        {name: r["clipper"] for name, r in runs.items()},
        max_norm=cfg["clip"],
        ax=ax1,
        title="Gradient norm before clipping",
    )
    paths.append(os.path.join(out_dir, "exploding.png"))
    fig.savefig(paths[-1], dpi=110)
    return paths


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items() if k != "clipper"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(float(v)) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ---- command line ----------------------------------------------------------------------------


def _cells(text):
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELL_LABELS]
    if bad or not cells:
        raise argparse.ArgumentTypeError(
            f"--cells takes a comma-separated list of rnn, lstm, gru; got {text!r}"
        )
    return list(dict.fromkeys(cells))


def _add_arguments(p):
    d = DEFAULTS
    p.add_argument(
        "--cells",
        type=_cells,
        default=d["cells"],
        help="cells to compare, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--length",
        type=positive(int),
        default=d["length"],
        metavar="T",
        help="sequence length of the adding problem (default: %(default)s)",
    )
    p.add_argument(
        "--hidden",
        type=positive(int),
        default=None,
        metavar="H",
        help=f"hidden size (default: {d['hidden']}; --quick: {QUICK['hidden']})",
    )
    p.add_argument(
        "--steps",
        type=positive(int),
        default=None,
        help=f"training steps per cell (default: {d['steps']}; --quick: {QUICK['steps']})",
    )
    p.add_argument(
        "--batch", type=positive(int), default=d["batch"], help="batch size (default: %(default)s)"
    )
    p.add_argument(
        "--lr",
        type=positive(float),
        default=d["lr"],
        help="Adam learning rate for part 1 (default: %(default)s)",
    )
    p.add_argument(
        "--clip",
        type=positive(float),
        default=d["clip"],
        metavar="MAX_NORM",
        help="clip_grads max_norm (default: %(default)s)",
    )
    p.add_argument(
        "--wh-scale",
        type=positive(float),
        default=d["wh_scale"],
        help="scale of Wh for the exploding-gradient runs (default: %(default)s)",
    )
    p.add_argument(
        "--sgd-lr",
        type=positive(float),
        default=d["sgd_lr"],
        help="SGD learning rate for the exploding-gradient runs (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=d["threads"],
        help="BLAS threads, set with threadpoolctl if it is installed; 0 leaves the "
        "BLAS default. The demo's matrices are small: one thread is fastest, "
        "and does not collapse when other processes load the CPU (default: "
        "%(default)s)",
    )
    p.add_argument(
        "--seed", type=seed, default=d["seed"], help="random seed (default: %(default)s)"
    )
    p.add_argument(
        "--out",
        default=d["out"],
        metavar="DIR",
        help="directory for the charts and results (default: %(default)s)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG charts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few steps of everything, to check that it runs (learns nothing)",
    )
    return p


def add_parser(subparsers):
    """Register the ``demo`` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser(
        "demo",
        help="vanishing/exploding gradients: RNN vs LSTM vs GRU on the adding problem",
        description=DESCRIPTION,
        epilog="Writes adding_loss.png, grad_flow.png, exploding.png, summary.txt and "
        "results.json to --out.",
    )
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def build_parser():
    """A standalone parser for ``python -m fastrnn.demo``."""
    return _add_arguments(argparse.ArgumentParser(prog="fastrnn demo", description=DESCRIPTION))


def config_from_args(args):
    cfg = dict(DEFAULTS)
    if args.quick:
        cfg.update(QUICK)
    for key in ("length", "batch", "lr", "clip", "wh_scale", "sgd_lr", "seed", "out", "threads"):
        cfg[key] = getattr(args, key)
    if args.hidden is not None:
        cfg["hidden"] = args.hidden
    if args.steps is not None:
        cfg["steps"] = args.steps
    cfg["explode_steps"] = min(DEFAULTS["explode_steps"], cfg["steps"])
    cells = args.cells if isinstance(args.cells, list) else _cells(args.cells)
    cfg["cells"] = cells
    if cfg["length"] < 4:
        raise SystemExit("fastrnn demo: --length must be at least 4")
    if cfg["threads"] < 0:
        raise SystemExit("fastrnn demo: --threads must be >= 0")
    return cfg


def _blas_threads(n):
    """A context limiting BLAS to n threads (threadpoolctl), and a note saying what it did."""
    if n == 0:
        return contextlib.nullcontext(), "BLAS threads: library default"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext(), (
            "BLAS threads: library default (--threads needs "
            "threadpoolctl: pip install threadpoolctl)"
        )
    return threadpool_limits(limits=n, user_api="blas"), f"BLAS threads: {n}"


def run(args):
    """Run the demo for parsed ``args``; prints the report and returns the exit status."""
    cfg = config_from_args(args)
    out_dir = cfg["out"]
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        print(
            f"fastrnn demo: error: --out {out_dir}: exists and is not a directory", file=sys.stderr
        )
        return 2
    os.makedirs(out_dir, exist_ok=True)
    cells = cfg["cells"]
    print(
        f"fastrnn demo: RNN vs LSTM vs GRU on the adding problem (T = {cfg['length']}), "
        f"gradient flow, exploding gradients{' [--quick]' if args.quick else ''}",
        flush=True,
    )
    started = time.perf_counter()
    total = len(cells) * cfg["steps"] + 2 * cfg["explode_steps"]
    limit, threads_note = _blas_threads(cfg["threads"])
    bar = _progress(total, not args.no_progress)
    try:
        with limit:
            results = adding_experiment(cells, cfg, bar)
            runs = exploding_experiment(cfg, bar)
    finally:
        bar.close()
    report = format_report(cfg, results, runs) + f"\n\n{threads_note}."
    if args.quick:
        report += (
            "\n\n(--quick: only a few steps, too few to learn anything; run without "
            "--quick for the real comparison.)"
        )
    print()
    print(report)
    written = []
    if not args.no_plot:
        try:
            written += _plot(out_dir, cfg, results, runs)
        except ImportError as exc:
            print(f"\nCharts skipped: {exc}. (--no-plot silences this.)")
    elapsed = time.perf_counter() - started
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(report + f"\n\nTotal wall time {elapsed:.1f} s.\n")
    written.append(os.path.join(out_dir, "summary.txt"))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(
            _jsonable({"config": cfg, "adding": results, "exploding": runs, "seconds": elapsed}),
            f,
            indent=1,
        )
    written.append(os.path.join(out_dir, "results.json"))
    print(
        f"\nTotal wall time {elapsed:.1f} s. Written to {os.path.abspath(out_dir)}: "
        + ", ".join(os.path.basename(p) for p in written)
    )
    return 0


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
