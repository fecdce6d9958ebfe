"""The layers: each a drop-in for its NumPy "time layer" (``params``, ``grads``, ``forward``,
``backward``), its loops in the compiled kernels of ``src/``.

- ``recurrent``: ``TimeRNN``, ``TimeLSTM``, ``TimeGRU`` and the single-step cells ``RNN``,
  ``LSTM``, ``GRU``.
- ``stack``: ``Stack``, recurrent layers stacked (dropout, residual or dense connections,
  recurrent variational masks between them).
"""

from .lm import TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss, VariationalDropout
from .recurrent import GRU, LSTM, RNN, TimeGRU, TimeLSTM, TimeRNN
from .stack import Stack

__all__ = [
    "TimeRNN",
    "TimeLSTM",
    "TimeGRU",
    "RNN",
    "LSTM",
    "GRU",
    "Stack",
    "TimeEmbedding",
    "TimeAffine",
    "TimeSoftmaxWithLoss",
    "TimeDropout",
    "VariationalDropout",
]
