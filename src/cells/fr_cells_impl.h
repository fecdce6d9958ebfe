/* Row kernels: the fused element-wise passes of one timestep for one batch row.
 *
 * This file is a template, included twice by fr_cells.h with
 *   FR_T     the element type (float or double)
 *   FR_FN(x) the function name for that type (x##_f or x##_d)
 *   FR_SIG, FR_TANH  the activation functions for that type.
 * Every pointer is restrict: rows never alias (the Cython kernels own the buffers), which is what
 * lets the compiler vectorise each loop without run-time alias checks.
 * Gate blocks are addressed through one pointer per block (a + k*H): index arithmetic like
 * a[2*H + j] does not vectorise under the -fwrapv that Python's build flags add.
 * Naming: a = gate pre-activations on input, activations on output; b = bias; dy = dL/dh_t from the
 * layer above (the dhs row); dh_in / dc_in = gradient carried back from step t+1.
 */

/* ---- gradient-flow diagnostics (only when backward records norms) ----
 * Sums of squares in double over FR_LANES independent lanes, so they vectorise without
 * -ffast-math; pointers are advanced instead of indexed for the same -fwrapv reason as above. */

/* sum over j of (x[j] + y[j])^2: ||dL/dh_t||^2 for one row, dh = dy + dh_in */
static inline double FR_FN(sumsq_of_sum)(int H, const FR_T *restrict x, const FR_T *restrict y)
{
    double acc[FR_LANES] = {0}, s = 0;
    int j = 0;
    for (; j + FR_LANES <= H; j += FR_LANES, x += FR_LANES, y += FR_LANES)
        for (int k = 0; k < FR_LANES; k++) { double d = (double)x[k] + y[k]; acc[k] += d * d; }
    for (; j < H; j++, x++, y++) { double d = (double)x[0] + y[0]; s += d * d; }
    for (int k = 0; k < FR_LANES; k++) s += acc[k];
    return s;
}

/* LSTM: ||dL/dh_t||^2 and ||dL/dc_t||^2 for one row, dc = dc_in + dh * o * (1 - tanh(c)^2) */
static inline void FR_FN(lstm_sumsq)(int H, const FR_T *restrict dy, const FR_T *restrict dh_in,
                                     const FR_T *restrict dc_in, const FR_T *restrict o,
                                     const FR_T *restrict tc, double *restrict sq)
{
    double ah[FR_LANES] = {0}, ac[FR_LANES] = {0}, sh = 0, sc = 0;
    int j = 0;
    for (; j + FR_LANES <= H; j += FR_LANES, dy += FR_LANES, dh_in += FR_LANES,
                                dc_in += FR_LANES, o += FR_LANES, tc += FR_LANES)
        for (int k = 0; k < FR_LANES; k++) {
            double dh = (double)dy[k] + dh_in[k], t = tc[k];
            double dc = dc_in[k] + dh * o[k] * (1 - t * t);
            ah[k] += dh * dh;
            ac[k] += dc * dc;
        }
    for (; j < H; j++, dy++, dh_in++, dc_in++, o++, tc++) {
        double dh = (double)dy[0] + dh_in[0], t = tc[0];
        double dc = dc_in[0] + dh * o[0] * (1 - t * t);
        sh += dh * dh;
        sc += dc * dc;
    }
    for (int k = 0; k < FR_LANES; k++) { sh += ah[k]; sc += ac[k]; }
    sq[0] += sh;
    sq[1] += sc;
}

/* ---- vanilla RNN:  h = tanh(x Wx + h_prev Wh + b) ---- */

/* The vector loop leaves H % 16 units to scalar code, a tanh with its division each: about a
 * fifth of the pass at H = 100.  So for H >= 16 the last 16 units are computed first, as one
 * block of vectors, the loop runs over whole blocks of 16, and the block is stored last (the
 * units both cover get the same value). */
