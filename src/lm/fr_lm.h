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

static inline double fr_exp_d(double x) { return exp(x); }

#define FR_LM_DEFINE(S, T, EXP)                                                                  \
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
/* acc[j] += row[j], in double */                                                                \
FR_KERNEL void fr_colsum_##S(double *restrict acc, const T *restrict row, Py_ssize_t n)          \
{                                                                                                \
    for (Py_ssize_t i = 0; i < n; i++) acc[i] += (double)row[i];                                 \
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
/* max of x[0..n) (n >= 1); *bad = 1 if x holds NaN or Inf */                                    \
FR_KERNEL T fr_row_max_##S(const T *restrict x, Py_ssize_t n, int *bad)                          \
{                                                                                                \
    T m[FR_LM_LANES], z[FR_LM_LANES] = {0};                                                      \
    for (int k = 0; k < FR_LM_LANES; k++) m[k] = x[0];                                           \
    Py_ssize_t i = 0;                                                                            \
    for (; i + FR_LM_LANES <= n; i += FR_LM_LANES)                                               \
        for (int k = 0; k < FR_LM_LANES; k++) {                                                  \
            T v = x[i + k]; m[k] = v > m[k] ? v : m[k]; z[k] += v * 0;                           \
        }                                                                                        \
    T r = x[0], s = 0;                                                                           \
    for (; i < n; i++) { T v = x[i]; r = v > r ? v : r; s += v * 0; }                            \
    for (int k = 0; k < FR_LM_LANES; k++) { r = m[k] > r ? m[k] : r; s += z[k]; }                \
    *bad = s != 0 || s != s;                                                                     \
    return r;                                                                                    \
}                                                                                                \
                                                                                                 \
/* sum of exp(x - m), x finite and <= m */                                                       \
FR_KERNEL double fr_row_sumexp_##S(const T *restrict x, Py_ssize_t n, T m)                       \
{                                                                                                \
    double total = 0;                                                                            \
    for (Py_ssize_t i0 = 0; i0 < n; i0 += FR_LM_BLOCK) {                                         \
        Py_ssize_t e = i0 + FR_LM_BLOCK < n ? i0 + FR_LM_BLOCK : n, i = i0;                      \
        T acc[FR_LM_LANES] = {0};                                                                \
        for (; i + FR_LM_LANES <= e; i += FR_LM_LANES)                                           \
            for (int k = 0; k < FR_LM_LANES; k++) acc[k] += EXP(x[i + k] - m);                   \
        T s = 0;                                                                                 \
        for (; i < e; i++) s += EXP(x[i] - m);                                                   \
        for (int k = 0; k < FR_LM_LANES; k++) s += acc[k];                                       \
        total += (double)s;                                                                      \
    }                                                                                            \
    return total;                                                                                \
}                                                                                                \
                                                                                                 \
/* p = exp(p - m), returning the sum (as fr_row_sumexp, but keeping the exps in the row) */      \
FR_KERNEL double fr_row_exp_inplace_##S(T *restrict p, Py_ssize_t n, T m)                        \
{                                                                                                \
    double total = 0;                                                                            \
    for (Py_ssize_t i0 = 0; i0 < n; i0 += FR_LM_BLOCK) {                                         \
        Py_ssize_t e = i0 + FR_LM_BLOCK < n ? i0 + FR_LM_BLOCK : n, i = i0;                      \
        T acc[FR_LM_LANES] = {0};                                                                \
        for (; i + FR_LM_LANES <= e; i += FR_LM_LANES)                                           \
            for (int k = 0; k < FR_LM_LANES; k++) {                                              \
                T v = EXP(p[i + k] - m); p[i + k] = v; acc[k] += v;                              \
            }                                                                                    \
        T s = 0;                                                                                 \
        for (; i < e; i++) { T v = EXP(p[i] - m); p[i] = v; s += v; }                            \
        for (int k = 0; k < FR_LM_LANES; k++) s += acc[k];                                       \
        total += (double)s;                                                                      \
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
 * thr.  x == NULL: write the mask itself.  Nonzero if x holds NaN or Inf. */                   \
FR_KERNEL int fr_dropout_##S(T *out, const T *x, Py_ssize_t n, Py_ssize_t j0, Py_ssize_t j1,     \
                             uint64_t key, uint32_t thr, T scale)                                \
{                                                                                                \
    T s = 0;                                                                                     \
    Py_ssize_t jfull = n / 2 < j1 ? n / 2 : j1;                                                  \
    if (x) {                                                                                     \
        for (Py_ssize_t j = j0; j < jfull; j++) {                                                \
            uint64_t z = fr_mix64(key + (uint64_t)(j + 1) * 0x9E3779B97F4A7C15ull);              \
            T a = x[2 * j], b = x[2 * j + 1];                                                    \
            out[2 * j] = ((uint32_t)z >= thr) ? a * scale : (T)0 * a;                            \
            out[2 * j + 1] = ((uint32_t)(z >> 32) >= thr) ? b * scale : (T)0 * b;               \
            s += a * 0 + b * 0;                                                                  \
        }                                                                                        \
    } else {                                                                                     \
        for (Py_ssize_t j = j0; j < jfull; j++) {                                                \
            uint64_t z = fr_mix64(key + (uint64_t)(j + 1) * 0x9E3779B97F4A7C15ull);              \
            out[2 * j] = ((uint32_t)z >= thr) ? scale : (T)0;                                    \
            out[2 * j + 1] = ((uint32_t)(z >> 32) >= thr) ? scale : (T)0;                       \
        }                                                                                        \
    }                                                                                            \
    if (jfull < j1 && 2 * jfull < n) {      /* the odd last element */                           \
        uint64_t z = fr_mix64(key + (uint64_t)(jfull + 1) * 0x9E3779B97F4A7C15ull);              \
        T a = x ? x[2 * jfull] : (T)1;                                                           \
        out[2 * jfull] = ((uint32_t)z >= thr) ? a * scale : (T)0 * a;                            \
        s += a * 0;                                                                              \
    }                                                                                            \
    return s != 0 || s != s;                                                                     \
}

/* SplitMix64's output function (Steele, Lea & Flood 2014): a bijective 64-bit mix */
static inline uint64_t fr_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

FR_LM_DEFINE(f, float, fr_expf)
FR_LM_DEFINE(d, double, fr_exp_d)

#endif
