"""Kernels of the language-model layers (fastrnn/layers/lm.py), GIL released, threaded on the
process's pool.

The layer checks every argument (dtypes, shapes, C-contiguity, ids in range) before calling
here; these functions only assert what a wrong call would turn into a crash.  float32 and float64
run the same code (the row kernels of fr_lm.h, suffixes _f and _d).  `threads` is the number of
pool threads; each function splits its work so that the result does not depend on it (the
embedding's scatter-add, the softmax rows) or only by rounding (the affine products, whose
reduction dimension may be split).
"""
cimport numpy as cnp
from libc.math cimport log
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from _bf16 cimport fr_bf16_supported, fr_sgemm_bf16, bf16_gemm
from _blas cimport blas_int, fr_use_blas, gemm
from _parallel cimport fr_parallel, fr_share, fr_use_pool, share_cols

cnp.import_array()
fr_use_pool()                   # threaded work runs on the process's pool (fr_pool.h)
fr_use_blas()                   # call the BLAS fastrnn._blas chose (fr_blas.h)

cdef extern from "fr_lm.h" nogil:
    int fr_copy_check_f(float *dst, const float *src, Py_ssize_t n)
    int fr_copy_check_d(double *dst, const double *src, Py_ssize_t n)
    int fr_nonfinite_f(const float *x, Py_ssize_t n)
    int fr_nonfinite_d(const double *x, Py_ssize_t n)
    void fr_add_f(float *dst, const float *src, Py_ssize_t n)
    void fr_add_d(double *dst, const double *src, Py_ssize_t n)
    int fr_add_bias_check_f(float *row, const float *b, Py_ssize_t n)
    int fr_add_bias_check_d(double *row, const double *b, Py_ssize_t n)
    float fr_row_max_f(const float *x, Py_ssize_t n, int *bad)
    double fr_row_max_d(const double *x, Py_ssize_t n, int *bad)
    double fr_row_sumexp_f(const float *x, Py_ssize_t n, float m)
    double fr_row_sumexp_d(const double *x, Py_ssize_t n, double m)
    void fr_row_softmax_f(float *out, const float *x, Py_ssize_t n, float m, float ls, float s)
    void fr_row_softmax_d(double *out, const double *x, Py_ssize_t n, double m, double ls,
                          double s)
    void fr_row_softmax_inplace_f(float *p, Py_ssize_t n, float m, float ls, float s)
    void fr_row_softmax_inplace_d(double *p, Py_ssize_t n, double m, double ls, double s)
    double fr_row_exp_inplace_f(float *p, Py_ssize_t n, float m)
    double fr_row_exp_inplace_d(double *p, Py_ssize_t n, double m)
    void fr_scale_row_f(float *p, Py_ssize_t n, float c)
    void fr_scale_row_d(double *p, Py_ssize_t n, double c)
    int fr_mul_check_f(float *out, const float *x, const float *mask, Py_ssize_t n)
    int fr_mul_check_d(double *out, const double *x, const double *mask, Py_ssize_t n)
    int fr_mul_check_inplace_f(float *p, const float *mask, Py_ssize_t n)
    int fr_mul_check_inplace_d(double *p, const double *mask, Py_ssize_t n)
    int fr_dropout_f(float *out, const float *x, Py_ssize_t n, Py_ssize_t j0, Py_ssize_t j1,
                     uint64_t key, uint32_t thr, float scale)
    int fr_dropout_d(double *out, const double *x, Py_ssize_t n, Py_ssize_t j0, Py_ssize_t j1,
                     uint64_t key, uint32_t thr, double scale)
    int FR_MAX_THREADS
    void fr_exp_map_f(float *out, const float *x, Py_ssize_t n)
    void fr_exp_map_d(double *out, const double *x, Py_ssize_t n)


cdef int _threads(int threads) noexcept nogil:
    return 1 if threads < 1 else (FR_MAX_THREADS if threads > FR_MAX_THREADS else threads)


cdef bint _f32(cnp.ndarray a) except -1:
    cdef int tn = cnp.PyArray_TYPE(a)
    if tn == cnp.NPY_FLOAT32:
        return True
    if tn == cnp.NPY_FLOAT64:
        return False
    raise TypeError(f"expected a float32 or float64 array, got {a.dtype}")


cdef void _need(bint ok, str what) except *:
    if not ok:
        raise ValueError(f"_lm kernel called with {what}")


cdef inline bint _usable(cnp.ndarray a, int typenum):
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a))


# ---- embedding ------------------------------------------------------------------------------

cdef struct Embed:
    char *W                 # (V, D) rows (gather: read; scatter: dW, written)
    char *rows              # (R, D): gather's out, scatter's dout
    const int64_t *ids      # (R,)
    Py_ssize_t R, V, D
    Py_ssize_t row_stride, col_stride   # of W, in elements (gather; scatter: D and 1)
    bint f32
    int bad[8]              # per thread: saw NaN/Inf (gather)


