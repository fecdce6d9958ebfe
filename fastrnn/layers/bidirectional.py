"""``Bidirectional``: two recurrent time layers reading a batch in opposite directions.

The forward layer reads each row from t = 0 to its last valid step, the backward layer (made with
``reverse=True``) from the row's last valid step ``lengths[n] - 1`` back to 0, inside its kernel
(no reversed copy of the batch is made).  With ``lengths`` this is exactly what
``torch.nn.LSTM(bidirectional=True)`` computes on ``pack_padded_sequence(..., enforce_sorted=
False)``: at position t the output holds the forward state after reading x_0..x_t and the
backward state after reading x_{len-1}..x_t; positions past a row's length are zero.
"""

import concurrent.futures
import threading

import numpy as np

from .._threads import ThreadSetting
from ..io import register
from ._cells import (
    BLOCKS,
    CELL_CLASSES,
    check_lengths,
    init_layer_params,
    layer_entry,
    layer_from_entry,
)

__all__ = ["Bidirectional", "MERGES"]

#: accepted values of ``merge``
MERGES = ("concat", "sum")

# threads=None runs the directions one after the other, each layer on its own automatic thread
# setting (which already spreads a big call over BLAS's threads).  Measured against both
# directions concurrently, one kernel thread each (benches/bidir_threads.py, float32 forward +
# backward with lengths uniform in [T/4, T], alternating, one process, 2 cores under a load
# average of 3 to 6 from other jobs), sequential / concurrent, two runs with the first lengths
# stage of the kernels, one with the LSTM's lengths kernel and one with every cell's: LSTM N8
# T20 H32 0.70-0.79, 0.69, 0.68; GRU N16 T35 H64 0.99-1.12, 0.98, 0.98; LSTM N32 T50 H128
# 0.97-1.09, 1.00, 1.00; LSTM N64 T35 H256 1.01, 0.98, 1.00.  No consistent gain, a clear loss
# on small calls: concurrency is opt-in (threads >= 2).

_pool = None
_pool_lock = threading.Lock()


