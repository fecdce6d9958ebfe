"""Bad input to the NumPy-only runtime (fastrnn_numpy.py) and to import_onnx is a clear error that
names the argument, flag or file and what was expected: next_word / generate's options, the
runtime's command line (argparse's usage error, status 2; a missing or damaged file named, no
traceback), a model file of the other kind, damaged model files, and files that hold no ONNX
model fastrnn can read.  Valid calls draw the words they drew before."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import import_numpy_runtime

import fastrnn
from fastrnn.interop import export_numpy
from fastrnn.models import LanguageModel, SequenceClassifier
from fastrnn.train import generate as fastrnn_generate

V = 12
WORDS = [f"w{i}" for i in range(V - 2)] + ["<eos>", "<unk>"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(runtime module, LM directory, classifier directory, the LanguageModel, scratch dir)."""
    root = tmp_path_factory.mktemp("runtime_inputs")
    model = LanguageModel(V, 4, [6], seed=1, init_scale=0.5, dtype=np.float64)
    export_numpy(model, root / "lm", WORDS)
    clf = SequenceClassifier(2, vocab_size=V, embed_size=4, hidden_sizes=[5], seed=1)
    export_numpy(clf, root / "clf", ["<pad>", "<unk>"] + [f"w{i}" for i in range(V - 2)])
    (root / "clf" / "classifier.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
    (root / "text.txt").write_text("w1 w2 w3\nw4 w5 zebra\n")
    return import_numpy_runtime(root / "lm"), root / "lm", root / "clf", model, root


# ---- next_word / generate --------------------------------------------------------------------

BAD_SAMPLING = [
    (dict(temperature=0), "temperature must be a positive finite number, got 0"),
    (dict(temperature=-1.0), "temperature must be a positive finite number, got -1.0"),
    (dict(temperature=float("nan")), "temperature must be a positive finite number, got nan"),
    (dict(temperature=float("inf")), "temperature must be a positive finite number, got inf"),
    (dict(temperature="1"), "temperature must be a positive finite number, got '1'"),
    (dict(temperature=True), "temperature must be a positive finite number, got True"),
    (dict(top_k=0), "top_k must be a positive integer or None, got 0"),
    (dict(top_k=1.5), "top_k must be a positive integer or None, got 1.5"),
    (dict(top_k=True), "top_k must be a positive integer or None, got True"),
    (dict(top_k=-2), "top_k must be a positive integer or None, got -2"),
    (dict(top_p=0), r"top_p must be in \(0, 1\] or None, got 0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\] or None, got 1.5"),
    (dict(top_p=float("nan")), r"top_p must be in \(0, 1\] or None, got nan"),
    (dict(top_p=True), r"top_p must be in \(0, 1\] or None, got True"),
]


@pytest.mark.parametrize("kwargs, message", BAD_SAMPLING, ids=lambda v: str(v)[:30])
def test_next_word_and_generate_name_a_bad_sampling_option(exported, kwargs, message):
    rt, lm, *_ = exported
    with pytest.raises(ValueError, match=message):
        rt.next_word(np.arange(5.0), np.random.default_rng(0), **kwargs)
    with pytest.raises(ValueError, match=message):
        rt.generate(rt.load(lm / "model.npz"), 1, 3, seed=0, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(skip=np.array([5])), r"skip must be word ids in \[0, 5\), got 5"),
        (dict(skip=[-1]), r"skip must be word ids in \[0, 5\), got -1"),
        (dict(skip=[0.5]), "skip must be integer word ids, got 0.5"),
        (dict(skip=np.arange(5)), r"skip leaves no word to pick \(all 5 word ids skipped\)"),
        (dict(skip=[0, 1, 2, 3, 4, 4]), "skip leaves no word to pick"),
    ],
)
def test_next_word_names_bad_skip_ids(exported, kwargs, message):
    rt = exported[0]
    with pytest.raises(ValueError, match=message):
        rt.next_word(np.arange(5.0), np.random.default_rng(0), **kwargs)


def test_next_word_names_bad_scores_and_rng(exported):
    rt = exported[0]
    rng = np.random.default_rng(0)
    for scores in (np.arange(5), np.zeros((2, 3)), [1.0, 2.0], np.zeros(0)):
        with pytest.raises(ValueError, match="scores must"):
            rt.next_word(scores, rng)
    with pytest.raises(ValueError, match="rng must be a numpy random Generator, got NoneType"):
        rt.next_word(np.arange(5.0), None)
    assert rt.next_word(np.arange(5.0), None, greedy=True) == 4  # (greedy draws nothing)