cdef void _gather_task(void *arg, int tid, int n) noexcept nogil:
    cdef Embed *E = <Embed *>arg
    cdef Py_ssize_t lo, hi, r, j, D = E.D
    cdef int bad = 0
    cdef float vf, zf = 0
    cdef double vd, zd = 0
    fr_share(E.R, tid, n, &lo, &hi)
    if E.col_stride != 1:     # W a view with strided rows (e.g. a transpose): element by element
        for r in range(lo, hi):
            for j in range(D):
                if E.f32:
                    vf = (<float *>E.W)[E.ids[r] * E.row_stride + j * E.col_stride]
                    (<float *>E.rows)[r * D + j] = vf
                    zf += vf * 0
                else:
                    vd = (<double *>E.W)[E.ids[r] * E.row_stride + j * E.col_stride]
                    (<double *>E.rows)[r * D + j] = vd
                    zd += vd * 0
        E.bad[tid] = zf != 0 or zf != zf or zd != 0 or zd != zd
        return
    for r in range(lo, hi):
        if E.f32:
            bad |= fr_copy_check_f(<float *>E.rows + r * D,
                                   <float *>E.W + E.ids[r] * E.row_stride, D)
        else:
            bad |= fr_copy_check_d(<double *>E.rows + r * D,
                                   <double *>E.W + E.ids[r] * E.row_stride, D)
    E.bad[tid] = bad


cdef void _scatter_task(void *arg, int tid, int n) noexcept nogil:
    """Thread tid owns the rows [lo, hi) of dW: it zeroes them and adds every dout row whose id
    falls in them, in the order of the ids -- the sums do not depend on the thread count."""
    cdef Embed *E = <Embed *>arg
    cdef Py_ssize_t lo, hi, r, D = E.D, i
    cdef size_t item = 4 if E.f32 else 8
    fr_share(E.V, tid, n, &lo, &hi)
    if hi > lo:
        memset(E.W + lo * D * item, 0, (hi - lo) * D * item)
    for r in range(E.R):
        i = E.ids[r]
        if lo <= i < hi:
            if E.f32:
                fr_add_f(<float *>E.W + i * D, <float *>E.rows + r * D, D)
            else:
                fr_add_d(<double *>E.W + i * D, <double *>E.rows + r * D, D)


cdef Embed _embed(cnp.ndarray W, cnp.ndarray ids, cnp.ndarray rows, bint strided=False) except *:
    cdef Embed E
    E.f32 = _f32(W)
    cdef int tn = cnp.PyArray_TYPE(W)
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(W)
    if strided:
        _need(cnp.PyArray_NDIM(W) == 2 and cnp.PyArray_ISALIGNED(W) and cnp.PyArray_ISNOTSWAPPED(W)
              and cnp.PyArray_STRIDE(W, 0) % item == 0 and cnp.PyArray_STRIDE(W, 1) % item == 0,
              "W not an aligned 2-D float array")
        E.row_stride = cnp.PyArray_STRIDE(W, 0) // item
        E.col_stride = cnp.PyArray_STRIDE(W, 1) // item
        if cnp.PyArray_IS_C_CONTIGUOUS(W):
            E.row_stride, E.col_stride = cnp.PyArray_DIM(W, 1), 1
    else:
        _need(cnp.PyArray_NDIM(W) == 2 and _usable(W, tn), "W not a C-contiguous 2-D float array")
        E.row_stride, E.col_stride = cnp.PyArray_DIM(W, 1), 1
    _need(cnp.PyArray_TYPE(ids) == cnp.NPY_INT64 and cnp.PyArray_IS_C_CONTIGUOUS(ids),
          "ids not C-contiguous int64")
    E.V, E.D = cnp.PyArray_DIM(W, 0), cnp.PyArray_DIM(W, 1)
    E.R = cnp.PyArray_SIZE(ids)
    _need(_usable(rows, tn) and cnp.PyArray_SIZE(rows) == E.R * E.D, "rows of the wrong size")
    E.W = <char *>cnp.PyArray_DATA(W)
    E.rows = <char *>cnp.PyArray_DATA(rows)
    E.ids = <const int64_t *>cnp.PyArray_DATA(ids)
    return E


def embed_gather(cnp.ndarray W, cnp.ndarray ids, cnp.ndarray out, int threads=1):
    """out[r] = W[ids[r]] for the R ids (0 <= id < V, checked by the caller); False if a
    gathered row holds NaN or Inf.  W may be any aligned view (a transpose: strided reads)."""
    cdef Embed E = _embed(W, ids, out, True)
    cdef int t, n = _threads(threads), bad = 0
    if n > E.R:
        n = <int>max(E.R, 1)
    with nogil:
        fr_parallel(n, _gather_task, &E)
    for t in range(n):
        bad |= E.bad[t]
    return not bad


def embed_scatter(cnp.ndarray dW, cnp.ndarray ids, cnp.ndarray dout, int threads=1):
    """dW = 0, then dW[ids[r]] += dout[r] for every r, in order (repeated ids summed)."""
    cdef Embed E = _embed(dW, ids, dout)
    cdef int n = _threads(threads)
    _need(cnp.PyArray_ISWRITEABLE(dW), "a read-only dW")
    if n > E.V:
        n = <int>E.V
    with nogil:
        fr_parallel(n, _scatter_task, &E)


