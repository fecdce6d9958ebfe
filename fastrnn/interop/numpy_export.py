"""A language model or classifier for machines with NumPy only: ``export_numpy(model,
directory)`` writes the model file, its vocabulary and ``fastrnn_numpy.py``
(:mod:`fastrnn.interop.numpy_runtime`, a self-contained NumPy implementation of the models'
evaluation) side by side, and checks that the copy computes the model's scores before it
returns."""

import json
import os

import numpy as np

from ..layers._precision import highest_precision
from . import numpy_runtime

__all__ = ["RUNTIME_FILE", "SUPPORTED", "export_numpy"]

#: the runtime's file name in an exported directory (import it as ``fastrnn_numpy``)
RUNTIME_FILE = "fastrnn_numpy.py"
#: the model classes the runtime runs
SUPPORTED = ("LanguageModel", "Rnnlm", "BetterRnnlm", "SequenceClassifier")


def export_numpy(model, directory, vocab=None):
    """Write `model` (a ``LanguageModel``, ``Rnnlm``, ``BetterRnnlm`` or ``SequenceClassifier``)
    for NumPy-only use.

    directory receives ``model.npz`` (``fastrnn.save``), ``fastrnn_numpy.py`` and, given
    `vocab` (a list of words, id order), ``vocab.json``; it is created if missing, and each file is
    written atomically.  The exported runtime's scores for a few words are compared with
    ``model.predict`` (a RuntimeError if they differ beyond rounding; the model's carried state
    is reset).  Returns the paths written: {"model", "runtime"[, "vocab"]}.
    """
    from ..io import atomic_write, save

    name = type(model).__name__
    if name not in SUPPORTED:
        raise TypeError(f"model must be one of {', '.join(SUPPORTED)}, got {name}")
    V = _vocab_size(model)
    if vocab is not None:
        vocab = list(vocab)
        if V is None or len(vocab) != V or not all(isinstance(w, str) for w in vocab):
            raise ValueError(
                f"vocab must be a list of {V} words (the model's vocabulary size)"
                if V is not None
                else "vocab: the model reads dense inputs, not word ids"
            )
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = {"model": os.path.join(directory, "model.npz")}
    save(paths["model"], model)
    source = open(numpy_runtime.__file__, encoding="utf-8").read()
    paths["runtime"] = os.path.join(directory, RUNTIME_FILE)
    atomic_write(paths["runtime"], lambda f: f.write(source.encode("utf-8")))
    if vocab is not None:
        paths["vocab"] = os.path.join(directory, "vocab.json")
        atomic_write(paths["vocab"], lambda f: f.write(json.dumps(vocab).encode("utf-8")))
    _check(model, paths["model"])
    return paths


def _vocab_size(model):
    if type(model).__name__ == "SequenceClassifier":
        return model.vocab_size
    return model.params[0].shape[0]


def _check(model, path):
    """The runtime, reading the written file, gives the model's scores to rounding."""
    rng = np.random.default_rng(0)
    copy = numpy_runtime.load(path)
    if type(model).__name__ == "SequenceClassifier":
        V, lengths = model.vocab_size, np.array([5, 3])
        x = (
            rng.integers(0, V, (2, 5))
            if V is not None
            else rng.standard_normal((2, 5, model.input_size)).astype(model.dtype)
        )
        with highest_precision(model):  # (the runtime's products are float32)
            want = model.predict(x, lengths)
        got = copy.predict(x, lengths)
    else:
        ids = rng.integers(0, _vocab_size(model), (2, 5))
        with highest_precision(model):  # (the runtime's products are float32)
            model.reset_state()
            want = model.predict(ids, train_flg=False)
        model.reset_state()
        got = copy.predict(ids)
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    tol = 1e-4 if model.params[0].dtype == np.float32 else 1e-9
    err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
    if not err <= tol:
        raise RuntimeError(f"the NumPy runtime's scores differ from the model's by {err:.2e}")
