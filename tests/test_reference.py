"""Independent verification of the plain NumPy reference (the test oracle).

The reference implementation in ``fastrnn/reference/recurrent.py`` is what the compiled
layers are compared against, so it is checked here on its own terms:

* forward passes against independently written step formulas (gate blocks
  sliced one by one, sigmoid written via tanh, products via einsum);
* backward passes against central finite differences in float64;
* gradient-flow diagnostics against finite differences of the loss w.r.t. a
  perturbation injected into h_t / c_t inside an independent unrolled forward.
"""

import importlib.util
import os

import numpy as np
import pytest
from conftest import num_grad

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")

try:
    from fastrnn import reference as ref
except ImportError:  # package __init__ imports unbuilt extensions: load the file
    _path = os.path.join(os.path.dirname(__file__), os.pardir, "fastrnn", "reference.py")
    _spec = importlib.util.spec_from_file_location("_fastrnn_reference", _path)
    ref = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(ref)


KINDS = ["rnn", "lstm", "gru", "gru_ra"]  # gru_ra = GRU with reset_after=True
N, T, D, H = 2, 4, 3, 4
RTOL = 1e-6


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def make_params(kind, rng, D=D, H=H, dtype=np.float64, scale=0.5):
    gates = {"rnn": 1, "lstm": 4, "gru": 3, "gru_ra": 3}[kind]
    Wx = (scale * rng.standard_normal((D, gates * H))).astype(dtype)
    Wh = (scale * rng.standard_normal((H, gates * H))).astype(dtype)
    bshape = (2, gates * H) if kind == "gru_ra" else (gates * H,)
    b = (scale * rng.standard_normal(bshape)).astype(dtype)
    return Wx, Wh, b


def make_cell(kind, params):
    if kind == "rnn":
        return ref.RNN(*params)
    if kind == "lstm":
        return ref.LSTM(*params)
    return ref.GRU(*params, reset_after=(kind == "gru_ra"))


def make_time(kind, params, stateful=False):
    if kind == "rnn":
        return ref.TimeRNN(*params, stateful=stateful)
    if kind == "lstm":
        return ref.TimeLSTM(*params, stateful=stateful)
    return ref.TimeGRU(*params, stateful=stateful, reset_after=(kind == "gru_ra"))


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-12)
    return np.abs(a - b).max(initial=0.0) / denom


def assert_grad(analytic, numeric, name, tol=RTOL):
    assert np.shape(analytic) == np.shape(numeric), name
    err = rel_err(analytic, numeric)
    assert err < tol, f"{name}: relative error {err:.3e}"


# --- independent forward formulas -----------------------------------------


def sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def mm(a, w):
    return np.einsum("nk,kh->nh", a, w)


def block(W, k, H):
    return W[..., k * H : (k + 1) * H]


def ind_step(kind, params, x, h, c=None, delta_c=None):
    """One step written independently of fastrnn.reference. Returns (h, c)."""
    Wx, Wh, b = params
    Hh = h.shape[1]
    if kind == "rnn":
        return np.tanh(mm(x, Wx) + mm(h, Wh) + b), None
    if kind == "lstm":
        pre = [
            mm(x, block(Wx, k, Hh)) + mm(h, block(Wh, k, Hh)) + block(b, k, Hh) for k in range(4)
        ]
        f, g, i, o = sig(pre[0]), np.tanh(pre[1]), sig(pre[2]), sig(pre[3])
        c_new = f * c + i * g
        if delta_c is not None:
            c_new = c_new + delta_c
        return o * np.tanh(c_new), c_new
    Wxz, Wxr, Wxh = (block(Wx, k, Hh) for k in range(3))
    Whz, Whr, Whh = (block(Wh, k, Hh) for k in range(3))
    if kind == "gru":
        bz, br, bh = (block(b, k, Hh) for k in range(3))
        z = sig(mm(x, Wxz) + mm(h, Whz) + bz)
        r = sig(mm(x, Wxr) + mm(h, Whr) + br)
        hh = np.tanh(mm(x, Wxh) + mm(r * h, Whh) + bh)
    else:  # gru_ra
        b0, b1 = b[0], b[1]
        z = sig(mm(x, Wxz) + block(b0, 0, Hh) + mm(h, Whz) + block(b1, 0, Hh))
        r = sig(mm(x, Wxr) + block(b0, 1, Hh) + mm(h, Whr) + block(b1, 1, Hh))
        hh = np.tanh(mm(x, Wxh) + block(b0, 2, Hh) + r * (mm(h, Whh) + block(b1, 2, Hh)))
    return h + z * (hh - h), None


