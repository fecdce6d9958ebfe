"""The public recurrent layers: a drop-in replacement for the NumPy "time layers".

``TimeRNN``, ``TimeLSTM`` and ``TimeGRU`` keep the interface of the pure-NumPy layers they replace
(``params``, ``grads``, ``forward(xs)``, ``backward(dhs)``, ``h``, ``c``, ``dh``, ``stateful``,
``set_state``, ``reset_state``); ``RNN``, ``LSTM`` and ``GRU`` are the single-step cells.  This
module only validates, manages state and caches, and calls the Cython kernels in ``src/``, which
run the whole time loop with the GIL released.

Contract, shared by every layer here:

- ``params`` holds the caller's arrays and is read afresh at every call, so optimizers may update
  them in place (or replace list items).  Computation runs in the parameters' dtype (float32 or
  float64); inputs of the other float dtype are converted, outputs have the parameters' dtype.
- ``grads`` is allocated once and overwritten in place by every backward.
- Every check happens before anything is written: a call that raises leaves params, grads, state
  and the caches of the previous forward exactly as they were.  (One check is made by the
  kernel: see _weights_checked_by_kernel.)
- Layers keep no global state and never touch NumPy's random state.
- Variable lengths and direction: ``forward(xs, lengths)`` runs each row over its own first
  ``lengths[n]`` steps (outputs zero past them), and a layer made with ``reverse=True`` walks
  each row from its own last valid step back to 0 (PyTorch's packed-sequence semantics for the
  reverse half of a bidirectional RNN), both inside the kernels with no padded work
  (``src/cells/_steps.pxd``).  A reverse layer cannot be stateful.
- ``threads``: None (default) uses as many threads as the kernels' BLAS is set to
  (``fastrnn.blas_info()``; ``threadpoolctl.threadpool_limits`` controls both), for calls with
  enough work; an integer fixes it.  With more than one, the kernels share out all the work
  themselves and hold BLAS at one thread for the call (see ``fastrnn._threads``).  Results do
  not depend on the setting beyond rounding.
"""

import contextlib

import numpy as np

from .. import _packed, _recurrent
from .._checks import grads_ready, params_ready, ready
from .._norms import all_finite
from .._packed import DIRECT_MAX_ROWS
from .._threads import ThreadSetting, plan_threads, runs_direct, single_threaded_blas
from ..io import register
from ._precision import MatmulPrecision

__all__ = ["TimeRNN", "TimeLSTM", "TimeGRU", "RNN", "LSTM", "GRU"]

_BLAS_INT_MAX = 2**31 - 1

# _thread_plan's context when BLAS is left as it is; callers test for it and skip the `with`
# (entering and leaving even a null context costs a few tenths of a microsecond, a tenth of
# a small cell's whole step)
_NO_HOLD = contextlib.nullcontext()


_NATIVE_FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}


def _native(dtype):
    """float32/float64 in native byte order, or None for any other dtype."""
    if dtype in _NATIVE_FLOATS:  # the common case, a set lookup
        return dtype
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return dtype.newbyteorder("=")
    return None


def _shape_ok(arr, shape):
    if arr.ndim != len(shape):
        return False
    for want, got in zip(shape, arr.shape):
        if want is not None and want != got:
            return False
    return True


def _as_float_array(value, name, dtype, shape):
    """value as a C-contiguous array of `dtype` with `shape` (None entries match any size).

    Accepts float32/float64 input of any layout or byte order (converted, as the NumPy layers
    would); refuses integers, float16, complex, wrong shapes and NaN/Inf, including values that
    overflow to Inf in the conversion, with an error naming `name`.  (Runs on every call of every
    layer, so the common case, an array already right, is recognised in C first.)"""
    if ready(value, dtype.num, shape):
        return value
    arr = value if type(value) is np.ndarray else np.asarray(value)
    if _native(arr.dtype) is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    if not _shape_ok(arr, shape):
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        with np.errstate(over="ignore"):  # overflow is reported below, as an error
            arr = np.ascontiguousarray(arr, dtype=dtype)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or Inf (after conversion to {np.dtype(dtype)})")
    return arr


def _weights_checked_by_kernel(N, T):
    """Does the kernel vouch for Wx and Wh being free of NaN/Inf on a call of N rows, T steps?

    A single step reads every weight once for its products, as a pass over the weights looking
    for NaN/Inf does: for a wide step that pass cost 15-25 % of a cell's forward (LSTM N4 and
    N20 H650), and as much as the products for one row (a generation step).  With every input
    finite (checked first), a NaN or Inf in Wx or Wh makes the pre-activation x Wx + h Wh of its
    column NaN or +-Inf in every row (0 * Inf and NaN * 0 are NaN), and likewise backward's
    dX = dG Wx^T and dh0 = dG Wh^T -- provided every term is computed, which fastrnn's own
    direct kernels do (BLAS libraries may skip zeros: reference BLAS does).  So for T = 1 and
    N <= DIRECT_MAX_ROWS, where every product is fastrnn's (step_path in src/gemm/_packed.pxd), the
    kernel flags non-finite results instead; only then are the weights scanned, to raise the
    same error (or, if they are finite, to accept the result: it overflowed).  Forward works in
    spare caches and backward stops before the gradients, so the raise still leaves everything
    as it was."""
    return T == 1 and 1 <= N <= DIRECT_MAX_ROWS


