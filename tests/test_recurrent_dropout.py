"""Recurrent (variational) dropout inside the kernels: forward(xs, h_mask) of the time layers.

h_mask (N, H) multiplies h_{t-1} where it enters h_{t-1} @ Wh, at every step; nothing else sees
the mask.  Checked against fastrnn.reference (which applies the mask step by step in NumPy) on
every cell, both dtypes, stateful or not, masks of zeros and 1/(1-p) and of arbitrary values, on
every path of the per-step products (direct kernels for a single step, GEMV for batch 1, packed
weights otherwise, the RNN's fused [x|h] steps, the LSTM's time loop shared by units, 1-3
threads, both instruction sets); by finite differences in float64; and for bad masks.  Also the
RNN's nonlinearity="relu" (reference, finite differences, torch.nn.RNN).
"""

import contextlib
import importlib
import zlib

import numpy as np
import pytest
from conftest import (
    DTYPES,
    KINDS,
    as64,
    assert_close,
    make_params,
    make_time,
    num_grad,
    set_state,
)

import fastrnn
from fastrnn import reference as ref

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")


def make_mask(rng, N, H, style, dtype):
    if style == "dropout":  # what a training loop passes: 0 or 1/(1-p)
        p = 0.4
        return ((rng.random((N, H)) >= p) / (1 - p)).astype(dtype)
    m = rng.uniform(-2.5, 2.5, (N, H))  # any finite values, zeros among them
    m[rng.random((N, H)) < 0.25] = 0
    return m.astype(dtype)


def run(layer, kind, xs, dhs, mask, h0=None, c0=None):
    """forward + backward; everything observable, copied."""
    if h0 is not None:
        set_state(layer, kind, h0, c0)
    hs = layer.forward(xs, h_mask=mask)
    out = {"hs": np.array(hs), "h": np.array(layer.h)}
    if kind == "lstm":
        out["c"] = np.array(layer.c)
    out["dxs"] = np.array(layer.backward(dhs))
    out["dWx"], out["dWh"], out["db"] = (np.array(g) for g in layer.grads)
    out["dh"] = np.array(layer.dh)
    if kind == "lstm":
        out["dc"] = np.array(layer.dc)
    return out


def check_against_reference(
    kind, dtype, N, T, style, stateful, seed, threads=1, D=5, H=7, segments=2
):
    """One layer of each implementation, `segments` forward+backward calls with fresh masks
    (stateful: the state carried, starting from a random h0 (and c0), which the mask reaches
    at t = 0); every result compared."""
    rng = np.random.default_rng(seed)
    params = make_params(kind, rng, D, H, dtype)
    fast = make_time(fastrnn, kind, params, stateful=stateful)
    fast.threads = threads
    oracle = make_time(ref, kind, as64(params), stateful=stateful)
    h0 = rng.standard_normal((N, H)).astype(dtype) if stateful else None
    c0 = rng.standard_normal((N, H)).astype(dtype) if stateful and kind == "lstm" else None
    for seg in range(segments):
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        dhs = rng.standard_normal((N, T, H)).astype(dtype)
        mask = make_mask(rng, N, H, style, dtype)
        start = seg == 0 and stateful
        got = run(fast, kind, xs, dhs, mask, h0 if start else None, c0 if start else None)
        want = run(
            oracle,
            kind,
            as64([xs])[0],
            as64([dhs])[0],
            as64([mask])[0],
            as64([h0])[0] if start else None,
            as64([c0])[0] if start and c0 is not None else None,
        )
        assert set(got) == set(want)
        for k in sorted(want):
            assert_close(got[k], want[k], dtype, f"{k} (segment {seg})", factor=20)
        if stateful and seg == 0:  # the second segment starts from the state
            fast_h = np.array(fast.h)
            assert_close(fast_h, oracle.h, dtype, "carried h", factor=20)


