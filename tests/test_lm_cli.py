"""`fastrnn lm train` / `generate` / `eval`: runs, metrics contract, resume, every bad flag or
file a clear error with nothing written, generation and evaluation from a checkpoint, a PTB smoke
run."""

import json
import os
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.cli import main
from fastrnn.train import config as lm_config

sys.path.insert(0, os.path.dirname(__file__))
from _lm_standin import StandinLM
from test_train import write_corpus

TINY = [
    "--embed-size",
    "8",
    "--hidden-sizes",
    "16",
    "--batch-size",
    "4",
    "--bptt",
    "6",
    "--lr",
    "1",
    "--decay-after",
    "2",
    "--no-progress",
    "--no-plot",
    "--threads",
    "1",
]


def train(data, out, *extra):
    return main(["lm", "train", "--data", data, "--out", str(out), *TINY, *extra])


def resume(data, out, *extra):
    """`fastrnn lm train --resume` on the run in `out` (no TINY: a resumed run takes its own)."""
    return main(["lm", "train", "--data", data, "--out", str(out), "--resume", *extra])


def test_train_writes_the_contract(tmp_path, standin, capsys):
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, "--epochs", "3") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["preset"] == "zaremba-small"
    assert [e["epoch"] for e in m["epochs"]] == [1, 2, 3]
    for e in m["epochs"]:
        assert {"epoch", "train_ppl", "val_ppl", "seconds", "words_per_sec", "lr"} <= set(e)
        assert e["words_per_sec"] > 0 and e["seconds"] > 0
    assert [e["lr"] for e in m["epochs"]] == [1.0, 1.0, 0.5]
    assert m["epochs"][-1]["val_ppl"] < m["epochs"][0]["val_ppl"]
    assert isinstance(m["test_ppl"], float) and 1 < m["test_ppl"] < 8
    # the final model's test perplexity too; the same model when the last epoch is the best
    assert isinstance(m["test_ppl_final"], float) and 1 < m["test_ppl_final"] < 8
    if m["best_epoch"] == 3:
        assert m["test_ppl_final"] == m["test_ppl"]
    assert m["config"]["hidden_sizes"] == [16] and m["config"]["clip"] == 5.0
    assert (out / "best" / "model.npz").is_file() and (out / "last" / "checkpoint.json").is_file()
    assert json.loads((out / "vocab.json").read_text())[:3] == ["the", "cat", "sat"]
    text = capsys.readouterr().out
    assert "epoch   3" in text and "test ppl" in text


