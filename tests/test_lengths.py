"""Variable-length batches and the reverse direction of the recurrent layers (issue 21).

Oracles: the NumPy reference (fastrnn/reference/recurrent.py, a plain per-step loop over the rows
still running), each row run alone on its own length, finite differences, and PyTorch's packed
sequences (the reverse half of a bidirectional module for reverse=True).
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastrnn.layers.recurrent as fast
import fastrnn.reference.recurrent as ref

CELLS = {
    "rnn_tanh": ("TimeRNN", 1, {}),
    "rnn_relu": ("TimeRNN", 1, {"nonlinearity": "relu"}),
    "lstm": ("TimeLSTM", 4, {}),
    "gru": ("TimeGRU", 3, {}),
    "gru_ra": ("TimeGRU", 3, {"reset_after": True}),
}
N, T, D, H = 7, 6, 3, 5
LENGTHS = {
    "random": np.array([6, 1, 3, 6, 2, 2, 5]),  # unsorted, repeated, some full
    "all_T": np.full(N, T),
    "all_1": np.ones(N, np.int32),
    "descending": np.array([6, 5, 5, 4, 2, 1, 1]),
}


def make_params(cell, dtype, rng, d=D, h=H):
    _, G, kw = CELLS[cell]
    b_shape = (2, G * h) if kw.get("reset_after") else (G * h,)
    return [
        (0.5 * rng.standard_normal(shape)).astype(dtype)
        for shape in ((d, G * h), (h, G * h), b_shape)
    ]


def make(module, cell, params, **extra):
    name, _, kw = CELLS[cell]
    return getattr(module, name)(*params, **kw, **extra)


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def results(layer, cell):
    out = [layer.h, layer.dh] + list(layer.grads)
    if cell == "lstm":
        out += [layer.c, layer.dc]
    return out


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_reference(cell, dtype, reverse, threads, masked):
    rng = np.random.default_rng(21)
    params = make_params(cell, dtype, rng)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    mask = rng.uniform(0, 2, (N, H)).astype(dtype) if masked else None
    for lname, lengths in LENGTHS.items():
        layer = make(fast, cell, params, reverse=reverse)
        layer.threads = threads
        oracle = make(ref, cell, params, reverse=reverse)
        hs = layer.forward(xs, lengths, h_mask=mask)
        want = oracle.forward(xs, lengths, h_mask=mask)
        dhs = rng.standard_normal((N, T, H)).astype(dtype)
        dxs = layer.backward(dhs)
        want_dxs = oracle.backward(dhs)
        np.testing.assert_allclose(hs, want, **tol(dtype), err_msg=lname)
        np.testing.assert_allclose(dxs, want_dxs, **tol(dtype), err_msg=lname)
        for got, exp in zip(results(layer, cell), results(oracle, cell)):
            np.testing.assert_allclose(got, exp, **tol(dtype), err_msg=lname)
        # exactly zero past each row's length
        pad = np.arange(T) >= lengths[:, None]
        assert not hs[pad].any() and not dxs[pad].any()


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_each_row_alone(cell, reverse):
    """Row n of a batch with lengths = row n run alone over its own steps (reversed in time for
    reverse=True, as a plain forward layer on the reversed row)."""
    rng = np.random.default_rng(5)
    params = make_params(cell, np.float64, rng)
    xs = rng.standard_normal((N, T, D))
    lengths = LENGTHS["random"]
    dhs = rng.standard_normal((N, T, H))
    layer = make(fast, cell, params, reverse=reverse)
    hs = layer.forward(xs, lengths)
    dxs = layer.backward(dhs)
    grads = [g.copy() for g in layer.grads]
    total = [np.zeros_like(g) for g in grads]
    for n, length in enumerate(lengths):
        order = np.arange(length)[::-1] if reverse else np.arange(length)
        alone = make(fast, cell, params)
        h1 = alone.forward(xs[n : n + 1, order])
        dx1 = alone.backward(dhs[n : n + 1, order])
        np.testing.assert_allclose(hs[n, order], h1[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dxs[n, order], dx1[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.h[n], alone.h[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.dh[n], alone.dh[0], rtol=1e-10, atol=1e-12)
        for acc, g in zip(total, alone.grads):
            acc += g
    for got, exp in zip(grads, total):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


def test_reverse_without_lengths_is_time_reversal():
    rng = np.random.default_rng(2)
    params = make_params("lstm", np.float64, rng)
    xs = rng.standard_normal((N, T, D))
    rev = fast.TimeLSTM(*params, reverse=True)
    fwd = fast.TimeLSTM(*params)
    np.testing.assert_allclose(rev.forward(xs), fwd.forward(xs[:, ::-1])[:, ::-1], rtol=1e-12)
    np.testing.assert_allclose(rev.c, fwd.c, rtol=1e-12)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("threads", [1, 2])
def test_stateful_carries_each_rows_last_state(cell, threads):
    rng = np.random.default_rng(3)
    params = make_params(cell, np.float64, rng)
    layer = make(fast, cell, params, stateful=True)
    layer.threads = threads
    oracle = make(ref, cell, params, stateful=True)
    for lengths in (LENGTHS["random"], LENGTHS["descending"]):
        xs = rng.standard_normal((N, T, D))
        np.testing.assert_allclose(
            layer.forward(xs, lengths), oracle.forward(xs, lengths), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(layer.h, oracle.h, rtol=1e-10, atol=1e-12)
        dhs = rng.standard_normal((N, T, H))
        np.testing.assert_allclose(
            layer.backward(dhs), oracle.backward(dhs), rtol=1e-10, atol=1e-12
        )
        for got, exp in zip(results(layer, cell), results(oracle, cell)):
            np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", list(CELLS))
def test_finite_differences(cell):
    """d(loss)/d(params, xs) by central differences, with lengths and reverse, float64."""
    rng = np.random.default_rng(11)
    n, t, d, h = 3, 4, 2, 3
    params = make_params(cell, np.float64, rng, d, h)
    xs = rng.standard_normal((n, t, d))
    lengths = np.array([4, 1, 3])
    dhs = rng.standard_normal((n, t, h))
    for reverse in (False, True):
        layer = make(fast, cell, params, reverse=reverse)

        def loss():
            return float(np.sum(layer.forward(xs, lengths) * dhs))

        loss()
        dxs = layer.backward(dhs)
        grads = [g.copy() for g in layer.grads]
        eps = 1e-6
        for arr, grad in list(zip(params, grads)) + [(xs, dxs)]:
            num = np.zeros_like(arr)
            for i in np.ndindex(arr.shape):
                keep = arr[i]
                arr[i] = keep + eps
                up = loss()
                arr[i] = keep - eps
                down = loss()
                arr[i] = keep
                num[i] = (up - down) / (2 * eps)
            np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (np.array([2.0, 3.0]), TypeError, "integer"),
        (np.array([True, False]), TypeError, "integer"),
        (np.array([2, 3, 1]), ValueError, "shape (2,)"),
        (np.array([[2, 3]]), ValueError, "shape (2,)"),
        (np.array([0, 3]), ValueError, "between 1 and T = 4"),
        (np.array([5, 3]), ValueError, "between 1 and T = 4"),
        (np.array([-1, 3]), ValueError, "between 1 and T = 4"),
    ],
)
def test_bad_lengths(bad, error, words):
    rng = np.random.default_rng(0)
    params = make_params("gru", np.float64, rng)
    layer = fast.TimeGRU(*params, stateful=True)
    xs = rng.standard_normal((2, 4, D))
    hs = layer.forward(xs)
    h, last = layer.h.copy(), layer._last
    with pytest.raises(error, match="lengths") as info:
        layer.forward(xs, bad)
    assert words in str(info.value)
    np.testing.assert_array_equal(layer.h, h)
    assert layer._last == last
    # the caches still belong to the forward before: its backward is unchanged
    dxs = layer.backward(np.ones_like(hs))
    want = fast.TimeGRU(*params)
    want.forward(xs)
    np.testing.assert_array_equal(dxs, want.backward(np.ones_like(hs)))


def test_reverse_stateful_refused_and_config():
    rng = np.random.default_rng(0)
    params = make_params("lstm", np.float64, rng)
    with pytest.raises(ValueError, match="reverse"):
        fast.TimeLSTM(*params, stateful=True, reverse=True)
    layer = fast.TimeLSTM(*params, reverse=True)
    config = layer.get_config()
    assert config["reverse"] is True
    again = fast.TimeLSTM.from_config(config, params)
    assert again.reverse
    del config["reverse"]  # configs saved before reverse existed
    assert not fast.TimeLSTM.from_config(config, params).reverse
    layer.stateful = True  # set after construction: refused at forward, nothing changed
    with pytest.raises(ValueError, match="stateful"):
        layer.forward(rng.standard_normal((2, 3, D)))
    assert layer.h is None and layer._last is None


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    lengths=st.lists(st.integers(1, 5), min_size=1, max_size=6),
    reverse=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_property_gru_matches_reference(lengths, reverse, threads, seed):
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths)
    n, t = len(lengths), 5
    params = make_params("gru_ra", np.float64, rng)
    xs = rng.standard_normal((n, t, D))
    dhs = rng.standard_normal((n, t, H))
    layer = make(fast, "gru_ra", params, reverse=reverse)
    layer.threads = threads
    oracle = make(ref, "gru_ra", params, reverse=reverse)
    np.testing.assert_allclose(
        layer.forward(xs, lengths), oracle.forward(xs, lengths), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(layer.backward(dhs), oracle.backward(dhs), rtol=1e-10, atol=1e-12)
    for got, exp in zip(results(layer, "gru_ra"), results(oracle, "gru_ra")):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


# ---- PyTorch parity on packed sequences ------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_torch_packed_parity(kind, reverse):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from fastrnn.interop.torch import from_torch

    n, t, d, h = 6, 7, 4, 5
    module_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    torch.manual_seed(0)
    module = module_cls(d, h, batch_first=True, bidirectional=reverse).double()
    # the direction compared, as a one-directional torch module for from_torch
    single = module_cls(d, h, batch_first=True).double()
    sfx = "_reverse" if reverse else ""
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, name + "_l0").copy_(getattr(module, name + "_l0" + sfx))
    layer = from_torch(single)
    if reverse:
        layer = type(layer).from_config({**layer.get_config(), "reverse": True}, layer.params)

    rng = np.random.default_rng(1)
    xs = rng.standard_normal((n, t, d))
    lengths = np.array([7, 2, 5, 1, 7, 3])
    dhs = rng.standard_normal((n, t, h))

    x = torch.tensor(xs, requires_grad=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    directions = 2 if reverse else 1
    h0 = torch.zeros(directions, n, h, dtype=torch.float64, requires_grad=True)
    c0 = torch.zeros(directions, n, h, dtype=torch.float64, requires_grad=True)
    out, state = module(packed, (h0, c0) if kind == "lstm" else h0)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
    out = out[..., h:] if reverse else out[..., :h]
    (out * torch.tensor(dhs)).sum().backward()
    h_n = (state[0] if kind == "lstm" else state)[1 if reverse else 0]

    hs = layer.forward(xs, lengths)
    dxs = layer.backward(dhs)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.h, h_n.detach().numpy(), rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        c_n = state[1][1 if reverse else 0]
        np.testing.assert_allclose(layer.c, c_n.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dxs, x.grad.numpy(), rtol=1e-10, atol=1e-12)
    k = 1 if reverse else 0
    np.testing.assert_allclose(layer.dh, h0.grad[k].numpy(), rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        np.testing.assert_allclose(layer.dc, c0.grad[k].numpy(), rtol=1e-10, atol=1e-12)
    # torch's gradients in fastrnn's layout: the same converter applied to them (the RNN's and
    # LSTM's one bias is torch's two summed, and either has the whole gradient)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            grad = getattr(module, name + "_l0" + sfx).grad
            if name == "bias_hh" and kind != "gru":
                grad = torch.zeros_like(grad)
            getattr(single, name + "_l0").copy_(grad)
    for got, exp in zip(layer.grads, from_torch(single).params):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("threads", [1, 2])
def test_larger_packed_products(cell, threads):
    """Sizes where the per-step products take the packed micro-kernel and the weight gradients
    the whole-sequence kernels, float32 and float64, with track_grad_norms."""
    rng = np.random.default_rng(8)
    n, t, d, h = 40, 9, 20, 48
    lengths = rng.integers(1, t + 1, n)
    for dtype in (np.float64, np.float32):
        # (scaled to keep the units out of saturation: float32's rounding then stays ~1e-6)
        params = [(p / np.sqrt(h)).astype(dtype) for p in make_params(cell, dtype, rng, d, h)]
        xs = rng.standard_normal((n, t, d)).astype(dtype)
        dhs = rng.standard_normal((n, t, h)).astype(dtype)
        for reverse in (False, True):
            layer = make(fast, cell, params, reverse=reverse)
            layer.threads = threads
            layer.track_grad_norms = True
            oracle = make(ref, cell, params, reverse=reverse)
            oracle.track_grad_norms = True
            np.testing.assert_allclose(
                layer.forward(xs, lengths), oracle.forward(xs, lengths), **tol(dtype)
            )
            np.testing.assert_allclose(layer.backward(dhs), oracle.backward(dhs), **tol(dtype))
            for got, exp in zip(results(layer, cell), results(oracle, cell)):
                np.testing.assert_allclose(got, exp, **tol(dtype))
            np.testing.assert_allclose(layer.grad_norms_h, oracle.grad_norms_h, rtol=1e-4)


def test_lstm_wide_state_few_rows_two_threads():
    """Few rows and a large H: without lengths the LSTM shares each step by hidden units
    (use_units); with lengths it shares by rows, and still matches."""
    rng = np.random.default_rng(4)
    n, t, d, h = 6, 4, 8, 400
    params = make_params("lstm", np.float64, rng, d, h)
    xs = rng.standard_normal((n, t, d))
    dhs = rng.standard_normal((n, t, h))
    lengths = np.array([4, 2, 3, 1, 4, 2])
    layer = fast.TimeLSTM(*params)
    layer.threads = 2
    oracle = ref.TimeLSTM(*params)
    np.testing.assert_allclose(layer.forward(xs, lengths), oracle.forward(xs, lengths), rtol=1e-9)
    np.testing.assert_allclose(layer.backward(dhs), oracle.backward(dhs), rtol=1e-9, atol=1e-12)
    for got, exp in zip(results(layer, "lstm"), results(oracle, "lstm")):
        np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-12)


def test_edge_sizes():
    rng = np.random.default_rng(6)
    params = make_params("gru", np.float64, rng)
    layer = fast.TimeGRU(*params, reverse=True)
    # one step: reverse is forward
    xs = rng.standard_normal((3, 1, D))
    np.testing.assert_allclose(layer.forward(xs, [1, 1, 1]), fast.TimeGRU(*params).forward(xs))
    # no rows
    assert layer.forward(np.zeros((0, 4, D)), np.zeros(0, np.int64)).shape == (0, 4, H)
    # lengths=None after lengths: all T again
    xs = rng.standard_normal((2, 4, D))
    layer.forward(xs, [1, 2])
    np.testing.assert_allclose(layer.forward(xs), layer.forward(xs, [4, 4]))


def test_padding_of_dhs_is_not_used():
    rng = np.random.default_rng(9)
    params = make_params("lstm", np.float64, rng)
    xs = rng.standard_normal((N, T, D))
    lengths = LENGTHS["random"]
    dhs = rng.standard_normal((N, T, H))
    noisy = dhs + 1e3 * (np.arange(T) >= lengths[:, None])[:, :, None]
    layer = fast.TimeLSTM(*params, reverse=True)
    layer.forward(xs, lengths)
    want = layer.backward(dhs)
    grads = [g.copy() for g in layer.grads]
    np.testing.assert_array_equal(layer.backward(noisy), want)
    for got, exp in zip(layer.grads, grads):
        np.testing.assert_array_equal(got, exp)


def test_save_load_keeps_reverse(tmp_path):
    import fastrnn

    rng = np.random.default_rng(10)
    layer = fast.TimeGRU(*make_params("gru_ra", np.float32, rng), reset_after=True, reverse=True)
    fastrnn.save(tmp_path / "gru.npz", layer)
    again = fastrnn.load(tmp_path / "gru.npz")
    assert again.reverse and again.reset_after
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    lengths = LENGTHS["random"]
    np.testing.assert_array_equal(again.forward(xs, lengths), layer.forward(xs, lengths))
