# The whole-sequence products the three cells' kernels share, over a range of batch rows.
# Buffers are batch-major (N, T, X): batch rows [n0, n1) are the contiguous rows n0*T .. n1*T of
# the (N*T, X) matrix, so a thread's share is one GEMM.  GH = gate blocks * H (width of G, Wx).
#
# The kernels keep the inputs and the previous hidden states side by side in one cache,
# XH (N, T, D + H): row (n, t) is [x_t | h_{t-1}].  X is its first D columns and Hprev its last
# H, each read with row stride D + H.  Side by side, dWx and dWh are one product
# [X | Hprev]^T @ dG whenever they share dG (weight_grad_cols): OpenBLAS then packs dG, the
# largest operand, once rather than twice (11-22 % faster than two products; BENCHMARKS.md).
from cython cimport floating

from libc.string cimport memcpy

cdef extern from "fr_copy.h" nogil:
    void fr_copy_rows(Py_ssize_t rows, size_t width, const char *src, size_t src_ld, char *dst,
                      size_t dst_ld)
    void fr_prefetch(const void *p, size_t bytes, int rw)

from _bf16 cimport bf16_gemm
from _blas cimport gemm, blas_int
from _cells cimport colsum
from _packed cimport (gemm_direct, gemm_direct_nt, gemm_direct_tn, gemm_packed, gemm_tn_packed,
                      worth_direct, worth_direct_tn, worth_step_direct, worth_tn_packed)


cdef inline void prefetch(const floating *p, Py_ssize_t n, bint write=False) noexcept nogil:
    """Bring n values at p into cache ahead of use (fr_copy.h, fr_prefetch): the next batch
    row's segments in the element-wise passes of a step."""
    fr_prefetch(p, n * sizeof(floating), write)


cdef enum:
    PREFETCH_MIN_BYTES = 4 << 20


cdef inline bint worth_prefetch(Py_ssize_t values, size_t itemsize) noexcept nogil:
    """Prefetch the next row in the element-wise passes of a call whose gate buffer (N, T, GH)
    holds `values` elements?  Only when it is well over a core's L2 (2 MiB here), i.e. when the
    rows come from memory: measured alternating with a build without (1 / 2 threads),
    backward N64 T100 H256 LSTM 1.04 / 1.05x, GRU classic 1.02 / 1.04x, reset_after 1.05 /
    1.08x; the RNN's forward (its fused steps' copies of x_t and its tanh pass's stores of h_t)
    1.02-1.04x at 1 thread, in one process; at N20 T35 H100 (1.1 MB, in L2) the prefetches
    cost the LSTM 0.95x at 2 threads."""
    return values * <Py_ssize_t>itemsize > PREFETCH_MIN_BYTES


cdef inline void project(Py_ssize_t M, int N, int D, const floating *X, Py_ssize_t ldx,
                         const floating *Wx, Py_ssize_t ldw, floating *G, bint step,
                         bint bf16=False) noexcept nogil:
    """G[M, N] = X[M, D] @ Wx[:, :N], an input projection: X's rows ldx apart, Wx's and G's ldw
    apart (N < ldw: a thread's columns).  gemm_direct when they are only a few rows, and for a
    single step (step) by worth_step_direct (see step_path); else BLAS, or with bf16 the
    bfloat16 product."""
    if worth_direct(M) or step and worth_step_direct(M, D, N, sizeof(floating)):
        gemm_direct(<int>M, N, D, X, ldx, Wx, ldw, G, ldw, False)
    elif not bf16_gemm(bf16, False, False, M, N, D, X, ldx, Wx, ldw, G, ldw):
        gemm(False, False, <blas_int>M, N, D, 1, X, <blas_int>ldx, Wx, <blas_int>ldw, 0, G,
             <blas_int>ldw)


cdef inline void project_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t T, int D, int GH,
                              const floating *X, int ldx, const floating *Wx,
                              floating *G, bint bf16=False) noexcept nogil:
    """G[rows] = X[rows] @ Wx: the input projection of all timesteps of batch rows [n0, n1);
    X's rows lie ldx apart."""
    project((n1 - n0) * T, GH, D, X + n0 * T * ldx, ldx, Wx, GH, G + n0 * T * GH, T == 1, bf16)


cdef inline void start_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t T, int D, int H, int GH,
                            const floating *X, const floating *Wx, const floating *h0,
                            floating *XH, floating *G, bint bf16=False) noexcept nogil:
    """Forward's work on batch rows [n0, n1) before the time loop: XH[rows, :, :D] = X[rows]
    (the copy of the inputs backward reads: the caller's array may change in between), the
    input projection G[rows] = X[rows] @ Wx of all their timesteps (one GEMM), and Hprev at
    t = 0 (XH[rows, 0, D:]) = h0[rows].  With Wx NULL, no projection (the caller's)."""
    cdef Py_ssize_t n
    if n0 >= n1:
        return
    fr_copy_rows((n1 - n0) * T, D * sizeof(floating), <const char *>(X + n0 * T * D),
                 D * sizeof(floating), <char *>(XH + n0 * T * (D + H)), (D + H) * sizeof(floating))
    if Wx != NULL:
        project_rows(n0, n1, T, D, GH, X, D, Wx, G, bf16)
    for n in range(n0, n1):
        memcpy(XH + n * T * (D + H) + D, h0 + n * H, H * sizeof(floating))


cdef enum:
    DX_CHUNK_ROWS = 192     # rows of dG per packed product in dx_rows