def test_plot_is_written(tmp_path, standin):
    pytest.importorskip("matplotlib")
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    args = [a for a in TINY if a != "--no-plot"]
    assert main(["lm", "train", "--data", data, "--out", str(out), *args, "--epochs", "1"]) == 0
    assert (out / "perplexity.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_the_same_curve(tmp_path, standin, capsys):
    data = write_corpus(tmp_path / "ptb")
    assert train(data, tmp_path / "a", "--epochs", "2") == 0
    assert train(data, tmp_path / "b", "--epochs", "1") == 0
    assert resume(data, tmp_path / "b", "--epochs", "2", "--no-progress", "--no-plot") == 0
    capsys.readouterr()
    assert resume(data, tmp_path / "b", "--no-progress", "--no-plot") == 0  # nothing left to do
    assert "the run is complete (2 of 2 epochs)" in capsys.readouterr().out
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert len(b["epochs"]) == 2
    for x, y in zip(a["epochs"], b["epochs"]):
        for k in ("epoch", "train_ppl", "val_ppl", "lr", "steps"):
            assert x[k] == y[k], k
    assert a["test_ppl"] == b["test_ppl"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--bptt", "-3"], "--bptt must be a positive integer"),
        (["--dropout", "1.5"], r"--dropout must be in \[0, 1\)"),
        (
            ["--variational", "true", "--recurrent-dropout", "1"],
            r"--recurrent-dropout must be in \[0, 1\)",
        ),
        (["--hidden-dropout", "-0.1"], r"--hidden-dropout must be in \[0, 1\)"),
        (["--weight-drop", "1"], r"--weight-drop must be in \[0, 1\)"),
        (
            ["--model", "rnnlm", "--init", "normal", "--weight-drop", "0.2"],
            "cannot take --weight-drop 0.2",
        ),
        (["--output-dropout", "0.2"], "--output-dropout must be unset unless --variational true"),
        (["--clip", "-1"], "--clip must be >= 0"),
        (["--threads", "-1"], "--threads must be >= 0"),
        (["--max-steps", "0"], "--max-steps must be a positive integer"),
        (["--eval-words", "1"], "--eval-words must be at least 2"),
        (["--checkpoint-minutes", "-1"], "--checkpoint-minutes must be a number >= 0"),
        (["--checkpoint-minutes", "nan"], "--checkpoint-minutes must be a number >= 0"),
        (["--hidden-sizes", "16,0"], "--hidden-sizes must be positive layer sizes"),
        (["--tie-weights", "true", "--embed-size", "4"], "--embed-size must be equal to the last"),
        (["--batch-size", "500"], "too few for --batch-size 500"),
        (["--resume"], "holds no checkpoint"),
    ],
)
def test_bad_flags_are_clear_errors_and_write_nothing(tmp_path, standin, capsys, flags, message):
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, *flags) == 2
    assert "fastrnn lm train: error:" in capsys.readouterr().err
    capsys.readouterr()
    train(data, out, *flags)
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--preset", "nope"],
        ["--cell", "xlstm"],
        ["--hidden-sizes", "a,b"],
        ["--lr", "fast"],
        ["--tie-weights", "maybe"],
    ],
)
def test_argparse_rejects_bad_values(tmp_path, standin, capsys, flags):
    data = write_corpus(tmp_path / "ptb")
    with pytest.raises(SystemExit) as e:
        train(data, tmp_path / "run", *flags)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", r"ptb\.valid\.txt: file not found"),
        ("empty", r"ptb\.valid\.txt: no words"),
        ("binary", r"ptb\.valid\.txt: binary file"),
        ("latin1", r"ptb\.valid\.txt: not UTF-8"),
        ("unknown word", r"ptb\.valid\.txt: word 'zebra' is not in the training vocabulary"),
        ("no dir", "not a directory"),
        ("no corpus", r"holds no corpus \(expected ptb\.train\.txt, .* or wiki\.train\.tokens"),
    ],
)
def test_bad_data_files_are_clear_errors(tmp_path, standin, capsys, damage, message):
    data = write_corpus(tmp_path / "ptb")
    valid = os.path.join(data, "ptb.valid.txt")
    if damage == "missing":
        os.remove(valid)
    elif damage == "no dir":
        data = str(tmp_path / "absent")
    elif damage == "no corpus":
        data = str(tmp_path)  # a directory, without a corpus's files
    else:
        content = {
            "empty": b"",
            "binary": b"\x00\x01\x02",
            "latin1": b" caf\xe9 \n",
            "unknown word": b" the zebra \n",
        }[damage]
        with open(valid, "wb") as f:
            f.write(content)
    assert train(data, tmp_path / "run") == 2
    err = capsys.readouterr().err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_a_wikitext_directory_trains_and_evaluates_as_ptb_does(tmp_path, standin, capsys):
    """The same corpus under WikiText's file names: the same run, to the bit."""
    ptb = write_corpus(tmp_path / "ptb")
    wiki = tmp_path / "wikitext-2"
    wiki.mkdir()
    for split in ("train", "valid", "test"):
        os.link(os.path.join(ptb, f"ptb.{split}.txt"), wiki / f"wiki.{split}.tokens")
    assert train(ptb, tmp_path / "a", "--epochs", "2") == 0
    assert train(str(wiki), tmp_path / "b", "--epochs", "2") == 0
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    assert [e["val_ppl"] for e in a["epochs"]] == [e["val_ppl"] for e in b["epochs"]]
    assert a["test_ppl"] == b["test_ppl"]
    capsys.readouterr()
    out = str(tmp_path / "e.json")
    argv = ["--model", str(tmp_path / "b"), "--data", str(wiki), "--split", "test", "--json", out]
    assert main(["lm", "eval", "--no-progress", *argv]) == 0
    got = json.loads((tmp_path / "e.json").read_text())["results"]["test"]
    assert got["ppl"] == pytest.approx(b["test_ppl"], rel=1e-12)
    assert got["file"].endswith("wiki.test.tokens")


def test_out_holding_a_run_needs_resume_and_resume_refuses_overrides(tmp_path, standin, capsys):
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, "--epochs", "1") == 0
    before = (out / "metrics.json").read_bytes()
    assert train(data, out, "--epochs", "2") == 2
    assert "already holds a run: pass --resume" in capsys.readouterr().err
    assert resume(data, out, "--lr", "3", "--no-progress") == 2
    assert "drop --lr" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    (tmp_path / "file").write_text("x")
    assert train(data, tmp_path / "file") == 2
    assert "not a directory" in capsys.readouterr().err


