"""The packed recurrent product (fr_gemm.h, declared in _packed.pxd) exposed to Python.

The kernels call it directly; this module gives the layers the buffer size to allocate, lets the
tests check the micro-kernel against NumPy over shapes, strides and both dtypes, and lets
benches/packed_ab.py time it against the BLAS call it replaces (repeated calls, GIL released,
no Python in between).
"""
cimport numpy as cnp
import numpy as np

from _blas cimport fr_use_blas, gemm
from cython cimport floating

from _packed cimport (fr_isa_supported, kernel_isa, packed_size,
                      pack_b_f, pack_b_d, gemm_packed_f, gemm_packed_d, gemm_direct, gemm_direct_nt,
                      gemm_direct_tn, gemm_tn_packed, kernel_tn_mode,
                      DIRECT_MAX_ROWS as _DIRECT_MAX_ROWS)

cnp.import_array()
fr_use_blas()                   # call the BLAS fastrnn._blas chose (fr_blas.h)

# A call of 2..DIRECT_MAX_ROWS rows in all (N*T) makes no BLAS call: every product goes to a
# direct kernel (worth_direct, worth_direct_tn).  fastrnn._threads relies on it.
DIRECT_MAX_ROWS = _DIRECT_MAX_ROWS


def size(int K, int N, dtype):
    """Elements of the packed copy of a (K, N) matrix of this dtype (float32 or float64)."""
    return packed_size(K, N, np.dtype(dtype) == np.float64)


def _float_dtype(cnp.ndarray a, str name):
    """a's dtype if it is native float32 or float64, else TypeError."""
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError(f"{name}: expected native float32 or float64, got {a.dtype}")
    return a.dtype


def _rows(cnp.ndarray a, str name, bint write=False):
    """Row stride (elements) of a 2-D array whose rows are contiguous.  Strides of axes of
    length <= 1 do not matter (NumPy sets them freely): such arrays always qualify."""
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got {a.ndim}-D")
    if write and not a.flags.writeable:
        raise ValueError(f"{name}: expected a writeable array")
    cdef Py_ssize_t rows = a.shape[0], cols = a.shape[1], item = a.itemsize
    if rows == 0 or cols == 0:          # empty: nothing is read or written
        return max(cols, 1)
    if cols > 1 and a.strides[1] != item:
        raise ValueError(f"{name}: expected contiguous rows (column stride {item} bytes)")
    if rows == 1:
        return cols
    if a.strides[0] % item or a.strides[0] < cols * item:
        raise ValueError(f"{name}: expected rows at least a row's length apart, "
                         f"got a row stride of {a.strides[0]} bytes")
    return a.strides[0] // item


def pack(cnp.ndarray B not None):
    """Packed copy of B (K, N), float32 or float64; B may be any strided view (B = W.T)."""
    if B.ndim != 2:
        raise ValueError(f"B: expected a 2-D array, got {B.ndim}-D")
    dtype = _float_dtype(B, "B")
    cdef int K = B.shape[0], N = B.shape[1]
    cdef Py_ssize_t rs = B.strides[0] // B.itemsize, cs = B.strides[1] // B.itemsize
    cdef cnp.ndarray P = np.empty(packed_size(K, N, dtype == np.float64), dtype)
    if dtype == np.float32:
        pack_b_f(K, N, <float *>cnp.PyArray_DATA(B), rs, cs, <float *>cnp.PyArray_DATA(P))
    else:
        pack_b_d(K, N, <double *>cnp.PyArray_DATA(B), rs, cs, <double *>cnp.PyArray_DATA(P))
    return P


def matmul_packed(cnp.ndarray A not None, cnp.ndarray P not None, int N, cnp.ndarray C not None,
                  bint accumulate=False, int repeat=1):
    """C (+)= A @ B with B given packed (N its column count); repeated `repeat` times, GIL off.
    A and C: 2-D with contiguous rows (any row stride); C must not overlap A or P."""
    dtype = _float_dtype(P, "P")
    if A.dtype != dtype or C.dtype != dtype:
        raise TypeError(f"A, P and C must share one dtype, got {A.dtype}, {dtype}, {C.dtype}")
    cdef Py_ssize_t lda = _rows(A, "A"), ldc = _rows(C, "C", write=True)
    cdef int M = A.shape[0], K = A.shape[1], _r
    if C.shape[0] != M or C.shape[1] != N:
        raise ValueError(f"C: expected shape {(M, N)}, got {(<object>C).shape}")
    if P.ndim != 1 or not P.flags.c_contiguous:
        raise ValueError("P: expected the contiguous 1-D array pack() returns")
    if <size_t>P.size != packed_size(K, N, dtype == np.float64):
        raise ValueError(f"P: expected {packed_size(K, N, dtype == np.float64)} elements for "
                         f"K={K}, N={N}, got {P.size}")
    if np.may_share_memory(C, A) or np.may_share_memory(C, P):
        raise ValueError("C: must not overlap A or P")
    if dtype == np.float32:
        with nogil:
            for _r in range(repeat):
                gemm_packed_f(M, N, K, <float *>cnp.PyArray_DATA(A), lda,
                              <float *>cnp.PyArray_DATA(P), <float *>cnp.PyArray_DATA(C), ldc,
                              accumulate)
    else:
        with nogil:
            for _r in range(repeat):
                gemm_packed_d(M, N, K, <double *>cnp.PyArray_DATA(A), lda,
                              <double *>cnp.PyArray_DATA(P), <double *>cnp.PyArray_DATA(C), ldc,
                              accumulate)


