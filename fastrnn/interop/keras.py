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
activations convert (tanh / sigmoid; SimpleRNN also relu).  ``keras.layers.Bidirectional``
(``merge_mode`` "concat" or "sum", ``return_sequences=True``) is ``fastrnn.layers.Bidirectional``:
its backward layer (``go_backwards=True``, outputs put back in input order by Bidirectional)
is a fastrnn layer with ``reverse=True``.  ``go_backwards=True`` on its own (outputs in reversed
order) has no counterpart (NotImplementedError).

Masks and lengths: a Keras layer called with a right-padded ``mask`` (N, T) (``Masking``,
``Embedding(mask_zero=True)``) computes what fastrnn's ``forward(xs, lengths)`` does with
``lengths = lengths_from_mask(mask)``: the same outputs at the valid steps, the same final state
(each row's state at its own last step), the same gradients; a Bidirectional's backward layer
starts at each row's own last valid step in both.  Past a row's length fastrnn writes zeros;
a Keras layer repeats the row's last valid output unless ``zero_output_for_mask=True``, which
``to_keras`` sets (and ``keras.layers.Bidirectional`` forces).

Stacks: ``to_keras(stack)`` gives a built ``keras.Sequential`` of the stack's layers (a
``keras.layers.Dropout`` between consecutive layers when the stack has ``dropout``, with
``noise_shape=(None, 1, H)`` for ``variational=True``), and ``from_keras(sequential)`` reads such
a model back.  Residual, dense and highway connections, ``recurrent_dropout`` and
``weight_drop`` have no counterpart among Keras's stacked layers: ``to_keras`` refuses them
(ValueError naming them).

