"""Gradient-flow diagnostics: see vanishing and exploding gradients on your own model.

What happens to dL/dh_t as it flows back through time decides what a recurrent network can learn.
Through a vanilla tanh RNN it is multiplied at every step by diag(tanh') Wh^T, so it shrinks or
grows geometrically; through an LSTM's cell state it is multiplied elementwise by the forget gate,
and survives while f is close to 1.  This module measures and plots that.

Per-timestep gradient norms (recorded by the layers themselves, inside the kernel loop)::

    layer.track_grad_norms = True
    layer.forward(xs); layer.backward(dhs)
    layer.grad_norms_h     # (T,) float64: ||dL/dh_t||, Frobenius over the batch, total gradient
    layer.grad_norms_c     # TimeLSTM only: ||dL/dc_t||
    flow_summary(layer.grad_norms_h)   # how fast it decays per step

Everything else here:

- ``spectral_norm(Wh)``: the largest singular value of each gate block of Wh, and
  ``interpret(...)``: what those numbers do and do not prove about vanishing/exploding gradients.
- ``GradClipper(max_norm)``: calls ``fastrnn.clip_grads`` and keeps the history of gradient norms
  and of how often clipping fired (``max_norm=None`` only measures).
- ``plot_grad_flow`` and ``plot_norm_history``: matplotlib charts.  matplotlib is an optional
  extra (``pip install fastrnn[plot]``); it is imported only when a plot is drawn.
"""

import math

import numpy as np

from ._norms import clip_grads

__all__ = [
    "BLOCK_NAMES",
    "spectral_norm",
    "interpret",
    "flow_summary",
    "global_norm",
    "GradClipper",
    "plot_grad_flow",
    "plot_norm_history",
    "require_matplotlib",
]

#: number of gate blocks in Wh (H, blocks*H) -> the names of the blocks, in column order
BLOCK_NAMES = {1: ("Wh",), 3: ("z", "r", "h"), 4: ("f", "g", "i", "o")}
_CELL_OF_BLOCKS = {1: "rnn", 3: "gru", 4: "lstm"}


# ---- spectral norms of the recurrent weights ----------------------------------------------------


def _recurrent_weight(W):
    """Wh from an array or from a layer (anything whose params are [Wx, Wh, b])."""
    if isinstance(W, np.ndarray):
        return W
    params = getattr(W, "params", None)
    if params is not None and len(params) == 3:
        return np.asarray(params[1])
    return np.asarray(W)


def spectral_norm(Wh, blocks=None):
    """Largest singular value of each gate block of a recurrent weight matrix.

    Wh is an (H, G*H) array, or a layer whose ``params`` are [Wx, Wh, b] (fastrnn's layers and
    the NumPy reference ones).  ``blocks`` gives the blocks: None infers G = Wh.shape[1] //
    Wh.shape[0] and names them as the layers do (RNN: "Wh"; LSTM: "f", "g", "i", "o"; GRU: "z",
    "r", "h"); an int G splits the columns into G equal blocks named "0", "1", ...; a sequence of
    names splits them into len(blocks) equal blocks with those names.

    Returns a dict name -> sigma_max (a Python float, from a float64 SVD of each H x H block).
    Block k of Wh is what multiplies dL/dh_t on the way back through gate k:
    dL/dh_{t-1} gets (dL/da_t)[:, block k] @ Wh[:, block k].T.  See ``interpret``.
    """
    W = _recurrent_weight(Wh)
    if W.ndim != 2 or W.shape[0] < 1 or W.shape[1] < 1:
        raise ValueError(f"Wh must be a non-empty 2-D array, got shape {W.shape}")
    H, cols = W.shape
    if blocks is None:
        if cols % H:
            raise ValueError(
                f"cannot infer the gate blocks of Wh with shape {W.shape}: its "
                "width is not a multiple of its height; pass blocks="
            )
        G = cols // H
        names = BLOCK_NAMES.get(G, tuple(str(k) for k in range(G)))
    elif isinstance(blocks, (int, np.integer)):
        G = int(blocks)
        names = tuple(str(k) for k in range(G))
    else:
        names = tuple(str(n) for n in blocks)
        G = len(names)
    if G < 1 or cols % G:
        raise ValueError(f"Wh with {cols} columns cannot be split into {G} equal blocks")
    if len(set(names)) != len(names):
        raise ValueError(f"block names must be distinct, got {names}")
    width = cols // G
    W = np.asarray(W, dtype=np.float64)
    if not np.all(np.isfinite(W)):
        raise ValueError("Wh contains NaN or Inf")
    return {
        name: float(np.linalg.svd(W[:, k * width : (k + 1) * width], compute_uv=False)[0])
        for k, name in enumerate(names)
    }


