# The GRU's step, both variants; gate blocks z, r, h~ (3H columns), h_t = (1 - z) h_{t-1} + z h~.
#   classic (GRU):    h~ = tanh(x Wxh + (r h_{t-1}) Whh + bh)            b (3H,)
#   GRU_RA:           h~ = tanh(x Wxh + b0h + r (h_{t-1} Whh + b1h))     b (2, 3H), cuDNN/PyTorch
# Caches: G (activated z, r, h~, N, T, 3H), AUX (r h_{t-1} or h_{t-1} Whh + b1h, N, T, H), S
# (per-step scratch, N, 3H); with a mask, HU (the unmasked h_{t-1}: the gates' element-wise
# passes read h_{t-1} unmasked, the products m h_{t-1} from Hprev).  The classic form's step has
# a product in its middle (z, r pass; (r h_{t-1}) Whh; h~ pass), forward and backward: two
# phases.  Wh (or Wh^T) is packed as [Whz Whr] and Whh apart where a phase multiplies by one
# of them only.  The time loop is _recurrent.pyx's.
from cython cimport floating
from libc.string cimport memset

from _cells cimport (
    gru_fwd_zr_row_f, gru_fwd_zr_row_d, gru_fwd_h_row_f, gru_fwd_h_row_d,
    gru_bwd_zh_row_f, gru_bwd_zh_row_d, gru_bwd_r_row_f, gru_bwd_r_row_d,
    gru_ra_fwd_row_f, gru_ra_fwd_row_d, gru_ra_bwd_row_f, gru_ra_bwd_row_d,
)
from _loop cimport Cell, GRU_RA, Loop, check_rows, product_path
from _packed cimport recurrent_product
from _parallel cimport share_cols
from _seq cimport grad_cols, prefetch, weight_grad_cols
from _steps cimport cache_rows, crow, step_rows, urow


cdef inline void gru_cell(Cell *c) noexcept nogil:
    c.blocks = 3
    c.direct_dh = True
    if c.kind == GRU_RA:
        c.bias_rows = 2
        c.bwd_split = 2             # (times H) [Whz Whr]^T and Whh^T: the h~ block's gradient
    else:                           # is dGh's on the recurrent side
        c.fwd_phases = 2
        c.bwd_phases = 2
        c.fwd_split = 2
        c.bwd_split = 2


cdef inline const floating *h_prev(Loop *L, Py_ssize_t r,
                                   const floating *Hprev) noexcept nogil:
    """The unmasked h_{t-1} of cache row r: in Hprev, or with L.M in L.HU (Hprev then holds
    the masked one)."""
    if L.M == NULL:
        return Hprev + r * L.ldxh
    return <const floating *>L.HU + r * L.H


cdef inline void gru_fwd_product(Loop *L, int phase, Py_ssize_t t, Py_ssize_t n0,
                                 Py_ssize_t e, const floating *Wp) noexcept nogil:
    cdef Py_ssize_t rs = step_rows(&L.steps), r = crow(&L.steps, n0, t), ld = L.ldxh
    cdef int H = L.H, H3 = 3 * L.H, rows = <int>(e - n0), n
    cdef const floating *Wh = <const floating *>L.Wh
    cdef const floating *Hp = <const floating *>L.Hprev + r * ld
    cdef floating *G = <floating *>L.G
    cdef floating *S = <floating *>L.S
    if L.cell.kind == GRU_RA:
        # S[rows] = h_{t-1} @ Wh
        recurrent_product(product_path(L), rows, H3, H, Hp, rs * ld, Wp, Wh, H3, False,
                          S + n0 * H3, H3, False)
        check_rows(L, G + n0 * H3, rows * H3)   # (x Wx and h_{t-1} Wh, before the biases)
        check_rows(L, S + n0 * H3, rows * H3)
    elif phase == 0:
        # G[rows, t, :2H] += h_{t-1} @ Wh[:, :2H]
        recurrent_product(product_path(L), rows, 2 * H, H, Hp, rs * ld, Wp, Wh, H3, False,
                          G + r * H3, rs * H3, True)
        check_rows(L, G + n0 * H3, rows * H3)   # (the h~ block: x Wx so far)
    else:
        # G[rows, t, 2H:] += (r * h_{t-1}) @ Wh[:, 2H:]
        recurrent_product(product_path(L), rows, H, H, <const floating *>L.AUX + r * H, rs * H,
                          <const floating *>L.Wp_h, Wh + 2 * H, H3, False, G + r * H3 + 2 * H,
                          rs * H3, True)
        if L.check:
            for n in range(rows):
                check_rows(L, G + (n0 + n) * H3 + 2 * H, H)


