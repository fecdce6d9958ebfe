"""export_numpy and the self-contained NumPy runtime it writes: the exported file, loaded on its
own, gives every supported model's scores (state carried across calls), perplexity and generated
words; it runs with fastrnn and SciPy unimportable; bad models, vocabularies and files are clear
errors."""

import json
import os

import numpy as np
import pytest
from conftest import import_numpy_runtime, run_numpy_runtime
from hypothesis import given, settings, strategies as st

import fastrnn
from fastrnn.interop import export_numpy
from fastrnn.models import BetterRnnlm, LanguageModel, Rnnlm
from fastrnn.train import evaluate_perplexity, generate

V = 40


MODELS = {
    **{
        f"{cell}-{conn}-{tie}": dict(cell=cell, connection=conn, tie=tie)
        for cell in ("lstm", "gru", "rnn")
        for conn in (None, "residual", "dense")
        for tie in ("untied", "tied", "projection")
    },
    "rnnlm": None,
    "better": None,
}


def _model(key, dtype=np.float64):
    if key == "rnnlm":
        return Rnnlm(V, 8, 8, seed=1, dtype=dtype)
    if key == "better":
        return BetterRnnlm(V, 8, 8, seed=1, dtype=dtype)
    spec = MODELS[key]
    H = 8 if spec["tie"] == "tied" else 12
    return LanguageModel(
        V,
        8,
        [H, H],
        cell=spec["cell"],
        connection=spec["connection"],
        tie_weights=spec["tie"] != "untied",
        projection=spec["tie"] == "projection",
        init_scale=0.5,  # scores far from zero: a relative comparison that means something
        seed=1,
        dtype=dtype,
    )


@pytest.mark.parametrize("key", list(MODELS))
def test_the_exported_runtime_computes_the_models_scores(tmp_path, key):
    model = _model(key)
    paths = export_numpy(model, tmp_path / "out")
    assert set(paths) == {"model", "runtime"}
    rt = import_numpy_runtime(tmp_path / "out")
    copy = rt.load(paths["model"])
    rng = np.random.default_rng(2)
    model.reset_state()
    for T in (5, 3):  # two calls: the state carried from the first into the second
        ids = rng.integers(0, V, (3, T))
        want = model.predict(ids, train_flg=False)
        got = copy.predict(ids)
        assert got.dtype == np.float64 and got.shape == (3, T, V)
        _close(got, want)
    copy.reset_state()
    model.reset_state()
    ids = rng.integers(0, V, (2, 4))
    _close(copy.predict(ids), model.predict(ids, train_flg=False))


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


def test_runtime_perplexity_and_generation_are_fastrnns(tmp_path):
    model = _model("lstm-residual-tied")
    rt = import_numpy_runtime(os.path.dirname(export_numpy(model, tmp_path)["runtime"]))
    copy = rt.load(tmp_path / "model.npz")
    ids = np.random.default_rng(3).integers(0, V, 300)
    want = evaluate_perplexity(model, ids, 64)
    for window in (1, 64, 512):
        np.testing.assert_allclose(rt.perplexity(copy, ids, window), want, rtol=1e-10)
    for kw in (dict(greedy=True), dict(temperature=0.7, seed=5), dict(seed=6, skip_ids=[0, 3])):
        expected = generate(model, 2, 25, **kw)
        assert rt.generate(copy, 2, 25, **kw) == expected
        if "skip_ids" in kw:
            assert not set(expected) & {0, 3}


def test_the_runtime_runs_without_fastrnn_or_scipy(tmp_path):
    """The exported directory alone, with fastrnn and SciPy unimportable: the command line's
    perplexity and text equal fastrnn's (float32, the kernels' rounding)."""
    model = _model("gru-dense-untied", np.float32)
    words = [f"w{i}" for i in range(V - 2)] + ["<eos>", "<unk>"]
    out = tmp_path / "bundle"
    export_numpy(model, out, words)
    assert json.loads((out / "vocab.json").read_text()) == words
    rng = np.random.default_rng(4)
    lines = [" ".join(f"w{i}" for i in rng.integers(0, V - 2, 9)) + " zebra" for _ in range(20)]
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n")
    text = run_numpy_runtime(out, "--perplexity", str(tmp_path / "text.txt"))
    index = {w: i for i, w in enumerate(words)}
    ids = [index.get(w, index["<unk>"]) for line in lines for w in (*line.split(), "<eos>")]
    want = evaluate_perplexity(model, np.array(ids))
    got = float(text.split()[1])
    assert abs(got - want) < 0.01, (text, want)
    sample = run_numpy_runtime(out, "--start", "w3", "--length", "12", "--seed", "7").split()
    expected = generate(model, index["w3"], 12, seed=7, skip_ids=[index["<unk>"]])
    assert sample == ["w3"] + [words[i] for i in expected if words[i] != "<eos>"]


