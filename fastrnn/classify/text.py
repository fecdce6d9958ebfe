"""``TextClassifier``: a trained ``SequenceClassifier`` with the words and labels it was trained
on, so that sentences go in and labels come out; saved as a directory that ``fastrnn classify
predict / eval / export`` and ``TextClassifier.load`` read back.

A saved classifier is three files: ``model.npz`` (``fastrnn.save``), ``vocab.json`` (the words in
id order, the language models' format) and ``classifier.json`` (the label names in class order,
the sentence length training cut at, and whatever record the trainer adds: its settings and
accuracies)."""

import os

import numpy as np

from .data import PAD, UNK

__all__ = ["TextClassifier"]

MODEL_FILE, VOCAB_FILE, CONFIG_FILE = "model.npz", "vocab.json", "classifier.json"


def _names(values, what):
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        # (a string is iterable: "ab" would read as the names "a" and "b")
        raise TypeError(f"{what} must be a list of strings, got {type(values).__name__}")
    values = list(values)
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"{what} must be non-empty strings")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be unique")
    return values


class TextClassifier:
    """Sentences -> labels with a ``SequenceClassifier`` over word ids.

    `words`: the vocabulary in id order, ``<pad>`` (id 0) and ``<unk>`` (id 1) first (as
    ``fastrnn.classify.vocabulary`` builds it); a word outside it reads as ``<unk>``.
    `labels`: the class names in class order.  `max_len`: a longer sentence is cut to its first
    `max_len` words (None: never), as training cut it.  A sentence is a string (split on
    whitespace) or a list of words; an empty one is an error naming its index.
    """

    def __init__(self, model, words, labels, max_len=None):
        if type(model).__name__ != "SequenceClassifier" or model.vocab_size is None:
            raise TypeError(
                f"model must be a SequenceClassifier over word ids (vocab_size set), got "
                f"{type(model).__name__}"
            )
        self.words = _names(words, "words")
        if self.words[:2] != [PAD, UNK]:
            raise ValueError(f"words must start with {PAD!r}, {UNK!r}; got {self.words[:2]}")
        if len(self.words) != model.vocab_size:
            raise ValueError(
                f"words: {len(self.words)} words, but the model reads {model.vocab_size}"
            )
        self.labels = _names(labels, "labels")
        if len(self.labels) != model.num_classes:
            raise ValueError(
                f"labels: {len(self.labels)} names, but the model has {model.num_classes} classes"
            )
        if max_len is not None and not (
            isinstance(max_len, int) and not isinstance(max_len, bool) and max_len >= 1
        ):
            raise ValueError(f"max_len must be a positive integer or None, got {max_len!r}")
        self.model, self.max_len = model, max_len
        self.word_to_id = {w: i for i, w in enumerate(self.words)}
        self.label_to_id = {lab: i for i, lab in enumerate(self.labels)}

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, sentences):
        """(ids (N, T) int64 padded with 0, lengths (N,), how many words read as ``<unk>``)."""
        rows = []
        for i, s in enumerate(sentences):
            words = s.split() if isinstance(s, str) else list(s)
            if not words:
                raise ValueError(f"sentences[{i}] is empty: a sentence needs at least one word")
            rows.append(words[: self.max_len] if self.max_len else words)
        if not rows:
            raise ValueError("sentences is empty: nothing to classify")
        lengths = np.array([len(r) for r in rows], np.int64)
        ids = np.zeros((len(rows), int(lengths.max())), np.int64)
        unknown = 0
        for i, r in enumerate(rows):
            row = [self.word_to_id.get(w, 1) for w in r]
            unknown += sum(1 for w in r if w not in self.word_to_id)
            ids[i, : len(row)] = row
        return ids, lengths, unknown

    def label_ids(self, labels, source="labels"):
        """Class ids of label names; a name the classifier does not know is a ValueError
        naming `source`."""
        try:
            return np.array([self.label_to_id[lab] for lab in labels], np.int64)
        except KeyError as e:
            raise ValueError(
                f"{source}: label {e.args[0]!r} is not one of the classifier's "
                f"{len(self.labels)} labels ({', '.join(self.labels[:8])})"
            ) from None

    # -- use --------------------------------------------------------------------------------------
    def scores(self, sentences, batch_size=256):
        """The model's class scores (N, C) of `sentences`."""
        ids, lengths, _ = self.encode(sentences)
        return scores_of(self.model, ids, lengths, batch_size)

    def probabilities(self, sentences, batch_size=256):
        """Softmax of the scores: (N, C), each row summing to 1."""
        s = self.scores(sentences, batch_size).astype(np.float64)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, sentences, batch_size=256):
        """The label of each sentence (a list of names)."""
        return [self.labels[i] for i in self.scores(sentences, batch_size).argmax(axis=1)]

    def evaluate(self, examples, batch_size=256):
        """Accuracy and per-label precision, recall and F1 on [(label, sentence)]:
        {"accuracy", "examples", "unknown_words", "labels": {name: {"precision", "recall",
        "f1", "support"}}, "confusion": rows = true label, columns = predicted}."""
        examples = list(examples)
        if not examples:
            raise ValueError("examples is empty: nothing to evaluate")
        truth = self.label_ids([lab for lab, _ in examples], "examples")
        ids, lengths, unknown = self.encode([s for _, s in examples])
        guess = scores_of(self.model, ids, lengths, batch_size).argmax(axis=1)
        C = len(self.labels)
        confusion = np.zeros((C, C), np.int64)
        np.add.at(confusion, (truth, guess), 1)
        per_label = {}
        for c, name in enumerate(self.labels):
            hit, said, real = confusion[c, c], confusion[:, c].sum(), confusion[c].sum()
            p = hit / said if said else 0.0
            r = hit / real if real else 0.0
            per_label[name] = {
                "precision": float(p),
                "recall": float(r),
                "f1": float(2 * p * r / (p + r)) if p + r else 0.0,
                "support": int(real),
            }
        return {
            "accuracy": float(np.trace(confusion) / len(examples)),
            "examples": len(examples),
            "unknown_words": unknown,
            "labels": per_label,
            "confusion": confusion.tolist(),
        }

    # -- files ------------------------------------------------------------------------------------
    def config(self):
        return {"labels": self.labels, "max_len": self.max_len}

    def save(self, directory, record=None):
        """Write ``model.npz``, ``vocab.json`` and ``classifier.json`` (with `record`, a JSON
        dict, beside the labels) as the directory `directory`, all three or none: they are
        written into a new directory beside it that then takes its place (``atomic_directory``),
        so an interrupted save leaves the classifier that was there, never a model read through
        another's vocabulary.  An existing `directory` may hold only a saved classifier (its
        other files would go with it).  Returns the directory."""
        from ..io import atomic_directory, atomic_write_json, save

        directory = os.fspath(directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"{directory}: exists and is not a directory")
        if os.path.isdir(directory):
            other = sorted(set(os.listdir(directory)) - {MODEL_FILE, VOCAB_FILE, CONFIG_FILE})
            if other:
                raise ValueError(
                    f"{directory}: holds files besides a saved classifier ({', '.join(other[:5])}"
                    f"{', ...' if len(other) > 5 else ''}); save into a directory of its own"
                )

        def fill(tmp):
            save(os.path.join(tmp, MODEL_FILE), self.model)
            atomic_write_json(os.path.join(tmp, VOCAB_FILE), self.words)
            atomic_write_json(os.path.join(tmp, CONFIG_FILE), {**(record or {}), **self.config()})

        atomic_directory(directory, fill)
        return directory

    @classmethod
    def load(cls, directory):
        """The classifier `save` wrote into `directory` (or the directory of its model file);
        a missing or malformed file is an error naming its path."""
        from ..io import load
        from ..train.checkpoint import read_json

        directory = os.fspath(directory)
        if os.path.isfile(directory):
            directory = os.path.dirname(directory) or "."
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"{directory}: no such directory (a classifier saved by "
                f"`fastrnn classify train --save DIR`)"
            )
        paths = [os.path.join(directory, f) for f in (MODEL_FILE, VOCAB_FILE, CONFIG_FILE)]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"{directory}: not a saved classifier, missing {', '.join(missing)} "
                f"(expected {MODEL_FILE}, {VOCAB_FILE} and {CONFIG_FILE})"
            )
        model = load(paths[0])
        words = read_json(paths[1], "vocabulary")
        config = read_json(paths[2], "classifier record")
        if not isinstance(words, list) or not isinstance(config, dict) or "labels" not in config:
            raise ValueError(
                f"{directory}: {VOCAB_FILE} must hold a list of words and {CONFIG_FILE} a "
                f"dict with 'labels'"
            )
        try:
            return cls(model, words, config["labels"], config.get("max_len"))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{directory}: {e}") from None

    def export_numpy(self, directory):
        """The classifier for machines with NumPy only: ``fastrnn.interop.export_numpy``'s
        files plus ``classifier.json``; ``python fastrnn_numpy.py model.npz --vocab vocab.json
        --classifier classifier.json --classify FILE`` then labels a file's sentences.
        Returns the paths written."""
        from ..interop import export_numpy
        from ..io import atomic_write_json

        paths = export_numpy(self.model, directory, self.words)
        paths["classifier"] = os.path.join(os.fspath(directory), CONFIG_FILE)
        atomic_write_json(paths["classifier"], self.config())
        return paths


def scores_of(model, ids, lengths, batch_size=256):
    """model.predict over rows of (ids, lengths) in batches, each cut to its longest row (the
    padding beyond it costs nothing to drop)."""
    out = []
    for start in range(0, len(lengths), batch_size):
        n = lengths[start : start + batch_size]
        out.append(model.predict(ids[start : start + batch_size, : int(n.max())], n))
    return np.concatenate(out)
