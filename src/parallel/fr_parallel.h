/* Fork-join over a few threads: the one place the kernels run work on several threads.
 *
 * fr_parallel(n, fn, arg) runs fn(arg, tid, n) for tid = 0 .. n-1, tid 0 on the calling thread,
 * and returns when all are done.  Each extension module hands its jobs to the process's one
 * pool of persistent workers (fr_pool.h, in module fastrnn._pool, found at module import by
 * fr_use_pool).  fr_fork_join, which starts threads for one job and joins them, is the
 * fallback: for a caller that finds the pool busy, and before a module is wired to the pool.
 * fr_parallel_phases runs work in rounds (phases) with the same pool.
 * A thread that cannot be started has its share run by the caller afterwards, so the work is
 * always done.
 */
#ifndef FR_PARALLEL_H
#define FR_PARALLEL_H

#include <Python.h>
#include <pthread.h>
#include <sched.h>

#define FR_MAX_THREADS 8

typedef void (*fr_task_fn)(void *arg, int tid, int nthreads);
/* one share of one phase of a job run in phases (fr_parallel_phases) */
typedef void (*fr_phase_fn)(void *arg, int share, int nshares, int phase);
typedef void (*fr_run_fn)(int n, fr_task_fn fn, void *arg);
typedef void (*fr_run_phases_fn)(int n, int phases, fr_phase_fn fn, void *arg);

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

static void fr_fork_join(int n, fr_task_fn fn, void *arg)
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

/* this module's way to the process's pool (NULL until fr_use_pool) */
static fr_run_fn fr_pool_entry = NULL;
static fr_run_phases_fn fr_pool_phases_entry = NULL;

#define FR_POOL_CAPSULE "fastrnn._pool.run"
#define FR_POOL_PHASES_CAPSULE "fastrnn._pool.run_phases"

/* Wire this module to the pool: call once at module import.  -1 with a Python exception set if
 * fastrnn._pool cannot be imported. */
static inline int fr_use_pool(void)
{
    /* import the submodule first: PyCapsule_Import only walks attributes, and while fastrnn's
     * __init__ is still running the package has no `_pool` attribute yet */
    PyObject *m = PyImport_ImportModule("fastrnn._pool");
    if (m == NULL)
        return -1;
    Py_DECREF(m);
    void *p = PyCapsule_Import(FR_POOL_CAPSULE, 0);
    if (p == NULL)
        return -1;
    void *q = PyCapsule_Import(FR_POOL_PHASES_CAPSULE, 0);
    if (q == NULL)
        return -1;
    fr_pool_entry = (fr_run_fn)p;
    fr_pool_phases_entry = (fr_run_phases_fn)q;
    return 0;
}

static inline void fr_parallel(int n, fr_task_fn fn, void *arg)
{
    if (n > 1 && fr_pool_entry != NULL)
        fr_pool_entry(n, fn, arg);
    else
        fr_fork_join(n, fn, arg);
}

/* A job in phases run on the calling thread alone, one share after the other, phase by phase (a
 * valid order: the shares of a phase never wait for each other). */
static inline void fr_phases_here(int n, int phases, fr_phase_fn fn, void *arg)
{
    for (int p = 0; p < phases; p++)
        for (int s = 0; s < n; s++)
            fn(arg, s, n, p);
}

/* Run fn(arg, share, n, phase) for share 0 .. n-1 of phase 0, then of phase 1, ... up to
 * phases - 1: the shares of one phase in any order or at once, a phase only after every share
 * of the one before.  Work that threads used to share with a barrier between its rounds (a time
 * loop shared by hidden units) is a phase a round: on the pool, a share no thread has started is
 * run by whichever thread gets to it first, so no thread ever waits for one that is not running
 * (fr_pool.h).  Without the pool, all of it on the caller (fr_phases_here). */
static inline void fr_parallel_phases(int n, int phases, fr_phase_fn fn, void *arg)
{
    if (n > 1 && fr_pool_phases_entry != NULL)
        fr_pool_phases_entry(n, phases, fn, arg);
    else
        fr_phases_here(n, phases, fn, arg);
}

/* [lo, hi) of `total` items for thread tid of n: near-equal contiguous shares */
static inline void fr_share(Py_ssize_t total, int tid, int n, Py_ssize_t *lo, Py_ssize_t *hi)
{
    Py_ssize_t q = total / n, r = total % n;
    *lo = q * tid + (tid < r ? tid : r);
    *hi = *lo + q + (tid < r ? 1 : 0);
}

#endif