# ---- softmax with cross-entropy --------------------------------------------------------------

cdef struct Softmax:
    char *x                 # (R, V) logits
    char *out               # (R, V) gradient (may be x)
    const int64_t *ts       # (R,) targets
    int64_t ignore
    char *m                 # (R,) row maxima (dtype)
    char *ls                # (R,) log of the row's sum of exp(x - max) (dtype)
    double *loss            # (R,) per-row loss, float64
    double scale
    Py_ssize_t R, V
    bint f32
    Py_ssize_t bad[8]       # per thread: its first row holding NaN/Inf, or -1


cdef void _softmax_fwd_task(void *arg, int tid, int n) noexcept nogil:
    cdef Softmax *S = <Softmax *>arg
    cdef Py_ssize_t lo, hi, r, V = S.V, t
    cdef int bad
    cdef double lsum
    cdef float mf
    cdef double md
    S.bad[tid] = -1
    fr_share(S.R, tid, n, &lo, &hi)
    for r in range(lo, hi):
        t = S.ts[r]
        if S.f32:
            mf = fr_row_max_f(<float *>S.x + r * V, V, &bad)
            (<float *>S.m)[r] = mf
            md = mf
        else:
            md = fr_row_max_d(<double *>S.x + r * V, V, &bad)
            (<double *>S.m)[r] = md
        if bad:
            if S.bad[tid] < 0:
                S.bad[tid] = r
            continue
        if t == S.ignore:
            lsum = 0
            S.loss[r] = 0
        else:
            if S.f32:
                lsum = log(fr_row_sumexp_f(<float *>S.x + r * V, V, mf))
                S.loss[r] = lsum - (<double>(<float *>S.x)[r * V + t] - md)
            else:
                lsum = log(fr_row_sumexp_d(<double *>S.x + r * V, V, md))
                S.loss[r] = lsum - ((<double *>S.x)[r * V + t] - md)
        if S.f32:
            (<float *>S.ls)[r] = <float>lsum
        else:
            (<double *>S.ls)[r] = lsum


cdef void _softmax_bwd_task(void *arg, int tid, int n) noexcept nogil:
    cdef Softmax *S = <Softmax *>arg
    cdef Py_ssize_t lo, hi, r, V = S.V, t
    cdef size_t item = 4 if S.f32 else 8
    cdef bint inplace = S.out == S.x
    cdef float *of
    cdef double *od
    fr_share(S.R, tid, n, &lo, &hi)
    for r in range(lo, hi):
        t = S.ts[r]
        if t == S.ignore:
            memset(S.out + r * V * item, 0, V * item)
        elif S.f32:
            of = <float *>S.out + r * V
            if inplace:
                fr_row_softmax_inplace_f(of, V, (<float *>S.m)[r], (<float *>S.ls)[r],
                                         <float>S.scale)
            else:
                fr_row_softmax_f(of, <float *>S.x + r * V, V, (<float *>S.m)[r],
                                 (<float *>S.ls)[r], <float>S.scale)
            of[t] -= <float>S.scale
        else:
            od = <double *>S.out + r * V
            if inplace:
                fr_row_softmax_inplace_d(od, V, (<double *>S.m)[r], (<double *>S.ls)[r],
                                         S.scale)
            else:
                fr_row_softmax_d(od, <double *>S.x + r * V, V, (<double *>S.m)[r],
                                 (<double *>S.ls)[r], S.scale)
            od[t] -= S.scale


cdef void _softmax_fused_task(void *arg, int tid, int n) noexcept nogil:
    """Loss and gradient of each row in one visit, the logits turned into the gradient in place:
    the row's max (read from memory), then exp(x - max) written over it while summed, then the
    scaling, both while the row is still in cache; one exp per element."""
    cdef Softmax *S = <Softmax *>arg
    cdef Py_ssize_t lo, hi, r, V = S.V, t
    cdef size_t item = 4 if S.f32 else 8
    cdef int bad
    cdef double s, md, xt
    cdef float mf
    cdef float *pf
    cdef double *pd
    S.bad[tid] = -1
    fr_share(S.R, tid, n, &lo, &hi)
    for r in range(lo, hi):
        t = S.ts[r]
        if S.f32:
            pf = <float *>S.x + r * V
            mf = fr_row_max_f(pf, V, &bad)
            md = mf
        else:
            pd = <double *>S.x + r * V
            md = fr_row_max_d(pd, V, &bad)
        if bad:
            if S.bad[tid] < 0:
                S.bad[tid] = r
            continue
        if t == S.ignore:
            S.loss[r] = 0
            memset(S.x + r * V * item, 0, V * item)
            continue
        if S.f32:
            xt = pf[t]
            s = fr_row_exp_inplace_f(pf, V, mf)
            fr_scale_row_f(pf, V, <float>(S.scale / s))
            pf[t] -= <float>S.scale
        else:
            xt = pd[t]
            s = fr_row_exp_inplace_d(pd, V, md)
            fr_scale_row_d(pd, V, S.scale / s)
            pd[t] -= S.scale
        S.loss[r] = log(s) - (xt - md)


