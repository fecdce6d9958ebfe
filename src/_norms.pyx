"""Whole-buffer reductions: fused in-place global-norm gradient clipping and finiteness checks.

clip_grads makes two streaming passes over the gradient memory, both with the GIL released: one to
measure (sum of squares per array, accumulated in float64) and, only if clipping fires, one to
scale in place.  No temporary the size of a gradient is made; the per-array work in Python is a few
pointer and flag reads, so thousands of small arrays cost little more than one large one.
"""
cimport numpy as cnp
from libc.math cimport sqrt, isfinite
from libc.stdint cimport uintptr_t
from libc.stdlib cimport malloc, free, qsort

cnp.import_array()

cdef extern from "fr_reduce.h" nogil:
    double fr_sumsq_f(const float *x, Py_ssize_t n)
    double fr_sumsq_d(const double *x, Py_ssize_t n)
    double fr_maxabs_d(const double *x, Py_ssize_t n)
    double fr_sumsq_scaled_d(const double *x, Py_ssize_t n, double s)
    void fr_scale_f(float *x, Py_ssize_t n, float r)
    void fr_scale_d(double *x, Py_ssize_t n, double r)
    int fr_all_finite_f(const float *x, Py_ssize_t n)
    int fr_all_finite_d(const double *x, Py_ssize_t n)


cdef struct Grad:
    char *data
    Py_ssize_t size          # elements
    bint f32
    Py_ssize_t index         # position in the caller's list
    double norm              # filled by the measuring pass


cdef struct Span:
    uintptr_t lo, hi         # byte range [lo, hi)
    Py_ssize_t index


cdef int _span_cmp(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const Span *>a).lo, y = (<const Span *>b).lo
    return -1 if x < y else (1 if x > y else 0)


cdef inline bint _finite_buffer(const char *data, Py_ssize_t n, bint f32) noexcept nogil:
    if f32:
        return fr_all_finite_f(<const float *>data, n)
    return fr_all_finite_d(<const double *>data, n)


def all_finite(cnp.ndarray a):
    """True if every element of a float32/float64 array is finite (one pass, no temporaries)."""
    cdef int tn = cnp.PyArray_TYPE(a)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef const char *data = <const char *>cnp.PyArray_DATA(a)
    cdef bint ok
    if tn not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) or not (
            cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)):
        import numpy as np
        return bool(np.isfinite(a).all())
    with nogil:
        ok = _finite_buffer(data, n, tn == cnp.NPY_FLOAT32)
    return ok


cdef Py_ssize_t _measure(Grad *gs, Py_ssize_t n, double *norm) noexcept nogil:
    """Pass 1: the global L2 norm into *norm.  Returns the list index of the first array holding
    NaN/Inf (the norm is then NaN or Inf), or -1."""
    cdef Py_ssize_t k, bad = -1
    cdef double s, m, total = 0
    cdef bint overflow = False
    for k in range(n):
        if gs[k].f32:
            s = fr_sumsq_f(<const float *>gs[k].data, gs[k].size)
        else:
            s = fr_sumsq_d(<const double *>gs[k].data, gs[k].size)
        if isfinite(s):
            gs[k].norm = sqrt(s)
        elif not _finite_buffer(gs[k].data, gs[k].size, gs[k].f32):
            gs[k].norm = s
            if bad < 0:
                bad = gs[k].index
        else:
            # finite float64 values whose squares overflow: measure relative to the largest
            m = fr_maxabs_d(<const double *>gs[k].data, gs[k].size)
            gs[k].norm = m * sqrt(fr_sumsq_scaled_d(<const double *>gs[k].data, gs[k].size, m))
            overflow = True
        total += s
    if bad >= 0 or not (overflow or total > 1e300):
        norm[0] = sqrt(total)
        return bad
    # the global sum of squares overflows: combine the per-array norms relative to the largest
    m = 0
    for k in range(n):
        m = gs[k].norm if gs[k].norm > m else m
    total = 0
    for k in range(n):
        total += (gs[k].norm / m) * (gs[k].norm / m)
    norm[0] = m * sqrt(total)
    return -1


