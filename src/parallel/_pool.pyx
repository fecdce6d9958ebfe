"""The process's pool of worker threads (src/parallel/fr_pool.h), shared by all kernel modules.

The kernel modules reach it through the capsules `run` and `run_phases` (fr_use_pool in
fr_parallel.h), so a process has one pool whichever layers it uses.  stats() and exercise() are
for the tests.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdlib cimport calloc, free
from libc.string cimport memset

cdef extern from "fr_pool.h" nogil:
    ctypedef void (*fr_task_fn)(void *arg, int tid, int nthreads) noexcept nogil
    ctypedef void (*fr_phase_fn)(void *arg, int share, int nshares, int phase) noexcept nogil
    int FR_MAX_THREADS
    int FR_POOL_SPIN_NS
    int FR_POOL_THREADS
    ctypedef struct fr_pool_t:
        int workers
        long jobs
        long fallbacks
        long stolen
        long solo_jobs
        int solo
        int backoff
        int no_backoff
        int bypass
    fr_pool_t fr_pool
    void fr_pool_run(int n, fr_task_fn fn, void *arg)
    void fr_pool_run_phases(int n, int phases, fr_phase_fn fn, void *arg)
    int fr_pool_init()

if fr_pool_init() != 0:
    raise OSError("fastrnn._pool: pthread_atfork failed")

run = PyCapsule_New(<void *>fr_pool_run, "fastrnn._pool.run", NULL)
run_phases = PyCapsule_New(<void *>fr_pool_run_phases, "fastrnn._pool.run_phases", NULL)

MAX_THREADS = FR_MAX_THREADS
SPIN_SECONDS = FR_POOL_SPIN_NS / 1e9
# False where the platform has no futexes (not Linux): then every job starts its own threads
PERSISTENT = bool(FR_POOL_THREADS)


def stats():
    """{'workers': threads started, 'jobs': jobs run by the pool, 'fallbacks': jobs that found it
    busy and ran on threads of their own (or, run in phases, on the caller), 'stolen': shares
    run by a thread other than their own (one that had not started), 'solo': jobs in phases run
    on the caller alone after one where the caller waited longer than it worked}"""
    return {"workers": fr_pool.workers, "jobs": fr_pool.jobs, "fallbacks": fr_pool.fallbacks,
            "stolen": fr_pool.stolen, "solo": fr_pool.solo_jobs}


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


cdef struct PhaseExercise:
    int *runs           # runs[(phase * MAX + share)]: how often that share of that phase ran
    int *early          # shares that started before the phase before them was complete
    int phases


cdef void _exercise_phase(void *arg, int share, int nshares, int phase) noexcept nogil:
    cdef PhaseExercise *e = <PhaseExercise *>arg
    cdef int s
    if phase > 0:
        for s in range(nshares):
            if e.runs[(phase - 1) * FR_MAX_THREADS + s] != 1:
                e.early[0] += 1
    e.runs[phase * FR_MAX_THREADS + share] += 1


def exercise_phases(int n, int phases, int jobs=1):
    """Run `jobs` jobs of n shares in `phases` phases back to back through the pool, GIL
    released; returns (runs, early): for the last job, how many times each share of each phase
    ran (all ones when correct), and over all jobs, how many shares started before every share
    of the phase before had finished (0 when correct)."""
    if not 1 <= n <= FR_MAX_THREADS or phases < 1 or jobs < 1:
        raise ValueError(f"n must be in 1..{FR_MAX_THREADS}, phases and jobs positive")
    cdef PhaseExercise e
    cdef int early = 0, _j
    e.runs = <int *>calloc(phases * FR_MAX_THREADS, sizeof(int))
    if e.runs == NULL:
        raise MemoryError()
    e.early = &early
    e.phases = phases
    try:
        with nogil:
            for _j in range(jobs):
                memset(e.runs, 0, phases * FR_MAX_THREADS * sizeof(int))
                fr_pool_run_phases(n, phases, _exercise_phase, &e)
        return [[e.runs[p * FR_MAX_THREADS + s] for s in range(n)] for p in range(phases)], early
    finally:
        free(e.runs)


cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    pthread_t pthread_self()
    int pthread_equal(pthread_t a, pthread_t b)

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *t)
    int CLOCK_MONOTONIC


cdef struct Busy:
    pthread_t caller
    long spin_ns
    long work_ns


cdef long _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec * 1000000000 + t.tv_nsec


cdef void _busy_phase(void *arg, int share, int nshares, int phase) noexcept nogil:
    cdef Busy *b = <Busy *>arg
    cdef long until = _now_ns() + b.work_ns
    if share == 1 and not pthread_equal(pthread_self(), b.caller):
        until += b.spin_ns
    while _now_ns() < until:
        pass


def exercise_slow_workers(int jobs, double spin_seconds, double work_seconds=0):
    """Run `jobs` jobs of two shares in one phase, each share work_seconds long, share 1
    spin_seconds longer when a worker runs it: a worker as slow as a preempted one.  For the
    tests of the pool's back-off; returns nothing (see stats())."""
    cdef Busy b
    cdef int _j
    b.caller = pthread_self()
    b.spin_ns = <long>(spin_seconds * 1e9)
    b.work_ns = <long>(work_seconds * 1e9)
    with nogil:
        for _j in range(jobs):
            fr_pool_run_phases(2, 1, _busy_phase, &b)


def set_backoff(bint on):
    """False: jobs in phases always go to the workers, however little they gained last time (the
    tests, which check results computed concurrently, use this); True: the default.  Either way
    forgets the contention seen so far.  Returns the previous setting."""
    cdef bint old = not fr_pool.no_backoff
    fr_pool.no_backoff = not on
    fr_pool.solo = 0
    fr_pool.backoff = 0
    return old
