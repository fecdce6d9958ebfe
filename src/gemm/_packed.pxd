# The per-step recurrent product with weights packed once per call (fr_gemm.h): the kernels' one
# departure from BLAS, because sgemm would repack the same weights at every timestep.
from cython cimport floating

from _bf16 cimport gemm_packed_bf16

cdef extern from "fr_gemm.h" nogil:
    # the instruction set of the micro-kernels (fr_gemm.h): 0 avx2 (or baseline), 1 avx512
    int fr_isa()
    int fr_set_isa(int isa)
    int fr_isa_supported(int isa)
    size_t packed_size_f(int K, int N)
    size_t packed_size_d(int K, int N)
    void pack_b_f(int K, int N, const float *B, Py_ssize_t rs, Py_ssize_t cs, float *P)
    void pack_b_d(int K, int N, const double *B, Py_ssize_t rs, Py_ssize_t cs, double *P)
    void pack_b_rows_f(int K, int N, const float *B, Py_ssize_t rs, Py_ssize_t cs, float *P,
                       int k0, int kp)
    void pack_b_rows_d(int K, int N, const double *B, Py_ssize_t rs, Py_ssize_t cs, double *P,
                       int k0, int kp)
    void gemm_packed_f(int M, int N, int K, const float *A, Py_ssize_t lda, const float *P,
                       float *C, Py_ssize_t ldc, int accumulate)
    void gemm_packed_d(int M, int N, int K, const double *A, Py_ssize_t lda, const double *P,
                       double *C, Py_ssize_t ldc, int accumulate)
    void gemm_direct_f(int M, int N, int K, const float *A, Py_ssize_t lda, const float *B,
                       Py_ssize_t ldb, float *C, Py_ssize_t ldc, int accumulate)
    void gemm_direct_d(int M, int N, int K, const double *A, Py_ssize_t lda, const double *B,
                       Py_ssize_t ldb, double *C, Py_ssize_t ldc, int accumulate)
    void gemm_direct_nt_f(int M, int N, int K, const float *A, Py_ssize_t lda, const float *W,
                          Py_ssize_t ldw, float *C, Py_ssize_t ldc, int accumulate)
    void gemm_direct_nt_d(int M, int N, int K, const double *A, Py_ssize_t lda,
                          const double *W, Py_ssize_t ldw, double *C, Py_ssize_t ldc,
                          int accumulate)
    void gemm_direct_tn_f(int M, int N, int K, const float *A, Py_ssize_t lda, const float *B,
                          Py_ssize_t ldb, float *C, Py_ssize_t ldc, int accumulate)
    void gemm_direct_tn_d(int M, int N, int K, const double *A, Py_ssize_t lda, const double *B,
                          Py_ssize_t ldb, double *C, Py_ssize_t ldc, int accumulate)
    int gemm_tn_packed_f(int M, int N, int K, const float *A, Py_ssize_t lda, const float *B,
                         Py_ssize_t ldb, float *C, Py_ssize_t ldc, int accumulate,
                         double *sums)
    int gemm_tn_packed_d(int M, int N, int K, const double *A, Py_ssize_t lda, const double *B,
                         Py_ssize_t ldb, double *C, Py_ssize_t ldc, int accumulate,
                         double *sums)
    int fr_set_tn_mode(int mode)
    int fr_get_tn_mode()


cdef inline object kernel_isa(object isa):
    """This module's side of fastrnn._isa: set the micro-kernels' instruction set (an int, -1 for
    the default; ValueError if the CPU can't run it) unless isa is None; return the one in use.
    Each extension module holds its own copy of the setting (fr_gemm.h is compiled into each)."""
    if isa is not None and fr_set_isa(isa) != 0:
        raise ValueError(f"kernels: instruction set {isa} is not supported by this CPU")
    return fr_isa()


cdef inline int checked_mode(str setter, int mode) except -2:
    """mode, if it is one of the kernels' test-and-timing settings -1 (by the rule), 0 (never)
    or 1 (always); else ValueError naming the setter."""
    if mode not in (-1, 0, 1):
        raise ValueError(f"{setter}: mode must be -1, 0 or 1, got {mode}")
    return mode


