"""The language-model layers (fastrnn.layers.lm) against the book-style NumPy reference
(fastrnn.reference.lm), finite differences, PyTorch, hypothesis properties, and bad input."""

import numpy as np
import pytest
from conftest import num_grad
from hypothesis import given, settings, strategies as st

import fastrnn
from fastrnn import reference as ref

DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def close(got, want, dtype, rtol=None):
    rtol = RTOL[np.dtype(dtype)] if rtol is None else rtol
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


# ---- TimeEmbedding -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 11, 4), (2, 7, 3, 6), (1, 1, 1, 1), (4, 9, 50, 17)])
def test_embedding_matches_reference_with_repeated_ids(dtype, shape, rng):
    N, T, V, D = shape
    W = rng.standard_normal((V, D)).astype(dtype)
    xs = rng.integers(0, min(V, 3), (N, T))  # few distinct ids: many repeats
    dout = rng.standard_normal((N, T, D)).astype(dtype)
    fast, slow = fastrnn.TimeEmbedding(W), ref.TimeEmbedding(W.copy())
    out = fast.forward(xs)
    np.testing.assert_array_equal(out, slow.forward(xs))
    assert out.dtype == np.dtype(dtype) and out.shape == (N, T, D)
    assert fast.backward(dout) is None
    slow.backward(dout)
    close(fast.grads[0], slow.grads[0], dtype)
    assert fast.grads[0].dtype == np.dtype(dtype)


@pytest.mark.parametrize("id_dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
def test_embedding_accepts_any_integer_ids(id_dtype, rng):
    W = rng.standard_normal((7, 3))
    xs = rng.integers(0, 7, (2, 4)).astype(id_dtype)
    np.testing.assert_array_equal(fastrnn.TimeEmbedding(W).forward(xs), W[xs.astype(np.int64)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", ["transposed", "strided"])
def test_embedding_reads_views_of_W(dtype, view, rng):
    base = rng.standard_normal((8, 12)).astype(dtype)
    W = base.T if view == "transposed" else base[:, ::3]
    xs = rng.integers(0, W.shape[0], (3, 4))
    dout = rng.standard_normal((3, 4, W.shape[1])).astype(dtype)
    fast, slow = fastrnn.TimeEmbedding(W), ref.TimeEmbedding(W)
    np.testing.assert_array_equal(fast.forward(xs), slow.forward(xs))
    fast.backward(dout)
    slow.backward(dout)
    close(fast.grads[0], slow.grads[0], dtype)
    assert fast.grads[0].flags.c_contiguous and fast.grads[0].shape == W.shape
    W[xs[0, 0], 1] = np.nan
    with pytest.raises(ValueError, match="W"):
        fast.forward(xs)


def test_embedding_gradcheck(rng):
    W = rng.standard_normal((5, 3))
    xs = np.array([[0, 1, 1], [4, 0, 1]])
    C = rng.standard_normal((2, 3, 3))
    layer = fastrnn.TimeEmbedding(W)
    layer.forward(xs)
    layer.backward(C)
    num = num_grad(lambda: float(np.sum(fastrnn.TimeEmbedding(W).forward(xs) * C)), W)
    np.testing.assert_allclose(layer.grads[0], num, rtol=1e-7, atol=1e-8)


def test_embedding_grads_overwritten_in_place(rng):
    W = rng.standard_normal((6, 2))
    layer = fastrnn.TimeEmbedding(W)
    dW = layer.grads[0]
    layer.forward(np.array([[1, 2]]))
    layer.backward(np.ones((1, 2, 2)))
    layer.forward(np.array([[3, 3]]))
    layer.backward(np.ones((1, 2, 2)))
    assert layer.grads[0] is dW
    want = np.zeros((6, 2))
    want[3] = 2
    np.testing.assert_array_equal(dW, want)


# ---- TimeAffine --------------------------------------------------------------------------------


def affine_case(rng, dtype, N, T, D, M, tied):
    if tied:  # weight tying: W is embed_W.T, an F-contiguous view
        E = rng.standard_normal((M, D)).astype(dtype)
        W = E.T
    else:
        W = rng.standard_normal((D, M)).astype(dtype)
    b = rng.standard_normal(M).astype(dtype)
    x = rng.standard_normal((N, T, D)).astype(dtype)
    dout = rng.standard_normal((N, T, M)).astype(dtype)
    return W, b, x, dout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 4, 7), (1, 1, 1, 1), (2, 9, 13, 31)])
