"""fastrnn.diagnostics: gradient-flow norms, spectral norms, the clipping history, the plots.

- ``layer.grad_norms_h`` / ``grad_norms_c`` (recorded inside the kernels) against the NumPy
  reference and against central finite differences of the loss w.r.t. h_t (and c_t), computed by
  restarting the layer from a perturbed carried state;
- the bound ``interpret`` states for a tanh RNN, checked on a measured profile;
- ``spectral_norm`` against ``np.linalg.svd``; ``flow_summary``; ``GradClipper`` against
  ``clip_grads``; the plot helpers (PNG files, and the message when matplotlib is missing).
"""

import math
import sys

import numpy as np
import pytest
from conftest import num_grad

import fastrnn
from fastrnn import diagnostics as dg, reference as ref

KINDS = ["rnn", "lstm", "gru", "gru_ra"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_ra": 3}


def params_for(kind, rng, D=3, H=4, scale=0.6, dtype=np.float64):
    G = GATES[kind]
    bshape = (2, G * H) if kind == "gru_ra" else (G * H,)
    return [
        (scale * rng.standard_normal(s)).astype(dtype) for s in ((D, G * H), (H, G * H), bshape)
    ]


def time_layer(mod, kind, params, stateful=False):
    if kind == "rnn":
        return mod.TimeRNN(*params, stateful=stateful)
    if kind == "lstm":
        return mod.TimeLSTM(*params, stateful=stateful)
    return mod.TimeGRU(*params, stateful=stateful, reset_after=(kind == "gru_ra"))


# ---- per-timestep gradient norms ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_norms_match_reference(kind, dtype):
    rng = np.random.default_rng(1)
    N, T, D, H = 3, 7, 4, 5
    params = params_for(kind, rng, D, H, dtype=dtype)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    out = {}
    for mod in (fastrnn, ref):
        layer = time_layer(mod, kind, [p.copy() for p in params])
        layer.track_grad_norms = True
        layer.forward(xs)
        layer.backward(dhs)
        out[mod] = (layer.grad_norms_h, layer.grad_norms_c)
    (h, c), (h_ref, c_ref) = out[fastrnn], out[ref]
    assert h.dtype == np.float64 and h.shape == (T,)
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(h, h_ref, rtol=rtol)
    if kind == "lstm":
        assert c.dtype == np.float64 and c.shape == (T,)
        np.testing.assert_allclose(c, c_ref, rtol=rtol)
    else:
        assert c is None


def test_grad_norms_only_when_tracked():
    rng = np.random.default_rng(2)
    layer = fastrnn.TimeLSTM(*params_for("lstm", rng))
    xs, dhs = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 4))
    layer.forward(xs)
    layer.backward(dhs)
    assert layer.grad_norms_h is None and layer.grad_norms_c is None
    layer.track_grad_norms = True
    layer.forward(xs)
    layer.backward(dhs)
    assert layer.grad_norms_h.shape == (5,)
    layer.track_grad_norms = False
    layer.forward(xs)
    layer.backward(dhs)
    assert layer.grad_norms_h is None  # never a stale profile from an earlier backward


def _loss_from_state(kind, params, xs_rest, dhs_rest, h, c):
    """L_{>t}: the loss sum(dhs * hs) over the steps after t, started from state (h, c)."""
    layer = time_layer(fastrnn, kind, params, stateful=True)
    layer.set_state(h, c) if kind == "lstm" else layer.set_state(h)
    return float(np.sum(layer.forward(xs_rest) * dhs_rest))


@pytest.mark.parametrize("kind", KINDS)
def test_grad_norms_against_finite_differences(kind):
    """||dL/dh_t|| for L = sum(dhs * hs): perturb h_t in the carried state of a fresh layer run on
    the rest of the sequence; dL/dh_t = dhs[:, t] + dL_{>t}/dh_t.  For an LSTM, c_t is a separate
    state there; its own norm is checked with h_t = o_t * tanh(c_t) moving along with c_t."""
    rng = np.random.default_rng(3)
    N, T, D, H, eps = 2, 5, 3, 4, 1e-6
    params = params_for(kind, rng, D, H)
    xs = rng.standard_normal((N, T, D))
    dhs = rng.standard_normal((N, T, H))
    layer = time_layer(fastrnn, kind, params)
    layer.track_grad_norms = True
    hs = layer.forward(xs)
    layer.backward(dhs)

    if kind == "lstm":  # c_t for every t, from stateful one-step runs
        stepper = fastrnn.TimeLSTM(*params, stateful=True)
        cs = []
        for t in range(T):
            stepper.forward(xs[:, t : t + 1])
            cs.append(stepper.c.copy())
    for t in range(T):
        h_t = hs[:, t].copy()
        c_t = cs[t].copy() if kind == "lstm" else None
        if t == T - 1:
            grad_h = dhs[:, t]
        else:
            rest = (xs[:, t + 1 :], dhs[:, t + 1 :])
            h = h_t.copy()
            grad_h = num_grad(lambda: _loss_from_state(kind, params, *rest, h, c_t), h, eps)
            grad_h = grad_h + dhs[:, t]
        np.testing.assert_allclose(layer.grad_norms_h[t], np.linalg.norm(grad_h), rtol=1e-6)

        if kind == "lstm":
            o_t = h_t / np.tanh(c_t)

            def loss_c(c):
                h = o_t * np.tanh(c)
                direct = float(np.sum(h * dhs[:, t]))
                if t == T - 1:
                    return direct
                return direct + _loss_from_state(
                    kind, params, xs[:, t + 1 :], dhs[:, t + 1 :], h, c
                )

            c = c_t.copy()
            grad_c = num_grad(lambda: loss_c(c), c, eps)
            np.testing.assert_allclose(layer.grad_norms_c[t], np.linalg.norm(grad_c), rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 0.9])
