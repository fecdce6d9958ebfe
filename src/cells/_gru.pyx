"""GRU forward and backward-through-time kernels, both variants (float32 and float64).

Gate blocks z, r, h~ (3H columns); h_t = (1 - z) * h_{t-1} + z * h~.
  reset_after=False:  h~ = tanh(x Wxh + (r * h_{t-1}) Whh + bh)          b (3H,)
  reset_after=True:   h~ = tanh(x Wxh + b0h + r * (h_{t-1} Whh + b1h))   b (2, 3H), cuDNN/PyTorch form
Same batch-major layout as _lstm.pyx.  Caches:
  XH     [x_t | h_{t-1}] for every step (h0 at t = 0)           (N, T, D + H); x_t copied in
         by forward
  G      activated z, r, h~                                     (N, T, 3H)
  AUX    r * h_{t-1} (reset_after=False) or h_{t-1} Whh + b1h   (N, T, H)
  S      per-step scratch                                       (N, 3H)
With recurrent dropout (a mask m (N, H) on the input of the products h_{t-1} Wh), XH holds
m * h_{t-1} and one more cache the unmasked h_{t-1} for the gates' element-wise passes:
  HU     h_{t-1} for every step (h0 at t = 0)                   (N, T, H)
The per-step products use Wh (forward) or Wh^T (backward) packed once per call into the scratch
Wp; reset_after=False packs the [Whz Whr] and Whh column blocks separately, and so does
backward in both variants.
"""
cimport numpy as cnp
from cython cimport floating
from libc.string cimport memcpy, memset

from _packed cimport (kernel_isa, kernel_tn_mode, pack_b, packed_size, recurrent_product, PACKED,
                      step_path)
from _seq cimport worth_prefetch, dx_rows, prefetch, start_rows, grad_cols, weight_grad_cols
from _steps cimport (Steps, Whole, brow, cache_rows, crow, has_next, packed, plan_buf, run_end,
                     share_slots, start_state, step_rows, steps_init, urow, whole_task)
from _parallel cimport fr_parallel, fr_use_pool, parallel_rows, share_cols, thread_sq
from _cells cimport (
    all_finite, buf, flag_nonfinite, mask_add, mask_copy, mask_scale,
    gru_fwd_zr_row_f, gru_fwd_zr_row_d, gru_fwd_h_row_f, gru_fwd_h_row_d,
    gru_bwd_zh_row_f, gru_bwd_zh_row_d, gru_bwd_r_row_f, gru_bwd_r_row_d,
    gru_ra_fwd_row_f, gru_ra_fwd_row_d, gru_ra_bwd_row_f, gru_ra_bwd_row_d,
)

cnp.import_array()
fr_use_pool()                   # run threaded work on the process's pool (fr_pool.h)


cdef inline void fwd_zr_row(int H, floating *a, const floating *b, const floating *h_prev,
                            floating *rh) noexcept nogil:
    if floating is float:
        gru_fwd_zr_row_f(H, a, b, h_prev, rh)
    else:
        gru_fwd_zr_row_d(H, a, b, h_prev, rh)


cdef inline void fwd_h_row(int H, floating *a, const floating *b, const floating *h_prev,
                           floating *h) noexcept nogil:
    if floating is float:
        gru_fwd_h_row_f(H, a, b, h_prev, h)
    else:
        gru_fwd_h_row_d(H, a, b, h_prev, h)


cdef inline void bwd_zh_row(int H, const floating *a, const floating *h_prev,
                            const floating *dy, const floating *dh_in, floating *da,
                            floating *dh_out, double *sq) noexcept nogil:
    if floating is float:
        gru_bwd_zh_row_f(H, a, h_prev, dy, dh_in, da, dh_out, sq)
    else:
        gru_bwd_zh_row_d(H, a, h_prev, dy, dh_in, da, dh_out, sq)


cdef inline void bwd_r_row(int H, const floating *a, const floating *h_prev,
                           const floating *drh, floating *da, floating *dh_out) noexcept nogil:
    if floating is float:
        gru_bwd_r_row_f(H, a, h_prev, drh, da, dh_out)
    else:
        gru_bwd_r_row_d(H, a, h_prev, drh, da, dh_out)


cdef inline void ra_fwd_row(int H, floating *a, const floating *s, const floating *b0,
                            const floating *b1, const floating *h_prev, floating *hn,
                            floating *h) noexcept nogil:
    if floating is float:
        gru_ra_fwd_row_f(H, a, s, b0, b1, h_prev, hn, h)
    else:
        gru_ra_fwd_row_d(H, a, s, b0, b1, h_prev, hn, h)


