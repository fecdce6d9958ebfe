"""A trained classifier in use: ``TextClassifier`` (sentences in, labels out; saved and loaded as
a directory), ``fastrnn classify train --save / predict / eval / export``, and the exported
NumPy-only runtime labelling a file with fastrnn unimportable.  Bad files, flags and inputs are
clear errors that name what is wrong."""

import importlib.util
import json
import os

import numpy as np
import pytest
from conftest import run_numpy_runtime

import fastrnn
from fastrnn.classify import (
    PAD,
    UNK,
    TextClassifier,
    build_model,
    read_sentences,
    read_word_vectors,
    train_classifier,
    vocabulary,
)
from fastrnn.cli import main
from fastrnn.models import SequenceClassifier

WORDS = ["movie", "plot", "the", "was", "very", "a"]
SETTINGS = {"cell": "gru", "embed": 8, "hidden": 8, "layers": 2, "pooling": "mean"}


def _examples(rng, n=160):
    """Sentiment by one cue word, placed anywhere among filler words."""
    out = []
    for _ in range(n):
        label = int(rng.integers(0, 3))
        body = list(rng.choice(WORDS, rng.integers(2, 6)))
        body.insert(rng.integers(0, len(body) + 1), ["bad", "good", "fine"][label])
        out.append((["neg", "pos", "mid"][label], body))
    return out


def _write(path, examples):
    path.write_text("".join(f"{lab}\t{' '.join(ws)}\n" for lab, ws in examples), encoding="utf-8")


@pytest.fixture(scope="module")
def trained():
    """A TextClassifier trained in-process on the cue-word task (3 labels)."""
    rng = np.random.default_rng(0)
    examples = _examples(rng)
    words = vocabulary(examples)
    labels = ["mid", "neg", "pos"]
    model = build_model(True, SETTINGS, len(words), len(labels), seed=1)
    clf = TextClassifier(model, words, labels, max_len=12)
    ids, lengths, unknown = clf.encode([ws for _, ws in examples])
    assert unknown == 0
    y = clf.label_ids([lab for lab, _ in examples])
    train_classifier(model, ids, y, lengths, epochs=8, batch_size=16, lr=0.03, seed=2)
    return clf, examples


# ---- the vocabulary and encoding --------------------------------------------------------------


def test_vocabulary_order_min_count_and_reserved_words():
    examples = [("a", ["x", "y", "x", UNK]), ("b", ["z", "y", "x", PAD])]
    assert vocabulary(examples) == [PAD, UNK, "x", "y", "z"]  # by count, ties by string
    assert vocabulary(examples, min_count=2) == [PAD, UNK, "x", "y"]


def test_encode_pads_cuts_and_reads_unknown_words_as_unk(trained):
    clf, _ = trained
    ids, lengths, unknown = clf.encode(["good movie zebra", ["the"] * 20, "okapi"])
    i = clf.word_to_id
    assert ids.dtype == np.int64 and ids.shape == (3, 12)  # max_len 12 cut the long one
    np.testing.assert_array_equal(lengths, [3, 12, 1])
    np.testing.assert_array_equal(ids[0, :3], [i["good"], i["movie"], 1])
    assert not ids[0, 3:].any() and not ids[2, 1:].any() and ids[2, 0] == 1
    assert unknown == 2


def test_it_learned_the_task_and_predicts_names(trained):
    clf, examples = trained
    sentences = [ws for _, ws in examples]
    guessed = clf.predict(sentences)
    assert np.mean([g == lab for g, (lab, _) in zip(guessed, examples)]) > 0.9
    assert clf.predict(["the movie was good", "a bad plot", "fine"]) == ["pos", "neg", "mid"]
    p = clf.probabilities(sentences[:7])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    s = clf.scores(sentences[:7])
    np.testing.assert_array_equal(p.argmax(axis=1), s.argmax(axis=1))


def test_batches_give_the_scores_of_one_call(trained):
    clf, examples = trained
    sentences = [ws for _, ws in examples[:50]]
    one = clf.scores(sentences, batch_size=1000)
    np.testing.assert_allclose(clf.scores(sentences, batch_size=7), one, rtol=1e-5, atol=1e-6)