def _cell_name(cell, sigmas):
    if cell is None:
        cell = _CELL_OF_BLOCKS.get(len(sigmas))
        if cell is None:
            raise ValueError(f"cannot tell the cell from {len(sigmas)} blocks; pass cell=")
        return cell
    if not isinstance(cell, str):  # a layer object
        name = type(cell).__name__.lower()
        for c in ("lstm", "gru", "rnn"):
            if c in name:
                return c
        raise ValueError(f"unknown layer type {type(cell).__name__}; pass cell='rnn'/'lstm'/'gru'")
    cell = cell.lower()
    if cell not in ("rnn", "lstm", "gru"):
        raise ValueError(f"cell must be 'rnn', 'lstm' or 'gru', got {cell!r}")
    return cell


def interpret(sigmas, cell=None):
    """What the per-block spectral norms from ``spectral_norm`` say about gradient flow.

    Returns a few lines of text.  ``sigmas`` is the dict from ``spectral_norm`` (or a layer / Wh
    array, which is measured first); ``cell`` is "rnn", "lstm", "gru" or a layer, inferred from
    the number of blocks when None.  The statements made are the ones the numbers support:

    - tanh RNN: going back one step, dL/dh_{t-1} = (dL/dh_t * tanh'(a_t)) @ Wh.T (plus the loss's
      direct term at t-1), and abs(tanh') <= 1, so a gradient arriving at step t is at most
      sigma_max(Wh)**k times as large k steps earlier.  sigma_max < 1 therefore *proves* that
      gradients vanish geometrically.  sigma_max > 1 is necessary for explosion but not
      sufficient: saturated units (tanh' near 0) and the directions in which Wh is contractive can
      still make them vanish.  Measure with ``track_grad_norms``.
    - LSTM: the cell-state path dL/dc_{t-1} = dL/dc_t * f_t is elementwise, through the forget
      gate, not through Wh; Wh only enters the feedback through the gates (damped by sigmoid'
      <= 1/4 for f, i, o and tanh' <= 1 for g).  The numbers bound that feedback but do not
      decide vanishing; ``grad_norms_c`` and the forget gate do.
    - GRU: h_t = (1 - z) * h_{t-1} + z * h~ gives an elementwise path through 1 - z; Wh enters
      through z, r (sigmoid' <= 1/4) and the candidate h~ (tanh' <= 1, scaled by z and r).
    """
    if not isinstance(sigmas, dict):
        if cell is None and not isinstance(sigmas, np.ndarray):
            cell = sigmas
        sigmas = spectral_norm(sigmas)
    cell = _cell_name(cell, sigmas)
    listed = ", ".join(f"{k} {v:.3g}" for k, v in sigmas.items())
    lines = [f"{cell.upper()}: largest singular value of each Wh block: {listed}."]
    if cell == "rnn":
        s = max(sigmas.values())
        if s < 1:
            half = math.log(2) / -math.log(s) if s > 0 else 0.0
            lines.append(
                f"sigma_max(Wh) = {s:.3g} < 1 and |tanh'| <= 1: a gradient provably shrinks at "
                f"least geometrically going back in time, by {s:.3g}**k after k steps "
                f"(halving at least every {half:.3g} steps; {s**10:.2g} after 10, "
                f"{s**50:.2g} after 50). Long-range dependencies cannot be learned from it."
            )
        else:
            lines.append(
                f"sigma_max(Wh) = {s:.3g} >= 1: the bound allows growth by up to {s:.3g}**k "
                "after k steps, so exploding gradients are possible but not implied: saturated "
                "units (tanh' near 0) and directions in which Wh contracts can still make them "
                "vanish. sigma_max > 1 is necessary, not sufficient, for explosion; measure "
                "with layer.track_grad_norms = True."
            )
    elif cell == "lstm":
        lines.append(
            "Through the cell state the gradient is multiplied elementwise by the forget gate "
            "(dL/dc_{t-1} = dL/dc_t * f_t), not by Wh: with f near 1 it survives whatever these "
            "numbers are. Wh acts only through the gates' feedback, damped by sigmoid' <= 1/4 "
            "(f, i, o) and tanh' <= 1 (g), so these values bound that feedback but do not decide "
            "vanishing; look at grad_norms_c."
        )
    else:
        lines.append(
            "h_t = (1 - z) * h_{t-1} + z * h~ carries the gradient elementwise through 1 - z, not "
            "through Wh: units with z near 0 copy their state and their gradient. Wh acts "
            "through z and r (damped by sigmoid' <= 1/4) and the candidate h~ (tanh' <= 1, "
            "scaled by z), so these values bound that feedback but do not decide vanishing; "
            "look at grad_norms_h."
        )
    return "\n".join(lines)


