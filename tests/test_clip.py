"""fastrnn.clip_grads against a direct NumPy float64 computation.

norm = sqrt(sum of squares of every element), in float64; if max_norm / (norm + 1e-6) < 1 every
array is multiplied in place by that rate, in its own dtype.  (Error cases: test_errors.py.)
"""

import math

import numpy as np
import pytest

from fastrnn import clip_grads, reference as ref


def np_norm(grads):
    """The global L2 norm in float64, overflow-safe (scaled by the largest magnitude)."""
    flat = [np.abs(np.asarray(g, np.float64)).ravel() for g in grads]
    m = max((float(f.max()) for f in flat if f.size), default=0.0)
    if m == 0:
        return 0.0
    return m * math.sqrt(math.fsum(float(np.sum((f / m) ** 2)) for f in flat))


def expected_scaled(g0, rate):
    """g0 * rate rounded to g0's dtype (the multiplication done in that dtype)."""
    return (g0.astype(np.float64) * np.asarray(rate, g0.dtype).astype(np.float64)).astype(g0.dtype)


def assert_scaled(grads, originals, rate):
    for g, g0 in zip(grads, originals):
        want = expected_scaled(g0, rate)
        assert g.dtype == g0.dtype and g.shape == g0.shape
        rtol = 1e-6 if g.dtype == np.float32 else 1e-13
        np.testing.assert_allclose(g, want, rtol=rtol, atol=0)


def make(rng, shapes, dtypes, scale=3.0):
    return [(scale * rng.standard_normal(s)).astype(t) for s, t in zip(shapes, dtypes)]


SHAPES = [(7, 12), (3, 12), (12,), (1,), (5, 3, 2), (17,)]


@pytest.mark.parametrize("dtype", ["float64", "float32", "mixed"])
def test_clip_matches_numpy(dtype, rng):
    dtypes = ([np.float64, np.float32] * 3) if dtype == "mixed" else [dtype] * len(SHAPES)
    grads = make(rng, SHAPES, dtypes)
    originals = [g.copy() for g in grads]
    objs = list(grads)
    norm = np_norm(originals)
    max_norm = 2.5
    assert norm > max_norm
    got = clip_grads(grads, max_norm)
    assert isinstance(got, float)
    assert got == pytest.approx(norm, rel=1e-12)
    assert all(g is o for g, o in zip(grads, objs))
    rate = max_norm / (norm + 1e-6)
    assert_scaled(grads, originals, rate)
    assert np_norm(grads) == pytest.approx(rate * norm, rel=1e-6 if dtype != "float64" else 1e-12)


def test_clip_matches_reference_clip_grads(rng):
    grads = make(rng, SHAPES, [np.float64] * len(SHAPES))
    copies = [g.copy() for g in grads]
    for max_norm in (0.1, 1.0, 100.0):
        a = [g.copy() for g in grads]
        b = [g.copy() for g in copies]
        assert clip_grads(a, max_norm) == pytest.approx(ref.clip_grads(b, max_norm), rel=1e-12)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_clip_leaves_arrays_bit_identical(dtype, rng):
    grads = make(rng, SHAPES, [dtype] * len(SHAPES))
    originals = [g.copy() for g in grads]
    objs = list(grads)
    ptrs = [g.__array_interface__["data"][0] for g in grads]
    norm = np_norm(originals)
    got = clip_grads(grads, 2 * norm)
    assert got == pytest.approx(norm, rel=1e-12)
    assert all(g is o for g, o in zip(grads, objs))
    assert [g.__array_interface__["data"][0] for g in grads] == ptrs
    for g, g0 in zip(grads, originals):
        assert g.tobytes() == g0.tobytes()


def test_threshold_includes_the_epsilon(rng):
    # rate = max_norm / (norm + 1e-6): max_norm == norm still clips, by a factor just below 1
    grads = make(rng, [(4, 4)], [np.float64])
    g0 = grads[0].copy()
    norm = np_norm(grads)
    clip_grads(grads, norm)
    rate = norm / (norm + 1e-6)
    assert rate < 1
    np.testing.assert_allclose(grads[0], g0 * rate, rtol=1e-13)
    assert not np.array_equal(grads[0], g0)
    # comfortably above the norm: untouched
    grads = [g0.copy()]
    clip_grads(grads, norm * (1 + 1e-3))
    assert grads[0].tobytes() == g0.tobytes()


def test_fortran_contiguous_arrays(rng):
    grads = [
        np.asfortranarray(3 * rng.standard_normal((6, 5))),
        np.asfortranarray(3 * rng.standard_normal((4, 3, 2))).astype(np.float32, order="F"),
        3 * rng.standard_normal((5, 6)).T,
    ]  # a transposed view: F-contiguous, writeable
    assert all(g.flags.f_contiguous and not g.flags.c_contiguous for g in grads)
    originals = [g.copy() for g in grads]
    norm = np_norm(originals)
    got = clip_grads(grads, 1.0)
    assert got == pytest.approx(norm, rel=1e-12)
    assert_scaled(grads, originals, 1.0 / (norm + 1e-6))
    assert all(g.flags.f_contiguous for g in grads)