def test_evaluate_counts_what_predict_says(trained):
    clf, examples = trained
    rng = np.random.default_rng(5)
    # some rows with a wrong label, so that every count is exercised
    noisy = [(lab if rng.random() > 0.3 else "neg", ws) for lab, ws in examples]
    result = clf.evaluate(noisy)
    guessed = clf.predict([ws for _, ws in noisy])
    truth = [lab for lab, _ in noisy]
    assert result["examples"] == len(noisy) and result["unknown_words"] == 0
    assert result["accuracy"] == pytest.approx(np.mean([g == t for g, t in zip(guessed, truth)]))
    for name in clf.labels:
        hit = sum(g == t == name for g, t in zip(guessed, truth))
        said, real = guessed.count(name), truth.count(name)
        m = result["labels"][name]
        assert m["support"] == real
        assert m["precision"] == pytest.approx(hit / said)
        assert m["recall"] == pytest.approx(hit / real)
        assert m["f1"] == pytest.approx(2 * hit / (said + real))
    assert np.sum(result["confusion"]) == len(noisy)
    assert np.trace(result["confusion"]) == round(result["accuracy"] * len(noisy))


def test_bad_inputs_are_clear_errors(trained):
    clf, _ = trained
    with pytest.raises(ValueError, match=r"sentences\[1\] is empty"):
        clf.predict(["good", ""])
    with pytest.raises(ValueError, match="nothing to classify"):
        clf.predict([])
    with pytest.raises(ValueError, match="label 'great' is not one of"):
        clf.evaluate([("great", ["good"])])
    model = clf.model
    with pytest.raises(ValueError, match="words must start with"):
        TextClassifier(model, ["x", PAD] + clf.words[2:], clf.labels)
    with pytest.raises(ValueError, match="words: 3 words, but the model reads"):
        TextClassifier(model, [PAD, UNK, "x"], clf.labels)
    with pytest.raises(ValueError, match="labels: 2 names, but the model has 3"):
        TextClassifier(model, clf.words, ["a", "b"])
    with pytest.raises(ValueError, match="labels must be unique"):
        TextClassifier(model, clf.words, ["a", "b", "a"])
    with pytest.raises(ValueError, match="max_len"):
        TextClassifier(model, clf.words, clf.labels, max_len=0)
    with pytest.raises(TypeError, match="SequenceClassifier over word ids"):
        TextClassifier(SequenceClassifier(2, input_size=3, hidden_sizes=[4]), [PAD, UNK], "ab")


# ---- saved and loaded -------------------------------------------------------------------------


def test_save_and_load_give_the_same_classifier(tmp_path, trained):
    clf, examples = trained
    clf.save(tmp_path / "run", record={"note": "x"})
    assert sorted(os.listdir(tmp_path / "run")) == ["classifier.json", "model.npz", "vocab.json"]
    record = json.loads((tmp_path / "run" / "classifier.json").read_text())
    assert record == {"note": "x", "labels": clf.labels, "max_len": 12}
    for where in (tmp_path / "run", tmp_path / "run" / "model.npz"):
        back = TextClassifier.load(where)
        assert back.words == clf.words and back.labels == clf.labels and back.max_len == 12
        sentences = [ws for _, ws in examples[:30]] + [["good"] * 30]
        np.testing.assert_array_equal(back.scores(sentences), clf.scores(sentences))


