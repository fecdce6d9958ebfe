"""Shared helpers for the tests of the compiled layers (fastrnn) against fastrnn.reference.

Kinds: "rnn", "lstm", "gru" (GRU, reset_after=False) and "gru_ra" (GRU, reset_after=True, whose
bias has shape (2, 3H)).  ``make_params`` builds parameters, ``make_time`` / ``make_cell`` build a
layer of either implementation, ``run_time`` / ``run_cell`` drive one forward + backward and
return everything observable, ``assert_close`` compares with a per-dtype tolerance, and
``num_grad`` / ``central_difference`` / ``max_grad_error`` are the finite differences the gradient
checks compare with.
"""

import os

import numpy as np
import pytest

import fastrnn
from fastrnn import _isa, reference as ref

KINDS = ["rnn", "lstm", "gru", "gru_ra"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "gru_ra": 3}
DTYPES = [np.float32, np.float64]

# Relative tolerance per dtype; the absolute tolerance is the same number times the largest
# magnitude of the expected array (errors of sums and products scale with their operands).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


# Instruction sets of fastrnn's own products (src/gemm/fr_gemm.h) this CPU runs.  Modules that mark
# themselves with `pytestmark = pytest.mark.usefixtures("isa")` run once per set, so a machine
# with AVX-512 checks the AVX2 micro-kernels too.
ISAS = _isa.available()


@pytest.fixture(scope="session", autouse=True)
def pool_always_threaded():
    """Jobs in phases always go to the pool's workers in the tests, which check results computed
    concurrently: the pool's back-off (after a job that its workers did not speed up, the next
    ones run on the caller alone; src/parallel/fr_pool.h) would run most small test calls
    serially.  tests/test_pool.py tests the back-off itself."""
    from fastrnn import _pool

    old = _pool.set_backoff(False)
    yield
    _pool.set_backoff(old)


@pytest.fixture(scope="module", params=ISAS)
def isa(request):
    with _isa.use(request.param):
        yield request.param


def child_env():
    """Environment for a child Python that must import the fastrnn under test (its folder first
    on the path) and run the instruction set in use here."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    if _isa.current() == "avx2":
        env["FASTRNN_KERNELS"] = "avx2"
    else:
        env.pop("FASTRNN_KERNELS", None)
    return env


def tol(dtype):
    return RTOL[np.dtype(dtype)]


@pytest.fixture
def rng():
    """A freshly seeded generator: every test sees the same numbers on every run."""
    return np.random.default_rng(20240601)


def bias_shape(kind, H):
    return (2, GATES[kind] * H) if kind == "gru_ra" else (GATES[kind] * H,)


def make_params(kind, rng, D=3, H=4, dtype=np.float64, scale=0.5):
    """[Wx (D, G*H), Wh (H, G*H), b] with entries ~ scale * N(0, 1), in `dtype`."""
    G = GATES[kind]
    Wx = (scale * rng.standard_normal((D, G * H))).astype(dtype)
    Wh = (scale * rng.standard_normal((H, G * H))).astype(dtype)
    b = (scale * rng.standard_normal(bias_shape(kind, H))).astype(dtype)
    return [Wx, Wh, b]


def make_time(mod, kind, params, stateful=False):
    """A TimeRNN/TimeLSTM/TimeGRU of module `mod` (fastrnn or fastrnn.reference)."""
    if kind == "rnn":
        return mod.TimeRNN(*params, stateful=stateful)
    if kind == "lstm":
        return mod.TimeLSTM(*params, stateful=stateful)
    return mod.TimeGRU(*params, stateful=stateful, reset_after=(kind == "gru_ra"))


def make_cell(mod, kind, params):
    if kind == "rnn":
        return mod.RNN(*params)
    if kind == "lstm":
        return mod.LSTM(*params)
    return mod.GRU(*params, reset_after=(kind == "gru_ra"))


def as64(arrays):
    return [np.array(a, dtype=np.float64) for a in arrays]


def set_state(layer, kind, h, c=None):
    if kind == "lstm":
        layer.set_state(h, c)
    else:
        layer.set_state(h)


def run_time(layer, kind, xs, dhs, track=False):
    """forward(xs) + backward(dhs) on a time layer; a dict of copies of everything observable."""
    layer.track_grad_norms = track
    hs = layer.forward(xs)
    out = {"hs": np.array(hs), "h": np.array(layer.h)}
    if kind == "lstm":
        out["c"] = np.array(layer.c)
    dxs = layer.backward(dhs)
    out["dxs"] = np.array(dxs)
    out["dWx"], out["dWh"], out["db"] = (np.array(g) for g in layer.grads)
    out["dh"] = np.array(layer.dh)
    if kind == "lstm":
        out["dc"] = np.array(layer.dc)
    if track:
        out["norms_h"] = np.array(layer.grad_norms_h)
        if kind == "lstm":
            out["norms_c"] = np.array(layer.grad_norms_c)
    return out, hs, dxs


def run_cell(cell, kind, x, h, c, dh, dc):
    """forward + backward on a cell; a dict of copies of everything observable."""
    out = {}
    if kind == "lstm":
        hn, cn = cell.forward(x, h, c)
        out["h_next"], out["c_next"] = np.array(hn), np.array(cn)
        dx, dh_prev, dc_prev = cell.backward(dh, dc)
        out["dc_prev"] = np.array(dc_prev)
    else:
        out["h_next"] = np.array(cell.forward(x, h))
        dx, dh_prev = cell.backward(dh)
    out["dx"], out["dh_prev"] = np.array(dx), np.array(dh_prev)
    out["dWx"], out["dWh"], out["db"] = (np.array(g) for g in cell.grads)
    return out


def assert_close(actual, expected, dtype, name="", factor=1.0):
    """Element-wise |actual - expected| <= t * (|expected| + max|expected|), t = factor*tol(dtype).

    Also checks the shape, and that actual has the computation dtype."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{name}: dtype {actual.dtype} != {np.dtype(dtype)}"
    t = factor * tol(dtype)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-3)
    np.testing.assert_allclose(
        actual.astype(np.float64), expected, rtol=t, atol=t * scale, err_msg=name
    )


