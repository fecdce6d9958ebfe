"""Weight drop (DropConnect on the recurrent weights Wh, AWD-LSTM's regulariser) in ``Stack`` and
``LanguageModel``: a training forward computes with Wh * M (M fresh, 0 or 1/(1-p)), backward
masks Wh's gradient likewise, ``params`` hold the raw Wh throughout, evaluation uses it as it is.

Oracles: the same stack without weight drop whose Wh are set to the masked copies (every
output and gradient equal), finite differences in float64 with the mask held fixed, the
mask's statistics, and the errors.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastrnn.layers import Bidirectional, Stack
from fastrnn.models import LanguageModel

CELLS = ("lstm", "gru", "rnn")


def cells_of(stack):
    out = []
    for layer in stack.layers:
        if isinstance(layer, Bidirectional):
            out += [layer.forward_layer, layer.backward_layer]
        else:
            out.append(layer)
    return out


def pair(cell, bidirectional, p, dtype=np.float64, **kw):
    """A stack with weight drop p and the same stack (same weights) without it."""

    def make(**extra):
        return Stack.create(
            cell,
            5,
            [6, 7] if not bidirectional else [6, 6],
            bidirectional=bidirectional,
            rng=np.random.default_rng(1),
            dtype=dtype,
            **kw,
            **extra,
        )

    return make(weight_drop=p, seed=3), make()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_equals_the_plain_stack_on_masked_weights(cell, bidirectional):
    p = 0.4
    s, plain = pair(cell, bidirectional, p)
    raw = [c.params[1].copy() for c in cells_of(s)]
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((3, 4, 5))
    dhs = rng.standard_normal((3, 4, s.output_size))
    hs = s.forward(xs)
    masked = [e[2].copy() for e in s._weight_drops]  # what the layers computed with
    dxs = s.backward(dhs)
    for c, w in zip(cells_of(plain), masked):
        c.params[1][...] = w
    np.testing.assert_array_equal(hs, plain.forward(xs))
    np.testing.assert_array_equal(dxs, plain.backward(dhs))
    scale = 1.0 / (1.0 - p)
    for c, cp, r, w in zip(cells_of(s), cells_of(plain), raw, masked):
        keep = w != 0
        # the mask: 0 or 1/(1-p) on the raw weights
        np.testing.assert_allclose(w[keep], r[keep] * scale, rtol=1e-15)
        # dL/d(raw Wh) = dL/d(masked Wh) * M
        np.testing.assert_allclose(c.grads[1], cp.grads[1] * keep * scale, rtol=1e-14)
        for k in (0, 2):
            np.testing.assert_array_equal(c.grads[k], cp.grads[k])
        # params are the raw Wh again, unchanged
        np.testing.assert_array_equal(c.params[1], r)
    # the stack's params list holds the raw arrays themselves
    assert all(any(q is c.params[1] for q in s.params) for c in cells_of(s))


@pytest.mark.parametrize("cell", CELLS)
def test_finite_differences_with_the_mask_held(cell):
    s, _ = pair(cell, False, 0.5)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((2, 3, 5))
    dhs = rng.standard_normal((2, 3, s.output_size))
    state = s._weight_rng.bit_generator.state

    def loss():
        s._weight_rng.bit_generator.state = state  # the same keys: the same masks
        return float(np.sum(s.forward(xs) * dhs))

    loss()
    s.backward(dhs)
    for k, c in enumerate(cells_of(s)):
        Wh, dWh = c.params[1], c.grads[1].copy()
        idx = list(zip(*np.nonzero(np.ones(Wh.shape, bool))))[:: max(1, Wh.size // 25)]
        for i in idx:
            old = Wh[i]
            Wh[i] = old + 1e-6
            up = loss()
            Wh[i] = old - 1e-6
            down = loss()
            Wh[i] = old
            np.testing.assert_allclose(dWh[i], (up - down) / 2e-6, rtol=1e-5, atol=1e-8)
        assert np.any(dWh == 0) and np.any(dWh != 0), k  # dropped weights get no gradient


def test_fresh_masks_seeded_and_their_rate():
    s, _ = pair("lstm", False, 0.3, dtype=np.float32)
    t, _ = pair("lstm", False, 0.3, dtype=np.float32)
    xs = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)

    def masks(stack):
        stack.forward(xs)
        out = [e[2] == 0 for e in stack._weight_drops]
        stack.backward(np.ones((2, 3, stack.output_size), np.float32))
        return out

    a1, a2, b1 = masks(s), masks(s), masks(t)
    assert any(not np.array_equal(x, y) for x, y in zip(a1, a2))  # fresh at every forward
    assert all(np.array_equal(x, y) for x, y in zip(a1, b1))  # the seed fixes them
    big = Stack.create("lstm", 8, [256], rng=np.random.default_rng(0), weight_drop=0.3, seed=0)
    big.forward(np.ones((1, 1, 8), np.float32))
    assert abs(np.mean(big._weight_drops[0][2] == 0) - 0.3) < 0.01


def test_evaluation_uses_the_raw_weights():
    s, plain = pair("gru", True, 0.5)
    xs = np.random.default_rng(0).standard_normal((2, 4, 5))
    s.train_flg = False
    np.testing.assert_array_equal(s.forward(xs), plain.forward(xs))
    s.train_flg = True
    assert not np.array_equal(s.forward(xs), plain.forward(xs))
    # outside the stack's calls the layers hold the raw Wh, even between forward and backward
    raw = [e[1] for e in s._weight_drops]
    assert all(c.params[1] is r for c, r in zip(cells_of(s), raw))
    s.backward(np.ones((2, 4, s.output_size)))
    assert all(c.params[1] is r for c, r in zip(cells_of(s), raw))


def test_config_round_trip_and_errors():
    s, _ = pair("lstm", False, 0.25)
    assert s.get_config()["weight_drop"] == 0.25
    assert Stack.from_config(s.get_config(), s.params).weight_drop == 0.25
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"weight_drop must be in \[0, 1\)"):
            pair("lstm", False, bad)
    with pytest.raises(TypeError, match="weight_drop must be a number"):
        pair("lstm", False, "0.5")
    s.layers[1].params[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="recurrent weights Wh of cell 1 contain NaN or Inf"):
        s.forward(np.ones((1, 2, 5)))
    assert all(c.params[1] is e[1] for c, e in zip(cells_of(s), s._weight_drops))


def test_language_model_weight_drop():
    kw = dict(variational={"input": 0.2, "recurrent": 0.2}, tie_weights=True, seed=4)
    m = LanguageModel(40, 8, [8, 8], weight_drop=0.5, **kw)
    assert m.stack.weight_drop == 0.5 and m.get_config()["weight_drop"] == 0.5
    twin = LanguageModel.from_config(m.get_config(), [p.copy() for p in m.params])
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, 40, (4, 6)), rng.integers(0, 40, (4, 6))
    assert m.forward(xs, ts) == twin.forward(xs, ts)  # the same seed: the same masks
    m.backward()
    plain = LanguageModel(40, 8, [8, 8], **kw)
    for a, b in zip(plain.params, m.params):
        a[...] = b
    # evaluation: weight drop changes nothing (from the same, empty, carried state)
    m.reset_state()
    assert m.forward(xs, ts, train_flg=False) == plain.forward(xs, ts, train_flg=False)
    # the Wh gradients are masked: zeros where weights were dropped
    dWh = m.grads[2]
    assert 0.3 < np.mean(dWh == 0) < 0.7


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    cell=st.sampled_from(CELLS),
    bidirectional=st.booleans(),
    connection=st.sampled_from([None, "residual", "dense", "highway"]),
    N=st.integers(1, 5),
    T=st.integers(1, 6),
    H=st.integers(1, 9),
    p=st.floats(0.05, 0.9),
    with_lengths=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_any_stack_equals_the_plain_one_on_its_masked_weights(
    cell, bidirectional, connection, N, T, H, p, with_lengths, dtype, seed
):
    """Any cell, direction, connection, shape, ratio, lengths and dtype: outputs and input
    gradients as the plain stack's on the masked weights, Wh's gradient masked, the rest equal."""
    rng = np.random.default_rng(seed)
    width = 2 * H if bidirectional else H
    kw = dict(bidirectional=bidirectional, connection=connection, dtype=dtype)
    D = width if connection in ("residual", "highway") else 3
    s = Stack.create(
        cell, D, [H, H], rng=np.random.default_rng(seed), weight_drop=p, seed=seed, **kw
    )
    plain = Stack.create(cell, D, [H, H], rng=np.random.default_rng(seed), seed=seed, **kw)
    for a, b in zip(s.params, plain.params):
        np.testing.assert_array_equal(a, b)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, width)).astype(dtype)
    lengths = rng.integers(1, T + 1, N) if with_lengths else None
    hs = s.forward(xs, lengths=lengths)
    dxs = s.backward(dhs)
    for c, e in zip(cells_of(plain), s._weight_drops):
        c.params[1][...] = e[2]
    np.testing.assert_array_equal(hs, plain.forward(xs, lengths=lengths))
    np.testing.assert_array_equal(dxs, plain.backward(dhs))
    scale = dtype(1.0 / (1.0 - p))
    for c, cp, e in zip(cells_of(s), cells_of(plain), s._weight_drops):
        keep = e[2] != 0
        np.testing.assert_array_equal(e[2], np.where(keep, e[1] * scale, 0))
        np.testing.assert_array_equal(c.grads[1], cp.grads[1] * np.where(keep, scale, 0))
        for k in (0, 2):
            np.testing.assert_array_equal(c.grads[k], cp.grads[k])
    for g, gp in zip(
        s.grads[len(s.grads) - len(s.highway) :],
        plain.grads[len(plain.grads) - len(plain.highway) :],
    ):
        np.testing.assert_array_equal(g, gp)
