"""bfloat16 products (src/gemm/fr_bf16.h) and matmul_precision="medium" of the read-out.

The oracle: both operands rounded to bfloat16 in NumPy (round to nearest even, the CPU's
conversion), multiplied in float64; the kernel sums in float32, so it must agree to float32
rounding of those sums (relative to sum |a b|), far tighter than bfloat16's own 2**-9.  Tests
of the kernel skip on CPUs without AVX512-BF16; the layer's contract (errors, fallback, config)
is tested everywhere."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastrnn
from fastrnn import _lm
from fastrnn.layers import TimeAffine
from fastrnn.models import BetterRnnlm, LanguageModel, Rnnlm

needs_bf16 = pytest.mark.skipif(not fastrnn.bf16_supported(), reason="this CPU has no AVX512-BF16")


def to_bf16(x):
    """x rounded to bfloat16 (nearest, ties to even), as float64."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def operand(rng, rows, cols, transposed):
    """A (rows, cols) float32 operand, C-contiguous or a transposed (F-contiguous) view."""
    if transposed:
        return rng.standard_normal((cols, rows)).astype(np.float32).T
    return rng.standard_normal((rows, cols)).astype(np.float32)


def check_product(out, a, b):
    A, B = to_bf16(a), to_bf16(b)
    ref = A @ B
    scale = np.abs(A) @ np.abs(B) + 1e-30
    err = np.max(np.abs(out - ref) / scale)
    # float32 sums: about sqrt(K) float32 roundings, far below bfloat16's 2**-9 (2e-3)
    assert err < 1e-6, f"relative error {err:.2e} (float32 sums of bfloat16 products)"


@needs_bf16
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize(
    "M, K, N",
    [
        (1, 1, 1),
        (13, 3, 33),  # edges: a partial register block and panel, odd K
        (25, 257, 70),  # K one slice, odd
        (37, 19, 4100),  # N beyond one column block
        (401, 1000, 45),  # K in several slices, M beyond one row block
        (12, 704, 32),  # K at the one-slice limit, whole blocks
        (5, 705, 3),  # K just past it
    ],
)
def test_matmul_bf16_matches_rounded_operands(M, K, N, ta, tb):
    rng = np.random.default_rng(M * 1000 + K + N)
    a, b = operand(rng, M, K, ta), operand(rng, K, N, tb)
    out = np.full((M, N), np.nan, np.float32)
    assert _lm.matmul_bf16(a, b, out)
    check_product(out, a, b)


