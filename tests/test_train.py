"""fastrnn.train: PTB reading, TBPTT batching, schedules, the LM trainer and its checkpoints."""

import json
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastrnn.train import (
    SGD,
    Adam,
    DecayLR,
    LMTrainer,
    PlateauLR,
    checkpoint as ckpt,
    eval_windows,
    load_ptb,
    make_schedule,
    read_words,
    train_windows,
)
from fastrnn.train.data import Vocabulary, dlfs2_windows, window_count, zaremba_windows
from fastrnn.train.trainer import unique_params

sys.path.insert(0, os.path.dirname(__file__))
from _lm_standin import StandinLM

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the bird sang a song",
    "my cat ate the fish",
]


def write_corpus(d, n_train=120, n_valid=8, n_test=8, seed=0):
    """A tiny PTB-like directory: sentences drawn from SENTENCES, one per line."""
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        lines = [SENTENCES[i] for i in rng.integers(0, len(SENTENCES), n)]
        if name == "train":
            lines[: len(SENTENCES)] = SENTENCES  # every word in train
        with open(os.path.join(d, f"ptb.{name}.txt"), "w") as f:
            f.write("".join(f" {s} \n" for s in lines))
    return str(d)


# -- data -----------------------------------------------------------------------------------------
def test_read_words_appends_eos_per_line(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(" a b \n c\n\n d")
    assert read_words(p) == ["a", "b", "<eos>", "c", "<eos>", "<eos>", "d", "<eos>"]


def test_vocabulary_in_order_of_first_appearance(tmp_path):
    d = write_corpus(tmp_path)
    c = load_ptb(d)
    words = read_words(os.path.join(d, "ptb.train.txt"))
    assert c.vocab.id_to_word == list(dict.fromkeys(words))
    assert [c.vocab.id_to_word[i] for i in c.train] == words
    assert len(c.valid) == len(read_words(os.path.join(d, "ptb.valid.txt")))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no words"),
        (b"  \n\n", "no words"),
        (b"ab\x00cd", "binary"),
        (b"caf\xe9 \n", "not UTF-8"),
    ],
)
def test_bad_files_name_the_path(tmp_path, content, message):
    d = write_corpus(tmp_path)
    bad = os.path.join(d, "ptb.valid.txt")
    with open(bad, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=message) as e:
        load_ptb(d)
    assert bad in str(e.value)


def test_missing_file_and_directory(tmp_path):
    d = write_corpus(tmp_path)
    os.remove(os.path.join(d, "ptb.test.txt"))
    with pytest.raises(ValueError, match=r"ptb\.test\.txt: file not found"):
        load_ptb(d)
    with pytest.raises(ValueError, match="not a directory"):
        load_ptb(os.path.join(d, "nope"))


def test_unknown_word_in_valid_names_word_and_path(tmp_path):
    d = write_corpus(tmp_path)
    with open(os.path.join(d, "ptb.valid.txt"), "a") as f:
        f.write(" the zebra \n")
    with pytest.raises(ValueError, match=r"ptb\.valid\.txt: word 'zebra' is not in the training"):
        load_ptb(d)


def test_zaremba_windows_match_ptb_iterator():
    ids = np.arange(103)
    N, T = 4, 5
    wins = list(zaremba_windows(ids, N, T))
    data = ids[:100].reshape(4, 25)  # TF's reader, written out
    assert len(wins) == (25 - 1) // 5 == window_count(103, N, T, "zaremba")
    for i, (x, y) in enumerate(wins):
        np.testing.assert_array_equal(x, data[:, i * 5 : (i + 1) * 5])
        np.testing.assert_array_equal(y, data[:, i * 5 + 1 : (i + 1) * 5 + 1])
    # the streams continue from one window to the next
    np.testing.assert_array_equal(wins[1][0][:, 0], wins[0][0][:, -1] + 1)


