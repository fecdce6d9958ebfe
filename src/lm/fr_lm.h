/* Row kernels of the language-model layers (src/lm/_lm.pyx), float32 (_f) and float64 (_d).
 *
 * Each walks one row (or one range of elements) once, written so that GCC vectorises it without
 * -ffast-math: independent lanes for reductions, ternaries for max, no aliasing (restrict, and
 * a separate in-place version where the output may be the input).  Non-finite inputs are found
 * on the way by summing x * 0 (0 for a finite x, NaN for Inf or NaN), at the cost of one add.
 */
#ifndef FR_LM_H
#define FR_LM_H

#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#include "fr_math.h"

#define FR_LM_LANES 16
/* float32 sums of exp are added in float over a block of this many elements (16 lanes, 32
 * terms each, all in (0, 1]), then into a double: float vectors, double accuracy */
#define FR_LM_BLOCK 512

/* exp for float64 that GCC vectorises (libm's exp is a scalar call: 10x the time of the rest of
 * a softmax row).  exp(x) = 2^n exp(r), n = round(x / ln2), |r| <= ln2 / 2, exp(r) by its Taylor
 * polynomial to degree 13 (truncation below 1e-17 relative); ln2 split in two (fdlibm's) so
 * that n * ln2_hi is exact.  Within 2 ulp of libm over the range the layers use (x <= 0);
 * below -708 it returns 0 (libm: a subnormal), and it saturates at exp(709) for larger x; NaN
 * propagates. */
static inline double fr_exp_d(double x)
{
    const double hi = 709.0, lo = -708.0;
    double xc = (x > hi) ? hi : x;
    xc = (xc < lo) ? lo : xc;
    const double shifter = 6755399441055744.0;             /* 1.5 * 2^52 */
    double t = xc * 1.4426950408889634 + shifter;
    union { double f; int64_t i; } ut = { t };
    int64_t n = ut.i - 0x4338000000000000LL;
    double fn = t - shifter;
    double r = (xc - fn * 6.93147180369123816490e-01) - fn * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    union { int64_t i; double f; } sc = { (n + 1023) << 52 };
    double res = p * sc.f;
    return (x < lo) ? 0.0 : res;
}

/* 64-byte vectors (GCC splits them for narrower instruction sets) */
typedef float fr_v16f __attribute__((vector_size(64)));
typedef int32_t fr_v16i __attribute__((vector_size(64)));
typedef double fr_v8d __attribute__((vector_size(64)));
typedef int64_t fr_v8l __attribute__((vector_size(64)));

/* The select of fr_dropout_*: DST[i] = SRC[i] * (bits[i] >= thr ? scale : 0) over [i, ne), the
 * non-finite test on the way (z, s); expanded inside fr_dropout_* (its locals) */
#define FR_DROP_SELECT(T, DST, SRC)                                                              \
    for (; i + FR_LM_LANES <= ne; i += FR_LM_LANES)                                              \
        for (int k = 0; k < FR_LM_LANES; k++) {                                                  \
            T v = (SRC)[i + k];                                                                  \
            (DST)[i + k] = v * (bits[i + k] >= thr ? scale : (T)0);                              \
            z[k] += v * 0;                                                                       \
        }                                                                                        \
    for (; i < ne; i++) {                                                                        \
        T v = (SRC)[i];                                                                          \
        (DST)[i] = v * (bits[i] >= thr ? scale : (T)0);                                          \
        s += v * 0;                                                                              \
    }

#define FR_LM_DEFINE(S, T, EXP, VT, IT)                                                                \
/* sum of x[0..n) over lanes, in T (n <= FR_LM_BLOCK: short sums of numbers in (0, 1]) */        \
static inline __attribute__((always_inline)) T fr_sum_##S(const T *restrict x, Py_ssize_t n)    \
{                                                                                                \
    T acc[FR_LM_LANES] = {0};                                                                    \
    Py_ssize_t i = 0;                                                                            \
    for (; i + FR_LM_LANES <= n; i += FR_LM_LANES)                                               \
        for (int k = 0; k < FR_LM_LANES; k++) acc[k] += x[i + k];                                \
    T s = 0;                                                                                     \
    for (; i < n; i++) s += x[i];                                                                \
    for (int k = 0; k < FR_LM_LANES; k++) s += acc[k];                                           \
    return s;                                                                                    \
}                                                                                                \
                                                                                                 \
