"""fastrnn.save / fastrnn.load: exact round trips for every class and dtype, and every kind of bad
file refused with a FileFormatError naming the path, without executing anything from it."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from conftest import DTYPES, KINDS, make_params

import fastrnn
from fastrnn import io as fio
from fastrnn.io import FileFormatError

D, H = 3, 4


def build(kind, rng, dtype, time=True, stateful=False):
    params = make_params(kind, rng, D, H, dtype)
    if kind == "rnn":
        return fastrnn.TimeRNN(*params, stateful=stateful) if time else fastrnn.RNN(*params)
    if kind == "lstm":
        return fastrnn.TimeLSTM(*params, stateful=stateful) if time else fastrnn.LSTM(*params)
    ra = kind == "gru_ra"
    return (
        fastrnn.TimeGRU(*params, stateful=stateful, reset_after=ra)
        if time
        else fastrnn.GRU(*params, reset_after=ra)
    )


def arrays_of(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def header_of(arrays):
    return json.loads(arrays[fio._HEADER].tobytes().decode())


def write_raw(path, arrays, header=None):
    arrays = dict(arrays)
    if header is not None:
        arrays[fio._HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)  # path ends in .npz, so nothing is appended


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("time", [True, False], ids=["time", "cell"])
def test_round_trip_exact(kind, dtype, time, rng, tmp_path):
    obj = build(kind, rng, dtype, time=time, stateful=time)
    path = tmp_path / "m.npz"
    fastrnn.save(path, obj)
    back = fastrnn.load(path)
    assert type(back) is type(obj)
    assert back.get_config() == obj.get_config()
    assert len(back.params) == 3
    for a, b in zip(obj.params, back.params):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    if time:
        assert back.stateful is True
        xs = rng.standard_normal((2, 5, D)).astype(dtype)
        assert np.array_equal(obj.forward(xs), back.forward(xs))
    else:
        x = rng.standard_normal((2, D)).astype(dtype)
        h = rng.standard_normal((2, H)).astype(dtype)
        args = (x, h, h.copy()) if kind == "lstm" else (x, h)
        out_a, out_b = obj.forward(*args), back.forward(*args)
        for a, b in zip(
            np.atleast_1d(out_a) if kind != "lstm" else out_a,
            np.atleast_1d(out_b) if kind != "lstm" else out_b,
        ):
            assert np.array_equal(a, b)
    if kind.startswith("gru"):
        assert back.get_config()["reset_after"] == (kind == "gru_ra")


def test_config_protocol_is_json(rng):
    for kind in KINDS:
        for time in (True, False):
            obj = build(kind, rng, np.float64, time=time)
            config = obj.get_config()
            assert json.loads(json.dumps(config)) == config
            again = type(obj).from_config(config, [p.copy() for p in obj.params])
            assert again.get_config() == config


def test_round_trip_keeps_views_values(rng, tmp_path):
    Wx, Wh, b = make_params("lstm", rng, D, H, np.float32)
    layer = fastrnn.TimeLSTM(np.asfortranarray(Wx), Wh.astype(">f4"), b)
    fastrnn.save(tmp_path / "v.npz", layer)
    back = fastrnn.load(tmp_path / "v.npz")
    for a, b2 in zip(layer.params, back.params):
        assert np.array_equal(a, b2) and a.dtype == b2.dtype


def test_path_used_as_given_and_overwritten(rng, tmp_path):
    a = build("rnn", rng, np.float64)
    b = build("lstm", rng, np.float32)
    path = str(tmp_path / "model.bin")
    fastrnn.save(path, a)
    fastrnn.save(path, b)
    assert os.listdir(tmp_path) == ["model.bin"]
    assert isinstance(fastrnn.load(path), fastrnn.TimeLSTM)


def test_registry_lists_the_layers():
    names = fio.registered_classes()
    for n in ("TimeRNN", "TimeLSTM", "TimeGRU", "RNN", "LSTM", "GRU"):
        assert n in names


def test_register_refuses_name_clash_and_missing_protocol():
    with pytest.raises(ValueError, match="already registered"):

        @fio.register(name="TimeLSTM")
        class Other:
            def get_config(self):
                return {}

            @classmethod
            def from_config(cls, config, params):
                return cls()

    with pytest.raises(TypeError, match="from_config"):

        @fio.register
        class NoProtocol:
            def get_config(self):
                return {}


# ---- saving: checks before writing, atomic replace -----------------------------------------------


def test_save_refuses_unregistered(tmp_path):
    class Thing:
        params = ()

        def get_config(self):
            return {}

    with pytest.raises(TypeError, match="registered fastrnn class"):
        fastrnn.save(tmp_path / "x.npz", Thing())
    assert os.listdir(tmp_path) == []


def test_save_refuses_bad_config_and_params_without_writing(rng, tmp_path, monkeypatch):
    layer = build("lstm", rng, np.float64)
    path = tmp_path / "x.npz"
    monkeypatch.setattr(type(layer), "get_config", lambda self: {"a": np.zeros(2)})
    with pytest.raises(TypeError, match="JSON-serializable"):
        fastrnn.save(path, layer)
    monkeypatch.undo()
    layer.params = [layer.params[0], "no", layer.params[2]]
    with pytest.raises(TypeError, match=r"params\[1\]"):
        fastrnn.save(path, layer)
    assert os.listdir(tmp_path) == []


def test_save_missing_directory(rng, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fastrnn.save(tmp_path / "nope" / "x.npz", build("rnn", rng, np.float64))


def test_crash_while_writing_leaves_old_file_and_no_temp(rng, tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = build("rnn", rng, np.float64)
    fastrnn.save(path, old)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fastrnn.save(path, build("lstm", rng, np.float64))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.npz"]
    assert path.read_bytes() == before
    assert isinstance(fastrnn.load(path), fastrnn.TimeRNN)


def test_save_onto_a_directory_names_it(rng, tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="d'?: it is a directory, expected a file path"):
        fastrnn.save(tmp_path / "d", build("rnn", rng, np.float64))
    assert os.listdir(tmp_path / "d") == [] and os.listdir(tmp_path) == ["d"]


def test_atomic_write_to_keeps_the_extension_and_cleans_up(tmp_path):
    seen = []

    def write_to(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("writer failed")

    (tmp_path / "plot.png").write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        fio.atomic_write_to(tmp_path / "plot.png", write_to)
    assert seen[0].endswith(".png") and os.path.dirname(seen[0]) == str(tmp_path)
    assert os.listdir(tmp_path) == ["plot.png"] and (tmp_path / "plot.png").read_text() == "old"


def test_atomic_directory_is_all_or_nothing(tmp_path):
    def fill(files):
        def run(tmp):
            for name, text in files.items():
                if text is None:
                    raise OSError("disk full")
                with open(os.path.join(tmp, name), "w") as f:
                    f.write(text)

        return run

    fio.atomic_directory(tmp_path / "run", fill({"a": "1", "b": "1"}))
    with pytest.raises(OSError, match="disk full"):
        fio.atomic_directory(tmp_path / "run", fill({"a": "2", "b": None}))
    assert os.listdir(tmp_path) == ["run"]
    assert {n: (tmp_path / "run" / n).read_text() for n in "ab"} == {"a": "1", "b": "1"}
    fio.atomic_directory(tmp_path / "run", fill({"c": "3"}))  # the new one replaces it whole
    assert os.listdir(tmp_path) == ["run"] and os.listdir(tmp_path / "run") == ["c"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="it is a file, expected a directory"):
        fio.atomic_directory(tmp_path / "f", fill({"a": "1"}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fio.atomic_directory(tmp_path / "no" / "run", fill({"a": "1"}))


def test_saved_file_mode_follows_umask(rng, tmp_path):
    path = tmp_path / "m.npz"
    umask = os.umask(0o022)
    try:
        fastrnn.save(path, build("rnn", rng, np.float64))
    finally:
        os.umask(umask)
    assert (os.stat(path).st_mode & 0o777) == 0o644


# ---- loading bad files -------------------------------------------------------------------------


@pytest.fixture
def saved(rng, tmp_path):
    path = tmp_path / "good.npz"
    fastrnn.save(path, build("gru_ra", rng, np.float32))
    return path


def refused(path, match):
    with pytest.raises(FileFormatError, match=match) as info:
        fastrnn.load(path)
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, -1])
def test_truncated(saved, tmp_path, keep):
    data = saved.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) - 1)
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(data[:n])
    refused(bad, "not a readable|corrupt")


def test_flipped_byte_in_array_data(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("param_0.npy")
    # inside the member's data, past its .npy header (stored, not compressed)
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[pos] ^= 0xFF
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    refused(bad, "corrupt|CRC")


def test_not_a_zip(tmp_path):
    bad = tmp_path / "text.npz"
    bad.write_text("hello, not numpy")
    refused(bad, "not a readable")


def test_single_npy_array(tmp_path):
    bad = tmp_path / "one.npz"
    with open(bad, "wb") as f:
        np.save(f, np.zeros(3))
    refused(bad, "single array")


def test_plain_npz_without_header(tmp_path):
    bad = tmp_path / "plain.npz"
    np.savez(bad, a=np.zeros(3))
    refused(bad, "not a fastrnn file")


def test_bad_json(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays[fio._HEADER] = np.frombuffer(b'{"format": "fastrnn", ', np.uint8)
    bad = tmp_path / "json.npz"
    write_raw(bad, arrays)
    refused(bad, "not valid JSON")


def test_header_not_bytes(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays[fio._HEADER] = np.zeros(4)
    bad = tmp_path / "hb.npz"
    write_raw(bad, arrays)
    refused(bad, "uint8")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda h: h.update(format="other"), "not a fastrnn header"),
        (lambda h: h.update(format_version=99), "newer"),
        (lambda h: h.update(format_version="1"), "format_version"),
        (lambda h: h.pop("class"), "class name"),
        (lambda h: h.update(config=[1]), "config"),
        (lambda h: h.update(arrays={}), "array list"),
        (lambda h: h["arrays"][0].update(shape=[-1, 2]), "malformed"),
        (lambda h: h["arrays"][1].update(name="param_7"), "malformed"),
    ],
)
def test_bad_header_fields(saved, tmp_path, change, match):
    arrays = arrays_of(saved)
    header = header_of(arrays)
    change(header)
    bad = tmp_path / "hdr.npz"
    write_raw(bad, arrays, header)
    refused(bad, match)


def test_unknown_class(saved, tmp_path):
    arrays = arrays_of(saved)
    header = header_of(arrays)
    header["class"] = "os.system"
    bad = tmp_path / "cls.npz"
    write_raw(bad, arrays, header)
    refused(bad, "unknown class 'os.system'")


def test_missing_array(saved, tmp_path):
    arrays = arrays_of(saved)
    del arrays["param_2"]
    bad = tmp_path / "miss.npz"
    write_raw(bad, arrays)
    refused(bad, r"missing arrays \['param_2'\]")


def test_extra_array(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays["evil"] = np.zeros(2)
    bad = tmp_path / "extra.npz"
    write_raw(bad, arrays)
    refused(bad, "unexpected arrays")


def test_array_shape_differs_from_header(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays["param_1"] = arrays["param_1"][:, :-1]
    bad = tmp_path / "shape.npz"
    write_raw(bad, arrays)
    refused(bad, "param_1 is")


def test_array_dtype_differs_from_header(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays["param_0"] = arrays["param_0"].astype(np.float64)
    bad = tmp_path / "dtype.npz"
    write_raw(bad, arrays)
    refused(bad, "param_0 is")


def test_shapes_consistent_with_header_but_not_config(saved, tmp_path):
    # header and arrays agree, but Wh no longer fits hidden_size: from_config refuses
    arrays = arrays_of(saved)
    header = header_of(arrays)
    arrays["param_1"] = np.zeros((5, 15), np.float32)
    header["arrays"][1]["shape"] = [5, 15]
    bad = tmp_path / "cfg.npz"
    write_raw(bad, arrays, header)
    refused(bad, "does not fit its config.*Wh")


@pytest.mark.parametrize(
    "config_change, match",
    [
        (lambda c: c.pop("hidden_size"), "missing"),
        (lambda c: c.update(hidden_size="4"), "hidden_size"),
        (lambda c: c.update(extra=1), "unexpected"),
        (lambda c: c.update(reset_after="yes"), "reset_after"),
    ],
)
def test_bad_config(saved, tmp_path, config_change, match):
    arrays = arrays_of(saved)
    header = header_of(arrays)
    config_change(header["config"])
    bad = tmp_path / "cfg.npz"
    write_raw(bad, arrays, header)
    refused(bad, match)


class _Payload:
    """Unpickling this would create the marker file: proof the loader never unpickles."""

    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_array_is_refused_and_not_executed(saved, tmp_path):
    marker = tmp_path / "executed"
    _Payload.marker = str(marker)
    arrays = arrays_of(saved)
    header = header_of(arrays)
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload()
    arrays["param_0"] = obj
    header["arrays"][0].update(shape=[1], dtype="|O")
    bad = tmp_path / "obj.npz"
    write_raw(bad, arrays, header)
    assert b"executed" in bad.read_bytes()  # the pickle is really in the file
    refused(bad, "corrupt archive|non-numeric")
    assert not marker.exists()


def test_pickled_header_is_refused(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays[fio._HEADER] = np.frombuffer(pickle.dumps({"format": "fastrnn"}), np.uint8)
    bad = tmp_path / "pk.npz"
    write_raw(bad, arrays)
    refused(bad, "not valid JSON")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastrnn.load(tmp_path / "absent.npz")


# ---- the language-model layers (fastrnn.layers.lm) -----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_lm_layers_round_trip(dtype, rng, tmp_path):
    W = rng.standard_normal((7, 3)).astype(dtype)
    objs = [
        fastrnn.TimeEmbedding(W),
        fastrnn.TimeAffine(
            rng.standard_normal((3, 7)).astype(dtype), rng.standard_normal(7).astype(dtype)
        ),
        fastrnn.TimeAffine(W.T, np.zeros(7, dtype)),  # a tied, transposed view
        fastrnn.TimeSoftmaxWithLoss(ignore_label=2),
        fastrnn.TimeDropout(0.25, seed=3),
        fastrnn.VariationalDropout(0.4, seed=None),
    ]
    for i, obj in enumerate(objs):
        path = tmp_path / f"{i}.npz"
        fastrnn.save(path, obj)
        back = fastrnn.load(path)
        assert type(back) is type(obj)
        assert back.get_config() == obj.get_config()
        assert len(back.params) == len(obj.params)
        for a, b in zip(obj.params, back.params):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    ids = rng.integers(0, 7, (2, 4))
    assert np.array_equal(objs[0].forward(ids), fastrnn.load(tmp_path / "0.npz").forward(ids))


def test_lm_layer_shape_mismatch_refused(rng, tmp_path):
    path = tmp_path / "aff.npz"
    fastrnn.save(path, fastrnn.TimeAffine(rng.standard_normal((3, 7)), np.zeros(7)))
    arrays = arrays_of(path)
    header = header_of(arrays)
    arrays["param_1"] = np.zeros(6)
    header["arrays"][1]["shape"] = [6]
    write_raw(path, arrays, header)
    refused(path, "does not fit its config")


# ---- stacks and language models (fastrnn.layers.stack, fastrnn.models.lm) ------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_round_trip(dtype, rng, tmp_path):
    layers = [
        build("lstm", rng, dtype, stateful=True),
        fastrnn.TimeGRU(*make_params("gru_ra", rng, H, H, dtype), reset_after=True),
        fastrnn.TimeRNN(*make_params("rnn", rng, H, H, dtype)),
    ]
    stack = fastrnn.Stack(layers, dropout=0.3, seed=7)
    fastrnn.save(tmp_path / "s.npz", stack)
    back = fastrnn.load(tmp_path / "s.npz")
    assert type(back) is fastrnn.Stack and back.get_config() == stack.get_config()
    for a, b in zip(stack.params, back.params):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    stack.train_flg = back.train_flg = False
    xs = rng.standard_normal((2, 5, D)).astype(dtype)
    assert np.array_equal(stack.forward(xs), back.forward(xs))


def _models(dtype):
    from fastrnn.models import BetterRnnlm, LanguageModel, Rnnlm

    return [
        Rnnlm(17, 5, 6, seed=1, dtype=dtype),
        BetterRnnlm(17, 5, 5, dropout_ratio=0.3, seed=2, dtype=dtype),
        LanguageModel(
            17, 5, [6, 6], cell="gru", tie_weights=True, projection=True, dtype=dtype, seed=3
        ),
        LanguageModel(
            17,
            5,
            [4, 4],
            cell="rnn",
            variational={"input": 0.2, "hidden": 0.1},
            connection="residual",
            dtype=dtype,
            seed=4,
        ),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_language_models_round_trip(dtype, rng, tmp_path):
    xs = rng.integers(0, 17, (2, 6))
    ts = rng.integers(0, 17, (2, 6))
    for i, model in enumerate(_models(dtype)):
        path = tmp_path / f"m{i}.npz"
        fastrnn.save(path, model)
        back = fastrnn.load(path)
        assert type(back) is type(model) and back.get_config() == model.get_config()
        assert len(back.params) == len(model.params)
        for a, b in zip(model.params, back.params):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        model.reset_state()
        assert model.forward(xs, ts, train_flg=False) == back.forward(xs, ts, train_flg=False)
        if model.tie_weights:
            assert np.shares_memory(back.affine.params[0], back.params[0])


def test_language_model_with_wrong_vocabulary_refused(tmp_path):
    model = _models(np.float32)[0]
    path = tmp_path / "m.npz"
    fastrnn.save(path, model)
    arrays = arrays_of(path)
    header = header_of(arrays)
    header["config"]["vocab_size"] = 18
    write_raw(path, arrays, header)
    refused(path, "does not fit its config")


@pytest.mark.parametrize("time", [True, False], ids=["time", "cell"])
def test_relu_rnn_round_trip(time, rng, tmp_path):
    params = make_params("rnn", rng, D, H, np.float64)
    obj = (
        fastrnn.TimeRNN(*params, nonlinearity="relu")
        if time
        else fastrnn.RNN(*params, nonlinearity="relu")
    )
    assert obj.get_config()["nonlinearity"] == "relu"
    path = tmp_path / "r.npz"
    fastrnn.save(path, obj)
    back = fastrnn.load(path)
    assert back.get_config() == obj.get_config()
    x = rng.standard_normal((2, D))
    h = rng.standard_normal((2, H))
    if time:
        assert np.array_equal(back.forward(x[:, None]), obj.forward(x[:, None]))
    else:
        assert np.array_equal(back.forward(x, h), obj.forward(x, h))
    arrays = arrays_of(path)
    header = header_of(arrays)
    header["config"]["nonlinearity"] = "sigmoid"
    write_raw(path, arrays, header)
    refused(path, "nonlinearity")


def _book_tied(tmp_path):
    from fastrnn.models import BetterRnnlm

    model = BetterRnnlm(17, 5, 5, seed=2)
    path = tmp_path / "tied.npz"
    fastrnn.save(path, model)
    return model, path


def test_book_tied_matrix_is_stored_once(tmp_path):
    """BetterRnnlm lists the embedding W and the read-out's W.T (the book's tying): the file holds
    W once, the header marks the view, and the loaded model's read-out is again a view of W."""
    model, path = _book_tied(tmp_path)
    arrays = arrays_of(path)
    header = header_of(arrays)
    views = [s for s in header["arrays"] if "transpose_of" in s]
    assert len(views) == 1 and views[0]["name"] not in arrays
    assert header["format_version"] == 2
    assert len(arrays) == len(model.params)  # every param but the view, plus the header
    back = fastrnn.load(path)
    i = int(views[0]["name"].split("_")[1])
    assert np.array_equal(back.params[i], model.params[i])
    assert np.shares_memory(back.params[i], back.params[views[0]["transpose_of"]])


