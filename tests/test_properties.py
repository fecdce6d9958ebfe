"""Property tests: for any small shape, dtype, memory layout of xs/dhs and statefulness, the
compiled layer gives what fastrnn.reference gives (forward, state, backward, grads, diagnostics)."""

import numpy as np
import pytest
from conftest import (
    KINDS,
    as64,
    assert_results_close,
    make_cell,
    make_params,
    make_time,
    run_cell,
    run_time,
    set_state,
)
from hypothesis import HealthCheck, given, settings, strategies as st

import fastrnn
from fastrnn import reference as ref

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")

dims = st.integers(min_value=1, max_value=6)
LAYOUTS = ["contiguous", "step2", "transposed", "reversed_time"]


def lay_out(a, how, rng):
    """`a` (3-D) with the given memory layout; always equal to `a`."""
    if how == "contiguous":
        v = np.ascontiguousarray(a)
    elif how == "step2":
        buf = rng.standard_normal((a.shape[0], 2 * a.shape[1], a.shape[2] + 3)).astype(a.dtype)
        v = buf[:, ::2, 1 : a.shape[2] + 1]
        v[...] = a
    elif how == "transposed":
        v = np.ascontiguousarray(a.transpose(2, 1, 0)).transpose(2, 1, 0)
    else:  # negative stride along time
        v = np.ascontiguousarray(a[:, ::-1])[:, ::-1]
    assert np.array_equal(v, a)
    return v


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(KINDS),
    N=dims,
    T=dims,
    D=dims,
    H=dims,
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(LAYOUTS),
    stateful=st.booleans(),
    segments=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_equals_reference(kind, N, T, D, H, dtype, layout, stateful, segments, seed):
    rng = np.random.default_rng(seed)
    params = make_params(kind, rng, D, H, dtype, scale=0.7)
    fast = make_time(fastrnn, kind, params, stateful=stateful)
    slow = make_time(ref, kind, as64(params), stateful=stateful)
    if stateful:
        h0 = rng.standard_normal((N, H)).astype(dtype)
        c0 = rng.standard_normal((N, H)).astype(dtype) if kind == "lstm" else None
        set_state(fast, kind, h0, c0)
        set_state(slow, kind, h0.astype(np.float64), None if c0 is None else c0.astype(np.float64))
    for _ in range(segments):
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        dhs = rng.standard_normal((N, T, H)).astype(dtype)
        got, hs, dxs = run_time(
            fast, kind, lay_out(xs, layout, rng), lay_out(dhs, layout, rng), track=True
        )
        want, _, _ = run_time(slow, kind, xs.astype(np.float64), dhs.astype(np.float64), track=True)
        assert hs.dtype == np.dtype(dtype) and hs.flags.c_contiguous
        assert dxs.dtype == np.dtype(dtype) and dxs.shape == (N, T, D)
        assert_results_close(got, want, dtype, factor=3)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    kind=st.sampled_from(KINDS),
    N=dims,
    D=dims,
    H=dims,
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_cell_equals_reference(kind, N, D, H, dtype, seed):
    rng = np.random.default_rng(seed)
    params = make_params(kind, rng, D, H, dtype, scale=0.7)
    ins = [rng.standard_normal(s).astype(dtype) for s in ((N, D), (N, H), (N, H), (N, H), (N, H))]
    got = run_cell(make_cell(fastrnn, kind, params), kind, *ins)
    want = run_cell(make_cell(ref, kind, as64(params)), kind, *as64(ins))
    assert_results_close(got, want, dtype, factor=3)
