"""Run a language model or sequence classifier trained with fastrnn where only NumPy is installed.

This file is self-contained: it imports NumPy and the standard library, nothing of fastrnn, so it
can be copied next to a model file and used on a machine that cannot install compiled packages.
``fastrnn.interop.export_numpy`` (``fastrnn lm export --numpy DIR``) writes it with the model and
its vocabulary.  It reads fastrnn's model files (``fastrnn.save``: ``.npz`` arrays plus a JSON
header, no pickle) of ``LanguageModel`` (LSTM, GRU or RNN cells; plain, residual or dense
stacking; tied weights, with or without a projection), the book's ``Rnnlm`` and ``BetterRnnlm``,
and ``SequenceClassifier`` (uni- or bidirectional layers over variable lengths, any stacking,
last / mean / max pooling), and computes what fastrnn's ``predict`` does at evaluation (dropout
off), in the file's dtype: equal to fastrnn's compiled kernels to rounding.

Python::

    import fastrnn_numpy as fn
    model = fn.load("model.npz")
    scores = model.predict(ids)                 # ids (N, T) -> next-word scores (N, T, V)
    ppl = fn.perplexity(model, ids_1d)          # batch 1, the state carried
    words = fn.generate(model, start_id, 30, seed=0)
    clf = fn.load("classifier.npz")
    logits = clf.predict(ids, lengths)          # (N, C)
    classes = fn.classify(clf, [["a", "fine", "movie"]], word_to_id)   # (N,) class ids

Command line::

    python fastrnn_numpy.py model.npz --vocab vocab.json --start the --length 30
    python fastrnn_numpy.py model.npz --vocab vocab.json --perplexity text.txt
    python fastrnn_numpy.py model.npz --vocab vocab.json --classifier classifier.json \\
        --classify sentences.txt      # a classifier: label<TAB>sentence per line
"""

import argparse
import json
import math
import numbers
import os
import sys
import zipfile

import numpy as np

__all__ = [
    "NumpyClassifier",
    "NumpyLM",
    "classify",
    "generate",
    "load",
    "next_word",
    "perplexity",
]

HEADER = "__fastrnn__"  # (fastrnn.io._HEADER: the JSON header member)
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
EOS, UNK = "<eos>", "<unk>"


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # (no overflow for large |x|)


def _lstm_step(a, c, H):
    """The gate blocks f, g, i, o of pre-activation a (N, 4H); returns (h, c)."""
    f, g = _sigmoid(a[:, :H]), np.tanh(a[:, H : 2 * H])
    i, o = _sigmoid(a[:, 2 * H : 3 * H]), _sigmoid(a[:, 3 * H :])
    c = f * c + g * i
    return o * np.tanh(c), c


