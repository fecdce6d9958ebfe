"""Bad input: a clear exception naming the argument, and a layer left exactly as it was.

"As it was" is checked in full after every refused call: the params are bit-identical, the grads
are the same objects with the same bits, h/c/dh/dc are unchanged, and a following backward still
differentiates the last *good* forward (same dxs and grads as before the bad call).
"""

import re

import numpy as np
import pytest
from conftest import KINDS, bias_shape, make_cell, make_params, make_time, set_state

import fastrnn
from fastrnn import clip_grads

N, T, D, H = 2, 3, 4, 5
G = {"rnn": 1, "lstm": 4, "gru": 3, "gru_ra": 3}


def names(excinfo, *words):
    msg = str(excinfo.value)
    for w in words:
        assert re.search(r"(?<![\w\[])" + re.escape(w) + r"(?![\w])", msg), (
            f"message does not name {w!r}: {msg!r}"
        )
    return msg


class Good:
    """A stateful layer after one good forward + backward, with everything recorded."""

    def __init__(self, kind, dtype=np.float64, stateful=True, seed=0):
        rng = np.random.default_rng(seed)
        self.kind = kind
        self.params = make_params(kind, rng, D, H, dtype)
        self.layer = make_time(fastrnn, kind, self.params, stateful=stateful)
        self.layer.track_grad_norms = True
        self.xs = rng.standard_normal((N, T, D)).astype(dtype)
        self.dhs = rng.standard_normal((N, T, H)).astype(dtype)
        h0 = rng.standard_normal((N, H)).astype(dtype)
        set_state(self.layer, kind, h0, h0[::-1].copy() if kind == "lstm" else None)
        self.hs = self.layer.forward(self.xs).copy()
        self.dxs = self.layer.backward(self.dhs).copy()
        self.snap = self.snapshot()

    def snapshot(self):
        layer = self.layer
        s = {
            "params": [p.copy() for p in layer.params],
            "param_ids": [id(p) for p in layer.params],
            "grads": [g.copy() for g in layer.grads],
            "grad_objs": list(layer.grads),
            "h": layer.h.copy(),
            "dh": layer.dh.copy(),
            "norms_h": layer.grad_norms_h.copy(),
        }
        if self.kind == "lstm":
            s["c"], s["dc"] = layer.c.copy(), layer.dc.copy()
        return s

    def assert_unchanged(self):
        s, layer = self.snap, self.layer
        assert [id(p) for p in layer.params] == s["param_ids"]
        for p, q in zip(layer.params, s["params"]):
            assert p.dtype == q.dtype and np.array_equal(p, q, equal_nan=False)
        assert all(g is o for g, o in zip(layer.grads, s["grad_objs"]))
        for g, o in zip(layer.grads, s["grads"]):
            np.testing.assert_array_equal(g, o)
        np.testing.assert_array_equal(layer.h, s["h"])
        np.testing.assert_array_equal(layer.dh, s["dh"])
        np.testing.assert_array_equal(layer.grad_norms_h, s["norms_h"])
        if self.kind == "lstm":
            np.testing.assert_array_equal(layer.c, s["c"])
            np.testing.assert_array_equal(layer.dc, s["dc"])
        # a backward now is still the backward of the last good forward
        dxs = layer.backward(self.dhs)
        np.testing.assert_array_equal(dxs, self.dxs)
        for g, o in zip(layer.grads, s["grads"]):
            np.testing.assert_array_equal(g, o)
        np.testing.assert_array_equal(layer.dh, s["dh"])
        # and the carried state is still the one the good forward left
        np.testing.assert_array_equal(layer.h, self.hs[:, -1])


def bad(shape, value=0.5, dtype=np.float64):
    return np.full(shape, value, dtype)


# ---- forward(xs) ---------------------------------------------------------------------------------

