"""NaN/Inf in the weights of a single step (T = 1, N <= DIRECT_MAX_ROWS), where the kernel,
not a pass over the weights, finds them (layers._weights_checked_by_kernel).

The promise is the same as everywhere else (test_errors.py): a ValueError naming the weight, and
the layer left exactly as it was -- state, grads, and the caches of the last good forward, which
a following backward must still differentiate.  Checked for every kind, both dtypes, NaN and
+-Inf at the first, last and a random position of Wx and Wh, with zero inputs and state too
(0 * NaN and 0 * Inf must still be caught), at the smallest, a middle and the largest N of the
path.  And the other side: finite weights whose products overflow must give no error, and the
same results as before the kernel checked anything (the reference layers)."""

import numpy as np
import pytest
from conftest import KINDS, make_cell, make_params, make_time, set_state

import fastrnn
from fastrnn import reference as ref
from fastrnn._packed import DIRECT_MAX_ROWS
from fastrnn.layers.recurrent import _weights_checked_by_kernel

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")

D, H = 5, 7


def test_the_path_is_taken_for_these_shapes():
    for N in (1, 2, 7, DIRECT_MAX_ROWS):
        assert _weights_checked_by_kernel(N, 1)
    for N, T in ((DIRECT_MAX_ROWS + 1, 1), (2, 2), (1, 2), (0, 1)):
        assert not _weights_checked_by_kernel(N, T)


