/* A persistent pool of worker threads for fr_parallel: one per process (module fastrnn._pool).
 *
 * Why a pool: starting and joining a thread per parallel region was measured at 180-370 us on
 * the 2-vCPU machines this runs on (a nested-virtualisation VM), against 1-2 ms of work per
 * region at the small benchmark shapes: with a thread started per region, the N20 shapes'
 * forward+backward took 12-24 % longer than on the pool (benches/pool_ab.py).
 * Pool workers stay alive and wait for the next job:
 *   - for FR_POOL_SPIN_NS after each job they poll, so the regions of one forward+backward
 *     (microseconds apart) start without a system call;
 *   - then they sleep on a futex and use no CPU, so a pool never spins against BLAS's threads
 *     or the user's code for longer than that (OpenBLAS's own workers spin for about 0.1 s).
 * One job at a time: a caller that finds the pool busy (layers running in two Python threads)
 * runs its job on threads of its own instead (fr_fork_join), so concurrency stays correct.
 * After fork() the child starts with an empty pool (pthread_atfork), since threads do not
 * survive a fork.
 *
 * The protocol, all with sequentially consistent atomics.  Each worker has its own slot, and
 * only the workers that take part in a job are signalled, so a worker never looks at a job that
 * is not its own (with one shared job counter, a worker left out of one job could wake late and
 * read the next job's thread count as its own, and run that job twice):
 *   caller: fn, arg, n, pending = n-1; for tid 1..n-1: slot[tid].go++, wake it if it sleeps;
 *           run tid 0; wait until pending == 0 (poll, then sleep on pending).
 *   worker: wait until its go changes (poll, then sleep on go); run its share; pending--; the
 *           last one wakes the caller if it sleeps.
 * A sleeper announces itself (its slot's sleeping, or caller_sleeps) before re-reading the value
 * it waits on, and the waker changes the value before reading the announcement, so one of the
 * two always sees the other: no lost wake-ups.  FUTEX_WAIT re-checks the value in the kernel.
 */
#ifndef FR_POOL_H
#define FR_POOL_H

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "fr_parallel.h"

/* The pool sleeps on futexes, which only Linux has; elsewhere every job runs on threads of its
 * own (fr_fork_join), as before the pool existed.  FR_POOL_FORK_JOIN_ONLY forces that here. */
#if defined(__linux__) && !defined(FR_POOL_FORK_JOIN_ONLY)
#define FR_POOL_THREADS 1
#include <linux/futex.h>
#include <sys/syscall.h>
#else
#define FR_POOL_THREADS 0
#endif

/* how long an idle worker (and a caller waiting for workers) polls before sleeping */
#define FR_POOL_SPIN_NS 200000

typedef struct {
    atomic_int go;                  /* bumped by the caller for each job this worker takes part in */
    atomic_int sleeping;            /* the worker is asleep on go */
    int start;                      /* go when the worker was started: its first job is the next */
    char pad[64 - 3 * sizeof(int)]; /* one cache line per worker */
} fr_slot;

typedef struct {
    pthread_mutex_t busy;           /* held by the caller of the current job */
    fr_slot slot[FR_MAX_THREADS];   /* slot[tid] for tids 1 .. workers */
    atomic_int pending;             /* workers of the current job not yet done */
    atomic_int caller_sleeps;       /* the caller is asleep on pending */
    int workers;                    /* started so far (tids 1 .. workers) */
    fr_task_fn fn;                  /* the current job, written before any go++ */
    void *arg;
    int n;
    atomic_long jobs, fallbacks;    /* counters for tests: pool jobs, jobs run on own threads */
    int bypass;                     /* 1: every job on threads of its own (for A/B timing) */
} fr_pool_t;

static fr_pool_t fr_pool = { .busy = PTHREAD_MUTEX_INITIALIZER };

#if FR_POOL_THREADS
static void fr_futex_wait(atomic_int *addr, int expected)
{
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void fr_futex_wake(atomic_int *addr, int count)
{
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

static inline long long fr_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void fr_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Wait until *addr != value: poll for FR_POOL_SPIN_NS, then sleep; *announce is 1 while
 * asleep. */
static int fr_wait_change(atomic_int *addr, int value, atomic_int *announce)
{
    int v;
    long long until = fr_now_ns() + FR_POOL_SPIN_NS;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if ((v = atomic_load(addr)) != value)
                return v;
            fr_cpu_relax();
        }
        if (fr_now_ns() > until)
            break;
        sched_yield();      /* more threads than cores: let the ones with work run */
    }
    atomic_fetch_add(announce, 1);
    while ((v = atomic_load(addr)) == value)
        fr_futex_wait(addr, value);
    atomic_fetch_sub(announce, 1);
    return v;
}