def ind_unroll(kind, params, xs, h0, c0=None, delta_h=None, delta_c=None):
    """Unrolled forward; delta_h/delta_c = (t, array) is added to h_t / c_t
    (c_t is perturbed before h_t = o * tanh(c_t) is formed)."""
    Nn, Tt, _ = xs.shape
    h, c = h0, c0
    hs = np.empty((Nn, Tt, h0.shape[1]))
    for t in range(Tt):
        dcv = delta_c[1] if (delta_c is not None and delta_c[0] == t) else None
        h, c = ind_step(kind, params, xs[:, t, :], h, c, delta_c=dcv)
        if delta_h is not None and delta_h[0] == t:
            h = h + delta_h[1]
        hs[:, t, :] = h
    return hs


def time_setup(kind, seed, Tt=T, Nn=N):
    rng = np.random.default_rng(seed)
    params = make_params(kind, rng)
    xs = rng.standard_normal((Nn, Tt, D))
    h0 = 0.5 * rng.standard_normal((Nn, H))
    c0 = 0.5 * rng.standard_normal((Nn, H)) if kind == "lstm" else None
    R = rng.standard_normal((Nn, Tt, H))
    return params, xs, h0, c0, R


# ---------------------------------------------------------------------------
# elementary functions
# ---------------------------------------------------------------------------


def test_sigmoid():
    x = np.linspace(-20, 20, 101)
    np.testing.assert_allclose(ref.sigmoid(x), sig(x), rtol=1e-12, atol=1e-15)
    assert ref.sigmoid(0.0) == 0.5


# ---------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_cell_forward_matches_independent_formula(kind):
    rng = np.random.default_rng(1)
    params = make_params(kind, rng)
    x = rng.standard_normal((3, D))
    h = rng.standard_normal((3, H))
    cell = make_cell(kind, params)
    if kind == "lstm":
        c = rng.standard_normal((3, H))
        h_new, c_new = cell.forward(x, h, c)
        h_exp, c_exp = ind_step(kind, params, x, h, c)
        np.testing.assert_allclose(c_new, c_exp, rtol=1e-12, atol=1e-14)
    else:
        h_new = cell.forward(x, h)
        h_exp, _ = ind_step(kind, params, x, h)
    np.testing.assert_allclose(h_new, h_exp, rtol=1e-12, atol=1e-14)
    # params are the caller's arrays, grads are fresh zero arrays
    for p, q in zip(cell.params, params):
        assert p is q
    for g, p in zip(cell.grads, params):
        assert g.shape == p.shape and g.dtype == p.dtype and not g.any()


