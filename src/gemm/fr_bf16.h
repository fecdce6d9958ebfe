/* Matrix products of float32 matrices at bfloat16 precision: C = op(A) op(B), both operands
 * rounded to bfloat16 (round to nearest even, as the CPU's VCVTNE2PS2BF16 does) and the products
 * summed in float32.  The "medium" matmul precision of the language models' read-out
 * (TimeAffine(matmul_precision="medium")), the same contract as
 * torch.set_float32_matmul_precision("medium"): 8 bits of significand in the operands, float32
 * in the sums, the results and everything else.
 *
 * Why: VDPBF16PS adds two bfloat16 products into each float32 lane, twice the flops of a float32
 * FMA per instruction at the same throughput (one Zen 4 core: 233 against 117 GF/s, measured),
 * and the read-out's three products are most of a word LM's training iteration.
 *
 * The blocking is BLIS's: a block of NC columns of op(B) and a k-slice of its rows packed once
 * (in bfloat16 pairs along k, panels of NR = 32 columns), then blocks of MC rows of op(A) packed
 * (micro-panels of MR = 12 rows) and every 12 x 32 register block run over the k-slice, each B
 * panel reused by all the A micro-panels of the block (in L2).  K up to KC_ONE is one slice,
 * so that C is written once: at the read-out's K of 400-700, 1.25x -> 1.75-1.89x float32's
 * speed against slices of 256 (measured, benches/bf16_products.py); longer K in slices of
 * KC = 256 (a 16 KiB B panel, in L1; 512 measured no better).  The 24 accumulators, two B
 * vectors and one broadcast take 27 of the 32 vector registers.  The packed layouts put each
 * k-pair in one 32-bit lane, k even in the low half (the order VDPBF16PS multiplies in); A
 * stored by rows keeps its rows (the kernel reads them with a stride: packing is then a
 * conversion, not a transposition: dx = dS E 1.53 -> 1.61x).
 *
 * The recurrent layers' per-step products use the same panels: Wh packed once per call
 * (fr_bf16_pack_b), each step's few rows of A packed as they come (fr_bf16_gemm_packed).
 *
 * Compiled for AVX512-F/BW/VL/BF16 by function attributes; fr_bf16_supported tells whether
 * this CPU runs it, and fr_sgemm_bf16 returns -1 (the caller then multiplies in float32) where it
 * does not, or when memory for the packed blocks is short.
 */
#ifndef FR_BF16_H
#define FR_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) \
    && defined(__linux__)
#define FR_HAVE_BF16 1
#include <immintrin.h>
#include <pthread.h>
#else
#define FR_HAVE_BF16 0
#endif

static int fr_bf16_supported(void)
{
#if FR_HAVE_BF16
    static int known = -1;              /* benign race: every thread computes the same */
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    }
    return known;
#else
    return 0;
#endif
}

#if FR_HAVE_BF16

#define FR_BF16_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define FR_BF16_MR 12
#define FR_BF16_NR 32
#define FR_BF16_KC 256      /* k-slice of a long K: the B micro-panel, 16 KiB, in L1 */
#define FR_BF16_KC_ONE 704  /* up to this K one slice: C written once (B streams from L2) */
#define FR_BF16_MC 384      /* a multiple of MR: the A block, 192 KiB, in L2 */
#define FR_BF16_NC 4096     /* a multiple of NR: the B block, 2 MiB */

