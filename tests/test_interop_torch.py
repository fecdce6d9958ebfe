"""fastrnn.interop.torch: exact round trips, and converted layers' outputs and gradients equal
PyTorch's (float64 to 1e-10, float32 to rounding)."""

import inspect
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_params

import fastrnn
from fastrnn.interop import from_torch, to_torch, torch as ft

N, T, D, H = 3, 6, 4, 5
TOL = {np.float64: 1e-10, np.float32: 2e-5}
DT = {np.float64: torch.float64, np.float32: torch.float32}
MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}

has_relu = "nonlinearity" in inspect.signature(fastrnn.TimeRNN.__init__).parameters


def close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def torch_module(kind, dtype, seed=0, **kwargs):
    torch.manual_seed(seed)
    m = MODULES[kind](D, H, dtype=DT[dtype], **kwargs)
    with torch.no_grad():  # biases away from zero, so a mix-up of b_ih / b_hh would show
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m


def run_torch(m, kind, xs, dhs, h0, c0, batch_first=True):
    x = torch.tensor(xs if batch_first else xs.transpose(1, 0, 2), requires_grad=True)
    state = (
        (torch.tensor(h0[None]), torch.tensor(c0[None]))
        if kind == "lstm"
        else torch.tensor(h0[None])
    )
    m.zero_grad()
    out, _ = m(x, state)
    g = torch.tensor(dhs if batch_first else dhs.transpose(1, 0, 2))
    (out * g).sum().backward()
    out = out.detach().numpy()
    dx = x.grad.numpy()
    if not batch_first:
        out, dx = out.transpose(1, 0, 2), dx.transpose(1, 0, 2)
    return out, dx


def torch_grads_as_fastrnn(m, kind, sfx="_l0"):
    """PyTorch's weight gradients in fastrnn's layout (the bias gradient: that of b_ih, which
    equals b_hh's for the RNN and LSTM where fastrnn's b is their sum)."""
    g = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    b_hh = g["bias_hh" + sfx] if kind == "gru" else np.zeros_like(g["bias_hh" + sfx])
    blocks = ft._from_torch_gates(
        kind, g["weight_ih" + sfx], g["weight_hh" + sfx], g["bias_ih" + sfx], b_hh
    )
    from fastrnn.interop._gates import build

    return build(kind, blocks, reset_after=(kind == "gru")).params


def data(rng, dtype):
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype)
    return xs, dhs, h0, c0


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_matches_outputs_and_gradients(kind, dtype, batch_first, rng):
    m = torch_module(kind, dtype, batch_first=batch_first)
    layer = from_torch(m)
    assert (
        type(layer)
        is {"rnn": fastrnn.TimeRNN, "lstm": fastrnn.TimeLSTM, "gru": fastrnn.TimeGRU}[kind]
    )
    assert layer.params[0].dtype == dtype
    if kind == "gru":
        assert layer.reset_after
    xs, dhs, h0, c0 = data(rng, dtype)
    out_t, dx_t = run_torch(m, kind, xs, dhs, h0, c0, batch_first)
    layer.stateful = True
    layer.set_state(h0, c0 if kind == "lstm" else None)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    close(hs, out_t, dtype)
    close(dxs, dx_t, dtype)
    for ours, theirs in zip(layer.grads, torch_grads_as_fastrnn(m, kind)):
        close(ours, theirs, dtype)


