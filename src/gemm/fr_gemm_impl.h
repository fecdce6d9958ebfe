/* The micro-kernels of the recurrent products, for one instruction set: C[M, N] (+)= A[M, K] @ B.
 *
 * This file is a template, included by fr_gemm.h once per dtype and instruction set with FR_T
 * (float or double), FR_IK(x) (the instantiation's names), FR_VB (vector bytes: 32 for AVX2,
 * 64 for AVX-512), FR_MR (rows per register block) and FR_ISA_KERNEL (how the entry points are
 * compiled).  fr_gemm.h picks the instantiation per call (fr_isa).
 *
 * Why not BLAS here: every timestep multiplies a few batch rows by the same recurrent weights.
 * sgemm repacks all of B into its internal panel layout on every call, and for the step shapes
 * (M = batch, K = H, N = 4H) that repacking costs about as much as the arithmetic (measured:
 * BENCHMARKS.md).  pack_b (fr_gemm_pack.h) lays B out once per forward (or backward) in the
 * panel layout, and gemm_packed then streams it for each of the T steps.  Everything else (the
 * N*T-row products) stays with BLAS, where repacking is amortised over many rows; and the
 * kernels pack only where it pays (worth_packing in _packed.pxd).
 *
 * The micro-kernel keeps an MR x NR block of C in registers, NV = NR / lanes vectors per row:
 * AVX2 (16 registers): 6 rows x 2 vectors, 12 accumulators; per k two vector loads of B, 6
 * broadcasts of A and 12 FMAs.  AVX-512 (32 registers, twice the lanes): 12 rows x 1 vector,
 * per k one load of B and 12 FMAs with a broadcast operand.
 */

typedef FR_T FR_IK(vec_t) __attribute__((vector_size(FR_VB), aligned(sizeof(FR_T))));
#define FR_VW ((int)(FR_VB / sizeof(FR_T)))  /* lanes per vector */
#define FR_NV (FR_NR / FR_VW)                /* vectors per panel row: 2 (AVX2) or 1 (AVX-512) */
#define FR_KU (4 / FR_NV)                    /* interleaved k-chains of micro_narrow */

/* One MR x NR block: acc = A[0:mr, :] @ Bpanel, then C (+)= acc for the first w columns.
 * mr is a constant at every call site (always_inline), so the accumulators live in registers.
 * `at` (a constant too) says A is given transposed: element (r, k) at A[r + k*lda] instead of
 * A[r*lda + k] (the weight gradients' X^T @ dG, see gemm_direct_tn). */
__attribute__((always_inline))
static inline void FR_IK(micro)(const int mr, int K, const FR_T *restrict A, ptrdiff_t lda,
                                const FR_T *restrict Bp, ptrdiff_t bs, FR_T *restrict C,
                                ptrdiff_t ldc, int w, int accumulate, const int at)
{
    const ptrdiff_t ars = at ? 1 : lda, acs = at ? lda : 1;
    FR_IK(vec_t) c[FR_MR][FR_NV];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < FR_NV; v++) c[r][v] = (FR_IK(vec_t)){0};
    /* no unrolling over k: the accumulators, B's vectors and a broadcast already fill the
     * register file, and unrolling made GCC spill accumulators to the stack */
#pragma GCC unroll 1
    for (int k = 0; k < K; k++, Bp += bs, A += acs) {
        FR_IK(vec_t) b[FR_NV];
        for (int v = 0; v < FR_NV; v++) b[v] = *(const FR_IK(vec_t) *)(Bp + v * FR_VW);
        for (int r = 0; r < mr; r++) {
            FR_T x = A[r * ars];
            for (int v = 0; v < FR_NV; v++) c[r][v] += x * b[v];
        }
    }
    if (w == FR_NR) {
        for (int r = 0; r < mr; r++) {
            FR_IK(vec_t) *cr = (FR_IK(vec_t) *)(C + r * ldc);
            for (int v = 0; v < FR_NV; v++) cr[v] = accumulate ? cr[v] + c[r][v] : c[r][v];
        }
    } else {                                 /* last, partial panel */
        for (int r = 0; r < mr; r++) {
            FR_T tile[FR_NR];
            for (int v = 0; v < FR_NV; v++) *(FR_IK(vec_t) *)(tile + v * FR_VW) = c[r][v];
            FR_T *cr = C + r * ldc;
            for (int j = 0; j < w; j++) cr[j] = accumulate ? cr[j] + tile[j] : tile[j];
        }
    }
}

/* One or two rows (batch 1 or 2, or a remainder): with only mr * NV accumulators the FMA
 * latency chain would bound the loop, so k is split in KU interleaved chains with separate
 * accumulators (4 independent chains per row in both instruction sets). */
__attribute__((always_inline))
static inline void FR_IK(micro_narrow)(const int mr, int K, const FR_T *restrict A,
                                       ptrdiff_t lda, const FR_T *restrict Bp, ptrdiff_t bs,
                                       FR_T *restrict C, ptrdiff_t ldc, int w, int accumulate,
                                       const int at)
{
    const ptrdiff_t ars = at ? 1 : lda, acs = at ? lda : 1;
    FR_IK(vec_t) c[FR_KU][2][FR_NV];
    for (int u = 0; u < FR_KU; u++)
        for (int r = 0; r < mr; r++)
            for (int v = 0; v < FR_NV; v++) c[u][r][v] = (FR_IK(vec_t)){0};
    int k = 0;
    for (; k + FR_KU <= K; k += FR_KU, Bp += FR_KU * bs) {
        for (int u = 0; u < FR_KU; u++) {
            for (int v = 0; v < FR_NV; v++) {
                FR_IK(vec_t) bv = *(const FR_IK(vec_t) *)(Bp + u * bs + v * FR_VW);
                for (int r = 0; r < mr; r++) c[u][r][v] += A[r * ars + (k + u) * acs] * bv;
            }
        }
    }
    for (; k < K; k++, Bp += bs) {
        for (int v = 0; v < FR_NV; v++) {
            FR_IK(vec_t) bv = *(const FR_IK(vec_t) *)(Bp + v * FR_VW);
            for (int r = 0; r < mr; r++) c[0][r][v] += A[r * ars + k * acs] * bv;
        }
    }
    for (int r = 0; r < mr; r++) {
        FR_T tile[FR_NR];
        for (int v = 0; v < FR_NV; v++) {
            FR_IK(vec_t) s = c[0][r][v];
            for (int u = 1; u < FR_KU; u++) s += c[u][r][v];
            *(FR_IK(vec_t) *)(tile + v * FR_VW) = s;
        }
        FR_T *cr = C + r * ldc;
        for (int j = 0; j < w; j++) cr[j] = accumulate ? cr[j] + tile[j] : tile[j];
    }
}