def test_affine_matches_reference(dtype, tied, shape, rng):
    W, b, x, dout = affine_case(rng, dtype, *shape, tied)
    fast, slow = fastrnn.TimeAffine(W, b), ref.TimeAffine(W, b)
    assert fast.params[0] is W
    close(fast.forward(x), slow.forward(x), dtype)
    dx = fast.backward(dout)
    close(dx, slow.backward(dout), dtype)
    for g, h, p in zip(fast.grads, slow.grads, (W, b)):
        close(g, h, dtype)
        assert g.shape == p.shape and g.dtype == np.dtype(dtype) and g.flags.c_contiguous


@pytest.mark.parametrize("tied", [False, True])
def test_affine_gradcheck(tied, rng):
    W, b, x, C = affine_case(rng, np.float64, 2, 3, 4, 5, tied)
    layer = fastrnn.TimeAffine(W, b)
    layer.forward(x)
    dx = layer.backward(C)

    def f():
        return float(np.sum(fastrnn.TimeAffine(W, b).forward(x) * C))

    # (for the tied case, perturbing W's base array perturbs the view)
    Wbase = W.base if tied else W
    num_dW = num_grad(f, Wbase)
    if tied:
        num_dW = num_dW.T
    np.testing.assert_allclose(layer.grads[0], num_dW, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(layer.grads[1], num_grad(f, b), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dx, num_grad(f, x), rtol=1e-7, atol=1e-8)


def test_affine_reads_params_afresh(rng):
    W, b, x, _dout = affine_case(rng, np.float64, 2, 3, 4, 5, False)
    layer = fastrnn.TimeAffine(W, b)
    layer.forward(x)
    W *= 2
    b += 1
    np.testing.assert_allclose(layer.forward(x), x @ W + b, rtol=1e-12)


# ---- TimeSoftmaxWithLoss -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 11), (1, 1, 1), (2, 4, 300)])
@pytest.mark.parametrize("ignore", [False, True])
def test_softmax_loss_matches_reference(dtype, shape, ignore, rng):
    N, T, V = shape
    xs = (3 * rng.standard_normal(shape)).astype(dtype)
    ts = rng.integers(0, V, (N, T))
    if ignore:
        ts[rng.random((N, T)) < 0.3] = -1
        ts[0, 0] = -1
    fast, slow = fastrnn.TimeSoftmaxWithLoss(), ref.TimeSoftmaxWithLoss()
    loss = fast.forward(xs, ts)
    assert isinstance(loss, float)
    close(loss, slow.forward(xs, ts), dtype)
    for dout in (1, 0.37):
        dx = fast.backward(dout)
        close(dx, slow.backward(dout), dtype)
        assert dx.dtype == np.dtype(dtype) and dx.shape == shape
    if ignore:
        assert not dx[ts == -1].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_loss_one_hot_targets(dtype, rng):
    N, T, V = 2, 3, 6
    xs = rng.standard_normal((N, T, V)).astype(dtype)
    ts = rng.integers(0, V, (N, T))
    onehot = np.eye(V, dtype=np.int32)[ts]
    fast = fastrnn.TimeSoftmaxWithLoss()
    a = fast.forward(xs, onehot)
    da = fast.backward()
    b = fast.forward(xs, ts)
    db = fast.backward()
    assert a == b
    np.testing.assert_array_equal(da, db)
    close(a, ref.TimeSoftmaxWithLoss().forward(xs, onehot), dtype)


def test_softmax_loss_custom_ignore_label_and_all_ignored(rng):
    xs = rng.standard_normal((2, 3, 4))
    ts = np.array([[0, 3, 9], [9, 9, 1]])
    layer = fastrnn.TimeSoftmaxWithLoss(ignore_label=9)
    close(
        layer.forward(xs, ts), ref.TimeSoftmaxWithLoss(ignore_label=9).forward(xs, ts), np.float64
    )
    everything = np.full((2, 3), 9)
    assert layer.forward(xs, everything) == 0.0
    assert not layer.backward().any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("big", [1e4, -1e4, 3e38])
def test_softmax_loss_extreme_logits(dtype, big, rng):
    V = 7
    xs = rng.standard_normal((2, 3, V)).astype(dtype)
    xs[0, 0, 2] = big
    xs[1, 2] = np.float64(big).astype(dtype)  # a whole row at the extreme
    xs[1, 1, ::2] = -abs(big)
    ts = rng.integers(0, V, (2, 3))
    ts[0, 0] = 2
    layer = fastrnn.TimeSoftmaxWithLoss()
    loss = layer.forward(xs, ts)
    dx = layer.backward()
    assert np.isfinite(loss) and np.isfinite(dx).all()
    # exact answer in float64 via log-sum-exp
    x = xs.astype(np.float64).reshape(6, V)
    m = x.max(1, keepdims=True)
    logsum = np.log(np.exp(x - m).sum(1))  # (max + logsum would round logsum away)
    want = np.mean(logsum - (x[np.arange(6), ts.ravel()] - m[:, 0]))
    np.testing.assert_allclose(loss, want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    p = np.exp(x - m - logsum[:, None])
    p[np.arange(6), ts.ravel()] -= 1
    np.testing.assert_allclose(dx.reshape(6, V), p / 6, atol=1e-6 if dtype == np.float32 else 1e-14)


def test_softmax_loss_gradcheck(rng):
    xs = rng.standard_normal((2, 3, 5))
    ts = np.array([[0, -1, 4], [2, 2, 1]])
    layer = fastrnn.TimeSoftmaxWithLoss()
    layer.forward(xs, ts)
    dx = layer.backward(1.7)
    num = num_grad(lambda: 1.7 * fastrnn.TimeSoftmaxWithLoss().forward(xs, ts), xs)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_loss_in_place_backward(dtype, rng):
    xs = rng.standard_normal((3, 4, 9)).astype(dtype)
    ts = rng.integers(0, 9, (3, 4))
    layer = fastrnn.TimeSoftmaxWithLoss()
    layer.forward(xs, ts)
    want = layer.backward(0.5)
    got = layer.backward(0.5, out=xs)
    assert got.base is xs or got is xs or np.shares_memory(got, xs)
    np.testing.assert_array_equal(xs, want)
    with pytest.raises(RuntimeError, match="overwritten"):
        layer.backward()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 11), (1, 1, 1), (2, 4, 1300)])
