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

/* y -= a * x, rounded as NumPy's `y -= a * x` is (the product rounded, then the difference:
 * no fused multiply-add), so an optimizer step gives the same bits as that NumPy line */
#if defined(__GNUC__) && !defined(__clang__)
#define FR_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define FR_NO_CONTRACT
#endif

FR_NO_CONTRACT FR_KERNEL void fr_sub_scaled_f(float *restrict y, const float *restrict x,
                                              Py_ssize_t n, float a)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float t = a * x[i];
        y[i] = y[i] - t;
    }
}

FR_NO_CONTRACT FR_KERNEL void fr_sub_scaled_d(double *restrict y, const double *restrict x,
                                              Py_ssize_t n, double a)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        double t = a * x[i];
        y[i] = y[i] - t;
    }
}

/* y += w * (x - y), rounded as NumPy's `y += w * (x - y)` is (difference, product, sum): a
 * running mean of the x seen (w = 1 / count), as weight averaging keeps one */
FR_NO_CONTRACT FR_KERNEL void fr_lerp_f(float *restrict y, const float *restrict x, Py_ssize_t n,
                                        float w)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float t = w * (x[i] - y[i]);
        y[i] = y[i] + t;
    }
}

FR_NO_CONTRACT FR_KERNEL void fr_lerp_d(double *restrict y, const double *restrict x,
                                        Py_ssize_t n, double w)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        double t = w * (x[i] - y[i]);
        y[i] = y[i] + t;
    }
}

/* One Adam step (the book's form), rounded as NumPy 2 rounds its lines
 *     m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g * g - v)
 *     p -= (lr_t * m / (sqrt(v) + eps)).astype(p.dtype)      (lr_t a float64 scalar)
 * in the arrays' dtype, the last quotient in float64: the same bits, in one pass over the four
 * arrays instead of a dozen with their temporaries.  c1 = 1 - beta1, c2 = 1 - beta2.  (No
 * contraction into FMAs, which would round differently.) */
#if defined(__GNUC__) && !defined(__clang__)
#define FR_ADAM_FLAGS __attribute__((optimize("fp-contract=off")))
#else
#define FR_ADAM_FLAGS
#endif

FR_ADAM_FLAGS FR_KERNEL void fr_adam_f(float *restrict p, const float *restrict g,
                                       float *restrict m, float *restrict v, Py_ssize_t n,
                                       float c1, float c2, double lr_t, float eps)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + c1 * (gi - m[i]);
        float vi = v[i] + c2 * (gi * gi - v[i]);
        m[i] = mi;
        v[i] = vi;
        double q = (lr_t * (double)mi) / (double)(sqrtf(vi) + eps);
        p[i] = p[i] - (float)q;
    }
}

FR_ADAM_FLAGS FR_KERNEL void fr_adam_d(double *restrict p, const double *restrict g,
                                       double *restrict m, double *restrict v, Py_ssize_t n,
                                       double c1, double c2, double lr_t, double eps)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        double gi = g[i];
        double mi = m[i] + c1 * (gi - m[i]);
        double vi = v[i] + c2 * (gi * gi - v[i]);
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] - (lr_t * mi) / (sqrt(vi) + eps);
    }
}