/* a block of mr <= MR rows; mr becomes a constant in each branch */
__attribute__((always_inline))
static inline void FR_IK(block)(int mr, int K, const FR_T *A, ptrdiff_t lda, const FR_T *Bp,
                                ptrdiff_t bs, FR_T *C, ptrdiff_t ldc, int w, int accumulate,
                                const int at)
{
#define FR_MICRO_CASE(m) \
    case (m): FR_IK(micro)((m), K, A, lda, Bp, bs, C, ldc, w, accumulate, at); break;
    switch (mr) {
#if FR_MR == 12
    FR_MICRO_CASE(12) FR_MICRO_CASE(11) FR_MICRO_CASE(10) FR_MICRO_CASE(9) FR_MICRO_CASE(8)
    FR_MICRO_CASE(7)
#elif FR_MR != 6
#error "FR_MR: the register blocks are 6 (AVX2) or 12 (AVX-512) rows"
#endif
    FR_MICRO_CASE(6) FR_MICRO_CASE(5) FR_MICRO_CASE(4) FR_MICRO_CASE(3)
    case 2: FR_IK(micro_narrow)(2, K, A, lda, Bp, bs, C, ldc, w, accumulate, at); break;
    case 1: FR_IK(micro_narrow)(1, K, A, lda, Bp, bs, C, ldc, w, accumulate, at); break;
    default: break;
    }
#undef FR_MICRO_CASE
}

/* All row blocks of one k-slice of one panel: rows split into blocks of near-equal height
 * (fr_block_rows). */
__attribute__((always_inline))
static inline void FR_IK(row_blocks)(int M, int kc, const FR_T *A, ptrdiff_t lda,
                                     const FR_T *Bp, ptrdiff_t bs, FR_T *C, ptrdiff_t ldc,
                                     int w, int accumulate, const int at)
{
    int blocks = (M + FR_MR - 1) / FR_MR;
    for (int b = 0, i = 0; b < blocks; b++) {
        int mr = fr_block_rows(M - i, blocks - b);
        FR_IK(block)(mr, kc, A + (at ? i : i * lda), lda, Bp, bs, C + i * ldc, ldc, w, accumulate,
                     at);
        i += mr;
    }
}

/* k-slice of a panel that stays in L1 (32 KiB here) while all row blocks use it */
#define FR_KC ((int)(16384 / (FR_NR * sizeof(FR_T))))
/* k-slice of an unpacked B whose rows lie more than a page apart (see gemm_strips) */
#define FR_KC_FAR 32
/* rows of an unpacked B per sweep of gemm_rows (a few rows of A) */
#define FR_ROWS_KB 12

/* One k-slice of one 16-column strip of B: all row blocks of A times it.  For an unpacked B,
 * the last, partial strip is first copied into a zero-padded tile, so no read passes the end of
 * a row. */
__attribute__((always_inline))
static inline void FR_IK(strip)(int M, int N, int K, int p, int k0, int kcmax, const FR_T *A,
                                ptrdiff_t lda, const FR_T *B, ptrdiff_t ldb, int packed, FR_T *C,
                                ptrdiff_t ldc, int accumulate, FR_T *tile, const int at)
{
    int n0 = p * FR_NR, w = N - n0 < FR_NR ? N - n0 : FR_NR;
    int kc = K - k0 < kcmax ? K - k0 : kcmax;
    const FR_T *Bp = packed ? B + ((size_t)p * K + k0) * FR_NR : B + (size_t)k0 * ldb + n0;
    ptrdiff_t bs = packed ? FR_NR : ldb;
    if (!packed && w < FR_NR) {
        for (int k = 0; k < kc; k++) {
            int j = 0;
            for (; j < w; j++) tile[k * FR_NR + j] = Bp[(size_t)k * ldb + j];
            for (; j < FR_NR; j++) tile[k * FR_NR + j] = 0;
        }
        Bp = tile;
        bs = FR_NR;
    }
    FR_IK(row_blocks)(M, kc, A + (at ? k0 * lda : k0), lda, Bp, bs, C + n0, ldc, w,
                      accumulate || k0 > 0, at);
}

/* The driver of all three products: C[M, N] = A[M, K] @ B (accumulate == 0) or C += A @ B, with
 * B packed by pack_b (packed != 0: P = B) or row-major with rows ldb apart.  Rows of A (or, with
 * `at`, of A^T) and of C are lda and ldc apart; A must not overlap C.  `packed` and `at` are
 * constants in each caller.
 * - Packed B: strip-outer.  Each strip is contiguous, comes from memory once per call, and its
 *   k-slices stay in L1 while every row block uses them; A (a few rows) stays in L2.
 * - Unpacked B (gemm_direct from 9 rows on): k-slice-outer.  A strip of a row-major B takes one
 *   cache line from each of the slice's rows; taking all strips of one k-slice before the next
 *   sweeps each of those rows left to right, one stream per row.  Once rows are over 4 KiB
 *   apart each stream is on a page of its own, and the hardware prefetchers follow 32 of them
 *   but not 256: k-slices of FR_KC_FAR = 32 rows there (LSTM cell N20 H650, a 650 x 2600 B
 *   read from memory after other work: forward 3.0 -> 1.5-1.9 ms; the product from cache
 *   69-73 -> 99 GF/s, AVX2 70 -> 83), FR_KC otherwise (a 256 x 1024 B ran at 98 GF/s with
 *   32-row slices, 110-126 with 256).  While a k-slice is multiplied, each strip prefetches
 *   the next slice's lines of its columns (prefetcht1): on the EPYC the prefetchers did not
 *   keep up with the 32 streams, and a 650 x 2600 B from memory (cycling six of them) ran at
 *   the pace of its loads.  Measured in a C harness, alternating with the build without,
 *   one thread, GF/s: M20 K650 N2600 from memory 37-40 -> 78-83, from L3 44-57 -> 87-88;
 *   M9-24 likewise 2x from memory, AVX2 M20 37 -> 71; M20 K100 N400 and M24 K256 N1024 (one
 *   slice or in cache) unchanged.  (For up to 8 rows gemm_direct reads B in memory order
 *   instead, see gemm_rows: there the strip order was measured 2-5x slower in some processes.) */
