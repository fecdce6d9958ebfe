"""Bad input to `fastrnn lm` and fastrnn.train is a clear error that loses nothing: damaged run
directories and checkpoint records, missing models, bad vocabularies, seeds and output paths,
generation and trainer arguments -- an exception or exit status 2 naming the argument or file,
nothing overwritten."""

import json
import math
import os
import shutil
import sys

import numpy as np
import pytest

from fastrnn.cli import main
from fastrnn.train import checkpoint as ckpt, config as lm_config
from fastrnn.train.generate import generate
from fastrnn.train.optim import SGD
from fastrnn.train.schedules import PlateauLR, make_schedule
from fastrnn.train.trainer import LMTrainer, evaluate_perplexity

sys.path.insert(0, os.path.dirname(__file__))
from _lm_standin import StandinLM
from test_lm_cli import TINY
from test_train import write_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(corpus directory, a finished one-epoch run of the stand-in model) -- copy before use."""
    mp = pytest.MonkeyPatch()
    mp.setattr(lm_config, "build_model", lambda cfg, V: StandinLM(V, 8, 16, "float64", 0))
    d = tmp_path_factory.mktemp("inputs")
    data = write_corpus(d / "ptb")
    try:
        argv = ["lm", "train", "--data", data, "--out", str(d / "run"), "--epochs", "1"]
        assert main([*argv, *TINY]) == 0
    finally:
        mp.undo()
    return data, d / "run"


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run directory."""
    shutil.copytree(trained[1], tmp_path / "run")
    return tmp_path / "run"


