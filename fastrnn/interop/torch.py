"""Weights between fastrnn and PyTorch: ``from_torch(module)`` and ``to_torch(obj)``.

=====================  ==========================================================================
PyTorch                fastrnn
=====================  ==========================================================================
``nn.RNN`` (tanh/relu) ``TimeRNN`` (several layers: ``fastrnn.models.Stack`` of them)
``nn.LSTM``            ``TimeLSTM``
``nn.GRU``             ``TimeGRU(reset_after=True)``
``nn.RNNCell`` etc.    the cells ``RNN``, ``LSTM``, ``GRU``
``nn.Embedding``       ``TimeEmbedding``
``nn.Linear``          ``TimeAffine``
=====================  ==========================================================================

The mapping: PyTorch's ``weight_ih_l{k}`` is (gates*H, D), fastrnn's ``Wx`` (D, gates*H), so
``Wx = weight_ih.T`` block by block, and likewise ``Wh = weight_hh.T``.  Gate blocks: PyTorch's
LSTM i, f, g, o become fastrnn's f, g, i, o; its GRU r, z, n become z, r, h~ with the z block's
weights and biases negated (PyTorch's z weighs the old state, fastrnn's the candidate:
sigmoid(-a) = 1 - sigmoid(a)).  Biases: ``b_ih + b_hh`` for the RNN and LSTM (one vector in
fastrnn); the GRU keeps them as its two bias rows (PyTorch's GRU is fastrnn's reset_after form).
Going back, ``b_hh`` is zero for the RNN and LSTM.  Modules are batch-first or not as you like:
the weights are the same, and fastrnn's layers are batch-major (N, T, D).

The dtype follows the module (float32 or float64).  Bidirectional modules and LSTMs with
``proj_size`` have no fastrnn counterpart yet (NotImplementedError); ``dropout`` between layers is
a training-time setting and is not carried over.
"""
import numpy as np

from . import require
from ._gates import blocks_of, build, describe, from_rows, to_rows

__all__ = ["from_torch", "to_torch"]

# PyTorch's gate blocks (rows of weight_ih), in fastrnn's gate names
_TORCH_GATES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "h")}
# PyTorch's GRU z weighs the old state: fastrnn's z negated
_NEGATED = {"rnn": (), "lstm": (), "gru": ("z",)}


def _torch():
    return require("torch", "torch")


def _np(t):
    return t.detach().cpu().numpy().copy()


def _float_dtype(module, what):
    dtypes = {p.dtype for p in module.parameters()}
    torch = _torch()
    if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
        raise TypeError(f"{what} must have float32 or float64 parameters, got "
                        f"{sorted(str(d) for d in dtypes)}")


def _kind_of(module):
    nn = _torch().nn
    for kind, seq, cell in (("lstm", nn.LSTM, nn.LSTMCell), ("gru", nn.GRU, nn.GRUCell),
                            ("rnn", nn.RNN, nn.RNNCell)):
        if isinstance(module, seq):
            return kind, True
        if isinstance(module, cell):
            return kind, False
    return None, None


def _from_torch_gates(kind, w_ih, w_hh, b_ih, b_hh):
    """fastrnn's neutral blocks from PyTorch's (gates*H, D) / (gates*H, H) / (gates*H,) arrays."""
    return from_rows(_TORCH_GATES[kind], w_ih, w_hh, b_ih, b_hh, negated=_NEGATED[kind])


def _to_torch_gates(kind, blocks):
    """PyTorch's (w_ih, w_hh, b_ih, b_hh) from fastrnn's neutral blocks."""
    return to_rows(_TORCH_GATES[kind], blocks, negated=_NEGATED[kind])


def _recurrent_from_torch(module, kind, is_seq):
    if is_seq:
        if module.bidirectional:
            raise NotImplementedError("bidirectional=True: fastrnn has no Bidirectional layer "
                                      "yet (it is not built)")
        if getattr(module, "proj_size", 0):
            raise NotImplementedError("LSTM with proj_size > 0 has no fastrnn counterpart")
        suffixes = [f"_l{k}" for k in range(module.num_layers)]
    else:
        suffixes = [""]
    _float_dtype(module, type(module).__name__)
    nonlinearity = getattr(module, "nonlinearity", "tanh")
    layers = []
    for sfx in suffixes:
        w_ih = _np(getattr(module, "weight_ih" + sfx))
        w_hh = _np(getattr(module, "weight_hh" + sfx))
        if module.bias:
            b_ih = _np(getattr(module, "bias_ih" + sfx))
            b_hh = _np(getattr(module, "bias_hh" + sfx))
        else:
            b_ih = b_hh = np.zeros(w_ih.shape[0], w_ih.dtype)
        blocks = _from_torch_gates(kind, w_ih, w_hh, b_ih, b_hh)
        layers.append(build(kind, blocks, reset_after=(kind == "gru"),
                            nonlinearity=nonlinearity, time=is_seq))
    if len(layers) == 1:
        return layers[0]
    from ._stack import make_stack
    return make_stack(layers)