__attribute__((always_inline))
static inline void FR_IK(gemm_strips)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                      const FR_T *B, ptrdiff_t ldb, int packed, FR_T *C,
                                      ptrdiff_t ldc, int accumulate, const int at)
{
    FR_T tile[FR_KC * FR_NR] __attribute__((aligned(64)));
    int panels = (N + FR_NR - 1) / FR_NR;
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        FR_FN(zero_if_set)(M, N, C, ldc, accumulate);
        return;
    }
    if (packed) {
        for (int p = 0; p < panels; p++)
            for (int k0 = 0; k0 < K; k0 += FR_KC)
                FR_IK(strip)(M, N, K, p, k0, FR_KC, A, lda, B, ldb, 1, C, ldc, accumulate, tile,
                             at);
    } else {
        int kc = (size_t)ldb * sizeof(FR_T) > 4096 ? FR_KC_FAR : FR_KC;
        for (int k0 = 0; k0 < K; k0 += kc) {
            /* rows of the next k-slice, fetched while this one is multiplied */
            int next = K - k0 - kc < kc ? K - k0 - kc : kc;
            const FR_T *Bnext = next > 0 ? B + (size_t)(k0 + kc) * ldb : B;
            for (int p = 0; p < panels; p++) {
                for (int k = 0; k < next; k++)
                    __builtin_prefetch(Bnext + (size_t)k * ldb + p * FR_NR, 0, 2);
                FR_IK(strip)(M, N, K, p, k0, kc, A, lda, B, ldb, 0, C, ldc, accumulate, tile, at);
            }
        }
    }
}

/* ---- A few rows times an unpacked B, streaming B row by row (gemm_direct for M <= 8).
 * With few rows, B's bytes are the cost.  Reading B strip by strip (the layout of the register
 * blocks) takes one cache line from each of K rows, a page apart once rows are over 4 KiB long;
 * on these VMs that made the same product 0.5-3.3 ms from one array to the next (650 x 2600,
 * M = 4), where sgemm, which reads B row by row while packing it, took 1.1-1.6 ms (this order:
 * 0.27-0.47 ms).  Here B is read in the order it lies in memory: rows k0..k0+11 at a time,
 * swept left to right, while pairs of rows of C take their twelve multiply-adds per vector (C
 * stays in L1 or L2).  Twelve rows a sweep rather than four: a 650 x 2600 B from memory
 * (cycling six), M = 1, took 302 us at four (22 GB/s; NumPy's sgemv 245) and 198-200 at twelve
 * or sixteen (34 GB/s); M = 2 / 4 / 8: 1.36 / 1.36 / 1.18x, in a C harness, AVX-512 and AVX2
 * alike.  Each element of C is still summed over k in order: the same bits. */
__attribute__((always_inline))
static inline void FR_IK(rows_block)(const int mr, const int kb, int N, const FR_T *A,
                                     ptrdiff_t lda, const FR_T *B, ptrdiff_t ldb, FR_T *C,
                                     ptrdiff_t ldc, int overwrite)
{
    FR_T a[2][FR_ROWS_KB];
    for (int r = 0; r < mr; r++)
        for (int u = 0; u < kb; u++) a[r][u] = A[r * lda + u];
    int j = 0;
    for (; j + FR_VW <= N; j += FR_VW) {
        FR_IK(vec_t) acc[2];
        for (int r = 0; r < mr; r++)
            acc[r] = overwrite ? (FR_IK(vec_t)){0} : *(FR_IK(vec_t) *)(C + r * ldc + j);
        for (int u = 0; u < kb; u++) {
            FR_IK(vec_t) b = *(const FR_IK(vec_t) *)(B + u * ldb + j);
            for (int r = 0; r < mr; r++) acc[r] += a[r][u] * b;
        }
        for (int r = 0; r < mr; r++) *(FR_IK(vec_t) *)(C + r * ldc + j) = acc[r];
    }
    for (; j < N; j++)
        for (int r = 0; r < mr; r++) {
            FR_T acc = overwrite ? 0 : C[r * ldc + j];
            for (int u = 0; u < kb; u++) acc += a[r][u] * B[u * ldb + j];
            C[r * ldc + j] = acc;
        }
}

