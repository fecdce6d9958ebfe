"""Whole-buffer passes: fused in-place global-norm gradient clipping, finiteness checks, and the
SGD and Adam steps.

clip_grads makes two streaming passes over the gradient memory, both with the GIL released: one to
measure (sum of squares per array, accumulated in float64) and, only if clipping fires, one to
scale in place.  Large sets (over a million elements) are split across the usable cores.  No
temporary the size of a gradient is made; the per-array work in Python is a few pointer and flag
reads, so thousands of small arrays cost little more than one large one.
"""
import os

cimport numpy as cnp
from libc.math cimport sqrt, isfinite
from libc.stdint cimport uintptr_t
from libc.stdlib cimport malloc, free, qsort

from _parallel cimport fr_use_pool

cnp.import_array()
fr_use_pool()                   # large passes run on the process's pool (fr_pool.h)

cdef extern from "fr_reduce.h" nogil:
    ctypedef struct fr_buf:
        char *data
        Py_ssize_t size
        int f32
    double fr_maxabs_d(const double *x, Py_ssize_t n)
    double fr_sumsq_scaled_d(const double *x, Py_ssize_t n, double s)
    int fr_all_finite_f(const float *x, Py_ssize_t n)
    int fr_all_finite_d(const double *x, Py_ssize_t n)
    void fr_pass_many(const fr_buf *bufs, Py_ssize_t n, int threads, double *sums, double rate)
    void fr_step_many(const fr_buf *bufs, const fr_buf *grads, Py_ssize_t n, int threads,
                      double lr, int lerp)
    void fr_adam_many(const fr_buf *p, const fr_buf *g, const fr_buf *m, const fr_buf *v,
                      Py_ssize_t n, int threads, double c1, double c2, double lr_t, double eps)

# Below this many elements in all, one thread: starting another costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 1 << 20
try:
    _CPUS = len(os.sched_getaffinity(0))
except AttributeError:
    _CPUS = os.cpu_count() or 1


cdef int _max_threads(object threads) except -1:
    """A `threads` argument: None -> every usable CPU; a positive int (capped at 64); else
    ValueError."""
    if threads is None:
        return _CPUS
    if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
        return min(threads, 64)
    raise ValueError(f"threads must be None or a positive integer, got {threads!r}")


cdef struct Span:
    uintptr_t lo, hi         # byte range [lo, hi)
    Py_ssize_t index


cdef int _span_cmp(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const Span *>a).lo, y = (<const Span *>b).lo
    return -1 if x < y else (1 if x > y else 0)


cdef inline void _span_of(Span *span, const fr_buf *b, Py_ssize_t index) noexcept nogil:
    span.lo = <uintptr_t>b.data
    span.hi = span.lo + <uintptr_t>(b.size * (4 if b.f32 else 8))
    span.index = index


cdef int _step_threads(Span *spans, Py_ssize_t m, Py_ssize_t total,
                       int max_threads) noexcept nogil:
    """Threads for an optimizer step over m parameter spans of `total` elements: one below
    PARALLEL_MIN_ELEMENTS, and one where two spans overlap (a parameter listed twice, or
    overlapping views, is stepped twice, in list order); else max_threads.  Sorts spans."""
    cdef Py_ssize_t k
    if total < PARALLEL_MIN_ELEMENTS:
        return 1
    qsort(spans, m, sizeof(Span), _span_cmp)
    for k in range(1, m):
        if spans[k].lo < spans[k - 1].hi:
            return 1
    return max_threads


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


cdef Py_ssize_t _measure(const fr_buf *bufs, const Py_ssize_t *index, Py_ssize_t n,
                         int threads, double *norms, double *norm) noexcept nogil:
    """Pass 1: the global L2 norm into *norm (norms: per-array workspace).  Returns the list
    index of the first array holding NaN/Inf (the norm is then NaN or Inf), or -1."""
    cdef Py_ssize_t k, bad = -1
    cdef double s, m, total = 0
    cdef bint overflow = False
    fr_pass_many(bufs, n, threads, norms, 0)          # norms[k] = sum of squares of array k
    for k in range(n):
        s = norms[k]
        total += s
        if isfinite(s):
            norms[k] = sqrt(s)
        elif not _finite_buffer(bufs[k].data, bufs[k].size, bufs[k].f32):
            if bad < 0:
                bad = index[k]
        else:
            # finite float64 values whose squares overflow: measure relative to the largest
            m = fr_maxabs_d(<const double *>bufs[k].data, bufs[k].size)
            norms[k] = m * sqrt(fr_sumsq_scaled_d(<const double *>bufs[k].data, bufs[k].size, m))
            overflow = True
    if bad >= 0 or not (overflow or total > 1e300):
        norm[0] = sqrt(total)
        return bad
    # the global sum of squares overflows: combine the per-array norms relative to the largest
    m = 0
    for k in range(n):
        m = norms[k] if norms[k] > m else m
    total = 0
    for k in range(n):
        total += (norms[k] / m) * (norms[k] / m)
    norm[0] = m * sqrt(total)
    return -1


