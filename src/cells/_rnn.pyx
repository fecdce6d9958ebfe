"""Vanilla RNN forward and backward-through-time kernels: h_t = tanh(x_t Wx + h_{t-1} Wh + b)
(or max(0, .) with relu).

Same layout as _lstm.pyx (batch-major, step t = N rows with stride T*X).  Caches:
  XH     [x_t | h_{t-1}] for every step (h0 at t = 0)  (N, T, D + H); x_t copied in by forward
  G      h_t = tanh(pre-activation) for every step     (N, T, H)
"""
cimport numpy as cnp
from cython cimport floating
from libc.string cimport memcpy, memset

from _packed cimport (checked_mode, fr_isa, kernel_isa, kernel_tn_mode, gemm_packed, pack_b,
                      pack_stacked, packed_size, recurrent_product, PACKED, step_path)
from _seq cimport worth_prefetch, dx_rows, prefetch, start_rows, weight_grad_cols
from _steps cimport (Steps, Whole, brow, cache_rows, crow, has_next, packed, plan_buf, run_end,
                     share_slots, start_state, step_rows, steps_init, urow, whole_task)
from _parallel cimport fr_parallel, fr_use_pool, parallel_rows, share_cols, thread_sq
from _cells cimport (all_finite, buf, flag_nonfinite, mask_copy, mask_scale, rnn_fwd_row_f,
                     rnn_fwd_row_d, rnn_bwd_row_f, rnn_bwd_row_d, rnn_relu_fwd_row_f,
                     rnn_relu_fwd_row_d, rnn_relu_bwd_row_f, rnn_relu_bwd_row_d)

cnp.import_array()
fr_use_pool()                   # run threaded work on the process's pool (fr_pool.h)


cdef enum:
    FUSE_MIN_ROWS = 8               # the fewest batch rows per thread fused_steps fuses
    PACKED_L2_BYTES = 1 << 20       # the largest packed weights kept in L2 across steps or
                                    # chunks of rows (half an L2): fused_steps, packed_dx
    DX_PACKED_MIN_ROWS = 256        # the fewest N*T rows packed_dx takes

cdef int fuse_mode = -1             # -1: by fused_steps; 0 never; 1 whenever packed (_set_fused)
cdef int dx_mode = -1               # -1: by packed_dx; 0 never; 1 always (_set_dx_packed)


cdef bint fused_steps(int path, Py_ssize_t N, int D, int H, int threads,
                      size_t itemsize) noexcept nogil:
    """Forward: multiply the inputs by Wx step by step, in one packed product per step
    G_t = [x_t | h_{t-1}] @ [Wx; Wh], instead of in one BLAS GEMM over all N*T rows?  Each
    step's pre-activations then go from the product straight into the tanh pass while in
    cache, and sgemm's packing and zeroing passes go.  Only while the packed weights stay in L2
    from step to step (PACKED_L2_BYTES), and with rows enough per thread for the packed
    kernel's register blocks (FUSE_MIN_ROWS); and not where the inputs are much wider than
    the state (D > 4H), where the projection is most of the work and the layer may let BLAS
    thread it while the kernel runs on one thread (fastrnn._threads.plan_threads).  Measured alternating fused and not in one
    process (forward, 1 / 2 threads): N64 T100 H256 1.10-1.13 / 1.10-1.12x, N32 T35 H100
    1.08 / 1.08x, N20 1.05-1.07 / 1.07-1.13x, N16 1.02 / 1.02x, N8 1.00 / 1.04x; N128 T50 H512
    (2 MiB of weights) 0.94 / 0.97x.  Backward's dX_t = dG_t @ Wx^T, likewise beside
    dh_{t-1} = dG_t @ Wh^T, measured 0.95-1.04x: there dX stays one GEMM.  (The LSTM's and
    GRU's gate blocks make [Wx; Wh] 3-4x larger; the GRU's forward fused this way lost 2-11 %
    at N64 H256.)"""
    if path != PACKED or fuse_mode == 0:
        return False
    if fuse_mode == 1:
        return True
    return (N >= FUSE_MIN_ROWS * max(threads, 1) and D <= 4 * H
            and packed_size(D + H, H, itemsize == 8) * itemsize <= PACKED_L2_BYTES)