cdef inline void ra_bwd_row(int H, const floating *a, const floating *hn,
                            const floating *h_prev, const floating *dy, const floating *dh_in,
                            floating *dax, floating *dahh, floating *dh_out,
                            double *sq) noexcept nogil:
    if floating is float:
        gru_ra_bwd_row_f(H, a, hn, h_prev, dy, dh_in, dax, dahh, dh_out, sq)
    else:
        gru_ra_bwd_row_d(H, a, hn, h_prev, dy, dh_in, dax, dahh, dh_out, sq)


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
    bint reset_after
    const void *Wp      # packed Wh (reset_after) or [Whz Whr] (classic), or their transposes
    const void *Wp_h    # classic: packed Whh (or Whh^T)
    const void *Wh      # the unpacked Wh, for calls not worth packing (see worth_packing)
    int path            # how the per-step products are made (step_path)
    const void *b
    const void *h0
    void *hs
    void *G
    void *Hprev         # = XH + D
    void *AUX
    void *S
    const void *dhs
    void *dG
    void *dGh           # reset_after: gradient of the h~ block of h_{t-1} Whh (N, T, H)
    void *dh_buf
    double *sq          # per-step squared norms or NULL (see parallel_rows)
    double *sq_part
    bint check          # T = 1: flag non-finite pre-activations (see forward)
    int nonfinite
    bint f64
    bint prefetch       # the element-wise passes prefetch the next row (worth_prefetch)
    const void *M       # recurrent dropout's mask (N, H) on h_{t-1} in h_{t-1} Wh, or NULL
    void *HU            # with M: the unmasked h_{t-1} (N, T, H); Hprev holds m * h_{t-1}
    Steps steps         # where each row's steps are (_steps.pxd); rows below are its slots


cdef inline void _next_hprev(Loop *L, Py_ssize_t n, const floating *h, floating *hprev,
                             floating *hu) noexcept nogil:
    """Slot n's h_t into the next step's Hprev (masked, with L.M: then unmasked into HU)."""
    if L.M == NULL:
        memcpy(hprev, h, L.H * sizeof(floating))
    else:
        mask_copy(L.H, <const floating *>L.M + brow(&L.steps, n) * L.H, h, hprev)
        memcpy(hu, h, L.H * sizeof(floating))


