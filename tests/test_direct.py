"""fastrnn._packed's direct products (fr_gemm_impl.h): gemm_direct, C (+)= A @ B with B read in
place, gemm_direct_nt, C (+)= A @ W^T with W read in place, and gemm_direct_tn, C (+)= A^T @ B
(a weight gradient over a few rows).  The kernels use them for products of a few rows (a single
step: the cells, a generation step) instead of BLAS.  And gemm_tn_packed, C (+)= A^T @ B over
many rows, which packs both operands per k-slice of 256 rows (the whole-sequence weight
gradients, where it beats BLAS: worth_tn_packed): row blocks of up to 12 (AVX-512) or 6 rows of
A^T, the 1-2-row narrow path, groups of 2 panels (4 for up to 4 rows), a zero-padded last panel.

Checked against NumPy over shapes that cross every blocking boundary (gemm_direct: row blocks of
up to 6 rows and the 1-2-row narrow path, 16-float / 8-double column strips with a partial last
strip copied into a padded tile, k-slices of 256; gemm_direct_nt: row blocks of up to 5 rows,
pairs of rows of W, vectors of 8 floats / 4 doubles along k with a scalar tail; gemm_direct_tn:
gemm_direct's blocks with A read down its columns), both dtypes,
accumulate on/off, every operand as a row-strided view inside a NaN-filled buffer (a read past a
row would show in C), memory around C untouched, NaN/Inf propagation, bad calls refused."""

import numpy as np
import pytest
from conftest import DTYPES, child_env, tol
from hypothesis import HealthCheck, example, given, settings, strategies as st
from test_packed import AC_LAYOUTS, assert_only_c_written, bits, in_wider, make_data, sentinel

from fastrnn import _packed

# every test here runs once per instruction set of the products (conftest.isa)
pytestmark = pytest.mark.usefixtures("isa")

KERNELS = ["direct", "direct_nt", "direct_tn", "tn_packed"]
TRANSPOSED_A = ("direct_tn", "tn_packed")  # kernels that take A as (K, M): A^T @ B
M_EDGES = [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 20, 31, 32, 33]
K_EDGES = [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 255, 256, 257, 300, 513]
N_EDGES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65, 70]


def run(kernel, A, B0, C, accumulate, repeat, layout, rng, dtype):
    """Call the kernel on A (as a_operand lays it out) and B0 (K, N) laid out as it needs: B
    itself for direct and direct_tn, W = B0.T for direct_nt, inside a NaN-filled buffer."""
    K, N = B0.shape
    src = B0.T if kernel == "direct_nt" else B0
    _, B = in_wider(src.shape, dtype, layout, rng, np.nan)
    B[...] = src
    before = bits(B)
    fn = {
        "direct": _packed.matmul_direct,
        "direct_nt": _packed.matmul_direct_nt,
        "direct_tn": _packed.matmul_direct_tn,
        "tn_packed": _packed.matmul_tn_packed,
    }[kernel]
    fn(A, B, C, accumulate=accumulate, repeat=repeat)
    assert np.array_equal(bits(B), before), "wrote into B"


