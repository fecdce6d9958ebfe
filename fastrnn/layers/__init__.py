"""The layers: each a drop-in for its NumPy "time layer" (``params``, ``grads``, ``forward``,
``backward``), its loops in the compiled kernels of ``src/``.

- ``recurrent``: ``TimeRNN``, ``TimeLSTM``, ``TimeGRU`` and the single-step cells ``RNN``,
  ``LSTM``, ``GRU``.
- ``bidirectional``: ``Bidirectional``, a forward and a reverse layer over the same input.
- ``stack``: ``Stack``, recurrent and bidirectional layers stacked (dropout, residual, dense or
  highway connections, recurrent variational masks between them).
- ``pooling``: ``LastPool``, ``MeanPool``, ``MaxPool``: (N, T, F) to (N, F) over valid steps.
"""

from .bidirectional import Bidirectional
from .lm import TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss, VariationalDropout
from .pooling import LastPool, MaxPool, MeanPool
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
    "Bidirectional",
    "LastPool",
    "MeanPool",
    "MaxPool",
    "TimeEmbedding",
    "TimeAffine",
    "TimeSoftmaxWithLoss",
    "TimeDropout",
    "VariationalDropout",
]