cdef void _forward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, const floating *Wp) noexcept nogil:
    """Input projection and time loop for batch rows [n0, n1)."""
    cdef Py_ssize_t T = L.T, n, t, gr, hr, hp, ld_h = L.T * L.H, ld_g = L.T * 3 * L.H
    cdef Py_ssize_t ld = L.ldxh, ld_p = L.T * L.ldxh
    cdef int H = L.H, H3 = 3 * H, rows = <int>(n1 - n0)
    cdef const floating *Wp_h = <const floating *>L.Wp_h
    cdef const floating *Wh = <const floating *>L.Wh
    cdef const floating *b = <const floating *>L.b
    cdef const floating *h0 = <const floating *>L.h0
    cdef floating *hs = <floating *>L.hs
    cdef floating *G = <floating *>L.G
    cdef floating *Hprev = <floating *>L.Hprev
    cdef floating *AUX = <floating *>L.AUX
    cdef floating *S = <floating *>L.S
    cdef const floating *M = <const floating *>L.M
    cdef floating *HU = <floating *>L.HU
    cdef floating *h_prev       # the unmasked h_{t-1} of a row
    cdef const Steps *St = &L.steps
    cdef Py_ssize_t e, u, rs = step_rows(St)
    if packed(St):      # (inputs and projection done by whole_task) Hprev, HU at step 0 = h0
        start_state(St, n0, n1, H, ld, h0, M, Hprev, HU)
    else:
        # keep the inputs, project them into G, Hprev[:, 0] = h0
        start_rows(n0, n1, T, L.D, H, 3 * L.H, <const floating *>L.X, <const floating *>L.Wx,
                   h0, <floating *>L.XH, G)
        if M != NULL:                       # HU[:, 0] = h0, Hprev[:, 0] = m * h0
            for n in range(n0, n1):
                memcpy(HU + n * ld_h, h0 + n * H, H * sizeof(floating))
                mask_scale(H, M + n * H, Hprev + n * ld_p)
    ld_p = rs * ld                          # a step's rows: batch-major T rows apart, packed 1
    ld_h = rs * H
    ld_g = rs * H3
    for t in range(T):
        e = run_end(St, n1, t)              # slots [n0, e) run step t
        if e <= n0:
            break
        rows = <int>(e - n0)
        if L.reset_after:
            # S[rows] = h_{t-1} @ Wh
            recurrent_product(L.path, rows, H3, H, Hprev + crow(St, n0, t) * ld, ld_p, Wp, Wh,
                              H3, False, S + n0 * H3, H3, False)
            if L.check:                         # T = 1: x Wx and h0 Wh, before the biases
                flag_nonfinite(&L.nonfinite, G + n0 * H3, rows * H3)
                flag_nonfinite(&L.nonfinite, S + n0 * H3, rows * H3)
            for n in range(n0, e):
                gr = crow(St, n, t) * H3
                hr = crow(St, n, t) * H
                hp = crow(St, n, t) * ld
                u = urow(St, n, t) * H
                if L.prefetch and n + 1 < n1:   # the next row's segments (fr_prefetch)
                    prefetch(G + gr + ld_g, H3, True)
                    prefetch(AUX + hr + ld_h, H, True)
                    prefetch(hs + hr + ld_h, H, True)
                # z, r = sigmoid(G + S + b0 + b1); n = S_h + b1h; h~ = tanh(G_h + b0h + r*n)
                h_prev = Hprev + hp if M == NULL else HU + hr
                ra_fwd_row(H, G + gr, S + n * H3, b, b + H3, h_prev, AUX + hr, hs + u)
                if has_next(St, n, t):
                    _next_hprev(L, n, hs + u, Hprev + crow(St, n, t + 1) * ld,
                                HU + crow(St, n, t + 1) * H)
        else:
            # G[rows, t, :2H] += h_{t-1} @ Wh[:, :2H]
            recurrent_product(L.path, rows, 2 * H, H, Hprev + crow(St, n0, t) * ld, ld_p, Wp, Wh,
                              H3, False, G + crow(St, n0, t) * H3, ld_g, True)
            if L.check:             # T = 1: x Wx (all blocks) + h0 Wh (z, r), before the bias
                flag_nonfinite(&L.nonfinite, G + n0 * H3, rows * H3)
            for n in range(n0, e):
                gr = crow(St, n, t) * H3
                hr = crow(St, n, t) * H
                if L.prefetch and n + 1 < n1:   # the next row's segments (fr_prefetch)
                    prefetch(G + gr + ld_g, 2 * H, True)
                    prefetch(AUX + hr + ld_h, H, True)
                # z, r = sigmoid(G + b); AUX = r * h_{t-1}
                fwd_zr_row(H, G + gr, b, Hprev + crow(St, n, t) * ld, AUX + hr)
            # G[rows, t, 2H:] += (r * h_{t-1}) @ Wh[:, 2H:]
            recurrent_product(L.path, rows, H, H, AUX + crow(St, n0, t) * H, ld_h, Wp_h,
                              Wh + 2 * H, H3, False, G + crow(St, n0, t) * H3 + 2 * H, ld_g,
                              True)
            if L.check:                         # T = 1: the h~ block, + (r h0) Whh
                for n in range(n0, n1):
                    flag_nonfinite(&L.nonfinite, G + n * H3 + 2 * H, H)
            for n in range(n0, e):
                gr = crow(St, n, t) * H3
                hr = crow(St, n, t) * H
                hp = crow(St, n, t) * ld
                u = urow(St, n, t) * H
                if L.prefetch and n + 1 < n1:
                    prefetch(hs + hr + ld_h, H, True)
                # h~ = tanh(G_h + bh); h = (1 - z) h_{t-1} + z h~
                h_prev = Hprev + hp if M == NULL else HU + hr
                fwd_h_row(H, G + gr, b, h_prev, hs + u)
                if has_next(St, n, t):
                    _next_hprev(L, n, hs + u, Hprev + crow(St, n, t + 1) * ld,
                                HU + crow(St, n, t + 1) * H)


cdef void _forward_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t n0, n1
    share_slots(&L.steps, tid, nthreads, &n0, &n1)
    if n0 < n1:
        if L.f64:
            _forward_rows(L, n0, n1, <const double *>L.Wp)
        else:
            _forward_rows(L, n0, n1, <const float *>L.Wp)


