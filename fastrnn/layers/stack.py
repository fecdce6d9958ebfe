"""Stacked recurrent layers: ``Stack``, the one home of "several recurrent layers on top of each
other" (language models, deep and bidirectional encoders).

A ``Stack`` holds any number of recurrent time layers (``TimeRNN``, ``TimeLSTM``, ``TimeGRU``,
``Bidirectional`` pairs of them, any mix) and behaves like one of them: ``hs = forward(xs,
lengths=None)``, ``dxs = backward(dhs)``, ``params`` and ``grads`` (the layers' own lists,
flattened in layer order, then the highway gates'), ``stateful``, ``reset_state()``,
``train_flg``.  ``lengths`` (N,) is passed to every layer: row n is read over its first
``lengths[n]`` steps, in both directions of a bidirectional layer, and the output is zero past
them.  Between consecutive layers it can add

- dropout (``dropout``; per element and time step, or with ``variational=True`` one mask per
  sequence shared over time, Gal & Ghahramani 2016), never along the time axis itself;
- recurrent variational dropout (``recurrent_dropout``): a mask (N, H) per layer (a pair for a
  bidirectional one), drawn afresh at every training forward and kept for its backward,
  multiplying h_{t-1} where it enters h_{t-1} @ Wh (needs layers whose ``forward`` takes
  ``h_mask``);
- weight drop (``weight_drop``, DropConnect on the recurrent weights, Wan et al. 2013 as
  Merity et al. 2018 use it in AWD-LSTM): at every training forward each layer (and
  direction) computes with Wh * M, M a fresh mask of 0 and 1 / (1 - weight_drop) over Wh's
  elements, and its gradient is masked likewise; ``params`` keep the raw Wh, which evaluation
  uses as it is;
- residual connections (``connection="residual"``): h_k = layer_k(drop(h_{k-1})) + h_{k-1} for
  every layer but the first, whose input and output sizes must then match.  The skip path is
  not dropped, so dropout does not compound along it;
- dense connections (``connection="dense"``): layer k reads the concatenation of the stack's
  input and the (dropped) outputs of every earlier layer; the stack's output is the last
  layer's;
- highway connections (``connection="highway"``, Srivastava et al. 2015): for every layer k but
  the first (input size = output size = D_k),
  ``g_k = sigmoid(h_{k-1} Wt_k + bt_k)`` (a gate per unit and step, Wt_k (D_k, D_k), bt_k
  (D_k,)) and ``h_k = g_k * layer_k(drop(h_{k-1})) + (1 - g_k) * h_{k-1}``: the gate reads the
  undropped input, and the carried part is undropped like the residual's skip.  The gates'
  params [Wt_1, bt_1, Wt_2, bt_2, ...] follow the layers' in ``params``; by default Wt ~ N(0,
  1/D_k) and bt = -1 (start by mostly carrying the input through, as Srivastava et al.
  recommend).

Padding: every layer's output is zero past a row's length, so no connection carries anything
into the padding (a residual or highway sum of zeros is zero; the dense concatenation's input
part only feeds layers, which ignore the padding); ``backward`` ignores ``dhs`` there.

Dropout between layers is that of ``fastrnn.layers.lm`` (``TimeDropout``,
``VariationalDropout``); inputs to the first layer and outputs of the last are the caller's to
drop (a language model drops its embeddings and its read-out input itself).
"""

import contextlib
import inspect

import numpy as np

from .. import _lm as _lm_kernels
from . import lm as _lm
from ._cells import (
    BLOCKS,
    CELL_CLASSES,
    check_lengths,
    init_layer_params,
    layer_entry,
    layer_from_entry,
)
from .bidirectional import Bidirectional
from .recurrent import _aligned_empty

__all__ = ["Stack", "CONNECTIONS"]

#: accepted values of Stack's ``connection``
CONNECTIONS = (None, "residual", "dense", "highway")

#: initial bias of the highway gates (negative: carry the input through at first)
HIGHWAY_BIAS = -1.0

# kept for older imports: the layer classes a Stack can describe (cell name -> class)
_CELL_CLASSES = CELL_CLASSES