def test_dlfs2_windows_match_the_books_get_batch():
    ids = np.arange(50) * 10
    N, T = 3, 4
    xs, ts = ids[:-1], ids[1:]
    size, jump = len(xs), len(xs) // N
    iters = size // (N * T)
    time_idx = 0
    for epoch in range(2):  # the read position carries on
        wins = list(dlfs2_windows(ids, N, T, epoch))
        assert len(wins) == iters
        for x, t in wins:
            bx, bt = np.empty((N, T), int), np.empty((N, T), int)
            for s in range(T):  # the book's loop order
                for i in range(N):
                    bx[i, s] = xs[(i * jump + time_idx) % size]
                    bt[i, s] = ts[(i * jump + time_idx) % size]
                time_idx += 1
            np.testing.assert_array_equal(x, bx)
            np.testing.assert_array_equal(t, bt)


def test_eval_windows_cover_every_prediction_once():
    ids = np.arange(23)
    wins = list(eval_windows(ids, 5))
    assert [w[0].shape for w in wins] == [(1, 5)] * 4 + [(1, 2)]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in wins], 1)[0], ids[:-1])
    np.testing.assert_array_equal(np.concatenate([t for _, t in wins], 1)[0], ids[1:])


def test_bad_batching_arguments():
    with pytest.raises(ValueError, match="batch size"):
        list(zaremba_windows(np.arange(100), 0, 5))
    with pytest.raises(ValueError, match="bptt"):
        list(dlfs2_windows(np.arange(100), 2, 0))
    with pytest.raises(ValueError, match="too short"):
        list(zaremba_windows(np.arange(10), 4, 5))
    with pytest.raises(ValueError, match="batching must be"):
        train_windows("tf", np.arange(100), 2, 5)


# -- schedules ------------------------------------------------------------------------------------
def test_decay_schedule_is_zarembas():
    s = DecayLR(1.0, 0.5, 4)
    assert [s.lr(e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]


def test_plateau_schedule_is_the_books():
    s = PlateauLR(20.0, 4.0)
    lrs = []
    for e, val in enumerate([300, 200, 210, 190, 190]):
        lrs.append(s.lr(e))
        s.observe(e, val)
    assert lrs == [20, 20, 20, 5, 5] and s.lr(5) == 1.25
    t = PlateauLR(20.0)
    t.load_state(json.loads(json.dumps(s.state())))
    assert t.lr(5) == 1.25 and t.best == 190


def test_schedule_errors():
    with pytest.raises(ValueError, match="lr must be"):
        make_schedule("decay", -1)
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule("cosine", 1)


# -- trainer --------------------------------------------------------------------------------------
def make_trainer(vocab, seed=0, loss="mean", optimizer=None, dropout=0.0, **kw):
    model = StandinLM(vocab, 8, 16, "float64", seed, dropout)
    opt = optimizer or SGD(1.0)
    kw = dict({"batch_size": 4, "bptt": 6, "clip": 5.0, "loss": loss, "progress": False}, **kw)
    return LMTrainer(model, opt, make_schedule("decay", opt.lr, 0.5, 2), **kw)


def test_perplexity_falls_on_a_tiny_corpus(tmp_path):
    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab), loss="sum")
    start = tr.evaluate(c.valid)
    hist = tr.fit(c.train, c.valid, 4, log=None)
    assert start > 0.7 * len(c.vocab)  # near uniform at first
    assert hist[-1]["val_ppl"] < 0.25 * start
    assert hist[-1]["train_ppl"] < 0.5 * hist[0]["train_ppl"]
    assert [h["lr"] for h in hist] == [1.0, 1.0, 0.5, 0.25]
    assert tr.step == 4 * window_count(len(c.train), 4, 6)


def test_summed_loss_scales_the_gradient_by_T(tmp_path):
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, 9, (3, 7)), rng.integers(0, 9, (3, 7))
    grads = []
    for loss in ("mean", "sum"):
        tr = make_trainer(9, loss=loss, clip=None)
        lr_seen = []
        tr.optimizer.update = lambda p, g, seen=lr_seen: seen.append([x.copy() for x in g])
        tr.train_step(xs, ts)
        grads.append(lr_seen[0])
    for gm, gs in zip(*grads):
        np.testing.assert_allclose(gs, 7 * gm, rtol=1e-12, atol=1e-15)


