"""Recurrent time layers described by name, for the configs of composite layers (``Stack``,
``Bidirectional``): one entry per layer, ``{"cell": "lstm", **layer.get_config()}``."""

import numpy as np

from .recurrent import TimeGRU, TimeLSTM, TimeRNN

#: the layer classes a config can name (cell name -> class)
CELL_CLASSES = {"rnn": TimeRNN, "lstm": TimeLSTM, "gru": TimeGRU}
#: gate blocks per cell: Wx is (D, blocks * H)
BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}


def cell_name(layer, where):
    """The cell name of a fastrnn time layer; TypeError naming `where` for anything else."""
    for name, cls in CELL_CLASSES.items():
        if type(layer) is cls:
            return name
    raise TypeError(
        f"get_config: {where} is a {type(layer).__name__}; only TimeRNN, TimeLSTM and TimeGRU "
        "can be described"
    )


def layer_entry(layer, where):
    """``{"cell": name, **layer.get_config()}``."""
    return {"cell": cell_name(layer, where), **layer.get_config()}


def layer_from_entry(entry, params, where):
    """The time layer of ``layer_entry``'s dict on ``params`` [Wx, Wh, b] (shapes checked)."""
    if not isinstance(entry, dict):
        raise TypeError(f"config {where} must be a dict, got {type(entry).__name__}")
    cell = entry.get("cell")
    if cell not in CELL_CLASSES:
        raise ValueError(f"config {where} cell must be one of {sorted(CELL_CLASSES)}, got {cell!r}")
    config = {k: v for k, v in entry.items() if k != "cell"}
    params = list(params)
    if len(params) != 3:
        raise ValueError(f"params for {where} must be [Wx, Wh, b], got {len(params)} arrays")
    try:
        return CELL_CLASSES[cell].from_config(config, params)
    except (ValueError, TypeError) as e:
        raise type(e)(f"params for {where}: {e}") from None


def init_layer_params(cell, input_size, hidden_size, rng, dtype, forget_bias=1.0, bias_2d=False):
    """[Wx, Wh, b] drawn as ``fastrnn.models.init_params`` draws them (Wx ~ N(0, 1/D),
    Wh ~ N(0, 1/H), b = 0 but an LSTM's forget bias); ``bias_2d``: b (2, blocks * H) for a
    reset_after GRU."""
    if cell not in BLOCKS:
        raise ValueError(f"cell must be one of {sorted(BLOCKS)}, got {cell!r}")
    G, D, H = BLOCKS[cell], int(input_size), int(hidden_size)
    if D < 1 or H < 1:
        raise ValueError(f"input_size and hidden_size must be positive, got {D} and {H}")
    Wx = rng.standard_normal((D, G * H)) / np.sqrt(D)
    Wh = rng.standard_normal((H, G * H)) / np.sqrt(H)
    b = np.zeros((2, G * H) if bias_2d else (G * H,))
    if cell == "lstm":
        b[..., :H] = forget_bias if not bias_2d else forget_bias / 2
    return [np.ascontiguousarray(a, dtype=dtype) for a in (Wx, Wh, b)]


def check_lengths(lengths, N, T, name="lengths"):
    """``lengths`` as an int64 array (N,) of values in [1, T], or None; clear errors otherwise."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be an integer array of shape ({N},), got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"{name} must have shape ({N},) (one length per row), got {arr.shape}")
    if N and (arr.min() < 1 or arr.max() > T):
        raise ValueError(
            f"{name} must be between 1 and T={T}, got values from {arr.min()} to {arr.max()}"
        )
    return arr.astype(np.int64)