cdef inline int kernel_tn_mode(object mode) except? -2:
    """This module's side of fastrnn._isa.tn_packed: set who makes the whole-sequence weight
    gradients (worth_tn_packed: -1 by the rule, 0 BLAS, 1 gemm_tn_packed) unless mode is None;
    return the setting before."""
    if mode is None:
        return fr_get_tn_mode()
    if mode not in (-1, 0, 1):
        raise ValueError(f"mode: expected -1, 0 or 1, got {mode!r}")
    return fr_set_tn_mode(mode)


cdef inline size_t packed_size(int K, int N, bint is_double) noexcept nogil:
    """Elements a packed copy of a (K, N) matrix takes."""
    return packed_size_d(K, N) if is_double else packed_size_f(K, N)


cdef inline floating *pack_b(int K, int N, const floating *B, Py_ssize_t rs, Py_ssize_t cs,
                             floating *P) noexcept nogil:
    """Pack B (element (k, n) at B[k*rs + n*cs]) into P; returns the element after the copy, so
    several matrices can be packed back to back into one buffer."""
    if floating is float:
        pack_b_f(K, N, B, rs, cs, P)
        return P + packed_size_f(K, N)
    else:
        pack_b_d(K, N, B, rs, cs, P)
        return P + packed_size_d(K, N)


cdef inline floating *pack_stacked(int K1, int K2, int N, const floating *B1,
                                   const floating *B2, floating *P) noexcept nogil:
    """Pack the stack [B1; B2] of two row-major matrices with N columns, B1 (K1, N) and
    B2 (K2, N), into P as one (K1 + K2, N) matrix; returns the element after the copy."""
    if floating is float:
        pack_b_rows_f(K1, N, B1, N, 1, P, 0, K1 + K2)
        pack_b_rows_f(K2, N, B2, N, 1, P, K1, K1 + K2)
        return P + packed_size_f(K1 + K2, N)
    else:
        pack_b_rows_d(K1, N, B1, N, 1, P, 0, K1 + K2)
        pack_b_rows_d(K2, N, B2, N, 1, P, K1, K1 + K2)
        return P + packed_size_d(K1 + K2, N)


cdef inline void gemm_packed(int M, int N, int K, const floating *A, Py_ssize_t lda,
                             const floating *P, floating *C, Py_ssize_t ldc,
                             bint accumulate) noexcept nogil:
    """Row-major C[M, N] = A[M, K] @ B, or C += A @ B with accumulate; B packed by pack_b."""
    if floating is float:
        gemm_packed_f(M, N, K, A, lda, P, C, ldc, accumulate)
    else:
        gemm_packed_d(M, N, K, A, lda, P, C, ldc, accumulate)


