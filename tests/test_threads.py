"""Layers run with the GIL released: two layers in two threads must not disturb each other, and
no layer may touch NumPy's global random state."""

import contextlib
import importlib
import threading

import numpy as np
import pytest
from conftest import make_cell, make_params, make_time, set_state

import fastrnn

STEPS = 25


def workload(kind, dtype, seed, N=6, T=16, D=32, H=32):
    """A stateful training-like loop (forward, backward, clip, in-place update) on own params;
    returns everything it produced."""
    rng = np.random.default_rng(seed)
    params = make_params(kind, rng, D, H, dtype)
    xs = [rng.standard_normal((N, T, D)).astype(dtype) for _ in range(STEPS)]
    dhs = [rng.standard_normal((N, T, H)).astype(dtype) for _ in range(STEPS)]
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype) if kind == "lstm" else None
    cell_in = [rng.standard_normal(s).astype(dtype) for s in ((N, D), (N, H), (N, H))]

    def run(barrier=None):
        ps = [p.copy() for p in params]
        layer = make_time(fastrnn, kind, ps, stateful=True)
        layer.track_grad_norms = True
        set_state(layer, kind, h0, c0)
        cell = make_cell(fastrnn, kind, ps)
        out = []
        if barrier is not None:
            barrier.wait()
        for k in range(STEPS):
            hs = layer.forward(xs[k])
            dxs = layer.backward(dhs[k])
            norm = fastrnn.clip_grads(layer.grads, 1.0)
            for p, g in zip(ps, layer.grads):
                p -= dtype(0.05) * g
            x, h, c = cell_in
            if kind == "lstm":
                hn, _ = cell.forward(x, h, c)
                cd = cell.backward(hn, hn)[0]
            else:
                hn = cell.forward(x, h)
                cd = cell.backward(hn)[0]
            out.append(
                (
                    hs,
                    dxs,
                    layer.h.copy(),
                    layer.dh.copy(),
                    layer.grad_norms_h.copy(),
                    norm,
                    hn.copy(),
                    cd.copy(),
                    [p.copy() for p in ps],
                )
            )
        return out

    return run


def run_side_by_side(fns, timeout=120):
    """Run each fn in its own Python thread, all at once; their results, in order.  An exception
    in a thread is re-raised here with the thread's index."""
    results, errors = [None] * len(fns), []

    def target(i):
        try:
            results[i] = fns[i]()
        except BaseException as e:  # reported below
            errors.append((i, e))

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert not errors, errors
    return results


def compare(a, b):
    """Equal up to rounding (a multithreaded BLAS may split work differently when both threads
    call it at once); a data race would show as differences of order one."""
    assert len(a) == len(b) == STEPS
    for step_a, step_b in zip(a, b):
        for x, y in zip(list(step_a[:-1]) + step_a[-1], list(step_b[:-1]) + step_b[-1]):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape
            rtol = 1e-4 if x.dtype == np.float32 else 1e-10
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(np.abs(y).max(), 1e-3))


@pytest.mark.parametrize(
    "pair",
    [
        (("lstm", np.float32), ("gru_ra", np.float64)),
        (("rnn", np.float64), ("gru", np.float32)),
        (("lstm", np.float64), ("lstm", np.float64)),
    ],
    ids=["lstm32-grura64", "rnn64-gru32", "lstm64-lstm64"],
)
def test_two_layers_in_two_threads_equal_sequential(pair):
    runs = [workload(kind, dtype, seed) for seed, (kind, dtype) in enumerate(pair)]
    sequential = [run() for run in runs]

    barrier = threading.Barrier(2)
    results = run_side_by_side([lambda run=run: run(barrier) for run in runs])
    for got, want in zip(results, sequential):
        compare(got, want)


def test_one_layer_used_from_threads_one_after_another():
    # a layer made in one thread and used in another behaves the same
    run = workload("gru", np.float64, 7, N=3, T=4, D=5, H=6)
    want = run()
    got = []
    t = threading.Thread(target=lambda: got.append(run()))
    t.start()
    t.join(timeout=60)
    compare(got[0], want)


