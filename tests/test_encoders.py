"""Bidirectional layers, deep Stacks (residual, dense, highway connections) over variable
lengths, and the pooling heads: each against its definition, finite differences in float64 (on
both fastrnn's layers and the NumPy reference ones), PyTorch's packed bidirectional
nn.LSTM/GRU/RNN, bad input, and save/load."""

import inspect
import json

import numpy as np
import pytest
from conftest import max_grad_error

import fastrnn
from fastrnn import reference as ref
from fastrnn.layers import Bidirectional, LastPool, MaxPool, MeanPool, Stack, recurrent as fast
from fastrnn.layers.pooling import make_pooling

FAST = {"rnn": fast.TimeRNN, "lstm": fast.TimeLSTM, "gru": fast.TimeGRU}
REF = {"rnn": ref.TimeRNN, "lstm": ref.TimeLSTM, "gru": ref.TimeGRU}
fast_has_lengths = "reverse" in inspect.signature(fast.TimeLSTM.__init__).parameters
MODULES = [
    pytest.param(REF, id="reference"),
    pytest.param(
        FAST,
        id="fastrnn",
        marks=pytest.mark.skipif(
            not fast_has_lengths, reason="fastrnn's layers take no lengths/reverse"
        ),
    ),
]
LENGTHS = np.array([5, 1, 3, 4])  # N = 4 rows, T = 5


# ---- Bidirectional ------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", MODULES)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_is_its_two_directions(classes, cell, merge, rng):
    kw = {"reset_after": True} if cell == "gru" else {}
    bi = Bidirectional.create(
        cell, 3, 4, merge=merge, rng=rng, dtype=np.float64, classes=classes, **kw
    )
    xs = rng.standard_normal((4, 5, 3))
    hs = bi.forward(xs, LENGTHS)
    assert hs.shape == (4, 5, 8 if merge == "concat" else 4)
    for n, L in enumerate(LENGTHS):
        # row n alone, cut to its length: the forward layer reads it left to right, the
        # backward one is the forward recurrence on the reversed row, reversed back
        row = xs[n : n + 1, :L]
        fwd = classes[cell](*bi.forward_layer.params, **kw).forward(row)[0]
        rev = classes[cell](*bi.backward_layer.params, **kw).forward(row[:, ::-1])[0][::-1]
        want = np.concatenate([fwd, rev], 1) if merge == "concat" else fwd + rev
        np.testing.assert_allclose(hs[n, :L], want, rtol=1e-12, atol=1e-12)
        assert not hs[n, L:].any()
    dxs = bi.backward(np.ones_like(hs))
    for n, L in enumerate(LENGTHS):
        assert not dxs[n, L:].any()


@pytest.mark.parametrize("classes", MODULES)
@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_gradients(classes, merge, rng):
    bi = Bidirectional.create("lstm", 3, 3, merge=merge, rng=rng, dtype=np.float64, classes=classes)
    xs = rng.standard_normal((4, 5, 3))
    R = rng.standard_normal((4, 5, bi.output_size))

    def f():
        return float(np.sum(bi.forward(xs, LENGTHS) * R))

    f()
    dxs = bi.backward(R)
    assert max_grad_error(f, [xs] + bi.params, [dxs] + bi.grads) < 1e-7


