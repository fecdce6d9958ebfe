"""Sequence classification: ``SequenceClassifier``, one label per (variable-length) sequence.

Word ids (N, T) -> ``TimeEmbedding`` (or dense inputs (N, T, D) as they are) -> a ``Stack`` of
recurrent layers, bidirectional or not, over each row's ``lengths`` -> a pooling head (last
state, mean or max over the valid steps) -> affine -> softmax cross-entropy.  A training loop::

    import numpy as np
    import fastrnn
    from fastrnn.models import SequenceClassifier
    from fastrnn.train import Adam

    model = SequenceClassifier(2, vocab_size=1000, embed_size=32, hidden_sizes=[64],
                               bidirectional=True, seed=0)
    opt = Adam(1e-3)
    for ids, labels, lengths in batches:    # ids (N, T), labels (N,), lengths (N,)
        loss = model.forward(ids, labels, lengths)
        model.backward()
        fastrnn.clip_grads(model.grads, 5.0)
        opt.update(model.params, model.grads)
    predicted = model.predict(ids, lengths).argmax(axis=1)
"""

import numpy as np

from ..io import register
from ..layers._cells import check_lengths
from ..layers.bidirectional import Bidirectional
from ..layers.lm import TimeEmbedding, TimeSoftmaxWithLoss
from ..layers.pooling import POOLINGS, make_pooling
from ..layers.stack import Stack
from .lm import _FLOATS, _dtype_name, _positive_int as _positive

__all__ = ["SequenceClassifier"]


