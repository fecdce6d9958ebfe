"""SequenceClassifier (finite differences for every pooling head, training with the optimizers,
bad input, save/load) and ``fastrnn classify`` (the demo: bidirectional beats unidirectional on
the built-in task; training on a labelled file; clear errors for bad files)."""

import json

import numpy as np
import pytest
from conftest import max_grad_error

import fastrnn
from fastrnn import classify, reference as ref
from fastrnn.cli import main
from fastrnn.layers import Stack
from fastrnn.models import SequenceClassifier
from fastrnn.train.optim import SGD, Adam

REF = {"rnn": ref.TimeRNN, "lstm": ref.TimeLSTM, "gru": ref.TimeGRU}
CLASSES, NOTE = classify.layer_classes()  # None: fastrnn's own layers take lengths
needs_fast = pytest.mark.skipif(CLASSES is not None, reason="fastrnn's layers take no lengths")
MODULES = [pytest.param(REF, id="reference"), pytest.param(None, id="fastrnn", marks=needs_fast)]


def model_of(classes, rng, pooling="last", vocab=7, hidden=(2, 3), **kw):
    encoder = Stack.create(
        "lstm",
        3,
        list(hidden),
        bidirectional=True,
        rng=rng,
        dtype=np.float64,
        classes=classes,
        **kw,
    )
    if vocab:
        return SequenceClassifier(
            3, vocab_size=vocab, embed_size=3, pooling=pooling, encoder=encoder,
            dtype=np.float64, seed=1,
        )  # fmt: skip
    return SequenceClassifier(
        3, input_size=3, pooling=pooling, encoder=encoder, dtype=np.float64, seed=1
    )


@pytest.mark.parametrize("classes", MODULES)
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_classifier_gradients(classes, pooling, rng):
    m = model_of(classes, rng, pooling)
    x = rng.integers(0, 7, (4, 5))
    labels = np.array([0, 2, 1, 1])
    lengths = np.array([5, 1, 2, 4])

    def f():
        return m.forward(x, labels, lengths)

    f()
    m.backward()
    assert max_grad_error(f, m.params, m.grads) < 1e-7


def test_classifier_dense_input_gradients(rng):
    m = model_of(REF, rng, "mean", vocab=None, hidden=(2, 2), connection="highway")
    x = rng.standard_normal((3, 4, 3))
    labels = np.array([2, 0, 1])
    lengths = np.array([4, 2, 1])

    def f():
        return m.forward(x, labels, lengths)

    f()
    m.backward()
    assert max_grad_error(f, m.params, m.grads) < 1e-7


@pytest.mark.parametrize("opt", [SGD(0.5), Adam(0.05)], ids=["sgd", "adam"])
def test_classifier_trains(opt, rng):
    m = SequenceClassifier(
        2, vocab_size=6, embed_size=4, hidden_sizes=[6], cell="gru", seed=0,
        encoder=None if CLASSES is None else Stack.create(
            "gru", 4, [6], bidirectional=True, rng=rng, classes=CLASSES,
            layer_kwargs={"reset_after": True},
        ),
    )  # fmt: skip
    x = rng.integers(0, 6, (16, 5))
    lengths = rng.integers(1, 6, 16)
    labels = (x[:, 0] % 2).astype(int)
    first = m.forward(x, labels, lengths)
    for _ in range(40):
        m.forward(x, labels, lengths)
        m.backward()
        fastrnn.clip_grads(m.grads, 5.0)
        opt.update(m.params, m.grads)
    assert m.forward(x, labels, lengths) < 0.5 * first
    assert (m.predict(x, lengths).argmax(1) == labels).mean() > 0.9