@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_loss_inplace_mode(dtype, shape, threads, rng):
    N, T, V = shape
    xs = (3 * rng.standard_normal(shape)).astype(dtype)
    ts = rng.integers(0, V, (N, T))
    ts[rng.random((N, T)) < 0.3] = -1
    slow = ref.TimeSoftmaxWithLoss()
    want_loss = slow.forward(xs, ts)
    want = slow.backward(0.37)
    layer = fastrnn.TimeSoftmaxWithLoss(inplace=True)
    layer.threads = threads
    buf = xs.copy()
    close(layer.forward(buf, ts), want_loss, dtype)
    close(buf, want / 0.37, dtype)  # forward left the gradient for dout=1
    got = layer.backward(0.37)
    assert got is buf
    close(got, want, dtype)
    # the same numbers as the two-visit mode
    two = fastrnn.TimeSoftmaxWithLoss()
    assert two.forward(xs, ts) == pytest.approx(layer.forward(xs.copy(), ts), rel=1e-6, abs=1e-7)
    close(layer.backward(), two.backward(), dtype)
    other = np.empty_like(xs)
    layer.forward(xs.copy(), ts)
    assert layer.backward(2.0, out=other) is other
    close(other, 2 * two.backward(), dtype)
    assert layer.get_config() == {"ignore_label": -1, "inplace": True}


def test_softmax_loss_inplace_bad_input(rng):
    xs = rng.standard_normal((2, 3, 4))
    ts = rng.integers(0, 4, (2, 3))
    layer = fastrnn.TimeSoftmaxWithLoss(inplace=True)
    for bad, exc in [
        (xs.astype(np.float32).astype(">f4"), TypeError),
        (xs.tolist(), TypeError),
        (np.asfortranarray(xs), ValueError),
        (xs[:, ::2], ValueError),
    ]:
        with pytest.raises(exc, match="xs"):
            layer.forward(bad, ts)
    ro = xs.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        layer.forward(ro, ts)
    buf = xs.copy()
    layer.forward(buf, ts)
    kept = buf.copy()
    nan = xs.copy()
    nan[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"xs\[1, 2\]"):
        layer.forward(nan, ts)
    assert layer.backward() is buf  # still the last good forward's
    np.testing.assert_array_equal(buf, kept)
    with pytest.raises(TypeError, match="inplace"):
        fastrnn.TimeSoftmaxWithLoss(inplace="yes")


# ---- dropout ---