cdef inline void gru_fwd_row(Loop *L, int phase, Py_ssize_t n, Py_ssize_t t, Py_ssize_t n1,
                             floating *G) noexcept nogil:
    cdef Py_ssize_t H = L.H, H3 = 3 * L.H, r = crow(&L.steps, n, t)
    cdef Py_ssize_t gr = r * H3, hr = r * H, ld_h = L.T * H
    cdef const floating *b = <const floating *>L.b
    cdef floating *AUX = <floating *>L.AUX
    cdef floating *hs = <floating *>L.hs
    cdef floating *h = hs + urow(&L.steps, n, t) * H
    cdef const floating *hp = h_prev(L, r, <const floating *>L.Hprev)   # unmasked h_{t-1}
    cdef bint ahead = L.prefetch and n + 1 < n1     # the next row's segments (fr_prefetch)
    if L.cell.kind == GRU_RA:
        if ahead:
            prefetch(G + gr + L.T * H3, H3, True)
            prefetch(AUX + hr + ld_h, H, True)
            prefetch(hs + hr + ld_h, H, True)
        # z, r = sigmoid(G + S + b0 + b1); n = S_h + b1h; h~ = tanh(G_h + b0h + r*n)
        if floating is float:
            gru_ra_fwd_row_f(L.H, G + gr, <float *>L.S + n * H3, b, b + H3, hp,
                             AUX + hr, h)
        else:
            gru_ra_fwd_row_d(L.H, G + gr, <double *>L.S + n * H3, b, b + H3, hp,
                             AUX + hr, h)
    elif phase == 0:
        if ahead:
            prefetch(G + gr + L.T * H3, 2 * H, True)
            prefetch(AUX + hr + ld_h, H, True)
        # z, r = sigmoid(G + b); AUX = r * h_{t-1} (the product's input: masked in Hprev)
        if floating is float:
            gru_fwd_zr_row_f(L.H, G + gr, b, <float *>L.Hprev + r * L.ldxh, AUX + hr)
        else:
            gru_fwd_zr_row_d(L.H, G + gr, b, <double *>L.Hprev + r * L.ldxh, AUX + hr)
    else:
        if ahead:
            prefetch(hs + hr + ld_h, H, True)
        # h~ = tanh(G_h + bh); h = (1 - z) h_{t-1} + z h~
        if floating is float:
            gru_fwd_h_row_f(L.H, G + gr, b, hp, h)
        else:
            gru_fwd_h_row_d(L.H, G + gr, b, hp, h)


