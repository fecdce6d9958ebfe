# The whole-sequence products the three cells' kernels share, over a range of batch rows.
# Buffers are batch-major (N, T, X): batch rows [n0, n1) are the contiguous rows n0*T .. n1*T of
# the (N*T, X) matrix, so a thread's share is one GEMM.  GH = gate blocks * H (width of G, Wx).
from cython cimport floating

from _blas cimport gemm, blas_int
from _packed cimport gemm_direct, gemm_direct_nt, gemm_direct_tn, worth_direct, worth_direct_tn


cdef inline void project_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t T, int D, int GH,
                              const floating *X, const floating *Wx,
                              floating *G) noexcept nogil:
    """G[rows] = X[rows] @ Wx: the input projection of all timesteps of batch rows [n0, n1)
    (gemm_direct when they are only a few rows, and always for a single step: see step_path)."""
    cdef Py_ssize_t M = (n1 - n0) * T
    if worth_direct(M) or T == 1 and M == 1:
        gemm_direct(<int>M, GH, D, X + n0 * T * D, D, Wx, GH, G + n0 * T * GH, GH, False)
    else:
        gemm(False, False, <blas_int>M, GH, D, 1, X + n0 * T * D, D, Wx, GH, 0,
             G + n0 * T * GH, GH)


cdef inline void dx_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t T, int D, int GH,
                         const floating *dG, const floating *Wx, floating *dX) noexcept nogil:
    """dX[rows] = dG[rows] @ Wx^T for all timesteps of batch rows [n0, n1) (gemm_direct_nt when
    they are only a few rows, and always for a single step: see step_path)."""
    cdef Py_ssize_t M = (n1 - n0) * T
    if worth_direct(M) or T == 1 and M == 1:
        gemm_direct_nt(<int>M, D, GH, dG + n0 * T * GH, GH, Wx, GH, dX + n0 * T * D, D, False)
    else:
        gemm(False, True, <blas_int>M, D, GH, 1, dG + n0 * T * GH, GH, Wx, GH, 0,
             dX + n0 * T * D, D)


cdef inline void grad_cols(Py_ssize_t NT, int K, int GH, Py_ssize_t c0, Py_ssize_t c1,
                           const floating *A, const floating *dG, floating *dW) noexcept nogil:
    """dW[:, c0:c1] = A^T @ dG[:, c0:c1]: columns of a weight gradient (dWx from A = X, dWh
    from A = Hprev), one GEMM over all NT rows (gemm_direct_tn when they are only a few, e.g. a
    single step).  A (NT, K), dG (NT, GH), dW (K, GH)."""
    if c0 >= c1:
        return
    if worth_direct_tn(NT):
        gemm_direct_tn(K, <int>(c1 - c0), <int>NT, A, K, dG + c0, GH, dW + c0, GH, False)
    else:
        gemm(True, False, K, <blas_int>(c1 - c0), <blas_int>NT, 1, A, K, dG + c0, GH, 0,
             dW + c0, GH)
