"""fastrnn.interop.onnx: graphs of the standard RNN / LSTM / GRU operators that compute what
fastrnn computes (onnxruntime in float32 to rounding; ONNX's reference evaluator in float64 to
1e-10), and exact round trips back through import_onnx."""

import inspect
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from conftest import make_params

import fastrnn
from fastrnn.interop import export_onnx, import_onnx, onnx as fo

N, T, D, H = 3, 6, 4, 5
KINDS = ["rnn", "lstm", "gru", "gru_ra"]
has_relu = "nonlinearity" in inspect.signature(fastrnn.TimeRNN.__init__).parameters


def layer_of(kind, rng, dtype, D=D, H=H):
    params = make_params(kind, rng, D, H, dtype)
    if kind == "rnn":
        return fastrnn.TimeRNN(*params)
    if kind == "lstm":
        return fastrnn.TimeLSTM(*params)
    return fastrnn.TimeGRU(*params, reset_after=kind == "gru_ra")


def run_ort(path, feeds):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def run_reference(path, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(path)).run(None, feeds)[0]


def close(a, b, tol):
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_float32_equals_fastrnn(kind, rng, tmp_path):
    layer = layer_of(kind, rng, np.float32)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    out = run_ort(path, {"xs": xs})
    assert out.shape == (N, T, H) and out.dtype == np.float32
    close(out, layer.forward(xs), 2e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_float64_graph_equals_fastrnn_to_1e10(kind, rng, tmp_path):
    layer = layer_of(kind, rng, np.float64)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path)
    xs = rng.standard_normal((N, T, D))
    out = run_reference(path, {"xs": xs})
    assert out.dtype == np.float64
    close(out, layer.forward(xs), 1e-10)