cdef inline void gru_bwd_row(Loop *L, int phase, Py_ssize_t n, Py_ssize_t t, Py_ssize_t n0,
                             Py_ssize_t n1, const floating *dh_in, floating *dh_out,
                             floating *dh_prod, double *sq) noexcept nogil:
    """The row pass of backward phase `phase`: GRU_RA all of dG, dGh and dh_{t-1}'s direct
    part; classic phase 0 dz, dh~ and that part, phase 1 (after d(r h_{t-1}) is in S) dr and
    dh_prod += d(r h_{t-1}) r."""
    cdef Py_ssize_t H = L.H, H3 = 3 * L.H, r = crow(&L.steps, n, t)
    cdef Py_ssize_t gr = r * H3, hr = r * H, ld_h = L.T * H, ld_p = L.T * L.ldxh
    cdef const floating *G = <const floating *>L.G
    cdef const floating *AUX = <const floating *>L.AUX
    cdef const floating *Hprev = <const floating *>L.Hprev
    cdef const floating *dhs = <const floating *>L.dhs
    cdef floating *dG = <floating *>L.dG
    cdef floating *dGh = <floating *>L.dGh
    cdef const floating *dy = dhs + urow(&L.steps, n, t) * H
    cdef const floating *hp = h_prev(L, r, Hprev)                   # unmasked h_{t-1}
    cdef bint ahead = L.prefetch and n + 1 < n1     # the next row's segments (fr_prefetch)
    if phase == 1:
        # dr pre-activation (the h of r * h: masked in Hprev); dh_{t-1} += d(r h) * r
        if floating is float:
            gru_bwd_r_row_f(L.H, G + gr, Hprev + r * L.ldxh, <float *>L.S + n * H, dG + gr,
                            dh_prod + (n - n0) * H)
        else:
            gru_bwd_r_row_d(L.H, G + gr, Hprev + r * L.ldxh, <double *>L.S + n * H, dG + gr,
                            dh_prod + (n - n0) * H)
        return
    if ahead:
        prefetch(G + gr + L.T * H3, H3)
        if L.cell.kind == GRU_RA:
            prefetch(AUX + hr + ld_h, H)
        prefetch(Hprev + r * L.ldxh + ld_p, H)
        prefetch(dhs + hr + ld_h, H)
        prefetch(dG + gr + L.T * H3, H3, True)
        if L.cell.kind == GRU_RA:
            prefetch(dGh + hr + ld_h, H, True)
    if L.cell.kind == GRU_RA:
        # dG: z, r, h~ (input side); dGh: h~ of the recurrent side, r times dG's (its z and r
        # are dG's); dh_{t-1} = dh_t (1 - z)
        if floating is float:
            gru_ra_bwd_row_f(L.H, G + gr, AUX + hr, hp, dy, dh_in + n * H, dG + gr,
                             dGh + hr, dh_out + n * H, sq)
        else:
            gru_ra_bwd_row_d(L.H, G + gr, AUX + hr, hp, dy, dh_in + n * H, dG + gr,
                             dGh + hr, dh_out + n * H, sq)
    else:
        # dz, dh~ pre-activations; dh_{t-1} = dh_t (1 - z)
        if floating is float:
            gru_bwd_zh_row_f(L.H, G + gr, hp, dy, dh_in + n * H, dG + gr,
                             dh_out + n * H, sq)
        else:
            gru_bwd_zh_row_d(L.H, G + gr, hp, dy, dh_in + n * H, dG + gr,
                             dh_out + n * H, sq)