cdef int _forward(Py_ssize_t N, Py_ssize_t T, int D, int H, bint reset_after, const floating *X,
                  floating *XH, const floating *Wx, const floating *Wh, const floating *b,
                  const floating *h0, floating *hs, floating *G, floating *AUX, floating *S,
                  floating *Wp, int threads, bint check, const floating *M,
                  floating *HU, const Py_ssize_t *plan, bint reverse) noexcept nogil:
    """Each thread takes a share of the batch rows: their input projection, then their time loop.
    (With one thread the projection is a single GEMM over all N*T rows, BLAS threading it.)
    With a plan (lengths or reverse, _steps.pxd), the projection comes first, shared by cache
    rows, then the time loop shared by slots."""
    cdef int H3 = 3 * H
    cdef floating *Wp_h = Wp
    cdef Loop L
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    if L.path == PACKED and reset_after:
        pack_b(H, H3, Wh, H3, 1, Wp)            # Wh (H, 3H)
    elif L.path == PACKED:
        Wp_h = pack_b(H, 2 * H, Wh, H3, 1, Wp)  # [Whz Whr] (H, 2H), then Whh (H, H)
        pack_b(H, H, Wh + 2 * H, H3, 1, Wp_h)
    L.Wh = Wh
    L.N = N; L.T = T; L.D = D; L.H = H; L.ldxh = D + H; L.X = X; L.XH = XH; L.Hprev = XH + D
    L.Wx = Wx; L.reset_after = reset_after; L.Wp = Wp; L.Wp_h = Wp_h; L.b = b; L.h0 = h0
    L.hs = hs; L.G = G; L.AUX = AUX; L.S = S
    L.f64 = floating is double
    L.prefetch = worth_prefetch(N * T * 3 * H, sizeof(floating)) and plan == NULL
    L.check = check and T == 1
    L.nonfinite = 0
    L.M = M; L.HU = HU
    if plan != NULL:
        W.S = &L.steps; W.D = D; W.H = H; W.GH = H3; W.f64 = L.f64; W.backward = False
        W.X = X; W.XH = XH; W.Wx = Wx; W.G = G; W.hs = hs
        parallel_rows(threads, cache_rows(&L.steps), whole_task, &W, NULL, 0, &L.sq_part)
    parallel_rows(threads, N, _forward_task, &L, NULL, 0, &L.sq_part)
    return L.nonfinite