cdef bint packed_dx(Py_ssize_t NT, int D, int H, size_t itemsize) noexcept nogil:
    """Backward: dX = dG @ Wx^T from Wx^T packed once per call, by the packed kernel in chunks
    of rows (dx_rows in _seq.pxd), instead of by one sgemm over all N*T rows?  In float32 on
    AVX-512, from DX_PACKED_MIN_ROWS rows, while the packed Wx^T stays in L2 from chunk to chunk
    (PACKED_L2_BYTES).  Measured on the AVX-512 Xeon, alternating with sgemm in one process
    (backward, medians of 30-300 calls, two runs), 1 / 2 threads: N64 T100 H256 1.02-1.04 /
    1.03-1.04x, N20 T35 H100 1.03 / 1.01x.  The product alone, 6400 x 256 x 256: 148 -> 167-169
    GF/s.  (The GRU's dX, with 3H columns of dG, measured 1.00-1.01x in its layer and stays
    with sgemm; the LSTM's was not tried in a layer: 6400 x 1024 x 256 alone 149 -> 150-159.)"""
    if dx_mode >= 0:
        return dx_mode == 1
    return (fr_isa() == 1 and itemsize == 4 and NT >= DX_PACKED_MIN_ROWS
            and packed_size(H, D, False) * itemsize <= PACKED_L2_BYTES)


cdef inline void fwd_row(int H, floating *a, const floating *b, floating *h,
                         bint relu) noexcept nogil:
    if relu:
        if floating is float:
            rnn_relu_fwd_row_f(H, a, b, h)
        else:
            rnn_relu_fwd_row_d(H, a, b, h)
    elif floating is float:
        rnn_fwd_row_f(H, a, b, h)
    else:
        rnn_fwd_row_d(H, a, b, h)


cdef inline void bwd_row(int H, const floating *a, const floating *dy, const floating *dh_in,
                         floating *da, double *sq, bint relu) noexcept nogil:
    if relu:
        if floating is float:
            rnn_relu_bwd_row_f(H, a, dy, dh_in, da, sq)
        else:
            rnn_relu_bwd_row_d(H, a, dy, dh_in, da, sq)
    elif floating is float:
        rnn_bwd_row_f(H, a, dy, dh_in, da, sq)
    else:
        rnn_bwd_row_d(H, a, dy, dh_in, da, sq)


cdef struct Loop:
    # what each thread needs for its share of the work (see _forward and _backward)
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
    const void *Wxp     # backward: Wx^T packed (packed_dx), or NULL
    const void *Wh
    int path            # how the per-step products are made (step_path)
    bint fused          # forward: x_t Wx in each step's product (fused_steps)
    const void *b
    const void *h0
    void *hs
    void *G
    void *Hprev         # = XH + D
    const void *dhs
    void *dG
    void *dh_buf
    double *sq          # per-step squared norms or NULL (see parallel_rows)
    double *sq_part
    bint check          # T = 1: flag non-finite pre-activations (see forward)
    int nonfinite
    bint f64
    bint prefetch       # the element-wise passes prefetch the next row (worth_prefetch)
    const void *M       # recurrent dropout's mask (N, H) on h_{t-1} in h_{t-1} Wh, or NULL
    bint relu           # nonlinearity max(0, .) rather than tanh
    Steps steps         # where each row's steps are (_steps.pxd); rows below are its slots