def test_bidirectional_threads_agree(rng):
    if not fast_has_lengths:
        pytest.skip("fastrnn's layers take no lengths/reverse")
    bi = Bidirectional.create("gru", 6, 8, rng=rng, dtype=np.float64, reset_after=True)
    xs = rng.standard_normal((5, 7, 6))
    lengths = np.array([7, 3, 1, 6, 2])
    R = rng.standard_normal((5, 7, 16))
    results = []
    for threads in (1, 2):
        bi.threads = threads
        hs = bi.forward(xs, lengths)
        dxs = bi.backward(R)
        results.append((hs, dxs, [g.copy() for g in bi.grads]))
    (h1, d1, g1), (h2, d2, g2) = results
    np.testing.assert_allclose(h1, h2, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(d1, d2, rtol=1e-13, atol=1e-13)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert bi.forward_layer.threads is None  # the layers' own settings are given back
    with pytest.raises(ValueError, match="threads"):
        bi.threads = 0


def test_bidirectional_bad_input(rng):
    def layer(reverse, D=3, H=4, dtype=np.float64, cls=FAST["lstm"]):
        params = [rng.standard_normal(s).astype(dtype) for s in ((D, 4 * H), (H, 4 * H), (4 * H,))]
        if not fast_has_lengths:
            cls = REF["lstm"]
        return cls(*params, reverse=reverse)

    with pytest.raises(ValueError, match="merge must be one of"):
        Bidirectional(layer(False), layer(True), merge="mean")
    with pytest.raises(ValueError, match="reverse=True"):
        Bidirectional(layer(False), layer(False))
    with pytest.raises(ValueError, match="forward_layer must read left to right"):
        Bidirectional(layer(True), layer(True))
    with pytest.raises(ValueError, match="same input size"):
        Bidirectional(layer(False), layer(True, D=2))
    with pytest.raises(ValueError, match="equal hidden sizes"):
        Bidirectional(layer(False), layer(True, H=5), merge="sum")
    with pytest.raises(TypeError, match="same dtype"):
        Bidirectional(layer(False), layer(True, dtype=np.float32))
    with pytest.raises(TypeError, match="backward_layer must be a recurrent time layer"):
        Bidirectional(layer(False), object())
    bi = Bidirectional(layer(False), layer(True, H=2))
    assert bi.output_size == 6
    with pytest.raises(RuntimeError, match="before forward"):
        bi.backward(np.zeros((2, 3, 6)))
    xs = rng.standard_normal((2, 3, 3))
    for bad, err, match in [
        (np.array([0, 2]), ValueError, "between 1 and T=3"),
        (np.array([4, 2]), ValueError, "between 1 and T=3"),
        (np.array([1.0, 2.0]), TypeError, "integer"),
        (np.array([1, 2, 3]), ValueError, r"shape \(2,\)"),
    ]:
        with pytest.raises(err, match=match):
            bi.forward(xs, bad)
    with pytest.raises(ValueError, match=r"xs must have shape \(N, T, 3\)"):
        bi.forward(xs[:, :, :2])
    bi.forward(xs, np.array([3, 1]))
    with pytest.raises(ValueError, match="dhs must have shape"):
        bi.backward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="cannot be stateful"):
        bi.stateful = True
    with pytest.raises(ValueError, match="cell must be one of"):
        Bidirectional.create("transformer", 3, 4)


# ---- Stack --------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", MODULES)
@pytest.mark.parametrize("connection", [None, "residual", "dense", "highway"])
@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_stack_gradients(classes, connection, merge, rng):
    stack = Stack.create(
        "gru",
        3,
        [2, 2, 2],
        bidirectional=True,
        merge=merge,
        connection=connection,
        rng=rng,
        dtype=np.float64,
        classes=classes,
        layer_kwargs={"reset_after": True},
        seed=3,
    )
    xs = rng.standard_normal((4, 5, 3))
    R = rng.standard_normal((4, 5, stack.output_size))

    def f():
        return float(np.sum(stack.forward(xs, LENGTHS) * R))

    f()
    dxs = stack.backward(R)
    assert len(stack.params) == 18 + (4 if connection == "highway" else 0)
    assert max_grad_error(f, [xs] + stack.params, [dxs] + stack.grads) < 1e-7
    hs = stack.forward(xs, LENGTHS)
    for n, L in enumerate(LENGTHS):
        assert not hs[n, L:].any()  # nothing leaks into the padding
        assert not dxs[n, L:].any()


