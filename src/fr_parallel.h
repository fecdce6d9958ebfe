/* Fork-join over a few threads: the one place the kernels start threads.
 *
 * fr_parallel(n, fn, arg) runs fn(arg, tid, n) for tid = 0 .. n-1, tid 0 on the calling thread,
 * and returns when all are done.  A thread that cannot be started has its share run by the caller
 * afterwards, so the work is always done.  Threads are created per call (about 20 us each here):
 * the callers hand each thread a whole time loop over its batch rows, so one call covers
 * milliseconds of work and needs no persistent pool that could spin against BLAS's own threads.
 */
#ifndef FR_PARALLEL_H
#define FR_PARALLEL_H

#include <pthread.h>

#define FR_MAX_THREADS 8

typedef void (*fr_task_fn)(void *arg, int tid, int nthreads);

typedef struct {
    fr_task_fn fn;
    void *arg;
    int tid, n;
} fr_thread_job;

static void *fr_thread_main(void *p)
{
    fr_thread_job *j = (fr_thread_job *)p;
    j->fn(j->arg, j->tid, j->n);
    return NULL;
}

static void fr_parallel(int n, fr_task_fn fn, void *arg)
{
    if (n > FR_MAX_THREADS) n = FR_MAX_THREADS;
    if (n <= 1) {
        fn(arg, 0, 1);
        return;
    }
    fr_thread_job jobs[FR_MAX_THREADS];
    pthread_t th[FR_MAX_THREADS];
    int started[FR_MAX_THREADS] = {0};
    for (int t = 1; t < n; t++) {
        jobs[t].fn = fn; jobs[t].arg = arg; jobs[t].tid = t; jobs[t].n = n;
        started[t] = pthread_create(&th[t], NULL, fr_thread_main, &jobs[t]) == 0;
    }
    fn(arg, 0, n);
    for (int t = 1; t < n; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else fn(arg, t, n);
    }
}

/* [lo, hi) of `total` items for thread tid of n: near-equal contiguous shares */
static inline void fr_share(Py_ssize_t total, int tid, int n, Py_ssize_t *lo, Py_ssize_t *hi)
{
    Py_ssize_t q = total / n, r = total % n;
    *lo = q * tid + (tid < r ? tid : r);
    *hi = *lo + q + (tid < r ? 1 : 0);
}

#endif