def test_layers_do_not_touch_numpy_global_random_state():
    np.random.seed(12345)
    before = np.random.get_state()
    rng = np.random.default_rng(0)
    for kind in ("rnn", "lstm", "gru", "gru_ra"):
        for dtype in (np.float32, np.float64):
            params = make_params(kind, rng, 3, 4, dtype)
            layer = make_time(fastrnn, kind, params, stateful=True)
            layer.track_grad_norms = True
            set_state(layer, kind, np.zeros((2, 4)), np.zeros((2, 4)) if kind == "lstm" else None)
            layer.forward(rng.standard_normal((2, 5, 3)))
            layer.backward(rng.standard_normal((2, 5, 4)))
            layer.forward(np.zeros((2, 0, 3)))
            layer.reset_state()
            fastrnn.clip_grads(layer.grads, 0.1)
            cell = make_cell(fastrnn, kind, params)
            if kind == "lstm":
                cell.forward(np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 4)))
                cell.backward(np.ones((2, 4)), np.ones((2, 4)))
            else:
                cell.forward(np.ones((2, 3)), np.ones((2, 4)))
                cell.backward(np.ones((2, 4)))
    after = np.random.get_state()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]
    # and the next draw is the one the seed promises
    np.random.seed(12345)
    expected = np.random.random(3)
    np.random.set_state(after)
    np.testing.assert_array_equal(np.random.random(3), expected)


# ---- the kernels' own threads: batch rows of the time loop shared out ------------------------

KINDS = ("rnn", "lstm", "gru", "gru_ra")


def _run_layer(kind, params, xs, dhs, h0, c0, threads, dc_next=None):
    layer = make_time(fastrnn, kind, params, stateful=True)
    layer.threads = threads
    layer.track_grad_norms = True
    set_state(layer, kind, h0, c0)
    hs = layer.forward(xs)
    dxs = layer.backward(dhs)
    out = [hs, dxs, layer.h, layer.dh, layer.grad_norms_h, *layer.grads]
    if kind == "lstm":
        out += [layer.c, layer.dc, layer.grad_norms_c]
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,threads", [(1, 2), (2, 2), (3, 2), (7, 3), (13, 5), (20, 8)])
def test_threaded_time_loop_equals_single_thread(kind, dtype, N, threads):
    # every output, the carried state, dh/dc and the per-step gradient norms (summed per thread,
    # then across threads) agree with the single-threaded run; a row given to two threads, or one
    # given to none, would differ by order one
    rng = np.random.default_rng(N * 31 + threads)
    D, H, T = 6, 19, 7
    params = make_params(kind, rng, D, H, dtype)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype) if kind == "lstm" else None
    want = _run_layer(kind, params, xs, dhs, h0, c0, 1)
    got = _run_layer(kind, params, xs, dhs, h0, c0, threads)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()))


@contextlib.contextmanager
def _kernel_setting(module, name):
    """A kernel module's setting for tests and A/B timing (-1 by its rule, 0 never, 1 always):
    the setter, with the setting at -1 to begin with and restored afterwards."""
    setter = getattr(importlib.import_module(f"fastrnn.{module}"), name)
    old = setter(-1)
    try:
        yield setter
    finally:
        setter(old)


KERNEL_SETTINGS = [
    ("_recurrent", "_set_unit_split"),
    ("_recurrent", "_set_fused"),
    ("_recurrent", "_set_dx_packed"),
]


@pytest.mark.parametrize("module,name", KERNEL_SETTINGS)
def test_kernel_settings_are_validated(module, name):
    with _kernel_setting(module, name) as setter:
        with pytest.raises(ValueError, match="mode must be -1, 0 or 1"):
            setter(2)
        assert setter(-1) == -1


@pytest.fixture
def unit_split():
    """Set how the LSTM time loop is shared between threads (src/cells/_recurrent.pyx,
    use_units): -1 by its rule, 0 by batch rows, 1 by hidden units; restored afterwards."""
    with _kernel_setting("_recurrent", "_set_unit_split") as setter:
        yield setter


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N,H,threads", [(3, 19, 2), (2, 5, 2), (5, 40, 3), (4, 33, 2), (20, 70, 4), (1, 33, 2)]
)
def test_lstm_time_loop_shared_by_units_equals_single_thread(unit_split, dtype, N, H, threads):
    # the time loop shared by hidden units, forced on small shapes: units in shares of 16, so
    # H = 5 leaves threads with no units (they still meet the others at every step), H = 33 a
    # part-panel share; every output, state, dh/dc and norm agrees with one thread (batch 1:
    # not packed, its forward by units from Wx and Wh as they are, units_few_rows)
    unit_split(1)
    rng = np.random.default_rng(N * 7 + H)
    D, T = 6, 9
    params = make_params("lstm", rng, D, H, dtype)
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype)
    want = _run_layer("lstm", params, xs, dhs, h0, c0, 1)
    got = _run_layer("lstm", params, xs, dhs, h0, c0, threads)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()))