def assert_results_close(got, want, dtype, factor=1.0, keys=None):
    assert set(got) == set(want), (sorted(got), sorted(want))
    for k in keys or sorted(want):
        if k.startswith("norms"):
            # diagnostics are float64 arrays whatever the layer's dtype
            np.testing.assert_allclose(
                got[k],
                want[k],
                rtol=factor * tol(dtype),
                atol=factor * tol(dtype) * max(want[k].max(initial=0), 1e-3),
                err_msg=k,
            )
            assert got[k].dtype == np.float64
        else:
            assert_close(got[k], want[k], dtype, k, factor)


def reference_results(kind, params, xs, dhs, h0=None, c0=None, track=False):
    """What fastrnn.reference gives, computed in float64 on the same (possibly float32-rounded)
    numbers: the oracle for both dtypes."""
    p64 = as64(params)
    layer = make_time(ref, kind, p64, stateful=h0 is not None)
    if h0 is not None:
        set_state(
            layer, kind, np.array(h0, np.float64), None if c0 is None else np.array(c0, np.float64)
        )
    xs64 = np.array(xs, dtype=np.float64)
    dhs64 = np.array(dhs, dtype=np.float64)
    out, _, _ = run_time(layer, kind, xs64, dhs64, track)
    return out


def central_difference(f, arr, idx, eps=1e-6):
    """(f() at arr[idx] + eps  -  f() at arr[idx] - eps) / (2 eps) for the scalar f(); arr is
    perturbed in place and restored."""
    old = arr[idx]
    arr[idx] = old + eps
    fp = f()
    arr[idx] = old - eps
    fm = f()
    arr[idx] = old
    return (fp - fm) / (2 * eps)


def num_grad(f, arr, eps=1e-6):
    """Central-difference gradient (float64, arr's shape) of the scalar f() w.r.t. every element
    of arr, perturbed in place."""
    g = np.zeros(arr.shape)
    for idx in np.ndindex(arr.shape):
        g[idx] = central_difference(f, arr, idx, eps)
    return g


def max_grad_error(f, arrays, grads, eps=1e-6):
    """max |finite difference - analytic| over every entry of every array (the gradient checks
    of composite layers and models: ``grads[i]`` is the analytic gradient of f() w.r.t.
    ``arrays[i]``, read before f() runs again)."""
    grads = [np.array(g, copy=True) for g in grads]
    return max(float(np.max(np.abs(num_grad(f, a, eps) - g))) for a, g in zip(arrays, grads))


def all_arrays_equal(a, b):
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
        for x, y in zip(a, b)
    )


def import_numpy_runtime(directory):
    """An exported directory's ``fastrnn_numpy.py``, imported from its own file (not from the
    package)."""
    import importlib.util

    path = os.path.join(directory, "fastrnn_numpy.py")
    spec = importlib.util.spec_from_file_location(f"fastrnn_numpy_{abs(hash(path))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_numpy_runtime(directory, *argv):
    """Run an exported directory's ``fastrnn_numpy.py`` (model.npz, vocab.json) in a fresh
    Python where fastrnn, SciPy and torch cannot be imported; its stdout (a failure asserts)."""
    import subprocess
    import sys

    guard = (
        "import sys, runpy\n"
        "for m in ('fastrnn', 'scipy', 'torch'): sys.modules[m] = None\n"
        "sys.argv = ['fastrnn_numpy.py'] + sys.argv[1:]\n"
        "runpy.run_path('fastrnn_numpy.py', run_name='__main__')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", guard, "model.npz", "--vocab", "vocab.json", *argv],
        cwd=directory,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def standin(monkeypatch):
    """`fastrnn lm train` builds the tests' small stand-in model (float64, _lm_standin.py)
    instead of the preset's."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _lm_standin import StandinLM

    from fastrnn.train import config as lm_config

    def build(cfg, vocab_size):
        return StandinLM(
            vocab_size, cfg["embed_size"], cfg["hidden_sizes"][-1], cfg["dtype"], cfg["seed"]
        )

    monkeypatch.setattr(lm_config, "build_model", build)