class _Layer:
    """One recurrent layer: cell "lstm", "gru" (the reset gate before the product, or with
    `reset_after` PyTorch's form, b of shape (2, 3H)) or "rnn" (tanh or relu); `reverse` walks
    each row from its own last valid step back to 0.  Its state is carried from one call to the
    next when `carry` (a language model's layers)."""

    def __init__(self, Wx, Wh, b, cell, reverse=False, nonlinearity="tanh", reset_after=False):
        G = GATES.get(cell)
        if G is None or nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"a layer of cell {cell!r} / nonlinearity {nonlinearity!r}; expected a cell in "
                f"{sorted(GATES)} and tanh or relu"
            )
        H = Wh.shape[0] if Wh.ndim == 2 else -1
        b_shape = (2, G * H) if reset_after else (G * H,)
        if Wx.ndim != 2 or Wx.shape[1] != G * H or Wh.shape != (H, G * H) or b.shape != b_shape:
            raise ValueError(
                f"a {cell} layer's Wx {Wx.shape}, Wh {Wh.shape}, b {b.shape} do not fit "
                f"(expected (D, {G}H), (H, {G}H), {'(2, 3H)' if reset_after else f'({G}H,)'})"
            )
        self.Wx, self.Wh, self.b, self.cell = Wx, Wh, b, cell
        self.reverse, self.relu, self.reset_after = reverse, nonlinearity == "relu", reset_after
        self.H = Wh.shape[0]
        self.h = self.c = None

    def _step(self, a, h, c):
        H, Wh = self.H, self.Wh
        if self.cell == "lstm":
            return _lstm_step(a + h @ Wh, c, H)
        if self.cell == "gru":
            if self.reset_after:
                hh = h @ Wh + self.b[1]
                zr = _sigmoid(a[:, : 2 * H] + hh[:, : 2 * H])
                h_hat = np.tanh(a[:, 2 * H :] + zr[:, H:] * hh[:, 2 * H :])
            else:
                zr = _sigmoid(a[:, : 2 * H] + h @ Wh[:, : 2 * H])
                h_hat = np.tanh(a[:, 2 * H :] + (zr[:, H:] * h) @ Wh[:, 2 * H :])
            z = zr[:, :H]
            return (1 - z) * h + z * h_hat, c
        t = a + h @ Wh
        return (np.maximum(t, 0) if self.relu else np.tanh(t)), c

    def forward(self, xs, lengths=None, carry=False):
        """hs (N, T, H) for xs (N, T, D); zero past each row's length."""
        N, T, _ = xs.shape
        H = self.H
        if carry and self.h is not None:
            if self.h.shape[0] != N:  # (fastrnn's stateful layers refuse it the same way)
                raise ValueError(
                    f"batch size {N} does not match the carried state's {self.h.shape[0]}; "
                    "call reset_state() before changing the batch size"
                )
            h, c = self.h, self.c
        else:
            h, c = np.zeros((N, H), xs.dtype), np.zeros((N, H), xs.dtype)
        b = self.b[0] if self.reset_after else self.b
        A = xs @ self.Wx + b  # the input's part of every step at once
        hs = np.zeros((N, T, H), xs.dtype)
        for t in range(T - 1, -1, -1) if self.reverse else range(T):
            h_new, c_new = self._step(A[:, t], h, c)
            if lengths is None:
                h, c = h_new, c_new
            else:  # rows past their length keep their state (zero, walking in reverse)
                live = (t < lengths)[:, None]
                h, c = np.where(live, h_new, h), np.where(live, c_new, c)
                h_new = np.where(live, h_new, 0)
            hs[:, t] = h_new
        if carry:
            self.h, self.c = h, c
        return hs


class _Bidirectional:
    def __init__(self, forward_layer, backward_layer, merge):
        self.layers, self.merge = (forward_layer, backward_layer), merge
        self.H = forward_layer.H + (backward_layer.H if merge == "concat" else 0)

    def forward(self, xs, lengths=None, carry=False):
        hf, hb = (layer.forward(xs, lengths) for layer in self.layers)
        return np.concatenate([hf, hb], axis=2) if self.merge == "concat" else hf + hb


def _stack_forward(layers, connection, highway, xs, lengths=None, carry=False):
    """A stack's output for xs: layers joined by `connection` (None, "residual", "dense" -- each
    layer reads the input and every earlier output -- or "highway", gates [Wt, bt] per join)."""
    h = layers[0].forward(xs, lengths, carry)
    seen = [xs, h]
    for k, layer in enumerate(layers[1:], 1):
        if connection == "dense":
            h = layer.forward(np.concatenate(seen, axis=2), lengths, carry)
            seen.append(h)
        elif connection == "residual":
            h = layer.forward(h, lengths, carry) + h
        elif connection == "highway":
            Wt, bt = highway[2 * (k - 1)], highway[2 * k - 1]
            g = _sigmoid(h @ Wt + bt)
            h = g * layer.forward(h, lengths, carry) + (1 - g) * h
        else:
            h = layer.forward(h, lengths, carry)
    return h


