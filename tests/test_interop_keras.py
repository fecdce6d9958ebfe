"""fastrnn.interop.keras (Keras 3 on its torch backend): exact round trips, and converted layers'
outputs and gradients equal Keras's: to float32 rounding, and to 1e-10 in float64 wherever Keras
computes float64 (see FLOAT64_EXACT); masks <-> lengths; stacks <-> keras.Sequential."""

import inspect
import os
import sys

import numpy as np
import pytest

# the backend must be chosen before Keras is first imported; torch's gives the gradients too
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from conftest import make_params

import fastrnn
from fastrnn.interop import from_keras, keras as fk, to_keras
from fastrnn.layers import Bidirectional, Stack

N, T, D, H = 3, 6, 4, 5
TORCH_BACKEND = keras.backend.backend() == "torch"
has_relu = "nonlinearity" in inspect.signature(fastrnn.TimeRNN.__init__).parameters
CASES = [("rnn", {}), ("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False})]
IDS = ["simplernn", "lstm", "gru_reset_after", "gru_classic"]

# Where Keras computes float64 in float64.  Its type promotion (keras.backend.result_type) maps
# float64 to float32 on every backend but TensorFlow's (BIT64_TO_BIT32_DTYPE in
# keras/src/backend/common/dtypes.py), so every step that goes through keras.ops.matmul runs in
# float32 there: SimpleRNN and GRU(reset_after=False) always, and LSTM / GRU(reset_after=True)
# under a mask.  Unmasked, the torch backend runs those two through its fused kernels
# (torch._VF.lstm / gru on CUDA, a torch.matmul loop on CPU) in the weights' dtype.
# test_float64_downcast_is_real checks the other side: a case missing here does lose precision.
KERAS_FLOAT64 = keras.backend.result_type("float64", "float64") == "float64"
FUSED_FLOAT64 = {"lstm", "gru_reset_after"} if TORCH_BACKEND else set()


def case_id(kind, kwargs):
    if kind == "gru":
        return "gru_reset_after" if kwargs.get("reset_after", True) else "gru_classic"
    return {"rnn": "simplernn"}.get(kind, kind)


def float64_exact(kind, kwargs, masked=False):
    """True where Keras computes this layer's float64 in float64 (see FUSED_FLOAT64)."""
    return KERAS_FLOAT64 or (not masked and case_id(kind, kwargs) in FUSED_FLOAT64)


def tol_for(dtype, exact=True):
    """1e-10 for float64 that Keras computes in float64, float32 rounding otherwise."""
    return 1e-10 if np.dtype(dtype) == np.float64 and exact else 2e-5


def close(a, b, dtype, exact=True):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    tol = tol_for(dtype, exact)
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


def keras_layer(kind, kwargs, dtype, seed=0, input_size=D, units=H):
    cls = {"rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
    layer = cls[kind](units, return_sequences=True, dtype=np.dtype(dtype).name, **kwargs)
    layer.build((None, None, input_size))
    rng = np.random.default_rng(seed)  # biases away from zero, so a mix-up would show
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(dtype) for w in layer.get_weights()])
    return layer


def keras_grads_as_fastrnn(layer, grads):
    """Keras gradients in fastrnn's layout: the same mapping as the weights'."""
    kernel, recurrent = grads[:2]
    twin = keras_layer(_kind(layer), _kwargs(layer), kernel.dtype.type,
                       input_size=kernel.shape[0], units=recurrent.shape[0])  # fmt: skip
    twin.set_weights(grads)
    return from_keras(twin).params


def _kind(layer):
    return fk._kind_of(layer)


def _kwargs(layer):
    return {"reset_after": layer.cell.reset_after} if _kind(layer) == "gru" else {}


@pytest.mark.parametrize("kind, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_keras_matches_outputs(kind, kwargs, dtype, rng):
    layer = keras_layer(kind, kwargs, dtype)
    ours = from_keras(layer)
    assert ours.params[0].dtype == dtype
    if kind == "gru":
        assert ours.reset_after == kwargs["reset_after"]
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    expect = keras.ops.convert_to_numpy(layer(xs))
    close(ours.forward(xs), expect, dtype, float64_exact(kind, kwargs))


@pytest.mark.skipif(not TORCH_BACKEND, reason="gradients taken through Keras's torch backend")
@pytest.mark.parametrize("kind, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_match_keras(kind, kwargs, dtype, rng):
    import torch

    layer = keras_layer(kind, kwargs, dtype, seed=1)
    ours = from_keras(layer)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype)
    x = torch.tensor(xs, requires_grad=True)
    state = [torch.tensor(h0), torch.tensor(c0)] if kind == "lstm" else [torch.tensor(h0)]
    out = layer(x, initial_state=state)
    (out * torch.tensor(dhs)).sum().backward()
    grads = [v.value.grad.numpy().copy() for v in layer.weights]

    ours.stateful = True
    ours.set_state(h0, c0 if kind == "lstm" else None)
    exact = float64_exact(kind, kwargs)
    close(ours.forward(xs), out.detach().numpy(), dtype, exact)
    close(ours.backward(dhs), x.grad.numpy(), dtype, exact)
    for mine, theirs in zip(ours.grads, keras_grads_as_fastrnn(layer, grads)):
        close(mine, theirs, dtype, exact)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "gru_ra"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_exact(kind, dtype, rng):
    params = make_params(kind, rng, D, H, dtype)
    if kind == "rnn":
        obj = fastrnn.TimeRNN(*params)
    elif kind == "lstm":
        obj = fastrnn.TimeLSTM(*params)
    else:
        obj = fastrnn.TimeGRU(*params, reset_after=kind == "gru_ra")
    layer = to_keras(obj)
    assert layer.get_weights()[0].dtype == dtype
    back = from_keras(layer)
    assert type(back) is type(obj) and back.get_config() == obj.get_config()
    for a, b in zip(obj.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    kwargs = {"reset_after": kind == "gru_ra"} if kind.startswith("gru") else {}
    exact = float64_exact(kind.split("_")[0], kwargs)
    close(obj.forward(xs), keras.ops.convert_to_numpy(layer(xs)), dtype, exact)


@pytest.mark.skipif(not has_relu, reason="TimeRNN has no nonlinearity='relu' in this tree")
def test_relu_simplernn(rng):
    layer = keras_layer("rnn", {"activation": "relu"}, np.float64)
    ours = from_keras(layer)
    assert ours.get_config()["nonlinearity"] == "relu"
    xs = rng.standard_normal((N, T, D))
    close(ours.forward(xs), keras.ops.convert_to_numpy(layer(xs)), np.float64,
          float64_exact("rnn", {}))  # fmt: skip
    assert fk._activation_name(to_keras(ours).cell.activation) == "relu"


def test_no_bias(rng):
    layer = keras.layers.LSTM(H, return_sequences=True, use_bias=False, dtype="float64")
    layer.build((None, None, D))
    ours = from_keras(layer)
    assert not np.any(ours.params[2])
    xs = rng.standard_normal((N, T, D))
    close(ours.forward(xs), keras.ops.convert_to_numpy(layer(xs)), np.float64,
          float64_exact("lstm", {}))  # fmt: skip


@pytest.mark.parametrize("kind, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("merge", ["concat", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bidirectional(kind, kwargs, merge, dtype, rng):
    """keras.layers.Bidirectional <-> fastrnn Bidirectional: equal outputs (1e-10 where Keras
    computes float64, float32 rounding elsewhere), exact round trips both ways."""
    name = np.dtype(dtype).name
    layer = keras_layer(kind, kwargs, dtype)
    bi = keras.layers.Bidirectional(layer, merge_mode=merge, dtype=name)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    want = keras.ops.convert_to_numpy(bi(xs))
    assert want.dtype == dtype
    ours = from_keras(bi)
    assert isinstance(ours, Bidirectional) and ours.merge == merge
    assert ours.backward_layer.reverse and ours.dtype == dtype
    exact = float64_exact(kind, kwargs)
    close(ours.forward(xs), want, dtype, exact)
    back = to_keras(ours)
    got = keras.ops.convert_to_numpy(back(xs))
    assert got.dtype == dtype  # the wrapper too is float64: it does not cast the merge
    close(got, want, dtype, exact)
    for a, b in zip(ours.params, from_keras(back).params):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not TORCH_BACKEND, reason="the downcast is that of Keras's torch backend")
@pytest.mark.parametrize("kind, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_float64_downcast_is_real(kind, kwargs, masked, rng):
    """FUSED_FLOAT64 is not a convenience: outside it Keras's float64 layer does differ from
    float64 arithmetic by float32 rounding, inside it agrees to 1e-10 (if Keras starts computing
    a case in float64, this fails: move the case into FUSED_FLOAT64)."""
    layer = keras_layer(kind, kwargs, np.float64, seed=3)
    xs = rng.standard_normal((N, T, D))
    lengths = np.array([T, 2, 4]) if masked else np.full(N, T)
    mask = np.arange(T)[None, :] < lengths[:, None]
    theirs = keras.ops.convert_to_numpy(layer(xs, mask=mask) if masked else layer(xs))
    ours = from_keras(layer).forward(xs, lengths)
    err = float(np.max(np.abs(np.where(mask[:, :, None], theirs - ours, 0))))
    if float64_exact(kind, kwargs, masked):
        assert err < 1e-12
    else:
        assert 1e-12 < err < 2e-5, f"{case_id(kind, kwargs)} masked={masked}: {err:.1e}"


def test_refusals():
    bi = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), merge_mode="mul")
    bi.build((None, None, D))
    with pytest.raises(ValueError, match="merge_mode='mul'"):
        from_keras(bi)
    bi = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
    with pytest.raises(ValueError, match="not built"):
        from_keras(bi)
    with pytest.raises(ValueError, match="not built"):
        from_keras(keras.layers.GRU(H))
    back = keras.layers.GRU(H, go_backwards=True)
    back.build((None, None, D))
    with pytest.raises(NotImplementedError, match="go_backwards"):
        from_keras(back)
    odd = keras.layers.LSTM(H, activation="relu")
    odd.build((None, None, D))
    with pytest.raises(ValueError, match="activation 'relu'"):
        from_keras(odd)
    with pytest.raises(TypeError, match="no fastrnn counterpart"):
        from_keras(keras.layers.Dense(3))


def test_cells_refused(rng):
    cell = fastrnn.GRU(*make_params("gru", rng, D, H, np.float64))
    with pytest.raises(TypeError, match="time layers"):
        to_keras(cell)


def test_missing_keras_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(ImportError, match=r"fastrnn\[keras\]"):
        fk._keras()


# ---- masks <-> lengths ------------------------------------------------------------------------

LENGTHS = np.array([T, 2, 4])
VALID = np.arange(T)[None, :] < LENGTHS[:, None]


def test_lengths_from_mask():
    np.testing.assert_array_equal(fk.lengths_from_mask(VALID), LENGTHS)
    embed = keras.layers.Embedding(10, 3, mask_zero=True)
    ids = np.array([[4, 2, 7, 0], [1, 0, 0, 0]])
    mask = embed.compute_mask(ids)  # a backend tensor
    np.testing.assert_array_equal(fk.lengths_from_mask(mask), [3, 1])
    np.testing.assert_array_equal(fk.lengths_from_mask(VALID.astype(np.float32)), LENGTHS)
    with pytest.raises(ValueError, match=r"row 1 is not right-padded \(\[1, 0, 1\]\)"):
        fk.lengths_from_mask(np.array([[1, 1, 1], [1, 0, 1]], bool))
    with pytest.raises(ValueError, match="row 0 is not right-padded"):
        fk.lengths_from_mask(np.array([[0, 1, 1]], bool))  # left padding
    with pytest.raises(ValueError, match="row 1 has no valid step"):
        fk.lengths_from_mask(np.array([[1, 0], [0, 0]], bool))
    with pytest.raises(ValueError, match=r"shape \(N, T\)"):
        fk.lengths_from_mask(np.ones(3, bool))
    with pytest.raises(TypeError, match="booleans"):
        fk.lengths_from_mask(np.array([[0.5, 1.0]]))


@pytest.mark.skipif(not TORCH_BACKEND, reason="gradients taken through Keras's torch backend")
@pytest.mark.parametrize("kind, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_matches_lengths(kind, kwargs, dtype, rng):
    """A Keras layer called with a right-padded mask is fastrnn's forward(xs, lengths): outputs
    at the valid steps, final state (return_state), input and weight gradients.  Past a row's
    length Keras repeats the row's last valid output (zero_output_for_mask=False, its default),
    fastrnn writes zeros; to_keras's layers zero them as fastrnn does."""
    import torch

    layer = keras_layer(kind, kwargs, dtype, seed=2)
    layer.return_state = True
    ours = from_keras(layer)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype) * VALID[:, :, None]
    x = torch.tensor(xs, requires_grad=True)
    out, *state = layer(x, mask=torch.tensor(VALID))
    (out * torch.tensor(dhs)).sum().backward()
    grads = [v.value.grad.numpy().copy() for v in layer.weights]
    out = out.detach().numpy()

    exact = float64_exact(kind, kwargs, masked=True)
    hs = ours.forward(xs, lengths=LENGTHS)
    close(hs[VALID], out[VALID], dtype, exact)
    last = out[np.arange(N), LENGTHS - 1]
    assert np.array_equal(out, np.where(VALID[:, :, None], out, last[:, None, :]))
    assert not hs[~VALID].any()
    close(ours.h, state[0].detach().numpy(), dtype, exact)
    if kind == "lstm":
        close(ours.c, state[1].detach().numpy(), dtype, exact)
    dxs = ours.backward(dhs)
    close(dxs, x.grad.numpy(), dtype, exact)
    assert not dxs[~VALID].any()
    for mine, theirs in zip(ours.grads, keras_grads_as_fastrnn(layer, grads)):
        close(mine, theirs, dtype, exact)

    zeroing = to_keras(ours)
    assert zeroing.zero_output_for_mask
    got = keras.ops.convert_to_numpy(zeroing(xs, mask=VALID))
    close(got, hs, dtype, exact)  # zeros past each length, as fastrnn


@pytest.mark.skipif(not TORCH_BACKEND, reason="gradients taken through Keras's torch backend")
@pytest.mark.parametrize("kind, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bidirectional_mask_matches_lengths(kind, kwargs, dtype, rng):
    """keras.layers.Bidirectional with a mask is fastrnn's Bidirectional with lengths: the
    backward layer starts at each row's own last valid step; padded outputs are zero in both
    (Keras's Bidirectional forces zero_output_for_mask); input and weight gradients equal."""
    import torch

    name = np.dtype(dtype).name
    bi = keras.layers.Bidirectional(keras_layer(kind, kwargs, dtype, seed=4), dtype=name)
    bi.build((None, None, D))
    bi.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(dtype) for w in bi.get_weights()])
    ours = from_keras(bi)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, 2 * H)).astype(dtype)
    x = torch.tensor(xs, requires_grad=True)
    out = bi(x, mask=torch.tensor(VALID))
    (out * torch.tensor(dhs)).sum().backward()
    exact = float64_exact(kind, kwargs, masked=True)
    hs = ours.forward(xs, lengths=LENGTHS)
    close(hs, out.detach().numpy(), dtype, exact)  # zeros past the lengths included
    close(ours.backward(dhs), x.grad.numpy(), dtype, exact)
    halves = [bi.forward_layer, bi.backward_layer]
    theirs = []
    for half in halves:
        theirs += keras_grads_as_fastrnn(half, [v.value.grad.numpy() for v in half.weights])
    for mine, want in zip(ours.grads, theirs):
        close(mine, want, dtype, exact)