def snapshot(directory):
    """{relative path: bytes} of every file under `directory`."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = fh.read()
    return out


def record_path(run):
    return run / "last" / "checkpoint.json"


def edit_record(run, **fields):
    state = json.loads(record_path(run).read_text())
    state.update(fields)
    record_path(run).write_text(json.dumps(state))


def npz_path(run, key):
    return run / "last" / json.loads(record_path(run).read_text())[key]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def set_config(run, **fields):
    state = json.loads(record_path(run).read_text())
    state["config"].update(fields)
    record_path(run).write_text(json.dumps(state))


# damage -> (the file the error must name, what it must say)
DAMAGES = {
    "record missing": (lambda r: record_path(r).unlink(), "checkpoint.json", "holds no checkpoint"),
    "record not JSON": (
        lambda r: record_path(r).write_text("{nope"),
        "checkpoint.json",
        "unreadable checkpoint record",
    ),
    "record a list": (
        lambda r: record_path(r).write_text("[1, 2]"),
        "checkpoint.json",
        "a JSON object expected",
    ),
    "epoch a string": (
        lambda r: edit_record(r, epoch="3"),
        "checkpoint.json",
        "epoch must be an integer >= 0, got '3'",
    ),
    "epoch negative": (lambda r: edit_record(r, epoch=-1), "checkpoint.json", "epoch must be"),
    "epoch a bool": (lambda r: edit_record(r, epoch=True), "checkpoint.json", "got True"),
    "step a float": (lambda r: edit_record(r, step=1.5), "checkpoint.json", "step must be"),
    "config a list": (lambda r: edit_record(r, config=[1]), "checkpoint.json", "config must be"),
    "config bptt a string": (
        lambda r: set_config(r, bptt="6"),
        "checkpoint.json",
        "config.bptt must be an integer",
    ),
    "config lr infinite": (
        lambda r: set_config(r, lr=math.inf),
        "checkpoint.json",
        "config.lr must be a finite number",
    ),
    "best val_ppl a string": (
        lambda r: edit_record(r, best={"epoch": 1, "val_ppl": "x"}),
        "checkpoint.json",
        "best.val_ppl must be a finite number",
    ),
    "model file outside last/": (
        lambda r: edit_record(r, model_file="../vocab.json"),
        "checkpoint.json",
        "model_file must be the name of a .npz file",
    ),
    "model npz missing": (
        lambda r: npz_path(r, "model_file").unlink(),
        "model-s",
        "model file not found",
    ),
    "model npz truncated": (lambda r: truncate(npz_path(r, "model_file")), "model-s", "npz"),
    "optim npz missing": (
        lambda r: npz_path(r, "optim_file").unlink(),
        "optim-s",
        "optimizer state file not found",
    ),
    "optim npz truncated": (
        lambda r: truncate(npz_path(r, "optim_file")),
        "optim-s",
        "unreadable optimizer state",
    ),
    "vocab.json a dict": (
        lambda r: (r / "vocab.json").write_text('{"a": 0}'),
        "vocab.json",
        "must be a non-empty JSON list of words",
    ),
    "optimizer lr zero": (
        lambda r: edit_record(r, optimizer={"type": "sgd", "lr": 0}),
        "checkpoint.json",
        "optimizer.lr must be a positive finite number",
    ),
    "random-generator state bad": (
        lambda r: edit_record(r, rng_states=[{"bit_generator": "nope"}]),
        "checkpoint.json",
        "PCG64",
    ),
    "random-generator state of the wrong shape": (
        lambda r: edit_record(r, rng_states=[{"bit_generator": "PCG64", "state": 3}]),
        "checkpoint.json",
        "rng_states[0] is not a NumPy PCG64 state",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_on_a_damaged_run_names_the_file_and_overwrites_nothing(
    trained, run, capsys, damage
):
    hurt, name, message = DAMAGES[damage]
    hurt(run)
    before = snapshot(run)
    argv = ["lm", "train", "--data", trained[0], "--out", str(run), "--resume", "--epochs", "2"]
    assert main([*argv, "--no-progress", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastrnn lm train: error: --resume:"), err
    assert name in err and message in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert snapshot(run) == before


def test_a_sound_run_resumes(trained, run):
    """(The checks above accept what training writes.)"""
    argv = ["lm", "train", "--data", trained[0], "--out", str(run), "--resume", "--epochs", "2"]
    assert main([*argv, "--no-progress", "--no-plot"]) == 0
    assert json.loads(record_path(run).read_text())["epoch"] == 2


# -- checkpoint.json's field types ----------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"epoch": True}, "epoch must be an integer >= 0, got True"),
        ({"epoch": 1.0}, "epoch must be an integer >= 0, got 1.0"),
        ({"step": False}, "step must be an integer >= 0"),
        ({"step": -3}, "step must be an integer >= 0"),
        ({"model_file": 3}, "model_file must be"),
        ({"optim_file": "sub/optim.npz"}, "optim_file must be"),
        ({"config": {"bptt": True}}, "config.bptt must be an integer, got True"),
        ({"config": {"lr": "1"}}, "config.lr must be a finite number"),
        ({"config": {"dropout": math.nan}}, "config.dropout must be a finite number"),
        ({"config": {"hidden_sizes": [16, 1.5]}}, "config.hidden_sizes must be"),
        ({"config": {"tie_weights": 1}}, "config.tie_weights must be a bool"),
        ({"config": {"patience": 2.0}}, "config.patience must be an integer or null"),
        ({"history": [{"epoch": 1, "train_ppl": math.inf, "val_ppl": 1}]}, "history[0].train"),
        ({"history": [{"epoch": 0, "train_ppl": 2, "val_ppl": 1}]}, "history[0].epoch"),
        ({"best": {"epoch": 1, "val_ppl": math.inf}}, "best.val_ppl must be a finite number"),
        ({"optimizer": {"type": "sgd", "lr": math.nan}}, "optimizer.lr must be"),
        ({"optimizer": {"type": "adam", "lr": 1, "iter": True, "slots": 0}}, "optimizer.iter"),
        ({"optimizer": {"type": "rmsprop", "lr": 1}}, "optimizer.type must be"),
        ({"ranks": 0}, "ranks must be an integer >= 1"),
        ({"partial": 0}, "partial must be true or false"),
        ({"position": {"windows": 1.5, "total": 0, "count": 0, "seconds": 0}}, "position.windows"),
        ({"position": {"windows": 1, "total": math.nan, "count": 0, "seconds": 0}}, "total"),
        ({"rng_states": "x"}, "rng_states must be a list"),
    ],
)
def test_load_last_checks_the_record_field_types(tmp_path, fields, message):
    model = StandinLM(5, 3, 4)
    ckpt.save_last(tmp_path, model, {}, {"epoch": 1, "step": 7, "config": {}})
    record = tmp_path / "last" / "checkpoint.json"
    state = json.loads(record.read_text())
    state.update(fields)
    record.write_text(json.dumps(state))  # (NaN and Infinity too: Python's json reads them)
    with pytest.raises(ValueError, match="malformed checkpoint record") as e:
        ckpt.load_last(tmp_path)
    assert str(record) in str(e.value) and message in str(e.value)


def test_a_complete_record_needs_the_trainer_state_and_every_hyperparameter(trained):
    state = json.loads(record_path(trained[1]).read_text())
    assert ckpt.check_record(state, "r", complete=True) is state
    for key in ("history", "schedule", "optimizer"):
        partial = {k: v for k, v in state.items() if k != key}
        ckpt.check_record(partial, "r")  # (load_last's own check: these are optional)
        with pytest.raises(ValueError, match=f"r: malformed checkpoint record \\(no '{key}'\\)"):
            ckpt.check_record(partial, "r", complete=True)
    cfg = {k: v for k, v in state["config"].items() if k != "batch_size"}
    with pytest.raises(ValueError, match="no 'config.batch_size'"):
        ckpt.check_record(dict(state, config=cfg), "r", complete=True)


@pytest.mark.parametrize(
    "state, message",
    [
        ({"current": "x", "best": None}, "current lr"),
        ({"current": math.inf, "best": None}, "current lr"),
        ({"current": 1.0, "best": math.nan}, "best validation perplexity"),
        ({"current": True, "best": None}, "current lr"),
        ({}, "current lr"),
    ],
)
def test_plateau_schedule_state_is_checked(state, message):
    sched = PlateauLR(1.0)
    with pytest.raises(ValueError, match=message):
        sched.load_state(state)
    assert sched.current == 1.0 and sched.best == math.inf  # unchanged


# -- generate / eval / export on a run without a model --------------------------------------------
def _commands(run, data, tmp_path):
    return [
        ["lm", "generate", "--model", str(run)],
        ["lm", "eval", "--model", str(run), "--data", data],
        ["lm", "export", "--model", str(run), "--numpy", str(tmp_path / "exported")],
    ]


def test_a_run_without_any_model_is_a_clear_error(trained, run, tmp_path, capsys):
    shutil.rmtree(run / "best")
    shutil.rmtree(run / "last")
    for argv in _commands(run, trained[0], tmp_path):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"error: --model {run}: no model found" in err, err
    assert not (tmp_path / "exported").exists()


def test_a_missing_model_file_named_by_the_record_is_a_clear_error(trained, run, tmp_path, capsys):
    shutil.rmtree(run / "best")
    missing = npz_path(run, "model_file")
    missing.unlink()
    for argv in _commands(run, trained[0], tmp_path):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{missing} not found" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "exported").exists()


def test_a_best_directory_without_its_model_is_a_clear_error(run, capsys):
    (run / "best" / "model.npz").unlink()
    assert main(["lm", "generate", "--model", str(run / "best")]) == 2
    assert f"--model {run / 'best'}: no model found" in capsys.readouterr().err


def test_a_damaged_record_is_a_clear_error_for_generate(run, capsys):
    shutil.rmtree(run / "best")
    edit_record(run, model_file=["x"])
    assert main(["lm", "generate", "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.json: malformed checkpoint record: model_file" in err, err


# -- vocab.json ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ('{"the": 0, "cat": 1}', "must be a non-empty JSON list of words"),
        ("[]", "must be a non-empty JSON list of words"),
        ('"the cat"', "must be a non-empty JSON list of words"),
        ('["the", 3]', "word 1 must be a non-empty string, got 3"),
        ('["the", ""]', "word 1 must be a non-empty string"),
        ('["the", null]', "word 1 must be a non-empty string, got None"),
        ('["the", "cat", "the"]', "vocabulary words must be unique, 'the' appears twice"),
        ('["the", ', "unreadable vocabulary"),
    ],
)
def test_bad_vocab_json_is_a_value_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "vocab.json"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        ckpt.read_vocab(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)


def test_a_bad_vocab_file_is_a_cli_error_naming_it(run, capsys):
    (run / "vocab.json").write_text('["the", "the"]')
    assert main(["lm", "generate", "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"--vocab: {run / 'vocab.json'}: vocabulary words must be unique" in err, err


def test_read_vocab_reads_what_training_wrote(trained):
    vocab = ckpt.read_vocab(trained[1] / "vocab.json")
    assert vocab.id_to_word == json.loads((trained[1] / "vocab.json").read_text())


# -- --seed -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-1", "1.5", "x"])
@pytest.mark.parametrize("command", ["train", "generate"])
def test_lm_seed_must_be_a_non_negative_integer(trained, tmp_path, capsys, command, value):
    if command == "train":
        argv = ["lm", "train", "--data", trained[0], "--out", str(tmp_path / "out"), *TINY]
    else:
        argv = ["lm", "generate", "--model", str(trained[1])]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--seed", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error: argument --seed: expected an integer >= 0" in err, err
    assert not (tmp_path / "out").exists()


def test_lm_generate_takes_seed_zero(trained, capsys):
    assert main(["lm", "generate", "--model", str(trained[1]), "--seed", "0", "--length", "3"]) == 0


def test_demo_seed_must_be_a_non_negative_integer(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--quick", "--no-plot", "--no-progress", "--out", str(tmp_path / "o"),
              "--seed", "-1"])  # fmt: skip
    assert e.value.code == 2 and "--seed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- output paths ---------------------------------------------------------------------------------
def test_export_onnx_into_a_missing_directory_fails_before_any_work(tmp_path, capsys):
    target = tmp_path / "missing" / "dir" / "x.onnx"
    # (a --model that does not exist either: the --onnx check comes first, before any loading)
    argv = ["lm", "export", "--model", str(tmp_path / "nope"), "--onnx", str(target)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastrnn lm export: error: --onnx") and "does not exist" in err, err
    assert not (tmp_path / "missing").exists()


def test_demo_out_naming_an_existing_file_is_an_error_and_leaves_it(tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("keep me")
    try:
        status = main(["demo", "--quick", "--no-plot", "--no-progress", "--out", str(target)])
    except SystemExit as e:
        status = e.code
    assert status == 2 and "--out" in capsys.readouterr().err
    assert target.read_text() == "keep me"


# -- generate() ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_lm():
    from fastrnn.models.lm import LanguageModel

    return LanguageModel(10, 4, [8], seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"length": -1}, "length must be a non-negative integer"),
        ({"length": True}, "length must be a non-negative integer"),
        ({"length": 2.0}, "length must be a non-negative integer"),
        ({"temperature": 0}, "temperature must be a positive finite number"),
        ({"temperature": -1.0}, "temperature must be a positive finite number"),
        ({"temperature": math.nan}, "temperature must be a positive finite number"),
        ({"temperature": math.inf}, "temperature must be a positive finite number"),
        ({"temperature": "1"}, "temperature must be a positive finite number"),
        ({"top_k": 0}, "top_k must be a positive integer"),
        ({"top_k": True}, "top_k must be a positive integer"),
        ({"top_k": 2.0}, "top_k must be a positive integer"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"top_p": math.nan}, "top_p must be in (0, 1]"),
        ({"start_id": -1}, "start_id must be a word id in [0, 10)"),
        ({"start_id": 10}, "start_id must be a word id in [0, 10)"),
        ({"start_id": True}, "start_id must be a word id"),
        ({"start_id": 2.0}, "start_id must be a word id"),
        ({"skip_ids": [10]}, "skip_ids must be word ids in [0, 10)"),
        ({"seed": -1}, "seed must be None or a non-negative integer"),
    ],
)
def test_generate_checks_its_arguments(small_lm, kwargs, message):
    args = {"start_id": 1, "length": 3, **kwargs}
    with pytest.raises(ValueError) as e:
        generate(small_lm, args.pop("start_id"), args.pop("length"), **args)
    assert message in str(e.value), str(e.value)


def test_generate_greedy_ignores_the_temperature(small_lm):
    a = generate(small_lm, 1, 4, greedy=True, temperature=0)
    assert len(a) == 4 and a == generate(small_lm, 1, 4, greedy=True)
    assert generate(small_lm, 1, 0, seed=0) == []


# -- the trainer's window lengths -----------------------------------------------------------------
def _trainer(**kw):
    model = StandinLM(6, 3, 4)
    return LMTrainer(model, SGD(1.0), make_schedule("constant", 1.0), progress=False, **kw)


@pytest.mark.parametrize("name", ["batch_size", "bptt", "eval_bptt"])
@pytest.mark.parametrize("value", [0, -2, True, 2.0, "4"])
def test_trainer_window_sizes_are_positive_integers(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value!r}"):
        _trainer(**{name: value})


def test_trainer_takes_numpy_integers():
    tr = _trainer(batch_size=np.int64(2), bptt=np.int32(3), eval_bptt=np.int64(5))
    assert (tr.batch_size, tr.bptt, tr.eval_bptt) == (2, 3, 5)


@pytest.mark.parametrize("bptt", [0, -1, False, 1.5])
def test_evaluate_perplexity_window_must_be_a_positive_integer(bptt):
    with pytest.raises(ValueError, match="bptt \\(window length\\) must be a positive integer"):
        evaluate_perplexity(StandinLM(6, 3, 4), np.array([1, 2, 3]), bptt)


@pytest.mark.parametrize("ids", [[], [3]])
def test_evaluate_perplexity_needs_two_ids(ids):
    with pytest.raises(ValueError, match=f"ids must hold at least 2 word ids .*got {len(ids)}"):
        evaluate_perplexity(StandinLM(6, 3, 4), np.array(ids, dtype=np.int64), 4)


def test_evaluate_perplexity_of_two_ids_is_finite():
    ppl = evaluate_perplexity(StandinLM(6, 3, 4), np.array([1, 2]), 4)
    assert math.isfinite(ppl) and ppl > 0
