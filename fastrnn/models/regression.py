"""Small models and optimizers for the fastrnn layers, written to be read as an example.

Everything here follows the conventions of the NumPy layers fastrnn replaces (the *Deep Learning
from Scratch 2* style): a layer has ``params`` and ``grads`` (lists of arrays, gradients
overwritten by every ``backward``), and an optimizer's ``update(params, grads)`` changes the
parameter arrays in place, so the layers, which read their ``params`` afresh at every call, see
the new values without being told.  A training loop::

    import numpy as np
    from fastrnn.models import SequenceRegressor
    from fastrnn.train import Adam

    rng = np.random.default_rng(0)
    model = SequenceRegressor("lstm", input_size=2, hidden_size=64, rng=rng)
    optimizer = Adam(lr=1e-3)
    for xs, ys in batches:                    # xs (N, T, 2), ys (N, 1)
        loss = model.forward(xs, ys)          # MSE of a linear read-out of the last h_T
        model.backward()                      # fills model.grads (the layers' own arrays)
        fastrnn.clip_grads(model.grads, 1.0)  # optional: global-norm clipping, in place
        optimizer.update(model.params, model.grads)

``SequenceRegressor`` is the model of ``fastrnn demo``: one recurrent layer (``TimeRNN``,
``TimeLSTM`` or ``TimeGRU``), a ``Linear`` layer on the last hidden state and an ``MSELoss``.
``init_params`` gives the initialisation the book uses (Gaussian, standard deviation
``1/sqrt(fan_in)``, zero biases), the same recipe for every cell.
"""

import numpy as np

from ..layers import TimeGRU, TimeLSTM, TimeRNN

__all__ = ["CELLS", "init_params", "make_layer", "Linear", "MSELoss", "SequenceRegressor"]

#: cell name -> (time layer class, number of gate blocks in Wx / Wh)
CELLS = {"rnn": (TimeRNN, 1), "lstm": (TimeLSTM, 4), "gru": (TimeGRU, 3)}


def _cell_spec(cell):
    try:
        return CELLS[cell.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}") from None


def init_params(
    cell, input_size, hidden_size, rng, dtype=np.float32, wh_scale=1.0, forget_bias=1.0
):
    """[Wx, Wh, b] for a ``cell`` ("rnn", "lstm" or "gru"), drawn from ``rng``.

    Wx ~ N(0, 1/D), Wh ~ wh_scale * N(0, 1/H), b = 0: the book's initialisation, the same for
    every cell, except that an LSTM's forget-gate bias starts at ``forget_bias`` (1 by default,
    as recommended by Gers et al. 2000 and Jozefowicz et al. 2015 and done by Keras): with f
    near sigmoid(1) = 0.73 instead of 0.5 the cell state, and its gradient, survive long enough
    at the start of training for the LSTM to find long-range dependencies.  ``wh_scale`` > 1
    makes the recurrent weights large (used by the demo to provoke exploding gradients).
    """
    _, blocks = _cell_spec(cell)
    D, H = int(input_size), int(hidden_size)
    Wx = rng.standard_normal((D, blocks * H)) / np.sqrt(D)
    Wh = wh_scale * rng.standard_normal((H, blocks * H)) / np.sqrt(H)
    b = np.zeros(blocks * H)
    if cell.lower() == "lstm":
        b[:H] = forget_bias  # gate blocks f, g, i, o: f comes first
    return [np.ascontiguousarray(a, dtype=dtype) for a in (Wx, Wh, b)]


def make_layer(cell, params, stateful=False):
    """The fastrnn time layer for ``cell`` on ``params`` = [Wx, Wh, b]."""
    cls, _ = _cell_spec(cell)
    return cls(*params, stateful=stateful)


class Linear:
    """y = h W + b: an affine layer, here on the last hidden state (N, H) -> (N, M)."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        W, b = self.params
        self.x = x
        return x @ W + b

    def backward(self, dy):
        W, _ = self.params
        self.grads[0][...] = self.x.T @ dy
        self.grads[1][...] = dy.sum(axis=0)
        return dy @ W.T


class MSELoss:
    """Mean squared error over every element: L = mean((y - t)^2)."""

    def __init__(self):
        self.diff = None

    def forward(self, y, t):
        self.diff = y - t
        return float(np.mean(np.square(self.diff, dtype=np.float64)))

    def backward(self):
        return (2.0 / self.diff.size) * self.diff


class SequenceRegressor:
    """One recurrent layer, a Linear read-out of its last hidden state, and an MSE loss.

    ``params`` and ``grads`` are flat lists of the layers' own arrays (recurrent Wx, Wh, b, then
    the Linear W, b), so ``optimizer.update(model.params, model.grads)`` trains both layers and
    ``fastrnn.clip_grads(model.grads, max_norm)`` clips them all together.
    """

    def __init__(
        self,
        cell,
        input_size,
        hidden_size,
        rng,
        output_size=1,
        dtype=np.float32,
        wh_scale=1.0,
        forget_bias=1.0,
    ):
        self.cell = cell.lower()
        self.rnn = make_layer(
            self.cell,
            init_params(self.cell, input_size, hidden_size, rng, dtype, wh_scale, forget_bias),
        )
        W = rng.standard_normal((hidden_size, output_size)) / np.sqrt(hidden_size)
        self.linear = Linear(W.astype(dtype), np.zeros(output_size, dtype))
        self.loss_layer = MSELoss()
        self.params = self.rnn.params + self.linear.params
        self.grads = self.rnn.grads + self.linear.grads
        self._hs_shape = None

    def predict(self, xs):
        """(N, T, D) -> (N, output_size), read from the last hidden state."""
        hs = self.rnn.forward(xs)
        self._hs_shape = hs.shape
        return self.linear.forward(hs[:, -1])

    def forward(self, xs, ys):
        """The MSE loss (a Python float) of the prediction for xs against ys."""
        return self.loss_layer.forward(self.predict(xs), ys)

    def backward(self):
        """Backpropagate the last forward's loss; fills ``grads``, returns dL/dxs."""
        dh_last = self.linear.backward(self.loss_layer.backward())
        dhs = np.zeros(self._hs_shape, dh_last.dtype)
        dhs[:, -1] = dh_last  # only h_T feeds the loss: earlier steps get gradient through time
        return self.rnn.backward(dhs)