def hash_bits(key, n):
    """The counter-based generator of src/lm/fr_lm.h in NumPy: SplitMix64's output function of
    key + (j+1) * golden, its low 32 bits for element 2j and its high 32 bits for 2j + 1."""
    pairs = (n + 1) // 2
    with np.errstate(over="ignore"):
        z = np.uint64(key) + np.arange(1, pairs + 1, dtype=np.uint64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    lo = (z & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (z >> np.uint64(32)).astype(np.uint32)
    return np.stack([lo, hi], 1).ravel()[:n]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (3, 7, 33)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dropout_mask_is_the_documented_hash(dtype, shape, threads, rng):
    from fastrnn.layers.lm import _threshold

    layer = fastrnn.TimeDropout(0.37, seed=9)
    layer.threads = threads
    xs = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(xs)
    keep = hash_bits(layer._key, xs.size) >= np.uint32(_threshold(0.37))
    mask = (keep * np.dtype(dtype).type(1 / 0.63)).reshape(shape)
    np.testing.assert_array_equal(layer.mask, mask)
    np.testing.assert_array_equal(y, xs * mask)  # bitwise the book's x * mask


@pytest.mark.parametrize("cls", [fastrnn.TimeDropout, fastrnn.VariationalDropout])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_seed_scaling_and_eval(cls, dtype, rng):
    xs = rng.standard_normal((4, 6, 8)).astype(dtype)
    a, b = cls(0.3, seed=5), cls(0.3, seed=5)
    ya, yb = a.forward(xs), b.forward(xs)
    np.testing.assert_array_equal(ya, yb)
    assert ya.dtype == np.dtype(dtype)
    mask = a.mask
    assert set(np.unique(mask)) <= {0.0, np.dtype(dtype).type(1 / 0.7)}
    np.testing.assert_array_equal(ya, xs * mask)
    dout = rng.standard_normal(xs.shape).astype(dtype)
    np.testing.assert_array_equal(a.backward(dout), dout * mask)
    assert not np.array_equal(a.forward(xs), ya)  # a fresh mask at each call
    a.train_flg = False
    assert a.forward(xs) is xs
    np.testing.assert_array_equal(a.backward(dout), dout)


def test_variational_mask_shared_over_time(rng):
    xs = rng.standard_normal((5, 7, 9))
    layer = fastrnn.VariationalDropout(0.5, seed=1)
    y = layer.forward(xs)
    assert layer.mask.shape == (5, 1, 9)
    kept = y != 0
    assert (kept == kept[:, :1]).all()


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_statistics(ratio):
    layer = fastrnn.TimeDropout(ratio, seed=3)
    y = layer.forward(np.ones((50, 40, 100), np.float32))
    kept = (y != 0).mean()
    n = y.size
    sd = np.sqrt(ratio * (1 - ratio) / n)
    assert abs(kept - (1 - ratio)) <= 5 * sd + 1e-12
    assert np.allclose(y[y != 0], 1 / (1 - ratio))
    vd = fastrnn.VariationalDropout(ratio, seed=3)
    m = vd.forward(np.ones((200, 3, 100)))
    kept = (m[:, 0] != 0).mean()
    assert abs(kept - (1 - ratio)) <= 5 * np.sqrt(ratio * (1 - ratio) / 20000) + 1e-12


def test_variational_fixed_mask_gradcheck(rng):
    xs = rng.standard_normal((2, 3, 4))
    C = rng.standard_normal((2, 3, 4))
    layer = fastrnn.VariationalDropout(0.5)
    fixed = (rng.random((2, 1, 4)) > 0.5) * 2.0
    layer.set_mask(fixed)
    layer.forward(xs)
    dx = layer.backward(C)
    num = num_grad(lambda: float(np.sum(layer.forward(xs) * C)), xs)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(layer.mask, fixed)


def test_time_dropout_gradcheck(rng):
    xs = rng.standard_normal((2, 3, 4))
    C = rng.standard_normal((2, 3, 4))
    layer = fastrnn.TimeDropout(0.4, seed=11)
    layer.forward(xs)
    dx = layer.backward(C)
    num = num_grad(lambda: float(np.sum(fastrnn.TimeDropout(0.4, seed=11).forward(xs) * C)), xs)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)


# ---- persistence --------------------------------------------------------------------------------


def test_config_round_trip(rng):
    import json

    W = rng.standard_normal((5, 3))
    b = rng.standard_normal(3)
    for layer in (
        fastrnn.TimeEmbedding(W),
        fastrnn.TimeAffine(W, b),
        fastrnn.TimeSoftmaxWithLoss(ignore_label=7),
        fastrnn.TimeSoftmaxWithLoss(inplace=True),
        fastrnn.TimeDropout(0.2, seed=4),
        fastrnn.VariationalDropout(0.3),
    ):
        config = json.loads(json.dumps(layer.get_config()))
        again = type(layer).from_config(config, [p.copy() for p in layer.params])
        assert again.get_config() == layer.get_config()
        for p, q in zip(again.params, layer.params):
            np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="parameter arrays"):
        fastrnn.TimeAffine.from_config({}, [W])


# ---- PyTorch -----------------------------------------------------------------------------------