def test_loading_a_damaged_directory_names_what_is_wrong(tmp_path, trained):
    clf, _ = trained
    with pytest.raises(FileNotFoundError, match="no such directory"):
        TextClassifier.load(tmp_path / "nope")
    clf.save(tmp_path / "run")
    os.remove(tmp_path / "run" / "vocab.json")
    with pytest.raises(FileNotFoundError, match="missing .*vocab.json"):
        TextClassifier.load(tmp_path / "run")
    (tmp_path / "run" / "vocab.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="vocab.json: unreadable vocabulary"):
        TextClassifier.load(tmp_path / "run")
    (tmp_path / "run" / "vocab.json").write_text(json.dumps(clf.words[:-1]))
    with pytest.raises(ValueError, match="but the model reads"):
        TextClassifier.load(tmp_path / "run")
    (tmp_path / "run" / "vocab.json").write_text(json.dumps(clf.words))
    (tmp_path / "run" / "classifier.json").write_text('{"max_len": 3}')
    with pytest.raises(ValueError, match="a dict with 'labels'"):
        TextClassifier.load(tmp_path / "run")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        clf.save(tmp_path / "plain")


# ---- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """`fastrnn classify train --save` on a written corpus: (directory, examples, tmp dir)."""
    tmp = tmp_path_factory.mktemp("classify")
    examples = _examples(np.random.default_rng(1), 200)
    _write(tmp / "corpus.tsv", examples)
    argv = ["classify", "train", "--data", str(tmp / "corpus.tsv"), "--epochs", "6"]
    argv += ["--hidden", "8", "--embed", "8", "--lr", "0.03", "--cell", "gru"]
    argv += ["--save", str(tmp / "run")]
    assert main(argv) == 0
    return tmp / "run", examples, tmp


def test_train_saves_a_record_of_the_run(saved_run, capsys):
    run, _, tmp = saved_run
    record = json.loads((run / "classifier.json").read_text())
    assert record["labels"] == ["mid", "neg", "pos"] and record["max_len"] == 200
    assert record["settings"]["cell"] == "gru" and record["settings"]["epochs"] == 6
    assert len(record["losses"]) == 6 and record["losses"][-1] < record["losses"][0]
    assert record["test_accuracy"] >= 0.8 and record["data"] == str(tmp / "corpus.tsv")
    assert isinstance(fastrnn.load(run / "model.npz"), SequenceClassifier)


def test_predict_prints_the_labelled_format(saved_run, capsys, monkeypatch):
    run, _, tmp = saved_run
    (tmp / "s.txt").write_text("the movie was good\n\na bad plot zebra\nfine\n")
    assert main(["classify", "predict", "--model", str(run), str(tmp / "s.txt")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["pos\tthe movie was good", "neg\ta bad plot zebra", "mid\tfine"]
    # the output is a labelled file: eval reads it back at 100 %
    (tmp / "back.tsv").write_text("\n".join(out) + "\n")
    assert main(["classify", "eval", "--model", str(run), "--data", str(tmp / "back.tsv")]) == 0
    out = capsys.readouterr().out
    assert "accuracy 100.0% of 3 examples, words outside the vocabulary read as <unk>: 1" in out
    monkeypatch.setattr("sys.stdin", open(tmp / "s.txt", encoding="utf-8"))
    assert main(["classify", "predict", "--model", str(run), "--probabilities"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["pos", "neg", "mid"]
    assert all(0.34 < float(r[1]) <= 1 for r in rows)


def test_predict_refuses_standard_input_that_is_not_utf8(saved_run, capsys, monkeypatch):
    run, _, tmp = saved_run
    (tmp / "latin.txt").write_bytes("a good movie\ncaf\xe9 bad\n".encode("latin-1"))
    # decoded with replacements by the locale's stream, the word would read as 'caf\ufffd'
    with open(tmp / "latin.txt", encoding="utf-8", errors="replace") as stdin:
        monkeypatch.setattr("sys.stdin", stdin)
        assert main(["classify", "predict", "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert "standard input: not UTF-8 text" in err


def test_eval_prints_and_writes_what_evaluate_gives(saved_run, capsys):
    run, examples, tmp = saved_run
    argv = ["classify", "eval", "--model", str(run), "--data", str(tmp / "corpus.tsv")]
    assert main(argv + ["--json", str(tmp / "ev.json")]) == 0
    out = capsys.readouterr().out
    want = TextClassifier.load(run).evaluate(examples)
    written = json.loads((tmp / "ev.json").read_text())
    assert written["accuracy"] == want["accuracy"] and written["confusion"] == want["confusion"]
    assert written["label_order"] == ["mid", "neg", "pos"]
    assert f"accuracy {want['accuracy']:.1%} of 200 examples" in out
    assert "precision" in out and "neg" in out


def test_the_exported_directory_labels_a_file_without_fastrnn(saved_run, capsys):
    run, examples, tmp = saved_run
    out = tmp / "bundle"
    assert main(["classify", "export", "--model", str(run), "--numpy", str(out)]) == 0
    assert "--classify FILE" in capsys.readouterr().out
    sentences = [" ".join(ws) for _, ws in examples[:40]] + ["zebra okapi good"]
    (tmp / "many.txt").write_text("\n".join(sentences) + "\n")
    stdout = run_numpy_runtime(out, "--classify", str(tmp / "many.txt"))
    want = TextClassifier.load(run).predict(sentences)
    assert stdout.splitlines() == [f"{lab}\t{s}" for lab, s in zip(want, sentences)]


def test_export_to_onnx_gives_the_scores(saved_run, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run, examples, tmp = saved_run
    path = tmp / "clf.onnx"
    assert main(["classify", "export", "--model", str(run), "--onnx", str(path)]) == 0
    clf = TextClassifier.load(run)
    ids, lengths, _ = clf.encode([ws for _, ws in examples[:20]])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"ids": ids, "sequence_lens": lengths.astype(np.int32)})
    np.testing.assert_allclose(got, clf.model.predict(ids, lengths), rtol=1e-4, atol=1e-5)


def test_export_to_keras_gives_the_scores(saved_run, capsys):
    os.environ.setdefault("KERAS_BACKEND", "torch")  # (before Keras is first imported)
    pytest.importorskip("keras")
    run, examples, tmp = saved_run
    path = tmp / "clf.keras"
    assert main(["classify", "export", "--model", str(run), "--keras", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out and not list(tmp.glob(".clf.keras*"))
    import keras

    clf = TextClassifier.load(run)
    ids, lengths, _ = clf.encode([ws for _, ws in examples[:20]])
    got = keras.ops.convert_to_numpy(keras.saving.load_model(path)(ids))
    np.testing.assert_allclose(got, clf.model.predict(ids, lengths), rtol=1e-4, atol=1e-5)


def test_command_line_errors_name_the_flag_or_file(saved_run, tmp_path, capsys):
    run, _, tmp = saved_run
    corpus = str(tmp / "corpus.tsv")
    (tmp_path / "file").write_text("x")
    cases = [
        (["train", "--data", corpus, "--save", str(tmp_path / "file")], "exists and is not a dir"),
        (["train", "--data", corpus, "--save", str(tmp_path / "m.npz")], "names a directory"),
        (["predict", "--model", str(tmp_path / "nope")], "no such directory"),
        (["predict", "--model", str(run), corpus], "holds a tab"),
        (["predict", "--model", str(run), str(tmp_path / "none.txt")], "none.txt: no such file"),
        (["eval", "--model", str(run), "--data", str(tmp_path / "file")], "label<TAB>sentence"),
        (["eval", "--model", str(run), "--data", corpus, "--json", "/no/dir/x.json"], "--json"),
        (["export", "--model", str(run)], "give --numpy DIR, --onnx FILE"),
        (["export", "--model", str(run), "--numpy", str(tmp_path / "file")], "not a directory"),
        (["export", "--model", str(run), "--onnx", str(tmp_path)], "is a directory"),
        (["export", "--model", str(run), "--keras", str(tmp_path / "m.h5")], "must end in .keras"),
    ]
    for argv, message in cases:
        assert main(["classify", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and f"fastrnn classify {argv[0]}: error:" in err, (argv, err)
    assert not os.path.exists(tmp_path / "m.npz")  # the check came before any training
    (tmp_path / "other.tsv").write_text("great\tgood movie\n")
    argv = ["classify", "eval", "--model", str(run), "--data", str(tmp_path / "other.tsv")]
    assert main(argv) == 2
    assert "label 'great' is not one of" in capsys.readouterr().err


def test_read_sentences_skips_blank_lines_and_names_the_file(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("a b\n\n  \nc\n")
    assert read_sentences(p) == [["a", "b"], ["c"]]
    p.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no sentences"):
        read_sentences(p)
    p.write_bytes(b"\xff\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_sentences(p)


def test_the_runtime_refuses_a_changed_batch_size_with_state_carried(tmp_path):
    from fastrnn.interop import export_numpy
    from fastrnn.models import LanguageModel

    model = LanguageModel(20, 8, [8], seed=0, dtype=np.float64)
    export_numpy(model, tmp_path)
    spec = importlib.util.spec_from_file_location("fastrnn_numpy_bs", tmp_path / "fastrnn_numpy.py")
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    copy = rt.load(tmp_path / "model.npz")
    copy.predict(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="batch size 3 does not match the carried state's 2"):
        copy.predict(np.zeros((3, 3), np.int64))
    model.predict(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="batch size 3"):  # fastrnn's own refusal, the same
        model.predict(np.zeros((3, 3), np.int64))
    copy.reset_state()
    assert copy.predict(np.zeros((3, 3), np.int64)).shape == (3, 3, 20)


def test_fit_text_classifier_is_what_the_command_trains(tmp_path, capsys):
    """`classify train --test FILE --save DIR` and fit_text_classifier on the same examples and
    settings: the same classifier, bit for bit; sentences given as strings train the same."""
    from fastrnn.classify import fit_text_classifier, read_labelled

    rng = np.random.default_rng(7)
    _write(tmp_path / "train.tsv", _examples(rng, 90))
    _write(tmp_path / "test.tsv", _examples(rng, 20))
    argv = ["classify", "train", "--data", str(tmp_path / "train.tsv"), "--test"]
    argv += [str(tmp_path / "test.tsv"), "--epochs", "3", "--hidden", "8", "--embed", "8"]
    argv += ["--cell", "rnn", "--pooling", "max", "--seed", "4", "--save", str(tmp_path / "run")]
    assert main(argv) == 0
    saved = TextClassifier.load(tmp_path / "run")
    examples = read_labelled(tmp_path / "train.tsv")
    settings = dict(cell="rnn", pooling="max", hidden=8, embed=8, seed=4)
    seen = []
    clf, losses = fit_text_classifier(
        examples, 3, on_epoch=lambda e, x: seen.append((e, x)), **settings
    )
    assert [e for e, _ in seen] == [1, 2, 3] and [x for _, x in seen] == losses
    record = json.loads((tmp_path / "run" / "classifier.json").read_text())
    assert record["losses"] == losses
    sentences = [ws for _, ws in examples]
    np.testing.assert_array_equal(clf.scores(sentences), saved.scores(sentences))
    as_text = [(lab, " ".join(ws)) for lab, ws in examples]
    again, _ = fit_text_classifier(as_text, 3, **settings)
    np.testing.assert_array_equal(again.scores(sentences), clf.scores(sentences))
    with pytest.raises(ValueError, match="at least 2"):
        fit_text_classifier([("a", "x y")], 1)


# ---- pretrained word vectors ------------------------------------------------------------------


def _vectors_file(path, words, size=6, header=False, seed=0):
    rng = np.random.default_rng(seed)
    table = {w: rng.standard_normal(size).astype(np.float32) for w in words}
    lines = [f"{len(table)} {size}"] if header else []
    lines += [w + " " + " ".join(f"{x:.6f}" for x in v) for w, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {w: np.array([float(f"{x:.6f}") for x in v], np.float32) for w, v in table.items()}


@pytest.mark.parametrize("header", [False, True])
def test_read_word_vectors_reads_glove_and_word2vec_text(tmp_path, header):
    want = _vectors_file(tmp_path / "v.txt", ["good", "bad", "movie", "zebra"], header=header)
    got = read_word_vectors(tmp_path / "v.txt")
    assert set(got) == set(want)
    for w in want:
        assert got[w].dtype == np.float32 and np.array_equal(got[w], want[w])
    assert set(read_word_vectors(tmp_path / "v.txt", ["good", "okapi"])) == {"good"}


def test_bad_word_vector_files_name_the_line(tmp_path):
    p = tmp_path / "v.txt"
    for text, message in (
        ("a 1 2 3\nb 1 2\n", "v.txt:2: 2 numbers after 'b', the first line had 3"),
        ("a 1 2\nb 1 x\n", "v.txt:2: numbers that do not parse"),
        ("\n", "holds no word vectors"),
        ("a 1 nan\n", "NaN or Inf"),
        ("3 2\na 1 2\nb 1 2\n", "v.txt: its header says 3 vectors, it holds 2"),
        ("2 3\na 1 2\nb 1 2\n", "v.txt:2: 2 numbers after 'a', the header says 3"),
    ):
        p.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_word_vectors(p)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_word_vectors(tmp_path / "none.txt")


def test_a_word_given_twice_keeps_its_first_vector_with_a_warning(tmp_path):
    (tmp_path / "v.txt").write_text("3 2\na 1 2\nb 3 4\na 5 6\n")
    with pytest.warns(UserWarning, match="v.txt: 1 word.* given more than once.*'a'"):
        got = read_word_vectors(tmp_path / "v.txt")
    assert got.keys() == {"a", "b"} and got["a"].tolist() == [1, 2]


@pytest.mark.parametrize("freeze", [False, True])
def test_training_starts_from_the_vectors_and_freezing_keeps_them(tmp_path, freeze):
    from fastrnn.classify import fit_text_classifier

    examples = _examples(np.random.default_rng(3), 60)
    vectors = _vectors_file(tmp_path / "v.txt", ["good", "bad", "movie", "okapi"], size=5)
    vectors = read_word_vectors(tmp_path / "v.txt")
    clf, losses = fit_text_classifier(
        examples, 2, hidden=6, embed=99, vectors=vectors, freeze_embeddings=freeze, seed=1
    )
    table = clf.model.embedding.params[0]
    assert table.shape == (len(clf.words), 5)  # the vectors' size, not embed=99
    for w in ("good", "bad", "movie"):
        row = table[clf.word_to_id[w]]
        assert np.array_equal(row, vectors[w]) == freeze  # trained away unless frozen
    assert losses[-1] < losses[0]
    # the other words' rows start at random and are frozen too
    fresh, _ = fit_text_classifier(examples, 0, hidden=6, vectors=vectors, seed=1)
    other = clf.word_to_id["plot"]
    assert np.array_equal(table[other], fresh.model.embedding.params[0][other]) == freeze


def test_the_command_line_takes_word_vectors(tmp_path, capsys):
    rng = np.random.default_rng(2)
    _write(tmp_path / "c.tsv", _examples(rng, 80))
    _vectors_file(tmp_path / "v.txt", ["good", "bad", "fine", "zebra"], size=4)
    argv = ["classify", "train", "--data", str(tmp_path / "c.tsv"), "--epochs", "1"]
    argv += ["--hidden", "4", "--embeddings", str(tmp_path / "v.txt"), "--freeze-embeddings"]
    assert main(argv + ["--save", str(tmp_path / "run")]) == 0
    assert "word vectors of size 4 for 3 of the" in capsys.readouterr().out
    record = json.loads((tmp_path / "run" / "classifier.json").read_text())
    assert record["settings"]["freeze_embeddings"] is True
    assert TextClassifier.load(tmp_path / "run").model.embedding.params[0].shape[1] == 4
    assert main(argv[:-3] + ["--freeze-embeddings"]) == 2
    assert "--freeze-embeddings needs --embeddings" in capsys.readouterr().err
    (tmp_path / "none.txt").write_text("okapi 1 2\n")
    argv2 = argv[:-3] + ["--embeddings", str(tmp_path / "none.txt")]
    assert main(argv2) == 2
    assert "a vector for none of the training words" in capsys.readouterr().err


def test_an_interrupted_save_keeps_the_classifier_that_was_there(tmp_path, trained, monkeypatch):
    clf, examples = trained
    clf.save(tmp_path / "run", record={"note": "old"})
    before = {n: (tmp_path / "run" / n).read_bytes() for n in os.listdir(tmp_path / "run")}

    import fastrnn.io

    def broken(*args, **kwargs):
        raise OSError("disk full")

    # the vocabulary is written after the model: the failure comes half-way through the save
    monkeypatch.setattr(fastrnn.io, "atomic_write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        clf.save(tmp_path / "run", record={"note": "new"})
    monkeypatch.undo()
    after = {n: (tmp_path / "run" / n).read_bytes() for n in os.listdir(tmp_path / "run")}
    assert after == before
    assert os.listdir(tmp_path) == ["run"]  # no temporary directory left beside it
    assert TextClassifier.load(tmp_path / "run").words == clf.words


def test_save_refuses_a_directory_holding_other_files(tmp_path, trained):
    clf, _ = trained
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds files besides a saved classifier \(notes.txt\)"):
        clf.save(tmp_path / "mine")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


@pytest.mark.parametrize(
    "config, match",
    [
        ({"labels": "ab", "max_len": 12}, "labels"),
        ({"labels": ["mid", "neg", "pos"], "max_len": True}, "max_len"),
        ({"labels": ["mid", "neg", "pos"], "max_len": 0}, "max_len"),
    ],
)
def test_loading_a_bad_classifier_json_names_the_field(tmp_path, trained, config, match):
    clf, _ = trained
    clf.save(tmp_path / "run")
    (tmp_path / "run" / "classifier.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        TextClassifier.load(tmp_path / "run")


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--lr", "-1"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "x"], "--seed"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_bad_numbers_on_the_command_line_name_the_flag(tmp_path, argv, flag, capsys):
    _write(tmp_path / "c.tsv", _examples(np.random.default_rng(0), 10))
    with pytest.raises(SystemExit) as exit_:
        main(["classify", "train", "--data", str(tmp_path / "c.tsv"), *argv])
    assert exit_.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
