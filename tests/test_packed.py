"""fastrnn._packed: the packed-weights product of the per-step recurrent matmuls (fr_gemm_impl.h).

Checked against NumPy over shapes that cross every blocking boundary of the kernel (row blocks of
up to 6 rows and the 1/2-row narrow path, column panels of 16 floats / 8 doubles with a partial last
panel, k-slices of FR_KC), both dtypes, accumulate on/off, B as any strided view, A and C as
row-strided views into wider buffers; plus: memory around C untouched, the padding of the packed
copy, NaN/Inf propagation, agreement with the BLAS path, and bad calls refused (not crashing).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import DTYPES, child_env, tol
from hypothesis import HealthCheck, example, given, settings, strategies as st

from fastrnn import _packed

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")

# FR_KC, the kernel's k-slice, is 16 KiB / (panel width * itemsize): 256 for float32 (16-wide
# panels) and also 256 for float64 (8-wide panels); 128 and 512 are covered as well
K_EDGES = [0, 1, 2, 3, 127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 520, 600]
M_EDGES = [0, 1, 2, 3, 5, 6, 7, 12, 13, 20, 25]
N_EDGES = [1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 65, 70]
B_LAYOUTS = ["plain", "transposed", "colslice", "transposed_slice", "strided", "reversed"]
AC_LAYOUTS = ["contiguous", "rowstrided"]


def panel_width(dtype):
    """Columns per panel of the packed layout (a 1 x 1 matrix takes exactly one panel row)."""
    return _packed.size(1, 1, dtype)


def make_data(rng, shape, dtype, kind, scale=1.0):
    if kind == "ints":  # small integers: every product and sum is exact, so C must be exact
        return rng.integers(-4, 5, shape).astype(dtype)
    return (scale * rng.standard_normal(shape)).astype(dtype)


def view_b(B, how, rng):
    """A view equal to B (K, N) with the given memory layout; the memory around it is NaN."""
    K, N = B.shape
    if how == "plain":
        v = np.ascontiguousarray(B)
    elif how == "transposed":  # B = W.T, W (N, K) row-major
        v = np.ascontiguousarray(B.T).T
    elif how == "colslice":  # B = W[:, a:a+N] of a wider W
        a = int(rng.integers(0, 20))
        w = np.full((K, a + N + int(rng.integers(1, 20))), np.nan, B.dtype)
        v = w[:, a : a + N]
    elif how == "transposed_slice":  # B = W.T[:, a:a+N] (rows a..a+N of W)
        a = int(rng.integers(0, 20))
        w = np.full((a + N + int(rng.integers(1, 20)), K), np.nan, B.dtype)
        v = w.T[:, a : a + N]
    elif how == "strided":  # neither stride is 1
        w = np.full((2 * K + 1, 3 * N + 2), np.nan, B.dtype)
        v = w[1::2, 2::3][:K, :N]
    else:  # negative strides on both axes
        w = np.full((K + 1, N + 1), np.nan, B.dtype)
        v = w[:K, :N][::-1, ::-1]
    v[...] = B
    assert v.shape == B.shape and np.array_equal(v, B)
    return v


def in_wider(shape, dtype, how, rng, fill):
    """(buffer, view): a (M, X) view with contiguous rows; for "rowstrided" it sits inside a wider
    and taller buffer (row stride > X, unaligned start), everything around it set to `fill`."""
    M, X = shape
    if how == "contiguous":
        # fresh arrays, whose empty cases get NumPy 2's degenerate (0, 0) strides, are covered by
        # test_valid_arrays_with_degenerate_strides
        buf = np.empty(shape, dtype)
        buf[...] = fill
        return buf, buf
    top, left = int(rng.integers(0, 3)), int(rng.integers(0, 18))
    buf = np.empty((top + M + int(rng.integers(1, 3)), left + X + int(rng.integers(1, 18))), dtype)
    buf[...] = fill
    return buf, buf[top : top + M, left : left + X]


def sentinel(shape, dtype, rng):
    """Random bit patterns incl. NaN/Inf, to spot any write outside the target."""
    s = rng.standard_normal(shape).astype(dtype)
    s.flat[::7] = np.nan
    s.flat[3::11] = np.inf
    return s


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32 if a.dtype == np.float32 else np.uint64).copy()


def assert_only_c_written(cbuf, C, before):
    """cbuf's bits equal `before` everywhere outside the view C (which lies inside cbuf)."""
    inside = np.zeros(cbuf.shape, bool)
    if C.base is None and C is cbuf:
        inside[...] = True
    else:
        r0 = (
            C.__array_interface__["data"][0] - cbuf.__array_interface__["data"][0]
        ) // cbuf.itemsize
        top, left = divmod(r0, cbuf.shape[1])
        inside[top : top + C.shape[0], left : left + C.shape[1]] = True
    assert np.array_equal(bits(cbuf)[~inside], before[~inside]), "wrote outside C"


