"""LSTM forward and backward-through-time kernels (float32 and float64 from one source).

Layout: everything batch-major, as the caller's arrays are: xs (N, T, D), gates G (N, T, 4H) with
blocks f, g, i, o.  Step t of a batch-major (N, T, X) buffer is N rows with stride T*X, which BLAS
addresses through its leading dimension, so no buffer is ever transposed or copied per step.

The per-step products h_{t-1} @ Wh and dG_t @ Wh^T use Wh packed once per call into Wp (a
scratch buffer of the layer, _packed.size(H, 4H) elements); the other products are BLAS calls, or
fastrnn's direct kernels for a few rows (_seq.pxd, step_path in _packed.pxd).
With several threads, each takes a share of the batch rows for everything row-wise (projection,
time loop, dX), then a share of the columns of dWx, dWh and db (see _forward, _backward).
For a few rows and a large Wh the time loop is shared by hidden units instead (use_units).

Caches written by forward and read by backward (all owned by the Python layer, reused across calls):
  XH     [x_t | h_{t-1}] for every step (h0 at t = 0)  (N, T, D + H); x_t copied in by forward
  G      activated gates f, g, i, o                    (N, T, 4H)
  C      c_t                                           (N, T, H)
  TC     tanh(c_t)                                     (N, T, H)
"""
cimport numpy as cnp
from cython cimport floating
from libc.string cimport memcpy, memset

from _packed cimport (checked_mode, gemm_packed, kernel_isa, kernel_tn_mode, pack_b, packed_size,
                      recurrent_product, PACKED, step_path)
from _seq cimport worth_prefetch, prefetch, dx_rows, start_rows, weight_grad_cols
from _steps cimport (Steps, Whole, brow, cache_rows, crow, has_next, packed, plan_buf, run_end,
                     share_slots, start_state, step_rows, steps_init, urow, whole_task)
from _parallel cimport (fr_barrier, fr_barrier_init, fr_barrier_wait, fr_parallel, fr_share,
                        fr_use_pool, parallel_rows, parallel_together, share_cols, thread_sq)
from _cells cimport (all_finite, buf, flag_nonfinite, lstm_fwd_row_f, lstm_fwd_row_d,
                     lstm_bwd_row_f, lstm_bwd_row_d, mask_copy, mask_scale)

cnp.import_array()
fr_use_pool()                   # run threaded work on the process's pool (fr_pool.h)


cdef inline void fwd_row(int H, int bs, floating *a, const floating *b, const floating *c_prev,
                         floating *c, floating *tc, floating *h) noexcept nogil:
    # H units; gate blocks bs apart in a and b (see fr_cells_impl.h)
    if floating is float:
        lstm_fwd_row_f(H, bs, a, b, c_prev, c, tc, h)
    else:
        lstm_fwd_row_d(H, bs, a, b, c_prev, c, tc, h)


cdef inline void bwd_row(int H, int bs, const floating *a, const floating *c_prev,
                         const floating *tc, const floating *dy, const floating *dh_in,
                         const floating *dc_in, floating *da, floating *dc_out,
                         double *sq) noexcept nogil:
    if floating is float:
        lstm_bwd_row_f(H, bs, a, c_prev, tc, dy, dh_in, dc_in, da, dc_out, sq)
    else:
        lstm_bwd_row_d(H, bs, a, c_prev, tc, dy, dh_in, dc_in, da, dc_out, sq)


# How the time loop is shared between threads: -1 by use_units's rule, 0 always by batch rows,
# 1 by hidden units whenever possible (tests and A/B timings: _set_unit_split)
cdef int unit_split_mode = -1


cdef bint use_units(int threads, int path, Py_ssize_t N, int H) noexcept nogil:
    """Share the time loop by hidden units rather than by batch rows?  By rows, each thread
    multiplies its rows by all of Wh at every step; by units, all rows by its columns of Wh
    (then the threads wait for each other once a step, fr_barrier).  With few rows and a large Wh
    the rows' products are bound by reading Wh, which does not fit one core's cache; by units
    each core keeps its share of Wh in cache.  Measured on the Xeon, float32, 2 threads,
    forward+backward by rows / by units: H650 N2 1.47, N8 1.32, N20 1.08, N32 1.07, N48 1.01,
    N64 1.01; H512 N20 1.08, N128 0.96; H400 N8 1.15, N20 1.03; H1024 N20 1.07; H256 N2 1.13,
    N8 0.97, N20 0.95, N64 0.94; H128 N4 0.83; H100 N20 0.74 (there the wait at every step
    costs more than it saves)."""
    if threads < 2 or path != PACKED:
        return False
    if unit_split_mode >= 0:
        return unit_split_mode == 1
    return N < 24 * threads and H >= 400