cdef void _backward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, double *sq,
                         const floating *Wp) noexcept nogil:
    """The backward time loop for batch rows [n0, n1), then their rows of dX; sq: this
    thread's norm sums or NULL."""
    cdef Py_ssize_t T = L.T, n, t, gr, hr, hp, NH = L.N * L.H, ld_g = L.T * 3 * L.H
    cdef Py_ssize_t ld = L.ldxh, ld_h = L.T * L.H, ld_p = L.T * L.ldxh
    cdef int H = L.H, H3 = 3 * H, rows = <int>(n1 - n0)
    cdef const floating *Wp_h = <const floating *>L.Wp_h
    cdef const floating *Wh = <const floating *>L.Wh
    cdef const floating *G = <const floating *>L.G
    cdef const floating *Hprev = <const floating *>L.Hprev
    cdef const floating *AUX = <const floating *>L.AUX
    cdef floating *S = <floating *>L.S
    cdef const floating *dhs = <const floating *>L.dhs
    cdef floating *dG = <floating *>L.dG
    cdef floating *dGh = <floating *>L.dGh
    cdef floating *dh_in = <floating *>L.dh_buf
    cdef floating *dh_out = dh_in + NH
    cdef floating *tmp
    cdef double *sq_t
    cdef const floating *M = <const floating *>L.M
    cdef const floating *HU = <const floating *>L.HU
    cdef const floating *h_prev     # the unmasked h_{t-1} of a row
    # with M, the gradient through the products of m * h_{t-1} is summed here, then masked
    cdef floating *dhm = S + NH + n0 * H
    cdef floating *dh_prod          # where the products' part of dh_{t-1} goes
    cdef const Steps *St = &L.steps
    cdef Py_ssize_t e, u, rs = step_rows(St)
    memset(dh_in + n0 * H, 0, rows * H * sizeof(floating))
    if packed(St):      # a slot joins at its own last step, reading whichever half is current
        memset(dh_out + n0 * H, 0, rows * H * sizeof(floating))
    ld_p = rs * ld                          # a step's rows: batch-major T rows apart, packed 1
    ld_h = rs * H
    ld_g = rs * H3
    for t in range(T - 1, -1, -1):
        sq_t = sq + t if sq != NULL else NULL
        e = run_end(St, n1, t)              # slots [n0, e) run step t
        rows = <int>(e - n0)
        if rows <= 0:
            pass
        elif L.reset_after:
            for n in range(n0, e):
                gr = crow(St, n, t) * H3
                hr = crow(St, n, t) * H
                hp = crow(St, n, t) * ld
                u = urow(St, n, t) * H
                if L.prefetch and n + 1 < n1:   # the next row's segments (fr_prefetch)
                    prefetch(G + gr + ld_g, H3)
                    prefetch(AUX + hr + ld_h, H)
                    prefetch(Hprev + hp + ld_p, H)
                    prefetch(dhs + hr + ld_h, H)
                    prefetch(dG + gr + ld_g, H3, True)
                    prefetch(dGh + hr + ld_h, H, True)
                # dG: z, r, h~ (input side); dGh: h~ of the recurrent side, r times dG's
                # (its z and r are dG's); dh_{t-1} = dh_t (1 - z)
                h_prev = Hprev + hp if M == NULL else HU + hr
                ra_bwd_row(H, G + gr, AUX + hr, h_prev, dhs + u, dh_in + n * H,
                           dG + gr, dGh + hr, dh_out + n * H, sq_t)
            # dh_{t-1} += dG[rows, t, :2H] @ Wh[:, :2H]^T + dGh[rows, t] @ Wh[:, 2H:]^T
            # (with M: those two into dhm, then dh_{t-1} += m * dhm)
            dh_prod = dh_out + n0 * H if M == NULL else dhm
            recurrent_product(L.path, rows, H, 2 * H, dG + crow(St, n0, t) * H3, ld_g, Wp, Wh,
                              H3, True, dh_prod, H, M == NULL)
            recurrent_product(L.path, rows, H, H, dGh + crow(St, n0, t) * H, ld_h, Wp_h,
                              Wh + 2 * H, H3, True, dh_prod, H, True)
        else:
            for n in range(n0, e):
                gr = crow(St, n, t) * H3
                hr = crow(St, n, t) * H
                hp = crow(St, n, t) * ld
                u = urow(St, n, t) * H
                if L.prefetch and n + 1 < n1:   # the next row's segments (fr_prefetch)
                    prefetch(G + gr + ld_g, H3)
                    prefetch(Hprev + hp + ld_p, H)
                    prefetch(dhs + hr + ld_h, H)
                    prefetch(dG + gr + ld_g, H3, True)
                # dz, dh~ pre-activations; dh_{t-1} = dh_t (1 - z)
                h_prev = Hprev + hp if M == NULL else HU + hr
                bwd_zh_row(H, G + gr, h_prev, dhs + u, dh_in + n * H, dG + gr,
                           dh_out + n * H, sq_t)
            # d(r * h_{t-1}) = dG[rows, t, 2H:] @ Wh[:, 2H:]^T, into S
            recurrent_product(L.path, rows, H, H, dG + crow(St, n0, t) * H3 + 2 * H, ld_g, Wp_h,
                              Wh + 2 * H, H3, True, S + n0 * H, H, False)
            # (with M, the terms through the products go to dhm, then dh_{t-1} += m * dhm)
            dh_prod = dh_out + n0 * H if M == NULL else dhm
            if M != NULL:
                memset(dhm, 0, rows * H * sizeof(floating))
            for n in range(n0, e):
                gr = crow(St, n, t) * H3
                # dr pre-activation (the h of r * h: masked in Hprev); dh_{t-1} += d(r h) * r
                bwd_r_row(H, G + gr, Hprev + crow(St, n, t) * ld, S + n * H, dG + gr,
                          dh_prod + (n - n0) * H)
            # dh_{t-1} += dG[rows, t, :2H] @ Wh[:, :2H]^T
            recurrent_product(L.path, rows, H, 2 * H, dG + crow(St, n0, t) * H3, ld_g, Wp, Wh,
                              H3, True, dh_prod, H, True)
        if M != NULL:
            for n in range(n0, e):
                mask_add(H, M + brow(St, n) * H, dhm + (n - n0) * H, dh_out + n * H)
        tmp = dh_in; dh_in = dh_out; dh_out = tmp
    # dX[rows] = dG[rows] @ Wx^T, all their timesteps in one GEMM (packed: whole_task)
    if not packed(St):
        dx_rows(n0, n1, T, L.D, 3 * L.H, dG, <const floating *>L.Wx, NULL, <floating *>L.dX)


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


