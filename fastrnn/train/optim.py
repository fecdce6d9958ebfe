"""Optimizers in the style of the NumPy layers: ``update(params, grads)`` changes the parameter
arrays in place, so layers, which read their ``params`` afresh at every call, see the new values."""

import numpy as np

from .._norms import adam_step, sgd_step
from .._threads import blas_threads

__all__ = ["SGD", "Adam"]


class SGD:
    """Stochastic gradient descent: p -= lr * g, in place."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        # One fused pass on fastrnn's own threads (the same bits as `p -= lr * g`, without its
        # temporary: 1.1 -> 0.5 ms for the Rnnlm's 2.1 M parameters).  Not BLAS axpy: a threaded
        # BLAS call here leaves OpenBLAS's workers spinning into the next forward, where they
        # took a core from its kernel threads (a 2x200 LM iteration at 2 threads: 84 ms with
        # axpy, about 45 ms without).
        # (threads: as many as the layers use, threadpoolctl's setting)
        params, grads = list(params), list(grads)
        for k in sgd_step(params, grads, self.lr, threads=blas_threads()):
            params[k] -= self.lr * grads[k]  # pairs the fused pass does not take


class Adam:
    """Adam (Kingma & Ba 2015), written as in the book, updating params in place."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.iter = 0
        self.m = self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        # One fused pass per array on fastrnn's threads, the same bits as the lines below (a
        # 2 M-parameter classifier: 16.4 ms in NumPy's dozen passes and temporaries); the
        # lines run for what the pass does not take.
        params, grads = list(params), list(grads)
        rest = adam_step(
            params, grads, self.m, self.v, lr_t, self.beta1, self.beta2, self.eps,
            threads=blas_threads(),
        )  # fmt: skip
        for k in rest:
            p, g, m, v = params[k], grads[k], self.m[k], self.v[k]
            m += (1 - self.beta1) * (g - m)
            v += (1 - self.beta2) * (g * g - v)
            p -= (lr_t * m / (np.sqrt(v) + self.eps)).astype(p.dtype, copy=False)