def test_evaluation_window_length_does_not_change_perplexity(tmp_path):
    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab))
    tr.fit(c.train, c.valid, 1, log=None)
    ppls = []
    for T in (1, 7, 35):
        tr.eval_bptt = T
        ppls.append(tr.evaluate(c.valid))
    np.testing.assert_allclose(ppls, ppls[0], rtol=1e-10)


def test_evaluate_perplexity_is_the_trainers_and_can_be_stopped(tmp_path):
    from fastrnn.train import EVAL_BPTT, TrainingInterrupted, evaluate_perplexity

    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab))
    assert tr.eval_bptt == EVAL_BPTT  # the default window, whatever the training bptt
    tr.fit(c.train, c.valid, 1, log=None)
    ppl = evaluate_perplexity(tr.model, c.valid, 5)
    assert ppl == evaluate_perplexity(tr.model, c.valid, 5)  # the state is reset before
    np.testing.assert_allclose(ppl, tr.evaluate(c.valid), rtol=1e-10)
    calls = []
    with pytest.raises(TrainingInterrupted, match="stopped during the valid evaluation"):
        evaluate_perplexity(
            tr.model, c.valid, 5, desc="valid", stop=lambda: calls.append(1) or len(calls) > 2
        )
    assert len(calls) == 3


def test_state_is_carried_across_windows(tmp_path):
    """Training continues each stream: a model fed window 2 after window 1 sees a different
    initial state than one reset before it."""
    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab))
    wins = list(train_windows("zaremba", c.train, 4, 6))
    m = tr.model
    m.reset_state()
    m.forward(*wins[0])
    carried = m.forward(*wins[1])
    m.reset_state()
    fresh = m.forward(*wins[1])
    assert carried != fresh


def test_tied_parameters_updated_once_with_summed_gradients():
    W = np.arange(6.0).reshape(2, 3)
    b = np.zeros(3)
    params = [W, b, W.T, W]
    groups = unique_params(params, None)
    assert groups == [(0, [(2, True), (3, False)]), (1, [])]


def test_trainer_resume_continues_the_same_curve(tmp_path):
    c = load_ptb(write_corpus(tmp_path))
    V = len(c.vocab)
    for opt, p in ((lambda: SGD(1.0), 0.0), (lambda: Adam(0.01), 0.0), (lambda: SGD(1.0), 0.3)):
        full = make_trainer(V, optimizer=opt(), dropout=p)
        full.fit(c.train, c.valid, 3, log=None)
        first = make_trainer(V, optimizer=opt(), dropout=p)
        first.fit(c.train, c.valid, 1, log=None)
        state, arrays = first.state()
        state = json.loads(json.dumps(state))
        second = make_trainer(V, optimizer=opt(), dropout=p)
        for p, q in zip(second.model.params, first.model.params):
            p[...] = q
        second.load_state(state, arrays)
        second.fit(c.train, c.valid, 3, log=None)
        for a, b in zip(full.history, second.history):
            for k in ("epoch", "train_ppl", "val_ppl", "lr", "steps", "grad_norm", "clipped"):
                assert a[k] == b[k], k


