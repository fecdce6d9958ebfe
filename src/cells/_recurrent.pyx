"""The time loop of every recurrent cell, forward and backward through time (float32 and
float64 from one source).

One driver runs every cell: the input projection, the T steps, the carried state and its
gradients, variable lengths and the reverse direction (_steps.pxd), recurrent dropout's mask,
threads, the whole-sequence phases (dX, the weight gradients) and the Python entry points.  A
cell contributes its step (_rnn_cell.pxd, _lstm_cell.pxd, _gru_cell.pxd): its element-wise row
passes, its per-step products where they are not the plain h_{t-1} @ Wh, and its shape (Cell in
_loop.pxd: gate blocks, phases per step, how Wh is packed).  The driver switches on the cell
once per product and row pass, each an H-wide pass or more.

A step of slots [n0, e) (the rows still running at step t), forward:
    for each phase of the cell:  its product(s) (h_{t-1} @ Wh into G);  its row pass per slot
    then h_t into the next step's Hprev (masked)
backward:
    for each phase:  its row pass per slot (dG, the direct part of dh_{t-1});  its products
    (dG @ Wh^T into dh_{t-1});  then the mask on the products' part;  swap dh_in / dh_out

Threads: each takes a share of the batch rows (slots) for everything row-wise (projection, time
loop, dX), then a share of the columns of dWx, dWh and db; the LSTM's time loop can instead be
shared by hidden units (use_units).  Caches (owned by the Python layer, reused across calls):
  XH  [x_t | h_{t-1}] for every step (h0 at t = 0) (N, T, D + H); x_t copied in by forward
  G   activated gates (N, T, GH); and the cell's own (_loop.pxd's Loop: C, TC, AUX, S, HU)
"""
cimport numpy as cnp
from cython cimport floating
from libc.string cimport memcpy, memset

from _bf16 cimport bf16_pack, fr_bf16_packed_words, fr_bf16_supported, fr_bf16_weights
from _blas cimport fr_use_blas
from _cells cimport all_finite, buf, mask_add, mask_scale
from _gru_cell cimport gru_bwd_product, gru_bwd_row, gru_cell, gru_fwd_product, gru_fwd_row
from _gru_cell cimport gru_weights
from _loop cimport (Cell, Loop, GRU, GRU_RA, LSTM, RNN_RELU, RNN_TANH, check_cols,
                    next_state, product_path, step_product, step_product_back)
from _lstm_cell cimport lstm_bwd_row, lstm_cell, lstm_fwd_row
from _packed cimport (checked_mode, fr_isa, gemm_direct, kernel_isa, kernel_tn_mode, pack_b,
                      pack_stacked, packed_size, PACKED, recurrent_product, step_path)
from _parallel cimport (fr_parallel, fr_share, fr_use_pool, parallel_phases, parallel_rows,
                        share_cols, thread_sq)
from _rnn_cell cimport rnn_bwd_row, rnn_cell, rnn_fwd_product, rnn_fwd_row
from _seq cimport dx_rows, project, start_rows, weight_grad_cols, worth_prefetch
from _steps cimport (Steps, Whole, brow, cache_rows, has_next, packed, plan_buf, run_end,
                     share_slots, start_state, steps_init, urow, whole_task)

cnp.import_array()
fr_use_pool()                   # run threaded work on the process's pool (fr_pool.h)
fr_use_blas()                   # call the BLAS fastrnn._blas chose (fr_blas.h)


# ---- the cells ---------------------------------------------------------------------------------

cdef int cell_spec(int kind, Cell *c) except -1:
    """c = the shape of cell `kind` (the enum in _loop.pxd); ValueError for another kind."""
    if kind < RNN_TANH or kind > GRU_RA:
        raise ValueError(f"cell: expected 0 (RNN tanh), 1 (RNN relu), 2 (LSTM), 3 (GRU) or 4 "
                         f"(GRU reset_after), got {kind}")
    memset(c, 0, sizeof(Cell))
    c.kind = kind
    c.bias_rows = 1
    c.fwd_phases = 1
    c.bwd_phases = 1
    if kind == LSTM:
        lstm_cell(c)
    elif kind >= GRU:
        gru_cell(c)
    else:
        rnn_cell(c)
    return 0


cdef inline void fwd_product(Loop *L, int phase, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t e,
                             Py_ssize_t n1, const floating *Wp) noexcept nogil:
    """Forward phase `phase` of step t, slots [n0, e): the cell's product(s)."""
    if L.cell.kind >= GRU:
        gru_fwd_product(L, phase, t, n0, e, Wp)
    elif L.cell.kind == LSTM:
        step_product(L, t, n0, e, Wp)
    else:
        rnn_fwd_product(L, t, n0, e, n1, Wp)


cdef inline void fwd_row(Loop *L, int phase, Py_ssize_t n, Py_ssize_t t, Py_ssize_t n1,
                         floating *G) noexcept nogil:
    """Forward phase `phase` of step t: the cell's row pass for slot n."""
    if L.cell.kind >= GRU:
        gru_fwd_row(L, phase, n, t, n1, G)
    elif L.cell.kind == LSTM:
        lstm_fwd_row(L, n, t, 0, L.H, G)
    else:
        rnn_fwd_row(L, n, t, n1, G)


cdef inline void bwd_row(Loop *L, int phase, Py_ssize_t n, Py_ssize_t t, Py_ssize_t n0,
                         Py_ssize_t n1, floating **dh, floating **dc, floating *dh_prod,
                         floating *dG, double *sq) noexcept nogil:
    """Backward phase `phase` of step t: the cell's row pass for slot n (dh[0], dc[0] from
    step t + 1, dh[1], dc[1] to step t - 1)."""
    if L.cell.kind >= GRU:
        gru_bwd_row(L, phase, n, t, n0, n1, dh[0], dh[1], dh_prod, sq)
    elif L.cell.kind == LSTM:
        lstm_bwd_row(L, n, t, n1, 0, L.H, dh[0], dc[0], dc[1], dG, sq)
    else:
        rnn_bwd_row(L, n, t, n1, dh[0], dG, sq)


cdef inline void bwd_product(Loop *L, int phase, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t e,
                             const floating *Wp, floating *dh_prod) noexcept nogil:
    """Backward phase `phase` of step t, slots [n0, e): the cell's product(s) into dh_prod."""
    if L.cell.kind >= GRU:
        gru_bwd_product(L, phase, t, n0, e, Wp, dh_prod)
    else:
        step_product_back(L, t, n0, e, Wp, dh_prod)


# ---- the rules that choose a path --------------------------------------------------------------

cdef enum:
    UNITS_MIN_H = 400               # the smallest H an LSTM's time loop is shared by units at
    FUSE_MIN_ROWS = 8               # the fewest batch rows per thread fused_steps fuses
    PACKED_L2_BYTES = 1 << 20       # the largest packed weights kept in L2 across steps or
    # chunks of rows (half an L2): fused_steps, packed_dx
    DX_PACKED_MIN_ROWS = 256        # the fewest N*T rows packed_dx takes