class NumpyLM:
    """A fastrnn language model at evaluation: ``predict(ids)`` gives the next-word scores; the
    recurrent state is carried across calls until ``reset_state()`` (as fastrnn's stateful
    layers do)."""

    def __init__(self, embed_W, layers, connection, proj, out_W, out_b):
        self.embed_W, self.layers, self.connection = embed_W, layers, connection
        self.proj, self.out_W, self.out_b = proj, out_W, out_b
        self.vocab_size = embed_W.shape[0]
        self.dtype = embed_W.dtype

    def reset_state(self):
        for layer in self.layers:
            layer.h = layer.c = None

    def predict(self, ids):
        """Scores (N, T, V) of the next word after each of the word ids (N, T)."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be a 2-D integer array, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]"
            )
        h = _stack_forward(self.layers, self.connection, (), self.embed_W[ids], carry=True)
        if self.proj is not None:
            h = h @ self.proj[0] + self.proj[1]
        return h @ self.out_W + self.out_b


class NumpyClassifier:
    """A fastrnn ``SequenceClassifier`` at evaluation: ``predict(x, lengths)`` gives the class
    scores (N, C) of word ids (N, T) (or dense inputs (N, T, D)) whose rows hold `lengths`
    valid steps (None: all T)."""

    def __init__(self, embed_W, layers, connection, highway, pooling, split, W, b):
        self.embed_W, self.layers, self.connection = embed_W, layers, connection
        self.highway, self.pooling, self.split, self.W, self.b = highway, pooling, split, W, b
        self.num_classes = W.shape[1]

    def predict(self, x, lengths=None):
        x = np.asarray(x)
        if self.embed_W is not None:
            V = self.embed_W.shape[0]
            if x.ndim != 2 or x.dtype.kind not in "iu":
                raise ValueError(f"x must be word ids (N, T), got {x.dtype} {x.shape}")
            if x.size and (x.min() < 0 or x.max() >= V):
                raise ValueError(f"x must hold word ids in [0, {V}), got [{x.min()}, {x.max()}]")
            x = self.embed_W[x]
        elif x.ndim != 3:
            raise ValueError(f"x must be (N, T, D), got shape {x.shape}")
        N, T = x.shape[:2]
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (N,) or lengths.dtype.kind not in "iu":
                raise ValueError(
                    f"lengths must be {N} integers, got {lengths.dtype} {lengths.shape}"
                )
            if lengths.min() < 1 or lengths.max() > T:
                raise ValueError(
                    f"lengths must lie in [1, {T}], got [{lengths.min()}, {lengths.max()}]"
                )
        hs = _stack_forward(self.layers, self.connection, self.highway, x, lengths)
        n = np.full(N, T) if lengths is None else lengths
        if self.pooling == "last":
            pooled = hs[np.arange(N), n - 1]
            if self.split is not None:  # the backward half of a bidirectional layer: t = 0
                pooled[:, self.split :] = hs[:, 0, self.split :]
        else:
            valid = (np.arange(T)[None, :] < n[:, None])[:, :, None]
            if self.pooling == "mean":
                pooled = (hs * valid).sum(axis=1) / n[:, None].astype(hs.dtype)
            else:
                pooled = np.where(valid, hs, -np.inf).max(axis=1)
        return pooled @ self.W + self.b


def _layer(entry, arrays):
    options = {k: entry[k] for k in ("reverse", "nonlinearity", "reset_after") if k in entry}
    return _Layer(*arrays, entry["cell"], **options)


def _classifier(cfg, arrays):
    enc = cfg["encoder"]
    if enc.get("connection") not in (None, "residual", "dense", "highway"):
        raise ValueError(f"connection {enc.get('connection')!r} unknown")
    if cfg["pooling"] not in ("last", "mean", "max"):
        raise ValueError(f"pooling {cfg['pooling']!r} unknown")
    embed_W = arrays.pop(0) if cfg.get("vocab_size") is not None else None
    if len(arrays) < 5:  # (a layer's three and the affine head's two at least)
        raise ValueError(f"{len(arrays)} arrays do not fit a SequenceClassifier")
    W, b = arrays[-2:]
    arrays = arrays[:-2]
    layers = []
    for entry in enc["layers"]:
        if "bidirectional" in entry:
            bi = entry["bidirectional"]
            pair = [
                _layer(bi[k], arrays[3 * i : 3 * i + 3])
                for i, k in enumerate(("forward", "backward"))
            ]
            layers.append(_Bidirectional(*pair, bi["merge"]))
            arrays = arrays[6:]
        else:
            layers.append(_layer(entry, arrays[:3]))
            arrays = arrays[3:]
    last = layers[-1]
    split = None
    if cfg["pooling"] == "last" and isinstance(last, _Bidirectional) and last.merge == "concat":
        split = last.layers[0].H
    return NumpyClassifier(
        embed_W, layers, enc.get("connection"), arrays, cfg["pooling"], split, W, b
    )


def _read(path):
    """(class name, config, [arrays]) of a fastrnn model file."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, ValueError) and "pickle" in str(e):  # (np.load's guess for the rest)
            e = "neither a .npz nor a .npy file"
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not a fastrnn model file (.npz)")
    with npz:
        if HEADER not in npz.files:
            raise ValueError(f"{path}: not a fastrnn model file (no {HEADER!r})")
        try:
            header = json.loads(npz[HEADER].tobytes().decode("utf-8"))
            name, cfg, specs, arrays = header["class"], header["config"], header["arrays"], []
            if not (isinstance(name, str) and isinstance(cfg, dict) and isinstance(specs, list)):
                raise TypeError("its header's class, config or arrays has the wrong type")
            for spec in specs:
                if "transpose_of" in spec:
                    arrays.append(arrays[spec["transpose_of"]].T)
                else:
                    a = npz[spec["name"]]
                    if a.dtype not in (np.float32, np.float64):
                        raise ValueError(f"array {spec['name']} is {a.dtype}, not float32/64")
                    if not np.isfinite(a).all():
                        raise ValueError(f"array {spec['name']} holds NaN or Inf")
                    arrays.append(a)
                if list(arrays[-1].shape) != spec["shape"]:
                    raise ValueError(f"array {spec['name']} has shape {arrays[-1].shape}")
            return name, cfg, arrays
        except (
            KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError,
            OSError, EOFError, zipfile.BadZipFile,  # (the last three: a member cut short)
        ) as e:  # fmt: skip
            raise ValueError(f"{path}: damaged fastrnn model file ({e})") from None