cdef Softmax _softmax(cnp.ndarray x, cnp.ndarray ts, long long ignore, cnp.ndarray m,
                      cnp.ndarray ls) except *:
    cdef Softmax S
    S.f32 = _f32(x)
    cdef int tn = cnp.PyArray_TYPE(x)
    _need(cnp.PyArray_NDIM(x) == 2 and _usable(x, tn), "x not a C-contiguous 2-D float array")
    S.R, S.V = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    _need(S.V >= 1, "no classes")
    _need(cnp.PyArray_TYPE(ts) == cnp.NPY_INT64 and cnp.PyArray_IS_C_CONTIGUOUS(ts)
          and cnp.PyArray_SIZE(ts) == S.R, "ts not R C-contiguous int64")
    _need(_usable(m, tn) and _usable(ls, tn) and cnp.PyArray_SIZE(m) == S.R
          and cnp.PyArray_SIZE(ls) == S.R, "m or ls of the wrong size or dtype")
    S.x = <char *>cnp.PyArray_DATA(x)
    S.out = NULL
    S.ts = <const int64_t *>cnp.PyArray_DATA(ts)
    S.ignore = ignore
    S.m = <char *>cnp.PyArray_DATA(m)
    S.ls = <char *>cnp.PyArray_DATA(ls)
    S.loss = NULL
    S.scale = 0
    return S


def softmax_loss_forward(cnp.ndarray x, cnp.ndarray ts, long long ignore, cnp.ndarray m,
                         cnp.ndarray ls, cnp.ndarray loss, int threads=1):
    """Per row r of the logits x (R, V): m[r] = max, ls[r] = log sum exp(x - max) and
    loss[r] = ls[r] - (x[r, ts[r]] - m[r]) (float64; 0 where ts[r] == ignore).  Targets are in
    range (checked by the caller).  Returns the first row holding NaN or Inf, or -1."""
    cdef Softmax S = _softmax(x, ts, ignore, m, ls)
    _need(cnp.PyArray_TYPE(loss) == cnp.NPY_FLOAT64 and cnp.PyArray_IS_C_CONTIGUOUS(loss)
          and cnp.PyArray_SIZE(loss) == S.R, "loss not R C-contiguous float64")
    S.loss = <double *>cnp.PyArray_DATA(loss)
    cdef int t, n = _threads(threads)
    if n > S.R:
        n = <int>max(S.R, 1)
    with nogil:
        fr_parallel(n, _softmax_fwd_task, &S)
    cdef Py_ssize_t first = -1
    for t in range(n):
        if S.bad[t] >= 0 and (first < 0 or S.bad[t] < first):
            first = S.bad[t]
    return first


def softmax_loss_fused(cnp.ndarray x, cnp.ndarray ts, long long ignore, cnp.ndarray loss,
                       double scale, int threads=1):
    """The loss of every row into loss (as softmax_loss_forward) and x turned in place into
    (softmax(x) - onehot(ts)) * scale (zero rows where ts == ignore).  Returns the first row
    holding NaN or Inf, or -1; the rows other threads or earlier rows reached are then already
    overwritten (the caller gave the logits up)."""
    cdef Softmax S
    S.f32 = _f32(x)
    cdef int tn = cnp.PyArray_TYPE(x)
    _need(cnp.PyArray_NDIM(x) == 2 and _usable(x, tn) and cnp.PyArray_ISWRITEABLE(x),
          "x not a writeable C-contiguous 2-D float array")
    S.R, S.V = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    _need(S.V >= 1, "no classes")
    _need(cnp.PyArray_TYPE(ts) == cnp.NPY_INT64 and cnp.PyArray_IS_C_CONTIGUOUS(ts)
          and cnp.PyArray_SIZE(ts) == S.R, "ts not R C-contiguous int64")
    _need(cnp.PyArray_TYPE(loss) == cnp.NPY_FLOAT64 and cnp.PyArray_IS_C_CONTIGUOUS(loss)
          and cnp.PyArray_SIZE(loss) == S.R, "loss not R C-contiguous float64")
    S.x = <char *>cnp.PyArray_DATA(x)
    S.ts = <const int64_t *>cnp.PyArray_DATA(ts)
    S.ignore = ignore
    S.loss = <double *>cnp.PyArray_DATA(loss)
    S.scale = scale
    cdef int t, n = _threads(threads)
    if n > S.R:
        n = <int>max(S.R, 1)
    with nogil:
        fr_parallel(n, _softmax_fused_task, &S)
    cdef Py_ssize_t first = -1
    for t in range(n):
        if S.bad[t] >= 0 and (first < 0 or S.bad[t] < first):
            first = S.bad[t]
    return first