def test_views_into_a_bigger_buffer(rng):
    # contiguous views (rows, a slice) of one buffer are clipped in place, the rest untouched
    buf = 3 * rng.standard_normal((6, 8))
    orig = buf.copy()
    grads = [buf[1], buf[3:5]]
    norm = np_norm([orig[1], orig[3:5]])
    got = clip_grads(grads, 1.0)
    assert got == pytest.approx(norm, rel=1e-12)
    rate = 1.0 / (norm + 1e-6)
    np.testing.assert_allclose(buf[1], orig[1] * rate, rtol=1e-13)
    np.testing.assert_allclose(buf[3:5], orig[3:5] * rate, rtol=1e-13)
    for r in (0, 2, 5):
        assert buf[r].tobytes() == orig[r].tobytes()


def test_empty_list_and_empty_arrays(rng):
    assert clip_grads([], 1.0) == 0.0
    assert clip_grads([np.zeros((0, 3)), np.zeros(0, np.float32)], 1.0) == 0.0
    z = [np.zeros((3, 2)), np.zeros(4, np.float32)]
    assert clip_grads(z, 1.0) == 0.0
    assert all(not g.any() for g in z)
    grads = [
        np.zeros((0, 4)),
        3 * rng.standard_normal(9),
        np.zeros((2, 0), np.float32),
        (3 * rng.standard_normal((2, 3))).astype(np.float32),
    ]
    originals = [g.copy() for g in grads]
    norm = np_norm(originals)
    assert clip_grads(grads, 0.5) == pytest.approx(norm, rel=1e-12)
    assert_scaled(grads, originals, 0.5 / (norm + 1e-6))


def test_two_thousand_small_arrays(rng):
    shapes = [(int(k % 7) + 1,) if k % 3 else (2, int(k % 5) + 1) for k in range(2000)]
    dtypes = [np.float32 if k % 2 else np.float64 for k in range(2000)]
    grads = make(rng, shapes, dtypes, scale=1.0)
    originals = [g.copy() for g in grads]
    norm = np_norm(originals)
    got = clip_grads(grads, 1.0)
    assert got == pytest.approx(norm, rel=1e-12)
    assert_scaled(grads, originals, 1.0 / (norm + 1e-6))


@pytest.mark.parametrize("n", list(range(0, 20)) + [63, 64, 65, 1000, 100003])
def test_lengths_around_the_vector_lanes(n, rng):
    for dtype in (np.float32, np.float64):
        g = (2 * rng.standard_normal(n) + 1).astype(dtype)
        g0 = g.copy()
        norm = np_norm([g0])
        assert clip_grads([g], 1e9) == pytest.approx(norm, rel=1e-12, abs=0)
        if n:
            clip_grads([g], 0.5)
            assert_scaled([g], [g0], 0.5 / (norm + 1e-6))


def test_huge_float64_values_whose_squares_overflow(rng):
    g = 1e200 * rng.standard_normal((4, 5))
    g0 = g.copy()
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum(g0**2))
    norm = np_norm([g0])
    got = clip_grads([g], 1.0)
    assert math.isfinite(got)
    assert got == pytest.approx(norm, rel=1e-12)
    assert_scaled([g], [g0], 1.0 / (norm + 1e-6))
    assert np_norm([g]) == pytest.approx(norm / (norm + 1e-6), rel=1e-12)


def test_huge_values_mixed_with_ordinary_arrays(rng):
    grads = [
        rng.standard_normal(5).astype(np.float32),
        1e200 * rng.standard_normal(7),
        rng.standard_normal((2, 3)),
    ]
    originals = [g.copy() for g in grads]
    norm = np_norm(originals)
    got = clip_grads(grads, 3.0)
    assert got == pytest.approx(norm, rel=1e-12)
    assert_scaled(grads, originals, 3.0 / (norm + 1e-6))


def test_total_overflows_though_each_array_does_not(rng):
    # each array's sum of squares is finite (1e308), the total (2e308) is not
    grads = [np.full(4, 5e153), np.full(4, -5e153), np.ones(3)]
    for g in grads[:2]:
        assert math.isfinite(float(np.sum(g**2)))
    originals = [g.copy() for g in grads]
    norm = np_norm(originals)
    got = clip_grads(grads, 1.0)
    assert got == pytest.approx(norm, rel=1e-12)
    assert_scaled(grads, originals, 1.0 / (norm + 1e-6))


def test_large_but_finite_total(rng):
    # sum of squares just below the overflow threshold (near 1e300 .. 1e308)
    grads = [np.full(10, 3e151), np.full(3, 1e-3)]
    originals = [g.copy() for g in grads]
    norm = np_norm(originals)
    assert clip_grads(grads, 1.0) == pytest.approx(norm, rel=1e-12)
    assert_scaled(grads, originals, 1.0 / (norm + 1e-6))


