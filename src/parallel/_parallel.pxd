# fr_parallel.h: fork-join over a few threads, and the share of rows each thread takes.
cdef extern from "fr_parallel.h" nogil:
    ctypedef void (*fr_task_fn)(void *arg, int tid, int nthreads) noexcept nogil
    ctypedef void (*fr_phase_fn)(void *arg, int share, int nshares, int phase) noexcept nogil
    void fr_parallel(int n, fr_task_fn fn, void *arg)
    void fr_parallel_phases(int n, int phases, fr_phase_fn fn, void *arg)
    void fr_share(Py_ssize_t total, int tid, int n, Py_ssize_t *lo, Py_ssize_t *hi)

cdef extern from "fr_parallel.h":
    int fr_use_pool() except -1

from libc.stdlib cimport calloc, free


cdef inline bint _sq_parts(int threads, double *sq, Py_ssize_t sq_len,
                           double **sq_part) noexcept nogil:
    """Zeroed per-thread norm sums for threads 1.. (see parallel_rows); False if out of memory."""
    sq_part[0] = NULL
    if sq != NULL and threads > 1:
        sq_part[0] = <double *>calloc((threads - 1) * sq_len, sizeof(double))
        return sq_part[0] != NULL
    return True


cdef inline void _add_sq_parts(int threads, double *sq, Py_ssize_t sq_len,
                               double **sq_part) noexcept nogil:
    """Add the threads' norm sums into sq, in thread order (deterministic), and free them."""
    cdef int t
    cdef Py_ssize_t k
    if sq_part[0] != NULL:
        for t in range(1, threads):
            for k in range(sq_len):
                sq[k] += sq_part[0][(t - 1) * sq_len + k]
        free(sq_part[0])
        sq_part[0] = NULL


cdef inline void parallel_phases(int threads, int phases, fr_phase_fn task, void *arg,
                                 double *sq, Py_ssize_t sq_len, double **sq_part) noexcept nogil:
    """Run task(arg, share, threads, phase) for every share of each phase in turn
    (fr_parallel_phases), with per-share norm sums as in parallel_rows (thread_sq by share)."""
    if threads < 1:
        threads = 1
    if not _sq_parts(threads, sq, sq_len, sq_part):
        threads = 1
    fr_parallel_phases(threads, phases, task, arg)
    _add_sq_parts(threads, sq, sq_len, sq_part)


cdef inline void parallel_rows(int threads, Py_ssize_t rows, fr_task_fn task, void *arg,
                               double *sq, Py_ssize_t sq_len, double **sq_part) noexcept nogil:
    """Run task(arg, tid, n) on n = min(threads, rows) threads, each taking its fr_share of the
    batch rows.  Batch rows never interact in a recurrent layer, so each thread runs the whole
    time loop for its rows with no synchronisation until the join.

    sq (sq_len doubles, or NULL): per-step gradient norms that the threads add into.  Thread 0
    adds into sq itself, thread k > 0 into its own zeroed slice of *sq_part (see thread_sq), and
    the slices are added in thread order after the join: no shared writes, deterministic sums."""
    if threads > rows:
        threads = <int>rows
    if threads < 1:
        threads = 1
    if not _sq_parts(threads, sq, sq_len, sq_part):
        threads = 1
    fr_parallel(threads, task, arg)
    _add_sq_parts(threads, sq, sq_len, sq_part)


cdef inline double *thread_sq(double *sq, double *sq_part, int tid,
                              Py_ssize_t sq_len) noexcept nogil:
    """Where thread tid of parallel_rows adds its per-step norms (NULL: not recorded)."""
    if sq == NULL or tid == 0:
        return sq
    return sq_part + (tid - 1) * sq_len


cdef inline void share_cols(Py_ssize_t cols, int tid, int n, Py_ssize_t *lo,
                            Py_ssize_t *hi) noexcept nogil:
    """Thread tid's share of `cols` output columns, in whole 64-byte units (16 floats) so that
    two threads never write the same cache line of a row."""
    fr_share((cols + 15) // 16, tid, n, lo, hi)
    lo[0] = min(lo[0] * 16, cols)           # (an empty share past the end: [cols, cols))
    hi[0] = min(hi[0] * 16, cols)
