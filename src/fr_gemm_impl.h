/* The recurrent product with a packed weight matrix: C[M, N] (+)= A[M, K] @ B[K, N].
 *
 * This file is a template, included by fr_gemm.h with FR_T (float or double) and FR_FN(x).
 *
 * Why not BLAS here: every timestep multiplies a few batch rows by the same recurrent weights.
 * sgemm repacks all of B into its internal panel layout on every call, and for the step shapes
 * (M = batch, K = H, N = 4H) that repacking costs about as much as the arithmetic (measured:
 * BENCHMARKS.md).  pack_b lays B out once per forward (or backward) in the panel layout, and
 * gemm_packed then streams it for each of the T steps.  Everything else (the N*T-row products)
 * stays with BLAS, where repacking is amortised over many rows; and the kernels pack only where
 * it pays (worth_packing in _packed.pxd: at least two batch rows and two steps).
 *
 * Layout of a packed B: column panels of NR = two vectors of 32 bytes (16 floats, 8 doubles);
 * panel p holds B[k, p*NR + j] at P[(p*K + k)*NR + j], the last panel zero-padded.
 * The micro-kernel keeps an MR x NR block of C in 2*MR vector registers (12 of the 16 AVX2
 * registers) and per k does two vector loads of B, MR broadcasts of A and 2*MR FMAs.
 */

typedef FR_T FR_FN(vec_t) __attribute__((vector_size(32), aligned(sizeof(FR_T))));
#define FR_VW ((int)(32 / sizeof(FR_T)))     /* lanes per vector */
#define FR_NR (2 * FR_VW)                    /* panel width */
#define FR_MR 6                              /* rows per micro-kernel block */

/* elements a packed copy of a K x N matrix takes */
static inline size_t FR_FN(packed_size)(int K, int N)
{
    return (size_t)K * (size_t)((N + FR_NR - 1) / FR_NR) * FR_NR;
}

/* Pack B (K x N, element (k, n) at B[k*rs + n*cs]: rs = ldb, cs = 1 for B itself, rs = 1,
 * cs = ldb for the transpose of a row-major matrix) into P. */
static void FR_FN(pack_b)(int K, int N, const FR_T *B, ptrdiff_t rs, ptrdiff_t cs, FR_T *P)
{
    int panels = (N + FR_NR - 1) / FR_NR;
    for (int p = 0; p < panels; p++) {
        int n0 = p * FR_NR, w = N - n0 < FR_NR ? N - n0 : FR_NR;
        FR_T *dst = P + (size_t)p * K * FR_NR;
        if (cs == 1) {
            for (int k = 0; k < K; k++) {
                const FR_T *src = B + k * rs + n0;
                int j = 0;
                for (; j < w; j++) dst[(size_t)k * FR_NR + j] = src[j];
                for (; j < FR_NR; j++) dst[(size_t)k * FR_NR + j] = 0;
            }
        } else {
            /* transposed source: walk it along its rows (contiguous k) for locality */
            for (int j = 0; j < FR_NR; j++) {
                if (j < w) {
                    const FR_T *src = B + (n0 + j) * cs;
                    for (int k = 0; k < K; k++) dst[(size_t)k * FR_NR + j] = src[k * rs];
                } else {
                    for (int k = 0; k < K; k++) dst[(size_t)k * FR_NR + j] = 0;
                }
            }
        }
    }
}

/* One MR x NR block: acc = A[0:mr, :] @ Bpanel, then C (+)= acc for the first w columns.
 * mr is a constant at every call site (always_inline), so the accumulators live in registers. */
__attribute__((always_inline))
static inline void FR_FN(micro)(const int mr, int K, const FR_T *restrict A, ptrdiff_t lda,
                                const FR_T *restrict Bp, FR_T *restrict C, ptrdiff_t ldc,
                                int w, int accumulate)
{
    FR_FN(vec_t) c0[FR_MR], c1[FR_MR];
    for (int r = 0; r < mr; r++) { c0[r] = (FR_FN(vec_t)){0}; c1[r] = (FR_FN(vec_t)){0}; }
    /* no unrolling over k: 2*MR accumulators, 2 B vectors and a broadcast already fill the
     * register file, and unrolling made GCC spill accumulators to the stack */
#pragma GCC unroll 1
    for (int k = 0; k < K; k++, Bp += FR_NR, A++) {
        FR_FN(vec_t) b0 = *(const FR_FN(vec_t) *)Bp;
        FR_FN(vec_t) b1 = *(const FR_FN(vec_t) *)(Bp + FR_VW);
        for (int r = 0; r < mr; r++) {
            FR_T x = A[r * lda];
            c0[r] += x * b0;
            c1[r] += x * b1;
        }
    }
    if (w == FR_NR) {
        for (int r = 0; r < mr; r++) {
            FR_FN(vec_t) *c = (FR_FN(vec_t) *)(C + r * ldc);
            if (accumulate) { c[0] += c0[r]; c[1] += c1[r]; }
            else { c[0] = c0[r]; c[1] = c1[r]; }
        }
    } else {                                 /* last, partial panel */
        for (int r = 0; r < mr; r++) {
            FR_T tile[FR_NR];
            *(FR_FN(vec_t) *)tile = c0[r];
            *(FR_FN(vec_t) *)(tile + FR_VW) = c1[r];
            FR_T *c = C + r * ldc;
            for (int j = 0; j < w; j++) c[j] = accumulate ? c[j] + tile[j] : tile[j];
        }
    }
}

