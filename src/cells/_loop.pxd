# What the time-loop driver (_recurrent.pyx) and the cells' step equations (_rnn_cell.pxd,
# _lstm_cell.pxd, _gru_cell.pxd) share: the cell's shape (Cell), everything a thread needs for
# its share of a call (Loop), and the per-step pieces every cell uses the same way.
#
# Layout (all cells): batch-major like the caller's arrays, xs (N, T, D), gates G (N, T, GH)
# with GH = blocks * H; step t of a batch-major (N, T, X) buffer is N rows with stride T*X,
# which BLAS and the packed kernel address through their leading dimension, so no buffer is
# ever transposed or copied per step.  With lengths or in reverse the caches are packed
# step-major instead (_steps.pxd); crow/urow/brow say where a slot's step lives either way.
# XH (N, T, D + H) keeps [x_t | h_{t-1}] side by side (_seq.pxd); Hprev = XH + D.
from cython cimport floating
from libc.string cimport memcpy

from _cells cimport flag_nonfinite, mask_copy
from _packed cimport PACKED_BF16, recurrent_product
from _steps cimport Steps, brow, crow, step_rows


cdef enum:
    # the cells (the `cell` argument of forward and backward)
    RNN_TANH = 0
    RNN_RELU = 1
    LSTM = 2
    GRU = 3             # reset_after=False: h~ = tanh(x Wxh + (r h_{t-1}) Whh + bh)
    GRU_RA = 4          # reset_after=True: h~ = tanh(x Wxh + b0h + r (h_{t-1} Whh + b1h))


cdef struct Cell:
    # the shape of a cell's step, all the driver needs to know of it
    int kind            # one of the enum above
    int blocks          # gate blocks: G, Wx, Wh, b are blocks*H wide
    int bias_rows       # b is (bias_rows, GH): 2 for GRU_RA (input and recurrent biases)
    int fwd_phases      # forward: (product, row pass) pairs per step; 2 when a product
    int bwd_phases      # needs a row pass first (classic GRU); likewise backward
    int fwd_split       # 0, or the gate block of Wh where a second packed copy starts
    int bwd_split       # (forward: Wh, backward: Wh^T; Wp, then Wp_h from there on)
    bint has_cell       # carries c besides h (LSTM): caches C, TC; dcT, dc0; norms (T, 2)
    # the backward row pass writes a part of dh_{t-1} that bypasses the products (GRU:
    # dh (1 - z)); else the products make all of it
    bint direct_dh


cdef struct Loop:
    # what each thread needs for its share of a call (pointers to the element type of the call)
    Cell cell
    Py_ssize_t N, T
    int D, H, GH
    int ldxh            # D + H: the row stride of X and Hprev, side by side in XH
    const void *X       # forward: the caller's inputs (N, T, D), copied into XH
    void *XH            # [X | Hprev] (N, T, D + H)
    void *Hprev         # = XH + D: the product's input h_{t-1} (masked, with M)
    const void *Wx
    const void *Wh      # unpacked, for the calls not worth packing (step_path)
    const void *Wp      # Wh packed (Wh^T in backward); with a split, its first block
    const void *Wp_h    # with a split: the second block
    const void *Wxp     # backward: Wx^T packed for dX (packed_dx), or NULL
    int path            # how the per-step products are made (step_path)
    bint fused          # forward: x_t Wx inside each step's product (the RNN's fused_steps)
    bint bf16           # the whole-sequence products at bfloat16 precision (_seq.pxd)
    bint wbf16          # and the per-step ones: Wp (Wp_h) then hold bfloat16 panels
    const void *b
    const void *h0
    const void *c0      # LSTM
    void *hs
    void *G             # activated gates (N, T, GH), pre-activations until the row pass
    void *C             # LSTM: c_t (N, T, H)
    void *TC            # LSTM: tanh(c_t)
    void *AUX           # GRU: r h_{t-1} (classic) or h_{t-1} Whh + b1h (reset_after)
    void *S             # GRU: per-step scratch (N, 3H)
    void *HU            # GRU with M: the unmasked h_{t-1} (N, T, H); else NULL
    const void *M       # recurrent dropout's mask (N, H) on h_{t-1} in h_{t-1} Wh, or NULL
    const void *dhs
    const void *dcT     # LSTM: the gradient of the last c, or NULL
    void *dG
    void *dGh           # GRU_RA: gradient of the h~ block of h_{t-1} Whh (N, T, H)
    void *dh_buf        # the carried gradients, double-buffered (2, N, H)
    void *dc_buf        # LSTM: likewise for c
    void *dX
    void *dWx
    void *dWh
    void *db
    double *acc         # room for GH column sums (db)
    double *sq          # per-step squared norms or NULL (see parallel_rows)
    double *sq_part
    bint check          # T = 1: flag non-finite pre-activations (see forward)
    int nonfinite
    bint f64
    bint prefetch       # the row passes prefetch the next row (worth_prefetch)
    Steps steps         # where each row's steps are (_steps.pxd); rows below are its slots