def test_torch_parity(rng):
    torch = pytest.importorskip("torch")
    N, T, V, D = 3, 4, 10, 6
    W = rng.standard_normal((V, D))
    xs = rng.integers(0, V, (N, T))
    emb = torch.nn.Embedding(V, D, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(W))
    e = emb(torch.from_numpy(xs))
    dout = rng.standard_normal((N, T, D))
    e.backward(torch.from_numpy(dout))
    layer = fastrnn.TimeEmbedding(W)
    np.testing.assert_allclose(layer.forward(xs), e.detach().numpy(), rtol=1e-15)
    layer.backward(dout)
    np.testing.assert_allclose(layer.grads[0], emb.weight.grad.numpy(), rtol=1e-12, atol=1e-14)

    A = rng.standard_normal((D, V))
    b = rng.standard_normal(V)
    lin = torch.nn.Linear(D, V, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(A.T))
        lin.bias.copy_(torch.from_numpy(b))
    x = torch.from_numpy(rng.standard_normal((N, T, D))).requires_grad_()
    logits = lin(x)
    ts = rng.integers(0, V, (N, T))
    ts[0, 1] = ts[2, 3] = -1
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, V), torch.from_numpy(ts).ravel(), ignore_index=-1
    )
    loss.backward()
    aff, sm = fastrnn.TimeAffine(A, b), fastrnn.TimeSoftmaxWithLoss()
    out = aff.forward(x.detach().numpy())
    np.testing.assert_allclose(out, logits.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sm.forward(out, ts), loss.item(), rtol=1e-12)
    dx = aff.backward(sm.backward())
    np.testing.assert_allclose(dx, x.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(aff.grads[0], lin.weight.grad.numpy().T, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(aff.grads[1], lin.bias.grad.numpy(), rtol=1e-10, atol=1e-14)


# ---- properties ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(1, 5),
    V=st.integers(1, 40),
    seed=st.integers(0, 2**32),
    shift=st.floats(-1e3, 1e3),
)
def test_softmax_loss_properties(N, T, V, seed, shift):
    r = np.random.default_rng(seed)
    xs = r.standard_normal((N, T, V))
    ts = r.integers(-1, V, (N, T))
    layer = fastrnn.TimeSoftmaxWithLoss()
    loss = layer.forward(xs, ts)
    dx = layer.backward()
    assert loss >= 0
    np.testing.assert_allclose(dx.sum(axis=2), 0, atol=1e-12)  # rows sum to zero
    # shift invariance of the loss and gradient
    loss2 = layer.forward(xs + shift, ts)
    np.testing.assert_allclose(loss2, loss, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.backward(), dx, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 5),
    T=st.integers(1, 5),
    V=st.integers(1, 12),
    D=st.integers(1, 6),
    seed=st.integers(0, 2**32),
)
def test_embedding_gradient_is_a_count_weighted_sum(N, T, V, D, seed):
    r = np.random.default_rng(seed)
    W = r.standard_normal((V, D))
    xs = r.integers(0, V, (N, T))
    layer = fastrnn.TimeEmbedding(W)
    layer.forward(xs)
    layer.backward(np.ones((N, T, D)))
    counts = np.bincount(xs.ravel(), minlength=V)
    np.testing.assert_array_equal(layer.grads[0], np.repeat(counts[:, None], D, 1))


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(1, 5),
    D=st.integers(1, 9),
    M=st.integers(1, 9),
    tied=st.booleans(),
    f32=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_affine_matches_reference_on_any_shape(N, T, D, M, tied, f32, seed):
    dtype = np.float32 if f32 else np.float64
    W, b, x, dout = affine_case(np.random.default_rng(seed), dtype, N, T, D, M, tied)
    fast, slow = fastrnn.TimeAffine(W, b), ref.TimeAffine(W, b)
    close(fast.forward(x), slow.forward(x), dtype)
    close(fast.backward(dout), slow.backward(dout), dtype)
    for g, h in zip(fast.grads, slow.grads):
        close(g, h, dtype)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 17)),
    ratio=st.floats(0, 0.95),
    seed=st.integers(0, 2**63),
    variational=st.booleans(),
)
def test_dropout_properties(shape, ratio, seed, variational):
    cls = fastrnn.VariationalDropout if variational else fastrnn.TimeDropout
    xs = np.random.default_rng(seed % 2**32).standard_normal(shape)
    a, b = cls(ratio, seed=seed), cls(ratio, seed=seed)
    y = a.forward(xs)
    np.testing.assert_array_equal(y, b.forward(xs))  # same seed, same masks
    mask = np.broadcast_to(a.mask, shape)
    assert np.isin(mask, [0.0, 1 / (1 - ratio)]).all()
    np.testing.assert_array_equal(y, xs * mask)
    np.testing.assert_array_equal(a.backward(xs), xs * mask)
    a.train_flg = False
    assert a.forward(xs) is xs


# ---- bad input ----------------------------------------------------------------------------------


def snapshot(layer):
    return [p.copy() for p in layer.params], [g.copy() for g in layer.grads]


def unchanged(layer, snap):
    for a, b in zip(layer.params + layer.grads, snap[0] + snap[1]):
        np.testing.assert_array_equal(a, b)


