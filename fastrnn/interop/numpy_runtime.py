"""Run a language model trained with fastrnn where only NumPy is installed.

This file is self-contained: it imports NumPy and the standard library, nothing of fastrnn, so it
can be copied next to a model file and used on a machine that cannot install compiled packages.
``fastrnn.interop.export_numpy`` (``fastrnn lm export --numpy DIR``) writes it with the model and
its vocabulary.  It reads fastrnn's model files (``fastrnn.save``: ``.npz`` arrays plus a JSON
header, no pickle) of ``LanguageModel`` (LSTM, GRU or RNN cells; plain, residual or dense
stacking; tied weights, with or without a projection) and the book's ``Rnnlm`` and
``BetterRnnlm``, and computes what fastrnn's ``predict`` does at evaluation (dropout off), in the
file's dtype: equal to fastrnn's compiled kernels to rounding.

Python::

    import fastrnn_numpy as fn
    model = fn.load("model.npz")
    scores = model.predict(ids)                 # ids (N, T) -> next-word scores (N, T, V)
    ppl = fn.perplexity(model, ids_1d)          # batch 1, the state carried
    words = fn.generate(model, start_id, 30, seed=0)

Command line::

    python fastrnn_numpy.py model.npz --vocab vocab.json --start the --length 30
    python fastrnn_numpy.py model.npz --vocab vocab.json --perplexity text.txt
"""

import argparse
import json
import math
import sys
import zipfile

import numpy as np

__all__ = ["NumpyLM", "generate", "load", "next_word", "perplexity"]

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
    """One recurrent layer (cell "lstm", "gru" or "rnn"; GRU as fastrnn's TimeGRU with the reset
    gate before the product, RNN with tanh), its state carried from one call to the next."""

    def __init__(self, cell, Wx, Wh, b):
        self.cell, self.Wx, self.Wh, self.b = cell, Wx, Wh, b
        self.H = Wh.shape[0]
        self.h = self.c = None

    def forward(self, xs):
        N, T, _ = xs.shape
        H, Wh = self.H, self.Wh
        if self.h is None or self.h.shape[0] != N:
            self.h = np.zeros((N, H), xs.dtype)
            self.c = np.zeros((N, H), xs.dtype)
        h, c = self.h, self.c
        A = xs @ self.Wx + self.b  # the input's part of every step at once
        hs = np.empty((N, T, H), xs.dtype)
        for t in range(T):
            a = A[:, t]
            if self.cell == "lstm":
                h, c = _lstm_step(a + h @ Wh, c, H)
            elif self.cell == "gru":
                zr = _sigmoid(a[:, : 2 * H] + h @ Wh[:, : 2 * H])
                z, r = zr[:, :H], zr[:, H:]
                h_hat = np.tanh(a[:, 2 * H :] + (r * h) @ Wh[:, 2 * H :])
                h = (1 - z) * h + z * h_hat
            else:
                h = np.tanh(a + h @ Wh)
            hs[:, t] = h
        self.h, self.c = h, c
        return hs


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
        xs = self.embed_W[ids]
        h = self.layers[0].forward(xs)
        seen = [xs, h]
        for layer in self.layers[1:]:
            if self.connection == "dense":  # each layer reads the embedding and every output
                h = layer.forward(np.concatenate(seen, axis=2))
                seen.append(h)
            elif self.connection == "residual":
                h = layer.forward(h) + h
            else:
                h = layer.forward(h)
        if self.proj is not None:
            h = h @ self.proj[0] + self.proj[1]
        return h @ self.out_W + self.out_b