def flow_summary(norms):
    """Summarise a per-timestep gradient-norm profile (e.g. ``layer.grad_norms_h``).

    Returns a dict: ``first`` = ||dL/dh_1||, ``last`` = ||dL/dh_T||, ``ratio`` = first / last
    (how much of the gradient reaches the first step) and ``per_step`` = ratio ** (1 / (T - 1)),
    the geometric-mean factor by which the norm changes per step back in time (< 1: vanishing,
    > 1: growing).  Meaningful when the loss depends on the last step(s) only.
    """
    n = np.asarray(norms, dtype=np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"norms must be a non-empty 1-D array, got shape {n.shape}")
    first, last = float(n[0]), float(n[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = first / last if last != 0 else (math.inf if first > 0 else math.nan)
    per_step = ratio ** (1.0 / (n.size - 1)) if n.size > 1 and ratio == ratio else math.nan
    return {"first": first, "last": last, "ratio": ratio, "per_step": per_step}


# ---- clipping history ---------------------------------------------------------------------------


def global_norm(grads):
    """sqrt(sum of every element squared over all arrays), in float64; nothing is changed."""
    total = 0.0
    for g in grads:
        total += float(np.square(np.asarray(g), dtype=np.float64).sum())
    return math.sqrt(total)


class GradClipper:
    """Global-norm gradient clipping that remembers what it did.

    ``clipper(grads)`` (or ``clipper.clip(grads)``) calls ``fastrnn.clip_grads(grads,
    max_norm)`` (in place) and records the norm before clipping and whether it fired (it fires
    when max_norm / (norm + 1e-6) < 1, the clip_grads rule).  With ``max_norm=None`` nothing is
    clipped: norms are only measured and recorded, which is how to watch an unclipped run.

    A NaN/Inf gradient is recorded (as its non-finite norm) and raises FloatingPointError naming
    the step, gradients untouched, unless ``error_if_nonfinite=False``.

    ``norms`` (float64 array), ``fired`` (bool array), ``steps``, ``n_clipped``, ``rate`` (the
    fraction of steps that clipped) and ``summary()`` report the history; ``reset()`` clears it.
    """

    def __init__(self, max_norm=None, error_if_nonfinite=True):
        if max_norm is not None:
            max_norm = float(max_norm)
            if not (max_norm > 0 and math.isfinite(max_norm)):
                raise ValueError(
                    f"max_norm must be a positive finite number or None, got {max_norm!r}"
                )
        self.max_norm = max_norm
        self.error_if_nonfinite = error_if_nonfinite
        self._norms = []
        self._fired = []

    def __call__(self, grads):
        """Clip ``grads`` in place (if max_norm is set); record and return the norm before."""
        if self.max_norm is None:
            norm = global_norm(grads)
            fired = False
        else:
            norm = clip_grads(grads, self.max_norm, error_if_nonfinite=False)
            fired = bool(self.max_norm / (norm + 1e-6) < 1)
        self._norms.append(norm)
        self._fired.append(fired)
        if not math.isfinite(norm) and self.error_if_nonfinite:
            raise FloatingPointError(
                f"gradient norm is {norm} at step {len(self._norms)}: a "
                "gradient contains NaN or Inf; no gradient was changed"
            )
        return norm

    clip = __call__

    @property
    def norms(self):
        return np.array(self._norms, dtype=np.float64)

    @property
    def fired(self):
        return np.array(self._fired, dtype=bool)

    @property
    def steps(self):
        return len(self._norms)

    @property
    def n_clipped(self):
        return int(sum(self._fired))

    @property
    def rate(self):
        """Fraction of recorded steps on which clipping fired (nan before any step)."""
        return self.n_clipped / self.steps if self._norms else math.nan

    def reset(self):
        self._norms.clear()
        self._fired.clear()

    def summary(self):
        """One line: steps, clip rate, and the median / max / last finite gradient norm."""
        if not self._norms:
            return "no gradients seen yet"
        n = self.norms
        finite = n[np.isfinite(n)]
        bad = n.size - finite.size
        parts = [f"{self.steps} steps"]
        if self.max_norm is None:
            parts.append("no clipping")
        else:
            parts.append(
                f"clipped {self.n_clipped} ({100 * self.rate:.1f}%) at max_norm {self.max_norm:g}"
            )
        if finite.size:
            parts.append(
                f"norm median {np.median(finite):.3g}, max {finite.max():.3g}, last {n[-1]:.3g}"
            )
        if bad:
            parts.append(f"{bad} non-finite")
        return "; ".join(parts)

    def __repr__(self):
        return f"GradClipper(max_norm={self.max_norm!r}): {self.summary()}"


# ---- plots -------------------------------------------------------------------------------------


def require_matplotlib():
    """Import matplotlib (with the Agg-safe Figure API) or raise a helpful ImportError."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib, an optional extra of fastrnn: "
            "pip install fastrnn[plot]  (or: pip install matplotlib)"
        ) from exc
    return Figure


def _new_axes(ax, figsize=(6.4, 4.2)):
    if ax is not None:
        return ax.figure, ax
    Figure = require_matplotlib()
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def log_axes(ax, xlabel, ylabel, title=None):
    """Label a chart with a logarithmic y axis and a light grid (shared by the charts here and in
    the demo)."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def _finish(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_grad_flow(norms, ax=None, title="Gradient flow through time", path=None):
    """Chart ||dL/dh_t|| against the time step t (log y) for one or several layers.

    ``norms`` maps a label to a 1-D array of per-step norms or to a layer whose backward recorded
    them (``grad_norms_h`` is used; pass ``lstm.grad_norms_c`` under its own label for the cell
    state).  A bare array or layer is plotted with no legend.  Zero or non-finite values are left
    out (the axis is logarithmic).  Draws on ``ax`` if given, else on a new Figure (no pyplot
    state); saves it to ``path`` if given; returns the Figure.
    """
    if not isinstance(norms, dict):
        norms = {None: norms}
    fig, ax = _new_axes(ax)
    for label, n in norms.items():
        if not isinstance(n, np.ndarray) and hasattr(n, "grad_norms_h"):
            n = n.grad_norms_h
            if n is None:
                raise ValueError(
                    f"layer {label!r} has no grad_norms_h: set track_grad_norms = "
                    "True before its backward"
                )
        n = np.asarray(n, dtype=np.float64)
        t = np.arange(1, n.size + 1)
        ok = np.isfinite(n) & (n > 0)
        ax.plot(t[ok], n[ok], label=label)
    log_axes(ax, "time step t", "||dL/dh_t||", title)
    if any(label is not None for label in norms):
        ax.legend()
    return _finish(fig, path)


def plot_norm_history(
    histories, max_norm=None, ax=None, title="Gradient norm during training", path=None
):
    """Chart the global gradient norm against the training step (log y), with the clip threshold.

    ``histories`` maps a label to a ``GradClipper`` or a 1-D array of norms (a bare one is
    plotted without a legend).  The threshold line is drawn at ``max_norm``, or at the first
    clipper's max_norm when that is None.  Non-finite norms are marked with an "x" at the top of
    the chart.  Draws on ``ax`` or a new Figure, saves to ``path`` if given, returns the Figure.
    """
    if not isinstance(histories, dict):
        histories = {None: histories}
    fig, ax = _new_axes(ax)
    top = 0.0
    bad_points = []
    for label, h in histories.items():
        if isinstance(h, GradClipper):
            if max_norm is None:
                max_norm = h.max_norm
            h = h.norms
        n = np.asarray(h, dtype=np.float64)
        steps = np.arange(1, n.size + 1)
        ok = np.isfinite(n) & (n > 0)
        (line,) = ax.plot(steps[ok], n[ok], label=label, linewidth=1)
        if ok.any():
            top = max(top, n[ok].max())
        if (~np.isfinite(n)).any():
            bad_points.append((steps[~np.isfinite(n)], line.get_color()))
    if max_norm is not None:
        ax.axhline(
            max_norm, color="k", linestyle="--", linewidth=1, label=f"clip threshold {max_norm:g}"
        )
        top = max(top, max_norm)
    for steps, color in bad_points:
        ax.plot(
            steps,
            np.full(steps.size, top if top > 0 else 1.0),
            "x",
            color=color,
            markersize=9,
            label="non-finite",
        )
    log_axes(ax, "training step", "global gradient norm", title)
    if any(label is not None for label in histories) or max_norm is not None:
        ax.legend()
    return _finish(fig, path)