__attribute__((always_inline))
static inline void FR_IK(gemm_rows)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                    const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                    int accumulate)
{
    int kb;
    for (int k0 = 0; k0 < K; k0 += kb) {
        /* FR_ROWS_KB rows a sweep; the rest by fours, then ones (constant sizes unroll) */
        kb = K - k0 >= FR_ROWS_KB ? FR_ROWS_KB : K - k0 >= 4 ? 4 : 1;
        int overwrite = !accumulate && k0 == 0;
        for (int i = 0; i < M; i += 2) {
            const FR_T *Ai = A + (size_t)i * lda + k0, *Bk = B + (size_t)k0 * ldb;
            FR_T *Ci = C + (size_t)i * ldc;
            int two = M - i >= 2;
            if (kb == FR_ROWS_KB && two)
                FR_IK(rows_block)(2, FR_ROWS_KB, N, Ai, lda, Bk, ldb, Ci, ldc, overwrite);
            else if (kb == FR_ROWS_KB)
                FR_IK(rows_block)(1, FR_ROWS_KB, N, Ai, lda, Bk, ldb, Ci, ldc, overwrite);
            else if (kb == 4 && two)
                FR_IK(rows_block)(2, 4, N, Ai, lda, Bk, ldb, Ci, ldc, overwrite);
            else if (kb == 4)
                FR_IK(rows_block)(1, 4, N, Ai, lda, Bk, ldb, Ci, ldc, overwrite);
            else if (two)
                FR_IK(rows_block)(2, 1, N, Ai, lda, Bk, ldb, Ci, ldc, overwrite);
            else
                FR_IK(rows_block)(1, 1, N, Ai, lda, Bk, ldb, Ci, ldc, overwrite);
        }
    }
}

#if FR_VB == 64
/* ---- AVX-512, packed B: register blocks of several panels.
 * With one 16-column panel per block (micro: 12 rows x 1 vector), each k takes one load of B
 * and 12 broadcasts of A for 12 FMAs: more loads than FMAs, and the two load ports, not the
 * FMA units, set the pace.  A block of np panels side by side (panel v at Bp + v * ps) reuses
 * each broadcast np times: 12 rows x 2 panels is 24 accumulators, 14 loads per 24 FMAs; up to
 * 4 rows x 4 panels, 8 loads per 16 FMAs.  Measured in a C harness, alternating with the
 * one-panel blocks (GF/s, one thread, two runs): M64 K512 N2048 143-149 -> 175-185, M32 K256
 * N1024 155-166 -> 185-192, M20 K650 N2600 135-145 -> 149-155, M10 K650 N2600 118-131 ->
 * 133-138, M4 K128 N512 115-116 -> 165-172 (4 panels); M4-6 K650 N2600 (B from L3) 56-85
 * either way. */
#define FR_PG_MAX 4

/* the first w (1..FR_VW) elements at p, the rest of the vector zero; nothing past them is read */
__attribute__((always_inline))
static inline FR_IK(vec_t) FR_IK(load_first)(const FR_T *p, int w)
{
    if (sizeof(FR_T) == 4)
        return (FR_IK(vec_t))_mm512_maskz_loadu_ps((__mmask16)((1u << w) - 1), p);
    return (FR_IK(vec_t))_mm512_maskz_loadu_pd((__mmask8)((1u << w) - 1), p);
}

/* store the first w (1..FR_VW) elements of x at p; nothing past them is written */
__attribute__((always_inline))
static inline void FR_IK(store_first)(FR_T *p, FR_IK(vec_t) x, int w)
{
    if (sizeof(FR_T) == 4)
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << w) - 1), (__m512)x);
    else
        _mm512_mask_storeu_pd(p, (__mmask8)((1u << w) - 1), (__m512d)x);
}

/* masked (a constant): the last panel is read only in its first wlast columns (B as it is,
 * whose last panel is not padded) */
__attribute__((always_inline))
static inline void FR_IK(micro_pg)(const int mr, const int np, int K, const FR_T *restrict A,
                                   ptrdiff_t lda, const FR_T *restrict Bp, size_t ps,
                                   ptrdiff_t bs, FR_T *restrict C, ptrdiff_t ldc, int wlast,
                                   int accumulate, const int at, const int masked)
{
    const ptrdiff_t ars = at ? 1 : lda, acs = at ? lda : 1;    /* as in micro */
    FR_IK(vec_t) c[FR_MR][FR_PG_MAX];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < np; v++) c[r][v] = (FR_IK(vec_t)){0};
#pragma GCC unroll 1
    for (int k = 0; k < K; k++, Bp += bs, A += acs) {
        FR_IK(vec_t) b[FR_PG_MAX];
        for (int v = 0; v < np; v++)
            b[v] = masked && v == np - 1 ? FR_IK(load_first)(Bp + v * ps, wlast)
                                         : *(const FR_IK(vec_t) *)(Bp + v * ps);
        for (int r = 0; r < mr; r++) {
            FR_T x = A[r * ars];
            for (int v = 0; v < np; v++) c[r][v] += x * b[v];
        }
    }
    for (int r = 0; r < mr; r++) {
        for (int v = 0; v < np; v++) {
            FR_T *cr = C + r * ldc + v * FR_NR;
            if (masked && v == np - 1) {     /* (a tile here made GCC keep c in memory) */
                FR_IK(vec_t) sum = c[r][v];
                if (accumulate)
                    sum += FR_IK(load_first)(cr, wlast);
                FR_IK(store_first)(cr, sum, wlast);
            } else if (v == np - 1 && wlast < FR_NR) {   /* last, partial panel */
                FR_T tile[FR_NR];
                *(FR_IK(vec_t) *)tile = c[r][v];
                for (int j = 0; j < wlast; j++) cr[j] = accumulate ? cr[j] + tile[j] : tile[j];
            } else {
                FR_IK(vec_t) *cv = (FR_IK(vec_t) *)cr;
                *cv = accumulate ? *cv + c[r][v] : c[r][v];
            }
        }
    }
}

/* a block of 3 <= mr <= MR rows times np panels: mr and np constants in each branch (np <= 2
 * from 5 rows on, where 2 panels already fill the registers); `at` as in micro.  Panel v
 * starts at Bp + v * ps and its rows are bs apart: packed, ps is a panel and bs = FR_NR; B as
 * it is (gemm_direct_pg), ps = FR_NR and bs is B's row stride. */