def test_greedy_takes_no_temperature_and_skip_leaves_the_callers_scores(exported):
    rt = exported[0]
    scores = np.array([0.0, 3.0, 1.0, 2.0])
    for t in (0, -1, float("nan")):
        assert rt.next_word(scores, None, temperature=t, greedy=True) == 1
    assert rt.next_word(scores, None, greedy=True, skip=np.array([1])) == 3
    np.testing.assert_array_equal(scores, [0.0, 3.0, 1.0, 2.0])  # not set to -inf in place


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(length=-1), "length must be a non-negative integer, got -1"),
        (dict(length=2.5), "length must be a non-negative integer, got 2.5"),
        (dict(length=True), "length must be a non-negative integer, got True"),
        (dict(start_id=V), rf"start_id must be a word id in \[0, {V}\), got {V}"),
        (dict(start_id=-1), rf"start_id must be a word id in \[0, {V}\), got -1"),
        (dict(start_id=1.0), r"start_id must be a word id in \[0, 12\), got 1.0"),
        (dict(skip_ids=[V]), rf"skip_ids must be word ids in \[0, {V}\), got {V}"),
        (dict(skip_ids=[-3, 2]), r"skip_ids must be word ids in \[0, 12\), got -3"),
        (dict(skip_ids=["w1"]), "skip_ids must be integer word ids, got 'w1'"),
        (dict(skip_ids=5), "skip_ids must be an iterable of word ids, got 5"),
        (dict(skip_ids=range(V)), rf"skip_ids leave no word to generate \(all {V} word ids"),
        (dict(seed=-1), "seed must be None or a non-negative integer, got -1"),
        (dict(seed=1.5), "seed must be None or a non-negative integer, got 1.5"),
        (dict(seed=True), "seed must be None or a non-negative integer, got True"),
        (dict(seed="7"), "seed must be None or a non-negative integer, got '7'"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_generate_names_a_bad_argument(exported, kwargs, message):
    rt, lm, *_ = exported
    args = dict(start_id=1, length=3, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        rt.generate(rt.load(lm / "model.npz"), **args)


@pytest.mark.parametrize(
    "kw",
    [
        dict(seed=3),
        dict(seed=4, temperature=0.6, top_k=3),
        dict(seed=5, top_p=0.8, skip_ids=[0, V - 1]),
        dict(seed=6, temperature=1.7, top_k=5, top_p=0.9),
        dict(greedy=True, skip_ids=np.array([2])),
        dict(seed=np.int64(8), skip_ids=(V - 1,)),
    ],
    ids=str,
)
def test_valid_calls_draw_what_fastrnn_draws(exported, kw):
    """The checks change no draw: the runtime's words are fastrnn.train.generate's, and each
    step's pick is rng.choice's over the kept words (a reference written out here)."""
    rt, lm, _, model, _ = exported
    copy = rt.load(lm / "model.npz")
    got = rt.generate(copy, 1, 15, **kw)
    assert got == fastrnn_generate(model, 1, 15, **kw)
    assert not set(got) & set(np.asarray(kw.get("skip_ids", ())).tolist())
    # the same words, step by step, from a plain softmax + rng.choice
    rng = np.random.default_rng(kw.get("seed"))
    copy.reset_state()
    word, want = 1, []
    for _ in range(15):
        s = copy.predict(np.array([[word]]))[0, 0].astype(np.float64)
        s[list(np.asarray(kw.get("skip_ids", ())).tolist())] = -np.inf
        if kw.get("greedy"):
            word = int(np.argmax(s))
        else:
            z = s / kw.get("temperature", 1.0)
            p = np.exp(z - z.max())
            order = np.argsort(-p, kind="stable")
            k = kw.get("top_k") or V
            p[order[k:]] = 0
            if kw.get("top_p") is not None:
                mass = np.cumsum(p[order]) / p.sum()
                p[order[int(np.searchsorted(mass, kw["top_p"])) + 1 :]] = 0
            word = int(rng.choice(V, p=p / p.sum()))
        want.append(word)
    assert got == want


def test_seeds_numpy_takes_still_work(exported):
    rt, lm, *_ = exported
    copy = rt.load(lm / "model.npz")
    a = rt.generate(copy, 1, 8, seed=[1, 2])
    assert a == rt.generate(copy, 1, 8, seed=np.random.SeedSequence([1, 2]))
    assert rt.generate(copy, 1, 8, seed=np.random.default_rng(9)) == rt.generate(copy, 1, 8, seed=9)
    assert rt.generate(copy, 1, 0, seed=0) == []


# ---- damaged model files ---------------------------------------------------------------------


def _rewrite(src, dst, change):
    arrays = dict(np.load(src))
    header = json.loads(arrays[fastrnn.io._HEADER].tobytes())
    header = change(header, arrays) or header
    arrays[fastrnn.io._HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(dst, **arrays)
    return dst


def _set(arrays, name, value):
    arrays[name] = value


DAMAGED = {
    "int-array": lambda h, a: _set(a, "param_1", a["param_1"].astype(np.int32)),
    "nan-array": lambda h, a: _set(a, "param_2", np.full_like(a["param_2"], np.nan)),
    "no-cell": lambda h, a: h["config"].pop("cell"),
    "unknown-cell": lambda h, a: h["config"].update(cell="xlstm"),
    "missing-array": lambda h, a: h.update(arrays=h["arrays"][:3]),
    "config-list": lambda h, a: h.update(config=[]),
    "wrong-gates": lambda h, a: h["config"].update(cell="gru"),
    "out-of-vocab": lambda h, a: (
        _set(a, "param_4", a["param_4"][:, :5]),
        h["arrays"][4].update(shape=[6, 5]),
    ),
}


@pytest.mark.parametrize("key", list(DAMAGED))
def test_a_damaged_model_file_is_a_value_error_naming_it(exported, tmp_path, key):
    rt, lm, *_ = exported
    path = _rewrite(lm / "model.npz", tmp_path / f"{key}.npz", DAMAGED[key])
    with pytest.raises(ValueError, match=f"{key}.npz: "):
        rt.load(path)


def test_files_that_are_no_model_are_value_errors_naming_them(exported, tmp_path):
    rt = exported[0]
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="one.npy: a single .npy array, not a fastrnn model"):
        rt.load(tmp_path / "one.npy")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="notes.txt: not a readable .npz file .neither a .npz"):
        rt.load(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="missing.npz: not a readable .npz file"):
        rt.load(tmp_path / "missing.npz")
    data = (exported[1] / "model.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz: "):
        rt.load(tmp_path / "cut.npz")


# ---- the command line --------------------------------------------------------------------------


def _main(rt, directory, *argv, capsys=None):
    """rt.main in `directory` (model.npz, vocab.json); (exit status, message)."""
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        try:
            return rt.main(["model.npz", "--vocab", "vocab.json", *argv]), ""
        except SystemExit as e:
            if isinstance(e.code, str):  # sys.exit(message): status 1, the message on stderr
                return 1, e.code
            return e.code, capsys.readouterr().err if capsys else ""
    finally:
        os.chdir(cwd)


BAD_FLAGS = [
    ("--length", "-1"),
    ("--length", "1.5"),
    ("--temperature", "0"),
    ("--temperature", "-1"),
    ("--temperature", "nan"),
    ("--temperature", "inf"),
    ("--top-k", "0"),
    ("--top-k", "1.5"),
    ("--top-p", "0"),
    ("--top-p", "1.5"),
    ("--top-p", "nan"),
    ("--seed", "-1"),
    ("--seed", "x"),
]


@pytest.mark.parametrize("flag, value", BAD_FLAGS)
def test_a_bad_option_is_argparses_usage_error_naming_it(exported, capsys, flag, value):
    rt, lm, *_ = exported
    status, err = _main(rt, lm, "--start", "w1", flag, value, capsys=capsys)
    assert status == 2 and f"argument {flag}: expected" in err and repr(value) in err, err


def test_greedy_with_sampling_options_is_a_usage_error(exported, capsys):
    rt, lm, *_ = exported
    for extra in (["--top-k", "3"], ["--top-p", "0.5"], ["--temperature", "0.5"]):
        status, err = _main(rt, lm, "--greedy", *extra, capsys=capsys)
        assert status == 2 and "--greedy takes the most likely word" in err


def test_valid_options_print_what_generate_draws(exported, capsys):
    rt, lm, _, model, _ = exported
    argv = ["--start", "w1", "--length", "10", "--seed", "3", "--top-k", "4", "--top-p", "0.9"]
    assert _main(rt, lm, *argv) == (0, "")
    ids = fastrnn_generate(model, 1, 10, seed=3, skip_ids=[V - 1], top_k=4, top_p=0.9)
    assert capsys.readouterr().out.split() == ["w1"] + [WORDS[i] for i in ids if i != V - 2]


def test_missing_and_damaged_files_are_named(exported, tmp_path):
    rt, lm, _, _, root = exported
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "dict.json").write_text('{"w1": 0}')
    cases = [
        ([str(tmp_path / "nope.npz"), "--vocab", "vocab.json"], "nope.npz: not a readable .npz"),
        ([str(root / "text.txt"), "--vocab", "vocab.json"], "text.txt: not a readable .npz"),
        (["model.npz", "--vocab", str(tmp_path / "none.json")], "none.json: not a readable JSON"),
        (["model.npz", "--vocab", str(tmp_path / "bad.json")], "bad.json: not a readable JSON"),
        (["model.npz", "--vocab", str(tmp_path / "dict.json")], "dict.json: expected a JSON list"),
        (["model.npz", "--vocab", "vocab.json", "--perplexity", str(tmp_path / "t.txt")], "t.txt"),
        (["model.npz", "--vocab", "vocab.json", "--perplexity", "model.npz"], "not a readable"),
    ]
    cwd = os.getcwd()
    os.chdir(lm)
    try:
        for argv, message in cases:
            with pytest.raises(SystemExit) as e:
                rt.main(argv)
            assert isinstance(e.value.code, str) and message in e.value.code, (argv, e.value)
    finally:
        os.chdir(cwd)