/* dst = src (n elements); nonzero if src holds NaN or Inf */                                    \
FR_KERNEL int fr_copy_check_##S(T *restrict dst, const T *restrict src, Py_ssize_t n)            \
{                                                                                                \
    T z[FR_LM_LANES] = {0};                                                                      \
    Py_ssize_t i = 0;                                                                            \
    for (; i + FR_LM_LANES <= n; i += FR_LM_LANES)                                               \
        for (int k = 0; k < FR_LM_LANES; k++) { T v = src[i + k]; dst[i + k] = v; z[k] += v * 0; } \
    T s = 0;                                                                                     \
    for (; i < n; i++) { T v = src[i]; dst[i] = v; s += v * 0; }                                 \
    for (int k = 0; k < FR_LM_LANES; k++) s += z[k];                                             \
    return s != 0 || s != s;                                                                     \
}                                                                                                \
                                                                                                 \
/* nonzero if x[0..n) holds NaN or Inf */                                                      \
FR_KERNEL int fr_nonfinite_##S(const T *restrict x, Py_ssize_t n)                                \
{                                                                                                \
    T z[FR_LM_LANES] = {0};                                                                      \
    Py_ssize_t i = 0;                                                                            \
    for (; i + FR_LM_LANES <= n; i += FR_LM_LANES)                                               \
        for (int k = 0; k < FR_LM_LANES; k++) z[k] += x[i + k] * 0;                              \
    T s = 0;                                                                                     \
    for (; i < n; i++) s += x[i] * 0;                                                            \
    for (int k = 0; k < FR_LM_LANES; k++) s += z[k];                                             \
    return s != 0 || s != s;                                                                     \
}                                                                                                \
                                                                                                 \
/* dst += src */                                                                                 \
FR_KERNEL void fr_add_##S(T *restrict dst, const T *restrict src, Py_ssize_t n)                  \
{                                                                                                \
    for (Py_ssize_t i = 0; i < n; i++) dst[i] += src[i];                                         \
}                                                                                                \
                                                                                                 \
/* row += b; nonzero if the result holds NaN or Inf */                                          \
FR_KERNEL int fr_add_bias_check_##S(T *restrict row, const T *restrict b, Py_ssize_t n)          \
{                                                                                                \
    T z[FR_LM_LANES] = {0};                                                                      \
    Py_ssize_t i = 0;                                                                            \
    for (; i + FR_LM_LANES <= n; i += FR_LM_LANES)                                               \
        for (int k = 0; k < FR_LM_LANES; k++) {                                                  \
            T v = row[i + k] + b[i + k]; row[i + k] = v; z[k] += v * 0;                          \
        }                                                                                        \
    T s = 0;                                                                                     \
    for (; i < n; i++) { T v = row[i] + b[i]; row[i] = v; s += v * 0; }                         \
    for (int k = 0; k < FR_LM_LANES; k++) s += z[k];                                             \
    return s != 0 || s != s;                                                                     \
}                                                                                                \
                                                                                                 \
/* max of x[0..n) (n >= 1); *bad = 1 if x holds NaN or Inf.  In GCC's vector extensions: GCC   \
 * does not vectorise a max reduction written with ternaries (NaN rules), and the select       \
 * below is what vmaxps would do for the finite rows that matter (a NaN row is refused). */    \
FR_KERNEL T fr_row_max_##S(const T *restrict x, Py_ssize_t n, int *bad)                          \
{                                                                                                \
    const int W = (int)(sizeof(VT) / sizeof(T));                                                 \
    VT m, z = {0}, zero = {0};                                                                   \
    for (int k = 0; k < W; k++) m[k] = x[0];                                                     \
    Py_ssize_t i = 0;                                                                            \
    for (; i + W <= n; i += W) {                                                                 \
        VT v;                                                                                    \
        memcpy(&v, x + i, sizeof v);                                                             \
        IT gt = v > m;                                                                           \
        m = (VT)(((IT)v & gt) | ((IT)m & ~gt));                                                  \
        z += v * zero;                                                                           \
    }                                                                                            \
    T r = x[0], s = 0;                                                                           \
    for (; i < n; i++) { T v = x[i]; r = v > r ? v : r; s += v * 0; }                            \
    for (int k = 0; k < W; k++) { r = m[k] > r ? m[k] : r; s += z[k]; }                          \
    *bad = s != 0 || s != s;                                                                     \
    return r;                                                                                    \
}                                                                                                \
                                                                                                 \