def softmax_loss_backward(cnp.ndarray x, cnp.ndarray ts, long long ignore, cnp.ndarray m,
                          cnp.ndarray ls, double scale, cnp.ndarray out, int threads=1):
    """out = (softmax(x) - onehot(ts)) * scale row by row, zero rows where ts == ignore, from
    forward's m and ls.  out may be x itself (the logits turned into the gradient in place)."""
    cdef Softmax S = _softmax(x, ts, ignore, m, ls)
    _need(_usable(out, cnp.PyArray_TYPE(x)) and cnp.PyArray_SIZE(out) == S.R * S.V
          and cnp.PyArray_ISWRITEABLE(out), "out of the wrong size or dtype")
    S.out = <char *>cnp.PyArray_DATA(out)
    S.scale = scale
    cdef int n = _threads(threads)
    if n > S.R:
        n = <int>max(S.R, 1)
    with nogil:
        fr_parallel(n, _softmax_bwd_task, &S)


# ---- affine ---------------------------------------------------------------------------------

cdef struct Affine:
    char *x                 # (R, D) with row stride ldx; weight grads: (R, D + 1), last column 1
    Py_ssize_t ldx
    char *W                 # W (D, M) row-major, or with w_t its transpose E (M, D) row-major
    bint w_t
    char *b                 # (M,)
    char *y                 # forward: out (R, M); backward: dout (R, M)
    char *dx                # (R, D)
    char *dx_part           # (threads - 1, R, D): the other threads' partial dx
    char *dW                # weight grads: [dW; db] (D + 1, M) row-major
    Py_ssize_t R, D, M
    bint f32
    bint bf16               # float32 products at bfloat16 precision (fr_bf16.h)
    int bad[8]


cdef inline void _gemm(bint f32, bint bf16, bint ta, bint tb, blas_int m, blas_int n,
                       blas_int k, const char *a, blas_int lda, const char *b, blas_int ldb,
                       char *c, blas_int ldc) noexcept nogil:
    """c = op(a) op(b), c overwritten: BLAS, or with bf16 (float32 only) the bfloat16 product
    where the CPU runs it (_bf16.pxd)."""
    if f32 and bf16_gemm(bf16, ta, tb, m, n, k, <const float *>a, lda, <const float *>b, ldb,
                         <float *>c, ldc):
        return
    if f32:
        gemm(ta, tb, m, n, k, <float>1, <const float *>a, lda, <const float *>b, ldb,
             <float>0, <float *>c, ldc)
    else:
        gemm(ta, tb, m, n, k, <double>1, <const double *>a, lda, <const double *>b, ldb,
             <double>0, <double *>c, ldc)


cdef void _affine_fwd_task(void *arg, int tid, int n) noexcept nogil:
    """Columns [lo, hi) of out = x W + b: each thread packs only its slice of W."""
    cdef Affine *A = <Affine *>arg
    cdef Py_ssize_t lo, hi, r, D = A.D, M = A.M
    cdef size_t item = 4 if A.f32 else 8
    cdef int bad = 0
    share_cols(M, tid, n, &lo, &hi)
    if hi > lo:
        if A.w_t:       # W[:, lo:hi] = E[lo:hi, :]^T
            _gemm(A.f32, A.bf16, False, True, A.R, hi - lo, D, A.x, A.ldx,
                  A.W + lo * D * item, D, A.y + lo * item, M)
        else:
            _gemm(A.f32, A.bf16, False, False, A.R, hi - lo, D, A.x, A.ldx, A.W + lo * item,
                  M, A.y + lo * item, M)
        for r in range(A.R):
            if A.f32:
                bad |= fr_add_bias_check_f(<float *>A.y + r * M + lo, <float *>A.b + lo, hi - lo)
            else:
                bad |= fr_add_bias_check_d(<double *>A.y + r * M + lo, <double *>A.b + lo,
                                           hi - lo)
    A.bad[tid] = bad


cdef void _affine_dx_task(void *arg, int tid, int n) noexcept nogil:
    """dx = dout W^T over the slice [lo, hi) of the M columns of dout (the reduction dimension):
    each thread reads half of dout and of W; thread 0 writes dx, the others their partial."""
    cdef Affine *A = <Affine *>arg
    cdef Py_ssize_t lo, hi, D = A.D, M = A.M
    cdef size_t item = 4 if A.f32 else 8
    cdef char *c = A.dx if tid == 0 else A.dx_part + (tid - 1) * A.R * D * item
    share_cols(M, tid, n, &lo, &hi)
    if hi <= lo:
        memset(c, 0, A.R * D * item)
    elif A.w_t:         # (W^T)[lo:hi, :] = E[lo:hi, :]
        _gemm(A.f32, A.bf16, False, False, A.R, D, hi - lo, A.y + lo * item, M,
              A.W + lo * D * item, D, c, D)
    else:               # (W^T)[lo:hi, :] = W[:, lo:hi]^T
        _gemm(A.f32, A.bf16, False, True, A.R, D, hi - lo, A.y + lo * item, M,
              A.W + lo * item, M, c, D)


