# The bfloat16 products (fr_bf16.h) as the Cython modules call them: one declaration, and one
# rule for when they run (asked for, float32, a CPU with AVX512-BF16) with BLAS the fallback.
from cython cimport floating

cdef extern from "fr_bf16.h" nogil:
    int fr_bf16_supported()
    int fr_sgemm_bf16(int ta, int tb, int M, int N, int K, const float *A, Py_ssize_t lda,
                      const float *B, Py_ssize_t ldb, float *C, Py_ssize_t ldc)


cdef inline bint bf16_gemm(bint bf16, bint ta, bint tb, Py_ssize_t M, Py_ssize_t N,
                           Py_ssize_t K, const floating *A, Py_ssize_t lda, const floating *B,
                           Py_ssize_t ldb, floating *C, Py_ssize_t ldc) noexcept nogil:
    """C = op(A) op(B) at bfloat16 precision when asked (bf16: matmul_precision "medium"), for
    float32 and where the CPU runs it; False (nothing done: the caller's BLAS call follows)
    otherwise."""
    if not bf16 or floating is double or max(M, max(N, K)) > 2147483647:
        return False
    return fr_sgemm_bf16(ta, tb, <int>M, <int>N, <int>K, <const float *>A, lda,
                         <const float *>B, ldb, <float *>C, ldc) == 0