/* sum of exp(x - m), x finite and <= m.  Block by block: the exps into a buffer on the stack  \
 * (a plain map loop, which GCC vectorises with the exp inlined), then summed over lanes. */    \
FR_KERNEL double fr_row_sumexp_##S(const T *restrict x, Py_ssize_t n, T m)                       \
{                                                                                                \
    T buf[FR_LM_BLOCK];                                                                          \
    double total = 0;                                                                            \
    for (Py_ssize_t i0 = 0; i0 < n; i0 += FR_LM_BLOCK) {                                         \
        Py_ssize_t nb = n - i0 < FR_LM_BLOCK ? n - i0 : FR_LM_BLOCK;                             \
        for (Py_ssize_t i = 0; i < nb; i++) buf[i] = EXP(x[i0 + i] - m);                         \
        total += fr_sum_##S(buf, nb);                                                            \
    }                                                                                            \
    return total;                                                                                \
}                                                                                                \
                                                                                                 \
/* p = exp(p - m), returning the sum (as fr_row_sumexp, but keeping the exps in the row) */      \
FR_KERNEL double fr_row_exp_inplace_##S(T *restrict p, Py_ssize_t n, T m)                        \
{                                                                                                \
    double total = 0;                                                                            \
    for (Py_ssize_t i0 = 0; i0 < n; i0 += FR_LM_BLOCK) {                                         \
        Py_ssize_t nb = n - i0 < FR_LM_BLOCK ? n - i0 : FR_LM_BLOCK;                             \
        T *q = p + i0;                                                                           \
        for (Py_ssize_t i = 0; i < nb; i++) q[i] = EXP(q[i] - m);                                \
        total += fr_sum_##S(q, nb);                                                              \
    }                                                                                            \
    return total;                                                                                \
}                                                                                                \
                                                                                                 \
/* p *= c */                                                                                     \
FR_KERNEL void fr_scale_row_##S(T *restrict p, Py_ssize_t n, T c)                                \
{                                                                                                \
    for (Py_ssize_t i = 0; i < n; i++) p[i] *= c;                                                \
}                                                                                                \
                                                                                                 \
/* out = exp(x - m - ls) * scale: the softmax of the row, scaled */                              \
FR_KERNEL void fr_row_softmax_##S(T *restrict out, const T *restrict x, Py_ssize_t n, T m,      \
                                  T ls, T scale)                                                 \
{                                                                                                \
    for (Py_ssize_t i = 0; i < n; i++) out[i] = EXP((x[i] - m) - ls) * scale;                    \
}                                                                                                \
                                                                                                 \
/* the same in place: p = exp(p - m - ls) * scale */                                             \
FR_KERNEL void fr_row_softmax_inplace_##S(T *restrict p, Py_ssize_t n, T m, T ls, T scale)      \
{                                                                                                \
    for (Py_ssize_t i = 0; i < n; i++) p[i] = EXP((p[i] - m) - ls) * scale;                      \
}                                                                                                \
                                                                                                 \
/* out = x * mask (element for element); nonzero if x holds NaN or Inf */                        \
FR_KERNEL int fr_mul_check_##S(T *restrict out, const T *restrict x, const T *restrict mask,     \
                               Py_ssize_t n)                                                     \
{                                                                                                \
    T z[FR_LM_LANES] = {0};                                                                      \
    Py_ssize_t i = 0;                                                                            \
    for (; i + FR_LM_LANES <= n; i += FR_LM_LANES)                                               \
        for (int k = 0; k < FR_LM_LANES; k++) {                                                  \
            T v = x[i + k]; out[i + k] = v * mask[i + k]; z[k] += v * 0;                         \
        }                                                                                        \
    T s = 0;                                                                                     \
    for (; i < n; i++) { T v = x[i]; out[i] = v * mask[i]; s += v * 0; }                        \
    for (int k = 0; k < FR_LM_LANES; k++) s += z[k];                                             \
    return s != 0 || s != s;                                                                     \
}                                                                                                \
                                                                                                 \
