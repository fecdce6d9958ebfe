# The one place fastrnn calls BLAS: a Fortran BLAS (column-major) used on row-major buffers.
# Which library: NumPy's own OpenBLAS where fastrnn._blas finds and chooses it (its ILP64
# routines, fr_blas.h), else scipy's through scipy.linalg.cython_blas (LP64).  A module calling
# gemm must call fr_use_blas() once at import.
#
# Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: pass B before A and swap m and
# n; the transpose flags and leading dimensions stay as they are.  No copies, and any leading
# dimension >= the row length works, which is how the kernels address one timestep's rows inside a
# batch-major (N, T, X) buffer (row stride T*X).
from cython cimport floating
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

ctypedef int blas_int    # the kernels' sizes: LP64 as scipy's cython_blas; widened for ILP64


cdef extern from "fr_blas.h" nogil:
    ctypedef long long fr_blas64_int "fr_blas64_int"
    ctypedef void (*fr_sgemm64_fn)(const char *, const char *, const fr_blas64_int *,
                                   const fr_blas64_int *, const fr_blas64_int *, const float *,
                                   const float *, const fr_blas64_int *, const float *,
                                   const fr_blas64_int *, const float *, float *,
                                   const fr_blas64_int *)
    ctypedef void (*fr_dgemm64_fn)(const char *, const char *, const fr_blas64_int *,
                                   const fr_blas64_int *, const fr_blas64_int *, const double *,
                                   const double *, const fr_blas64_int *, const double *,
                                   const fr_blas64_int *, const double *, double *,
                                   const fr_blas64_int *)
    ctypedef void (*fr_sgemv64_fn)(const char *, const fr_blas64_int *, const fr_blas64_int *,
                                   const float *, const float *, const fr_blas64_int *,
                                   const float *, const fr_blas64_int *, const float *, float *,
                                   const fr_blas64_int *)
    ctypedef void (*fr_dgemv64_fn)(const char *, const fr_blas64_int *, const fr_blas64_int *,
                                   const double *, const double *, const fr_blas64_int *,
                                   const double *, const fr_blas64_int *, const double *,
                                   double *, const fr_blas64_int *)
    fr_sgemm64_fn fr_sgemm64
    fr_dgemm64_fn fr_dgemm64
    fr_sgemv64_fn fr_sgemv64
    fr_dgemv64_fn fr_dgemv64
    int fr_use_blas() except -1 with gil


cdef inline void gemm(bint trans_a, bint trans_b, blas_int m, blas_int n, blas_int k,
                      floating alpha, const floating *a, blas_int lda,
                      const floating *b, blas_int ldb,
                      floating beta, floating *c, blas_int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C.

    A single row (m == 1, batch size 1 in the per-step products) goes to GEMV: GEMM would repack
    all of B for one row, which costs more than the arithmetic."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef blas_int one = 1
    cdef blas_int incx = lda if trans_a else 1
    cdef blas_int rows = k if trans_b else n
    cdef blas_int cols = n if trans_b else k
    if m == 1:
        # y = op(B)^T x with x = op(A)^T.  B's buffer read column-major is M = B^T (row-major
        # transposed): without trans_b, y = M x ('N', M is n x k); with trans_b, y = M^T x
        # ('T', M is k x n).  With beta == 0, y is zeroed first: some OpenBLAS versions scale y by
        # beta, which would let NaN garbage in an uninitialised buffer through.
        if beta == 0:
            memset(c, 0, n * sizeof(floating))
        if fr_sgemm64 != NULL:
            _gemv64(tb, rows, cols, alpha, b, ldb, a, incx, beta, c)
        elif floating is float:
            sgemv(&tb, &rows, &cols, &alpha, <float *>b, &ldb, <float *>a, &incx, &beta, c, &one)
        else:
            dgemv(&tb, &rows, &cols, &alpha, <double *>b, &ldb, <double *>a, &incx, &beta, c, &one)
        return
    if fr_sgemm64 != NULL:
        _gemm64(tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc)
    elif floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda,
              &beta, c, &ldc)


cdef inline void _gemm64(char ta, char tb, fr_blas64_int m, fr_blas64_int n, fr_blas64_int k,
                         floating alpha, const floating *a, fr_blas64_int lda,
                         const floating *b, fr_blas64_int ldb,
                         floating beta, floating *c, fr_blas64_int ldc) noexcept nogil:
    """Column-major GEMM through the ILP64 routines (the arguments as BLAS takes them)."""
    if floating is float:
        fr_sgemm64(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)
    else:
        fr_dgemm64(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)


cdef inline void _gemv64(char t, fr_blas64_int rows, fr_blas64_int cols, floating alpha,
                         const floating *a, fr_blas64_int lda, const floating *x,
                         fr_blas64_int incx, floating beta, floating *y) noexcept nogil:
    """Column-major GEMV through the ILP64 routines, y with unit stride."""
    cdef fr_blas64_int one = 1
    if floating is float:
        fr_sgemv64(&t, &rows, &cols, &alpha, a, &lda, x, &incx, &beta, y, &one)
    else:
        fr_dgemv64(&t, &rows, &cols, &alpha, a, &lda, x, &incx, &beta, y, &one)