# (N, T): a single step of one row and of a few rows (direct kernels), batch 1 over several
# steps (GEMV on the unpacked Wh), few and more rows (packed Wh; the RNN's fused steps from 8
# rows a thread), and a batch over the direct kernels' 24 rows
SHAPES = [(1, 1), (3, 1), (1, 6), (4, 5), (9, 4), (30, 3)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,T", SHAPES)
@pytest.mark.parametrize("style", ["dropout", "arbitrary"])
@pytest.mark.parametrize("stateful", [False, True])
def test_masked_layers_equal_reference(kind, dtype, N, T, style, stateful):
    check_against_reference(kind, dtype, N, T, style, stateful, seed=N * 100 + T)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,T", [(2, 5), (7, 4), (20, 3), (1, 5)])
@pytest.mark.parametrize("threads", [2, 3])
def test_masked_layers_on_threads_equal_reference(kind, dtype, N, T, threads):
    check_against_reference(kind, dtype, N, T, "arbitrary", True, seed=N + threads, threads=threads)


@contextlib.contextmanager
def kernel_setting(module, name, mode):
    setter = getattr(importlib.import_module(f"fastrnn.{module}"), name)
    old = setter(mode)
    try:
        yield
    finally:
        setter(old)


# the kernels' forced paths: the RNN's forward with x_t Wx in each step's product or not, its
# dX from a packed Wx^T or not, the LSTM's time loop shared by hidden units or by rows
FORCED = [
    ("rnn", "_recurrent", "_set_fused", 1),
    ("rnn", "_recurrent", "_set_fused", 0),
    ("rnn", "_recurrent", "_set_dx_packed", 1),
    ("rnn", "_recurrent", "_set_dx_packed", 0),
    ("lstm", "_recurrent", "_set_unit_split", 1),
    ("lstm", "_recurrent", "_set_unit_split", 0),
]


@pytest.mark.parametrize("kind,module,name,mode", FORCED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "N,T,H,threads", [(2, 5, 7, 1), (3, 4, 19, 2), (20, 3, 33, 3), (5, 6, 40, 2)]
)
def test_masked_forced_paths_equal_reference(kind, module, name, mode, dtype, N, T, H, threads):
    with kernel_setting(module, name, mode):
        check_against_reference(
            kind, dtype, N, T, "arbitrary", True, seed=N * H, H=H, threads=threads
        )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,T,threads", [(1, 1, 1), (1, 5, 1), (3, 1, 1), (6, 5, 1), (20, 4, 2)])
def test_all_ones_mask_equals_no_mask(kind, dtype, N, T, threads):
    # x * 1 is x exactly, so the RNN and LSTM give the same bits; the GRU's masked backward sums
    # the gradient through the products apart from the direct (1 - z) term (then adds it), so
    # there only to rounding
    rng = np.random.default_rng(N * 10 + T)
    D, H = 4, 9
    params = make_params(kind, rng, D, H, dtype)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype)
    results = []
    for mask in (None, np.ones((N, H), dtype)):
        layer = make_time(fastrnn, kind, params, stateful=True)
        layer.threads = threads
        results.append(run(layer, kind, xs, dhs, mask, h0, c0 if kind == "lstm" else None))
    plain, ones = results
    for k in plain:
        if kind in ("rnn", "lstm") or k in ("hs", "h"):
            assert np.array_equal(plain[k], ones[k]), k
        else:
            assert_close(ones[k], plain[k], dtype, k)