def _scan_weights(Wx, Wh):
    for name, p in (("Wx", Wx), ("Wh", Wh)):
        if not all_finite(p):
            raise ValueError(f"{name} contains NaN or Inf")


_ALIGN = 64  # bytes: a cache line, and an AVX-512 vector


def _aligned_empty(shape, dtype):
    """np.empty(shape, dtype), but starting on a 64-byte boundary.  NumPy's buffers start 16
    bytes past one as often as not, and then every 64-byte load of the packed weights, and every
    row of a product's output, spans two cache lines: measured alternating (BENCHMARKS.md, "What
    changed" item 9), forward 1.02-1.07x with the packed weights aligned, and the batch-1 LSTM
    step's GEMV on Wh (row length 2 KiB) 25-40 % slower when Wh is not aligned."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _aligned_zeros(shape, dtype):
    a = _aligned_empty(shape, dtype)
    a[...] = 0
    return a


def _weight_grads(Wx, Wh, b):
    """Zeroed gradient arrays [dWx, dWh, db] in native byte order, dWh directly after dWx in one
    buffer: the kernels then make both with one product (weight_grad_cols in src/cells/_seq.pxd)."""
    both = _aligned_zeros(Wx.size + Wh.size, Wh.dtype)
    return [
        both[: Wx.size].reshape(Wx.shape),
        both[Wx.size :].reshape(Wh.shape),
        np.zeros(b.shape, b.dtype),
    ]


# ---- persistence (fastrnn.save / fastrnn.load) ---------------------------------------------------


def _config_values(cls, config, required, optional=()):
    """The entries of `config` for cls.from_config, checked: a dict with every `required` key, no
    keys beyond `required` and `optional`."""
    if not isinstance(config, dict):
        raise TypeError(f"{cls.__name__} config must be a dict, got {type(config).__name__}")
    missing = [k for k in required if k not in config]
    extra = sorted(set(config) - set(required) - set(optional))
    if missing or extra:
        raise ValueError(
            f"{cls.__name__} config must have keys {list(required)}"
            + (f" (optionally {list(optional)})" if optional else "")
            + f"; missing {missing}, unexpected {extra}"
        )
    return config


def _config_size(cls, config, key):
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{cls.__name__} config {key} must be a positive integer, got {value!r}")
    return value


def _config_option(cls, config, key, default):
    """config[key], of the type of its default (a bool, or a string the constructor checks)."""
    value = config.get(key, default)
    if not isinstance(value, type(default)):
        kind = "true or false" if isinstance(default, bool) else "a string"
        raise TypeError(f"{cls.__name__} config {key} must be {kind}, got {value!r}")
    return value


def _params_for(cls, config, params, blocks, bias_2d):
    """params as [Wx, Wh, b], checked against the sizes in config."""
    D = _config_size(cls, config, "input_size")
    H = _config_size(cls, config, "hidden_size")
    if not isinstance(params, (list, tuple)) or len(params) != 3:
        raise ValueError(
            f"{cls.__name__} takes params [Wx, Wh, b], got "
            f"{len(params) if isinstance(params, (list, tuple)) else params!r}"
        )
    b_shape = (2, blocks * H) if bias_2d else (blocks * H,)
    for name, p, shape in zip(
        ("Wx", "Wh", "b"), params, ((D, blocks * H), (H, blocks * H), b_shape)
    ):
        if not isinstance(p, np.ndarray):
            raise TypeError(
                f"{cls.__name__} param {name} must be a numpy array, got {type(p).__name__}"
            )
        if p.shape != shape:
            raise ValueError(
                f"{cls.__name__} param {name} must have shape {shape} for "
                f"input_size={D}, hidden_size={H}, got {p.shape}"
            )
    return list(params)


def _sizes(layer):
    dWx, dWh = layer.grads[0], layer.grads[1]
    return {"input_size": int(dWx.shape[0]), "hidden_size": int(dWh.shape[0])}


class _TimeLayer(MatmulPrecision, ThreadSetting):
    """What TimeRNN, TimeLSTM and TimeGRU share; subclasses name their kernel and caches."""

    blocks = 1  # gate blocks: Wx is (D, blocks*H)
    has_cell = False  # LSTM carries c besides h
    bias_2d = False  # b is (2, blocks*H) (GRU reset_after) rather than (blocks*H,)
    _direct_plan = None  # (threads, N, T, forward) of the last call _thread_plan found runs_direct
    grads = None  # (until __init__ has read the params)

    def __init__(self, Wx, Wh, b, stateful=False, reverse=False, matmul_precision="highest"):
        if not isinstance(reverse, (bool, np.bool_)):
            raise TypeError(f"reverse must be True or False, got {reverse!r}")
        if reverse and stateful:
            raise ValueError(
                "reverse=True cannot be stateful: a reverse layer's state comes from the "
                "end of the sequence, there is nothing to carry into the next batch"
            )
        self.params = [Wx, Wh, b]
        Wx, Wh, b = self._read_params()
        self._check_sizes(1, 1, Wx.shape[0], Wh.shape[0])  # D and H are the layer's for life
        self.grads = _weight_grads(Wx, Wh, b)
        self.matmul_precision = matmul_precision
        self.stateful = stateful
        self.reverse = bool(reverse)
        self._lengths = None  # the lengths of the last forward (int64 (N,)), or None
        self._plan = None  # the kernel's plan of the last forward with lengths or reverse (_plan)
        self.h = None
        self.dh = None
        if self.has_cell:
            self.c = None
            self.dc = None
        # gradient-flow diagnostics: backward records ||dL/dh_t|| (and ||dL/dc_t||) when True
        # (with lengths or reverse, entry s is every row's s-th processed step)
        self.track_grad_norms = False
        self.threads = None  # None: follow the BLAS thread setting (see the module doc)
        self.grad_norms_h = None
        self.grad_norms_c = None
        self._last = None  # (N, T, D, H, dtype) of the forward the caches hold
        self._cache = None  # forward caches, reused while shapes stay the same
        self._spare = None  # a second set of the same shapes (see _forward)
        self._scratch = None  # backward work buffers, likewise
        self._wh_aligned = None  # batch 1's copy of Wh on a 64-byte boundary (_step_weights)
        # the weights packed for the per-step products (Wh in forward, Wh^T in backward; the
        # RNN's forward may take [Wx; Wh], fused_steps in src/cells/_recurrent.pyx);
        # refilled by every call, so one buffer serves both; made by the first forward (for
        # the D, H and dtype of _wp_key)
        self._wp = None
        self._wp_key = None

    def get_config(self):
        """The constructor arguments besides the weights, as a JSON-serializable dict (the
        persistence protocol of ``fastrnn.save``); the sizes are recorded to check the weights
        against on load."""
        config = _sizes(self)
        config["stateful"] = bool(self.stateful)
        config["reverse"] = bool(self.reverse)
        if self.matmul_precision != "highest":  # (configs from before it read the same)
            config["matmul_precision"] = self.matmul_precision
        config.update(self._extra_config())
        return config

    def _param_dtype(self):  # (matmul_precision: the products; the row passes stay in dtype)
        return self.grads[0].dtype

    def _extra_config(self):
        return {}

    @classmethod
    def from_config(cls, config, params):
        """A new layer from ``get_config()``'s dict and the arrays [Wx, Wh, b] (shapes checked
        against the config's input_size and hidden_size)."""
        defaults = {
            "stateful": False,
            "reverse": False,
            "matmul_precision": "highest",
            **cls._extra_defaults(),
        }
        _config_values(cls, config, ("input_size", "hidden_size"), tuple(defaults))
        kwargs = {k: _config_option(cls, config, k, d) for k, d in defaults.items() if k in config}
        blocks = cls.blocks
        bias_2d = kwargs.get("reset_after", False)
        return cls(*_params_for(cls, config, params, blocks, bias_2d), **kwargs)

    @classmethod
    def _extra_defaults(cls):
        return {}

    def _thread_plan(self, N, T, D, H, forward=False):
        """(kernel threads, a context for BLAS's threads during the call): see _threads."""
        setting = self._threads
        key = (setting, N, T, forward)
        if self._direct_plan == key:  # the last call's plan (a small step's 0.3 us)
            return 1, _NO_HOLD
        GH = self.blocks * H
        step_macs = N * T * H * GH
        # a wide LSTM's forward of one row takes every thread (the kernel's rule: over steps
        # each thread its units, a single step split over the rows of [Wx; Wh])
        by_units = forward and self.has_cell and _recurrent.few_rows_by_units(self._cell, N, T, H)
        if not by_units and runs_direct(setting, N, T, step_macs):  # (D and H are fixed)
            self._direct_plan = key
            return 1, _NO_HOLD
        threads, hold_blas = plan_threads(
            setting, N, T, step_macs, N * T * GH * max(D, H), by_units=by_units
        )
        return threads, single_threaded_blas() if hold_blas else _NO_HOLD

    # ---- parameters and inputs -------------------------------------------------------------

    def _bias_shape(self, H):
        return (2, self.blocks * H) if self.bias_2d else (self.blocks * H,)

    def _read_params(self, scan_weights=True):
        """The current params, checked, as C-contiguous arrays (copies only for views like W.T).
        Without scan_weights, Wx and Wh are not tested for NaN/Inf (the caller does it)."""
        params, grads = self.params, self.grads
        if (
            grads is not None
            and type(params) is list
            and params_ready(params, grads, self.blocks, self.bias_2d, scan_weights) >= 0
        ):
            return params[:]  # the common case, recognised in C
        if len(self.params) != 3:
            raise ValueError(f"params must be [Wx, Wh, b], got a list of {len(self.params)}")
        names = ("Wx", "Wh", "b")
        for name, p in zip(names, self.params):
            if not isinstance(p, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(p).__name__}")
        Wx, Wh, b = self.params
        native = [_native(p.dtype) for p in (Wx, Wh, b)]
        dtype = native[1]
        # (compare with `is None` first: np.dtype(None) is float64, so dtype == None can be True)
        if any(d is None for d in native) or native[0] != dtype or native[2] != dtype:
            raise TypeError(
                "parameters must all be float32 or all float64, got "
                f"Wx {Wx.dtype}, Wh {Wh.dtype}, b {b.dtype}"
            )
        G = self.blocks
        if Wh.ndim != 2 or Wh.shape[0] < 1 or Wh.shape[1] != G * Wh.shape[0]:
            raise ValueError(f"Wh must have shape (H, {G}*H) with H >= 1, got {Wh.shape}")
        H = Wh.shape[0]
        if Wx.ndim != 2 or Wx.shape[0] < 1 or Wx.shape[1] != G * H:
            raise ValueError(
                f"Wx must have shape (D, {G * H}) to match Wh {Wh.shape}, got {Wx.shape}"
            )
        if b.shape != self._bias_shape(H):
            raise ValueError(f"b must have shape {self._bias_shape(H)}, got {b.shape}")
        if grads is not None:
            for g, p in zip(grads, self.params):
                if g.shape != p.shape or g.dtype != dtype:
                    raise ValueError(
                        "params changed shape or dtype since the layer was built (grads are "
                        f"{[g.shape for g in grads]} {grads[0].dtype}); build a new layer for "
                        "new shapes or dtype"
                    )
        params = []
        for name, p in zip(names, self.params):
            if p.dtype != dtype or not p.flags.c_contiguous:
                p = np.ascontiguousarray(p, dtype=dtype)  # views like W.T, other byte order
            if (scan_weights or name == "b") and not all_finite(p):
                raise ValueError(f"{name} contains NaN or Inf")
            params.append(p)
        return params

    def _check_sizes(self, N, T, D, H):
        # BLAS takes 32-bit dimensions: the largest are N*T rows and a T*blocks*H row stride
        # (`or`, not max() of a tuple: this runs on every single step)
        if N * T > _BLAS_INT_MAX or T * self.blocks * H > _BLAS_INT_MAX or D > _BLAS_INT_MAX:
            raise ValueError(
                f"sequence batch too large for 32-bit BLAS: N={N}, T={T}, D={D}, H={H}"
            )

    def _initial_state(self, name, value, N, H, dtype):
        """The carried state `name` for a batch of N, or zeros."""
        if value is None:
            return np.zeros((N, H), dtype)
        if value.shape[0] != N:
            raise ValueError(
                f"batch size {N} of xs does not match the carried state {name} of "
                f"batch size {value.shape[0]}; call reset_state() or set_state() "
                "before changing the batch size"
            )
        return _as_float_array(value, name, dtype, (N, H))

    def set_state(self, h, c=None):
        """Set the carried state (used by the next forward when stateful); copies the arrays."""
        if c is not None and not self.has_cell:
            raise TypeError(f"{type(self).__name__} has no cell state; set_state takes h only")
        H, dtype = self.grads[1].shape[0], self.grads[1].dtype
        h = _as_float_array(h, "h", dtype, (None, H)).copy()
        if c is not None:
            c = _as_float_array(c, "c", dtype, (h.shape[0], H)).copy()
        self.h = h  # assigned only once both are valid
        if self.has_cell:
            self.c = c

    def reset_state(self):
        self.h = None
        if self.has_cell:
            self.c = None

    # ---- forward / backward -------------------------------------------------------------------

    def _step_weights(self, Wh, N, T):
        """Wh as the kernels read it at every step.  A batch of one row over several steps
        multiplies the unpacked Wh by one row per step (BLAS's GEMV: packing pays nothing there,
        worth_packing in src/gemm/_packed.pxd); where Wh does not start on a 64-byte boundary, every
        load of a row of it spans two cache lines, so it is read from an aligned copy, made
        again at every call (a pass over Wh, as packing it would be; the caller's Wh may have
        changed in between).  Anything else: Wh itself (the packed copy is aligned, and a single
        step would pay more for the copy than it saves)."""
        if N != 1 or T < 2 or Wh.ctypes.data % _ALIGN == 0:
            return Wh
        copy = self._wh_aligned
        if copy is None or copy.shape != Wh.shape or copy.dtype != Wh.dtype:
            copy = self._wh_aligned = _aligned_empty(Wh.shape, Wh.dtype)
        np.copyto(copy, Wh)
        return copy

    def forward(self, xs, lengths=None, h_mask=None):
        """hs (N, T, H) for xs (N, T, D); carries the last state when stateful.

        lengths: None (every row runs all T steps), or an integer array of shape (N,) with
        1 <= lengths[n] <= T: row n runs its first lengths[n] steps only (t = 0 .. len-1, or
        with ``reverse=True`` t = len-1 down to 0, as the reverse half of PyTorch's
        bidirectional RNN on a packed sequence).  hs[n, t] is the state after processing
        position t, zero for t >= lengths[n]; ``h`` (and ``c``) hold each row's state after its
        own last step.  The backward of this forward uses the same lengths: gradients past a
        row's length are not used (they must still be finite; dxs is zero there).

        h_mask: None, or recurrent (variational) dropout's mask, an (N, H) array of finite
        values (normally 0 and 1/(1-p)), multiplying h_{t-1} (h0 at t = 0) where it enters the
        recurrent product h_{t-1} @ Wh, the same mask at every step (Gal and Ghahramani
        2016).  Only the product's input is masked: hs, the carried state and the paths that
        bypass the product (the LSTM's cell, the GRU's (1 - z) * h_{t-1}) see h_{t-1}
        unmasked, as in Keras' recurrent_dropout.  The backward of this forward uses the same
        mask (copied: later changes to the caller's array do not matter)."""
        Wx, Wh, b = self._read_params(scan_weights=False)  # _forward sees to them
        D, H, dtype = Wx.shape[0], Wh.shape[0], Wh.dtype
        xs = _as_float_array(xs, "xs", dtype, (None, None, D))
        N, T = xs.shape[0], xs.shape[1]
        if h_mask is not None:
            h_mask = _as_float_array(h_mask, "h_mask", dtype, (N, H))
        lengths = _check_lengths(lengths, N, T)
        if self.reverse and self.stateful:
            raise ValueError("a reverse layer cannot be stateful (set stateful=False)")
        carried = self.stateful
        h0 = self._initial_state("h", self.h if carried else None, N, H, dtype)
        c0 = (
            self._initial_state("c", self.c if carried else None, N, H, dtype)
            if self.has_cell
            else None
        )
        if lengths is None and (not self.reverse or T <= 1):
            hs, hT, cT = self._forward(xs, Wx, Wh, b, h0, c0, h_mask)
            self._lengths = self._plan = None
        else:
            full = lengths if lengths is not None else np.full(N, T, np.intp)
            plan = _plan(full, T)
            hs, _, _ = self._forward(xs, Wx, Wh, b, h0, c0, h_mask, carry=False, plan=plan)
            rows = np.arange(N)
            hT = hs[rows, 0 if self.reverse else full - 1]  # each row's last step
            cT = None
            if self.has_cell:  # C in the kernel's packed layout: slot j's step s at first[s] + j
                slots, length, first = plan[:N], plan[N : 2 * N], plan[2 * N : 2 * N + T + 1]
                cT = np.empty((N, H), dtype)
                cT[slots] = self._cache["C"].reshape(-1, H)[first[length - 1] + rows]
            self._lengths, self._plan = lengths, plan
        self.h = hT
        if self.has_cell:
            self.c = cT
        return hs

    def _forward(self, xs, Wx, Wh, b, h0, c0, h_mask=None, carry=True, plan=None):
        """Run the kernel on validated inputs (Wx and Wh not yet tested for NaN/Inf; h_mask
        checked or None); returns (hs, h_T, c_T) and keeps the caches (h_T None unless carry:
        a cell returns hs itself).  xs (N, T, D), or (N, D) for a cell's step: hs (N, H) then
        (no views made and taken apart: a small step's time is mostly such fixed costs)."""
        H, dtype = Wh.shape[0], Wh.dtype
        if xs.ndim == 2:
            (N, D), T = xs.shape, 1
            hs = np.empty((N, H), dtype)
        else:
            N, T, D = xs.shape
            hs = np.empty((N, T, H), dtype)
        verify = _weights_checked_by_kernel(N, T)
        if not verify:  # (a small step's sizes need no check: D and H were checked at __init__)
            _scan_weights(Wx, Wh)
            self._check_sizes(N, T, D, H)
        if N == 0 or T == 0:
            self._last = (N, T, D, H, dtype)
            return hs, h0, c0
        key = (N, T, D, H, dtype)
        # the kernel's check of the weights comes after it has written: it writes into the spare
        # set then, and the caches of the last forward stay as they were until it has passed
        cache = self._spare if verify else self._cache
        if cache is None or cache["key"] != key:
            # XH: the inputs and the previous hidden states side by side, (N, T, D + H); the
            # kernel copies xs in, so that backward does not see later in-place changes to them
            cache = {
                "key": key,
                "XH": _aligned_empty((N, T, D + H), dtype),
                "c0": np.empty((N, H), dtype),
                **{k: _aligned_empty(s, dtype) for k, s in self._cache_shapes(N, T, H).items()},
            }
        if c0 is not None:  # (likewise for the initial cell state)
            np.copyto(cache["c0"], c0)
        cache["M"] = None  # recurrent dropout's mask, kept for backward
        if h_mask is not None:
            if "mask" not in cache:
                cache["mask"] = np.empty((N, H), dtype)
                cache.update(
                    {
                        k: _aligned_empty(s, dtype)
                        for k, s in self._mask_cache_shapes(N, T, H).items()
                    }
                )
            np.copyto(cache["mask"], h_mask)
            cache["M"] = cache["mask"]
        if self._wp is None:  # (D, H and dtype are the layer's for life: _read_params)
            self._wp = _aligned_empty(
                max(
                    sum(_packed.size(K, M, dtype) for K, M in packs)
                    for packs in self._packed_shapes(D, H)
                ),
                dtype,
            )
            self._wp_key = (D, H, dtype)
        threads, blas = self._thread_plan(N, T, D, H, forward=True)
        Wh_steps = Wh if T == 1 else self._step_weights(Wh, N, T)
        args = (self._cell, cache, xs, Wx, Wh_steps, b, h0, hs, self._wp, threads, verify, plan)
        if blas is _NO_HOLD:
            nonfinite = _recurrent.forward(*args, self.reverse, self._bf16)
        else:
            with blas:
                nonfinite = _recurrent.forward(*args, self.reverse, self._bf16)
        if nonfinite:
            _scan_weights(Wx, Wh)  # raises if the weights are at fault; else it overflowed
        if cache is not self._cache:
            old = self._cache
            self._cache = cache
            self._spare = old if old is not None and old["key"] == key else None
        self._last = key
        hT = hs[:, -1].copy() if carry else None
        cT = cache["C"][:, -1].copy() if self.has_cell else None
        return hs, hT, cT

    def _mask_cache_shapes(self, N, T, H):
        return {}  # caches needed only with a mask (the GRU's)

    def _kernel_backward(
        self, cache, scratch, dhs, dc_next, Wx, Wh, dxs, dh0, dc0, sq, threads, plan, check
    ):
        """The kernel's backward of this layer's cell: fills grads, dxs, dh0 (dc0) and sq."""
        dWx, dWh, db = self.grads
        return _recurrent.backward(
            self._cell,
            cache,
            scratch,
            dhs,
            dc_next,
            Wx,
            Wh,
            dWx,
            dWh,
            db,
            dxs,
            dh0,
            dc0,
            sq,
            self._wp,
            threads,
            check,
            plan,
            self.reverse,
            self._bf16,
        )

    def backward(self, dhs):
        """dxs (N, T, D) for the gradient dhs (N, T, H) of the last forward's hs; fills grads,
        ``dh`` (the gradient w.r.t. the initial state; ``dc`` for the LSTM).  With lengths, dhs
        past a row's length is not used (it must still be finite) and dxs is zero there."""
        return self._backward(dhs, None)[0]

    def _backward(self, dhs, dc_next, step=False):
        """Backward of the last forward; returns (dxs, dh0, dc0) and fills grads.  step: a
        cell's (T = 1), dhs (N, H) and dxs (N, D)."""
        if self._last is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): "
                "there is no forward pass to differentiate"
            )
        N, T, D, H, dtype = self._last
        verify = _weights_checked_by_kernel(N, T)
        # same shapes and dtype as at construction; Wx and Wh scanned here or checked by the kernel
        Wx, Wh, b = self._read_params(scan_weights=not verify)
        if step:
            dhs = _as_float_array(dhs, "dh_next", dtype, (N, H))
        else:
            dhs = _as_float_array(dhs, "dhs", dtype, (N, T, H))
        if dc_next is not None:
            dc_next = _as_float_array(dc_next, "dc_next", dtype, (N, H))
        for name, g, p in zip(("dWx", "dWh", "db"), self.grads, (Wx, Wh, b)):
            if grads_ready(self.grads, [Wx, Wh, b]):
                break  # all three fine (checked in C)
            if (
                not isinstance(g, np.ndarray)
                or g.shape != p.shape
                or g.dtype != dtype
                or not g.flags.c_contiguous
                or not g.flags.writeable
            ):
                raise ValueError(
                    f"grads entry {name} must be a writeable C-contiguous {dtype} "
                    f"array of shape {p.shape} (the layer allocates it; do not "
                    "replace it)"
                )
        dxs = np.empty((N, D) if step else (N, T, D), dtype)
        dh0 = np.empty((N, H), dtype)
        dc0 = np.empty((N, H), dtype) if self.has_cell else None
        width = 2 if self.has_cell else 1
        sq = np.zeros((T, width)) if self.track_grad_norms else None
        if N == 0 or T == 0:
            for g in self.grads:
                g[...] = 0
            dh0[...] = 0
            if dc0 is not None:
                dc0[...] = dc_next if dc_next is not None else 0
        else:
            if self._scratch is None or self._scratch["key"] != self._last:
                self._scratch = {
                    k: _aligned_empty(s, dtype) for k, s in self._scratch_shapes(N, T, H).items()
                }
                self._scratch["acc"] = np.empty(self.blocks * H)  # float64 column sums
                self._scratch["key"] = self._last
            threads, blas = self._thread_plan(N, T, D, H)
            Wh_steps = self._step_weights(Wh, N, T)
            plan = self._plan
            if plan is not None and "dXp" not in self._scratch:
                self._scratch["dXp"] = _aligned_empty((N * T, D), dtype)  # dX in cache rows
            with blas:
                kernel_args = (
                    self._cache,
                    self._scratch,
                    dhs,
                    dc_next,
                    Wx,
                    Wh_steps,
                    dxs,
                    dh0,
                    dc0,
                    sq,
                    threads,
                    plan,
                )
                nonfinite = self._kernel_backward(*kernel_args, verify)
                if nonfinite:  # the kernel stopped before the gradients
                    _scan_weights(Wx, Wh)  # raises if the weights are at fault
                    if sq is not None:  # else it overflowed: the whole backward, unchecked
                        sq[...] = 0
                    self._kernel_backward(*kernel_args, False)
        self.dh = dh0
        if self.has_cell:
            self.dc = dc0
        if sq is not None:
            self.grad_norms_h = np.sqrt(sq[:, 0])
            self.grad_norms_c = np.sqrt(sq[:, 1]) if self.has_cell else None
        else:
            self.grad_norms_h = self.grad_norms_c = None
        return dxs, dh0, dc0