def test_each_kind_of_model_refuses_the_others_mode(exported):
    rt, lm, clf, _, root = exported
    text = str(root / "text.txt")
    for argv in (["--classify", text], ["--classifier", "c.json"]):
        status, msg = _main(rt, lm, *argv)
        assert status == 1 and msg.startswith(f"{argv[0]}: model.npz holds a language model")
    for argv in (["--perplexity", text], ["--start", "w1"], ["--greedy"], ["--seed", "1"]):
        status, msg = _main(rt, clf, *argv)
        assert status == 1 and msg.startswith(f"{argv[0]}: model.npz holds a sequence classifier")
    status, msg = _main(rt, clf)
    assert status == 1 and "holds a sequence classifier: give --classify FILE" in msg
    assert _main(rt, clf, "--classify", text)[0] == 0  # (the right mode still runs)


def test_a_bad_classifier_json_is_named(exported, tmp_path):
    rt, _, clf, _, root = exported
    text = str(root / "text.txt")
    for name, content, message in (
        ("labels.json", {"labels": "np"}, "'labels' must be a list of label names"),
        ("maxlen.json", {"labels": ["a", "b"], "max_len": "9"}, "'max_len' must be a positive"),
        ("list.json", [1], "not a readable classifier.json"),
    ):
        (tmp_path / name).write_text(json.dumps(content))
        status, msg = _main(rt, clf, "--classify", text, "--classifier", str(tmp_path / name))
        assert status == 1 and msg.startswith(str(tmp_path / name)) and message in msg, msg