def test_embedding_bad_input(rng):
    W = rng.standard_normal((5, 3))
    layer = fastrnn.TimeEmbedding(W)
    layer.forward(np.array([[1, 2]]))
    layer.backward(np.ones((1, 2, 3)))
    snap = snapshot(layer)
    for xs, exc, words in [
        (np.array([[1.0, 2.0]]), TypeError, "xs"),
        (np.array([[True, False]]), TypeError, "xs"),
        (np.array([1, 2]), ValueError, "xs"),
        (np.array([[1, 5]]), ValueError, "xs"),
        (np.array([[-1, 2]]), ValueError, "xs"),
    ]:
        with pytest.raises(exc, match=words):
            layer.forward(xs)
        unchanged(layer, snap)
    for dout, exc in [
        (np.ones((1, 3, 3)), ValueError),
        (np.full((1, 2, 3), np.nan), ValueError),
        (np.ones((1, 2, 3), int), TypeError),
    ]:
        with pytest.raises(exc, match="dout"):
            layer.backward(dout)
        unchanged(layer, snap)
    # the last good forward is still the one differentiated
    layer.backward(np.ones((1, 2, 3)))
    unchanged(layer, snap)
    with pytest.raises(RuntimeError, match="before forward"):
        fastrnn.TimeEmbedding(W).backward(np.ones((1, 2, 3)))
    W[4, 0] = np.inf
    with pytest.raises(ValueError, match="W"):
        layer.forward(np.array([[4, 2]]))


def test_affine_bad_input(rng):
    W, b, x, dout = affine_case(rng, np.float64, 2, 3, 4, 5, False)
    layer = fastrnn.TimeAffine(W, b)
    layer.forward(x)
    layer.backward(dout)
    snap = snapshot(layer)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    for arg, exc in [(x[..., :3], ValueError), (bad, ValueError), (x.astype(int), TypeError)]:
        with pytest.raises(exc, match="x"):
            layer.forward(arg)
        unchanged(layer, snap)
    with pytest.raises(ValueError, match="dout"):
        layer.backward(dout[:, :2])
    unchanged(layer, snap)
    with pytest.raises(RuntimeError, match="before forward"):
        fastrnn.TimeAffine(W, b).backward(dout)
    with pytest.raises(ValueError, match="b"):
        fastrnn.TimeAffine(W, b[:3])
    with pytest.raises(TypeError, match="W"):
        fastrnn.TimeAffine(W.astype(int), b)


def test_softmax_bad_input(rng):
    xs = rng.standard_normal((2, 3, 4))
    ts = rng.integers(0, 4, (2, 3))
    layer = fastrnn.TimeSoftmaxWithLoss()
    layer.forward(xs, ts)
    want = layer.backward()
    for a, t, exc, word in [
        (xs, ts + 4, ValueError, "ts"),
        (xs, ts - 2, ValueError, "ts"),
        (xs, ts.astype(float), TypeError, "ts"),
        (xs, ts[:, :2], ValueError, "ts"),
        (np.where(xs > 1, np.inf, xs), ts, ValueError, "xs"),
        (np.full_like(xs, np.nan), ts, ValueError, "xs"),
        (xs.astype(int), ts, TypeError, "xs"),
    ]:
        with pytest.raises(exc, match=word):
            layer.forward(a, t)
        np.testing.assert_array_equal(layer.backward(), want)
    for d, exc in [(np.nan, ValueError), ("x", TypeError)]:
        with pytest.raises(exc, match="dout"):
            layer.backward(d)
    with pytest.raises(ValueError, match="out"):
        layer.backward(out=np.empty((2, 3, 5)))
    with pytest.raises(RuntimeError, match="before forward"):
        fastrnn.TimeSoftmaxWithLoss().backward()
    with pytest.raises(TypeError, match="ignore_label"):
        fastrnn.TimeSoftmaxWithLoss(ignore_label=0.5)


@pytest.mark.parametrize("cls", [fastrnn.TimeDropout, fastrnn.VariationalDropout])
def test_dropout_bad_input(cls, rng):
    for ratio in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout_ratio"):
            cls(ratio)
    with pytest.raises(TypeError, match="seed"):
        cls(0.5, seed=1.5)
    layer = cls(0.5, seed=0)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 2, 3)))
    xs = rng.standard_normal((2, 3, 4))
    y = layer.forward(xs)
    dout = rng.standard_normal(xs.shape)
    want = layer.backward(dout)
    for bad, exc in [
        (np.full_like(xs, np.nan), ValueError),
        (xs.astype(int), TypeError),
        (xs[0], ValueError),
    ]:
        with pytest.raises(exc, match="xs"):
            layer.forward(bad)
        np.testing.assert_array_equal(layer.backward(dout), want)
    with pytest.raises(ValueError, match="dout"):
        layer.backward(dout[:, :1])
    with pytest.raises(ValueError, match="dout"):
        layer.backward(np.where(dout > 1, np.inf, dout))
    with pytest.raises(TypeError, match="dout"):
        layer.backward(dout.astype(np.complex128))
    np.testing.assert_array_equal(layer.backward(dout), want)
    assert y.shape == xs.shape


