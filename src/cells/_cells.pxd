# Typed access to the C row kernels of fr_cells.h, plus the buffer checks every kernel entry uses.
# The fused inline wrappers pick the float32 (_f) or float64 (_d) instantiation at compile time.
cimport numpy as cnp
from cython cimport floating

cdef extern from "fr_cells.h" nogil:
    void rnn_fwd_row_f(int H, float *a, const float *b, float *h)
    void rnn_fwd_row_d(int H, double *a, const double *b, double *h)
    void rnn_bwd_row_f(int H, const float *a, const float *dy, const float *dh_in, float *da,
                       double *sq)
    void rnn_bwd_row_d(int H, const double *a, const double *dy, const double *dh_in, double *da,
                       double *sq)
    void rnn_relu_fwd_row_f(int H, float *a, const float *b, float *h)
    void rnn_relu_fwd_row_d(int H, double *a, const double *b, double *h)
    void rnn_relu_bwd_row_f(int H, const float *a, const float *dy, const float *dh_in, float *da,
                            double *sq)
    void rnn_relu_bwd_row_d(int H, const double *a, const double *dy, const double *dh_in,
                            double *da, double *sq)
    void mask_copy_row_f(int H, const float *m, const float *x, float *y)
    void mask_copy_row_d(int H, const double *m, const double *x, double *y)
    void mask_scale_row_f(int H, const float *m, float *x)
    void mask_scale_row_d(int H, const double *m, double *x)
    void mask_add_row_f(int H, const float *m, const float *x, float *y)
    void mask_add_row_d(int H, const double *m, const double *x, double *y)
    void lstm_fwd_row_f(int H, int bs, float *a, const float *b, const float *c_prev, float *c,
                        float *tc, float *h)
    void lstm_fwd_row_d(int H, int bs, double *a, const double *b, const double *c_prev, double *c,
                        double *tc, double *h)
    void lstm_bwd_row_f(int H, int bs, const float *a, const float *c_prev, const float *tc,
                        const float *dy, const float *dh_in, const float *dc_in, float *da,
                        float *dc_out, double *sq)
    void lstm_bwd_row_d(int H, int bs, const double *a, const double *c_prev, const double *tc,
                        const double *dy, const double *dh_in, const double *dc_in, double *da,
                        double *dc_out, double *sq)
    void gru_fwd_zr_row_f(int H, float *a, const float *b, const float *h_prev, float *rh)
    void gru_fwd_zr_row_d(int H, double *a, const double *b, const double *h_prev, double *rh)
    void gru_fwd_h_row_f(int H, float *a, const float *b, const float *h_prev, float *h)
    void gru_fwd_h_row_d(int H, double *a, const double *b, const double *h_prev, double *h)
    void gru_bwd_zh_row_f(int H, const float *a, const float *h_prev, const float *dy,
                          const float *dh_in, float *da, float *dh_out, double *sq)
    void gru_bwd_zh_row_d(int H, const double *a, const double *h_prev, const double *dy,
                          const double *dh_in, double *da, double *dh_out, double *sq)
    void gru_bwd_r_row_f(int H, const float *a, const float *h_prev, const float *drh, float *da,
                         float *dh_out)
    void gru_bwd_r_row_d(int H, const double *a, const double *h_prev, const double *drh,
                         double *da, double *dh_out)
    void gru_ra_fwd_row_f(int H, float *a, const float *s, const float *b0, const float *b1,
                          const float *h_prev, float *hn, float *h)
    void gru_ra_fwd_row_d(int H, double *a, const double *s, const double *b0, const double *b1,
                          const double *h_prev, double *hn, double *h)
    void gru_ra_bwd_row_f(int H, const float *a, const float *hn, const float *h_prev,
                          const float *dy,
                          const float *dh_in, float *dax, float *dahh, float *dh_out, double *sq)
    void gru_ra_bwd_row_d(int H, const double *a, const double *hn, const double *h_prev,
                          const double *dy,
                          const double *dh_in, double *dax, double *dahh, double *dh_out,
                          double *sq)
    void colsum_f(Py_ssize_t rows, int cols, Py_ssize_t ldx, const float *x, double *acc,
                  float *out)
    void colsum_d(Py_ssize_t rows, int cols, Py_ssize_t ldx, const double *x, double *acc,
                  double *out)


cdef inline void colsum(Py_ssize_t rows, int cols, Py_ssize_t ldx, const floating *x, double *acc,
                        floating *out) noexcept nogil:
    """out[j] = sum over rows of x[:, j] (rows ldx apart; accumulated in double)."""
    if floating is float:
        colsum_f(rows, cols, ldx, x, acc, out)
    else:
        colsum_d(rows, cols, ldx, x, acc, out)


cdef inline void mask_copy(int H, const floating *m, const floating *x,
                           floating *y) noexcept nogil:
    """y = m * x (one row; recurrent dropout's mask m on the product's input h_{t-1})."""
    if floating is float:
        mask_copy_row_f(H, m, x, y)
    else:
        mask_copy_row_d(H, m, x, y)


cdef inline void mask_scale(int H, const floating *m, floating *x) noexcept nogil:
    """x *= m (one row)."""
    if floating is float:
        mask_scale_row_f(H, m, x)
    else:
        mask_scale_row_d(H, m, x)


cdef inline void mask_add(int H, const floating *m, const floating *x,
                          floating *y) noexcept nogil:
    """y += m * x (one row)."""
    if floating is float:
        mask_add_row_f(H, m, x, y)
    else:
        mask_add_row_d(H, m, x, y)


cdef inline void *buf(cnp.ndarray a, int typenum, Py_ssize_t size, str name,
                      bint out=False, bint at_least=False) except NULL:
    """Raw data pointer of a kernel argument (writeable if out), after checking what the kernel
    relies on: dtype, C-contiguity and `size` elements (or more, for scratch buffers sized for
    the largest use: at_least).

    The Python layer already validated everything; this guard keeps a wrong call into the private
    kernel modules an exception instead of a crash."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    if (cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or (n < size if at_least else n != size)
            or (out and not cnp.PyArray_ISWRITEABLE(a))):
        raise ValueError(f"kernel argument {name}: expected a C-contiguous array of "
                         f"{'at least ' if at_least else ''}{size} elements of type {typenum}, "
                         f"got {(<object>a).dtype} {(<object>a).shape}")
    return cnp.PyArray_DATA(a)


cdef extern from "fr_reduce.h" nogil:
    int fr_all_finite_f(const float *x, Py_ssize_t n)
    int fr_all_finite_d(const double *x, Py_ssize_t n)
    void fr_raise_flag(int *flag)


cdef inline bint all_finite(const floating *x, Py_ssize_t n) noexcept nogil:
    """No NaN or Inf among x[0:n]."""
    if floating is float:
        return fr_all_finite_f(x, n)
    else:
        return fr_all_finite_d(x, n)


cdef inline void flag_nonfinite(int *flag, const floating *x, Py_ssize_t n) noexcept nogil:
    """*flag = 1 if x[0:n] holds a NaN or Inf (safe from several threads at once)."""
    if not all_finite(x, n):
        fr_raise_flag(flag)