@pytest.mark.parametrize("at", [1, 5, "eval"])
def test_stop_inside_an_epoch_then_resume_continues_the_same_curve(tmp_path, at):
    """A stop requested after update `at` of epoch 2 (or during its evaluation), a checkpoint of
    that point through JSON and .npz, and a fresh trainer resumed from it: the same epochs, to
    the bit, as an unbroken run (dropout streams, the carried LSTM state, the epoch's running
    totals and the schedule all restored)."""
    from fastrnn.train import TrainingInterrupted

    c = load_ptb(write_corpus(tmp_path))
    V = len(c.vocab)
    full = make_trainer(V, dropout=0.3, eval_bptt=6)
    full.fit(c.train, c.valid, 3, log=None)
    windows = window_count(len(c.train), 4, 6)
    assert windows > 5

    first = make_trainer(V, dropout=0.3, eval_bptt=6)
    first.fit(c.train, c.valid, 1, log=None)
    if at == "eval":  # the stop arrives with the evaluation's first window (of several: T 6)
        train_forward = first.model.forward

        def forward(xs, ts, train_flg=True):
            first.stop_requested = first.stop_requested or not train_flg
            return train_forward(xs, ts, train_flg)

        first.model.forward = forward
        stop = None
    else:

        def stop(tr):
            tr.stop_requested = tr.position["windows"] == at

    with pytest.raises(TrainingInterrupted, match="valid evaluation" if at == "eval" else "after"):
        first.fit(c.train, c.valid, 3, on_window=stop, log=None)
    if at == "eval":
        del first.model.forward
    assert first.epoch == 1 and first.position["windows"] == (windows if at == "eval" else at)
    state, arrays = first.state()
    state = json.loads(json.dumps(state))
    assert state["position"]["windows"] == first.position["windows"]
    np.savez(tmp_path / "a.npz", **arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    assert "carry0_h" in arrays and "carry0_c" in arrays

    # other weights: the checkpoint's replace them
    second = make_trainer(V, dropout=0.3, seed=5, eval_bptt=6)
    for p, q in zip(second.model.params, first.model.params):
        p[...] = q
    second.load_state(state, arrays)
    second.fit(c.train, c.valid, 3, log=None)
    assert len(second.history) == 3
    for a, b in zip(full.history, second.history):
        for k in ("epoch", "train_ppl", "val_ppl", "lr", "steps", "grad_norm", "clipped"):
            assert a[k] == b[k], k
    assert second.step == full.step
    for p, q in zip(second.model.params, full.model.params):
        np.testing.assert_array_equal(p, q)


@settings(max_examples=12, deadline=None)
@given(
    epoch=st.integers(0, 2),
    window=st.integers(1, 40),
    adam=st.booleans(),
    dropout=st.sampled_from([0.0, 0.4]),
    loss=st.sampled_from(["mean", "sum"]),
)
def test_a_stop_anywhere_resumes_on_the_same_curve(tiny_corpus, epoch, window, adam, dropout, loss):
    """Property: whatever the epoch, window, optimizer, dropout and loss, a run stopped after
    any update and resumed from its checkpoint (through JSON) ends where an unbroken run does."""
    from fastrnn.train import TrainingInterrupted

    c = tiny_corpus
    V = len(c.vocab)
    windows = window_count(len(c.train), 4, 6)
    window = min(window, windows)

    def trainer():
        opt = Adam(0.01) if adam else SGD(1.0)
        return make_trainer(V, optimizer=opt, dropout=dropout, loss=loss)

    full = trainer()
    full.fit(c.train, c.valid, 3, log=None)
    first = trainer()

    def stop(tr):
        tr.stop_requested = tr.epoch == epoch and tr.position["windows"] == window

    with pytest.raises(TrainingInterrupted):
        first.fit(c.train, c.valid, 3, on_window=stop, log=None)
    state, arrays = first.state()
    state = json.loads(json.dumps(state))
    second = trainer()
    for p, q in zip(second.model.params, first.model.params):
        p[...] = q
    second.load_state(state, arrays)
    second.fit(c.train, c.valid, 3, log=None)
    assert [h["val_ppl"] for h in second.history] == [h["val_ppl"] for h in full.history]
    assert [h["train_ppl"] for h in second.history] == [h["train_ppl"] for h in full.history]
    for p, q in zip(second.model.params, full.model.params):
        np.testing.assert_array_equal(p, q)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return load_ptb(write_corpus(tmp_path_factory.mktemp("tiny")))


def test_load_state_checks_the_position_before_changing_anything(tmp_path):
    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab))
    tr.stop_requested = True
    with pytest.raises(Exception, match="stopped in epoch 1 after 1 of"):
        tr.fit(c.train, c.valid, 2, log=None)
    state, arrays = tr.state()
    fresh = make_trainer(len(c.vocab))
    del arrays["carry0_c"]
    with pytest.raises(ValueError, match="carried-state array 'carry0_c'"):
        fresh.load_state(state, arrays)
    bad = dict(state, position={"windows": 1})
    with pytest.raises(ValueError, match="position must hold windows, total, count, seconds"):
        fresh.load_state(bad, arrays)
    assert fresh.position is None and fresh.step == 0 and fresh.epoch == 0