cdef void _weights_cols(Loop *L, int c0, int c1, const floating *XH, bint hx, bint hh,
                        double *acc_h) noexcept nogil:
    """Columns [c0, c1) of the weight gradients, by GEMMs (or reductions) over all N*T rows:
    z and r columns [dWx; dWh] = [X | Hprev]^T @ dG (the recurrent side's gradient is dG's
    there, in reset_after too); h~ columns dWx = X^T @ dG (if hx) and, if hh, reset_after:
    dWh = Hprev^T @ dGh, classic: dWh = (r*h_prev)^T @ dG.  db = sum dG; reset_after:
    db[0] = sum dG, db[1] = db[0] in the z and r columns, sum dGh in the h~ columns (acc_h:
    room for those sums from column max(c0, 2H) on)."""
    cdef int D = L.D, H = L.H, H3 = 3 * L.H, k0 = max(c0, 2 * H), z1 = min(c1, 2 * H), k
    cdef Py_ssize_t NT = cache_rows(&L.steps)
    cdef const floating *dG = <const floating *>L.dG
    cdef const floating *dGh = <const floating *>L.dGh
    cdef floating *dWx = <floating *>L.dWx
    cdef floating *dWh = <floating *>L.dWh
    cdef floating *db = <floating *>L.db
    if c0 < z1:
        weight_grad_cols(NT, D, H, H3, c0, z1, XH, dG, dWx, dWh, L.acc, db)
        if L.reset_after:
            for k in range(c0, z1):
                db[H3 + k] = db[k]
    if k0 >= c1:
        return
    if hx:
        grad_cols(NT, D, H3, k0, c1, XH, D + H, dG + k0, H3, dWx, L.acc + k0, db + k0)
    if hh and L.reset_after:
        grad_cols(NT, H, H3, k0, c1, XH + D, D + H, dGh + (k0 - 2 * H), H, dWh, acc_h,
                  db + H3 + k0)
    elif hh:
        grad_cols(NT, H, H3, k0, c1, <const floating *>L.AUX, H, dG + k0, H3, dWh)