cdef void _forward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, const floating *Wp) noexcept nogil:
    """Input projection and time loop for batch rows [n0, n1)."""
    cdef Py_ssize_t T = L.T, n, t, r, ld = L.ldxh
    cdef int H = L.H
    cdef const floating *b = <const floating *>L.b
    cdef const floating *h0 = <const floating *>L.h0
    cdef floating *hs = <floating *>L.hs
    cdef floating *G = <floating *>L.G
    cdef floating *Hprev = <floating *>L.Hprev
    cdef int D = L.D, rows = <int>(n1 - n0)
    cdef const floating *X = <const floating *>L.X
    cdef floating *XH = <floating *>L.XH
    cdef const floating *M = <const floating *>L.M
    cdef const Steps *S = &L.steps
    cdef Py_ssize_t e, u, rs = step_rows(S)
    if packed(S):   # (inputs and projection done by whole_task) Hprev at step 0 = (m *) h0
        start_state(S, n0, n1, H, ld, h0, M, Hprev, <floating *>NULL)
    elif L.fused:
        for n in range(n0, n1):                 # Hprev[rows, 0] = h0
            memcpy(Hprev + n * T * ld, h0 + n * H, H * sizeof(floating))
    else:
        # keep the inputs, project them into G, Hprev[:, 0] = h0
        start_rows(n0, n1, T, D, H, H, X, <const floating *>L.Wx, h0, XH, G)
    if M != NULL and not packed(S):             # Hprev holds the masked h_{t-1} (m * h0 here)
        for n in range(n0, n1):
            mask_scale(H, M + n * H, Hprev + n * T * ld)
    for t in range(T):
        e = run_end(S, n1, t)                   # slots [n0, e) run step t
        if e <= n0:
            break
        rows = <int>(e - n0)
        if L.fused:
            # XH[rows, t, :D] = x_t; G[rows, t] = [x_t | h_{t-1}] @ [Wx; Wh]
            for n in range(n0, n1):
                if L.prefetch and n + 1 < n1:   # the next row's (fr_prefetch)
                    prefetch(X + ((n + 1) * T + t) * D, D)
                    prefetch(XH + ((n + 1) * T + t) * ld, D, True)
                memcpy(XH + (n * T + t) * ld, X + (n * T + t) * D, D * sizeof(floating))
            gemm_packed(rows, H, D + H, XH + (n0 * T + t) * ld, T * ld, Wp,
                        G + n0 * T * H + t * H, T * H, False)
        else:
            # G[rows, t] += h_{t-1} @ Wh   (a step's rows: batch-major T rows apart, packed 1)
            recurrent_product(L.path, rows, H, H, Hprev + crow(S, n0, t) * ld, rs * ld, Wp,
                              <const floating *>L.Wh, H, False, G + crow(S, n0, t) * H, rs * H,
                              True)
        if L.check:                             # T = 1: x Wx + h0 Wh, before the bias
            flag_nonfinite(&L.nonfinite, G + n0 * H, (n1 - n0) * H)
        for n in range(n0, e):
            r = crow(S, n, t) * H
            u = urow(S, n, t) * H
            if L.prefetch and n + 1 < n1:       # the next row's segments (fr_prefetch)
                prefetch(hs + r + T * H, H, True)
                if t + 1 < T:
                    prefetch(Hprev + ((n + 1) * T + t + 1) * ld, H, True)
            fwd_row(H, G + r, b, hs + u, L.relu)    # h_t = tanh(G + b) (or relu)
            if has_next(S, n, t):
                if M == NULL:
                    memcpy(Hprev + crow(S, n, t + 1) * ld, hs + u, H * sizeof(floating))
                else:
                    mask_copy(H, M + brow(S, n) * H, hs + u, Hprev + crow(S, n, t + 1) * ld)


cdef void _forward_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t n0, n1
    share_slots(&L.steps, tid, nthreads, &n0, &n1)
    if n0 < n1:
        if L.f64:
            _forward_rows(L, n0, n1, <const double *>L.Wp)
        else:
            _forward_rows(L, n0, n1, <const float *>L.Wp)