def clip_grads(grads, max_norm, *, bint error_if_nonfinite=True, threads=None):
    """Clip gradients in place by their global L2 norm; return that norm (before clipping).

    norm = sqrt(sum of every element squared over every array), accumulated in float64.
    If max_norm / (norm + 1e-6) < 1, every array is multiplied in place by that rate (the same
    objects, in their own dtype).  Arrays may mix float32 and float64.

    A NaN/Inf gradient raises FloatingPointError naming the first offending array and leaves all
    gradients untouched; with error_if_nonfinite=False the non-finite norm is returned instead,
    again without touching the gradients.  Each array must be contiguous, writeable and appear
    once: arrays that share memory would be scaled twice, so they raise ValueError.

    threads: how many threads (at most 8) may share the two passes when the set holds over a
    million elements; None (default) uses every CPU this process may run on, 1 keeps it on the
    caller's thread.  The norm can differ in the last bits between thread counts (summation order).
    """
    cdef double limit
    cdef int max_threads
    max_threads = _max_threads(threads)
    try:
        limit = float(max_norm)
    except (TypeError, ValueError):
        raise TypeError(f"max_norm must be a positive number, got {max_norm!r}") from None
    if not (limit > 0 and isfinite(limit)):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    cdef list seq = list(grads)
    cdef Py_ssize_t n = len(seq), k, m = 0, bad, total = 0
    cdef fr_buf *bufs = <fr_buf *>malloc((n + 1) * sizeof(fr_buf))
    cdef Py_ssize_t *index = <Py_ssize_t *>malloc((n + 1) * sizeof(Py_ssize_t))
    cdef double *norms = <double *>malloc((n + 1) * sizeof(double))
    cdef Span *spans = <Span *>malloc((n + 1) * sizeof(Span))
    cdef cnp.ndarray a
    cdef int tn, nthreads = 1
    cdef double norm, rate
    if bufs == NULL or index == NULL or norms == NULL or spans == NULL:
        free(bufs); free(index); free(norms); free(spans)
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
            bufs[m].data = <char *>cnp.PyArray_DATA(a)
            bufs[m].size = cnp.PyArray_SIZE(a)
            bufs[m].f32 = tn == cnp.NPY_FLOAT32
            index[m] = k
            spans[m].lo = <uintptr_t>bufs[m].data
            spans[m].hi = spans[m].lo + <uintptr_t>cnp.PyArray_NBYTES(a)
            spans[m].index = k
            total += bufs[m].size
            m += 1
        # every array must own its bytes: sort the byte ranges and look for an overlap
        qsort(spans, m, sizeof(Span), _span_cmp)
        for k in range(1, m):
            if spans[k].lo < spans[k - 1].hi:
                i, j = sorted((spans[k - 1].index, spans[k].index))
                raise ValueError(f"grads[{i}] and grads[{j}] share memory (the same array "
                                 "twice, or overlapping views); pass each gradient once, "
                                 "otherwise it would be scaled twice")
        if total >= PARALLEL_MIN_ELEMENTS:
            nthreads = max_threads
        with nogil:
            bad = _measure(bufs, index, m, nthreads, norms, &norm)
        if bad >= 0:
            if error_if_nonfinite:
                raise FloatingPointError(
                    f"the gradient norm is not finite: grads[{bad}] contains NaN or Inf; "
                    "no gradient was changed")
            return norm
        rate = limit / (norm + 1e-6)
        if rate < 1:
            with nogil:
                fr_pass_many(bufs, m, nthreads, NULL, rate)
        return norm
    finally:
        free(bufs); free(index); free(norms); free(spans)


