"""The packed recurrent product (fr_gemm.h, declared in _packed.pxd) exposed to Python.

The kernels call it directly; this module gives the layers the buffer size to allocate, lets the
tests check the micro-kernel against NumPy over shapes, strides and both dtypes, and lets
benches/packed_ab.py time it against the BLAS call it replaces (repeated calls, GIL released,
no Python in between).
"""
cimport numpy as cnp
import numpy as np

from _blas cimport gemm, blas_int
from _packed cimport (packed_size, packed_size_f, packed_size_d, pack_b_f, pack_b_d,
                      gemm_packed_f, gemm_packed_d)

cnp.import_array()


def size(int K, int N, dtype):
    """Elements of the packed copy of a (K, N) matrix of this dtype (float32 or float64)."""
    return packed_size(K, N, np.dtype(dtype) == np.float64)


def _rows(cnp.ndarray a, str name):
    """Row stride (elements) of a 2-D array whose rows are contiguous."""
    if a.ndim != 2 or a.strides[1] != a.itemsize or a.strides[0] % a.itemsize:
        raise ValueError(f"{name}: expected a 2-D array with contiguous rows")
    return a.strides[0] // a.itemsize


def pack(cnp.ndarray B):
    """Packed copy of B (K, N), float32 or float64; B may be a transposed view (B = W.T)."""
    cdef int K = B.shape[0], N = B.shape[1]
    cdef Py_ssize_t rs = B.strides[0] // B.itemsize, cs = B.strides[1] // B.itemsize
    cdef cnp.ndarray P
    if B.dtype == np.float32:
        P = np.empty(packed_size_f(K, N), np.float32)
        pack_b_f(K, N, <float *>cnp.PyArray_DATA(B), rs, cs, <float *>cnp.PyArray_DATA(P))
    elif B.dtype == np.float64:
        P = np.empty(packed_size_d(K, N), np.float64)
        pack_b_d(K, N, <double *>cnp.PyArray_DATA(B), rs, cs, <double *>cnp.PyArray_DATA(P))
    else:
        raise TypeError("B: expected float32 or float64")
    return P


def matmul_packed(cnp.ndarray A, cnp.ndarray P, int N, cnp.ndarray C, bint accumulate=False,
                  int repeat=1):
    """C (+)= A @ B with B given packed (N its column count); repeated `repeat` times, GIL off."""
    cdef int M = A.shape[0], K = A.shape[1], r
    cdef Py_ssize_t lda = _rows(A, "A"), ldc = _rows(C, "C")
    if C.shape[0] != M or C.shape[1] != N or A.dtype != P.dtype or C.dtype != P.dtype:
        raise ValueError("shapes or dtypes do not match")
    if P.dtype == np.float32:
        if <size_t>P.size != packed_size_f(K, N):
            raise ValueError("P: wrong size for (K, N)")
        with nogil:
            for r in range(repeat):
                gemm_packed_f(M, N, K, <float *>cnp.PyArray_DATA(A), lda,
                              <float *>cnp.PyArray_DATA(P), <float *>cnp.PyArray_DATA(C), ldc,
                              accumulate)
    else:
        if <size_t>P.size != packed_size_d(K, N):
            raise ValueError("P: wrong size for (K, N)")
        with nogil:
            for r in range(repeat):
                gemm_packed_d(M, N, K, <double *>cnp.PyArray_DATA(A), lda,
                              <double *>cnp.PyArray_DATA(P), <double *>cnp.PyArray_DATA(C), ldc,
                              accumulate)


def matmul_blas(cnp.ndarray A, cnp.ndarray B, cnp.ndarray C, bint accumulate=False,
                int repeat=1):
    """The same product through scipy's BLAS (what the kernels called before), for comparison.
    float32, row-major contiguous A, B, C."""
    cdef int M = A.shape[0], K = A.shape[1], N = B.shape[1], r
    cdef float beta = 1 if accumulate else 0
    with nogil:
        for r in range(repeat):
            gemm(False, False, M, N, K, <float>1, <float *>cnp.PyArray_DATA(A), K,
                 <float *>cnp.PyArray_DATA(B), N, beta, <float *>cnp.PyArray_DATA(C), N)
