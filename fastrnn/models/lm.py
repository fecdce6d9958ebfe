"""Word-level language models on fastrnn's layers.

- ``LanguageModel``: embedding, a ``Stack`` of recurrent layers (any cell, residual or dense
  connections, ordinary or variational dropout, recurrent masks, word-type dropout of the
  embedding), an optional projection, an affine read-out (optionally tied to the embedding) and
  softmax cross-entropy.  The model of the training presets (Zaremba et al. 2014's small and
  medium PTB models, and a medium model with variational dropout and tied weights).
- ``Rnnlm`` and ``BetterRnnlm``: the book's two models (ch06/rnnlm.py, ch06/better_rnnlm.py) with
  the book's signatures, initialisation and ``params``/``grads`` lists, so the book's
  ``RnnlmTrainer`` (with its ``remove_duplicate``, ``clip_grads``, ``SGD``) and
  ``eval_perplexity`` run them unchanged.

Every model here: ``predict(xs, train_flg=False)`` -> scores (N, T, V); ``forward(xs, ts,
train_flg=True)`` -> mean cross-entropy (a float); ``backward(dout=1)`` fills ``grads`` in place;
``reset_state()``; ``params``/``grads`` (the layers' own arrays); ``save_params(path)`` /
``load_params(path)`` (.npz, no pickle); and the persistence protocol ``get_config()`` /
``from_config(config, params)``.  The recurrent layers are stateful (truncated BPTT), as in the
book.

Weight tying: ``LanguageModel(tie_weights=True)`` lists the shared matrix once and sums its two
gradients itself (embedding rows plus the read-out's transpose), so any optimizer and
``fastrnn.clip_grads`` see one parameter.  ``BetterRnnlm`` keeps the book's listing: the
embedding W at the front and its transpose W.T (a view) before the read-out bias, each with its
own gradient; the book's ``remove_duplicate`` sums them before the update, and code that updates
``params`` directly must do the same.
"""

import os
import zipfile

import numpy as np

from ..io import atomic_write
from ..layers._precision import check_matmul_precision, precision_layers
from ..layers.lm import (
    TimeAffine,
    TimeDropout,
    TimeEmbedding,
    TimeSoftmaxWithLoss,
    VariationalDropout,
)
from ..layers.stack import Stack, _child_seeds, _ratio
from .regression import CELLS

__all__ = ["LanguageModel", "Rnnlm", "BetterRnnlm", "INITS", "VARIATIONAL_KEYS"]

#: accepted ``init`` schemes of LanguageModel
INITS = ("uniform", "normal", "orthogonal")
#: the dropout sites a ``variational`` dict may name
VARIATIONAL_KEYS = ("embedding", "input", "hidden", "recurrent", "output")
_FLOATS = {"float32": np.float32, "float64": np.float64}
#: the Stack connections a LanguageModel builds (its params list has no highway gates)
CONNECTIONS = (None, "residual", "dense")


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _dtype_name(dtype):
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return name


class _WordDropout:
    """Drops whole word types: one keep/scale mask over the vocabulary per forward (batch), so
    every occurrence of a dropped word in the batch has a zero embedding (Gal & Ghahramani 2016,
    Merity et al. 2018's embedding dropout)."""

    def __init__(self, ratio, vocab_size, dtype, seed):
        self.ratio = ratio
        self.vocab_size = vocab_size
        self.dtype = dtype
        self.rng = np.random.default_rng(seed)
        self.train_flg = True
        self.rows = None  # the mask of each position, (N, T, 1), of the last forward
        self.vocab_mask = None

    def forward(self, idx, emb):
        if not (self.train_flg and self.ratio > 0):
            self.rows = None
            return emb
        keep = self.rng.random(self.vocab_size) >= self.ratio
        self.vocab_mask = np.multiply(keep, 1.0 / (1.0 - self.ratio), dtype=self.dtype)
        self.rows = self.vocab_mask[idx][..., None]
        return np.multiply(emb, self.rows, out=emb)  # the model's own buffer

    def backward(self, dout):
        # dout is the model's: a buffer or an array a layer returned to it
        return dout if self.rows is None else np.multiply(dout, self.rows, out=dout)