cdef void _weights_share(Loop *L, int tid, int nthreads, const floating *XH) noexcept nogil:
    """Thread tid's share of the weight gradients.  Two threads: each takes half the z and r
    columns and one of the h~ block's two products (input or recurrent side), so each packs
    [X | Hprev] once and one half of it; by columns (share_cols) one thread would get all of
    the h~ block's products and pack [X | Hprev] twice.  Measured alternating with the column
    split, GRU (reset_after) N64 T100 H256, backward at 2 threads: BENCHMARKS.md.  More
    threads: by columns."""
    cdef Py_ssize_t c0, c1
    cdef int H = L.H, half = min((L.H + 15) // 16 * 16, 2 * L.H)   # whole 16-column units
    if nthreads == 2:
        if tid == 0:
            _weights_cols(L, 0, half, XH, False, False, NULL)
            _weights_cols(L, 2 * H, 3 * H, XH, False, True, L.acc)   # (done with acc[:half])
        else:
            _weights_cols(L, half, 3 * H, XH, True, False, NULL)
        return
    share_cols(3 * H, tid, nthreads, &c0, &c1)
    if c0 < c1:
        _weights_cols(L, <int>c0, <int>c1, XH, True, True, L.acc + max(c0, 2 * H))


cdef void _weights_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    if L.f64:
        _weights_share(L, tid, nthreads, <const double *>L.XH)
    else:
        _weights_share(L, tid, nthreads, <const float *>L.XH)


cdef int _backward(Py_ssize_t N, Py_ssize_t T, int D, int H, bint reset_after, const floating *dhs,
                   const floating *XH, const floating *Wx, const floating *Wh, const floating *G,
                   const floating *AUX, floating *S, floating *dG, floating *dGh, floating *dh_buf,
                   double *acc, floating *dWx, floating *dWh, floating *db, floating *dX,
                   floating *dh0, double *sq, floating *Wp, int threads,
                   bint check, const floating *M, const floating *HU, const Py_ssize_t *plan,
                   bint reverse, floating *dXp) noexcept nogil:
    """Two parallel phases: each thread takes a share of the batch rows (their time loop, then
    their rows of dX); then, once dG is complete, a share of the weight-gradient columns.  With
    a plan, the time loop shared by slots, then dX shared by cache rows (into dXp, then in
    place), then the weights."""
    cdef int H3 = 3 * H
    cdef Py_ssize_t NH = N * H, j, half
    cdef floating *Wp_h = Wp
    cdef Loop L
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    if L.path == PACKED:
        Wp_h = pack_b(2 * H, H, Wh, 1, H3, Wp)  # [Whz Whr]^T (2H, H), then Whh^T (H, H)
        pack_b(H, H, Wh + 2 * H, 1, H3, Wp_h)
    L.Wh = Wh
    L.N = N; L.T = T; L.D = D; L.H = H; L.ldxh = D + H; L.XH = <void *>XH
    L.Hprev = <void *>(XH + D); L.X = NULL   # (backward reads X from XH)
    L.Wx = Wx; L.reset_after = reset_after; L.Wp = Wp; L.Wp_h = Wp_h; L.G = <void *>G
    L.AUX = <void *>AUX; L.S = S; L.dhs = dhs; L.dG = dG; L.dGh = dGh; L.dh_buf = dh_buf
    L.sq = sq; L.dX = dX
    L.dWx = dWx; L.dWh = dWh; L.db = db; L.acc = acc; L.f64 = floating is double
    L.prefetch = worth_prefetch(N * T * 3 * H, sizeof(floating)) and plan == NULL
    L.M = M; L.HU = <void *>HU
    parallel_rows(threads, N, _backward_task, &L, sq, T, &L.sq_part)
    # after T swaps the carried gradient is in the first half of dh_buf if T is even
    half = NH if T % 2 else 0
    if plan != NULL:
        for j in range(N):                      # slot j -> its batch row
            memcpy(dh0 + brow(&L.steps, j) * H, dh_buf + half + j * H, H * sizeof(floating))
        W.S = &L.steps; W.D = D; W.H = H; W.GH = H3; W.f64 = L.f64; W.backward = True
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
            cnp.ndarray h0,
            cnp.ndarray hs, cnp.ndarray G, cnp.ndarray AUX, cnp.ndarray S,
            bint reset_after, cnp.ndarray Wp, int threads=1, bint check=False,
            object h_mask=None, object HU=None, object plan=None, bint reverse=False):
    """Run the GRU over all timesteps of X (N, T, D); fills hs and the caches XH (X and h_{t-1}
    side by side) and AUX (S, Wp: scratch).
    check (T = 1 only): returns 1 if a pre-activation x Wx + h0 Wh (before the bias) holds
    NaN or Inf -- which a NaN or Inf in Wx or Wh always makes, the inputs being finite --
    else 0 (see fastrnn.layers._weights_checked_by_kernel).
    h_mask (N, H) or None: recurrent dropout, the products read h_mask * h_{t-1} (XH then
    holds those); needs the cache HU (N, T, H) for the unmasked h_{t-1}.
    plan (int64, 2N + 2T + 1) or None: lengths and direction as laid out in _steps.pxd (the
    caches then hold sum(lengths) rows, step-major)."""
    cdef Py_ssize_t N = XH.shape[0], T = XH.shape[1], D = Wx.shape[0], H = Wh.shape[0]
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Py_ssize_t NTH = N * T * H
    cdef void *pX = buf(X, tn, N * T * D, "X")
    cdef void *pXH = buf(XH, tn, N * T * (D + H), "XH", True)
    cdef void *pWx = buf(Wx, tn, D * 3 * H, "Wx")
    cdef void *pWh = buf(Wh, tn, H * 3 * H, "Wh")
    cdef void *pb = buf(b, tn, (6 if reset_after else 3) * H, "b")
    cdef void *ph0 = buf(h0, tn, N * H, "h0")
    cdef void *phs = buf(hs, tn, NTH, "hs", True)
    cdef void *pG = buf(G, tn, 3 * NTH, "G", True)
    cdef void *pA = buf(AUX, tn, NTH, "AUX", True)
    cdef void *pS = buf(S, tn, 3 * N * H, "S", True)
    cdef bint dbl = tn == cnp.NPY_FLOAT64
    cdef void *pWp = buf(Wp, tn, packed_size(H, 3 * H, dbl) if reset_after else
                             packed_size(H, 2 * H, dbl) + packed_size(H, H, dbl),
                       "Wp", True, True)   # scratch: at least that size
    cdef void *pM = NULL if h_mask is None else buf(h_mask, tn, N * H, "h_mask")
    cdef void *pHU = NULL if h_mask is None else buf(HU, tn, NTH, "HU", True)
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _forward(N, T, D, H, reset_after, <float *>pX, <float *>pXH, <float *>pWx,
                                 <float *>pWh, <float *>pb, <float *>ph0, <float *>phs,
                                 <float *>pG, <float *>pA, <float *>pS, <float *>pWp, threads,
                                 check, <float *>pM, <float *>pHU, pplan, reverse)
        else:
            nonfinite = _forward(N, T, D, H, reset_after, <double *>pX, <double *>pXH,
                                 <double *>pWx, <double *>pWh, <double *>pb, <double *>ph0,
                                 <double *>phs, <double *>pG, <double *>pA, <double *>pS,
                                 <double *>pWp, threads, check, <double *>pM, <double *>pHU,
                                 pplan, reverse)
    return nonfinite