cdef int fuse_mode = -1             # -1: by fused_steps; 0 never; 1 whenever packed (_set_fused)
cdef int dx_mode = -1               # -1: by packed_dx; 0 never; 1 always (_set_dx_packed)
cdef int unit_split_mode = -1       # -1: by use_units; 0 by batch rows; 1 by hidden units
# whenever possible (_set_unit_split)


cdef bint fused_steps(const Cell *c, int path, Py_ssize_t N, int D, int H, int threads,
                      size_t itemsize) noexcept nogil:
    """RNN forward: multiply the inputs by Wx step by step, in one packed product per step
    G_t = [x_t | h_{t-1}] @ [Wx; Wh], instead of in one BLAS GEMM over all N*T rows?  Each
    step's pre-activations then go from the product straight into the tanh pass while in
    cache, and sgemm's packing and zeroing passes go.  Only while the packed weights stay in L2
    from step to step (PACKED_L2_BYTES), and with rows enough per thread for the packed
    kernel's register blocks (FUSE_MIN_ROWS); and not where the inputs are much wider than
    the state (D > 4H), where the projection is most of the work and the layer may let BLAS
    thread it while the kernel runs on one thread (fastrnn._threads.plan_threads).  Measured
    alternating fused and not in one process (forward, 1 / 2 threads): N64 T100 H256
    1.10-1.13 / 1.10-1.12x, N32 T35 H100 1.08 / 1.08x, N20 1.05-1.07 / 1.07-1.13x, N16 1.02 /
    1.02x, N8 1.00 / 1.04x; N128 T50 H512 (2 MiB of weights) 0.94 / 0.97x.  Backward's
    dX_t = dG_t @ Wx^T, likewise beside dh_{t-1} = dG_t @ Wh^T, measured 0.95-1.04x: there dX
    stays one GEMM.  (The LSTM's and GRU's gate blocks make [Wx; Wh] 3-4x larger; the GRU's
    forward fused this way lost 2-11 % at N64 H256: the RNN's path only.)"""
    if c.kind > RNN_RELU or path != PACKED or fuse_mode == 0:
        return False
    if fuse_mode == 1:
        return True
    return (N >= FUSE_MIN_ROWS * max(threads, 1) and D <= 4 * H
            and packed_size(D + H, H, itemsize == 8) * itemsize <= PACKED_L2_BYTES)


cdef bint packed_dx(const Cell *c, Py_ssize_t NT, int D, int H, size_t itemsize) noexcept nogil:
    """RNN backward: dX = dG @ Wx^T from Wx^T packed once per call, by the packed kernel in
    chunks of rows (dx_rows in _seq.pxd), instead of by one sgemm over all N*T rows?  In float32
    on AVX-512, from DX_PACKED_MIN_ROWS rows, while the packed Wx^T stays in L2 from chunk to
    chunk (PACKED_L2_BYTES).  Measured on the AVX-512 Xeon, alternating with sgemm in one
    process (backward, medians of 30-300 calls, two runs), 1 / 2 threads: N64 T100 H256
    1.02-1.04 / 1.03-1.04x, N20 T35 H100 1.03 / 1.01x.  The product alone, 6400 x 256 x 256:
    148 -> 167-169 GF/s.  (The GRU's dX, with 3H columns of dG, measured 1.00-1.01x in its
    layer and stays with sgemm; the LSTM's was not tried in a layer: 6400 x 1024 x 256 alone
    149 -> 150-159.)"""
    if c.kind > RNN_RELU:
        return False
    if dx_mode >= 0:
        return dx_mode == 1
    return (fr_isa() == 1 and itemsize == 4 and NT >= DX_PACKED_MIN_ROWS
            and packed_size(H, D, False) * itemsize <= PACKED_L2_BYTES)


cdef bint use_units(const Cell *c, int threads, int path, Py_ssize_t N, int H) noexcept nogil:
    """LSTM: share the time loop by hidden units rather than by batch rows?  By rows, each
    thread multiplies its rows by all of Wh at every step; by units, all rows by its columns of
    Wh (then the threads wait for each other once a step: a phase a step, fr_parallel_phases).
    With few rows and a large Wh the rows' products are bound by reading Wh, which does not fit
    one core's cache; by units each core keeps its share of Wh in cache.  Measured on the Xeon,
    float32, 2 threads, forward+backward by rows / by units: H650 N2 1.47, N8 1.32, N20 1.08,
    N32 1.07, N48 1.01, N64 1.01; H512 N20 1.08, N128 0.96; H400 N8 1.15, N20 1.03; H1024 N20
    1.07; H256 N2 1.13, N8 0.97, N20 0.95, N64 0.94; H128 N4 0.83; H100 N20 0.74 (there the
    wait at every step costs more than it saves).  The LSTM's only: its row passes take a range
    of units (the other cells' were not measured this way)."""
    if c.kind != LSTM or threads < 2 or path != PACKED:
        return False
    if unit_split_mode >= 0:
        return unit_split_mode == 1
    return N < 24 * threads and H >= UNITS_MIN_H


cdef bint units_few_rows(const Cell *c, int threads, int path, Py_ssize_t N, Py_ssize_t T,
                         int H) noexcept nogil:
    """LSTM forward of fewer batch rows than threads (batch-1 evaluation and generation): share
    it between threads, from Wh and Wx as they are (step_path: one row is not packed)?  By rows
    one thread would do all of it.  Over several steps each thread takes its hidden units; a
    single step of one row is split over the rows of [Wx; Wh] (_forward_step_k).  Measured on
    the EPYC, forward N1 H650, four layers cycled (Wh and Wx from memory), 2 threads against one
    thread's rows: T35 5.9-7.4 -> 4.3-5.3 ms; T1 450-461 -> 303-356 us.  (The single step waited
    3.6 ms for the second thread where OpenBLAS's threads were spinning from a call before,
    until the pool let the caller run the shares of a thread that has not started: fr_pool.h.)
    The layers plan their threads by this rule (few_rows_by_units)."""
    if c.kind != LSTM or threads < 2 or path == PACKED or N >= threads:
        return False
    if unit_split_mode >= 0:
        return unit_split_mode == 1
    return H >= UNITS_MIN_H