cdef int _forward(Py_ssize_t N, Py_ssize_t T, int D, int H, const floating *X, floating *XH,
                  const floating *Wx, const floating *Wh, const floating *b, const floating *h0,
                  floating *hs, floating *G, floating *Wp, int threads, bint check,
                  const floating *M, bint relu, const Py_ssize_t *plan,
                  bint reverse) noexcept nogil:
    """Each thread takes a share of the batch rows: their input projection, then their time loop
    (with one thread the projection is a single GEMM over all N*T rows, BLAS threading it); or,
    fused_steps, the projection of each step inside its recurrent product.  With a plan
    (lengths or reverse, _steps.pxd), the projection comes first, shared by cache rows, then
    the time loop shared by slots (never fused: not measured with lengths)."""
    cdef Loop L
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    L.fused = fused_steps(L.path, N, D, H, threads, sizeof(floating)) and plan == NULL
    if L.fused:
        pack_stacked(D, H, H, Wx, Wh, Wp)       # [Wx; Wh] (D + H, H), for the step products
    elif L.path == PACKED:
        pack_b(H, H, Wh, H, 1, Wp)              # Wh, for the per-step products
    L.Wh = Wh
    L.N = N; L.T = T; L.D = D; L.H = H; L.ldxh = D + H; L.X = X; L.XH = XH; L.Hprev = XH + D
    L.Wx = Wx; L.Wp = Wp; L.b = b; L.h0 = h0; L.hs = hs; L.G = G; L.f64 = floating is double
    L.prefetch = worth_prefetch(N * T * H, sizeof(floating)) and plan == NULL
    L.check = check and T == 1
    L.nonfinite = 0
    L.M = M; L.relu = relu
    if plan != NULL:
        W.S = &L.steps; W.D = D; W.H = H; W.GH = H; W.f64 = L.f64; W.backward = False
        W.X = X; W.XH = XH; W.Wx = Wx; W.G = G; W.hs = hs
        parallel_rows(threads, cache_rows(&L.steps), whole_task, &W, NULL, 0, &L.sq_part)
    parallel_rows(threads, N, _forward_task, &L, NULL, 0, &L.sq_part)
    return L.nonfinite


cdef void _backward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, double *sq,
                         const floating *Wp) noexcept nogil:
    """The backward time loop for batch rows [n0, n1), then their rows of dX; sq: this
    thread's norm sums or NULL."""
    cdef Py_ssize_t T = L.T, n, t, r, NH = L.N * L.H, rows = n1 - n0
    cdef int H = L.H
    cdef const floating *G = <const floating *>L.G
    cdef const floating *dhs = <const floating *>L.dhs
    cdef floating *dG = <floating *>L.dG
    cdef floating *dh_in = <floating *>L.dh_buf
    cdef floating *dh_out = dh_in + NH
    cdef floating *tmp
    cdef const floating *M = <const floating *>L.M
    cdef const Steps *S = &L.steps
    cdef Py_ssize_t e, u, rs = step_rows(S)
    memset(dh_in + n0 * H, 0, rows * H * sizeof(floating))
    if packed(S):       # a slot joins at its own last step, reading whichever half is current
        memset(dh_out + n0 * H, 0, rows * H * sizeof(floating))
    for t in range(T - 1, -1, -1):
        e = run_end(S, n1, t)                   # slots [n0, e) run step t
        if e > n0:
            for n in range(n0, e):
                r = crow(S, n, t) * H
                u = urow(S, n, t) * H
                if L.prefetch and n + 1 < n1:   # the next row's segments (fr_prefetch)
                    prefetch(G + r + T * H, H)
                    prefetch(dhs + r + T * H, H)
                    prefetch(dG + r + T * H, H, True)
                # dG[:, t] = (dhs[:, t] + dh_t) * (1 - h_t^2)
                bwd_row(H, G + r, dhs + u, dh_in + n * H, dG + r,
                        sq + t if sq != NULL else NULL, L.relu)
            # dh_{t-1} = dG[rows, t] @ Wh^T  (times the mask: the product's input was
            # m * h_{t-1})
            recurrent_product(L.path, <int>(e - n0), H, H, dG + crow(S, n0, t) * H, rs * H, Wp,
                              <const floating *>L.Wh, H, True, dh_out + n0 * H, H, False)
            if M != NULL:
                for n in range(n0, e):
                    mask_scale(H, M + brow(S, n) * H, dh_out + n * H)
        tmp = dh_in; dh_in = dh_out; dh_out = tmp
    # dX[rows] = dG[rows] @ Wx^T, all their timesteps in one GEMM (packed: whole_task)
    if not packed(S):
        dx_rows(n0, n1, T, L.D, L.H, dG, <const floating *>L.Wx, <const floating *>L.Wxp,
                <floating *>L.dX)