__attribute__((always_inline))
static inline void FR_IK(block_pg)(int mr, int np, int K, const FR_T *A, ptrdiff_t lda,
                                   const FR_T *Bp, size_t ps, ptrdiff_t bs, FR_T *C,
                                   ptrdiff_t ldc, int wlast, int accumulate, const int at,
                                   const int masked)
{
#define FR_PG_CASE(m, n) \
    case (m) * 8 + (n): \
        FR_IK(micro_pg)((m), (n), K, A, lda, Bp, ps, bs, C, ldc, wlast, accumulate, at, \
                        masked); break;
    switch (mr * 8 + np) {
    FR_PG_CASE(12, 2) FR_PG_CASE(11, 2) FR_PG_CASE(10, 2) FR_PG_CASE(9, 2) FR_PG_CASE(8, 2)
    FR_PG_CASE(7, 2) FR_PG_CASE(6, 2) FR_PG_CASE(5, 2)
    FR_PG_CASE(12, 1) FR_PG_CASE(11, 1) FR_PG_CASE(10, 1) FR_PG_CASE(9, 1) FR_PG_CASE(8, 1)
    FR_PG_CASE(7, 1) FR_PG_CASE(6, 1) FR_PG_CASE(5, 1)
    FR_PG_CASE(4, 4) FR_PG_CASE(4, 3) FR_PG_CASE(4, 2) FR_PG_CASE(4, 1)
    FR_PG_CASE(3, 4) FR_PG_CASE(3, 3) FR_PG_CASE(3, 2) FR_PG_CASE(3, 1)
    default: break;
    }
#undef FR_PG_CASE
}

/* C (+)= A @ B, B packed, M >= 3: groups of panels outer (2, or 4 for up to 4 rows), k-slices
 * of FR_KC next (32 KiB of a 2-panel group: L1), row blocks of near-equal height inner
 * (fr_block_rows).  The k-slices are micro's, so each entry is summed in the same order as by
 * the AVX2 kernels, and the two sets agree bitwise from 3 rows on (tests/test_isa.py). */
__attribute__((always_inline))
static inline void FR_IK(gemm_packed_pg)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                         const FR_T *P, FR_T *C, ptrdiff_t ldc, int accumulate)
{
    int panels = (N + FR_NR - 1) / FR_NR, blocks = (M + FR_MR - 1) / FR_MR;
    int group = M <= 4 ? 4 : 2;
    size_t ps = (size_t)K * FR_NR;                       /* one panel */
    for (int p0 = 0; p0 < panels; p0 += group) {
        int np = panels - p0 < group ? panels - p0 : group;
        int wlast = N - (p0 + np - 1) * FR_NR;
        for (int k0 = 0; k0 < K; k0 += FR_KC) {
            int kc = K - k0 < FR_KC ? K - k0 : FR_KC;
            for (int b = 0, i = 0; b < blocks; b++) {
                int mr = fr_block_rows(M - i, blocks - b);
                FR_IK(block_pg)(mr, np, kc, A + (size_t)i * lda + k0, lda,
                                P + (size_t)p0 * ps + (size_t)k0 * FR_NR, ps, FR_NR,
                                C + (size_t)i * ldc + p0 * FR_NR, ldc,
                                wlast > FR_NR ? FR_NR : wlast, accumulate || k0 > 0, 0, 0);
                i += mr;
            }
        }
    }
}

/* C (+)= A @ B with B as it is, M >= 9 (gemm_direct): gemm_strips' unpacked order (k-slices
 * outer, the next slice prefetched), but the 16-column strips in pairs, each register block
 * two panels wide (micro_pg) as for packed B: one broadcast of A feeds two FMAs, where the
 * one-panel blocks issued a load per FMA; and the last, partial strip read with masked loads
 * rather than copied into a zero-padded tile first (0.6 us of a 4.7 us M20 K100 N100).  The
 * same k-slices and order of sums as gemm_strips: the same bits.  Measured, one thread, EPYC,
 * alternating processes with the one-panel strips (matmul_direct, GF/s): BENCHMARKS.md,
 * "Single steps". */
__attribute__((always_inline))
static inline void FR_IK(gemm_direct_pg)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                         const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                         int accumulate)
{
    int panels = (N + FR_NR - 1) / FR_NR, blocks = (M + FR_MR - 1) / FR_MR;
    int kcmax = (size_t)ldb * sizeof(FR_T) > 4096 ? FR_KC_FAR : FR_KC;
    for (int k0 = 0; k0 < K; k0 += kcmax) {
        int kc = K - k0 < kcmax ? K - k0 : kcmax, acc = accumulate || k0 > 0;
        int next = K - k0 - kc < kcmax ? K - k0 - kc : kcmax;
        const FR_T *Bnext = next > 0 ? B + (size_t)(k0 + kc) * ldb : B;
        for (int p0 = 0, np; p0 < panels; p0 += np) {
            /* (a partial last panel goes alone: masked two-panel blocks spilled registers) */
            np = panels - p0 >= 2 && N - (p0 + 1) * FR_NR >= FR_NR ? 2 : 1;
            int wlast = N - (p0 + np - 1) * FR_NR;
            wlast = wlast > FR_NR ? FR_NR : wlast;
            for (int k = 0; k < next; k++)
                for (int v = 0; v < np; v++)
                    __builtin_prefetch(Bnext + (size_t)k * ldb + (p0 + v) * FR_NR, 0, 2);
            for (int b = 0, i = 0; b < blocks; b++) {
                int mr = fr_block_rows(M - i, blocks - b);
                const FR_T *Ai = A + (size_t)i * lda + k0, *Bk = B + (size_t)k0 * ldb + p0 * FR_NR;
                FR_T *Ci = C + (size_t)i * ldc + p0 * FR_NR;
                if (wlast == FR_NR)
                    FR_IK(block_pg)(mr, np, kc, Ai, lda, Bk, FR_NR, ldb, Ci, ldc, FR_NR, acc, 0,
                                    0);
                else
                    FR_IK(block_pg)(mr, 1, kc, Ai, lda, Bk, FR_NR, ldb, Ci, ldc, wlast, acc, 0,
                                    1);
                i += mr;
            }
        }
    }
}
#undef FR_PG_MAX
#endif