@pytest.mark.parametrize("classes", MODULES)
def test_stack_mixed_layers_with_dropout_gradients(classes, rng):
    """Unidirectional and bidirectional layers of different cells in one stack, with dropout
    and recurrent dropout (fixed masks between forwards: the same seed) and highway gates."""
    bi = Bidirectional.create("lstm", 3, 2, rng=rng, dtype=np.float64, classes=classes)
    uni = classes["rnn"](
        *(rng.standard_normal(s) for s in ((4, 4), (4, 4), (4,))),
    )
    bi2 = Bidirectional.create("gru", 4, 2, rng=rng, dtype=np.float64, classes=classes)
    layers = [bi, uni, bi2]
    xs = rng.standard_normal((4, 5, 3))
    R = rng.standard_normal((4, 5, 4))

    def make():
        return Stack(
            layers,
            connection="highway",
            dropout=0.3,
            recurrent_dropout=0.3,
            seed=5,
            highway_params=hw,
        )

    hw = None
    stack = make()
    hw = stack.highway

    def f():
        return float(np.sum(make().forward(xs, LENGTHS) * R))

    stack = make()
    stack.forward(xs, LENGTHS)
    dxs = stack.backward(R)
    assert max_grad_error(f, [xs] + stack.params, [dxs] + stack.grads) < 1e-7


def test_highway_is_its_definition(rng):
    classes = FAST if fast_has_lengths else REF
    stack = Stack.create(
        "lstm", 4, [4, 4], connection="highway", rng=rng, dtype=np.float64, classes=classes
    )
    Wt, bt = stack.highway
    assert np.all(bt == -1.0) and Wt.shape == (4, 4)
    xs = rng.standard_normal((2, 3, 4))
    hs = stack.forward(xs)
    h1 = classes["lstm"](*stack.layers[0].params).forward(xs)
    inner = classes["lstm"](*stack.layers[1].params).forward(h1)
    g = 1 / (1 + np.exp(-(h1 @ Wt + bt)))
    np.testing.assert_allclose(hs, g * inner + (1 - g) * h1, rtol=1e-12, atol=1e-12)


def test_stack_without_lengths_is_unchanged(rng):
    """lengths=None and lengths = T everywhere give the same outputs and gradients."""
    if not fast_has_lengths:
        pytest.skip("fastrnn's layers take no lengths/reverse")
    stack = Stack.create("lstm", 3, [4, 4], bidirectional=True, rng=rng, dtype=np.float64)
    xs = rng.standard_normal((3, 5, 3))
    R = rng.standard_normal((3, 5, 8))
    a = stack.forward(xs)
    da = stack.backward(R)
    b = stack.forward(xs, np.full(3, 5))
    db = stack.backward(R)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(da, db, rtol=1e-13, atol=1e-14)


def test_stack_bad_input(rng):
    classes = FAST if fast_has_lengths else REF
    with pytest.raises(ValueError, match="connection must be one of"):
        Stack.create("lstm", 3, [4, 4], connection="skip", rng=rng, classes=classes)
    with pytest.raises(ValueError, match="highway connections need equal"):
        Stack.create("lstm", 3, [4, 5], connection="highway", rng=rng, classes=classes)
    with pytest.raises(ValueError, match="cell must be one of"):
        Stack.create("cnn", 3, [4], rng=rng)
    s = Stack.create("lstm", 3, [4, 4], bidirectional=True, rng=rng, classes=classes)
    with pytest.raises(ValueError, match="cannot be stateful"):
        s.stateful = True
    with pytest.raises(ValueError, match="between 1 and T=5"):
        s.forward(np.zeros((2, 5, 3)), np.array([6, 1]))
    with pytest.raises(
        ValueError, match=r"layers\[1\] takes inputs of size 4, but .* output size is 8"
    ):
        Stack(
            [
                Bidirectional.create("lstm", 3, 4, rng=rng, classes=classes),
                classes["lstm"](*(np.zeros(s, np.float32) for s in ((4, 16), (4, 16), (16,)))),
            ]
        )
    with pytest.raises(ValueError, match="highway_params must hold 2 arrays"):
        Stack.create(
            "lstm", 3, [4, 4], connection="highway", highway_params=[], rng=rng, classes=classes
        )
    with pytest.raises(ValueError, match="only for"):
        Stack.create("lstm", 3, [4, 4], highway_params=[np.zeros((4, 4))], rng=rng)
    old = Stack.create("lstm", 3, [4], rng=rng)  # old layers without lengths are still fine
    old.forward(np.zeros((2, 5, 3)))