static void *fr_pool_worker(void *p)
{
    int tid = (int)(intptr_t)p;
    fr_slot *me = &fr_pool.slot[tid];
    int seen = me->start;
    for (;;) {
        seen = fr_wait_change(&me->go, seen, &me->sleeping);
        fr_pool.fn(fr_pool.arg, tid, fr_pool.n);
        if (atomic_fetch_sub(&fr_pool.pending, 1) == 1 && atomic_load(&fr_pool.caller_sleeps))
            fr_futex_wake(&fr_pool.pending, 1);
    }
    return NULL;
}

/* start workers up to tid want - 1; returns how many run (fewer if the system refuses) */
static int fr_pool_grow(int want)
{
    sigset_t all, old;
    sigfillset(&all);
    /* workers inherit a fully blocked signal mask: signals stay with the Python threads */
    pthread_sigmask(SIG_BLOCK, &all, &old);
    while (fr_pool.workers < want - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* read by the new thread whenever it gets to run, when its first job may already be
         * posted (go only changes under `busy`, which the caller holds) */
        fr_slot *sl = &fr_pool.slot[fr_pool.workers + 1];
        sl->start = atomic_load(&sl->go);
        int ok = pthread_create(&th, &attr, fr_pool_worker,
                                (void *)(intptr_t)(fr_pool.workers + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok)
            break;
        fr_pool.workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return fr_pool.workers;
}

static void fr_pool_after_fork_child(void)
{
    /* the child has only the forking thread: no workers, and nobody holds the pool */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    fr_pool.busy = fresh;
    fr_pool.workers = 0;
    atomic_store(&fr_pool.pending, 0);
    atomic_store(&fr_pool.caller_sleeps, 0);
    for (int t = 0; t < FR_MAX_THREADS; t++)
        atomic_store(&fr_pool.slot[t].sleeping, 0);
}

#endif  /* FR_POOL_THREADS */

static int fr_pool_init(void)
{
#if FR_POOL_THREADS
    return pthread_atfork(NULL, NULL, fr_pool_after_fork_child);
#else
    return 0;
#endif
}

/* Run fn(arg, tid, n) for tid 0 .. n-1 (2 <= n <= FR_MAX_THREADS) on the pool, all at once:
 * tid 0 on the caller, the others on n-1 workers.  Returns 0, having run nothing, where the pool
 * cannot take the job (busy, bypassed, not enough workers, no pool on this platform).  Tasks
 * that wait for each other (fr_barrier) rely on the n running at the same time, which only the
 * pool guarantees: fr_fork_join may run a share after the others. */
static int fr_pool_run_together(int n, fr_task_fn fn, void *arg)
{
    if (n < 2 || n > FR_MAX_THREADS)
        return 0;
#if !FR_POOL_THREADS
    (void)fn; (void)arg;
    return 0;
#else
    if (fr_pool.bypass || pthread_mutex_trylock(&fr_pool.busy) != 0)
        return 0;
    int workers = fr_pool_grow(n);
    if (workers < n - 1) {
        pthread_mutex_unlock(&fr_pool.busy);
        return 0;
    }
    fr_pool.fn = fn;
    fr_pool.arg = arg;
    fr_pool.n = n;
    atomic_store(&fr_pool.pending, n - 1);
    for (int t = 1; t < n; t++) {
        fr_slot *sl = &fr_pool.slot[t];
        atomic_fetch_add(&sl->go, 1);
        if (atomic_load(&sl->sleeping))
            fr_futex_wake(&sl->go, 1);
    }
    fn(arg, 0, n);
    int left;
    while ((left = atomic_load(&fr_pool.pending)) > 0)
        fr_wait_change(&fr_pool.pending, left, &fr_pool.caller_sleeps);
    atomic_fetch_add(&fr_pool.jobs, 1);
    pthread_mutex_unlock(&fr_pool.busy);
    return 1;
#endif
}

/* fr_parallel's contract: fn(arg, tid, n) for tid 0 .. n-1, tid 0 on the caller; returns when
 * all are done.  On the pool when it can take the job (with pool workers still starting, or
 * not starting, their shares are tried per call and, failing, run by the caller). */
static void fr_pool_run(int n, fr_task_fn fn, void *arg)
{
    if (n > FR_MAX_THREADS) n = FR_MAX_THREADS;
    if (n <= 1) {
        fn(arg, 0, 1);
        return;
    }
    if (!fr_pool_run_together(n, fn, arg)) {
        atomic_fetch_add(&fr_pool.fallbacks, 1);
        fr_fork_join(n, fn, arg);
    }
}

#endif