def _language_model(name, cfg, arrays):
    if name in ("Rnnlm", "BetterRnnlm"):  # the book's: LSTMs of one size, their own tying
        layers = 1 if name == "Rnnlm" else 2
        cfg = {"cell": "lstm", "hidden_sizes": [cfg["hidden_size"]] * layers, "tie_weights": False}
    cell, n = cfg["cell"], len(cfg["hidden_sizes"])
    if cell not in GATES or cfg.get("connection") not in (None, "residual", "dense"):
        raise ValueError(f"cell {cell!r} / connection {cfg.get('connection')!r} unknown")
    if len(arrays) < 1 + 3 * n:
        raise ValueError(f"{len(arrays)} arrays do not fit a {name} of {n} layers")
    embed_W, rest = arrays[0], arrays[1:]
    layers = [_Layer(*rest[3 * k : 3 * k + 3], cell) for k in range(n)]
    rest = rest[3 * n :]
    proj = None
    if cfg.get("projection"):
        proj, rest = (rest[0], rest[1]), rest[2:]
    if len(rest) == 2:  # an output matrix of its own (or the book's transposed embedding)
        out_W, out_b = rest
    elif len(rest) == 1 and cfg["tie_weights"]:
        out_W, out_b = embed_W.T, rest[0]
    else:
        raise ValueError(f"{len(arrays)} arrays do not fit a {name} of {n} layers")
    return NumpyLM(embed_W, layers, cfg.get("connection"), proj, out_W, out_b)