# ---- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [2, 3, 5])
def test_threads_give_the_one_thread_results(dtype, threads, rng):
    """Embedding, softmax and dropout: bitwise the same on any number of threads; the affine
    layer's dx to rounding (its reduction is split), its dW and db bitwise."""
    N, T, V, D = 4, 9, 300, 40
    W = rng.standard_normal((V, D)).astype(dtype)
    xs = rng.integers(0, 20, (N, T))
    dout = rng.standard_normal((N, T, D)).astype(dtype)
    A = rng.standard_normal((D, V)).astype(dtype)
    b = rng.standard_normal(V).astype(dtype)
    ts = rng.integers(-1, V, (N, T))

    def run(k):
        emb, aff = fastrnn.TimeEmbedding(W), fastrnn.TimeAffine(A, b)
        sm, dr = fastrnn.TimeSoftmaxWithLoss(), fastrnn.TimeDropout(0.3, seed=2)
        vd = fastrnn.VariationalDropout(0.3, seed=2)
        for layer in (emb, aff, sm, dr, vd):
            layer.threads = k
        e = emb.forward(xs)
        emb.backward(dout)
        h = vd.forward(dr.forward(e))
        logits = aff.forward(h)
        loss = sm.forward(logits, ts)
        g = sm.backward()
        dh = aff.backward(g)
        return [
            e,
            emb.grads[0],
            h,
            logits,
            np.array(loss),
            g,
            dr.backward(vd.backward(dh)),
            dh,
            *aff.grads,
        ]

    one, many = run(1), run(threads)
    for k, (a, c) in enumerate(zip(one, many)):
        if k in (6, 7):  # downstream of the affine layer's dx
            close(c, a, dtype)
        else:
            np.testing.assert_array_equal(c, a, err_msg=f"output {k}")


# ---- buffers ------------------------------------------------------------------------------------


def test_out_buffers_avoid_activation_sized_allocations(rng):
    """With out= (and the softmax layer in place), a training step's calls after the first
    allocate nothing near the size of an activation (measured with tracemalloc, which sees
    NumPy's allocations)."""
    import tracemalloc

    N, T, V, D = 8, 16, 2000, 64
    f32 = np.float32
    W = (0.1 * rng.standard_normal((V, D))).astype(f32)
    emb, drop = fastrnn.TimeEmbedding(W), fastrnn.TimeDropout(0.3, seed=0)
    vdrop = fastrnn.VariationalDropout(0.3, seed=0)
    aff = fastrnn.TimeAffine(W.T, np.zeros(V, f32))
    loss_layer = fastrnn.TimeSoftmaxWithLoss(inplace=True)
    for layer in (emb, drop, vdrop, aff, loss_layer):
        layer.threads = 2
    xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    e, h, g = (np.empty((N, T, D), f32) for _ in range(3))
    logits = np.empty((N, T, V), f32)

    def step():
        emb.forward(xs, out=e)
        drop.forward(e, out=h)
        vdrop.forward(h, out=h)
        aff.forward(h, out=logits)
        loss_layer.forward(logits, ts)
        aff.backward(loss_layer.backward(), out=g)
        vdrop.backward(g, out=g)
        drop.backward(g, out=g)
        emb.backward(g)

    step()
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < N * T * D * 4 // 2, peak  # far below one (N, T, D) activation


def test_affine_refused_call_keeps_the_last_forward(rng):
    W, b, x, dout = affine_case(rng, np.float64, 2, 3, 4, 5, True)
    layer = fastrnn.TimeAffine(W, b)
    layer.forward(x)
    want = layer.backward(dout)
    grads = [g.copy() for g in layer.grads]
    bad = x.copy()
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="x"):
        layer.forward(bad)
    with pytest.raises(ValueError, match="out"):
        layer.forward(x, out=np.empty((2, 3, 4)))
    np.testing.assert_array_equal(layer.backward(dout), want)
    for g, h in zip(layer.grads, grads):
        np.testing.assert_array_equal(g, h)
    W.base[0, 0] = np.nan  # W is a view of its base: NaN found
    with pytest.raises(ValueError, match="W"):
        layer.forward(x)