def _ratio(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _child_seeds(seed, n):
    """n independent integer seeds derived from `seed` (None: fresh entropy each)."""
    if seed is None:
        return [None] * n
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be None or a non-negative integer, got {seed!r}")
    states = np.random.SeedSequence(int(seed)).generate_state(n, np.uint64)
    return [int(s) for s in states]


def _accepts(layer, arg):
    if isinstance(layer, Bidirectional):
        return all(_accepts(d, arg) for d in (layer.forward_layer, layer.backward_layer))
    try:
        return arg in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):
        return False


def _sigmoid(a, out):
    # 1 / (1 + exp(-a)) without overflow warnings for very negative a
    np.negative(a, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _layer_sizes(k, layer):
    """(input size, output size, dtype) of layers[k]: a time layer or a Bidirectional."""
    if isinstance(layer, Bidirectional):
        return layer.input_size, layer.output_size, layer.dtype
    if not all(hasattr(layer, a) for a in ("forward", "backward", "params", "grads")):
        raise TypeError(
            f"layers[{k}] must be a recurrent time layer (TimeRNN, TimeLSTM, "
            f"TimeGRU) or a Bidirectional, got {type(layer).__name__}"
        )
    p = layer.params
    if (
        len(p) != 3
        or not all(isinstance(a, np.ndarray) for a in p)
        or p[0].ndim != 2
        or p[1].ndim != 2
    ):
        raise TypeError(f"layers[{k}] must have params [Wx, Wh, b] of arrays")
    return int(p[0].shape[0]), int(p[1].shape[0]), p[1].dtype


class Stack:
    """Recurrent time layers stacked, with optional dropout, residual, dense or highway
    connections and recurrent variational dropout between them.

    Parameters
    ----------
    layers : list
        Recurrent time layers (``TimeRNN``, ``TimeLSTM``, ``TimeGRU``) and ``Bidirectional``
        layers, in any mix, bottom first.  Layer k's input size must be the previous layer's
        output size (residual and highway: and equal to its own), or, with
        ``connection="dense"``, the stack's input size plus every earlier output size.
    dropout : float
        Dropout ratio between consecutive layers (0 <= dropout < 1), applied in training only.
    connection : None, "residual", "dense" or "highway"
        How layers are joined (see the module docstring).
    variational : bool
        Share each between-layer dropout mask over the time steps of a sequence.
    recurrent_dropout : float
        Ratio of the recurrent variational masks (one (N, H) mask per layer and direction and
        forward, in training only).
    weight_drop : float
        DropConnect ratio of every layer's recurrent weights Wh (a fresh mask per training
        forward, the same for every step and row; see the module docstring).
    seed : int or None
        Seeds every mask this stack draws, and the highway gates' initial weights (None: fresh
        entropy).
    highway_params : None or list of arrays
        With ``connection="highway"``: the gates' [Wt_1, bt_1, ..., Wt_{L-1}, bt_{L-1}] (used as
        they are); None draws them (see the module docstring).

    Attributes
    ----------
    params, grads : list of numpy.ndarray
        The layers' own lists, concatenated in layer order, then the highway gates'.
    input_sizes, hidden_sizes : list of int
        Every layer's input and output size (a concatenating Bidirectional's output is both
        directions' hidden sizes together).
    """

    def __init__(
        self,
        layers,
        dropout=0.0,
        connection=None,
        variational=False,
        recurrent_dropout=0.0,
        seed=None,
        highway_params=None,
        weight_drop=0.0,
    ):
        layers = list(layers) if isinstance(layers, (list, tuple)) else None
        if not layers:
            raise TypeError(
                "layers must be a non-empty list of recurrent time layers or Bidirectional layers"
            )
        sizes = [_layer_sizes(k, layer) for k, layer in enumerate(layers)]
        if connection not in CONNECTIONS:
            raise ValueError(f"connection must be one of {CONNECTIONS}, got {connection!r}")
        self.dropout = _ratio(dropout, "dropout")
        self.recurrent_dropout = _ratio(recurrent_dropout, "recurrent_dropout")
        self.weight_drop = _ratio(weight_drop, "weight_drop")
        self.connection = connection
        self.variational = bool(variational)
        self.seed = seed
        dtypes = {dt for _, _, dt in sizes}
        if len(dtypes) != 1:
            raise TypeError(f"layers must all have the same dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        # sizes: D_k (input of layer k) and H_k (its output)
        self.input_sizes = [d for d, _, _ in sizes]
        self.hidden_sizes = [h for _, h, _ in sizes]
        self._check_sizes()
        if self.recurrent_dropout > 0:
            for k, layer in enumerate(layers):
                if not _accepts(layer, "h_mask"):
                    raise ValueError(
                        f"recurrent_dropout needs layers whose forward takes h_mask; "
                        f"layers[{k}] ({type(layer).__name__}) does not"
                    )
        self.layers = layers
        seeds = _child_seeds(seed, len(layers) + 1)
        drop_cls = _lm.VariationalDropout if self.variational else _lm.TimeDropout
        # one dropout site after each layer but the last
        self.drops = [drop_cls(self.dropout, seed=s) for s in seeds[:-2]] if self.dropout else []
        self._mask_rng = np.random.default_rng(seeds[-2])
        self.h_masks = None  # the recurrent masks of the last training forward
        self.highway = self._highway_params(highway_params, seeds[-1])
        self.params, self.grads = [], []
        for layer in layers:
            self.params += layer.params
            self.grads += layer.grads
        self.params += self.highway
        self.grads += [np.zeros(p.shape, p.dtype) for p in self.highway]
        # [cell layer, raw Wh, masked copy, key of the last forward's mask (None: unmasked)]
        self._weight_drops = []
        if self.weight_drop > 0:
            for layer in layers:
                cells = (
                    (layer.forward_layer, layer.backward_layer)
                    if isinstance(layer, Bidirectional)
                    else (layer,)
                )
                for cell in cells:
                    Wh = cell.params[1]
                    self._weight_drops.append([cell, Wh, _aligned_empty(Wh.shape, Wh.dtype), None])
            # (seed index len(layers) + 1: the others keep theirs)
            self._weight_rng = np.random.default_rng(_child_seeds(seed, len(layers) + 2)[-1])
        self._train_flg = True
        self._bufs = None  # per-shape work buffers (residual / dense / highway), reused
        self._bufs_key = None
        self._lengths = None  # the lengths of the last forward
        self._gates = None  # highway: the gates of the last forward

    @classmethod
    def create(
        cls,
        cell,
        input_size,
        hidden_sizes,
        *,
        bidirectional=False,
        merge="concat",
        rng=None,
        dtype=np.float32,
        forget_bias=1.0,
        classes=None,
        layer_kwargs=None,
        **stack_kwargs,
    ):
        """A Stack of new ``cell`` layers ("rnn", "lstm" or "gru") of ``hidden_sizes``.

        Weights are drawn from ``rng`` as ``fastrnn.models.init_params`` draws them;
        ``bidirectional=True`` makes every layer a ``Bidirectional`` (``merge``);
        ``layer_kwargs`` go to every time layer (e.g. ``{"reset_after": True}``), ``classes``
        as in ``Bidirectional.create``; the other keywords (``dropout``, ``connection``,
        ``variational``, ``recurrent_dropout``, ``weight_drop``, ``seed``) to the Stack.

        Examples
        --------
        >>> import numpy as np
        >>> from fastrnn.layers import Stack
        >>> enc = Stack.create("gru", 8, [16, 16, 16], bidirectional=True,
        ...                    connection="residual", rng=np.random.default_rng(0))
        >>> enc.hidden_sizes
        [32, 32, 32]
        """
        if isinstance(hidden_sizes, (int, np.integer)) and not isinstance(hidden_sizes, bool):
            hidden_sizes = [hidden_sizes]
        if not isinstance(hidden_sizes, (list, tuple)) or not hidden_sizes:
            raise ValueError(
                f"hidden_sizes must be a positive integer or a non-empty list of them, got "
                f"{hidden_sizes!r}"
            )
        if cell not in BLOCKS:
            raise ValueError(f"cell must be one of {sorted(BLOCKS)}, got {cell!r}")
        rng = np.random.default_rng() if rng is None else rng
        classes = CELL_CLASSES if classes is None else classes
        layer_kwargs = dict(layer_kwargs or {})
        bias_2d = cell == "gru" and bool(layer_kwargs.get("reset_after", False))
        dense = stack_kwargs.get("connection") == "dense"
        layers, outs, D = [], [], int(input_size)
        for H in hidden_sizes:
            Din = int(input_size) + sum(outs) if dense else D
            if bidirectional:
                layer = Bidirectional.create(
                    cell,
                    Din,
                    H,
                    merge=merge,
                    rng=rng,
                    dtype=dtype,
                    forget_bias=forget_bias,
                    classes=classes,
                    **layer_kwargs,
                )
                out = layer.output_size
            else:
                params = init_layer_params(cell, Din, H, rng, dtype, forget_bias, bias_2d)
                layer = classes[cell](*params, **layer_kwargs)
                out = int(H)
            layers.append(layer)
            outs.append(out)
            D = out
        return cls(layers, **stack_kwargs)

    # ---- configuration ----------------------------------------------------------------------

    @property
    def input_size(self):
        """The stack's input size (the first layer's)."""
        return self.input_sizes[0]

    @property
    def output_size(self):
        """The stack's output size (the last layer's)."""
        return self.hidden_sizes[-1]

    def _check_sizes(self):
        D, H = self.input_sizes, self.hidden_sizes
        for k in range(1, len(D)):
            if self.connection == "dense":
                want, what = (
                    D[0] + sum(H[:k]),
                    "the stack's input size plus every earlier output size",
                )
            else:
                want, what = H[k - 1], "the previous layer's output size"
            if D[k] != want:
                raise ValueError(
                    f"layers[{k}] takes inputs of size {D[k]}, but {what} is {want} "
                    f"(connection={self.connection!r})"
                )
            if self.connection in ("residual", "highway") and H[k] != D[k]:
                raise ValueError(
                    f"{self.connection} connections need equal input and output sizes: "
                    f"layers[{k}] maps {D[k]} -> {H[k]}"
                )

    def _highway_params(self, given, seed):
        L = len(self.input_sizes)
        if self.connection != "highway":
            if given:
                raise ValueError('highway_params are only for connection="highway"')
            return []
        shapes = []
        for k in range(1, L):
            D = self.input_sizes[k]
            shapes += [(D, D), (D,)]
        if given is None:
            rng = np.random.default_rng(seed)
            out = []
            for k in range(1, L):
                D = self.input_sizes[k]
                out.append((rng.standard_normal((D, D)) / np.sqrt(D)).astype(self.dtype))
                out.append(np.full(D, HIGHWAY_BIAS, self.dtype))
            return out
        given = list(given)
        if len(given) != len(shapes):
            raise ValueError(
                f"highway_params must hold {len(shapes)} arrays ([Wt, bt] for each of layers "
                f"1..{L - 1}), got {len(given)}"
            )
        for i, (p, shape) in enumerate(zip(given, shapes)):
            name = f"highway_params[{i}] ({'Wt' if i % 2 == 0 else 'bt'}_{i // 2 + 1})"
            if not isinstance(p, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(p).__name__}")
            if p.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {p.shape}")
            if p.dtype != self.dtype:
                raise TypeError(f"{name} must have the layers' dtype {self.dtype}, got {p.dtype}")
        return given

    @property
    def train_flg(self):
        """Training mode: True (default) draws dropout masks; False runs the stack
        deterministically."""
        return self._train_flg

    @train_flg.setter
    def train_flg(self, value):
        self._train_flg = bool(value)
        for d in self.drops:
            d.train_flg = self._train_flg

    @property
    def stateful(self):
        """True when every layer carries its state from one forward to the next (never with a
        Bidirectional layer)."""
        return all(layer.stateful for layer in self.layers)

    @stateful.setter
    def stateful(self, value):
        if value and any(isinstance(layer, Bidirectional) for layer in self.layers):
            raise ValueError(
                "a Stack with Bidirectional layers cannot be stateful: the reverse direction's "
                "initial state would come from the future"
            )
        for layer in self.layers:
            layer.stateful = bool(value)

    def reset_state(self):
        """Forget the carried state of every layer."""
        for layer in self.layers:
            layer.reset_state()

    # ---- forward / backward -----------------------------------------------------------------

    def _buffers(self, N, T):
        """Work arrays for (N, T), made by the first forward of that shape and reused: the
        dropout sites' outputs and gradients, the residual and highway sums, the dense
        inputs."""
        key = (N, T)
        if self._bufs_key != key:
            D, H, dt = self.input_sizes, self.hidden_sizes, self.dtype
            L = len(self.layers)
            bufs = {}
            if self.drops:  # after layer k (k < L - 1)
                bufs["drop"] = [np.empty((N, T, H[k]), dt) for k in range(L - 1)]
                bufs["ddrop"] = [np.empty((N, T, H[k]), dt) for k in range(L - 1)]
            if self.connection == "dense":
                # the inputs of layers 1..L-1 (each the previous input and one more output)
                bufs["in"] = [None] + [np.empty((N, T, D[k]), dt) for k in range(1, L)]
            elif self.connection in ("residual", "highway"):
                bufs["out"] = [None] + [np.empty((N, T, H[k]), dt) for k in range(1, L)]
                bufs["d"] = [np.empty((N, T, H[k]), dt) for k in range(L)]
            if self.connection == "highway":
                bufs["gate"] = [None] + [np.empty((N, T, H[k]), dt) for k in range(1, L)]
                bufs["inner"] = [None] * L  # the layers' own outputs (their arrays)
                bufs["hin"] = [None] * L  # the gates' inputs h_{k-1}
            self._bufs = bufs
            self._bufs_key = key
        return self._bufs

    def _drop(self, k, h):
        """Dropout after layer k (into its buffer), or h itself."""
        if not self.drops:
            return h
        return self.drops[k].forward(h, out=self._bufs["drop"][k])

    def _drop_back(self, k, d):
        if not self.drops:
            return d
        return self.drops[k].backward(d, out=self._bufs["ddrop"][k])

    def _draw_h_masks(self, N):
        p = self.recurrent_dropout
        if not (self._train_flg and p > 0):
            return None
        scale = 1.0 / (1.0 - p)

        def draw(H):
            keep = self._mask_rng.random((N, H)) >= p
            return np.multiply(keep, scale, dtype=self.dtype)

        masks = []
        for layer, H in zip(self.layers, self.hidden_sizes):
            if isinstance(layer, Bidirectional):
                masks.append(tuple(draw(h) for h in layer.hidden_sizes))
            else:
                masks.append(draw(H))
        return masks

    @contextlib.contextmanager
    def _weights_for(self, forward):
        """Inside: with weight drop, every layer computes with its masked copy of Wh (a fresh
        mask for a training forward; the forward's own for its backward, whose Wh gradients
        are then masked too); the raw Wh are back in the layers' params afterwards, whatever
        happens, so that nothing outside a Stack call sees a masked copy."""
        drops = self._weight_drops
        if drops and forward:
            self._mask_weights(fresh=self._train_flg)
        if not drops or drops[0][3] is None:  # no weight drop, or an evaluation forward's
            yield
            return
        try:
            for cell, _raw, work, _key in drops:
                cell.params[1] = work
            yield
            if not forward:
                p = self.weight_drop
                for cell, _raw, _work, key in drops:
                    g = cell.grads[1]  # dL/d(raw Wh) = dL/d(masked Wh) * M, in place
                    threads = _lm.default_threads(g.size)
                    _lm_kernels.dropout(g, g, key, _lm._threshold(p), 1.0 / (1.0 - p), threads)
        finally:
            for cell, raw, _work, _key in self._weight_drops:
                cell.params[1] = raw

    def _mask_weights(self, fresh):
        """Fresh masks (each masked copy = raw Wh * M, M's key kept for backward), or with
        `fresh` false none: the keys say the forward computed with the raw Wh."""
        for entry in self._weight_drops:
            entry[3] = None
        if not fresh:
            return
        p = self.weight_drop
        thr, scale = _lm._threshold(p), 1.0 / (1.0 - p)
        n = len(self._weight_drops)
        keys = [int(k) for k in self._weight_rng.integers(0, 2**64, n, np.uint64)]
        for k, (entry, key) in enumerate(zip(self._weight_drops, keys)):
            _cell, raw, work, _ = entry
            if not _lm_kernels.dropout(raw, work, key, thr, scale, _lm.default_threads(raw.size)):
                raise ValueError(f"the recurrent weights Wh of cell {k} contain NaN or Inf")
        for entry, key in zip(self._weight_drops, keys):  # (only once every copy is made)
            entry[3] = key

    def _run(self, k, x, masks, lengths):
        kwargs = {}
        if lengths is not None:
            kwargs["lengths"] = lengths
        if masks is not None:
            kwargs["h_mask"] = masks[k]
        return self.layers[k].forward(x, **kwargs)

    def _highway_forward(self, k, x, inner):
        """h_k = g * inner + (1 - g) * x, g = sigmoid(x Wt + bt), into out[k]."""
        Wt, bt = self.highway[2 * (k - 1)], self.highway[2 * k - 1]
        N, T, D = x.shape
        gate = self._bufs["gate"][k]
        a = gate.reshape(N * T, D)
        np.matmul(x.reshape(N * T, D), Wt, out=a)
        a += bt
        _sigmoid(a, a)
        out = self._bufs["out"][k]
        np.subtract(inner, x, out=out)
        out *= gate
        out += x
        self._bufs["inner"][k] = inner
        self._bufs["hin"][k] = x
        return out

    def forward(self, xs, lengths=None):
        """xs (N, T, D) -> hs (N, T, H_last); ``lengths`` (N,): each row's valid steps (hs is
        zero past them)."""
        xs = np.asarray(xs)
        if xs.ndim != 3 or xs.shape[2] != self.input_size:
            raise ValueError(f"xs must have shape (N, T, {self.input_size}), got {xs.shape}")
        if xs.dtype != self.dtype:
            if xs.dtype.kind != "f":
                raise TypeError(f"xs must be a float array, got dtype {xs.dtype}")
            xs = xs.astype(self.dtype)
        N, T = xs.shape[:2]
        lengths = check_lengths(lengths, N, T)
        if lengths is not None:
            for k, layer in enumerate(self.layers):
                if not _accepts(layer, "lengths"):
                    raise TypeError(
                        f"lengths needs layers whose forward takes lengths; layers[{k}] "
                        f"({type(layer).__name__}) does not"
                    )
        masks = self.h_masks = self._draw_h_masks(N)
        with self._weights_for(forward=True):
            return self._forward(xs, lengths, masks)

    def _forward(self, xs, lengths, masks):
        N, T = xs.shape[:2]
        bufs = self._buffers(N, T)
        self._lengths = lengths
        L = len(self.layers)
        h = self._run(0, xs, masks, lengths)
        if self.connection == "dense":
            prev = xs
            for k in range(1, L):
                cat = bufs["in"][k]
                d = prev.shape[2]
                cat[:, :, :d] = prev
                cat[:, :, d:] = self._drop(k - 1, h)
                prev = cat
                h = self._run(k, cat, masks, lengths)
        elif self.connection == "residual":
            out = bufs["out"]
            for k in range(1, L):
                x = self._drop(k - 1, h)
                np.add(self._run(k, x, masks, lengths), h, out=out[k])
                h = out[k]
        elif self.connection == "highway":
            for k in range(1, L):
                inner = self._run(k, self._drop(k - 1, h), masks, lengths)
                h = self._highway_forward(k, h, inner)
        else:
            for k in range(1, L):
                h = self._run(k, self._drop(k - 1, h), masks, lengths)
        return h

    def _valid_only(self, dhs):
        """dhs with the padding's entries zeroed (a copy), or dhs itself without lengths."""
        if self._lengths is None:
            return dhs
        N, T = self._bufs_key
        valid = np.arange(T)[None, :] < self._lengths[:, None]
        return np.where(valid[:, :, None], dhs, 0).astype(self.dtype, copy=False)

    def backward(self, dhs):
        """dhs (N, T, H_last) -> dxs (N, T, D); fills grads (every layer's, in place)."""
        with self._weights_for(forward=False):
            return self._backward(dhs)

    def _backward(self, dhs):
        if self._bufs_key is None:
            raise RuntimeError(
                "Stack.backward() called before forward(): there is no forward pass to "
                "differentiate"
            )
        dhs = np.asarray(dhs)
        want = (*self._bufs_key, self.output_size)
        if dhs.shape != want:
            raise ValueError(f"dhs must have shape {want} (the last forward's hs), got {dhs.shape}")
        dhs = self._valid_only(dhs)
        L = len(self.layers)
        if self.connection == "dense":
            g = self.layers[-1].backward(dhs)  # dL/d(input of the last layer)
            for k in range(L - 1, 0, -1):
                d = self.input_sizes[k - 1]
                dout = self._drop_back(k - 1, g[:, :, d:])
                below = self.layers[k - 1].backward(dout)
                below += g[:, :, :d]
                g = below
            return g
        if self.connection == "residual":
            dbuf = self._bufs["d"]
            np.copyto(dbuf[-1], dhs)
            dh = dbuf[-1]
            for k in range(L - 1, 0, -1):
                dx = self._drop_back(k - 1, self.layers[k].backward(dh))
                np.add(dx, dh, out=dbuf[k - 1])  # the skip path's share
                dh = dbuf[k - 1]
            return self.layers[0].backward(dh)
        if self.connection == "highway":
            dbuf = self._bufs["d"]
            np.copyto(dbuf[-1], dhs)
            dh = dbuf[-1]
            for k in range(L - 1, 0, -1):
                dh = self._highway_backward(k, dh, dbuf[k - 1])
            return self.layers[0].backward(dh)
        dh = dhs
        for k in range(L - 1, 0, -1):
            dh = self._drop_back(k - 1, self.layers[k].backward(dh))
        return self.layers[0].backward(dh)

    def _highway_backward(self, k, dy, dx):
        """From dy = dL/dh_k: the layer's and the gate's gradients; dL/dh_{k-1} into dx."""
        Wt = self.highway[2 * (k - 1)]
        dWt, dbt = self.grads[len(self.grads) - len(self.highway) + 2 * (k - 1) :][:2]
        gate, inner = self._bufs["gate"][k], self._bufs["inner"][k]
        x = self._bufs["hin"][k]
        N, T, D = dy.shape
        # through the layer: d inner = dy * g
        d_inner = self._drop_back(k - 1, self.layers[k].backward(dy * gate))
        # the gate's pre-activation: da = dy * (inner - x) * g (1 - g)
        da = (inner - x) * dy
        da *= gate
        da *= 1 - gate
        da2 = da.reshape(N * T, D)
        np.matmul(x.reshape(N * T, D).T, da2, out=dWt)
        np.sum(da2, axis=0, out=dbt)
        # dx = d_inner + dy * (1 - g) + da Wt^T
        np.multiply(dy, 1 - gate, out=dx)
        dx += d_inner
        dx.reshape(N * T, D)[...] += da2 @ Wt.T
        return dx

    # ---- persistence ------------------------------------------------------------------------

    def get_config(self):
        """The constructor's arguments as a JSON-serializable dict (layers as cell names and
        sizes, a Bidirectional as ``{"bidirectional": its config}``; the arrays are
        ``params``)."""
        layers = []
        for k, layer in enumerate(self.layers):
            if isinstance(layer, Bidirectional):
                layers.append({"bidirectional": layer.get_config()})
            else:
                layers.append(layer_entry(layer, f"layers[{k}]"))
        return {
            "layers": layers,
            "dropout": self.dropout,
            "connection": self.connection,
            "variational": self.variational,
            "recurrent_dropout": self.recurrent_dropout,
            "weight_drop": self.weight_drop,
            "seed": None if self.seed is None else int(self.seed),
            "dtype": np.dtype(self.dtype).name,
        }

    @classmethod
    def from_config(cls, config, params):
        """Rebuild a Stack from ``get_config()``'s dict and its ``params`` (used as they are)."""
        specs = config["layers"]
        if not isinstance(specs, list) or not specs:
            raise ValueError("config layers must be a non-empty list")
        counts = [6 if isinstance(s, dict) and "bidirectional" in s else 3 for s in specs]
        n_highway = 2 * (len(specs) - 1) if config.get("connection") == "highway" else 0
        params = list(params)
        if len(params) != sum(counts) + n_highway:
            raise ValueError(
                f"params must hold {sum(counts) + n_highway} arrays (3 per layer, 6 per "
                f"bidirectional layer, 2 per highway gate), got {len(params)}"
            )
        layers, at = [], 0
        for k, (spec, n) in enumerate(zip(specs, counts)):
            ps = params[at : at + n]
            at += n
            if n == 6:
                try:
                    layers.append(Bidirectional.from_config(spec["bidirectional"], ps))
                except (ValueError, TypeError) as e:
                    raise type(e)(f"layers[{k}]: {e}") from None
            else:
                layers.append(layer_from_entry(spec, ps, f"layers[{k}]"))
        return cls(
            layers,
            dropout=config.get("dropout", 0.0),
            connection=config.get("connection"),
            variational=config.get("variational", False),
            recurrent_dropout=config.get("recurrent_dropout", 0.0),
            weight_drop=config.get("weight_drop", 0.0),
            seed=config.get("seed"),
            highway_params=params[at:] if n_highway else None,
        )
