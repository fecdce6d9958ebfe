"""The fast path of the layers' argument checks (fastrnn/layers/recurrent.py).

Each function here answers one question -- is this argument certainly fine as it is? -- in C,
from the array's header and one pass over its data for NaN/Inf.  True means the layer may use the
argument unchanged.  False decides nothing: the layer then runs its full checks in Python, which
convert what may be converted and word the error for what may not.  So the errors have one
source, and a single step (where the checks were a third of the time of a small cell) pays a
microsecond or two for them instead of tens.
"""
cimport numpy as cnp

cnp.import_array()

cdef extern from "fr_reduce.h" nogil:
    int fr_all_finite_f(const float *x, Py_ssize_t n)
    int fr_all_finite_d(const double *x, Py_ssize_t n)


cdef inline bint _usable(object obj, int typenum) noexcept:
    """obj is an ndarray of typenum in native byte order, C-contiguous and aligned."""
    if type(obj) is not cnp.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>obj
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_ISNOTSWAPPED(a)
            and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a))


cdef inline bint _finite(cnp.ndarray a, int typenum) noexcept:
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef const void *data = cnp.PyArray_DATA(a)
    cdef bint f32 = typenum == cnp.NPY_FLOAT32, ok
    if n < 16384:               # a few microseconds at most: not worth releasing the GIL
        return fr_all_finite_f(<const float *>data, n) if f32 else fr_all_finite_d(
            <const double *>data, n)
    with nogil:
        ok = fr_all_finite_f(<const float *>data, n) if f32 else fr_all_finite_d(
            <const double *>data, n)
    return ok


def ready(object obj, int typenum, tuple shape):
    """True if obj is a C-contiguous, aligned, native-order ndarray of typenum (NPY_FLOAT32 or
    NPY_FLOAT64) with `shape` (None entries match any size) and no NaN/Inf."""
    if not _usable(obj, typenum):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>obj
    cdef int nd = cnp.PyArray_NDIM(a), i
    if nd != len(shape):
        return False
    for i in range(nd):
        want = shape[i]
        if want is not None and cnp.PyArray_DIM(a, i) != <Py_ssize_t>want:
            return False
    return _finite(a, typenum)


def params_ready(list params, list grads, int blocks, bint bias_2d, bint scan_weights=True):
    """The typenum of params [Wx, Wh, b] if they are certainly valid for a layer with `blocks`
    gate blocks -- Wx (D, G*H), Wh (H, G*H), b (G*H,) or with bias_2d (2, G*H); one float
    dtype, C-contiguous, aligned, native order, finite (Wx and Wh only tested with
    scan_weights), and shaped and typed as grads (the layer's gradient arrays) -- else -1."""
    if len(params) != 3 or len(grads) != 3:
        return -1
    Wh = params[1]
    if type(Wh) is not cnp.ndarray:
        return -1
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>Wh), k
    if tn != cnp.NPY_FLOAT32 and tn != cnp.NPY_FLOAT64:
        return -1
    cdef cnp.ndarray p, g
    for k in range(3):
        if not _usable(params[k], tn) or type(grads[k]) is not cnp.ndarray:
            return -1
        p = <cnp.ndarray>params[k]
        g = <cnp.ndarray>grads[k]
        if cnp.PyArray_TYPE(g) != tn or cnp.PyArray_NDIM(g) != cnp.PyArray_NDIM(p):
            return -1
        for i in range(cnp.PyArray_NDIM(p)):
            if cnp.PyArray_DIM(g, i) != cnp.PyArray_DIM(p, i):
                return -1
    p = <cnp.ndarray>params[1]
    if cnp.PyArray_NDIM(p) != 2:
        return -1
    cdef Py_ssize_t H = cnp.PyArray_DIM(p, 0), GH = blocks * H
    if H < 1 or cnp.PyArray_DIM(p, 1) != GH:
        return -1
    p = <cnp.ndarray>params[0]
    if cnp.PyArray_NDIM(p) != 2 or cnp.PyArray_DIM(p, 0) < 1 or cnp.PyArray_DIM(p, 1) != GH:
        return -1
    p = <cnp.ndarray>params[2]
    if bias_2d:
        if cnp.PyArray_NDIM(p) != 2 or cnp.PyArray_DIM(p, 0) != 2 or cnp.PyArray_DIM(p, 1) != GH:
            return -1
    elif cnp.PyArray_NDIM(p) != 1 or cnp.PyArray_DIM(p, 0) != GH:
        return -1
    for k in range(0 if scan_weights else 2, 3):
        if not _finite(<cnp.ndarray>params[k], tn):
            return -1
    return tn


def grads_ready(list grads, list params):
    """True if grads are writeable, C-contiguous, aligned, native-order ndarrays of the dtype
    and shape of params, one for one (the arrays backward writes the gradients into)."""
    if len(grads) != len(params):
        return False
    cdef cnp.ndarray g, p
    cdef int k, i
    for k in range(len(grads)):
        if type(params[k]) is not cnp.ndarray:
            return False
        p = <cnp.ndarray>params[k]
        if not _usable(grads[k], cnp.PyArray_TYPE(p)):
            return False
        g = <cnp.ndarray>grads[k]
        if not cnp.PyArray_ISWRITEABLE(g) or cnp.PyArray_NDIM(g) != cnp.PyArray_NDIM(p):
            return False
        for i in range(cnp.PyArray_NDIM(p)):
            if cnp.PyArray_DIM(g, i) != cnp.PyArray_DIM(p, i):
                return False
    return True
