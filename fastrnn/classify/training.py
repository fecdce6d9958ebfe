"""Training and scoring ``SequenceClassifier`` models on id arrays, and the demo that shows why
the encoder must be bidirectional (``fastrnn classify demo``)."""

import inspect
import time

import numpy as np

from .data import demo_data
from .text import scores_of

__all__ = [
    "DEMO_DEFAULTS",
    "accuracy",
    "build_model",
    "fit_text_classifier",
    "layer_classes",
    "run_demo",
    "train_classifier",
]

DEMO_DEFAULTS = {
    "epochs": 4,
    "seed": 0,
    "train_size": 2048,
    "test_size": 512,
    "steps": 80,
    "classes": 4,
    "vocab": 12,
    "hidden": 32,
    "cell": "lstm",
    "batch_size": 32,
    "lr": 0.01,
}


def layer_classes():
    """(classes, note): fastrnn's time layers when they take ``lengths`` and ``reverse``, else
    the NumPy reference layers (same arguments, slower), with a note saying so."""
    from ..layers import recurrent as fast

    if "reverse" in inspect.signature(fast.TimeLSTM.__init__).parameters:
        return None, ""
    from .. import reference as ref

    return (
        {"rnn": ref.TimeRNN, "lstm": ref.TimeLSTM, "gru": ref.TimeGRU},
        " (NumPy reference layers: this build's kernels take no lengths)",
    )


# ---- training ---------------------------------------------------------------------------------


def _batches(n, batch_size, rng):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _trim(ids, lengths):
    """The batch cut to its longest row (the padding beyond it costs nothing to drop)."""
    return ids[:, : int(lengths.max())]


def train_classifier(
    model,
    ids,
    labels,
    lengths,
    epochs,
    batch_size=32,
    lr=0.01,
    seed=0,
    on_epoch=None,
    frozen=(),
):
    """Adam (with global-norm clipping at 5) over shuffled minibatches, one optimizer for all
    `epochs`; ``on_epoch(epoch, mean loss)`` after each; the parameters at the indices in
    `frozen` (of ``model.params``) are left as they are.  Returns the mean loss of every
    epoch."""
    from .. import clip_grads
    from ..train.optim import Adam

    rng = np.random.default_rng(seed)
    opt = Adam(lr)
    trained = [i for i in range(len(model.params)) if i not in set(frozen)]
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for rows in _batches(len(labels), batch_size, rng):
            x = _trim(ids[rows], lengths[rows])
            loss = model.forward(x, labels[rows], lengths[rows])
            model.backward()
            grads = [model.grads[i] for i in trained]
            clip_grads(grads, 5.0)
            opt.update([model.params[i] for i in trained], grads)
            total += loss * len(rows)
            count += len(rows)
        history.append(total / count)
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
    return history


def fit_text_classifier(
    examples,
    epochs=5,
    *,
    cell="lstm",
    embed=64,
    hidden=64,
    layers=1,
    connection=None,
    dropout=0.0,
    pooling="last",
    bidirectional=True,
    batch_size=32,
    lr=0.003,
    min_count=1,
    max_len=200,
    seed=0,
    on_epoch=None,
    vectors=None,
    freeze_embeddings=False,
    matmul_precision="highest",
):
    """A :class:`~fastrnn.classify.TextClassifier` trained on `examples` [(label, sentence)]
    (a sentence: a string or a list of words), what ``fastrnn classify train`` does: the
    vocabulary of words seen `min_count` times, the labels in sorted order, a float32
    ``SequenceClassifier`` (its encoder: `layers` of `cell`, `hidden` units a direction,
    `connection` and `dropout` between them, `pooling`), then `epochs` of Adam over shuffled
    minibatches (:func:`train_classifier`), ``on_epoch(epoch, mean loss)`` after each.

    `vectors`: pretrained word vectors, {word: vector} (:func:`read_word_vectors`); the
    embedding takes their size (`embed` is ignored) and starts from them for the words they
    hold (the others keep their random start); `freeze_embeddings` keeps the whole embedding
    as it starts.  `matmul_precision`: the recurrent layers' matrix products, "highest"
    or "medium" (bfloat16; see ``fastrnn.layers.TimeAffine``).  Returns (classifier, [mean loss
    of each epoch])."""
    from .data import vocabulary
    from .text import TextClassifier

    if freeze_embeddings and vectors is None:
        raise ValueError("freeze_embeddings needs vectors (pretrained word vectors)")
    if vectors is not None:
        embed = _vector_size(vectors)

    examples = [(lab, s.split() if isinstance(s, str) else list(s)) for lab, s in examples]
    labels = sorted({lab for lab, _ in examples})
    if len(labels) < 2:
        raise ValueError(f"examples hold {len(labels)} label(s); a classifier needs at least 2")
    words = vocabulary(examples, min_count)
    settings = {
        "cell": cell,
        "embed": embed,
        "hidden": hidden,
        "layers": layers,
        "connection": connection,
        "dropout": dropout,
        "pooling": pooling,
        "matmul_precision": matmul_precision,
    }
    classes, _ = layer_classes()
    model = build_model(bidirectional, settings, len(words), len(labels), seed, classes)
    clf = TextClassifier(model, words, labels, max_len)
    if vectors is not None:
        table = model.embedding.params[0]
        for i, w in enumerate(words):
            if w in vectors:
                table[i] = vectors[w]
    ids, lengths, _ = clf.encode([ws for _, ws in examples])
    y = clf.label_ids([lab for lab, _ in examples])
    frozen = (0,) if freeze_embeddings else ()
    losses = train_classifier(
        model, ids, y, lengths, epochs, batch_size, lr, seed + 1, on_epoch, frozen
    )
    return clf, losses