def _probe(model):
    """One step through `model` (a ValueError if its arrays do not fit together)."""
    if isinstance(model, NumpyLM):
        if model.embed_W.ndim != 2:
            raise ValueError(f"an embedding of shape {model.embed_W.shape}")
        V = model.vocab_size
        scores = model.predict(np.zeros((1, 1), np.int64))
        model.reset_state()
        if scores.shape != (1, 1, V):
            raise ValueError(f"{scores.shape[-1]} scores for a vocabulary of {V} words")
        return
    first = model.layers[0]
    first = first.layers[0] if isinstance(first, _Bidirectional) else first
    if model.embed_W is not None and model.embed_W.ndim != 2:
        raise ValueError(f"an embedding of shape {model.embed_W.shape}")
    x = (
        np.zeros((1, 1), np.int64)
        if model.embed_W is not None
        else np.zeros((1, 1, first.Wx.shape[0]), first.Wx.dtype)
    )
    scores = model.predict(x)
    if scores.shape != (1, model.num_classes):
        raise ValueError(f"scores of shape {scores.shape} for {model.num_classes} classes")


def load(path):
    """The model in the fastrnn model file `path`: a :class:`NumpyLM` or a
    :class:`NumpyClassifier`.  A file that is not one, or is damaged (arrays missing, of the
    wrong shapes or dtypes, holding NaN or Inf) is a ValueError naming `path`."""
    name, cfg, arrays = _read(path)
    if name not in ("LanguageModel", "Rnnlm", "BetterRnnlm", "SequenceClassifier"):
        raise ValueError(
            f"{path}: a {name}; this runtime runs LanguageModel, Rnnlm, BetterRnnlm, "
            "SequenceClassifier"
        )
    try:
        if name == "SequenceClassifier":
            model = _classifier(cfg, list(arrays))
        else:
            model = _language_model(name, cfg, list(arrays))
        try:
            _probe(model)
        except (ValueError, IndexError) as e:
            raise ValueError(f"its arrays do not fit together ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: damaged {name} file ({e!r})") from None
    return model