cdef inline int product_path(const Loop *L) noexcept nogil:
    """The path of the per-step products' recurrent_product calls: L.path, or from the
    bfloat16-packed weights (wbf16)."""
    return PACKED_BF16 if L.wbf16 else L.path


cdef inline void check_rows(Loop *L, const floating *a, Py_ssize_t n) noexcept nogil:
    """T = 1 (L.check): flag a[0:n] if it holds a NaN or Inf.  A cell calls it on each
    product's result before its row pass reads it (before the bias), so that a NaN or Inf in
    Wx or Wh always shows (fastrnn.layers.recurrent._weights_checked_by_kernel)."""
    if L.check:
        flag_nonfinite(&L.nonfinite, a, n)


cdef inline void check_cols(Loop *L, const floating *a, Py_ssize_t rows, int w,
                            Py_ssize_t ld) noexcept nogil:
    """check_rows of w columns in each of `rows` rows ld apart (a thread's units)."""
    cdef Py_ssize_t n
    if L.check:
        for n in range(rows):
            flag_nonfinite(&L.nonfinite, a + n * ld, w)


cdef inline void step_product(Loop *L, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t e,
                              const floating *Wp) noexcept nogil:
    """G[slots [n0, e), t] += h_{t-1} @ Wh, all GH columns: the forward product of a cell
    whose gate blocks all read h_{t-1} (a step's rows: batch-major T rows apart, packed 1)."""
    cdef Py_ssize_t ld = L.ldxh, rs = step_rows(&L.steps), r = crow(&L.steps, n0, t)
    cdef int GH = L.GH
    cdef floating *G = <floating *>L.G
    recurrent_product(product_path(L), <int>(e - n0), GH, L.H, <floating *>L.Hprev + r * ld,
                      rs * ld, Wp, <const floating *>L.Wh, GH, False, G + r * GH, rs * GH, True)
    check_rows(L, G + n0 * GH, (e - n0) * GH)


cdef inline void step_product_back(Loop *L, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t e,
                                   const floating *Wp, floating *dh) noexcept nogil:
    """dh[0:e-n0] = dG[slots [n0, e), t] @ Wh^T: backward's product of such a cell."""
    cdef Py_ssize_t rs = step_rows(&L.steps)
    cdef int GH = L.GH
    recurrent_product(product_path(L), <int>(e - n0), L.H, GH,
                      <const floating *>L.dG + crow(&L.steps, n0, t) * GH, rs * GH, Wp,
                      <const floating *>L.Wh, GH, True, dh, L.H, False)


cdef inline void next_state(Loop *L, Py_ssize_t n, Py_ssize_t t, const floating *h,
                            Py_ssize_t j0, int w) noexcept nogil:
    """Slot n's h_t (units [j0, j0 + w)) into the next step's Hprev: masked with L.M, and
    then also unmasked into L.HU if the cell keeps it."""
    cdef const Steps *S = &L.steps
    cdef Py_ssize_t r = crow(S, n, t + 1)
    cdef floating *hn = <floating *>L.Hprev + r * L.ldxh + j0
    if L.M == NULL:
        memcpy(hn, h, w * sizeof(floating))
    else:
        mask_copy(w, <const floating *>L.M + brow(S, n) * L.H + j0, h, hn)
        if L.HU != NULL:
            memcpy(<floating *>L.HU + r * L.H + j0, h, w * sizeof(floating))