def _check_lengths(lengths, N, T):
    """lengths as a C-contiguous int64 array of shape (N,) with 1 <= lengths[n] <= T, or None
    (also when every row has all T steps: then nothing differs from no lengths)."""
    if lengths is None:
        return None
    arr = lengths if isinstance(lengths, np.ndarray) else np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"lengths must be an integer array of shape ({N},) (each row's number of valid "
            f"steps), got dtype {arr.dtype}"
        )
    if arr.shape != (N,):
        raise ValueError(
            f"lengths must have shape ({N},) (one length per batch row), got {arr.shape}"
        )
    if N == 0:
        return None
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 1 or hi > T:
        raise ValueError(
            f"lengths must be between 1 and T = {T} (the sequences' padded length), got values "
            f"from {lo} to {hi}"
        )
    if lo == T:
        return None
    return np.ascontiguousarray(arr, dtype=np.int64)


def _plan(lengths, T):
    """The kernels' plan for lengths (src/cells/_steps.pxd): the rows by length, longest first
    (stable), and where each step's rows start in the packed caches.  One intp array:
    slot_row (N), length (N), first (T + 1), active (T)."""
    order = np.argsort(-lengths, kind="stable")
    length = lengths[order]
    active = np.searchsorted(-length, -np.arange(T), side="left")  # slots with length > s
    first = np.zeros(T + 1, np.intp)
    np.cumsum(active, out=first[1:])
    return np.concatenate((order, length, first, active)).astype(np.intp)