cdef struct Loop:
    # what each thread needs for its share of the work (pointers to the element type of the
    # call); see _forward and _backward for how the work is shared
    Py_ssize_t N, T
    int D, H
    int ldxh            # D + H: the row stride of X and Hprev, side by side in XH (_seq.pxd)
    const void *X       # forward: the caller's inputs (N, T, D), copied into XH (start_rows)
    void *XH            # [X | Hprev] (N, T, D + H), see _seq.pxd
    const void *Wx
    void *dX
    void *dWx
    void *dWh
    void *db
    double *acc
    const void *Wp      # Wh packed (or Wh^T in backward), when packed
    const void *Wh
    int path            # how the per-step products are made (step_path)
    const void *b
    const void *h0
    const void *c0
    void *hs
    void *G
    void *Hprev         # = XH + D
    void *C
    void *TC
    const void *dhs
    const void *dcT
    void *dG
    void *dh_buf
    void *dc_buf
    double *sq          # per-step squared norms or NULL (see parallel_rows)
    double *sq_part
    fr_barrier bar      # shared by hidden units: the threads' meeting point after each step
    bint check          # T = 1: flag non-finite pre-activations (see forward)
    int nonfinite
    bint f64
    bint prefetch       # the element-wise passes prefetch the next row (worth_prefetch)
    const void *M       # recurrent dropout's mask (N, H) on h_{t-1} in h_{t-1} Wh, or NULL
    Steps steps         # where each row's steps are (_steps.pxd); rows below are its slots


cdef void _cells_fwd(Loop *L, floating *G, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t n1,
                     Py_ssize_t j0, int w) noexcept nogil:
    """The element-wise part of forward step t, rows [n0, n1), units [j0, j0 + w):
    f, g, i, o = act(G + b); c = f*c_prev + g*i; h = o*tanh(c); then Hprev[:, t+1] = h_t."""
    cdef Py_ssize_t n, gr, hr, ld = L.ldxh
    cdef int H = L.H
    cdef const floating *b = <const floating *>L.b
    cdef const floating *c0 = <const floating *>L.c0
    cdef floating *hs = <floating *>L.hs
    cdef floating *Hprev = <floating *>L.Hprev
    cdef floating *C = <floating *>L.C
    cdef floating *TC = <floating *>L.TC
    cdef const floating *M = <const floating *>L.M
    cdef const floating *c_prev
    cdef const Steps *S = &L.steps
    cdef Py_ssize_t r, u
    for n in range(n0, n1):
        r = crow(S, n, t)
        u = urow(S, n, t) * H + j0             # (batch-major: r * H + j0)
        gr = r * 4 * H + j0
        hr = r * H + j0
        c_prev = c0 + brow(S, n) * H + j0 if t == 0 else C + crow(S, n, t - 1) * H + j0
        fwd_row(w, H, G + gr, b + j0, c_prev, C + hr, TC + hr, hs + u)
        if has_next(S, n, t):
            if M == NULL:
                memcpy(Hprev + crow(S, n, t + 1) * ld + j0, hs + u, w * sizeof(floating))
            else:       # the product's input: the masked h_t
                mask_copy(w, M + brow(S, n) * H + j0, hs + u, Hprev + crow(S, n, t + 1) * ld + j0)


cdef void _mask_h0(Loop *L, Py_ssize_t n0, Py_ssize_t n1) noexcept nogil:
    """Hprev[rows, 0] *= mask (recurrent dropout, when L.M): h0 as the first product reads it."""
    cdef Py_ssize_t n
    if L.M == NULL:
        return
    if L.f64:
        for n in range(n0, n1):
            mask_scale(L.H, <const double *>L.M + n * L.H, <double *>L.Hprev + n * L.T * L.ldxh)
    else:
        for n in range(n0, n1):
            mask_scale(L.H, <const float *>L.M + n * L.H, <float *>L.Hprev + n * L.T * L.ldxh)


cdef void _mask_rows(const Steps *S, const floating *M, Py_ssize_t n0, Py_ssize_t n1,
                     Py_ssize_t j0, int w, int H, floating *dh) noexcept nogil:
    """dh[slots, j0:j0+w] *= M[their batch rows, j0:j0+w] (dh and M (N, H)): the gradient
    reaching h_{t-1} through the product of the masked h_{t-1} (when M is not NULL)."""
    cdef Py_ssize_t n
    if M != NULL:
        for n in range(n0, n1):
            mask_scale(w, M + brow(S, n) * H + j0, dh + n * H + j0)