cdef void _affine_sum_task(void *arg, int tid, int n) noexcept nogil:
    """dx += the other threads' partials, over this thread's share of dx's elements."""
    cdef Affine *A = <Affine *>arg
    cdef Py_ssize_t lo, hi, total = A.R * A.D
    cdef int k, parts = A.bad[0]
    fr_share(total, tid, n, &lo, &hi)
    for k in range(parts):
        if A.f32:
            fr_add_f(<float *>A.dx + lo, <float *>A.dx_part + k * total + lo, hi - lo)
        else:
            fr_add_d(<double *>A.dx + lo, <double *>A.dx_part + k * total + lo, hi - lo)


cdef void _affine_dw_task(void *arg, int tid, int n) noexcept nogil:
    """Columns [lo, hi) of [dW; db] = [x | 1]^T dout: one product, db being the row of x's
    column of ones (summed like every entry of dW, no pass of its own over dout)."""
    cdef Affine *A = <Affine *>arg
    cdef Py_ssize_t lo, hi, M = A.M
    cdef size_t item = 4 if A.f32 else 8
    share_cols(M, tid, n, &lo, &hi)
    if hi > lo:
        _gemm(A.f32, A.bf16, True, False, A.D + 1, hi - lo, A.R, A.x, A.ldx,
              A.y + lo * item, M, A.dW + lo * item, M)


cdef Affine _affine(cnp.ndarray x, cnp.ndarray W, cnp.ndarray y) except *:
    cdef Affine A
    A.w_t = False
    A.bf16 = False
    A.f32 = _f32(x)
    cdef int tn = cnp.PyArray_TYPE(x)
    _need(cnp.PyArray_NDIM(x) == 2 and _usable(x, tn), "x not a C-contiguous 2-D float array")
    _need(cnp.PyArray_NDIM(W) == 2 and cnp.PyArray_TYPE(W) == tn and cnp.PyArray_ISALIGNED(W)
          and cnp.PyArray_ISNOTSWAPPED(W), "W not a 2-D array of x's dtype")
    A.R, A.ldx = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    A.D, A.M = cnp.PyArray_DIM(W, 0), cnp.PyArray_DIM(W, 1)
    _need(A.ldx == A.D or A.ldx == A.D + 1, "W (D, M) not matching x (R, D) or (R, D + 1)")
    if cnp.PyArray_IS_C_CONTIGUOUS(W):
        A.w_t = False
    elif cnp.PyArray_IS_F_CONTIGUOUS(W):
        A.w_t = True        # W = E^T with E (M, D) C-contiguous: the same buffer
    else:
        _need(False, "W neither C- nor F-contiguous")
    _need(_usable(y, tn) and cnp.PyArray_SIZE(y) == A.R * A.M, "y not (R, M) of x's dtype")
    _need(A.R < 2**31 and A.D < 2**31 and A.M < 2**31, "sizes beyond 32-bit BLAS")
    A.x = <char *>cnp.PyArray_DATA(x)
    A.W = <char *>cnp.PyArray_DATA(W)
    A.y = <char *>cnp.PyArray_DATA(y)
    A.b = A.dx = A.dx_part = A.dW = NULL
    return A


def affine_forward(cnp.ndarray x, cnp.ndarray W, cnp.ndarray b, cnp.ndarray out, int threads=1,
                   bint bf16=False):
    """out = x W + b for x (R, D), W (D, M) C- or F-contiguous (a transposed view: BLAS's
    transpose flag, no copy), b (M,).  False if out holds NaN or Inf.  bf16: the product at
    bfloat16 precision where the CPU has it (float32; fr_bf16.h), for this and the two below."""
    cdef Affine A = _affine(x, W, out)
    A.bf16 = bf16
    _need(_usable(b, cnp.PyArray_TYPE(x)) and cnp.PyArray_SIZE(b) == A.M, "b not (M,)")
    A.b = <char *>cnp.PyArray_DATA(b)
    cdef int t, n = _threads(threads), bad = 0
    if A.R == 0:
        return True
    with nogil:
        fr_parallel(n, _affine_fwd_task, &A)
    for t in range(n):
        bad |= A.bad[t]
    return not bad