XS_BAD = {
    "ndim2": (lambda: bad((N, D)), ValueError),
    "ndim4": (lambda: bad((N, T, D, 1)), ValueError),
    "ndim0": (lambda: np.float64(1.0), ValueError),
    "D_mismatch": (lambda: bad((N, T, D + 1)), ValueError),
    "int": (lambda: np.ones((N, T, D), np.int64), TypeError),
    "int32": (lambda: np.ones((N, T, D), np.int32), TypeError),
    "bool": (lambda: np.ones((N, T, D), bool), TypeError),
    "float16": (lambda: bad((N, T, D), dtype=np.float16), TypeError),
    "complex": (lambda: bad((N, T, D), dtype=np.complex128), TypeError),
    "object": (lambda: np.full((N, T, D), 0.5, object), TypeError),
    "None": (lambda: None, TypeError),
    "nan": (lambda: np.where(np.arange(N * T * D).reshape(N, T, D) == 7, np.nan, 0.5), ValueError),
    "inf": (lambda: np.where(np.arange(N * T * D).reshape(N, T, D) == 0, np.inf, 0.5), ValueError),
    "-inf_noncontig": (
        lambda: np.where(np.arange(2 * N * T * D).reshape(N, T, 2 * D) == 2 * D + 2, -np.inf, 0.5)[
            :, :, ::2
        ],
        ValueError,
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(XS_BAD))
def test_forward_bad_xs(kind, case):
    g = Good(kind)
    make, exc = XS_BAD[case]
    with pytest.raises(exc) as ei:
        g.layer.forward(make())
    names(ei, "xs")
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_forward_float64_xs_overflowing_float32_is_refused(kind):
    # 1e39 is a finite float64 but becomes Inf in the float32 layer: must not give silent NaN
    g = Good(kind, dtype=np.float32)
    xs = np.full((N, T, D), 0.5)
    xs[0, 1, 2] = 1e39
    with pytest.raises(ValueError) as ei:
        g.layer.forward(xs)
    names(ei, "xs")
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_forward_batch_size_differs_from_carried_state(kind):
    g = Good(kind)
    for n in (N + 1, 1):
        with pytest.raises(ValueError) as ei:
            g.layer.forward(bad((n, T, D)))
        msg = names(ei, "xs")
        assert "batch" in msg and str(n) in msg
        g.assert_unchanged()
    # after reset_state the new batch size is fine
    g.layer.reset_state()
    assert g.layer.forward(bad((N + 1, T, D))).shape == (N + 1, T, H)


# ---- backward(dhs) -------------------------------------------------------------------------------

DHS_BAD = {
    "ndim2": (lambda: bad((N, H)), ValueError),
    "T_mismatch": (lambda: bad((N, T + 1, H)), ValueError),
    "N_mismatch": (lambda: bad((N + 1, T, H)), ValueError),
    "H_mismatch": (lambda: bad((N, T, H - 1)), ValueError),
    "int": (lambda: np.ones((N, T, H), np.int64), TypeError),
    "float16": (lambda: bad((N, T, H), dtype=np.float16), TypeError),
    "complex": (lambda: bad((N, T, H), dtype=np.complex64), TypeError),
    "nan": (lambda: np.where(np.arange(N * T * H).reshape(N, T, H) == 11, np.nan, 0.5), ValueError),
    "inf": (lambda: np.where(np.arange(N * T * H).reshape(N, T, H) == 29, np.inf, 0.5), ValueError),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(DHS_BAD))
def test_backward_bad_dhs(kind, case):
    g = Good(kind)
    make, exc = DHS_BAD[case]
    with pytest.raises(exc) as ei:
        g.layer.backward(make())
    names(ei, "dhs")
    g.assert_unchanged()


def test_backward_float64_dhs_overflowing_float32_is_refused():
    g = Good("lstm", dtype=np.float32)
    dhs = np.full((N, T, H), 0.5)
    dhs[1, 0, 0] = -1e40
    with pytest.raises(ValueError) as ei:
        g.layer.backward(dhs)
    names(ei, "dhs")
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_backward_before_forward(kind):
    params = make_params(kind, np.random.default_rng(1), D, H)
    layer = make_time(fastrnn, kind, params)
    with pytest.raises(RuntimeError) as ei:
        layer.backward(bad((N, T, H)))
    assert "forward" in str(ei.value)
    assert all(not g.any() for g in layer.grads)
    assert layer.dh is None
    cell = make_cell(fastrnn, kind, params)
    with pytest.raises(RuntimeError) as ei:
        if kind == "lstm":
            cell.backward(bad((N, H)), bad((N, H)))
        else:
            cell.backward(bad((N, H)))
    assert "forward" in str(ei.value)
    assert all(not g.any() for g in cell.grads)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_before_forward_after_a_refused_forward(kind):
    params = make_params(kind, np.random.default_rng(1), D, H)
    layer = make_time(fastrnn, kind, params)
    with pytest.raises(ValueError):
        layer.forward(bad((N, T, D + 2)))
    with pytest.raises(RuntimeError):
        layer.backward(bad((N, T, H)))
    assert layer.h is None


# ---- params that went bad after construction -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("call", ["forward", "backward"])
def test_nonfinite_param(kind, which, value, call):
    g = Good(kind)
    p = g.layer.params[which]
    idx = (0,) * p.ndim
    old = p[idx]
    p[idx] = value
    with pytest.raises(ValueError) as ei:
        if call == "forward":
            g.layer.forward(g.xs)
        else:
            g.layer.backward(g.dhs)
    names(ei, ("Wx", "Wh", "b")[which])
    p[idx] = old
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("call", ["forward", "backward"])
def test_mismatched_param_dtype(kind, which, call):
    g = Good(kind)
    orig = g.layer.params[which]
    g.layer.params[which] = orig.astype(np.float32)
    with pytest.raises(TypeError) as ei:
        if call == "forward":
            g.layer.forward(g.xs)
        else:
            g.layer.backward(g.dhs)
    names(ei, ("Wx", "Wh", "b")[which])
    assert "float32" in str(ei.value)
    g.layer.params[which] = orig
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_params_reshaped_between_forward_and_backward(kind):
    g = Good(kind)
    orig = g.layer.params[0]
    g.layer.params[0] = np.zeros((D + 1, orig.shape[1]))
    with pytest.raises(ValueError) as ei:
        g.layer.backward(g.dhs)
    assert "changed shape or dtype" in str(ei.value)
    g.layer.params[0] = orig
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_param_replaced_by_non_array(kind):
    g = Good(kind)
    orig = g.layer.params[1]
    g.layer.params[1] = orig.tolist()
    with pytest.raises(TypeError) as ei:
        g.layer.forward(g.xs)
    names(ei, "Wh")
    g.layer.params[1] = orig
    g.assert_unchanged()


# ---- set_state -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_set_state_nonfinite_h(kind, value):
    g = Good(kind)
    h = bad((N, H))
    h[1, 2] = value
    with pytest.raises(ValueError) as ei:
        set_state(g.layer, kind, h, bad((N, H)) if kind == "lstm" else None)
    names(ei, "h")
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["wrong_H", "ndim1", "ndim3", "int", "complex"])
def test_set_state_bad_h(kind, case):
    g = Good(kind)
    h = {
        "wrong_H": bad((N, H + 1)),
        "ndim1": bad((H,)),
        "ndim3": bad((1, N, H)),
        "int": np.ones((N, H), int),
        "complex": bad((N, H), dtype=complex),
    }[case]
    exc = TypeError if case in ("int", "complex") else ValueError
    with pytest.raises(exc) as ei:
        set_state(g.layer, kind, h, bad((N, H)) if kind == "lstm" else None)
    names(ei, "h")
    g.assert_unchanged()


