"""Weights between fastrnn and Keras 3: ``from_keras(layer)`` and ``to_keras(obj)``.

=========================================  ===================================================
Keras                                      fastrnn
=========================================  ===================================================
``keras.layers.SimpleRNN`` (tanh, relu)    ``TimeRNN``
``keras.layers.LSTM``                      ``TimeLSTM``
``keras.layers.GRU(reset_after=True)``     ``TimeGRU(reset_after=True)``, bias (2, 3H)
``keras.layers.GRU(reset_after=False)``    ``TimeGRU(reset_after=False)``, bias (3H,)
=========================================  ===================================================

Keras keeps ``kernel`` (D, gates*units), ``recurrent_kernel`` (units, gates*units) and ``bias`` in
fastrnn's own layout, column blocks per gate, so the conversion only reorders blocks: LSTM
i, f, c, o to fastrnn's f, g, i, o; GRU z, r, h keeps its order but Keras's z weighs the old state
(h = z * h_prev + (1 - z) * h~) where fastrnn's weighs the candidate, so the z block's kernel,
recurrent kernel and bias are negated (sigmoid(-a) = 1 - sigmoid(a)).  Keras's reset_after GRU
bias rows (input, recurrent) are fastrnn's two bias rows.

Keras needs a backend: set ``KERAS_BACKEND`` (``torch``, ``jax``, ``tensorflow``) before Keras is
first imported.  The layer's dtype follows the weights (float32 or float64).  Only the default
activations convert (tanh / sigmoid; SimpleRNN also relu); ``Bidirectional`` and
``go_backwards=True`` have no fastrnn counterpart yet (NotImplementedError).
"""

import numpy as np

from . import require
from ._gates import GATES, blocks_of, build, describe, negate

__all__ = ["from_keras", "to_keras"]

_KERAS_GATES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("z", "r", "h")}
_NEGATED = {"rnn": (), "lstm": (), "gru": ("z",)}


def _keras():
    return require("keras", "keras")


def _activation_name(fn):
    return getattr(fn, "__name__", str(fn))


def _kind_of(layer):
    layers = _keras().layers
    for kind, cls in (("lstm", layers.LSTM), ("gru", layers.GRU), ("rnn", layers.SimpleRNN)):
        if isinstance(layer, cls):
            return kind
    return None


def from_keras(layer):
    """The fastrnn time layer equivalent to a built Keras recurrent layer (copies of its weights).

    Parameters
    ----------
    layer : keras.layers.SimpleRNN, keras.layers.LSTM or keras.layers.GRU
        Built (called once, or ``layer.build((None, None, D))``).

    Returns
    -------
    TimeRNN, TimeLSTM or TimeGRU
        In the layer's weight dtype; it returns the whole sequence of hidden states, as Keras
        with ``return_sequences=True``.
    """
    keras = _keras()
    if isinstance(layer, keras.layers.Bidirectional):
        raise NotImplementedError(
            "keras.layers.Bidirectional: fastrnn has no Bidirectional layer yet (it is not built)"
        )
    kind = _kind_of(layer)
    if kind is None:
        raise TypeError(
            f"no fastrnn counterpart for {type(layer).__module__}."
            f"{type(layer).__qualname__}; expected keras.layers.SimpleRNN, LSTM or "
            "GRU"
        )
    if not layer.built:
        raise ValueError(
            f"the Keras layer {layer.name!r} is not built yet: call it once or "
            "layer.build((None, None, input_size)) first"
        )
    if layer.go_backwards:
        raise NotImplementedError("go_backwards=True has no fastrnn counterpart")
    cell = layer.cell
    act = _activation_name(cell.activation)
    allowed = ("tanh", "relu") if kind == "rnn" else ("tanh",)
    if act not in allowed:
        raise ValueError(
            f"activation {act!r} has no fastrnn counterpart (expected one of {allowed})"
        )
    if kind != "rnn" and _activation_name(cell.recurrent_activation) != "sigmoid":
        raise ValueError(
            f"recurrent_activation {_activation_name(cell.recurrent_activation)!r}"
            " has no fastrnn counterpart (expected 'sigmoid')"
        )
    kernel = np.array(keras.ops.convert_to_numpy(cell.kernel))
    recurrent = np.array(keras.ops.convert_to_numpy(cell.recurrent_kernel))
    if kernel.dtype not in (np.float32, np.float64):
        raise TypeError(f"the Keras layer's weights must be float32 or float64, got {kernel.dtype}")
    H = recurrent.shape[0]
    G = len(GATES[kind])
    reset_after = kind == "gru" and bool(cell.reset_after)
    if cell.use_bias:
        bias = np.array(keras.ops.convert_to_numpy(cell.bias)).astype(kernel.dtype, copy=False)
    else:
        bias = np.zeros((2, G * H) if reset_after else (G * H,), kernel.dtype)
    blocks = {}
    for k, gate in enumerate(_KERAS_GATES[kind]):
        cols = slice(k * H, (k + 1) * H)
        if reset_after:
            bx, bh = bias[0, cols], bias[1, cols]
        else:
            bx, bh = bias[cols], np.zeros(H, kernel.dtype)
        block = (kernel[:, cols], recurrent[:, cols], bx, bh)
        blocks[gate] = negate(block) if gate in _NEGATED[kind] else block
    return build(kind, blocks, reset_after=reset_after, nonlinearity=act)


def to_keras(obj):
    """A built Keras layer (``return_sequences=True``) computing what a fastrnn time layer does.

    Parameters
    ----------
    obj : fastrnn.TimeRNN, fastrnn.TimeLSTM or fastrnn.TimeGRU
        A GRU gives ``keras.layers.GRU(reset_after=obj.reset_after)``.

    Returns
    -------
    keras.layers.SimpleRNN, keras.layers.LSTM or keras.layers.GRU
        Built for inputs (N, T, D), in the parameters' dtype.
    """
    keras = _keras()
    kind, is_time, reset_after, nonlinearity = describe(obj)
    if not is_time:
        raise TypeError(
            "convert the time layers (TimeRNN, TimeLSTM, TimeGRU) to Keras, not single-step cells"
        )
    Wx, Wh, _ = (np.asarray(p) for p in obj.params)
    D, H = Wx.shape[0], Wh.shape[0]
    dtype = "float64" if Wh.dtype == np.float64 else "float32"
    if kind == "lstm":
        layer = keras.layers.LSTM(H, return_sequences=True, dtype=dtype)
    elif kind == "gru":
        layer = keras.layers.GRU(H, return_sequences=True, reset_after=reset_after, dtype=dtype)
    else:
        layer = keras.layers.SimpleRNN(
            H, activation=nonlinearity, return_sequences=True, dtype=dtype
        )
    layer.build((None, None, D))
    blocks = blocks_of(obj)
    blocks = {g: negate(b) if g in _NEGATED[kind] else b for g, b in blocks.items()}
    order = _KERAS_GATES[kind]
    kernel = np.concatenate([blocks[g][0] for g in order], axis=1)
    recurrent = np.concatenate([blocks[g][1] for g in order], axis=1)
    if reset_after:
        bias = np.stack(
            [
                np.concatenate([blocks[g][2] for g in order]),
                np.concatenate([blocks[g][3] for g in order]),
            ]
        )
    else:
        bias = np.concatenate([blocks[g][2] + blocks[g][3] for g in order])
    layer.set_weights([kernel, recurrent, bias])
    return layer
