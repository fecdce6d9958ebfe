/* One dtype's products: the packed layout, the micro-kernels for each instruction set, and the
 * entry points (declared in _packed.pxd), each of which calls the instantiation fr_isa() names.
 * Template, included by fr_gemm.h with FR_T and FR_FN(x). */

#include "fr_gemm_pack.h"

#define FR_IK(name) FR_FN(name##_avx2)
#define FR_VB 32
#define FR_MR 6
#define FR_ISA_KERNEL FR_KERNEL
#include "fr_gemm_impl.h"
#undef FR_IK
#undef FR_VB
#undef FR_MR
#undef FR_ISA_KERNEL

#if FR_HAVE_AVX512
/* the target for the inline helpers too (pragma, not FR_AVX512_KERNEL's attribute), so that
 * they may use AVX-512 intrinsics */
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define FR_IK(name) FR_FN(name##_avx512)
#define FR_VB 64
#define FR_MR 12
#define FR_ISA_KERNEL __attribute__((unused)) static
#include "fr_gemm_impl.h"
#undef FR_IK
#undef FR_VB
#undef FR_MR
#undef FR_ISA_KERNEL
#pragma GCC pop_options
#endif

#if FR_HAVE_AVX512
#define FR_DISPATCH(name, args)                                                         \
    do {                                                                                \
        if (fr_isa() == FR_ISA_AVX512) FR_FN(name##_avx512) args;                       \
        else FR_FN(name##_avx2) args;                                                   \
    } while (0)
#else
#define FR_DISPATCH(name, args) FR_FN(name##_avx2) args
#endif

/* C (+)= A @ B with B packed by pack_b (P) */
static inline void FR_FN(gemm_packed)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                      const FR_T *P, FR_T *C, ptrdiff_t ldc, int accumulate)
{
    FR_DISPATCH(gemm_packed, (M, N, K, A, lda, P, C, ldc, accumulate));
}

/* C (+)= A @ B with B row-major, rows ldb apart, not packed */
static inline void FR_FN(gemm_direct)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                      const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                      int accumulate)
{
    FR_DISPATCH(gemm_direct, (M, N, K, A, lda, B, ldb, C, ldc, accumulate));
}

/* C (+)= A^T @ B with A (K, M) and B (K, N) row-major */
static inline void FR_FN(gemm_direct_tn)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                         const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                         int accumulate)
{
    FR_DISPATCH(gemm_direct_tn, (M, N, K, A, lda, B, ldb, C, ldc, accumulate));
}

/* C (+)= A^T @ B with A (K, M) and B (K, N) row-major, K large (both packed per k-slice), and,
 * with sums (else NULL), sums = B's column sums in double; -1 if its workspace could not be
 * allocated (C and sums untouched) */
static inline int FR_FN(gemm_tn_packed)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                        const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                        int accumulate, double *sums)
{
#if FR_HAVE_AVX512
    if (fr_isa() == FR_ISA_AVX512)
        return FR_FN(gemm_tn_packed_avx512)(M, N, K, A, lda, B, ldb, C, ldc, accumulate, sums);
#endif
    return FR_FN(gemm_tn_packed_avx2)(M, N, K, A, lda, B, ldb, C, ldc, accumulate, sums);
}

/* C (+)= A @ W^T with W row-major (N, K) */
static inline void FR_FN(gemm_direct_nt)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                         const FR_T *W, ptrdiff_t ldw, FR_T *C, ptrdiff_t ldc,
                                         int accumulate)
{
    FR_DISPATCH(gemm_direct_nt, (M, N, K, A, lda, W, ldw, C, ldc, accumulate));
}

#undef FR_DISPATCH