cdef void _cells_bwd(Loop *L, floating *dG, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t n1,
                     Py_ssize_t j0, int w, const floating *dh_in, const floating *dc_in,
                     floating *dc_out, double *sq) noexcept nogil:
    """The element-wise part of backward step t, rows [n0, n1), units [j0, j0 + w): the gate
    gradients dG[:, t] and dc_{t-1} = dc_t * f (sq: this thread's norm sums or NULL)."""
    cdef Py_ssize_t n, gr, hr, ld_h = L.T * L.H, ld_g = 4 * ld_h
    cdef int H = L.H, k
    cdef const floating *c0 = <const floating *>L.c0
    cdef const floating *G = <const floating *>L.G
    cdef const floating *C = <const floating *>L.C
    cdef const floating *TC = <const floating *>L.TC
    cdef const floating *dhs = <const floating *>L.dhs
    cdef const floating *c_prev
    cdef const Steps *S = &L.steps
    cdef Py_ssize_t r, u
    for n in range(n0, n1):
        r = crow(S, n, t)
        u = urow(S, n, t) * H + j0             # (batch-major: hr)
        gr = r * 4 * H + j0
        hr = r * H + j0
        c_prev = c0 + brow(S, n) * H + j0 if t == 0 else C + crow(S, n, t - 1) * H + j0
        if L.prefetch and n + 1 < n1:           # the next row's segments (fr_prefetch)
            for k in range(4):
                prefetch(G + gr + ld_g + k * H, w)
            prefetch(TC + hr + ld_h, w)
            prefetch(dhs + hr + ld_h, w)
            if t > 0:
                prefetch(C + hr + ld_h - H, w)
            for k in range(4):
                prefetch(dG + gr + ld_g + k * H, w, True)
        bwd_row(w, H, G + gr, c_prev, TC + hr, dhs + u, dh_in + n * H + j0,
                dc_in + n * H + j0, dG + gr, dc_out + n * H + j0,
                sq + 2 * t if sq != NULL else NULL)


cdef void _carried_start(Loop *L, floating **dh, floating **dc, Py_ssize_t n0, Py_ssize_t n1,
                         Py_ssize_t j0, int w) noexcept nogil:
    """The carried gradients, double-buffered in L.dh_buf and L.dc_buf: step t reads dh[0],
    dc[0] (from step t+1) and writes dh[1], dc[1] (to step t-1), then _carried_swap.  Points
    them at the two halves and sets those entering the last step, rows [n0, n1), units
    [j0, j0 + w): dh = 0, dc = dcT (or 0)."""
    cdef const floating *dcT = <const floating *>L.dcT
    cdef Py_ssize_t n, H = L.H, NH = L.N * L.H
    dh[0] = <floating *>L.dh_buf
    dh[1] = dh[0] + NH
    dc[0] = <floating *>L.dc_buf
    dc[1] = dc[0] + NH
    cdef int half, halves = 2 if packed(&L.steps) else 1
    # (packed, a slot joins at its own last step, reading whichever half is current then)
    for half in range(halves):
        for n in range(n0, n1):
            memset(dh[half] + n * H + j0, 0, w * sizeof(floating))
            if dcT != NULL:
                memcpy(dc[half] + n * H + j0, dcT + brow(&L.steps, n) * H + j0, w * sizeof(floating))
            else:
                memset(dc[half] + n * H + j0, 0, w * sizeof(floating))


cdef inline void _carried_swap(floating **dh, floating **dc) noexcept nogil:
    """After a step: what it wrote is what the next step (t-1) reads."""
    dh[0], dh[1] = dh[1], dh[0]
    dc[0], dc[1] = dc[1], dc[0]


cdef void _forward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, const floating *Wp) noexcept nogil:
    """Input projection and time loop for batch rows [n0, n1)."""
    cdef Py_ssize_t T = L.T, t, ld = L.ldxh
    cdef int H = L.H, H4 = 4 * H
    cdef const floating *h0 = <const floating *>L.h0
    cdef floating *G = <floating *>L.G
    cdef floating *Hprev = <floating *>L.Hprev
    cdef const Steps *S = &L.steps
    cdef Py_ssize_t e, rs = step_rows(S)
    if packed(S):       # (inputs and projection done by whole_task) Hprev at step 0 = h0
        start_state(S, n0, n1, H, ld, h0, <const floating *>L.M, Hprev, <floating *>NULL)
    else:
        # keep the inputs, project them into G, Hprev[:, 0] = h0
        start_rows(n0, n1, T, L.D, H, 4 * L.H, <const floating *>L.X, <const floating *>L.Wx,
                   h0, <floating *>L.XH, G)
        _mask_h0(L, n0, n1)
    for t in range(T):
        e = run_end(S, n1, t)                   # slots [n0, e) run step t
        if e <= n0:
            break
        # G[rows, t] += h_{t-1} @ Wh   (rows of step t: batch-major stride T*4H in G,
        # T*(D+H) in Hprev; packed, contiguous)
        recurrent_product(L.path, <int>(e - n0), H4, H, Hprev + crow(S, n0, t) * ld, rs * ld,
                          Wp, <const floating *>L.Wh, H4, False, G + crow(S, n0, t) * H4,
                          rs * H4, True)
        if L.check:                             # T = 1: x Wx + h0 Wh, before the bias
            flag_nonfinite(&L.nonfinite, G + n0 * H4, (n1 - n0) * H4)
        _cells_fwd(L, G, t, n0, e, 0, H)


