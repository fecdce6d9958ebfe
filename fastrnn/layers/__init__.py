"""The layers: each a drop-in for its NumPy "time layer" (``params``, ``grads``, ``forward``,
``backward``), its loops in the compiled kernels of ``src/``.

- ``recurrent``: ``TimeRNN``, ``TimeLSTM``, ``TimeGRU`` and the single-step cells ``RNN``,
  ``LSTM``, ``GRU``.
"""
from .lm import (TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss,
                 VariationalDropout)
from .recurrent import GRU, LSTM, RNN, TimeGRU, TimeLSTM, TimeRNN

__all__ = ["TimeRNN", "TimeLSTM", "TimeGRU", "RNN", "LSTM", "GRU", "TimeEmbedding", "TimeAffine",
           "TimeSoftmaxWithLoss", "TimeDropout", "VariationalDropout"]