def test_kernel_exp_accuracy():
    """The exps of the softmax kernels: float64 within 2 ulp of libm's on [-708, 709] (0 below,
    NaN kept), float32 within 2e-7 relative on its normal range."""
    from fastrnn import _lm

    x = np.concatenate([np.linspace(-708, 709, 400_001), -np.logspace(-20, 2, 2000), [0.0]])
    out = np.empty_like(x)
    _lm.exp_map(x, out)
    want = np.exp(x)
    assert (np.abs(out - want) <= 2 * np.spacing(want)).all()
    edge = np.array([-709.0, -1e4, -np.inf, np.nan])
    got = np.empty_like(edge)
    _lm.exp_map(edge, got)
    assert (got[:3] == 0).all() and np.isnan(got[3])
    xf = np.linspace(-87, 88, 200_001, dtype=np.float32)
    outf = np.empty_like(xf)
    _lm.exp_map(xf, outf)
    want = np.exp(xf.astype(np.float64))
    assert (np.abs(outf - want) <= 2e-7 * want).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_in_place_gives_the_same_bits(dtype, rng):
    """In place (out is x) runs its own loop in the kernel: the same mask, chunk edges and odd
    tails included."""
    xs = rng.standard_normal((3, 37, 129)).astype(dtype)  # 14,319: chunks of 512 and a tail
    a, b = fastrnn.TimeDropout(0.3, seed=5), fastrnn.TimeDropout(0.3, seed=5)
    want = a.forward(xs)
    buf = xs.copy()
    np.testing.assert_array_equal(b.forward(buf, out=buf), want)
    g = xs.copy()
    np.testing.assert_array_equal(b.backward(g, out=g), a.backward(xs))
    g[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        b.backward(g, out=g)


def test_out_arrays_in_place_and_overlap(rng):
    xs = rng.standard_normal((2, 3, 4))
    a, b = fastrnn.TimeDropout(0.5, seed=1), fastrnn.TimeDropout(0.5, seed=1)
    want = a.forward(xs)
    buf = xs.copy()
    assert b.forward(buf, out=buf) is buf  # element-wise: in place is fine
    np.testing.assert_array_equal(buf, want)
    g = xs.copy()
    assert b.backward(g, out=g) is g
    np.testing.assert_array_equal(g, a.backward(xs))
    v = fastrnn.VariationalDropout(0.5, seed=1)
    ref_v = fastrnn.VariationalDropout(0.5, seed=1)
    buf = xs.copy()
    np.testing.assert_array_equal(v.forward(buf, out=buf), ref_v.forward(xs))
    base = rng.standard_normal(30)
    with pytest.raises(ValueError, match="overlaps"):  # shifted: not in place
        b.forward(base[:24].reshape(2, 3, 4), out=base[6:].reshape(2, 3, 4))
    W = rng.standard_normal((4, 4))
    aff = fastrnn.TimeAffine(W, np.zeros(4))
    x = xs.copy()
    with pytest.raises(ValueError, match="overlaps"):
        aff.forward(x, out=x)  # a product may not write its input
    aff.forward(x)
    d = rng.standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match="overlaps"):
        aff.backward(d, out=d)
    with pytest.raises(ValueError, match="out"):
        fastrnn.TimeEmbedding(W).forward(np.zeros((2, 3), int), out=np.empty((2, 3, 4), np.float32))


def test_affine_weight_and_bias_grads_share_one_product(rng):
    """dW and db are views of one [dW; db] buffer, filled by one product whose db row is
    accurate to float32 rounding of the column sums; grads entries replaced by the user still
    receive their gradients."""
    W, b, x, dout = affine_case(rng, np.float32, 20, 35, 16, 50, False)
    dout *= np.linspace(0.1, 10, 50, dtype=np.float32)  # columns of different scales
    layer = fastrnn.TimeAffine(W, b)
    layer.forward(x)
    layer.backward(dout)
    dW, db = layer.grads
    assert dW.base is db.base and db.ctypes.data == dW.ctypes.data + dW.nbytes
    d64 = dout.reshape(-1, 50).astype(np.float64)
    scale = np.abs(d64).sum(axis=0)
    assert (np.abs(db - d64.sum(axis=0)) <= 2e-6 * scale).all()
    x64 = x.reshape(-1, 16).astype(np.float64)
    assert (np.abs(dW - x64.T @ d64) <= 2e-6 * (np.abs(x64).T @ np.abs(d64))).all()
    want = [g.copy() for g in layer.grads]
    layer.grads[0] = np.full_like(dW, np.nan)
    layer.grads[1] = np.zeros(50, np.float32)[::-1]  # a reversed view: not C-contiguous
    layer.forward(x)
    layer.backward(dout)
    for g, w in zip(layer.grads, want):
        np.testing.assert_array_equal(g, w)
    layer.grads[1] = np.zeros(49, np.float32)
    with pytest.raises(ValueError, match=r"its gradient is \(49,\)"):
        layer.backward(dout)