# ---- pooling ------------------------------------------------------------------------------------


def test_pooling_values(rng):
    hs = rng.standard_normal((4, 5, 6))
    last = LastPool().forward(hs, LENGTHS)
    np.testing.assert_array_equal(last, hs[np.arange(4), LENGTHS - 1])
    split = LastPool(split=2).forward(hs, LENGTHS)
    np.testing.assert_array_equal(split[:, :2], hs[np.arange(4), LENGTHS - 1, :2])
    np.testing.assert_array_equal(split[:, 2:], hs[:, 0, 2:])
    mean = MeanPool().forward(hs, LENGTHS)
    mx = MaxPool().forward(hs, LENGTHS)
    for n, L in enumerate(LENGTHS):
        np.testing.assert_allclose(mean[n], hs[n, :L].mean(0), rtol=1e-14)
        np.testing.assert_array_equal(mx[n], hs[n, :L].max(0))
    np.testing.assert_array_equal(MaxPool().forward(hs), hs.max(1))


@pytest.mark.parametrize(
    "name, split", [("last", None), ("last", 2), ("mean", None), ("max", None)]
)
def test_pooling_gradients(name, split, rng):
    pool = make_pooling(name, split)
    hs = rng.standard_normal((4, 5, 6))
    R = rng.standard_normal((4, 6))

    def f():
        return float(np.sum(pool.forward(hs, LENGTHS) * R))

    f()
    dhs = pool.backward(R)
    assert max_grad_error(f, [hs], [dhs]) < 1e-8
    for n, L in enumerate(LENGTHS):
        assert not dhs[n, L:].any()


def test_last_pool_reads_each_directions_final_state(rng):
    """LastPool(split=H) on a bidirectional output is each direction's final state (h)."""
    classes = FAST if fast_has_lengths else REF
    bi = Bidirectional.create("lstm", 3, 4, rng=rng, dtype=np.float64, classes=classes)
    hs = bi.forward(rng.standard_normal((4, 5, 3)), LENGTHS)
    pooled = LastPool(split=4).forward(hs, LENGTHS)
    hf, hb = bi.h
    np.testing.assert_array_equal(pooled, np.concatenate([hf, hb], 1))


def test_pooling_bad_input(rng):
    with pytest.raises(ValueError, match="pooling must be one of"):
        make_pooling("median")
    with pytest.raises(ValueError, match="split"):
        LastPool(split=0)
    with pytest.raises(ValueError, match="between 1 and T=5"):
        MeanPool().forward(np.zeros((2, 5, 3)), np.array([0, 5]))
    with pytest.raises(ValueError, match="less than the feature size"):
        LastPool(split=3).forward(np.zeros((2, 5, 3)))
    with pytest.raises(RuntimeError, match="before forward"):
        MaxPool().backward(np.zeros((2, 3)))


# ---- persistence ------------------------------------------------------------------------------


needs_fast = pytest.mark.skipif(not fast_has_lengths, reason="fastrnn's layers take no reverse")


