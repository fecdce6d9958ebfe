"""Stacked recurrent layers: ``Stack``, the one home of "several recurrent layers on top of each
other" (language models, deep sequence models).

A ``Stack`` holds any number of recurrent time layers (``TimeRNN``, ``TimeLSTM``, ``TimeGRU``, any
mix) and behaves like one of them: ``hs = forward(xs)``, ``dxs = backward(dhs)``, ``params`` and
``grads`` (the layers' own lists, flattened in layer order), ``stateful``, ``reset_state()``,
``train_flg``.  Between consecutive layers it can add

- dropout (``dropout``; per element and time step, or with ``variational=True`` one mask per
  sequence shared over time, Gal & Ghahramani 2016), never along the time axis itself;
- recurrent variational dropout (``recurrent_dropout``): a mask (N, H) per layer, drawn afresh at
  every training forward and kept for its backward, multiplying h_{t-1} where it enters
  h_{t-1} @ Wh (needs layers whose ``forward`` takes ``h_mask``);
- residual connections (``connection="residual"``): h_k = layer_k(drop(h_{k-1})) + h_{k-1} for
  every layer but the first, whose input and output sizes must then match.  The skip path is
  not dropped, so dropout does not compound along it;
- dense connections (``connection="dense"``): layer k reads the concatenation of the stack's
  input and the (dropped) outputs of every earlier layer; the stack's output is the last
  layer's.

Dropout between layers is that of ``fastrnn.layers.lm`` (``TimeDropout``,
``VariationalDropout``); inputs to the first layer and outputs of the last are the caller's to
drop (a language model drops its embeddings and its read-out input itself).
"""

import inspect

import numpy as np

from . import lm as _lm
from .recurrent import TimeGRU, TimeLSTM, TimeRNN

__all__ = ["Stack", "CONNECTIONS"]

#: accepted values of Stack's ``connection``
CONNECTIONS = (None, "residual", "dense")

#: the layer classes a Stack can describe in its config (cell name -> class)
_CELL_CLASSES = {"rnn": TimeRNN, "lstm": TimeLSTM, "gru": TimeGRU}


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


def _accepts_h_mask(layer):
    try:
        return "h_mask" in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):
        return False