def affine_dx(cnp.ndarray x, cnp.ndarray W, cnp.ndarray dout, cnp.ndarray dx, int threads=1,
              cnp.ndarray part=None, bint bf16=False):
    """dx = dout W^T for dout (R, M), W (D, M) C- or F-contiguous, dx (R, D) (x (R, D) only gives
    the sizes).  With threads > 1, part ((threads - 1) * R * D elements of x's dtype) receives
    the other threads' partial sums; without it, they are malloc'ed.  False if dx holds NaN or
    Inf."""
    cdef Affine A = _affine(x, W, dout)
    A.bf16 = bf16
    _need(_usable(dx, cnp.PyArray_TYPE(x)) and cnp.PyArray_SIZE(dx) == A.R * A.D
          and cnp.PyArray_ISWRITEABLE(dx), "dx not (R, D)")
    A.dx = <char *>cnp.PyArray_DATA(dx)
    cdef int n = _threads(threads), bad = 0
    cdef size_t item = 4 if A.f32 else 8
    if A.R * A.D == 0:
        return True
    cdef bint own = False
    if n > 1:
        if (part is not None and _usable(part, cnp.PyArray_TYPE(x))
                and cnp.PyArray_SIZE(part) >= (n - 1) * A.R * A.D):
            A.dx_part = <char *>cnp.PyArray_DATA(part)
        else:
            A.dx_part = <char *>malloc((n - 1) * A.R * A.D * item)
            own = True
        if A.dx_part == NULL:
            n = 1
    A.bad[0] = n - 1            # (the number of partials, for _affine_sum_task)
    with nogil:
        fr_parallel(n, _affine_dx_task, &A)
        if n > 1:
            fr_parallel(n, _affine_sum_task, &A)
        if own:
            free(A.dx_part)
        bad = (fr_nonfinite_f(<float *>A.dx, A.R * A.D) if A.f32
               else fr_nonfinite_d(<double *>A.dx, A.R * A.D))
    return not bad


def affine_weight_grads(cnp.ndarray x, cnp.ndarray dout, cnp.ndarray dWb, int threads=1,
                        bint bf16=False):
    """[dW; db] = [x | 1]^T dout for x1 = [x | 1] (R, D + 1) (its last column all ones: the
    caller's), dout (R, M), dWb (D + 1, M) C-contiguous: dW in its first D rows, db in the last;
    the columns shared between the threads."""
    _need(cnp.PyArray_NDIM(dWb) == 2 and cnp.PyArray_DIM(dWb, 0) >= 1, "dWb not (D + 1, M)")
    cdef Affine A = _affine(x, dWb[:cnp.PyArray_DIM(dWb, 0) - 1], dout)
    A.bf16 = bf16
    cdef size_t item = 4 if A.f32 else 8
    _need(A.ldx == A.D + 1 and _usable(dWb, cnp.PyArray_TYPE(x))
          and cnp.PyArray_ISWRITEABLE(dWb), "x not (R, D + 1) or dWb not (D + 1, M)")
    A.dW = <char *>cnp.PyArray_DATA(dWb)
    cdef int n = _threads(threads)
    with nogil:
        if A.R == 0:
            memset(A.dW, 0, (A.D + 1) * A.M * item)
        else:
            fr_parallel(n, _affine_dw_task, &A)


def bf16_supported():
    """Does this CPU (and build) run the bfloat16 products (AVX512-BF16; fr_bf16.h)?"""
    return bool(fr_bf16_supported())


def matmul_bf16(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out):
    """out = a @ b at bfloat16 precision (operands rounded to bfloat16, sums in float32) for
    float32 a (M, K) and b (K, N), each C- or F-contiguous (a transposed view, no copy), out
    (M, N) C-contiguous.  False, out untouched, where the CPU lacks AVX512-BF16."""
    cdef int ta, tb
    for name, m in (("a", a), ("b", b), ("out", out)):
        _need(cnp.PyArray_NDIM(m) == 2 and cnp.PyArray_TYPE(m) == cnp.NPY_FLOAT32
              and cnp.PyArray_ISALIGNED(m) and cnp.PyArray_ISNOTSWAPPED(m),
              f"{name} not a 2-D aligned float32 array")
        _need(cnp.PyArray_IS_C_CONTIGUOUS(m) or (m is not out and cnp.PyArray_IS_F_CONTIGUOUS(m)),
              f"{name} neither C- nor F-contiguous" if m is not out else "out not C-contiguous")
    _need(cnp.PyArray_ISWRITEABLE(out), "out not writeable")
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    _need(b.shape[0] == K and out.shape[0] == M and out.shape[1] == N,
          "shapes not (M, K) @ (K, N) -> (M, N)")
    _need(M < 2**31 and N < 2**31 and K < 2**31, "sizes beyond 32-bit")
    ta = not cnp.PyArray_IS_C_CONTIGUOUS(a)
    tb = not cnp.PyArray_IS_C_CONTIGUOUS(b)
    cdef int rc
    with nogil:
        rc = fr_sgemm_bf16(ta, tb, <int>M, <int>N, <int>K, <const float *>cnp.PyArray_DATA(a),
                           M if ta else K, <const float *>cnp.PyArray_DATA(b), K if tb else N,
                           <float *>cnp.PyArray_DATA(out), N)
    return rc == 0


# ---- dropout ---------------------------------------------------------------------------------

cdef struct Drop:
    char *x                 # input (NULL: write the mask itself)
    char *out
    char *mask              # variational: (N, D) mask
    Py_ssize_t n, rows, T, D
    uint64_t key
    uint32_t thr
    double scale
    bint f32
    int bad[8]


