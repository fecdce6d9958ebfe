"""Gate blocks of fastrnn's recurrent layers, for the converters of the other frameworks.

Every framework stores the same numbers in its own order and layout; the converters go through
one neutral form: per gate, ``(wx (D, H), wh (H, H), bx (H,), bh (H,))`` in fastrnn's meaning of
the gate (GRU: z is the weight of the *new* candidate, h_t = (1 - z) h_{t-1} + z h~), so that a
converter only permutes blocks, transposes, and negates where a framework's z weighs the old state.
"""

import inspect

import numpy as np

from ..layers.recurrent import GRU, LSTM, RNN, TimeGRU, TimeLSTM, TimeRNN

#: fastrnn's gate blocks in column order, per kind
GATES = {"rnn": ("h",), "lstm": ("f", "g", "i", "o"), "gru": ("z", "r", "h")}

_TIME = {"rnn": TimeRNN, "lstm": TimeLSTM, "gru": TimeGRU}
_CELL = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def describe(obj):
    """(kind, is_time_layer, reset_after, nonlinearity) of a fastrnn recurrent layer or cell."""
    for kind, cls in _TIME.items():
        if isinstance(obj, cls):
            return kind, True, bool(getattr(obj, "reset_after", False)), _nonlinearity(obj)
    for kind, cls in _CELL.items():
        if isinstance(obj, cls):
            return (
                kind,
                False,
                bool(getattr(obj._seq, "reset_after", False)),
                _nonlinearity(obj._seq),
            )
    raise TypeError(
        "expected a fastrnn TimeRNN, TimeLSTM, TimeGRU, RNN, LSTM or GRU, got "
        f"{type(obj).__module__}.{type(obj).__qualname__}"
    )


def _nonlinearity(layer):
    return getattr(layer, "nonlinearity", "tanh")


def blocks_of(obj):
    """The neutral form of a fastrnn layer's weights: {gate: (wx, wh, bx, bh)} (copies).

    Layers whose bias is one vector (all but reset_after GRUs) give it as bx, with bh zero."""
    kind, _, reset_after, _ = describe(obj)
    Wx, Wh, b = (np.asarray(p) for p in obj.params)
    H = Wh.shape[0]
    out = {}
    for k, gate in enumerate(GATES[kind]):
        cols = slice(k * H, (k + 1) * H)
        if reset_after:
            bx, bh = b[0, cols].copy(), b[1, cols].copy()
        else:
            bx, bh = b[cols].copy(), np.zeros(H, b.dtype)
        out[gate] = (Wx[:, cols].copy(), Wh[:, cols].copy(), bx, bh)
    return out


def build(
    kind,
    blocks,
    *,
    reset_after=False,
    nonlinearity="tanh",
    time=True,
    stateful=False,
    reverse=False,
):
    """A fastrnn layer (time layer, or cell with time=False) from the neutral form; bias pairs
    are summed except for a reset_after GRU, which keeps them as its two bias rows.  ``reverse``:
    a time layer reading each row backwards (the backward half of a bidirectional layer)."""
    gates = GATES[kind]
    Wx = np.ascontiguousarray(np.concatenate([blocks[g][0] for g in gates], axis=1))
    Wh = np.ascontiguousarray(np.concatenate([blocks[g][1] for g in gates], axis=1))
    if kind == "gru" and reset_after:
        b = np.stack(
            [
                np.concatenate([blocks[g][2] for g in gates]),
                np.concatenate([blocks[g][3] for g in gates]),
            ]
        )
    else:
        b = np.concatenate([blocks[g][2] + blocks[g][3] for g in gates])
    kwargs = {}
    if kind == "gru":
        kwargs["reset_after"] = reset_after
    if kind == "rnn" and nonlinearity != "tanh":
        if "nonlinearity" not in inspect.signature(TimeRNN.__init__).parameters:
            raise NotImplementedError(
                f"nonlinearity={nonlinearity!r}: this fastrnn's TimeRNN has tanh only"
            )
        kwargs["nonlinearity"] = nonlinearity
    if reverse:
        kwargs["reverse"] = True
    if time:
        return _TIME[kind](Wx, Wh, b, stateful=stateful, **kwargs)
    return _CELL[kind](Wx, Wh, b, **kwargs)


def negate(block):
    """A gate's (wx, wh, bx, bh) with every entry negated: sigmoid(-a) = 1 - sigmoid(a) turns a
    z that weighs the old state into fastrnn's z and back."""
    return tuple(-a for a in block)


def from_rows(order, w_in, w_rec, b_in, b_rec, negated=()):
    """The neutral form from a row-stacked layout (PyTorch's and ONNX's): w_in (gates*H, D),
    w_rec (gates*H, H), b_in and b_rec (gates*H,), blocks in `order` (fastrnn's gate names);
    the gates named in `negated` are stored negated there."""
    H = w_rec.shape[1]
    blocks = {}
    for k, gate in enumerate(order):
        rows = slice(k * H, (k + 1) * H)
        block = (w_in[rows].T, w_rec[rows].T, b_in[rows], b_rec[rows])
        blocks[gate] = negate(block) if gate in negated else block
    return blocks


def to_rows(order, blocks, negated=()):
    """The row-stacked (w_in, w_rec, b_in, b_rec) of from_rows from the neutral form."""
    blocks = {g: negate(b) if g in negated else b for g, b in blocks.items()}
    return tuple(
        np.ascontiguousarray(
            np.concatenate([blocks[g][i].T if i < 2 else blocks[g][i] for g in order])
        )
        for i in range(4)
    )