@register
class SequenceClassifier:
    """Embedding (or dense input) -> ``Stack`` -> pooling -> affine -> softmax cross-entropy.

    Parameters
    ----------
    num_classes : int
        C, the number of labels (labels in [0, C)).
    vocab_size : int or None
        V: the inputs are word ids (N, T) in [0, V), embedded by a (V, embed_size) table.
        None: the inputs are dense (N, T, input_size).
    input_size : int or None
        D of dense inputs (with ``vocab_size=None``).
    embed_size : int
        The embedding size (with ``vocab_size``).
    hidden_sizes : int or list of int
        The recurrent layers' hidden sizes (per direction), bottom first.
    cell : {"lstm", "gru", "rnn"}
        The recurrent cell (GRUs in PyTorch's ``reset_after`` form).
    bidirectional : bool
        Make every layer a ``Bidirectional`` pair (``merge``).
    merge : {"concat", "sum"}
        How a bidirectional layer joins its directions.
    connection : None, "residual", "dense" or "highway"
        Between the recurrent layers (see ``Stack``).
    dropout : float
        Dropout between the recurrent layers, in training.
    pooling : {"last", "mean", "max"}
        The head (``fastrnn.layers.pooling``); "last" after a concatenating bidirectional layer
        takes the forward half at t = len-1 and the backward half at t = 0.
    dtype : float32 or float64
    seed : int or None
        Seeds the initial weights and the dropout masks.
    encoder : Stack or None
        Use this Stack instead of building one (then ``hidden_sizes``, ``cell``,
        ``bidirectional``, ``merge``, ``connection`` and ``dropout`` are ignored).

    Attributes
    ----------
    params, grads : list of numpy.ndarray
        [embedding W (with ``vocab_size``)] + the encoder's + [affine W (F, C), b (C,)].
    encoder : Stack
    pool : LastPool, MeanPool or MaxPool
    """

    def __init__(
        self,
        num_classes,
        vocab_size=None,
        input_size=None,
        embed_size=None,
        hidden_sizes=64,
        cell="lstm",
        bidirectional=True,
        merge="concat",
        connection=None,
        dropout=0.0,
        pooling="last",
        dtype=np.float32,
        seed=None,
        encoder=None,
    ):
        self.num_classes = _positive(num_classes, "num_classes")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.dtype = np.dtype(_FLOATS[_dtype_name(dtype)])
        if vocab_size is not None:
            self.vocab_size = _positive(vocab_size, "vocab_size")
            self.embed_size = _positive(embed_size, "embed_size")
            if input_size is not None and input_size != self.embed_size:
                raise ValueError("give input_size only for dense inputs (vocab_size=None)")
            self.input_size = self.embed_size
        else:
            if embed_size is not None:
                raise ValueError("embed_size needs vocab_size (word-id inputs)")
            self.vocab_size = self.embed_size = None
            self.input_size = _positive(input_size, "input_size")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.seed = seed
        rng = np.random.default_rng(seed)
        seeds = rng.integers(0, 2**63, 2)
        if encoder is None:
            encoder = Stack.create(
                cell,
                self.input_size,
                hidden_sizes,
                bidirectional=bidirectional,
                merge=merge,
                rng=rng,
                dtype=self.dtype,
                layer_kwargs={"reset_after": True} if cell == "gru" else None,
                connection=connection,
                dropout=dropout,
                seed=int(seeds[0]),
            )
        elif not isinstance(encoder, Stack):
            raise TypeError(f"encoder must be a fastrnn Stack, got {type(encoder).__name__}")
        if encoder.input_size != self.input_size:
            raise ValueError(
                f"the encoder takes inputs of size {encoder.input_size}, the model gives "
                f"{self.input_size}"
            )
        if encoder.dtype != self.dtype:
            raise TypeError(f"the encoder's dtype {encoder.dtype} is not the model's {self.dtype}")
        self.encoder = encoder
        last = encoder.layers[-1]
        split = (
            last.hidden_sizes[0]
            if pooling == "last" and isinstance(last, Bidirectional) and last.merge == "concat"
            else None
        )
        self.pool = make_pooling(pooling, split)
        F, C = encoder.output_size, self.num_classes
        self.embedding = None
        head = []
        if self.vocab_size is not None:
            E = rng.standard_normal((self.vocab_size, self.embed_size)) / np.sqrt(self.embed_size)
            self.embedding = TimeEmbedding(E.astype(self.dtype))
            head = [self.embedding]
        self.W = (rng.standard_normal((F, C)) / np.sqrt(F)).astype(self.dtype)
        self.b = np.zeros(C, self.dtype)
        self.loss_layer = TimeSoftmaxWithLoss()
        self.params = [p for part in head for p in part.params] + encoder.params + [self.W, self.b]
        self.grads = (
            [g for part in head for g in part.grads]
            + encoder.grads
            + [np.zeros_like(self.W), np.zeros_like(self.b)]
        )
        self._cache = None

    # ---- forward / backward ---------------------------------------------------------------------

    def _inputs(self, x, lengths):
        x = np.asarray(x)
        if self.vocab_size is not None:
            if x.ndim != 2:
                raise ValueError(f"x must hold word ids of shape (N, T), got shape {x.shape}")
            if x.dtype.kind not in "iu":
                raise TypeError(f"x must hold integer word ids, got dtype {x.dtype}")
            if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
                raise ValueError(
                    f"x must hold word ids in [0, {self.vocab_size}), got values from "
                    f"{x.min()} to {x.max()}"
                )
        elif x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must have shape (N, T, {self.input_size}), got {x.shape}")
        N, T = x.shape[:2]
        if N < 1 or T < 1:
            raise ValueError(f"x must hold at least one row and one step, got shape {x.shape}")
        return x, check_lengths(lengths, N, T)

    def _scores(self, x, lengths):
        h = self.embedding.forward(x) if self.embedding is not None else x
        h = self.encoder.forward(h, lengths)
        pooled = self.pool.forward(h, lengths)
        W, b = self.params[-2:]
        return pooled, pooled @ W + b

    @property
    def train_flg(self):
        """Training mode of the encoder's dropout (set by forward and predict)."""
        return self.encoder.train_flg

    def predict(self, x, lengths=None, train_flg=False):
        """Class scores (logits) (N, C) for inputs ``x`` (word ids (N, T) or (N, T, D)) of
        ``lengths`` (N,) (None: all T steps)."""
        x, lengths = self._inputs(x, lengths)
        self.encoder.train_flg = train_flg
        self._cache = None  # a predict is not differentiable: backward needs a forward
        return self._scores(x, lengths)[1]

    def forward(self, x, labels, lengths=None, train_flg=True):
        """Mean softmax cross-entropy of the scores against ``labels`` (N,) in [0, C)."""
        x, lengths = self._inputs(x, lengths)
        labels = np.asarray(labels)
        N = x.shape[0]
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.shape != (N,):
            raise ValueError(f"labels must have shape ({N},) (one per row), got {labels.shape}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), got values from {labels.min()} "
                f"to {labels.max()}"
            )
        self.encoder.train_flg = train_flg
        pooled, scores = self._scores(x, lengths)
        loss = self.loss_layer.forward(scores[:, None, :], labels[:, None])
        self._cache = pooled
        return loss

    def backward(self, dout=1):
        """Fill ``grads`` (in place) with the gradient of the last forward's loss times
        ``dout``."""
        if self._cache is None:
            raise RuntimeError(
                "SequenceClassifier.backward() called before forward(): there is no loss to "
                "differentiate"
            )
        pooled = self._cache
        dscores = self.loss_layer.backward(dout)[:, 0, :]
        dW, db = self.grads[-2:]
        np.matmul(pooled.T, dscores, out=dW)
        np.sum(dscores, axis=0, out=db)
        dh = self.pool.backward(dscores @ self.params[-2].T)
        dx = self.encoder.backward(dh)
        if self.embedding is not None:
            self.embedding.backward(dx)
        return None

    # ---- persistence ----------------------------------------------------------------------------

    def get_config(self):
        """The constructor's arguments (the encoder as its own config), JSON-serializable."""
        return {
            "num_classes": self.num_classes,
            "vocab_size": self.vocab_size,
            "input_size": None if self.vocab_size is not None else self.input_size,
            "embed_size": self.embed_size,
            "pooling": self.pooling,
            "dtype": self.dtype.name,
            "seed": None if self.seed is None else int(self.seed),
            "encoder": self.encoder.get_config(),
        }

    @classmethod
    def from_config(cls, config, params):
        """Rebuild from ``get_config()``'s dict and ``params`` (embedding W, the encoder's,
        affine W and b)."""
        if not isinstance(config, dict) or "encoder" not in config:
            raise ValueError("SequenceClassifier config must be a dict with an 'encoder'")
        params = list(params)
        head = 1 if config.get("vocab_size") is not None else 0
        if len(params) < head + 2:
            raise ValueError(f"SequenceClassifier params too few: {len(params)}")
        encoder = Stack.from_config(config["encoder"], params[head:-2])
        kwargs = {k: v for k, v in config.items() if k != "encoder"}
        # the sizes the config claims, checked against the arrays before the constructor draws
        # weights of those sizes (a damaged num_classes of 10**15 is an error, not MemoryError)
        C, V, E = (config.get(k) for k in ("num_classes", "vocab_size", "embed_size"))
        expect = [(len(params) - 2, (encoder.output_size, C)), (len(params) - 1, (C,))]
        if head:
            expect.append((0, (V, E)))
        for i, shape in expect:
            if np.shape(params[i]) != shape:
                raise ValueError(f"params[{i}] must have shape {shape}, got {np.shape(params[i])}")
        model = cls(encoder=encoder, **kwargs)
        for i, (mine, given) in enumerate(zip(model.params, params)):
            if given is mine:
                continue
            if not isinstance(given, np.ndarray) or given.shape != mine.shape:
                raise ValueError(f"params[{i}] must have shape {mine.shape}, got {np.shape(given)}")
        if head:
            model.embedding.params[0] = params[0]
            model.params[0] = params[0]
        model.W, model.b = params[-2], params[-1]
        model.params[-2:] = [model.W, model.b]
        return model