@pytest.mark.parametrize("case", ["nan", "batch", "float16"])
def test_lstm_set_state_bad_c_leaves_h_alone(case):
    # h is fine, c is not: the call must change neither h nor c
    g = Good("lstm")
    c = {
        "nan": np.where(np.eye(N, H) > 0, np.nan, 0.5),
        "inf": np.full((N, H), -np.inf),
        "batch": bad((N + 1, H)),
        "wrong_H": bad((N, H - 1)),
        "float16": bad((N, H), dtype=np.float16),
    }[case]
    with pytest.raises(TypeError if case == "float16" else ValueError) as ei:
        g.layer.set_state(bad((N, H), 0.25), c)
    names(ei, "c")
    g.assert_unchanged()


@pytest.mark.parametrize("kind", ["rnn", "gru_ra"])
def test_set_state_with_c_on_a_layer_without_cell_state(kind):
    g = Good(kind)
    with pytest.raises(TypeError) as ei:
        g.layer.set_state(bad((N, H), 0.25), bad((N, H)))
    assert "c" in str(ei.value) or "cell" in str(ei.value)
    g.assert_unchanged()


# ---- cells ---------------------------------------------------------------------------------------


class GoodCell:
    def __init__(self, kind, dtype=np.float64):
        rng = np.random.default_rng(3)
        self.kind = kind
        self.params = make_params(kind, rng, D, H, dtype)
        self.cell = make_cell(fastrnn, kind, self.params)
        self.x = rng.standard_normal((N, D)).astype(dtype)
        self.h = rng.standard_normal((N, H)).astype(dtype)
        self.c = rng.standard_normal((N, H)).astype(dtype)
        self.dh = rng.standard_normal((N, H)).astype(dtype)
        self.dc = rng.standard_normal((N, H)).astype(dtype)
        self.fwd()
        self.out = self.bwd()
        self.grads = [g.copy() for g in self.cell.grads]
        self.grad_objs = list(self.cell.grads)

    def fwd(self, x=None, h=None, c=None):
        x = self.x if x is None else x
        h = self.h if h is None else h
        if self.kind == "lstm":
            return self.cell.forward(x, h, self.c if c is None else c)
        return self.cell.forward(x, h)

    def bwd(self, dh=None, dc=None):
        dh = self.dh if dh is None else dh
        if self.kind == "lstm":
            return [a.copy() for a in self.cell.backward(dh, self.dc if dc is None else dc)]
        return [a.copy() for a in self.cell.backward(dh)]

    def assert_unchanged(self):
        for p, q in zip(self.cell.params, self.params):
            assert p is q
        assert all(g is o for g, o in zip(self.cell.grads, self.grad_objs))
        for g, o in zip(self.cell.grads, self.grads):
            np.testing.assert_array_equal(g, o)
        for a, b in zip(self.bwd(), self.out):
            np.testing.assert_array_equal(a, b)


