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
import math
import os
import zipfile

import numpy as np

from ..io import atomic_write, atomic_write_json

__all__ = [
    "atomic_save_model",
    "atomic_savez",
    "atomic_write_json",
    "check_record",
    "load_last",
    "model_path",
    "read_json",
    "read_record",
    "read_vocab",
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


def read_vocab(path):
    """The :class:`~fastrnn.train.data.Vocabulary` of a ``vocab.json`` (a JSON list of distinct,
    non-empty words, id -> word); anything else is a ValueError naming the path."""
    from .data import Vocabulary

    words = read_json(path, "vocabulary")
    if not isinstance(words, list) or not words:
        raise ValueError(
            f"{path}: a vocabulary must be a non-empty JSON list of words (id -> word), "
            f"got {_describe(words)}"
        )
    for i, w in enumerate(words):
        if not isinstance(w, str) or not w:
            raise ValueError(f"{path}: word {i} must be a non-empty string, got {w!r}")
    try:
        return Vocabulary(words)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _describe(x):
    return f"a JSON {type(x).__name__}" if isinstance(x, (dict, list)) else repr(x)


# what a checkpoint record's config holds: HYPERPARAMETERS' keys (these may be absent or null)
_OPTIONAL_CONFIG = (
    "patience",
    "max_vocab",
    "input_dropout",
    "hidden_dropout",
    "recurrent_dropout",
    "output_dropout",
)
# keys newer than some records: absent means the value runs had before the key existed
ADDED_CONFIG = {
    "matmul_precision": "highest",
    "average": "none",
    "average_after": 0,
    "nonmono": 5,
    "weight_drop": 0.0,
}


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_record(state, path="checkpoint.json", complete=False):
    """`state` (a checkpoint record's content) if its fields are of their types, else a
    ValueError naming `path` and the field: counts are integers (not booleans) >= 0, reals
    finite, file names plain names in the record's directory.  The record must hold the files'
    names, ``epoch``, ``step`` and ``config``; with `complete`, also everything that
    ``fastrnn lm train --resume`` reads (the trainer's state and every hyper-parameter), which
    are otherwise checked only where present."""
    from .presets import HYPERPARAMETERS

    def bad(field, expected, value):
        raise ValueError(
            f"{path}: malformed checkpoint record: {field} must be {expected}, got {value!r}"
        )

    def need(container, key, where, ok, expected, optional=False):
        if key not in container:
            if optional:
                return
            raise ValueError(f"{path}: malformed checkpoint record (no {where + key!r})")
        if not ok(container[key]):
            bad(where + key, expected, container[key])

    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: malformed checkpoint record (a JSON object expected, got {_describe(state)})"
        )
    for key in ("model_file", "optim_file"):
        need(
            state,
            key,
            "",
            lambda v: (
                isinstance(v, str)
                and v.endswith(".npz")
                and os.path.basename(v) == v
                and v not in (".", "..")
            ),
            "the name of a .npz file beside checkpoint.json",
        )
    for key in ("epoch", "step"):
        need(state, key, "", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    need(state, "config", "", lambda v: isinstance(v, dict), "a JSON object")
    cfg = state["config"]
    for key, kind in HYPERPARAMETERS.items():
        if kind is int:
            ok, expected = _is_int, "an integer"
        elif kind is float:
            ok, expected = _is_number, "a finite number"
        elif kind is list:
            ok = lambda v: isinstance(v, list) and v and all(_is_int(h) for h in v)  # noqa: E731
            expected = "a non-empty list of integers"
        else:
            ok, expected = (lambda v, kind=kind: isinstance(v, kind)), f"a {kind.__name__}"
        if key in _OPTIONAL_CONFIG:
            ok, expected = (lambda v, ok=ok: v is None or ok(v)), expected + " or null"
        optional = not complete or key in _OPTIONAL_CONFIG or key in ADDED_CONFIG
        need(cfg, key, "config.", ok, expected, optional=optional)
    need(cfg, "preset", "config.", lambda v: isinstance(v, str), "a string", not complete)
    need(state, "history", "", lambda v: isinstance(v, list), "a JSON list", not complete)
    for k, m in enumerate(state.get("history", ())):
        where = f"history[{k}]."
        if not isinstance(m, dict):
            bad(f"history[{k}]", "a JSON object", m)
        need(m, "epoch", where, lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        for key in ("train_ppl", "val_ppl"):
            need(m, key, where, _is_number, "a finite number")
    need(state, "schedule", "", lambda v: isinstance(v, dict), "a JSON object", not complete)
    if "schedule" in state:
        need(state["schedule"], "name", "schedule.", lambda v: isinstance(v, str), "a string")
    need(state, "optimizer", "", lambda v: isinstance(v, dict), "a JSON object", not complete)
    if "optimizer" in state:
        opt = state["optimizer"]
        need(opt, "type", "optimizer.", lambda v: v in ("sgd", "adam"), "'sgd' or 'adam'")
        positive = lambda v: _is_number(v) and v > 0  # noqa: E731
        need(opt, "lr", "optimizer.", positive, "a positive finite number")
        if opt["type"] == "adam":
            for key in ("iter", "slots"):
                need(opt, key, "optimizer.", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
    need(
        state,
        "rng_states",
        "",
        lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
        "a list of JSON objects",
        optional=True,
    )
    need(state, "lr", "", _is_number, "a finite number", optional=True)
    need(state, "ranks", "", lambda v: _is_int(v) and v >= 1, "an integer >= 1", optional=True)
    need(state, "partial", "", lambda v: isinstance(v, bool), "true or false", optional=True)
    need(state, "best", "", lambda v: isinstance(v, dict), "a JSON object", optional=True)
    need(
        state, "average", "", lambda v: v is None or isinstance(v, dict), "null or a JSON object",
        optional=True,
    )  # fmt: skip
    if state.get("average") is not None:
        need(
            state["average"],
            "count",
            "average.",
            lambda v: _is_int(v) and v >= 1,
            "an integer >= 1",
        )
    if state.get("best"):
        need(state["best"], "epoch", "best.", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        need(state["best"], "val_ppl", "best.", _is_number, "a finite number")
    position = state.get("position")
    if position is not None:
        if not isinstance(position, dict):
            bad("position", "null or a JSON object", position)
        for key in ("windows", "count"):
            need(position, key, "position.", lambda v: _is_int(v) and v >= 0, "an integer >= 0")
        for key in ("total", "seconds"):
            need(position, key, "position.", _is_number, "a finite number")
        need(
            position,
            "norms",
            "position.",
            lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_number, v)),
            "a list of 3 finite numbers",
            optional=True,
        )
    need(
        state,
        "carried",
        "",
        lambda v: (
            v is None
            or (
                isinstance(v, list)
                and all(
                    isinstance(d, dict) and all(isinstance(a, str) for a in d.values()) for d in v
                )
            )
        ),
        "a list of JSON objects naming arrays",
        optional=True,
    )
    return state


def read_record(path, complete=False):
    """The content of the checkpoint record `path`, checked (:func:`check_record`)."""
    return check_record(read_json(path, "checkpoint record"), path, complete)


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
    """(state dict, model, optimizer arrays) of the run directory's resumable checkpoint.  A
    missing, malformed or truncated file is a ValueError naming it."""
    from ..io import load

    last = os.path.join(os.fspath(run_dir), "last")
    record = os.path.join(last, "checkpoint.json")
    state = read_record(record)
    model_file = os.path.join(last, state["model_file"])
    optim_path = os.path.join(last, state["optim_file"])
    for p, what in ((model_file, "model"), (optim_path, "optimizer state")):
        if not os.path.isfile(p):
            raise ValueError(f"{p}: {what} file not found (named by {record})")
    try:
        model = load(model_file)
    except (OSError, ValueError) as e:
        raise ValueError(str(e) if model_file in str(e) else f"{model_file}: {e}") from None
    try:
        with np.load(optim_path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
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
            found = os.path.join(d, read_record(rec)["model_file"])
            if not os.path.isfile(found):
                raise ValueError(f"--model {path}: {found} not found (named by {rec})")
            return found
    raise ValueError(
        f"--model {path}: no model found (expected best/model.npz or "
        f"last/checkpoint.json from `fastrnn lm train --out`)"
    )