@pytest.mark.parametrize("kind", KINDS)
def test_mask_changes_results_and_zero_mask_cuts_the_recurrence(kind):
    # a mask that matters: results differ from no mask; an all-zero mask makes every step's
    # product vanish, so the RNN's and LSTM's dh0 is exactly zero and dWh is zero
    rng = np.random.default_rng(3)
    N, T, D, H = 3, 4, 4, 6
    params = make_params(kind, rng, D, H)
    xs = rng.standard_normal((N, T, D))
    dhs = rng.standard_normal((N, T, H))
    h0 = rng.standard_normal((N, H))
    layer = make_time(fastrnn, kind, params, stateful=True)
    plain = run(layer, kind, xs, dhs, None, h0)
    masked = run(layer, kind, xs, dhs, make_mask(rng, N, H, "dropout", np.float64), h0)
    assert not np.allclose(plain["hs"], masked["hs"])
    zero = run(layer, kind, xs, dhs, np.zeros((N, H)), h0)
    assert not np.any(zero["dWh"])
    if kind in ("rnn", "lstm"):
        assert not np.any(zero["dh"])
    else:  # only the direct (1 - z) h_{t-1} path is left
        assert np.any(zero["dh"])


def test_mask_is_copied_for_backward():
    # the caller may reuse the mask's array between forward and backward
    rng = np.random.default_rng(5)
    N, T, D, H = 4, 5, 3, 6
    for kind in KINDS:
        params = make_params(kind, rng, D, H)
        xs = rng.standard_normal((N, T, D))
        dhs = rng.standard_normal((N, T, H))
        mask = make_mask(rng, N, H, "arbitrary", np.float64)
        a = make_time(fastrnn, kind, params)
        b = make_time(fastrnn, kind, params)
        want = run(a, kind, xs, dhs, mask)
        b.forward(xs, h_mask=mask)
        mask[...] = 7.0
        b.backward(dhs)
        for g, w in zip(b.grads, (want["dWx"], want["dWh"], want["db"])):
            assert np.array_equal(g, w)


def test_forward_without_mask_after_one_with_mask():
    # the mask belongs to one forward: the next forward without it is unmasked again
    rng = np.random.default_rng(6)
    N, T, D, H = 5, 4, 3, 6
    for kind in KINDS:
        params = make_params(kind, rng, D, H)
        xs = rng.standard_normal((N, T, D))
        dhs = rng.standard_normal((N, T, H))
        fresh = run(make_time(fastrnn, kind, params), kind, xs, dhs, None)
        layer = make_time(fastrnn, kind, params)
        run(layer, kind, xs, dhs, make_mask(rng, N, H, "arbitrary", np.float64))
        again = run(layer, kind, xs, dhs, None)
        for k in fresh:
            assert np.array_equal(fresh[k], again[k]), (kind, k)


# ---- finite differences (float64, a fixed mask) ------------------------------------------------


def check_grad(analytic, numeric, name):
    scale = max(np.abs(numeric).max(), 1e-3)
    err = np.abs(np.asarray(analytic) - numeric).max() / scale
    assert err < 1e-7, f"{name}: relative error {err:.2e}"
    assert np.abs(numeric).max() > 1e-4, f"{name}: numeric gradient vanishes"


@pytest.mark.parametrize("kind", KINDS + ["rnn_relu"])
@pytest.mark.parametrize("style", ["dropout", "arbitrary"])
@pytest.mark.parametrize("N,T", [(2, 3), (1, 3), (3, 1)])
def test_masked_gradients_by_finite_differences(kind, style, N, T):
    # L = sum(hs * R) (+ sum(c_T * Rc) for the LSTM): every input's gradient, the mask fixed
    # seeded from the parameters' text (hash() of strings changes from process to process)
    rng = np.random.default_rng(zlib.crc32(repr((kind, style, N, T)).encode()))
    D, H = 2, 3
    cell = "rnn" if kind == "rnn_relu" else kind
    params = make_params(cell, rng, D, H, np.float64, scale=0.7)
    if kind == "rnn_relu":
        params[2] += 1.0  # ReLU units kept alive: a dead layer has no gradient to check
    xs = rng.standard_normal((N, T, D))
    h0 = 0.5 * rng.standard_normal((N, H))
    c0 = 0.5 * rng.standard_normal((N, H))
    R = rng.standard_normal((N, T, H))
    Rc = rng.standard_normal((N, H))
    mask = make_mask(rng, N, H, style, np.float64)
    if style == "dropout":
        mask[0, :2] = [0, 1 / 0.6]  # both values present whatever the draw
    if kind == "rnn_relu":
        layer = fastrnn.TimeRNN(*params, stateful=True, nonlinearity="relu")
    else:
        layer = make_time(fastrnn, kind, params, stateful=True)
    lstm = kind == "lstm"

    def loss():
        set_state(layer, cell, h0, c0 if lstm else None)
        hs = layer.forward(xs, h_mask=mask)
        return np.sum(hs * R) + (np.sum(layer.c * Rc) if lstm else 0.0)

    loss()
    dxs = layer.backward(R) if not lstm else layer._backward(R, Rc)[0]
    grads = [g.copy() for g in layer.grads]
    dh0 = layer.dh.copy()
    dc0 = layer.dc.copy() if lstm else None
    check_grad(dxs, num_grad(loss, xs), "xs")
    for name, g, p in zip(("Wx", "Wh", "b"), grads, params):
        check_grad(g, num_grad(loss, p), name)
    check_grad(dh0, num_grad(loss, h0), "h0")
    if lstm:
        check_grad(dc0, num_grad(loss, c0), "c0")