static inline __mmask16 fr_bf16_mask(int n)
{
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

/* Pack lanes [0, n) of a source whose k-pairs come from two rows: lane l of pair p holds
 * (S[2p][l], S[2p + 1][l]) (S[k] at S + k * lds; op(B) as stored, or op(A) = A^T).  Panels of
 * W lanes (W = 12 or 32), each kc2 = ceil(kc / 2) pairs of W lanes; lanes past n are zero, and so
 * is the second half of the last pair when kc is odd. */
FR_BF16_FN static void fr_bf16_pack_cols(int n, int kc, const float *S, ptrdiff_t lds, int W,
                                         uint32_t *out)
{
    int kc2 = (kc + 1) / 2;
    for (int l0 = 0; l0 < n; l0 += W) {
        int w = n - l0 < W ? n - l0 : W;
        for (int p = 0; p < kc2; p++, out += W) {
            const float *r0 = S + (ptrdiff_t)(2 * p) * lds + l0;
            const float *r1 = r0 + lds;
            int second = 2 * p + 1 < kc;
            for (int v = 0; v < W; v += 16) {
                __mmask16 m = fr_bf16_mask(w - v);
                __m512 x0 = _mm512_maskz_loadu_ps(m, r0 + v);
                __m512 x1 = second ? _mm512_maskz_loadu_ps(m, r1 + v) : _mm512_setzero_ps();
                __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x0));
                __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x1));
                __m512i pair = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
                _mm512_mask_storeu_epi32(out + v, fr_bf16_mask(W - v), pair);
            }
        }
    }
}

/* Pack lanes [0, n) of a source whose k-pairs lie in one row: lane l of pair p holds
 * (S[l][2p], S[l][2p + 1]) (row l at S + l * lds, contiguous along k: op(A) as stored, or
 * op(B) = B^T).  The same layout as fr_bf16_pack_cols. */
FR_BF16_FN static void fr_bf16_pack_rows(int n, int kc, const float *S, ptrdiff_t lds, int W,
                                         uint32_t *out)
{
    int kc2 = (kc + 1) / 2;
    uint32_t tmp[16] __attribute__((aligned(64)));
    for (int l0 = 0; l0 < n; l0 += W, out += (ptrdiff_t)kc2 * W) {
        for (int j = 0; j < W; j++) {
            uint32_t *o = out + j;
            if (l0 + j >= n) {
                for (int p = 0; p < kc2; p++)
                    o[(ptrdiff_t)p * W] = 0;
                continue;
            }
            const float *r = S + (ptrdiff_t)(l0 + j) * lds;
            for (int k = 0; k < kc; k += 32) {
                int cnt = kc - k < 32 ? kc - k : 32;
                __m512 lo = _mm512_maskz_loadu_ps(fr_bf16_mask(cnt), r + k);
                __m512 hi = _mm512_maskz_loadu_ps(fr_bf16_mask(cnt - 16), r + k + 16);
                /* words [lo's 16 | hi's 16]: 32-bit lane i = the pair (k + 2i, k + 2i + 1) */
                _mm512_store_si512(tmp, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                uint32_t *op = o + (ptrdiff_t)(k / 2) * W;
                for (int i = 0; i < (cnt + 1) / 2; i++)
                    op[(ptrdiff_t)i * W] = tmp[i];
            }
        }
    }
}

/* One 12 x 32 block of C over kc2 k-pairs: C = (first ? 0 : C) + A B for its first mr rows and
 * nr columns; mrk (4, 8 or 12) rows computed, mr <= mrk.  A's pair p of row i at Ap[i * a_i + p * a_p] (packed by fr_bf16_pack_cols: a_i 1,
 * a_p 12; by fr_bf16_pack_a_rows: a_i kc2, a_p 1), B's as fr_bf16_pack_* lay it out (32 lanes
 * a pair).  VDPBF16PS broadcasts A's pair from memory either way. */
__attribute__((always_inline)) FR_BF16_FN static inline void
fr_bf16_micro(int kc2, const uint32_t *Ap, const ptrdiff_t a_i, const ptrdiff_t a_p,
              const uint32_t *Bp, float *C, ptrdiff_t ldc, int mr, int nr, int first,
              const int nv, const int mrk)
{
    __m512 c[FR_BF16_MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < FR_BF16_MR; i++)
        c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc2; p++, Ap += a_p, Bp += FR_BF16_NR) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp);
        __m512bh b1 = nv == 2 ? (__m512bh)_mm512_loadu_si512(Bp + 16) : b0;