cdef void _dropout_task(void *arg, int tid, int nt) noexcept nogil:
    cdef Drop *P = <Drop *>arg
    cdef Py_ssize_t lo, hi
    fr_share((P.n + 1) // 2, tid, nt, &lo, &hi)
    if P.f32:
        P.bad[tid] = fr_dropout_f(<float *>P.out, <float *>P.x, P.n, lo, hi, P.key, P.thr,
                                  <float>P.scale)
    else:
        P.bad[tid] = fr_dropout_d(<double *>P.out, <double *>P.x, P.n, lo, hi, P.key, P.thr,
                                  P.scale)


cdef void _mask_rows_task(void *arg, int tid, int nt) noexcept nogil:
    """Rows (n, t) of out = x * mask[n], the mask of sequence n shared by its T steps."""
    cdef Drop *P = <Drop *>arg
    cdef Py_ssize_t lo, hi, r, D = P.D
    cdef int bad = 0
    fr_share(P.rows, tid, nt, &lo, &hi)
    for r in range(lo, hi):
        if P.f32:
            if P.out == P.x:
                bad |= fr_mul_check_inplace_f(<float *>P.out + r * D,
                                              <float *>P.mask + (r // P.T) * D, D)
            else:
                bad |= fr_mul_check_f(<float *>P.out + r * D, <float *>P.x + r * D,
                                      <float *>P.mask + (r // P.T) * D, D)
        else:
            if P.out == P.x:
                bad |= fr_mul_check_inplace_d(<double *>P.out + r * D,
                                              <double *>P.mask + (r // P.T) * D, D)
            else:
                bad |= fr_mul_check_d(<double *>P.out + r * D, <double *>P.x + r * D,
                                      <double *>P.mask + (r // P.T) * D, D)
    P.bad[tid] = bad


def dropout(object x, cnp.ndarray out, unsigned long long key, unsigned int thr, double scale,
            int threads=1):
    """out = x * mask, mask[i] = scale if draw i of `key` >= thr else 0 (x None: out = mask).
    out may be x.  False if x holds NaN or Inf."""
    cdef Drop P
    cdef int tn = cnp.PyArray_TYPE(out), t, bad = 0
    P.f32 = _f32(out)
    _need(_usable(out, tn) and cnp.PyArray_ISWRITEABLE(out), "out not C-contiguous writeable")
    P.n = cnp.PyArray_SIZE(out)
    P.out = <char *>cnp.PyArray_DATA(out)
    if x is None:
        P.x = NULL
    else:
        _need(_usable(<cnp.ndarray>x, tn) and cnp.PyArray_SIZE(<cnp.ndarray>x) == P.n,
              "x not like out")
        P.x = <char *>cnp.PyArray_DATA(<cnp.ndarray>x)
    P.key, P.thr, P.scale = key, thr, scale
    cdef int n = _threads(threads)
    if n > (P.n + 1) // 2:
        n = <int>max((P.n + 1) // 2, 1)
    with nogil:
        fr_parallel(n, _dropout_task, &P)
    for t in range(n):
        bad |= P.bad[t]
    return not bad


def mask_rows(cnp.ndarray x, cnp.ndarray mask, cnp.ndarray out, int threads=1):
    """out[n, t] = x[n, t] * mask[n] for x, out (N, T, D) and mask (N, 1, D); out may be x.
    False if x holds NaN or Inf."""
    cdef Drop P
    cdef int tn = cnp.PyArray_TYPE(out), t, bad = 0
    P.f32 = _f32(out)
    _need(cnp.PyArray_NDIM(x) == 3 and _usable(x, tn) and _usable(out, tn)
          and _usable(mask, tn) and cnp.PyArray_ISWRITEABLE(out), "arrays not usable")
    N, P.T, P.D = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1), cnp.PyArray_DIM(x, 2)
    _need(cnp.PyArray_SIZE(out) == cnp.PyArray_SIZE(x) and cnp.PyArray_SIZE(mask) == N * P.D,
          "shapes not (N, T, D), (N, 1, D)")
    P.rows = N * P.T
    P.x = <char *>cnp.PyArray_DATA(x)
    P.out = <char *>cnp.PyArray_DATA(out)
    P.mask = <char *>cnp.PyArray_DATA(mask)
    cdef int n = _threads(threads)
    if n > P.rows:
        n = <int>max(P.rows, 1)
    with nogil:
        fr_parallel(n, _mask_rows_task, &P)
    for t in range(n):
        bad |= P.bad[t]
    return not bad


def exp_map(cnp.ndarray x, cnp.ndarray out):
    """out = exp(x) by the exp the softmax kernels use (fr_expf, fr_exp_d): for the tests."""
    cdef int tn = cnp.PyArray_TYPE(x)
    _need(_usable(x, tn) and _usable(out, tn) and cnp.PyArray_SIZE(out) == cnp.PyArray_SIZE(x)
          and cnp.PyArray_ISWRITEABLE(out), "x and out not alike")
    if _f32(x):
        fr_exp_map_f(<float *>cnp.PyArray_DATA(out), <float *>cnp.PyArray_DATA(x),
                     cnp.PyArray_SIZE(x))
    else:
        fr_exp_map_d(<double *>cnp.PyArray_DATA(out), <double *>cnp.PyArray_DATA(x),
                     cnp.PyArray_SIZE(x))