def test_untied_files_stay_version_1(saved):
    assert header_of(arrays_of(saved))["format_version"] == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda h, i: h["arrays"][i].update(transpose_of=i),  # itself
        lambda h, i: h["arrays"][i].update(transpose_of=len(h["arrays"])),  # out of range
        lambda h, i: h["arrays"][i].update(transpose_of=True),
        lambda h, i: h["arrays"][i].update(transpose_of=1),  # an array of another shape
        lambda h, i: h.update(format_version=1),  # a version-1 file cannot hold views
    ],
)
def test_bad_transpose_entries_refused(tmp_path, change):
    _, path = _book_tied(tmp_path)
    arrays = arrays_of(path)
    header = header_of(arrays)
    i = next(k for k, s in enumerate(header["arrays"]) if "transpose_of" in s)
    change(header, i)
    write_raw(path, arrays, header)
    refused(path, "transpose of an earlier")


@pytest.mark.parametrize("field", ["num_classes", "vocab_size", "embed_size"])
def test_a_config_size_the_arrays_do_not_have_is_refused_before_allocating(tmp_path, field):
    # 10**15 floats could not be allocated: the sizes are checked against the arrays first
    from fastrnn.classify import build_model

    settings = {"cell": "gru", "embed": 8, "hidden": 8, "layers": 2, "pooling": "mean"}
    fastrnn.save(tmp_path / "m.npz", build_model(True, settings, 20, 3, seed=1))
    arrays = arrays_of(tmp_path / "m.npz")
    header = header_of(arrays)
    header["config"][field] = 10**15
    write_raw(tmp_path / "bad.npz", arrays, header)
    with pytest.raises(FileFormatError, match="bad.npz: .*does not fit its config: params"):
        fastrnn.load(tmp_path / "bad.npz")