CELL_BAD = {
    "x_shape": ("x", dict(x=bad((N, D + 1))), ValueError),
    "x_ndim3": ("x", dict(x=bad((N, 1, D))), ValueError),
    "x_int": ("x", dict(x=np.ones((N, D), int)), TypeError),
    "x_nan": ("x", dict(x=np.where(np.eye(N, D) > 0, np.nan, 0.1)), ValueError),
    "h_batch": ("h_prev", dict(h=bad((N + 1, H))), ValueError),
    "h_width": ("h_prev", dict(h=bad((N, H + 1))), ValueError),
    "h_inf": ("h_prev", dict(h=np.full((N, H), np.inf)), ValueError),
    "h_f16": ("h_prev", dict(h=bad((N, H), dtype=np.float16)), TypeError),
}
CELL_BAD_LSTM = {
    "c_batch": ("c_prev", dict(c=bad((N - 1, H))), ValueError),
    "c_nan": ("c_prev", dict(c=np.full((N, H), np.nan)), ValueError),
    "c_complex": ("c_prev", dict(c=bad((N, H), dtype=complex)), TypeError),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(CELL_BAD) + sorted(CELL_BAD_LSTM))
def test_cell_forward_bad_input(kind, case):
    if case in CELL_BAD_LSTM and kind != "lstm":
        kind = "lstm"
    name, kw, exc = {**CELL_BAD, **CELL_BAD_LSTM}[case]
    g = GoodCell(kind)
    with pytest.raises(exc) as ei:
        g.fwd(**kw)
    names(ei, name)
    g.assert_unchanged()


def test_lstm_cell_forward_without_c_prev():
    g = GoodCell("lstm")
    with pytest.raises(TypeError) as ei:
        g.cell.forward(g.x, g.h, None)
    names(ei, "c_prev")
    g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["shape", "ndim3", "int", "nan"])
