"""Central finite differences against the backward passes of the COMPILED layers (float64).

The loss is L = sum(hs * R) (plus sum(c_next * Rc) for the LSTM cell, which exercises its dc_next
input), so dL/dhs = R is what backward receives.  Every input is checked: xs, each param, the
initial state given through set_state (layer.dh / layer.dc), and a stateful chain's second segment.
"""

import numpy as np
import pytest
from conftest import KINDS, make_cell, make_params, make_time, num_grad, set_state

import fastrnn

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")

N, T, D, H = 2, 3, 2, 3
TOL = 1e-7  # (num_grad: conftest's central differences, eps 1e-6)


def check(analytic, numeric, name):
    analytic = np.asarray(analytic)
    assert analytic.shape == numeric.shape, name
    assert analytic.dtype == np.float64, name
    scale = max(np.abs(numeric).max(), 1e-3)
    err = np.abs(analytic - numeric).max() / scale
    assert err < TOL, f"{name}: relative error {err:.2e}"
    # guard against comparing two zero arrays: the check must have something to compare
    assert np.abs(numeric).max() > 1e-4, f"{name}: numeric gradient vanishes"


def setup(kind, seed, Tt=T):
    rng = np.random.default_rng(seed)
    params = make_params(kind, rng, D, H, np.float64, scale=0.7)
    xs = rng.standard_normal((N, Tt, D))
    h0 = 0.5 * rng.standard_normal((N, H))
    c0 = 0.5 * rng.standard_normal((N, H))
    R = rng.standard_normal((N, Tt, H))
    return params, xs, h0, c0, R


@pytest.mark.parametrize("kind", KINDS)
def test_cell_gradients(kind):
    rng = np.random.default_rng(1)
    params = make_params(kind, rng, D, H, np.float64, scale=0.7)
    x = rng.standard_normal((N, D))
    h = rng.standard_normal((N, H))
    c = rng.standard_normal((N, H))
    Rh = rng.standard_normal((N, H))
    Rc = rng.standard_normal((N, H))
    cell = make_cell(fastrnn, kind, params)

    def loss():
        if kind == "lstm":
            hn, cn = cell.forward(x, h, c)
            return np.sum(hn * Rh) + np.sum(cn * Rc)
        return np.sum(cell.forward(x, h) * Rh)

    loss()
    if kind == "lstm":
        dx, dh, dc = cell.backward(Rh, Rc)
    else:
        dx, dh = cell.backward(Rh)
    dx, dh = dx.copy(), dh.copy()
    grads = [g.copy() for g in cell.grads]

    check(dx, num_grad(loss, x), "dx")
    check(dh, num_grad(loss, h), "dh_prev")
    if kind == "lstm":
        check(dc, num_grad(loss, c), "dc_prev")
    for name, g, p in zip(("dWx", "dWh", "db"), grads, params):
        check(g, num_grad(loss, p), name)


def test_lstm_cell_dc_next_alone():
    # only the cell-state path carries gradient: dh_next = 0
    rng = np.random.default_rng(2)
    params = make_params("lstm", rng, D, H, np.float64, scale=0.7)
    x, h, c = (rng.standard_normal(s) for s in ((N, D), (N, H), (N, H)))
    Rc = rng.standard_normal((N, H))
    cell = make_cell(fastrnn, "lstm", params)

    def loss():
        return np.sum(cell.forward(x, h, c)[1] * Rc)

    loss()
    dx, dh, dc = (a.copy() for a in cell.backward(np.zeros((N, H)), Rc))
    grads = [g.copy() for g in cell.grads]
    check(dx, num_grad(loss, x), "dx")
    check(dh, num_grad(loss, h), "dh_prev")
    check(dc, num_grad(loss, c), "dc_prev")
    for name, g, p in zip(("dWx", "dWh", "db"), grads, params):
        check(g, num_grad(loss, p), name)