def test_bad_models_vocabularies_and_files_are_clear_errors(tmp_path):
    model = _model("rnnlm")
    with pytest.raises(TypeError, match="BetterRnnlm, SequenceClassifier, got TimeLSTM"):
        export_numpy(fastrnn.TimeLSTM(*(p for p in model.params[1:4])), tmp_path)
    with pytest.raises(ValueError, match=f"vocab must be a list of {V} words"):
        export_numpy(model, tmp_path, ["a", "b"])
    rt = import_numpy_runtime(os.path.dirname(export_numpy(model, tmp_path / "ok")["runtime"]))
    assert rt.HEADER == fastrnn.io._HEADER  # (the runtime's copy of the file format's name)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz file"):
        rt.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="plain.npz: not a fastrnn model file"):
        rt.load(tmp_path / "plain.npz")
    fastrnn.save(tmp_path / "layer.npz", fastrnn.TimeLSTM(*model.params[1:4]))
    with pytest.raises(ValueError, match="layer.npz: a TimeLSTM; this runtime runs"):
        rt.load(tmp_path / "layer.npz")
    copy = rt.load(tmp_path / "ok" / "model.npz")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 40\)"):
        copy.predict(np.array([[0, 40]]))
    with pytest.raises(ValueError, match="2-D integer array"):
        copy.predict(np.zeros((2, 2)))


CLASSIFIERS = [
    dict(cell=cell, bidirectional=bi, merge=merge, connection=conn, pooling=pool)
    for cell in ("lstm", "gru", "rnn")
    for bi, merge in ((False, "concat"), (True, "concat"), (True, "sum"))
    for conn in (None, "residual", "dense", "highway")
    for pool in ("last", "mean", "max")
    if not (merge == "sum" and pool != "last")  # (sum with every pooling: a sample is enough)
]


@pytest.mark.parametrize(
    "spec",
    CLASSIFIERS,
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_the_exported_runtime_computes_a_classifiers_scores(tmp_path, spec):
    from fastrnn.models import SequenceClassifier

    model = SequenceClassifier(
        3, vocab_size=V, embed_size=6, hidden_sizes=[5, 5], dtype=np.float64, seed=1, **spec
    )
    rt = import_numpy_runtime(os.path.dirname(export_numpy(model, tmp_path)["runtime"]))
    copy = rt.load(tmp_path / "model.npz")
    rng = np.random.default_rng(5)
    x, lengths = rng.integers(0, V, (4, 7)), np.array([7, 1, 4, 6])
    _close(copy.predict(x, lengths), model.predict(x, lengths))
    _close(copy.predict(x), model.predict(x))


def test_a_classifier_on_dense_inputs_and_its_errors(tmp_path):
    from fastrnn.models import SequenceClassifier

    model = SequenceClassifier(2, input_size=4, hidden_sizes=8, cell="gru", dtype=np.float32)
    with pytest.raises(ValueError, match="dense inputs, not word ids"):
        export_numpy(model, tmp_path / "x", ["a", "b"])
    rt = import_numpy_runtime(os.path.dirname(export_numpy(model, tmp_path)["runtime"]))
    copy = rt.load(tmp_path / "model.npz")
    x = np.random.default_rng(6).standard_normal((3, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(copy.predict(x, [5, 2, 3]), model.predict(x, [5, 2, 3]), atol=1e-5)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        copy.predict(x, np.array([6, 1, 1]))
    with pytest.raises(ValueError, match="lengths must be 3 integers"):
        copy.predict(x, np.array([1, 2]))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    V=st.integers(1, 3000),
    scale=st.floats(0.01, 30.0),
    temperature=st.floats(0.05, 5.0),
    n_skip=st.integers(0, 3),
)
def test_next_word_draws_what_rng_choice_draws(seed, V, scale, temperature, n_skip):
    """Sampling without rng.choice's checks: the same word from the same generator state."""
    from fastrnn.interop.numpy_runtime import next_word

    data = np.random.default_rng(seed)
    scores = data.standard_normal(V) * scale
    skip = np.unique(data.integers(0, V, n_skip)) if n_skip < V else np.zeros(0, np.int64)
    z = scores.copy()
    z[skip] = -np.inf
    z = z / temperature
    p = np.exp(z - z.max())
    want = int(np.random.default_rng(seed + 1).choice(V, p=p / p.sum()))
    rng = np.random.default_rng(seed + 1)
    assert next_word(scores, rng, temperature, skip=skip) == want
    assert rng.random() == np.random.default_rng(seed + 1).random(2)[1]  # one number consumed


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    V=st.integers(1, 500),
    temperature=st.floats(0.2, 3.0),
    top_k=st.one_of(st.none(), st.integers(1, 600)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
)
def test_top_k_and_top_p_draw_from_the_truncated_distribution(seed, V, temperature, top_k, top_p):
    """The draw of rng.choice over the words a sort keeps: the top_k most likely, then the
    fewest most likely whose mass reaches top_p (no ties: continuous scores)."""
    from fastrnn.interop.numpy_runtime import next_word

    data = np.random.default_rng(seed)
    scores = data.standard_normal(V) * 3
    p = np.exp(scores / temperature - (scores / temperature).max())
    order = np.argsort(-p)
    keep = order[: top_k or V]
    if top_p is not None:
        mass = np.cumsum(p[keep]) / p[keep].sum()
        keep = keep[: int(np.argmax(mass >= top_p * (1 - 1e-12))) + 1]
    q = np.zeros(V)
    q[keep] = p[keep]
    want = int(np.random.default_rng(seed + 1).choice(V, p=q / q.sum()))
    got = next_word(
        scores.copy(), np.random.default_rng(seed + 1), temperature, False, None, top_k, top_p
    )
    assert got == want and got in set(keep.tolist())


def test_next_word_with_a_temperature_too_small_is_an_error():
    from fastrnn.interop.numpy_runtime import next_word

    with pytest.raises(ValueError, match="temperature too small"):
        next_word(np.array([1.0, 2.0]), np.random.default_rng(0), 1e-310)