cdef void _forward_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t n0, n1
    share_slots(&L.steps, tid, nthreads, &n0, &n1)
    if n0 < n1:
        if L.f64:
            _forward_rows(L, n0, n1, <const double *>L.Wp)
        else:
            _forward_rows(L, n0, n1, <const float *>L.Wp)


cdef void _forward_units(Loop *L, int tid, int nth, floating *Wp) noexcept nogil:
    """Thread tid's share of a forward shared by hidden units (use_units): the input projection
    of its batch rows, then at every step its units [j0, j1) of every row -- their columns of the
    four gate blocks of h_{t-1} @ Wh, and their c_t, h_t."""
    cdef Py_ssize_t T = L.T, N = L.N, t, ld = L.ldxh, n0, n1, j0, j1
    cdef int H = L.H, H4 = 4 * H, w, k
    cdef const floating *Wh = <const floating *>L.Wh
    cdef floating *G = <floating *>L.G
    cdef floating *Hprev = <floating *>L.Hprev
    cdef floating *P
    cdef floating *Pk[4]
    fr_share(N, tid, nth, &n0, &n1)
    start_rows(n0, n1, T, L.D, H, H4, <const floating *>L.X, <const floating *>L.Wx,
               <const floating *>L.h0, <floating *>L.XH, G)
    _mask_h0(L, n0, n1)
    share_cols(H, tid, nth, &j0, &j1)           # whole 64-byte units: j0 is a multiple of 16
    w = <int>(j1 - j0)
    # this thread's columns of each gate block of Wh, packed from element 4*H*j0 of Wp on
    P = Wp + 4 * H * j0
    for k in range(4):
        Pk[k] = P
        P = pack_b(H, w, Wh + k * H + j0, H4, 1, P)
    fr_barrier_wait(&L.bar)                     # all rows projected, Hprev[:, 0] set
    for t in range(T):
        if w > 0:
            for k in range(4):
                # G[:, t, kH+j0 : kH+j1] += h_{t-1} @ Wh[:, kH+j0 : kH+j1]
                gemm_packed(<int>N, w, H, Hprev + t * ld, T * ld, Pk[k],
                            G + t * H4 + k * H + j0, T * H4, True)
            _cells_fwd(L, G, t, 0, N, j0, w)
        fr_barrier_wait(&L.bar)                 # h_t complete before any thread reads it


cdef void _forward_units_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    if L.f64:
        _forward_units(L, tid, nthreads, <double *>L.Wp)
    else:
        _forward_units(L, tid, nthreads, <float *>L.Wp)


cdef int _forward(Py_ssize_t N, Py_ssize_t T, int D, int H, const floating *X, floating *XH,
                  const floating *Wx, const floating *Wh, const floating *b, const floating *h0,
                  const floating *c0, floating *hs, floating *G, floating *C, floating *TC,
                  floating *Wp, int threads, bint check, const floating *M,
                  const Py_ssize_t *plan, bint reverse) noexcept nogil:
    """Each thread takes a share of the batch rows: their input projection, then their time loop
    (or, use_units, a share of the hidden units of every row at each step).  (With one thread
    the projection is a single GEMM over all N*T rows, BLAS threading it.)  With a plan
    (lengths or reverse, _steps.pxd), the projection comes first, shared by cache rows, then
    the time loop shared by slots (never by units: not measured with lengths)."""
    cdef int H4 = 4 * H
    cdef Loop L
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    L.Wh = Wh
    L.N = N; L.T = T; L.D = D; L.H = H; L.ldxh = D + H; L.X = X; L.XH = XH; L.Hprev = XH + D
    L.Wx = Wx; L.Wp = Wp; L.b = b; L.h0 = h0; L.c0 = c0; L.hs = hs; L.G = G; L.C = C; L.TC = TC
    L.f64 = floating is double
    L.prefetch = worth_prefetch(N * T * 4 * H, sizeof(floating)) and plan == NULL
    L.check = check and T == 1
    L.nonfinite = 0
    L.M = M
    if plan != NULL:
        W.S = &L.steps; W.D = D; W.H = H; W.GH = H4; W.f64 = L.f64; W.backward = False
        W.X = X; W.XH = XH; W.Wx = Wx; W.G = G; W.hs = hs
        parallel_rows(threads, cache_rows(&L.steps), whole_task, &W, NULL, 0, &L.sq_part)
    elif use_units(threads, L.path, N, H):
        fr_barrier_init(&L.bar, threads)
        if parallel_together(threads, _forward_units_task, &L, NULL, 0, &L.sq_part):
            return L.nonfinite      # (the check is for T = 1, never shared by units)
    if L.path == PACKED:
        pack_b(H, H4, Wh, H4, 1, Wp)            # Wh (H, 4H), for the per-step products
    parallel_rows(threads, N, _forward_task, &L, NULL, 0, &L.sq_part)
    return L.nonfinite