# ---- bad masks -------------------------------------------------------------------------------

BAD_MASKS = [
    (lambda N, H: np.ones((N, H + 1)), ValueError, r"h_mask must have shape \(3, 5\)"),
    (lambda N, H: np.ones((N + 1, H)), ValueError, r"h_mask must have shape \(3, 5\)"),
    (lambda N, H: np.ones((1, N, H)), ValueError, r"h_mask must have shape"),
    (lambda N, H: np.ones(H), ValueError, r"h_mask must have shape"),
    (lambda N, H: np.ones((N, H), np.int64), TypeError, "h_mask must be a float32 or float64"),
    (lambda N, H: np.ones((N, H), np.complex128), TypeError, "h_mask must be a float32"),
    (lambda N, H: np.full((N, H), np.nan), ValueError, "h_mask contains NaN or Inf"),
    (lambda N, H: np.where(np.eye(N, H) > 0, np.inf, 1.0), ValueError, "h_mask contains NaN"),
    (lambda N, H: "ones", TypeError, "h_mask must be a float32 or float64"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make_bad,error,match", BAD_MASKS)
def test_bad_mask_is_a_clear_error_and_changes_nothing(kind, make_bad, error, match):
    rng = np.random.default_rng(8)
    N, T, D, H = 3, 4, 2, 5
    params = make_params(kind, rng, D, H)
    layer = make_time(fastrnn, kind, params, stateful=True)
    xs = rng.standard_normal((N, T, D))
    dhs = rng.standard_normal((N, T, H))
    layer.forward(xs, h_mask=make_mask(rng, N, H, "arbitrary", np.float64))
    h, c = np.array(layer.h), np.array(layer.c) if kind == "lstm" else None
    want = layer.backward(dhs).copy(), [g.copy() for g in layer.grads]
    with pytest.raises(error, match=match):
        layer.forward(rng.standard_normal((N, T, D)), h_mask=make_bad(N, H))
    assert np.array_equal(layer.h, h)
    if kind == "lstm":
        assert np.array_equal(layer.c, c)
    # the caches still hold the last good forward: backward gives what it gave
    dxs = layer.backward(dhs)
    assert np.array_equal(dxs, want[0])
    for g, w in zip(layer.grads, want[1]):
        assert np.array_equal(g, w)


def test_mask_overflowing_the_layers_dtype_is_refused():
    rng = np.random.default_rng(9)
    layer = fastrnn.TimeLSTM(*make_params("lstm", rng, 2, 3, np.float32))
    with pytest.raises(ValueError, match=r"h_mask contains NaN or Inf \(after conversion"):
        layer.forward(np.ones((2, 3, 2), np.float32), h_mask=np.full((2, 3), 1e300))
    assert layer._last is None


def test_mask_of_the_other_float_dtype_or_layout_is_converted():
    rng = np.random.default_rng(10)
    N, T, D, H = 4, 3, 2, 5
    for kind in KINDS:
        params = make_params(kind, rng, D, H, np.float32)
        xs = rng.standard_normal((N, T, D)).astype(np.float32)
        mask = make_mask(rng, N, H, "arbitrary", np.float32)
        want = make_time(fastrnn, kind, params).forward(xs, h_mask=mask)
        for other in (
            mask.astype(np.float64),
            np.asfortranarray(mask),
            mask.astype(mask.dtype.newbyteorder()),
            mask.tolist(),
        ):
            got = make_time(fastrnn, kind, params).forward(xs, h_mask=other)
            assert got.dtype == np.float32 and np.array_equal(got, want)


def test_empty_batch_or_sequence_with_mask():
    rng = np.random.default_rng(11)
    for kind in KINDS:
        layer = make_time(fastrnn, kind, make_params(kind, rng, 2, 3))
        assert layer.forward(np.zeros((0, 4, 2)), h_mask=np.zeros((0, 3))).shape == (0, 4, 3)
        hs = layer.forward(np.zeros((2, 0, 2)), h_mask=np.ones((2, 3)))
        assert hs.shape == (2, 0, 3)
        with pytest.raises(ValueError, match="h_mask must have shape"):
            layer.forward(np.zeros((0, 4, 2)), h_mask=np.zeros((1, 3)))


# ---- the RNN's nonlinearity="relu" -----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "N,T,threads", [(1, 1, 1), (3, 1, 1), (1, 6, 1), (4, 5, 1), (20, 4, 1), (20, 4, 2), (7, 3, 3)]
)
@pytest.mark.parametrize("masked", [False, True])
def test_relu_rnn_equals_reference(dtype, N, T, threads, masked):
    rng = np.random.default_rng(N * 7 + T)
    D, H = 5, 8
    params = make_params("rnn", rng, D, H, dtype)
    fast = fastrnn.TimeRNN(*params, stateful=True, nonlinearity="relu")
    fast.threads = threads
    oracle = ref.TimeRNN(*as64(params), stateful=True, nonlinearity="relu")
    h0 = np.abs(rng.standard_normal((N, H))).astype(dtype)
    fast.set_state(h0)
    oracle.set_state(h0.astype(np.float64))
    for _ in range(2):
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        dhs = rng.standard_normal((N, T, H)).astype(dtype)
        mask = make_mask(rng, N, H, "dropout", dtype) if masked else None
        got = run(fast, "rnn", xs, dhs, mask)
        want = run(
            oracle,
            "rnn",
            xs.astype(np.float64),
            dhs.astype(np.float64),
            None if mask is None else mask.astype(np.float64),
        )
        assert (got["hs"] == 0).any() and (got["hs"] > 0).any()  # both sides of the kink
        for k in want:
            assert_close(got[k], want[k], dtype, k, factor=20)


@pytest.mark.parametrize("fused", [0, 1])
def test_relu_rnn_fused_steps_equal_reference(fused):
    with kernel_setting("_recurrent", "_set_fused", fused):
        rng = np.random.default_rng(12)
        N, T, D, H = 16, 4, 6, 10
        params = make_params("rnn", rng, D, H)
        xs = rng.standard_normal((N, T, D))
        dhs = rng.standard_normal((N, T, H))
        got = run(fastrnn.TimeRNN(*params, nonlinearity="relu"), "rnn", xs, dhs, None)
        want = run(ref.TimeRNN(*params, nonlinearity="relu"), "rnn", xs, dhs, None)
        for k in want:
            assert_close(got[k], want[k], np.float64, k)


def test_relu_rnn_cell_equals_reference():
    rng = np.random.default_rng(13)
    N, D, H = 3, 4, 6
    params = make_params("rnn", rng, D, H)
    x = rng.standard_normal((N, D))
    h = rng.standard_normal((N, H))
    dh = rng.standard_normal((N, H))
    fast, oracle = fastrnn.RNN(*params, nonlinearity="relu"), ref.RNN(*params, nonlinearity="relu")
    assert_close(fast.forward(x, h), oracle.forward(x, h), np.float64, "h_next")
    for g, w in zip(fast.backward(dh), oracle.backward(dh)):
        assert_close(g, w, np.float64)
    for g, w in zip(fast.grads, oracle.grads):
        assert_close(g, w, np.float64)
    tanh = fastrnn.RNN(*params)
    assert not np.allclose(tanh.forward(x, h), fast.forward(x, h))


@pytest.mark.parametrize("bad", ["ReLU", "sigmoid", None, 1, ""])
def test_bad_nonlinearity_is_a_value_error(bad):
    rng = np.random.default_rng(14)
    params = make_params("rnn", rng, 2, 3)
    for make in (
        lambda: fastrnn.TimeRNN(*params, nonlinearity=bad),
        lambda: fastrnn.RNN(*params, nonlinearity=bad),
        lambda: ref.TimeRNN(*params, nonlinearity=bad),
    ):
        with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
            make()


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_rnn_matches_torch(nonlinearity):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    N, T, D, H = 3, 6, 4, 5
    Wx, Wh, b = make_params("rnn", rng, D, H, scale=0.6)
    xs = rng.standard_normal((N, T, D))
    h0 = np.abs(rng.standard_normal((N, H)))
    R = rng.standard_normal((N, T, H))
    layer = fastrnn.TimeRNN(Wx, Wh, b, stateful=True, nonlinearity=nonlinearity)
    layer.set_state(h0)
    hs = layer.forward(xs)
    dxs = layer.backward(R)

    net = torch.nn.RNN(D, H, nonlinearity=nonlinearity, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.from_numpy(Wx.T))
        net.weight_hh_l0.copy_(torch.from_numpy(Wh.T))
        net.bias_ih_l0.copy_(torch.from_numpy(b))  # the two biases summed: b + 0
        net.bias_hh_l0.zero_()
    x_t = torch.from_numpy(xs).requires_grad_()
    h_t = torch.from_numpy(h0[None]).requires_grad_()
    out, _ = net(x_t, h_t)
    (out * torch.from_numpy(R)).sum().backward()
    if nonlinearity == "relu":
        assert (hs == 0).any()
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs, x_t.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.dh, h_t.grad.numpy()[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        layer.grads[0], net.weight_ih_l0.grad.numpy().T, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        layer.grads[1], net.weight_hh_l0.grad.numpy().T, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(layer.grads[2], net.bias_ih_l0.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("N,T", [(3, 1), (1, 1), (4, 3)])
@pytest.mark.parametrize("where", ["Wx", "Wh"])
def test_nonfinite_weights_still_caught_with_a_mask(kind, N, T, where):
    # a single step of a few rows has the kernel vouch for the weights (layers.
    # _weights_checked_by_kernel): a NaN in a row of Wh that the mask zeroes still shows, as
    # 0 * NaN is NaN; and the raise leaves the last forward's caches as they were
    rng = np.random.default_rng(16)
    D, H = 3, 4
    params = make_params(kind, rng, D, H)
    layer = make_time(fastrnn, kind, params)
    xs = rng.standard_normal((N, T, D))
    dhs = rng.standard_normal((N, T, H))
    mask = np.ones((N, H))
    mask[:, 1] = 0
    layer.forward(xs, h_mask=mask)
    want = layer.backward(dhs).copy()
    p = params[0] if where == "Wx" else params[1]
    old = p[1, 0]
    p[1, 0] = np.nan
    with pytest.raises(ValueError, match=f"{where} contains NaN or Inf"):
        layer.forward(xs, h_mask=mask)
    p[1, 0] = old
    assert np.array_equal(layer.backward(dhs), want)