# ---- stacks <-> keras.Sequential ----------------------------------------------------------------


def stack_of(dtype, rng, **kwargs):
    """A uni-, then bidirectional, then unidirectional stack of three cells."""
    layers = [
        from_keras(keras_layer("lstm", {}, dtype, seed=5)),
        Bidirectional.create("gru", H, H, rng=rng, dtype=dtype, reset_after=True),
        fastrnn.TimeRNN(*make_params("rnn", rng, 2 * H, H, dtype)),
    ]
    return Stack(layers, **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stack_to_keras_and_back(dtype, rng):
    """to_keras(Stack) is a keras.Sequential computing the same (with and without a mask);
    from_keras of it gives the Stack back exactly."""
    stack = stack_of(dtype, rng)
    model = to_keras(stack)
    assert isinstance(model, keras.Sequential) and len(model.layers) == 3
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    # a SimpleRNN layer on top: float32 rounding on the torch backend (test_float64_downcast)
    exact = float64_exact("rnn", {})
    close(keras.ops.convert_to_numpy(model(xs)), stack.forward(xs), dtype, exact)
    got = keras.ops.convert_to_numpy(model(xs, mask=VALID))
    close(got, stack.forward(xs, LENGTHS), dtype, float64_exact("rnn", {}, masked=True))
    back = from_keras(model)
    assert isinstance(back, Stack) and back.get_config() == stack.get_config()
    for a, b in zip(stack.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.skipif(not TORCH_BACKEND, reason="gradients taken through Keras's torch backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stack_gradients_match_keras_sequential(dtype, rng):
    """Input and every layer's weight gradients of to_keras(stack) under a mask equal the
    Stack's with lengths (float32 rounding: the masked Keras path, see FUSED_FLOAT64)."""
    import torch

    stack = stack_of(dtype, rng)
    model = to_keras(stack)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    x = torch.tensor(xs, requires_grad=True)
    out = model(x, mask=torch.tensor(VALID))
    (out * torch.tensor(dhs)).sum().backward()
    exact = float64_exact("rnn", {}, masked=True)
    close(stack.forward(xs, LENGTHS), out.detach().numpy(), dtype, exact)
    close(stack.backward(dhs), x.grad.numpy(), dtype, exact)
    theirs = []
    for layer in model.layers:
        halves = [layer]
        if isinstance(layer, keras.layers.Bidirectional):
            halves = [layer.forward_layer, layer.backward_layer]
        for half in halves:
            grads = [v.value.grad.numpy() for v in half.weights]
            theirs += keras_grads_as_fastrnn(half, grads)
    assert len(theirs) == len(stack.grads)
    for mine, want in zip(stack.grads, theirs):
        close(mine, want, dtype, exact)


def test_stack_float64_exact_where_keras_is(rng):
    """A stack of LSTM and reset_after GRU layers: Keras's float64 path throughout, 1e-10."""
    layers = [
        from_keras(keras_layer("lstm", {}, np.float64, seed=6)),
        Bidirectional.create("gru", H, H, rng=rng, dtype=np.float64, reset_after=True),
    ]
    stack = Stack(layers)
    xs = rng.standard_normal((N, T, D))
    got = keras.ops.convert_to_numpy(to_keras(stack)(xs))
    close(got, stack.forward(xs), np.float64, float64_exact("lstm", {}))


@pytest.mark.parametrize("variational", [False, True])
def test_stack_dropout_is_keras_dropout(variational, rng):
    stack = stack_of(np.float32, rng, dropout=0.25, variational=variational)
    model = to_keras(stack)
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(drops) == 2 and all(d.rate == 0.25 for d in drops)
    assert all((d.noise_shape is not None) == variational for d in drops)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    stack.train_flg = False  # inference: Keras's Dropout is the identity too
    close(keras.ops.convert_to_numpy(model(xs)), stack.forward(xs), np.float32)
    back = from_keras(model)
    assert back.dropout == 0.25 and back.variational == variational


@pytest.mark.parametrize("connection", ["residual", "dense", "highway"])
def test_stack_connections_refused(connection, rng):
    sizes = [H, H] if connection != "dense" else [H, H]
    stack = Stack.create("lstm", H, sizes, rng=rng, connection=connection)
    with pytest.raises(ValueError, match=f"connection='{connection}'"):
        to_keras(stack)


def test_stack_refusals(rng):
    stack = Stack.create("lstm", D, [H, H], rng=rng, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match="recurrent_dropout=0.2"):
        to_keras(stack)
    stack = Stack.create("lstm", D, [H, H], rng=rng, weight_drop=0.3)
    with pytest.raises(ValueError, match="weight_drop=0.3 has no Keras counterpart"):
        to_keras(stack)
    lstm = keras.layers.LSTM(H, return_sequences=True)
    model = keras.Sequential([lstm, keras.layers.Dense(3)])
    model.build((None, None, D))
    with pytest.raises(TypeError, match="Dense has no place in a fastrnn Stack"):
        from_keras(model)
    model = keras.Sequential([keras.layers.LSTM(H, return_sequences=True), keras.layers.GRU(H)])
    model.build((None, None, D))
    with pytest.raises(ValueError, match="return_sequences=True"):
        from_keras(model)
    model = keras.Sequential(
        [keras.layers.Dropout(0.1), keras.layers.LSTM(H, return_sequences=True)]
    )
    model.build((None, None, D))
    with pytest.raises(ValueError, match="only between two recurrent layers"):
        from_keras(model)
    model = keras.Sequential(
        [
            keras.layers.LSTM(H, return_sequences=True),
            keras.layers.Dropout(0.1),
            keras.layers.LSTM(H, return_sequences=True),
            keras.layers.Dropout(0.2),
            keras.layers.LSTM(H, return_sequences=True),
        ]
    )
    model.build((None, None, D))
    with pytest.raises(ValueError, match="one rate"):
        from_keras(model)


def test_sequential_with_masking_layer(rng):
    """A leading Masking layer is the caller's lengths: from_keras drops it, and the Stack with
    lengths_from_mask(its mask) computes what the Sequential does."""
    stack = stack_of(np.float32, rng)
    model = keras.Sequential([keras.layers.Masking(0.0), *to_keras(stack).layers])
    model.build((None, None, D))
    xs = rng.standard_normal((N, T, D)).astype(np.float32) * VALID[:, :, None]
    back = from_keras(model)
    assert back.get_config() == stack.get_config()
    lengths = fk.lengths_from_mask(model.layers[0].compute_mask(xs))
    np.testing.assert_array_equal(lengths, LENGTHS)
    close(back.forward(xs, lengths), keras.ops.convert_to_numpy(model(xs)), np.float32)


def test_reverse_layer_alone_refused(rng):
    layer = fastrnn.TimeLSTM(*make_params("lstm", rng, D, H, np.float32), reverse=True)
    with pytest.raises(NotImplementedError, match="reverse=True"):
        to_keras(layer)
    with pytest.raises(NotImplementedError, match="reverse=True"):
        to_keras(Stack([layer]))


# ---- classifiers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell, bidirectional, pooling, layers",
    [("lstm", True, "last", 2), ("gru", True, "mean", 1), ("rnn", False, "last", 1),
     ("lstm", False, "mean", 2), ("lstm", False, "last", 1), ("gru", False, "last", 2)],
)  # fmt: skip
def test_classifier_to_keras_and_back(cell, bidirectional, pooling, layers, rng, tmp_path):
    """A word-id SequenceClassifier as a Sequential of Keras's own layers: its scores from ids
    padded with 0 are fastrnn's with the lengths; from_keras gives the same classifier."""
    from fastrnn.models import SequenceClassifier

    model = SequenceClassifier(
        3, vocab_size=13, embed_size=5, hidden_sizes=[6] * layers, cell=cell,
        bidirectional=bidirectional, pooling=pooling, seed=2,
    )  # fmt: skip
    seq = to_keras(model)
    assert all(type(layer).__module__.startswith("keras") for layer in seq.layers)
    lengths = np.array([7, 2, 5, 1])
    ids = rng.integers(1, 13, (4, 7))
    ids[np.arange(7)[None, :] >= lengths[:, None]] = 0
    want = model.predict(ids, lengths)
    got = keras.ops.convert_to_numpy(seq(ids))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    back = from_keras(seq)
    assert type(back).__name__ == "SequenceClassifier" and back.pooling == pooling
    seq.save(tmp_path / "clf.keras")  # Keras's own layers only: it loads without fastrnn's
    again = keras.saving.load_model(tmp_path / "clf.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(ids)), got)
    for a, b in zip(back.params, model.params):
        assert np.array_equal(a, b)


def test_classifiers_keras_cannot_mask_are_refused():
    from fastrnn.models import SequenceClassifier

    for kw, message in (
        (dict(pooling="max"), "GlobalMaxPooling1D ignores masks"),
        (dict(merge="sum"), "merge='sum'"),
        (dict(connection="residual", hidden_sizes=[4, 4]), "connection='residual'"),
    ):
        model = SequenceClassifier(2, vocab_size=7, embed_size=4, **{"hidden_sizes": [4], **kw})
        with pytest.raises(ValueError, match=message):
            to_keras(model)
    dense = SequenceClassifier(2, input_size=3, hidden_sizes=[4])
    with pytest.raises(ValueError, match="dense inputs"):
        to_keras(dense)