def test_rnn_vanishing_bound_holds(sigma):
    """What interpret() claims for a tanh RNN with sigma_max(Wh) < 1: a gradient arriving at the
    last step is at most sigma**k times as large k steps earlier."""
    rng = np.random.default_rng(4)
    N, T, D, H = 4, 30, 3, 16
    Wx = rng.standard_normal((D, H))
    Wh = rng.standard_normal((H, H))
    Wh *= sigma / np.linalg.svd(Wh, compute_uv=False)[0]
    layer = fastrnn.TimeRNN(Wx, Wh, rng.standard_normal(H) * 0.1)
    layer.track_grad_norms = True
    layer.forward(rng.standard_normal((N, T, D)))
    dhs = np.zeros((N, T, H))
    dhs[:, -1] = rng.standard_normal((N, H))
    layer.backward(dhs)
    assert dg.spectral_norm(Wh)["Wh"] == pytest.approx(sigma)
    n = layer.grad_norms_h
    k = np.arange(T)[::-1]
    assert np.all(n <= sigma**k * n[-1] * (1 + 1e-12))
    assert "provably" in dg.interpret({"Wh": sigma}, "rnn")
    s = dg.flow_summary(n)
    assert s["per_step"] <= sigma + 1e-12 and s["last"] == n[-1] and s["first"] == n[0]


# ---- spectral norms and their interpretation ---------------------------------------------------


@pytest.mark.parametrize(
    "kind,names", [("rnn", ["Wh"]), ("lstm", list("fgio")), ("gru", list("zrh"))]
)
def test_spectral_norm_per_block(kind, names):
    rng = np.random.default_rng(5)
    H = 6
    params = params_for(kind, rng, 3, H, dtype=np.float32)
    Wh = params[1]
    expected = [
        np.linalg.svd(Wh[:, k * H : (k + 1) * H].astype(np.float64), compute_uv=False)[0]
        for k in range(len(names))
    ]
    got = dg.spectral_norm(Wh)
    assert list(got) == names
    np.testing.assert_allclose(list(got.values()), expected, rtol=1e-12)
    assert all(type(v) is float for v in got.values())
    # a layer (fastrnn's or the reference's) works as well as its Wh
    assert dg.spectral_norm(time_layer(fastrnn, kind, params)) == got
    assert dg.spectral_norm(time_layer(ref, kind, params)) == got


def test_spectral_norm_block_options():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((4, 8))
    halves = [
        np.linalg.svd(W[:, :4], compute_uv=False)[0],
        np.linalg.svd(W[:, 4:], compute_uv=False)[0],
    ]
    assert list(dg.spectral_norm(W, blocks=2).values()) == pytest.approx(halves)
    assert dg.spectral_norm(W, blocks=["a", "b"]) == pytest.approx({"a": halves[0], "b": halves[1]})
    assert dg.spectral_norm(W, blocks=1)["0"] == pytest.approx(np.linalg.norm(W, 2))
    with pytest.raises(ValueError, match="multiple"):
        dg.spectral_norm(rng.standard_normal((4, 6)))
    with pytest.raises(ValueError, match="equal blocks"):
        dg.spectral_norm(W, blocks=3)
    with pytest.raises(ValueError, match="NaN"):
        dg.spectral_norm(np.full((2, 2), np.nan))


def test_interpret_texts():
    assert "necessary" in dg.interpret({"Wh": 1.7}, "rnn")
    assert "not sufficient" in dg.interpret({"Wh": 1.7})  # cell inferred from one block
    lstm = dg.interpret({"f": 1.0, "g": 2.0, "i": 1.0, "o": 1.0})
    assert lstm.startswith("LSTM") and "forget gate" in lstm
    assert dg.interpret({"z": 1.0, "r": 1.0, "h": 1.0}).startswith("GRU")
    rng = np.random.default_rng(7)
    layer = fastrnn.TimeGRU(*params_for("gru", rng))
    assert dg.interpret(layer).startswith("GRU")  # measured from the layer
    with pytest.raises(ValueError):
        dg.interpret({"a": 1.0, "b": 1.0})