@needs_bf16
@settings(max_examples=25, deadline=None)
@given(
    M=st.integers(1, 60),
    K=st.integers(1, 800),
    N=st.integers(1, 90),
    ta=st.booleans(),
    tb=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_matmul_bf16_property(M, K, N, ta, tb, seed):
    rng = np.random.default_rng(seed)
    a, b = operand(rng, M, K, ta), operand(rng, K, N, tb)
    out = np.empty((M, N), np.float32)
    assert _lm.matmul_bf16(a, b, out)
    check_product(out, a, b)


@needs_bf16
def test_matmul_bf16_refuses_a_strided_out():
    """out must be C-contiguous: a view with a longer row stride is an error, nothing written."""
    rng = np.random.default_rng(0)
    a, b = operand(rng, 14, 40, False), operand(rng, 40, 35, False)
    big = np.full((14, 48), 7.0, np.float32)
    out = big[:, :35]
    with pytest.raises(ValueError, match="out not C-contiguous"):
        _lm.matmul_bf16(a, b, out)  # a strided view is refused, not half-written
    assert np.all(big == 7.0)


def test_matmul_bf16_bad_arguments():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        _lm.matmul_bf16(a, np.ones((5, 2), np.float32), np.empty((3, 2), np.float32))
    with pytest.raises(ValueError, match="b not a 2-D aligned float32"):
        _lm.matmul_bf16(a, np.ones((4, 2)), np.empty((3, 2), np.float32))


def make_affine(rng, D=24, M=70, tied=True):
    if tied:
        W = (0.3 * rng.standard_normal((M, D))).astype(np.float32).T  # the embedding's view
    else:
        W = (0.3 * rng.standard_normal((D, M))).astype(np.float32)
    return W, rng.standard_normal(M).astype(np.float32)


@needs_bf16
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_affine_medium_is_the_rounded_products(tied, threads):
    """Forward, dx, dW and db of TimeAffine(matmul_precision="medium") against the oracle's
    products of bfloat16-rounded operands (the bias added in float32), at 1 and 2 threads."""
    rng = np.random.default_rng(1)
    W, b = make_affine(rng, tied=tied)
    layer = TimeAffine(W, b, matmul_precision="medium")
    layer.threads = threads
    x = rng.standard_normal((3, 5, W.shape[0])).astype(np.float32)
    dout = rng.standard_normal((3, 5, W.shape[1])).astype(np.float32)
    out = layer.forward(x)
    dx = layer.backward(dout)
    x2, d2 = x.reshape(15, -1), dout.reshape(15, -1)
    check_product(out.reshape(15, -1) - b, x2, W)
    check_product(dx.reshape(15, -1), d2, W.T)
    check_product(layer.grads[0], x2.T, d2)
    # db: the column of ones times dout, rounded like every other entry of dW
    assert np.allclose(layer.grads[1], to_bf16(d2).sum(0), rtol=1e-6, atol=1e-6)


@needs_bf16
def test_affine_medium_close_to_highest():
    """bfloat16 operands: within bfloat16's relative precision of the float32 products, and not
    equal to them (the kernel really ran)."""
    rng = np.random.default_rng(2)
    W, b = make_affine(rng, D=64, M=300)
    x = rng.standard_normal((4, 6, 64)).astype(np.float32)
    dout = rng.standard_normal((4, 6, 300)).astype(np.float32)
    ref, med = TimeAffine(W, b), TimeAffine(W, b, "medium")
    y0, y1 = ref.forward(x), med.forward(x)
    d0, d1 = ref.backward(dout), med.backward(dout)
    for a, c in ((y0, y1), (d0, d1), (ref.grads[0], med.grads[0])):
        assert np.max(np.abs(a - c)) <= 2**-7 * np.max(np.abs(a))
        assert not np.array_equal(a, c)


def test_affine_precision_argument_errors():
    rng = np.random.default_rng(3)
    W, b = make_affine(rng)
    with pytest.raises(ValueError, match="matmul_precision must be one of 'highest', 'medium'"):
        TimeAffine(W, b, matmul_precision="high")
    with pytest.raises(ValueError, match="needs float32 parameters"):
        TimeAffine(W.astype(np.float64), b.astype(np.float64), matmul_precision="medium")
    layer = TimeAffine(W, b)
    with pytest.raises(ValueError, match="matmul_precision must be one of"):
        layer.matmul_precision = "bf16"
    assert layer.matmul_precision == "highest"  # a refused value changes nothing


def test_affine_medium_config_and_fallback():
    """The layer's config round-trips through JSON; on a CPU without AVX512-BF16, "medium"
    runs the float32 products (the same bits as "highest")."""
    rng = np.random.default_rng(4)
    W, b = make_affine(rng)
    layer = TimeAffine(W, b, "medium")
    cfg = layer.get_config()
    assert json.loads(json.dumps(cfg)) == {"matmul_precision": "medium"}
    again = TimeAffine.from_config(cfg, [W, b])
    assert again.matmul_precision == "medium"
    x = rng.standard_normal((2, 3, W.shape[0])).astype(np.float32)
    if not fastrnn.bf16_supported():
        assert np.array_equal(layer.forward(x), TimeAffine(W, b).forward(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda mp: LanguageModel(50, 8, [8, 8], tie_weights=True, seed=0, matmul_precision=mp),
        lambda mp: Rnnlm(50, 8, 8, seed=0, matmul_precision=mp),
        lambda mp: BetterRnnlm(50, 8, 8, seed=0, matmul_precision=mp),
    ],
)
def test_models_carry_the_precision(make, tmp_path):
    model = make("medium")
    assert model.affine.matmul_precision == "medium"
    path = str(tmp_path / "m.npz")
    fastrnn.save(path, model)
    back = fastrnn.load(path)
    assert back.affine.matmul_precision == "medium"
    assert make("highest").affine.matmul_precision == "highest"
    with pytest.raises(ValueError, match="needs float32 dtype"):
        LanguageModel(50, 8, [8], dtype=np.float64, matmul_precision="medium")


@needs_bf16
def test_language_model_trains_with_bf16_readout():
    """A small LM on a repetitive stream: the loss falls as far with bfloat16 read-out products
    as with float32 ones (the same seed, data and steps)."""
    from fastrnn.train import SGD

    rng = np.random.default_rng(5)
    stream = np.tile(rng.integers(0, 40, 23), 60)
    losses = {}
    for mp in ("highest", "medium"):
        model = LanguageModel(40, 16, [32], seed=1, matmul_precision=mp)
        opt = SGD(1.0)
        for step in range(150):
            i = (step * 10) % (len(stream) - 4 * 10 - 1)
            xs = np.stack([stream[i + 10 * k : i + 10 * k + 10] for k in range(4)])
            ts = np.stack([stream[i + 10 * k + 1 : i + 10 * k + 11] for k in range(4)])
            loss = model.forward(xs, ts)
            model.backward()
            fastrnn.clip_grads(model.grads, 5.0)
            opt.update(model.params, model.grads)
        losses[mp] = loss
    start = np.log(40)  # the loss of a uniform guess
    assert losses["highest"] < 0.8 * start, losses
    assert losses["medium"] < 0.8 * start, losses
    assert abs(losses["medium"] - losses["highest"]) < 0.05, losses


# ---- the recurrent layers' whole-sequence products ----------------------------------------------

RECURRENT = {
    "rnn": (fastrnn.TimeRNN, 1, {}),
    "lstm": (fastrnn.TimeLSTM, 4, {}),
    "gru": (fastrnn.TimeGRU, 3, {}),
    "gru_ra": (fastrnn.TimeGRU, 3, {"reset_after": True}),
}


def recurrent_case(kind, rng, N=6, T=7, D=20, H=24):
    cls, G, kw = RECURRENT[kind]
    Wx = (0.3 * rng.standard_normal((D, G * H))).astype(np.float32)
    Wh = (0.3 * rng.standard_normal((H, G * H))).astype(np.float32)
    shape = (2, G * H) if kw.get("reset_after") else (G * H,)
    b = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    dhs = rng.standard_normal((N, T, H)).astype(np.float32)
    return cls, kw, Wx, Wh, b, xs, dhs


@pytest.fixture
def bf16_reference(monkeypatch):
    """fastrnn.reference with every product's operands rounded to bfloat16 (its np.dot; the
    sums in float64): the cells' arithmetic at matmul_precision "medium"."""
    from fastrnn.reference import recurrent as ref

    class RoundedDot:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def dot(a, b):
            return to_bf16(a) @ to_bf16(b)

    monkeypatch.setattr(ref, "np", RoundedDot())
    return ref


def teacher_forced(ref, kind, layer, hs_layer, xs, Wx, Wh, b, kw, h_mask=None):
    """Each step of the reference cell (bfloat16 products) from the layer's own state before it:
    hs_layer[:, t - 1] (and the LSTM's c from its cache), so that every step is checked on its
    own."""
    N, T, _ = xs.shape
    H = Wh.shape[0]
    hs = np.zeros((N, T, H))
    h_prev, c_prev = np.zeros((N, H)), np.zeros((N, H))
    for t in range(T):
        if kind == "lstm":
            cell = ref.LSTM(*(w.astype(np.float64) for w in (Wx, Wh, b)))
            hs[:, t], _ = cell.forward(xs[:, t].astype(np.float64), h_prev, c_prev, h_mask)
            c_prev = layer._cache["C"][:, t].astype(np.float64)
        elif kind == "rnn":
            cell = ref.RNN(*(w.astype(np.float64) for w in (Wx, Wh, b)))
            hs[:, t] = cell.forward(xs[:, t].astype(np.float64), h_prev, h_mask)
        else:
            cell = ref.GRU(*(w.astype(np.float64) for w in (Wx, Wh, b)), **kw)
            hs[:, t] = cell.forward(xs[:, t].astype(np.float64), h_prev, h_mask)
        h_prev = hs_layer[:, t].astype(np.float64)
    return hs


# (kind, how the time loop is shared, threads): by hidden units is the LSTM's only
SPLITS = [(k, "rows", n) for k in RECURRENT for n in (1, 2)] + [
    ("lstm", "units", n) for n in (2, 8)
]
# (batch rows N, recurrent dropout's mask?, hidden units H) for each: a thread's rows in
# register blocks of 12, 8 and 4 (N 3 on one thread only: on two, each thread's 9-18 rows of the
# input projection go to the direct kernel, float32, not to the bfloat16 product); an odd H (a
# zero-padded last k-pair, partial panels, uneven shares of units); 8 shares of 129 units (the
# last share's panel padded most)
STEP_CASES = [
    (*split, N, masked, H)
    for split in SPLITS
    for N, masked, H in [
        (24, False, 48),
        (24, True, 48),
        (7, False, 48),
        (3, False, 48),
        (24, False, 37),
        (24, False, 129),
    ]
    if (N > 3 or split[2] == 1) and (H == 129) == (split[2] == 8)
]


@needs_bf16
@pytest.mark.parametrize("kind, how, threads, N, masked, H", STEP_CASES)
def test_recurrent_medium_forward_rounds_every_product(
    bf16_reference, kind, how, threads, N, masked, H
):
    """matmul_precision="medium" rounds the operands of every product, the input projection's
    and each step's h_{t-1} Wh (from Wh packed once per call in bfloat16): every step of hs
    equals the float64 reference cell with bfloat16-rounded operands, run from the layer's own
    state before it, to float32 rounding -- by batch rows on 1 and 2 threads, by hidden units
    (the LSTM's 2-thread path), with recurrent dropout's mask (0 or 2, exact), and for
    register blocks of 12, 8 and 4 rows, H even and odd.  The classic
    GRU rounds r * h_{t-1}, which the reference forms in float64: a value within float32
    rounding of a bfloat16 tie may round the other way there, so a few entries may differ by
    one bfloat16 step of that product."""
    from fastrnn import _recurrent

    rng = np.random.default_rng(7)
    cls, kw, Wx, Wh, b, xs, _ = recurrent_case(kind, rng, N=N, T=9, D=40, H=H)
    h_mask = (2.0 * (rng.random((N, H)) < 0.5)).astype(np.float32) if masked else None
    layer = cls(Wx, Wh, b, matmul_precision="medium", **kw)
    layer.threads = threads
    old = _recurrent._set_unit_split(1 if how == "units" else 0)
    try:
        hs = layer.forward(xs, h_mask=h_mask)
    finally:
        _recurrent._set_unit_split(old)
    want = teacher_forced(
        bf16_reference, kind, layer, hs, to_bf16(xs).reshape(xs.shape), Wx, Wh, b, kw, h_mask
    )
    err = np.abs(hs - want)
    if kind == "gru":
        assert np.mean(err > 2e-5) < 2e-3 and err.max() < 2e-2, (np.mean(err > 2e-5), err.max())
    else:
        assert err.max() < 2e-5, err.max()
    assert np.abs(hs - cls(Wx, Wh, b, **kw).forward(xs, h_mask=h_mask)).max() > 1e-4  # it ran


@needs_bf16
@pytest.mark.parametrize(
    "kind, how, threads, N, H",
    [(*c[:4], c[5]) for c in STEP_CASES if c[0] in ("rnn", "lstm") and not c[4]],
)
def test_recurrent_medium_backward_step_product_is_rounded(kind, how, threads, N, H):
    """Backward's per-step product at "medium": the gradient leaving the first step, dh0 =
    bf16(dG_0) bf16(Wh)^T for the kernel's own gate gradients dG (its scratch), to float32
    rounding of the sums (by rows on 1 and 2 threads, and by units)."""
    from fastrnn import _recurrent

    rng = np.random.default_rng(11)
    cls, kw, Wx, Wh, b, xs, dhs = recurrent_case(kind, rng, N=N, T=9, D=40, H=H)
    layer = cls(Wx, Wh, b, matmul_precision="medium", **kw)
    layer.threads = threads
    old = _recurrent._set_unit_split(1 if how == "units" else 0)
    try:
        layer.forward(xs)
        layer.backward(dhs)
    finally:
        _recurrent._set_unit_split(old)
    check_product(layer.dh, layer._scratch["dG"][:, 0], Wh.T)


@needs_bf16
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_recurrent_medium_backward_products_are_rounded(kind):
    """Backward at "medium": dxs = bf16(dG) bf16(Wx)^T and dWx = bf16(X)^T bf16(dG) for the
    kernel's own gate gradients dG (its scratch) and inputs (its cache), to float32 rounding
    of the sums; dWh stays the float32 product except where it shares dG's product with dWx
    (then bf16(Hprev)^T bf16(dG))."""
    rng = np.random.default_rng(8)
    cls, kw, Wx, Wh, b, xs, dhs = recurrent_case(kind, rng, N=24, T=9, D=40, H=48)
    layer = cls(Wx, Wh, b, matmul_precision="medium", **kw)
    layer.threads = 1
    layer.forward(xs)
    dxs = layer.backward(dhs)
    N, T, D = xs.shape
    G = layer._scratch["dG"].reshape(N * T, -1)
    X = layer._cache["XH"].reshape(N * T, -1)[:, :D]
    check_product(dxs.reshape(N * T, D), G, Wx.T)
    check_product(layer.grads[0], X.T, G)  # (every cell's dWx reads dG, the GRU's too)


@needs_bf16
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_recurrent_medium_close_to_highest_with_lengths_and_reverse(kind):
    """With lengths and in reverse (the packed layout: whole-sequence products over the
    sum(lengths) cache rows), "medium" is within bfloat16's error of "highest"."""
    rng = np.random.default_rng(9)
    cls, kw, Wx, Wh, b, xs, dhs = recurrent_case(kind, rng, N=24, T=12)
    lengths = rng.integers(1, 13, 24)
    outs = {}
    for mp in ("highest", "medium"):
        layer = cls(Wx, Wh, b, reverse=True, matmul_precision=mp, **kw)
        hs = layer.forward(xs, lengths)
        dxs = layer.backward(dhs)
        outs[mp] = [hs, dxs, *[g.copy() for g in layer.grads]]
    for a, c in zip(outs["highest"], outs["medium"]):
        assert np.max(np.abs(a - c)) <= 2**-5 * np.max(np.abs(a)) + 1e-6
    assert not np.array_equal(outs["highest"][0], outs["medium"][0])


def test_recurrent_precision_errors_and_config():
    rng = np.random.default_rng(10)
    cls, kw, Wx, Wh, b, xs, _ = recurrent_case("lstm", rng)
    with pytest.raises(ValueError, match="needs float32"):
        cls(
            Wx.astype(np.float64),
            Wh.astype(np.float64),
            b.astype(np.float64),
            matmul_precision="medium",
        )
    with pytest.raises(ValueError, match="matmul_precision must be one of"):
        cls(Wx, Wh, b, matmul_precision="low")
    layer = cls(Wx, Wh, b, matmul_precision="medium")
    assert layer.get_config()["matmul_precision"] == "medium"
    assert "matmul_precision" not in cls(Wx, Wh, b).get_config()  # older configs read the same
    back = cls.from_config(json.loads(json.dumps(layer.get_config())), [Wx, Wh, b])
    assert back.matmul_precision == "medium"


def test_language_model_recurrent_layers_share_the_precision():
    m = LanguageModel(50, 8, [8, 8], seed=0, matmul_precision="medium")
    assert all(layer.matmul_precision == "medium" for layer in m.stack.layers)
    assert m.affine.matmul_precision == "medium"
    m.matmul_precision = "highest"  # set on the model: every layer follows
    assert all(layer.matmul_precision == "highest" for layer in [*m.stack.layers, m.affine])
    assert m.get_config()["matmul_precision"] == "highest"
    with pytest.raises(ValueError, match="matmul_precision must be one of"):
        m.matmul_precision = "bf16"
    assert m.matmul_precision == "highest"


@needs_bf16
def test_bidirectional_directions_concurrently_at_medium():
    """Both directions at "medium" on two Python threads at once (each thread its own packing
    buffers): the same bits as one after the other."""
    rng = np.random.default_rng(11)
    bi = fastrnn.Bidirectional.create("lstm", 48, 64, rng=rng, dtype=np.float32)
    for layer in (bi.forward_layer, bi.backward_layer):
        layer.matmul_precision = "medium"
    xs = rng.standard_normal((32, 20, 48)).astype(np.float32)
    lengths = rng.integers(5, 21, 32)
    R = rng.standard_normal((32, 20, 128)).astype(np.float32)
    results = []
    for threads in (1, 2):
        bi.threads = threads
        hs = bi.forward(xs, lengths)
        dxs = bi.backward(R)
        results.append([hs, dxs, *[g.copy() for g in bi.grads]])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    hs32 = fastrnn.Bidirectional(
        fastrnn.TimeLSTM(*bi.forward_layer.params),
        fastrnn.TimeLSTM(*bi.backward_layer.params, reverse=True),
    ).forward(xs, lengths)
    assert 0 < np.abs(hs32 - results[0][0]).max() < 2**-5  # bfloat16 ran, and close


def test_highest_precision_reaches_every_layer_and_gives_them_back():
    """The float32 comparison of an export (fastrnn.layers._precision.highest_precision):
    every layer of a model, a stack or a classifier's bidirectional encoder at "highest" inside
    the block, each as it was after, an exception included."""
    from fastrnn.layers._precision import highest_precision, precision_layers
    from fastrnn.models import SequenceClassifier

    lm = LanguageModel(50, 8, [8, 8], seed=0, matmul_precision="medium")
    clf = SequenceClassifier(3, vocab_size=20, embed_size=8, hidden_sizes=[8, 8])
    layers = clf.encoder.layers
    for d in (layers[0].forward_layer, layers[1].backward_layer):
        d.matmul_precision = "medium"
    for model, count in ((lm, 3), (clf, 4)):
        found = list(precision_layers(model))
        assert len(found) == count
        before = [layer.matmul_precision for layer in found]
        with pytest.raises(RuntimeError, match="inside"):
            with highest_precision(model):
                assert all(layer.matmul_precision == "highest" for layer in found)
                raise RuntimeError("inside")
        assert [layer.matmul_precision for layer in found] == before


@needs_bf16
def test_bfloat16_buffers_freed_when_a_thread_ends():
    """The bfloat16 products' per-thread buffers (packed operands, a call's packed weights) go
    when their thread ends: a layer called from 60 short-lived threads, each filling about
    4 MB of them, leaves the process's resident memory near where it was."""
    import threading

    rng = np.random.default_rng(12)
    cls, kw, Wx, Wh, b, xs, dhs = recurrent_case("lstm", rng, N=8, T=4, D=512, H=512)
    layer = cls(Wx, Wh, b, matmul_precision="medium")
    layer.threads = 1

    def call():
        layer.forward(xs)
        layer.backward(dhs)

    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024

    call()
    before = rss()
    for _ in range(60):
        t = threading.Thread(target=call)
        t.start()
        t.join()
    assert rss() - before < 64 << 20, (rss() - before) >> 20


def test_command_lines_say_what_medium_runs(monkeypatch):
    """The note `fastrnn lm train` and `fastrnn classify train` print beside their settings:
    nothing for "highest"; for "medium", bfloat16 products, or where the CPU lacks
    AVX512-BF16, that the products stay float32."""
    from fastrnn.layers._precision import precision_note

    assert precision_note("highest") == ""
    monkeypatch.setattr(_lm, "bf16_supported", lambda: True)
    assert "products at bfloat16 precision" in precision_note("medium")
    monkeypatch.setattr(_lm, "bf16_supported", lambda: False)
    assert "no AVX512-BF16, the products stay float32" in precision_note("medium")