def _log_softmax(scores):
    m = scores.max(axis=-1, keepdims=True)
    s = scores - m
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def perplexity(model, ids, window=512):
    """Perplexity of the 1-D word ids at batch 1, the state carried across windows of `window`
    words (the same number for any window), as ``fastrnn lm eval`` measures it."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) < 2:
        raise ValueError(f"ids must be a 1-D array of at least 2 word ids, got shape {ids.shape}")
    model.reset_state()
    total = 0.0
    for i in range(0, len(ids) - 1, window):
        j = min(i + window, len(ids) - 1)
        logp = _log_softmax(model.predict(ids[None, i:j]).astype(np.float64))[0]
        total -= logp[np.arange(j - i), ids[i + 1 : j + 1]].sum()
    model.reset_state()
    return math.exp(min(total / (len(ids) - 1), 700.0))


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_real(x):
    return isinstance(x, (numbers.Real, np.floating, np.integer)) and not isinstance(
        x, (bool, np.bool_)
    )


def _check_sampling(temperature, greedy, top_k, top_p):
    """The sampling options as ``fastrnn lm generate`` takes them: ValueError naming the one that
    is not (a temperature > 0 and finite unless `greedy`, top_k >= 1, 0 < top_p <= 1)."""
    if not greedy and not (
        _is_real(temperature) and temperature > 0 and math.isfinite(temperature)
    ):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not (_is_real(top_p) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def _check_ids(name, ids, V):
    """`ids` (an iterable of word ids) as an int64 array, each in [0, V) (V None: >= 0)."""
    try:
        values = list(ids)
    except TypeError:
        raise ValueError(f"{name} must be an iterable of word ids, got {ids!r}") from None
    bad = [i for i in values if not _is_int(i)]
    if bad:
        raise ValueError(f"{name} must be integer word ids, got {bad[0]!r}")
    arr = np.array(values, dtype=np.int64)
    if arr.size and (arr.min() < 0 or (V is not None and arr.max() >= V)):
        bound = f"[0, {V})" if V is not None else ">= 0"
        worst = arr.min() if arr.min() < 0 else arr.max()
        raise ValueError(f"{name} must be word ids in {bound}, got {worst}")
    return arr


def next_word(scores, rng, temperature=1.0, greedy=False, skip=None, top_k=None, top_p=None):
    """The word picked from one step's float64 `scores` (V,): the most likely (`greedy`) or a
    draw from softmax(scores / temperature) with `rng`, restricted to the `top_k` most likely
    words and / or to the fewest most likely words whose probability reaches `top_p` (nucleus
    sampling); ids in the int array `skip` never.  (fastrnn.train.generate picks with this
    too: the same draws in both.)  Bad options are a ValueError naming them (temperature > 0
    and finite, top_k >= 1, 0 < top_p <= 1, skip ids in [0, V))."""
    if not isinstance(scores, np.ndarray) or scores.ndim != 1 or scores.dtype.kind != "f":
        raise ValueError(
            "scores must be a 1-D float array, got "
            f"{getattr(scores, 'dtype', type(scores).__name__)} {np.shape(scores)}"
        )
    if scores.size == 0:
        raise ValueError("scores must hold at least one word's score")
    _check_sampling(temperature, greedy, top_k, top_p)
    if not greedy and not callable(getattr(rng, "random", None)):
        raise ValueError(f"rng must be a numpy random Generator, got {type(rng).__name__}")
    if skip is not None:
        skip = _check_ids("skip", np.asarray(skip).ravel().tolist(), scores.size)
        if np.unique(skip).size >= scores.size:
            raise ValueError(f"skip leaves no word to pick (all {scores.size} word ids skipped)")
        if skip.size:
            scores = scores.copy()  # (the caller's scores stay as they are)
    return _pick(scores, rng, temperature, greedy, skip, top_k, top_p)


def _pick(scores, rng, temperature, greedy, skip, top_k, top_p):
    """next_word, its options already checked (the skipped ids' `scores` set to -inf)."""
    if skip is not None and skip.size:
        scores[skip] = -np.inf
    if greedy:
        return int(np.argmax(scores))
    with np.errstate(over="ignore", invalid="ignore"):  # (reported below, as an error)
        z = scores / temperature
        p = np.exp(z - z.max())
    if top_k is not None and top_k < p.size:
        p[z < np.partition(z, -top_k)[-top_k]] = 0.0  # (ties with the k-th are kept)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        mass = np.cumsum(p[order])
        keep = int(np.searchsorted(mass, top_p * mass[-1])) + 1  # the word that reaches it too
        p[order[keep:]] = 0.0
    # rng.choice(V, p=p/p.sum())'s draw -- the same cumulative sums, the same uniform number, the
    # same index -- without its checks of p, which took half of a small model's generation step
    cdf = np.cumsum(p, out=p)
    if not (np.isfinite(cdf[-1]) and cdf[-1] > 0):
        raise ValueError(
            f"no word can be sampled: softmax(scores / {temperature}) is not finite (a "
            "temperature too small for these scores?)"
        )
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))


def generate(
    model,
    start_id,
    length,
    temperature=1.0,
    greedy=False,
    seed=None,
    skip_ids=(),
    top_k=None,
    top_p=None,
):
    """`length` word ids after `start_id`, one at a time (:func:`next_word`, with
    ``np.random.default_rng(seed)``), never one of `skip_ids`.  Bad arguments are a ValueError
    naming them, as ``fastrnn lm generate`` has them: length >= 0, temperature > 0 and finite
    (unless `greedy`), top_k >= 1, 0 < top_p <= 1, start_id and skip_ids word ids in [0, V),
    seed None or a non-negative integer."""
    if not (_is_int(length) and length >= 0):
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    _check_sampling(temperature, greedy, top_k, top_p)
    V = getattr(model, "vocab_size", None)
    if not (_is_int(start_id) and start_id >= 0 and (V is None or start_id < V)):
        bound = f"in [0, {V})" if V is not None else ">= 0"
        raise ValueError(f"start_id must be a word id {bound}, got {start_id!r}")
    skip = _check_ids("skip_ids", skip_ids, V)
    if V is not None and np.unique(skip).size >= V:
        raise ValueError(f"skip_ids leave no word to generate (all {V} word ids skipped)")
    try:  # (what default_rng takes: an int >= 0, a sequence of them, a SeedSequence, ...)
        if isinstance(seed, (bool, np.bool_, float, np.floating, str, bytes)):
            raise TypeError
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}") from None
    model.reset_state()
    out, word = [], int(start_id)
    for _ in range(length):
        scores = model.predict(np.array([[word]]))[0, 0].astype(np.float64)
        word = _pick(scores, rng, temperature, greedy, skip, top_k, top_p)
        out.append(word)
    model.reset_state()
    return out


