"""Plain NumPy reference implementation of the fastrnn recurrent layers.

This module is the *oracle* used by the test-suite and the *baseline* used by
the benchmarks.  It deliberately follows the structure of the pure-NumPy layers
of "Deep Learning from Scratch 2" (``common/time_layers.py``) step by step:

* a single-step cell (``RNN``, ``LSTM``, ``GRU``) holds the caller's parameter
  arrays, its own gradient arrays and a cache of the forward intermediates;
* a time layer (``TimeRNN``, ``TimeLSTM``, ``TimeGRU``) creates a *fresh* cell
  object for every timestep, runs one small matmul per gate block per step, and
  in ``backward`` sums the per-step weight gradients over time before writing
  them into its own ``grads`` arrays.

Nothing here is optimised: the point is that the benchmarks measure exactly
what users of the book's layers are replacing, and that the code is easy to
check by eye.  The module is standalone (it only imports NumPy).

Differences from the book's code (all generalisations, no semantic change):

* the computation dtype is the parameters' dtype (``Wx.dtype``, float32 or
  float64) instead of the hard-coded ``'f'``; input sequences ``xs`` and
  upstream gradients ``dhs`` are cast to that dtype (without copying when they
  already have it);
* ``GRU``/``TimeGRU`` additionally support the ``reset_after=True`` variant
  used by cuDNN / PyTorch / Keras (separate input and recurrent biases);
* time layers can record gradient-flow diagnostics (``track_grad_norms``);
* recurrent (variational) dropout: the time layers' ``forward(xs, h_mask)``
  and the cells' ``forward(..., h_mask)`` multiply ``h_prev`` by ``h_mask``
  where it enters the product ``h_prev Wh`` (and nowhere else);
* ``RNN``/``TimeRNN`` take ``nonlinearity="relu"`` besides ``"tanh"``;
* variable lengths and the reverse direction: the time layers' ``forward(xs,
  lengths=None, h_mask=None)`` runs row ``n`` over its first ``lengths[n]``
  steps only, and a layer made with ``reverse=True`` runs each row from its own
  last valid step ``lengths[n] - 1`` down to 0 (``torch.nn.utils.rnn``'s packed
  semantics for the reverse half of a bidirectional RNN).  Step ``s`` of the
  loop runs the cell on the rows still active (``lengths[n] > s``) only, each
  at its own time index; ``hs`` (and ``dxs``) are zero past a row's length.

Layouts (batch-major, as in the book):

* ``xs``: ``(N, T, D)``, ``hs``: ``(N, T, H)``
* RNN:  ``Wx (D, H)``,  ``Wh (H, H)``,  ``b (H,)``
* LSTM: ``Wx (D, 4H)``, ``Wh (H, 4H)``, ``b (4H,)``; gate blocks ``f, g, i, o``
* GRU:  ``Wx (D, 3H)``, ``Wh (H, 3H)``; gate blocks ``z, r, h~``;
  ``b (3H,)`` (``reset_after=False``) or ``b (2, 3H)`` (``reset_after=True``,
  row 0 = input bias, row 1 = recurrent bias).
"""

import numpy as np

__all__ = [
    "sigmoid",
    "clip_grads",
    "RNN",
    "LSTM",
    "GRU",
    "TimeRNN",
    "TimeLSTM",
    "TimeGRU",
]


def sigmoid(x):
    """Logistic function, written the way the book writes it."""
    return 1 / (1 + np.exp(-x))


def clip_grads(grads, max_norm):
    """Clip a list of gradient arrays in place by their global L2 norm.

    This is the baseline loop users write (as in the book): the squared sum is
    computed per array in that array's dtype and accumulated in a Python loop.
    If the global norm exceeds ``max_norm`` every array is scaled in place by
    ``max_norm / (total_norm + 1e-6)``.  Returns the global norm (before
    clipping) as a Python float.
    """
    total = 0.0
    for g in grads:
        total += np.sum(g**2)
    total_norm = np.sqrt(total)

    rate = max_norm / (total_norm + 1e-6)
    if rate < 1:
        for g in grads:
            g *= rate
    return float(total_norm)


