"""The compiled layers against fastrnn.reference, element by element.

Every observable is compared: forward outputs, the carried h (and c), backward dxs, all three
grads, dh (and dc) and the gradient-flow diagnostics, in float32 (to ~1e-5 of the scale) and
float64 (to ~1e-12).  Then the contract of the NumPy layers: stateful chains, set_state and
reset_state, params read afresh (in place or replaced), grads kept and overwritten, outputs owned
by the caller, any memory layout of the inputs and params, dtype conversion, and degenerate shapes.
"""

import numpy as np
import pytest
from conftest import (
    DTYPES,
    KINDS,
    as64,
    assert_close,
    assert_results_close,
    bias_shape,
    make_cell,
    make_params,
    make_time,
    reference_results,
    run_cell,
    run_time,
    set_state,
)

import fastrnn
from fastrnn import reference as ref

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")

N, T, D, H = 3, 5, 4, 5


def sequence(kind, rng, dtype, N=N, T=T, D=D, H=H, scale=0.8):
    params = make_params(kind, rng, D, H, dtype, scale=scale)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype) if kind == "lstm" else None
    return params, xs, dhs, h0, c0


# ---- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_construction_keeps_params_and_makes_zero_grads(kind, dtype, rng):
    params = make_params(kind, rng, D, H, dtype)
    layer = make_time(fastrnn, kind, params)
    assert len(layer.params) == 3 and all(p is q for p, q in zip(layer.params, params))
    assert len(layer.grads) == 3
    for g, p in zip(layer.grads, params):
        assert isinstance(g, np.ndarray) and g.shape == p.shape and g.dtype == p.dtype
        assert g.flags.c_contiguous and not g.any()
        assert not np.shares_memory(g, p)
    assert layer.grads[2].shape == bias_shape(kind, H)
    assert layer.stateful is False and layer.h is None
    assert layer.track_grad_norms is False and layer.grad_norms_h is None
    if kind == "lstm":
        assert layer.c is None
    cell = make_cell(fastrnn, kind, params)
    assert all(p is q for p, q in zip(cell.params, params))
    assert [g.shape for g in cell.grads] == [p.shape for p in params]
    assert all(g.dtype == np.dtype(dtype) and not g.any() for g in cell.grads)


# ---- time layers against the reference -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("initial", ["zeros", "set_state"])
def test_time_layer_matches_reference(kind, dtype, initial, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, dtype)
    layer = make_time(fastrnn, kind, params, stateful=(initial == "set_state"))
    if initial == "set_state":
        set_state(layer, kind, h0, c0)
        want = reference_results(kind, params, xs, dhs, h0, c0, track=True)
    else:
        want = reference_results(kind, params, xs, dhs, track=True)
    got, hs, dxs = run_time(layer, kind, xs, dhs, track=True)
    assert_results_close(got, want, dtype)
    assert hs.shape == (N, T, H) and dxs.shape == (N, T, D)
    assert got["norms_h"].shape == (T,)
    if kind == "lstm":
        assert got["norms_c"].shape == (T,) and layer.dc.shape == (N, H)
    else:
        assert layer.grad_norms_c is None
    # the carried state is the last output
    np.testing.assert_array_equal(layer.h, hs[:, -1])


@pytest.mark.parametrize("kind", KINDS)
def test_time_layer_longer_sequence_float32(kind, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, np.float32, N=4, T=40, D=7, H=9)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0, c0)
    got, _, _ = run_time(layer, kind, xs, dhs, track=True)
    want = reference_results(kind, params, xs, dhs, h0, c0, track=True)
    assert_results_close(got, want, np.float32, factor=3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("H", [15, 16, 17, 31, 32, 100])
def test_hidden_sizes_around_vector_blocks(kind, H, rng):
    # the row passes work in blocks of 16 units; the RNN's computes its last block first when
    # H % 16 leaves a remainder (rnn_fwd_row): every unit must still be right, and cached
    params, xs, dhs, h0, c0 = sequence(kind, rng, np.float32, N=3, T=4, D=5, H=H)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0, c0)
    got, _, _ = run_time(layer, kind, xs, dhs)
    want = reference_results(kind, params, xs, dhs, h0, c0)
    assert_results_close(got, want, np.float32, factor=3)


@pytest.mark.parametrize("kind", KINDS)
def test_large_preactivations_saturate_like_reference(kind, rng):
    # big weights drive sigmoid/tanh deep into saturation (exp clamping in the float32 kernels)
    for dtype in DTYPES:
        params, xs, dhs, h0, c0 = sequence(kind, np.random.default_rng(5), dtype, scale=15.0)
        layer = make_time(fastrnn, kind, params, stateful=True)
        set_state(layer, kind, h0, c0)
        got, _, _ = run_time(layer, kind, xs, dhs)
        want = reference_results(kind, params, xs, dhs, h0, c0)
        for k in ("hs", "h", "dxs", "dWx", "dWh", "db", "dh") + (
            ("c", "dc") if kind == "lstm" else ()
        ):
            assert np.all(np.isfinite(got[k])), k
        assert_results_close(got, want, dtype, factor=10)


