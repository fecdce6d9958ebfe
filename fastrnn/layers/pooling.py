"""Pooling heads: a batch of sequences of states (N, T, F) to one vector per row (N, F), over
each row's valid steps only (``lengths``), for sequence classification.

- ``LastPool``: the state at the row's last valid step t = len-1; for a concatenating
  ``Bidirectional`` output (``split=H_f``, the forward half's width), the forward half at
  t = len-1 and the backward half at t = 0 -- each direction's final state, which is what
  PyTorch users take from ``h_n`` of a bidirectional ``nn.LSTM``.
- ``MeanPool``: the mean over t < len.
- ``MaxPool``: the maximum over t < len, per feature (the gradient goes to the first maximum).

Each has ``forward(hs, lengths=None)`` -> (N, F), ``backward(dout)`` -> dhs (N, T, F) (zero
outside the pooled steps), empty ``params``/``grads`` and the persistence protocol.
"""

import numpy as np

from ..io import register
from ._cells import check_lengths

__all__ = ["LastPool", "MeanPool", "MaxPool", "POOLINGS", "make_pooling"]


class _Pool:
    def __init__(self):
        self.params, self.grads = [], []
        self._shape = None
        self._lengths = None

    def get_config(self):
        """Constructor arguments (none)."""
        return {}

    @classmethod
    def from_config(cls, config, params):
        """Rebuild from ``get_config()`` (no params)."""
        if list(params):
            raise ValueError(f"{cls.__name__} has no params, got {len(list(params))}")
        return cls(**config)

    def _inputs(self, hs, lengths):
        hs = np.asarray(hs)
        if hs.ndim != 3:
            raise ValueError(f"hs must have shape (N, T, F), got {hs.shape}")
        if hs.dtype.kind != "f":
            raise TypeError(f"hs must be a float array, got dtype {hs.dtype}")
        N, T, _ = hs.shape
        if T < 1:
            raise ValueError("hs must have at least one time step")
        lengths = check_lengths(lengths, N, T)
        if lengths is None:
            lengths = np.full(N, T, np.int64)
        self._shape, self._lengths = hs.shape, lengths
        return hs, lengths

    def _dout(self, dout):
        if self._shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        N, _, F = self._shape
        dout = np.asarray(dout)
        if dout.shape != (N, F):
            raise ValueError(f"dout must have shape {(N, F)}, got {dout.shape}")
        return dout


@register
class LastPool(_Pool):
    """Each row's state at its last valid step (see the module docstring).

    Parameters
    ----------
    split : None or int
        None: hs[n, len-1].  An int H_f (0 < H_f < F): features [:H_f] from t = len-1 (the
        forward direction's last state), features [H_f:] from t = 0 (the backward
        direction's), as for ``Bidirectional(merge="concat")``.
    """

    def __init__(self, split=None):
        super().__init__()
        if split is not None and (
            isinstance(split, bool) or not isinstance(split, (int, np.integer)) or split < 1
        ):
            raise ValueError(f"split must be None or a positive integer, got {split!r}")
        self.split = None if split is None else int(split)

    def get_config(self):
        """``{"split": ...}``."""
        return {"split": self.split}

    def forward(self, hs, lengths=None):
        hs, lengths = self._inputs(hs, lengths)
        F = hs.shape[2]
        if self.split is not None and not self.split < F:
            raise ValueError(f"split={self.split} must be less than the feature size {F}")
        rows = np.arange(hs.shape[0])
        out = hs[rows, lengths - 1].copy()
        if self.split is not None:
            out[:, self.split :] = hs[:, 0, self.split :]
        return out

    def backward(self, dout):
        dout = self._dout(dout)
        N, T, F = self._shape
        dhs = np.zeros(self._shape, dout.dtype)
        rows = np.arange(N)
        s = F if self.split is None else self.split
        dhs[rows, self._lengths - 1, :s] = dout[:, :s]
        if self.split is not None:
            dhs[:, 0, s:] += dout[:, s:]
        return dhs


@register
class MeanPool(_Pool):
    """The mean of each row's states over its valid steps."""

    def forward(self, hs, lengths=None):
        hs, lengths = self._inputs(hs, lengths)
        valid = np.arange(hs.shape[1])[None, :] < lengths[:, None]
        total = np.einsum("ntf,nt->nf", hs, valid.astype(hs.dtype))
        return total / lengths[:, None].astype(hs.dtype)

    def backward(self, dout):
        dout = self._dout(dout)
        N, T, F = self._shape
        valid = np.arange(T)[None, :] < self._lengths[:, None]
        scale = valid / self._lengths[:, None]
        return (scale[:, :, None] * dout[:, None, :]).astype(dout.dtype, copy=False)


@register
class MaxPool(_Pool):
    """The per-feature maximum of each row's states over its valid steps."""

    def forward(self, hs, lengths=None):
        hs, lengths = self._inputs(hs, lengths)
        valid = np.arange(hs.shape[1])[None, :] < lengths[:, None]
        masked = np.where(valid[:, :, None], hs, -np.inf)
        self._arg = masked.argmax(axis=1)  # (N, F), the first maximum
        return np.take_along_axis(hs, self._arg[:, None, :], axis=1)[:, 0]

    def backward(self, dout):
        dout = self._dout(dout)
        dhs = np.zeros(self._shape, dout.dtype)
        np.put_along_axis(dhs, self._arg[:, None, :], dout[:, None, :], axis=1)
        return dhs


#: pooling name -> class
POOLINGS = {"last": LastPool, "mean": MeanPool, "max": MaxPool}


def make_pooling(name, split=None):
    """The pooling head called ``name`` ("last", "mean" or "max"); ``split`` for "last"."""
    if name not in POOLINGS:
        raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {name!r}")
    return LastPool(split) if name == "last" else POOLINGS[name]()