@needs_fast
def test_save_load_bidirectional_and_stack(rng, tmp_path):
    bi = Bidirectional.create("gru", 3, 4, merge="sum", rng=rng, reset_after=True)
    stack = Stack(
        [
            Bidirectional.create("lstm", 3, 4, rng=rng),
            fastrnn.TimeRNN(
                *(rng.standard_normal(s).astype(np.float32) for s in ((8, 8),) * 2 + ((8,),)),
                nonlinearity="relu",
            ),
            Bidirectional.create("lstm", 8, 4, rng=rng),
        ],
        connection="highway",
        dropout=0.2,
        seed=1,
    )
    xs = rng.standard_normal((3, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    for obj in (bi, stack):
        json.dumps(obj.get_config())
        fastrnn.save(tmp_path / "m.npz", obj)
        back = fastrnn.load(tmp_path / "m.npz")
        assert type(back) is type(obj)
        for a, b in zip(obj.params, back.params):
            np.testing.assert_array_equal(a, b)
        if isinstance(obj, Stack):
            obj.train_flg = back.train_flg = False
            assert back.connection == "highway" and back.layers[1].nonlinearity == "relu"
        np.testing.assert_array_equal(obj.forward(xs, lengths), back.forward(xs, lengths))
    with pytest.raises(ValueError, match="shape"):
        Stack.from_config(stack.get_config(), [p.T for p in stack.params])
    with pytest.raises(ValueError, match="params must hold"):
        Stack.from_config(stack.get_config(), stack.params[:-1])


# ---- PyTorch parity -----------------------------------------------------------------------------


@needs_fast
@pytest.mark.parametrize("module", ["LSTM", "GRU", "RNN"])
def test_parity_with_torch_packed_bidirectional(module, rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from fastrnn.interop import from_torch, to_torch

    torch.manual_seed(0)
    N, T, D, H = 4, 6, 3, 5
    m = getattr(torch.nn, module)(
        D, H, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64
    )
    ours = from_torch(m)
    assert isinstance(ours, Stack) and all(isinstance(x, Bidirectional) for x in ours.layers)
    lengths = np.array([6, 2, 5, 1])
    x = torch.tensor(rng.standard_normal((N, T, D)), requires_grad=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, _ = m(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    R = torch.tensor(rng.standard_normal((N, T, 2 * H)))
    (out * R).sum().backward()
    hs = ours.forward(x.detach().numpy(), lengths)
    dxs = ours.backward(R.numpy())
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs, x.grad.numpy(), rtol=1e-12, atol=1e-12)
    # every gradient: fastrnn's grads mapped back to PyTorch's layout through to_torch
    grads = to_torch(
        Stack.from_config(ours.get_config(), [g.copy() for g in ours.grads])
    ).state_dict()
    for name, p in m.named_parameters():
        want = p.grad.numpy()
        got = grads[name].numpy()
        if name.startswith("bias_hh") and module != "GRU":
            got = grads[name.replace("bias_hh", "bias_ih")].numpy()  # one summed bias
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12, err_msg=name)
    # fastrnn -> torch -> fastrnn is exact
    again = from_torch(to_torch(ours))
    for a, b in zip(ours.params, again.params):
        np.testing.assert_array_equal(a, b)


@needs_fast
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_float32_follows_float64(cell, rng):
    """The parameters' dtype is the compute dtype: a float32 stack of bidirectional layers
    agrees with its float64 copy to float32 rounding, in outputs and gradients."""
    kw = {"reset_after": True} if cell == "gru" else {}
    s64 = Stack.create(
        cell, 3, [4, 4], bidirectional=True, connection="residual", rng=rng,
        dtype=np.float64, layer_kwargs=kw,
    )  # fmt: skip
    s32 = Stack.from_config(s64.get_config(), [p.astype(np.float32) for p in s64.params])
    assert all(p.dtype == np.float32 for p in s32.params)
    xs = rng.standard_normal((4, 5, 3))
    R = rng.standard_normal((4, 5, 8))
    h64, h32 = s64.forward(xs, LENGTHS), s32.forward(xs.astype(np.float32), LENGTHS)
    assert h32.dtype == np.float32
    np.testing.assert_allclose(h32, h64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s32.backward(R), s64.backward(R), rtol=1e-4, atol=1e-5)
    for g32, g64 in zip(s32.grads, s64.grads):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4)