def test_max_steps_partial_epoch_then_resume_refused(tmp_path, standin, capsys):
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, "--epochs", "3", "--max-steps", "2") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["epochs"]) == 1 and m["epochs"][0]["partial"] and m["epochs"][0]["steps"] == 2
    assert m["test_ppl"] is not None
    assert resume(data, out, "--no-progress") == 2
    assert "cut short by --max-steps" in capsys.readouterr().err


def _same_curve(a, b):
    a = json.loads((a / "metrics.json").read_text())
    b = json.loads((b / "metrics.json").read_text())
    assert len(a["epochs"]) == len(b["epochs"])
    for x, y in zip(a["epochs"], b["epochs"]):
        for k in ("epoch", "train_ppl", "val_ppl", "lr", "steps"):
            assert x[k] == y[k], k
    assert a["test_ppl"] == b["test_ppl"]


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_inside_the_epoch_and_resume_continues(
    tmp_path, standin, monkeypatch, capsys, signum
):
    """SIGTERM (a scheduler's) or Ctrl-C in the middle of epoch 2: the run writes a checkpoint
    of that point and exits with 128 + the signal; --resume ends on the unbroken run's curve."""
    import signal

    from fastrnn.train.trainer import LMTrainer

    data = write_corpus(tmp_path / "ptb")
    assert train(data, tmp_path / "a", "--epochs", "3") == 0
    step = LMTrainer.train_step

    def train_step(self, xs, ts):
        loss = step(self, xs, ts)
        if self.epoch == 1 and self.position is not None and self.position["windows"] == 2:
            os.kill(os.getpid(), getattr(signal, signum))  # arrives before the next update
        return loss

    monkeypatch.setattr(LMTrainer, "train_step", train_step)
    before = signal.getsignal(signal.SIGINT)
    code = train(data, tmp_path / "b", "--epochs", "3")
    assert code == 128 + getattr(signal, signum)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    err = capsys.readouterr().err
    assert f"{signum}: stopped in epoch 2 after 3 of" in err and "--resume" in err
    record = json.loads((tmp_path / "b" / "last" / "checkpoint.json").read_text())
    assert record["epoch"] == 1 and record["position"]["windows"] == 3
    monkeypatch.setattr(LMTrainer, "train_step", step)
    assert resume(data, tmp_path / "b", "--no-progress", "--no-plot") == 0
    assert "resuming in epoch 2 after 3 windows" in capsys.readouterr().out
    _same_curve(tmp_path / "a", tmp_path / "b")


def test_periodic_checkpoints_survive_a_crash(tmp_path, standin, monkeypatch):
    """A fault in the middle of epoch 2 (here an exception out of an update) kills the run; the
    checkpoint written inside the epoch before it (--checkpoint-minutes) resumes the same
    curve."""
    from fastrnn.train.trainer import LMTrainer

    data = write_corpus(tmp_path / "ptb")
    assert train(data, tmp_path / "a", "--epochs", "2") == 0
    step = LMTrainer.train_step

    def train_step(self, xs, ts):
        if self.epoch == 1 and self.position is not None and self.position["windows"] == 4:
            raise MemoryError("the machine ran out of memory")
        return step(self, xs, ts)

    monkeypatch.setattr(LMTrainer, "train_step", train_step)
    with pytest.raises(MemoryError):
        train(data, tmp_path / "b", "--epochs", "2", "--checkpoint-minutes", "1e-9")
    record = json.loads((tmp_path / "b" / "last" / "checkpoint.json").read_text())
    assert record["epoch"] == 1 and record["position"]["windows"] == 4
    assert len(os.listdir(tmp_path / "b" / "last")) == 3  # the record and its two files only
    monkeypatch.setattr(LMTrainer, "train_step", step)
    assert resume(data, tmp_path / "b", "--no-progress", "--no-plot") == 0
    _same_curve(tmp_path / "a", tmp_path / "b")


# -- generate -------------------------------------------------------------------------------------
@pytest.fixture
def trained(tmp_path_factory):
    import _pytest.monkeypatch

    mp = _pytest.monkeypatch.MonkeyPatch()
    mp.setattr(lm_config, "build_model", lambda cfg, V: StandinLM(V, 8, 16, "float64", 0))
    d = tmp_path_factory.mktemp("gen")
    data = write_corpus(d / "ptb")
    assert train(data, d / "run", "--epochs", "4") == 0
    mp.undo()
    return d / "run"