#pragma GCC unroll 12
        for (int i = 0; i < mrk; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)Ap[i * a_i]);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], a, b0);
            if (nv == 2)
                c[i][1] = _mm512_dpbf16_ps(c[i][1], a, b1);
        }
    }
    __mmask16 m0 = fr_bf16_mask(nr), m1 = fr_bf16_mask(nr - 16);
#pragma GCC unroll 12
    for (int i = 0; i < mrk; i++) {
        if (i < mr) {
            float *cr = C + (ptrdiff_t)i * ldc;
            __m512 v0 = c[i][0], v1 = c[i][1];
            if (!first) {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
                if (nv == 2)
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
            }
            _mm512_mask_storeu_ps(cr, m0, v0);
            if (nv == 2)
                _mm512_mask_storeu_ps(cr + 16, m1, v1);
        }
    }
}

/* the two layouts of A, each with its strides as constants (or one multiplier); a last panel
 * of at most 16 columns runs half the block (its upper 16 lanes are zero padding), in a
 * function of its own (the full block's code stays as it was: inlined beside the half one it
 * measured 1-5 % slower) */
__attribute__((noinline)) FR_BF16_FN static void
fr_bf16_half_acols(int kc2, const uint32_t *Ap, const uint32_t *Bp, float *C, ptrdiff_t ldc,
                   int mr, int nr, int first)
{
    fr_bf16_micro(kc2, Ap, 1, FR_BF16_MR, Bp, C, ldc, mr, nr, first, 1, FR_BF16_MR);
}

__attribute__((noinline)) FR_BF16_FN static void
fr_bf16_half_arows(int kc2, const uint32_t *Ap, const uint32_t *Bp, float *C, ptrdiff_t ldc,
                   int mr, int nr, int first)
{
    fr_bf16_micro(kc2, Ap, kc2, 1, Bp, C, ldc, mr, nr, first, 1, FR_BF16_MR);
}

FR_BF16_FN static void fr_bf16_micro_acols(int kc2, const uint32_t *Ap, const uint32_t *Bp,
                                           float *C, ptrdiff_t ldc, int mr, int nr, int first)
{
    if (nr <= 16) {
        fr_bf16_half_acols(kc2, Ap, Bp, C, ldc, mr, nr, first);
        return;
    }
    fr_bf16_micro(kc2, Ap, 1, FR_BF16_MR, Bp, C, ldc, mr, nr, first, 2, FR_BF16_MR);
}

FR_BF16_FN static void fr_bf16_micro_arows(int kc2, const uint32_t *Ap, const uint32_t *Bp,
                                           float *C, ptrdiff_t ldc, int mr, int nr, int first)
{
    if (nr <= 16) {
        fr_bf16_half_arows(kc2, Ap, Bp, C, ldc, mr, nr, first);
        return;
    }
    fr_bf16_micro(kc2, Ap, kc2, 1, Bp, C, ldc, mr, nr, first, 2, FR_BF16_MR);
}

/* Pack rows [0, n) of A (row l at S + l * lds, contiguous along k) as rows of bfloat16 pairs:
 * row l's pair p at out[l * kc2 + p], n rounded up to whole micro-panels of MR rows with zeros
 * (no transposition: the micro-kernel reads A's rows with a stride). */