_NONLINEARITIES = ("tanh", "relu")


def _check_nonlinearity(value):
    if not isinstance(value, str) or value not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {value!r}")
    return value


@register
class TimeRNN(_TimeLayer):
    """Vanilla RNN over a sequence: h_t = tanh(x_t Wx + h_{t-1} Wh + b), or with
    nonlinearity="relu" h_t = max(0, x_t Wx + h_{t-1} Wh + b) (as torch.nn.RNN's).

    Wx (D, H), Wh (H, H), b (H,); xs (N, T, D) -> hs (N, T, H).  reverse=True runs each row
    from its last valid step back to the first (see ``forward``); it cannot be stateful."""

    blocks = 1

    def __init__(
        self,
        Wx,
        Wh,
        b,
        stateful=False,
        nonlinearity="tanh",
        reverse=False,
        matmul_precision="highest",
    ):
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(Wx, Wh, b, stateful, reverse, matmul_precision)

    @property
    def _cell(self):  # the kernel's cell (src/cells/_loop.pxd)
        return _recurrent.CELLS["rnn_relu" if self.nonlinearity == "relu" else "rnn_tanh"]

    def _extra_config(self):
        return {"nonlinearity": self.nonlinearity}

    @classmethod
    def _extra_defaults(cls):
        return {"nonlinearity": "tanh"}

    def _cache_shapes(self, N, T, H):
        return {"G": (N, T, H)}

    def _packed_shapes(self, D, H):
        return [[(D + H, H)], [(H, H), (H, D)]]  # [Wx; Wh] (or Wh); Wh^T, Wx^T

    def _scratch_shapes(self, N, T, H):
        return {"dG": (N, T, H), "dh": (2, N, H)}


