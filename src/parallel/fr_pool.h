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
 * Every job is n shares, run in `phases` rounds: fn(arg, share, n, phase) for each share of a
 * phase, every share of phase p done before any of phase p + 1 starts (a plain fr_parallel job
 * is one phase).  The caller does not wait for the workers to start: each thread -- the caller,
 * and every worker that the job wakes -- *claims* a share before it runs it, its own first (share
 * tid; affinity: its part of the weights stays in its cache from one phase to the next), then
 * any share nobody has claimed.  So a job never waits for a worker that has not started
 * (OpenBLAS's workers, spinning for about 0.1 s after a call, can hold the core a worker needs
 * for a scheduler slice): the caller runs that worker's shares itself, and waits only for shares
 * that a running thread has claimed.  Measured before this protocol: a time loop whose threads
 * waited for each other at every step took 11.5 ms after a threaded OpenBLAS call against 5.6
 * on one thread.
 *
 * All with sequentially consistent atomics, and no state of a job on the caller's stack that a
 * late worker could touch after the job is over:
 *   - claim[s] holds a number from one sequence that only grows: a job numbers its phases base,
 *     base + 1, ..., and claiming share s of phase p is CAS(claim[s], base + p - 1 -> base + p).
 *     A worker that reads a job's description late, when that job is over, can claim nothing
 *     (every claim word has moved past its numbers), so it never calls fn with the old arg.
 *   - done counts finished shares over the life of the pool; phase p of a job is over when
 *     done >= done_base + n (p + 1).  A thread that holds a claim keeps the job alive (the
 *     caller waits for done), so fn's arg is valid for as long as anyone runs a share.
 *   - the job's description (fn, arg, n, phases, base, done_base) is published under a
 *     sequence lock (desc_seq odd while it is written), since a late worker may read it while
 *     the next job's caller writes it.
 *   - the caller wakes only the workers a job can use (tids 1 .. n-1): go++ in each one's slot.
 * Sleeping: a worker polls its go for FR_POOL_SPIN_NS, then sleeps on it; a thread waiting for a
 * phase to end polls done, then sleeps on done_events, which a finishing share bumps (and wakes)
 * when done_sleepers says someone sleeps.  A sleeper announces itself before re-reading what it
 * waits for and the waker changes it before reading the announcement, so one of the two always
 * sees the other: no lost wake-ups.  FUTEX_WAIT re-checks the value in the kernel.
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

/* how long an idle worker (and a thread waiting for a phase to end) polls before sleeping */
#define FR_POOL_SPIN_NS 200000
/* how long a thread waiting for a phase to end polls before it also yields the CPU as it polls
 * (a sched_yield is a system call: microseconds on a VM) */
#define FR_POOL_POLL_NS 50000

typedef struct {
    atomic_int go;                  /* bumped by the caller for each job this worker is woken for */
    atomic_int sleeping;            /* the worker is asleep on go */
    int start;                      /* go when the worker was started: its first job is the next */
    char pad[64 - 3 * sizeof(int)]; /* one cache line per worker */
} fr_slot;

/* one job's description, as a worker copies it (see desc_seq) */
typedef struct {
    fr_task_fn task;                /* a plain job: task(arg, share, n) */
    fr_phase_fn phase_fn;           /* or a phased one: phase_fn(arg, share, n, phase) */
    void *arg;
    int n, phases;
    long long base;                 /* claim number of phase 0 */
    long long done_base;            /* done when the job started */
} fr_job;

typedef struct {
    pthread_mutex_t busy;           /* held by the caller of the current job */
    fr_slot slot[FR_MAX_THREADS];   /* slot[tid] for tids 1 .. workers */
    _Alignas(64) atomic_llong claim[FR_MAX_THREADS];
    _Alignas(64) atomic_llong done; /* shares finished, ever */
    atomic_int done_events;         /* bumped after a share finishes while someone sleeps */
    atomic_int done_sleepers;       /* threads asleep on done_events */
    _Alignas(64) atomic_int desc_seq;   /* odd while the description is being written */
    _Atomic(fr_task_fn) task;
    _Atomic(fr_phase_fn) phase_fn;
    _Atomic(void *) arg;
    atomic_int n, phases;
    atomic_llong base, done_base;
    long long next_base;            /* the next job's base (under busy) */
    int workers;                    /* started so far (tids 1 .. workers) */
    atomic_long jobs, fallbacks;    /* counters for tests: pool jobs, jobs it did not take */
    atomic_long stolen;             /* shares run by a thread other than their own */
    /* jobs in phases under contention (see fr_pool_post; under busy): */
    int solo;                       /* the next `solo` of them run on the caller alone */
    int backoff;                    /* solo after the next contended one */
    int no_backoff;                 /* 1: never run them alone (tests of the pool's concurrency) */
    atomic_long solo_jobs;          /* counter for tests: jobs in phases run on the caller alone */
    atomic_llong work_ns;           /* time spent in shares of jobs in phases, ever */
    int bypass;                     /* 1: every job on threads of its own (for A/B timing) */
} fr_pool_t;

