"""Models built from fastrnn's layers.

- ``regression``: ``SequenceRegressor`` (one recurrent layer, a linear read-out of h_T, MSE), the
  model of ``fastrnn demo``, with ``init_params`` and ``make_layer``.
- ``classifier``: ``SequenceClassifier`` (embedding or dense input, a ``Stack`` of recurrent or
  bidirectional layers over variable lengths, a pooling head, softmax cross-entropy).
- ``lm``: ``LanguageModel`` (embedding, a ``Stack`` of recurrent layers, tied or untied read-out,
  softmax cross-entropy) and the book's ``Rnnlm`` and ``BetterRnnlm``.

``SGD`` and ``Adam`` live in ``fastrnn.train`` and are re-exported here for older imports.
"""

from ..train.optim import SGD, Adam
from .classifier import SequenceClassifier
from .lm import BetterRnnlm, LanguageModel, Rnnlm
from .regression import CELLS, Linear, MSELoss, SequenceRegressor, init_params, make_layer

__all__ = [
    "CELLS",
    "init_params",
    "make_layer",
    "Linear",
    "MSELoss",
    "SequenceRegressor",
    "SGD",
    "Adam",
    "LanguageModel",
    "SequenceClassifier",
    "Rnnlm",
    "BetterRnnlm",
]
