"""A language model for machines with NumPy only: ``export_numpy(model, directory)`` writes the
model file, its vocabulary and ``fastrnn_numpy.py`` (:mod:`fastrnn.interop.numpy_runtime`, a
self-contained NumPy implementation of the models' evaluation) side by side, and checks that the
copy computes the model's scores before it returns."""

import json
import os

import numpy as np

from . import numpy_runtime

__all__ = ["RUNTIME_FILE", "SUPPORTED", "export_numpy"]

#: the runtime's file name in an exported directory (import it as ``fastrnn_numpy``)
RUNTIME_FILE = "fastrnn_numpy.py"
#: the model classes the runtime runs
SUPPORTED = ("LanguageModel", "Rnnlm", "BetterRnnlm")


def export_numpy(model, directory, vocab=None):
    """Write `model` (a ``LanguageModel``, ``Rnnlm`` or ``BetterRnnlm``) for NumPy-only use.

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
    V = model.params[0].shape[0]
    if vocab is not None:
        vocab = list(vocab)
        if len(vocab) != V or not all(isinstance(w, str) for w in vocab):
            raise ValueError(f"vocab must be a list of {V} words (the model's vocabulary size)")
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


def _check(model, path):
    """The runtime, reading the written file, gives the model's scores to rounding."""
    ids = np.random.default_rng(0).integers(0, model.params[0].shape[0], (2, 5))
    model.reset_state()
    want = np.asarray(model.predict(ids, train_flg=False), dtype=np.float64)
    model.reset_state()
    got = numpy_runtime.load(path).predict(ids).astype(np.float64)
    tol = 1e-4 if model.params[0].dtype == np.float32 else 1e-9
    err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
    if not err <= tol:
        raise RuntimeError(f"the NumPy runtime's scores differ from the model's by {err:.2e}")