FR_KERNEL void FR_FN(rnn_fwd_row)(int H, FR_T *restrict a, const FR_T *restrict b, FR_T *restrict h)
{
    enum { W = 16 };
    int m = H;
    FR_T last[W];
    if (H % W && H > W) {
        const FR_T *al = a + H - W, *bl = b + H - W;
        for (int k = 0; k < W; k++) last[k] = FR_TANH(al[k] + bl[k]);
        m = H - H % W;
    }
    for (int j = 0; j < m; j++) {
        FR_T v = FR_TANH(a[j] + b[j]);
        a[j] = v;               /* cached: tanh' = 1 - h^2 */
        h[j] = v;
    }
    if (m < H) {
        FR_T *al = a + H - W, *hl = h + H - W;
        for (int k = 0; k < W; k++) { al[k] = last[k]; hl[k] = last[k]; }
    }
}

FR_KERNEL void FR_FN(rnn_bwd_row)(int H, const FR_T *restrict a, const FR_T *restrict dy,
                               const FR_T *restrict dh_in, FR_T *restrict da, double *restrict sq)
{
    for (int j = 0; j < H; j++) {
        FR_T dh = dy[j] + dh_in[j];
        da[j] = dh * (1 - a[j] * a[j]);
    }
    if (sq) sq[0] += FR_FN(sumsq_of_sum)(H, dy, dh_in);     /* ||dL/dh_t||^2 */
}

/* nonlinearity="relu":  h = max(0, x Wx + h_prev Wh + b); h > 0 exactly where the derivative is
 * 1 (0 at 0, as PyTorch's), so the cached h serves backward as tanh's does */

FR_KERNEL void FR_FN(rnn_relu_fwd_row)(int H, FR_T *restrict a, const FR_T *restrict b,
                                       FR_T *restrict h)
{
    for (int j = 0; j < H; j++) {
        FR_T s = a[j] + b[j];
        FR_T v = s > 0 ? s : 0;     /* (NaN gives 0: the layers never pass one, see forward) */
        a[j] = v;
        h[j] = v;
    }
}

FR_KERNEL void FR_FN(rnn_relu_bwd_row)(int H, const FR_T *restrict a, const FR_T *restrict dy,
                                       const FR_T *restrict dh_in, FR_T *restrict da,
                                       double *restrict sq)
{
    for (int j = 0; j < H; j++) {
        FR_T dh = dy[j] + dh_in[j];
        da[j] = a[j] > 0 ? dh : 0;
    }
    if (sq) sq[0] += FR_FN(sumsq_of_sum)(H, dy, dh_in);     /* ||dL/dh_t||^2 */
}

/* ---- recurrent dropout: a mask m (one row of h_mask) on the input of the product h_{t-1} Wh ---- */

/* y = m * x */
FR_KERNEL void FR_FN(mask_copy_row)(int H, const FR_T *restrict m, const FR_T *restrict x,
                                    FR_T *restrict y)
{
    for (int j = 0; j < H; j++) y[j] = m[j] * x[j];
}

/* x *= m */
FR_KERNEL void FR_FN(mask_scale_row)(int H, const FR_T *restrict m, FR_T *restrict x)
{
    for (int j = 0; j < H; j++) x[j] *= m[j];
}

/* y += m * x */
FR_KERNEL void FR_FN(mask_add_row)(int H, const FR_T *restrict m, const FR_T *restrict x,
                                   FR_T *restrict y)
{
    for (int j = 0; j < H; j++) y[j] += m[j] * x[j];
}

/* ---- LSTM, gate blocks f, g, i, o:  c = f*c_prev + g*i,  h = o*tanh(c) ----
 * H units of a row whose gate blocks lie bs apart in a (and b, da): bs = H for a whole row, the
 * layer's H for a thread's share of the units (see use_units in _recurrent.pyx). */

FR_KERNEL void FR_FN(lstm_fwd_row)(int H, int bs, FR_T *restrict a, const FR_T *restrict b,
                                const FR_T *restrict c_prev, FR_T *restrict c,
                                FR_T *restrict tc, FR_T *restrict h)
{
    FR_T *restrict ag = a + bs, *restrict ai = a + 2 * bs, *restrict ao = a + 3 * bs;
    const FR_T *restrict bg = b + bs, *restrict bi = b + 2 * bs, *restrict bo = b + 3 * bs;
    for (int j = 0; j < H; j++) {
        FR_T f = FR_SIG(a[j] + b[j]);
        FR_T g = FR_TANH(ag[j] + bg[j]);
        FR_T i = FR_SIG(ai[j] + bi[j]);
        FR_T o = FR_SIG(ao[j] + bo[j]);
        a[j] = f; ag[j] = g; ai[j] = i; ao[j] = o;
        FR_T cn = f * c_prev[j] + g * i;
        FR_T t = FR_TANH(cn);
        c[j] = cn;
        tc[j] = t;
        h[j] = o * t;
    }
}