/* C (+)= A @ B with B packed by pack_b (P) */
FR_ISA_KERNEL void FR_IK(gemm_packed)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                  const FR_T *P, FR_T *C, ptrdiff_t ldc, int accumulate)
{
#if FR_VB == 64
    if (M >= 3 && N > 0 && K > 0) {
        FR_IK(gemm_packed_pg)(M, N, K, A, lda, P, C, ldc, accumulate);
        return;
    }
#endif
    FR_IK(gemm_strips)(M, N, K, A, lda, P, 0, 1, C, ldc, accumulate, 0);
}

/* C (+)= A @ B with B as it is: row-major, rows ldb apart, not packed.  For a product made once
 * per call (a single step: a cell, a generation step), where packing B would cost a pass over
 * it and BLAS's sgemm packs it on every call (measured: BENCHMARKS.md, "direct"). */
FR_ISA_KERNEL void FR_IK(gemm_direct)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                  const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                  int accumulate)
{
    if (M <= 8 && M > 0 && N > 0 && K > 0)
        FR_IK(gemm_rows)(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
#if FR_VB == 64
    else if (M > 8 && N > 0 && K > 0)
        FR_IK(gemm_direct_pg)(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
#endif
    else
        FR_IK(gemm_strips)(M, N, K, A, lda, B, ldb, 0, C, ldc, accumulate, 0);
}

/* C[M, N] (+)= A^T @ B with A (K, M) and B (K, N) row-major, rows lda and ldb apart: a weight
 * gradient (dW = X^T @ dG) over a few rows K, e.g. a single step.  With K small, C is the bulk
 * of the memory traffic and sgemm's packing of both operands the bulk of the time.  Here each
 * 6 x 16 block of C is summed over a k-slice in registers (the 6 values of A a step needs lie
 * side by side in one row of A) and stored once, and C is written row block by row block, left
 * to right: strip by strip, the stores to C were scattered over its rows and the product ran at
 * half the speed of sgemm for a 650 x 2600 C. */
FR_ISA_KERNEL void FR_IK(gemm_direct_tn)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                     const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                     int accumulate)
{
    FR_T tile[FR_KC * FR_NR] __attribute__((aligned(64)));
    int full = N / FR_NR, w = N - full * FR_NR;
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        FR_FN(zero_if_set)(M, N, C, ldc, accumulate);
        return;
    }
    int blocks = (M + FR_MR - 1) / FR_MR;
    for (int k0 = 0; k0 < K; k0 += FR_KC) {
        int kc = K - k0 < FR_KC ? K - k0 : FR_KC, acc = accumulate || k0 > 0;
        const FR_T *Ak = A + (size_t)k0 * lda, *Bk = B + (size_t)k0 * ldb;
        if (w) {                       /* the last, partial strip, zero-padded */
            for (int k = 0; k < kc; k++) {
                int j = 0;
                for (; j < w; j++) tile[k * FR_NR + j] = Bk[(size_t)k * ldb + full * FR_NR + j];
                for (; j < FR_NR; j++) tile[k * FR_NR + j] = 0;
            }
        }
        for (int b = 0, i = 0; b < blocks; b++) {
            int mr = fr_block_rows(M - i, blocks - b);
            for (int p = 0; p < full; p++)
                FR_IK(block)(mr, kc, Ak + i, lda, Bk + p * FR_NR, ldb,
                             C + (size_t)i * ldc + p * FR_NR, ldc, FR_NR, acc, 1);
            if (w)
                FR_IK(block)(mr, kc, Ak + i, lda, tile, FR_NR, C + (size_t)i * ldc + full * FR_NR,
                             ldc, w, acc, 1);
            i += mr;
        }
    }
}

/* Pack A^T's k-slice (A: kc x M, rows lda apart) for gemm_tn_packed as its row blocks of
 * fr_block_rows heights: block i holds A[k, i:i+mr] for each k, side by side ([k][mr]), at
 * Ap + i * kc.  A is read in chunks of FR_AT_CHUNK rows, every block's values of a chunk before
 * the next: A is the whole-sequence [X | Hprev], which comes from memory, and reading it a block
 * (a 48-byte column) at a time took one line from each of kc rows 2 KiB apart, a pattern the
 * prefetchers do not follow (23 % of the kernel's time at RNN N64 went to the loads of the
 * copy).  Measured against that order, in separate processes, GF/s: 512 x 256 x 6400 146 ->
 * 173-175, 512 x 768 x 6400 157-169 -> 168-181, 200 x 400 x 700 (from L2) 190-192 -> 186-194;
 * whole rows at a time (chunk 1) lost 2-7 % at the last: each block's copy of a row then
 * lands on a line of its own, where 8 rows' copies fill whole lines. */
#define FR_AT_CHUNK 8

/* nb blocks of mr rows (a constant at the usual heights: the copy then compiles to one or
 * two vector moves; as an element loop GCC built each vector from scalar inserts, 12 % of the
 * kernel's time at GRU N64), starting at row *i of A; rows k0..k1 of the slice */
__attribute__((always_inline))
static inline void FR_IK(pack_at_blocks)(const int mr, int nb, int kc, int k0, int k1,
                                         const FR_T *A, ptrdiff_t lda, FR_T *Ap, int *i)
{
    for (int b = 0; b < nb; b++, *i += mr)
        for (int k = k0; k < k1; k++)
            memcpy(Ap + (size_t)*i * kc + (size_t)k * mr, A + k * lda + *i, mr * sizeof(FR_T));
}

