# The one place fastrnn calls BLAS: scipy's Fortran BLAS (column-major) used on row-major buffers.
#
# Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: pass B before A and swap m and
# n; the transpose flags and leading dimensions stay as they are.  No copies, and any leading
# dimension >= the row length works, which is how the kernels address one timestep's rows inside a
# batch-major (N, T, X) buffer (row stride T*X).
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm

ctypedef int blas_int    # scipy's cython_blas is LP64; change here for an ILP64 build


cdef inline void gemm(bint trans_a, bint trans_b, blas_int m, blas_int n, blas_int k,
                      floating alpha, const floating *a, blas_int lda,
                      const floating *b, blas_int ldb,
                      floating beta, floating *c, blas_int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda,
              &beta, c, &ldc)
