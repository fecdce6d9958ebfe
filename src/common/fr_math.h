/* Element-wise math for the gate passes.
 *
 * float32 uses branch-free Cephes-style approximations of exp and tanh (about 1-2 ulp) written so
 * that GCC vectorises the loops that call them: libm's expf/tanhf are scalar calls, which would make
 * the element-wise passes slower than the matrix products.  float64 (gradient checks, the accurate
 * path) uses libm.  No -ffast-math anywhere: NaN must propagate, never be optimised away.
 */
#ifndef FR_MATH_H
#define FR_MATH_H

#include <math.h>
#include <stdint.h>

/* FR_KERNEL marks the element-wise loops.  On x86-64 Linux with GCC each is compiled three times,
 * for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and the baseline, and the loader picks the best
 * the CPU runs (ifunc): wheels stay portable and still use wide vectors where they exist.  The
 * v4 clone matters even at the 256-bit vectors GCC prefers there: on a Xeon with AVX-512 the
 * LSTM forward gate pass took 9.5 ns per unit as AVX2 code and 3.5 ns as AVX-512 code (mask
 * registers for the clamps and selects, 32 vector registers; BENCHMARKS.md). */
/* GCC 11 introduced the x86-64-v2/v3/v4 names */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) \
    && defined(__linux__) && !defined(FR_NO_CLONES)
#define FR_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), unused)) static
#else
#define FR_KERNEL static inline
#endif

/* independent accumulators in reductions (lets GCC vectorise them without -ffast-math) */
#define FR_LANES 8

static inline float fr_expf(float x)
{
    /* exp(x) = 2^n * exp(r), n = round(x / ln2), |r| <= ln2 / 2. */
    const float hi = 88.3762626647949f, lo = -87.3365478515625f;  /* 2^n stays a normal float */
    x = (x > hi) ? hi : x;   /* ternaries, not fminf: NaN falls through both tests */
    x = (x < lo) ? lo : x;
    /* round-to-nearest by the 1.5 * 2^23 trick: the low mantissa bits of t hold n */
    const float shifter = 12582912.0f;
    float t = x * 1.44269504088896341f + shifter;
    union { float f; int32_t i; } ut = { t };
    int32_t n = ut.i - 0x4B400000;
    float fn = t - shifter;
    /* r = x - n*ln2, with ln2 split in two so that n*C1 is exact */
    float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union { int32_t i; float f; } scale = { (n + 127) << 23 };
    return p * scale.f;
}

static inline float fr_tanhf(float x)
{
    float ax = (x < 0.0f) ? -x : x;
    /* |x| < 0.625: odd polynomial (keeps relative accuracy near 0) */
    float z = x * x;
    float s = -5.70498872745e-3f;
    s = s * z + 2.06390887954e-2f;
    s = s * z - 5.37397155531e-2f;
    s = s * z + 1.33314422036e-1f;
    s = s * z - 3.33332819422e-1f;
    s = s * z * x + x;
    /* otherwise 1 - 2 / (exp(2|x|) + 1), sign restored */
    float b = 1.0f - 2.0f / (fr_expf(2.0f * ax) + 1.0f);
    b = (x < 0.0f) ? -b : b;
    return (ax < 0.625f) ? s : b;
}

static inline float fr_sigmoidf(float x) { return 1.0f / (1.0f + fr_expf(-x)); }
static inline double fr_sigmoidd(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double fr_tanhd(double x) { return tanh(x); }

#endif