def _run(directory, *argv):
    """The exported file as a script, fastrnn / SciPy / torch unimportable (as conftest's
    run_numpy_runtime, which wants success): the CompletedProcess."""
    guard = (
        "import sys, runpy\n"
        "for m in ('fastrnn', 'scipy', 'torch'): sys.modules[m] = None\n"
        "sys.argv = ['fastrnn_numpy.py'] + sys.argv[1:]\n"
        "runpy.run_path('fastrnn_numpy.py', run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", guard, *argv],
        cwd=directory,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )


def test_the_standalone_script_exits_with_a_message_not_a_traceback(exported, tmp_path):
    _, lm, clf, _, root = exported
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    base = ["model.npz", "--vocab", "vocab.json"]
    cases = [
        (lm, [*base, "--temperature", "nan"], 2, "argument --temperature: expected"),
        (lm, [*base, "--top-k", "0"], 2, "argument --top-k: expected a positive integer"),
        (lm, [str(tmp_path / "missing.npz"), "--vocab", "vocab.json"], 1, "missing.npz: "),
        (lm, [str(tmp_path / "junk.npz"), "--vocab", "vocab.json"], 1, "junk.npz: not a read"),
        (lm, [*base, "--classify", str(root / "text.txt")], 1, "holds a language model"),
        (clf, [*base, "--perplexity", str(root / "text.txt")], 1, "holds a sequence classifier"),
    ]
    for directory, argv, status, message in cases:
        r = _run(directory, *argv)
        assert r.returncode == status and message in r.stderr, (argv, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr


# ---- import_onnx -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnx")
    from fastrnn.interop import export_onnx

    rng = np.random.default_rng(0)
    H = 4
    layer = fastrnn.TimeLSTM(
        rng.standard_normal((3, 4 * H)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H)
    )
    path = tmp_path_factory.mktemp("onnx") / "lstm.onnx"
    export_onnx(layer, path)
    return path


def test_import_onnx_of_a_file_that_is_no_onnx_model_names_it(onnx_file, tmp_path):
    from fastrnn.interop import import_onnx

    data = onnx_file.read_bytes()
    files = {
        "cut.onnx": data[: len(data) // 2],
        "empty.onnx": b"",
        "text.onnx": b"hello, this is not a model\n",
        "noise.onnx": np.random.default_rng(1).bytes(400),
    }
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    for name in [*files, "arrays.npz"]:
        with pytest.raises(ValueError, match=f"{name}: not an ONNX model"):
            import_onnx(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        import_onnx(tmp_path / "missing.onnx")
    assert isinstance(import_onnx(onnx_file), fastrnn.TimeLSTM)  # (the intact file reads)


def _graph(path, nodes, inits):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    onnx.save(helper.make_model(graph), path)
    return path


def test_import_onnx_of_a_graph_fastrnn_did_not_write_names_the_file_and_node(tmp_path):
    onnx = pytest.importorskip("onnx")
    from fastrnn.interop import import_onnx

    node = onnx.helper.make_node
    f32 = np.float32
    cases = [
        ("shape", [node("Shape", ["x"], ["y"], name="s")], {}, "operator Shape .'s'. has no"),
        ("gather0", [node("Gather", [], ["y"], name="g")], {}, "Gather node 'g' has 0 inputs"),
        ("matmul1", [node("MatMul", ["x"], ["y"], name="m")], {}, "MatMul node 'm' has 1 inputs"),
        ("sum0", [node("ReduceSum", [], ["y"], name="r")], {}, "operator ReduceSum"),
        (
            "gather1d",
            [node("Gather", ["E", "x"], ["y"], name="g")],
            {"E": np.zeros(5, f32)},
            "Gather node 'g': W must be a non-empty 2-D array",
        ),
        (
            "matmul1d",
            [node("MatMul", ["x", "W"], ["y"], name="m")],
            {"W": np.zeros(5, f32)},
            "MatMul node 'm': W must be a 2-D matrix",
        ),
        (
            "matmul-int",
            [node("MatMul", ["x", "W"], ["y"], name="m")],
            {"W": np.zeros((5, 3), np.int32)},
            "MatMul node 'm': W must be a float32 or float64 array",
        ),
        (
            "lstm-int",
            [node("LSTM", ["x", "W", "R"], ["y"], name="l", hidden_size=4)],
            {"W": np.zeros((1, 16, 3), np.int32), "R": np.zeros((1, 16, 4), np.int32)},
            "node 'l' .LSTM.: parameters must all be float32 or all float64",
        ),
        (
            "lstm-nan",
            [node("LSTM", ["x", "W", "R"], ["y"], name="l", hidden_size=4)],
            {"W": np.full((1, 16, 3), np.nan, f32), "R": np.zeros((1, 16, 4), f32)},
            "node 'l' .LSTM.: Wx contains NaN or Inf",
        ),
    ]
    for name, nodes, inits, message in cases:
        path = _graph(tmp_path / f"{name}.onnx", nodes, inits)
        with pytest.raises(ValueError, match=f"{name}.onnx: {message}"):
            import_onnx(path)