def _wide_lstm(seed, N, T, D, H=400):
    """A float64 LSTM's (params, xs, dhs, h0, c0) of the width the units rules take."""
    rng = np.random.default_rng(seed)
    params = make_params("lstm", rng, D, H, np.float64, scale=0.1)
    xs = rng.standard_normal((N, T, D))
    dhs = rng.standard_normal((N, T, H))
    h0, c0 = rng.standard_normal((2, N, H))
    return params, xs, dhs, h0, c0


def test_lstm_shared_by_units_by_its_rule(unit_split):
    # H >= 400 and few rows: the rule shares the time loop by units (the default setting)
    params, xs, dhs, h0, c0 = _wide_lstm(5, N=3, T=4, D=7)
    want = _run_layer("lstm", params, xs, dhs, h0, c0, 1)
    for mode in (-1, 0, 1):
        unit_split(mode)
        got = _run_layer("lstm", params, xs, dhs, h0, c0, 2)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-13 * max(1.0, np.abs(w).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "H,T,masked",
    [(400, 1, False), (410, 1, True), (400, 5, False), (410, 3, True), (400, 30, False)],
)
def test_lstm_batch_one_shared_by_units(unit_split, dtype, H, T, masked):
    # one batch row, H >= 400: the forward takes both threads (units_few_rows: Wx and Wh as they
    # are; over steps each thread projects and multiplies its units' columns, a single step is
    # split over the rows of [Wx; Wh]; 410 leaves the second thread a part-panel share) and
    # agrees with one thread, the recurrent dropout mask included; a narrow layer's plan: one
    rng = np.random.default_rng(H + T)
    D = 9
    params = make_params("lstm", rng, D, H, dtype, scale=0.1)
    xs = rng.standard_normal((1, T, D)).astype(dtype)
    mask = (rng.random((1, H)) < 0.7).astype(dtype) / 0.7 if masked else None
    h0, c0 = rng.standard_normal((2, 1, H)).astype(dtype)
    runs = []
    for threads in (1, 2, 3):  # (three: the partial sums of two other shares)
        layer = make_time(fastrnn, "lstm", params, stateful=True)
        layer.threads = threads
        assert layer._thread_plan(1, T, D, H, forward=True)[0] == threads
        set_state(layer, "lstm", h0, c0)
        runs.append((layer.forward(xs, h_mask=mask), layer.h, layer.c))
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for run in runs[1:]:
        for g, w in zip(run, runs[0]):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()))
    unit_split(0)  # by rows: the same again on one thread's worth of work
    layer = make_time(fastrnn, "lstm", params, stateful=True)
    layer.threads = 2
    set_state(layer, "lstm", h0, c0)
    np.testing.assert_allclose(layer.forward(xs, h_mask=mask), runs[0][0], rtol=tol, atol=tol)
    narrow = make_time(fastrnn, "lstm", make_params("lstm", rng, D, 64, dtype), stateful=True)
    narrow.threads = 2
    assert narrow._thread_plan(1, T, D, 64, forward=True)[0] == 1


def test_lstm_two_rows_on_three_threads_by_units(unit_split):
    # two rows are packed (step_path): the units path of use_units on at most two threads, the
    # plan unchanged by the batch-1 rule; forced by units with more threads than rows, each
    # thread's product reads the packed copy it made
    params, xs, dhs, h0, c0 = _wide_lstm(3, N=2, T=4, D=5)
    layer = make_time(fastrnn, "lstm", params, stateful=True)
    layer.threads = 3
    assert layer._thread_plan(2, 4, 5, 400, forward=True)[0] == 2
    want = _run_layer("lstm", params, xs, dhs, h0, c0, 1)
    unit_split(1)
    got = _run_layer("lstm", params, xs, dhs, h0, c0, 3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-13 * max(1.0, np.abs(w).max()))


