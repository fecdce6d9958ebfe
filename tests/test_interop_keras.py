"""fastrnn.interop.keras (Keras 3 on its torch backend): exact round trips, and converted layers'
outputs and gradients equal Keras's: to float32 rounding, and to 1e-10 in float64 on a backend
where Keras computes float64 (not torch's: see KERAS_FLOAT64)."""

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

N, T, D, H = 3, 6, 4, 5
TORCH_BACKEND = keras.backend.backend() == "torch"
# Keras's type promotion (keras.backend.result_type) turns float64 into float32 on every backend
# but TensorFlow's, so its ops.matmul runs float64 layers in float32 there: compare to 1e-10 only
# where Keras computes in float64
KERAS_FLOAT64 = keras.backend.result_type("float64", "float64") == "float64"
TOL = {np.float64: 1e-10 if KERAS_FLOAT64 else 2e-5, np.float32: 2e-5}
has_relu = "nonlinearity" in inspect.signature(fastrnn.TimeRNN.__init__).parameters
CASES = [("rnn", {}), ("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False})]
IDS = ["simplernn", "lstm", "gru_reset_after", "gru_classic"]


def close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def keras_layer(kind, kwargs, dtype, seed=0):
    cls = {"rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
    layer = cls[kind](H, return_sequences=True, dtype=np.dtype(dtype).name, **kwargs)
    layer.build((None, None, D))
    rng = np.random.default_rng(seed)  # biases away from zero, so a mix-up would show
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(dtype) for w in layer.get_weights()])
    return layer


def keras_grads_as_fastrnn(layer, grads):
    """Keras gradients in fastrnn's layout: the same mapping as the weights'."""
    twin = keras_layer(_kind(layer), _kwargs(layer), np.dtype(grads[0].dtype).type)
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
    close(ours.forward(xs), expect, dtype)


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
    close(ours.forward(xs), out.detach().numpy(), dtype)
    close(ours.backward(dhs), x.grad.numpy(), dtype)
    for mine, theirs in zip(ours.grads, keras_grads_as_fastrnn(layer, grads)):
        close(mine, theirs, dtype)


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
    close(obj.forward(xs), keras.ops.convert_to_numpy(layer(xs)), dtype)


@pytest.mark.skipif(not has_relu, reason="TimeRNN has no nonlinearity='relu' in this tree")
def test_relu_simplernn(rng):
    layer = keras_layer("rnn", {"activation": "relu"}, np.float64)
    ours = from_keras(layer)
    assert ours.get_config()["nonlinearity"] == "relu"
    xs = rng.standard_normal((N, T, D))
    close(ours.forward(xs), keras.ops.convert_to_numpy(layer(xs)), np.float64)
    assert fk._activation_name(to_keras(ours).cell.activation) == "relu"


def test_no_bias(rng):
    layer = keras.layers.LSTM(H, return_sequences=True, use_bias=False, dtype="float64")
    layer.build((None, None, D))
    ours = from_keras(layer)
    assert not np.any(ours.params[2])
    xs = rng.standard_normal((N, T, D))
    close(ours.forward(xs), keras.ops.convert_to_numpy(layer(xs)), np.float64)


@pytest.mark.parametrize("kind, kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional(kind, kwargs, merge, rng):
    """keras.layers.Bidirectional <-> fastrnn Bidirectional: equal outputs (float32
    rounding), exact round trips both ways."""
    from fastrnn.layers import Bidirectional

    bi = keras.layers.Bidirectional(keras_layer(kind, kwargs, "float32"), merge_mode=merge)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    want = keras.ops.convert_to_numpy(bi(xs))
    ours = from_keras(bi)
    assert isinstance(ours, Bidirectional) and ours.merge == merge
    assert ours.backward_layer.reverse
    close(ours.forward(xs), want, np.float32)
    back = to_keras(ours)
    close(keras.ops.convert_to_numpy(back(xs)), want, np.float32)
    for a, b in zip(ours.params, from_keras(back).params):
        np.testing.assert_array_equal(a, b)


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