def _read(path):
    """(class name, config, [arrays]) of a fastrnn model file."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    with npz:
        if HEADER not in npz.files:
            raise ValueError(f"{path}: not a fastrnn model file (no {HEADER!r})")
        try:
            header = json.loads(npz[HEADER].tobytes().decode("utf-8"))
            specs, arrays = header["arrays"], []
            for spec in specs:
                if "transpose_of" in spec:
                    arrays.append(arrays[spec["transpose_of"]].T)
                else:
                    arrays.append(npz[spec["name"]])
                if list(arrays[-1].shape) != spec["shape"]:
                    raise ValueError(f"array {spec['name']} has shape {arrays[-1].shape}")
            return header["class"], header["config"], arrays
        except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: damaged fastrnn model file ({e})") from None


def load(path):
    """The model in the fastrnn model file `path` as a :class:`NumpyLM`."""
    name, cfg, arrays = _read(path)
    if name in ("Rnnlm", "BetterRnnlm"):  # the book's: LSTMs of one size, their own tying
        layers = 1 if name == "Rnnlm" else 2
        cfg = {"cell": "lstm", "hidden_sizes": [cfg["hidden_size"]] * layers, "tie_weights": False}
    elif name != "LanguageModel":
        raise ValueError(f"{path}: a {name}; this runtime runs LanguageModel, Rnnlm, BetterRnnlm")
    cell, n = cfg["cell"], len(cfg["hidden_sizes"])
    if cell not in GATES or cfg.get("connection") not in (None, "residual", "dense"):
        raise ValueError(f"{path}: cell {cell!r} / connection {cfg.get('connection')!r} unknown")
    embed_W, rest = arrays[0], arrays[1:]
    layers = [_Layer(cell, *rest[3 * k : 3 * k + 3]) for k in range(n)]
    rest = rest[3 * n :]
    proj = None
    if cfg.get("projection"):
        proj, rest = (rest[0], rest[1]), rest[2:]
    if len(rest) == 2:  # an output matrix of its own (or the book's transposed embedding)
        out_W, out_b = rest
    elif len(rest) == 1 and cfg["tie_weights"]:
        out_W, out_b = embed_W.T, rest[0]
    else:
        raise ValueError(f"{path}: {len(arrays)} arrays do not fit a {name} of {n} layers")
    return NumpyLM(embed_W, layers, cfg.get("connection"), proj, out_W, out_b)


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


def next_word(scores, rng, temperature=1.0, greedy=False, skip=None):
    """The word picked from one step's float64 `scores` (V,): the most likely (`greedy`) or a
    draw from softmax(scores / temperature) with `rng`; ids in the int array `skip` never.
    (fastrnn.train.generate picks with this too: the same draws in both.)"""
    if skip is not None and skip.size:
        scores[skip] = -np.inf
    if greedy:
        return int(np.argmax(scores))
    z = scores / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(p.size, p=p))


def generate(model, start_id, length, temperature=1.0, greedy=False, seed=None, skip_ids=()):
    """`length` word ids after `start_id`, one at a time (:func:`next_word`, with
    ``np.random.default_rng(seed)``), never one of `skip_ids`."""
    rng = np.random.default_rng(seed)
    skip = np.asarray(list(skip_ids), dtype=np.int64)
    model.reset_state()
    out, word = [], int(start_id)
    for _ in range(length):
        scores = model.predict(np.array([[word]]))[0, 0].astype(np.float64)
        word = next_word(scores, rng, temperature, greedy, skip)
        out.append(word)
    model.reset_state()
    return out


def _words(path):
    with open(path, encoding="utf-8") as f:
        return [w for line in f for w in (*line.split(), EOS)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a fastrnn model file (.npz)")
    ap.add_argument("--vocab", required=True, help="its vocab.json")
    ap.add_argument("--start", default="the", help="first word of the generated text")
    ap.add_argument("--length", type=int, default=30)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--perplexity", metavar="TEXT", help="print the perplexity of a text file")
    args = ap.parse_args(argv)
    model = load(args.model)
    with open(args.vocab, encoding="utf-8") as f:
        vocab = json.load(f)
    index = {w: i for i, w in enumerate(vocab)}
    if len(vocab) != model.vocab_size:
        sys.exit(f"{args.vocab}: {len(vocab)} words, the model has {model.vocab_size}")
    if args.perplexity:
        unk = index.get(UNK)
        try:
            ids = np.array(
                [index[w] if unk is None else index.get(w, unk) for w in _words(args.perplexity)]
            )
        except KeyError as e:
            sys.exit(f"{args.perplexity}: word {e.args[0]!r} is not in the vocabulary")
        print(f"ppl {perplexity(model, ids):.2f} ({len(ids) - 1} predictions)")
        return 0
    if args.start not in index:
        sys.exit(f"--start {args.start!r} is not in the vocabulary")
    skip = [index[UNK]] if UNK in index else []
    ids = generate(
        model, index[args.start], args.length, args.temperature, args.greedy, args.seed, skip
    )
    text = " ".join([args.start] + [vocab[i] for i in ids])
    print(text.replace(f" {EOS} ", "\n").replace(EOS, "\n").rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