def from_torch(module):
    """The fastrnn equivalent of a PyTorch module, with copies of its weights.

    Parameters
    ----------
    module : torch.nn.Module
        ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (one layer: a fastrnn time layer; several: a
        ``fastrnn.models.Stack``), ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` (a fastrnn
        cell), ``nn.Embedding`` (``TimeEmbedding``) or ``nn.Linear`` (``TimeAffine``).

    Returns
    -------
    object
        The fastrnn layer, in the module's dtype; it computes what the module computes (GRUs as
        ``TimeGRU(reset_after=True)``).
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    kind, is_seq = _kind_of(module)
    if kind is not None:
        return _recurrent_from_torch(module, kind, is_seq)
    if isinstance(module, nn.Embedding):
        _float_dtype(module, "nn.Embedding")
        from ..layers.lm import TimeEmbedding
        return TimeEmbedding(_np(module.weight))
    if isinstance(module, nn.Linear):
        _float_dtype(module, "nn.Linear")
        from ..layers.lm import TimeAffine
        W = np.ascontiguousarray(_np(module.weight).T)
        b = _np(module.bias) if module.bias is not None else np.zeros(W.shape[1], W.dtype)
        return TimeAffine(W, b)
    raise TypeError(f"no fastrnn counterpart for {type(module).__module__}."
                    f"{type(module).__qualname__}; expected nn.RNN, nn.LSTM, nn.GRU, their "
                    "cells, nn.Embedding or nn.Linear")


def _set(param, array):
    torch = _torch()
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _recurrent_to_torch(layers, batch_first):
    torch = _torch()
    nn = torch.nn
    kind, is_seq, reset_after, nonlinearity = describe(layers[0])
    if kind == "gru" and not reset_after:
        raise ValueError("a TimeGRU with reset_after=False has no PyTorch counterpart (nn.GRU "
                         "applies the reset gate after the recurrent product: reset_after=True)")
    Wx, Wh, _ = layers[0].params
    D, H = Wx.shape[0], Wh.shape[0]
    dtype = torch.float64 if np.asarray(Wh).dtype == np.float64 else torch.float32
    for k, layer in enumerate(layers[1:], 1):
        if describe(layer) != (kind, is_seq, reset_after, nonlinearity):
            raise ValueError(f"layer {k} of the stack is not a {type(layers[0]).__name__} of "
                             "the same settings as layer 0: PyTorch stacks one kind")
        if layer.params[0].shape[0] != H or layer.params[1].shape[0] != H:
            raise ValueError(f"layer {k} of the stack must have input and hidden size {H}")
    if is_seq:
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        kwargs = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        module = cls(D, H, num_layers=len(layers), batch_first=batch_first, dtype=dtype,
                     **kwargs)
        suffixes = [f"_l{k}" for k in range(len(layers))]
    else:
        cls = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind]
        kwargs = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        module = cls(D, H, dtype=dtype, **kwargs)
        suffixes = [""]
    for sfx, layer in zip(suffixes, layers):
        w_ih, w_hh, b_ih, b_hh = _to_torch_gates(kind, blocks_of(layer))
        for name, value in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih),
                            ("bias_hh", b_hh)):
            _set(getattr(module, name + sfx), value)
    return module


def to_torch(obj, batch_first=True):
    """A PyTorch module computing what the fastrnn object computes, with copies of its weights.

    Parameters
    ----------
    obj
        ``TimeRNN``, ``TimeLSTM``, ``TimeGRU(reset_after=True)``, a ``fastrnn.models.Stack`` of
        one kind of them (one multi-layer module), a cell (``nn.RNNCell`` etc.),
        ``TimeEmbedding`` or ``TimeAffine``.
    batch_first : bool
        The recurrent module's layout (default True, as fastrnn's (N, T, D)); the weights do not
        depend on it.

    Returns
    -------
    torch.nn.Module
        In the parameters' dtype (float32 or float64).  RNN and LSTM get ``bias_hh`` zero and the
        whole bias in ``bias_ih``.
    """
    torch = _torch()
    nn = torch.nn
    from ._stack import stack_layers
    layers = stack_layers(obj)
    if layers is not None:
        return _recurrent_to_torch(layers, batch_first)
    try:
        describe(obj)
    except TypeError:
        pass
    else:
        return _recurrent_to_torch([obj], batch_first)
    name = type(obj).__name__
    if name == "TimeEmbedding":
        W = np.asarray(obj.params[0])
        module = nn.Embedding(W.shape[0], W.shape[1], dtype=_dtype(W))
        _set(module.weight, W)
        return module
    if name == "TimeAffine":
        W, b = (np.asarray(p) for p in obj.params)
        module = nn.Linear(W.shape[0], W.shape[1], dtype=_dtype(W))
        _set(module.weight, W.T)
        _set(module.bias, b)
        return module
    raise TypeError(f"no PyTorch counterpart for {type(obj).__module__}.{name}")


def _dtype(a):
    torch = _torch()
    return torch.float64 if a.dtype == np.float64 else torch.float32