cdef void _backward_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t n0, n1
    cdef double *sq = thread_sq(L.sq, L.sq_part, tid, L.T)
    share_slots(&L.steps, tid, nthreads, &n0, &n1)
    if n0 < n1:
        if L.f64:
            _backward_rows(L, n0, n1, sq, <const double *>L.Wp)
        else:
            _backward_rows(L, n0, n1, sq, <const float *>L.Wp)


cdef void _weights_cols(Loop *L, int c0, int c1, const floating *XH) noexcept nogil:
    """Columns [c0, c1) of [dWx; dWh] = [X | Hprev]^T @ dG and db = dG summed over rows, by
    GEMMs (or a reduction) over all N*T rows."""
    cdef Py_ssize_t NT = cache_rows(&L.steps)
    cdef const floating *dG = <const floating *>L.dG
    weight_grad_cols(NT, L.D, L.H, L.H, c0, c1, XH, dG, <floating *>L.dWx, <floating *>L.dWh,
                     L.acc, <floating *>L.db)


cdef void _weights_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t c0, c1
    share_cols(L.H, tid, nthreads, &c0, &c1)
    if c0 < c1:
        if L.f64:
            _weights_cols(L, <int>c0, <int>c1, <const double *>L.XH)
        else:
            _weights_cols(L, <int>c0, <int>c1, <const float *>L.XH)


cdef int _backward(Py_ssize_t N, Py_ssize_t T, int D, int H, const floating *dhs,
                   const floating *XH, const floating *Wx, const floating *Wh, const floating *G,
                   floating *dG, floating *dh_buf, double *acc, floating *dWx, floating *dWh,
                   floating *db, floating *dX, floating *dh0, double *sq, floating *Wp,
                   int threads, bint check, const floating *M, bint relu,
                   const Py_ssize_t *plan, bint reverse, floating *dXp) noexcept nogil:
    """Two parallel phases: each thread takes a share of the batch rows (their time loop, then
    their rows of dX); then, once dG is complete, a share of the weight-gradient columns.  With
    a plan, the time loop shared by slots, then dX shared by cache rows (into dXp, then in
    place; never from a packed Wx^T: not measured), then the weights."""
    cdef Py_ssize_t NH = N * H, j, half
    cdef Loop L
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    L.Wxp = NULL
    if L.path == PACKED:
        pack_b(H, H, Wh, 1, H, Wp)              # Wh^T
    if plan == NULL and packed_dx(N * T, D, H, sizeof(floating)):
        L.Wxp = Wp + packed_size(H, H, floating is double)
        pack_b(H, D, Wx, 1, H, <floating *>L.Wxp)   # Wx^T (H, D), after Wh^T
    L.Wh = Wh
    L.N = N; L.T = T; L.D = D; L.H = H; L.ldxh = D + H; L.XH = <void *>XH
    L.Hprev = <void *>(XH + D); L.X = NULL   # (backward reads X from XH)
    L.Wx = Wx; L.Wp = Wp; L.G = <void *>G; L.dhs = dhs; L.dG = dG; L.dh_buf = dh_buf
    L.sq = sq; L.dX = dX; L.dWx = dWx; L.dWh = dWh; L.db = db; L.acc = acc
    L.f64 = floating is double
    L.prefetch = worth_prefetch(N * T * H, sizeof(floating)) and plan == NULL
    L.M = M; L.relu = relu
    parallel_rows(threads, N, _backward_task, &L, sq, T, &L.sq_part)
    # after T swaps the carried gradient is in the first half of dh_buf if T is even
    half = NH if T % 2 else 0
    if plan != NULL:
        for j in range(N):                      # slot j -> its batch row
            memcpy(dh0 + brow(&L.steps, j) * H, dh_buf + half + j * H, H * sizeof(floating))
        W.S = &L.steps; W.D = D; W.H = H; W.GH = H; W.f64 = L.f64; W.backward = True
        W.XH = <void *>XH; W.Wx = Wx; W.dG = dG; W.dXp = dXp; W.dX = dX
        parallel_rows(threads, cache_rows(&L.steps), whole_task, &W, NULL, 0, &L.sq_part)
    else:
        memcpy(dh0, dh_buf + half, NH * sizeof(floating))
    # T = 1 with check: dX and dh0 are the only results that read Wx and Wh; a NaN or Inf in
    # either shows here (see forward), and then the gradients are left as they were
    if check and T == 1 and not (all_finite(dX, N * D) and all_finite(dh0, NH)):
        return 1
    fr_parallel(threads, _weights_task, &L)
    return 0