def check(
    kernel, M, K, N, dtype, accumulate, repeat, a_layout, b_layout, c_layout, kind, scale, seed
):
    rng = np.random.default_rng(seed)
    A0 = make_data(rng, (M, K), dtype, kind, scale)
    B0 = make_data(rng, (K, N), dtype, kind, scale)
    C0 = make_data(rng, (M, N), dtype, kind, scale)
    # direct_tn and tn_packed take A transposed: the (K, M) matrix whose columns are A0's rows
    at = kernel in TRANSPOSED_A
    _, A = in_wider((K, M) if at else (M, K), dtype, a_layout, rng, np.nan)
    A[...] = A0.T if at else A0
    cbuf, C = in_wider((M, N), dtype, c_layout, rng, 0)
    cbuf[...] = sentinel(cbuf.shape, dtype, rng)
    C[...] = C0 if accumulate else np.nan  # without accumulate, C's old contents don't matter
    before, a_before = bits(cbuf), bits(A)

    run(kernel, A, B0, C, accumulate, repeat, b_layout, rng, dtype)

    assert_only_c_written(cbuf, C, before)
    assert np.array_equal(bits(A), a_before), "wrote into A"

    A64, B64, C64 = (x.astype(np.float64) for x in (A0, B0, C0))
    times = repeat if accumulate else 1
    want, bound = A64 @ B64 * times, np.abs(A64) @ np.abs(B64) * times
    if accumulate:
        want, bound = want + C64, bound + np.abs(C64)
    got = C.astype(np.float64)
    ctx = dict(
        kernel=kernel,
        M=M,
        K=K,
        N=N,
        dtype=np.dtype(dtype).name,
        accumulate=accumulate,
        repeat=repeat,
        a_layout=a_layout,
        b_layout=b_layout,
        c_layout=c_layout,
    )
    assert np.isfinite(got).all(), f"non-finite entries in C {ctx}"
    if kind == "ints":  # small integers: every sum is exact
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"exact product differs {ctx} at {bad[:5].tolist()}"
    else:
        bad = np.argwhere(np.abs(got - want) > tol(dtype) * bound)
        assert bad.size == 0, f"product off {ctx} at {bad[:5].tolist()}"


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kernel=st.sampled_from(KERNELS),
    M=st.one_of(st.sampled_from(M_EDGES), st.integers(0, 40)),
    K=st.one_of(st.sampled_from(K_EDGES), st.integers(0, 600)),
    N=st.one_of(st.sampled_from(N_EDGES), st.integers(1, 70)),
    dtype=st.sampled_from(DTYPES),
    accumulate=st.booleans(),
    repeat=st.sampled_from([1, 1, 2]),
    a_layout=st.sampled_from(AC_LAYOUTS),
    b_layout=st.sampled_from(AC_LAYOUTS),
    c_layout=st.sampled_from(AC_LAYOUTS),
    kind=st.sampled_from(["normal", "ints"]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
)
@example(
    kernel="direct",
    M=20,
    K=257,
    N=70,
    dtype=np.float32,
    accumulate=True,
    repeat=1,
    a_layout="rowstrided",
    b_layout="rowstrided",
    c_layout="rowstrided",
    kind="normal",
    scale=1.0,
    seed=1,
)
@example(
    kernel="direct_nt",
    M=13,
    K=17,
    N=33,
    dtype=np.float64,
    accumulate=False,
    repeat=2,
    a_layout="rowstrided",
    b_layout="rowstrided",
    c_layout="rowstrided",
    kind="ints",
    scale=1.0,
    seed=2,
)
def test_direct_products_equal_numpy(
    kernel, M, K, N, dtype, accumulate, repeat, a_layout, b_layout, c_layout, kind, scale, seed
):
    check(
        kernel, M, K, N, dtype, accumulate, repeat, a_layout, b_layout, c_layout, kind, scale, seed
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_grid_exact(kernel, dtype):
    """Every combination of the edge sizes, small-integer data (exact), layouts rotating."""
    i, failures = 0, []
    for M in [0, 1, 2, 4, 5, 6, 7, 11, 20, 32]:
        for K in [0, 1, 7, 8, 9, 256, 257]:
            for N in [1, 2, 3, 15, 16, 17, 33]:
                i += 1
                try:
                    check(
                        kernel,
                        M,
                        K,
                        N,
                        dtype,
                        accumulate=bool(i % 2),
                        repeat=1,
                        a_layout=AC_LAYOUTS[i % 2],
                        b_layout=AC_LAYOUTS[(i // 2) % 2],
                        c_layout=AC_LAYOUTS[(i // 4) % 2],
                        kind="ints",
                        scale=1.0,
                        seed=i,
                    )
                except Exception as e:  # collect all, so one failure doesn't hide the rest
                    failures.append(f"M={M} K={K} N={N}: {type(e).__name__}: {str(e)[:200]}")
    assert not failures, f"{len(failures)} of {i} cases fail:\n" + "\n".join(failures[:15])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [200, 356, 512, 517, 640, 1300])
def test_tn_packed_at_the_layers_widths(M, dtype):
    """gemm_tn_packed at the A^T heights of the layers' weight gradients (M = D + H: 200, 356,
    512, 1300; 517 and 640 besides), where its row blocks split into runs of two heights (512 =
    39 blocks of 12 + 4 of 11 on AVX-512; 517: 33 of 12 + 11 of 11; 640: 46 of 12 + 8 of 11) and
    A^T is packed in chunks of 8 of its rows: K crosses a k-slice and ends off a chunk, exact
    small-integer data, every operand row-strided."""
    check(
        "tn_packed",
        M,
        300,
        37,
        dtype,
        True,
        1,
        "rowstrided",
        "rowstrided",
        "rowstrided",
        "ints",
        1.0,
        M,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "M,K,N",
    [
        (3, 1, 1),
        (12, 255, 15),
        (25, 256, 16),
        (7, 257, 17),
        (40, 700, 70),
        (512, 300, 256),
        (13, 0, 33),
    ],
)
@pytest.mark.parametrize("accumulate", [False, True])
def test_tn_packed_column_sums(M, K, N, dtype, accumulate):
    """gemm_tn_packed's column sums of B (the layers' bias gradients, taken from its packed
    slices): equal bitwise to summing B's rows one after another in double (what colsum does,
    np.cumsum's order), across k-slices of 256 rows, partial panels and K = 0 (zeros); the
    product unchanged beside them; B row-strided inside a NaN-filled buffer (a read past a row
    would show in the sums)."""
    rng = np.random.default_rng(M * 7 + K * 3 + N)
    B0 = rng.standard_normal((K, N)).astype(dtype)
    A0 = rng.integers(-4, 5, (K, M)).astype(dtype)
    _, B = in_wider((K, N), dtype, "rowstrided", rng, np.nan)
    B[...] = B0
    C0 = rng.integers(-4, 5, (M, N)).astype(dtype)
    C = C0.copy()
    sums = np.full(N, np.nan)
    _packed.matmul_tn_packed(A0, B, C, accumulate=accumulate, sums=sums)
    want = np.cumsum(B0.astype(np.float64), axis=0)[-1] if K else np.zeros(N)
    assert np.array_equal(sums, want)
    ref = A0.T.astype(np.float64) @ B0.astype(np.float64) + (C0 if accumulate else 0)
    assert np.allclose(C, ref, rtol=tol(dtype), atol=tol(dtype) * max(K, 1))


def test_tn_packed_sums_argument_is_checked():
    f = np.float32
    A, B, C = np.ones((5, 3), f), np.ones((5, 4), f), np.zeros((3, 4), f)
    tp = _packed.matmul_tn_packed
    for bad, match in (
        (np.zeros(4, f), "float64"),
        (np.zeros(5), "float64 array of 4"),
        (np.zeros((4, 1)), "float64 array of 4"),
        (np.zeros(8)[::2], "contiguous"),
    ):
        with pytest.raises(ValueError, match=match):
            tp(A, B, C, sums=bad)
    both = np.zeros(12)  # float64 C and sums in one buffer
    with pytest.raises(ValueError, match="must not overlap"):
        tp(A.astype(np.float64), B.astype(np.float64), both[:12].reshape(3, 4), sums=both[8:])
    assert not C.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "M,K,N",
    [
        (9, 31, 1030),
        (12, 32, 1041),
        (20, 33, 1031),
        (24, 100, 1040),
        (20, 257, 1100),
        (13, 65, 530),
    ],
)
@pytest.mark.parametrize("accumulate", [False, True])
def test_direct_with_rows_a_page_apart(M, K, N, dtype, accumulate):
    """gemm_direct from 9 rows on takes k-slices of 32 rows when B's rows lie more than 4 KiB
    apart (and of 256 otherwise): B that wide, k crossing the 32-row slices, a partial last
    strip, exact small-integer data, every operand row-strided; and the same rows read through
    a 70-column view of such a wide B (a far row stride with few columns)."""
    check(
        "direct",
        M,
        K,
        N,
        dtype,
        accumulate,
        1,
        "rowstrided",
        "rowstrided",
        "rowstrided",
        "ints",
        1.0,
        M * 1000 + K,
    )
    rng = np.random.default_rng(M + K)
    wide = rng.integers(-4, 5, (K, N)).astype(dtype)
    A = rng.integers(-4, 5, (M, K)).astype(dtype)
    B = wide[:, 5:75]  # rows N * itemsize bytes apart
    C = np.full((M, 70), np.nan, dtype)
    _packed.matmul_direct(A, B, C)
    assert np.array_equal(C, A.astype(np.float64) @ B.astype(np.float64))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 9, 5), (2, 17, 33), (5, 8, 16), (7, 300, 3)])