cdef enum:
    _NN = 0     # C = A @ B
    _NT = 1     # C = A @ W^T, W (N, K)
    _TN = 2     # C = A^T @ B, A (K, M)
    _TNP = 3    # C = A^T @ B, A (K, M), both packed per k-slice (gemm_tn_packed)


cdef int _direct(int mode, int M, int N, int K, const floating *A, Py_ssize_t lda,
                 const floating *B, Py_ssize_t ldb, floating *C, Py_ssize_t ldc,
                 bint accumulate, int repeat, double *sums=NULL) noexcept nogil:
    cdef int _r
    for _r in range(repeat):
        if mode == _TNP:
            if gemm_tn_packed(M, N, K, A, lda, B, ldb, C, ldc, accumulate, sums) != 0:
                return -1
        elif mode == _NT:
            gemm_direct_nt(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
        elif mode == _TN:
            gemm_direct_tn(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
        else:
            gemm_direct(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
    return 0


def _matmul_direct(cnp.ndarray A, cnp.ndarray B, cnp.ndarray C, bint accumulate, int repeat,
                   int mode, cnp.ndarray sums=None):
    """C (+)= op(A) @ op(B) by a direct kernel (see `mode`), checked, operands read in place;
    sums (mode _TNP): B's column sums."""
    name = "W" if mode == _NT else "B"
    dtype = _float_dtype(B, name)
    if A.dtype != dtype or C.dtype != dtype:
        raise TypeError(f"A, {name} and C must share one dtype, got {A.dtype}, {dtype}, {C.dtype}")
    cdef Py_ssize_t lda = _rows(A, "A"), ldb = _rows(B, name), ldc = _rows(C, "C", write=True)
    cdef bint at = mode == _TN or mode == _TNP
    cdef int M = A.shape[1] if at else A.shape[0]
    cdef int K = A.shape[0] if at else A.shape[1]
    cdef int failed
    cdef int N = B.shape[0] if mode == _NT else B.shape[1]
    if B.shape[1 if mode == _NT else 0] != K:
        raise ValueError(f"{name}: expected {K} {'columns' if mode == _NT else 'rows'} to match "
                         f"A {(<object>A).shape}, got {(<object>B).shape}")
    if C.shape[0] != M or C.shape[1] != N:
        raise ValueError(f"C: expected shape {(M, N)}, got {(<object>C).shape}")
    if np.may_share_memory(C, A) or np.may_share_memory(C, B):
        raise ValueError(f"C: must not overlap A or {name}")
    cdef double *psums = NULL
    if sums is not None:
        if (sums.dtype != np.float64 or sums.ndim != 1 or sums.shape[0] != N
                or not sums.flags.c_contiguous or not sums.flags.writeable):
            raise ValueError(f"sums: expected a writable contiguous float64 array of {N}, got "
                             f"{sums.dtype} {(<object>sums).shape}")
        if any(np.may_share_memory(sums, a) for a in (A, B, C)):
            raise ValueError(f"sums: must not overlap A, {name} or C")
        psums = <double *>cnp.PyArray_DATA(sums)
    if dtype == np.float32:
        with nogil:
            failed = _direct(mode, M, N, K, <float *>cnp.PyArray_DATA(A), lda,
                             <float *>cnp.PyArray_DATA(B), ldb, <float *>cnp.PyArray_DATA(C), ldc,
                             accumulate, repeat, psums)
    else:
        with nogil:
            failed = _direct(mode, M, N, K, <double *>cnp.PyArray_DATA(A), lda,
                             <double *>cnp.PyArray_DATA(B), ldb, <double *>cnp.PyArray_DATA(C),
                             ldc, accumulate, repeat, psums)
    if failed:
        raise MemoryError("gemm_tn_packed: could not allocate its workspace")


def matmul_direct(cnp.ndarray A not None, cnp.ndarray B not None, cnp.ndarray C not None,
                  bint accumulate=False, int repeat=1):
    """C (+)= A @ B with B as it is (gemm_direct: no packing); repeated `repeat` times, GIL off.
    A, B and C: 2-D with contiguous rows (any row stride); C must not overlap A or B."""
    _matmul_direct(A, B, C, accumulate, repeat, _NN)


def matmul_direct_nt(cnp.ndarray A not None, cnp.ndarray W not None, cnp.ndarray C not None,
                     bint accumulate=False, int repeat=1):
    """C (+)= A @ W.T with W (N, K) as it is (gemm_direct_nt); repeated `repeat` times, GIL off.
    A, W and C: 2-D with contiguous rows (any row stride); C must not overlap A or W."""
    _matmul_direct(A, W, C, accumulate, repeat, _NT)


def matmul_direct_tn(cnp.ndarray A not None, cnp.ndarray B not None, cnp.ndarray C not None,
                     bint accumulate=False, int repeat=1):
    """C (+)= A.T @ B with A (K, M) and B (K, N) as they are (gemm_direct_tn); repeated `repeat`
    times, GIL off.  2-D with contiguous rows (any row stride); C must not overlap A or B."""
    _matmul_direct(A, B, C, accumulate, repeat, _TN)


def matmul_tn_packed(cnp.ndarray A not None, cnp.ndarray B not None, cnp.ndarray C not None,
                     bint accumulate=False, int repeat=1, cnp.ndarray sums=None):
    """C (+)= A.T @ B with A (K, M) and B (K, N), both packed per k-slice (gemm_tn_packed, the
    whole-sequence weight gradients' kernel); repeated `repeat` times, GIL off.  2-D with
    contiguous rows (any row stride); C must not overlap A or B.  sums (float64, N; optional):
    receives B's column sums, summed in double row by row (the bias gradient's route)."""
    _matmul_direct(A, B, C, accumulate, repeat, _TNP, sums)


def matmul_blas(cnp.ndarray A not None, cnp.ndarray B not None, cnp.ndarray C not None,
                bint accumulate=False, int repeat=1, bint trans_b=False, bint trans_a=False):
    """The same product through scipy's BLAS (what the kernels call otherwise), for comparison:
    C (+)= A @ B, or with A given as (K, M) and trans_a A.T @ ..., with B given as (N, K) and
    trans_b ... @ B.T.  float32, C-contiguous operands, C (M, N)."""
    for name, a in (("A", A), ("B", B), ("C", C)):
        if a.dtype != np.float32 or a.ndim != 2 or not a.flags.c_contiguous:
            raise ValueError(f"{name}: expected a C-contiguous 2-D float32 array")
    if not C.flags.writeable:
        raise ValueError("C: expected a writeable array")
    cdef int M = A.shape[1] if trans_a else A.shape[0], K = A.shape[0] if trans_a else A.shape[1]
    cdef int N = B.shape[0] if trans_b else B.shape[1], _r
    if B.shape[1 if trans_b else 0] != K or C.shape[0] != M or C.shape[1] != N:
        raise ValueError(f"shapes do not match: A {(<object>A).shape}, "
                         f"B {(<object>B).shape}, C {(<object>C).shape}")
    if np.may_share_memory(C, A) or np.may_share_memory(C, B):
        raise ValueError("C: must not overlap A or B")
    cdef float beta = 1 if accumulate else 0
    with nogil:
        for _r in range(repeat):
            gemm(trans_a, trans_b, M, N, K, <float>1, <float *>cnp.PyArray_DATA(A),
                 max(M if trans_a else K, 1), <float *>cnp.PyArray_DATA(B),
                 max(K if trans_b else N, 1), beta, <float *>cnp.PyArray_DATA(C), max(N, 1))


def _isa_supported(int isa):
    """Can this CPU run the products' instruction set `isa` (0 avx2, 1 avx512)?"""
    return bool(fr_isa_supported(isa))


def _kernel_isa(isa=None):
    """Set (unless None) and return the instruction set of this module's matrix products; use
    fastrnn._isa rather than this."""
    return kernel_isa(isa)


def _kernel_tn_mode(mode=None):
    """Set (unless None) who makes this module's whole-sequence weight gradients and return the
    setting before; use fastrnn._isa.tn_packed rather than this."""
    return kernel_tn_mode(mode)