def test_float64_layer_exported_as_float32_runs_in_onnxruntime(rng, tmp_path):
    layer = layer_of("lstm", rng, np.float64)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path, dtype=np.float32)
    xs = rng.standard_normal((N, T, D))
    out = run_ort(path, {"xs": xs.astype(np.float32)})
    close(out, layer.forward(xs), 1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_exact(kind, dtype, rng, tmp_path):
    layer = layer_of(kind, rng, dtype)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path)
    back = import_onnx(path)
    assert type(back) is type(layer)
    assert back.get_config() == layer.get_config()
    for a, b in zip(layer.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_graph_uses_the_standard_operators(rng, tmp_path):
    path = tmp_path / "m.onnx"
    model = export_onnx(layer_of("gru_ra", rng, np.float32), path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GRU") == 1 and ops.count("Transpose") == 2
    gru = next(n for n in model.graph.node if n.op_type == "GRU")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gru.attribute}
    assert attrs["linear_before_reset"] == 1 and attrs["direction"] == b"forward"
    onnx.checker.check_model(onnx.load(str(path)))


def test_sequence_lens(rng, tmp_path):
    layer = layer_of("lstm", rng, np.float32)
    path = tmp_path / "m.onnx"
    export_onnx(layer, path, sequence_lens=True)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    lens = np.array([T, 2, 4], np.int32)
    out = run_ort(path, {"xs": xs, "sequence_lens": lens})
    for i, L in enumerate(lens):
        close(out[i, :L], layer.forward(xs[i : i + 1, :L])[0], 2e-6)
        assert not np.any(out[i, L:])
    # full lengths: the same as without sequence_lens
    full = run_ort(path, {"xs": xs, "sequence_lens": np.full(N, T, np.int32)})
    close(full, layer.forward(xs), 2e-6)


@pytest.mark.skipif(not has_relu, reason="TimeRNN has no nonlinearity='relu' in this tree")
def test_relu_rnn(rng, tmp_path):
    Wx, Wh, b = make_params("rnn", rng, D, H, np.float32)
    layer = fastrnn.TimeRNN(Wx, Wh, b, nonlinearity="relu")
    path = tmp_path / "m.onnx"
    export_onnx(layer, path)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    close(run_ort(path, {"xs": xs}), layer.forward(xs), 2e-6)
    assert import_onnx(path).get_config()["nonlinearity"] == "relu"


def test_cells_refused(rng, tmp_path):
    cell = fastrnn.LSTM(*make_params("lstm", rng, D, H, np.float32))
    with pytest.raises(TypeError, match="time layers"):
        export_onnx(cell, tmp_path / "c.onnx")
    with pytest.raises(TypeError, match="cannot export"):
        export_onnx(object(), tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()


def _edit(path, fn):
    model = onnx.load(str(path))
    fn(model)
    onnx.save(model, str(path))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_stack_with_sequence_lens(kind, merge, rng, tmp_path):
    """A Stack of two Bidirectional layers: direction="bidirectional" operators fed
    sequence_lens; onnxruntime equals fastrnn with lengths (float32 rounding); import_onnx gives
    back the same Stack exactly."""
    from fastrnn.layers import Bidirectional, Stack

    kw = {"reset_after": kind == "gru_ra"} if kind.startswith("gru") else {}
    cell = "gru" if kind.startswith("gru") else kind
    stack = Stack.create(cell, D, [H, H], bidirectional=True, merge=merge, rng=rng,
                         layer_kwargs=kw)  # fmt: skip
    path = tmp_path / "bi.onnx"
    export_onnx(stack, path, sequence_lens=True)
    ops = [n for n in onnx.load(str(path)).graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
    assert all(fo._attrs(n)["direction"] == b"bidirectional" for n in ops) and len(ops) == 2
    xs = rng.standard_normal((4, T, D)).astype(np.float32)
    lens = np.array([T, 2, 5, 1], np.int32)
    close(run_ort(path, {"xs": xs, "sequence_lens": lens}), stack.forward(xs, lens), 2e-6)
    back = import_onnx(path)
    assert isinstance(back, Stack) and all(isinstance(x, Bidirectional) for x in back.layers)
    assert back.layers[0].merge == merge
    for a, b in zip(stack.params, back.params):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "gru_ra"])
def test_reverse_layer(kind, rng, tmp_path):
    params = make_params(kind, rng, D, H, np.float32)
    cls = fastrnn.TimeLSTM if kind == "lstm" else fastrnn.TimeGRU
    layer = cls(*params, reverse=True, **({} if kind == "lstm" else {"reset_after": True}))
    path = tmp_path / "r.onnx"
    export_onnx(layer, path, sequence_lens=True)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    lens = np.array([T, 1, 4], np.int32)
    close(run_ort(path, {"xs": xs, "sequence_lens": lens}), layer.forward(xs, lens), 2e-6)
    back = import_onnx(path)
    assert back.reverse
    for a, b in zip(layer.params, back.params):
        np.testing.assert_array_equal(a, b)


def test_import_refuses_bidirectional_with_one_direction_of_weights(rng, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(layer_of("lstm", rng, np.float32), path)

    def bidir(model):
        node = next(n for n in model.graph.node if n.op_type == "LSTM")
        for a in node.attribute:
            if a.name == "direction":
                a.s = b"bidirectional"

    _edit(path, bidir)
    with pytest.raises(ValueError, match=r"direction bidirectional\) W / R must be \[2,"):
        import_onnx(path)


def test_import_refuses_unknown_operator_and_peepholes(rng, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(layer_of("lstm", rng, np.float32), path)

    def relu(model):
        model.graph.node.append(onnx.helper.make_node("Relu", ["hs"], ["r"], name="extra"))

    _edit(path, relu)
    with pytest.raises(ValueError, match="Relu"):
        import_onnx(path)

    export_onnx(layer_of("lstm", rng, np.float32), path)

    def peep(model):
        node = next(n for n in model.graph.node if n.op_type == "LSTM")
        while len(node.input) < 8:
            node.input.append("")
        node.input[7] = "P"
        model.graph.initializer.append(
            onnx.numpy_helper.from_array(np.zeros((1, 3 * H), np.float32), "P")
        )

    _edit(path, peep)
    with pytest.raises(ValueError, match="peephole"):
        import_onnx(path)


def test_import_refuses_mis_shaped_weights(rng, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(layer_of("gru", rng, np.float32), path)

    def shrink(model):
        for t in model.graph.initializer:
            if t.name == "l0_R":
                arr = onnx.numpy_helper.to_array(t)[:, :-1]
                t.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(arr), "l0_R"))

    _edit(path, shrink)
    with pytest.raises(ValueError, match="l0_Y_GRU"):
        import_onnx(path)


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"fastrnn\[onnx\]"):
        fo._onnx()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_and_affine(dtype, rng, tmp_path):
    emb = fastrnn.TimeEmbedding(rng.standard_normal((11, D)).astype(dtype))
    aff = fastrnn.TimeAffine(
        rng.standard_normal((D, 7)).astype(dtype), rng.standard_normal(7).astype(dtype)
    )
    ids = rng.integers(0, 11, (N, T))
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    for obj, feed, expect in (
        (emb, {"ids": ids}, emb.forward(ids)),
        (aff, {"xs": xs}, aff.forward(xs)),
    ):
        path = tmp_path / "m.onnx"
        export_onnx(obj, path)
        out = run_ort(path, feed)
        close(out, expect, 1e-10 if dtype == np.float64 else 2e-6)
        back = import_onnx(path)
        assert type(back) is type(obj)
        for a, b in zip(obj.params, back.params):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_import_names_the_add_node_of_a_mis_shaped_bias(rng, tmp_path):
    aff = fastrnn.TimeAffine(
        rng.standard_normal((D, 7)).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    )
    path = tmp_path / "m.onnx"
    export_onnx(aff, path)

    def widen(model):
        add = next(n for n in model.graph.node if n.op_type == "Add")
        name = next(i for i in add.input if i in {t.name for t in model.graph.initializer})
        for t in model.graph.initializer:
            if t.name == name:
                t.CopyFrom(onnx.numpy_helper.from_array(np.zeros(9, np.float32), name))

    _edit(path, widen)
    with pytest.raises(ValueError, match=r"MatMul node .* and its bias, Add node .*: b must"):
        import_onnx(path)


# ---- stacks and language models ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_stack_chained_time_major(kind, rng, tmp_path):
    layers = [
        layer_of(kind, rng, np.float32),
        layer_of(kind, rng, np.float32, D=H),
        layer_of(kind, rng, np.float32, D=H),
    ]
    stack = fastrnn.Stack(layers, dropout=0.3)
    stack.train_flg = False
    path = tmp_path / "s.onnx"
    model = export_onnx(stack, path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Transpose") == 2  # once in, once out: chained time-major
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    close(run_ort(path, {"xs": xs}), stack.forward(xs), 2e-6)
    back = import_onnx(path)
    assert isinstance(back, fastrnn.Stack) and back.dropout == 0.3
    for a, b in zip(stack.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_stack_float64_reference_evaluator(rng, tmp_path):
    stack = fastrnn.Stack(
        [layer_of("lstm", rng, np.float64), layer_of("gru_ra", rng, np.float64, D=H)]
    )
    path = tmp_path / "s.onnx"
    export_onnx(stack, path)
    xs = rng.standard_normal((N, T, D))
    close(run_reference(path, {"xs": xs}), stack.forward(xs), 1e-10)


def _lm(dtype, cell="lstm", tie=False, projection=False):
    from fastrnn.models import LanguageModel

    hidden = 6 if (not tie or projection) else 5
    return LanguageModel(
        13,
        5,
        [hidden, hidden],
        cell=cell,
        tie_weights=tie,
        projection=projection,
        dropout=0.2,
        init_scale=0.5,
        dtype=dtype,
        seed=4,
    )


def _perplexity(logits, ts):
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(logp, ts[..., None], axis=-1)
    return float(np.exp(nll.mean()))


@pytest.mark.parametrize(
    "cell, tie, projection",
    [("lstm", False, False), ("lstm", True, False), ("gru", True, True), ("rnn", False, False)],
)
def test_language_model_perplexity_in_onnxruntime(cell, tie, projection, rng, tmp_path):
    model = _lm(np.float32, cell, tie, projection)
    path = tmp_path / "lm.onnx"
    graph = export_onnx(model, path)
    assert [o.name for o in graph.graph.output] == ["logits"]
    xs = rng.integers(0, 13, (4, 8))
    ts = rng.integers(0, 13, (4, 8))
    model.reset_state()
    ppl_fastrnn = float(np.exp(model.forward(xs, ts, train_flg=False)))
    logits = run_ort(path, {"ids": xs.astype(np.int64)})
    model.reset_state()
    close(logits, model.predict(xs), 2e-5)
    assert ppl_fastrnn > 5  # an untrained model: near the vocabulary size
    assert abs(_perplexity(logits, ts) - ppl_fastrnn) <= 1e-5 * ppl_fastrnn


@pytest.mark.parametrize(
    "cell, tie, projection", [("lstm", False, False), ("lstm", True, False), ("gru", True, True)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_language_model_round_trip_exact(cell, tie, projection, dtype, tmp_path):
    model = _lm(dtype, cell, tie, projection)
    path = tmp_path / "lm.onnx"
    export_onnx(model, path)
    back = import_onnx(path)
    assert type(back) is type(model) and back.get_config() == model.get_config()
    assert len(back.params) == len(model.params)
    for a, b in zip(model.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    if tie:
        assert np.shares_memory(back.affine.params[0], back.params[0])  # tied again


def test_book_models_round_trip(rng, tmp_path):
    from fastrnn.models import BetterRnnlm, Rnnlm

    for model in (Rnnlm(20, 6, 7, seed=1), BetterRnnlm(20, 6, 6, seed=1)):
        path = tmp_path / "b.onnx"
        export_onnx(model, path)
        back = import_onnx(path)
        assert type(back) is type(model)
        for a, b in zip(model.params, back.params):
            assert np.array_equal(a, b)
        xs = rng.integers(0, 20, (2, 5))
        model.reset_state()
        close(run_ort(path, {"ids": xs}), model.predict(xs), 2e-5)


def test_metadata_that_does_not_fit_is_refused(tmp_path):
    model = _lm(np.float32)
    path = tmp_path / "lm.onnx"
    export_onnx(model, path)

    def lie(m):
        for p in m.metadata_props:
            if p.key == "fastrnn.config":
                p.value = p.value.replace('"vocab_size": 13', '"vocab_size": 14')

    _edit(path, lie)
    with pytest.raises(ValueError, match="do not fit"):
        import_onnx(path)


# ---- SequenceClassifier: encoder + pooling over valid steps + affine -> logits -----------------


def classifier(pooling, bidirectional, vocab, dtype, cell="gru"):
    from fastrnn.models import SequenceClassifier

    inputs = {"vocab_size": 12, "embed_size": 4} if vocab else {"input_size": D}
    return SequenceClassifier(3, hidden_sizes=[5, 4], cell=cell, bidirectional=bidirectional,
                              pooling=pooling, dtype=dtype, seed=1, **inputs)  # fmt: skip


def classifier_inputs(model, rng, dtype):
    lens = np.array([7, 2, 5, 1])
    if model.vocab_size is not None:
        return "ids", rng.integers(0, 12, (4, 7)), lens
    return "xs", rng.standard_normal((4, 7, D)).astype(dtype), lens


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [True, False], ids=["bi", "uni"])
@pytest.mark.parametrize("vocab", [True, False], ids=["ids", "dense"])
def test_classifier_logits_in_onnxruntime(pooling, bidirectional, vocab, rng, tmp_path):
    """The classifier's inference graph (embedding, recurrent operators fed sequence_lens, the
    pooling over each row's valid steps, affine) gives predict's logits in onnxruntime to float32
    rounding; import_onnx rebuilds the same classifier exactly."""
    from fastrnn.models import SequenceClassifier

    model = classifier(pooling, bidirectional, vocab, np.float32)
    path = tmp_path / "clf.onnx"
    export_onnx(model, path)  # a pooling head makes sequence_lens a graph input by itself
    name, x, lens = classifier_inputs(model, rng, np.float32)
    got = run_ort(path, {name: x, "sequence_lens": lens.astype(np.int32)})
    want = model.predict(x, lens)
    assert got.shape == want.shape == (4, 3)
    close(got, want, 2e-6)
    back = import_onnx(path)
    assert isinstance(back, SequenceClassifier) and back.get_config() == model.get_config()
    for a, b in zip(model.params, back.params):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict(x, lens), want)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_classifier_float64_reference_evaluator(pooling, cell, rng, tmp_path):
    """In float64 (ONNX's reference evaluator) the graph gives predict's logits to 1e-10.  The
    evaluator's recurrent operators ignore sequence_lens (onnx 1.x), so the encoder is
    forward-only: its valid steps do not depend on the padding, which the pooling must skip."""
    model = classifier(pooling, False, True, np.float64, cell=cell)
    path = tmp_path / "clf64.onnx"
    export_onnx(model, path, opset=18)  # ReduceMax with its axes as an input
    name, x, lens = classifier_inputs(model, rng, np.float64)
    got = run_reference(path, {name: x, "sequence_lens": lens.astype(np.int32)})
    close(got, model.predict(x, lens), 1e-10)


def test_classifier_export_refusals(rng, tmp_path):
    from fastrnn.models import SequenceClassifier

    model = SequenceClassifier(2, input_size=D, hidden_sizes=[5, 5], connection="residual")
    with pytest.raises(ValueError, match="connection='residual'"):
        export_onnx(model, tmp_path / "res.onnx")
    model = classifier("max", False, True, np.float32)
    path = tmp_path / "clf.onnx"
    export_onnx(model, path)
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    onnx.save(graph, str(path))
    with pytest.raises(ValueError, match="pooling head"):
        import_onnx(path)