cdef floating *step_weights_bf16(Loop *L, int threads, bint backward,
                                 floating *Wp) noexcept nogil:
    """matmul_precision "medium" (L.bf16): the per-step products too at bfloat16 precision,
    from weights packed in bfloat16 (wbf16) into the calling thread's buffer, which this returns
    (Wp, and wbf16 False, where they stay float32: float64, not PACKED, the RNN's fused steps,
    no AVX512-BF16, or no memory).  The buffer holds the largest layout
    of the call: Wh (H, GH) or Wh^T (GH, H) in 32-column panels, or shared by units, each
    share's columns of every gate block padded to whole panels (at most 31 columns more than
    its own; units_share_bf16 gives each share 32 columns to spare, and there are at most
    `threads` shares).  Measured: see fr_bf16.h."""
    cdef int H = L.H, GH = L.GH, K = GH if backward else H
    cdef size_t words
    cdef floating *P
    L.wbf16 = False
    if (not L.bf16 or floating is double or L.path != PACKED or L.fused
            or not fr_bf16_supported()):
        return Wp
    # (a split into two packed parts takes at most a panel row or column more)
    words = max(fr_bf16_packed_words(K, GH + H - K) + 32 * <size_t>(GH + H),
                <size_t>((K + 1) // 2) * (GH // H if not backward else 1)
                * (H + 32 * max(threads, 1)))
    P = <floating *>fr_bf16_weights(words)
    if P == NULL:
        return Wp
    L.wbf16 = True
    return P


cdef inline floating *pack_step(const Loop *L, int K, int N, const floating *B, Py_ssize_t ld,
                                bint trans, floating *P) noexcept nogil:
    """Pack B (K, N) for the per-step products into P: Wh's columns (B[k, n] at B[k*ld + n]),
    or with `trans` Wh^T's (at B[n*ld + k]); in bfloat16 panels where step_weights_bf16 chose
    them (L.wbf16), else float32.  Returns the element after the copy."""
    if L.wbf16:
        return bf16_pack(K, N, B, ld, trans, P)
    return pack_b(K, N, B, 1, ld, P) if trans else pack_b(K, N, B, ld, 1, P)


cdef inline size_t step_size(const Loop *L, int K, int N) noexcept nogil:
    """Elements pack_step's copy of a (K, N) matrix takes."""
    if L.wbf16:
        return fr_bf16_packed_words(K, N)
    return packed_size(K, N, L.f64)


cdef inline floating *units_share_bf16(const Loop *L, floating *Wp, int s, Py_ssize_t j0,
                                       bint backward) noexcept nogil:
    """Where share s (units from j0) packs its bfloat16 columns (step_weights_bf16's layout):
    every share before it took its own columns plus at most 31 of panel padding."""
    cdef int K = L.GH if backward else L.H
    cdef Py_ssize_t per_col = ((K + 1) // 2) * (1 if backward else L.cell.blocks)
    return Wp + per_col * (j0 + 32 * s)


# ---- forward -----------------------------------------------------------------------------------

cdef void _forward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, const floating *Wp) noexcept nogil:
    """Input projection and time loop for slots [n0, n1)."""
    cdef Py_ssize_t T = L.T, n, t, e, ld = L.ldxh
    cdef int H = L.H, phase, last = L.cell.fwd_phases - 1
    cdef const floating *h0 = <const floating *>L.h0
    cdef const floating *M = <const floating *>L.M
    cdef floating *hs = <floating *>L.hs
    cdef floating *G = <floating *>L.G
    cdef floating *Hprev = <floating *>L.Hprev
    cdef floating *HU = <floating *>L.HU
    cdef const Steps *S = &L.steps
    if packed(S):   # (inputs and projection done by whole_task) Hprev at step 0 = (m *) h0
        start_state(S, n0, n1, H, ld, h0, M, Hprev, HU)
    else:
        if L.fused:     # (x_t Wx inside each step's product) Hprev[rows, 0] = h0
            for n in range(n0, n1):
                memcpy(Hprev + n * T * ld, h0 + n * H, H * sizeof(floating))
        else:           # keep the inputs, project them into G, Hprev[:, 0] = h0
            start_rows(n0, n1, T, L.D, H, L.GH, <const floating *>L.X,
                       <const floating *>L.Wx, h0, <floating *>L.XH, G, L.bf16)
        if M != NULL:   # Hprev holds the masked h_{t-1} (m * h0 here; HU unmasked)
            for n in range(n0, n1):
                if HU != NULL:
                    memcpy(HU + n * T * H, h0 + n * H, H * sizeof(floating))
                mask_scale(H, M + n * H, Hprev + n * T * ld)
    for t in range(T):
        e = run_end(S, n1, t)                   # slots [n0, e) run step t
        if e <= n0:
            break
        for phase in range(last + 1):
            fwd_product(L, phase, t, n0, e, n1, Wp)
            for n in range(n0, e):
                fwd_row(L, phase, n, t, n1, G)
                if phase == last and has_next(S, n, t):
                    next_state(L, n, t, hs + urow(S, n, t) * H, 0, H)


cdef void _forward_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t n0, n1
    share_slots(&L.steps, tid, nthreads, &n0, &n1)
    if n0 < n1:
        if L.f64:
            _forward_rows(L, n0, n1, <const double *>L.Wp)
        else:
            _forward_rows(L, n0, n1, <const float *>L.Wp)


cdef inline bint step_by_k(const Loop *L) noexcept nogil:
    """A forward by units that is a single step of one row: _forward_step_k's three phases."""
    return L.T == 1 and L.N == 1 and L.path != PACKED


cdef void _forward_step_k(Loop *L, int s, int nth, int phase, floating *Wp) noexcept nogil:
    """Share s of a single step of one row on several threads (units_few_rows, T = 1: a
    generation step), in three phases: 0, XH = [x | h0] (masked h0 where the product reads it;
    share 0); 1, a partial sum of every pre-activation over its contiguous rows of the stacked
    weights [Wx; Wh] (share 0's into G, the others' into Wp); 2, for its units [j0, j1), the
    partials added in share order and the row pass.  Each share streams one part of the weights
    front to back, where by units each would read a segment of every row: two threads each on a
    contiguous half of a 650 x 5200 [Wx; Wh] from memory read 45-49 GB/s against one thread's 28
    (a C harness, the EPYC VM)."""
    cdef Py_ssize_t ld = L.ldxh, r0, r1, q, j0, j1, u
    cdef int D = L.D, H = L.H, GH = L.GH, K = L.D + L.H, w, k, p
    cdef const floating *M = <const floating *>L.M
    cdef floating *G = <floating *>L.G
    cdef floating *XH = <floating *>L.XH
    cdef floating *P
    cdef floating *Gk
    cdef const floating *Pk
    if phase == 0:
        if s == 0:
            start_rows(0, 1, 1, D, H, GH, <const floating *>L.X, NULL,
                       <const floating *>L.h0, XH, NULL)
            if M != NULL:
                mask_scale(H, M, XH + D)
        return
    if phase == 1:
        fr_share(K, s, nth, &r0, &r1)
        P = G if s == 0 else Wp + (s - 1) * GH
        if r0 >= r1:
            memset(P, 0, GH * sizeof(floating))
        if r0 < D and r0 < r1:                  # its rows of Wx
            gemm_direct(1, GH, <int>(min(r1, D) - r0), XH + r0, ld,
                        <const floating *>L.Wx + r0 * GH, GH, P, GH, False)
        if r1 > D and r0 < r1:                  # and of Wh
            q = max(r0, D)
            gemm_direct(1, GH, <int>(r1 - q), XH + q, ld,
                        <const floating *>L.Wh + (q - D) * GH, GH, P, GH, r0 < D)
        return
    share_cols(H, s, nth, &j0, &j1)
    w = <int>(j1 - j0)
    if w <= 0:
        return
    for k in range(4):
        Gk = G + k * H + j0
        for p in range(1, nth):
            Pk = Wp + (p - 1) * GH + k * H + j0
            for u in range(w):
                Gk[u] += Pk[u]
    check_cols(L, G + j0, 4, w, H)              # (each gate block's units, H apart)
    lstm_fwd_row(L, 0, 0, j0, w, G)


cdef void _forward_units(Loop *L, int s, int nth, int phase, floating *Wp) noexcept nogil:
    """Share s of a forward shared by hidden units (use_units; the LSTM's row pass), run in
    T + 1 phases (fr_parallel_phases): phase 0, the input projection of its batch rows (few: of
    its units of every row) and the packing of its columns of Wh; phase t + 1, step t for its
    units [j0, j1) of every row -- their columns of each gate block of h_{t-1} @ Wh, and their
    row pass.  A phase reads the h_{t-1} of every unit, which the phase before completed.  A
    single step of one row goes to _forward_step_k instead (three phases)."""
    cdef Py_ssize_t T = L.T, N = L.N, t, n, ld = L.ldxh, n0, n1, j0, j1
    cdef int H = L.H, GH = L.GH, w, k, blocks = L.cell.blocks
    cdef const floating *Wh = <const floating *>L.Wh
    cdef const floating *M = <const floating *>L.M
    cdef floating *G = <floating *>L.G
    cdef floating *Hprev = <floating *>L.Hprev
    cdef floating *hs = <floating *>L.hs
    cdef floating *P
    cdef floating *Pk[4]
    cdef bint few = L.path != PACKED            # (units_few_rows: Wh and Wx as they are)
    if step_by_k(L):                            # (a single step: three phases of its own)
        _forward_step_k(L, s, nth, phase, Wp)
        return
    share_cols(H, s, nth, &j0, &j1)             # whole 64-byte units: j0 is a multiple of 16
    w = <int>(j1 - j0)
    # this share's columns of each gate block of Wh, packed from element GH*j0 of Wp on
    # (in bfloat16: units_share_bf16)
    P = units_share_bf16(L, Wp, s, j0, False) if L.wbf16 else Wp + GH * j0
    for k in range(blocks):
        Pk[k] = P + k * step_size(L, H, w)
    if phase == 0:
        if few:     # share 0 copies the inputs and h0; each projects its units of every row
            if s == 0:
                start_rows(0, N, T, L.D, H, GH, <const floating *>L.X, NULL,
                           <const floating *>L.h0, <floating *>L.XH, NULL)
                n0, n1 = 0, N
            else:
                n0 = n1 = 0
            for k in range(blocks):
                if w > 0:
                    project(N * T, w, L.D, <const floating *>L.X, L.D,
                            <const floating *>L.Wx + k * H + j0, GH, G + k * H + j0, False,
                            L.bf16)
        else:
            fr_share(N, s, nth, &n0, &n1)
            start_rows(n0, n1, T, L.D, H, GH, <const floating *>L.X, <const floating *>L.Wx,
                       <const floating *>L.h0, <floating *>L.XH, G, L.bf16)
            for k in range(blocks):
                pack_step(L, H, w, Wh + k * H + j0, GH, False, Pk[k])
        if M != NULL:
            for n in range(n0, n1):
                mask_scale(H, M + n * H, Hprev + n * T * ld)
        return
    t = phase - 1
    if w <= 0:
        return
    for k in range(blocks):
        # G[:, t, kH+j0 : kH+j1] += h_{t-1} @ Wh[:, kH+j0 : kH+j1]
        if few:
            recurrent_product(L.path, <int>N, w, H, Hprev + t * ld, T * ld, NULL,
                              Wh + k * H + j0, GH, False, G + t * GH + k * H + j0,
                              T * GH, True)
        else:
            recurrent_product(product_path(L), <int>N, w, H, Hprev + t * ld, T * ld, Pk[k],
                              Wh + k * H + j0, GH, False, G + t * GH + k * H + j0, T * GH,
                              True)
    for n in range(N):
        lstm_fwd_row(L, n, t, j0, w, G)
        if t + 1 < T:
            next_state(L, n, t, hs + (n * T + t) * H + j0, j0, w)


cdef void _forward_units_task(void *arg, int share, int nshares, int phase) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    if L.f64:
        _forward_units(L, share, nshares, phase, <double *>L.Wp)
    else:
        _forward_units(L, share, nshares, phase, <float *>L.Wp)


cdef int _forward(Loop *L, int threads, floating *Wp, const Py_ssize_t *plan,
                  bint reverse, bint check) noexcept nogil:
    """Each thread takes a share of the batch rows: their input projection, then their time loop
    (with one thread the projection is a single GEMM over all N*T rows, BLAS threading it); or,
    fused_steps, the projection of each step inside its recurrent product; or, use_units, a
    share of the hidden units of every row at each step.  With a plan (lengths or reverse,
    _steps.pxd), the projection comes first, shared by cache rows, then the time loop shared
    by slots (never fused nor by units: not measured with lengths)."""
    cdef Py_ssize_t N = L.N, T = L.T
    cdef int D = L.D, H = L.H, GH = L.GH, split = L.cell.fwd_split * L.H, phases
    cdef const floating *Wh = <const floating *>L.Wh
    cdef floating *Wp_h = Wp
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    # (with bf16 the input projection is a product of its own: the bfloat16 one)
    L.fused = (fused_steps(&L.cell, L.path, N, D, H, threads, sizeof(floating)) and plan == NULL
               and not L.bf16)
    L.prefetch = worth_prefetch(N * T * GH, sizeof(floating)) and plan == NULL
    L.check = check and T == 1
    L.nonfinite = 0
    L.f64 = floating is double
    Wp = Wp_h = step_weights_bf16(L, threads, False, Wp)   # (reads L.path and L.fused)
    L.Wp = Wp
    if plan != NULL:
        W.S = &L.steps; W.D = D; W.H = H; W.GH = GH; W.f64 = L.f64; W.backward = False
        W.bf16 = L.bf16
        W.X = L.X; W.XH = L.XH; W.Wx = L.Wx; W.G = L.G; W.hs = L.hs
        parallel_rows(threads, cache_rows(&L.steps), whole_task, &W, NULL, 0, &L.sq_part)
    elif (use_units(&L.cell, threads, L.path, N, H)
            or units_few_rows(&L.cell, threads, L.path, N, T, H)):
        phases = 3 if step_by_k(L) else <int>T + 1
        parallel_phases(threads, phases, _forward_units_task, L, NULL, 0, &L.sq_part)
        return L.nonfinite          # (the check is for T = 1: by units, a single step only)
    if L.fused:
        pack_stacked(D, H, H, <const floating *>L.Wx, Wh, Wp)  # [Wx; Wh] (D + H, H)
    elif L.path == PACKED and split:            # Wh's first blocks (H, split), then the rest
        Wp_h = pack_step(L, H, split, Wh, GH, False, Wp)
        pack_step(L, H, GH - split, Wh + split, GH, False, Wp_h)
    elif L.path == PACKED:
        pack_step(L, H, GH, Wh, GH, False, Wp)  # Wh (H, GH), for the per-step products
    L.Wp_h = Wp_h
    parallel_rows(threads, N, _forward_task, L, NULL, 0, &L.sq_part)
    return L.nonfinite


# ---- backward ----------------------------------------------------------------------------------

cdef void _carried_start(Loop *L, floating **dh, floating **dc, Py_ssize_t n0, Py_ssize_t n1,
                         Py_ssize_t j0, int w) noexcept nogil:
    """The carried gradients, double-buffered in L.dh_buf (and L.dc_buf, for a cell with c):
    step t reads dh[0], dc[0] (from step t+1) and writes dh[1], dc[1] (to step t-1), then they
    swap.  Points them at the two halves and sets those entering the last step, slots [n0, n1),
    units [j0, j0 + w): dh = 0, dc = dcT (or 0)."""
    cdef const floating *dcT = <const floating *>L.dcT
    cdef Py_ssize_t n, H = L.H, NH = L.N * L.H
    cdef int half, halves = 2 if packed(&L.steps) else 1
    dh[0] = <floating *>L.dh_buf
    dh[1] = dh[0] + NH
    dc[0] = <floating *>L.dc_buf
    dc[1] = dc[0] + NH if dc[0] != NULL else NULL
    # (packed, a slot joins at its own last step, reading whichever half is current then)
    for half in range(halves):
        for n in range(n0, n1):
            memset(dh[half] + n * H + j0, 0, w * sizeof(floating))
            if dc[0] == NULL:
                pass
            elif dcT != NULL:
                memcpy(dc[half] + n * H + j0, dcT + brow(&L.steps, n) * H + j0,
                       w * sizeof(floating))
            else:
                memset(dc[half] + n * H + j0, 0, w * sizeof(floating))


cdef inline void _carried_swap(floating **dh, floating **dc) noexcept nogil:
    """After a step: what it wrote is what the next step (t-1) reads."""
    dh[0], dh[1] = dh[1], dh[0]
    dc[0], dc[1] = dc[1], dc[0]


cdef void _backward_rows(Loop *L, Py_ssize_t n0, Py_ssize_t n1, double *sq,
                         const floating *Wp) noexcept nogil:
    """The backward time loop for slots [n0, n1), then their rows of dX; sq: this thread's
    norm sums or NULL."""
    cdef Py_ssize_t T = L.T, n, t, e, NH = L.N * L.H
    cdef int H = L.H, phase, sq_width = 2 if L.cell.has_cell else 1
    cdef floating *dG = <floating *>L.dG
    cdef floating *dh[2]
    cdef floating *dc[2]
    cdef const floating *M = <const floating *>L.M
    cdef const Steps *S = &L.steps
    cdef double *sq_t
    # with M, a cell with a direct part of dh_{t-1} (direct_dh) sums the products' part here,
    # then dh_{t-1} += m * that; else the products make all of dh_{t-1}, then dh_{t-1} *= m
    cdef bint apart = M != NULL and L.cell.direct_dh
    cdef floating *dhm = <floating *>L.S + NH + n0 * H if apart else NULL
    cdef floating *dh_prod
    _carried_start(L, dh, dc, n0, n1, 0, H)
    for t in range(T - 1, -1, -1):
        e = run_end(S, n1, t)                   # slots [n0, e) run step t (packed: more join
        if e > n0:                              # as t goes down; their dh, dc start as set)
            sq_t = sq + sq_width * t if sq != NULL else NULL
            dh_prod = dhm if apart else dh[1] + n0 * H
            for phase in range(L.cell.bwd_phases):
                for n in range(n0, e):
                    bwd_row(L, phase, n, t, n0, n1, dh, dc, dh_prod, dG, sq_t)
                bwd_product(L, phase, t, n0, e, Wp, dh_prod)
            if M != NULL:   # the products' input was m * h_{t-1}
                for n in range(n0, e):
                    if apart:
                        mask_add(H, M + brow(S, n) * H, dhm + (n - n0) * H, dh[1] + n * H)
                    else:
                        mask_scale(H, M + brow(S, n) * H, dh[1] + n * H)
        _carried_swap(dh, dc)
    # dX[rows] = dG[rows] @ Wx^T, all their timesteps in one GEMM (packed: whole_task)
    if not packed(S):
        dx_rows(n0, n1, T, L.D, L.GH, dG, <const floating *>L.Wx, <const floating *>L.Wxp,
                <floating *>L.dX, L.bf16)


cdef void _backward_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef Py_ssize_t n0, n1
    cdef double *sq = thread_sq(L.sq, L.sq_part, tid, (2 if L.cell.has_cell else 1) * L.T)
    share_slots(&L.steps, tid, nthreads, &n0, &n1)
    if n0 < n1:
        if L.f64:
            _backward_rows(L, n0, n1, sq, <const double *>L.Wp)
        else:
            _backward_rows(L, n0, n1, sq, <const float *>L.Wp)


cdef inline void _carried_at(Loop *L, Py_ssize_t i, floating **dh, floating **dc) noexcept nogil:
    """The carried gradients of the i-th step of a backward time loop (i = 0 at t = T - 1) as
    _carried_start and i calls of _carried_swap leave them."""
    cdef Py_ssize_t NH = L.N * L.H
    cdef int odd = i % 2
    dh[odd] = <floating *>L.dh_buf
    dh[1 - odd] = dh[odd] + NH
    dc[odd] = <floating *>L.dc_buf
    dc[1 - odd] = dc[odd] + NH if dc[odd] != NULL else NULL


cdef void _backward_units(Loop *L, int s, int nth, int phase, double *sq,
                          floating *Wp) noexcept nogil:
    """Share s of a backward time loop shared by hidden units (use_units; the LSTM's row pass),
    run in T + 1 phases (fr_parallel_phases).  Phase 0: its columns of Wh^T packed, its units'
    carried gradients set, then the gate gradients of its units [j0, j1) of every row at step
    T - 1.  Phase k (1 .. T), t = T - k: its columns of dh_{t-1} = dG_t @ Wh^T (every unit of dG_t
    is there: the phase before made it), then the gate gradients of its units at step t - 1
    (reading only its own columns of dh_{t-1}) -- or, after step 0, the dX rows of its share of
    the batch rows."""
    cdef Py_ssize_t T = L.T, N = L.N, t, n, n0, n1, j0, j1
    cdef int H = L.H, GH = L.GH, w
    cdef const floating *Wh = <const floating *>L.Wh
    cdef const floating *M = <const floating *>L.M
    cdef floating *dG = <floating *>L.dG
    cdef floating *dh[2]
    cdef floating *dc[2]
    cdef floating *P
    share_cols(H, s, nth, &j0, &j1)
    w = <int>(j1 - j0)
    # Wh^T[:, j0:j1] (GH, w): rows j0..j1 of Wh, packed from element GH*j0 of Wp on (in
    # bfloat16: units_share_bf16)
    P = units_share_bf16(L, Wp, s, j0, True) if L.wbf16 else Wp + GH * j0
    if phase == 0:
        pack_step(L, GH, w, Wh + j0 * GH, GH, True, P)
        _carried_start(L, dh, dc, 0, N, j0, w)  # this share's units of every row
        t = T
    else:
        t = T - phase
        _carried_at(L, phase - 1, dh, dc)       # step t's
        if w > 0:
            # dh_{t-1}[:, j0:j1] = dG[:, t] @ Wh^T[:, j0:j1]
            recurrent_product(product_path(L), <int>N, w, GH, dG + t * GH, T * GH, P,
                              Wh + j0 * GH, GH, True, dh[1] + j0, H, False)
            if M != NULL:
                for n in range(N):
                    mask_scale(w, M + n * H + j0, dh[1] + n * H + j0)
        if t == 0:  # dG is complete: dX[rows] = dG[rows] @ Wx^T for this share's rows
            fr_share(N, s, nth, &n0, &n1)
            if n0 < n1:
                dx_rows(n0, n1, T, L.D, GH, dG, <const floating *>L.Wx,
                        <const floating *>L.Wxp, <floating *>L.dX, L.bf16)
            return
    t -= 1
    _carried_at(L, T - 1 - t, dh, dc)
    for n in range(N):
        lstm_bwd_row(L, n, t, N, j0, w, dh[0], dc[0], dc[1], dG,
                     sq + 2 * t if sq != NULL else NULL)


cdef void _backward_units_task(void *arg, int share, int nshares, int phase) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    cdef double *sq = thread_sq(L.sq, L.sq_part, share, 2 * L.T)
    if L.f64:
        _backward_units(L, share, nshares, phase, sq, <double *>L.Wp)
    else:
        _backward_units(L, share, nshares, phase, sq, <float *>L.Wp)


cdef void _weights_share(Loop *L, int tid, int nthreads, const floating *XH) noexcept nogil:
    """Thread tid's share of [dWx; dWh] = [X | Hprev]^T @ dG and db = dG summed over rows, by
    GEMMs (or a reduction) over all the cache rows: a share of the columns; the GRU's own
    split (gru_weights: its h~ block's recurrent side is not dG's)."""
    cdef Py_ssize_t c0, c1
    if L.cell.kind >= GRU:
        gru_weights(L, tid, nthreads, XH)
        return
    share_cols(L.GH, tid, nthreads, &c0, &c1)
    if c0 < c1:
        weight_grad_cols(cache_rows(&L.steps), L.D, L.H, L.GH, c0, c1, XH,
                         <const floating *>L.dG, <floating *>L.dWx, <floating *>L.dWh, L.acc,
                         <floating *>L.db, L.bf16)


cdef void _weights_task(void *arg, int tid, int nthreads) noexcept nogil:
    cdef Loop *L = <Loop *>arg
    if L.f64:
        _weights_share(L, tid, nthreads, <const double *>L.XH)
    else:
        _weights_share(L, tid, nthreads, <const float *>L.XH)


cdef int _backward(Loop *L, int threads, floating *Wp, floating *dh0, floating *dc0,
                   floating *dXp, const Py_ssize_t *plan, bint reverse,
                   bint check) noexcept nogil:
    """Two parallel phases: each thread takes a share of the batch rows (their time loop, then
    their rows of dX; or, use_units, a share of the hidden units of every row at each step);
    then, once dG is complete, a share of the weight-gradient columns.  With a plan, the time
    loop shared by slots, then dX shared by cache rows (into dXp, then in place; never from a
    packed Wx^T: not measured), then the weights."""
    cdef Py_ssize_t N = L.N, T = L.T, NH = L.N * L.H, j, n, half
    cdef int D = L.D, H = L.H, GH = L.GH, split = L.cell.bwd_split * L.H
    cdef int sq_len = (2 if L.cell.has_cell else 1) * <int>T
    cdef const floating *Wh = <const floating *>L.Wh
    cdef const floating *dh_buf = <const floating *>L.dh_buf
    cdef const floating *dc_buf = <const floating *>L.dc_buf
    cdef floating *Wp_h = Wp
    cdef floating *Wxp = NULL
    cdef Whole W
    steps_init(&L.steps, N, T, plan, reverse)
    L.path = step_path(N, T)
    L.f64 = floating is double
    cdef bint by_units = use_units(&L.cell, threads, L.path, N, H) and plan == NULL
    # (shared by units, a thread's segments of a row are its units only: no gain measured)
    L.prefetch = worth_prefetch(N * T * GH, sizeof(floating)) and not by_units and plan == NULL
    if plan == NULL and not L.bf16 and packed_dx(&L.cell, N * T, D, H, sizeof(floating)):
        Wxp = Wp + packed_size(GH, H, floating is double)
        pack_b(H, D, <const floating *>L.Wx, 1, H, Wxp)   # Wx^T (H, D), after Wh^T
    L.Wxp = Wxp
    Wp = Wp_h = step_weights_bf16(L, threads, True, Wp)    # (reads L.path)
    L.Wp = Wp
    if by_units:
        parallel_phases(threads, <int>T + 1, _backward_units_task, L, L.sq, sq_len, &L.sq_part)
    if not by_units:
        if L.path == PACKED and split:          # Wh^T's first blocks (split, H), the rest
            Wp_h = pack_step(L, split, H, Wh, GH, True, Wp)
            pack_step(L, GH - split, H, Wh + split, GH, True, Wp_h)
        elif L.path == PACKED:
            pack_step(L, GH, H, Wh, GH, True, Wp)   # Wh^T (GH, H)
        L.Wp_h = Wp_h
        parallel_rows(threads, N, _backward_task, L, L.sq, sq_len, &L.sq_part)
    # after T swaps the carried gradients are in the first half of each buffer if T is even
    half = NH if T % 2 else 0
    if plan != NULL:
        for j in range(N):                      # slot j -> its batch row
            n = brow(&L.steps, j)
            memcpy(dh0 + n * H, dh_buf + half + j * H, H * sizeof(floating))
            if dc0 != NULL:
                memcpy(dc0 + n * H, dc_buf + half + j * H, H * sizeof(floating))
        W.S = &L.steps; W.D = D; W.H = H; W.GH = GH; W.f64 = L.f64; W.backward = True
        W.bf16 = L.bf16
        W.XH = L.XH; W.Wx = L.Wx; W.dG = L.dG; W.dXp = dXp; W.dX = L.dX
        parallel_rows(threads, cache_rows(&L.steps), whole_task, &W, NULL, 0, &L.sq_part)
    else:
        memcpy(dh0, dh_buf + half, NH * sizeof(floating))
        if dc0 != NULL:
            memcpy(dc0, dc_buf + half, NH * sizeof(floating))
    # T = 1 with check: dX and dh0 are the only results that read Wx and Wh; a NaN or Inf in
    # either shows here (see forward), and then the gradients are left as they were
    if check and T == 1 and not (all_finite(<floating *>L.dX, N * D) and all_finite(dh0, NH)):
        return 1
    fr_parallel(threads, _weights_task, L)
    return 0


# ---- the Python entry points -------------------------------------------------------------------

cdef size_t wp_size(const Cell *c, Py_ssize_t D, Py_ssize_t H, bint dbl):
    """Elements of the scratch Wp, for the largest use of the cell: forward's packed Wh (the
    RNN's [Wx; Wh]; with a split, its two parts), backward's Wh^T (the RNN's then Wx^T), or
    (the LSTM's use_units) the threads' shares of the units, each padded to whole panels of 16
    columns -- as the layers allocate it."""
    cdef int h = <int>H, GH = c.blocks * <int>H, f = c.fwd_split * <int>H
    cdef int s = c.bwd_split * <int>H
    cdef size_t fwd, bwd
    fwd = (packed_size(h, f, dbl) + packed_size(h, GH - f, dbl) if f
           else packed_size(h, GH, dbl))
    bwd = (packed_size(s, h, dbl) + packed_size(GH - s, h, dbl) if s
           else packed_size(GH, h, dbl))
    if c.kind <= RNN_RELU:
        fwd = packed_size(<int>(D + H), h, dbl)
        bwd += packed_size(h, <int>D, dbl)
    if c.kind == LSTM:
        fwd = max(fwd, <size_t>(GH * ((H + 15) // 16 * 16)))
    return max(fwd, bwd)


cdef void *_entry(dict d, str key, int tn, Py_ssize_t size, bint out=False) except NULL:
    """The data of d[key] (a cache or scratch array of the layer), checked as buf does."""
    return buf(d[key], tn, size, key, out)


cdef int _caches(Loop *L, dict cache, int tn, bint forward) except -1:
    """Point L at the layer's forward caches (see forward), checked; writable where forward
    fills them (the GRU's S in both directions)."""
    cdef Py_ssize_t N = L.N, T = L.T, H = L.H, NTH = N * T * H
    cdef bint lstm = L.cell.kind == LSTM, gru = L.cell.kind >= GRU
    cdef object M = cache["M"]
    L.XH = _entry(cache, "XH", tn, N * T * (L.D + H), forward)
    L.Hprev = <char *>L.XH + L.D * (8 if tn == cnp.NPY_FLOAT64 else 4)
    L.G = _entry(cache, "G", tn, N * T * L.GH, forward)
    L.c0 = _entry(cache, "c0", tn, N * H) if lstm else NULL
    L.C = _entry(cache, "C", tn, NTH, forward) if lstm else NULL
    L.TC = _entry(cache, "TC", tn, NTH, forward) if lstm else NULL
    L.AUX = _entry(cache, "AUX", tn, NTH, forward) if gru else NULL
    L.S = _entry(cache, "S", tn, 3 * N * H, True) if gru else NULL
    L.M = NULL if M is None else buf(M, tn, N * H, "h_mask")
    L.HU = _entry(cache, "HU", tn, NTH, forward) if gru and M is not None else NULL
    return 0


def few_rows_by_units(int cell, Py_ssize_t N, Py_ssize_t T, int H):
    """Does a forward of N rows over T steps of a cell `cell` with H units take every thread,
    however many there are beyond N, each its hidden units (units_few_rows)?  The layers plan
    its threads by this (fastrnn._threads.plan_threads' by_units)."""
    cdef Cell c
    cell_spec(cell, &c)
    return units_few_rows(&c, <int>max(N + 1, 2), step_path(N, T), N, T, H)


# the `cell` argument of forward and backward, by name (what the Python layers pass)
CELLS = {"rnn_tanh": RNN_TANH, "rnn_relu": RNN_RELU, "lstm": LSTM, "gru": GRU,
         "gru_reset_after": GRU_RA}


def forward(int cell, dict cache, cnp.ndarray X, cnp.ndarray Wx, cnp.ndarray Wh, cnp.ndarray b,
            cnp.ndarray h0, cnp.ndarray hs, cnp.ndarray Wp, int threads=1, bint check=False,
            object plan=None, bint reverse=False, bint bf16=False):
    """Run cell `cell` (0 RNN tanh, 1 RNN relu, 2 LSTM, 3 GRU, 4 GRU reset_after) over all
    timesteps of X (N, T, D); fills hs and the caches (Wp: scratch).  A 2-D X (N, D) is one
    step (a cell's), hs then (N, H).

    cache: the layer's forward caches: XH (N, T, D + H; X and h_{t-1} side by side), G
    (N, T, GH); the LSTM's c0 (N, H), C and TC (N, T, H); the GRU's AUX (N, T, H) and S
    (N, 3H), and with a mask HU (N, T, H); M: recurrent dropout's mask (N, H) or None
    (h_{t-1} Wh becomes (M * h_{t-1}) Wh; XH then holds the masked h_{t-1}).
    threads: how many threads share the work.
    check (T = 1 only): returns 1 if a pre-activation x Wx + h0 Wh (before the bias) holds
    NaN or Inf -- which a NaN or Inf in Wx or Wh always makes, the inputs being finite --
    else 0 (see fastrnn.layers._weights_checked_by_kernel).
    plan (intp, 2N + 2T + 1) or None: lengths and direction as laid out in _steps.pxd (the
    caches then hold sum(lengths) rows, step-major).
    bf16 (float32): the products at bfloat16 precision where the CPU has AVX512-BF16
    (matmul_precision "medium": fr_bf16.h): the input projection, and each step's h_{t-1} Wh
    where the weights are packed (step_weights_bf16)."""
    cdef Loop L
    memset(&L, 0, sizeof(Loop))
    cell_spec(cell, &L.cell)
    L.bf16 = bf16
    cdef Py_ssize_t N = X.shape[0], T = X.shape[1] if X.ndim == 3 else 1
    cdef Py_ssize_t D = Wx.shape[0], H = Wh.shape[0], NTH = N * T * H, GH = L.cell.blocks * H
    cdef int tn = cnp.PyArray_TYPE(Wh)
    L.N = N; L.T = T; L.D = <int>D; L.H = <int>H; L.GH = <int>GH; L.ldxh = <int>(D + H)
    L.X = buf(X, tn, N * T * D, "X")
    _caches(&L, cache, tn, True)
    L.Wx = buf(Wx, tn, D * GH, "Wx")
    L.Wh = buf(Wh, tn, H * GH, "Wh")
    L.b = buf(b, tn, L.cell.bias_rows * GH, "b")
    L.h0 = buf(h0, tn, N * H, "h0")
    L.hs = buf(hs, tn, NTH, "hs", True)
    cdef void *pWp = buf(Wp, tn, wp_size(&L.cell, D, H, tn == cnp.NPY_FLOAT64), "Wp", True,
                         True)  # scratch: at least that size
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _forward(&L, threads, <float *>pWp, pplan, reverse, check)
        else:
            nonfinite = _forward(&L, threads, <double *>pWp, pplan, reverse, check)
    return nonfinite


def backward(int cell, dict cache, dict scratch, cnp.ndarray dhs, object dcT, cnp.ndarray Wx,
             cnp.ndarray Wh, cnp.ndarray dWx, cnp.ndarray dWh, cnp.ndarray db, cnp.ndarray dX,
             cnp.ndarray dh0, object dc0, object sq, cnp.ndarray Wp, int threads=1,
             bint check=False, object plan=None, bint reverse=False, bint bf16=False):
    """Backpropagate cell `cell` through all timesteps of the last forward, whose caches are
    `cache` (as given to forward).

    scratch: the layer's backward buffers: dG (N, T, GH), dh (2, N, H), acc (GH,) float64;
    the LSTM's dc (2, N, H); GRU reset_after's dGh (N, T, H); with a plan, dXp (N*T, D).
    dcT (LSTM: (N, H) or None): gradient w.r.t. the last cell state; sq ((T,) or, LSTM, (T, 2)
    float64 zeros, or None): receives ||dL/dh_t||^2 (and ||dL/dc_t||^2) per step; Wp: scratch.
    Writes dWx, dWh, db, dX, dh0 (and the LSTM's dc0).  A 2-D dhs (N, H) is one step (a
    cell's), dX then (N, D).
    check (T = 1 only): if dX or dh0 holds NaN or Inf, returns 1 before writing dWx, dWh and
    db; else 0.  plan, reverse: as given to the forward.  bf16: dX, the weight gradients and
    each step's dG_t Wh^T at bfloat16 precision (see forward)."""
    cdef Loop L
    memset(&L, 0, sizeof(Loop))
    cell_spec(cell, &L.cell)
    L.bf16 = bf16
    cdef Py_ssize_t N = dhs.shape[0], T = dhs.shape[1] if dhs.ndim == 3 else 1
    cdef Py_ssize_t D = Wx.shape[0], H = Wh.shape[0], NTH = N * T * H, NH = N * H
    cdef Py_ssize_t GH = L.cell.blocks * H
    cdef int tn = cnp.PyArray_TYPE(Wh)
    cdef bint lstm = L.cell.kind == LSTM
    L.N = N; L.T = T; L.D = <int>D; L.H = <int>H; L.GH = <int>GH; L.ldxh = <int>(D + H)
    L.X = NULL                                  # (backward reads X from XH)
    _caches(&L, cache, tn, False)
    L.Wx = buf(Wx, tn, D * GH, "Wx")
    L.Wh = buf(Wh, tn, H * GH, "Wh")
    L.dhs = buf(dhs, tn, NTH, "dhs")
    L.dcT = buf(dcT, tn, NH, "dcT") if lstm and dcT is not None else NULL
    L.dG = _entry(scratch, "dG", tn, N * T * GH, True)
    L.dGh = _entry(scratch, "dGh", tn, NTH, True) if L.cell.kind == GRU_RA else NULL
    L.dh_buf = _entry(scratch, "dh", tn, 2 * NH, True)
    L.dc_buf = _entry(scratch, "dc", tn, 2 * NH, True) if lstm else NULL
    L.acc = <double *>_entry(scratch, "acc", cnp.NPY_FLOAT64, GH, True)
    L.dWx = buf(dWx, tn, D * GH, "dWx", True)
    L.dWh = buf(dWh, tn, H * GH, "dWh", True)
    L.db = buf(db, tn, L.cell.bias_rows * GH, "db", True)
    L.dX = buf(dX, tn, N * T * D, "dX", True)
    cdef void *pdh0 = buf(dh0, tn, NH, "dh0", True)
    cdef void *pdc0 = buf(dc0, tn, NH, "dc0", True) if lstm else NULL
    L.sq = (NULL if sq is None else
            <double *>buf(sq, cnp.NPY_FLOAT64, (2 if lstm else 1) * T, "sq", True))
    cdef void *pWp = buf(Wp, tn, wp_size(&L.cell, D, H, tn == cnp.NPY_FLOAT64), "Wp", True,
                         True)  # scratch: at least that size
    cdef const Py_ssize_t *pplan = plan_buf(plan, N, T)
    cdef void *pdXp = NULL if plan is None else _entry(scratch, "dXp", tn, N * T * D, True)
    cdef int nonfinite
    with nogil:
        if tn == cnp.NPY_FLOAT32:
            nonfinite = _backward(&L, threads, <float *>pWp, <float *>pdh0, <float *>pdc0,
                                  <float *>pdXp, pplan, reverse, check)
        else:
            nonfinite = _backward(&L, threads, <double *>pWp, <double *>pdh0, <double *>pdc0,
                                  <double *>pdXp, pplan, reverse, check)
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
    """Make the RNN's x_t Wx part of each step's products (fused_steps): -1 by the rule, 0
    never, 1 whenever the weights are packed; returns the previous setting.  For tests and A/B
    timing."""
    global fuse_mode
    old = fuse_mode
    fuse_mode = checked_mode("_set_fused", mode)
    return old


def _set_dx_packed(int mode):
    """Make the RNN's backward dX from Wx^T packed (packed_dx): -1 by the rule, 0 never (BLAS
    or the direct kernel), 1 always; returns the previous setting.  For tests and A/B timing."""
    global dx_mode
    old = dx_mode
    dx_mode = checked_mode("_set_dx_packed", mode)
    return old


def _set_unit_split(int mode):
    """How the LSTM's time loop on several threads is shared: -1 by use_units's rule (the
    default), 0 always by batch rows, 1 by hidden units whenever the per-step products are
    packed.  For tests and A/B timings; returns the previous setting."""
    global unit_split_mode
    cdef int old = unit_split_mode
    unit_split_mode = checked_mode("_set_unit_split", mode)
    return old
