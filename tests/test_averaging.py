"""Weight averaging (averaged SGD): the fused running-mean pass, WeightAverage, the NT trigger,
the trainer's use of it (evaluation, schedule, checkpoints, resume) and its flags."""

import json
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastrnn._norms import average_step
from fastrnn.models import BetterRnnlm
from fastrnn.train import SGD, LMTrainer, WeightAverage, load_ptb, make_schedule, nt_triggered
from fastrnn.train.data import window_count

sys.path.insert(0, os.path.dirname(__file__))
from _lm_standin import StandinLM
from test_lm_cli import resume, train
from test_train import write_corpus


# -- the fused pass -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("threads", [1, 2])
def test_average_step_is_the_numpy_line_bit_for_bit(dtype, order, threads):
    rng = np.random.default_rng(3)
    shapes = [(700, 1600), (33, 7), (5,)]  # 1.1 M elements in all: split over the threads
    means = [np.asarray(rng.standard_normal(s), dtype, order=order) for s in shapes]
    params = [np.asarray(rng.standard_normal(s), dtype, order=order) for s in shapes]
    want = [m.copy(order=order) for m in means]
    for w in (1 / 3, 1 / 7919):
        for m, p in zip(want, params):
            m += w * (p - m)
        assert average_step(means, params, w, threads=threads) == []
    for m, x in zip(means, want):
        np.testing.assert_array_equal(m, x)


def test_average_step_leaves_what_it_cannot_take_to_the_caller():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((4, 6))
    ro = np.zeros(6)
    ro.flags.writeable = False
    means = [np.zeros((6, 4)).T, np.zeros(6, np.float32), ro, np.zeros(6)]
    params = [p, np.ones(6), np.ones(6), np.ones(6)]
    assert average_step(means, params, 0.5) == [0, 1, 2]
    assert not means[0].any() and not means[1].any()
    np.testing.assert_array_equal(means[3], 0.5)
    with pytest.raises(ValueError, match="means and params must pair up"):
        average_step(means, params[:2], 0.5)


# -- WeightAverage --------------------------------------------------------------------------------
def test_the_average_is_the_mean_of_every_value_taken_in():
    rng = np.random.default_rng(1)
    params = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    seen = [[p.copy()] for p in params]
    avg = WeightAverage(params)
    for _ in range(40):
        for p, s in zip(params, seen):
            p += rng.standard_normal(p.shape)
            s.append(p.copy())
        avg.update(params)
    assert avg.count == 41
    for m, s in zip(avg.means, seen):
        np.testing.assert_allclose(m, np.mean(s, axis=0), rtol=1e-12, atol=1e-13)
    f32 = [p.astype(np.float32) for p in params]
    avg32 = WeightAverage(f32)
    for _ in range(1000):
        for p in f32:
            p += np.float32(0.01)
        avg32.update(f32)
    # the values climb 10.0 by 0.01: their mean is 5.0 up, to float32 rounding of a long sum
    for m, p in zip(avg32.means, params):
        np.testing.assert_allclose(m, p.astype(np.float32) + 5.0, rtol=0, atol=2e-4)


def test_swapped_in_shows_the_mean_through_tied_views_and_restores_the_weights():
    rng = np.random.default_rng(2)
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    tied = W.T  # as a tied read-out sees the embedding
    avg = WeightAverage([W, b])
    W += 1.0
    b -= 2.0
    avg.update([W, b])
    own = [W.copy(), b.copy()]
    with pytest.raises(RuntimeError, match="inside"):
        with avg.swapped_in([W, b]):
            np.testing.assert_allclose(W, own[0] - 0.5)
            np.testing.assert_allclose(tied, (own[0] - 0.5).T)
            np.testing.assert_allclose(b, own[1] + 1.0)
            raise RuntimeError("inside")
    np.testing.assert_array_equal(W, own[0])
    np.testing.assert_array_equal(b, own[1])


def test_weight_average_checks_what_it_is_given():
    p = [np.zeros((2, 3)), np.zeros(3)]
    with pytest.raises(ValueError, match="holds 1 arrays, the model has 2"):
        WeightAverage(p, 2, [np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"array 1 is float32 \(3,\), the parameter is float64"):
        WeightAverage(p, 2, [np.zeros((2, 3)), np.zeros(3, np.float32)])
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="count must be a positive integer"):
            WeightAverage(p, bad)