def _norm64(a):
    """Frobenius norm of ``a`` computed in float64."""
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.sum(a * a)))


def _check_gru_bias(b, H3, reset_after):
    """Validate the GRU bias shape for the chosen variant."""
    expected = (2, H3) if reset_after else (H3,)
    if b.shape != expected:
        raise ValueError(
            f"GRU bias `b` must have shape {expected} for reset_after={reset_after}, got {b.shape}"
        )


# ---------------------------------------------------------------------------
# Single-step cells
# ---------------------------------------------------------------------------


def _masked(h_prev, h_mask):
    """``h_prev`` as the recurrent product reads it: times the dropout mask, if any."""
    return h_prev if h_mask is None else h_prev * h_mask


def _unmask(dh, h_mask):
    """The gradient reaching ``h_prev`` through the product of the masked ``h_prev``."""
    return dh if h_mask is None else dh * h_mask


class RNN:
    """One step of a vanilla RNN: ``h_next = tanh(x Wx + h_prev Wh + b)``, or
    ``max(0, ...)`` with ``nonlinearity="relu"``."""

    def __init__(self, Wx, Wh, b, nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.nonlinearity = nonlinearity
        self.cache = None

    def forward(self, x, h_prev, h_mask=None):
        Wx, Wh, b = self.params
        hm = _masked(h_prev, h_mask)
        t = np.dot(hm, Wh) + np.dot(x, Wx) + b
        if self.nonlinearity == "relu":
            h_next = np.maximum(t, 0)
        else:
            h_next = np.tanh(t)

        self.cache = (x, hm, h_next, h_mask)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        x, hm, h_next, h_mask = self.cache

        if self.nonlinearity == "relu":
            dt = dh_next * (h_next > 0)
        else:
            dt = dh_next * (1 - h_next**2)
        db = np.sum(dt, axis=0)
        dWh = np.dot(hm.T, dt)
        dh_prev = _unmask(np.dot(dt, Wh.T), h_mask)
        dWx = np.dot(x.T, dt)
        dx = np.dot(dt, Wx.T)

        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        return dx, dh_prev


class LSTM:
    """One step of an LSTM with gate column blocks in the order f, g, i, o.

    ``A = x Wx + h_prev Wh + b``; ``f, i, o = sigmoid(...)``, ``g = tanh(...)``;
    ``c_next = f * c_prev + g * i``; ``h_next = o * tanh(c_next)``.
    """

    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev, c_prev, h_mask=None):
        Wx, Wh, b = self.params
        N, H = h_prev.shape
        hm = _masked(h_prev, h_mask)

        A = np.dot(x, Wx) + np.dot(hm, Wh) + b

        f = A[:, :H]
        g = A[:, H : 2 * H]
        i = A[:, 2 * H : 3 * H]
        o = A[:, 3 * H :]

        f = sigmoid(f)
        g = np.tanh(g)
        i = sigmoid(i)
        o = sigmoid(o)

        c_next = f * c_prev + g * i
        tanh_c_next = np.tanh(c_next)
        h_next = o * tanh_c_next

        self.cache = (x, hm, c_prev, f, g, i, o, c_next, tanh_c_next, h_mask)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        Wx, Wh, b = self.params
        x, hm, c_prev, f, g, i, o, c_next, tanh_c_next, h_mask = self.cache

        # total gradient w.r.t. c_next (direct + through h_next = o*tanh(c))
        ds = dc_next + (dh_next * o) * (1 - tanh_c_next**2)
        dc_prev = ds * f

        df = ds * c_prev
        dg = ds * i
        di = ds * g
        do = dh_next * tanh_c_next

        # back through the activations
        df *= f * (1 - f)
        dg *= 1 - g**2
        di *= i * (1 - i)
        do *= o * (1 - o)

        dA = np.hstack((df, dg, di, do))

        dWh = np.dot(hm.T, dA)
        dWx = np.dot(x.T, dA)
        db = dA.sum(axis=0)

        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db

        dx = np.dot(dA, Wx.T)
        dh_prev = _unmask(np.dot(dA, Wh.T), h_mask)
        return dx, dh_prev, dc_prev