def test_max_steps_cuts_the_epoch(tmp_path):
    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab))
    hist = tr.fit(c.train, c.valid, 5, max_steps=3, log=None)
    assert len(hist) == 1 and hist[0]["steps"] == 3 and hist[0]["partial"] and tr.step == 3


def test_diverging_loss_is_an_error(tmp_path):
    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab))
    tr.model.params[4][0, 0] = np.inf  # a blown-up weight: NaN loss
    with (
        pytest.raises(FloatingPointError, match="diverged"),
        np.errstate(invalid="ignore", over="ignore"),
    ):
        tr.fit(c.train, c.valid, 3, log=None)


def test_trainer_rejects_a_non_model():
    with pytest.raises(TypeError, match="model lacks 'params'"):
        LMTrainer(object(), SGD(), make_schedule("constant", 1))


# -- checkpoints ----------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_old_files_removed(tmp_path):
    m = StandinLM(5, 3, 4)
    ckpt.save_last(tmp_path, m, {"m0": np.ones(3)}, {"epoch": 1, "step": 7, "config": {}})
    m.params[0][...] += 1
    ckpt.save_last(tmp_path, m, {"m0": np.zeros(3)}, {"epoch": 2, "step": 9, "config": {}})
    state, model, arrays = ckpt.load_last(tmp_path)
    assert state["step"] == 9 and arrays["m0"].sum() == 0
    np.testing.assert_array_equal(model.params[0], m.params[0])
    assert sorted(os.listdir(tmp_path / "last")) == [
        "checkpoint.json",
        "model-s000000009.npz",
        "optim-s000000009.npz",
    ]


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    m = StandinLM(5, 3, 4)
    ckpt.save_last(tmp_path, m, {}, {"epoch": 1, "step": 7, "config": {}})

    real_savez, calls = np.savez, []

    def boom(file, *args, **arrays):  # the model file is written, the optimizer's is not
        calls.append(file)
        if len(calls) == 1:
            return real_savez(file, *args, **arrays)
        file.write(b"PK half")  # (the atomic writers hand np.savez their temporary file)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_last(tmp_path, m, {"a": np.ones(2)}, {"epoch": 2, "step": 9, "config": {}})
    monkeypatch.undo()
    state, _, _ = ckpt.load_last(tmp_path)
    assert state["step"] == 7
    assert not [n for n in os.listdir(tmp_path / "last") if "tmp" in n]


def test_atomic_json_never_half_written(tmp_path):
    p = tmp_path / "x.json"
    ckpt.atomic_write_json(p, {"a": 1})
    with pytest.raises(ValueError):
        ckpt.atomic_write_json(p, {"a": math.nan})
    assert json.loads(p.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["x.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def _torch_reference_script():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benches", "torch_lm_train.py")
    spec = importlib.util.spec_from_file_location("torch_lm_train", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_torch_reference_script_trains(tmp_path):
    pytest.importorskip("torch")
    mod = _torch_reference_script()
    c = load_ptb(write_corpus(tmp_path))
    wps, ppl, done = mod.train(c, steps=None, epochs=3, N=4, T=6, log=None)
    assert done == 3 * window_count(len(c.train), 4, 6) and wps > 0
    assert ppl < 0.8 * len(c.vocab)  # it learns


def test_torch_reference_compare_alternates_two_processes(tmp_path, monkeypatch):
    """--compare: both workers train their blocks and report positive rates."""
    pytest.importorskip("torch")
    d = write_corpus(tmp_path, n_train=400)  # 20 streams x 2 windows of 20 steps
    assert window_count(len(load_ptb(d).train), 20, 20) >= 2
    # importable by name: the spawned workers find their target through it
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)), "benches"))
    import torch_lm_train

    rates = torch_lm_train.compare(d, rounds=1, block=1, pause=0, log=None)
    assert len(rates) == 2 and all(r > 0 and math.isfinite(r) for r in rates)