cdef inline bint _step_pair(object p, object g, fr_buf *pb, fr_buf *gb):
    """Fill pb, gb for p -= lr * g if the pair qualifies for the C pass: ndarrays of one float
    dtype and size, both C- or both F-contiguous, p writeable, not sharing bytes with g."""
    if not (isinstance(p, cnp.ndarray) and isinstance(g, cnp.ndarray)):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>p, b = <cnp.ndarray>g
    cdef int tn = cnp.PyArray_TYPE(a)
    if (tn != cnp.PyArray_TYPE(b) or (tn != cnp.NPY_FLOAT32 and tn != cnp.NPY_FLOAT64)
            or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(b) or not cnp.PyArray_ISWRITEABLE(a)
            or not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISALIGNED(b)
            or not cnp.PyArray_ISNOTSWAPPED(a) or not cnp.PyArray_ISNOTSWAPPED(b)):
        return False
    if not ((cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b))
            or (cnp.PyArray_IS_F_CONTIGUOUS(a) and cnp.PyArray_IS_F_CONTIGUOUS(b))):
        return False
    cdef uintptr_t plo = <uintptr_t>cnp.PyArray_DATA(a), glo = <uintptr_t>cnp.PyArray_DATA(b)
    cdef uintptr_t nbytes = <uintptr_t>cnp.PyArray_NBYTES(a)
    if plo < glo + nbytes and glo < plo + nbytes:
        return False
    pb.data, pb.size, pb.f32 = <char *>plo, cnp.PyArray_SIZE(a), tn == cnp.NPY_FLOAT32
    gb.data, gb.size, gb.f32 = <char *>glo, pb.size, pb.f32
    return True


def sgd_step(params, grads, lr, threads=None):
    """params[k] -= lr * grads[k] for every pair, in place, in one pass over the memory (no
    temporary the size of a gradient), the same bits as that NumPy line: the product rounded in
    the arrays' dtype, then the difference.  Large sets (over a million elements) are split over
    up to `threads` threads (None: every usable CPU) when no two params share memory.

    Returns the indices of the pairs it left alone (not ndarrays of one float dtype, size and
    memory order, p read-only, or p and g sharing memory): the caller updates those itself."""
    return _pairs_pass(params, grads, lr, threads, False, "params and grads")


def average_step(means, params, weight, threads=None):
    """means[k] += weight * (params[k] - means[k]) for every pair, in place, in one pass: a
    running mean of the params (weight 1 / count), the same bits as that NumPy line (the
    difference, the product and the sum each rounded in the arrays' dtype).  Threads, and the
    indices of the pairs left to the caller, as :func:`sgd_step`'s."""
    return _pairs_pass(means, params, weight, threads, True, "means and params")


cdef list _pairs_pass(object targets, object sources, object rate, object threads, bint lerp,
                      str names):
    """targets[k] -= rate * sources[k] (lerp: targets[k] += rate * (sources[k] - targets[k]))
    in one threaded pass; the indices of the pairs it left alone."""
    cdef int max_threads
    max_threads = _max_threads(threads)
    cdef double r = float(rate)
    cdef list ps = list(targets), gs = list(sources)
    if len(ps) != len(gs):
        raise ValueError(f"{names} must pair up, got {len(ps)} and {len(gs)} arrays")
    cdef Py_ssize_t n = len(ps), k, m = 0, total = 0
    cdef fr_buf *pb = <fr_buf *>malloc((n + 1) * sizeof(fr_buf))
    cdef fr_buf *gb = <fr_buf *>malloc((n + 1) * sizeof(fr_buf))
    cdef Span *spans = <Span *>malloc((n + 1) * sizeof(Span))
    cdef int nthreads
    cdef list skipped = []
    if pb == NULL or gb == NULL or spans == NULL:
        free(pb); free(gb); free(spans)
        raise MemoryError()
    try:
        for k in range(n):
            if not _step_pair(ps[k], gs[k], &pb[m], &gb[m]):
                skipped.append(k)
                continue
            if pb[m].size == 0:
                continue
            _span_of(&spans[m], &pb[m], k)
            total += pb[m].size
            m += 1
        nthreads = _step_threads(spans, m, total, max_threads)
        with nogil:
            fr_step_many(pb, gb, m, nthreads, r, lerp)
        return skipped
    finally:
        free(pb); free(gb); free(spans)


