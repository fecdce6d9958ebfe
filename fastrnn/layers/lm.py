"""Language-model time layers: a drop-in for the book's NumPy ``TimeEmbedding``, ``TimeAffine``,
``TimeSoftmaxWithLoss`` and ``TimeDropout``, plus ``VariationalDropout``.

Same contract as the recurrent layers (``fastrnn.layers.recurrent``): ``params`` are the caller's
arrays, read afresh at every call; ``grads`` are allocated once and overwritten in place by every
backward; the parameters' dtype (float32 or float64) is the compute dtype (the layers without
parameters compute in their input's dtype); every check is made before the layer's state is
changed, so a call that raises leaves the layer as it was (an ``out=`` array it was given, or
the logits of ``TimeSoftmaxWithLoss(inplace=True)``, may have been partly written when NaN or
Inf is found in the data); no global random state is touched.

Buffers.  Every public ``forward``/``backward`` returns a *fresh* array that belongs to the caller,
as the book's layers do, so a result is never changed behind the caller's back by a later call.
Each also takes ``out=``: an array of the result's shape and dtype (C-contiguous, writeable) that
the result is written into instead, which is how a model avoids allocating activation-sized arrays
at every step.  What a layer keeps between forward and backward lives in its own buffers, reused
while the shapes stay the same:

- ``TimeEmbedding`` keeps a copy of the ids; ``TimeAffine`` a copy of ``x`` (so later in-place
  changes to the caller's arrays cannot corrupt backward);
- ``TimeSoftmaxWithLoss`` keeps a *reference* to the logits (copying N*T*V values would cost as
  much as the loss itself) and one log-sum-exp per row: do not modify the logits between forward
  and backward, except through ``backward(out=logits)``, which turns them into the gradient in
  place; with ``inplace=True`` forward itself turns them into the gradient (the fastest path,
  for models that own their logits buffer);
- ``TimeDropout`` keeps only a 64-bit key: its mask is a counter-based hash of (key, element
  index), recomputed by backward instead of stored.
"""

import contextlib

import numpy as np

from .. import _lm
from .._norms import all_finite
from .._threads import ThreadSetting, blas_threads, single_threaded_blas
from ._precision import MatmulPrecision
from .recurrent import _as_float_array, _native

__all__ = [
    "TimeAffine",
    "TimeDropout",
    "TimeEmbedding",
    "TimeSoftmaxWithLoss",
    "VariationalDropout",
]


# Below this many elements touched, a pass runs on one thread.  The passes here stream memory
# with little arithmetic (the softmax's exps aside), so a second core buys little: on this
# 2-core machine under load, VariationalDropout at N20 T35 D650 (455 k elements) took 2.9 ms on
# two threads and 0.39 ms on one (benches/lm_ab.py), while the softmax rows (7 M elements) ran
# 1.0-1.4x faster on two.  A guess between the two, not a measured optimum.
MIN_PARALLEL_ELEMENTS = 1 << 20
# Below this many multiply-adds, the affine layer's products run on one thread.
MIN_PARALLEL_MACS = 4_000_000


class _Threaded(ThreadSetting):
    """The ``threads`` setting shared by the layers: None (default) follows the kernels' BLAS
    thread setting for calls with enough work (``threadpoolctl.threadpool_limits`` controls both, as
    for the recurrent layers); an integer fixes it.  Results do not depend on it, except the
    affine layer's dx by rounding (its reduction over M is split between the threads)."""

    def _plan(self, work, threshold=MIN_PARALLEL_ELEMENTS):
        if self._threads is not None:
            return self._threads
        return default_threads(work, threshold)


def default_threads(work, threshold=MIN_PARALLEL_ELEMENTS):
    """The kernels' BLAS thread setting for a pass of `work` elements, 1 below `threshold`."""
    return blas_threads() if work >= threshold else 1


# ---- shared checks ---------------------------------------------------------------------------