def test_cell_backward_bad_dh_next(kind, case):
    g = GoodCell(kind)
    dh = {
        "shape": bad((N, H + 1)),
        "ndim3": bad((N, 1, H)),
        "int": np.ones((N, H), int),
        "nan": np.full((N, H), np.nan),
    }[case]
    with pytest.raises(TypeError if case == "int" else ValueError) as ei:
        g.bwd(dh=dh)
    names(ei, "dh_next")
    g.assert_unchanged()


@pytest.mark.parametrize("case", ["shape", "int", "inf"])
def test_lstm_cell_backward_bad_dc_next(case):
    g = GoodCell("lstm")
    dc = {"shape": bad((N + 1, H)), "int": np.ones((N, H), int), "inf": np.full((N, H), np.inf)}[
        case
    ]
    with pytest.raises(TypeError if case == "int" else ValueError) as ei:
        g.bwd(dc=dc)
    names(ei, "dc_next")
    g.assert_unchanged()


# ---- construction --------------------------------------------------------------------------------


def ctor(kind, Wx, Wh, b, time=True):
    mod = fastrnn
    if time:
        return make_time(mod, kind, [Wx, Wh, b])
    return make_cell(mod, kind, [Wx, Wh, b])


def shapes_ok(kind):
    g = G[kind]
    return (D, g * H), (H, g * H), bias_shape(kind, H)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("time", [True, False], ids=["time", "cell"])
@pytest.mark.parametrize(
    "case",
    [
        "Wh_cols",
        "Wh_square_for_gates",
        "Wh_ndim1",
        "Wh_H0",
        "Wx_cols",
        "Wx_ndim3",
        "Wx_D0",
        "b_len",
        "b_ndim",
    ],
)
def test_construction_bad_shapes(kind, time, case):
    sx, sh, sb = shapes_ok(kind)
    g = G[kind]
    bad_shapes = {
        "Wh_cols": ("Wh", sx, (H, g * H + 1), sb),
        "Wh_square_for_gates": ("Wh", sx, (H, H) if g > 1 else (H, 2 * H), sb),
        "Wh_ndim1": ("Wh", sx, (g * H,), sb),
        "Wh_H0": ("Wh", (D, 0), (0, 0), (0,)),
        "Wx_cols": ("Wx", (D, g * H - 1), sh, sb),
        "Wx_ndim3": ("Wx", (1,) + sx, sh, sb),
        "Wx_D0": ("Wx", (0, g * H), sh, sb),
        "b_len": ("b", sx, sh, sb[:-1] + (sb[-1] + 1,)),
        "b_ndim": ("b", sx, sh, (1,) + sb),
    }
    name, *shp = bad_shapes[case]
    with pytest.raises(ValueError) as ei:
        ctor(kind, *(np.zeros(s) for s in shp), time=time)
    names(ei, name)