FR_KERNEL void FR_FN(lstm_bwd_row)(int H, int bs, const FR_T *restrict a,
                                const FR_T *restrict c_prev, const FR_T *restrict tc,
                                const FR_T *restrict dy, const FR_T *restrict dh_in,
                                const FR_T *restrict dc_in, FR_T *restrict da,
                                FR_T *restrict dc_out, double *restrict sq)
{
    const FR_T *restrict ag = a + bs, *restrict ai = a + 2 * bs, *restrict ao = a + 3 * bs;
    FR_T *restrict dag = da + bs, *restrict dai = da + 2 * bs, *restrict dao = da + 3 * bs;
    for (int j = 0; j < H; j++) {
        FR_T f = a[j], g = ag[j], i = ai[j], o = ao[j], t = tc[j];
        FR_T dh = dy[j] + dh_in[j];
        FR_T dc = dc_in[j] + dh * o * (1 - t * t);      /* total dL/dc_t */
        da[j] = dc * c_prev[j] * f * (1 - f);
        dag[j] = dc * i * (1 - g * g);
        dai[j] = dc * g * i * (1 - i);
        dao[j] = dh * t * o * (1 - o);
        dc_out[j] = dc * f;
    }
    if (sq) FR_FN(lstm_sumsq)(H, dy, dh_in, dc_in, ao, tc, sq);   /* kept out of the hot loop */
}

/* ---- GRU, gate blocks z, r, h~:  h = (1-z)*h_prev + z*h~ ----
 * reset_after=0:  h~ = tanh(x Wxh + (r*h_prev) Whh + bh), two half passes around the (r*h) GEMM.
 * reset_after=1:  h~ = tanh(x Wxh + b0h + r*(h_prev Whh + b1h)), one pass after one GEMM. */

FR_KERNEL void FR_FN(gru_fwd_zr_row)(int H, FR_T *restrict a, const FR_T *restrict b,
                                  const FR_T *restrict h_prev, FR_T *restrict rh)
{
    FR_T *restrict ar = a + H;
    const FR_T *restrict br = b + H;
    for (int j = 0; j < H; j++) {
        FR_T z = FR_SIG(a[j] + b[j]);
        FR_T r = FR_SIG(ar[j] + br[j]);
        a[j] = z; ar[j] = r;
        rh[j] = r * h_prev[j];
    }
}

FR_KERNEL void FR_FN(gru_fwd_h_row)(int H, FR_T *restrict a, const FR_T *restrict b,
                                 const FR_T *restrict h_prev, FR_T *restrict h)
{
    FR_T *restrict ah = a + 2 * H;
    const FR_T *restrict bh = b + 2 * H;
    for (int j = 0; j < H; j++) {
        FR_T z = a[j];
        FR_T hh = FR_TANH(ah[j] + bh[j]);
        ah[j] = hh;
        h[j] = (1 - z) * h_prev[j] + z * hh;
    }
}

/* first half of the backward step: dz and dh~ (and the direct part of dh_prev) */
FR_KERNEL void FR_FN(gru_bwd_zh_row)(int H, const FR_T *restrict a, const FR_T *restrict h_prev,
                                  const FR_T *restrict dy, const FR_T *restrict dh_in,
                                  FR_T *restrict da, FR_T *restrict dh_out, double *restrict sq)
{
    const FR_T *restrict ah = a + 2 * H;
    FR_T *restrict dah = da + 2 * H;
    for (int j = 0; j < H; j++) {
        FR_T z = a[j], hh = ah[j];
        FR_T dh = dy[j] + dh_in[j];
        da[j] = dh * (hh - h_prev[j]) * z * (1 - z);
        dah[j] = dh * z * (1 - hh * hh);
        dh_out[j] = dh * (1 - z);
    }
    if (sq) sq[0] += FR_FN(sumsq_of_sum)(H, dy, dh_in);
}