class GRU:
    """One step of a GRU with gate column blocks in the order z, r, h~.

    ``reset_after=False`` (the classic formulation), ``b`` of shape ``(3H,)``::

        z  = sigmoid(x Wxz + h Whz + bz)
        r  = sigmoid(x Wxr + h Whr + br)
        h~ = tanh(x Wxh + (r * h) Whh + bh)

    ``reset_after=True`` (cuDNN / PyTorch / Keras), ``b`` of shape ``(2, 3H)``
    with ``b0 = b[0]`` the input bias and ``b1 = b[1]`` the recurrent bias::

        z  = sigmoid(x Wxz + h Whz + b0z + b1z)
        r  = sigmoid(x Wxr + h Whr + b0r + b1r)
        hn = h Whh + b1h
        h~ = tanh(x Wxh + b0h + r * hn)

    In both cases ``h_next = (1 - z) * h + z * h~``.  With ``h_mask``, every
    ``h`` above that multiplies ``Wh`` (``Whz``, ``Whr``, ``Whh``) is ``h * h_mask``;
    the ``h`` of ``h_next`` is not.
    """

    def __init__(self, Wx, Wh, b, reset_after=False):
        _check_gru_bias(b, Wx.shape[1], reset_after)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.reset_after = reset_after
        self.cache = None

    def forward(self, x, h_prev, h_mask=None):
        Wx, Wh, b = self.params
        H = Wh.shape[0]
        hm = _masked(h_prev, h_mask)
        Wxz, Wxr, Wxh = Wx[:, :H], Wx[:, H : 2 * H], Wx[:, 2 * H :]
        Whz, Whr, Whh = Wh[:, :H], Wh[:, H : 2 * H], Wh[:, 2 * H :]

        if not self.reset_after:
            bz, br, bh = b[:H], b[H : 2 * H], b[2 * H :]
            z = sigmoid(np.dot(x, Wxz) + np.dot(hm, Whz) + bz)
            r = sigmoid(np.dot(x, Wxr) + np.dot(hm, Whr) + br)
            h_hat = np.tanh(np.dot(x, Wxh) + np.dot(r * hm, Whh) + bh)
            hn = None
        else:
            b0, b1 = b[0], b[1]
            z = sigmoid(np.dot(x, Wxz) + np.dot(hm, Whz) + b0[:H] + b1[:H])
            r = sigmoid(np.dot(x, Wxr) + np.dot(hm, Whr) + b0[H : 2 * H] + b1[H : 2 * H])
            hn = np.dot(hm, Whh) + b1[2 * H :]
            h_hat = np.tanh(np.dot(x, Wxh) + b0[2 * H :] + r * hn)

        h_next = (1 - z) * h_prev + z * h_hat

        self.cache = (x, h_prev, hm, h_mask, z, r, h_hat, hn)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        H = Wh.shape[0]
        x, h_prev, hm, h_mask, z, r, h_hat, hn = self.cache

        dh_hat = dh_next * z
        dz = dh_next * (h_hat - h_prev)
        dh_prev = dh_next * (1 - z)

        # pre-activation of the candidate h~
        dt = dh_hat * (1 - h_hat**2)

        if not self.reset_after:
            # candidate path: t = x Wxh + (r*h) Whh + bh
            drh = np.dot(dt, Wh[:, 2 * H :].T)  # grad w.r.t. (r * hm)
            dr = drh * hm
            dh_prev += _unmask(drh * r, h_mask)
            dz_pre = dz * z * (1 - z)
            dr_pre = dr * r * (1 - r)

            dA = np.hstack((dz_pre, dr_pre, dt))  # grads of the x-side sums
            dWx = np.dot(x.T, dA)
            dWh = np.hstack((np.dot(hm.T, dA[:, : 2 * H]), np.dot((r * hm).T, dt)))
            db = dA.sum(axis=0)

            dx = np.dot(dA, Wx.T)
            dh_prev += _unmask(np.dot(dA[:, : 2 * H], Wh[:, : 2 * H].T), h_mask)
        else:
            # candidate path: t = x Wxh + b0h + r * hn, hn = h Whh + b1h
            dr = dt * hn
            dhn = dt * r
            dz_pre = dz * z * (1 - z)
            dr_pre = dr * r * (1 - r)

            dgx = np.hstack((dz_pre, dr_pre, dt))  # grads of x Wx + b0
            dgh = np.hstack((dz_pre, dr_pre, dhn))  # grads of h Wh + b1
            dWx = np.dot(x.T, dgx)
            dWh = np.dot(hm.T, dgh)
            db = np.stack((dgx.sum(axis=0), dgh.sum(axis=0)))

            dx = np.dot(dgx, Wx.T)
            dh_prev += _unmask(np.dot(dgh, Wh.T), h_mask)

        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        return dx, dh_prev