class Stack:
    """Recurrent time layers stacked, with optional dropout, residual or dense connections and
    recurrent variational dropout between them.

    Parameters
    ----------
    layers : list
        Recurrent time layers (``TimeRNN``, ``TimeLSTM``, ``TimeGRU``, in any mix), bottom first.
        Their ``params`` are [Wx, Wh, b]: layer k's input size (``Wx.shape[0]``) must be the
        previous layer's hidden size (residual: and equal to its own), or, with
        ``connection="dense"``, the stack's input size plus every earlier hidden size.
    dropout : float
        Dropout ratio between consecutive layers (0 <= dropout < 1), applied in training only.
    connection : None, "residual" or "dense"
        How layers are joined (see the module docstring).
    variational : bool
        Share each between-layer dropout mask over the time steps of a sequence.
    recurrent_dropout : float
        Ratio of the recurrent variational masks (one (N, H) mask per layer and forward, in
        training only).
    seed : int or None
        Seeds every mask this stack draws (None: fresh entropy).

    Attributes
    ----------
    params, grads : list of numpy.ndarray
        The layers' own lists, concatenated in layer order.
    """

    def __init__(
        self,
        layers,
        dropout=0.0,
        connection=None,
        variational=False,
        recurrent_dropout=0.0,
        seed=None,
    ):
        layers = list(layers) if isinstance(layers, (list, tuple)) else None
        if not layers:
            raise TypeError("layers must be a non-empty list of recurrent time layers")
        for k, layer in enumerate(layers):
            if not all(hasattr(layer, a) for a in ("forward", "backward", "params", "grads")):
                raise TypeError(
                    f"layers[{k}] must be a recurrent time layer (TimeRNN, TimeLSTM, "
                    f"TimeGRU), got {type(layer).__name__}"
                )
            p = layer.params
            if (
                len(p) != 3
                or not all(isinstance(a, np.ndarray) for a in p)
                or p[0].ndim != 2
                or p[1].ndim != 2
            ):
                raise TypeError(f"layers[{k}] must have params [Wx, Wh, b] of arrays")
        if connection not in CONNECTIONS:
            raise ValueError(f"connection must be one of {CONNECTIONS}, got {connection!r}")
        self.dropout = _ratio(dropout, "dropout")
        self.recurrent_dropout = _ratio(recurrent_dropout, "recurrent_dropout")
        self.connection = connection
        self.variational = bool(variational)
        self.seed = seed
        dtypes = {layer.params[1].dtype for layer in layers}
        if len(dtypes) != 1:
            raise TypeError(f"layers must all have the same dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        # sizes: D_k (input of layer k) and H_k
        self.input_sizes = [int(layer.params[0].shape[0]) for layer in layers]
        self.hidden_sizes = [int(layer.params[1].shape[0]) for layer in layers]
        self._check_sizes()
        if self.recurrent_dropout > 0:
            for k, layer in enumerate(layers):
                if not _accepts_h_mask(layer):
                    raise ValueError(
                        f"recurrent_dropout needs layers whose forward takes h_mask; "
                        f"layers[{k}] ({type(layer).__name__}) does not"
                    )
        self.layers = layers
        seeds = _child_seeds(seed, len(layers))
        drop_cls = _lm.VariationalDropout if self.variational else _lm.TimeDropout
        # one dropout site after each layer but the last
        self.drops = [drop_cls(self.dropout, seed=s) for s in seeds[:-1]] if self.dropout else []
        self._mask_rng = np.random.default_rng(seeds[-1])
        self.h_masks = None  # the recurrent masks of the last training forward
        self.params, self.grads = [], []
        for layer in layers:
            self.params += layer.params
            self.grads += layer.grads
        self._train_flg = True
        self._bufs = None  # per-shape work buffers (residual / dense), reused
        self._bufs_key = None

    # ---- configuration ----------------------------------------------------------------------

    @property
    def input_size(self):
        """The stack's input size (the first layer's)."""
        return self.input_sizes[0]

    @property
    def output_size(self):
        """The stack's output size (the last layer's hidden size)."""
        return self.hidden_sizes[-1]

    def _check_sizes(self):
        D, H = self.input_sizes, self.hidden_sizes
        for k in range(1, len(D)):
            if self.connection == "dense":
                want, what = (
                    D[0] + sum(H[:k]),
                    "the stack's input size plus every earlier hidden size",
                )
            else:
                want, what = H[k - 1], "the previous layer's hidden size"
            if D[k] != want:
                raise ValueError(
                    f"layers[{k}] takes inputs of size {D[k]}, but {what} is {want} "
                    f"(connection={self.connection!r})"
                )
            if self.connection == "residual" and H[k] != D[k]:
                raise ValueError(
                    f"residual connections need equal input and hidden sizes: "
                    f"layers[{k}] maps {D[k]} -> {H[k]}"
                )

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
        """True when every layer carries its state from one forward to the next."""
        return all(layer.stateful for layer in self.layers)

    @stateful.setter
    def stateful(self, value):
        for layer in self.layers:
            layer.stateful = bool(value)

    def reset_state(self):
        """Forget the carried state of every layer."""
        for layer in self.layers:
            layer.reset_state()

    # ---- forward / backward -----------------------------------------------------------------

    def _buffers(self, N, T):
        """Work arrays for (N, T), made by the first forward of that shape and reused: the
        dropout sites' outputs and gradients, the residual sums, the dense inputs."""
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
            elif self.connection == "residual":
                bufs["out"] = [None] + [np.empty((N, T, H[k]), dt) for k in range(1, L)]
                bufs["d"] = [np.empty((N, T, H[k]), dt) for k in range(L)]
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
        masks = []
        for H in self.hidden_sizes:
            keep = self._mask_rng.random((N, H)) >= p
            masks.append(np.multiply(keep, scale, dtype=self.dtype))
        return masks

    def _run(self, k, x, masks):
        layer = self.layers[k]
        if masks is None:
            return layer.forward(x)
        return layer.forward(x, h_mask=masks[k])

    def forward(self, xs):
        """xs (N, T, D) -> hs (N, T, H_last)."""
        xs = np.asarray(xs)
        if xs.ndim != 3 or xs.shape[2] != self.input_size:
            raise ValueError(f"xs must have shape (N, T, {self.input_size}), got {xs.shape}")
        if xs.dtype != self.dtype:
            if xs.dtype.kind != "f":
                raise TypeError(f"xs must be a float array, got dtype {xs.dtype}")
            xs = xs.astype(self.dtype)
        N, T = xs.shape[:2]
        masks = self.h_masks = self._draw_h_masks(N)
        bufs = self._buffers(N, T)
        L = len(self.layers)
        h = self._run(0, xs, masks)
        if self.connection == "dense":
            prev = xs
            for k in range(1, L):
                cat = bufs["in"][k]
                d = prev.shape[2]
                cat[:, :, :d] = prev
                cat[:, :, d:] = self._drop(k - 1, h)
                prev = cat
                h = self._run(k, cat, masks)
        elif self.connection == "residual":
            out = bufs["out"]
            for k in range(1, L):
                x = self._drop(k - 1, h)
                np.add(self._run(k, x, masks), h, out=out[k])
                h = out[k]
        else:
            for k in range(1, L):
                h = self._run(k, self._drop(k - 1, h), masks)
        return h

    def backward(self, dhs):
        """dhs (N, T, H_last) -> dxs (N, T, D); fills grads (every layer's, in place)."""
        if self._bufs_key is None:
            raise RuntimeError(
                "Stack.backward() called before forward(): there is no forward "
                "pass to differentiate"
            )
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
        dh = dhs
        for k in range(L - 1, 0, -1):
            dh = self._drop_back(k - 1, self.layers[k].backward(dh))
        return self.layers[0].backward(dh)

    # ---- persistence ------------------------------------------------------------------------

    def get_config(self):
        """The constructor's arguments as a JSON-serializable dict (layers as cell names and
        sizes; the arrays are ``params``)."""
        layers = []
        for k, layer in enumerate(self.layers):
            cell = next((name for name, cls in _CELL_CLASSES.items() if type(layer) is cls), None)
            if cell is None:
                raise TypeError(
                    f"get_config: layers[{k}] is a {type(layer).__name__}; only "
                    "TimeRNN, TimeLSTM and TimeGRU can be described"
                )
            entry = {
                "cell": cell,
                "input_size": self.input_sizes[k],
                "hidden_size": self.hidden_sizes[k],
                "stateful": bool(layer.stateful),
            }
            if cell == "gru":
                entry["reset_after"] = bool(layer.reset_after)
            layers.append(entry)
        return {
            "layers": layers,
            "dropout": self.dropout,
            "connection": self.connection,
            "variational": self.variational,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": None if self.seed is None else int(self.seed),
            "dtype": np.dtype(self.dtype).name,
        }

    @classmethod
    def from_config(cls, config, params):
        """Rebuild a Stack from ``get_config()``'s dict and its ``params`` (used as they are)."""
        specs = config["layers"]
        params = list(params)
        if len(params) != 3 * len(specs):
            raise ValueError(
                f"params must hold {3 * len(specs)} arrays (3 per layer), got {len(params)}"
            )
        layers = []
        for k, spec in enumerate(specs):
            cell = spec["cell"]
            if cell not in _CELL_CLASSES:
                raise ValueError(
                    f"config layers[{k}] cell must be one of {sorted(_CELL_CLASSES)}, got {cell!r}"
                )
            Wx, Wh, b = params[3 * k : 3 * k + 3]
            D, H = spec["input_size"], spec["hidden_size"]
            blocks = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
            want_b = (2, blocks * H) if spec.get("reset_after") else (blocks * H,)
            for name, arr, shape in (
                ("Wx", Wx, (D, blocks * H)),
                ("Wh", Wh, (H, blocks * H)),
                ("b", b, want_b),
            ):
                if np.shape(arr) != shape:
                    raise ValueError(
                        f"params for layers[{k}] {name} must have shape {shape}, "
                        f"got {np.shape(arr)}"
                    )
            kwargs = {"reset_after": spec["reset_after"]} if cell == "gru" else {}
            layers.append(
                _CELL_CLASSES[cell](Wx, Wh, b, stateful=spec.get("stateful", False), **kwargs)
            )
        return cls(
            layers,
            dropout=config.get("dropout", 0.0),
            connection=config.get("connection"),
            variational=config.get("variational", False),
            recurrent_dropout=config.get("recurrent_dropout", 0.0),
            seed=config.get("seed"),
        )