Classifiers: ``to_keras(classifier)`` of a word-id ``SequenceClassifier`` (plain stacking, "last"
or "mean" pooling) is a built ``keras.Sequential`` of Keras's own layers only, so a saved
``.keras`` file loads without fastrnn: ``Embedding(mask_zero=True)`` (word id 0 is the padding,
as ``fastrnn.classify``'s ``<pad>``; each row's mask is its length), the recurrent layers, the
last one with ``return_sequences=False`` for "last" (each direction's state at its own end:
fastrnn's last pooling) or ``GlobalAveragePooling1D`` for "mean" (over the mask), and ``Dense``.
Its ``predict(ids)`` gives fastrnn's ``predict(ids, lengths)``; ``from_keras`` reads it back.
"max" pooling has no masked Keras layer (``GlobalMaxPooling1D`` ignores masks) and dense
inputs no mask from ids: both are refused.

Precision: Keras's type promotion maps float64 to float32 on every backend but TensorFlow's, so
a float64 layer that runs through ``keras.ops.matmul`` computes in float32 there.  On the torch
backend only LSTM and GRU(reset_after=True) without a mask take a fused path in float64 (equal
to fastrnn to 1e-10); SimpleRNN, GRU(reset_after=False) and every masked call agree to float32
rounding.  The weights themselves convert exactly either way.
"""

import numpy as np

from . import require
from ._gates import GATES, blocks_of, build, describe, negate

__all__ = ["from_keras", "lengths_from_mask", "to_keras"]

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
    layer : keras layer or keras.Sequential
        A ``keras.layers.SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``, or a Sequential of them;
        or a classifier Sequential as ``to_keras`` makes one (a ``SequenceClassifier``).
        Built (called once, or ``layer.build((None, None, D))``).  A Sequential may start with
        a ``Masking`` layer (dropped: pass fastrnn the lengths of its mask) and hold one
        ``Dropout`` of one rate in every gap between its recurrent layers.

    Returns
    -------
    fastrnn layer
        ``TimeRNN``, ``TimeLSTM``, ``TimeGRU``, ``Bidirectional`` or ``Stack``, in the layer's
        weight dtype; it returns the whole sequence of hidden states, as Keras with
        ``return_sequences=True``.
    """
    keras = _keras()
    if isinstance(layer, keras.Sequential) and isinstance(
        (layer.layers or [None])[0], keras.layers.Embedding
    ):
        return _classifier_from_keras(layer)
    if isinstance(layer, keras.Sequential):
        return _stack_from_keras(layer.layers)
    if isinstance(layer, keras.layers.Bidirectional):
        return _bidirectional_from_keras(layer)
    return _from_keras(layer, reverse=False)


def lengths_from_mask(mask):
    """Each row's length (N,) int64 from a right-padded Keras mask (N, T) (True on the valid
    steps, as ``keras.layers.Masking`` or ``Embedding(mask_zero=True)`` make), for fastrnn's
    ``forward(xs, lengths)``.

    Raises ValueError for a mask whose row has a hole (a False step before a True one: fastrnn
    reads each row over a prefix of its steps) or no valid step at all, naming the row.
    """
    if not isinstance(mask, np.ndarray):
        mask = _keras().ops.convert_to_numpy(mask)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (N, T), got {mask.shape}")
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
            raise TypeError(f"mask must hold booleans (or 0 / 1), got dtype {mask.dtype}")
        mask = mask.astype(bool)
    lengths = mask.sum(axis=1, dtype=np.int64)
    prefix = np.arange(mask.shape[1])[None, :] < lengths[:, None]
    holes = np.flatnonzero((prefix != mask).any(axis=1))
    if holes.size:
        n = int(holes[0])
        raise ValueError(
            f"mask row {n} is not right-padded ({mask[n].astype(int).tolist()}): fastrnn's "
            "lengths need the valid steps first, then only padding"
        )
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(f"mask row {int(empty[0])} has no valid step (lengths must be >= 1)")
    return lengths


_MERGES = {"concat": "concat", "sum": "sum"}


def _bidirectional_from_keras(bi, final_state=False):
    from ..layers.bidirectional import Bidirectional

    if bi.merge_mode not in _MERGES:
        raise ValueError(
            f"keras.layers.Bidirectional(merge_mode={bi.merge_mode!r}) has no fastrnn "
            f"counterpart (expected one of {sorted(_MERGES)})"
        )
    if not bi.built:
        raise ValueError(
            f"the Keras layer {bi.name!r} is not built yet: call it once or "
            "layer.build((None, None, input_size)) first"
        )
    if not bi.return_sequences and not final_state:
        raise ValueError(
            "keras.layers.Bidirectional must return sequences (return_sequences=True) to "
            "match a fastrnn Bidirectional, which returns every step"
        )
    fwd, bwd = bi.forward_layer, bi.backward_layer
    if fwd.go_backwards or not bwd.go_backwards:
        raise ValueError(
            "expected the Bidirectional's forward_layer with go_backwards=False and its "
            "backward_layer with go_backwards=True"
        )
    return Bidirectional(
        _from_keras(fwd, reverse=False), _from_keras(bwd, reverse=True), _MERGES[bi.merge_mode]
    )


def _from_keras(layer, reverse):
    """A built Keras recurrent layer as a fastrnn time layer (``reverse``: the backward half of
    a Bidirectional, whose go_backwards Keras undoes by reversing its outputs)."""
    keras = _keras()
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
    if layer.go_backwards and not reverse:
        raise NotImplementedError(
            "go_backwards=True on its own (outputs in reversed order) has no fastrnn "
            "counterpart; inside keras.layers.Bidirectional it converts"
        )
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
    return build(kind, blocks, reset_after=reset_after, nonlinearity=act, reverse=reverse)


def to_keras(obj):
    """A built Keras layer (``return_sequences=True``) computing what a fastrnn time layer does.

    Parameters
    ----------
    obj : fastrnn layer or model
        ``TimeRNN``, ``TimeLSTM``, ``TimeGRU``, a ``Bidirectional`` of them, a ``Stack``, or a
        word-id ``SequenceClassifier`` (see the module docstring).
        A GRU gives ``keras.layers.GRU(reset_after=obj.reset_after)``; a ``Bidirectional``
        (both directions the same cell and size) ``keras.layers.Bidirectional``; a ``Stack``
        with ``connection=None``, no ``recurrent_dropout`` and no ``weight_drop`` a
        ``keras.Sequential``.

    Returns
    -------
    keras layer or keras.Sequential
        ``keras.layers.SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional`` or a ``keras.Sequential``,
        built for inputs (N, T, D), in the parameters' dtype, ``zero_output_for_mask=True``.
    """
    _keras()  # a clear ImportError first, when Keras is missing
    from ..layers.bidirectional import Bidirectional
    from ..layers.stack import Stack

    if type(obj).__name__ == "SequenceClassifier":
        return _classifier_to_keras(obj)
    if isinstance(obj, Stack):
        return _stack_to_keras(obj)
    if isinstance(obj, Bidirectional):
        return _bidirectional_to_keras(obj)
    return _to_keras(obj)


def _stack_to_keras(stack):
    """A Stack (plain connections) as a built keras.Sequential: its layers, with a
    keras.layers.Dropout between consecutive ones when the stack has dropout (noise_shape
    (None, 1, H): one mask per sequence, for variational=True)."""
    keras = _keras()
    from ..layers.bidirectional import Bidirectional

    if stack.connection is not None:
        raise ValueError(
            f"a Stack with connection={stack.connection!r} has no keras.Sequential "
            "counterpart (Keras's stacked RNN layers feed each layer's outputs to the next, "
            "nothing else): convert its layers one by one"
        )
    if stack.recurrent_dropout:
        raise ValueError(
            f"a Stack with recurrent_dropout={stack.recurrent_dropout} has no Keras "
            "counterpart here (fastrnn's one mask per layer is not Keras's recurrent_dropout); "
            "build the Stack with recurrent_dropout=0"
        )
    if stack.weight_drop:
        raise ValueError(
            f"a Stack with weight_drop={stack.weight_drop} has no Keras counterpart (Keras "
            "layers have no DropConnect on their recurrent kernels); build the Stack with "
            "weight_drop=0"
        )
    dtype = np.dtype(stack.dtype).name
    layers = []
    for k, layer in enumerate(stack.layers):
        if k and stack.dropout:
            H = stack.hidden_sizes[k - 1]
            noise = (None, 1, H) if stack.variational else None
            layers.append(keras.layers.Dropout(stack.dropout, noise_shape=noise, dtype=dtype))
        if isinstance(layer, Bidirectional):
            layers.append(_bidirectional_to_keras(layer))
        else:
            layers.append(_to_keras(layer))
    model = keras.Sequential(layers)
    model.build((None, None, stack.input_size))
    return model


def _stack_from_keras(model_layers, final_state=False):
    """A keras.Sequential's layers, recurrent (SimpleRNN, LSTM, GRU, Bidirectional, each
    returning sequences; with `final_state` the last one may return its last state instead: the
    same weights), with either no Dropout or one Dropout of one rate in every gap between them,
    as a Stack."""
    keras = _keras()
    from ._stack import make_stack

    layers, drops = [], []
    previous_was_recurrent = False
    for k, layer in enumerate(model_layers):
        where = f"layer {k} ({layer.name!r})"
        last = k == len(model_layers) - 1
        if k == 0 and isinstance(layer, keras.layers.Masking):
            continue  # its mask is the caller's lengths: lengths_from_mask(layer.compute_mask(xs))
        if isinstance(layer, keras.layers.Dropout):
            if not previous_was_recurrent or last:
                raise ValueError(
                    f"{where}: a Dropout converts only between two recurrent layers (a fastrnn "
                    "Stack drops once between consecutive layers, nothing before or after)"
                )
            drops.append(layer)
            previous_was_recurrent = False
            continue
        if isinstance(layer, keras.layers.Bidirectional):
            layers.append(_bidirectional_from_keras(layer, final_state and last))
        elif _kind_of(layer) is not None:
            if not layer.return_sequences and not (final_state and last):
                raise ValueError(
                    f"{where}: stacked layers must return sequences (return_sequences=True), "
                    "as a fastrnn Stack returns every step of its last layer"
                )
            layers.append(_from_keras(layer, reverse=False))
        else:
            raise TypeError(
                f"{where}: {type(layer).__name__} has no place in a fastrnn Stack (expected "
                "SimpleRNN, LSTM, GRU, Bidirectional, or Dropout between them)"
            )
        previous_was_recurrent = True
    if not layers:
        raise ValueError("the keras.Sequential holds no recurrent layer")
    if not drops:
        return make_stack(layers)
    rates = {float(d.rate) for d in drops}
    shapes = {None if d.noise_shape is None else tuple(d.noise_shape)[1:2] for d in drops}
    if len(drops) != len(layers) - 1 or len(rates) != 1 or len(shapes) != 1:
        raise ValueError(
            "a Stack drops the same way between every two layers: put one Dropout of one rate "
            f"and noise_shape in every gap (got {len(drops)} Dropout layers for "
            f"{len(layers) - 1} gaps, rates {sorted(rates)})"
        )
    shape = shapes.pop()
    if shape not in (None, (1,)):
        raise ValueError(
            f"Dropout noise_shape {drops[0].noise_shape} has no fastrnn counterpart (expected "
            "None, or (None, 1, H): one mask per sequence)"
        )
    return make_stack(layers, dropout=rates.pop(), variational=shape == (1,))


def _bidirectional_to_keras(bi, return_sequences=True):
    keras = _keras()
    fwd, bwd = bi.forward_layer, bi.backward_layer
    if describe(fwd) != describe(bwd) or fwd.params[1].shape != bwd.params[1].shape:
        raise ValueError(
            "keras.layers.Bidirectional copies one layer for both directions: the two "
            "directions must be the same cell with the same settings and hidden size"
        )
    D = np.asarray(fwd.params[0]).shape[0]
    dtype = "float64" if np.asarray(fwd.params[1]).dtype == np.float64 else "float32"
    # the wrapper's own dtype too: it merges (and would cast) the two directions' outputs
    layer = keras.layers.Bidirectional(
        _to_keras(fwd, build=False, return_sequences=return_sequences),
        merge_mode=bi.merge,
        dtype=dtype,
    )
    layer.build((None, None, D))
    _set_keras_weights(layer.forward_layer, fwd)
    _set_keras_weights(layer.backward_layer, bwd)
    return layer


def _to_keras(obj, build=True, return_sequences=True):
    keras = _keras()
    kind, is_time, reset_after, nonlinearity = describe(obj)
    if not is_time:
        raise TypeError(
            "convert the time layers (TimeRNN, TimeLSTM, TimeGRU) to Keras, not single-step cells"
        )
    if getattr(obj, "reverse", False):
        raise NotImplementedError(
            "a layer with reverse=True on its own has no Keras counterpart (go_backwards=True "
            "also reverses the outputs' order, and reads the padding first): convert it inside "
            "a Bidirectional"
        )
    Wx, Wh, _ = (np.asarray(p) for p in obj.params)
    D, H = Wx.shape[0], Wh.shape[0]
    dtype = "float64" if Wh.dtype == np.float64 else "float32"
    # zero_output_for_mask: zeros past each row's length under a mask, as fastrnn's lengths
    # (the last output alone must be the state carried over the padding: each row's own end)
    common = {
        "return_sequences": return_sequences,
        "zero_output_for_mask": return_sequences,
        "dtype": dtype,
    }
    if kind == "lstm":
        layer = keras.layers.LSTM(H, **common)
    elif kind == "gru":
        layer = keras.layers.GRU(H, reset_after=reset_after, **common)
    else:
        layer = keras.layers.SimpleRNN(H, activation=nonlinearity, **common)
    if not build:
        return layer
    layer.build((None, None, D))
    _set_keras_weights(layer, obj)
    return layer


def _set_keras_weights(layer, obj):
    kind, _, reset_after, _ = describe(obj)
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


# ---- sequence classifiers ---------------------------------------------------------------------


def _classifier_to_keras(model):
    """A word-id SequenceClassifier as a built keras.Sequential of Keras's own layers."""
    keras = _keras()
    from ..layers.bidirectional import Bidirectional

    if model.vocab_size is None:
        raise ValueError(
            "a classifier of dense inputs has no Keras mask from word ids: convert its "
            "encoder (to_keras(model.encoder)) and pass Keras a mask of the lengths"
        )
    if model.pooling not in ("last", "mean"):
        raise ValueError(
            f"pooling={model.pooling!r} has no masked Keras layer (GlobalMaxPooling1D ignores "
            "masks): 'last' and 'mean' convert"
        )
    stack = model.encoder
    last = stack.layers[-1]
    if model.pooling == "last" and isinstance(last, Bidirectional) and last.merge != "concat":
        raise ValueError(
            f"'last' pooling of merge={last.merge!r} directions: Keras's last state of a "
            "Bidirectional is each direction's own end, which fastrnn pools only when the "
            "directions are concatenated"
        )
    sequence = _stack_to_keras(stack)  # (its checks: plain connections, no recurrent dropout)
    dtype = np.dtype(model.dtype).name
    layers = [
        keras.layers.Embedding(model.vocab_size, model.embed_size, mask_zero=True, dtype=dtype)
    ]
    layers += sequence.layers[:-1]
    if model.pooling == "last":  # the last layer again, returning its last state only
        if isinstance(last, Bidirectional):
            layers.append(_bidirectional_to_keras(last, return_sequences=False))
        else:
            layers.append(_to_keras(last, return_sequences=False))
    else:
        layers += [sequence.layers[-1], keras.layers.GlobalAveragePooling1D(dtype=dtype)]
    layers.append(keras.layers.Dense(model.num_classes, dtype=dtype))
    out = keras.Sequential(layers)
    out.build((None, None))
    out.layers[0].set_weights([np.asarray(model.embedding.params[0])])
    out.layers[-1].set_weights([np.asarray(model.params[-2]), np.asarray(model.params[-1])])
    return out


def _classifier_from_keras(seq):
    """A keras.Sequential as _classifier_to_keras makes one, as a SequenceClassifier."""
    keras = _keras()
    from ..models.classifier import SequenceClassifier

    parts = list(seq.layers)
    emb, head = parts[0], parts[-1]
    if not getattr(emb, "mask_zero", False):
        raise ValueError("the Embedding must have mask_zero=True (word id 0: the padding)")
    if not isinstance(head, keras.layers.Dense) or len(parts) < 3:
        raise ValueError("a classifier Sequential: Embedding, recurrent layers, [pooling], Dense")
    body = parts[1:-1]
    if isinstance(body[-1], keras.layers.GlobalAveragePooling1D):
        pooling, body = "mean", body[:-1]
    else:
        pooling = "last"
        final = body[-1]
        inner = final.forward_layer if isinstance(final, keras.layers.Bidirectional) else final
        if getattr(inner, "return_sequences", True):
            raise ValueError(
                "the last recurrent layer must return its last state (return_sequences=False) "
                "or be followed by GlobalAveragePooling1D"
            )
    stack = _stack_from_keras(body, final_state=pooling == "last")
    E, W = (np.asarray(w) for w in (emb.get_weights()[0], head.get_weights()[0]))
    model = SequenceClassifier(
        W.shape[1],
        vocab_size=E.shape[0],
        embed_size=E.shape[1],
        pooling=pooling,
        dtype=E.dtype,
        encoder=stack,
    )
    model.embedding.params[0][...] = E
    model.params[-2][...] = W
    model.params[-1][...] = np.asarray(head.get_weights()[1])
    return model