def _words(path):
    with open(path, encoding="utf-8") as f:
        return [w for line in f for w in (*line.split(), EOS)]


def _sentences(path):
    """[[words]] of a file of one sentence per line ("-": standard input), blank lines skipped."""
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    try:
        return [line.split() for line in f if line.strip()]
    finally:
        if f is not sys.stdin:
            f.close()


def classify(model, sentences, index, max_len=None, batch_size=256):
    """The class of each sentence ([words]) by a :class:`NumpyClassifier` whose vocabulary
    `index` maps words to ids (0 pads, words outside it read as ``<unk>``): (N,) ids."""
    unk = index[UNK]
    rows = [[index.get(w, unk) for w in ws[:max_len]] for ws in sentences]
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        lengths = np.array([len(r) for r in batch])
        ids = np.zeros((len(batch), lengths.max()), np.int64)
        for i, r in enumerate(batch):
            ids[i, : len(r)] = r
        out.append(model.predict(ids, lengths).argmax(axis=1))
    return np.concatenate(out)


def _run_classifier(model, index, args):
    path = args.classifier or os.path.join(os.path.dirname(args.model), "classifier.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        labels, max_len = cfg["labels"], cfg.get("max_len")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        sys.exit(f"{path}: not a readable classifier.json with 'labels' ({e}; pass --classifier)")
    if not (isinstance(labels, list) and all(isinstance(w, str) for w in labels)):
        sys.exit(f"{path}: 'labels' must be a list of label names, got {labels!r}")
    if max_len is not None and not (_is_int(max_len) and max_len >= 1):
        sys.exit(f"{path}: 'max_len' must be a positive integer or null, got {max_len!r}")
    if len(labels) != model.num_classes or UNK not in index:
        sys.exit(f"{path}: {len(labels)} labels for {model.num_classes} classes, or no {UNK}")
    if not args.classify:
        sys.exit(
            f"{args.model} holds a sequence classifier: give --classify FILE (sentences, one per "
            "line; - for stdin)"
        )
    try:
        sentences = _sentences(args.classify)
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f"{args.classify}: {e}")
    if not sentences:
        sys.exit(f"{args.classify}: holds no sentences")
    for words, c in zip(sentences, classify(model, sentences, index, max_len)):
        print(f"{labels[c]}\t{' '.join(words)}")
    return 0