def test_classifier_bad_input(rng):
    m = model_of(REF, rng)
    x = rng.integers(0, 7, (2, 4))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        m.forward(x, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        m.forward(x, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        m.forward(x, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="labels must be integers"):
        m.forward(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="between 1 and T=4"):
        m.forward(x, np.array([0, 1]), np.array([5, 2]))
    with pytest.raises(ValueError, match="between 1 and T=4"):
        m.predict(x, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"word ids in \[0, 7\)"):
        m.predict(np.array([[1, 7]]))
    with pytest.raises(TypeError, match="integer word ids"):
        m.predict(np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="before forward"):
        model_of(REF, rng).backward()
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(2, vocab_size=5, embed_size=3, pooling="median")
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        SequenceClassifier(1, vocab_size=5, embed_size=3)
    with pytest.raises(ValueError, match="merge must be one of"):
        SequenceClassifier(2, vocab_size=5, embed_size=3, merge="avg")
    with pytest.raises(ValueError, match="connection must be one of"):
        SequenceClassifier(2, vocab_size=5, embed_size=3, connection="skip")


@needs_fast
def test_classifier_save_load(rng, tmp_path):
    m = SequenceClassifier(
        3, vocab_size=9, embed_size=4, hidden_sizes=[5, 5], cell="gru", connection="residual",
        pooling="max", dtype=np.float64, seed=2,
    )  # fmt: skip
    json.dumps(m.get_config())
    fastrnn.save(tmp_path / "c.npz", m)
    back = fastrnn.load(tmp_path / "c.npz")
    assert isinstance(back, SequenceClassifier) and back.pooling == "max"
    for a, b in zip(m.params, back.params):
        np.testing.assert_array_equal(a, b)
    x = rng.integers(0, 9, (3, 6))
    lengths = np.array([6, 1, 3])
    np.testing.assert_array_equal(m.predict(x, lengths), back.predict(x, lengths))
    with pytest.raises(ValueError, match="shape"):
        SequenceClassifier.from_config(m.get_config(), m.params[:-1] + [np.zeros(4)])


@needs_fast
@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_classifier_save_load_bidirectional_dense(pooling, dtype, rng, tmp_path):
    """Dense inputs, a bidirectional LSTM encoder (LastPool's split): exact round trip."""
    m = SequenceClassifier(
        4, input_size=3, hidden_sizes=[5, 6], cell="lstm", bidirectional=True, pooling=pooling,
        dropout=0.1, dtype=dtype, seed=3,
    )  # fmt: skip
    fastrnn.save(tmp_path / "c.npz", m)
    back = fastrnn.load(tmp_path / "c.npz")
    assert back.get_config() == m.get_config() and back.pool.get_config() == m.pool.get_config()
    for a, b in zip(m.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    x = rng.standard_normal((4, 7, 3)).astype(dtype)
    lengths = np.array([7, 1, 4, 2])
    np.testing.assert_array_equal(m.predict(x, lengths), back.predict(x, lengths))


# ---- the example ------------------------------------------------------------------------------


def test_demo_bidirectional_beats_unidirectional():
    lines = []
    result = classify.run_demo(epochs=2, seed=0, out=lines.append, train_size=1024, test_size=256)
    assert result["bidirectional"] >= 0.95
    assert result["unidirectional"] <= 0.45
    assert result["bidirectional"] - result["unidirectional"] > 0.5
    assert len(lines) == 3 and "bidirectional" in lines[2] and "accuracy" in lines[2]


def test_demo_data_is_what_it_says(rng):
    ids, labels, lengths = classify.demo_data(50, 10, 3, 8, rng)
    assert ids.shape == (50, 10) and lengths.min() >= 5 and lengths.max() <= 10
    np.testing.assert_array_equal(ids[:, 0], labels)
    assert labels.max() < 3 and ids.max() < 8
    assert all(not ids[n, L:].any() for n, L in enumerate(lengths))


def _write_corpus(path, rng, n=120):
    words = ["good", "bad", "fine", "awful", "movie", "plot", "the", "was", "very", "a"]
    lines = []
    for _ in range(n):
        label = rng.integers(0, 2)
        body = list(rng.choice(words[4:], rng.integers(2, 6)))
        body.insert(rng.integers(0, len(body) + 1), ["bad", "good"][label])
        lines.append(f"{['neg', 'pos'][label]}\t{' '.join(body)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("precision", ["highest", "medium"])
def test_classify_train_on_a_file(tmp_path, capsys, rng, precision):
    data = tmp_path / "corpus.tsv"
    _write_corpus(data, rng)
    run = tmp_path / "run"
    argv = ["classify", "train", "--data", str(data), "--epochs", "6", "--hidden", "8"]
    argv += ["--embed", "8", "--lr", "0.02", "--pooling", "max"]
    argv += ["--matmul-precision", precision]
    if CLASSES is None:
        argv += ["--save", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train accuracy" in out and "test accuracy" in out
    assert ("matmul_precision medium" in out.splitlines()[0]) == (precision == "medium"), out
    test_acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert test_acc >= 80.0
    if CLASSES is None:
        model = fastrnn.load(run / "model.npz")
        assert isinstance(model, SequenceClassifier)
        layers = []
        for layer in model.encoder.layers:  # (a Bidirectional: its two directions)
            if isinstance(layer, fastrnn.Bidirectional):
                layers += [layer.forward_layer, layer.backward_layer]
            else:
                layers.append(layer)
        assert layers and all(d.matmul_precision == precision for d in layers)


def test_classify_train_bad_files(tmp_path, capsys):
    missing = tmp_path / "nope.tsv"
    assert main(["classify", "train", "--data", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("pos\tfine movie\nno tab here\n", encoding="utf-8")
    assert main(["classify", "train", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "label<TAB>sentence" in err
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n", encoding="utf-8")
    assert main(["classify", "train", "--data", str(empty)]) == 2
    assert "no examples" in capsys.readouterr().err
    binary = tmp_path / "bin.tsv"
    binary.write_bytes(b"pos\t\xff\xfe\n")
    assert main(["classify", "train", "--data", str(binary)]) == 2
    assert "UTF-8" in capsys.readouterr().err