__attribute__((always_inline))
static inline void FR_IK(pack_at)(int kc, int M, const FR_T *A, ptrdiff_t lda, FR_T *Ap)
{
    /* fr_block_rows's even split: r blocks of q + 1 rows, then blocks - r of q */
    int blocks = (M + FR_MR - 1) / FR_MR, q = M / blocks, r = M % blocks;
    for (int k0 = 0; k0 < kc; k0 += FR_AT_CHUNK) {
        int k1 = kc - k0 < FR_AT_CHUNK ? kc : k0 + FR_AT_CHUNK, i = 0;
        if (q + 1 == FR_MR)
            FR_IK(pack_at_blocks)(FR_MR, r, kc, k0, k1, A, lda, Ap, &i);
        else
            FR_IK(pack_at_blocks)(q + 1, r, kc, k0, k1, A, lda, Ap, &i);
        if (q == FR_MR)
            FR_IK(pack_at_blocks)(FR_MR, blocks - r, kc, k0, k1, A, lda, Ap, &i);
        else if (q == FR_MR - 1)
            FR_IK(pack_at_blocks)(FR_MR - 1, blocks - r, kc, k0, k1, A, lda, Ap, &i);
        else
            FR_IK(pack_at_blocks)(q, blocks - r, kc, k0, k1, A, lda, Ap, &i);
    }
}
#undef FR_AT_CHUNK

/* sums[j] += B[k, j] over a k-slice of B packed by pack_b_rows (kc rows, N columns), each
 * column's values in the order of k: the column sums of a whole-sequence dG (the bias
 * gradient) as the weight gradient packs it.  The same additions, in the same order, as
 * colsum over B's rows (fr_cells_impl.h), so the sums are equal bitwise; where colsum reads
 * all of dG from memory once more, the packed slice is in cache. */
__attribute__((always_inline))
static inline void FR_IK(panel_sums)(int kc, int N, const FR_T *Bp, double *sums)
{
    for (int p = 0, n0 = 0; n0 < N; p++, n0 += FR_NR) {
        int w = N - n0 < FR_NR ? N - n0 : FR_NR;
        const FR_T *panel = Bp + (size_t)p * kc * FR_NR;
        double s[FR_NR];
        for (int j = 0; j < FR_NR; j++) s[j] = j < w ? sums[n0 + j] : 0;
        for (int k = 0; k < kc; k++)
            for (int j = 0; j < FR_NR; j++) s[j] += (double)panel[(size_t)k * FR_NR + j];
        for (int j = 0; j < w; j++) sums[n0 + j] = s[j];
    }
}

/* ---- C[M, N] (+)= A^T @ B summed over many rows K: the whole-sequence weight gradients
 * [X | Hprev]^T @ dG over all N*T rows (M = D + H, N = gate columns, K = N*T in the thousands).
 * Why not BLAS: scipy's OpenBLAS (SkylakeX kernels) ran these shapes at 96-130 GF/s on one core
 * of the AVX-512 Xeon, against 175-190 for the packed register blocks; this kernel ran them at
 * 1.08-1.34x sgemm's speed there (benches/tn_ab.py, BENCHMARKS.md).  GotoBLAS's loop order:
 * for each k-slice of FR_KC rows, pack A^T's slice as row blocks ([k][mr]: the mr values a step
 * broadcasts, side by side) and B's slice as panels ([k][NR]); then, per group of panels (its
 * slice, 32 KiB, stays in L1), every row block (A's packed slice streams from L2), summing
 * into C.  Both packs are vector copies, one pass over each operand.  The sums of a C entry
 * run over k in slices of FR_KC, as in the other kernels.  With sums (else NULL), also
 * sums[j] = the sum of column j of B (the bias gradient, from the packed slices: panel_sums).
 * Returns -1, C and sums untouched, if its workspace (FR_KC * (M + N rounded up to panels)
 * values) cannot be allocated; else 0. */
FR_ISA_KERNEL int FR_IK(gemm_tn_packed)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                        const FR_T *B, ptrdiff_t ldb, FR_T *C, ptrdiff_t ldc,
                                        int accumulate, double *sums)
{
    int panels = (N + FR_NR - 1) / FR_NR, blocks = (M + FR_MR - 1) / FR_MR;
    int full = N / FR_NR, w = N - full * FR_NR;
    if (M <= 0 || N <= 0)
        return 0;
    if (K <= 0) {
        FR_FN(zero_if_set)(M, N, C, ldc, accumulate);
        if (sums)
            for (int j = 0; j < N; j++) sums[j] = 0;
        return 0;
    }
    size_t a_size = ((size_t)FR_KC * M + FR_NR - 1) / FR_NR * FR_NR;   /* keeps Bp aligned */
    size_t bytes = (a_size + (size_t)FR_KC * panels * FR_NR) * sizeof(FR_T);
    FR_T *Ap = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!Ap)
        return -1;
    FR_T *Bp = Ap + a_size;
    if (sums)
        for (int j = 0; j < N; j++) sums[j] = 0;
    for (int k0 = 0; k0 < K; k0 += FR_KC) {
        int kc = K - k0 < FR_KC ? K - k0 : FR_KC, acc = accumulate || k0 > 0;
        size_t ps = (size_t)kc * FR_NR;                  /* one packed panel of the slice */
        FR_FN(pack_b_rows)(kc, N, B + (size_t)k0 * ldb, ldb, 1, Bp, 0, kc);   /* B's slice */
        if (sums)
            FR_IK(panel_sums)(kc, N, Bp, sums);
        FR_IK(pack_at)(kc, M, A + (size_t)k0 * lda, lda, Ap);   /* A^T's slice */
#if FR_VB == 64
        int group = M <= 4 ? 4 : 2;
        for (int p0 = 0; p0 < panels; p0 += group) {
            int np = panels - p0 < group ? panels - p0 : group;
            int wlast = N - (p0 + np - 1) * FR_NR;
            for (int b = 0, i = 0; b < blocks; b++) {
                int mr = fr_block_rows(M - i, blocks - b);
                if (mr >= 3)
                    FR_IK(block_pg)(mr, np, kc, Ap + (size_t)i * kc, mr, Bp + p0 * ps, ps,
                                    FR_NR, C + (size_t)i * ldc + p0 * FR_NR, ldc,
                                    wlast > FR_NR ? FR_NR : wlast, acc, 1, 0);
                else
                    for (int p = p0; p < p0 + np; p++)
                        FR_IK(block)(mr, kc, Ap + (size_t)i * kc, mr, Bp + p * ps, FR_NR,
                                     C + (size_t)i * ldc + p * FR_NR, ldc,
                                     p < full ? FR_NR : w, acc, 1);
                i += mr;
            }
        }
#else
        for (int p = 0; p < panels; p++)
            for (int b = 0, i = 0; b < blocks; b++) {
                int mr = fr_block_rows(M - i, blocks - b);
                FR_IK(block)(mr, kc, Ap + (size_t)i * kc, mr, Bp + p * ps, FR_NR,
                             C + (size_t)i * ldc + p * FR_NR, ldc, p < full ? FR_NR : w, acc, 1);
                i += mr;
            }
#endif
    }
    free(Ap);
    return 0;
}