cdef void _backward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, double *sq,
                         const floating *Wp) noexcept nogil:
    """The backward time loop for batch rows [n0, n1), then their rows of dX; sq: this
    thread's norm sums or NULL."""
    cdef Py_ssize_t T = L.T, t
    cdef int H = L.H, H4 = 4 * H
    cdef floating *dG = <floating *>L.dG
    cdef floating *dh[2]
    cdef floating *dc[2]
    cdef const Steps *S = &L.steps
    cdef Py_ssize_t e, rs = step_rows(S)
    _carried_start(L, dh, dc, n0, n1, 0, H)
    for t in range(T - 1, -1, -1):
        e = run_end(S, n1, t)                   # slots [n0, e) run step t (packed: more join
        if e > n0:                              # as t goes down; their dh, dc start as set)
            # dG[:, t] = gate gradients; dc_{t-1} = dc_t * f
            _cells_bwd(L, dG, t, n0, e, 0, H, dh[0], dc[0], dc[1], sq)
            # dh_{t-1} = dG[rows, t] @ Wh^T
            recurrent_product(L.path, <int>(e - n0), H, H4, dG + crow(S, n0, t) * H4, rs * H4,
                              Wp, <const floating *>L.Wh, H4, True, dh[1] + n0 * H, H, False)
            _mask_rows(S, <const floating *>L.M, n0, e, 0, H, H, dh[1])
        _carried_swap(dh, dc)
    # dX[rows] = dG[rows] @ Wx^T, all their timesteps in one GEMM (packed: whole_task)
    if not packed(S):
        dx_rows(n0, n1, T, L.D, 4 * L.H, dG, <const floating *>L.Wx, NULL, <floating *>L.dX)


cdef void _backward_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t n0, n1
    cdef double *sq = thread_sq(L.sq, L.sq_part, tid, 2 * L.T)
    share_slots(&L.steps, tid, nthreads, &n0, &n1)
    if n0 < n1:
        if L.f64:
            _backward_rows(L, n0, n1, sq, <const double *>L.Wp)
        else:
            _backward_rows(L, n0, n1, sq, <const float *>L.Wp)


cdef void _backward_units(Loop *L, int tid, int nth, double *sq, floating *Wp) noexcept nogil:
    """Thread tid's share of a backward time loop shared by hidden units (use_units): at every
    step its units [j0, j1) of every row -- their gate gradients, then (once every thread's are
    in dG) their columns of dh_{t-1} = dG_t @ Wh^T; then the dX rows of its batch rows."""
    cdef Py_ssize_t T = L.T, N = L.N, t, n0, n1, j0, j1
    cdef int H = L.H, H4 = 4 * H, w
    cdef const floating *Wh = <const floating *>L.Wh
    cdef floating *dG = <floating *>L.dG
    cdef floating *dh[2]
    cdef floating *dc[2]
    cdef floating *P
    share_cols(H, tid, nth, &j0, &j1)
    w = <int>(j1 - j0)
    # Wh^T[:, j0:j1] (4H, w): rows j0..j1 of Wh, packed from element 4*H*j0 of Wp on
    P = Wp + 4 * H * j0
    pack_b(H4, w, Wh + j0 * H4, 1, H4, P)
    _carried_start(L, dh, dc, 0, N, j0, w)      # this thread's units of every row
    for t in range(T - 1, -1, -1):
        _cells_bwd(L, dG, t, 0, N, j0, w, dh[0], dc[0], dc[1], sq)
        fr_barrier_wait(&L.bar)                 # dG[:, t] complete
        if w > 0:
            # dh_{t-1}[:, j0:j1] = dG[:, t] @ Wh^T[:, j0:j1]
            gemm_packed(<int>N, w, H4, dG + t * H4, T * H4, P, dh[1] + j0, H, False)
            _mask_rows(&L.steps, <const floating *>L.M, 0, N, j0, w, H, dh[1])
        _carried_swap(dh, dc)
    # the last barrier saw dG complete: dX[rows] = dG[rows] @ Wx^T for this thread's rows
    fr_share(N, tid, nth, &n0, &n1)
    if n0 < n1:
        dx_rows(n0, n1, T, L.D, H4, dG, <const floating *>L.Wx, NULL, <floating *>L.dX)


cdef void _backward_units_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef double *sq = thread_sq(L.sq, L.sq_part, tid, 2 * L.T)
    if L.f64:
        _backward_units(L, tid, nthreads, sq, <double *>L.Wp)
    else:
        _backward_units(L, tid, nthreads, sq, <float *>L.Wp)