@pytest.mark.parametrize("kind", KINDS)
def test_grad_norms_off_and_on(kind, rng):
    params, xs, dhs, _, _ = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params)
    layer.forward(xs)
    layer.backward(dhs)
    assert layer.grad_norms_h is None and layer.grad_norms_c is None
    layer.track_grad_norms = True
    layer.forward(xs)
    layer.backward(dhs)
    assert layer.grad_norms_h.dtype == np.float64 and layer.grad_norms_h.shape == (T,)
    # the last step sees only the direct gradient
    np.testing.assert_allclose(layer.grad_norms_h[-1], np.linalg.norm(dhs[:, -1]), rtol=1e-12)
    assert (layer.grad_norms_c is not None) == (kind == "lstm")
    layer.track_grad_norms = False
    layer.forward(xs)
    layer.backward(dhs)
    assert layer.grad_norms_h is None and layer.grad_norms_c is None


# ---- cells against the reference -----------------------------------------------------------------


def cell_inputs(kind, rng, dtype, n=N):
    params = make_params(kind, rng, D, H, dtype, scale=0.8)
    x = rng.standard_normal((n, D)).astype(dtype)
    h = rng.standard_normal((n, H)).astype(dtype)
    c = rng.standard_normal((n, H)).astype(dtype)
    dh = rng.standard_normal((n, H)).astype(dtype)
    dc = rng.standard_normal((n, H)).astype(dtype)
    return params, x, h, c, dh, dc