def test_eval_window_bench_measures_every_window(monkeypatch):
    """benches/eval_window.py: a rate and the same perplexity for every window."""
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)), "benches"))
    import eval_window

    res = eval_window.measure("zaremba-small", 1, [5, 64], words=150, rounds=1)
    assert set(res) == {5, 64}
    assert all(ms > 0 and math.isfinite(ms) for ms, _ in res.values())
    np.testing.assert_allclose(res[5][1], res[64][1], rtol=1e-6)
    assert 0.5 * 10000 < res[5][1] < 2 * 10000  # random weights: near uniform over V


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "mixed-dtype", "empty"])
def test_sgd_updates_every_parameter_in_place(dtype, layout):
    """Every parameter array (the caller's object, whatever its layout and the gradient's dtype)
    holds p - lr * g afterwards."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 8)).astype(dtype)
    if layout == "contiguous":
        p, g = base.copy(), rng.standard_normal((6, 8)).astype(dtype)
    elif layout == "strided":
        p, g = base.copy()[:, ::2], rng.standard_normal((6, 4)).astype(dtype)
    elif layout == "mixed-dtype":
        p, g = base.copy(), rng.standard_normal((6, 8))  # float64 gradient
    else:
        p, g = np.zeros((0, 3), dtype), np.zeros((0, 3), dtype)
    expected = p - (0.25 * g).astype(dtype)
    ident = p
    SGD(lr=0.25).update([p], [g])
    assert p is ident
    np.testing.assert_allclose(p, expected, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("threads", [1, 2])
def test_sgd_is_the_numpy_line_bit_for_bit(threads):
    """SGD's fused pass equals `p -= lr * g` bit for bit, over a set large enough to be split
    between threads, with pairs it must leave to NumPy (a strided view, a dtype mismatch, p and g
    sharing memory) and a parameter listed twice (stepped twice, in order)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(7)
    shapes = [(1000, 700), (300,), (7, 5), (2, 3, 4)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    params.append(rng.standard_normal((50, 40)))  # float64
    grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
    base = rng.standard_normal((20, 20)).astype(np.float32)
    params.append(base[:, ::2])  # strided: left to NumPy
    grads.append(rng.standard_normal((20, 10)).astype(np.float32))
    params.append(rng.standard_normal(9).astype(np.float32))
    grads.append(rng.standard_normal(9))  # float64 gradient of a float32 parameter
    shared = rng.standard_normal(12).astype(np.float32)
    params.append(shared[:8])
    grads.append(shared[4:])  # overlapping p and g
    params.append(params[1])  # listed twice
    grads.append(rng.standard_normal(300).astype(np.float32))
    want_base, want_shared = base.copy(), shared.copy()
    want = [p.copy() for p in params[:5]]
    want += [want_base[:, ::2], params[6].copy(), want_shared[:8]]
    want_grads = [g.copy() for g in grads]
    want_grads[7] = want_shared[4:]
    want.append(want[1])
    for p, g in zip(want, want_grads):
        p -= np.float32(0.3) * g if p.dtype == np.float32 and g.dtype == np.float32 else 0.3 * g
    with threadpool_limits(threads):
        SGD(0.3).update(params, grads)
    for k, (got, exp) in enumerate(zip(params, want)):
        np.testing.assert_array_equal(got, exp, err_msg=f"params[{k}]")
    np.testing.assert_array_equal(base, want_base)


def test_sgd_refuses_read_only_and_unpaired_arrays():
    p = np.zeros(4, np.float32)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD(0.1).update([p], [np.ones(4, np.float32)])
    with pytest.raises(ValueError, match="pair up"):
        SGD(0.1).update([np.zeros(4, np.float32)], [])


def test_a_capped_vocabulary_keeps_the_most_frequent_words_and_unk():
    words = "b a a c b a d <eos> e e e".split()
    v = Vocabulary.from_corpus(words, 4)  # a 3, e 3, b 2, then <unk>; first appearance order
    assert v.id_to_word == ["b", "a", "e", "<unk>"]
    v = Vocabulary.from_corpus(words + ["<unk>"], 3)  # <unk> in the corpus: kept in its place
    assert v.id_to_word == ["a", "e", "<unk>"]
    ids, unknown = v.encode_unk("a b zebra e".split())
    assert list(ids) == [0, 2, 2, 1] and unknown == 2
    assert Vocabulary.from_corpus(["x"], 5).id_to_word == ["x", "<unk>"]
    with pytest.raises(ValueError, match="at least 2"):
        Vocabulary.from_corpus(words, 1)
    with pytest.raises(TypeError, match="max_size must be an integer"):
        Vocabulary.from_corpus(words, 2.5)


def test_load_corpus_from_named_files_reads_unseen_words_as_unk(tmp_path):
    d = write_corpus(tmp_path)
    files = {s: os.path.join(d, f"ptb.{s}.txt") for s in ("train", "valid", "test")}
    with open(files["valid"], "a") as f:
        f.write(" the zebra and the okapi \n")
    c = load_ptb(files, max_vocab=6)
    assert len(c.vocab) == 6 and c.vocab.id_to_word[-1] == "<unk>"
    assert c.unknown["valid"] >= 2 and c.unknown["train"] > 0 and c.paths == files
    unk = c.vocab.word_to_id["<unk>"]
    assert (c.valid == unk).sum() == c.unknown["valid"]
    with pytest.raises(ValueError, match="needs a file for each of train, valid, test"):
        load_ptb({"train": files["train"]})
    with pytest.raises(ValueError, match="word 'zebra' is not in the training vocabulary"):
        load_ptb(files)


@pytest.mark.parametrize("clip, clipped", [(1e-6, 1.0), (1e6, 0.0), (None, None)])
def test_each_epoch_records_its_gradient_norms(tmp_path, clip, clipped):
    """The metrics' grad_norm / grad_norm_max / clipped against the norms of the gradients
    seen after every update (the stand-in is untied; with a clip of 1e6 nothing is scaled, so
    the gradients left after the update are the norms' own)."""
    c = load_ptb(write_corpus(tmp_path))
    tr = make_trainer(len(c.vocab), clip=clip)
    seen = []

    def record(t):
        seen.append(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in t.model.grads)))

    tr.fit(c.train, c.valid, 2, on_window=record, log=None)
    for m in tr.history:
        if clip is None:
            assert not {"grad_norm", "grad_norm_max", "clipped"} & set(m)
            continue
        assert m["clipped"] == clipped
        assert 0 < m["grad_norm"] <= m["grad_norm_max"]
    if clip == 1e6:
        w = tr.history[0]["steps"]
        for m, part in zip(tr.history, (seen[:w], seen[w:])):
            assert m["grad_norm"] == pytest.approx(np.mean(part), rel=1e-12)
            assert m["grad_norm_max"] == pytest.approx(np.max(part), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.sampled_from("a b c d e f g h <unk> <eos>".split()), min_size=1, max_size=60),
    size=st.integers(2, 12),
)
def test_a_capped_vocabulary_keeps_no_rarer_word_than_it_drops(words, size):
    v = Vocabulary.from_corpus(words, size)
    counts = {w: words.count(w) for w in set(words)}
    kept = set(v.id_to_word) - {"<unk>"}
    dropped = set(counts) - kept - {"<unk>"}
    assert "<unk>" in v and len(v) <= size
    assert len(v) == min(size, len(set(counts) | {"<unk>"}))
    if kept and dropped:
        assert min(counts[w] for w in kept) >= max(counts[w] for w in dropped)
    first = [w for w in dict.fromkeys(words) if w in kept]  # ids in order of first appearance
    assert [w for w in v.id_to_word if w != "<unk>"] == first


