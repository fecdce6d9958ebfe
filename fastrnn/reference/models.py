"""The book's two language models, written as the book writes them (ch06/rnnlm.py,
ch06/better_rnnlm.py) on the plain NumPy layers of this package: the oracle of
``fastrnn.models.lm``'s ``Rnnlm`` and ``BetterRnnlm`` in the tests and the "book NumPy Rnnlm" of
the benchmarks.

Differences from the book (no change in what is computed): the weights are drawn from
``numpy.random.default_rng(seed)`` in the book's order and recipe (so the same seed gives
``fastrnn.models.Rnnlm`` and ``BetterRnnlm`` the same weights), NumPy's global random state is
not touched, and the dtype is a parameter (float32 by default, the book's ``'f'``).
"""

import numpy as np

from .lm import TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss
from .recurrent import TimeLSTM

__all__ = ["Rnnlm", "BetterRnnlm"]


class _BookModel:
    def predict(self, xs, train_flg=False):
        for layer in self.drop_layers:
            layer.train_flg = train_flg
        for layer in self.layers:
            xs = layer.forward(xs)
        return xs

    def forward(self, xs, ts, train_flg=True):
        score = self.predict(xs, train_flg)
        return self.loss_layer.forward(score, ts)

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def reset_state(self):
        for layer in self.lstm_layers:
            layer.reset_state()

    def _collect(self):
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads


class Rnnlm(_BookModel):
    """Embedding -> stateful LSTM -> affine -> softmax with loss, as the book's ``Rnnlm``."""

    def __init__(
        self, vocab_size=10000, wordvec_size=100, hidden_size=100, seed=None, dtype=np.float32
    ):
        V, D, H = vocab_size, wordvec_size, hidden_size
        rn = np.random.default_rng(seed).standard_normal
        embed_W = (rn((V, D)) / 100).astype(dtype)
        lstm_Wx = (rn((D, 4 * H)) / np.sqrt(D)).astype(dtype)
        lstm_Wh = (rn((H, 4 * H)) / np.sqrt(H)).astype(dtype)
        lstm_b = np.zeros(4 * H, dtype)
        affine_W = (rn((H, V)) / np.sqrt(H)).astype(dtype)
        affine_b = np.zeros(V, dtype)
        self.layers = [
            TimeEmbedding(embed_W),
            TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=True),
            TimeAffine(affine_W, affine_b),
        ]
        self.loss_layer = TimeSoftmaxWithLoss()
        self.lstm_layers = [self.layers[1]]
        self.drop_layers = []
        self._collect()


class BetterRnnlm(_BookModel):
    """Two stateful LSTMs with dropout before, between and after them and the affine read-out
    tied to the embedding (``embed_W.T``), as the book's ``BetterRnnlm``."""

    def __init__(
        self,
        vocab_size=10000,
        wordvec_size=650,
        hidden_size=650,
        dropout_ratio=0.5,
        seed=None,
        dtype=np.float32,
    ):
        V, D, H = vocab_size, wordvec_size, hidden_size
        rn = np.random.default_rng(seed).standard_normal
        embed_W = (rn((V, D)) / 100).astype(dtype)
        lstm_Wx1 = (rn((D, 4 * H)) / np.sqrt(D)).astype(dtype)
        lstm_Wh1 = (rn((H, 4 * H)) / np.sqrt(H)).astype(dtype)
        lstm_b1 = np.zeros(4 * H, dtype)
        lstm_Wx2 = (rn((H, 4 * H)) / np.sqrt(H)).astype(dtype)
        lstm_Wh2 = (rn((H, 4 * H)) / np.sqrt(H)).astype(dtype)
        lstm_b2 = np.zeros(4 * H, dtype)
        affine_b = np.zeros(V, dtype)
        drop_seeds = (
            [int(s) for s in np.random.SeedSequence(seed).generate_state(3, np.uint64)]
            if seed is not None
            else [None] * 3
        )
        self.layers = [
            TimeEmbedding(embed_W),
            TimeDropout(dropout_ratio, seed=drop_seeds[0]),
            TimeLSTM(lstm_Wx1, lstm_Wh1, lstm_b1, stateful=True),
            TimeDropout(dropout_ratio, seed=drop_seeds[1]),
            TimeLSTM(lstm_Wx2, lstm_Wh2, lstm_b2, stateful=True),
            TimeDropout(dropout_ratio, seed=drop_seeds[2]),
            TimeAffine(embed_W.T, affine_b),
        ]  # weight tying
        self.loss_layer = TimeSoftmaxWithLoss()
        self.lstm_layers = [self.layers[2], self.layers[4]]
        self.drop_layers = [self.layers[1], self.layers[3], self.layers[5]]
        self._collect()