# ---------------------------------------------------------------------------
# Time layers (a whole sequence, one fresh cell per timestep)
# ---------------------------------------------------------------------------


def _check_mask(h_mask, N, H, dtype):
    """``h_mask`` as an (N, H) array of ``dtype`` (or None)."""
    if h_mask is None:
        return None
    h_mask = np.asarray(h_mask).astype(dtype, copy=False)
    if h_mask.shape != (N, H):
        raise ValueError(f"h_mask must have shape ({N}, {H}), got {h_mask.shape}")
    return h_mask


def _check_lengths(lengths, N, T):
    """``lengths`` as an int64 array of shape (N,) with values in [1, T] (or None)."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array, got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"lengths must have shape ({N},), got {arr.shape}")
    if N and (arr.min() < 1 or arr.max() > T):
        raise ValueError(f"lengths must be between 1 and T={T}, got {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


def _check_reverse(reverse, stateful):
    if reverse and stateful:
        raise ValueError("reverse=True cannot be stateful (its state would come from the future)")
    return bool(reverse)


def _schedule(lengths, N, T, reverse):
    """For every loop step s: (rows still running, each row's time index at step s)."""
    if lengths is None:
        lengths = np.full(N, T, dtype=np.int64)
    steps = []
    for s in range(T):
        rows = np.flatnonzero(lengths > s)
        if rows.size == 0:
            break
        ts = lengths[rows] - 1 - s if reverse else np.full(rows.size, s)
        steps.append((rows, ts))
    return steps


class _TimeLayer:
    """The time loop of every cell, once: a fresh cell per loop step (``_cell``), run on the
    rows still active at their own time index (``_schedule``), the state carried in
    ``self.h`` (and ``self.c`` for the LSTM: ``_state`` names the carried arrays).

    The cells' methods differ only in how many state arrays they pass along:
    ``forward(x, *state, h_mask)`` returns the new state (a tuple when there are
    several), ``backward(dh, *dstate_rest)`` returns ``(dx, *dstate)``."""

    _state = ("h",)

    def __init__(self, Wx, Wh, b, stateful=False, reverse=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None
        self.steps = None
        for name in self._state:
            setattr(self, name, None)
            setattr(self, "d" + name, None)
        self.stateful = stateful
        self.reverse = _check_reverse(reverse, stateful)
        self.track_grad_norms = False
        self.grad_norms_h = None
        self.grad_norms_c = None

    def forward(self, xs, lengths=None, h_mask=None):
        Wx, Wh, b = self.params
        dtype = Wx.dtype
        xs = np.asarray(xs).astype(dtype, copy=False)
        N, T, D = xs.shape
        H = Wh.shape[0]
        lengths = _check_lengths(lengths, N, T)
        h_mask = _check_mask(h_mask, N, H, dtype)

        self.layers = []
        self.steps = _schedule(lengths, N, T, self.reverse)
        hs = np.zeros((N, T, H), dtype=dtype)

        state = []
        for name in self._state:
            if not self.stateful or getattr(self, name) is None:
                setattr(self, name, np.zeros((N, H), dtype=dtype))
            state.append(np.array(getattr(self, name), dtype=dtype))

        for rows, ts in self.steps:
            layer = self._cell()
            mask = None if h_mask is None else h_mask[rows]
            new = layer.forward(xs[rows, ts, :], *(s[rows] for s in state), mask)
            for s, value in zip(state, new if len(state) > 1 else (new,)):
                s[rows] = value
            hs[rows, ts, :] = state[0][rows]
            self.layers.append(layer)

        for name, s in zip(self._state, state):
            setattr(self, name, s)
        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        dtype = Wx.dtype
        dhs = np.asarray(dhs).astype(dtype, copy=False)
        N, T, H = dhs.shape
        D = Wx.shape[0]

        dxs = np.zeros((N, T, D), dtype=dtype)
        # with lengths or reverse, entry s is loop step s (the s-th step each row takes)
        track = self.track_grad_norms
        norms = {n: np.zeros(T, dtype=np.float64) if track else None for n in self._state}

        dstate = [np.zeros((N, H), dtype=dtype) for _ in self._state]
        grads = [0, 0, 0]
        for s in reversed(range(len(self.steps))):
            rows, ts = self.steps[s]
            layer = self.layers[s]
            dh_total = dhs[rows, ts, :] + dstate[0][rows]
            rest = [d[rows] for d in dstate[1:]]
            if track:
                norms["h"][s] = _norm64(dh_total)
                if "c" in norms:  # total gradient w.r.t. c_t, as formed inside LSTM.backward
                    o, tanh_c = layer.cache[6], layer.cache[8]
                    norms["c"][s] = _norm64(rest[0] + dh_total * o * (1 - tanh_c**2))
            dx, *new = layer.backward(dh_total, *rest)
            for d, value in zip(dstate, new):
                d[rows] = value
            dxs[rows, ts, :] = dx

            for i, grad in enumerate(layer.grads):
                grads[i] += grad

        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        for name, d in zip(self._state, dstate):
            setattr(self, "d" + name, d)
        self.grad_norms_h = norms["h"]
        self.grad_norms_c = norms.get("c")
        return dxs

    def reset_state(self):
        for name in self._state:
            setattr(self, name, None)


class TimeRNN(_TimeLayer):
    """A vanilla RNN unrolled over ``T`` timesteps (DLfS2 ``TimeRNN``).

    ``forward(xs, lengths=None, h_mask=None)``: ``lengths`` (N,) runs row ``n``
    over its first ``lengths[n]`` steps (in reverse from ``lengths[n] - 1`` with
    ``reverse=True``); ``h_mask`` (N, H) multiplies ``h_{t-1}`` in the product
    ``h_{t-1} Wh`` at every step (recurrent dropout)."""

    def __init__(self, Wx, Wh, b, stateful=False, nonlinearity="tanh", reverse=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(Wx, Wh, b, stateful=stateful, reverse=reverse)
        self.nonlinearity = nonlinearity

    def _cell(self):
        return RNN(*self.params, nonlinearity=self.nonlinearity)

    def set_state(self, h):
        self.h = h


class TimeGRU(_TimeLayer):
    """A GRU unrolled over ``T`` timesteps (same interface as ``TimeRNN``)."""

    def __init__(self, Wx, Wh, b, stateful=False, reset_after=False, reverse=False):
        _check_gru_bias(b, Wx.shape[1], reset_after)
        super().__init__(Wx, Wh, b, stateful=stateful, reverse=reverse)
        self.reset_after = reset_after

    def _cell(self):
        return GRU(*self.params, reset_after=self.reset_after)

    def set_state(self, h):
        self.h = h


class TimeLSTM(_TimeLayer):
    """An LSTM unrolled over ``T`` timesteps (DLfS2 ``TimeLSTM``); ``lengths``,
    ``h_mask`` and ``reverse`` as in ``TimeRNN``; carries the cell state ``c`` too."""

    _state = ("h", "c")

    def _cell(self):
        return LSTM(*self.params)

    def set_state(self, h, c=None):
        self.h, self.c = h, c