def test_patience_stops_after_epochs_without_a_validation_gain_and_resume_agrees(tmp_path):
    c = load_ptb(write_corpus(tmp_path))
    script = iter([10.0, 9.0, 9.5, 9.7, 9.8, 8.0])  # best at epoch 2; 3 and 4 gain nothing
    tr = make_trainer(len(c.vocab))
    tr.evaluate_shared = lambda ids, desc="eval": next(script)
    lines = []
    tr.fit(c.train, c.valid, 6, log=lines.append, patience=2)
    assert tr.epoch == 4 and tr.stopped_early == 4 and tr.epochs_without_gain() == 2
    assert "stopping early after epoch 4" in lines[-1] and "epoch 2's for 2 epochs" in lines[-1]
    steps = tr.step
    # resumed from its state, the run stops where it stood; a larger patience trains on
    state, arrays = tr.state()
    again = make_trainer(len(c.vocab))
    again.load_state(json.loads(json.dumps(state)), arrays)
    again.evaluate_shared = lambda ids, desc="eval": next(script)
    again.fit(c.train, c.valid, 6, log=None, patience=2)
    assert again.epoch == 4 and again.step == steps and again.stopped_early == 4
    again.fit(c.train, c.valid, 6, log=None, patience=4)  # the 9.8, then the 8.0
    assert again.epoch == 6 and again.stopped_early is None
    with pytest.raises(StopIteration):
        next(script)