cdef inline void gemm_direct(int M, int N, int K, const floating *A, Py_ssize_t lda,
                             const floating *B, Py_ssize_t ldb, floating *C, Py_ssize_t ldc,
                             bint accumulate) noexcept nogil:
    """Row-major C[M, N] = A[M, K] @ B, or C += A @ B with accumulate; B row-major, not packed."""
    if floating is float:
        gemm_direct_f(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
    else:
        gemm_direct_d(M, N, K, A, lda, B, ldb, C, ldc, accumulate)


cdef inline void gemm_direct_nt(int M, int N, int K, const floating *A, Py_ssize_t lda,
                                const floating *W, Py_ssize_t ldw, floating *C, Py_ssize_t ldc,
                                bint accumulate) noexcept nogil:
    """Row-major C[M, N] = A[M, K] @ W^T (or C += ...) with W row-major (N, K), not packed."""
    if floating is float:
        gemm_direct_nt_f(M, N, K, A, lda, W, ldw, C, ldc, accumulate)
    else:
        gemm_direct_nt_d(M, N, K, A, lda, W, ldw, C, ldc, accumulate)


cdef inline void gemm_direct_tn(int M, int N, int K, const floating *A, Py_ssize_t lda,
                                const floating *B, Py_ssize_t ldb, floating *C, Py_ssize_t ldc,
                                bint accumulate) noexcept nogil:
    """Row-major C[M, N] = A^T @ B (or C += ...) with A (K, M) and B (K, N) row-major, not
    packed: a weight gradient over a few rows K."""
    if floating is float:
        gemm_direct_tn_f(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
    else:
        gemm_direct_tn_d(M, N, K, A, lda, B, ldb, C, ldc, accumulate)


from _blas cimport gemm, blas_int


cdef inline int gemm_tn_packed(int M, int N, int K, const floating *A, Py_ssize_t lda,
                               const floating *B, Py_ssize_t ldb, floating *C, Py_ssize_t ldc,
                               bint accumulate, double *sums=NULL) noexcept nogil:
    """Row-major C[M, N] = A^T @ B (or C += ...) with A (K, M) and B (K, N) row-major, K large:
    both packed per k-slice (fr_gemm_impl.h); with sums, also sums[j] = the sum of B's column j
    (in double, row by row: bitwise colsum's).  -1 (C and sums untouched) if its workspace
    could not be allocated, else 0."""
    if floating is float:
        return gemm_tn_packed_f(M, N, K, A, lda, B, ldb, C, ldc, accumulate, sums)
    else:
        return gemm_tn_packed_d(M, N, K, A, lda, B, ldb, C, ldc, accumulate, sums)


cdef enum:
    DIRECT_MAX_ROWS = 24    # the most rows (or, for A^T @ B, summed rows) a direct kernel takes


cdef inline bint worth_direct(Py_ssize_t M) noexcept nogil:
    """Multiply M rows by an unpacked B (or W^T) with gemm_direct (gemm_direct_nt) rather than
    BLAS?  sgemm packs all of B on every call, which for a few rows costs more than the
    arithmetic; the direct kernels read B in place.  Measured against the same sgemm call, one
    thread (benches/direct_ab.py, BENCHMARKS.md): A @ B with B 650x2600 6.9x faster at M = 2,
    3.6x at 4, 2.3x at 8, 1.3-1.8x at 20, 0.85-1.26x at 32 over three runs; A @ W^T with W
    650x2600 6.8-7.5x at M = 2, 2.3-2.6x at 8, 1.2-1.4x at 20, 1.0-1.2x at 32, 0.8-0.9x at 64.
    A single row is a GEMV, which BLAS streams as fast or faster."""
    return 2 <= M <= DIRECT_MAX_ROWS


cdef inline bint worth_direct_tn(Py_ssize_t K) noexcept nogil:
    """Compute a weight gradient A^T @ B summed over K rows with gemm_direct_tn rather than
    BLAS?  Measured against the same sgemm call, one thread, two runs (benches/direct_ab.py):
    C 650 x 2600 2.3-2.4x faster at K = 1, 1.8-2.0x at 4, 1.5-1.6x at 8, 1.3-1.4x at 20,
    1.1-1.2x at 24, 1.1x at 32; C 100 x 400 1.4-1.5x at K = 20; C 256 x 1024 0.6-0.8x at
    K = 64, where sgemm's packing has paid off."""
    return K <= DIRECT_MAX_ROWS


cdef enum:
    TN_PACKED_MAX_M = 640       # gemm_tn_packed by the rule: C[M, N] with M <= 640 ...
    TN_PACKED_MIN_N = 64        # ... and N >= 64


cdef inline bint worth_tn_packed(Py_ssize_t M, Py_ssize_t N, size_t itemsize) noexcept nogil:
    """Make the weight gradient C[M, N] = A^T @ B over many rows with gemm_tn_packed rather
    than BLAS (fr_get_tn_mode: -1 this rule, 0 never, 1 always)?  Measured in float32 on the
    AVX-512 Xeon against scipy's OpenBLAS, one and two threads (benches/tn_ab.py, BENCHMARKS.md
    "What changed" item 8): the product alone 1.08-1.34x for C from 200 x 100 to 512 x 2048
    over K = 200-6400 rows, 1.03-1.05x at 1024 x 2048, 0.98x at 1300 x 2600 (A's packed slice
    and C no longer fit in L2 together); the layers' backward faster or level at every
    table shape it takes.  float64 and AVX2 were not measured against BLAS: they keep it."""
    cdef int mode = fr_get_tn_mode()
    if mode >= 0:
        return mode == 1
    return (fr_isa() == 1 and itemsize == 4 and M <= TN_PACKED_MAX_M
            and N >= TN_PACKED_MIN_N)


cdef inline bint worth_packing(Py_ssize_t N, Py_ssize_t T) noexcept nogil:
    """Pack the recurrent weights for a call of N batch rows and T steps?  Packing costs one pass
    over Wh; sgemm repacks it at every step anyway, so from two steps on packing wins.  A single
    row (batch 1) goes to GEMV, which streams Wh without packing: nothing to win there (and at
    T = 1, e.g. a generation step, packing a 650x2600 Wh cost more than the product)."""
    return N >= 2 and T >= 2


cdef enum:
    STEP_DIRECT_MAX_ROWS = 64           # a single step's direct products: up to 64 rows ...
    STEP_DIRECT_MAX_BYTES = 1 << 20     # ... by weights of up to 1 MiB


cdef inline bint worth_step_direct(Py_ssize_t M, Py_ssize_t K, Py_ssize_t N,
                                   size_t itemsize) noexcept nogil:
    """Make a single step's product of M rows by a (K, N) weight matrix with gemm_direct rather
    than BLAS?  Up to DIRECT_MAX_ROWS rows always (step_path); beyond, up to
    STEP_DIRECT_MAX_ROWS rows while the weights fit a core's L2 (1 MiB).  Measured on the EPYC
    against the same sgemm call, one thread, B in cache, three runs (sgemm / direct time):
    K256 N256 1.60 at M = 32, 1.31 at 64, 1.14 at 128; K256 N1024 1.49, 1.23, 1.10; K512 N512
    1.51, 1.27, 1.12; K100 N400 1.57, 1.30, 1.12; but K512 N2048 (4 MiB, rows 8 KiB apart)
    0.80 at 32, 0.67 at 64 (K650 N2600 1.2-1.8, not taken: not measured beyond this pair).
    K100 N100 0.71-0.84 at every M: there sgemm wins even below 24 rows."""
    return M <= DIRECT_MAX_ROWS or (M <= STEP_DIRECT_MAX_ROWS
                                    and <size_t>(K * N) * itemsize <= STEP_DIRECT_MAX_BYTES)


cdef enum:
    BY_SIZE = 0     # gemm_direct for a few rows (worth_direct), else BLAS
    PACKED = 1      # from the weights packed once per call (worth_packing)
    DIRECT = 2      # gemm_direct, whatever the rows
    PACKED_BF16 = 3     # PACKED's calls, from weights packed in bfloat16 (bf16_pack:
    # matmul_precision "medium"); only as recurrent_product's path, never a step_path


cdef inline int step_path(Py_ssize_t N, Py_ssize_t T) noexcept nogil:
    """How the per-step products of a call of N batch rows and T steps are made.  A single step
    (T = 1) goes to the direct kernels even for one row, where BLAS's GEMV would stream the
    weights as fast: then no product of a step of up to DIRECT_MAX_ROWS rows is BLAS's, and the
    kernel can vouch for the weights (fastrnn.layers.recurrent._weights_checked_by_kernel)."""
    if worth_packing(N, T):
        return PACKED
    if T == 1:
        return DIRECT
    return BY_SIZE


cdef inline void recurrent_product(int path, int M, int N, int K, const floating *A,
                                   Py_ssize_t lda, const floating *P, const floating *B,
                                   Py_ssize_t ldb, bint trans_b, floating *C, Py_ssize_t ldc,
                                   bint accumulate) noexcept nogil:
    """C[M, N] (+)= A[M, K] @ op(B) by `path` (step_path): from the packed copy P, or from B
    itself (row-major, ldb apart, transposed if trans_b) by gemm_direct or BLAS (a single
    step's A @ B by worth_step_direct; its A @ B^T beyond DIRECT_MAX_ROWS rows stays BLAS's:
    gemm_direct_nt was not measured faster there).  PACKED_BF16: from P packed in bfloat16, or
    (its buffer short) from B as BY_SIZE would."""
    if path == PACKED:
        gemm_packed(M, N, K, A, lda, P, C, ldc, accumulate)
    elif path == PACKED_BF16 and gemm_packed_bf16(M, N, K, A, lda, P, C, ldc, accumulate):
        pass
    elif worth_direct(M) or (path == DIRECT and M >= 1 and (M <= DIRECT_MAX_ROWS or not trans_b)
                             and worth_step_direct(M, K, N, sizeof(floating))):
        if trans_b:
            gemm_direct_nt(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
        else:
            gemm_direct(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
    else:
        gemm(False, trans_b, <blas_int>M, <blas_int>N, <blas_int>K, 1, A, <blas_int>lda, B,
             <blas_int>ldb, 1 if accumulate else 0, C, <blas_int>ldc)