@register
class TimeLSTM(_TimeLayer):
    """LSTM over a sequence; gate blocks f, g, i, o.

    c_t = f * c_{t-1} + g * i,  h_t = o * tanh(c_t)  with f, i, o sigmoid and g tanh.
    Wx (D, 4H), Wh (H, 4H), b (4H,); xs (N, T, D) -> hs (N, T, H).  reverse=True runs each row
    from its last valid step back to the first (see ``forward``); it cannot be stateful."""

    blocks = 4
    has_cell = True
    _cell = _recurrent.CELLS["lstm"]  # the kernel's cell (src/cells/_loop.pxd)

    def _cache_shapes(self, N, T, H):
        return {"G": (N, T, 4 * H), "C": (N, T, H), "TC": (N, T, H)}

    def _packed_shapes(self, D, H):
        # Wh; Wh^T; or either in the threads' shares of the units, each padded to whole panels
        # of 16 columns (the time loop shared by units: use_units in src/cells/_recurrent.pyx)
        return [[(H, 4 * H)], [(4 * H, H)], [(H, 4 * ((H + 15) // 16 * 16))]]

    def _scratch_shapes(self, N, T, H):
        return {"dG": (N, T, 4 * H), "dh": (2, N, H), "dc": (2, N, H)}


@register
class TimeGRU(_TimeLayer):
    """GRU over a sequence; gate blocks z, r, h~ and h_t = (1 - z) * h_{t-1} + z * h~.

    reset_after=False (default): h~ = tanh(x Wxh + (r * h) Whh + bh), b (3H,).
    reset_after=True (cuDNN/PyTorch/Keras form): h~ = tanh(x Wxh + b[0]_h + r * (h Whh + b[1]_h)),
    b (2, 3H) with row 0 the input bias and row 1 the recurrent bias; z and r use b[0] + b[1].
    PyTorch's GRU maps on exactly, with the z block negated (its z is our 1 - z).
    Wx (D, 3H), Wh (H, 3H); xs (N, T, D) -> hs (N, T, H).  reverse=True runs each row from its
    last valid step back to the first (see ``forward``); it cannot be stateful."""

    blocks = 3

    def __init__(
        self,
        Wx,
        Wh,
        b,
        stateful=False,
        reset_after=False,
        reverse=False,
        matmul_precision="highest",
    ):
        self.reset_after = self.bias_2d = bool(reset_after)
        super().__init__(Wx, Wh, b, stateful, reverse, matmul_precision)

    @property
    def _cell(self):  # the kernel's cell (src/cells/_loop.pxd)
        return _recurrent.CELLS["gru_reset_after" if self.reset_after else "gru"]

    def _extra_config(self):
        return {"reset_after": self.reset_after}

    @classmethod
    def _extra_defaults(cls):
        return {"reset_after": False}

    def _cache_shapes(self, N, T, H):
        return {"G": (N, T, 3 * H), "AUX": (N, T, H), "S": (N, 3 * H)}

    def _mask_cache_shapes(self, N, T, H):
        return {"HU": (N, T, H)}  # the unmasked h_{t-1} (src/cells/_gru_cell.pxd)

    def _packed_shapes(self, D, H):
        # backward: [Whz Whr]^T and Whh^T separately (classic: h~ needs r first; reset_after:
        # the h~ block's gradient differs on the recurrent side); forward likewise for classic
        forward = [(H, 3 * H)] if self.reset_after else [(H, 2 * H), (H, H)]
        return [forward, [(2 * H, H), (H, H)]]

    def _scratch_shapes(self, N, T, H):
        shapes = {"dG": (N, T, 3 * H), "dh": (2, N, H)}
        if self.reset_after:
            shapes["dGh"] = (N, T, H)  # the h~ block of the recurrent side
        return shapes


# ---- single-step cells ------------------------------------------------------------------------


class _Cell:
    """A single-step cell: the sequence kernel run with T = 1 on explicit state."""

    def __init__(self, seq):
        self._seq = seq
        self.params = seq.params  # the same list and arrays: updates are seen by both
        self.grads = seq.grads

    def get_config(self):
        """The constructor arguments besides the weights (see ``_TimeLayer.get_config``)."""
        config = self._seq.get_config()
        del config["stateful"], config["reverse"]
        return config

    @classmethod
    def from_config(cls, config, params):
        """A new cell from ``get_config()``'s dict and the arrays [Wx, Wh, b]."""
        seq_cls = cls._seq_class
        defaults = seq_cls._extra_defaults()
        _config_values(cls, config, ("input_size", "hidden_size"), tuple(defaults))
        kwargs = {k: _config_option(cls, config, k, d) for k, d in defaults.items() if k in config}
        return cls(
            *_params_for(cls, config, params, seq_cls.blocks, kwargs.get("reset_after", False)),
            **kwargs,
        )

    def _step(self, x, h_prev, c_prev=None):
        seq = self._seq
        Wx, Wh, b = seq._read_params(scan_weights=False)  # _forward sees to them
        D, H, dtype = Wx.shape[0], Wh.shape[0], Wh.dtype
        # (the checks of _as_float_array, its C test first: a step pays for every call)
        num = dtype.num
        if not ready(x, num, (None, D)):
            x = _as_float_array(x, "x", dtype, (None, D))
        N = x.shape[0]
        h0 = h_prev
        if not ready(h_prev, num, (N, H)):
            h0 = _as_float_array(h_prev, "h_prev", dtype, (N, H))
        c0 = None if c_prev is None else _as_float_array(c_prev, "c_prev", dtype, (N, H))
        hs, _, cT = seq._forward(x, Wx, Wh, b, h0, c0, carry=False)
        return hs, cT

    def _step_back(self, dh_next, dc_next=None):
        seq = self._seq
        if seq._last is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): "
                "there is no forward pass to differentiate"
            )
        return seq._backward(dh_next, dc_next, step=True)


@register
class RNN(_Cell):
    """One RNN step: h_next = tanh(x Wx + h_prev Wh + b) (or max(0, .), nonlinearity="relu")."""

    _seq_class = TimeRNN

    def __init__(self, Wx, Wh, b, nonlinearity="tanh"):
        super().__init__(TimeRNN(Wx, Wh, b, nonlinearity=nonlinearity))

    def forward(self, x, h_prev):
        return self._step(x, h_prev)[0]

    def backward(self, dh_next):
        """Returns (dx, dh_prev)."""
        dx, dh_prev, _ = self._step_back(dh_next)
        return dx, dh_prev


@register
class LSTM(_Cell):
    """One LSTM step (gate blocks f, g, i, o); forward returns (h_next, c_next)."""

    _seq_class = TimeLSTM

    def __init__(self, Wx, Wh, b):
        super().__init__(TimeLSTM(Wx, Wh, b))

    def forward(self, x, h_prev, c_prev):
        if c_prev is None:
            raise TypeError("c_prev must be an array of shape (N, H), got None")
        return self._step(x, h_prev, c_prev)

    def backward(self, dh_next, dc_next):
        """Returns (dx, dh_prev, dc_prev)."""
        return self._step_back(dh_next, dc_next)


@register
class GRU(_Cell):
    """One GRU step (gate blocks z, r, h~); see TimeGRU for the two variants."""

    _seq_class = TimeGRU

    def __init__(self, Wx, Wh, b, reset_after=False):
        super().__init__(TimeGRU(Wx, Wh, b, reset_after=reset_after))

    def forward(self, x, h_prev):
        return self._step(x, h_prev)[0]

    def backward(self, dh_next):
        """Returns (dx, dh_prev)."""
        dx, dh_prev, _ = self._step_back(dh_next)
        return dx, dh_prev