class LanguageModel:
    """A word-level recurrent language model.

    Embedding (V, E) -> [word-type dropout] -> [input dropout] -> ``Stack`` of recurrent layers
    -> [output dropout] -> [projection H -> E] -> affine read-out (H or E -> V) -> softmax
    cross-entropy (label -1 ignored).

    Parameters
    ----------
    vocab_size : int
        V, the number of word ids (inputs and targets in [0, V)).
    embed_size : int
        E, the embedding size.
    hidden_sizes : int or list of int
        The recurrent layers' hidden sizes, bottom first.
    cell : {"lstm", "gru", "rnn"}
        The recurrent cell of every layer.
    dropout : float
        Ordinary dropout (per element and step, as Zaremba et al. 2014) on the embeddings, between
        layers and on the last layer's output; training only.
    variational : None or dict
        Variational dropout instead: ratios for the sites ``embedding`` (whole word types, one
        mask over the vocabulary per batch), ``input`` (the embeddings, one mask per sequence),
        ``hidden`` (between layers, one mask per sequence), ``recurrent`` (h_{t-1} inside each
        layer, one (N, H) mask per sequence) and ``output`` (before the read-out); missing keys
        are 0.  Excludes ``dropout``.
    weight_drop : float
        DropConnect on every recurrent layer's Wh (AWD-LSTM's weight drop, Merity et al.
        2018): in training each forward masks Wh afresh (see ``Stack``); with either kind of
        dropout or none.
    connection : None, "residual" or "dense"
        How the recurrent layers are joined (see ``Stack``).
    tie_weights : bool
        Read out with the embedding's transpose (Press & Wolf 2017, Inan et al. 2017).  Needs the
        last hidden size to equal ``embed_size``, or ``projection=True``.
    projection : bool
        With tying, project the last hidden state to ``embed_size`` by an affine layer first.
    forget_bias : float
        Initial bias of the LSTM's forget gate (0 as in Zaremba et al. and the book).
    init : {"uniform", "normal", "orthogonal"}
        "uniform": every weight U(-init_scale, init_scale) (Zaremba et al.); "normal": the
        book's (embedding N(0, 0.01^2), other weights N(0, 1/fan_in)); "orthogonal": every gate
        block of Wh orthogonal, Wx N(0, 1/fan_in), embedding and read-out U(-init_scale,
        init_scale).  Biases start at 0.
    init_scale : float
        The range of the uniform draws.
    dtype : float32 or float64
        The parameters' and the computation's dtype.
    seed : int or None
        Seeds the initialisation and every dropout mask (None: fresh entropy).
    matmul_precision : {"highest", "medium"}
        The matrix products, the read-out's (and projection's) and the recurrent layers'
        (input projection, dxs, weight gradients, and each step's h_{t-1} Wh and its backward
        from 2 batch rows and 2 steps on): in ``dtype``, or ``"medium"`` (float32 only) with
        bfloat16 operands and float32 sums where the CPU has AVX512-BF16 (see ``TimeAffine``).

    Attributes
    ----------
    params, grads : list of numpy.ndarray
        Embedding, the stack's layers in order ([Wx, Wh, b] each), the projection's W and b,
        the read-out's W (untied only) and b.
    stack : Stack
        The recurrent layers.
    """

    #: list a tied matrix twice (W and W.T, book style) instead of once with summed gradients
    _book_tying = False

    def __init__(
        self,
        vocab_size,
        embed_size,
        hidden_sizes,
        cell="lstm",
        dropout=0.0,
        variational=None,
        connection=None,
        tie_weights=False,
        projection=False,
        forget_bias=0.0,
        init="uniform",
        init_scale=0.1,
        dtype=np.float32,
        seed=None,
        matmul_precision="highest",
        weight_drop=0.0,
    ):
        self._setup(
            vocab_size,
            embed_size,
            hidden_sizes,
            cell,
            dropout,
            variational,
            connection,
            tie_weights,
            projection,
            forget_bias,
            init,
            init_scale,
            dtype,
            seed,
            matmul_precision,
            weight_drop,
        )
        self._build(None)

    # ---- configuration ----------------------------------------------------------------------

    def _setup(
        self,
        vocab_size,
        embed_size,
        hidden_sizes,
        cell="lstm",
        dropout=0.0,
        variational=None,
        connection=None,
        tie_weights=False,
        projection=False,
        forget_bias=0.0,
        init="uniform",
        init_scale=0.1,
        dtype=np.float32,
        seed=None,
        matmul_precision="highest",
        weight_drop=0.0,
    ):
        self.vocab_size = _positive_int(vocab_size, "vocab_size")
        self.embed_size = _positive_int(embed_size, "embed_size")
        if isinstance(hidden_sizes, (int, np.integer)) and not isinstance(hidden_sizes, bool):
            hidden_sizes = [hidden_sizes]
        if not isinstance(hidden_sizes, (list, tuple)) or not hidden_sizes:
            raise ValueError(
                f"hidden_sizes must be a positive integer or a non-empty list of "
                f"them, got {hidden_sizes!r}"
            )
        self.hidden_sizes = [_positive_int(h, "hidden_sizes[]") for h in hidden_sizes]
        if not isinstance(cell, str) or cell.lower() not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.cell = cell.lower()
        self.dropout = _ratio(dropout, "dropout")
        if variational is not None:
            if not isinstance(variational, dict):
                raise TypeError(
                    f"variational must be None or a dict with keys from "
                    f"{VARIATIONAL_KEYS}, got {type(variational).__name__}"
                )
            unknown = sorted(set(variational) - set(VARIATIONAL_KEYS))
            if unknown:
                raise ValueError(
                    f"variational has unknown keys {unknown}; expected keys from {VARIATIONAL_KEYS}"
                )
            if self.dropout:
                raise ValueError(
                    "give either dropout (ordinary) or variational (a dict of ratios), not both"
                )
            variational = {
                k: _ratio(variational.get(k, 0.0), f"variational[{k!r}]") for k in VARIATIONAL_KEYS
            }
        self.variational = variational
        self.weight_drop = _ratio(weight_drop, "weight_drop")
        if connection not in CONNECTIONS:
            raise ValueError(f"connection must be one of {CONNECTIONS}, got {connection!r}")
        self.connection = connection
        self.tie_weights = bool(tie_weights)
        self.projection = bool(projection)
        H_last = self.hidden_sizes[-1]
        if self.projection and not self.tie_weights:
            raise ValueError(
                "projection=True is only for tie_weights=True (it maps the last "
                "hidden state to embed_size)"
            )
        if self.tie_weights and not self.projection and H_last != self.embed_size:
            raise ValueError(
                f"tie_weights needs the last hidden size ({H_last}) to equal "
                f"embed_size ({self.embed_size}); change one, or pass "
                "projection=True"
            )
        if connection == "residual":
            for k in range(1, len(self.hidden_sizes)):
                if self.hidden_sizes[k] != self.hidden_sizes[k - 1]:
                    raise ValueError(
                        f"connection='residual' needs equal hidden sizes of "
                        f"stacked layers, got {self.hidden_sizes}"
                    )
        self.forget_bias = float(forget_bias)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init
        if (
            isinstance(init_scale, bool)
            or not isinstance(init_scale, (int, float))
            or not init_scale > 0
        ):
            raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
        self.init_scale = float(init_scale)
        self.dtype = np.dtype(_FLOATS[_dtype_name(dtype)])
        _child_seeds(seed, 1)  # validates the seed
        self.seed = None if seed is None else int(seed)
        self._matmul_precision = check_matmul_precision(matmul_precision, self.dtype, "dtype")

    @property
    def matmul_precision(self):
        """The products' precision (see the class parameters); setting it sets every
        layer's, between calls."""
        return self._matmul_precision

    @matmul_precision.setter
    def matmul_precision(self, value):
        value = check_matmul_precision(value, self.dtype, "dtype")
        for layer in precision_layers(self):
            layer.matmul_precision = value
        self._matmul_precision = value

    def _lm_config(self):
        return {
            "vocab_size": self.vocab_size,
            "embed_size": self.embed_size,
            "hidden_sizes": list(self.hidden_sizes),
            "cell": self.cell,
            "dropout": self.dropout,
            "variational": None if self.variational is None else dict(self.variational),
            "connection": self.connection,
            "tie_weights": self.tie_weights,
            "projection": self.projection,
            "forget_bias": self.forget_bias,
            "init": self.init,
            "init_scale": self.init_scale,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "matmul_precision": self.matmul_precision,
            "weight_drop": self.weight_drop,
        }

    def get_config(self):
        """The constructor's arguments, JSON-serializable (the arrays are ``params``)."""
        return self._lm_config()

    @classmethod
    def from_config(cls, config, params):
        """Rebuild the model from ``get_config()``'s dict and a list of arrays in ``params``
        order (used as they are when they have the config's dtype; shapes checked)."""
        model = cls.__new__(cls)
        model._setup_from_config(dict(config))
        model._build(list(params))
        return model

    def _setup_from_config(self, config):
        self._setup(**config)

    # ---- parameters ---------------------------------------------------------------------------

    def _layer_input_sizes(self):
        E, Hs = self.embed_size, self.hidden_sizes
        if self.connection == "dense":
            return [E + sum(Hs[:k]) for k in range(len(Hs))]
        return [E] + Hs[:-1]

    def _param_shapes(self):
        """[(name, shape)] in ``params`` order."""
        V, E, Hs = self.vocab_size, self.embed_size, self.hidden_sizes
        G = CELLS[self.cell][1]
        shapes = [("embed_W", (V, E))]
        for k, (D, H) in enumerate(zip(self._layer_input_sizes(), Hs)):
            shapes += [(f"Wx{k}", (D, G * H)), (f"Wh{k}", (H, G * H)), (f"b{k}", (G * H,))]
        if self.projection:
            shapes += [("proj_W", (Hs[-1], E)), ("proj_b", (E,))]
        if not self.tie_weights:
            shapes.append(("affine_W", (Hs[-1], V)))
        elif self._book_tying:
            shapes.append(("affine_W (embed_W.T)", (E, V)))
        shapes.append(("affine_b", (V,)))
        return shapes

    def _initial_params(self, rng):
        """Fresh parameters in ``params`` order, drawn from rng in that order."""
        scale, init, dt = self.init_scale, self.init, self.dtype
        V, E, Hs = self.vocab_size, self.embed_size, self.hidden_sizes
        G = CELLS[self.cell][1]

        def uniform(shape):
            return rng.uniform(-scale, scale, shape)

        def fan_in(shape):
            return rng.standard_normal(shape) / np.sqrt(shape[0])

        def orthogonal_blocks(H):
            blocks = []
            for _ in range(G):
                q, r = np.linalg.qr(rng.standard_normal((H, H)))
                blocks.append(q * np.sign(np.diag(r)))
            return np.concatenate(blocks, axis=1)

        params = [rng.standard_normal((V, E)) / 100 if init == "normal" else uniform((V, E))]
        for D, H in zip(self._layer_input_sizes(), Hs):
            if init == "uniform":
                Wx, Wh = uniform((D, G * H)), uniform((H, G * H))
            elif init == "normal":
                Wx, Wh = fan_in((D, G * H)), fan_in((H, G * H))
            else:
                Wx, Wh = fan_in((D, G * H)), orthogonal_blocks(H)
            b = np.zeros(G * H)
            if self.cell == "lstm":
                b[:H] = self.forget_bias  # gate blocks f, g, i, o
            params += [Wx, Wh, b]
        read = fan_in if init == "normal" else uniform
        if self.projection:
            params += [read((Hs[-1], E)), np.zeros(E)]
        if not self.tie_weights:
            params.append(read((Hs[-1], V)))
        params.append(np.zeros(V))
        params = [np.ascontiguousarray(p, dtype=dt) for p in params]
        if self.tie_weights and self._book_tying:
            params.insert(-1, params[0].T)
        return params

    def _checked_params(self, params):
        shapes = self._param_shapes()
        if len(params) != len(shapes):
            raise ValueError(
                f"params must hold {len(shapes)} arrays "
                f"({', '.join(n for n, _ in shapes)}), got {len(params)}"
            )
        out = []
        for i, ((name, shape), p) in enumerate(zip(shapes, params)):
            if not isinstance(p, np.ndarray):
                raise TypeError(
                    f"params[{i}] ({name}) must be a numpy array, got {type(p).__name__}"
                )
            if p.shape != shape:
                raise ValueError(f"params[{i}] ({name}) must have shape {shape}, got {p.shape}")
            if p.dtype.kind != "f":
                raise TypeError(f"params[{i}] ({name}) must be a float array, got {p.dtype}")
            out.append(
                p
                if p.dtype == self.dtype and p.flags.c_contiguous
                else np.ascontiguousarray(p, dtype=self.dtype)
            )
        if self.tie_weights and self._book_tying:
            out[-2] = out[0].T  # the book's tied view, on the embedding itself
        return out

    # ---- assembly -------------------------------------------------------------------------------

    def _build(self, params):
        seeds = _child_seeds(self.seed, 5)
        if params is None:
            # the seed itself draws the weights (as the reference models do): same seed, same
            # weights as fastrnn.reference.models' Rnnlm and BetterRnnlm
            params = self._initial_params(np.random.default_rng(self.seed))
        else:
            params = self._checked_params(params)
        it = iter(params)
        embed_W = next(it)
        self.embedding = TimeEmbedding(embed_W)
        layer_cls = CELLS[self.cell][0]
        mp = self.matmul_precision
        layers = [
            layer_cls(next(it), next(it), next(it), stateful=True, matmul_precision=mp)
            for _ in self.hidden_sizes
        ]
        v = self.variational
        if v is None:
            hidden, recurrent, variational = self.dropout, 0.0, False
            drop_in = drop_out = self.dropout
            drop_cls = TimeDropout
        else:
            hidden, recurrent, variational = v["hidden"], v["recurrent"], True
            drop_in, drop_out = v["input"], v["output"]
            drop_cls = VariationalDropout
        self.word_dropout = (
            _WordDropout(v["embedding"], self.vocab_size, self.dtype, seeds[1])
            if v is not None and v["embedding"]
            else None
        )
        self.input_dropout = drop_cls(drop_in, seed=seeds[2]) if drop_in else None
        self.stack = Stack(
            layers,
            dropout=hidden,
            connection=self.connection,
            variational=variational,
            recurrent_dropout=recurrent,
            weight_drop=self.weight_drop,
            seed=seeds[3],
        )
        self.output_dropout = drop_cls(drop_out, seed=seeds[4]) if drop_out else None
        self.proj = TimeAffine(next(it), next(it), mp) if self.projection else None
        if self.tie_weights:
            affine_W = embed_W.T
            if self._book_tying:
                next(it)
        else:
            affine_W = next(it)
        self.affine = TimeAffine(affine_W, next(it), mp)
        self.loss_layer = TimeSoftmaxWithLoss(ignore_label=-1)
        self._dropouts = [
            d for d in (self.word_dropout, self.input_dropout, self.output_dropout) if d is not None
        ]
        self.params, self.grads = [embed_W], [self.embedding.grads[0]]
        self.params += self.stack.params
        self.grads += self.stack.grads
        if self.proj is not None:
            self.params += self.proj.params
            self.grads += self.proj.grads
        if self.tie_weights and not self._book_tying:
            self.params.append(self.affine.params[1])
            self.grads.append(self.affine.grads[1])
        else:
            self.params += self.affine.params
            self.grads += self.affine.grads
        self._train_flg = True
        self._bufs = None
        self._bufs_key = None

    # ---- the model interface --------------------------------------------------------------------

    @property
    def train_flg(self):
        """The mode of the last predict/forward (dropout active when True)."""
        return self._train_flg

    @train_flg.setter
    def train_flg(self, value):
        self._train_flg = bool(value)
        self.stack.train_flg = self._train_flg
        for d in self._dropouts:
            d.train_flg = self._train_flg

    def _word_ids(self, xs, name):
        xs = np.asarray(xs)
        if xs.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array of word ids, got dtype {xs.dtype}")
        if xs.ndim != 2:
            raise ValueError(f"{name} must have shape (N, T), got {xs.shape}")
        return xs

    def _buffers(self, N, T):
        """Activation-sized work arrays for (N, T), made by the first forward of that shape and
        reused by every later one (the layers write into them through ``out=``)."""
        key = (N, T)
        if self._bufs_key != key:
            E, H, V, dt = self.embed_size, self.hidden_sizes[-1], self.vocab_size, self.dtype
            R = E if self.proj is not None else H  # the read-out's input size
            self._bufs = {
                "emb": np.empty((N, T, E), dt),
                "in": np.empty((N, T, E), dt),
                "din": np.empty((N, T, E), dt),
                "out": np.empty((N, T, H), dt),
                "dout": np.empty((N, T, H), dt),
                "dread": np.empty((N, T, R), dt),
                "proj": np.empty((N, T, E), dt),
                "dproj": np.empty((N, T, H), dt),
                "scores": np.empty((N, T, V), dt),
            }
            self._bufs_key = key
        return self._bufs

    def _check_ids(self, xs):
        xs = self._word_ids(xs, "xs")
        if xs.size and (xs.min() < 0 or xs.max() >= self.vocab_size):
            raise ValueError(
                f"xs must hold word ids in [0, {self.vocab_size}), got values in "
                f"[{xs.min()}, {xs.max()}]"
            )
        return xs

    def _features(self, xs, train_flg):
        """The read-out's input for word ids xs (checked), in the model's buffers."""
        self.train_flg = train_flg
        bufs = self._buffers(*xs.shape)
        h = self.embedding.forward(xs, out=bufs["emb"])
        if self.word_dropout is not None:
            h = self.word_dropout.forward(xs, h)
        if self.input_dropout is not None:
            h = self.input_dropout.forward(h, out=bufs["in"])
        h = self.stack.forward(h)
        if self.output_dropout is not None:
            h = self.output_dropout.forward(h, out=bufs["out"])
        if self.proj is not None:
            h = self.proj.forward(h, out=bufs["proj"])
        return h

    def predict(self, xs, train_flg=False):
        """Scores (N, T, V) of the next word for word ids xs (N, T): a fresh array."""
        return self.affine.forward(self._features(self._check_ids(xs), train_flg))

    def forward(self, xs, ts, train_flg=True):
        """Mean cross-entropy (a float) of predicting ts (N, T) from xs (N, T); targets equal to
        -1 are ignored."""
        xs = self._check_ids(xs)
        ts = self._word_ids(ts, "ts")
        if ts.size and (ts.min() < -1 or ts.max() >= self.vocab_size):
            raise ValueError(
                f"ts must hold word ids in [0, {self.vocab_size}) or -1 (ignored), "
                f"got values in [{ts.min()}, {ts.max()}]"
            )
        if ts.shape != xs.shape:
            raise ValueError(f"ts must have the shape of xs {xs.shape}, got {ts.shape}")
        h = self._features(xs, train_flg)
        scores = self.affine.forward(h, out=self._bufs["scores"])
        # training: the loss layer turns the scores into their gradient in the same visit (one
        # exp per element, the scores read once: 2-4 % of a whole Rnnlm or 2x200 iteration);
        # evaluation only reads them
        self.loss_layer.inplace = bool(train_flg)
        return self.loss_layer.forward(scores, ts)

    def backward(self, dout=1):
        """Backpropagate the last forward's loss (times dout); fills ``grads`` in place."""
        if self._bufs is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        bufs = self._bufs
        # the scores become (or already are, after a training forward) their gradient in place
        d = self.loss_layer.backward(dout, out=bufs["scores"])
        d = self.affine.backward(d, out=bufs["dread"])
        if self.proj is not None:
            d = self.proj.backward(d, out=bufs["dproj"])
        if self.output_dropout is not None:
            d = self.output_dropout.backward(d, out=bufs["dout"])
        d = self.stack.backward(d)
        if self.input_dropout is not None:
            d = self.input_dropout.backward(d, out=bufs["din"])
        if self.word_dropout is not None:
            d = self.word_dropout.backward(d)
        self.embedding.backward(d)
        if self.tie_weights and not self._book_tying:
            # the shared matrix's gradient: its rows as embedding plus its transpose as read-out
            self.grads[0] += self.affine.grads[0].T

    def reset_state(self):
        """Forget the recurrent layers' carried state (start of a new text)."""
        self.stack.reset_state()

    # ---- parameters on disk -----------------------------------------------------------------

    def save_params(self, file_name=None):
        """Write ``params`` to an .npz file (default: ``<ClassName>.npz``), atomically: a
        temporary file in the same folder, renamed when complete."""
        if file_name is None:
            file_name = type(self).__name__ + ".npz"
        arrays = {f"p{i}": np.ascontiguousarray(p) for i, p in enumerate(self.params)}
        atomic_write(file_name, lambda f: np.savez(f, **arrays))

    def load_params(self, file_name=None):
        """Read parameters written by ``save_params`` into ``params`` in place (all checked
        first: count, shapes; converted to the model's dtype)."""
        if file_name is None:
            file_name = type(self).__name__ + ".npz"
        file_name = os.fspath(file_name)
        if not os.path.isfile(file_name):
            raise FileNotFoundError(f"{file_name}: no such file (parameters from save_params)")
        try:
            f = np.load(file_name, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):  # (a .npy file: one array)
                raise ValueError("one .npy array, expected the .npz of save_params")
            with f:
                n = len(f.files)
                if sorted(f.files) != sorted(f"p{i}" for i in range(n)):
                    raise ValueError(f"not written by save_params (keys {f.files})")
                loaded = [f[f"p{i}"] for i in range(n)]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{file_name}: unreadable parameters file ({e})") from None
        if n != len(self.params):
            raise ValueError(f"{file_name} holds {n} arrays, the model has {len(self.params)}")
        for i, (p, q) in enumerate(zip(self.params, loaded)):
            if p.shape != q.shape:
                raise ValueError(
                    f"{file_name}: array {i} has shape {q.shape}, the model's params[{i}] {p.shape}"
                )
            if q.dtype.kind != "f":
                raise TypeError(f"{file_name}: array {i} has dtype {q.dtype}, not float")
            if not np.isfinite(q).all():
                raise ValueError(f"{file_name}: array {i} holds NaN or Inf")
        for p, q in zip(self.params, loaded):
            p[...] = q


