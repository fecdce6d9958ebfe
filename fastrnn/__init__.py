"""fastrnn: fast RNN, LSTM and GRU layers for the CPU.

Cython + BLAS kernels for the forward and backpropagation-through-time loops, behind the interface
of the pure-NumPy "time layers" (``TimeLSTM(Wx, Wh, b, stateful=False)``, ``.params``, ``.grads``,
``forward(xs)``, ``backward(dhs)``), so code written for those runs unchanged::

    import fastrnn
    layer = fastrnn.TimeLSTM(Wx, Wh, b)        # Wx (D, 4H), Wh (H, 4H), b (4H,)
    hs = layer.forward(xs)                     # xs (N, T, D) -> hs (N, T, H)
    dxs = layer.backward(dhs)                  # fills layer.grads in place
    norm = fastrnn.clip_grads(grads, 5.0)      # fused, in place

Packages: ``fastrnn.layers`` (recurrent layers and cells, language-model time layers, ``Stack``),
``fastrnn.models`` (``Rnnlm``, ``BetterRnnlm``, ``LanguageModel``, the demo's regressor),
``fastrnn.train`` (optimizers, PTB data, the truncated-BPTT trainer), ``fastrnn.interop``
(PyTorch, Keras, ONNX), ``fastrnn.reference`` (the plain NumPy oracle and benchmark baseline),
``fastrnn.diagnostics`` (gradient flow).  ``fastrnn.save(path, obj)`` / ``fastrnn.load(path)`` keep
layers and models in one ``.npz`` file with a JSON config, no pickle (``fastrnn.io``).
``fastrnn.blas_info()`` tells which BLAS library the kernels call (``FASTRNN_BLAS``);
``fastrnn.bf16_supported()`` whether this CPU runs the bfloat16 products of
``matmul_precision="medium"`` (``TimeAffine``, the recurrent layers and the models).
"""

from . import diagnostics
from ._blas import info as blas_info
from ._lm import bf16_supported
from ._norms import clip_grads
from .io import load, save
from .layers import (
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    Stack,
    TimeAffine,
    TimeDropout,
    TimeEmbedding,
    TimeGRU,
    TimeLSTM,
    TimeRNN,
    TimeSoftmaxWithLoss,
    VariationalDropout,
)

__version__ = "0.1.0"

__all__ = [
    "TimeRNN",
    "TimeLSTM",
    "TimeGRU",
    "RNN",
    "LSTM",
    "GRU",
    "Stack",
    "Bidirectional",
    "clip_grads",
    "TimeEmbedding",
    "TimeAffine",
    "TimeSoftmaxWithLoss",
    "TimeDropout",
    "VariationalDropout",
    "save",
    "load",
    "blas_info",
    "bf16_supported",
]