def test_lstm_shared_by_units_in_two_python_threads(unit_split):
    # two threaded LSTMs at once: one gets the pool, the other finds it busy and shares its
    # loop by rows on threads of its own (tasks that wait for each other need the pool)
    unit_split(1)
    rng = np.random.default_rng(9)
    N, T, D, H = 4, 6, 5, 37
    runs = []
    for _seed in range(2):
        params = make_params("lstm", rng, D, H, np.float32)
        xs = rng.standard_normal((N, T, D)).astype(np.float32)
        dhs = rng.standard_normal((N, T, H)).astype(np.float32)
        h0, c0 = rng.standard_normal((2, N, H)).astype(np.float32)
        runs.append((params, xs, dhs, h0, c0))
    want = [_run_layer("lstm", *r, 1) for r in runs]

    def many(r):
        return [_run_layer("lstm", *r, 2) for _ in range(40)]

    for got_runs, w in zip(run_side_by_side([lambda r=r: many(r) for r in runs]), want):
        for got in got_runs:
            for g, x in zip(got, w):
                np.testing.assert_allclose(g, x, rtol=2e-6, atol=2e-6 * max(1.0, np.abs(x).max()))


def test_threads_setting_is_validated():
    layer = fastrnn.TimeRNN(*make_params("rnn", np.random.default_rng(0)))
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be None or a positive integer"):
            layer.threads = bad
    layer.threads = np.int64(3)
    assert layer.threads == 3 and type(layer.threads) is int
    layer.threads = None
    assert layer.threads is None