@pytest.mark.parametrize("kind", KINDS)
def test_cell_gradients(kind):
    rng = np.random.default_rng(2)
    params = make_params(kind, rng)
    Nn = 3
    x = rng.standard_normal((Nn, D))
    h = rng.standard_normal((Nn, H))
    c = rng.standard_normal((Nn, H))
    Rh = rng.standard_normal((Nn, H))
    Rc = rng.standard_normal((Nn, H))
    cell = make_cell(kind, params)

    def loss():
        if kind == "lstm":
            hn, cn = cell.forward(x, h, c)
            return np.sum(hn * Rh) + np.sum(cn * Rc)
        return np.sum(cell.forward(x, h) * Rh)

    loss()
    if kind == "lstm":
        dx, dh, dc = cell.backward(Rh, Rc)
    else:
        dx, dh = cell.backward(Rh)
    grads = [g.copy() for g in cell.grads]

    assert_grad(dx, num_grad(loss, x), "dx")
    assert_grad(dh, num_grad(loss, h), "dh_prev")
    if kind == "lstm":
        assert_grad(dc, num_grad(loss, c), "dc_prev")
    for name, g, p in zip(["dWx", "dWh", "db"], grads, params):
        assert_grad(g, num_grad(loss, p), name)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_grads_keep_identity_and_are_overwritten(kind):
    rng = np.random.default_rng(3)
    params = make_params(kind, rng)
    x = rng.standard_normal((2, D))
    h = rng.standard_normal((2, H))
    c = rng.standard_normal((2, H))
    dh = rng.standard_normal((2, H))
    cell = make_cell(kind, params)
    ids = [id(g) for g in cell.grads]

    def run(scale):
        if kind == "lstm":
            cell.forward(x, h, c)
            cell.backward(scale * dh, scale * dh)
        else:
            cell.forward(x, h)
            cell.backward(scale * dh)
        return [g.copy() for g in cell.grads]

    g1 = run(1.0)
    g2 = run(2.0)
    assert [id(g) for g in cell.grads] == ids
    for a, b2 in zip(g1, g2):  # overwritten (2x), not accumulated (3x)
        np.testing.assert_allclose(b2, 2 * a, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_bias_shape_validation(reset_after):
    rng = np.random.default_rng(4)
    Wx = rng.standard_normal((D, 3 * H))
    Wh = rng.standard_normal((H, 3 * H))
    wrong = np.zeros((3 * H,)) if reset_after else np.zeros((2, 3 * H))
    expected = str((2, 3 * H)) if reset_after else str((3 * H,))
    for ctor in (ref.GRU, ref.TimeGRU):
        with pytest.raises(ValueError) as info:
            ctor(Wx, Wh, wrong, reset_after=reset_after)
        msg = str(info.value)
        assert "`b`" in msg and expected in msg
    right = np.zeros((2, 3 * H)) if reset_after else np.zeros((3 * H,))
    cell = ref.GRU(Wx, Wh, right, reset_after=reset_after)
    assert cell.grads[2].shape == right.shape


# ---------------------------------------------------------------------------
# time layers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_time_forward_matches_unrolled_formula(kind):
    params, xs, h0, c0, _ = time_setup(kind, 5)
    layer = make_time(kind, params, stateful=True)
    if kind == "lstm":
        layer.set_state(h0, c0)
    else:
        layer.set_state(h0)
    hs = layer.forward(xs)
    np.testing.assert_allclose(hs, ind_unroll(kind, params, xs, h0, c0), rtol=1e-12, atol=1e-14)
    assert hs.shape == (N, T, H)
    assert len(layer.layers) == T
    assert len({id(c) for c in layer.layers}) == T  # fresh cell per step
    np.testing.assert_array_equal(layer.h, hs[:, -1, :])
    if kind == "lstm":
        np.testing.assert_allclose(layer.c, ind_last_c(params, xs, h0, c0), rtol=1e-12, atol=1e-14)
    # a fresh hs array on every call
    hs2 = layer.forward(xs)
    assert hs2 is not hs


def ind_last_c(params, xs, h, c):
    for t in range(xs.shape[1]):
        h, c = ind_step("lstm", params, xs[:, t], h, c)
    return c


@pytest.mark.parametrize("kind", KINDS)
def test_time_gradients_with_initial_state(kind):
    params, xs, h0, c0, R = time_setup(kind, 6)
    layer = make_time(kind, params, stateful=True)

    def loss():
        if kind == "lstm":
            layer.set_state(h0, c0)
        else:
            layer.set_state(h0)
        return np.sum(layer.forward(xs) * R)

    loss()
    dxs = layer.backward(R)
    grads = [g.copy() for g in layer.grads]
    dh, dc = layer.dh.copy(), (layer.dc.copy() if kind == "lstm" else None)

    assert dxs.shape == xs.shape
    assert_grad(dxs, num_grad(loss, xs), "dxs")
    for name, g, p in zip(["dWx", "dWh", "db"], grads, params):
        assert_grad(g, num_grad(loss, p), name)
    assert_grad(dh, num_grad(loss, h0), "dh (initial state)")
    if kind == "lstm":
        assert_grad(dc, num_grad(loss, c0), "dc (initial state)")


@pytest.mark.parametrize("kind", KINDS)
def test_time_not_stateful_starts_from_zero(kind):
    params, xs, h0, c0, R = time_setup(kind, 7)
    layer = make_time(kind, params, stateful=False)
    if kind == "lstm":
        layer.set_state(h0, c0)
    else:
        layer.set_state(h0)
    hs1 = layer.forward(xs)  # set_state ignored when not stateful
    hs2 = layer.forward(xs)
    zeros = np.zeros((N, H))
    np.testing.assert_allclose(
        hs1,
        ind_unroll(kind, params, xs, zeros, zeros if kind == "lstm" else None),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_array_equal(hs1, hs2)

    def loss():
        return np.sum(layer.forward(xs) * R)

    loss()
    dxs = layer.backward(R)
    assert_grad(dxs, num_grad(loss, xs), "dxs")
    assert layer.dh.shape == (N, H)


@pytest.mark.parametrize("kind", KINDS)
def test_stateful_chain_truncated_bptt(kind):
    rng = np.random.default_rng(8)
    params = make_params(kind, rng)
    xs1 = rng.standard_normal((N, 3, D))
    xs2 = rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))
    layer = make_time(kind, params, stateful=True)

    layer.forward(xs1)
    h1 = layer.h.copy()
    c1 = layer.c.copy() if kind == "lstm" else None
    hs2 = layer.forward(xs2)

    # state carried over: same as the second half of one long forward
    zeros = np.zeros((N, H))
    full = ind_unroll(
        kind, params, np.concatenate([xs1, xs2], axis=1), zeros, zeros if kind == "lstm" else None
    )
    np.testing.assert_allclose(hs2, full[:, 3:], rtol=1e-12, atol=1e-14)

    dxs = layer.backward(R)
    grads = [g.copy() for g in layer.grads]

    # truncated BPTT: the first segment's state is a constant
    def loss():
        return np.sum(ind_unroll(kind, params, xs2, h1, c1) * R)

    assert_grad(dxs, num_grad(loss, xs2), "dxs")
    for name, g, p in zip(["dWx", "dWh", "db"], grads, params):
        assert_grad(g, num_grad(loss, p), name)
    assert_grad(layer.dh, num_grad(loss, h1), "dh (carried state)")
    if kind == "lstm":
        assert_grad(layer.dc, num_grad(loss, c1), "dc (carried state)")


