"""A minimal language model with the DLFS2 interface (embedding, stateful fastrnn.TimeLSTM,
affine, softmax cross-entropy), savable by fastrnn.save: the trainer's and CLI's tests use it
while fastrnn.models.lm is not in this branch."""

import numpy as np

import fastrnn
from fastrnn.io import register


@register
class StandinLM:
    def __init__(
        self,
        vocab_size,
        embed_size=8,
        hidden_size=8,
        dtype="float64",
        seed=0,
        dropout=0.0,
        _params=None,
    ):
        self.dropout = dropout
        self.rng = np.random.default_rng([seed, 1])  # dropout masks (resumed by the trainer)
        self.config = {
            "vocab_size": vocab_size,
            "embed_size": embed_size,
            "hidden_size": hidden_size,
            "dtype": np.dtype(dtype).name,
            "seed": seed,
            "dropout": dropout,
        }
        V, E, H = vocab_size, embed_size, hidden_size
        if _params is None:
            rng = np.random.default_rng(seed)
            shapes = [(V, E), (E, 4 * H), (H, 4 * H), (4 * H,), (H, V), (V,)]
            _params = [rng.uniform(-0.1, 0.1, s).astype(dtype) for s in shapes]
        self.params = list(_params)
        self.grads = [np.zeros_like(p) for p in self.params]
        self.lstm = fastrnn.TimeLSTM(self.params[1], self.params[2], self.params[3], stateful=True)

    def get_config(self):
        return dict(self.config)

    @classmethod
    def from_config(cls, config, params):
        return cls(**config, _params=params)

    def predict(self, xs, train_flg=False):
        self.xs = xs
        self.hs = self.lstm.forward(self.params[0][xs])
        self.mask = None
        if train_flg and self.dropout:
            self.mask = (self.rng.random(self.hs.shape) >= self.dropout) / (1 - self.dropout)
            self.hs = self.hs * self.mask
        return self.hs @ self.params[4] + self.params[5]

    def forward(self, xs, ts, train_flg=True):
        scores = self.predict(xs, train_flg)
        z = scores - scores.max(axis=2, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=2, keepdims=True)
        self.p, self.ts = p, ts
        return float(-np.log(np.take_along_axis(p, ts[..., None], 2) + 1e-12).mean())

    def backward(self, dout=1):
        N, T, V = self.p.shape
        ds = self.p.copy()
        np.put_along_axis(
            ds, self.ts[..., None], np.take_along_axis(ds, self.ts[..., None], 2) - 1, 2
        )
        ds *= dout / (N * T)
        g = self.grads
        g[4][...] = self.hs.reshape(-1, self.hs.shape[2]).T @ ds.reshape(-1, V)
        g[5][...] = ds.sum(axis=(0, 1))
        dhs = ds @ self.params[4].T
        dxs = self.lstm.backward(dhs if self.mask is None else dhs * self.mask)
        for k in range(3):
            g[1 + k][...] = self.lstm.grads[k]
        g[0][...] = 0
        np.add.at(g[0], self.xs, dxs)

    def reset_state(self):
        self.lstm.reset_state()
