"""Plain NumPy reference of the language-model time layers (``fastrnn.layers.lm``).

Written the way the book's ``common/time_layers.py`` writes them -- ``np.add.at`` for the
embedding's gradient, one softmax array of the logits' size, a float mask for dropout -- so that
the tests have an oracle that is easy to check by eye and the benchmarks measure what users of the
book's layers are replacing.  Standalone (NumPy only).

Differences from the book (generalisations, no semantic change for the book's use):

* the computation dtype is the parameters' (or, for the layers without parameters, the inputs')
  dtype, float32 or float64, instead of the hard-coded ``'f'``;
* ``TimeSoftmaxWithLoss`` returns a loss of 0.0 and a zero gradient when every target is
  ``ignore_label`` (the book divides by zero), and computes the softmax with the row maximum
  subtracted (as the book's ``softmax`` does);
* the dropout layers draw from a ``np.random.Generator`` (``seed``), never the global RNG;
* ``VariationalDropout`` (one mask per sequence, shared over time; Gal & Ghahramani 2016) is not
  in the book's ``time_layers.py``.
"""

import numpy as np

__all__ = [
    "TimeAffine",
    "TimeDropout",
    "TimeEmbedding",
    "TimeSoftmaxWithLoss",
    "VariationalDropout",
]


class TimeEmbedding:
    """xs (N, T) integer ids -> W[xs] (N, T, D)."""

    def __init__(self, W):
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.idx = None

    def forward(self, xs):
        self.idx = xs
        return self.params[0][xs]

    def backward(self, dout):
        (dW,) = self.grads
        dW[...] = 0
        np.add.at(dW, self.idx, dout)


class TimeAffine:
    """x (N, T, D) -> x W + b (N, T, M), one product over all N*T rows."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        N, T, _D = x.shape
        W, b = self.params
        self.x = x
        out = np.dot(x.reshape(N * T, -1), W) + b
        return out.reshape(N, T, -1)

    def backward(self, dout):
        x = self.x
        N, T, D = x.shape
        W, _b = self.params
        dout = dout.reshape(N * T, -1)
        rx = x.reshape(N * T, -1)
        self.grads[0][...] = np.dot(rx.T, dout)
        self.grads[1][...] = np.sum(dout, axis=0)
        return np.dot(dout, W.T).reshape(N, T, D)


def softmax(x):
    """Row-wise softmax over the last axis, the row maximum subtracted first."""
    x = x - x.max(axis=-1, keepdims=True)
    x = np.exp(x)
    return x / x.sum(axis=-1, keepdims=True)


class TimeSoftmaxWithLoss:
    """Mean cross-entropy of softmax(xs) against targets ts over the non-ignored targets."""

    def __init__(self, ignore_label=-1):
        self.params, self.grads = [], []
        self.cache = None
        self.ignore_label = ignore_label

    def forward(self, xs, ts):
        N, T, V = xs.shape
        if ts.ndim == 3:  # one-hot targets
            ts = ts.argmax(axis=2)
        mask = ts != self.ignore_label
        xs = xs.reshape(N * T, V)
        ts = ts.reshape(N * T)
        mask = mask.reshape(N * T)
        ys = softmax(xs)
        ls = np.log(ys[np.arange(N * T), np.where(mask, ts, 0)])
        ls *= mask
        count = mask.sum()
        loss = -np.sum(ls) / count if count else 0.0
        self.cache = (ts, ys, mask, (N, T, V))
        return float(loss)

    def backward(self, dout=1):
        ts, ys, mask, (N, T, V) = self.cache
        dx = ys.copy()
        dx[np.arange(N * T), np.where(mask, ts, 0)] -= 1
        count = mask.sum()
        dx *= dout
        dx /= max(count, 1)
        dx *= mask[:, np.newaxis]
        return dx.reshape((N, T, V))


class TimeDropout:
    """Inverted dropout: a fresh mask for every element at every training call."""

    def __init__(self, dropout_ratio=0.5, seed=None):
        self.params, self.grads = [], []
        self.dropout_ratio = dropout_ratio
        self.mask = None
        self.train_flg = True
        self.rng = np.random.default_rng(seed)

    def forward(self, xs):
        if self.train_flg:
            flg = self.rng.random(xs.shape) > self.dropout_ratio
            scale = 1 / (1.0 - self.dropout_ratio)
            self.mask = flg.astype(xs.dtype) * scale
            return xs * self.mask
        return xs

    def backward(self, dout):
        return dout * self.mask


class VariationalDropout:
    """Dropout with one mask per sequence (N, 1, D), shared over all time steps."""

    def __init__(self, dropout_ratio=0.5, seed=None):
        self.params, self.grads = [], []
        self.dropout_ratio = dropout_ratio
        self.mask = None
        self.train_flg = True
        self.rng = np.random.default_rng(seed)

    def forward(self, xs):
        if self.train_flg:
            N, _T, D = xs.shape
            flg = self.rng.random((N, 1, D)) > self.dropout_ratio
            scale = 1 / (1.0 - self.dropout_ratio)
            self.mask = flg.astype(xs.dtype) * scale
            return xs * self.mask
        return xs

    def backward(self, dout):
        return dout * self.mask