FR_BF16_FN static void fr_bf16_pack_a_rows(int n, int kc, const float *S, ptrdiff_t lds,
                                           uint32_t *out)
{
    int kc2 = (kc + 1) / 2, rows = (n + FR_BF16_MR - 1) / FR_BF16_MR * FR_BF16_MR;
    for (int l = 0; l < rows; l++, out += kc2) {
        if (l >= n) {
            memset(out, 0, (size_t)kc2 * sizeof(uint32_t));
            continue;
        }
        const float *r = S + (ptrdiff_t)l * lds;
        for (int k = 0; k < kc; k += 32) {
            int cnt = kc - k < 32 ? kc - k : 32;
            __m512 lo = _mm512_maskz_loadu_ps(fr_bf16_mask(cnt), r + k);
            __m512 hi = _mm512_maskz_loadu_ps(fr_bf16_mask(cnt - 16), r + k + 16);
            _mm512_mask_storeu_epi32(out + k / 2, fr_bf16_mask((cnt + 1) / 2),
                                     (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

/* A thread's buffers, kept between calls (pool threads live as long as the process) and freed
 * when the thread ends (a pthread key's destructor: a layer called from short-lived threads
 * does not leak them).  Slot 0: the products' packed blocks (B, then A); slot 1: the
 * recurrent layers' packed weights (fr_bf16_weights), in use while the same thread's products
 * fill slot 0. */
typedef struct {
    uint32_t *p[2];
    size_t cap[2];
} fr_bf16_bufs;

static pthread_key_t fr_bf16_key;
static pthread_once_t fr_bf16_key_once = PTHREAD_ONCE_INIT;
static int fr_bf16_key_ok = 0;
static __thread fr_bf16_bufs *fr_bf16_mine = NULL;

static void fr_bf16_free_bufs(void *arg)
{
    fr_bf16_bufs *b = (fr_bf16_bufs *)arg;
    free(b->p[0]);
    free(b->p[1]);
    free(b);
}

static void fr_bf16_make_key(void)
{
    fr_bf16_key_ok = pthread_key_create(&fr_bf16_key, fr_bf16_free_bufs) == 0;
}

static uint32_t *fr_bf16_slot(int slot, size_t words)
{
    fr_bf16_bufs *b = fr_bf16_mine;
    if (b == NULL) {
        pthread_once(&fr_bf16_key_once, fr_bf16_make_key);
        if (!fr_bf16_key_ok || (b = (fr_bf16_bufs *)calloc(1, sizeof(*b))) == NULL)
            return NULL;
        if (pthread_setspecific(fr_bf16_key, b) != 0) {
            free(b);
            return NULL;
        }
        fr_bf16_mine = b;
    }
    if (words > b->cap[slot]) {
        size_t bytes = (words * sizeof(uint32_t) + 63) & ~(size_t)63;
        uint32_t *p = (uint32_t *)aligned_alloc(64, bytes);
        if (p == NULL)
            return NULL;
        free(b->p[slot]);
        b->p[slot] = p;
        b->cap[slot] = words;
    }
    return b->p[slot];
}

static uint32_t *fr_bf16_buffer(size_t words)
{
    return fr_bf16_slot(0, words);
}

/* C[M, N] = op(A)[M, K] op(B)[K, N] at bfloat16 precision (see the top of this file).
 * op(A)[i][k] = ta ? A[k * lda + i] : A[i * lda + k]; op(B)[k][j] = tb ? B[j * ldb + k]
 * : B[k * ldb + j]; C row-major with row stride ldc, overwritten.  0, or -1 (C untouched) where
 * the CPU lacks AVX512-BF16 or the packing buffers cannot be had. */
FR_BF16_FN static int fr_sgemm_bf16(int ta, int tb, int M, int N, int K, const float *A,
                                    ptrdiff_t lda, const float *B, ptrdiff_t ldb, float *C,
                                    ptrdiff_t ldc)
{
    if (!fr_bf16_supported())
        return -1;
    if (M <= 0 || N <= 0)
        return 0;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            memset(C + (ptrdiff_t)i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
    /* k-slices: one where K is small enough (no second pass over C), else near KC each */
    int slices = K <= FR_BF16_KC_ONE ? 1 : (K + FR_BF16_KC - 1) / FR_BF16_KC;
    int kc_max = ((K + slices - 1) / slices + 1) & ~1, kc2_max = kc_max / 2;
    int nc_max = N < FR_BF16_NC ? N : FR_BF16_NC, mc_max = M < FR_BF16_MC ? M : FR_BF16_MC;
    size_t b_words = (size_t)((nc_max + FR_BF16_NR - 1) / FR_BF16_NR) * FR_BF16_NR * kc2_max;
    size_t a_words = (size_t)((mc_max + FR_BF16_MR - 1) / FR_BF16_MR) * FR_BF16_MR * kc2_max;
    uint32_t *Bp = fr_bf16_buffer(b_words + a_words);
    if (Bp == NULL)
        return -1;
    uint32_t *Ap = Bp + b_words;
    for (int jc = 0; jc < N; jc += FR_BF16_NC) {
        int nc = N - jc < FR_BF16_NC ? N - jc : FR_BF16_NC;
        for (int pc = 0; pc < K; pc += kc_max) {
            int kc = K - pc < kc_max ? K - pc : kc_max, kc2 = (kc + 1) / 2;
            if (tb)
                fr_bf16_pack_rows(nc, kc, B + (ptrdiff_t)jc * ldb + pc, ldb, FR_BF16_NR, Bp);
            else
                fr_bf16_pack_cols(nc, kc, B + (ptrdiff_t)pc * ldb + jc, ldb, FR_BF16_NR, Bp);
            for (int ic = 0; ic < M; ic += FR_BF16_MC) {
                int mc = M - ic < FR_BF16_MC ? M - ic : FR_BF16_MC;
                if (ta)
                    fr_bf16_pack_cols(mc, kc, A + (ptrdiff_t)pc * lda + ic, lda, FR_BF16_MR, Ap);
                else
                    fr_bf16_pack_a_rows(mc, kc, A + (ptrdiff_t)ic * lda + pc, lda, Ap);
                for (int q = 0; q * FR_BF16_NR < nc; q++) {
                    const uint32_t *bq = Bp + (ptrdiff_t)q * kc2 * FR_BF16_NR;
                    int nr = nc - q * FR_BF16_NR;
                    nr = nr < FR_BF16_NR ? nr : FR_BF16_NR;
                    for (int r = 0; r * FR_BF16_MR < mc; r++) {
                        int mr = mc - r * FR_BF16_MR;
                        mr = mr < FR_BF16_MR ? mr : FR_BF16_MR;
                        const uint32_t *ar = Ap + (ptrdiff_t)r * kc2 * FR_BF16_MR;
                        float *cr = C + (ptrdiff_t)(ic + r * FR_BF16_MR) * ldc + jc
                                    + q * FR_BF16_NR;
                        if (ta)
                            fr_bf16_micro_acols(kc2, ar, bq, cr, ldc, mr, nr, pc == 0);
                        else
                            fr_bf16_micro_arows(kc2, ar, bq, cr, ldc, mr, nr, pc == 0);
                    }
                }
            }
        }
    }
    return 0;
}

/* ---- the recurrent layers' per-step products: the weights packed once per call ----------------
 * A layer's h_{t-1} Wh (and backward's dG_t Wh^T) reads the same weights at every step: they are
 * packed once per call into bfloat16 panels (the layout above, NR = 32 columns, all of K in one
 * slice), and each step packs only its few rows of A. */

/* 32-bit words a packed (K, N) matrix takes */
static inline size_t fr_bf16_packed_words(int K, int N)
{
    return (size_t)((K + 1) / 2) * (size_t)((N + FR_BF16_NR - 1) / FR_BF16_NR * FR_BF16_NR);
}

/* Pack op(B) (K, N) into P: B[k * ldb + j], or with trans B[j * ldb + k] (the transpose of a
 * row-major (N, K) matrix); returns the word after the copy. */
FR_BF16_FN static uint32_t *fr_bf16_pack_b(int K, int N, const float *B, ptrdiff_t ldb,
                                           int trans, uint32_t *P)
{
    if (trans)
        fr_bf16_pack_rows(N, K, B, ldb, FR_BF16_NR, P);
    else
        fr_bf16_pack_cols(N, K, B, ldb, FR_BF16_NR, P);
    return P + fr_bf16_packed_words(K, N);
}

/* a block of at most 4 or 8 rows computes only those (a step's rows on one thread: N8 on two
 * threads ran 0.8x float32's speed computing 12) */
__attribute__((noinline)) FR_BF16_FN static void
fr_bf16_arows_4(int kc2, const uint32_t *Ap, const uint32_t *Bp, float *C, ptrdiff_t ldc, int mr,
                int nr, int first)
{
    fr_bf16_micro(kc2, Ap, kc2, 1, Bp, C, ldc, mr, nr, first, 2, 4);
}

__attribute__((noinline)) FR_BF16_FN static void
fr_bf16_arows_8(int kc2, const uint32_t *Ap, const uint32_t *Bp, float *C, ptrdiff_t ldc, int mr,
                int nr, int first)
{
    fr_bf16_micro(kc2, Ap, kc2, 1, Bp, C, ldc, mr, nr, first, 2, 8);
}

/* C[M, N] = A[M, K] B (+ C with accumulate), B packed by fr_bf16_pack_b: the A rows packed into
 * the thread's buffer, then every 32-column panel of B (streamed once) against all of them.
 * 0, or -1 (C untouched) when the buffer cannot be had. */
FR_BF16_FN static int fr_bf16_gemm_packed(int M, int N, int K, const float *A, ptrdiff_t lda,
                                          const uint32_t *P, float *C, ptrdiff_t ldc,
                                          int accumulate)
{
    if (M <= 0 || N <= 0)
        return 0;
    if (K <= 0) {
        for (int i = 0; i < M && !accumulate; i++)
            memset(C + (ptrdiff_t)i * ldc, 0, (size_t)N * sizeof(float));
        return 0;
    }
    int kc2 = (K + 1) / 2;
    uint32_t *Ap = fr_bf16_buffer((size_t)((M + FR_BF16_MR - 1) / FR_BF16_MR) * FR_BF16_MR * kc2);
    if (Ap == NULL)
        return -1;
    fr_bf16_pack_a_rows(M, K, A, lda, Ap);
    for (int q = 0; q * FR_BF16_NR < N; q++) {
        const uint32_t *bq = P + (ptrdiff_t)q * kc2 * FR_BF16_NR;
        int nr = N - q * FR_BF16_NR < FR_BF16_NR ? N - q * FR_BF16_NR : FR_BF16_NR;
        for (int r = 0; r * FR_BF16_MR < M; r++) {
            int mr = M - r * FR_BF16_MR < FR_BF16_MR ? M - r * FR_BF16_MR : FR_BF16_MR;
            const uint32_t *ar = Ap + (ptrdiff_t)r * kc2 * FR_BF16_MR;
            float *cr = C + (ptrdiff_t)r * FR_BF16_MR * ldc + q * FR_BF16_NR;
            if (mr <= 4)
                fr_bf16_arows_4(kc2, ar, bq, cr, ldc, mr, nr, !accumulate);
            else if (mr <= 8)
                fr_bf16_arows_8(kc2, ar, bq, cr, ldc, mr, nr, !accumulate);
            else
                fr_bf16_micro_arows(kc2, ar, bq, cr, ldc, mr, nr, !accumulate);
        }
    }
    return 0;
}

/* The calling thread's buffer for a call's packed weights (kept between calls; apart from the
 * products' own, which the same thread fills while the weights are in use): NULL if short. */
static uint32_t *fr_bf16_weights(size_t words)
{
    return fr_bf16_slot(1, words);
}

#else /* no AVX512-BF16 build */

static int fr_sgemm_bf16(int ta, int tb, int M, int N, int K, const float *A, ptrdiff_t lda,
                         const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    (void)ta; (void)tb; (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb;
    (void)C; (void)ldc;
    return -1;
}


static inline size_t fr_bf16_packed_words(int K, int N)
{
    (void)K; (void)N;
    return 0;
}

static uint32_t *fr_bf16_pack_b(int K, int N, const float *B, ptrdiff_t ldb, int trans,
                                uint32_t *P)
{
    (void)K; (void)N; (void)B; (void)ldb; (void)trans;
    return P;
}

static int fr_bf16_gemm_packed(int M, int N, int K, const float *A, ptrdiff_t lda,
                               const uint32_t *P, float *C, ptrdiff_t ldc, int accumulate)
{
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)P; (void)C; (void)ldc; (void)accumulate;
    return -1;
}

static uint32_t *fr_bf16_weights(size_t words)
{
    (void)words;
    return NULL;
}

#endif
#endif