@pytest.mark.parametrize("reset_after", [False, True])
@pytest.mark.parametrize("time", [True, False], ids=["time", "cell"])
def test_gru_bias_shape_must_match_variant(reset_after, time):
    Wx, Wh = np.zeros((D, 3 * H)), np.zeros((H, 3 * H))
    wrong = np.zeros((3 * H,)) if reset_after else np.zeros((2, 3 * H))
    cls = fastrnn.TimeGRU if time else fastrnn.GRU
    with pytest.raises(ValueError) as ei:
        cls(Wx, Wh, wrong, reset_after=reset_after)
    msg = names(ei, "b")
    assert str((2, 3 * H) if reset_after else (3 * H,)) in msg
    right = np.zeros((2, 3 * H)) if reset_after else np.zeros((3 * H,))
    layer = cls(Wx, Wh, right, reset_after=reset_after)
    assert layer.grads[2].shape == right.shape


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "case", ["int_all", "float16_all", "complex_all", "Wx_f32", "Wh_f32", "b_f32", "b_int"]
)
def test_construction_bad_dtypes(kind, case):
    sx, sh, sb = shapes_ok(kind)
    dt = {
        "int_all": (int,) * 3,
        "float16_all": (np.float16,) * 3,
        "complex_all": (complex,) * 3,
        "Wx_f32": (np.float32, float, float),
        "Wh_f32": (float, np.float32, float),
        "b_f32": (float, float, np.float32),
        "b_int": (float, float, int),
    }[case]
    with pytest.raises(TypeError) as ei:
        ctor(kind, *(np.zeros(s, t) for s, t in zip((sx, sh, sb), dt)))
    msg = names(ei, "Wx", "Wh", "b")
    assert (
        str(np.dtype(dt[0] if case.endswith("_all") else [t for t in dt if t is not float][0]))
        in msg
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", [0, 1, 2])
def test_construction_nonfinite_params(kind, which):
    ps = [np.zeros(s) for s in shapes_ok(kind)]
    ps[which].flat[-1] = np.nan
    with pytest.raises(ValueError) as ei:
        ctor(kind, *ps)
    names(ei, ("Wx", "Wh", "b")[which])


def test_construction_non_array_param():
    with pytest.raises(TypeError) as ei:
        fastrnn.TimeRNN([[0.0] * H] * D, np.zeros((H, H)), np.zeros(H))
    names(ei, "Wx")


# ---- clip_grads ----------------------------------------------------------------------------------


def grads_set(seed=0):
    rng = np.random.default_rng(seed)
    return [
        10 * rng.standard_normal((3, 4)),
        (10 * rng.standard_normal(5)).astype(np.float32),
        10 * rng.standard_normal((2, 2, 2)),
    ]


def assert_bits_equal(grads, before):
    for g, b in zip(grads, before):
        assert g.dtype == b.dtype
        assert g.tobytes() == b.tobytes()


@pytest.mark.parametrize("max_norm", [0, 0.0, -1.0, -np.inf, np.nan, np.inf])
def test_clip_bad_max_norm(max_norm):
    grads = grads_set()
    before = [g.copy() for g in grads]
    with pytest.raises(ValueError) as ei:
        clip_grads(grads, max_norm)
    names(ei, "max_norm")
    assert_bits_equal(grads, before)


@pytest.mark.parametrize("max_norm", ["five", None, [1.0]])
def test_clip_max_norm_not_a_number(max_norm):
    grads = grads_set()
    before = [g.copy() for g in grads]
    with pytest.raises(TypeError) as ei:
        clip_grads(grads, max_norm)
    names(ei, "max_norm")
    assert_bits_equal(grads, before)


CLIP_BAD = {
    "list_entry": (lambda gs: gs.insert(1, [1.0, 2.0]), TypeError, 1),
    "none_entry": (lambda gs: gs.append(None), TypeError, 3),
    "scalar_entry": (lambda gs: gs.insert(0, np.float64(3.0)), TypeError, 0),
    "int_array": (lambda gs: gs.insert(2, np.ones(4, np.int64)), TypeError, 2),
    "float16_array": (lambda gs: gs.append(np.ones(4, np.float16)), TypeError, 3),
    "complex_array": (lambda gs: gs.insert(1, np.ones(4, complex)), TypeError, 1),
    "read_only": (lambda gs: gs.insert(1, ro(np.ones(4))), ValueError, 1),
    "non_contiguous": (lambda gs: gs.append(np.ones((4, 6))[:, ::2]), ValueError, 3),
    "non_contiguous_1d": (lambda gs: gs.insert(0, np.ones(8)[::2]), ValueError, 0),
}


def ro(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("case", sorted(CLIP_BAD))
def test_clip_bad_entries(case):
    grads = grads_set()  # norm well above max_norm: a partial clip would show
    mutate, exc, index = CLIP_BAD[case]
    mutate(grads)
    before = [np.array(g, copy=True) if isinstance(g, np.ndarray) else g for g in grads]
    with pytest.raises(exc) as ei:
        clip_grads(grads, 1.0)
    names(ei, f"grads[{index}]")
    for g, b in zip(grads, before):
        if isinstance(g, np.ndarray):
            assert g.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "case", ["same_twice", "overlap_1d", "transpose_of_same", "row_inside_matrix", "reshaped_same"]
)
def test_clip_shared_memory(case):
    rng = np.random.default_rng(4)
    base = 10 * rng.standard_normal((4, 6))
    other = 10 * rng.standard_normal(5)
    flat = base.ravel()
    views = {
        "same_twice": (base, base),
        "overlap_1d": (flat[:10], flat[8:]),
        "transpose_of_same": (base, base.T),
        "row_inside_matrix": (base[2], base),
        "reshaped_same": (base, base.reshape(6, 4)),
    }[case]
    grads = [other, views[0], other.copy(), views[1]]
    before = base.copy(), other.copy()
    with pytest.raises(ValueError) as ei:
        clip_grads(grads, 1.0)
    names(ei, "grads[1]", "grads[3]")
    assert base.tobytes() == before[0].tobytes() and other.tobytes() == before[1].tobytes()


def test_clip_adjacent_views_do_not_overlap():
    # the two halves of one buffer share no element: accepted and scaled once each
    buf = np.arange(1.0, 11.0)
    a, b = buf[:5], buf[5:]
    norm = clip_grads([a, b], 1.0)
    want = np.sqrt(np.sum(np.arange(1.0, 11.0) ** 2))
    assert norm == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(buf, np.arange(1.0, 11.0) * (1.0 / (want + 1e-6)), rtol=1e-14)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 1, 2])
