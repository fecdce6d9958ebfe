"""The FMA-peak probe (fastrnn._cpu, src/common/fr_peak.h) that `fastrnn bench` divides by."""

import numpy as np
import pytest

from fastrnn import _cpu


@pytest.mark.parametrize("dtype", ["float32", np.float64])
def test_peak_is_positive_and_stable(dtype):
    first = _cpu.peak_gflops(dtype, 0.05)
    second = _cpu.peak_gflops(dtype, 0.05)
    assert first > 0.5 and second > 0.5  # any core since 2000 does more than 0.5 GF/s
    assert first < 1e4  # and none does 10 TF/s
    # the best slice of each run: the same order of magnitude even on a shared machine
    assert 0.1 < first / second < 10


def test_float64_is_slower_than_float32_per_vector_width():
    # the same vectors hold half as many doubles: the float64 peak is about half (never more
    # than the float32 one by much, whatever the load)
    f32 = max(_cpu.peak_gflops("float32", 0.05) for _ in range(2))
    f64 = max(_cpu.peak_gflops("float64", 0.05) for _ in range(2))
    assert f64 < 1.2 * f32
    assert f64 > 0.2 * f32


def test_wider_kernels_are_not_slower():
    kernels = _cpu.KERNELS[: _cpu.KERNELS.index(_cpu.peak_kernel()) + 1]  # those it runs
    rates = {k: max(_cpu.peak_gflops("float32", 0.05, k) for _ in range(2)) for k in kernels}
    assert _cpu.peak_kernel() in rates
    # 16-byte vectors without FMA against the widest: the widest is faster (under load too)
    assert rates[_cpu.peak_kernel()] >= 0.8 * rates["portable"]


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex64"])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match="dtype"):
        _cpu.peak_gflops(dtype, 0.01)


def test_bad_dtype_type():
    with pytest.raises(TypeError, match="dtype"):
        _cpu.peak_gflops(object(), 0.01)


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), 61])
def test_bad_seconds(seconds):
    with pytest.raises(ValueError, match="seconds"):
        _cpu.peak_gflops("float32", seconds)


@pytest.mark.parametrize("seconds", ["0.1", None, True])
def test_bad_seconds_type(seconds):
    with pytest.raises(TypeError, match="seconds"):
        _cpu.peak_gflops("float32", seconds)


def test_bad_kernel():
    with pytest.raises(ValueError, match="kernel"):
        _cpu.peak_gflops("float32", 0.01, "neon")


def test_unsupported_kernel_is_refused():
    unsupported = [
        k for k in _cpu.KERNELS if _cpu.KERNELS.index(k) > _cpu.KERNELS.index(_cpu.peak_kernel())
    ]
    if not unsupported:
        pytest.skip("this CPU runs every path")
    with pytest.raises(ValueError, match="does not run"):
        _cpu.peak_gflops("float32", 0.01, unsupported[0])