/* ---- C[M, N] (+)= A[M, K] @ W^T with W row-major (N, K): the backward's dG @ Wh^T and
 * dG @ Wx^T for a few rows, without packing (gemm_direct's counterpart for a transposed B).
 * Every element of C is a dot product of a row of A with a row of W, both contiguous in k, so
 * the micro-kernel runs along k in vectors: a block of NT_MR = 5 rows of A times NT_NR = 2 rows
 * of W keeps 10 vector accumulators, 2 vectors of W and one of A in registers, loads 7 vectors
 * per step and does 10 FMAs; the lanes are summed once at the end.  (With 12 accumulators, as
 * 3 x 4 or 6 x 2, GCC spilled one to the stack, and the loop ran at 35-47 GF/s.)  Pairs of rows of W are the outer
 * loop: a pair stays in L1 while every block of A streams past it from L2. */
#define FR_NT_MR 5
#define FR_NT_NR 2
/* 32-byte vectors in both instruction sets: with AVX-512's 16 lanes, the scalar tail of k and
 * the lane sums would double at the K = 100-650 of the table's shapes */
typedef FR_T FR_IK(ntvec_t) __attribute__((vector_size(32), aligned(sizeof(FR_T))));
#define FR_NT_VW ((int)(32 / sizeof(FR_T)))

__attribute__((always_inline))
static inline FR_T FR_IK(hsum)(FR_IK(ntvec_t) v)
{
    FR_T s = 0;
    for (int l = 0; l < FR_NT_VW; l++) s += v[l];
    return s;
}

__attribute__((always_inline))
static inline void FR_IK(micro_nt)(const int mr, const int nr, int K, const FR_T *restrict A,
                                   ptrdiff_t lda, const FR_T *restrict W, ptrdiff_t ldw,
                                   FR_T *restrict C, ptrdiff_t ldc, int accumulate)
{
    FR_IK(ntvec_t) acc[FR_NT_MR][FR_NT_NR];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) acc[i][j] = (FR_IK(ntvec_t)){0};
    int k = 0;
    for (; k + FR_NT_VW <= K; k += FR_NT_VW) {
        FR_IK(ntvec_t) w[FR_NT_NR];
        for (int j = 0; j < nr; j++) w[j] = *(const FR_IK(ntvec_t) *)(W + j * ldw + k);
        for (int i = 0; i < mr; i++) {
            FR_IK(ntvec_t) a = *(const FR_IK(ntvec_t) *)(A + i * lda + k);
            for (int j = 0; j < nr; j++) acc[i][j] += a * w[j];
        }
    }
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nr; j++) {
            FR_T sum = FR_IK(hsum)(acc[i][j]);
            for (int kk = k; kk < K; kk++) sum += A[i * lda + kk] * W[j * ldw + kk];
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + sum : sum;
        }
    }
}

/* a block of mr <= NT_MR rows of A times nr <= NT_NR rows of W, both constants per branch */
__attribute__((always_inline))
static inline void FR_IK(block_nt)(int mr, int nr, int K, const FR_T *A, ptrdiff_t lda,
                                   const FR_T *W, ptrdiff_t ldw, FR_T *C, ptrdiff_t ldc,
                                   int accumulate)
{
#define FR_NT_CASE(m, n) \
    case (m) * 8 + (n): FR_IK(micro_nt)(m, n, K, A, lda, W, ldw, C, ldc, accumulate); break;
    switch (mr * 8 + nr) {
    FR_NT_CASE(5, 2) FR_NT_CASE(4, 2) FR_NT_CASE(3, 2) FR_NT_CASE(2, 2) FR_NT_CASE(1, 2)
    FR_NT_CASE(5, 1) FR_NT_CASE(4, 1) FR_NT_CASE(3, 1) FR_NT_CASE(2, 1) FR_NT_CASE(1, 1)
    default: break;
    }
#undef FR_NT_CASE
}

FR_ISA_KERNEL void FR_IK(gemm_direct_nt)(int M, int N, int K, const FR_T *A, ptrdiff_t lda,
                                     const FR_T *W, ptrdiff_t ldw, FR_T *C, ptrdiff_t ldc,
                                     int accumulate)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        FR_FN(zero_if_set)(M, N, C, ldc, accumulate);
        return;
    }
    /* rows of A in blocks of near-equal height (20 = 5+5+5+5, 8 = 4+4: a thin block leaves too
     * few independent accumulators to cover the FMA latency) */
    int mblocks = (M + FR_NT_MR - 1) / FR_NT_MR;
    for (int n0 = 0; n0 < N; n0 += FR_NT_NR) {
        int nr = N - n0 < FR_NT_NR ? N - n0 : FR_NT_NR;
        for (int b = 0, i = 0; b < mblocks; b++) {
            int mr = fr_block_rows(M - i, mblocks - b);
            FR_IK(block_nt)(mr, nr, K, A + (size_t)i * lda, lda, W + (size_t)n0 * ldw, ldw,
                            C + (size_t)i * ldc + n0, ldc, accumulate);
            i += mr;
        }
    }
}


#undef FR_NT_MR
#undef FR_NT_VW
#undef FR_NT_NR

#undef FR_KC
#undef FR_ROWS_KB
#undef FR_VW
#undef FR_NV
#undef FR_KU
