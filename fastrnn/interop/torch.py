"""Weights between fastrnn and PyTorch: ``from_torch(module)`` and ``to_torch(obj)``.

=======================  ========================================================================
PyTorch                  fastrnn
=======================  ========================================================================
``nn.RNN`` (tanh/relu)   ``TimeRNN`` (several layers: a ``fastrnn.Stack`` of them;
                         ``bidirectional=True``: ``Bidirectional`` layers)
``nn.LSTM``              ``TimeLSTM``
``nn.GRU``               ``TimeGRU(reset_after=True)``
``nn.RNNCell`` etc.      the cells ``RNN``, ``LSTM``, ``GRU``
``nn.Embedding``         ``TimeEmbedding``
``nn.Linear``            ``TimeAffine``
language model           ``fastrnn.models.LanguageModel`` (``Rnnlm``, ``BetterRnnlm``)
sequence classifier      ``fastrnn.models.SequenceClassifier`` (plain stacking)
=======================  ========================================================================

A language model on the PyTorch side is embedding + ``nn.LSTM`` / ``nn.RNN`` (any number of
layers) + optional projection + linear read-out, tied or not: ``to_torch(model)`` builds one
(``TorchLanguageModel``, with the attribute names of PyTorch's word_language_model example:
``encoder``, ``rnn``, ``proj``, ``decoder``), and ``from_torch`` reads such a module or its
``state_dict()`` (embedding ``encoder.`` / ``embedding.`` / ``embed.``, the recurrent layers under
any prefix, read-out ``decoder.`` / ``fc.`` / ``linear.`` / ``out.`` / ``head.``, projection
``proj.``; tied when the read-out weight is missing or the embedding's own tensor).

The mapping: PyTorch's ``weight_ih_l{k}`` is (gates*H, D), fastrnn's ``Wx`` (D, gates*H), so
``Wx = weight_ih.T`` block by block, and likewise ``Wh = weight_hh.T``.  Gate blocks: PyTorch's
LSTM i, f, g, o become fastrnn's f, g, i, o; its GRU r, z, n become z, r, h~ with the z block's
weights and biases negated (PyTorch's z weighs the old state, fastrnn's the candidate:
sigmoid(-a) = 1 - sigmoid(a)).  Biases: ``b_ih + b_hh`` for the RNN and LSTM (one vector in
fastrnn); the GRU keeps them as its two bias rows (PyTorch's GRU is fastrnn's reset_after form).
Going back, ``b_hh`` is zero for the RNN and LSTM.  Modules are batch-first or not as you like:
the weights are the same, and fastrnn's layers are batch-major (N, T, D).

A sequence classifier on the PyTorch side is ``TorchSequenceClassifier``
(:func:`torch_sequence_classifier_class`): optional ``embedding``, a stacked ``rnn`` run on
``pack_padded_sequence`` (each row's own length, uni- or bidirectional), the pooling of
fastrnn's head (``"last"``: each direction's state at its own last step, the ``h_n`` PyTorch
returns; ``"mean"`` / ``"max"`` over the valid steps) and ``fc``.  ``to_torch(classifier)``
builds one (plain stacking, concatenated directions) and ``from_torch`` reads it back.

Bidirectional modules (``bidirectional=True``) become ``fastrnn.layers.Bidirectional`` layers
(``merge="concat"``, the backward direction a layer with ``reverse=True`` holding the
``*_reverse`` weights), a ``Stack`` of them for several layers, and back; with ``lengths`` they
compute what PyTorch computes on ``pack_padded_sequence(..., enforce_sorted=False)``.

The dtype follows the module (float32 or float64).  LSTMs with ``proj_size`` have no fastrnn
counterpart yet (NotImplementedError); ``dropout`` between layers carries over both ways (it
acts in training only).
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
        raise TypeError(
            f"{what} must have float32 or float64 parameters, got {sorted(str(d) for d in dtypes)}"
        )


def _kind_of(module):
    nn = _torch().nn
    for kind, seq, cell in (
        ("lstm", nn.LSTM, nn.LSTMCell),
        ("gru", nn.GRU, nn.GRUCell),
        ("rnn", nn.RNN, nn.RNNCell),
    ):
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
        if getattr(module, "proj_size", 0):
            raise NotImplementedError("LSTM with proj_size > 0 has no fastrnn counterpart")
        suffixes = [f"_l{k}" for k in range(module.num_layers)]
        bidirectional = bool(module.bidirectional)
    else:
        suffixes = [""]
        bidirectional = False
    _float_dtype(module, type(module).__name__)
    nonlinearity = getattr(module, "nonlinearity", "tanh")

    def layer(sfx, reverse=False):
        w_ih = _np(getattr(module, "weight_ih" + sfx))
        w_hh = _np(getattr(module, "weight_hh" + sfx))
        if module.bias:
            b_ih = _np(getattr(module, "bias_ih" + sfx))
            b_hh = _np(getattr(module, "bias_hh" + sfx))
        else:
            b_ih = b_hh = np.zeros(w_ih.shape[0], w_ih.dtype)
        blocks = _from_torch_gates(kind, w_ih, w_hh, b_ih, b_hh)
        return build(
            kind,
            blocks,
            reset_after=(kind == "gru"),
            nonlinearity=nonlinearity,
            time=is_seq,
            reverse=reverse,
        )

    if bidirectional:
        from ..layers.bidirectional import Bidirectional

        layers = [Bidirectional(layer(sfx), layer(sfx + "_reverse", True)) for sfx in suffixes]
    else:
        layers = [layer(sfx) for sfx in suffixes]
    if len(layers) == 1:
        return layers[0]
    from ._stack import make_stack

    return make_stack(layers, dropout=float(module.dropout))


def from_torch(module):
    """The fastrnn equivalent of a PyTorch module, with copies of its weights.

    Parameters
    ----------
    module : torch.nn.Module
        ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (one layer: a fastrnn time layer, or a
        ``Bidirectional`` with ``bidirectional=True``; several: a ``fastrnn.Stack`` of them),
        ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` (a fastrnn
        cell), ``nn.Embedding`` (``TimeEmbedding``), ``nn.Linear`` (``TimeAffine``), or a
        language model: a module with ``encoder`` (or ``embedding``), ``rnn`` and ``decoder``
        (see the module docstring), or its ``state_dict()`` (a dict), or a
        ``TorchSequenceClassifier`` (a ``SequenceClassifier``).

    Returns
    -------
    object
        The fastrnn layer, in the module's dtype; it computes what the module computes (GRUs as
        ``TimeGRU(reset_after=True)``).
    """
    torch = _torch()
    nn = torch.nn
    if isinstance(module, dict):
        return _lm_from_state_dict(module)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module or a state dict, got {type(module).__name__}"
        )
    if isinstance(module, torch_sequence_classifier_class()):
        return _classifier_from_torch(module)
    if hasattr(module, "rnn") and (hasattr(module, "decoder") or hasattr(module, "fc")):
        return _lm_from_state_dict(module.state_dict(), getattr(module.rnn, "nonlinearity", "tanh"))
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
    raise TypeError(
        f"no fastrnn counterpart for {type(module).__module__}."
        f"{type(module).__qualname__}; expected nn.RNN, nn.LSTM, nn.GRU, their "
        "cells, nn.Embedding or nn.Linear"
    )


def _set(param, array):
    torch = _torch()
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _recurrent_to_torch(layers, batch_first, dropout=0.0):
    torch = _torch()
    nn = torch.nn
    from ._stack import directions

    pairs = [directions(layer) for layer in layers]
    bidirectional = pairs[0][1] is not None
    first = pairs[0][0]
    kind, is_seq, reset_after, nonlinearity = describe(first)
    if kind == "gru" and not reset_after:
        raise ValueError(
            "a TimeGRU with reset_after=False has no PyTorch counterpart (nn.GRU "
            "applies the reset gate after the recurrent product: reset_after=True)"
        )
    Wx, Wh, _ = first.params
    D, H = Wx.shape[0], Wh.shape[0]
    width = 2 * H if bidirectional else H
    dtype = torch.float64 if np.asarray(Wh).dtype == np.float64 else torch.float32
    for k, (fwd, bwd, merge) in enumerate(pairs):
        if (bwd is not None) != bidirectional:
            raise ValueError(
                f"layer {k} of the stack is {'not ' if bwd is None else ''}bidirectional, "
                "unlike layer 0: PyTorch stacks layers of one kind"
            )
        if bidirectional and merge != "concat":
            raise ValueError(
                f"layer {k}: a Bidirectional with merge={merge!r} has no PyTorch counterpart "
                '(nn.LSTM(bidirectional=True) concatenates: merge="concat")'
            )
        if bwd is None and getattr(fwd, "reverse", False):
            raise ValueError(
                f"layer {k} reads each row right to left (reverse=True), which no PyTorch "
                "module does on its own: convert it inside a Bidirectional, or export it to "
                'ONNX (direction="reverse")'
            )
        for layer in (fwd, bwd) if bwd is not None else (fwd,):
            if describe(layer) != (kind, is_seq, reset_after, nonlinearity):
                raise ValueError(
                    f"layer {k} of the stack is not a {type(first).__name__} of "
                    "the same settings as layer 0: PyTorch stacks one kind"
                )
            if layer.params[1].shape[0] != H or (k and layer.params[0].shape[0] != width):
                raise ValueError(
                    f"layer {k} of the stack must have hidden size {H}"
                    + (f" and input size {width}" if k else "")
                )
        if bidirectional and bwd.params[0].shape[0] != fwd.params[0].shape[0]:
            raise ValueError(f"layer {k}: the two directions take different input sizes")
    if is_seq:
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        kwargs = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        module = cls(
            D,
            H,
            num_layers=len(layers),
            batch_first=batch_first,
            dtype=dtype,
            dropout=dropout if len(layers) > 1 else 0.0,
            bidirectional=bidirectional,
            **kwargs,
        )
        suffixes = [f"_l{k}" for k in range(len(layers))]
    else:
        cls = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind]
        kwargs = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        module = cls(D, H, dtype=dtype, **kwargs)
        suffixes = [""]
    for sfx, (fwd, bwd, _) in zip(suffixes, pairs):
        for tail, layer in (("", fwd), ("_reverse", bwd)):
            if layer is None:
                continue
            w_ih, w_hh, b_ih, b_hh = _to_torch_gates(kind, blocks_of(layer))
            for name, value in (
                ("weight_ih", w_ih),
                ("weight_hh", w_hh),
                ("bias_ih", b_ih),
                ("bias_hh", b_hh),
            ):
                _set(getattr(module, name + sfx + tail), value)
    return module


def to_torch(obj, batch_first=True):
    """A PyTorch module computing what the fastrnn object computes, with copies of its weights.

    Parameters
    ----------
    obj
        ``TimeRNN``, ``TimeLSTM``, ``TimeGRU(reset_after=True)``, a concatenating
        ``Bidirectional`` pair of them, a ``fastrnn.Stack`` of one kind of them (one
        multi-layer module, bidirectional if its layers are), a cell (``nn.RNNCell`` etc.),
        ``TimeEmbedding``, ``TimeAffine``, a ``fastrnn.models.LanguageModel`` (LSTM or RNN
        layers of one hidden size, plain connections): a ``TorchLanguageModel``, or a
        ``SequenceClassifier`` (layers of one cell and size, plain connections, concatenated
        directions): a ``TorchSequenceClassifier``.  A Stack's dropout between layers
        becomes the module's ``dropout``; its ``recurrent_dropout`` and ``weight_drop``, which
        ``nn.LSTM`` and its kin cannot express, are not carried over (they act in training
        only: the module computes what the Stack evaluates).
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
    from ..models.lm import LanguageModel

    if isinstance(obj, LanguageModel):
        return _lm_to_torch(obj)
    from ._stack import stack_layers

    layers = stack_layers(obj)
    if layers is not None:
        return _recurrent_to_torch(layers, batch_first, getattr(obj, "dropout", 0.0))
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
    if name == "SequenceClassifier":
        return _classifier_to_torch(obj)
    raise TypeError(f"no PyTorch counterpart for {type(obj).__module__}.{name}")


def _dtype(a):
    torch = _torch()
    return torch.float64 if a.dtype == np.float64 else torch.float32


# ---- language models ----------------------------------------------------------------------------

_LM_CLASS = None


def torch_language_model_class():
    """The PyTorch module ``to_torch`` makes of a language model (defined on first use, so that
    importing this module does not import torch)."""
    global _LM_CLASS
    if _LM_CLASS is not None:
        return _LM_CLASS
    nn = _torch().nn

    class TorchLanguageModel(nn.Module):
        """Embedding -> dropout -> stacked RNN/LSTM (batch-first) -> dropout -> [projection] ->
        linear read-out (tied to the embedding when ``tie_weights``); ``forward(ids, state)``
        returns (logits (N, T, V), state)."""

        def __init__(
            self,
            vocab_size,
            embed_size,
            hidden_size,
            num_layers,
            cell="lstm",
            tie_weights=False,
            projection=False,
            dropout=0.0,
            dtype=None,
        ):
            super().__init__()
            rnn = {"lstm": nn.LSTM, "rnn": nn.RNN, "gru": nn.GRU}[cell]
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(vocab_size, embed_size, dtype=dtype)
            self.rnn = rnn(
                embed_size,
                hidden_size,
                num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
                dtype=dtype,
            )
            self.proj = nn.Linear(hidden_size, embed_size, dtype=dtype) if projection else None
            out = embed_size if tie_weights else hidden_size
            self.decoder = nn.Linear(out, vocab_size, dtype=dtype)
            if tie_weights:
                self.decoder.weight = self.encoder.weight

        def forward(self, ids, state=None):
            h, state = self.rnn(self.drop(self.encoder(ids)), state)
            h = self.drop(h)
            if self.proj is not None:
                h = self.proj(h)
            return self.decoder(h), state

    _LM_CLASS = TorchLanguageModel
    return _LM_CLASS


def _lm_to_torch(model):
    torch = _torch()
    if model.variational is not None or model.connection is not None or model.weight_drop:
        raise ValueError(
            "a LanguageModel with variational dropout, weight drop or residual/dense "
            "connections has no PyTorch counterpart here"
        )
    if len(set(model.hidden_sizes)) != 1:
        raise ValueError(
            f"PyTorch's stacked layers share one hidden size; this model has {model.hidden_sizes}"
        )
    if model.cell == "gru":
        raise ValueError(
            "fastrnn's LanguageModel builds classic GRUs (reset_after=False), "
            "which PyTorch's nn.GRU does not compute"
        )
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    cls = torch_language_model_class()
    module = cls(
        model.vocab_size,
        model.embed_size,
        model.hidden_sizes[0],
        len(model.hidden_sizes),
        model.cell,
        model.tie_weights,
        model.projection,
        model.dropout,
        dtype=dtype,
    )
    _set(module.encoder.weight, np.asarray(model.embedding.params[0]))
    rnn = _recurrent_to_torch(list(model.stack.layers), True, model.dropout)
    module.rnn.load_state_dict(rnn.state_dict())
    if model.proj is not None:
        W, b = model.proj.params
        _set(module.proj.weight, np.asarray(W).T)
        _set(module.proj.bias, b)
    if not model.tie_weights:
        _set(module.decoder.weight, np.asarray(model.affine.params[0]).T)
    _set(module.decoder.bias, model.affine.params[1])
    return module


_EMBED_KEYS = ("encoder.weight", "embedding.weight", "embed.weight")
_READOUT_PREFIXES = ("decoder.", "fc.", "linear.", "out.", "head.")


def _lm_from_state_dict(state, nonlinearity="tanh"):
    """A fastrnn LanguageModel from a PyTorch language model's state dict."""
    torch = _torch()
    from ..models.lm import LanguageModel

    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise TypeError("a state dict must map names to torch tensors")
    emb_key = next((k for k in _EMBED_KEYS if k in state), None)
    if emb_key is None:
        raise ValueError(f"state dict has no embedding weight (one of {list(_EMBED_KEYS)})")
    rnn_keys = [k for k in state if k.endswith("weight_ih_l0")]
    if len(rnn_keys) != 1:
        raise ValueError(
            "state dict must hold one stacked recurrent module (one "
            f"'...weight_ih_l0'), found {rnn_keys}"
        )
    prefix = rnn_keys[0][: -len("weight_ih_l0")]
    if any(k.startswith(prefix) and k.endswith("_reverse") for k in state):
        raise NotImplementedError(
            "bidirectional recurrent layers in a language model: fastrnn's LanguageModel "
            "reads left to right (convert the recurrent module alone: from_torch(module.rnn))"
        )
    head = next((p for p in _READOUT_PREFIXES if p + "bias" in state), None)
    if head is None:
        raise ValueError(
            f"state dict has no read-out bias (one of {[p + 'bias' for p in _READOUT_PREFIXES]})"
        )
    E_t = state[emb_key]
    dtype = E_t.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the weights must be float32 or float64, got {dtype}")
    W_out = state.get(head + "weight")
    tied = W_out is None or (W_out.shape == E_t.shape and W_out.data_ptr() == E_t.data_ptr())
    L = 0
    while prefix + f"weight_ih_l{L}" in state:
        L += 1
    w_hh = state[prefix + "weight_hh_l0"]
    H = w_hh.shape[1]
    gates = w_hh.shape[0] // H
    kind = {4: "lstm", 1: "rnn", 3: "gru"}.get(gates)
    if kind == "gru":
        raise NotImplementedError(
            "a GRU language model: fastrnn's LanguageModel builds classic "
            "GRUs (reset_after=False), not PyTorch's"
        )
    if kind is None or nonlinearity != "tanh":
        raise ValueError(
            f"cannot read the recurrent layers under {prefix!r} (gates={gates}, "
            f"nonlinearity={nonlinearity!r})"
        )
    params = [_np(E_t)]
    for k in range(L):
        sfx = f"_l{k}"
        w_ih = _np(state[prefix + "weight_ih" + sfx])
        zeros = np.zeros(w_ih.shape[0], w_ih.dtype)
        b_ih = _np(state[prefix + "bias_ih" + sfx]) if prefix + "bias_ih" + sfx in state else zeros
        b_hh = _np(state[prefix + "bias_hh" + sfx]) if prefix + "bias_hh" + sfx in state else zeros
        layer = build(
            kind, _from_torch_gates(kind, w_ih, _np(state[prefix + "weight_hh" + sfx]), b_ih, b_hh)
        )
        params += [np.asarray(p) for p in layer.params]
    projection = "proj.weight" in state
    if projection:
        params += [np.ascontiguousarray(_np(state["proj.weight"]).T), _np(state["proj.bias"])]
    if not tied:
        params.append(np.ascontiguousarray(_np(W_out).T))
    params.append(_np(state[head + "bias"]))
    config = {
        "vocab_size": int(E_t.shape[0]),
        "embed_size": int(E_t.shape[1]),
        "hidden_sizes": [int(H)] * L,
        "cell": kind,
        "tie_weights": bool(tied),
        "projection": projection,
        "dtype": "float64" if dtype == torch.float64 else "float32",
    }
    return LanguageModel.from_config(config, params)


# ---- sequence classifiers -----------------------------------------------------------------------

_CLF_CLASS = None


def torch_sequence_classifier_class():
    """The PyTorch module ``to_torch`` makes of a ``SequenceClassifier`` (defined on first use,
    so that importing this module does not import torch)."""
    global _CLF_CLASS
    if _CLF_CLASS is not None:
        return _CLF_CLASS
    torch = _torch()
    nn = torch.nn

    class TorchSequenceClassifier(nn.Module):
        """[Embedding] -> stacked RNN/LSTM/GRU (batch-first) over each row's valid steps
        (``pack_padded_sequence``) -> pooling ("last", "mean", "max") -> ``fc``.
        ``forward(x, lengths=None)``: word ids (N, T) (with ``vocab_size``) or inputs (N, T, D),
        lengths (N,) (None: all T) -> logits (N, C)."""

        def __init__(
            self,
            num_classes,
            input_size,
            hidden_size,
            num_layers=1,
            cell="lstm",
            bidirectional=True,
            pooling="last",
            vocab_size=None,
            dropout=0.0,
            nonlinearity="tanh",
            dtype=None,
        ):
            super().__init__()
            if pooling not in ("last", "mean", "max"):
                raise ValueError(f"pooling must be 'last', 'mean' or 'max', got {pooling!r}")
            self.pooling = pooling
            self.embedding = (
                nn.Embedding(vocab_size, input_size, dtype=dtype) if vocab_size else None
            )
            rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
            self.rnn = rnn(
                input_size,
                hidden_size,
                num_layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=dropout if num_layers > 1 else 0.0,
                dtype=dtype,
                **({"nonlinearity": nonlinearity} if cell == "rnn" else {}),
            )
            self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes, dtype=dtype)

        def forward(self, x, lengths=None):
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            h = self.embedding(x) if self.embedding is not None else x
            N, T = h.shape[:2]
            if lengths is None:
                lengths = torch.full((N,), T, dtype=torch.int64)
            lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out, state = self.rnn(packed)
            if self.pooling == "last":  # h_n: each direction's state at its own last step
                h_n = state[0] if isinstance(state, tuple) else state
                pooled = torch.cat([h_n[-2], h_n[-1]], 1) if self.rnn.bidirectional else h_n[-1]
            else:
                hs, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
                if self.pooling == "mean":  # (the padding is zero)
                    pooled = hs.sum(1) / lengths[:, None].to(hs.dtype)
                else:
                    valid = torch.arange(T)[None, :, None] < lengths[:, None, None]
                    pooled = hs.masked_fill(~valid, float("-inf")).amax(1)
            return self.fc(pooled)

    _CLF_CLASS = TorchSequenceClassifier
    return _CLF_CLASS


def _classifier_to_torch(model):
    from ._stack import directions, stack_layers

    layers = stack_layers(model.encoder)
    rnn = _recurrent_to_torch(layers, True, model.encoder.dropout)
    forward_layer, _, merge = directions(layers[-1])
    if merge not in (None, "concat"):
        raise ValueError(
            f"bidirectional layers with merge={merge!r}: PyTorch's modules concatenate the "
            "two directions"
        )
    kind = describe(forward_layer)[0]
    cls = torch_sequence_classifier_class()
    module = cls(
        model.num_classes,
        model.input_size,
        rnn.hidden_size,
        rnn.num_layers,
        kind,
        rnn.bidirectional,
        model.pooling,
        model.vocab_size,
        model.encoder.dropout,
        getattr(rnn, "nonlinearity", "tanh"),
        dtype=_dtype(model.W),
    )
    module.rnn.load_state_dict(rnn.state_dict())
    if model.embedding is not None:
        _set(module.embedding.weight, np.asarray(model.embedding.params[0]))
    _set(module.fc.weight, np.asarray(model.params[-2]).T)
    _set(module.fc.bias, model.params[-1])
    return module


def _classifier_from_torch(module):
    from ..layers.stack import Stack
    from ..models.classifier import SequenceClassifier

    encoder = from_torch(module.rnn)
    if not isinstance(encoder, Stack):
        encoder = Stack([encoder], dropout=float(module.rnn.dropout))
    vocab = module.embedding.num_embeddings if module.embedding is not None else None
    model = SequenceClassifier(
        module.fc.out_features,
        vocab_size=vocab,
        input_size=None if vocab else module.rnn.input_size,
        embed_size=module.rnn.input_size if vocab else None,
        pooling=module.pooling,
        dtype=encoder.dtype,
        encoder=encoder,
    )
    if vocab:
        model.embedding.params[0][...] = _np(module.embedding.weight)
    model.params[-2][...] = _np(module.fc.weight).T
    model.params[-1][...] = _np(module.fc.bias)
    return model