def backward(cnp.ndarray dhs, cnp.ndarray XH, cnp.ndarray Wx, cnp.ndarray Wh, cnp.ndarray G,
             cnp.ndarray AUX, cnp.ndarray S, cnp.ndarray dG, object dGh,
             cnp.ndarray dh_buf, cnp.ndarray acc, cnp.ndarray dWx, cnp.ndarray dWh,
             cnp.ndarray db, cnp.ndarray dX, cnp.ndarray dh0, object sq, bint reset_after,
             cnp.ndarray Wp, int threads=1, bint check=False, object h_mask=None,
             object HU=None, object plan=None, bint reverse=False, object dXp=None):
    """Backpropagate through all timesteps of the last forward.

    dGh (N, T, H): scratch needed only with reset_after (else None); sq (T,) float64 zeros or
    None: receives ||dL/dh_t||^2 per step.  Writes dWx, dWh, db, dX, dh0.
    check (T = 1 only): if dX or dh0 holds NaN or Inf, returns 1 before writing dWx, dWh and
    db; else 0.  h_mask, HU, plan, reverse: as given to the forward; dXp: with a plan,
    scratch of N*T*D elements."""
    cdef Py_ssize_t N = dhs.shape[0], T = dhs.shape[1], D = Wx.shape[0], H = Wh.shape[0]
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef Py_ssize_t NTH = N * T * H, NH = N * H
    cdef void *pdhs = buf(dhs, tn, NTH, "dhs")
    cdef void *pXH = buf(XH, tn, N * T * (D + H), "XH")
    cdef void *pWx = buf(Wx, tn, D * 3 * H, "Wx")
    cdef void *pWh = buf(Wh, tn, H * 3 * H, "Wh")
    cdef void *pG = buf(G, tn, 3 * NTH, "G")
    cdef void *pA = buf(AUX, tn, NTH, "AUX")
    cdef void *pS = buf(S, tn, 3 * NH, "S", True)
    cdef void *pdG = buf(dG, tn, 3 * NTH, "dG", True)
    cdef void *pdGh = buf(dGh, tn, NTH, "dGh", True) if reset_after else NULL
    cdef void *pdh = buf(dh_buf, tn, 2 * NH, "dh_buf", True)
    cdef double *pacc = <double *>buf(acc, cnp.NPY_FLOAT64, 3 * H, "acc", True)
    cdef void *pdWx = buf(dWx, tn, D * 3 * H, "dWx", True)
    cdef void *pdWh = buf(dWh, tn, H * 3 * H, "dWh", True)
    cdef void *pdb = buf(db, tn, (6 if reset_after else 3) * H, "db", True)
    cdef void *pdX = buf(dX, tn, N * T * D, "dX", True)
    cdef void *pdh0 = buf(dh0, tn, NH, "dh0", True)
    cdef double *psq = NULL if sq is None else <double *>buf(sq, cnp.NPY_FLOAT64, T, "sq", True)
    cdef bint dbl = tn == cnp.NPY_FLOAT64
    cdef void *pWp = buf(Wp, tn, packed_size(2 * H, H, dbl) + packed_size(H, H, dbl),
                       "Wp", True, True)   # scratch: at least that size (both variants)
    cdef void *pM = NULL if h_mask is None else buf(h_mask, tn, NH, "h_mask")
    cdef void *pHU = NULL if h_mask is None else buf(HU, tn, NTH, "HU")
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef void *pdXp = NULL if plan is None else buf(dXp, tn, N * T * D, "dXp", True)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _backward(N, T, D, H, reset_after, <float *>pdhs, <float *>pXH,
                                  <float *>pWx, <float *>pWh, <float *>pG, <float *>pA,
                                  <float *>pS, <float *>pdG, <float *>pdGh, <float *>pdh, pacc,
                                  <float *>pdWx, <float *>pdWh, <float *>pdb, <float *>pdX,
                                  <float *>pdh0, psq, <float *>pWp, threads, check,
                                  <float *>pM, <float *>pHU, pplan, reverse, <float *>pdXp)
        else:
            nonfinite = _backward(N, T, D, H, reset_after, <double *>pdhs, <double *>pXH,
                                  <double *>pWx, <double *>pWh, <double *>pG, <double *>pA,
                                  <double *>pS, <double *>pdG, <double *>pdGh, <double *>pdh, pacc,
                                  <double *>pdWx, <double *>pdWh, <double *>pdb, <double *>pdX,
                                  <double *>pdh0, psq, <double *>pWp, threads, check,
                                  <double *>pM, <double *>pHU, pplan, reverse,
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
