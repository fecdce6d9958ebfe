"""Crash-safe checkpoints of a language-model run (no pickle: .npz with allow_pickle=False + JSON).

Every file is written to a temporary name in its directory and moved into place with
``os.replace``, so a crash leaves either the old file or the new one, never half of one.  A
checkpoint is several files (model, optimizer arrays, trainer state); they are written under
names carrying the step, and ``checkpoint.json`` -- the commit record, replaced last -- names
them: until it is replaced the previous checkpoint stays whole, and older files are removed after.

Layout of a run directory::

    vocab.json                 the vocabulary (id -> word), for generation
    metrics.json               per-epoch metrics (see fastrnn.train.run)
    last/checkpoint.json       trainer state + the names of the two files below
    last/model-s<step>.npz     the model (fastrnn.save)
    last/optim-s<step>.npz     the optimizer's arrays
    best/model.npz             the best-validation model (fastrnn.save)
    best/best.json             its epoch and validation perplexity
"""

import json
import os

import numpy as np

from ..io import atomic_write, atomic_write_json

__all__ = [
    "atomic_save_model",
    "atomic_savez",
    "atomic_write_json",
    "load_last",
    "model_path",
    "read_json",
    "save_best",
    "save_last",
]


def atomic_savez(path, arrays):
    """np.savez of a dict of arrays, atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_save_model(path, model):
    """fastrnn.save(path, model): itself atomic (temporary file + os.replace)."""
    from ..io import save

    save(path, model)


def read_json(path, what="file"):
    """A JSON file's content; missing or malformed is a ValueError naming the path."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable {what} ({e})") from None


def save_last(run_dir, model, optim_arrays, state):
    """Write the resumable checkpoint: model, optimizer arrays, then the commit record."""
    last = os.path.join(run_dir, "last")
    os.makedirs(last, exist_ok=True)
    tag = f"s{state['step']:09d}"
    model_name, optim_name = f"model-{tag}.npz", f"optim-{tag}.npz"
    atomic_save_model(os.path.join(last, model_name), model)
    atomic_savez(os.path.join(last, optim_name), optim_arrays)
    atomic_write_json(
        os.path.join(last, "checkpoint.json"),
        dict(state, model_file=model_name, optim_file=optim_name),
    )
    for name in os.listdir(last):  # the previous checkpoint's files, now superseded
        if (
            name.endswith(".npz")
            and name not in (model_name, optim_name)
            and name.startswith(("model-", "optim-"))
        ):
            os.unlink(os.path.join(last, name))


def load_last(run_dir):
    """(state dict, model, optimizer arrays) of the run directory's resumable checkpoint."""
    from ..io import load

    last = os.path.join(os.fspath(run_dir), "last")
    state = read_json(os.path.join(last, "checkpoint.json"), "checkpoint record")
    for key in ("model_file", "optim_file", "epoch", "step", "config"):
        if key not in state:
            raise ValueError(f"{last}/checkpoint.json: malformed checkpoint record (no {key!r})")
    model = load(os.path.join(last, state["model_file"]))
    optim_path = os.path.join(last, state["optim_file"])
    try:
        with np.load(optim_path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{optim_path}: unreadable optimizer state ({e})") from None
    return state, model, arrays


def save_best(run_dir, model, info):
    best = os.path.join(run_dir, "best")
    os.makedirs(best, exist_ok=True)
    atomic_save_model(os.path.join(best, "model.npz"), model)
    atomic_write_json(os.path.join(best, "best.json"), info)


def model_path(path):
    """The model file a `--model` argument names: a run directory (its best model, else its last
    checkpoint's), a best/ or last/ directory, or a model file itself."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise ValueError(f"--model {path}: no such file or directory")
    candidates = [os.path.join(path, "best", "model.npz"), os.path.join(path, "model.npz")]
    for p in candidates:
        if os.path.isfile(p):
            return p
    for d in (os.path.join(path, "last"), path):
        rec = os.path.join(d, "checkpoint.json")
        if os.path.isfile(rec):
            return os.path.join(d, read_json(rec, "checkpoint record")["model_file"])
    raise ValueError(
        f"--model {path}: no model found (expected best/model.npz or "
        f"last/checkpoint.json from `fastrnn lm train --out`)"
    )
