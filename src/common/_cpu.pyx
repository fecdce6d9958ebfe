"""One core's measured peak floating-point rate (src/common/fr_peak.h).

``fastrnn bench`` reports each product's GF/s as a percent of this peak: the physical limit of
the core, which a BLAS-based floor is not where BLAS runs narrower kernels than the CPU has.
"""
import math

import numpy as np

cdef extern from "fr_peak.h" nogil:
    int FR_PEAK_PORTABLE, FR_PEAK_AVX2, FR_PEAK_AVX512
    int fr_peak_supported(int isa)
    int fr_peak_best()
    double fr_peak_run(int isa, int is_double, long rounds, int seed, double *sink)
    double fr_peak_now()

KERNELS = ("portable", "avx2", "avx512")


def peak_kernel():
    """Name of the widest path this CPU runs ('avx512', 'avx2' (with FMA) or 'portable'): the
    one :func:`peak_gflops` uses by default."""
    return KERNELS[fr_peak_best()]


def _check_args(dtype, seconds, kernel):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer,
                                                             np.floating)):
        raise TypeError(f"seconds: expected a number of seconds, got {type(seconds).__name__}")
    if not (math.isfinite(seconds) and 0 < seconds <= 60):
        raise ValueError(f"seconds: expected a duration in (0, 60], got {seconds!r}")
    if kernel is None:
        isa = fr_peak_best()
    elif kernel in KERNELS:
        isa = KERNELS.index(kernel)
        if not fr_peak_supported(isa):
            raise ValueError(f"kernel: this CPU does not run {kernel!r} (it runs "
                             f"{[k for i, k in enumerate(KERNELS) if fr_peak_supported(i)]})")
    else:
        raise ValueError(f"kernel: expected one of {KERNELS} or None, got {kernel!r}")
    return dt == np.float64, float(seconds), isa


def peak_gflops(dtype="float32", seconds=0.2, kernel=None):
    """Peak multiply-add rate of the core this thread runs on, in GF/s (1e9 floating-point
    operations per second; a fused multiply-add counts as two).

    Parameters
    ----------
    dtype : str or numpy.dtype
        ``float32`` or ``float64``.
    seconds : float
        How long to measure, in (0, 60].  The loop runs in slices of about 2 ms and the best
        slice's rate is returned, so a busy machine lowers the result less than it would a mean.
    kernel : str, optional
        ``'avx512'``, ``'avx2'`` or ``'portable'``: the vector width to measure (default: the
        widest the CPU runs, :func:`peak_kernel`).

    Returns
    -------
    float
        GF/s on one core, with the GIL released while measuring.
    """
    cdef int is_double, isa
    cdef double budget
    is_double, budget, isa = _check_args(dtype, seconds, kernel)
    cdef long rounds = 1000, max_rounds = 1L << 40
    cdef double sink = 0.0, best = 0.0, rate, t0, start
    cdef double slice_s = min(2e-3, budget / 4)
    with nogil:
        start = fr_peak_now()
        # grow the slice to about 2 ms (at most budget / 4), then keep the best slice's rate
        while True:
            t0 = fr_peak_now()
            rate = fr_peak_run(isa, is_double, rounds, 1, &sink)
            if rate > best:
                best = rate
            if fr_peak_now() - start >= budget:
                break
            if fr_peak_now() - t0 < slice_s and rounds < max_rounds:
                rounds *= 2
    if not best > 0:
        raise RuntimeError("peak_gflops: the clock did not advance while measuring")
    return best / 1e9