/* the same with out == x allowed (the backward of dropout in place) */                          \
FR_KERNEL int fr_mul_check_inplace_##S(T *restrict p, const T *restrict mask, Py_ssize_t n)      \
{                                                                                                \
    T s = 0;                                                                                     \
    for (Py_ssize_t i = 0; i < n; i++) { T v = p[i]; p[i] = v * mask[i]; s += v * 0; }           \
    return s != 0 || s != s;                                                                     \
}                                                                                                \
                                                                                                 \
/* Dropout of elements [2 * j0, 2 * j1) (clipped to n) of x into out with the counter-based     \
 * mask of key: pair j's 64 bits are fr_mix64(key + (j + 1) * golden), the low half deciding   \
 * element 2j, the high half 2j + 1; an element is kept (times scale) when its 32 bits are >=  \
 * thr.  x == NULL: write the mask itself; x == out: in place.  Nonzero if x holds NaN or Inf. \
 * Chunk by chunk: the draws into a stack buffer, then a plain select over the elements (both  \
 * loops vectorise; in place has its own loop, as the compiler's overlap check between out and  \
 * x sends a shared one to its scalar version: 10x slower). */                                  \
FR_KERNEL int fr_dropout_##S(T *out, const T *x, Py_ssize_t n, Py_ssize_t j0, Py_ssize_t j1,     \
                             uint64_t key, uint32_t thr, T scale)                                \
{                                                                                                \
    uint32_t bits[2 * FR_LM_PAIRS];                                                              \
    T z[FR_LM_LANES] = {0}, s = 0;                                                               \
    for (Py_ssize_t c0 = j0; c0 < j1; c0 += FR_LM_PAIRS) {                                       \
        Py_ssize_t np_ = j1 - c0 < FR_LM_PAIRS ? j1 - c0 : FR_LM_PAIRS;                          \
        fr_draws(bits, key, c0, np_);                                                            \
        Py_ssize_t e0 = 2 * c0, ne = 2 * np_ < n - e0 ? 2 * np_ : n - e0, i = 0;                 \
        T *o = out + e0;                                                                         \
        if (x == out) {                                                                          \
            T *restrict p = o;                                                                   \
            FR_DROP_SELECT(T, p, p)                                                              \
        } else if (x) {                                                                          \
            const T *a = x + e0;                                                                 \
            FR_DROP_SELECT(T, o, a)                                                              \
        } else {                                                                                 \
            for (; i < ne; i++) o[i] = bits[i] >= thr ? scale : (T)0;                            \
        }                                                                                        \
    }                                                                                            \
    for (int k = 0; k < FR_LM_LANES; k++) s += z[k];                                             \
    return s != 0 || s != s;                                                                     \
}

/* out[i] = exp(x[i]) by the layers' exp (for the tests) */
FR_KERNEL void fr_exp_map_f(float *restrict out, const float *restrict x, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) out[i] = fr_expf(x[i]);
}

FR_KERNEL void fr_exp_map_d(double *restrict out, const double *restrict x, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) out[i] = fr_exp_d(x[i]);
}

/* SplitMix64's output function (Steele, Lea & Flood 2014): a bijective 64-bit mix */
static inline uint64_t fr_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* the 2 * np draws of pairs [c0, c0 + np) into bits: pair j's low 32 bits, then its high */
#define FR_LM_PAIRS 256
static inline __attribute__((always_inline)) void fr_draws(uint32_t *restrict bits, uint64_t key,
                                                           Py_ssize_t c0, Py_ssize_t np_)
{
    for (Py_ssize_t j = 0; j < np_; j++) {
        uint64_t z = fr_mix64(key + (uint64_t)(c0 + j + 1) * 0x9E3779B97F4A7C15ull);
        bits[2 * j] = (uint32_t)z;
        bits[2 * j + 1] = (uint32_t)(z >> 32);
    }
}

FR_LM_DEFINE(f, float, fr_expf, fr_v16f, fr_v16i)
FR_LM_DEFINE(d, double, fr_exp_d, fr_v8d, fr_v8l)

#endif
