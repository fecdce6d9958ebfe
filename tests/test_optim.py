"""The optimizers' settings and their refusal of non-finite gradients (fastrnn.train.optim)."""

import math

import numpy as np
import pytest

from fastrnn.train import SGD, Adam


@pytest.mark.parametrize("lr", [0, -1, math.nan, math.inf, True, "0.1", None])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_a_bad_learning_rate_is_refused_when_made_and_when_set(cls, lr):
    with pytest.raises(ValueError, match="lr must be"):
        cls(lr)
    opt = cls(0.1)
    with pytest.raises(ValueError, match="lr must be"):
        opt.lr = lr
    assert opt.lr == 0.1  # (a schedule's bad value leaves the rate as it was)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"beta1": 1.0}, "beta1"),
        ({"beta1": -0.1}, "beta1"),
        ({"beta2": 2.0}, "beta2"),
        ({"beta2": math.nan}, "beta2"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-8}, "eps"),
        ({"eps": math.inf}, "eps"),
    ],
)
def test_adam_refuses_bad_decays_and_eps(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Adam(0.01, **kwargs)


def test_the_learning_rate_can_still_be_scaled_in_place():
    opt = SGD(20.0)
    opt.lr /= 4.0  # (the book's trainer divides it so)
    assert opt.lr == 5.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Adam(0.01)], ids=["sgd", "adam"])
def test_a_non_finite_gradient_updates_nothing(make, bad):
    opt = make()
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(np.float32) for n in (5, 3000000)]
    grads = [np.ones_like(p) for p in params]
    opt.update(params, grads)  # (Adam: moments exist now)
    before = [p.copy() for p in params]
    moments = [m.copy() for m in opt.m] if isinstance(opt, Adam) else None
    grads[1][1234567] = bad
    with pytest.raises(ValueError, match=r"grads\[1\] holds NaN or Inf"):
        opt.update(params, grads)
    for p, q in zip(params, before):
        np.testing.assert_array_equal(p, q)
    if moments is not None:
        for m, q in zip(opt.m, moments):
            np.testing.assert_array_equal(m, q)
        assert opt.iter == 1


@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Adam(0.01)], ids=["sgd", "adam"])
def test_grads_finite_skips_only_the_scan(make, monkeypatch):
    """grads_finite=True (the trainer's, after clip_grads returned a norm): the same update,
    without the scan of the gradients."""
    import fastrnn.train.optim as optim

    rng = np.random.default_rng(1)
    params = [rng.standard_normal(n).astype(np.float32) for n in (7, 1500000)]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    a, b = make(), make()
    pa, pb = [p.copy() for p in params], [p.copy() for p in params]
    a.update(pa, grads)
    scans = []
    monkeypatch.setattr(optim, "all_finite", lambda g: scans.append(g) or True)
    b.update(pb, grads, grads_finite=True)
    assert scans == []
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)
    b.update(pb, grads)  # the default still scans every gradient
    assert len(scans) == 2


def test_the_trainer_skips_the_optimizers_scan_only_after_clipping(monkeypatch):
    """The trainer tells fastrnn's optimizers that the gradients are finite after clip_grads
    returned a norm, not without clipping, and not an update method of another kind."""
    import fastrnn.train.optim as optim
    from fastrnn.models import LanguageModel
    from fastrnn.train import LMTrainer, make_schedule

    seen, checked = [], optim._checked_pairs
    monkeypatch.setattr(
        optim, "_checked_pairs", lambda p, g, finite=False: seen.append(finite) or checked(p, g)
    )

    class Replaced(SGD):
        def update(self, params, grads):  # the book's signature
            super().update(params, grads)

    ids = np.random.default_rng(0).integers(0, 30, 400)
    for make, clip, want in (
        (SGD, 5.0, True),
        (Adam, 5.0, True),
        (SGD, None, False),
        (Replaced, 5.0, False),
    ):
        seen.clear()
        model = LanguageModel(30, 8, [8], seed=0)
        trainer = LMTrainer(
            model, make(0.1), make_schedule("constant", 0.1), batch_size=4, bptt=5, clip=clip,
            progress=False,
        )  # fmt: skip
        trainer.train_epoch(ids, max_steps=3)
        assert seen == [want] * 3, (make, clip)


def test_a_gradient_that_is_not_an_array_is_named():
    with pytest.raises(TypeError, match=r"grads\[0\] must be a numpy array"):
        SGD(0.1).update([np.zeros(2)], [[1.0, 2.0]])
