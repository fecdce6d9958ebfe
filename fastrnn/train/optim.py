"""Optimizers in the style of the NumPy layers: ``update(params, grads)`` changes the parameter
arrays in place, so layers, which read their ``params`` afresh at every call, see the new values.

Settings are checked when set (``lr`` too, which schedules change between updates), and an
update whose gradients hold NaN or Inf is refused before anything is written: the parameters
(and Adam's moments) stay as they were.  That check is one pass over the gradients (0.4 ms for
5 M float32 values, under 1 % of a 2x200 language model's iteration)."""

import math
import numbers

import numpy as np

from .._norms import adam_step, all_finite, sgd_step
from .._threads import blas_threads

__all__ = ["SGD", "Adam"]


def _positive(name, value):
    """`value` as a float if it is a positive finite number (not a bool), else a ValueError
    naming `name`.  (The learning-rate schedules check theirs with this too.)"""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _decay(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return value


def _checked_pairs(params, grads, grads_finite=False):
    """params and grads as lists of the same length, every gradient free of NaN and Inf
    (scanned unless the caller knows it: `grads_finite`)."""
    params, grads = list(params), list(grads)
    if len(params) != len(grads):
        raise ValueError(f"params and grads must pair up, got {len(params)} and {len(grads)}")
    for k, g in enumerate(grads):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"grads[{k}] must be a numpy array, got {type(g).__name__}")
        if g.dtype.kind == "f" and not grads_finite and not all_finite(g):
            raise ValueError(f"grads[{k}] holds NaN or Inf: no parameter was updated")
    return params, grads


class _Optimizer:
    """What SGD and Adam share: ``lr``, checked (positive, finite) whenever it is set (a
    schedule sets it every epoch)."""

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _positive("lr", value)


class SGD(_Optimizer):
    """Stochastic gradient descent: p -= lr * g, in place.

    ``update(params, grads)`` first scans the gradients and, if one holds NaN or Inf, raises
    without updating anything.  ``grads_finite=True`` skips that scan where the caller already
    knows (``clip_grads`` returned a finite norm: it read every element; about 1 % of a 2x650
    LM's iteration)."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads, grads_finite=False):
        params, grads = _checked_pairs(params, grads, grads_finite)
        # One fused pass on fastrnn's own threads (the same bits as `p -= lr * g`, without its
        # temporary: 1.1 -> 0.5 ms for the Rnnlm's 2.1 M parameters).  Not BLAS axpy: a threaded
        # BLAS call here leaves OpenBLAS's workers spinning into the next forward, where they
        # took a core from its kernel threads (a 2x200 LM iteration at 2 threads: 84 ms with
        # axpy, about 45 ms without).
        # (threads: as many as the layers use, threadpoolctl's setting)
        for k in sgd_step(params, grads, self.lr, threads=blas_threads()):
            params[k] -= self.lr * grads[k]  # pairs the fused pass does not take


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015), written as in the book, updating params in place."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
        self.lr = lr
        self.beta1, self.beta2 = _decay("beta1", beta1), _decay("beta2", beta2)
        self.eps = _positive("eps", eps)
        self.iter = 0
        self.m = self.v = None

    def update(self, params, grads, grads_finite=False):
        """One step; ``grads_finite`` as in :meth:`SGD.update`."""
        params, grads = _checked_pairs(params, grads, grads_finite)
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        # One fused pass per array on fastrnn's threads, the same bits as the lines below (a
        # 2 M-parameter classifier: 16.4 ms in NumPy's dozen passes and temporaries); the
        # lines run for what the pass does not take.
        rest = adam_step(
            params, grads, self.m, self.v, lr_t, self.beta1, self.beta2, self.eps,
            threads=blas_threads(),
        )  # fmt: skip
        for k in rest:
            p, g, m, v = params[k], grads[k], self.m[k], self.v[k]
            m += (1 - self.beta1) * (g - m)
            v += (1 - self.beta2) * (g * g - v)
            p -= (lr_t * m / (np.sqrt(v) + self.eps)).astype(p.dtype, copy=False)