def clip_grads(grads, max_norm, *, bint error_if_nonfinite=True):
    """Clip gradients in place by their global L2 norm; return that norm (before clipping).

    norm = sqrt(sum of every element squared over every array), accumulated in float64.
    If max_norm / (norm + 1e-6) < 1, every array is multiplied in place by that rate (the same
    objects, in their own dtype).  Arrays may mix float32 and float64.

    A NaN/Inf gradient raises FloatingPointError naming the first offending array and leaves all
    gradients untouched; with error_if_nonfinite=False the non-finite norm is returned instead,
    again without touching the gradients.  Each array must be contiguous, writeable and appear
    once: arrays that share memory would be scaled twice, so they raise ValueError.
    """
    cdef double limit
    try:
        limit = float(max_norm)
    except (TypeError, ValueError):
        raise TypeError(f"max_norm must be a positive number, got {max_norm!r}") from None
    if not (limit > 0 and isfinite(limit)):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    cdef list seq = list(grads)
    cdef Py_ssize_t n = len(seq), k, m = 0, bad
    cdef Grad *gs = <Grad *>malloc((n + 1) * sizeof(Grad))
    cdef Span *spans = <Span *>malloc((n + 1) * sizeof(Span))
    cdef cnp.ndarray a
    cdef int tn
    cdef double norm, rate
    if gs == NULL or spans == NULL:
        free(gs); free(spans)
        raise MemoryError()
    try:
        for k in range(n):
            g = seq[k]
            if not isinstance(g, cnp.ndarray):
                raise TypeError(f"grads[{k}] must be a numpy.ndarray, got {type(g).__name__}")
            a = <cnp.ndarray>g
            tn = cnp.PyArray_TYPE(a)
            if tn != cnp.NPY_FLOAT32 and tn != cnp.NPY_FLOAT64:
                raise TypeError(f"grads[{k}] has dtype {g.dtype}; expected float32 or float64")
            if not cnp.PyArray_ISWRITEABLE(a):
                raise ValueError(f"grads[{k}] is read-only; clip_grads scales in place")
            if not (cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)):
                raise ValueError(f"grads[{k}] is not contiguous (strides {g.strides}); "
                                 "clip_grads scales in place and needs contiguous arrays")
            if cnp.PyArray_SIZE(a) == 0:
                continue
            gs[m].data = <char *>cnp.PyArray_DATA(a)
            gs[m].size = cnp.PyArray_SIZE(a)
            gs[m].f32 = tn == cnp.NPY_FLOAT32
            gs[m].index = k
            spans[m].lo = <uintptr_t>gs[m].data
            spans[m].hi = spans[m].lo + <uintptr_t>cnp.PyArray_NBYTES(a)
            spans[m].index = k
            m += 1
        # every array must own its bytes: sort the byte ranges and look for an overlap
        qsort(spans, m, sizeof(Span), _span_cmp)
        for k in range(1, m):
            if spans[k].lo < spans[k - 1].hi:
                i, j = sorted((spans[k - 1].index, spans[k].index))
                raise ValueError(f"grads[{i}] and grads[{j}] share memory (the same array "
                                 "twice, or overlapping views); pass each gradient once, "
                                 "otherwise it would be scaled twice")
        with nogil:
            bad = _measure(gs, m, &norm)
        if bad >= 0:
            if error_if_nonfinite:
                raise FloatingPointError(
                    f"the gradient norm is not finite: grads[{bad}] contains NaN or Inf; "
                    "no gradient was changed")
            return norm
        rate = limit / (norm + 1e-6)
        if rate < 1:
            with nogil:
                for k in range(m):
                    if gs[k].f32:
                        fr_scale_f(<float *>gs[k].data, gs[k].size, <float>rate)
                    else:
                        fr_scale_d(<double *>gs[k].data, gs[k].size, rate)
        return norm
    finally:
        free(gs)
        free(spans)