@pytest.mark.parametrize("kind", KINDS)
def test_time_layer_gradients_with_initial_state(kind):
    params, xs, h0, c0, R = setup(kind, 3)
    layer = make_time(fastrnn, kind, params, stateful=True)
    is_lstm = kind == "lstm"

    def loss():
        set_state(layer, kind, h0, c0 if is_lstm else None)
        return np.sum(layer.forward(xs) * R)

    loss()
    layer.track_grad_norms = True
    dxs = layer.backward(R).copy()
    grads = [g.copy() for g in layer.grads]
    dh = layer.dh.copy()
    dc = layer.dc.copy() if is_lstm else None

    check(dxs, num_grad(loss, xs), "dxs")
    for name, g, p in zip(("dWx", "dWh", "db"), grads, params):
        check(g, num_grad(loss, p), name)
    check(dh, num_grad(loss, h0), "dh (initial h)")
    if is_lstm:
        check(dc, num_grad(loss, c0), "dc (initial c)")


@pytest.mark.parametrize("kind", KINDS)
def test_time_layer_gradients_from_zero_state(kind):
    params, xs, _, _, R = setup(kind, 4, Tt=4)
    layer = make_time(fastrnn, kind, params, stateful=False)

    def loss():
        return np.sum(layer.forward(xs) * R)

    loss()
    dxs = layer.backward(R).copy()
    grads = [g.copy() for g in layer.grads]
    check(dxs, num_grad(loss, xs), "dxs")
    for name, g, p in zip(("dWx", "dWh", "db"), grads, params):
        check(g, num_grad(loss, p), name)


@pytest.mark.parametrize("kind", KINDS)
def test_stateful_chain_gradients(kind):
    """Truncated BPTT: after forward(xs1), forward(xs2) starts from the carried state, which the
    backward of the second segment treats as a constant input (its gradient lands in dh/dc)."""
    params, xs2, _, _, R = setup(kind, 5)
    xs1 = np.random.default_rng(6).standard_normal((N, 2, D))
    is_lstm = kind == "lstm"
    layer = make_time(fastrnn, kind, params, stateful=True)
    layer.forward(xs1)
    h1 = layer.h.copy()
    c1 = layer.c.copy() if is_lstm else None
    layer.forward(xs2)
    dxs = layer.backward(R).copy()
    grads = [g.copy() for g in layer.grads]
    dh, dc = layer.dh.copy(), (layer.dc.copy() if is_lstm else None)

    probe = make_time(fastrnn, kind, params, stateful=True)

    def loss():
        set_state(probe, kind, h1, c1)
        return np.sum(probe.forward(xs2) * R)

    check(dxs, num_grad(loss, xs2), "dxs")
    for name, g, p in zip(("dWx", "dWh", "db"), grads, params):
        check(g, num_grad(loss, p), name)
    check(dh, num_grad(loss, h1), "dh (carried h)")
    if is_lstm:
        check(dc, num_grad(loss, c1), "dc (carried c)")


@pytest.mark.parametrize("kind", KINDS)
def test_grad_norms_by_perturbing_h_t(kind):
    """grad_norms_h[t] = ||dL/dh_t||: perturb h_t by splitting the sequence at t and injecting the
    perturbation into the carried state of the compiled layer itself.  (grad_norms_c is compared
    with the reference in test_layers; the reference checks it by finite differences.)"""
    params, xs, h0, c0, R = setup(kind, 7, Tt=3)
    is_lstm = kind == "lstm"
    layer = make_time(fastrnn, kind, params, stateful=True)
    layer.track_grad_norms = True
    set_state(layer, kind, h0, c0 if is_lstm else None)
    layer.forward(xs)
    layer.backward(R)
    norms_h = layer.grad_norms_h.copy()

    probe = make_time(fastrnn, kind, params, stateful=True)
    for t in range(T):
        set_state(probe, kind, h0, c0 if is_lstm else None)
        head = probe.forward(xs[:, : t + 1])
        ht = probe.h.copy()
        ct = probe.c.copy() if is_lstm else None  # held fixed: only h_t is perturbed
        fixed = np.sum(head[:, :t] * R[:, :t])

        def loss(h=ht, c=ct):
            set_state(probe, kind, h, c)
            tail = probe.forward(xs[:, t + 1 :]) if t + 1 < T else np.zeros((N, 0, H))
            return fixed + np.sum(h * R[:, t]) + np.sum(tail * R[:, t + 1 :])

        g = num_grad(loss, ht)
        np.testing.assert_allclose(norms_h[t], np.linalg.norm(g), rtol=1e-7, err_msg=f"t={t}")
    assert norms_h[-1] == pytest.approx(np.linalg.norm(R[:, -1]), rel=1e-12)