def test_clip_nonfinite_gradient(value, where):
    grads = grads_set()
    grads[where].flat[1] = value
    before = [g.copy() for g in grads]
    with pytest.raises(FloatingPointError) as ei:
        clip_grads(grads, 1.0)
    names(ei, f"grads[{where}]")
    assert_bits_equal(grads, before)


def test_clip_nonfinite_names_first_offender():
    grads = grads_set()
    grads[1][0] = np.nan
    grads[2].flat[0] = np.inf
    before = [g.copy() for g in grads]
    with pytest.raises(FloatingPointError) as ei:
        clip_grads(grads, 1.0)
    msg = names(ei, "grads[1]")
    assert "grads[2]" not in msg
    assert_bits_equal(grads, before)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_clip_nonfinite_without_error(value):
    grads = grads_set()
    grads[2].flat[3] = value
    before = [g.copy() for g in grads]
    norm = clip_grads(grads, 1.0, error_if_nonfinite=False)
    assert not np.isfinite(norm)
    if value == np.inf:
        assert norm == np.inf
    assert_bits_equal(grads, before)


@pytest.mark.parametrize("where", ["set_state_h", "cell_x", "cell_h_prev"])
def test_float64_overflowing_float32_elsewhere_is_refused(where):
    # the same conversion problem for the other inputs: 3e39 is Inf in float32
    kind = "lstm"
    huge = np.full((N, H), 0.5)
    huge[0, 0] = 3e39
    if where == "set_state_h":
        g = Good(kind, dtype=np.float32)
        with pytest.raises(ValueError) as ei:
            set_state(g.layer, kind, huge, np.zeros((N, H)) if kind == "lstm" else None)
        names(ei, "h")
        g.assert_unchanged()
    else:
        g = GoodCell(kind, dtype=np.float32)
        if where == "cell_x":
            x = np.full((N, D), 0.5)
            x[1, 1] = -1e300
            kw, name = dict(x=x), "x"
        else:
            kw, name = dict(h=huge), "h_prev"
        with pytest.raises(ValueError) as ei:
            g.fwd(**kw)
        names(ei, name)
        g.assert_unchanged()


@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_in_noncontiguous_param_view(kind):
    # a param that is a transposed view (no contiguous buffer to scan) is still checked
    g = Good(kind)
    orig = g.layer.params[1]
    view = np.ascontiguousarray(orig.T).T
    view[-1, 0] = np.nan
    assert not view.flags.c_contiguous
    g.layer.params[1] = view
    with pytest.raises(ValueError) as ei:
        g.layer.forward(g.xs)
    names(ei, "Wh")
    g.layer.params[1] = orig
    g.assert_unchanged()


def test_clip_nonfinite_after_an_overflowing_array():
    grads = [np.full(6, 1e200), np.ones(3), np.array([1.0, np.nan])]
    before = [g.copy() for g in grads]
    with pytest.raises(FloatingPointError) as ei:
        clip_grads(grads, 1.0)
    names(ei, "grads[2]")
    assert_bits_equal(grads, before)