def check_product(
    M, K, N, dtype, accumulate, repeat, b_layout, a_layout, c_layout, kind, scale, seed
):
    rng = np.random.default_rng(seed)
    A0 = make_data(rng, (M, K), dtype, kind, scale)
    B0 = make_data(rng, (K, N), dtype, kind, scale)
    C0 = make_data(rng, (M, N), dtype, kind, scale)
    B = view_b(B0, b_layout, rng)
    P = _packed.pack(B)
    assert P.dtype == np.dtype(dtype) and P.ndim == 1 and P.size == _packed.size(K, N, dtype)

    # NaN all around A: a read outside the (M, K) view would show in C
    _, A = in_wider((M, K), dtype, a_layout, rng, np.nan)
    A[...] = A0
    cbuf, C = in_wider((M, N), dtype, c_layout, rng, 0)
    cbuf[...] = sentinel(cbuf.shape, dtype, rng)
    # without accumulate C's old contents must not matter: make them NaN
    C[...] = C0 if accumulate else np.nan
    before = bits(cbuf)
    a_before = bits(A)

    _packed.matmul_packed(A, P, N, C, accumulate=accumulate, repeat=repeat)

    # 2. nothing outside C written (bit-identical), A not written
    assert_only_c_written(cbuf, C, before)
    assert np.array_equal(bits(A), a_before), "wrote into A"

    # 1. the product, in float64 from the same numbers
    A64, B64, C64 = (x.astype(np.float64) for x in (A0, B0, C0))
    want = A64 @ B64 * (repeat if accumulate else 1)
    bound = np.abs(A64) @ np.abs(B64) * (repeat if accumulate else 1)
    if accumulate:
        want += C64
        bound += np.abs(C64)
    got = C.astype(np.float64)
    ctx = dict(
        M=M,
        K=K,
        N=N,
        dtype=np.dtype(dtype).name,
        accumulate=accumulate,
        repeat=repeat,
        b_layout=b_layout,
        a_layout=a_layout,
        c_layout=c_layout,
    )
    assert np.isfinite(got).all(), (
        f"non-finite entries in C {ctx}: {np.argwhere(~np.isfinite(got))[:5]}"
    )
    if kind == "ints":
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"exact product differs {ctx} at {bad[:5].tolist()}"
    else:
        err = np.abs(got - want)
        lim = tol(dtype) * bound
        bad = np.argwhere(err > lim)
        assert bad.size == 0, (
            f"product off {ctx} at {bad[:5].tolist()}: "
            f"err {err[tuple(bad[0])]} > {lim[tuple(bad[0])]}"
        )


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    M=st.one_of(st.sampled_from(M_EDGES), st.integers(0, 25)),
    K=st.one_of(st.sampled_from(K_EDGES), st.integers(0, 600)),
    N=st.one_of(st.sampled_from(N_EDGES), st.integers(1, 70)),
    dtype=st.sampled_from(DTYPES),
    accumulate=st.booleans(),
    repeat=st.sampled_from([1, 1, 2]),
    b_layout=st.sampled_from(B_LAYOUTS),
    a_layout=st.sampled_from(AC_LAYOUTS),
    c_layout=st.sampled_from(AC_LAYOUTS),
    kind=st.sampled_from(["normal", "ints"]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
)
@example(
    M=13,
    K=520,
    N=33,
    dtype=np.float64,
    accumulate=True,
    repeat=1,
    b_layout="colslice",
    a_layout="rowstrided",
    c_layout="rowstrided",
    kind="normal",
    scale=1.0,
    seed=1,
)
@example(
    M=20,
    K=257,
    N=70,
    dtype=np.float32,
    accumulate=False,
    repeat=1,
    b_layout="transposed",
    a_layout="rowstrided",
    c_layout="rowstrided",
    kind="normal",
    scale=1.0,
    seed=2,
)
@example(
    M=1,
    K=300,
    N=17,
    dtype=np.float32,
    accumulate=True,
    repeat=2,
    b_layout="transposed_slice",
    a_layout="rowstrided",
    c_layout="rowstrided",
    kind="normal",
    scale=1.0,
    seed=3,
)
@example(
    M=2,
    K=600,
    N=9,
    dtype=np.float64,
    accumulate=False,
    repeat=1,
    b_layout="reversed",
    a_layout="rowstrided",
    c_layout="rowstrided",
    kind="ints",
    scale=1.0,
    seed=4,
)
@example(
    M=7,
    K=0,
    N=5,
    dtype=np.float32,
    accumulate=False,
    repeat=1,
    b_layout="plain",
    a_layout="rowstrided",
    c_layout="rowstrided",
    kind="normal",
    scale=1.0,
    seed=5,
)
@example(
    M=0,
    K=3,
    N=5,
    dtype=np.float64,
    accumulate=True,
    repeat=1,
    b_layout="plain",
    a_layout="rowstrided",
    c_layout="rowstrided",
    kind="normal",
    scale=1.0,
    seed=6,
)
def test_matmul_packed_equals_numpy(
    M, K, N, dtype, accumulate, repeat, b_layout, a_layout, c_layout, kind, scale, seed
):
    check_product(
        M, K, N, dtype, accumulate, repeat, b_layout, a_layout, c_layout, kind, scale, seed
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_packed_grid_exact(dtype):
    """Every combination of the edge sizes (row-block splits, partial panels, k-slices; with
    AVX-512, groups of 4 panels for 3-4 rows and of 2 from 5 rows, src/gemm/fr_gemm_impl.h), with
    small-integer data so the result must be exact; layouts rotate through all kinds."""
    i, failures = 0, []
    for M in [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 20, 25]:
        for K in [0, 1, 128, 129, 256, 257, 300, 520]:
            for N in [1, 7, 8, 9, 16, 17, 33, 50, 64, 70]:
                i += 1
                try:
                    check_product(
                        M,
                        K,
                        N,
                        dtype,
                        accumulate=bool(i % 2),
                        repeat=1,
                        b_layout=B_LAYOUTS[i % len(B_LAYOUTS)],
                        a_layout=AC_LAYOUTS[i % 2],
                        c_layout=AC_LAYOUTS[(i // 2) % 2],
                        kind="ints",
                        scale=1.0,
                        seed=i,
                    )
                except Exception as e:  # collect all, so one failure doesn't hide the rest
                    failures.append(f"M={M} K={K} N={N}: {type(e).__name__}: {str(e)[:200]}")
    assert not failures, f"{len(failures)} of {i} cases fail:\n" + "\n".join(failures[:15])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "K,N", [(1, 1), (3, 5), (7, 16), (7, 17), (300, 33), (129, 70), (0, 9), (5, 0)]
)
def test_size_layout_and_zero_padding(dtype, K, N, rng):
    nr = panel_width(dtype)
    assert nr in (8, 16)
    panels = -(-N // nr)
    assert _packed.size(K, N, dtype) == K * panels * nr
    B = rng.standard_normal((K, N)).astype(dtype)
    for how in B_LAYOUTS:
        P = _packed.pack(view_b(B, how, rng))
        assert P.shape == (_packed.size(K, N, dtype),) and P.dtype == np.dtype(dtype)
        # documented layout: B[k, p*NR + j] at P[(p*K + k)*NR + j], the last panel zero-padded
        padded = np.zeros((K, panels * nr), dtype)
        padded[:, :N] = B
        want = padded.reshape(K, panels, nr).transpose(1, 0, 2).ravel()
        assert np.array_equal(bits(P), bits(want)), how  # bitwise: padding is +0.0, not NaN


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N", [(1, 5), (2, 9), (6, 17), (7, 31), (13, 1)])
def test_nan_beside_b_does_not_leak(dtype, M, N, rng):
    """B a column slice of a matrix whose other columns (incl. the ones that fill out the last
    panel) are NaN: C stays finite and exact."""
    K = 260
    W = np.full((K, N + 40), np.nan, dtype)
    B = W[:, 3 : 3 + N]
    B[...] = rng.integers(-4, 5, (K, N))
    A = rng.integers(-4, 5, (M, K)).astype(dtype)
    C = np.empty((M, N), dtype)
    _packed.matmul_packed(A, _packed.pack(B), N, C)
    assert np.array_equal(C, A.astype(np.float64) @ B.astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["M=0", "K=0", "K=0 accumulate", "K=1 column", "N=1 column"])
def test_valid_arrays_with_degenerate_strides(dtype, case, rng):
    """Plain NumPy arrays that are valid operands although NumPy gives them an unusual stride on
    an axis of length <= 1 or on an empty array (NumPy 2: np.empty((0, 5)).strides == (0, 0);
    x[:, None].strides == (itemsize, 0))."""
    M, K, N, acc = {
        "M=0": (0, 5, 20, False),
        "K=0": (4, 0, 20, False),
        "K=0 accumulate": (4, 0, 20, True),
        "K=1 column": (4, 1, 20, False),
        "N=1 column": (4, 5, 1, False),
    }[case]
    B = rng.standard_normal((K, N)).astype(dtype)
    A = rng.standard_normal((M, K)).astype(dtype)
    if case == "K=1 column":
        A = A[:, 0].copy()[:, None]
    C0 = rng.standard_normal((M, N)).astype(dtype)
    C = C0.copy()
    if case == "N=1 column":
        C = C[:, 0].copy()[:, None]
    _packed.matmul_packed(A, _packed.pack(B), N, C, accumulate=acc)
    want = A.astype(np.float64) @ B.astype(np.float64) + (C0 if acc else 0)
    assert np.allclose(C, want, rtol=tol(dtype), atol=tol(dtype) * np.abs(want).max(initial=1))


def ieee_product(A, B):
    """A @ B in float64 summing every product (no BLAS): NaN/Inf exactly as IEEE gives them."""
    with np.errstate(invalid="ignore"):
        return (A.astype(np.float64)[:, :, None] * B.astype(np.float64)[None, :, :]).sum(axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 2, 3, 6, 7, 13])
@pytest.mark.parametrize("accumulate", [False, True])
def test_nan_inf_propagate(dtype, M, accumulate, rng):
    K, N = 300, 21  # crosses a k-slice (float32) and a partial panel
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    C0 = rng.standard_normal((M, N)).astype(dtype)
    A[0, 290] = np.inf  # row of +-Inf (sign of B[290, j]) ...
    B[290, 4] = 0.0  # ... except Inf * 0 = NaN in column 4
    if M > 1:
        A[1, 10] = -np.inf
        A[1, 270] = np.inf  # Inf - Inf = NaN where B[10, j], B[270, j] share a sign
    if M > 2:
        A[M - 1, 5] = np.nan  # row of NaN
    B[100, 7] = np.nan  # column of NaN
    B[200, 12] = np.inf  # column of +-Inf
    B[201, 12] = -np.inf  # ... making it Inf - Inf in rows where the signs agree
    B[150, 19] = np.inf  # last (partial) panel
    want = ieee_product(A, B)
    if accumulate:
        C0[0, 2], C0[-1, 3] = np.nan, -np.inf
        with np.errstate(invalid="ignore"):
            want += C0
    C = C0.copy() if accumulate else np.full((M, N), 1.0, dtype)
    _packed.matmul_packed(A, _packed.pack(B), N, C, accumulate=accumulate)
    got = C.astype(np.float64)
    for name, f in [("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)]:
        assert np.array_equal(f(got), f(want)), (
            f"{name} pattern differs at {np.argwhere(f(got) != f(want))[:5].tolist()}"
        )
    assert np.isnan(want).any() and np.isinf(want).any()  # the case really has both
    fin = np.isfinite(want)
    scale = ieee_product(np.nan_to_num(np.abs(A), posinf=0.0), np.nan_to_num(np.abs(B), posinf=0.0))
    scale += np.abs(np.nan_to_num(C0, neginf=0.0, nan=0.0)) if accumulate else 0
    assert (np.abs(got[fin] - want[fin]) <= tol(dtype) * scale[fin]).all()


@pytest.mark.parametrize("M", [1, 2, 5, 20])
@pytest.mark.parametrize("accumulate", [False, True])
def test_blas_and_packed_agree(M, accumulate, rng):
    K, N = 300, 70
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    Cb, Cp = C0.copy(), C0.copy()
    _packed.matmul_blas(A, B, Cb, accumulate=accumulate, repeat=3)
    _packed.matmul_packed(A, _packed.pack(B), N, Cp, accumulate=accumulate, repeat=3)
    bound = 3 * np.abs(A.astype(np.float64)) @ np.abs(B.astype(np.float64)) + np.abs(C0)
    assert (np.abs(Cb.astype(np.float64) - Cp) <= 2 * tol(np.float32) * bound).all()
    want = (3 if accumulate else 1) * (A.astype(np.float64) @ B) + (C0 if accumulate else 0)
    assert (np.abs(Cp - want) <= tol(np.float32) * bound).all()


# --- bad calls --------------------------------------------------------------------------------


def _good(dtype=np.float32, M=3, K=5, N=20):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K)).astype(dtype)
    P = _packed.pack(rng.standard_normal((K, N)).astype(dtype))
    return A, P, N, np.zeros((M, N), dtype)


def _bad_calls():
    f4, f8 = np.float32, np.float64
    A, P, N, C = _good(f4)
    A8, P8, _, C8 = _good(f8)
    Pk, Pn = _packed.pack(np.ones((6, N), f4)), _packed.pack(np.ones((5, N + 16), f4))
    return {
        # dtype mixes
        "A f64, P/C f32": (TypeError, (A8, P, N, C)),
        "C f64, A/P f32": (TypeError, (A, P, N, C8)),
        "P f64, A/C f32": (TypeError, (A, P8, N, C)),
        "P f32, A/C f64": (TypeError, (A8, P, N, C8)),
        # P of the wrong size
        "P packed for K+1": (ValueError, (A, Pk, N, C)),
        "P packed for N+16": (ValueError, (A, Pn, N, C)),
        "P one short": (ValueError, (A, P[:-1], N, C)),
        "P f64 with f32 size": (
            ValueError,
            (A8, _packed.pack(np.ones((5, 40), f4)).astype(f8), N, C8),
        ),
        # shapes / strides
        "N != C columns": (ValueError, (A, _packed.pack(np.ones((5, 17), f4)), 17, C)),
        "C rows != A rows": (ValueError, (A, P, N, C[:2])),
        "A rows not contiguous": (ValueError, (np.ones((3, 10), f4)[:, ::2], P, N, C)),
        "C rows not contiguous": (ValueError, (A, P, N, np.zeros((3, 2 * N), f4)[:, ::2])),
        "A 1-D": (ValueError, (A[0], P, N, C[:1])),
        "C 3-D": (ValueError, (A, P, N, C[None])),
    }


BAD = _bad_calls()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_call_raises(case):
    exc, (A, P, N, C) = BAD[case]
    before = C.copy()
    with pytest.raises(exc):
        _packed.matmul_packed(A, P, N, C)
    assert np.array_equal(C, before, equal_nan=True), "C written by a refused call"


def test_pack_rejects_other_dtypes():
    for dt in (np.int32, np.int64, np.float16, np.complex64):
        with pytest.raises(TypeError):
            _packed.pack(np.ones((3, 4), dt))


def test_matmul_refuses_read_only_c():
    A, P, N, C = _good()
    C.flags.writeable = False
    with pytest.raises(ValueError):
        _packed.matmul_packed(A, P, N, C)
    assert not C.any(), "a read-only C was written"


def test_matmul_refuses_non_contiguous_p():
    """P must be the packed buffer itself: a strided view of the right length is read as if it
    were contiguous (wrong numbers) unless refused."""
    A, P, N, C = _good()
    P2 = np.zeros(2 * P.size, P.dtype)
    P2[::2] = P
    with pytest.raises(ValueError):
        _packed.matmul_packed(A, P2[::2], N, C)


def test_matmul_blas_refuses_float64():
    A, B, C = np.ones((2, 3)), np.ones((3, 4)), np.zeros((2, 4))
    with pytest.raises((TypeError, ValueError)):
        _packed.matmul_blas(A, B, C)


# Calls that may corrupt memory or crash the interpreter run in their own process: an exception is
# a pass; no exception (wrong numbers, silent memory corruption), a crash or a hang is a failure.
ISOLATED = {
    "matmul_packed A=None": """
        P = _packed.pack(np.ones((3, 4), np.float32))
        _packed.matmul_packed(None, P, 4, np.zeros((2, 4), np.float32))""",
    "matmul_packed C=None": """
        _packed.matmul_packed(np.ones((2, 3), np.float32), _packed.pack(np.ones((3, 4),
                              np.float32)), 4, None)""",
    "matmul_packed int32 A/P/C": """
        n = _packed.size(3, 4, np.float64)
        A, P, C = np.ones((2, 3), np.int32), np.ones(n, np.int32), np.zeros((2, 4), np.int32)
        _packed.matmul_packed(A, P, 4, C)""",
    "matmul_packed big-endian f4": """
        n = _packed.size(3, 4, np.float64)
        A, P, C = np.ones((2, 3), '>f4'), np.ones(n, '>f4'), np.zeros((2, 4), '>f4')
        _packed.matmul_packed(A, P, 4, C)""",
    "matmul_packed reversed P": """
        P = _packed.pack(np.ones((500, 64), np.float32))
        _packed.matmul_packed(np.ones((3, 500), np.float32), P[::-1], 64,
                              np.zeros((3, 64), np.float32))""",
    "pack 1-D": """
        _packed.pack(np.ones(4, np.float32))""",
    "pack 3-D": """
        _packed.pack(np.ones((2, 3, 4), np.float32))""",
    "matmul_blas C too small": """
        _packed.matmul_blas(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32),
                            np.zeros((2, 2), np.float32))""",
}

# One helper interpreter imports _packed once, then runs each case in a forked child (cheap, and
# a crash takes down only that child); it prints one JSON line: case -> [how it ended, message].
_RUNNER = """\
import json, os, sys, textwrap, time
import numpy as np
from fastrnn import _packed
results = {}
for name, code in json.loads(sys.argv[1]).items():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            exec(textwrap.dedent(code))
            msg, rc = 'NO ERROR', 1
        except Exception as e:
            msg, rc = 'RAISED %s: %s' % (type(e).__name__, e), 0
        os.write(w, msg.encode()[:500])
        os._exit(rc)
    os.close(w)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = None
            break
        time.sleep(0.005)
    msg = os.read(r, 1000).decode(errors='replace')
    os.close(r)
    if status is None:
        how = 'hung (killed after 30 s)'
    elif os.WIFSIGNALED(status):
        how = 'crashed with signal %d' % os.WTERMSIG(status)
    else:
        how = 'exit %d' % os.WEXITSTATUS(status)
    results[name] = [how, msg]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def isolated_results(tmp_path_factory, isa):
    # the helper must import the fastrnn under test: put its folder first on the path, and start
    # in an empty folder, since `python -c` also searches the working directory, where a source
    # checkout without built kernels would shadow an installed package
    env = child_env()
    r = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(ISOLATED)],
        env=env,
        cwd=tmp_path_factory.mktemp("isolated"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(ISOLATED))
def test_bad_call_does_not_crash(case, isolated_results):
    how, msg = isolated_results[case]
    assert how == "exit 0" and msg.startswith("RAISED"), f"{case}: {how}, {msg!r}"