/* second half: d(r*h_prev) = da_h Whh^T is given; dr and the gated part of dh_prev */
FR_KERNEL void FR_FN(gru_bwd_r_row)(int H, const FR_T *restrict a, const FR_T *restrict h_prev,
                                 const FR_T *restrict drh, FR_T *restrict da, FR_T *restrict dh_out)
{
    const FR_T *restrict ar = a + H;
    FR_T *restrict dar = da + H;
    for (int j = 0; j < H; j++) {
        FR_T r = ar[j];
        dar[j] = drh[j] * h_prev[j] * r * (1 - r);
        dh_out[j] += drh[j] * r;
    }
}

FR_KERNEL void FR_FN(gru_ra_fwd_row)(int H, FR_T *restrict a, const FR_T *restrict s,
                                  const FR_T *restrict b0, const FR_T *restrict b1,
                                  const FR_T *restrict h_prev, FR_T *restrict hn, FR_T *restrict h)
{
    FR_T *restrict ar = a + H, *restrict ah = a + 2 * H;
    const FR_T *restrict sr = s + H, *restrict sh = s + 2 * H;
    const FR_T *restrict b0r = b0 + H, *restrict b0h = b0 + 2 * H;
    const FR_T *restrict b1r = b1 + H, *restrict b1h = b1 + 2 * H;
    for (int j = 0; j < H; j++) {
        FR_T z = FR_SIG(a[j] + s[j] + b0[j] + b1[j]);
        FR_T r = FR_SIG(ar[j] + sr[j] + b0r[j] + b1r[j]);
        FR_T n = sh[j] + b1h[j];
        FR_T hh = FR_TANH(ah[j] + b0h[j] + r * n);
        a[j] = z; ar[j] = r; ah[j] = hh;
        hn[j] = n;
        h[j] = (1 - z) * h_prev[j] + z * hh;
    }
}

/* dax: gradient w.r.t. the input-side pre-activations (z, r, h~); dahh: w.r.t. the h~ block of
 * h_prev Wh (+ b1).  The z and r blocks of h_prev Wh have the gradient dax has there, so they
 * are not written twice. */
FR_KERNEL void FR_FN(gru_ra_bwd_row)(int H, const FR_T *restrict a, const FR_T *restrict hn,
                                  const FR_T *restrict h_prev, const FR_T *restrict dy,
                                  const FR_T *restrict dh_in, FR_T *restrict dax,
                                  FR_T *restrict dahh, FR_T *restrict dh_out, double *restrict sq)
{
    const FR_T *restrict ar = a + H, *restrict ah = a + 2 * H;
    FR_T *restrict daxr = dax + H, *restrict daxh = dax + 2 * H;
    for (int j = 0; j < H; j++) {
        FR_T z = a[j], r = ar[j], hh = ah[j];
        FR_T dh = dy[j] + dh_in[j];
        FR_T dz = dh * (hh - h_prev[j]) * z * (1 - z);
        FR_T dn = dh * z * (1 - hh * hh);
        FR_T dr = dn * hn[j] * r * (1 - r);
        dax[j] = dz; daxr[j] = dr; daxh[j] = dn;
        dahh[j] = dn * r;
        dh_out[j] = dh * (1 - z);
    }
    if (sq) sq[0] += FR_FN(sumsq_of_sum)(H, dy, dh_in);
}

/* ---- reductions shared by every cell ---- */

/* out[j] (+)= sum over rows of x[r, j]; accumulated in double, one row at a time so the inner
 * loop runs over contiguous columns and vectorises. acc has room for cols doubles. */
FR_KERNEL void FR_FN(colsum)(Py_ssize_t rows, int cols, Py_ssize_t ldx, const FR_T *restrict x,
                          double *restrict acc, FR_T *restrict out)
{
    for (int j = 0; j < cols; j++) acc[j] = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const FR_T *restrict row = x + r * ldx;
        for (int j = 0; j < cols; j++) acc[j] += row[j];
    }
    for (int j = 0; j < cols; j++) out[j] = (FR_T)acc[j];
}