def ref_cell_results(kind, params, x, h, c, dh, dc):
    cell = make_cell(ref, kind, as64(params))
    return run_cell(cell, kind, *as64([x, h, c, dh, dc]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_matches_reference(kind, dtype, rng):
    params, x, h, c, dh, dc = cell_inputs(kind, rng, dtype)
    cell = make_cell(fastrnn, kind, params)
    got = run_cell(cell, kind, x, h, c, dh, dc)
    want = ref_cell_results(kind, params, x, h, c, dh, dc)
    assert_results_close(got, want, dtype)
    # second step on the outputs of the first, as a hand-written loop would do
    h2 = got["h_next"]
    c2 = got.get("c_next")
    got2 = run_cell(cell, kind, x[::-1].copy(), h2, c2, dh, dc)
    want2 = ref_cell_results(kind, params, x[::-1], h2, c2, dh, dc)
    assert_results_close(got2, want2, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_equals_one_step_of_time_layer(kind, rng):
    params, x, h, c, dh, dc = cell_inputs(kind, rng, np.float64)
    cell = make_cell(fastrnn, kind, params)
    got = run_cell(cell, kind, x, h, c, dh, np.zeros_like(dc))
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h, c if kind == "lstm" else None)
    out, _, _ = run_time(layer, kind, x[:, None, :], dh[:, None, :])
    np.testing.assert_allclose(got["h_next"], out["hs"][:, 0], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(got["dx"], out["dxs"][:, 0], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(got["dh_prev"], out["dh"], rtol=1e-13, atol=1e-14)
    for k in ("dWx", "dWh", "db"):
        np.testing.assert_allclose(got[k], out[k], rtol=1e-13, atol=1e-14)
    if kind == "lstm":
        np.testing.assert_allclose(got["c_next"], out["c"], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(got["dc_prev"], out["dc"], rtol=1e-13, atol=1e-14)


# ---- stateful chains, set_state, reset_state -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_stateful_chain_matches_reference(kind, dtype, rng):
    params = make_params(kind, rng, D, H, dtype, scale=0.8)
    fast = make_time(fastrnn, kind, params, stateful=True)
    slow = make_time(ref, kind, as64(params), stateful=True)
    for _step, Tk in enumerate([3, 1, 4, 2]):
        xs = rng.standard_normal((N, Tk, D)).astype(dtype)
        dhs = rng.standard_normal((N, Tk, H)).astype(dtype)
        got, _, _ = run_time(fast, kind, xs, dhs, track=True)
        want, _, _ = run_time(slow, kind, as64([xs])[0], as64([dhs])[0], track=True)
        assert_results_close(got, want, dtype, factor=2)
    # the carried state really matters: a non-stateful layer gives other numbers
    plain = make_time(fastrnn, kind, params)
    hs_plain = plain.forward(xs)
    assert not np.allclose(hs_plain, got["hs"], atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_stateful_chain_equals_one_long_forward(kind, rng):
    params, xs, _, _, _ = sequence(kind, rng, np.float64, T=7)
    whole = make_time(fastrnn, kind, params).forward(xs)
    layer = make_time(fastrnn, kind, params, stateful=True)
    parts = [layer.forward(xs[:, a:b]) for a, b in [(0, 2), (2, 3), (3, 7)]]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_set_state_and_reset_state(kind, dtype, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, dtype)
    layer = make_time(fastrnn, kind, params, stateful=True)
    h_in, c_in = h0.copy(), (None if c0 is None else c0.copy())
    set_state(layer, kind, h_in, c_in)
    # set_state keeps its own copy: changing the caller's arrays afterwards changes nothing
    h_in[...] = 7.0
    if c_in is not None:
        c_in[...] = -7.0
    got, _, _ = run_time(layer, kind, xs, dhs)
    assert_results_close(got, reference_results(kind, params, xs, dhs, h0, c0), dtype)

    layer.reset_state()
    assert layer.h is None
    if kind == "lstm":
        assert layer.c is None
    got, _, _ = run_time(layer, kind, xs, dhs)
    assert_results_close(got, reference_results(kind, params, xs, dhs), dtype)

    if kind == "lstm":  # h only: c starts from zeros
        layer.set_state(h0)
        assert layer.c is None
        got, _, _ = run_time(layer, kind, xs, dhs)
        want = reference_results(kind, params, xs, dhs, h0, np.zeros_like(h0))
        assert_results_close(got, want, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_not_stateful_ignores_carried_state(kind, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params, stateful=False)
    set_state(layer, kind, h0, c0)
    got1, _, _ = run_time(layer, kind, xs, dhs)
    got2, _, _ = run_time(layer, kind, xs, dhs)
    want = reference_results(kind, params, xs, dhs)
    assert_results_close(got1, want, np.float64)
    assert_results_close(got2, want, np.float64)
    # a non-stateful layer may change the batch size from call to call
    hs = layer.forward(xs[:1])
    assert hs.shape == (1, T, H)
    np.testing.assert_allclose(hs, want["hs"][:1], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_stateful_batch_change_after_reset(kind, rng):
    params, xs, _, _, _ = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params, stateful=True)
    layer.forward(xs)
    layer.reset_state()
    hs = layer.forward(xs[:2])
    np.testing.assert_allclose(
        hs, make_time(fastrnn, kind, params).forward(xs[:2]), rtol=1e-14, atol=1e-15
    )
    assert layer.h.shape == (2, H)


# ---- params read afresh, grads kept --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_params_changed_in_place_are_seen(kind, dtype, rng):
    params, xs, dhs, _, _ = sequence(kind, rng, dtype)
    layer = make_time(fastrnn, kind, params)
    first, _, _ = run_time(layer, kind, xs, dhs)
    # an optimizer step, in place
    params[0] *= dtype(1.3)
    params[1] -= dtype(0.2)
    params[2] += dtype(0.25)
    got, _, _ = run_time(layer, kind, xs, dhs)
    want = reference_results(kind, params, xs, dhs)
    assert_results_close(got, want, dtype)
    assert not np.allclose(got["hs"], first["hs"], atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_params_changed_between_forward_and_backward(kind, rng):
    # like the NumPy layers: backward reads the params of the moment (in-place updates are seen)
    params, xs, dhs, _, _ = sequence(kind, rng, np.float64)
    fast = make_time(fastrnn, kind, params)
    pr = as64(params)
    slow = make_time(ref, kind, pr)
    fast.forward(xs)
    slow.forward(xs)
    for p in params + pr:
        p *= 0.5
    np.testing.assert_allclose(fast.backward(dhs), slow.backward(dhs), rtol=1e-12, atol=1e-13)
    for g, w in zip(fast.grads, slow.grads):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_params_list_items_replaced_are_seen(kind, rng):
    params, xs, dhs, _, _ = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params)
    cell = make_cell(fastrnn, kind, params)
    layer.forward(xs)
    new = make_params(kind, np.random.default_rng(99), D, H, np.float64)
    for i in range(3):
        layer.params[i] = new[i]
        cell.params[i] = new[i]
    got, _, _ = run_time(layer, kind, xs, dhs)
    assert_results_close(got, reference_results(kind, new, xs, dhs), np.float64)
    x, h, c = xs[:, 0], np.zeros((N, H)), np.zeros((N, H))
    got_c = run_cell(cell, kind, x, h, c, dhs[:, 0], dhs[:, 1])
    assert_results_close(
        got_c, ref_cell_results(kind, new, x, h, c, dhs[:, 0], dhs[:, 1]), np.float64
    )


@pytest.mark.parametrize("kind", KINDS)
def test_cell_params_changed_in_place_are_seen(kind, rng):
    params, x, h, c, dh, dc = cell_inputs(kind, rng, np.float64)
    cell = make_cell(fastrnn, kind, params)
    run_cell(cell, kind, x, h, c, dh, dc)
    for p in params:
        p *= -1.1
    got = run_cell(cell, kind, x, h, c, dh, dc)
    assert_results_close(got, ref_cell_results(kind, params, x, h, c, dh, dc), np.float64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_grads_keep_identity_and_are_overwritten(kind, dtype, rng):
    params, xs, dhs, _, _ = sequence(kind, rng, dtype)
    layer = make_time(fastrnn, kind, params)
    grads = list(layer.grads)
    layer.forward(xs)
    layer.backward(dhs)
    g1 = [g.copy() for g in layer.grads]
    assert all(np.abs(g).max() > 0 for g in g1)
    layer.forward(xs)
    layer.backward(2 * dhs)
    assert all(g is h for g, h in zip(layer.grads, grads))
    for a, b in zip(g1, layer.grads):  # twice the gradient, not three times
        assert_close(b, 2 * a.astype(np.float64), dtype, factor=2)
    # a smaller problem afterwards still overwrites every entry
    layer.forward(xs[:1, :1])
    layer.backward(dhs[:1, :1])
    want = reference_results(kind, params, xs[:1, :1], dhs[:1, :1])
    for k, g in zip(("dWx", "dWh", "db"), grads):
        assert_close(g, want[k], dtype, k)

    cell = make_cell(fastrnn, kind, params)
    cgrads = list(cell.grads)
    x, h, c = xs[:, 0], dhs[:, 1], dhs[:, 2]
    o1 = run_cell(cell, kind, x, h, c, dhs[:, 0], dhs[:, 3])
    o2 = run_cell(cell, kind, x, h, c, 2 * dhs[:, 0], 2 * dhs[:, 3])
    assert all(g is h_ for g, h_ in zip(cell.grads, cgrads))
    for k in ("dWx", "dWh", "db"):
        assert_close(o2[k], 2 * o1[k].astype(np.float64), dtype, k, factor=2)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_twice_gives_the_same(kind, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0, c0)
    layer.track_grad_norms = True
    layer.forward(xs)
    dxs1 = layer.backward(dhs).copy()
    g1 = [g.copy() for g in layer.grads]
    dh1 = layer.dh.copy()
    n1 = layer.grad_norms_h.copy()
    other = np.random.default_rng(1).standard_normal(dhs.shape)
    layer.backward(other)  # a different upstream gradient in between
    dxs2 = layer.backward(dhs)
    np.testing.assert_array_equal(dxs2, dxs1)
    for a, b in zip(g1, layer.grads):
        np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(layer.dh, dh1)
    np.testing.assert_array_equal(layer.grad_norms_h, n1)

    params, x, h, c, dh, dc = cell_inputs(kind, rng, np.float64)
    cell = make_cell(fastrnn, kind, params)
    o1 = run_cell(cell, kind, x, h, c, dh, dc)
    if kind == "lstm":
        dx, dhp, dcp = cell.backward(dh, dc)
        np.testing.assert_array_equal(dcp, o1["dc_prev"])
    else:
        dx, dhp = cell.backward(dh)
    np.testing.assert_array_equal(dx, o1["dx"])
    np.testing.assert_array_equal(dhp, o1["dh_prev"])
    for k, g in zip(("dWx", "dWh", "db"), cell.grads):
        np.testing.assert_array_equal(g, o1[k])


# ---- dWx and dWh side by side: one product, or two --------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_weight_grads_are_adjacent(kind, rng):
    # the layer allocates dWh directly after dWx, so that the kernels can make both with one
    # product [X | Hprev]^T @ dG (weight_grad_cols in src/cells/_seq.pxd)
    params = make_params(kind, rng, D, H, np.float32)
    dWx, dWh, db = make_time(fastrnn, kind, params).grads
    assert dWh.ctypes.data == dWx.ctypes.data + dWx.nbytes
    assert not np.shares_memory(dWx, dWh)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape", [(2, 3, 6, 5), (4, 9, 7, 9)], ids=["direct", "blas"]
)  # N*T rows: a direct product, or BLAS
def test_weight_grads_in_separate_arrays(kind, dtype, threads, shape, rng):
    # grads entries replaced by separate arrays get the same gradients (two products, one per
    # array, rather than one over both); with two threads each makes its share of the columns
    n, t, d, h = shape
    params, xs, dhs, _, _ = sequence(kind, rng, dtype, N=n, T=t, D=d, H=h)
    want = reference_results(kind, params, xs, dhs)
    got = {}
    for how in ("adjacent", "separate"):
        layer = make_time(fastrnn, kind, params)
        layer.threads = threads
        if how == "separate":
            layer.grads[0] = np.zeros_like(layer.grads[0])
            layer.grads[1] = np.zeros_like(layer.grads[1])
        got[how] = run_time(layer, kind, xs, dhs)[0]
        for k, g in zip(("dWx", "dWh", "db"), layer.grads):
            assert_close(g, want[k], dtype, f"{how} {k}")
    assert_results_close(got["separate"], got["adjacent"], dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inputs_are_kept_exactly(kind, dtype, rng):
    # more than 1 MiB of inputs: forward copies them into its cache with non-temporal stores
    # (src/gemm/fr_copy.h); D + H odd puts every other cache row off 16-byte alignment, so the
    # copy's unaligned head and tail are exercised too
    n, t, d, h = 3, 450, 203, 6
    params, xs, dhs, _, _ = sequence(kind, rng, dtype, N=n, T=t, D=d, H=h)
    assert xs.nbytes > 1 << 20
    want = reference_results(kind, params, xs, dhs)
    layer = make_time(fastrnn, kind, params)
    xs_in = xs.copy()
    layer.forward(xs_in)
    xs_in[...] = 7.0  # backward must read forward's inputs, not these
    layer.backward(dhs)
    for k, g in zip(("dWx", "dWh", "db"), layer.grads):
        assert_close(g, want[k], dtype, k)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_prefetching_passes_agree_with_reference(kind, threads, rng):
    # gate buffers over 4 MiB (PREFETCH_MIN_BYTES, src/cells/_seq.pxd): the element-wise passes ask
    # for the next row's segments ahead; an odd H and 17 rows put the segments off cache-line
    # boundaries and give the threads unequal shares (and 8 or more rows each, so the RNN's
    # forward takes its fused steps, which prefetch the next row's x_t too); weights
    # ~ 0.5 / sqrt(H) keep the hundreds of steps from exploding
    n, d, h = 17, 24, 131
    blocks = {"rnn": 1, "lstm": 4, "gru": 3, "gru_ra": 3}[kind]
    t = (4 << 20) // (n * blocks * h * 4) + 2
    params, xs, dhs, _, _ = sequence(
        kind, rng, np.float32, N=n, T=t, D=d, H=h, scale=0.5 / np.sqrt(h)
    )
    assert n * t * blocks * h * 4 > 4 << 20
    want = reference_results(kind, params, xs, dhs)
    layer = make_time(fastrnn, kind, params)
    layer.threads = threads
    got = run_time(layer, kind, xs, dhs)[0]
    assert_results_close(got, want, np.float32)


# ---- outputs belong to the caller; inputs are not kept by reference ------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_are_fresh_and_inputs_not_aliased(kind, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, np.float64)
    want = reference_results(kind, params, xs, dhs, h0, c0)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0, c0)
    xs_in, dhs_in = xs.copy(), dhs.copy()
    hs = layer.forward(xs_in)
    assert not np.shares_memory(hs, layer.h)
    assert not np.shares_memory(hs, xs_in)
    # the caller scribbles over everything it handed in or got back
    hs[...] = 3.0
    xs_in[...] = -5.0
    dxs = layer.backward(dhs_in)
    np.testing.assert_allclose(dxs, want["dxs"], rtol=1e-12, atol=1e-13)
    for k, g in zip(("dWx", "dWh", "db"), layer.grads):
        np.testing.assert_allclose(g, want[k], rtol=1e-12, atol=1e-13)
    dhs_in[...] = 11.0
    dxs[...] = 9.0
    layer.dh[...] = 4.0
    for g in layer.grads:
        g[...] = 1.0
    dxs2 = layer.backward(dhs)
    assert dxs2 is not dxs and not np.shares_memory(dxs2, dxs)
    np.testing.assert_allclose(dxs2, want["dxs"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.dh, want["dh"], rtol=1e-12, atol=1e-13)
    for k, g in zip(("dWx", "dWh", "db"), layer.grads):
        np.testing.assert_allclose(g, want[k], rtol=1e-12, atol=1e-13)
    # the carried state does not alias the returned hs either
    np.testing.assert_allclose(layer.h, want["h"], rtol=1e-12, atol=1e-13)
    # results kept from one call are not overwritten by the next
    hs_kept = layer.forward(xs)
    kept = dict(hs=hs_kept, dxs=layer.backward(dhs), dh=layer.dh, h=layer.h)
    if kind == "lstm":
        kept.update(dc=layer.dc, c=layer.c)
    copies = {k: v.copy() for k, v in kept.items()}
    layer.forward(-xs)
    layer.backward(-2 * dhs)
    for k in kept:
        np.testing.assert_array_equal(kept[k], copies[k], err_msg=k)
    hs2 = layer.forward(xs)
    assert hs2 is not hs and not np.shares_memory(hs2, hs)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_outputs_fresh_and_inputs_not_aliased(kind, rng):
    params, x, h, c, dh, dc = cell_inputs(kind, rng, np.float64)
    want = ref_cell_results(kind, params, x, h, c, dh, dc)
    cell = make_cell(fastrnn, kind, params)
    xi, hi, ci = x.copy(), h.copy(), c.copy()
    if kind == "lstm":
        hn, cn = cell.forward(xi, hi, ci)
        assert not np.shares_memory(cn, ci) and not np.shares_memory(hn, cn)
        cn[...] = 8.0
    else:
        hn = cell.forward(xi, hi)
    assert not np.shares_memory(hn, hi)
    hn[...] = 2.0
    xi[...] = 3.0
    hi[...] = 4.0
    ci[...] = 5.0
    if kind == "lstm":
        dx, dhp, dcp = cell.backward(dh, dc)
        np.testing.assert_allclose(dcp, want["dc_prev"], rtol=1e-12, atol=1e-13)
    else:
        dx, dhp = cell.backward(dh)
    np.testing.assert_allclose(dx, want["dx"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dhp, want["dh_prev"], rtol=1e-12, atol=1e-13)
    for k, g in zip(("dWx", "dWh", "db"), cell.grads):
        np.testing.assert_allclose(g, want[k], rtol=1e-12, atol=1e-13)
    # what one step returned survives the next step (a hand-written loop keeps them)
    kept = [dx, dhp] + ([dcp] if kind == "lstm" else [])
    copies = [a.copy() for a in kept]
    if kind == "lstm":
        cell.forward(-x, h, c)
        cell.backward(-dh, -dc)
    else:
        cell.forward(-x, h)
        cell.backward(-dh)
    for a, b in zip(kept, copies):
        np.testing.assert_array_equal(a, b)


# ---- memory layouts ------------------------------------------------------------------------------


def strided_copy(a, how, rng):
    """An array equal to `a` but laid out differently in memory."""
    if how == "transposed":  # a view of a buffer stored in reversed axis order
        buf = np.ascontiguousarray(np.transpose(a))
        v = np.transpose(buf)
    elif how == "step2":  # every second element of a bigger buffer, along every axis
        buf = rng.standard_normal(tuple(2 * s + 1 for s in a.shape)).astype(a.dtype)
        v = buf[tuple(slice(1, 2 * s + 1, 2) for s in a.shape)]
        v[...] = a
    elif how == "fortran":
        v = np.asfortranarray(a)
    else:
        raise AssertionError(how)
    assert np.array_equal(v, a)
    if a.ndim > 1 or how == "step2":
        assert not v.flags.c_contiguous
    return v


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", ["transposed", "step2", "fortran"])
def test_noncontiguous_inputs_and_params(kind, dtype, how, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, dtype)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0, c0)
    base, _, _ = run_time(layer, kind, xs, dhs, track=True)

    vparams = [strided_copy(p, how, rng) for p in params]
    vlayer = make_time(fastrnn, kind, vparams, stateful=True)
    assert all(p is q for p, q in zip(vlayer.params, vparams))
    set_state(
        vlayer, kind, strided_copy(h0, how, rng), None if c0 is None else strided_copy(c0, how, rng)
    )
    got, _, _ = run_time(
        vlayer, kind, strided_copy(xs, how, rng), strided_copy(dhs, how, rng), track=True
    )
    assert_results_close(got, base, dtype, factor=0.1)
    for g in vlayer.grads:  # grads stay the layer's own C-contiguous arrays
        assert g.flags.c_contiguous

    # cells: non-contiguous x, h_prev, c_prev, dh_next, dc_next and params
    x, h, c, dh, dc = xs[:, 0], h0, dhs[:, 1], dhs[:, 0], dhs[:, 2]
    base_c = run_cell(make_cell(fastrnn, kind, params), kind, x, h, c, dh, dc)
    vx, vh, vc, vdh, vdc = (
        strided_copy(np.ascontiguousarray(a), how, rng) for a in (x, h, c, dh, dc)
    )
    got_c = run_cell(make_cell(fastrnn, kind, vparams), kind, vx, vh, vc, vdh, vdc)
    assert_results_close(got_c, base_c, dtype, factor=0.1)


@pytest.mark.parametrize("kind", KINDS)
def test_params_as_views_of_one_flat_buffer(kind, rng):
    # optimizers sometimes keep all params in one flat buffer and hand out reshaped views
    params = make_params(kind, rng, D, H, np.float64)
    flat = np.concatenate([p.ravel() for p in params])
    views, o = [], 0
    for p in params:
        views.append(flat[o : o + p.size].reshape(p.shape))
        o += p.size
    xs = rng.standard_normal((N, T, D))
    dhs = rng.standard_normal((N, T, H))
    layer = make_time(fastrnn, kind, views)
    got, _, _ = run_time(layer, kind, xs, dhs)
    assert_results_close(got, reference_results(kind, params, xs, dhs), np.float64)
    flat *= 0.5  # an update through the flat buffer is seen
    got, _, _ = run_time(layer, kind, xs, dhs)
    assert_results_close(
        got, reference_results(kind, [0.5 * p for p in params], xs, dhs), np.float64
    )


# ---- dtypes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_float64_input_to_float32_layer(kind, rng):
    params, xs32, dhs32, h0, c0 = sequence(kind, rng, np.float32)
    xs64 = rng.standard_normal(xs32.shape)
    dhs64 = rng.standard_normal(dhs32.shape)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0.astype(np.float64), None if c0 is None else c0.astype(np.float64))
    got, hs, dxs = run_time(layer, kind, xs64, dhs64)
    assert hs.dtype == np.float32 and dxs.dtype == np.float32
    assert layer.h.dtype == np.float32 and layer.dh.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads)
    if kind == "lstm":
        assert layer.c.dtype == np.float32 and layer.dc.dtype == np.float32
    # exactly what the float32-rounded inputs give
    same = make_time(fastrnn, kind, params, stateful=True)
    set_state(same, kind, h0, c0)
    want, _, _ = run_time(same, kind, xs64.astype(np.float32), dhs64.astype(np.float32))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)

    cell = make_cell(fastrnn, kind, params)
    x, hp, c = xs64[:, 0], h0.astype(np.float64), h0[::-1].astype(np.float64)
    out = run_cell(cell, kind, x, hp, c, dhs64[:, 0], dhs64[:, 1])
    assert all(v.dtype == np.float32 for v in out.values())
    want = run_cell(
        make_cell(fastrnn, kind, params),
        kind,
        *(a.astype(np.float32) for a in (x, hp, c, dhs64[:, 0], dhs64[:, 1])),
    )
    for k in want:
        np.testing.assert_array_equal(out[k], want[k], err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_input_to_float64_layer(kind, rng):
    params, xs, dhs, _, _ = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params)
    got, hs, dxs = run_time(layer, kind, xs.astype(np.float32), dhs.astype(np.float32))
    assert hs.dtype == np.float64 and dxs.dtype == np.float64
    want = reference_results(kind, params, xs.astype(np.float32), dhs.astype(np.float32))
    assert_results_close(got, want, np.float64)


def test_python_lists_are_accepted_as_input(rng):
    params = make_params("rnn", rng, 2, 3, np.float64)
    layer = fastrnn.TimeRNN(*params)
    xs = [[[0.1, -0.2], [0.3, 0.4]]]
    hs = layer.forward(xs)
    want = ref.TimeRNN(*params).forward(np.array(xs))
    np.testing.assert_allclose(hs, want, rtol=1e-13, atol=1e-14)


# ---- degenerate shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape",
    [(1, 6, 3, 4), (4, 1, 3, 4), (3, 5, 3, 1), (3, 5, 1, 4), (1, 1, 1, 1)],
    ids=lambda s: "N{}T{}D{}H{}".format(*s),
)
def test_small_dimensions(kind, dtype, shape, rng):
    n, t, d, h = shape
    params, xs, dhs, h0, c0 = sequence(kind, rng, dtype, N=n, T=t, D=d, H=h)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0, c0)
    got, hs, dxs = run_time(layer, kind, xs, dhs, track=True)
    assert hs.shape == (n, t, h) and dxs.shape == (n, t, d)
    assert_results_close(got, reference_results(kind, params, xs, dhs, h0, c0, track=True), dtype)

    x, hp, c, dh, dc = xs[:, 0], h0, h0[::-1].copy(), dhs[:, 0], dhs[:, -1]
    got_c = run_cell(make_cell(fastrnn, kind, params), kind, x, hp, c, dh, dc)
    assert_results_close(got_c, ref_cell_results(kind, params, x, hp, c, dh, dc), dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, t", [(0, 4), (3, 0), (0, 0)])
def test_empty_batch_or_sequence(kind, dtype, n, t, rng):
    params = make_params(kind, rng, D, H, dtype)
    layer = make_time(fastrnn, kind, params)
    # first a real pass, so that grads hold something that must be overwritten
    layer.forward(rng.standard_normal((2, 3, D)))
    layer.backward(rng.standard_normal((2, 3, H)))
    assert all(np.abs(g).max() > 0 for g in layer.grads)
    grads = list(layer.grads)
    layer.track_grad_norms = True
    hs = layer.forward(np.zeros((n, t, D), dtype))
    assert hs.shape == (n, t, H) and hs.dtype == np.dtype(dtype)
    dxs = layer.backward(np.zeros((n, t, H), dtype))
    assert dxs.shape == (n, t, D) and dxs.dtype == np.dtype(dtype)
    assert all(g is h for g, h in zip(layer.grads, grads))
    for g in layer.grads:  # an empty sequence has zero gradient
        np.testing.assert_array_equal(g, 0)
    assert layer.dh.shape == (n, H) and not layer.dh.any()
    assert layer.h.shape == (n, H) and not layer.h.any()
    assert layer.grad_norms_h.shape == (t,) and not layer.grad_norms_h.any()
    if kind == "lstm":
        assert layer.dc.shape == (n, H) and not layer.dc.any()
        assert layer.c.shape == (n, H) and not layer.c.any()
    # and the layer still works afterwards
    params2, xs, dhs, _, _ = sequence(kind, rng, dtype)
    for p, q in zip(params, params2):
        p[...] = q
    got, _, _ = run_time(layer, kind, xs, dhs)
    assert_results_close(got, reference_results(kind, params, xs, dhs), dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_sequence_keeps_carried_state(kind, rng):
    params, xs, dhs, h0, c0 = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params, stateful=True)
    set_state(layer, kind, h0, c0)
    hs = layer.forward(np.zeros((N, 0, D)))
    assert hs.shape == (N, 0, H)
    np.testing.assert_array_equal(layer.h, h0)
    if kind == "lstm":
        np.testing.assert_array_equal(layer.c, c0)
    # the state carried through an empty segment is the one used next
    got, _, _ = run_time(layer, kind, xs, dhs)
    assert_results_close(got, reference_results(kind, params, xs, dhs, h0, c0), np.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_empty_batch(kind, rng):
    params = make_params(kind, rng, D, H, np.float64)
    cell = make_cell(fastrnn, kind, params)
    z = np.zeros((0, H))
    if kind == "lstm":
        hn, cn = cell.forward(np.zeros((0, D)), z, z)
        assert hn.shape == (0, H) and cn.shape == (0, H)
        dx, dh, dc = cell.backward(z, z)
        assert dc.shape == (0, H)
    else:
        hn = cell.forward(np.zeros((0, D)), z)
        assert hn.shape == (0, H)
        dx, dh = cell.backward(z)
    assert dx.shape == (0, D) and dh.shape == (0, H)
    assert all(not g.any() for g in cell.grads)


def test_non_native_byte_order_is_converted(rng):
    kind = "lstm"
    # big-endian float64 (e.g. read from a file) is float64 data: the NumPy layers accept it
    params, xs, dhs, _, _ = sequence(kind, rng, np.float64)
    layer = make_time(fastrnn, kind, params)
    want, _, _ = run_time(layer, kind, xs, dhs)
    got, hs, _ = run_time(layer, kind, xs.astype(">f8"), dhs.astype(">f8"))
    assert hs.dtype == np.float64
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _misaligned_copy(a, offset):
    """A copy of a whose data starts `offset` bytes past a 64-byte boundary."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + offset
    out = raw[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == offset
    return out


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "gru_ra"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_work_buffers_start_on_cache_lines(kind, dtype, rng):
    # the packed weights, the caches, the backward's scratch and the weight gradients start on
    # 64-byte boundaries (layers._aligned_empty): misaligned, every vector load of a packed
    # panel spans two cache lines
    N, T, D, H = 5, 7, 9, 13
    params = make_params(kind, rng, D, H, dtype)
    layer = make_time(fastrnn, kind, params)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    layer.forward(xs)
    layer.backward(rng.standard_normal((N, T, H)).astype(dtype))
    arrays = {"wp": layer._wp, "dWx": layer.grads[0], "dWh": layer.grads[1]}
    arrays.update(
        {
            f"cache {k}": v
            for k, v in layer._cache.items()
            if isinstance(v, np.ndarray) and k != "c0"
        }
    )
    arrays.update(
        {
            f"scratch {k}": v
            for k, v in layer._scratch.items()
            if isinstance(v, np.ndarray) and k != "acc"
        }
    )
    assert len(arrays) >= 5
    for name, a in arrays.items():
        if name == "dWh":  # right after dWx in one buffer: aligned when D*GH*itemsize is
            continue
        assert a.ctypes.data % 64 == 0, f"{name} starts at {a.ctypes.data % 64} mod 64"
        assert a.flags.c_contiguous and a.flags.writeable and a.dtype == dtype


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "gru_ra"])
@pytest.mark.parametrize("offset", [16, 48])
def test_batch_one_reads_an_aligned_copy_of_wh_made_at_every_call(kind, offset, rng):
    # batch 1 multiplies the unpacked Wh by a row at every step; a misaligned Wh is read from an
    # aligned copy (layers._step_weights): the results are those of the same Wh aligned,
    # bitwise, and a change to Wh in place between calls is seen by the next forward and
    # backward
    N, T, D, H = 1, 6, 4, 24
    dtype = np.float32
    Wx, Wh, b = make_params(kind, rng, D, H, dtype)
    aligned = make_time(fastrnn, kind, [Wx.copy(), _misaligned_copy(Wh, 0), b.copy()])
    odd = make_time(fastrnn, kind, [Wx.copy(), _misaligned_copy(Wh, offset), b.copy()])
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    for _step in range(2):
        got = [odd.forward(xs), odd.backward(dhs), *odd.grads]
        want = [aligned.forward(xs), aligned.backward(dhs), *aligned.grads]
        for g, w in zip(got, want):
            assert np.array_equal(g, w)
        assert odd._wh_aligned is not None and aligned._wh_aligned is None
        assert odd.params[1].ctypes.data % 64 == offset  # the caller's array is kept
        for layer in (aligned, odd):
            layer.params[1] *= 0.5  # an optimizer step, in place
