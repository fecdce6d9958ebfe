# The vanilla RNN's step: h_t = tanh(x_t Wx + h_{t-1} Wh + b) (or max(0, .) with relu).
# One gate block; caches G = h_t (N, T, H).  The time loop is _recurrent.pyx's.
from cython cimport floating
from libc.string cimport memcpy

from _cells cimport rnn_fwd_row_f, rnn_fwd_row_d, rnn_bwd_row_f, rnn_bwd_row_d
from _cells cimport rnn_relu_fwd_row_f, rnn_relu_fwd_row_d, rnn_relu_bwd_row_f, rnn_relu_bwd_row_d
from _loop cimport Cell, Loop, RNN_RELU, check_rows, step_product
from _packed cimport gemm_packed
from _seq cimport prefetch
from _steps cimport crow, urow


cdef inline void rnn_cell(Cell *c) noexcept nogil:
    c.blocks = 1


cdef inline void rnn_fwd_product(Loop *L, Py_ssize_t t, Py_ssize_t n0, Py_ssize_t e,
                                 Py_ssize_t n1, const floating *Wp) noexcept nogil:
    """G[rows, t] += h_{t-1} @ Wh; or, fused (L.fused, the RNN's own path: fused_steps in
    _recurrent.pyx), XH[rows, t, :D] = x_t and G[rows, t] = [x_t | h_{t-1}] @ [Wx; Wh]."""
    cdef Py_ssize_t n, T = L.T, ld = L.ldxh
    cdef int D = L.D, H = L.H
    cdef const floating *X = <const floating *>L.X
    cdef floating *XH = <floating *>L.XH
    cdef floating *G = <floating *>L.G
    if not L.fused:
        step_product(L, t, n0, e, Wp)
        return
    for n in range(n0, n1):                     # (fused: batch-major, all rows run)
        if L.prefetch and n + 1 < n1:           # the next row's (fr_prefetch)
            prefetch(X + ((n + 1) * T + t) * D, D)
            prefetch(XH + ((n + 1) * T + t) * ld, D, True)
        memcpy(XH + (n * T + t) * ld, X + (n * T + t) * D, D * sizeof(floating))
    gemm_packed(<int>(n1 - n0), H, D + H, XH + (n0 * T + t) * ld, T * ld, Wp,
                G + n0 * T * H + t * H, T * H, False)
    check_rows(L, G + n0 * H, (n1 - n0) * H)


cdef inline void rnn_fwd_row(Loop *L, Py_ssize_t n, Py_ssize_t t, Py_ssize_t n1,
                             floating *G) noexcept nogil:
    """h_t = tanh(G + b) (or relu) for slot n."""
    cdef Py_ssize_t T = L.T, H = L.H, r = crow(&L.steps, n, t) * H
    cdef floating *hs = <floating *>L.hs + urow(&L.steps, n, t) * H
    cdef const floating *b = <const floating *>L.b
    if L.prefetch and n + 1 < n1:               # the next row's segments (fr_prefetch)
        prefetch(<floating *>L.hs + r + T * H, H, True)
        if t + 1 < T:
            prefetch(<floating *>L.Hprev + ((n + 1) * T + t + 1) * L.ldxh, H, True)
    if L.cell.kind == RNN_RELU:
        if floating is float:
            rnn_relu_fwd_row_f(L.H, G + r, b, hs)
        else:
            rnn_relu_fwd_row_d(L.H, G + r, b, hs)
    elif floating is float:
        rnn_fwd_row_f(L.H, G + r, b, hs)
    else:
        rnn_fwd_row_d(L.H, G + r, b, hs)


cdef inline void rnn_bwd_row(Loop *L, Py_ssize_t n, Py_ssize_t t, Py_ssize_t n1,
                             const floating *dh_in, floating *dG, double *sq) noexcept nogil:
    """dG[n, t] = (dhs[n, t] + dh_t) * (1 - h_t^2) (relu: times h_t > 0)."""
    cdef Py_ssize_t T = L.T, H = L.H, r = crow(&L.steps, n, t) * H
    cdef const floating *G = <const floating *>L.G
    cdef const floating *dy = <const floating *>L.dhs + urow(&L.steps, n, t) * H
    if L.prefetch and n + 1 < n1:               # the next row's segments (fr_prefetch)
        prefetch(G + r + T * H, H)
        prefetch(<const floating *>L.dhs + r + T * H, H)
        prefetch(dG + r + T * H, H, True)
    if L.cell.kind == RNN_RELU:
        if floating is float:
            rnn_relu_bwd_row_f(L.H, G + r, dy, dh_in + n * H, dG + r, sq)
        else:
            rnn_relu_bwd_row_d(L.H, G + r, dy, dh_in + n * H, dG + r, sq)
    elif floating is float:
        rnn_bwd_row_f(L.H, G + r, dy, dh_in + n * H, dG + r, sq)
    else:
        rnn_bwd_row_d(L.H, G + r, dy, dh_in + n * H, dG + r, sq)