class Step:
    """A stateful time layer after one good T = 1 forward + backward, everything recorded."""

    def __init__(self, kind, N, dtype, zero_inputs=False, seed=0):
        rng = np.random.default_rng(seed)
        self.kind = kind
        self.layer = make_time(fastrnn, kind, make_params(kind, rng, D, H, dtype), stateful=True)
        self.layer.track_grad_norms = True
        self.xs = rng.standard_normal((N, 1, D)).astype(dtype)
        self.dhs = rng.standard_normal((N, 1, H)).astype(dtype)
        h0 = rng.standard_normal((N, H)).astype(dtype)
        set_state(self.layer, kind, h0, h0[::-1].copy() if kind == "lstm" else None)
        self.hs = self.layer.forward(self.xs).copy()
        self.dxs = self.layer.backward(self.dhs).copy()
        self.state = self.copies()
        if zero_inputs:  # the bad call: zero x and zero carried state
            self.xs_bad = np.zeros_like(self.xs)
            set_state(
                self.layer,
                kind,
                np.zeros((N, H), dtype),
                np.zeros((N, H), dtype) if kind == "lstm" else None,
            )
            self.state = self.copies()
        else:
            self.xs_bad = self.xs

    def copies(self):
        L = self.layer
        out = {
            "grads": [g.copy() for g in L.grads],
            "h": L.h.copy(),
            "dh": L.dh.copy(),
            "norms": L.grad_norms_h.copy(),
        }
        if self.kind == "lstm":
            out["c"], out["dc"] = L.c.copy(), L.dc.copy()
        return out

    def assert_unchanged(self):
        now = self.copies()
        for key, want in self.state.items():
            for a, b in zip(
                want if key == "grads" else [want], now[key] if key == "grads" else [now[key]]
            ):
                np.testing.assert_array_equal(a, b, err_msg=key)
        # the caches are still those of the last good forward
        np.testing.assert_array_equal(self.layer.backward(self.dhs), self.dxs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("call", ["forward", "backward"])
def test_nonfinite_weight_in_a_step(kind, dtype, which, value, call):
    rng = np.random.default_rng(abs(hash((kind, which, call))) % 2**32)
    for N in (1, 2, 9, DIRECT_MAX_ROWS):
        for zero_inputs in (False, True):
            s = Step(kind, N, dtype, zero_inputs)
            W = s.layer.params[which]
            for idx in (
                (0, 0),
                (W.shape[0] - 1, W.shape[1] - 1),
                tuple(int(rng.integers(d)) for d in W.shape),
            ):
                old = W[idx]
                W[idx] = value
                with pytest.raises(ValueError, match=("Wx", "Wh")[which] + " contains NaN or Inf"):
                    if call == "forward":
                        s.layer.forward(s.xs_bad)
                    else:
                        s.layer.backward(s.dhs)
                W[idx] = old
                s.assert_unchanged()


@pytest.mark.parametrize("value", [np.nan, -np.inf])
@pytest.mark.parametrize("zero_inputs", [False, True])
def test_nonfinite_weight_in_a_wide_step_on_two_threads(value, zero_inputs):
    # a batch-1 step of a wide LSTM runs on both threads, each over its rows of [Wx; Wh]
    # (units_few_rows): a NaN or Inf in either thread's rows is still found, the layer unchanged
    rng = np.random.default_rng(8)
    Hw, Dw = 400, 9
    layer = make_time(fastrnn, "lstm", make_params("lstm", rng, Dw, Hw, np.float32), stateful=True)
    layer.threads = 2
    xs = np.zeros((1, 1, Dw), np.float32) if zero_inputs else rng.standard_normal((1, 1, Dw))
    xs = xs.astype(np.float32)
    hs = layer.forward(xs).copy()
    h, c = layer.h.copy(), layer.c.copy()
    if zero_inputs:
        layer.set_state(np.zeros_like(h), np.zeros_like(c))
        h, c = layer.h.copy(), layer.c.copy()
    for which, idx in ((0, (0, 0)), (0, (Dw - 1, 4 * Hw - 1)), (1, (3, 1234)), (1, (Hw - 1, 0))):
        W = layer.params[which]
        old = W[idx]
        W[idx] = value
        with pytest.raises(ValueError, match=("Wx", "Wh")[which] + " contains NaN or Inf"):
            layer.forward(xs)
        W[idx] = old
        np.testing.assert_array_equal(layer.h, h)
        np.testing.assert_array_equal(layer.c, c)
    layer.set_state(h, c)
    if not zero_inputs:
        layer.reset_state()
        np.testing.assert_allclose(layer.forward(xs), hs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_weight_in_a_cell(kind, value):
    """The cells run the same path: refused, and the cell's next backward is unchanged."""
    rng = np.random.default_rng(3)
    N = 4
    params = make_params(kind, rng, D, H, np.float32)
    cell = make_cell(fastrnn, kind, params)
    x = rng.standard_normal((N, D)).astype(np.float32)
    h = rng.standard_normal((N, H)).astype(np.float32)
    dh = rng.standard_normal((N, H)).astype(np.float32)
    if kind == "lstm":
        cell.forward(x, h, h)
        before = [a.copy() for a in cell.backward(dh, dh)]
    else:
        cell.forward(x, h)
        before = [a.copy() for a in cell.backward(dh)]
    grads = [g.copy() for g in cell.grads]
    for which in (0, 1):
        old = cell.params[which][1, 2]
        cell.params[which][1, 2] = value
        with pytest.raises(ValueError, match=("Wx", "Wh")[which]):
            cell.forward(x, h, h) if kind == "lstm" else cell.forward(x, h)
        with pytest.raises(ValueError, match=("Wx", "Wh")[which]):
            cell.backward(dh, dh) if kind == "lstm" else cell.backward(dh)
        cell.params[which][1, 2] = old
        for g, o in zip(cell.grads, grads):
            np.testing.assert_array_equal(g, o)
    after = cell.backward(dh, dh) if kind == "lstm" else cell.backward(dh)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_overflow_with_finite_weights_is_not_an_error(kind):
    """Finite float32 weights whose products overflow: the kernel's flag goes up, the scan finds
    nothing, and forward and backward complete as the reference layers compute them."""
    rng = np.random.default_rng(5)
    N = 3
    params = make_params(kind, rng, D, H, np.float32)
    params[0][:] = 3e37  # x Wx and dG Wx^T overflow float32
    xs = np.full((N, 1, D), 2.0, np.float32)
    dhs = np.full((N, 1, H), 1e3, np.float32)
    fast = make_time(fastrnn, kind, [p.copy() for p in params])
    slow = make_time(ref, kind, [p.astype(np.float64) for p in params])
    with np.errstate(all="ignore"):
        hs = fast.forward(xs)
        dxs = fast.backward(dhs)
        want_hs = slow.forward(xs.astype(np.float64))
        slow.backward(dhs.astype(np.float64))
    assert np.isfinite(hs).all()  # the gates saturate
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=1e-6)
    for g, w in zip(fast.grads, slow.grads):
        finite = np.isfinite(w.astype(np.float32))
        np.testing.assert_allclose(g[finite], w[finite], rtol=1e-4, atol=1e-6)
    assert dxs.shape == (N, 1, D)


@pytest.mark.parametrize("kind", KINDS)
def test_steps_alternate_cache_sets_correctly(kind):
    """Many T = 1 calls in a row (the spare cache set taking turns), each backward checked
    against the reference on the forward just before it, sizes changing on the way."""
    rng = np.random.default_rng(9)
    params = make_params(kind, rng, D, H, np.float64)
    fast = make_time(fastrnn, kind, [p.copy() for p in params])
    slow = make_time(ref, kind, [p.copy() for p in params])
    for N in (3, 3, 3, 5, 5, 3, 30, 3):
        xs = rng.standard_normal((N, 1, D))
        dhs = rng.standard_normal((N, 1, H))
        np.testing.assert_allclose(fast.forward(xs), slow.forward(xs), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fast.backward(dhs), slow.backward(dhs), rtol=1e-12, atol=1e-12)
        for g, w in zip(fast.grads, slow.grads):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threads", [2, 3])
def test_nonfinite_weight_found_by_any_thread(kind, threads):
    """With several kernel threads each flags its own rows: a bad weight is found whichever
    thread's rows show it, and forward and backward agree with one thread otherwise."""
    N = 8
    for which in (0, 1):
        s = Step(kind, N, np.float32)
        one = make_time(fastrnn, kind, [p.copy() for p in s.layer.params], stateful=True)
        one.threads = 1
        set_state(one, kind, s.layer.h, s.layer.c if kind == "lstm" else None)
        s.layer.threads = threads
        np.testing.assert_allclose(s.layer.forward(s.xs), one.forward(s.xs), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            s.layer.backward(s.dhs), one.backward(s.dhs), rtol=1e-6, atol=1e-6
        )
        s.hs, s.dxs = s.layer.forward(s.xs).copy(), s.layer.backward(s.dhs).copy()
        s.state = s.copies()
        W = s.layer.params[which]
        old = W[-1, -1]
        W[-1, -1] = np.nan
        for call in ("forward", "backward"):
            with pytest.raises(ValueError, match=("Wx", "Wh")[which]):
                s.layer.forward(s.xs) if call == "forward" else s.layer.backward(s.dhs)
        W[-1, -1] = old
        s.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("N", [DIRECT_MAX_ROWS + 1, 40, 64, 65])
def test_wider_single_steps_match_the_reference(kind, N):
    """A single step of 25-64 rows with weights in L2 takes the direct kernels for its A @ B
    products (worth_step_direct in src/gemm/_packed.pxd), 65 rows BLAS: both agree with the
    reference in float64, forward and backward, and a NaN in Wh is still reported (here by
    the pass over the weights)."""
    rng = np.random.default_rng(N)
    params = make_params(kind, rng, 37, 21)
    ours, theirs = make_time(fastrnn, kind, params), make_time(ref, kind, params)
    xs = rng.standard_normal((N, 1, 37))
    dhs = rng.standard_normal((N, 1, 21))
    np.testing.assert_allclose(ours.forward(xs), theirs.forward(xs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dhs), theirs.backward(dhs), rtol=1e-12, atol=1e-12)
    for g, r in zip(ours.grads, theirs.grads):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-11)
    params[1][3, 5] = np.nan
    with pytest.raises(ValueError, match="Wh"):
        ours.forward(xs)