def forward(cnp.ndarray X, cnp.ndarray XH, cnp.ndarray Wx, cnp.ndarray Wh, cnp.ndarray b,
            cnp.ndarray h0, cnp.ndarray hs, cnp.ndarray G, cnp.ndarray Wp,
            int threads=1, bint check=False, object h_mask=None, bint relu=False,
            object plan=None, bint reverse=False):
    """Run the RNN over all timesteps of X (N, T, D); fills hs and the caches XH (X and h_{t-1}
    side by side) and G (Wp: scratch).
    threads: how many threads share the batch rows of the time loop.
    check (T = 1 only): returns 1 if a pre-activation x Wx + h0 Wh (before the bias) holds
    NaN or Inf -- which a NaN or Inf in Wx or Wh always makes, the inputs being finite --
    else 0 (see fastrnn.layers._weights_checked_by_kernel).
    h_mask (N, H) or None: recurrent dropout, h_{t-1} Wh becomes (h_mask * h_{t-1}) Wh (XH
    then holds the masked h_{t-1}); relu: h_t = max(0, .) instead of tanh.
    plan (int64, 2N + 2T + 1) or None: lengths and direction as laid out in _steps.pxd (the
    caches then hold sum(lengths) rows, step-major)."""
    cdef Py_ssize_t N = XH.shape[0], T = XH.shape[1], D = Wx.shape[0], H = Wh.shape[0]
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Py_ssize_t NTH = N * T * H
    cdef void *pX = buf(X, tn, N * T * D, "X")
    cdef void *pXH = buf(XH, tn, N * T * (D + H), "XH", True)
    cdef void *pWx = buf(Wx, tn, D * H, "Wx")
    cdef void *pWh = buf(Wh, tn, H * H, "Wh")
    cdef void *pb = buf(b, tn, H, "b")
    cdef void *ph0 = buf(h0, tn, N * H, "h0")
    cdef void *phs = buf(hs, tn, NTH, "hs", True)
    cdef void *pG = buf(G, tn, NTH, "G", True)
    cdef void *pWp = buf(Wp, tn, packed_size(<int>(D + H), <int>H, tn == cnp.NPY_FLOAT64),
                         "Wp", True, True)  # scratch: at least that size
    cdef void *pM = NULL if h_mask is None else buf(h_mask, tn, N * H, "h_mask")
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _forward(N, T, D, H, <float *>pX, <float *>pXH, <float *>pWx, <float *>pWh,
                                 <float *>pb, <float *>ph0, <float *>phs, <float *>pG,
                                 <float *>pWp, threads, check, <float *>pM, relu, pplan,
                                 reverse)
        else:
            nonfinite = _forward(N, T, D, H, <double *>pX, <double *>pXH, <double *>pWx,
                                 <double *>pWh, <double *>pb, <double *>ph0, <double *>phs,
                                 <double *>pG, <double *>pWp, threads, check, <double *>pM,
                                 relu, pplan, reverse)
    return nonfinite


