/* Peak single-precision FMA throughput of one core: 24 independent chains of FMAs on
 * registers only, so that nothing but the FMA units limits the loop (512-bit and 256-bit
 * vectors).  The ceiling against which BENCHMARKS.md quotes the products' GF/s.
 *
 * And the ceiling of the packed kernel's register block (src/gemm/fr_gemm_impl.h, micro_pg) with
 * its operands in L1: 12 rows x 2 panels of 16 columns, per k two vector loads of B, 12
 * broadcasts of A and 24 FMAs, over k-slices of 256 -- the products' rate when no cache or
 * memory traffic slows them, against which the layers' products are compared.
 *
 *   gcc -O2 -mavx512f -mfma benches/peak_fma.c -o /tmp/peak_fma && /tmp/peak_fma
 */
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) \
                  X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
#define DECL(i) V a##i = zero + (float)(i + seed);
#define STEP(i) a##i = a##i * x + y;            /* contracted to one FMA (GNU C default) */
#define SUM(i) s += a##i;

/* GF/s of `iters` rounds of the 24 chains in vectors of `bytes` bytes (GCC vector types); the
 * chains' sum is kept, so that the compiler keeps them */
#define PEAK(name, bytes)                                                           \
    static double name(int seed, long iters)                                        \
    {                                                                               \
        typedef float V __attribute__((vector_size(bytes)));                        \
        const V zero = {0};                                                         \
        V x = zero + 1.0000001f, y = zero + 0.9999999f, s = zero;                   \
        CHAINS(DECL)                                                                \
        double t0 = now();                                                          \
        for (long k = 0; k < iters; k++) { CHAINS(STEP) }                           \
        double t = now() - t0;                                                      \
        CHAINS(SUM)                                                                 \
        volatile float sink = s[0];                                                 \
        (void)sink;                                                                 \
        return iters * 24.0 * (bytes / 4) * 2 / t / 1e9;                            \
    }

PEAK(peak512, 64)
PEAK(peak256, 32)

#define KC 256                                  /* the kernel's k-slice (FR_KC, float32) */

/* GF/s of `iters` k-slices of the 12 x 2-panel block on A (KC x 12, as gemm_tn_packed packs
 * A^T) and B (two panels of KC x 16), both in L1; C summed once per slice, as the kernel does */
__attribute__((noinline)) static double block512(int seed, long iters)
{
    typedef float V __attribute__((vector_size(64)));
    static float A[KC * 12] __attribute__((aligned(64)));
    static float B[2 * KC * 16] __attribute__((aligned(64)));
    static V C[12][2];
    for (int i = 0; i < KC * 12; i++) A[i] = 0.001f * (float)((i + seed) % 7);
    for (int i = 0; i < 2 * KC * 16; i++) B[i] = 0.001f * (float)((i + seed) % 5);
    double t0 = now();
    for (long it = 0; it < iters; it++) {
        V c[12][2];
#pragma GCC unroll 12
        for (int r = 0; r < 12; r++) c[r][0] = c[r][1] = (V){0};
        const float *a = A, *b = B;
        for (int k = 0; k < KC; k++, a += 12, b += 16) {
            V b0 = *(const V *)b, b1 = *(const V *)(b + KC * 16);
#pragma GCC unroll 12
            for (int r = 0; r < 12; r++) {
                c[r][0] += a[r] * b0;
                c[r][1] += a[r] * b1;
            }
        }
#pragma GCC unroll 12
        for (int r = 0; r < 12; r++) {
            C[r][0] += c[r][0];
            C[r][1] += c[r][1];
        }
    }
    double t = now() - t0;
    volatile float sink = C[0][0][0];
    (void)sink;
    return iters * (double)KC * 12 * 32 * 2 / t / 1e9;
}

int main(int argc, char **argv)
{
    (void)argv;
    for (int rep = 0; rep < 3; rep++)
        printf("one core, float32 FMA: 512-bit %.1f GF/s, 256-bit %.1f GF/s; "
               "12 x 2-panel block from L1 %.1f GF/s\n",
               peak512(argc, 40000000), peak256(argc, 40000000), block512(argc, 200000));
    return 0;
}