static fr_pool_t fr_pool = { .busy = PTHREAD_MUTEX_INITIALIZER, .next_base = 1 };

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

/* Wait until done >= target: poll (the other shares of a phase usually end microseconds
 * apart), then poll yielding the CPU (more threads than cores: let the ones with work run),
 * then sleep on done_events. */
static void fr_wait_done(long long target)
{
    long long start = 0, now;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load(&fr_pool.done) >= target)
                return;
            fr_cpu_relax();
        }
        now = fr_now_ns();
        if (start == 0)
            start = now;
        else if (now > start + FR_POOL_SPIN_NS)
            break;
        if (now > start + FR_POOL_POLL_NS)
            sched_yield();
    }
    atomic_fetch_add(&fr_pool.done_sleepers, 1);
    for (;;) {
        int e = atomic_load(&fr_pool.done_events);
        if (atomic_load(&fr_pool.done) >= target)
            break;
        fr_futex_wait(&fr_pool.done_events, e);
    }
    atomic_fetch_sub(&fr_pool.done_sleepers, 1);
}

/* the current job's description, consistent (a sequence-lock read) */
static void fr_read_job(fr_job *j)
{
    for (;;) {
        int s = atomic_load(&fr_pool.desc_seq);
        if (s & 1) {
            fr_cpu_relax();
            continue;
        }
        j->task = atomic_load(&fr_pool.task);
        j->phase_fn = atomic_load(&fr_pool.phase_fn);
        j->arg = atomic_load(&fr_pool.arg);
        j->n = atomic_load(&fr_pool.n);
        j->phases = atomic_load(&fr_pool.phases);
        j->base = atomic_load(&fr_pool.base);
        j->done_base = atomic_load(&fr_pool.done_base);
        if (atomic_load(&fr_pool.desc_seq) == s)
            return;
    }
}

/* Claim share s of phase p and run it; 0 if another thread has it (or the job is over). */
static int fr_try_share(const fr_job *j, int s, int p, int me)
{
    long long expect = j->base + p - 1;
    if (atomic_load(&fr_pool.claim[s]) != expect
            || !atomic_compare_exchange_strong(&fr_pool.claim[s], &expect, j->base + p))
        return 0;
    if (j->phase_fn) {
        long long t0 = fr_now_ns();
        j->phase_fn(j->arg, s, j->n, p);
        atomic_fetch_add(&fr_pool.work_ns, fr_now_ns() - t0);
    } else {
        j->task(j->arg, s, j->n);
    }
    if (s != me)
        atomic_fetch_add(&fr_pool.stolen, 1);
    atomic_fetch_add(&fr_pool.done, 1);
    if (atomic_load(&fr_pool.done_sleepers)) {
        atomic_fetch_add(&fr_pool.done_events, 1);
        fr_futex_wake(&fr_pool.done_events, INT32_MAX);
    }
    return 1;
}

/* Take part in job j as thread `me`: each phase, its own share if nobody has it, then any share
 * nobody has claimed, then wait for the phase's other shares.  A late thread (the job over)
 * claims nothing and falls through: done only grows. */
static void fr_take_part(const fr_job *j, int me)
{
    for (int p = 0; p < j->phases; p++) {
        for (int k = 0; k < j->n; k++)      /* share me first (when it is one of the job's) */
            fr_try_share(j, (me + k) % j->n, p, me);
        if (p + 1 < j->phases || me == 0)   /* (a worker need not see the last one end) */
            fr_wait_done(j->done_base + (long long)j->n * (p + 1));
    }
}