/* *flag = 1, from any of the threads of a parallel region (an atomic store: several may) */
static inline void fr_raise_flag(int *flag)
{
#if defined(__GNUC__)
    __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
#else
    *(volatile int *)flag = 1;
#endif
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


/* ---- the same passes over a list of arrays, split across threads ----
 * Large gradient sets are bandwidth-bound: two cores stream more bytes than one.  The elements of
 * all arrays, taken in order, are cut into `threads` equal ranges; each thread measures or scales
 * its range.  Per-array sums stay separate (sums[k]) so the caller can name a non-finite array. */
#include <stdlib.h>
#include "fr_parallel.h"

typedef struct {
    char *data;
    Py_ssize_t size;            /* elements */
    int f32;                    /* 1: float32, 0: float64 */
} fr_buf;

typedef struct {
    const fr_buf *bufs;
    Py_ssize_t n, total;
    double *sums;               /* measure: sums[k] for thread 0, part[(t-1)*n + k] for the others */
    double *part;
    double rate;                /* scale: the factor; step: the learning rate */
    const fr_buf *grads;        /* step: bufs[k] -= rate * grads[k] (same sizes and dtypes) */
    int lerp;                   /* with grads: bufs[k] += rate * (grads[k] - bufs[k]) instead */
} fr_pass;

static void fr_pass_task(void *arg, int tid, int nthreads)
{
    fr_pass *j = (fr_pass *)arg;
    Py_ssize_t lo, hi, base = 0;
    double *sums = !j->sums ? NULL : (tid == 0 ? j->sums : j->part + (size_t)(tid - 1) * j->n);
    fr_share(j->total, tid, nthreads, &lo, &hi);
    for (Py_ssize_t k = 0; k < j->n && base < hi; base += j->bufs[k].size, k++) {
        Py_ssize_t s = lo > base ? lo : base;
        Py_ssize_t e = hi < base + j->bufs[k].size ? hi : base + j->bufs[k].size;
        if (s >= e) continue;
        const fr_buf *b = &j->bufs[k];
        Py_ssize_t off = s - base, len = e - s;
        if (sums) {
            sums[k] += b->f32 ? fr_sumsq_f((const float *)b->data + off, len)
                              : fr_sumsq_d((const double *)b->data + off, len);
        } else if (j->grads) {
            const char *g = j->grads[k].data;
            if (j->lerp && b->f32)
                fr_lerp_f((float *)b->data + off, (const float *)g + off, len, (float)j->rate);
            else if (j->lerp)
                fr_lerp_d((double *)b->data + off, (const double *)g + off, len, j->rate);
            else if (b->f32)
                fr_sub_scaled_f((float *)b->data + off, (const float *)g + off, len,
                                (float)j->rate);
            else
                fr_sub_scaled_d((double *)b->data + off, (const double *)g + off, len, j->rate);
        } else if (b->f32) {
            fr_scale_f((float *)b->data + off, len, (float)j->rate);
        } else {
            fr_scale_d((double *)b->data + off, len, j->rate);
        }
    }
}

/* measure (sums != NULL: sums[k] = sum of squares of array k) or scale by rate, with up to
 * `threads` threads */
__attribute__((unused)) static void fr_pass_many(const fr_buf *bufs, Py_ssize_t n, int threads, double *sums, double rate)
{
    fr_pass j = { bufs, n, 0, sums, NULL, rate, NULL, 0 };
    for (Py_ssize_t k = 0; k < n; k++) j.total += bufs[k].size;
    if (threads > FR_MAX_THREADS) threads = FR_MAX_THREADS;
    if (threads < 1) threads = 1;
    if (sums) {
        for (Py_ssize_t k = 0; k < n; k++) sums[k] = 0;
        if (threads > 1)
            j.part = (double *)calloc((size_t)(threads - 1) * (size_t)n, sizeof(double));
        if (!j.part) threads = 1;
    }
    fr_parallel(threads, fr_pass_task, &j);
    if (j.part) {
        for (int t = 1; t < threads; t++)
            for (Py_ssize_t k = 0; k < n; k++) sums[k] += j.part[(size_t)(t - 1) * (size_t)n + k];
        free(j.part);
    }
}

/* the optimizer step bufs[k] -= lr * grads[k] (fr_sub_scaled), or with `lerp` the running mean
 * bufs[k] += lr * (grads[k] - bufs[k]) (fr_lerp), with up to `threads` threads */
__attribute__((unused)) static void fr_step_many(const fr_buf *bufs, const fr_buf *grads,
                                                 Py_ssize_t n, int threads, double lr, int lerp)
{
    fr_pass j = { bufs, n, 0, NULL, NULL, lr, grads, lerp };
    for (Py_ssize_t k = 0; k < n; k++) j.total += bufs[k].size;
    if (threads > FR_MAX_THREADS) threads = FR_MAX_THREADS;
    if (threads < 1) threads = 1;
    fr_parallel(threads, fr_pass_task, &j);
}

/* Adam's step over lists of arrays (p, g, m, v of one size and dtype each), with up to
 * `threads` threads sharing the elements of all arrays in order */
typedef struct {
    const fr_buf *p, *g, *m, *v;
    Py_ssize_t n, total;
    double c1, c2, lr_t, eps;
} fr_adam_job;

static void fr_adam_task(void *arg, int tid, int nthreads)
{
    fr_adam_job *j = (fr_adam_job *)arg;
    Py_ssize_t lo, hi, base = 0;
    fr_share(j->total, tid, nthreads, &lo, &hi);
    for (Py_ssize_t k = 0; k < j->n && base < hi; base += j->p[k].size, k++) {
        Py_ssize_t s = lo > base ? lo : base;
        Py_ssize_t e = hi < base + j->p[k].size ? hi : base + j->p[k].size;
        if (s >= e) continue;
        Py_ssize_t off = s - base, len = e - s;
        if (j->p[k].f32)
            fr_adam_f((float *)j->p[k].data + off, (const float *)j->g[k].data + off,
                      (float *)j->m[k].data + off, (float *)j->v[k].data + off, len,
                      (float)j->c1, (float)j->c2, j->lr_t, (float)j->eps);
        else
            fr_adam_d((double *)j->p[k].data + off, (const double *)j->g[k].data + off,
                      (double *)j->m[k].data + off, (double *)j->v[k].data + off, len,
                      j->c1, j->c2, j->lr_t, j->eps);
    }
}

__attribute__((unused)) static void fr_adam_many(const fr_buf *p, const fr_buf *g,
                                                 const fr_buf *m, const fr_buf *v, Py_ssize_t n,
                                                 int threads, double c1, double c2, double lr_t,
                                                 double eps)
{
    fr_adam_job j = { p, g, m, v, n, 0, c1, c2, lr_t, eps };
    for (Py_ssize_t k = 0; k < n; k++) j.total += p[k].size;
    if (threads > FR_MAX_THREADS) threads = FR_MAX_THREADS;
    if (threads < 1) threads = 1;
    fr_parallel(threads, fr_adam_task, &j);
}

#endif