# -- the non-monotonic trigger --------------------------------------------------------------------
@pytest.mark.parametrize(
    "history, val, n, fires",
    [
        ([], 9.0, 1, False),
        ([10.0], 11.0, 1, False),  # nothing before the last epoch yet
        ([10.0, 9.0], 9.5, 1, False),  # better than epoch 1's, the one before the last
        ([10.0, 9.0, 9.5], 9.8, 1, True),  # worse than epoch 2's 9.0
        ([10.0, 9.0, 9.5], 9.0, 1, False),  # equal is not worse
        ([10.0, 9.0, 9.5, 9.6, 9.7], 9.8, 5, False),  # too few epochs for n = 5
        ([9.0, 10.0, 9.5, 9.6, 9.7, 9.75], 9.8, 5, True),  # worse than epoch 1's
    ],
)
def test_nt_trigger_cases(history, val, n, fires):
    assert nt_triggered(history, val, n) is fires


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(st.floats(1, 1000), max_size=12),
    val=st.floats(1, 1000),
    n=st.integers(1, 6),
)
def test_nt_trigger_is_merity_et_al_s_condition(history, val, n):
    """Property: it fires exactly when some epoch more than n epochs back was better."""
    back = [v for i, v in enumerate(history) if i < len(history) - n]
    assert nt_triggered(history, val, n) == any(v < val for v in back)


# -- the trainer ----------------------------------------------------------------------------------
def make_trainer(vocab, dropout=0.0, **kw):
    model = StandinLM(vocab, 8, 16, "float64", 0, dropout)
    opt = SGD(1.0)
    kw = dict({"batch_size": 4, "bptt": 6, "clip": 5.0, "progress": False}, **kw)
    return LMTrainer(model, opt, make_schedule("constant", 1.0), **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_ptb(write_corpus(tmp_path_factory.mktemp("avg")))


def test_validation_measures_the_mean_of_the_iterates(corpus):
    """With averaging from epoch 2, epoch 2's validation is that of a model holding the mean
    of the weights at the start of epoch 2 and after each of its updates; training goes on
    from the last update's weights."""
    c = corpus
    tr = make_trainer(len(c.vocab), average="after", average_after=1)
    seen = []
    tr.fit(c.train, c.valid, 1, log=None)
    assert tr.averager is None and "averaged_over" not in tr.history[0]
    seen.append([p.copy() for p in tr.model.params])
    tr.fit(c.train, c.valid, 2, log=None, on_window=lambda t: seen.append(
        [p.copy() for p in t.model.params]))  # fmt: skip
    windows = window_count(len(c.train), 4, 6)
    assert tr.history[1]["averaged_over"] == windows + 1 == len(seen)
    last = [p.copy() for p in tr.model.params]
    for p, q in zip(last, seen[-1]):
        np.testing.assert_array_equal(p, q)  # the live weights, not the mean
    check = make_trainer(len(c.vocab))
    for p, *values in zip(check.model.params, *seen):
        p[...] = np.mean(values, axis=0)
    np.testing.assert_allclose(tr.history[1]["val_ppl"], check.evaluate(c.valid), rtol=1e-10)
    with tr.evaluation_weights():
        for p, q in zip(tr.model.params, check.model.params):
            np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    for p, q in zip(tr.model.params, last):
        np.testing.assert_array_equal(p, q)


def test_nt_averaging_starts_after_the_epoch_that_triggers_it(corpus):
    c = corpus
    tr = make_trainer(len(c.vocab), average="nt", nonmono=1)
    scripted = iter([10.0, 9.0, 9.5, 9.8, 7.0, 6.0])
    tr.evaluate_shared = lambda ids, desc="eval": next(scripted)
    lines = []
    tr.fit(c.train, c.valid, 6, log=lines.append)
    windows = window_count(len(c.train), 4, 6)
    assert [h.get("averaged_over") for h in tr.history] == [
        None, None, None, None, windows + 1, 2 * windows + 1,
    ]  # fmt: skip
    started = [s for s in lines if s.startswith("averaging")]
    assert started == [
        "averaging the weights from here on: validation 9.80 is worse than epoch 2's 9.00, "
        "more than 1 epoch ago"
    ]
    assert "weights averaged over" in lines[-1]


def test_tied_weights_are_averaged_once_and_evaluated_through_both_uses(corpus):
    c = corpus
    model = BetterRnnlm(len(c.vocab), 8, 8, 0.0)  # lists the tied weights twice, as the book
    opt = SGD(0.5)
    tr = LMTrainer(
        model, opt, make_schedule("constant", 0.5), batch_size=4, bptt=6, clip=5.0,
        progress=False, average="after",
    )  # fmt: skip
    tr.fit(c.train, c.valid, 1, log=None)
    assert len(tr.averager.means) == len(tr._groups) < len(model.params)
    E = model.params[0]
    with tr.evaluation_weights():
        np.testing.assert_array_equal(E, tr.averager.means[0])
        assert any(p.shape == E.T.shape and np.shares_memory(p, E) for p in model.params[1:])
    assert not np.array_equal(E, tr.averager.means[0])


@pytest.mark.parametrize("at", [3, "end"])
def test_a_stop_while_averaging_resumes_on_the_same_curve(corpus, at):
    from fastrnn.train import TrainingInterrupted

    c = corpus
    V = len(c.vocab)
    kw = dict(dropout=0.3, average="nt", nonmono=1, eval_bptt=6)
    script = [10.0, 9.0, 9.5, 9.8, 7.0]

    def trainer():
        tr = make_trainer(V, **kw)
        vals = iter(script)
        real = tr.evaluate_shared
        tr.evaluate_shared = lambda ids, desc="eval": (real(ids, desc), next(vals))[1]
        return tr

    full = trainer()
    full.fit(c.train, c.valid, 5, log=None)
    first = trainer()
    windows = window_count(len(c.train), 4, 6)
    stop_at = 3 if at == 3 else windows

    def stop(tr):  # epoch 5: averaging started after epoch 4
        tr.stop_requested = tr.epoch == 4 and tr.position["windows"] == stop_at

    with pytest.raises(TrainingInterrupted):
        first.fit(c.train, c.valid, 5, on_window=stop, log=None)
    state, arrays = first.state()
    state = json.loads(json.dumps(state))
    assert state["average"]["count"] == stop_at + 1
    second = make_trainer(V, **kw)
    second.evaluate_shared = lambda ids, desc="eval": (
        LMTrainer.evaluate_shared(second, ids, desc), 7.0)[1]  # fmt: skip
    for p, q in zip(second.model.params, first.model.params):
        p[...] = q
    second.load_state(state, arrays)
    second.fit(c.train, c.valid, 5, log=None)
    assert [h["train_ppl"] for h in second.history] == [h["train_ppl"] for h in full.history]
    assert second.history[-1]["averaged_over"] == full.history[-1]["averaged_over"]
    for p, q in zip(second.averager.means, full.averager.means):
        np.testing.assert_array_equal(p, q)
    for p, q in zip(second.model.params, full.model.params):
        np.testing.assert_array_equal(p, q)


def test_load_state_checks_the_average_before_changing_anything(corpus):
    c = corpus
    tr = make_trainer(len(c.vocab), average="after")
    tr.fit(c.train, c.valid, 1, log=None)
    state, arrays = tr.state()
    off = make_trainer(len(c.vocab))
    with pytest.raises(ValueError, match="holds an average of the weights"):
        off.load_state(state, arrays)
    on = make_trainer(len(c.vocab), average="nt")
    short = {k: v for k, v in arrays.items() if k != "avg2"}
    with pytest.raises(ValueError, match="lacks the weight-average array 'avg2'"):
        on.load_state(state, short)
    bad = dict(arrays, avg0=arrays["avg0"][:1])
    with pytest.raises(ValueError, match="weight average: weight average array 0 is"):
        on.load_state(state, bad)
    assert on.averager is None and on.epoch == 0 and on.history == []


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(average="asgd"), "average must be one of none, nt, after"),
        (dict(average_after=-1), "average_after must be a non-negative integer"),
        (dict(nonmono=0), "nonmono"),
    ],
)
def test_trainer_checks_the_averaging_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(9, **kw)


