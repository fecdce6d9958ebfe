/* The packed layout of the recurrent weights, shared by every instruction set's micro-kernels.
 *
 * This file is a template, included by fr_gemm.h with FR_T (float or double) and FR_FN(x).
 *
 * Layout of a packed B (K x N): column panels of FR_NR = 64 bytes (16 floats, 8 doubles);
 * panel p holds B[k, p*NR + j] at P[(p*K + k)*NR + j], the last panel zero-padded.  A panel row
 * is two AVX2 vectors or one AVX-512 vector, so one packed copy serves both micro-kernels
 * (fr_gemm_impl.h) and the choice between them can be made per call.
 */

/* elements a packed copy of a K x N matrix takes */
static inline size_t FR_FN(packed_size)(int K, int N)
{
    return (size_t)K * (size_t)((N + FR_NR - 1) / FR_NR) * FR_NR;
}

/* Pack B (K x N, element (k, n) at B[k*rs + n*cs]: rs = ldb, cs = 1 for B itself, rs = 1,
 * cs = ldb for the transpose of a row-major matrix) as rows k0 .. k0+K-1 of a packed matrix of
 * kp >= k0 + K rows at P: two calls stack two matrices [B1; B2] (the input and the recurrent
 * weights, for one product of [x_t | h_{t-1}]) without making the stack. */
static void FR_FN(pack_b_rows)(int K, int N, const FR_T *B, ptrdiff_t rs, ptrdiff_t cs, FR_T *P,
                               int k0, int kp)
{
    int panels = (N + FR_NR - 1) / FR_NR, full = N / FR_NR, w = N - full * FR_NR;
    size_t ps = (size_t)kp * FR_NR;                      /* one packed panel */
    if (cs == 1) {
        /* row by row, in memory order (B may be the whole-sequence dG, read from memory:
         * panel by panel, each row's line would be a stride of its own); a full panel row is
         * a constant-size copy, which compiles to vector moves */
        for (int k = 0; k < K; k++) {
            const FR_T *src = B + k * rs;
            FR_T *dst = P + (size_t)(k0 + k) * FR_NR;
            for (int p = 0; p < full; p++)
                memcpy(dst + p * ps, src + p * FR_NR, FR_NR * sizeof(FR_T));
            if (w) {                                     /* the last, partial panel: padded */
                int j = 0;
                for (; j < w; j++) dst[full * ps + j] = src[full * FR_NR + j];
                for (; j < FR_NR; j++) dst[full * ps + j] = 0;
            }
        }
        return;
    }
    /* transposed source: walk it along its rows (contiguous k) for locality */
    for (int p = 0; p < panels; p++) {
        int n0 = p * FR_NR, pw = N - n0 < FR_NR ? N - n0 : FR_NR;
        FR_T *dst = P + ((size_t)p * kp + k0) * FR_NR;
        for (int j = 0; j < FR_NR; j++) {
            if (j < pw) {
                const FR_T *src = B + (n0 + j) * cs;
                for (int k = 0; k < K; k++) dst[(size_t)k * FR_NR + j] = src[k * rs];
            } else {
                for (int k = 0; k < K; k++) dst[(size_t)k * FR_NR + j] = 0;
            }
        }
    }
}

/* Pack all of B (K x N, strides as for pack_b_rows) into P. */
static void FR_FN(pack_b)(int K, int N, const FR_T *B, ptrdiff_t rs, ptrdiff_t cs, FR_T *P)
{
    FR_FN(pack_b_rows)(K, N, B, rs, cs, P, 0, K);
}

/* C = 0 (accumulate == 0) for an empty inner dimension */
static void FR_FN(zero_if_set)(int M, int N, FR_T *C, ptrdiff_t ldc, int accumulate)
{
    if (!accumulate)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[i * ldc + j] = 0;
}