cdef void _weights_cols(Loop *L, int c0, int c1, const floating *XH) noexcept nogil:
    """Columns [c0, c1) of the weight gradients, by GEMMs (or a reduction) over all N*T rows:
    [dWx; dWh] = [X | Hprev]^T @ dG, db = dG summed over rows."""
    cdef Py_ssize_t NT = cache_rows(&L.steps)
    cdef int H4 = 4 * L.H
    cdef const floating *dG = <const floating *>L.dG
    weight_grad_cols(NT, L.D, L.H, H4, c0, c1, XH, dG, <floating *>L.dWx, <floating *>L.dWh,
                     L.acc, <floating *>L.db)


cdef void _weights_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t c0, c1
    share_cols(4 * L.H, tid, nthreads, &c0, &c1)
    if c0 < c1:
        if L.f64:
            _weights_cols(L, <int>c0, <int>c1, <const double *>L.XH)
        else:
            _weights_cols(L, <int>c0, <int>c1, <const float *>L.XH)


cdef int _backward(Py_ssize_t N, Py_ssize_t T, int D, int H, const floating *dhs,
                   const floating *dcT, const floating *XH, const floating *Wx, const floating *Wh,
                   const floating *c0, const floating *G, const floating *C, const floating *TC,
                   floating *dG, floating *dh_buf, floating *dc_buf, double *acc, floating *dWx,
                   floating *dWh, floating *db, floating *dX, floating *dh0, floating *dc0,
                   double *sq, floating *Wp, int threads, bint check,
                   const floating *M, const Py_ssize_t *plan, bint reverse,
                   floating *dXp) noexcept nogil:
    """Two parallel phases: each thread takes a share of the batch rows (their time loop, then
    their rows of dX; or, use_units, a share of the hidden units of every row at each step);
    then, once dG is complete, a share of the weight-gradient columns.  With a plan, the time
    loop shared by slots, then dX shared by cache rows (into dXp, then in place), then the
    weights."""
    cdef int H4 = 4 * H
    cdef Py_ssize_t NH = N * H, j, n, half
    cdef Loop L
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    L.Wh = Wh
    L.N = N; L.T = T; L.D = D; L.H = H; L.ldxh = D + H; L.XH = <void *>XH
    L.Hprev = <void *>(XH + D); L.X = NULL   # (backward reads X from XH)
    L.Wx = Wx; L.Wp = Wp; L.c0 = c0; L.G = <void *>G; L.C = <void *>C; L.TC = <void *>TC
    L.dhs = dhs; L.dcT = dcT; L.dG = dG; L.dh_buf = dh_buf; L.dc_buf = dc_buf; L.sq = sq; L.dX = dX
    L.dWx = dWx; L.dWh = dWh; L.db = db; L.acc = acc; L.f64 = floating is double
    L.M = M
    cdef bint by_units = use_units(threads, L.path, N, H) and plan == NULL
    # (shared by units, a thread's segments of a row are its units only: no gain measured)
    L.prefetch = worth_prefetch(N * T * 4 * H, sizeof(floating)) and not by_units and plan == NULL
    if by_units:
        fr_barrier_init(&L.bar, threads)
        by_units = parallel_together(threads, _backward_units_task, &L, sq, 2 * T, &L.sq_part)
    if not by_units:
        if L.path == PACKED:
            pack_b(H4, H, Wh, 1, H4, Wp)        # Wh^T (4H, H)
        parallel_rows(threads, N, _backward_task, &L, sq, 2 * T, &L.sq_part)
    # after T swaps the carried gradients are in the first half of each buffer if T is even
    half = NH if T % 2 else 0
    if plan != NULL:
        for j in range(N):                      # slot j -> its batch row
            n = brow(&L.steps, j)
            memcpy(dh0 + n * H, dh_buf + half + j * H, H * sizeof(floating))
            memcpy(dc0 + n * H, dc_buf + half + j * H, H * sizeof(floating))
        W.S = &L.steps; W.D = D; W.H = H; W.GH = H4; W.f64 = L.f64; W.backward = True
        W.XH = <void *>XH; W.Wx = Wx; W.dG = dG; W.dXp = dXp; W.dX = dX
        parallel_rows(threads, cache_rows(&L.steps), whole_task, &W, NULL, 0, &L.sq_part)
    else:
        memcpy(dh0, dh_buf + half, NH * sizeof(floating))
        memcpy(dc0, dc_buf + half, NH * sizeof(floating))
    # T = 1 with check: dX and dh0 are the only results that read Wx and Wh; a NaN or Inf in
    # either shows here (see forward), and then the gradients are left as they were
    if check and T == 1 and not (all_finite(dX, N * D) and all_finite(dh0, NH)):
        return 1
    fr_parallel(threads, _weights_task, &L)
    return 0


