# The one place fastrnn calls BLAS: scipy's Fortran BLAS (column-major) used on row-major buffers.
#
# Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: pass B before A and swap m and
# n; the transpose flags and leading dimensions stay as they are.  No copies, and any leading
# dimension >= the row length works, which is how the kernels address one timestep's rows inside a
# batch-major (N, T, X) buffer (row stride T*X).
from cython cimport floating
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

ctypedef int blas_int    # scipy's cython_blas is LP64; change here for an ILP64 build


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
        if floating is float:
            sgemv(&tb, &rows, &cols, &alpha, <float *>b, &ldb, <float *>a, &incx, &beta, c, &one)
        else:
            dgemv(&tb, &rows, &cols, &alpha, <double *>b, &ldb, <double *>a, &incx, &beta, c, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda,
              &beta, c, &ldc)
