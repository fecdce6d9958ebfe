# The LSTM's step, gate blocks f, g, i, o:
#   f, g, i, o = act(x_t Wx + h_{t-1} Wh + b);  c_t = f c_{t-1} + g i;  h_t = o tanh(c_t)
# Caches G (activated gates, N, T, 4H), C = c_t and TC = tanh(c_t) (N, T, H).  The row passes
# take a range of units [j0, j0 + w) (the gate blocks H apart), for the time loop shared by
# hidden units (use_units in _recurrent.pyx).  The time loop is _recurrent.pyx's.
from cython cimport floating

from _cells cimport lstm_fwd_row_f, lstm_fwd_row_d, lstm_bwd_row_f, lstm_bwd_row_d
from _loop cimport Cell, Loop
from _seq cimport prefetch
from _steps cimport brow, crow, urow


cdef inline void lstm_cell(Cell *c) noexcept nogil:
    c.blocks = 4
    c.has_cell = True


cdef inline const floating *c_prev(Loop *L, Py_ssize_t n, Py_ssize_t t,
                                   const floating *C) noexcept nogil:
    """Slot n's c_{t-1}: c0 of its batch row at its first step."""
    if t == 0:
        return <const floating *>L.c0 + brow(&L.steps, n) * L.H
    return C + crow(&L.steps, n, t - 1) * L.H


cdef inline void lstm_fwd_row(Loop *L, Py_ssize_t n, Py_ssize_t t, Py_ssize_t j0, int w,
                              floating *G) noexcept nogil:
    """Slot n, units [j0, j0 + w): f, g, i, o = act(G + b); c = f c_prev + g i;
    h = o tanh(c)."""
    cdef Py_ssize_t H = L.H, r = crow(&L.steps, n, t)
    cdef Py_ssize_t hr = r * H + j0
    cdef floating *C = <floating *>L.C
    cdef floating *h = <floating *>L.hs + urow(&L.steps, n, t) * H + j0
    if floating is float:
        lstm_fwd_row_f(w, L.H, G + r * 4 * H + j0, <const float *>L.b + j0,
                       c_prev(L, n, t, C) + j0, C + hr, <float *>L.TC + hr, h)
    else:
        lstm_fwd_row_d(w, L.H, G + r * 4 * H + j0, <const double *>L.b + j0,
                       c_prev(L, n, t, C) + j0, C + hr, <double *>L.TC + hr, h)


cdef inline void lstm_bwd_row(Loop *L, Py_ssize_t n, Py_ssize_t t, Py_ssize_t n1,
                              Py_ssize_t j0, int w, const floating *dh_in,
                              const floating *dc_in, floating *dc_out, floating *dG,
                              double *sq) noexcept nogil:
    """Slot n, units [j0, j0 + w): the gate gradients dG[n, t] and dc_{t-1} = dc_t f."""
    cdef Py_ssize_t H = L.H, ld_h = L.T * L.H, ld_g = 4 * ld_h, r = crow(&L.steps, n, t)
    cdef Py_ssize_t gr = r * 4 * H + j0, hr = r * H + j0, o = n * H + j0
    cdef const floating *G = <const floating *>L.G
    cdef const floating *C = <const floating *>L.C
    cdef const floating *TC = <const floating *>L.TC
    cdef const floating *dhs = <const floating *>L.dhs
    cdef int k
    if L.prefetch and n + 1 < n1:               # the next row's segments (fr_prefetch)
        for k in range(4):
            prefetch(G + gr + ld_g + k * H, w)
        prefetch(TC + hr + ld_h, w)
        prefetch(dhs + hr + ld_h, w)
        if t > 0:
            prefetch(C + hr + ld_h - H, w)
        for k in range(4):
            prefetch(dG + gr + ld_g + k * H, w, True)
    if floating is float:
        lstm_bwd_row_f(w, L.H, G + gr, c_prev(L, n, t, C) + j0, TC + hr,
                       dhs + urow(&L.steps, n, t) * H + j0, dh_in + o, dc_in + o, dG + gr,
                       dc_out + o, sq)
    else:
        lstm_bwd_row_d(w, L.H, G + gr, c_prev(L, n, t, C) + j0, TC + hr,
                       dhs + urow(&L.steps, n, t) * H + j0, dh_in + o, dc_in + o, dG + gr,
                       dc_out + o, sq)