def _number(kind, low, high=math.inf, low_open=True, what=None):
    """An argparse type: a finite number of `kind` in (low, high] (or [low, high] unless
    `low_open`); argparse's usage error naming the flag otherwise."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and value <= high
        ok = ok and (value > low if low_open else value >= low)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


# the language model's options: (flag, attribute, default when not given)
_LM_OPTIONS = (
    ("--start", "start", "the"),
    ("--length", "length", 30),
    ("--temperature", "temperature", 1.0),
    ("--greedy", "greedy", False),
    ("--top-k", "top_k", None),
    ("--top-p", "top_p", None),
    ("--seed", "seed", 0),
    ("--perplexity", "perplexity", None),
)


def _parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a fastrnn model file (.npz)")
    ap.add_argument("--vocab", required=True, help="its vocab.json")
    lm = ap.add_argument_group("a language model")
    lm.add_argument("--start", help="first word of the generated text (default: the)")
    lm.add_argument(
        "--length",
        type=_number(int, 0, low_open=False, what="an integer >= 0"),
        help="words to generate (default: 30)",
    )
    lm.add_argument(
        "--temperature",
        type=_number(float, 0, what="a positive number"),
        help="sample from softmax(scores / X) (default: 1.0)",
    )
    lm.add_argument("--greedy", action="store_true", default=None, help="the most likely word")
    lm.add_argument(
        "--top-k",
        type=_number(int, 0, what="a positive integer"),
        help="sample among the K most likely words only",
    )
    lm.add_argument(
        "--top-p",
        type=_number(float, 0, 1, what="a number in (0, 1]"),
        help="sample among the most likely words of mass P",
    )
    lm.add_argument(
        "--seed",
        type=_number(int, 0, low_open=False, what="an integer >= 0"),
        help="sampling seed (default: 0)",
    )
    lm.add_argument("--perplexity", metavar="TEXT", help="print the perplexity of a text file")
    clf = ap.add_argument_group("a sequence classifier")
    clf.add_argument("--classify", metavar="FILE", help="label each line of FILE (- for stdin)")
    clf.add_argument(
        "--classifier", metavar="JSON", help="its classifier.json (default: beside the model)"
    )
    return ap


def _read_vocab(path):
    try:
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
    except (OSError, ValueError) as e:  # (UnicodeDecodeError and JSONDecodeError: ValueErrors)
        sys.exit(f"--vocab {path}: not a readable JSON file ({e})")
    if not (isinstance(vocab, list) and all(isinstance(w, str) for w in vocab)):
        sys.exit(f"--vocab {path}: expected a JSON list of words (id order)")
    return vocab


def main(argv=None):
    ap = _parser()
    args = ap.parse_args(argv)
    if args.greedy and (args.temperature, args.top_k, args.top_p) != (None, None, None):
        ap.error("--greedy takes the most likely word: drop --temperature / --top-k / --top-p")
    try:
        model = load(args.model)
    except ValueError as e:
        sys.exit(str(e))
    vocab = _read_vocab(args.vocab)
    index = {w: i for i, w in enumerate(vocab)}
    if isinstance(model, NumpyClassifier):
        given = [flag for flag, key, _ in _LM_OPTIONS if getattr(args, key) is not None]
        if given:
            sys.exit(
                f"{given[0]}: {args.model} holds a sequence classifier, not a language model "
                "(give --classify FILE)"
            )
        if model.embed_W is None or len(vocab) != model.embed_W.shape[0]:
            sys.exit(f"{args.vocab}: {len(vocab)} words do not fit the classifier's inputs")
        return _run_classifier(model, index, args)
    for flag in ("--classify", "--classifier"):
        if getattr(args, flag[2:]) is not None:
            sys.exit(
                f"{flag}: {args.model} holds a language model, not a sequence classifier "
                "(it generates text or measures --perplexity)"
            )
    for _, key, default in _LM_OPTIONS:
        if getattr(args, key) is None:
            setattr(args, key, default)
    if len(vocab) != model.vocab_size:
        sys.exit(f"{args.vocab}: {len(vocab)} words, the model has {model.vocab_size}")
    if args.perplexity:
        unk = index.get(UNK)
        try:
            words = _words(args.perplexity)
        except (OSError, UnicodeDecodeError) as e:
            sys.exit(f"--perplexity {args.perplexity}: not a readable text file ({e})")
        try:
            ids = np.array([index[w] if unk is None else index.get(w, unk) for w in words])
        except KeyError as e:
            sys.exit(f"{args.perplexity}: word {e.args[0]!r} is not in the vocabulary")
        if len(ids) < 2:
            sys.exit(f"--perplexity {args.perplexity}: holds no words to predict")
        print(f"ppl {perplexity(model, ids):.2f} ({len(ids) - 1} predictions)")
        return 0
    if args.start not in index:
        sys.exit(f"--start {args.start!r} is not in the vocabulary")
    skip = [index[UNK]] if UNK in index else []
    if len(set(skip)) >= len(vocab):
        sys.exit(f"--vocab {args.vocab}: holds no word to generate but {UNK}")
    ids = generate(
        model,
        index[args.start],
        args.length,
        args.temperature,
        args.greedy,
        args.seed,
        skip,
        args.top_k,
        args.top_p,
    )
    text = " ".join([args.start] + [vocab[i] for i in ids])
    print(text.replace(f" {EOS} ", "\n").replace(EOS, "\n").rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