def test_tiny_values_do_not_clip(rng):
    g = 1e-170 * rng.standard_normal(10)
    g0 = g.copy()
    got = clip_grads([g], 1.0)
    assert got >= 0 and got < 1e-150
    assert g.tobytes() == g0.tobytes()


def test_generator_and_tuple_input(rng):
    grads = make(rng, SHAPES, [np.float64, np.float32] * 3)
    originals = [g.copy() for g in grads]
    norm = np_norm(originals)
    got = clip_grads((g for g in grads), 1.0)
    assert got == pytest.approx(norm, rel=1e-12)
    assert_scaled(grads, originals, 1.0 / (norm + 1e-6))
    again = [g.copy() for g in originals]
    assert clip_grads(tuple(again), 1.0) == pytest.approx(norm, rel=1e-12)
    assert_scaled(again, originals, 1.0 / (norm + 1e-6))


@pytest.mark.parametrize("max_norm", [1, np.float32(1.0), np.float64(1.0), True])
def test_max_norm_numeric_types(max_norm, rng):
    grads = make(rng, [(3, 3)], [np.float64])
    g0 = grads[0].copy()
    norm = np_norm([g0])
    assert clip_grads(grads, max_norm) == pytest.approx(norm, rel=1e-12)
    np.testing.assert_allclose(grads[0], g0 / (norm + 1e-6), rtol=1e-13)


def test_zero_dimensional_arrays():
    grads = [np.array(3.0), np.array(4.0, np.float32)]
    assert clip_grads(grads, 1.0) == pytest.approx(5.0, rel=1e-15)
    np.testing.assert_allclose(float(grads[0]), 3.0 / (5.0 + 1e-6), rtol=1e-15)
    np.testing.assert_allclose(float(grads[1]), 4.0 / (5.0 + 1e-6), rtol=1e-7)


def test_layer_grads_clip_in_place(rng):
    from conftest import make_params

    import fastrnn

    params = make_params("lstm", rng, 3, 4, np.float32)
    layer = fastrnn.TimeLSTM(*params)
    layer.forward(rng.standard_normal((2, 5, 3)))
    layer.backward(10 * rng.standard_normal((2, 5, 4)))
    objs = list(layer.grads)
    originals = [g.copy() for g in layer.grads]
    norm = np_norm(originals)
    assert norm > 0.1
    assert clip_grads(layer.grads, 0.1) == pytest.approx(norm, rel=1e-12)
    assert all(g is o for g, o in zip(layer.grads, objs))
    assert_scaled(layer.grads, originals, 0.1 / (norm + 1e-6))


# ---- large sets: the measuring and scaling passes are split across threads ----


def _large_set(rng):
    # > 2**20 elements in all, mixed dtypes and sizes, so the thread ranges cut through arrays
    shapes = [(700, 900), (3,), (500, 700), (1000,), (333, 777)]
    dtypes = [np.float32, np.float64, np.float32, np.float64, np.float32]
    return [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]


def test_large_set_norm_and_scale_match_numpy():
    rng = np.random.default_rng(7)
    grads = _large_set(rng)
    assert sum(g.size for g in grads) > 2**20
    before = [g.copy() for g in grads]
    expected = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in before))
    norm = clip_grads(grads, 10.0)
    assert norm == pytest.approx(expected, rel=1e-12)
    rate = 10.0 / (expected + 1e-6)
    for g, b in zip(grads, before):
        np.testing.assert_allclose(
            g, b * g.dtype.type(rate), rtol=1e-6 if g.dtype == np.float32 else 1e-12
        )


def test_large_set_nonfinite_far_into_the_buffers_is_named_and_nothing_changes():
    rng = np.random.default_rng(8)
    grads = _large_set(rng)
    grads[4][-1, -1] = np.inf  # in the last thread's range
    grads[2][250, 3] = np.nan
    before = [g.copy() for g in grads]
    with pytest.raises(FloatingPointError, match=r"grads\[2\]"):
        clip_grads(grads, 1.0)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(g, b)


@pytest.mark.parametrize("threads", [1, 2, 3, None])
def test_large_set_any_thread_count_gives_the_same_clip(threads):
    rng = np.random.default_rng(9)
    grads = _large_set(rng)
    before = [g.copy() for g in grads]
    expected = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in before))
    norm = clip_grads(grads, 10.0, threads=threads)
    assert norm == pytest.approx(expected, rel=1e-12)
    rate = 10.0 / (expected + 1e-6)
    for g, b in zip(grads, before):
        np.testing.assert_allclose(
            g, b * g.dtype.type(rate), rtol=1e-6 if g.dtype == np.float32 else 1e-12
        )


@pytest.mark.parametrize("threads", [0, -1, 2.0, "2", True])
def test_bad_thread_count_is_refused_and_nothing_changes(threads):
    grads = [np.full(10, 3.0)]
    with pytest.raises(ValueError, match="threads"):
        clip_grads(grads, 1.0, threads=threads)
    np.testing.assert_array_equal(grads[0], np.full(10, 3.0))
