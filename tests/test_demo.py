"""``fastrnn demo`` and its building blocks (fastrnn.models, the adding problem).

The demo itself runs end-to-end in --quick mode (a few steps: it checks that everything runs and
is reported, not what is learned; the real outcome is in the README / the lead's report).
"""

import argparse
import json
import sys

import numpy as np
import pytest
from conftest import num_grad

import fastrnn
from fastrnn import demo
from fastrnn.models import SGD, Adam, Linear, MSELoss, SequenceRegressor, init_params

# ---- the adding problem -----------------------------------------------------------------------


def test_adding_problem():
    rng = np.random.default_rng(0)
    T = 12
    xs, ys = demo.adding_problem(500, T, rng)
    assert xs.shape == (500, T, 2) and ys.shape == (500, 1)
    assert xs.dtype == ys.dtype == np.float32
    markers = xs[:, :, 1]
    assert np.all(markers.sum(axis=1) == 2)  # exactly two marked positions
    assert np.all(markers[:, T // 2 :] == 0)  # both in the first half
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert np.all((xs[:, :, 0] >= 0) & (xs[:, :, 0] < 1))
    np.testing.assert_allclose(ys[:, 0], (xs[:, :, 0] * markers).sum(axis=1), rtol=1e-6)
    # every position of the first half is used, by either marker
    assert np.all(markers.sum(axis=0)[: T // 2] > 0)
    # same rng seed, same data
    xs2, ys2 = demo.adding_problem(500, T, np.random.default_rng(0))
    np.testing.assert_array_equal(xs, xs2)
    np.testing.assert_array_equal(ys, ys2)
    with pytest.raises(ValueError):
        demo.adding_problem(3, 3, rng)


def test_mean_predictor_scores_one_sixth():
    _, ys = demo.adding_problem(200_000, 6, np.random.default_rng(1), dtype=np.float64)
    assert np.mean((ys - 1.0) ** 2) == pytest.approx(demo.MEAN_PREDICTOR_MSE, rel=0.02)


# ---- models and optimizers ----------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sequence_regressor_gradients(cell):
    """model.backward() against central finite differences of model.forward() (float64)."""
    rng = np.random.default_rng(2)
    model = SequenceRegressor(cell, 2, 3, rng, dtype=np.float64)
    xs, ys = demo.adding_problem(4, 6, rng, dtype=np.float64)
    model.forward(xs, ys)
    model.backward()
    assert len(model.params) == len(model.grads) == 5
    for p, g in zip(model.params, model.grads):
        assert g.shape == p.shape
        num = num_grad(lambda: model.forward(xs, ys), p)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)


def test_model_params_are_the_layers_arrays():
    model = SequenceRegressor("lstm", 2, 4, np.random.default_rng(3))
    assert model.params[0] is model.rnn.params[0] and model.params[3] is model.linear.params[0]
    assert model.grads[1] is model.rnn.grads[1]
    assert isinstance(model.rnn, fastrnn.TimeLSTM)
    b = model.params[2]
    np.testing.assert_array_equal(b[:4], 1.0)  # forget-gate bias
    np.testing.assert_array_equal(b[4:], 0.0)
    Wx, Wh, b = init_params("gru", 3, 5, np.random.default_rng(4), wh_scale=2.0)
    assert Wx.shape == (3, 15) and Wh.shape == (5, 15) and not b.any()
    with pytest.raises(ValueError, match="cell must be"):
        init_params("elman", 3, 5, np.random.default_rng(4))


def test_optimizers_update_in_place():
    p = [np.ones(3, np.float32), np.ones((2, 2))]
    g = [np.full(3, 2.0, np.float32), np.full((2, 2), -1.0)]
    ids = [id(a) for a in p]
    SGD(lr=0.1).update(p, g)
    np.testing.assert_allclose(p[0], 0.8)
    np.testing.assert_allclose(p[1], 1.1)
    opt = Adam(lr=0.01)
    opt.update(p, g)
    # the first Adam step moves every parameter by lr against the sign of its gradient
    np.testing.assert_allclose(p[0], 0.79, rtol=1e-5)
    np.testing.assert_allclose(p[1], 1.11)
    assert [id(a) for a in p] == ids and p[0].dtype == np.float32


def test_linear_and_mse():
    rng = np.random.default_rng(5)
    lin = Linear(rng.standard_normal((3, 2)), rng.standard_normal(2))
    x = rng.standard_normal((4, 3))
    y = lin.forward(x)
    np.testing.assert_allclose(y, x @ lin.params[0] + lin.params[1])
    loss = MSELoss()
    t = rng.standard_normal((4, 2))
    assert loss.forward(y, t) == pytest.approx(np.mean((y - t) ** 2))
    dy = loss.backward()
    np.testing.assert_allclose(dy, 2 * (y - t) / y.size)
    dx = lin.backward(dy)
    np.testing.assert_allclose(dx, dy @ lin.params[0].T)
    np.testing.assert_allclose(lin.grads[0], x.T @ dy)


# ---- the demo, end to end ---------------------------------------------------------------------


def _quick(tmp_path, *extra):
    out = tmp_path / "out"
    argv = ["--quick", "--no-progress", "--out", str(out), *extra]
    return out, demo.main(argv)


def test_demo_quick_end_to_end(tmp_path, capsys):
    out, status = _quick(tmp_path)
    assert status == 0
    text = capsys.readouterr().out
    for needle in (
        "1. The adding problem, T = 50",
        "cell  test MSE",
        "RNN ",
        "LSTM",
        "GRU",
        "steps/s",
        "2. Gradient flow",
        "sigma_max",
        "3. Exploding gradients",
        "no clipping",
        "clip_grads(1)",
        "Total wall time",
        "--quick",
    ):
        assert needle in text, needle
    summary = (out / "summary.txt").read_text()
    assert "test MSE" in summary and "Exploding" in summary
    results = json.loads((out / "results.json").read_text())
    assert set(results["adding"]) == {"rnn", "lstm", "gru"}
    for r in results["adding"].values():
        assert len(r["losses"]) == results["config"]["steps"]
        assert len(r["flow_init"]) == results["config"]["length"]
        assert r["steps_per_s"] > 0
    assert len(results["adding"]["lstm"]["flow_init_c"]) == 50
    assert set(results["exploding"]) == {"no clipping", "clip_grads(1)"}
    if _has_matplotlib():
        for name in ("adding_loss.png", "grad_flow.png", "exploding.png"):
            png = out / name
            assert png.stat().st_size > 5000, name
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_is_deterministic(tmp_path):
    def numbers(sub):
        out, status = _quick(tmp_path / sub, "--no-plot", "--cells", "gru,rnn", "--length", "12")
        assert status == 0
        r = json.loads((out / "results.json").read_text())
        return (
            {c: (v["losses"], v["test_mse"], v["flow_init"]) for c, v in r["adding"].items()},
            {k: (v["losses"], v["grad_norms"]) for k, v in r["exploding"].items()},
        )

    first = numbers("a")
    assert list(first[0]) == ["gru", "rnn"]
    assert first == numbers("b")


def test_demo_survives_divergence(tmp_path, capsys):
    # a huge Wh and learning rate: the unclipped run overflows to Inf within the quick budget
    out, status = _quick(
        tmp_path, "--no-plot", "--cells", "rnn", "--wh-scale", "3", "--sgd-lr", "1"
    )
    assert status == 0
    text = capsys.readouterr().out
    assert "no clipping    diverged at step" in text
    assert "NaN or Inf" in text
    runs = json.loads((out / "results.json").read_text())["exploding"]
    assert runs["no clipping"]["status"].startswith("diverged at step")
    assert runs["clip_grads(1)"]["status"] is None


def test_demo_without_matplotlib(tmp_path, capsys, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out, status = _quick(tmp_path, "--cells", "rnn", "--steps", "3")
    assert status == 0
    assert "pip install fastrnn[plot]" in capsys.readouterr().out
    assert (out / "summary.txt").exists() and not list(out.glob("*.png"))


def test_demo_progress_without_tqdm(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    out = tmp_path / "out"
    assert (
        demo.main(["--quick", "--no-plot", "--cells", "gru", "--steps", "4", "--out", str(out)])
        == 0
    )
    err = capsys.readouterr().err
    assert "100% (12/12 steps)" in err and "exploding" in err


def test_demo_rejects_bad_options(capsys):
    for argv in (["--cells", "rnn,elman"], ["--steps", "0"], ["--hidden", "-3"], ["--cells", ""]):
        with pytest.raises(SystemExit) as exc:
            demo.build_parser().parse_args(argv)
        assert exc.value.code == 2
    capsys.readouterr()


def test_add_parser_registers_demo(tmp_path):
    parser = argparse.ArgumentParser(prog="fastrnn")
    demo.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "demo",
            "--quick",
            "--no-plot",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--cells",
            "lstm",
            "--steps",
            "2",
        ]
    )
    assert args.func is demo.run
    assert args.cells == ["lstm"] and args.steps == 2 and args.hidden is None
    assert parser.parse_args(["demo"]).cells == ["rnn", "lstm", "gru"]
    assert args.func(args) == 0


def test_fastrnn_command_line(tmp_path, capsys):
    pytest.importorskip("fastrnn.bench")  # the CLI imports every subcommand
    from fastrnn import cli

    assert (
        cli.main(
            [
                "demo",
                "--quick",
                "--no-plot",
                "--no-progress",
                "--cells",
                "gru",
                "--steps",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "Exploding gradients" in capsys.readouterr().out


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