cdef inline void gru_bwd_product(Loop *L, int phase, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t e,
                                 const floating *Wp, floating *dh_prod) noexcept nogil:
    """The products of backward phase `phase` (dh_prod: where the products' part of dh_{t-1}
    goes: after the direct part in dh_{t-1}, or apart to be masked)."""
    cdef Py_ssize_t rs = step_rows(&L.steps), r = crow(&L.steps, n0, t)
    cdef int H = L.H, H3 = 3 * L.H, rows = <int>(e - n0)
    cdef const floating *Wh = <const floating *>L.Wh
    cdef const floating *Wp_h = <const floating *>L.Wp_h
    cdef const floating *dG = <const floating *>L.dG + r * H3
    if L.cell.kind == GRU_RA:
        # dh_{t-1} += dG[rows, t, :2H] @ Wh[:, :2H]^T + dGh[rows, t] @ Wh[:, 2H:]^T
        recurrent_product(product_path(L), rows, H, 2 * H, dG, rs * H3, Wp, Wh, H3, True, dh_prod,
                          H, L.M == NULL)
        recurrent_product(product_path(L), rows, H, H, <const floating *>L.dGh + r * H, rs * H,
                          Wp_h, Wh + 2 * H, H3, True, dh_prod, H, True)
    elif phase == 0:
        # d(r * h_{t-1}) = dG[rows, t, 2H:] @ Wh[:, 2H:]^T, into S
        recurrent_product(product_path(L), rows, H, H, dG + 2 * H, rs * H3, Wp_h, Wh + 2 * H, H3,
                          True, <floating *>L.S + n0 * H, H, False)
        if L.M != NULL:                         # (phase 1 adds into dh_prod)
            memset(dh_prod, 0, rows * H * sizeof(floating))
    else:
        # dh_{t-1} += dG[rows, t, :2H] @ Wh[:, :2H]^T
        recurrent_product(product_path(L), rows, H, 2 * H, dG, rs * H3, Wp, Wh, H3, True, dh_prod,
                          H, True)


cdef inline void gru_weight_cols(Loop *L, int c0, int c1, const floating *XH, bint hx, bint hh,
                                 double *acc_h) noexcept nogil:
    """Columns [c0, c1) of the weight gradients, by GEMMs (or reductions) over all N*T rows:
    z and r columns [dWx; dWh] = [X | Hprev]^T @ dG (the recurrent side's gradient is dG's
    there, in GRU_RA too); h~ columns dWx = X^T @ dG (if hx) and, if hh, GRU_RA:
    dWh = Hprev^T @ dGh, classic: dWh = (r*h_prev)^T @ dG.  db = sum dG; GRU_RA:
    db[0] = sum dG, db[1] = db[0] in the z and r columns, sum dGh in the h~ columns (acc_h:
    room for those sums from column max(c0, 2H) on)."""
    cdef int D = L.D, H = L.H, H3 = 3 * L.H, k0 = max(c0, 2 * H), z1 = min(c1, 2 * H), k
    cdef Py_ssize_t NT = cache_rows(&L.steps)
    cdef const floating *dG = <const floating *>L.dG
    cdef floating *dWx = <floating *>L.dWx
    cdef floating *dWh = <floating *>L.dWh
    cdef floating *db = <floating *>L.db
    cdef bint ra = L.cell.kind == GRU_RA
    if c0 < z1:
        weight_grad_cols(NT, D, H, H3, c0, z1, XH, dG, dWx, dWh, L.acc, db, L.bf16)
        if ra:
            for k in range(c0, z1):
                db[H3 + k] = db[k]
    if k0 >= c1:
        return
    if hx:
        grad_cols(NT, D, H3, k0, c1, XH, D + H, dG + k0, H3, dWx, L.acc + k0, db + k0, L.bf16)
    if hh and ra:
        grad_cols(NT, H, H3, k0, c1, XH + D, D + H, <const floating *>L.dGh + (k0 - 2 * H), H,
                  dWh, acc_h, db + H3 + k0, L.bf16)
    elif hh:
        grad_cols(NT, H, H3, k0, c1, <const floating *>L.AUX, H, dG + k0, H3, dWh, NULL, NULL,
                  L.bf16)


cdef inline void gru_weights(Loop *L, int tid, int nthreads, const floating *XH) noexcept nogil:
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
            gru_weight_cols(L, 0, half, XH, False, False, NULL)
            gru_weight_cols(L, 2 * H, 3 * H, XH, False, True, L.acc)   # (done with acc[:half])
        else:
            gru_weight_cols(L, half, 3 * H, XH, True, False, NULL)
        return
    share_cols(3 * H, tid, nthreads, &c0, &c1)
    if c0 < c1:
        gru_weight_cols(L, <int>c0, <int>c1, XH, True, True, L.acc + max(c0, 2 * H))