def _worker():
    """One shared worker thread: runs the forward direction while the caller's thread runs the
    backward one (the kernels release the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastrnn-bidir")
    return _pool


def _is_reverse(layer):
    return bool(getattr(layer, "reverse", False))


def _wx_wh(layer, name):
    p = getattr(layer, "params", None)
    if (
        not all(hasattr(layer, a) for a in ("forward", "backward", "grads"))
        or not isinstance(p, list)
        or len(p) != 3
        or not all(isinstance(a, np.ndarray) for a in p)
        or p[0].ndim != 2
        or p[1].ndim != 2
    ):
        raise TypeError(
            f"{name} must be a recurrent time layer (TimeRNN, TimeLSTM, TimeGRU) with params "
            f"[Wx, Wh, b], got {type(layer).__name__}"
        )
    return p[0], p[1]


@register
class Bidirectional(ThreadSetting):
    """A forward and a reverse recurrent time layer over the same input, outputs merged.

    Parameters
    ----------
    forward_layer : recurrent time layer
        A ``TimeRNN``, ``TimeLSTM`` or ``TimeGRU`` reading each row left to right
        (``reverse=False``).
    backward_layer : recurrent time layer
        Made with ``reverse=True``: reads each row from its last valid step back to t = 0.
        Any cell, but the same input size and dtype as ``forward_layer``; with
        ``merge="sum"`` the same hidden size too.
    merge : {"concat", "sum"}
        "concat": ``hs[..., :H]`` forward, ``hs[..., H:]`` backward (N, T, H_f + H_b);
        "sum": their sum (N, T, H).

    Attributes
    ----------
    params, grads : list of numpy.ndarray
        The forward layer's [Wx, Wh, b], then the backward layer's.
    threads : None or int
        None (default) or 1: the directions run one after the other, each layer on its own
        ``threads`` setting (by default as many threads as BLAS, for calls big enough).  2 or
        more: concurrently on two Python threads (the kernels release the GIL), each direction
        on ``threads // 2`` kernel threads.  Measured on 2 busy cores, concurrency gained
        nothing consistent (0.97-1.12x) and lost on small calls (0.7-0.8x), hence opt-in.

    Notes
    -----
    ``forward(xs, lengths=None, h_mask=None)`` -> hs; ``backward(dhs)`` -> dxs (the sum of both
    directions' input gradients).  Not stateful: the reverse direction's initial state would
    come from the future.  Build one from sizes with :meth:`create`.
    """

    def __init__(self, forward_layer, backward_layer, merge="concat"):
        if not isinstance(merge, str) or merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        Wx_f, Wh_f = _wx_wh(forward_layer, "forward_layer")
        Wx_b, Wh_b = _wx_wh(backward_layer, "backward_layer")
        if forward_layer is backward_layer:
            raise ValueError("forward_layer and backward_layer must be two different layers")
        if _is_reverse(forward_layer):
            raise ValueError(
                "forward_layer must read left to right (reverse=False), got a layer with "
                "reverse=True"
            )
        if not _is_reverse(backward_layer):
            raise ValueError(
                "backward_layer must be made with reverse=True (it reads each row from its "
                f"last valid step back to 0), got a {type(backward_layer).__name__} with "
                "reverse=False"
            )
        if Wx_f.shape[0] != Wx_b.shape[0]:
            raise ValueError(
                f"the two directions must take the same input size, got {Wx_f.shape[0]} "
                f"(forward_layer) and {Wx_b.shape[0]} (backward_layer)"
            )
        if Wh_f.dtype != Wh_b.dtype:
            raise TypeError(
                f"the two directions must have the same dtype, got {Wh_f.dtype} and {Wh_b.dtype}"
            )
        if merge == "sum" and Wh_f.shape[0] != Wh_b.shape[0]:
            raise ValueError(
                f'merge="sum" needs equal hidden sizes, got {Wh_f.shape[0]} and {Wh_b.shape[0]}'
            )
        if getattr(forward_layer, "stateful", False):
            raise ValueError("forward_layer must not be stateful in a Bidirectional layer")
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        self.merge = merge
        self.input_size = int(Wx_f.shape[0])
        self.hidden_sizes = (int(Wh_f.shape[0]), int(Wh_b.shape[0]))
        self.output_size = self.hidden_sizes[0] if merge == "sum" else sum(self.hidden_sizes)
        self.dtype = Wh_f.dtype
        self.params = forward_layer.params + backward_layer.params
        self.grads = forward_layer.grads + backward_layer.grads
        self.threads = None
        self._shape = None  # (N, T) of the last forward

    @classmethod
    def create(
        cls,
        cell,
        input_size,
        hidden_size,
        *,
        merge="concat",
        rng=None,
        dtype=np.float32,
        forget_bias=1.0,
        classes=None,
        **layer_kwargs,
    ):
        """A Bidirectional of two new ``cell`` layers ("rnn", "lstm" or "gru").

        The weights are drawn from ``rng`` (a ``numpy.random.Generator``; None: a fresh one)
        as ``fastrnn.models.init_params`` draws them (Wx ~ N(0, 1/D), Wh ~ N(0, 1/H), zero
        biases, an LSTM's forget-gate bias ``forget_bias``), forward direction first.
        ``layer_kwargs`` go to both layers (``reset_after=True`` for a GRU, ``nonlinearity``
        for an RNN); ``classes`` maps cell names to the layer classes to build (default
        fastrnn's ``TimeRNN``, ``TimeLSTM``, ``TimeGRU``; ``fastrnn.reference``'s take the same
        arguments).

        Examples
        --------
        >>> import numpy as np
        >>> from fastrnn.layers import Bidirectional
        >>> bi = Bidirectional.create("lstm", 8, 16, rng=np.random.default_rng(0))
        >>> bi.output_size
        32
        """
        if cell not in BLOCKS:
            raise ValueError(f"cell must be one of {sorted(BLOCKS)}, got {cell!r}")
        rng = np.random.default_rng() if rng is None else rng
        classes = CELL_CLASSES if classes is None else classes
        bias_2d = cell == "gru" and bool(layer_kwargs.get("reset_after", False))
        layers = []
        for reverse in (False, True):
            params = init_layer_params(
                cell, input_size, hidden_size, rng, dtype, forget_bias, bias_2d
            )
            layers.append(classes[cell](*params, reverse=reverse, **layer_kwargs))
        return cls(*layers, merge=merge)

    # ---- state --------------------------------------------------------------------------------

    @property
    def stateful(self):
        """Always False (a bidirectional layer carries no state between calls)."""
        return False

    @stateful.setter
    def stateful(self, value):
        if value:
            raise ValueError(
                "a Bidirectional layer cannot be stateful: its reverse direction's initial "
                "state would come from the future"
            )

    def reset_state(self):
        """Forget both directions' last states."""
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    @property
    def h(self):
        """The directions' last states (each row's state after its own last step): the forward
        one (at t = len-1) and the backward one (at t = 0), as a pair."""
        return self.forward_layer.h, self.backward_layer.h

    # ---- forward / backward -------------------------------------------------------------------

    def _concurrent(self, N, T):
        """(run concurrently?, kernel threads per direction)."""
        if self._threads is None or self._threads < 2 or N < 2:
            return False, None
        return True, self._threads // 2

    def _layers(self):
        return self.forward_layer, self.backward_layer

    def _run(self, f_call, b_call, N, T):
        concurrent, per_direction = self._concurrent(N, T)
        if not concurrent:
            return f_call(), b_call()
        layers = (self.forward_layer, self.backward_layer)
        saved = [getattr(layer, "threads", None) for layer in layers]
        try:
            for layer in layers:
                if hasattr(layer, "threads"):
                    layer.threads = per_direction
            future = _worker().submit(f_call)
            try:
                b_out = b_call()
            finally:
                f_out = future.result()  # wait for it even when b_call raised
            return f_out, b_out
        finally:
            for layer, s in zip(layers, saved):
                if hasattr(layer, "threads"):
                    layer.threads = s

    def forward(self, xs, lengths=None, h_mask=None):
        """hs for xs (N, T, D): (N, T, H_f + H_b) with merge="concat", (N, T, H) with "sum".

        Parameters
        ----------
        xs : array (N, T, D)
        lengths : None or int array (N,)
            Row n's valid steps 0..lengths[n]-1 (1 <= lengths[n] <= T); hs is zero past them.
        h_mask : None or a pair of arrays
            Recurrent dropout masks (forward direction's (N, H_f), backward's (N, H_b)), as
            the time layers' ``h_mask``.
        """
        xs = np.asarray(xs)
        if xs.ndim != 3 or xs.shape[2] != self.input_size:
            raise ValueError(f"xs must have shape (N, T, {self.input_size}), got {xs.shape}")
        if xs.dtype.kind != "f":
            raise TypeError(f"xs must be a float array, got dtype {xs.dtype}")
        N, T = xs.shape[:2]
        lengths = check_lengths(lengths, N, T)
        f_kw, b_kw = {}, {}
        if lengths is not None:
            f_kw["lengths"] = b_kw["lengths"] = lengths
        if h_mask is not None:
            if not isinstance(h_mask, (list, tuple)) or len(h_mask) != 2:
                raise TypeError(
                    "h_mask of a Bidirectional layer must be a pair (forward mask (N, H_f), "
                    f"backward mask (N, H_b)), got {type(h_mask).__name__}"
                )
            for name, m, H in zip(("forward", "backward"), h_mask, self.hidden_sizes):
                if np.shape(m) != (N, H):
                    raise ValueError(
                        f"h_mask's {name} mask must have shape ({N}, {H}), got {np.shape(m)}"
                    )
            f_kw["h_mask"], b_kw["h_mask"] = h_mask
        hf, hb = self._run(
            lambda: self.forward_layer.forward(xs, **f_kw),
            lambda: self.backward_layer.forward(xs, **b_kw),
            N,
            T,
        )
        self._shape = (N, T)
        if self.merge == "sum":
            return np.add(hf, hb, out=hf)
        out = np.empty((N, T, self.output_size), hf.dtype)
        Hf = self.hidden_sizes[0]
        out[:, :, :Hf] = hf
        out[:, :, Hf:] = hb
        return out

    def backward(self, dhs):
        """dxs (N, T, D) for dhs (the gradient of hs); fills both directions' grads."""
        if self._shape is None:
            raise RuntimeError(
                "Bidirectional.backward() called before forward(): there is no forward pass "
                "to differentiate"
            )
        N, T = self._shape
        dhs = np.asarray(dhs)
        if dhs.shape != (N, T, self.output_size):
            raise ValueError(
                f"dhs must have shape {(N, T, self.output_size)} (the last forward's hs), "
                f"got {dhs.shape}"
            )
        if self.merge == "sum":
            df = db = dhs
        else:
            Hf = self.hidden_sizes[0]
            df = np.ascontiguousarray(dhs[:, :, :Hf])
            db = np.ascontiguousarray(dhs[:, :, Hf:])
        dxf, dxb = self._run(
            lambda: self.forward_layer.backward(df),
            lambda: self.backward_layer.backward(db),
            N,
            T,
        )
        return np.add(dxf, dxb, out=dxf)

    # ---- persistence --------------------------------------------------------------------------

    def get_config(self):
        """``{"merge": ..., "forward": {cell, sizes, ...}, "backward": {...}}`` (JSON)."""
        return {
            "merge": self.merge,
            "forward": layer_entry(self.forward_layer, "forward_layer"),
            "backward": layer_entry(self.backward_layer, "backward_layer"),
        }

    @classmethod
    def from_config(cls, config, params):
        """Rebuild from ``get_config()``'s dict and ``params`` (3 arrays per direction)."""
        if not isinstance(config, dict) or not {"forward", "backward"} <= set(config):
            raise ValueError("Bidirectional config must be a dict with 'forward' and 'backward'")
        params = list(params)
        if len(params) != 6:
            raise ValueError(
                f"Bidirectional takes 6 params (Wx, Wh, b per direction), got {len(params)}"
            )
        fwd = layer_from_entry(config["forward"], params[:3], "forward_layer")
        bwd = layer_from_entry(config["backward"], params[3:], "backward_layer")
        return cls(fwd, bwd, merge=config.get("merge", "concat"))