def test_flow_summary():
    n = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    s = dg.flow_summary(n)
    assert s["ratio"] == pytest.approx(1e-3) and s["per_step"] == pytest.approx(0.1)
    assert math.isnan(dg.flow_summary([1.0])["per_step"])
    with pytest.raises(ValueError):
        dg.flow_summary(np.zeros((2, 2)))


# ---- GradClipper ------------------------------------------------------------------------------


def _grads(rng, scale):
    return [
        (scale * rng.standard_normal((3, 4))).astype(np.float32),
        scale * rng.standard_normal(5),
    ]


def test_grad_clipper_matches_clip_grads_and_records():
    rng = np.random.default_rng(8)
    clipper = dg.GradClipper(1.0)
    assert clipper.summary() == "no gradients seen yet" and math.isnan(clipper.rate)
    expected_norms, expected_fired = [], []
    for scale in (0.01, 10.0, 0.02, 5.0, 3.0):
        grads = _grads(rng, scale)
        twin = [g.copy() for g in grads]
        expected = fastrnn.clip_grads(twin, 1.0)
        got = clipper(grads)
        assert got == expected
        for g, t in zip(grads, twin):
            np.testing.assert_array_equal(g, t)  # clipped exactly as clip_grads does
        expected_norms.append(expected)
        expected_fired.append(expected > 1.0)
    np.testing.assert_array_equal(clipper.norms, expected_norms)
    np.testing.assert_array_equal(clipper.fired, expected_fired)
    assert clipper.steps == 5 and clipper.n_clipped == 3 and clipper.rate == pytest.approx(0.6)
    s = clipper.summary()
    assert "5 steps" in s and "clipped 3 (60.0%)" in s and "max_norm 1" in s
    assert "GradClipper(max_norm=1.0)" in repr(clipper)
    clipper.reset()
    assert clipper.steps == 0


def test_grad_clipper_measure_only():
    rng = np.random.default_rng(9)
    clipper = dg.GradClipper(None)
    grads = _grads(rng, 100.0)
    before = [g.copy() for g in grads]
    norm = clipper.clip(grads)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)  # measured, not changed
    assert norm == pytest.approx(
        math.sqrt(sum(float(np.sum(b.astype(np.float64) ** 2)) for b in before))
    )
    assert clipper.n_clipped == 0 and "no clipping" in clipper.summary()
    assert dg.global_norm(grads) == pytest.approx(norm)


@pytest.mark.parametrize("max_norm", [None, 1.0])
def test_grad_clipper_nonfinite(max_norm):
    rng = np.random.default_rng(10)
    clipper = dg.GradClipper(max_norm)
    clipper(_grads(rng, 1.0))
    bad = _grads(rng, 1.0)
    bad[1][2] = np.nan
    before = [g.copy() for g in bad]
    with pytest.raises(FloatingPointError, match="step 2"):
        clipper(bad)
    for g, b in zip(bad, before):
        np.testing.assert_array_equal(g, b)
    assert clipper.steps == 2 and not np.isfinite(clipper.norms[1])
    assert "1 non-finite" in clipper.summary()
    quiet = dg.GradClipper(max_norm, error_if_nonfinite=False)
    assert not math.isfinite(quiet(bad))


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan])
def test_grad_clipper_rejects_bad_max_norm(bad):
    with pytest.raises(ValueError):
        dg.GradClipper(bad)


# ---- plots ------------------------------------------------------------------------------------


def test_plots_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(11)
    layer = fastrnn.TimeLSTM(*params_for("lstm", rng))
    layer.track_grad_norms = True
    layer.forward(rng.standard_normal((2, 6, 3)))
    layer.backward(rng.standard_normal((2, 6, 4)))
    path = tmp_path / "flow.png"
    fig = dg.plot_grad_flow(
        {"LSTM h": layer, "LSTM c": layer.grad_norms_c, "decaying": 0.5 ** np.arange(6)[::-1]},
        path=path,
    )
    assert path.stat().st_size > 1000
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 3
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), layer.grad_norms_h)

    clipped, raw = dg.GradClipper(1.0), dg.GradClipper(None)
    for scale in (0.1, 3.0, 0.5):
        clipped(_grads(rng, scale))
        raw(_grads(rng, scale))
    raw._norms.append(math.inf)  # a diverged step is marked, not plotted
    path = tmp_path / "history.png"
    fig = dg.plot_norm_history({"clipped": clipped, "raw": raw}, path=path)
    assert path.stat().st_size > 1000
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "clip threshold 1" in labels and "non-finite" in labels
    dg.plot_norm_history(np.array([1.0, 2.0]))  # a bare array, no threshold

    lazy = fastrnn.TimeRNN(*params_for("rnn", rng))
    with pytest.raises(ValueError, match="track_grad_norms"):
        dg.plot_grad_flow({"untracked": lazy})


def test_plots_without_matplotlib(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"pip install fastrnn\[plot\]"):
        dg.plot_grad_flow(np.ones(3))
    with pytest.raises(ImportError, match=r"pip install fastrnn\[plot\]"):
        dg.plot_norm_history(np.ones(3))