@pytest.mark.parametrize("kind", KINDS)
def test_set_state_and_reset_state(kind):
    params, xs, h0, c0, _ = time_setup(kind, 9)
    layer = make_time(kind, params, stateful=True)
    assert layer.h is None and layer.stateful is True
    if kind == "lstm":
        layer.set_state(h0)  # c defaults to None -> zeros
        assert layer.c is None
        hs = layer.forward(xs)
        np.testing.assert_allclose(
            hs, ind_unroll(kind, params, xs, h0, np.zeros((N, H))), rtol=1e-12, atol=1e-14
        )
    else:
        layer.set_state(h0)
        assert layer.h is h0
        layer.forward(xs)
    layer.reset_state()
    assert layer.h is None
    if kind == "lstm":
        assert layer.c is None
    hs = layer.forward(xs)
    zeros = np.zeros((N, H))
    np.testing.assert_allclose(
        hs,
        ind_unroll(kind, params, xs, zeros, zeros if kind == "lstm" else None),
        rtol=1e-12,
        atol=1e-14,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_time_grads_keep_identity_and_are_overwritten(kind):
    params, xs, _, _, R = time_setup(kind, 10)
    layer = make_time(kind, params)
    ids = [id(g) for g in layer.grads]
    layer.forward(xs)
    layer.backward(R)
    g1 = [g.copy() for g in layer.grads]
    layer.forward(xs)
    layer.backward(2 * R)
    assert [id(g) for g in layer.grads] == ids
    assert all(p is q for p, q in zip(layer.params, params))
    for a, b2 in zip(g1, layer.grads):
        np.testing.assert_allclose(b2, 2 * a, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------
# dtype handling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_follows_params_float32(kind):
    params64, xs, h0, c0, R = time_setup(kind, 11)
    params32 = [p.astype(np.float32) for p in params64]
    layer32 = make_time(kind, params32)
    layer64 = make_time(kind, params64)

    hs32 = layer32.forward(xs)  # float64 input is cast to float32
    dxs32 = layer32.backward(R)  # float64 dhs too
    hs64 = layer64.forward(xs)
    dxs64 = layer64.backward(R)

    assert hs32.dtype == np.float32 and dxs32.dtype == np.float32
    assert layer32.h.dtype == np.float32 and layer32.dh.dtype == np.float32
    if kind == "lstm":
        assert layer32.c.dtype == np.float32 and layer32.dc.dtype == np.float32
    for g in layer32.grads:
        assert g.dtype == np.float32
    for cell in layer32.layers:
        for g in cell.grads:
            assert g.dtype == np.float32
    np.testing.assert_allclose(hs32, hs64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dxs32, dxs64, rtol=1e-4, atol=1e-5)
    for g32, g64 in zip(layer32.grads, layer64.grads):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_follows_params_float64(kind):
    params, xs, _, _, R = time_setup(kind, 12)
    layer = make_time(kind, params)
    hs = layer.forward(xs.astype(np.float32))
    dxs = layer.backward(R.astype(np.float32))
    assert hs.dtype == np.float64 and dxs.dtype == np.float64
    assert all(g.dtype == np.float64 for g in layer.grads)


# ---------------------------------------------------------------------------
# gradient-flow diagnostics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_grad_norms_off_by_default(kind):
    params, xs, _, _, R = time_setup(kind, 13)
    layer = make_time(kind, params)
    assert layer.track_grad_norms is False
    assert layer.grad_norms_h is None and layer.grad_norms_c is None
    layer.forward(xs)
    layer.backward(R)
    assert layer.grad_norms_h is None and layer.grad_norms_c is None
    # switching on and back off again
    layer.track_grad_norms = True
    layer.forward(xs)
    layer.backward(R)
    assert layer.grad_norms_h is not None
    layer.track_grad_norms = False
    layer.forward(xs)
    layer.backward(R)
    assert layer.grad_norms_h is None and layer.grad_norms_c is None


@pytest.mark.parametrize("kind", KINDS)
def test_grad_norms_h_by_perturbing_h_t(kind):
    params, xs, h0, c0, R = time_setup(kind, 14)
    layer = make_time(kind, params, stateful=True)
    layer.track_grad_norms = True
    if kind == "lstm":
        layer.set_state(h0, c0)
    else:
        layer.set_state(h0)
    layer.forward(xs)
    layer.backward(R)
    norms = layer.grad_norms_h
    assert norms.dtype == np.float64 and norms.shape == (T,)
    if kind == "lstm":
        assert layer.grad_norms_c.shape == (T,)
    else:
        assert layer.grad_norms_c is None

    # last step: only the direct gradient reaches h_{T-1}
    np.testing.assert_allclose(norms[-1], np.linalg.norm(R[:, -1]), rtol=1e-12)
    for t in range(T):
        delta = np.zeros((N, H))

        def loss():
            return np.sum(ind_unroll(kind, params, xs, h0, c0, delta_h=(t, delta)) * R)

        g = num_grad(loss, delta)
        np.testing.assert_allclose(norms[t], np.linalg.norm(g), rtol=RTOL, err_msg=f"t={t}")
    # earlier steps carry gradient from later ones, so they differ from |R_t|
    assert not np.allclose(norms[0], np.linalg.norm(R[:, 0]))


def test_grad_norms_c_by_perturbing_c_t():
    params, xs, h0, c0, R = time_setup("lstm", 15)
    layer = make_time("lstm", params, stateful=True)
    layer.track_grad_norms = True
    layer.set_state(h0, c0)
    layer.forward(xs)
    layer.backward(R)
    norms = layer.grad_norms_c
    assert norms.dtype == np.float64 and norms.shape == (T,)
    for t in range(T):
        delta = np.zeros((N, H))

        def loss():
            return np.sum(ind_unroll("lstm", params, xs, h0, c0, delta_c=(t, delta)) * R)

        g = num_grad(loss, delta)
        np.testing.assert_allclose(norms[t], np.linalg.norm(g), rtol=RTOL, err_msg=f"t={t}")


@pytest.mark.parametrize("kind", KINDS)
def test_grad_norms_single_step(kind):
    params, xs, h0, c0, R = time_setup(kind, 16, Tt=1)
    layer = make_time(kind, params, stateful=True)
    layer.track_grad_norms = True
    if kind == "lstm":
        layer.set_state(h0, c0)
    else:
        layer.set_state(h0)
    layer.forward(xs)
    layer.backward(R)
    np.testing.assert_allclose(layer.grad_norms_h, [np.linalg.norm(R[:, 0])], rtol=1e-12)
    if kind == "lstm":
        # dc_T = dh_T * o * (1 - tanh(c_T)^2), computed from scratch here
        Wx, Wh, b = params
        A = xs[:, 0] @ Wx + h0 @ Wh + b
        o = sig(A[:, 3 * H :])
        c1 = sig(A[:, :H]) * c0 + np.tanh(A[:, H : 2 * H]) * sig(A[:, 2 * H : 3 * H])
        dc = R[:, 0] * o * (1 - np.tanh(c1) ** 2)
        np.testing.assert_allclose(layer.grad_norms_c, [np.linalg.norm(dc)], rtol=1e-10)


# ---------------------------------------------------------------------------
# clip_grads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grads_clips_in_place(dtype):
    rng = np.random.default_rng(17)
    grads = [(3 * rng.standard_normal(s)).astype(dtype) for s in [(D, 4 * H), (H, 4 * H), (4 * H,)]]
    refs = list(grads)
    orig = [g.astype(np.float64) for g in grads]
    norm = np.sqrt(sum(np.sum(g**2) for g in orig))
    max_norm = 1.0
    assert norm > max_norm

    ret = ref.clip_grads(grads, max_norm)

    assert isinstance(ret, float)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(ret, norm, rtol=tol)
    rate = max_norm / (norm + 1e-6)
    for g, r, o in zip(grads, refs, orig):
        assert g is r and g.dtype == dtype
        np.testing.assert_allclose(g, o * rate, rtol=tol, atol=1e-7)
    new_norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    np.testing.assert_allclose(new_norm, max_norm, rtol=tol + 1e-6)


def test_clip_grads_no_clip_leaves_arrays_untouched():
    rng = np.random.default_rng(18)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    orig = [g.copy() for g in grads]
    norm = np.sqrt(sum(np.sum(g**2) for g in orig))
    ret = ref.clip_grads(grads, max_norm=norm * 10)
    np.testing.assert_allclose(ret, norm, rtol=1e-12)
    for g, o in zip(grads, orig):
        np.testing.assert_array_equal(g, o)