class Rnnlm(LanguageModel):
    """The book's ``Rnnlm`` (ch06/rnnlm.py): embedding, one stateful LSTM, affine, softmax.

    Same signature (plus ``seed`` and ``dtype``), same initialisation (embedding N(0, 0.01^2),
    Wx N(0, 1/D), Wh N(0, 1/H), affine W N(0, 1/H), zero biases; drawn from
    ``numpy.random.default_rng(seed)``, never NumPy's global state) and the same ``params`` list:
    [embed_W, lstm_Wx, lstm_Wh, lstm_b, affine_W, affine_b].
    """

    def __init__(
        self,
        vocab_size=10000,
        wordvec_size=100,
        hidden_size=100,
        seed=None,
        dtype=np.float32,
        matmul_precision="highest",
    ):
        self._setup_from_config(
            {
                "vocab_size": vocab_size,
                "wordvec_size": wordvec_size,
                "hidden_size": hidden_size,
                "seed": seed,
                "dtype": dtype,
                "matmul_precision": matmul_precision,
            }
        )
        self._build(None)

    def _setup_from_config(self, config):
        self._setup(
            config["vocab_size"],
            config["wordvec_size"],
            [config["hidden_size"]],
            init="normal",
            dtype=config.get("dtype", np.float32),
            seed=config.get("seed"),
            matmul_precision=config.get("matmul_precision", "highest"),
        )

    def get_config(self):
        return {
            "vocab_size": self.vocab_size,
            "wordvec_size": self.embed_size,
            "hidden_size": self.hidden_sizes[0],
            "seed": self.seed,
            "dtype": self.dtype.name,
            "matmul_precision": self.matmul_precision,
        }