cdef size_t wp_size(Py_ssize_t H, bint dbl):
    """Elements of the scratch Wp: Wh or Wh^T packed whole, or (use_units) in the threads'
    shares, each thread's packed columns padded to whole panels: at most 4H * (H rounded up to
    16), as fastrnn.layers.TimeLSTM allocates it."""
    cdef size_t whole = max(packed_size(<int>H, <int>(4 * H), dbl),
                            packed_size(<int>(4 * H), <int>H, dbl))
    return max(whole, <size_t>(4 * H * ((H + 15) // 16 * 16)))


def _set_unit_split(int mode):
    """How a time loop on several threads is shared: -1 by use_units's rule (the default),
    0 always by batch rows, 1 by hidden units whenever the per-step products are packed.  For
    tests and A/B timings; returns the previous setting."""
    global unit_split_mode
    cdef int old = unit_split_mode
    unit_split_mode = checked_mode("_set_unit_split", mode)
    return old


def forward(cnp.ndarray X, cnp.ndarray XH, cnp.ndarray Wx, cnp.ndarray Wh, cnp.ndarray b,
            cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray hs,
            cnp.ndarray G, cnp.ndarray C, cnp.ndarray TC, cnp.ndarray Wp,
            int threads=1, bint check=False, object h_mask=None, object plan=None,
            bint reverse=False):
    """Run the LSTM over all timesteps of X (N, T, D); fills hs and the caches XH (X and h_{t-1}
    side by side), G, C, TC (Wp: scratch).
    threads: how many threads share the batch rows of the time loop.
    check (T = 1 only): returns 1 if a pre-activation x Wx + h0 Wh (before the bias) holds
    NaN or Inf -- which a NaN or Inf in Wx or Wh always makes, the inputs being finite --
    else 0 (see fastrnn.layers._weights_checked_by_kernel).
    h_mask (N, H) or None: recurrent dropout, h_{t-1} Wh becomes (h_mask * h_{t-1}) Wh (XH
    then holds the masked h_{t-1}).
    plan (int64, 2N + 2T + 1) or None: lengths and direction as laid out in _steps.pxd (the
    caches then hold sum(lengths) rows, step-major)."""
    cdef Py_ssize_t N = XH.shape[0], T = XH.shape[1]
    cdef Py_ssize_t D = Wx.shape[0], H = Wh.shape[0]
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Py_ssize_t NTH = N * T * H
    cdef void *pX = buf(X, tn, N * T * D, "X")
    cdef void *pXH = buf(XH, tn, N * T * (D + H), "XH", True)
    cdef void *pWx = buf(Wx, tn, D * 4 * H, "Wx")
    cdef void *pWh = buf(Wh, tn, H * 4 * H, "Wh")
    cdef void *pb = buf(b, tn, 4 * H, "b")
    cdef void *ph0 = buf(h0, tn, N * H, "h0")
    cdef void *pc0 = buf(c0, tn, N * H, "c0")
    cdef void *phs = buf(hs, tn, NTH, "hs", True)
    cdef void *pG = buf(G, tn, 4 * NTH, "G", True)
    cdef void *pC = buf(C, tn, NTH, "C", True)
    cdef void *pTC = buf(TC, tn, NTH, "TC", True)
    cdef void *pWp = buf(Wp, tn, wp_size(H, tn == cnp.NPY_FLOAT64),
                         "Wp", True, True)  # scratch: at least that size
    cdef void *pM = NULL if h_mask is None else buf(h_mask, tn, N * H, "h_mask")
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _forward(N, T, D, H, <float *>pX, <float *>pXH, <float *>pWx, <float *>pWh,
                                 <float *>pb, <float *>ph0, <float *>pc0, <float *>phs,
                                 <float *>pG, <float *>pC, <float *>pTC, <float *>pWp, threads,
                                 check, <float *>pM, pplan, reverse)
        else:
            nonfinite = _forward(N, T, D, H, <double *>pX, <double *>pXH, <double *>pWx,
                                 <double *>pWh, <double *>pb, <double *>ph0, <double *>pc0,
                                 <double *>phs, <double *>pG, <double *>pC, <double *>pTC,
                                 <double *>pWp, threads, check, <double *>pM, pplan, reverse)
    return nonfinite


def backward(cnp.ndarray dhs, object dcT, cnp.ndarray XH, cnp.ndarray Wx, cnp.ndarray Wh,
             cnp.ndarray c0, cnp.ndarray G, cnp.ndarray C, cnp.ndarray TC,
             cnp.ndarray dG, cnp.ndarray dh_buf, cnp.ndarray dc_buf, cnp.ndarray acc,
             cnp.ndarray dWx, cnp.ndarray dWh, cnp.ndarray db, cnp.ndarray dX,
             cnp.ndarray dh0, cnp.ndarray dc0, object sq, cnp.ndarray Wp,
             int threads=1, bint check=False, object h_mask=None, object plan=None,
             bint reverse=False, object dXp=None):
    """Backpropagate through all timesteps of the last forward.

    dcT (N, H) or None: gradient w.r.t. the last cell state; sq (T, 2) float64 zeros or None:
    receives ||dL/dh_t||^2 and ||dL/dc_t||^2 per step; Wp: scratch for the packed Wh^T.
    Writes dWx, dWh, db, dX, dh0, dc0.
    check (T = 1 only): if dX or dh0 holds NaN or Inf, returns 1 before writing dWx, dWh and
    db; else 0.  h_mask, plan, reverse: as given to the forward; dXp: with a plan, scratch of
    N*T*D elements."""
    cdef Py_ssize_t N = dhs.shape[0], T = dhs.shape[1]
    cdef Py_ssize_t D = Wx.shape[0], H = Wh.shape[0]
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Py_ssize_t NTH = N * T * H, NH = N * H
    cdef void *pdhs = buf(dhs, tn, NTH, "dhs")
    cdef void *pdcT = NULL if dcT is None else buf(dcT, tn, NH, "dcT")
    cdef void *pXH = buf(XH, tn, N * T * (D + H), "XH")
    cdef void *pWx = buf(Wx, tn, D * 4 * H, "Wx")
    cdef void *pWh = buf(Wh, tn, H * 4 * H, "Wh")
    cdef void *pc0 = buf(c0, tn, NH, "c0")
    cdef void *pG = buf(G, tn, 4 * NTH, "G")
    cdef void *pC = buf(C, tn, NTH, "C")
    cdef void *pTC = buf(TC, tn, NTH, "TC")
    cdef void *pdG = buf(dG, tn, 4 * NTH, "dG", True)
    cdef void *pdh = buf(dh_buf, tn, 2 * NH, "dh_buf", True)
    cdef void *pdc = buf(dc_buf, tn, 2 * NH, "dc_buf", True)
    cdef double *pacc = <double *>buf(acc, cnp.NPY_FLOAT64, 4 * H, "acc", True)
    cdef void *pdWx = buf(dWx, tn, D * 4 * H, "dWx", True)
    cdef void *pdWh = buf(dWh, tn, H * 4 * H, "dWh", True)
    cdef void *pdb = buf(db, tn, 4 * H, "db", True)
    cdef void *pdX = buf(dX, tn, N * T * D, "dX", True)
    cdef void *pdh0 = buf(dh0, tn, NH, "dh0", True)
    cdef void *pdc0 = buf(dc0, tn, NH, "dc0", True)
    cdef double *psq = NULL if sq is None else <double *>buf(sq, cnp.NPY_FLOAT64, 2 * T, "sq", True)
    cdef void *pWp = buf(Wp, tn, wp_size(H, tn == cnp.NPY_FLOAT64),
                         "Wp", True, True)  # scratch: at least that size
    cdef void *pM = NULL if h_mask is None else buf(h_mask, tn, N * H, "h_mask")
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef void *pdXp = NULL if plan is None else buf(dXp, tn, N * T * D, "dXp", True)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _backward(N, T, D, H, <float *>pdhs, <float *>pdcT, <float *>pXH,
                                  <float *>pWx, <float *>pWh, <float *>pc0, <float *>pG,
                                  <float *>pC, <float *>pTC, <float *>pdG, <float *>pdh,
                                  <float *>pdc, pacc, <float *>pdWx, <float *>pdWh, <float *>pdb,
                                  <float *>pdX, <float *>pdh0, <float *>pdc0, psq, <float *>pWp,
                                  threads, check, <float *>pM, pplan, reverse, <float *>pdXp)
        else:
            nonfinite = _backward(N, T, D, H, <double *>pdhs, <double *>pdcT, <double *>pXH,
                                  <double *>pWx, <double *>pWh, <double *>pc0, <double *>pG,
                                  <double *>pC, <double *>pTC, <double *>pdG, <double *>pdh,
                                  <double *>pdc, pacc, <double *>pdWx, <double *>pdWh,
                                  <double *>pdb, <double *>pdX, <double *>pdh0, <double *>pdc0,
                                  psq, <double *>pWp, threads, check, <double *>pM, pplan, reverse,
                                  <double *>pdXp)
    return nonfinite


def _kernel_isa(isa=None):
    """Set (unless None) and return the instruction set of this module's matrix products; use
    fastrnn._isa rather than this."""
    return kernel_isa(isa)


def _kernel_tn_mode(mode=None):
    """Set (unless None) who makes this module's whole-sequence weight gradients and return the
    setting before; use fastrnn._isa.tn_packed rather than this."""
    return kernel_tn_mode(mode)