def test_generate_greedy_follows_the_pattern(trained, capsys):
    """Greedy text only uses word pairs of the training sentences (it learnt them)."""
    argv = [
        "lm",
        "generate",
        "--model",
        str(trained),
        "--start",
        "the",
        "--greedy",
        "--length",
        "30",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    from test_train import SENTENCES

    pairs = {p for s in SENTENCES for p in zip(["<eos>", *s.split()], [*s.split(), "<eos>"])}
    words = text.rstrip("\n").replace("\n", " <eos> ").split()
    assert len(words) >= 30
    assert set(zip(words, words[1:])) <= pairs, text
    assert main(argv) == 0
    assert capsys.readouterr().out == text  # deterministic


def test_generate_sampling_is_seeded(trained, capsys):
    outs = []
    for seed in (1, 1, 2):
        assert (
            main(
                [
                    "lm",
                    "generate",
                    "--model",
                    str(trained),
                    "--length",
                    "30",
                    "--temperature",
                    "2.0",
                    "--seed",
                    str(seed),
                ]
            )
            == 0
        )
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]
    words = outs[0].split()
    vocab = set(json.loads((trained / "vocab.json").read_text()))
    assert len(words) >= 25 and set(words) <= vocab
    # from the last checkpoint's model file directly too
    rec = json.loads((trained / "last" / "checkpoint.json").read_text())
    assert (
        main(
            [
                "lm",
                "generate",
                "--model",
                str(trained / "last" / rec["model_file"]),
                "--greedy",
                "--length",
                "3",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--start", "zebra"], "--start 'zebra' is not in the model's vocabulary"),
        (["--length", "-1"], "--length must be >= 0"),
        (["--temperature", "0"], "--temperature must be a positive number"),
        (["--model", "/nonexistent/x"], "no such file or directory"),
        (["--top-k", "0"], "--top-k must be a positive integer"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--greedy", "--top-k", "3"], "--greedy takes the most likely word"),
    ],
)
def test_generate_errors(trained, capsys, flags, message):
    argv = ["lm", "generate", "--model", str(trained), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_generate_greedy_and_temperature_exclusive(trained, capsys):
    with pytest.raises(SystemExit):
        main(["lm", "generate", "--model", str(trained), "--greedy", "--temperature", "1"])


def test_generate_from_a_corrupt_model_file(tmp_path, trained, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "vocab.json").write_text((trained / "vocab.json").read_text())
    assert main(["lm", "generate", "--model", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


# -- eval ---------------------------------------------------------------------------------------
def _eval(*argv):
    return main(["lm", "eval", "--no-progress", *argv])


def test_eval_gives_the_perplexities_training_measured(trained, tmp_path, capsys):
    data = str(trained.parent / "ptb")
    m = json.loads((trained / "metrics.json").read_text())
    out = tmp_path / "eval.json"
    assert _eval("--model", str(trained), "--data", data, "--json", str(out)) == 0
    text = capsys.readouterr().out
    assert "valid: ppl" in text and "test: ppl" in text and "words/s" in text
    r = json.loads(out.read_text())["results"]
    assert set(r) == {"valid", "test"}
    np.testing.assert_allclose(r["valid"]["ppl"], m["best_val_ppl"], rtol=1e-12)
    np.testing.assert_allclose(r["test"]["ppl"], m["test_ppl"], rtol=1e-12)
    n_valid = len(open(os.path.join(data, "ptb.valid.txt")).read().split()) + 8  # + <eos>
    assert r["valid"]["predictions"] == n_valid - 1 and r["valid"]["unknown_words"] == 0
    # the window changes the speed, not the result; the last checkpoint's model is another
    one = tmp_path / "one.json"
    assert _eval("--model", str(trained), "--data", data, "--split", "valid", "--eval-bptt",
                 "1", "--json", str(one)) == 0  # fmt: skip
    assert json.loads(one.read_text())["eval_bptt"] == 1
    np.testing.assert_allclose(
        json.loads(one.read_text())["results"]["valid"]["ppl"], r["valid"]["ppl"], rtol=1e-10
    )
    assert _eval("--model", str(trained / "last"), "--data", data, "--split", "train") == 0
    assert "train: ppl" in capsys.readouterr().out


def test_eval_reads_words_outside_the_vocabulary_as_unk(trained, tmp_path, capsys):
    """With "fish" renamed "<unk>" in the vocabulary, a file saying "zebra" where the valid
    file says "fish" has the same ids, so the same perplexity; the count is reported."""
    data = trained.parent / "ptb"
    valid = (data / "ptb.valid.txt").read_text()
    assert " fish " in valid
    words = json.loads((trained / "vocab.json").read_text())
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps(["<unk>" if w == "fish" else w for w in words]))
    text = tmp_path / "zebra.txt"
    text.write_text(valid.replace(" fish ", " zebra "))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert _eval("--model", str(trained), "--data", str(data), "--split", "valid",
                 "--json", str(a)) == 0  # fmt: skip
    assert _eval("--model", str(trained), "--text", str(text), "--vocab", str(vocab),
                 "--json", str(b)) == 0  # fmt: skip
    ra = json.loads(a.read_text())["results"]["valid"]
    rb = json.loads(b.read_text())["results"][str(text)]
    assert rb["ppl"] == ra["ppl"]
    assert rb["unknown_words"] == valid.count(" fish ") > 0
    assert f"{rb['unknown_words']} words outside the vocabulary" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--split", "valid,dev"], "--split must be a comma-separated list of train, valid, test"),
        (["--eval-bptt", "0"], "--eval-bptt must be a positive integer"),
        (["--threads", "-1"], "--threads must be >= 0"),
        (["--model", "/nonexistent/x"], "no such file or directory"),
        (["--data", "/nonexistent/ptb"], "--data /nonexistent/ptb: not a directory"),
        (["--text", "/nonexistent/a.txt"], "/nonexistent/a.txt: file not found"),
        (["--text", "ZEBRA"], "word 'zebra' is not in the training vocabulary"),
        (["--json", "DIR"], "is a directory, expected a file name"),
        (["--json", "/nonexistent/d/e.json"], "its directory does not exist"),
        (["--vocab", "SHORT"], "3 words, but the model"),
    ],
)
def test_eval_errors_name_the_flag_and_write_nothing(trained, tmp_path, capsys, flags, message):
    flags = [str(tmp_path) if f == "DIR" else f for f in flags]
    if "SHORT" in flags:  # a vocabulary that does not fit the model
        (tmp_path / "v.json").write_text('["a", "b", "c"]')
        flags = ["--vocab", str(tmp_path / "v.json")]
    if "ZEBRA" in flags:  # a word the vocabulary (which has no <unk>) lacks
        (tmp_path / "z.txt").write_text("the zebra sat\n")
        flags = ["--text", str(tmp_path / "z.txt")]
    if "--data" not in flags and "--text" not in flags:
        flags = ["--data", str(trained.parent / "ptb"), *flags]
    before = sorted(os.listdir(tmp_path))
    assert _eval("--model", str(trained), *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastrnn lm eval: error:") and message in err, err
    assert sorted(os.listdir(tmp_path)) == before


def test_eval_takes_data_or_text_not_both(trained, capsys):
    with pytest.raises(SystemExit):
        _eval("--model", str(trained), "--data", "x", "--text", "y")
    with pytest.raises(SystemExit):
        _eval("--model", str(trained))


def test_resume_reads_a_record_from_before_matmul_precision(tmp_path, standin):
    """Records written before the flag existed have no config.matmul_precision: they resume
    with the float32 products those runs had."""
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, "--epochs", "1") == 0
    record = out / "last" / "checkpoint.json"
    state = json.loads(record.read_text())
    assert state["config"].pop("matmul_precision") == "highest"
    record.write_text(json.dumps(state))
    assert resume(data, out, "--epochs", "2", "--no-progress", "--no-plot") == 0
    assert json.loads(record.read_text())["config"]["matmul_precision"] == "highest"


def test_resume_refuses_a_record_with_an_unknown_matmul_precision(tmp_path, standin, capsys):
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, "--epochs", "1") == 0
    record = out / "last" / "checkpoint.json"
    state = json.loads(record.read_text())
    state["config"]["matmul_precision"] = "low"
    record.write_text(json.dumps(state))
    capsys.readouterr()
    assert resume(data, out, "--epochs", "2", "--no-progress", "--no-plot") == 2
    assert "--matmul-precision must be 'highest' or 'medium', got 'low'" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["epochs"][-1]["epoch"] == 1


def test_resume_may_change_the_evaluation_window(tmp_path, standin):
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, "--epochs", "1") == 0
    assert resume(data, out, "--epochs", "2", "--eval-bptt", "3", "--no-progress") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["eval_bptt"] == 3 and len(m["epochs"]) == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "give --numpy DIR, --onnx FILE or both"),
        (["--numpy", "FILE"], "exists and is not a directory"),
        (["--onnx", "DIR"], "is a directory, expected a file name"),
        (["--numpy", "DIR", "--model", "/nonexistent/x"], "no such file or directory"),
        (
            ["--numpy", "DIR"],
            "model must be one of LanguageModel, Rnnlm, BetterRnnlm, SequenceClassifier",
        ),
    ],
)
def test_export_errors(trained, tmp_path, capsys, flags, message):
    """(The trained fixture's model is the tests' stand-in, which no runtime knows.)"""
    (tmp_path / "file").write_text("x")
    flags = [{"FILE": str(tmp_path / "file"), "DIR": str(tmp_path / "d")}.get(f, f) for f in flags]
    (tmp_path / "d").mkdir()
    assert main(["lm", "export", "--model", str(trained), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastrnn lm export: error:") and message in err, err
    assert os.listdir(tmp_path / "d") == []


# -- the real models of fastrnn.models.lm -------------------------------------------------------
REAL = {
    "lm": ["--model", "lm", "--hidden-sizes", "16", "--embed-size", "16", "--decay-after", "9"],
    # the read-out's products in bfloat16 (float32 where the CPU lacks AVX512-BF16)
    "lm-bf16": [
        *("--model", "lm", "--hidden-sizes", "16", "--embed-size", "16", "--decay-after", "9"),
        *("--matmul-precision", "medium"),
    ],
    "vd-tied": ["--preset", "medium-vd-tied", "--hidden-sizes", "16,16", "--embed-size", "16"],
    # each variational site its own ratio: the checkpoint must rebuild the same masks
    "vd-sites": [
        *("--preset", "medium-vd-tied", "--hidden-sizes", "16,16", "--embed-size", "16"),
        *("--recurrent-dropout", "0.2", "--input-dropout", "0.3", "--output-dropout", "0.4"),
        *("--weight-drop", "0.3"),
    ],
    "rnnlm": ["--preset", "dlfs2-rnnlm", "--hidden-sizes", "16", "--embed-size", "16"],
    "better": ["--preset", "dlfs2-better", "--hidden-sizes", "16,16", "--embed-size", "16"],
}


@pytest.mark.parametrize("kind", list(REAL))
def test_real_models_train_resume_and_generate(tmp_path, capsys, kind):
    """Each model family through the CLI: 3 epochs in one go equal 2 + a resumed 1 (dropout
    masks included), and generation runs from the checkpoint."""
    pytest.importorskip("fastrnn.models.lm")
    data = write_corpus(tmp_path / "ptb")
    flags = [
        *REAL[kind],
        "--batch-size",
        "4",
        "--bptt",
        "6",
        "--lr",
        "1",
        "--no-progress",
        "--no-plot",
    ]
    run = ["lm", "train", "--data", data, *flags]
    assert main([*run, "--out", str(tmp_path / "a"), "--epochs", "3"]) == 0
    header = capsys.readouterr().out.splitlines()[0]  # says what "medium" runs, where asked
    assert ("matmul_precision medium" in header) == (kind == "lm-bf16"), header
    assert main([*run, "--out", str(tmp_path / "b"), "--epochs", "2"]) == 0
    assert resume(data, tmp_path / "b", "--epochs", "3", "--no-progress", "--no-plot") == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [(e["train_ppl"], e["val_ppl"], e["lr"]) for e in a["epochs"]] == [
        (e["train_ppl"], e["val_ppl"], e["lr"]) for e in b["epochs"]
    ]
    assert a["test_ppl"] == b["test_ppl"] and np.isfinite(a["test_ppl"])
    if kind.startswith("lm"):
        assert a["epochs"][-1]["val_ppl"] < 0.5 * a["epochs"][0]["val_ppl"]
    record = json.loads((tmp_path / "b" / "last" / "checkpoint.json").read_text())
    assert record["config"]["matmul_precision"] == ("medium" if kind == "lm-bf16" else "highest")
    capsys.readouterr()
    assert (
        main(["lm", "generate", "--model", str(tmp_path / "a"), "--length", "12", "--seed", "3"])
        == 0
    )
    assert len(capsys.readouterr().out.split()) >= 6
    # exported for NumPy only, the best model scores the test split as training measured it
    out = tmp_path / "np"
    assert main(["lm", "export", "--model", str(tmp_path / "a"), "--numpy", str(out)]) == 0
    assert "fastrnn_numpy.py" in capsys.readouterr().out
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"rt_{kind}", out / "fastrnn_numpy.py")
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    from fastrnn.train import load_ptb

    test_ids = load_ptb(data).test
    # (the runtime's read-out is float32: from bfloat16 training products, near but not equal)
    rtol = 1e-2 if kind == "lm-bf16" and fastrnn.bf16_supported() else 1e-4
    np.testing.assert_allclose(
        rt.perplexity(rt.load(out / "model.npz"), test_ids), a["test_ppl"], rtol=rtol
    )


def test_each_variational_site_takes_its_own_ratio_or_dropout():
    from fastrnn.train.presets import preset

    cfg = dict(preset("medium-vd-tied"), hidden_sizes=[8, 8], embed_size=8)
    cfg.update(dropout=0.4, recurrent_dropout=0.1, hidden_dropout=0.0)
    lm_config.check_config(cfg)
    model = lm_config.build_model(cfg, 30)
    assert model.variational == {
        "embedding": cfg["embed_dropout"],
        "input": 0.4,
        "hidden": 0.0,
        "recurrent": 0.1,
        "output": 0.4,
    }
    assert model.stack.recurrent_dropout == 0.1 and model.stack.dropout == 0.0
    # unset sites all follow --dropout, as before the sites had flags
    default = lm_config.build_model(dict(cfg, recurrent_dropout=None, hidden_dropout=None), 30)
    assert set(default.variational.values()) == {0.4, cfg["embed_dropout"]}
    # the run's first line names them
    assert lm_config.dropout_note(cfg) == (
        ", variational dropout input 0.4, hidden 0, recurrent 0.1, output 0.4, words 0.1"
    )
    assert lm_config.dropout_note(preset("medium-vd-tied")) == (
        ", variational dropout input 0.5, hidden 0.5, recurrent 0.25, output 0.5, words 0.1"
    )
    assert lm_config.dropout_note(dict(preset("medium-vd-tied"), recurrent_dropout=None)) == (
        ", variational dropout 0.5, words 0.1"
    )
    assert lm_config.dropout_note(preset("zaremba-medium")) == ", dropout 0.5"
    assert lm_config.dropout_note(preset("zaremba-small")) == ""
    assert lm_config.dropout_note(dict(preset("zaremba-small"), weight_drop=0.5)) == (
        ", weight drop 0.5"
    )
    assert lm_config.build_model(dict(cfg, weight_drop=0.5), 30).stack.weight_drop == 0.5


# -- presets --------------------------------------------------------------------------------------
def test_every_preset_passes_its_own_checks():
    from fastrnn.train.presets import PRESETS, preset

    for name in PRESETS:
        lm_config.check_config(dict(preset(name), preset=name))
    z = preset("zaremba-small")
    assert (
        z["hidden_sizes"],
        z["batch_size"],
        z["bptt"],
        z["epochs"],
        z["clip"],
        z["loss"],
        z["init_scale"],
    ) == ([200, 200], 20, 20, 13, 5.0, "sum", 0.1)


# -- PTB smoke test -------------------------------------------------------------------------------
def _ptb_dir():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (
        os.environ.get("FASTRNN_PTB"),
        os.path.join(root, "..", "shared", "data", "ptb"),
        os.path.join(root, "..", "..", "shared", "data", "ptb"),
    ):
        if d and os.path.isfile(os.path.join(d, "ptb.train.txt")):
            return d
    return None


@pytest.mark.skipif(_ptb_dir() is None, reason="PTB not found (set FASTRNN_PTB)")
def test_ptb_smoke(tmp_path):
    """A few hundred updates of a small LanguageModel on the real corpus."""
    pytest.importorskip("fastrnn.models.lm")
    out = tmp_path / "run"
    assert (
        main(
            [
                "lm",
                "train",
                "--data",
                _ptb_dir(),
                "--out",
                str(out),
                "--hidden-sizes",
                "16",
                "--embed-size",
                "16",
                "--batch-size",
                "20",
                "--bptt",
                "20",
                "--max-steps",
                "200",
                "--eval-bptt",
                "100",
                "--eval-words",
                "3000",
                "--no-progress",
                "--no-plot",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    e = m["epochs"][0]
    assert e["steps"] == 200 and e["partial"]
    assert e["val_ppl"] < 1000  # a uniform guess: 10000
    assert m["eval_words"] == 3000
    assert np.isfinite(m["test_ppl"]) and m["test_ppl"] < 1000


# -- a corpus of one's own: three named files, a capped vocabulary ---------------------------------
def _own_corpus(tmp_path):
    """Three text files not preprocessed as PTB is: rare words, words unseen in training."""
    data = write_corpus(tmp_path / "ptb")
    files = {}
    for split in ("train", "valid", "test"):
        text = open(os.path.join(data, f"ptb.{split}.txt")).read()
        path = tmp_path / f"mine.{split}"
        path.write_text(text + (" a zebra hopped \n" if split != "train" else " an okapi \n"))
        files[split] = str(path)
    return files


def _train_files(files, out, *extra):
    argv = ["lm", "train", "--out", str(out), *TINY]
    for split, path in files.items():
        argv += [f"--{split}", path]
    return main(argv + list(extra))


def test_three_named_files_with_a_capped_vocabulary_train_and_resume(tmp_path, standin, capsys):
    files = _own_corpus(tmp_path)
    out = tmp_path / "run"
    assert _train_files(files, out, "--epochs", "1", "--max-vocab", "12") == 0
    text = capsys.readouterr().out
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab) == 12 and vocab[-1] == "<unk>" and "okapi" not in vocab
    assert "words outside the vocabulary, read as <unk>: train " in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["max_vocab"] == 12 and np.isfinite(m["test_ppl"])
    # --resume rebuilds the same vocabulary from the same files and the run's max_vocab
    argv = ["lm", "train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]
    argv += ["--no-plot"] + [x for k, p in files.items() for x in (f"--{k}", p)]
    assert main(argv) == 0
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 2
    assert main(argv + ["--max-vocab", "12"]) == 2
    assert "drop --max-vocab" in capsys.readouterr().err


def test_unseen_words_without_a_vocabulary_size_name_the_file_and_the_remedy(
    tmp_path, standin, capsys
):
    files = _own_corpus(tmp_path)
    assert _train_files(files, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "mine.valid: word 'zebra' is not in the training vocabulary" in err
    assert "--max-vocab V" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "which, message",
    [
        ({"data": 1, "train": 1}, "give --data DIR or --train, not both"),
        ({"train": 1, "valid": 1}, r"--train, --valid and --test FILE \(missing --test\)"),
        ({}, "give the corpus: --data DIR, or --train, --valid and --test FILE"),
        ({"train": 1, "valid": 1, "test": 1, "max": "1"}, "--max-vocab must be at least 2"),
    ],
)
def test_the_corpus_flags_are_checked(tmp_path, standin, capsys, which, message):
    files = _own_corpus(tmp_path)
    argv = ["lm", "train", "--out", str(tmp_path / "run"), *TINY]
    if "data" in which:
        argv += ["--data", str(tmp_path / "ptb")]
    for split in ("train", "valid", "test"):
        if split in which:
            argv += [f"--{split}", files[split]]
    if "max" in which:
        argv += ["--max-vocab", which["max"]]
    assert main(argv) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_patience_is_a_checked_flag_that_resume_may_change(tmp_path, standin, capsys):
    data = write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    assert train(data, out, "--patience", "0") == 2
    assert "--patience must be a positive integer" in capsys.readouterr().err
    assert train(data, out, "--epochs", "2", "--patience", "5") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["patience"] == 5 and m["stopped_early"] is None
    assert resume(data, out, "--epochs", "3", "--patience", "1", "--no-progress", "--no-plot") == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["patience"] == 1


def test_generate_top_k_1_and_a_tiny_top_p_are_greedy(trained, capsys):
    base = ["lm", "generate", "--model", str(trained), "--length", "25", "--seed", "3"]
    assert main(base + ["--greedy"]) == 0
    greedy = capsys.readouterr().out
    for flags in (["--top-k", "1"], ["--top-p", "1e-9"], ["--top-k", "4", "--top-p", "1e-9"]):
        assert main(base + ["--temperature", "3", *flags]) == 0
        assert capsys.readouterr().out == greedy, flags
    assert main(base + ["--temperature", "3", "--top-k", "3"]) == 0
    assert capsys.readouterr().out != greedy  # (a sample at a high temperature)