def backward(cnp.ndarray dhs, cnp.ndarray XH, cnp.ndarray Wx, cnp.ndarray Wh,
             cnp.ndarray G, cnp.ndarray dG, cnp.ndarray dh_buf,
             cnp.ndarray acc, cnp.ndarray dWx, cnp.ndarray dWh, cnp.ndarray db,
             cnp.ndarray dX, cnp.ndarray dh0, object sq, cnp.ndarray Wp,
             int threads=1, bint check=False, object h_mask=None, bint relu=False,
             object plan=None, bint reverse=False, object dXp=None):
    """Backpropagate through all timesteps of the last forward.

    sq (T,) float64 zeros or None: receives ||dL/dh_t||^2 per step; Wp: scratch (packed Wh^T,
    then packed Wx^T).
    Writes dWx, dWh, db, dX, dh0.
    check (T = 1 only): if dX or dh0 holds NaN or Inf, returns 1 before writing dWx, dWh and
    db; else 0.  h_mask, relu, plan, reverse: as given to the forward; dXp: with a plan,
    scratch of N*T*D elements."""
    cdef Py_ssize_t N = dhs.shape[0], T = dhs.shape[1], D = Wx.shape[0], H = Wh.shape[0]
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Py_ssize_t NTH = N * T * H, NH = N * H
    cdef void *pdhs = buf(dhs, tn, NTH, "dhs")
    cdef void *pXH = buf(XH, tn, N * T * (D + H), "XH")
    cdef void *pWx = buf(Wx, tn, D * H, "Wx")
    cdef void *pWh = buf(Wh, tn, H * H, "Wh")
    cdef void *pG = buf(G, tn, NTH, "G")
    cdef void *pdG = buf(dG, tn, NTH, "dG", True)
    cdef void *pdh = buf(dh_buf, tn, 2 * NH, "dh_buf", True)
    cdef double *pacc = <double *>buf(acc, cnp.NPY_FLOAT64, H, "acc", True)
    cdef void *pdWx = buf(dWx, tn, D * H, "dWx", True)
    cdef void *pdWh = buf(dWh, tn, H * H, "dWh", True)
    cdef void *pdb = buf(db, tn, H, "db", True)
    cdef void *pdX = buf(dX, tn, N * T * D, "dX", True)
    cdef void *pdh0 = buf(dh0, tn, NH, "dh0", True)
    cdef double *psq = NULL if sq is None else <double *>buf(sq, cnp.NPY_FLOAT64, T, "sq", True)
    cdef void *pWp = buf(Wp, tn, packed_size(H, H, tn == cnp.NPY_FLOAT64)
                         + packed_size(H, D, tn == cnp.NPY_FLOAT64),
                         "Wp", True, True)  # scratch: at least that size
    cdef void *pM = NULL if h_mask is None else buf(h_mask, tn, NH, "h_mask")
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef void *pdXp = NULL if plan is None else buf(dXp, tn, N * T * D, "dXp", True)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _backward(N, T, D, H, <float *>pdhs, <float *>pXH, <float *>pWx,
                                  <float *>pWh, <float *>pG, <float *>pdG, <float *>pdh, pacc,
                                  <float *>pdWx, <float *>pdWh, <float *>pdb, <float *>pdX,
                                  <float *>pdh0, psq, <float *>pWp, threads, check,
                                  <float *>pM, relu, pplan, reverse, <float *>pdXp)
        else:
            nonfinite = _backward(N, T, D, H, <double *>pdhs, <double *>pXH, <double *>pWx,
                                  <double *>pWh, <double *>pG, <double *>pdG, <double *>pdh, pacc,
                                  <double *>pdWx, <double *>pdWh, <double *>pdb, <double *>pdX,
                                  <double *>pdh0, psq, <double *>pWp, threads, check,
                                  <double *>pM, relu, pplan, reverse, <double *>pdXp)
    return nonfinite


def _kernel_isa(isa=None):
    """Set (unless None) and return the instruction set of this module's matrix products; use
    fastrnn._isa rather than this."""
    return kernel_isa(isa)


def _kernel_tn_mode(mode=None):
    """Set (unless None) who makes this module's whole-sequence weight gradients and return the
    setting before; use fastrnn._isa.tn_packed rather than this."""
    return kernel_tn_mode(mode)


def _set_fused(int mode):
    """Make x_t Wx part of each step's products (fused_steps): -1 by the rule, 0 never, 1
    whenever the weights are packed; returns the previous setting.  For tests and A/B timing."""
    global fuse_mode
    old = fuse_mode
    fuse_mode = checked_mode("_set_fused", mode)
    return old


def _set_dx_packed(int mode):
    """Make backward's dX from Wx^T packed (packed_dx): -1 by the rule, 0 never (BLAS or the
    direct kernel), 1 always; returns the previous setting.  For tests and A/B timing."""
    global dx_mode
    old = dx_mode
    dx_mode = checked_mode("_set_dx_packed", mode)
    return old
