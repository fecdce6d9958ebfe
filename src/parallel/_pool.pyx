"""The process's pool of worker threads (src/parallel/fr_pool.h), shared by all kernel modules.

The kernel modules reach it through the capsules `run` and `run_together` (fr_use_pool in
fr_parallel.h), so a process has one pool whichever layers it uses.  stats() and exercise() are
for the tests.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdlib cimport calloc, free

cdef extern from "fr_pool.h" nogil:
    ctypedef void (*fr_task_fn)(void *arg, int tid, int nthreads) noexcept nogil
    int FR_MAX_THREADS
    int FR_POOL_SPIN_NS
    int FR_POOL_THREADS
    ctypedef struct fr_pool_t:
        int workers
        long jobs
        long fallbacks
        int bypass
    fr_pool_t fr_pool
    void fr_pool_run(int n, fr_task_fn fn, void *arg)
    int fr_pool_run_together(int n, fr_task_fn fn, void *arg)
    int fr_pool_init()

if fr_pool_init() != 0:
    raise OSError("fastrnn._pool: pthread_atfork failed")

run = PyCapsule_New(<void *>fr_pool_run, "fastrnn._pool.run", NULL)
run_together = PyCapsule_New(<void *>fr_pool_run_together, "fastrnn._pool.run_together", NULL)

MAX_THREADS = FR_MAX_THREADS
SPIN_SECONDS = FR_POOL_SPIN_NS / 1e9
# False where the platform has no futexes (not Linux): then every job starts its own threads
PERSISTENT = bool(FR_POOL_THREADS)


def stats():
    """{'workers': threads started, 'jobs': jobs run by the pool, 'fallbacks': jobs that found it
    busy and ran on threads of their own}"""
    return {"workers": fr_pool.workers, "jobs": fr_pool.jobs, "fallbacks": fr_pool.fallbacks}


def set_bypass(bint on):
    """True: run every job on threads started for it (the pool's fallback), as before the pool
    existed; for A/B timings (benches/pool_ab.py).  Returns the previous setting."""
    cdef bint old = fr_pool.bypass
    fr_pool.bypass = on
    return old


cdef struct Exercise:
    long *counts         # counts[job * MAX + tid]: how often thread tid ran job `job`
    int *ns              # thread count of each job
    long job


cdef void _exercise_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Exercise *e = <Exercise *>arg
    if nthreads == e.ns[e.job] and 0 <= tid < nthreads:
        e.counts[e.job * FR_MAX_THREADS + tid] += 1


def exercise(ns):
    """Run one job per entry of ns (its thread count) back to back through the pool, GIL
    released; returns, per job, how many times each of its threads ran it (all ones when
    correct)."""
    cdef long jobs = len(ns), j
    cdef Exercise e
    for n in ns:
        if not 1 <= n <= FR_MAX_THREADS:
            raise ValueError(f"thread counts must be in 1..{FR_MAX_THREADS}, got {n}")
    e.counts = <long *>calloc(max(jobs, 1) * FR_MAX_THREADS, sizeof(long))
    e.ns = <int *>calloc(max(jobs, 1), sizeof(int))
    if e.counts == NULL or e.ns == NULL:
        free(e.counts)
        free(e.ns)
        raise MemoryError()
    try:
        for j in range(jobs):
            e.ns[j] = ns[j]
        with nogil:
            e.job = 0
            while e.job < jobs:
                fr_pool_run(e.ns[e.job], _exercise_task, &e)
                e.job += 1
        return [[e.counts[j * FR_MAX_THREADS + t] for t in range(e.ns[j])] for j in range(jobs)]
    finally:
        free(e.counts)
        free(e.ns)