def _float_param(value, name, ndim):
    """A parameter given to a constructor: a float32/float64 ndarray of `ndim` dimensions."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if _native(value.dtype) is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {value.dtype}")
    if value.ndim != ndim or 0 in value.shape:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {value.shape}")
    return value


def _float_input(value, name, shape):
    """value as a C-contiguous float32/float64 array of `shape`, in its own float dtype."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    dtype = _native(arr.dtype)
    if dtype is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    return _as_float_array(arr, name, dtype, shape)


def _float_unscanned(value, name, shape, dtype=None):
    """value as a C-contiguous float array of `shape` (None entries match any size), in `dtype`
    (default: its own float dtype), *not* scanned for NaN/Inf: for the kernels that find them on
    their way through the data (softmax, dropout), which spares a pass over it."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    native = _native(arr.dtype)
    if native is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    if arr.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, arr.shape)):
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")
    dtype = native if dtype is None else dtype
    if arr.dtype != dtype or not arr.flags.c_contiguous or not arr.flags.aligned:
        with np.errstate(over="ignore"):  # overflow to Inf is found by the kernel
            arr = np.ascontiguousarray(arr, dtype)
    return arr


def _out_array(out, name, shape, dtype, inputs=(), same_ok=None):
    """The caller's `out=` array after checks, or a fresh one.  `out` may not overlap any of
    `inputs` (a product would read what it has overwritten), except that it may be `same_ok`
    itself (an element-wise pass, in place)."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or None, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(
            f"{name} must have shape {tuple(shape)} and dtype {np.dtype(dtype)}, "
            f"got {out.shape} {out.dtype}"
        )
    if not (out.flags.c_contiguous and out.flags.writeable and out.flags.aligned):
        raise ValueError(f"{name} must be a writeable C-contiguous array")
    for arr in inputs:
        if np.may_share_memory(out, arr) and not (
            same_ok is not None and arr is same_ok and _same_buffer(out, arr)
        ):
            raise ValueError(f"{name} overlaps an input of the call; pass a separate array")
    return out


def _same_buffer(a, b):
    """a and b are the same C-contiguous elements (in place is safe for element-wise work)."""
    return (
        a.ctypes.data == b.ctypes.data
        and a.size == b.size
        and a.dtype == b.dtype
        and a.flags.c_contiguous
        and b.flags.c_contiguous
    )


