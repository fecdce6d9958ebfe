# The bfloat16 products (fr_bf16.h) as the Cython modules call them: one declaration, and one
# rule for when they run (asked for, float32, a CPU with AVX512-BF16) with BLAS the fallback.
from cython cimport floating
from libc.stdint cimport uint32_t

cdef extern from "fr_bf16.h" nogil:
    int fr_bf16_supported()
    int fr_sgemm_bf16(int ta, int tb, int M, int N, int K, const float *A, Py_ssize_t lda,
                      const float *B, Py_ssize_t ldb, float *C, Py_ssize_t ldc)
    size_t fr_bf16_packed_words(int K, int N)
    uint32_t *fr_bf16_pack_b(int K, int N, const float *B, Py_ssize_t ldb, int trans,
                             uint32_t *P)
    int fr_bf16_gemm_packed(int M, int N, int K, const float *A, Py_ssize_t lda,
                            const uint32_t *P, float *C, Py_ssize_t ldc, int accumulate)
    uint32_t *fr_bf16_weights(size_t words)


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


cdef inline floating *bf16_pack(int K, int N, const floating *B, Py_ssize_t ldb, bint trans,
                                floating *P) noexcept nogil:
    """Pack op(B) (K, N) in bfloat16 panels into P (float32 only: P's floats hold the packed
    words, one each), for gemm_packed_bf16; returns the element after the copy."""
    if floating is float:
        return <floating *>fr_bf16_pack_b(K, N, B, ldb, trans, <uint32_t *>P)
    return P


cdef inline bint gemm_packed_bf16(int M, int N, int K, const floating *A, Py_ssize_t lda,
                                  const floating *P, floating *C, Py_ssize_t ldc,
                                  bint accumulate) noexcept nogil:
    """C[M, N] (+)= A @ B from B packed by bf16_pack, at bfloat16 precision (float32 only);
    False (nothing done) where it cannot run."""
    if floating is double:
        return False
    return fr_bf16_gemm_packed(M, N, K, A, lda, <const uint32_t *>P, C, ldc, accumulate) == 0