def test_nan_inf_propagate(kernel, dtype, M, K, N):
    """A NaN in A's row i reaches all of C's row i; an Inf in B's column j reaches column j (as
    +-Inf or NaN), and nothing else turns non-finite."""
    rng = np.random.default_rng(M * 100 + K)
    A = rng.integers(1, 3, (M, K)).astype(dtype)
    B = rng.integers(1, 3, (K, N)).astype(dtype)
    i, j, k = M - 1, N // 2, K // 2
    A[i, k] = np.nan
    B[k, j] = np.inf
    C = np.zeros((M, N), dtype)
    if kernel == "direct":
        _packed.matmul_direct(A, B, C)
    elif kernel in TRANSPOSED_A:
        fn = _packed.matmul_direct_tn if kernel == "direct_tn" else _packed.matmul_tn_packed
        fn(np.ascontiguousarray(A.T), B, C)
    else:
        _packed.matmul_direct_nt(A, np.ascontiguousarray(B.T), C)
    want = np.zeros((M, N), bool)
    want[i, :] = True
    want[:, j] = True
    assert np.array_equal(~np.isfinite(C), want)
    assert np.isnan(C[i]).all()


def _bad_direct_calls():
    f = np.float32
    A, B, W, C, X = (np.ones(s, f) for s in ((3, 5), (5, 4), (4, 5), (3, 4), (3, 9)))
    ro = C.copy()
    ro.flags.writeable = False
    d, nt, tn = _packed.matmul_direct, _packed.matmul_direct_nt, _packed.matmul_direct_tn
    tp = _packed.matmul_tn_packed
    return {
        "direct dtype mix": (lambda: d(A.astype(np.float64), B, C), TypeError, "share one dtype"),
        "direct int": (lambda: d(A, B.astype(np.int32), C), TypeError, "float32 or float64"),
        "direct K mismatch": (lambda: d(A, np.ones((6, 4), f), C), ValueError, "rows to match"),
        "direct C shape": (lambda: d(A, B, np.ones((3, 5), f)), ValueError, "C: expected shape"),
        "direct B columns strided": (
            lambda: d(A, np.ones((5, 8), f)[:, ::2], C),
            ValueError,
            "contiguous rows",
        ),
        "direct C read-only": (lambda: d(A, B, ro), ValueError, "writeable"),
        "direct C overlaps A": (
            lambda: d(X[:, :4], np.ones((4, 5), f), X[:, 1:6]),
            ValueError,
            "overlap",
        ),
        "direct None": (lambda: d(None, B, C), TypeError, "Argument .A. has incorrect type"),
        "nt dtype mix": (lambda: nt(A, W.astype(np.float64), C), TypeError, "share one dtype"),
        "nt K mismatch": (lambda: nt(A, np.ones((4, 6), f), C), ValueError, "columns to match"),
        "nt C shape": (lambda: nt(A, W, np.ones((4, 3), f)), ValueError, "C: expected shape"),
        "nt W columns strided": (
            lambda: nt(A, np.ones((4, 10), f)[:, ::2], C),
            ValueError,
            "contiguous rows",
        ),
        "nt C overlaps W": (
            lambda: nt(np.ones((4, 4), f), W[:, :4], W[:, 1:]),
            ValueError,
            "overlap",
        ),
        "nt 3-D": (lambda: nt(A[None], W, C), ValueError, "2-D"),
        "tn K mismatch": (lambda: tn(A, B, C), ValueError, "rows to match"),
        "tn C shape": (
            lambda: tn(np.ones((5, 3), f), B, np.ones((4, 4), f)),
            ValueError,
            "C: expected shape",
        ),
        "tn dtype mix": (
            lambda: tn(np.ones((5, 3), f), B.astype(np.float64), C),
            TypeError,
            "share one dtype",
        ),
        "tn C overlaps B": (
            lambda: tn(np.ones((3, 3), f), X[:, :4], X[:, 1:5]),
            ValueError,
            "overlap",
        ),
        "tn_packed K mismatch": (lambda: tp(A, B, C), ValueError, "rows to match"),
        "tn_packed C shape": (
            lambda: tp(np.ones((5, 3), f), B, np.ones((4, 4), f)),
            ValueError,
            "C: expected shape",
        ),
        "tn_packed dtype mix": (
            lambda: tp(np.ones((5, 3), f), B.astype(np.float64), C),
            TypeError,
            "share one dtype",
        ),
        "tn_packed C overlaps A": (
            lambda: tp(X[:, :3], np.ones((3, 4), f), X[:3, 1:5]),
            ValueError,
            "overlap",
        ),
        "tn_packed B columns strided": (
            lambda: tp(np.ones((5, 3), f), np.ones((5, 8), f)[:, ::2], C),
            ValueError,
            "contiguous rows",
        ),
    }