def _integer_ids(value, name, shape, upper, ignore=None):
    """value as an int64 array of `shape` (None entries match any size) with 0 <= id < upper
    (or id == ignore)."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an array of integer ids, got dtype {arr.dtype}")
    if arr.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, arr.shape)):
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")
    if arr.size:
        bad = (arr < 0) | (arr >= upper)
        if ignore is not None:
            bad &= arr != ignore
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            allowed = f"0 <= id < {upper}" + ("" if ignore is None else f" or {ignore}")
            raise ValueError(f"{name} must hold ids with {allowed}; {name}[{first}] = {arr[first]}")
    return arr


def _check_ratio(dropout_ratio):
    if isinstance(dropout_ratio, bool) or not isinstance(dropout_ratio, (int, float, np.number)):
        raise TypeError(f"dropout_ratio must be a number in [0, 1), got {dropout_ratio!r}")
    ratio = float(dropout_ratio)
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"dropout_ratio must be in [0, 1), got {dropout_ratio!r}")
    return ratio


def _check_seed(seed):
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise TypeError(f"seed must be None or a non-negative integer, got {seed!r}")
    return None if seed is None else int(seed)


def _check_param_list(cls, config, params, expected):
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    params = list(params)
    if len(params) != expected:
        raise ValueError(f"{cls.__name__} takes {expected} parameter arrays, got {len(params)}")
    return params


# ---- TimeEmbedding -----------------------------------------------------------------------------


class TimeEmbedding(_Threaded):
    """Embedding lookup over a batch of sequences: ``xs`` (N, T) integer ids -> ``W[xs]`` (N, T, D).

    Parameters
    ----------
    W : ndarray, shape (V, D), float32 or float64
        The embedding matrix (kept, not copied: ``params[0] is W``).

    Notes
    -----
    ``backward(dout)`` returns None (ids have no gradient) and fills ``grads[0]`` (V, D) with the
    scatter-add of ``dout`` over the ids, repeated ids summed."""

    def __init__(self, W):
        W = _float_param(W, "W", 2)
        self.params = [W]
        self.grads = [np.zeros(W.shape, _native(W.dtype))]
        self._ids = None  # int64 copy of the last forward's ids, (N, T)
        self._spare_ids = None  # the one before, reused by the next forward

    def get_config(self):
        """Constructor arguments besides the parameters (none)."""
        return {}

    @classmethod
    def from_config(cls, config, params):
        """Rebuild from ``get_config()`` and ``[W]``."""
        (W,) = _check_param_list(cls, config, params, 1)
        return cls(W)

    def _weight(self):
        W = self.params[0]
        dW = self.grads[0]
        if not isinstance(W, np.ndarray) or W.shape != dW.shape or _native(W.dtype) != dW.dtype:
            raise ValueError(
                f"W changed since the layer was built (grads are {dW.shape} "
                f"{dW.dtype}, W is {getattr(W, 'shape', None)} "
                f"{getattr(W, 'dtype', None)}); build a new layer"
            )
        return W

    def forward(self, xs, out=None):
        """Rows of W for the ids ``xs`` (N, T): a fresh (N, T, D) array, or written into ``out``."""
        W = self._weight()
        V, D = W.shape
        ids = _integer_ids(xs, "xs", (None, None), V)
        N, T = ids.shape
        dtype = self.grads[0].dtype
        out = _out_array(out, "out", (N, T, D), dtype, (W,))
        keep = self._ids
        if keep is None or keep.shape != ids.shape:
            keep = np.empty(ids.shape, np.int64)
        else:
            keep = self._spare_ids if self._spare_ids is not None else np.empty_like(keep)
        np.copyto(keep, ids, casting="unsafe")
        if W.dtype != dtype or not W.flags.aligned:
            W = np.ascontiguousarray(W, dtype)  # (other byte orders; views are read as such)
        if not _lm.embed_gather(W, keep, out, self._plan(N * T * D)):
            raise ValueError("W contains NaN or Inf in rows selected by xs")
        self._spare_ids = (
            self._ids if self._ids is not None and self._ids.shape == keep.shape else None
        )
        self._ids = keep
        return out

    def backward(self, dout):
        """Fill grads[0] with the scatter-add of ``dout`` (N, T, D) over the last ids; None."""
        if self._ids is None:
            raise RuntimeError("TimeEmbedding.backward() called before forward()")
        W = self._weight()
        N, T = self._ids.shape
        dout = _as_float_array(dout, "dout", self.grads[0].dtype, (N, T, W.shape[1]))
        dW = self.grads[0]
        if not (dW.flags.c_contiguous and dW.flags.writeable and dW.flags.aligned):
            raise ValueError(
                "grads[0] must be a writeable C-contiguous array (the layer "
                "allocates it; do not replace it)"
            )
        _lm.embed_scatter(dW, self._ids, dout, self._plan(dW.size + dout.size))


# ---- TimeAffine --------------------------------------------------------------------------------


class TimeAffine(MatmulPrecision, _Threaded):
    """Affine map of every time step: ``x`` (N, T, D) -> ``x W + b`` (N, T, M), one product over
    all N*T rows.

    Parameters
    ----------
    W : ndarray, shape (D, M), float32 or float64
        May be a transposed view, as with weight tying (``TimeAffine(embed_W.T, b)``): it is
        used through BLAS's transpose flag, never copied.
    b : ndarray, shape (M,), same dtype
    matmul_precision : {"highest", "medium"}
        ``"highest"`` (default): the three products in the parameters' dtype.  ``"medium"``
        (float32 only): their operands rounded to bfloat16 and the products summed in float32,
        as ``torch.set_float32_matmul_precision("medium")`` does, on CPUs with AVX512-BF16
        (``fastrnn.bf16_supported()``; elsewhere the products stay float32): 1.5-1.9x faster
        products, each operand to 8 significant bits (relative error up to 2**-9).  Everything
        else (the bias, the outputs, the gradients' storage) stays float32.

    Notes
    -----
    ``grads`` are ``[dW, db]``; dW is a C-contiguous array of W's shape (the shape of the view,
    when W is one).  The two are views of one (D + 1, M) buffer, db its last row: backward
    computes both in one product, ``[dW; db] = [x | 1]^T dout`` (db summed like every entry of
    dW, with no pass of its own over the (N*T, M) ``dout``).  Update them in place; a grads entry
    replaced by another array still receives its gradient, through a copy."""

    def __init__(self, W, b, matmul_precision="highest"):
        W = _float_param(W, "W", 2)
        b = _float_param(b, "b", 1)
        if _native(b.dtype) != _native(W.dtype) or b.shape != (W.shape[1],):
            raise ValueError(
                f"b must have shape ({W.shape[1]},) and W's dtype {W.dtype}, got "
                f"{b.shape} {b.dtype}"
            )
        self.params = [W, b]
        self.matmul_precision = matmul_precision
        dtype = _native(W.dtype)
        self._dWb = np.zeros((W.shape[0] + 1, W.shape[1]), dtype)  # [dW; db]
        self.grads = [self._dWb[:-1], self._dWb[-1]]
        self._x1 = None  # [x | 1]: the last forward's x and a column of ones, (N*T, D + 1)
        self._NT = None
        self._parts = None  # backward's partial dx of the threads but the first

    def get_config(self):
        """Constructor arguments besides the parameters."""
        return {"matmul_precision": self.matmul_precision}

    @classmethod
    def from_config(cls, config, params):
        """Rebuild from ``get_config()`` and ``[W, b]``."""
        W, b = _check_param_list(cls, config, params, 2)
        return cls(W, b, matmul_precision=config.get("matmul_precision", "highest"))

    def _param_dtype(self):
        return _native(self.params[0].dtype)

    def _read_params(self):
        W, b = self.params
        dW, db = self.grads
        for name, p, g in (("W", W, dW), ("b", b, db)):
            if not isinstance(p, np.ndarray) or p.shape != g.shape or _native(p.dtype) != g.dtype:
                raise ValueError(
                    f"{name} changed since the layer was built (its gradient is "
                    f"{g.shape} {g.dtype}, it is {getattr(p, 'shape', None)} "
                    f"{getattr(p, 'dtype', None)}); build a new layer"
                )
        dtype = dW.dtype
        if (
            W.dtype != dtype
            or not W.flags.aligned
            or not (W.flags.c_contiguous or W.flags.f_contiguous)
        ):
            W = np.ascontiguousarray(W, dtype)  # other views or byte orders: a copy
        if b.dtype != dtype or not b.flags.c_contiguous or not b.flags.aligned:
            b = np.ascontiguousarray(b, dtype)
        return W, b

    def _dx_parts(self, threads, size, dtype):
        """Workspace for the partial dx of threads 1.. (kept while big enough)."""
        if threads < 2:
            return None
        need = (threads - 1) * size
        if self._parts is None or self._parts.size < need or self._parts.dtype != dtype:
            self._parts = np.empty(need, dtype)
        return self._parts

    def _scan_params(self):
        for name, p in zip(("W", "b"), self.params):
            if not all_finite(p):
                raise ValueError(f"{name} contains NaN or Inf")

    def _blas(self, threads):
        return single_threaded_blas() if threads > 1 else contextlib.nullcontext()

    def forward(self, x, out=None):
        """``x W + b`` for ``x`` (N, T, D): a fresh (N, T, M) array, or written into ``out``."""
        W, b = self._read_params()
        D, M = W.shape
        x = _as_float_array(x, "x", self.grads[0].dtype, (None, None, D))
        N, T, _ = x.shape
        out = _out_array(out, "out", (N, T, M), self.grads[0].dtype, (x, W, b))
        x2 = x.reshape(N * T, D)
        threads = self._plan(N * T * D * M, MIN_PARALLEL_MACS)
        if self._x1 is None or self._x1.shape != (N * T, D + 1):
            self._x1 = np.ones((N * T, D + 1), x2.dtype)
        x1 = self._x1
        np.copyto(x1[:, :D], x2)  # first: out may share memory with x
        self._NT = None  # a failed forward leaves nothing to differentiate
        with self._blas(threads):
            finite = _lm.affine_forward(x1, W, b, out.reshape(N * T, M), threads, self._bf16)
        if not finite:
            self._scan_params()  # raises if W or b is at fault; else the products overflowed
        self._NT = (N, T)
        return out

    def backward(self, dout, out=None):
        """dx (N, T, D) for ``dout`` (N, T, M); fills grads [dW, db] in place."""
        if self._NT is None:
            raise RuntimeError("TimeAffine.backward() called before forward()")
        W, _b = self._read_params()
        (D, M), (N, T) = W.shape, self._NT
        dtype = self.grads[0].dtype
        dout = _as_float_array(dout, "dout", dtype, (N, T, M))
        dx = _out_array(out, "out", (N, T, D), dtype, (dout, W, *self.grads))
        d2 = dout.reshape(N * T, M)
        dW, db = self.grads
        for name, g, shape in (("dW", dW, (D, M)), ("db", db, (M,))):
            if not (
                isinstance(g, np.ndarray)
                and g.shape == shape
                and g.dtype == dtype
                and g.flags.writeable
            ):
                raise ValueError(
                    f"grads entry {name} must be a writeable {dtype} array of shape {shape} "
                    "(the layer allocates it; update it in place)"
                )
        threads = self._plan(N * T * D * M, MIN_PARALLEL_MACS)
        with self._blas(threads):
            # dx first: a NaN/Inf in W shows there, and the grads are not yet touched
            if not _lm.affine_dx(
                self._x1,
                W,
                d2,
                dx.reshape(N * T, D),
                threads,
                self._dx_parts(threads, N * T * D, dtype),
                self._bf16,
            ):
                self._scan_params()  # raises if W is at fault; else the products overflowed
            _lm.affine_weight_grads(self._x1, d2, self._dWb, threads, self._bf16)
        # grads entries replaced by the user (not views of the buffer any more) get a copy
        if dW.base is not self._dWb:
            dW[...] = self._dWb[:-1]
        if db.base is not self._dWb:
            db[...] = self._dWb[-1]
        return dx


# ---- TimeSoftmaxWithLoss -----------------------------------------------------------------------


class TimeSoftmaxWithLoss(_Threaded):
    """Softmax and mean cross-entropy over a batch of sequences.

    ``forward(xs, ts)``: logits ``xs`` (N, T, V), targets ``ts`` (N, T) integer ids, or one-hot
    (N, T, V) as in the book; returns the mean of ``-log softmax(xs)[target]`` over the targets
    that are not ``ignore_label`` (0.0 when every target is ignored).

    ``backward(dout=1, out=None)``: ``(softmax(xs) - onehot(ts)) * dout / count``, zero rows for
    ignored targets.

    Parameters
    ----------
    ignore_label : int
        Targets equal to it contribute neither loss nor gradient (default -1).
    inplace : bool
        False (default): forward only reads the logits (one visit per row: max, log-sum-exp and
        loss), keeping a reference to them and each row's log-sum-exp; backward makes the
        gradient in a second visit, into a fresh array or into ``out``.  ``out=xs`` (the
        logits array given to forward) writes the gradient over the logits, with no (N, T, V)
        allocation; the layer then refuses a second backward of that forward.

        True: forward *consumes* the logits: in its one visit per row it computes the loss and
        overwrites the row with the gradient for ``dout=1`` (one exp per element instead of
        two, and the logits read and written once instead of twice); ``backward(dout)`` then
        returns that same array, scaled in place when ``dout != 1``.  ``xs`` must then be a
        writeable C-contiguous float32/float64 ndarray.  If forward raises because ``xs``
        holds NaN or Inf, the layer is unchanged but some rows of ``xs`` may already be
        overwritten."""

    def __init__(self, ignore_label=-1, inplace=False):
        if isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer)):
            raise TypeError(f"ignore_label must be an integer, got {ignore_label!r}")
        if not isinstance(inplace, (bool, np.bool_)):
            raise TypeError(f"inplace must be True or False, got {inplace!r}")
        self.ignore_label = int(ignore_label)
        self.inplace = bool(inplace)
        self.params, self.grads = [], []
        self._xs = None  # the last forward's logits (a reference), (N*T, V); inplace:
        #                         the gradient that forward left in them, times _factor
        self._result = None  # inplace: the caller's array itself, returned by backward
        self._factor = 1.0
        self._ts = None  # int64 copy of its targets, (N*T,)
        self._lse = None  # (max, log of the sum of exp(x - max)) of every row
        self._count = 0
        self._shape = None
        self._consumed = False

    def get_config(self):
        """Constructor arguments: ``{"ignore_label": ..., "inplace": ...}``."""
        return {"ignore_label": self.ignore_label, "inplace": self.inplace}

    @classmethod
    def from_config(cls, config, params):
        """Rebuild from ``get_config()`` (no parameters)."""
        _check_param_list(cls, config, params, 0)
        return cls(**config)

    def _targets(self, ts, N, T, V):
        arr = ts if isinstance(ts, np.ndarray) else np.asarray(ts)
        if arr.ndim == 3:
            if arr.shape != (N, T, V):
                raise ValueError(f"one-hot ts must have shape {(N, T, V)}, got {arr.shape}")
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"one-hot ts must be numeric, got dtype {arr.dtype}")
            ones = arr == 1
            if not ((ones | (arr == 0)).all() and (ones.sum(axis=2) == 1).all()):
                raise ValueError("one-hot ts must hold exactly one 1 (and zeros) per row")
            return arr.argmax(axis=2)
        return _integer_ids(arr, "ts", (N, T), V, ignore=self.ignore_label)

    def _logits(self, xs):
        if not self.inplace:
            return _float_unscanned(xs, "xs", (None, None, None))
        if not isinstance(xs, np.ndarray) or _native(xs.dtype) != xs.dtype:
            raise TypeError(
                "with inplace=True, xs must be a float32 or float64 ndarray in "
                "native byte order (it is overwritten with the gradient), got "
                f"{getattr(xs, 'dtype', type(xs).__name__)}"
            )
        if xs.ndim != 3:
            raise ValueError(f"xs must have shape (*, *, *), got {xs.shape}")
        if not (xs.flags.c_contiguous and xs.flags.writeable and xs.flags.aligned):
            raise ValueError(
                "with inplace=True, xs must be a writeable C-contiguous array (it "
                "is overwritten with the gradient)"
            )
        return xs

    def forward(self, xs, ts):
        """Mean cross-entropy (a float) of logits ``xs`` (N, T, V) against targets ``ts``."""
        given = xs
        xs = self._logits(xs)
        N, T, V = xs.shape
        if V < 1:
            raise ValueError(f"xs must have at least one class (V >= 1), got shape {xs.shape}")
        ts = self._targets(ts, N, T, V).reshape(N * T).astype(np.int64)
        x2 = xs.reshape(N * T, V)
        count = int(np.count_nonzero(ts != self.ignore_label))
        losses = np.empty(N * T)
        threads = self._plan(N * T * V)
        if self.inplace:
            bad = _lm.softmax_loss_fused(
                x2, ts, self.ignore_label, losses, 1.0 / max(count, 1), threads
            )
            lse = None
        else:
            # the row's maximum and the log of its sum of exp(x - max), kept apart: x - max is
            # exact where it matters, while max + log(sum) rounded to float32 would lose the
            # sum to an ulp of the max (logits of 1e4)
            lse = (np.empty(N * T, xs.dtype), np.empty(N * T, xs.dtype))
            bad = _lm.softmax_loss_forward(x2, ts, self.ignore_label, *lse, losses, threads)
        if bad >= 0:
            raise ValueError(f"xs contains NaN or Inf (in xs[{bad // T}, {bad % T}])")
        loss = float(losses.sum() / count) if count else 0.0
        self._xs, self._ts, self._count, self._lse = x2, ts, count, lse
        self._result, self._factor = (given if self.inplace else None), 1.0
        self._shape, self._consumed = (N, T, V), False
        return loss

    def backward(self, dout=1, out=None):
        """Gradient of the loss times ``dout`` with respect to the logits, (N, T, V).

        With ``inplace=True``: the logits array given to forward, now holding the gradient
        (``out``, if given, receives a copy)."""
        if self._shape is None:
            raise RuntimeError("TimeSoftmaxWithLoss.backward() called before forward()")
        if self._consumed:
            raise RuntimeError(
                "TimeSoftmaxWithLoss.backward(): the logits of the last forward "
                "were overwritten by backward(out=...); run forward again"
            )
        dout = _scalar(dout, "dout")
        N, T, V = self._shape
        x2 = self._xs
        if self.inplace:
            return self._backward_inplace(dout, out)
        inplace = out is not None and isinstance(out, np.ndarray) and np.shares_memory(out, x2)
        if inplace and not (
            out.ctypes.data == x2.ctypes.data and out.size == x2.size and out.flags.c_contiguous
        ):
            raise ValueError(
                "out overlaps the logits of forward without being the logits array itself"
            )
        dx = _out_array(out, "out", (N, T, V), x2.dtype).reshape(N * T, V)
        scale = dout / max(self._count, 1)
        m, logsum = self._lse
        _lm.softmax_loss_backward(
            x2, self._ts, self.ignore_label, m, logsum, scale, dx, self._plan(N * T * V)
        )
        if inplace:
            self._consumed = True
        return dx.reshape(N, T, V)

    def _backward_inplace(self, dout, out):
        N, T, V = self._shape
        x2 = self._xs
        if out is not None and not (isinstance(out, np.ndarray) and np.shares_memory(out, x2)):
            out = _out_array(out, "out", (N, T, V), x2.dtype)
        if dout != self._factor:
            if self._factor == 0:
                raise RuntimeError(
                    "TimeSoftmaxWithLoss.backward(): the gradient was scaled by "
                    "dout=0 and cannot be rescaled; run forward again"
                )
            x2 *= x2.dtype.type(dout / self._factor)
            self._factor = dout
        if out is not None and not np.shares_memory(out, x2):
            np.copyto(out, x2.reshape(N, T, V))
            return out
        return self._result


def _scalar(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


# ---- dropout -----------------------------------------------------------------------------------


def _threshold(ratio):
    """Keep an element when its uint32 draw is >= this: probability 1 - ratio (to 2**-32)."""
    return min(int(ratio * 2.0**32), 2**32 - 1)


class _Dropout(_Threaded):
    def __init__(self, dropout_ratio=0.5, seed=None):
        self.dropout_ratio = _check_ratio(dropout_ratio)
        self.seed = _check_seed(seed)
        self.params, self.grads = [], []
        self.train_flg = True
        self._rng = np.random.default_rng(self.seed)
        # the key of the next training forward: drawn by the first call that needs it and kept
        # until one succeeds, so that a refused call does not change the sequence of masks
        self._next_key = None
        self._shape = None  # (N, T, D) of the last forward
        self._dtype = None
        self._train = False  # was the last forward in training mode?

    def get_config(self):
        """Constructor arguments: ``{"dropout_ratio": ..., "seed": ...}``."""
        return {"dropout_ratio": self.dropout_ratio, "seed": self.seed}

    @classmethod
    def from_config(cls, config, params):
        """Rebuild from ``get_config()`` (no parameters)."""
        _check_param_list(cls, config, params, 0)
        return cls(**config)

    @property
    def scale(self):
        """The value of a kept element of the mask, 1 / (1 - dropout_ratio)."""
        return 1.0 / (1.0 - self.dropout_ratio)

    def forward(self, xs, out=None):
        """``xs * mask`` with a fresh mask when ``train_flg``; ``xs`` itself otherwise."""
        if not self.train_flg:
            xs = _float_input(xs, "xs", (None, None, None))
            self._shape, self._dtype, self._train = xs.shape, xs.dtype, False
            return xs
        xs = _float_unscanned(xs, "xs", (None, None, None))
        out = _out_array(out, "out", xs.shape, xs.dtype, (xs,), same_ok=xs)
        if self._next_key is None:
            self._next_key = self._key_draw()
        state = self._prepare(xs.shape, xs.dtype, self._next_key)
        if not self._apply(xs, out, state):
            raise ValueError("xs contains NaN or Inf")
        self._commit(state)
        if self._uses_key():
            self._next_key = None  # drawn at the next call
        self._shape, self._dtype, self._train = xs.shape, xs.dtype, True
        return out

    def backward(self, dout, out=None):
        """``dout * mask`` of the last forward (``dout`` itself after an evaluation forward).
        ``out`` may be ``dout`` (in place)."""
        if self._shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        if not self._train:
            return _as_float_array(dout, "dout", self._dtype, self._shape)
        dout = _float_unscanned(dout, "dout", self._shape, self._dtype)
        dx = _out_array(out, "out", self._shape, self._dtype, (dout,), same_ok=dout)
        if not self._apply(dout, dx, None):
            raise ValueError("dout contains NaN or Inf")
        return dx

    def _uses_key(self):
        return True

    def _key_draw(self):
        return int(self._rng.integers(0, 2**64, dtype=np.uint64))


class TimeDropout(_Dropout):
    """Inverted dropout, as the book's ``TimeDropout``: in training (``train_flg`` True) every
    element of every call is kept with probability 1 - ``dropout_ratio`` and scaled by
    1 / (1 - ``dropout_ratio``); in evaluation the input is returned as it is.

    Parameters
    ----------
    dropout_ratio : float in [0, 1)
    seed : int or None
        Seeds the layer's own ``np.random.Generator``: the same seed gives the same masks.

    Notes
    -----
    The mask is not stored: it is a counter-based hash of a 64-bit key drawn from the generator
    at each forward and of the element's index, recomputed by backward.  ``mask`` materialises
    it, (N, T, D) with values in {0, 1 / (1 - dropout_ratio)}."""

    def __init__(self, dropout_ratio=0.5, seed=None):
        super().__init__(dropout_ratio, seed)
        self._key = None

    def _prepare(self, shape, dtype, key):
        return key

    def _commit(self, key):
        self._key = key

    def _apply(self, x, out, key):
        key = self._key if key is None else key
        return _lm.dropout(
            x, out, key, _threshold(self.dropout_ratio), self.scale, self._plan(x.size)
        )

    @property
    def mask(self):
        """The mask of the last training forward, (N, T, D) with values in
        {0, 1 / (1 - dropout_ratio)} (computed on request), or None."""
        if self._key is None or not self._train:
            return None
        mask = np.empty(self._shape, self._dtype)
        _lm.dropout(None, mask, self._key, _threshold(self.dropout_ratio), self.scale)
        return mask


class VariationalDropout(_Dropout):
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, shape (N, 1, D),
    shared by all its time steps and drawn afresh at each training forward.  Scaling,
    ``train_flg`` and ``seed`` as in ``TimeDropout``.

    ``mask`` is the mask of the last training forward.  ``set_mask(mask)`` fixes a mask (N, 1, D)
    (values 0 or 1 / (1 - dropout_ratio) expected, any finite values accepted) for every
    following training forward, e.g. for gradient checks; ``set_mask(None)`` returns to fresh
    masks."""

    def __init__(self, dropout_ratio=0.5, seed=None):
        super().__init__(dropout_ratio, seed)
        self.mask = None
        self._fixed = None

    def set_mask(self, mask):
        """Use ``mask`` (N, 1, D), float, for every training forward (None: draw fresh ones)."""
        if mask is None:
            self._fixed = None
            return
        self._fixed = _float_input(mask, "mask", (None, 1, None)).copy()

    def _prepare(self, shape, dtype, key):
        N, _T, D = shape
        if self._fixed is not None:
            if self._fixed.shape != (N, 1, D):
                raise ValueError(
                    f"the fixed mask has shape {self._fixed.shape}, but xs needs "
                    f"{(N, 1, D)}; call set_mask() again or set_mask(None)"
                )
            return self._fixed.astype(dtype)
        mask = np.empty((N, 1, D), dtype)
        _lm.dropout(None, mask, key, _threshold(self.dropout_ratio), self.scale)
        return mask

    def _uses_key(self):
        return self._fixed is None

    def _commit(self, mask):
        self.mask = mask

    def _apply(self, x, out, mask):
        mask = self.mask if mask is None else mask
        return _lm.mask_rows(x, mask, out, self._plan(x.size))