/* One or two rows (batch 1 or 2, or a remainder): with only 2*mr accumulators the FMA latency
 * chain would bound the loop, so k is split in two interleaved halves with separate
 * accumulators. */
__attribute__((always_inline))
static inline void FR_FN(micro_narrow)(const int mr, int K, const FR_T *restrict A, ptrdiff_t lda,
                                       const FR_T *restrict Bp, FR_T *restrict C, ptrdiff_t ldc,
                                       int w, int accumulate)
{
    FR_FN(vec_t) c0[2][2] = {{{0}}}, c1[2][2] = {{{0}}};
    int k = 0;
    for (; k + 2 <= K; k += 2, Bp += 2 * FR_NR) {
        for (int u = 0; u < 2; u++) {
            FR_FN(vec_t) b0 = *(const FR_FN(vec_t) *)(Bp + u * FR_NR);
            FR_FN(vec_t) b1 = *(const FR_FN(vec_t) *)(Bp + u * FR_NR + FR_VW);
            for (int r = 0; r < mr; r++) {
                FR_T x = A[r * lda + k + u];
                c0[u][r] += x * b0;
                c1[u][r] += x * b1;
            }
        }
    }
    for (; k < K; k++, Bp += FR_NR) {
        FR_FN(vec_t) b0 = *(const FR_FN(vec_t) *)Bp;
        FR_FN(vec_t) b1 = *(const FR_FN(vec_t) *)(Bp + FR_VW);
        for (int r = 0; r < mr; r++) {
            FR_T x = A[r * lda + k];
            c0[0][r] += x * b0;
            c1[0][r] += x * b1;
        }
    }
    for (int r = 0; r < mr; r++) {
        FR_T tile[FR_NR];
        *(FR_FN(vec_t) *)tile = c0[0][r] + c0[1][r];
        *(FR_FN(vec_t) *)(tile + FR_VW) = c1[0][r] + c1[1][r];
        FR_T *c = C + r * ldc;
        for (int j = 0; j < w; j++) c[j] = accumulate ? c[j] + tile[j] : tile[j];
    }
}

/* a block of mr <= MR rows; mr becomes a constant in each branch */
__attribute__((always_inline))
static inline void FR_FN(block)(int mr, int K, const FR_T *A, ptrdiff_t lda, const FR_T *Bp,
                                FR_T *C, ptrdiff_t ldc, int w, int accumulate)
{
    switch (mr) {
    case 6: FR_FN(micro)(6, K, A, lda, Bp, C, ldc, w, accumulate); break;
    case 5: FR_FN(micro)(5, K, A, lda, Bp, C, ldc, w, accumulate); break;
    case 4: FR_FN(micro)(4, K, A, lda, Bp, C, ldc, w, accumulate); break;
    case 3: FR_FN(micro)(3, K, A, lda, Bp, C, ldc, w, accumulate); break;
    case 2: FR_FN(micro_narrow)(2, K, A, lda, Bp, C, ldc, w, accumulate); break;
    case 1: FR_FN(micro_narrow)(1, K, A, lda, Bp, C, ldc, w, accumulate); break;
    default: break;
    }
}

/* k-slice of a panel that stays in L1 (32 KiB here) while all row blocks use it */
#define FR_KC ((int)(16384 / (FR_NR * sizeof(FR_T))))

/* C[M, N] = A[M, K] @ B (accumulate == 0) or C += A @ B (accumulate != 0), B packed by pack_b.
 * Rows of A and C are lda and ldc apart; A must not overlap C. */
FR_KERNEL void FR_FN(gemm_packed)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                  const FR_T *P, FR_T *C, ptrdiff_t ldc, int accumulate)
{
    int panels = (N + FR_NR - 1) / FR_NR;
    /* rows split into blocks of near-equal height (20 rows = 5+5+5+5, not 6+6+6+2: a thin last
     * block costs as many loads of B as a full one) */
    int blocks = (M + FR_MR - 1) / FR_MR;
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) C[i * ldc + j] = 0;
        return;
    }
    /* panel-outer: each panel of B comes from memory once per call; within it, a k-slice that
     * fits L1 is used by every row block before moving on; A (a few rows) stays in L2 */
    for (int p = 0; p < panels; p++) {
        int n0 = p * FR_NR, w = N - n0 < FR_NR ? N - n0 : FR_NR;
        for (int k0 = 0; k0 < K; k0 += FR_KC) {
            int kc = K - k0 < FR_KC ? K - k0 : FR_KC;
            const FR_T *Bp = P + ((size_t)p * K + k0) * FR_NR;
            int acc = accumulate || k0 > 0;
            for (int b = 0, i = 0; b < blocks; b++) {
                int mr = (M - i) / (blocks - b);       /* even split of the remaining rows */
                if (mr * (blocks - b) < M - i) mr++;
                FR_FN(block)(mr, kc, A + i * lda + k0, lda, Bp, C + i * ldc + n0, ldc, w, acc);
                i += mr;
            }
        }
    }
}

#undef FR_KC
#undef FR_VW
#undef FR_NR
#undef FR_MR