class BetterRnnlm(LanguageModel):
    """The book's ``BetterRnnlm`` (ch06/better_rnnlm.py): two stateful LSTMs, dropout before,
    between and after them, and the read-out tied to the embedding.

    Same signature (plus ``seed`` and ``dtype``), initialisation and ``params`` list:
    [embed_W, Wx1, Wh1, b1, Wx2, Wh2, b2, embed_W.T, affine_b], where ``embed_W.T`` is a view of
    the embedding with its own gradient (D, V): the book's ``remove_duplicate`` finds the pair
    and adds the transposed gradient before the update, as it does for the book's model.
    """

    _book_tying = True

    def __init__(
        self,
        vocab_size=10000,
        wordvec_size=650,
        hidden_size=650,
        dropout_ratio=0.5,
        seed=None,
        dtype=np.float32,
        matmul_precision="highest",
    ):
        self._setup_from_config(
            {
                "vocab_size": vocab_size,
                "wordvec_size": wordvec_size,
                "hidden_size": hidden_size,
                "dropout_ratio": dropout_ratio,
                "seed": seed,
                "dtype": dtype,
                "matmul_precision": matmul_precision,
            }
        )
        self._build(None)

    def _setup_from_config(self, config):
        H = config["hidden_size"]
        self._setup(
            config["vocab_size"],
            config["wordvec_size"],
            [H, H],
            dropout=config.get("dropout_ratio", 0.5),
            tie_weights=True,
            init="normal",
            dtype=config.get("dtype", np.float32),
            seed=config.get("seed"),
            matmul_precision=config.get("matmul_precision", "highest"),
        )

    def get_config(self):
        return {
            "vocab_size": self.vocab_size,
            "wordvec_size": self.embed_size,
            "hidden_size": self.hidden_sizes[0],
            "dropout_ratio": self.dropout,
            "seed": self.seed,
            "dtype": self.dtype.name,
            "matmul_precision": self.matmul_precision,
        }