BAD = _bad_direct_calls()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_direct_call_raises(case):
    fn, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        fn()


GUARD = """
import ctypes, mmap, sys
import numpy as np
from fastrnn import _packed

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def at_page_end(shape, dtype, fill):
    # an array whose last byte is the last byte before a page no one may touch
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pages = -(-n // PAGE)
    m = mmap.mmap(-1, (pages + 1) * PAGE)
    base = np.frombuffer(m, np.uint8)
    assert libc.mprotect(base.ctypes.data + pages * PAGE, PAGE, 0) == 0
    a = np.frombuffer(m, dtype, count=int(np.prod(shape)), offset=pages * PAGE - n).reshape(shape)
    a[...] = fill
    return a, m


for dtype in (np.float32, np.float64):
    for M, K, N in [(2, 3, 17), (5, 9, 1), (7, 13, 31), (3, 257, 9), (13, 300, 33)]:
        rng = np.random.default_rng(M + K + N)
        A, ma = at_page_end((M, K), dtype, rng.standard_normal((M, K)))
        B, mb = at_page_end((K, N), dtype, rng.standard_normal((K, N)))
        W, mw = at_page_end((N, K), dtype, np.ascontiguousarray(B.T))
        C, mc = at_page_end((M, N), dtype, 0)
        _packed.matmul_direct(A, B, C)
        assert np.allclose(C, A @ B, rtol=1e-4, atol=1e-4), (M, K, N)
        _packed.matmul_direct_nt(A, W, C)
        assert np.allclose(C, A @ B, rtol=1e-4, atol=1e-4), (M, K, N)
        AT, mt = at_page_end((K, M), dtype, np.ascontiguousarray(A.T))
        _packed.matmul_direct_tn(AT, B, C)
        assert np.allclose(C, A @ B, rtol=1e-4, atol=1e-4), (M, K, N)
        _packed.matmul_tn_packed(AT, B, C)
        assert np.allclose(C, A @ B, rtol=1e-4, atol=1e-4), (M, K, N)
print("ok")
"""


def test_no_read_or_write_past_the_last_row(tmp_path):
    """Every operand ends right before a page that may not be touched: a read past the end of a
    row of B (the partial last strip), of W or A (the vector loop along k), or a write past C
    would kill the process with SIGSEGV.  Run in a child process for that reason."""
    import subprocess
    import sys

    env = child_env()  # the fastrnn under test, the instruction set in use
    proc = subprocess.run(
        [sys.executable, "-c", GUARD],
        cwd=tmp_path,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        proc.returncode,
        proc.stderr[-2000:],
    )