def test_default_threads_follow_the_blas_setting(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastrnn import _threads

    monkeypatch.setattr(_threads, "MIN_PARALLEL_MACS", 1000)
    monkeypatch.setattr(_threads, "MIN_BLAS_PARALLEL_MACS", 1000)
    monkeypatch.setattr(_threads, "MIN_STEP_BLAS_PARALLEL_MACS", 100)
    plan = _threads.plan_threads
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert _threads.blas_threads() == 1
        assert plan(None, 20, 35, 10**9, 10**9) == (1, False)  # nothing to hold
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        assert _threads.blas_threads() == 2
        assert plan(None, 20, 35, 10**9, 10**9) == (2, True)  # kernel threads; BLAS held
        assert plan(5, 3, 35, 0, 0) == (3, True)  # explicit, capped by the rows
        assert plan(1, 20, 35, 10**9, 10**9) == (1, True)  # explicit 1: one thread
        assert plan(None, 20, 35, 10, 10) == (1, True)  # small: all on one thread
        assert plan(None, 20, 35, 10, 10**9) == (1, False)  # small steps, big GEMMs
        assert plan(None, 1, 200, 10**9, 999) == (1, True)  # batch 1, smallish GEMMs
        assert plan(None, 1, 200, 10**9, 10**9) == (1, False)  # batch 1, big GEMMs
        assert plan(None, 30, 1, 10, 500) == (1, False)  # one wide step: BLAS threads
        assert plan(None, 30, 1, 10, 50) == (1, True)  # one small step
        # up to DIRECT_MAX_ROWS rows in all (N >= 2 or T = 1), no product goes to BLAS: nothing
        # to hold
        assert plan(None, 4, 1, 10, 50) == (1, False)
        assert plan(1, 4, 6, 10**9, 10**9) == (1, False)
        assert plan(None, 1, 1, 10, 50) == (1, False)  # a generation step
        assert plan(None, 1, 4, 10, 50) == (1, True)  # batch 1: GEMV, BLAS
        assert plan(None, 4, 1, 10**9, 10**9) == (2, True)  # a step worth two threads


def test_single_threaded_blas_nests_and_restores_the_users_setting():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastrnn import _threads

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        with _threads.single_threaded_blas():
            assert _threads._query_blas_threads() == 1
            assert _threads.blas_threads() == 2  # the user's setting is still reported
            with _threads.single_threaded_blas():
                assert _threads._query_blas_threads() == 1
            assert _threads._query_blas_threads() == 1  # only the last one out restores
        assert _threads._query_blas_threads() == 2
        with pytest.raises(RuntimeError):
            with _threads.single_threaded_blas():
                raise RuntimeError("inside")
        assert _threads._query_blas_threads() == 2

        def from_another_thread():  # OpenBLAS applies the setting whoever calls
            with _threads.single_threaded_blas():
                inside = _threads._query_blas_threads()
            return inside, _threads._query_blas_threads()

        assert run_side_by_side([from_another_thread]) == [(1, 2)]


def test_threaded_layers_in_two_python_threads_leave_blas_as_it_was():
    # two layers, each on 2 kernel threads, overlapping in two Python threads: both results equal
    # the sequential ones and the user's BLAS setting is back afterwards
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastrnn import _threads

    def job(kind, seed):
        rng = np.random.default_rng(seed)
        params = make_params(kind, rng, 16, 24, np.float64)
        xs = rng.standard_normal((9, 12, 16))
        dhs = rng.standard_normal((9, 12, 24))
        h0 = rng.standard_normal((9, 24))
        c0 = rng.standard_normal((9, 24)) if kind == "lstm" else None
        return lambda: [_run_layer(kind, params, xs, dhs, h0, c0, 2) for _ in range(10)]

    jobs = [job("lstm", 1), job("gru_ra", 2)]
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        want = [j() for j in jobs]
        got = run_side_by_side(jobs)
        assert _threads._query_blas_threads() == 2
    for g_runs, w_runs in zip(got, want):
        for g_run, w_run in zip(g_runs, w_runs):
            for g, w in zip(g_run, w_run):
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.fixture
def rnn_fused():
    """Set whether the RNN's forward makes x_t Wx part of each step's packed product
    (src/cells/_recurrent.pyx, fused_steps): -1 by its rule, 0 never, 1 whenever packed; restored
    after."""
    with _kernel_setting("_recurrent", "_set_fused") as setter:
        yield setter


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N,D,H,threads",
    [(2, 5, 7, 1), (3, 19, 33, 2), (7, 40, 17, 3), (16, 100, 100, 1), (16, 100, 100, 2)],
)
def test_rnn_fused_input_products_equal_reference(rnn_fused, dtype, N, D, H, threads, rng):
    # [x_t | h_{t-1}] @ [Wx; Wh] in one product per step (forced on small shapes, and by the
    # rule at N16 H100), against the NumPy reference and the one-GEMM projection: outputs,
    # carried state, gradients (backward reads the inputs the steps copied into the cache,
    # not the caller's array, overwritten in between) and norms
    from fastrnn import reference as ref

    T = 9
    params = make_params("rnn", rng, D, H, dtype, scale=0.5 / np.sqrt(H))
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    r = make_time(ref, "rnn", [p.astype(np.float64) for p in params], stateful=True)
    r.set_state(h0.astype(np.float64))
    want_hs = r.forward(xs.astype(np.float64))
    want_dxs = r.backward(dhs.astype(np.float64))
    tol = 2e-5 if dtype == np.float32 else 1e-12
    got = {}
    for mode in (1, 0, -1):
        rnn_fused(mode)
        layer = make_time(fastrnn, "rnn", params, stateful=True)
        layer.threads = threads
        layer.set_state(h0)
        xs_in = xs.copy()
        hs = layer.forward(xs_in)
        xs_in[...] = 7.0
        dxs = layer.backward(dhs)
        for name, g, w in [
            ("hs", hs, want_hs),
            ("dxs", dxs, want_dxs),
            *zip(("dWx", "dWh", "db"), layer.grads, r.grads),
        ]:
            np.testing.assert_allclose(
                g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()), err_msg=f"mode {mode} {name}"
            )
        got[mode] = [np.array(a) for a in (hs, dxs, layer.h, layer.dh, *layer.grads)]
    for a, b in zip(got[1], got[0]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.fixture
def rnn_dx_packed():
    """Set whether the RNN's backward makes dX from Wx^T packed (src/cells/_recurrent.pyx,
    packed_dx): -1 by its rule, 0 never, 1 always; restored after."""
    with _kernel_setting("_recurrent", "_set_dx_packed") as setter:
        yield setter


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N,T,D,H,threads",
    [
        (2, 9, 5, 7, 1),
        (3, 9, 19, 33, 2),
        (7, 9, 40, 17, 3),
        (16, 30, 100, 100, 1),
        (16, 30, 100, 100, 2),
        (5, 70, 37, 23, 2),
    ],
)
def test_rnn_dx_from_packed_wx_equals_reference(rnn_dx_packed, dtype, N, T, D, H, threads, rng):
    # dX = dG @ Wx^T by the packed kernel in chunks of 192 rows (forced on small shapes, by the
    # rule at N16 T30 H100 and N5 T70: 480 and 350 rows, a partial last chunk; a thread's
    # share of 3 or 2 rows x 70 steps crosses chunks too), against the NumPy reference and the
    # BLAS path: dxs, the carried gradient and the weight gradients, with Wx^T packed after
    # Wh^T in the scratch (an overrun would show in the gradients of the next call)
    from fastrnn import reference as ref

    params = make_params("rnn", rng, D, H, dtype, scale=0.5 / np.sqrt(H))
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    r = make_time(ref, "rnn", [p.astype(np.float64) for p in params])
    r.forward(xs.astype(np.float64))
    want_dxs = r.backward(dhs.astype(np.float64))
    tol = 2e-5 if dtype == np.float32 else 1e-12
    got = {}
    for mode in (1, 0, -1):
        rnn_dx_packed(mode)
        layer = make_time(fastrnn, "rnn", params)
        layer.threads = threads
        for _ in range(2):  # the second call reuses the scratch
            layer.forward(xs)
            dxs = layer.backward(dhs)
        for name, g, w in [
            ("dxs", dxs, want_dxs),
            ("dh0", layer.dh, r.dh),
            *zip(("dWx", "dWh", "db"), layer.grads, r.grads),
        ]:
            np.testing.assert_allclose(
                g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()), err_msg=f"mode {mode} {name}"
            )
        got[mode] = [np.array(a) for a in (dxs, layer.dh, *layer.grads)]
    for a, b in zip(got[1], got[0]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N,T,D,H,threads", [(3, 90, 13, 19, 1), (8, 40, 20, 33, 2), (5, 70, 7, 40, 3)]
)
def test_weight_gradients_by_tn_packed_equal_reference(kind, dtype, N, T, D, H, threads):
    # the whole-sequence weight gradients [X | Hprev]^T @ dG made by gemm_tn_packed (forced:
    # N*T = 270-350 rows cross its 256-row k-slices; H = 19-40 leaves partial panels) and by
    # BLAS: both against the float64 NumPy reference, and against each other, with every other
    # output unchanged and db equal bitwise
    from fastrnn import _isa, reference as ref

    rng = np.random.default_rng(N * 100 + H)
    params = make_params(kind, rng, D, H, dtype, scale=0.5 / np.sqrt(H))
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    dhs = rng.standard_normal((N, T, H)).astype(dtype)
    h0 = rng.standard_normal((N, H)).astype(dtype)
    c0 = rng.standard_normal((N, H)).astype(dtype) if kind == "lstm" else None
    r = make_time(ref, kind, [p.astype(np.float64) for p in params], stateful=True)
    set_state(r, kind, h0.astype(np.float64), None if c0 is None else c0.astype(np.float64))
    r.forward(xs.astype(np.float64))
    r.backward(dhs.astype(np.float64))
    tol = 3e-5 if dtype == np.float32 else 1e-12
    got = {}
    for how in ("packed", "blas"):
        with _isa.tn_packed(how):
            got[how] = _run_layer(kind, params, xs, dhs, h0, c0, threads)
        grads = got[how][5:8]
        for name, g, w in zip(("dWx", "dWh", "db"), grads, r.grads):
            np.testing.assert_allclose(
                g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()), err_msg=f"{how} {name}"
            )
    for a, b in zip(got["packed"], got["blas"]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))
    # db: summed from gemm_tn_packed's packed slices of dG, or by colsum beside BLAS's product,
    # with the same additions in the same order
    np.testing.assert_array_equal(got["packed"][7], got["blas"][7])


def test_tn_packed_setting_is_validated():
    from fastrnn import _isa, _packed

    with pytest.raises(ValueError, match="how: expected one of"):
        with _isa.tn_packed("fast"):
            pass
    with pytest.raises(ValueError, match="mode: expected -1, 0 or 1"):
        _packed._kernel_tn_mode(2)
    before = _packed._kernel_tn_mode()
    with _isa.tn_packed("blas"):
        assert _packed._kernel_tn_mode() == 0
    assert _packed._kernel_tn_mode() == before