cdef inline void dx_rows(Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t T, int D, int GH,
                         const floating *dG, const floating *Wx, const floating *Wxp,
                         floating *dX, bint bf16=False) noexcept nogil:
    """dX[rows] = dG[rows] @ Wx^T for all timesteps of batch rows [n0, n1).  With Wxp (Wx^T
    packed by the caller; else NULL), by the packed kernel in chunks of DX_CHUNK_ROWS rows: the
    packed kernel takes its panels in the outer loop, and over all N*T rows at once it would
    read dG from memory once per group of panels (a chunk of dG stays in L2 for all of them).
    Else gemm_direct_nt when they are only a few rows, and always for a single step (see
    step_path); else BLAS, or with bf16 (and no Wxp) the bfloat16 product."""
    cdef Py_ssize_t M = (n1 - n0) * T, i = 0
    if Wxp != NULL:
        while i < M:
            gemm_packed(<int>min(<Py_ssize_t>DX_CHUNK_ROWS, M - i), D, GH,
                        dG + (n0 * T + i) * GH, GH, Wxp, dX + (n0 * T + i) * D, D, False)
            i += DX_CHUNK_ROWS
    elif worth_direct(M) or T == 1 and M == 1:
        gemm_direct_nt(<int>M, D, GH, dG + n0 * T * GH, GH, Wx, GH, dX + n0 * T * D, D, False)
    elif not bf16_gemm(bf16, False, True, M, D, GH, dG + n0 * T * GH, GH, Wx, GH,
                       dX + n0 * T * D, D):
        gemm(False, True, <blas_int>M, D, GH, 1, dG + n0 * T * GH, GH, Wx, GH, 0,
             dX + n0 * T * D, D)


cdef inline void grad_cols(Py_ssize_t NT, int K, int GH, Py_ssize_t c0, Py_ssize_t c1,
                           const floating *A, int lda, const floating *dG, int ldg,
                           floating *dW, double *acc=NULL, floating *db=NULL,
                           bint bf16=False) noexcept nogil:
    """dW[:, c0:c1] = A^T @ dG[:, :c1-c0]: columns of a weight gradient (dWx from A = X, dWh
    from A = Hprev, or both at once from A = XH), one GEMM over all NT rows (gemm_direct_tn
    when they are only a few, e.g. a single step; gemm_tn_packed where it beats BLAS,
    worth_tn_packed; with bf16 the bfloat16 product).  A (NT, K) with row stride lda; dG (NT, .)
    with row stride ldg, pointing at the gradient of column c0; dW (K, GH).
    With db (and acc, room for c1 - c0 sums), also the bias gradient's columns: db[j] = the
    sum of dG[:, j] over all rows, summed in double in acc.  gemm_tn_packed sums them from its
    packed slices of dG, in cache; else colsum reads dG once more (the same additions in the
    same order: equal bitwise).  Measured alternating with colsum after the product in one
    process (backward, 1 / 2 threads): N64 T100 H256 GRU 1.02 / 1.03x, LSTM 1.01 / 1.02x,
    RNN 1.00 / 1.02x; N20 T35 H100 1.00-1.01x at 1 thread."""
    cdef int j
    if c0 >= c1:
        return
    if worth_direct_tn(NT):
        gemm_direct_tn(K, <int>(c1 - c0), <int>NT, A, lda, dG, ldg, dW + c0, GH, False)
    elif bf16_gemm(bf16, True, False, K, <int>(c1 - c0), <int>NT, A, lda, dG, ldg, dW + c0, GH):
        pass
    elif (worth_tn_packed(K, c1 - c0, sizeof(floating))
          and gemm_tn_packed(K, <int>(c1 - c0), <int>NT, A, lda, dG, ldg, dW + c0, GH, False,
                             acc if db != NULL else NULL) == 0):
        if db != NULL:
            for j in range(c1 - c0):
                db[j] = <floating>acc[j]
            db = NULL                           # done
    else:
        gemm(True, False, K, <blas_int>(c1 - c0), <blas_int>NT, 1, A, lda, dG, ldg, 0,
             dW + c0, GH)
    if db != NULL:
        colsum(NT, <int>(c1 - c0), ldg, dG, acc, db)


cdef inline void weight_grad_cols(Py_ssize_t NT, int D, int H, int GH, Py_ssize_t c0,
                                  Py_ssize_t c1, const floating *XH, const floating *dG,
                                  floating *dWx, floating *dWh, double *acc,
                                  floating *db, bint bf16=False) noexcept nogil:
    """dWx[:, c0:c1] = X^T @ dG[:, c0:c1] and dWh[:, c0:c1] = Hprev^T @ dG[:, c0:c1], for
    X and Hprev side by side in XH (NT, D + H), and db[c0:c1] = dG[:, c0:c1] summed over the
    rows (acc: room for GH sums; see grad_cols).  One product when dWh directly follows dWx in
    memory, as the layers allocate them (dWx; dWh is then one (D + H, GH) matrix), else two."""
    if dWh == dWx + <Py_ssize_t>D * GH:
        grad_cols(NT, D + H, GH, c0, c1, XH, D + H, dG + c0, GH, dWx, acc + c0, db + c0, bf16)
    else:
        grad_cols(NT, D, GH, c0, c1, XH, D + H, dG + c0, GH, dWx, acc + c0, db + c0, bf16)
        grad_cols(NT, H, GH, c0, c1, XH + D, D + H, dG + c0, GH, dWh, NULL, NULL, bf16)