def _adam_lines(P, G, M, V, lr_t, b1, b2, eps):
    """The book's Adam step as NumPy lines (the fused pass must give their bits)."""
    for p, g, m, v in zip(P, G, M, V):
        m += (1 - b1) * (g - m)
        v += (1 - b2) * (g * g - v)
        p -= (lr_t * m / (np.sqrt(v) + eps)).astype(p.dtype, copy=False)


@pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "2.0.0", reason="NumPy 2 promotion")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_the_fused_adam_step_gives_the_numpy_lines_bits(dtype, order, rng):
    from fastrnn._norms import adam_step

    shapes = [(300, 7), (5,), (0, 3), (1100, 1000)]  # the last: over a million, threads
    P = [np.asarray(rng.standard_normal(s), dtype, order=order) for s in shapes]
    G = [np.asarray(rng.standard_normal(s) * 10.0 ** rng.integers(-6, 3), dtype, order=order)
         for s in shapes]  # fmt: skip
    M = [np.zeros_like(p) for p in P]
    V = [np.zeros_like(p) for p in P]
    want = [[a.copy() for a in arrays] for arrays in (P, M, V)]
    for it in range(1, 4):
        lr_t = 0.01 * np.sqrt(1.0 - 0.999**it) / (1.0 - 0.9**it)
        assert adam_step(P, G, M, V, lr_t, 0.9, 0.999, 1e-7, threads=2) == []
        _adam_lines(*want[:1], G, *want[1:], lr_t, 0.9, 0.999, 1e-7)
    for got, ref in zip(P + M + V, sum(want, [])):
        assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_the_fused_adam_step_leaves_what_it_cannot_take_to_the_caller(rng):
    from fastrnn._norms import adam_step

    p = rng.standard_normal((6, 5)).astype(np.float32)
    g = rng.standard_normal((6, 5)).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    frozen = np.zeros_like(p)
    frozen.flags.writeable = False
    cases = [
        (p[:, ::2].copy(order="F"), g[:, ::2], m[:, :3], v[:, :3]),  # memory orders differ
        (p, g.astype(np.float64), m, v),  # dtypes differ
        (p, g, frozen, v),  # a read-only moment
        (p, g, m, m),  # m and v the same memory
    ]
    for case in cases:
        before = [a.copy() for a in case]
        assert adam_step(*[[a] for a in case], 0.01, 0.9, 0.999, 1e-7) == [0]
        assert all(np.array_equal(a, b) for a, b in zip(case, before))
    with pytest.raises(ValueError, match="must pair up"):
        adam_step([p], [g], [m], [], 0.01, 0.9, 0.999, 1e-7)


@pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "2.0.0", reason="NumPy 2 promotion")
def test_adam_updates_every_parameter_the_same_as_before(rng):
    """Adam.update (fused pass, NumPy lines for the rest) against the NumPy lines alone."""
    P = [rng.standard_normal((40, 30)).astype(np.float32), rng.standard_normal(7)]
    odd = rng.standard_normal((8, 6)).astype(np.float32)[:, ::2]  # not contiguous: the lines
    P.append(odd)
    ref = [p.copy() for p in P]
    opt = Adam(0.01)
    M, V = [np.zeros_like(p) for p in ref], [np.zeros_like(p) for p in ref]
    for it in range(1, 5):
        G = [rng.standard_normal(p.shape).astype(p.dtype) for p in P]
        opt.update(P, G)
        lr_t = 0.01 * np.sqrt(1.0 - 0.999**it) / (1.0 - 0.9**it)
        _adam_lines(ref, G, M, V, lr_t, 0.9, 0.999, 1e-7)
    for a, b in zip(P, ref):
        np.testing.assert_array_equal(a, b)
