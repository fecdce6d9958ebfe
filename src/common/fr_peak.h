/* One core's peak floating-point rate: 24 independent chains of multiply-adds on registers only,
 * so that nothing but the FMA units limits the loop (the idea of benches/peak_fma.c, built into
 * the package so that `fastrnn bench` can report percent of peak on any machine).
 *
 * Three paths, chosen at run time like the products in src/gemm/fr_gemm.h:
 *   - avx512: 64-byte vectors, compiled with target("avx512f") (GCC contracts a * x + y into
 *     one FMA, as GNU C does by default);
 *   - avx2:   32-byte vectors with target("avx2,fma");
 *   - portable: 16-byte GCC vectors for the baseline (SSE2 on x86-64: a multiply and an add per
 *     element, which still count as two floating-point operations).
 * Every path is a template over the element type (float, double).  Only the rate is measured:
 * the chains' values are summed into a sink so that the compiler keeps them.
 */
#ifndef FR_PEAK_H
#define FR_PEAK_H

#include <time.h>

enum { FR_PEAK_PORTABLE = 0, FR_PEAK_AVX2 = 1, FR_PEAK_AVX512 = 2 };

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8 && defined(__x86_64__) \
    && !defined(FR_NO_CLONES)
#define FR_PEAK_X86 1
#else
#define FR_PEAK_X86 0
#endif

static double fr_peak_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define FR_PEAK_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) \
                          X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)
#define FR_PEAK_DECL(i) V a##i = zero + (E)(i + seed);
#define FR_PEAK_STEP(i) a##i = a##i * x + y;
#define FR_PEAK_SUM(i) s += a##i;

/* Floating-point operations per second of `rounds` rounds of the 24 chains, in vectors of
 * `bytes` bytes of T; *sink receives the chains' sum (keeps the loop alive). */
#define FR_PEAK_FN(name, T, bytes, attr)                                             \
    attr static double name(int seed, long rounds, double *sink)                     \
    {                                                                                \
        typedef T E;                                                                 \
        typedef T V __attribute__((vector_size(bytes)));                             \
        const V zero = {0};                                                          \
        V x = zero + (T)1.0000001, y = zero + (T)0.9999999, s = zero;                \
        FR_PEAK_CHAINS(FR_PEAK_DECL)                                                 \
        double t0 = fr_peak_now();                                                   \
        for (long k = 0; k < rounds; k++) { FR_PEAK_CHAINS(FR_PEAK_STEP) }           \
        double t = fr_peak_now() - t0;                                               \
        FR_PEAK_CHAINS(FR_PEAK_SUM)                                                  \
        *sink += (double)s[0];                                                       \
        return t > 0 ? rounds * 24.0 * (bytes / sizeof(T)) * 2 / t : 0.0;            \
    }

#define FR_PEAK_PLAIN __attribute__((noinline))
FR_PEAK_FN(fr_peak_portable_f, float, 16, FR_PEAK_PLAIN)
FR_PEAK_FN(fr_peak_portable_d, double, 16, FR_PEAK_PLAIN)
#if FR_PEAK_X86
#define FR_PEAK_AVX2_ATTR __attribute__((noinline, target("avx2,fma")))
#define FR_PEAK_AVX512_ATTR __attribute__((noinline, target("avx512f")))
FR_PEAK_FN(fr_peak_avx2_f, float, 32, FR_PEAK_AVX2_ATTR)
FR_PEAK_FN(fr_peak_avx2_d, double, 32, FR_PEAK_AVX2_ATTR)
FR_PEAK_FN(fr_peak_avx512_f, float, 64, FR_PEAK_AVX512_ATTR)
FR_PEAK_FN(fr_peak_avx512_d, double, 64, FR_PEAK_AVX512_ATTR)
#endif

/* Can this CPU run path `isa`? */
static int fr_peak_supported(int isa)
{
    if (isa == FR_PEAK_PORTABLE)
        return 1;
#if FR_PEAK_X86
    __builtin_cpu_init();
    if (isa == FR_PEAK_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == FR_PEAK_AVX512)
        return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

/* The widest path this CPU runs. */
static int fr_peak_best(void)
{
    if (fr_peak_supported(FR_PEAK_AVX512))
        return FR_PEAK_AVX512;
    return fr_peak_supported(FR_PEAK_AVX2) ? FR_PEAK_AVX2 : FR_PEAK_PORTABLE;
}

/* One timed run of `rounds` rounds on path isa (which the caller checked is supported), in
 * float (is_double = 0) or double; returns FLOP/s. */
static double fr_peak_run(int isa, int is_double, long rounds, int seed, double *sink)
{
#if FR_PEAK_X86
    if (isa == FR_PEAK_AVX512)
        return is_double ? fr_peak_avx512_d(seed, rounds, sink)
                         : fr_peak_avx512_f(seed, rounds, sink);
    if (isa == FR_PEAK_AVX2)
        return is_double ? fr_peak_avx2_d(seed, rounds, sink) : fr_peak_avx2_f(seed, rounds, sink);
#endif
    (void)isa;
    return is_double ? fr_peak_portable_d(seed, rounds, sink)
                     : fr_peak_portable_f(seed, rounds, sink);
}

#endif