# -- the command line -----------------------------------------------------------------------------
def test_lm_train_averages_from_a_flag_and_resume_may_switch_it_on(tmp_path, standin, capsys):
    data = write_corpus(tmp_path / "ptb")
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(data, a, "--epochs", "3", "--average", "after", "--average-after", "1") == 0
    assert train(data, b, "--epochs", "1") == 0  # averaging switched on when resumed
    assert resume(data, b, "--epochs", "3", "--average", "after", "--average-after", "1") == 0
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert "averaged_over" not in ma["epochs"][0] and ma["epochs"][2]["averaged_over"] > 1
    assert ma["config"]["average"] == "after" and mb["config"]["average"] == "after"
    for x, y in zip(ma["epochs"], mb["epochs"]):
        assert (x["val_ppl"], x.get("averaged_over")) == (y["val_ppl"], y.get("averaged_over"))
    assert ma["test_ppl"] == mb["test_ppl"]
    out = capsys.readouterr().out
    assert out.count(", weights averaged from epoch 2 on") == 2  # a, and b when resumed
    assert resume(data, a, "--epochs", "4", "--average", "none") == 2
    assert "holds an average of the weights" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--average-after", "-1"], "--average-after must be a non-negative integer"),
        (["--nonmono", "0"], "--nonmono must be a positive integer"),
    ],
)
def test_averaging_flags_are_checked(tmp_path, standin, capsys, flags, message):
    data = write_corpus(tmp_path / "ptb")
    assert train(data, tmp_path / "r", *flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