cdef bint _same_layout(object a, object b):
    """b is an ndarray of a's dtype, size and memory order (both C- or both F-contiguous)."""
    if not isinstance(b, cnp.ndarray):
        return False
    cdef cnp.ndarray x = <cnp.ndarray>a, y = <cnp.ndarray>b
    return (cnp.PyArray_TYPE(x) == cnp.PyArray_TYPE(y)
            and cnp.PyArray_SIZE(x) == cnp.PyArray_SIZE(y)
            and cnp.PyArray_ISALIGNED(y) and cnp.PyArray_ISNOTSWAPPED(y)
            and ((cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_IS_C_CONTIGUOUS(y))
                 or (cnp.PyArray_IS_F_CONTIGUOUS(x) and cnp.PyArray_IS_F_CONTIGUOUS(y))))


cdef inline bint _apart(object a, object b):
    cdef uintptr_t lo = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef uintptr_t lo2 = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef uintptr_t n = <uintptr_t>cnp.PyArray_NBYTES(<cnp.ndarray>a)
    cdef uintptr_t n2 = <uintptr_t>cnp.PyArray_NBYTES(<cnp.ndarray>b)
    return not (lo < lo2 + n2 and lo2 < lo + n)


def adam_step(params, grads, ms, vs, lr_t, beta1, beta2, eps, threads=None):
    """One Adam step in place, in one pass over each parameter, gradient and moment array:

        m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g * g - v)
        p -= (lr_t * m / (sqrt(v) + eps)).astype(p.dtype)

    the same bits as those NumPy 2 lines (lr_t a float64 scalar: the quotient in float64, the
    rest in the arrays' dtype).  Large sets (over a million elements) are split over up to
    `threads` threads (None: every usable CPU) when no two params share memory.

    Returns the indices of the quadruples it left alone (not ndarrays of one float dtype, size
    and memory order; p, m or v read-only; any two of them sharing memory): the caller updates
    those itself."""
    cdef int max_threads = _max_threads(threads)
    cdef list P = list(params), G = list(grads), M = list(ms), V = list(vs)
    if not (len(P) == len(G) == len(M) == len(V)):
        raise ValueError(
            f"params, grads and moments must pair up, got {len(P)}, {len(G)}, {len(M)}, {len(V)}"
        )
    cdef Py_ssize_t n = len(P), k, q = 0, total = 0
    cdef fr_buf *pb = <fr_buf *>malloc((n + 1) * sizeof(fr_buf))
    cdef fr_buf *gb = <fr_buf *>malloc((n + 1) * sizeof(fr_buf))
    cdef fr_buf *mb = <fr_buf *>malloc((n + 1) * sizeof(fr_buf))
    cdef fr_buf *vb = <fr_buf *>malloc((n + 1) * sizeof(fr_buf))
    cdef Span *spans = <Span *>malloc((n + 1) * sizeof(Span))
    cdef int nthreads
    cdef double c1 = 1.0 - float(beta1), c2 = 1.0 - float(beta2)
    cdef double rate = float(lr_t), epsilon = float(eps)
    cdef list skipped = []
    if pb == NULL or gb == NULL or mb == NULL or vb == NULL or spans == NULL:
        free(pb); free(gb); free(mb); free(vb); free(spans)
        raise MemoryError()
    try:
        for k in range(n):
            if not (_step_pair(P[k], G[k], &pb[q], &gb[q])
                    and _same_layout(P[k], M[k]) and _same_layout(P[k], V[k])
                    and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>M[k])
                    and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>V[k])
                    and _apart(M[k], V[k]) and _apart(M[k], P[k]) and _apart(V[k], P[k])
                    and _apart(M[k], G[k]) and _apart(V[k], G[k])):
                skipped.append(k)
                continue
            if pb[q].size == 0:
                continue
            mb[q] = pb[q]
            mb[q].data = <char *>cnp.PyArray_DATA(<cnp.ndarray>M[k])
            vb[q] = pb[q]
            vb[q].data = <char *>cnp.PyArray_DATA(<cnp.ndarray>V[k])
            _span_of(&spans[q], &pb[q], k)
            total += pb[q].size
            q += 1
        nthreads = _step_threads(spans, q, total, max_threads)
        with nogil:
            fr_adam_many(pb, gb, mb, vb, q, nthreads, c1, c2, rate, epsilon)
        return skipped
    finally:
        free(pb); free(gb); free(mb); free(vb); free(spans)
