/* Whole-buffer reductions for gradient clipping and input checks, float32 (_f) and float64 (_d).
 * Each is one streaming pass with no temporaries; the loops are written so GCC vectorises them
 * without -ffast-math (independent accumulators instead of a reassociated reduction). */
#ifndef FR_REDUCE_H
#define FR_REDUCE_H

#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#include "fr_math.h"

#define FR_LANES 8

/* sum of x[i]^2, accumulated in double over FR_LANES independent lanes */
FR_KERNEL double fr_sumsq_f(const float *restrict x, Py_ssize_t n)
{
    double acc[FR_LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + FR_LANES <= n; i += FR_LANES)
        for (int k = 0; k < FR_LANES; k++) acc[k] += (double)x[i + k] * (double)x[i + k];
    double s = 0;
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    for (int k = 0; k < FR_LANES; k++) s += acc[k];
    return s;
}

FR_KERNEL double fr_sumsq_d(const double *restrict x, Py_ssize_t n)
{
    double acc[FR_LANES] = {0};
    Py_ssize_t i = 0;
    for (; i + FR_LANES <= n; i += FR_LANES)
        for (int k = 0; k < FR_LANES; k++) acc[k] += x[i + k] * x[i + k];
    double s = 0;
    for (; i < n; i++) s += x[i] * x[i];
    for (int k = 0; k < FR_LANES; k++) s += acc[k];
    return s;
}

/* largest |x[i]|; only used on the rare path where a float64 sum of squares overflows */
FR_KERNEL double fr_maxabs_d(const double *restrict x, Py_ssize_t n)
{
    double m = 0;
    for (Py_ssize_t i = 0; i < n; i++) { double a = fabs(x[i]); m = a > m ? a : m; }
    return m;
}

/* sum of (x[i] / s)^2 */
FR_KERNEL double fr_sumsq_scaled_d(const double *restrict x, Py_ssize_t n, double s)
{
    double inv = 1.0 / s, acc = 0;
    for (Py_ssize_t i = 0; i < n; i++) { double v = x[i] * inv; acc += v * v; }
    return acc;
}

FR_KERNEL void fr_scale_f(float *restrict x, Py_ssize_t n, float r)
{
    for (Py_ssize_t i = 0; i < n; i++) x[i] *= r;
}

FR_KERNEL void fr_scale_d(double *restrict x, Py_ssize_t n, double r)
{
    for (Py_ssize_t i = 0; i < n; i++) x[i] *= r;
}

/* 1 if every element is finite: tests the exponent bits (all ones = Inf or NaN) */
FR_KERNEL int fr_all_finite_f(const float *restrict x, Py_ssize_t n)
{
    uint32_t bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

FR_KERNEL int fr_all_finite_d(const double *restrict x, Py_ssize_t n)
{
    uint64_t bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, x + i, sizeof u);
        bad |= (uint64_t)((u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    }
    return bad == 0;
}

#endif
