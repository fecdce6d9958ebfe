/* Peak single-precision FMA throughput of one core: 24 independent chains of FMAs on
 * registers only, so that nothing but the FMA units limits the loop (512-bit and 256-bit
 * vectors).  The ceiling against which BENCHMARKS.md quotes the products' GF/s.
 *
 *   gcc -O2 -mavx512f -mfma benches/peak_fma.c -o /tmp/peak_fma && /tmp/peak_fma
 */
#include <immintrin.h>
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

static double peak512(int seed, long iters)
{
    __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f), s;
#define DECL(i) __m512 a##i = _mm512_set1_ps((float)(i + seed));
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, x, y);
#define SUM(i) s = _mm512_add_ps(s, a##i);
    CHAINS(DECL)
    double t0 = now();
    for (long k = 0; k < iters; k++) { CHAINS(STEP) }
    double t = now() - t0;
    s = _mm512_setzero_ps();
    CHAINS(SUM)
    volatile float sink = _mm512_reduce_add_ps(s);    /* keeps the chains live */
    (void)sink;
#undef DECL
#undef STEP
#undef SUM
    return iters * 24.0 * 16 * 2 / t / 1e9;
}

static double peak256(int seed, long iters)
{
    __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f), s;
#define DECL(i) __m256 a##i = _mm256_set1_ps((float)(i + seed));
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, x, y);
#define SUM(i) s = _mm256_add_ps(s, a##i);
    CHAINS(DECL)
    double t0 = now();
    for (long k = 0; k < iters; k++) { CHAINS(STEP) }
    double t = now() - t0;
    s = _mm256_setzero_ps();
    CHAINS(SUM)
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    volatile float sink = lanes[0];
    (void)sink;
#undef DECL
#undef STEP
#undef SUM
    return iters * 24.0 * 8 * 2 / t / 1e9;
}

int main(int argc, char **argv)
{
    (void)argv;
    for (int rep = 0; rep < 3; rep++)
        printf("one core, float32 FMA: 512-bit %.1f GF/s, 256-bit %.1f GF/s\n",
               peak512(argc, 40000000), peak256(argc, 40000000));
    return 0;
}