def _vector_size(vectors):
    sizes = {np.shape(v) for v in vectors.values()}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1 or not vectors:
        raise ValueError(
            f"vectors must map words to vectors of one size, got shapes {sorted(sizes)[:3]}"
        )
    return next(iter(sizes))[0]


def accuracy(model, ids, labels, lengths, batch_size=256):
    """The fraction of rows whose highest score is their label."""
    guess = scores_of(model, ids, lengths, batch_size).argmax(axis=1)
    return float(np.mean(guess == labels))


def build_model(bidirectional, cfg, vocab, classes, seed, layer_classes_=None):
    """A float32 ``SequenceClassifier`` over `vocab` word ids and `classes` labels, its encoder
    as `cfg` says (cell, embed, hidden, layers, connection, dropout, pooling, and
    matmul_precision: the recurrent layers' matrix products)."""
    from ..layers.stack import Stack
    from ..models.classifier import SequenceClassifier

    rng = np.random.default_rng(seed)
    layer_kwargs = {"reset_after": True} if cfg["cell"] == "gru" else {}
    if cfg.get("matmul_precision", "highest") != "highest":  # (fastrnn's layers only)
        layer_kwargs["matmul_precision"] = cfg["matmul_precision"]
    encoder = Stack.create(
        cfg["cell"],
        cfg["embed"],
        [cfg["hidden"]] * cfg.get("layers", 1),
        bidirectional=bidirectional,
        rng=rng,
        dtype=np.float32,
        classes=layer_classes_,
        layer_kwargs=layer_kwargs or None,
        connection=cfg.get("connection"),
        dropout=cfg.get("dropout", 0.0),
        seed=seed,
    )
    return SequenceClassifier(
        classes,
        vocab_size=vocab,
        embed_size=cfg["embed"],
        pooling=cfg.get("pooling", "last"),
        dtype=np.float32,
        seed=seed,
        encoder=encoder,
    )


def run_demo(epochs=4, seed=0, out=print, classes_override=None, **overrides):
    """Train the unidirectional and the bidirectional model on the demo task; print one line
    each; return {"unidirectional": acc, "bidirectional": acc, "chance": 1/K, "seconds":
    {...}}.  ``overrides``: entries of ``DEMO_DEFAULTS``."""
    cfg = {**DEMO_DEFAULTS, "epochs": epochs, "seed": seed, **overrides}
    cfg.setdefault("embed", cfg["hidden"])
    classes, note = (classes_override, "") if classes_override else layer_classes()
    rng = np.random.default_rng(cfg["seed"])
    K, V, T = cfg["classes"], cfg["vocab"], cfg["steps"]
    train = demo_data(cfg["train_size"], T, K, V, rng)
    test = demo_data(cfg["test_size"], T, K, V, rng)
    out(
        f"task: label = first token of {K}, then noise over all {V} tokens; lengths "
        f"{T // 2}..{T}; read out at the last state (chance {1 / K:.0%}){note}"
    )
    result = {"chance": 1 / K, "seconds": {}}
    for name, bidirectional in (("unidirectional", False), ("bidirectional", True)):
        model = build_model(bidirectional, cfg, V, K, cfg["seed"] + 1, classes)
        start = time.perf_counter()
        train_classifier(
            model, *train, cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["seed"] + 2
        )
        seconds = time.perf_counter() - start
        acc = accuracy(model, *test)
        result[name] = acc
        result["seconds"][name] = seconds
        out(
            f"{name:>14} {cfg['cell'].upper()} H={cfg['hidden']}: test accuracy {acc:6.1%} "
            f"after {cfg['epochs']} epochs ({seconds:.1f} s)"
        )
    return result
