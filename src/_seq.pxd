# The whole-sequence products the three cells' kernels share, over a range of batch rows.
# Buffers are batch-major (N, T, X): batch rows [n0, n1) are the contiguous rows n0*T .. n1*T of
# the (N*T, X) matrix, so a thread's share is one GEMM.  GH = gate blocks * H (width of G, Wx).
from cython cimport floating

from _blas cimport gemm, blas_int


cdef inline void project_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t T, int D, int GH,
                              const floating *X, const floating *Wx,
                              floating *G) noexcept nogil:
    """G[rows] = X[rows] @ Wx: the input projection of all timesteps of batch rows [n0, n1)."""
    gemm(False, False, <blas_int>((n1 - n0) * T), GH, D, 1, X + n0 * T * D, D, Wx, GH, 0,
         G + n0 * T * GH, GH)


cdef inline void dx_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t T, int D, int GH,
                         const floating *dG, const floating *Wx, floating *dX) noexcept nogil:
    """dX[rows] = dG[rows] @ Wx^T for all timesteps of batch rows [n0, n1)."""
    gemm(False, True, <blas_int>((n1 - n0) * T), D, GH, 1, dG + n0 * T * GH, GH, Wx, GH, 0,
         dX + n0 * T * D, D)
