"""The plain NumPy implementation of fastrnn's layers, one module per module of
``fastrnn.layers``: the oracle of the tests and the baseline of the benchmarks.  Standalone
(NumPy only), written step by step like the book's ``common/time_layers.py``."""

from .lm import TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss, VariationalDropout
from .recurrent import GRU, LSTM, RNN, TimeGRU, TimeLSTM, TimeRNN, clip_grads, sigmoid

__all__ = [
    "sigmoid",
    "clip_grads",
    "RNN",
    "LSTM",
    "GRU",
    "TimeRNN",
    "TimeLSTM",
    "TimeGRU",
    "TimeEmbedding",
    "TimeAffine",
    "TimeSoftmaxWithLoss",
    "TimeDropout",
    "VariationalDropout",
]