@pytest.mark.skipif(not has_relu, reason="TimeRNN has no nonlinearity='relu' in this tree")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_rnn(dtype, rng):
    m = torch_module("rnn", dtype, batch_first=True, nonlinearity="relu")
    layer = from_torch(m)
    assert layer.get_config()["nonlinearity"] == "relu"
    xs, dhs, h0, c0 = data(rng, dtype)
    out_t, dx_t = run_torch(m, "rnn", xs, dhs, h0, c0)
    layer.stateful = True
    layer.set_state(h0)
    close(layer.forward(xs), out_t, dtype)
    close(layer.backward(dhs), dx_t, dtype)
    for ours, theirs in zip(layer.grads, torch_grads_as_fastrnn(m, "rnn")):
        close(ours, theirs, dtype)
    back = to_torch(layer)
    assert back.nonlinearity == "relu"


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru_ra"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("time", [True, False], ids=["time", "cell"])
def test_round_trip_exact(kind, dtype, time, rng):
    params = make_params(kind, rng, D, H, dtype)
    cls = {
        "rnn": (fastrnn.TimeRNN, fastrnn.RNN),
        "lstm": (fastrnn.TimeLSTM, fastrnn.LSTM),
        "gru_ra": (fastrnn.TimeGRU, fastrnn.GRU),
    }[kind][0 if time else 1]
    obj = cls(*params, reset_after=True) if kind == "gru_ra" else cls(*params)
    m = to_torch(obj)
    expect = (MODULES if time else CELLS)[kind[:4].rstrip("_")]
    assert type(m) is expect
    assert next(m.parameters()).dtype == DT[dtype]
    back = from_torch(m)
    assert type(back) is cls
    for a, b in zip(obj.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cells_match_torch_cells(kind, rng):
    torch.manual_seed(1)
    m = CELLS[kind](D, H, dtype=torch.float64)
    cell = from_torch(m)
    x = rng.standard_normal((N, D))
    h = rng.standard_normal((N, H))
    c = rng.standard_normal((N, H))
    if kind == "lstm":
        h_t, c_t = m(torch.tensor(x), (torch.tensor(h), torch.tensor(c)))
        h_f, c_f = cell.forward(x, h, c)
        close(c_f, c_t.detach().numpy(), np.float64)
    else:
        h_t = m(torch.tensor(x), torch.tensor(h))
        h_f = cell.forward(x, h)
    close(h_f, h_t.detach().numpy(), np.float64)


def test_no_bias_module(rng):
    torch.manual_seed(2)
    m = torch.nn.LSTM(D, H, bias=False, batch_first=True, dtype=torch.float64)
    layer = from_torch(m)
    assert not np.any(layer.params[2])
    xs = rng.standard_normal((N, T, D))
    close(layer.forward(xs), m(torch.tensor(xs))[0].detach().numpy(), np.float64)


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bidirectional_single_layer(cls, dtype, rng):
    """One bidirectional layer: a fastrnn Bidirectional equal to the module on full-length
    batches (packed, variable-length batches: tests/test_encoders.py), exact round trip."""
    from fastrnn.layers import Bidirectional

    torch.manual_seed(3)
    m = cls(D, H, bidirectional=True, batch_first=True, dtype=dtype)
    ours = from_torch(m)
    assert isinstance(ours, Bidirectional) and ours.merge == "concat"
    assert ours.backward_layer.reverse and not ours.forward_layer.reverse
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    assert ours.dtype == np_dtype
    xs = rng.standard_normal((N, T, D)).astype(np_dtype)
    close(ours.forward(xs), m(torch.tensor(xs))[0].detach().numpy(), np_dtype)
    again = from_torch(to_torch(ours))
    for a, b in zip(ours.params, again.params):
        np.testing.assert_array_equal(a, b)


def test_bidirectional_refusals(rng):
    from fastrnn.layers import Bidirectional, Stack

    bi = Bidirectional.create("lstm", D, H, merge="sum", rng=rng)
    with pytest.raises(ValueError, match="merge='sum'"):
        to_torch(bi)
    mixed = Stack(
        [
            Bidirectional.create("lstm", D, H, rng=rng),
            fastrnn.TimeLSTM(
                *(np.zeros(s, np.float32) for s in ((2 * H, 4 * H), (H, 4 * H), (4 * H,)))
            ),
        ]
    )
    with pytest.raises(ValueError, match="bidirectional"):
        to_torch(mixed)


def test_proj_size_refused():
    with pytest.raises(NotImplementedError, match="proj_size"):
        from_torch(torch.nn.LSTM(D, H, proj_size=2))


def test_classic_gru_has_no_torch_counterpart(rng):
    layer = fastrnn.TimeGRU(*make_params("gru", rng, D, H, np.float64))
    with pytest.raises(ValueError, match="reset_after=False"):
        to_torch(layer)


def test_unknown_objects_refused():
    with pytest.raises(TypeError, match="no fastrnn counterpart"):
        from_torch(torch.nn.Conv1d(2, 2, 1))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        from_torch(np.zeros(3))
    with pytest.raises(TypeError, match="no PyTorch counterpart"):
        to_torch(object())


def test_reverse_layer_alone_refused(rng):
    layer = fastrnn.TimeGRU(*make_params("gru_ra", rng, D, H, np.float32), reset_after=True,
                            reverse=True)  # fmt: skip
    with pytest.raises(ValueError, match="reverse=True"):
        to_torch(layer)


CLASSIFIERS = [
    dict(cell="lstm", bidirectional=True, pooling="last", layers=2),
    dict(cell="gru", bidirectional=True, pooling="mean", layers=1),
    dict(cell="rnn", bidirectional=False, pooling="max", layers=2),
    dict(cell="lstm", bidirectional=False, pooling="last", layers=1),
    dict(cell="gru", bidirectional=False, pooling="last", layers=3, dense=True),
]


@pytest.mark.parametrize("spec", CLASSIFIERS, ids=lambda s: "-".join(map(str, s.values())))
def test_classifier_to_torch_scores_and_gradients(spec, rng):
    """A SequenceClassifier and the TorchSequenceClassifier made of it, float64, rows of
    different lengths: the same logits, and the same gradients of every weight."""
    from fastrnn.models import SequenceClassifier

    model = SequenceClassifier(
        3,
        vocab_size=None if spec.get("dense") else 11,
        input_size=5 if spec.get("dense") else None,
        embed_size=None if spec.get("dense") else 5,
        hidden_sizes=[6] * spec["layers"],
        cell=spec["cell"],
        bidirectional=spec["bidirectional"],
        pooling=spec["pooling"],
        dtype=np.float64,
        seed=3,
    )
    module = to_torch(model)
    assert type(module).__name__ == "TorchSequenceClassifier"
    N, T = 5, 7
    x = rng.standard_normal((N, T, 5)) if spec.get("dense") else rng.integers(0, 11, (N, T))
    lengths = np.array([7, 2, 5, 1, 6])
    labels = rng.integers(0, 3, N)
    want = model.predict(x, lengths)
    xt = torch.from_numpy(x)
    logits = module(xt, torch.from_numpy(lengths))
    np.testing.assert_allclose(logits.detach().numpy(), want, rtol=1e-10, atol=1e-12)
    # the gradients of the mean cross-entropy, parameter by parameter (through from_torch's
    # order: a round trip maps torch's gradients onto fastrnn's list)
    model.forward(x, labels, lengths, train_flg=False)
    model.backward()
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    back = from_torch(module)
    for name, p in module.named_parameters():
        # fastrnn's RNN and LSTM hold one bias, b_ih + b_hh: its gradient is either one's
        summed = "bias_hh" in name and spec["cell"] != "gru"
        with torch.no_grad():
            p.copy_(torch.zeros_like(p) if summed else grads[name])
    as_grads = from_torch(module)
    for g, mine in zip(as_grads.params, model.grads):
        np.testing.assert_allclose(mine, g, rtol=1e-8, atol=1e-12)
    # and back: the same classifier, bit for bit
    for a, b in zip(back.params, model.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(back.predict(x, lengths), want)


def test_classifiers_without_a_torch_counterpart_are_refused():
    from fastrnn.models import SequenceClassifier

    for kw, message in (
        (dict(connection="residual"), "connection='residual'"),
        (dict(merge="sum"), "merge='sum'"),
    ):
        model = SequenceClassifier(2, vocab_size=7, embed_size=4, hidden_sizes=[4, 4], **kw)
        with pytest.raises(ValueError, match=message):
            to_torch(model)


def test_half_precision_refused():
    with pytest.raises(TypeError, match="float32 or float64"):
        from_torch(torch.nn.GRU(D, H, dtype=torch.float16))


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"fastrnn\[torch\]"):
        ft._torch()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_and_linear(dtype, rng):
    torch.manual_seed(3)
    emb = torch.nn.Embedding(11, D, dtype=DT[dtype])
    lin = torch.nn.Linear(D, 7, dtype=DT[dtype])
    e, a = from_torch(emb), from_torch(lin)
    assert type(e) is fastrnn.TimeEmbedding and type(a) is fastrnn.TimeAffine
    ids = rng.integers(0, 11, (N, T))
    x = torch.tensor(ids)
    xe = emb(x)
    y = lin(xe)
    dy = rng.standard_normal((N, T, 7)).astype(dtype)
    (y * torch.tensor(dy)).sum().backward()
    ours = a.forward(e.forward(ids))
    close(ours, y.detach().numpy(), dtype)
    e.backward(a.backward(dy))
    close(a.grads[0], lin.weight.grad.numpy().T, dtype)
    close(a.grads[1], lin.bias.grad.numpy(), dtype)
    close(e.grads[0], emb.weight.grad.numpy(), dtype)
    for obj, back in ((e, to_torch(e)), (a, to_torch(a))):
        again = from_torch(back)
        for p, q in zip(obj.params, again.params):
            assert p.dtype == q.dtype and np.array_equal(p, q)


def test_linear_without_bias(rng):
    lin = torch.nn.Linear(D, 3, bias=False, dtype=torch.float64)
    a = from_torch(lin)
    assert not np.any(a.params[1])
    x = rng.standard_normal((N, T, D))
    close(a.forward(x), lin(torch.tensor(x)).detach().numpy(), np.float64)


# ---- stacks and language models ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layers", [2, 3])
def test_multi_layer_modules_are_stacks(kind, dtype, layers, rng):
    m = torch_module(kind, dtype, batch_first=True, num_layers=layers, dropout=0.25)
    stack = from_torch(m)
    assert isinstance(stack, fastrnn.Stack) and len(stack.layers) == layers
    assert stack.dropout == 0.25
    stack.train_flg = False
    m.eval()
    xs, dhs, _, _ = data(rng, dtype)
    x = torch.tensor(xs, requires_grad=True)
    out, _ = m(x)
    (out * torch.tensor(dhs)).sum().backward()
    close(stack.forward(xs), out.detach().numpy(), dtype)
    close(stack.backward(dhs), x.grad.numpy(), dtype)
    for k, layer in enumerate(stack.layers):
        for ours, theirs in zip(layer.grads, torch_grads_as_fastrnn(m, kind, f"_l{k}")):
            close(ours, theirs, dtype)
    back = to_torch(stack)
    assert back.num_layers == layers and back.dropout == 0.25
    again = from_torch(back)
    for a, b in zip(stack.params, again.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_stack_with_connections_refused(rng):
    layers = [fastrnn.TimeLSTM(*make_params("lstm", rng, H, H, np.float64)) for _ in range(2)]
    with pytest.raises(ValueError, match="residual"):
        to_torch(fastrnn.Stack(layers, connection="residual"))


def test_language_model_with_weight_drop_refused():
    from fastrnn.models import LanguageModel

    with pytest.raises(ValueError, match="weight drop"):
        to_torch(LanguageModel(13, 5, [6, 6], weight_drop=0.3, seed=0))


def test_stack_weights_go_to_torch_without_its_training_only_regularisers(rng):
    """recurrent_dropout and weight_drop act in training only: the module computes what the
    Stack evaluates, with the raw weights."""
    stack = fastrnn.Stack.create(
        "lstm", D, [H, H], rng=rng, dtype=np.float64, recurrent_dropout=0.3, weight_drop=0.4
    )
    xs = rng.standard_normal((N, T, D))
    stack.forward(xs)  # a training forward (the layers compute with masked copies of Wh)
    module = to_torch(stack)
    stack.train_flg = False
    out, _ = module(torch.tensor(xs))
    close(stack.forward(xs), out.detach().numpy(), np.float64)


def _lm(rng, dtype, cell="lstm", tie=False, projection=False, layers=2):
    from fastrnn.models import LanguageModel

    hidden = 6 if (not tie or projection) else 5
    return LanguageModel(
        13,
        5,
        [hidden] * layers,
        cell=cell,
        tie_weights=tie,
        projection=projection,
        init_scale=0.5,
        dtype=dtype,
        seed=4,
    )


LM_CASES = [
    ("lstm", False, False),
    ("lstm", True, False),
    ("lstm", True, True),
    ("rnn", False, False),
]


@pytest.mark.parametrize("cell, tie, projection", LM_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_language_model_to_torch_outputs_and_gradients(cell, tie, projection, dtype, rng):
    model = _lm(rng, dtype, cell, tie, projection)
    module = to_torch(model)
    assert (module.decoder.weight is module.encoder.weight) == tie
    xs = rng.integers(0, 13, (N, T))
    ts = rng.integers(0, 13, (N, T))
    ts[0, 0] = -1  # ignored target
    model.reset_state()
    loss = model.forward(xs, ts)
    model.backward()
    logits, _ = module(torch.tensor(xs))
    loss_t = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 13), torch.tensor(ts).reshape(-1), ignore_index=-1
    )
    loss_t.backward()
    close(loss, loss_t.item(), dtype)
    model.reset_state()
    close(model.predict(xs), logits.detach().numpy(), dtype)
    close(model.grads[0], module.encoder.weight.grad.numpy(), dtype)
    close(model.grads[-1], module.decoder.bias.grad.numpy(), dtype)
    if not tie:
        close(model.grads[-2], module.decoder.weight.grad.numpy().T, dtype)
    for k, layer in enumerate(model.stack.layers):
        for ours, theirs in zip(layer.grads, torch_grads_as_fastrnn(module.rnn, cell, f"_l{k}")):
            close(ours, theirs, dtype)


@pytest.mark.parametrize("cell, tie, projection", LM_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("via", ["module", "state_dict"])
def test_language_model_round_trip_exact(cell, tie, projection, dtype, via, rng):
    model = _lm(rng, dtype, cell, tie, projection)
    module = to_torch(model)
    back = from_torch(module if via == "module" else module.state_dict())
    assert back.tie_weights == tie and back.projection == projection and back.cell == cell
    assert len(back.params) == len(model.params)
    for a, b in zip(model.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_book_models_to_torch(rng):
    from fastrnn.models import BetterRnnlm, Rnnlm

    xs = rng.integers(0, 20, (2, 4))
    for model in (
        Rnnlm(20, 6, 7, seed=1, dtype=np.float64),
        BetterRnnlm(20, 6, 6, seed=1, dtype=np.float64),
    ):
        module = to_torch(model)
        module.eval()
        model.reset_state()
        close(model.predict(xs), module(torch.tensor(xs))[0].detach().numpy(), np.float64)


def test_word_language_model_state_dict(rng):
    """A state dict with the names of PyTorch's word_language_model example, written by hand."""
    torch.manual_seed(5)
    V, E, Hh = 9, 4, 4
    enc = torch.nn.Embedding(V, E, dtype=torch.float64)
    rnn = torch.nn.LSTM(E, Hh, 2, batch_first=True, dtype=torch.float64)
    dec = torch.nn.Linear(Hh, V, dtype=torch.float64)
    dec.weight = enc.weight  # tied
    state = {
        **{"encoder." + k: v for k, v in enc.state_dict().items()},
        **{"rnn." + k: v for k, v in rnn.state_dict().items()},
        **{"decoder." + k: v for k, v in dec.state_dict().items()},
    }
    model = from_torch(state)
    assert model.tie_weights
    xs = rng.integers(0, V, (2, 5))
    expect = dec(rnn(enc(torch.tensor(xs)))[0]).detach().numpy()
    close(model.predict(xs), expect, np.float64)
    del state["decoder.bias"]
    with pytest.raises(ValueError, match="read-out bias"):
        from_torch(state)