static void *fr_pool_worker(void *p)
{
    int tid = (int)(intptr_t)p;
    fr_slot *me = &fr_pool.slot[tid];
    int seen = me->start;
    fr_job j;
    for (;;) {
        seen = fr_wait_change(&me->go, seen, &me->sleeping);
        fr_read_job(&j);
        fr_take_part(&j, tid);
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
    /* the child has only the forking thread: no workers, and nobody holds the pool; a job the
     * parent's workers were late for is over (the fork happened outside any job) */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    fr_pool.busy = fresh;
    fr_pool.workers = 0;
    atomic_store(&fr_pool.done_sleepers, 0);
    for (int t = 0; t < FR_MAX_THREADS; t++)
        atomic_store(&fr_pool.slot[t].sleeping, 0);
}

/* Run job j (its fn fields set) on the pool: 1 if done, 0 (nothing run) if the pool does not take
 * it -- busy, bypassed, no workers can be started (counted as a fallback), or a job in phases
 * while the back-off below lasts (counted as solo) -- and the caller runs it another way. */
static int fr_pool_post(fr_job *j)
{
    if (fr_pool.bypass || pthread_mutex_trylock(&fr_pool.busy) != 0) {
        atomic_fetch_add(&fr_pool.fallbacks, 1);
        return 0;
    }
    if (j->phase_fn != NULL && fr_pool.solo > 0) {
        fr_pool.solo--;
        atomic_fetch_add(&fr_pool.solo_jobs, 1);
        pthread_mutex_unlock(&fr_pool.busy);
        return 0;
    }
    if (fr_pool_grow(j->n) < 1) {
        pthread_mutex_unlock(&fr_pool.busy);
        atomic_fetch_add(&fr_pool.fallbacks, 1);
        return 0;
    }
    /* new claim numbers, past every number an earlier job used; then the description */
    j->base = fr_pool.next_base;
    fr_pool.next_base += j->phases + 1;
    j->done_base = atomic_load(&fr_pool.done);
    for (int s = 0; s < FR_MAX_THREADS; s++)
        atomic_store(&fr_pool.claim[s], j->base - 1);
    int seq = atomic_load(&fr_pool.desc_seq);
    atomic_store(&fr_pool.desc_seq, seq + 1);
    atomic_store(&fr_pool.task, j->task);
    atomic_store(&fr_pool.phase_fn, j->phase_fn);
    atomic_store(&fr_pool.arg, j->arg);
    atomic_store(&fr_pool.n, j->n);
    atomic_store(&fr_pool.phases, j->phases);
    atomic_store(&fr_pool.base, j->base);
    atomic_store(&fr_pool.done_base, j->done_base);
    atomic_store(&fr_pool.desc_seq, seq + 2);
    int wake = j->n - 1 < fr_pool.workers ? j->n - 1 : fr_pool.workers;
    for (int t = 1; t <= wake; t++) {
        fr_slot *sl = &fr_pool.slot[t];
        atomic_fetch_add(&sl->go, 1);
        if (atomic_load(&sl->sleeping))
            fr_futex_wake(&sl->go, 1);
    }
    long long t0 = fr_now_ns(), work0 = atomic_load(&fr_pool.work_ns);
    fr_take_part(j, 0);     /* returns when the last phase is over: every share done */
    if (j->phase_fn != NULL) {
        /* The job took more than 1/1.1 of its shares' time summed (about its time on the caller
         * alone): the workers did not help.  Their cores were taken -- the caller then runs
         * the shares of workers that have not started, or waits for one preempted in a share --
         * e.g. by OpenBLAS's idle workers, which spin for about 0.1 s after each call and which
         * a spinning pool worker slows in turn.  Run the next such jobs on the caller alone, 4,
         * 8, ... 1024 of them while it lasts, then try the workers again. */
        long long took = fr_now_ns() - t0, work = atomic_load(&fr_pool.work_ns) - work0;
        if (11 * took > 10 * work && !fr_pool.no_backoff) {
            int b = 2 * fr_pool.backoff;
            fr_pool.backoff = b < 4 ? 4 : (b > 1024 ? 1024 : b);
            fr_pool.solo = fr_pool.backoff;
        } else {
            fr_pool.backoff /= 2;
        }
    }
    atomic_fetch_add(&fr_pool.jobs, 1);
    pthread_mutex_unlock(&fr_pool.busy);
    return 1;
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

/* fr_parallel's contract: fn(arg, tid, n) for tid 0 .. n-1, returning when all are done.  On
 * the pool when it can take the job, with any thread running any share (see above); else on
 * threads of its own (fr_fork_join). */
static void fr_pool_run(int n, fr_task_fn fn, void *arg)
{
    if (n > FR_MAX_THREADS) n = FR_MAX_THREADS;
    if (n <= 1) {
        fn(arg, 0, 1);
        return;
    }
#if FR_POOL_THREADS
    fr_job j = { .task = fn, .phase_fn = NULL, .arg = arg, .n = n, .phases = 1 };
    if (fr_pool_post(&j))
        return;
#else
    atomic_fetch_add(&fr_pool.fallbacks, 1);
#endif
    fr_fork_join(n, fn, arg);
}

/* fr_parallel_phases's contract: fn(arg, share, n, phase) for share 0 .. n-1 of each phase in
 * turn.  On the pool when it takes the job; else all of it on the caller (fr_phases_here). */
static void fr_pool_run_phases(int n, int phases, fr_phase_fn fn, void *arg)
{
    if (n > FR_MAX_THREADS) n = FR_MAX_THREADS;
    if (n < 1) n = 1;
#if FR_POOL_THREADS
    fr_job j = { .task = NULL, .phase_fn = fn, .arg = arg, .n = n, .phases = phases };
    if (n > 1 && fr_pool_post(&j))
        return;
#endif
    fr_phases_here(n, phases, fn, arg);
}

#endif
