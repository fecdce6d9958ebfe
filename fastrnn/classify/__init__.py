"""Sequence classification with bidirectional and deep encoders over variable-length batches.

- :mod:`~fastrnn.classify.data`: labelled files (``label<TAB>sentence``), sentence files, the
  vocabulary of training examples, the demo's synthetic task.
- :mod:`~fastrnn.classify.text`: ``TextClassifier``, a trained ``SequenceClassifier`` with its
  words and labels: sentences in, labels out; saved as a directory and loaded back.
- :mod:`~fastrnn.classify.training`: training and scoring on id arrays; the demo.
- :mod:`~fastrnn.classify.cli`: ``fastrnn classify demo / train / predict / eval / export``.
"""

from .data import (
    PAD,
    UNK,
    demo_data,
    read_labelled,
    read_sentences,
    read_word_vectors,
    vocabulary,
)
from .text import TextClassifier
from .training import (
    DEMO_DEFAULTS,
    accuracy,
    build_model,
    fit_text_classifier,
    layer_classes,
    run_demo,
    train_classifier,
)

__all__ = [
    "DEMO_DEFAULTS",
    "PAD",
    "UNK",
    "TextClassifier",
    "accuracy",
    "build_model",
    "demo_data",
    "fit_text_classifier",
    "layer_classes",
    "read_labelled",
    "read_sentences",
    "read_word_vectors",
    "run_demo",
    "train_classifier",
    "vocabulary",
]
