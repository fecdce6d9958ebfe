# Where each batch row's steps live in the caches: the one home of variable lengths and the
# reverse direction for the three cells' kernels.
#
# Without lengths (forward direction) the caches are batch-major like the caller's arrays: step s
# of batch row n at cache row n*T + s, a step's rows T rows apart (the kernels' strided per-step
# products, unchanged).  With lengths or in reverse ("packed"), the caches hold only the valid
# steps, step-major in the order of a PackedSequence: the rows sorted by length, longest first
# ("slots"; stable, so the caller never sorts), step s of slot j at cache row first[s] + j.  The
# slots still running at step s are then always slots [0, active[s]), contiguous: the per-step
# products run on contiguous rows with no gathering, ended rows simply drop out of them, and
# the whole-sequence products (input projection, dX, dWx/dWh/db) are single GEMMs over the
# sum(lengths) rows (no padded work).  A slot's steps are its processing order; reverse only
# changes which time position of the caller's arrays step s reads and writes
# (t = length - 1 - s), so every cell's recurrence (the previous state at step s - 1) is the
# same code in both directions.
#
# The plan (built by fastrnn.layers.recurrent._plan, int64): slot_row (N) the batch row of
# each slot, length (N) each slot's length, first (T + 1) the cache row of slot 0 at step s
# (first[T] = sum(lengths), the cache rows used), active (T) the slots running at step s.
cimport numpy as cnp
from cython cimport floating
from libc.string cimport memcpy, memset

from _cells cimport buf, mask_copy
from _parallel cimport fr_share
from _seq cimport dx_rows, project_rows


cdef struct Steps:
    Py_ssize_t N, T                 # batch rows, the caller's padded length
    const Py_ssize_t *slot_row      # NULL: batch-major (no lengths, forward)
    const Py_ssize_t *length
    const Py_ssize_t *first
    const Py_ssize_t *active
    bint reverse


cdef inline void steps_init(Steps *S, Py_ssize_t N, Py_ssize_t T, const Py_ssize_t *plan,
                            bint reverse) noexcept nogil:
    """S for a batch of N rows of T steps; plan NULL (batch-major) or as described above."""
    S.N = N
    S.T = T
    S.reverse = reverse
    S.slot_row = plan
    if plan != NULL:
        S.length = plan + N
        S.first = plan + 2 * N
        S.active = plan + 2 * N + T + 1


cdef inline bint packed(const Steps *S) noexcept nogil:
    return S.slot_row != NULL


cdef inline Py_ssize_t cache_rows(const Steps *S) noexcept nogil:
    """The cache rows in use: N*T, or sum(lengths)."""
    return S.first[S.T] if S.slot_row != NULL else S.N * S.T


cdef inline Py_ssize_t crow(const Steps *S, Py_ssize_t j, Py_ssize_t s) noexcept nogil:
    """The cache row of slot j's step s."""
    if S.slot_row == NULL:
        return j * S.T + s
    return S.first[s] + j


cdef inline Py_ssize_t step_rows(const Steps *S) noexcept nogil:
    """Cache rows from one slot to the next within a step (the per-step products' stride in
    rows): T batch-major, 1 packed."""
    return 1 if S.slot_row != NULL else S.T


cdef inline Py_ssize_t brow(const Steps *S, Py_ssize_t j) noexcept nogil:
    """The batch row of slot j (for the caller's per-row arrays: h0, c0, the mask, dh0)."""
    return S.slot_row[j] if S.slot_row != NULL else j


cdef inline Py_ssize_t urow(const Steps *S, Py_ssize_t j, Py_ssize_t s) noexcept nogil:
    """The row of the caller's (N, T, .) arrays (xs, hs, dhs, dxs) that slot j's step s reads
    or writes: batch row, time position t = s, or length - 1 - s in reverse."""
    if S.slot_row == NULL:
        return j * S.T + s
    if S.reverse:
        return S.slot_row[j] * S.T + S.length[j] - 1 - s
    return S.slot_row[j] * S.T + s


cdef inline Py_ssize_t run_end(const Steps *S, Py_ssize_t j1, Py_ssize_t s) noexcept nogil:
    """Of slots [j0, j1), those running at step s are [j0, run_end(S, j1, s))."""
    if S.slot_row == NULL:
        return j1
    return min(j1, S.active[s])


cdef inline bint has_next(const Steps *S, Py_ssize_t j, Py_ssize_t s) noexcept nogil:
    """Does slot j take a step after s?"""
    return s + 1 < (S.length[j] if S.slot_row != NULL else S.T)


cdef inline void share_slots(const Steps *S, int tid, int nth, Py_ssize_t *j0,
                             Py_ssize_t *j1) noexcept nogil:
    """Thread tid's slots of a time loop: by count batch-major, else by work (the slots whose
    first step falls in the thread's share of the sum(lengths) steps, so a thread of long rows
    gets fewer of them)."""
    cdef Py_ssize_t total, lo, hi, j, cum = 0
    if S.slot_row == NULL:
        fr_share(S.N, tid, nth, j0, j1)
        return
    total = S.first[S.T]
    lo = total * tid // nth
    hi = total * (tid + 1) // nth
    j0[0] = 0
    j1[0] = 0
    for j in range(S.N):
        if cum < lo:
            j0[0] = j + 1
        if cum < hi:
            j1[0] = j + 1
        cum += S.length[j]


cdef inline void zero_padding(const Steps *S, Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t width,
                              size_t itemsize, char *a) noexcept nogil:
    """a[n, t] = 0 for t >= length of slots [j0, j1)'s batch rows n, a a caller's (N, T, width)
    array (hs, dxs): padding is never written otherwise."""
    cdef Py_ssize_t j, n, L
    for j in range(j0, j1):
        n = S.slot_row[j]
        L = S.length[j]
        if L < S.T:
            memset(a + (n * S.T + L) * width * itemsize, 0, (S.T - L) * width * itemsize)


cdef struct Whole:
    # the packed layout's whole-sequence passes, shared by rows of the caches (whole_task)
    const Steps *S
    int D, H, GH
    bint f64
    bint backward
    bint bf16           # the products at bfloat16 precision (_seq.pxd)
    const void *X       # forward: the caller's inputs (N, T, D), gathered into XH[:, :D]
    void *XH
    const void *Wx
    void *G             # forward: x Wx for every cache row (GH wide)
    void *hs            # forward: the caller's outputs (N, T, H), padding zeroed here
    const void *dG      # backward: the gate gradients (GH wide)
    void *dXp           # backward: dX in cache rows (scratch)
    void *dX            # backward: the caller's dxs (N, T, D)


cdef inline void _whole_rows(Whole *W, int tid, int nth, floating *XH) noexcept nogil:
    cdef const Steps *S = W.S
    cdef Py_ssize_t r0, r1, j0, j1, s, r, a, e, ld = W.D + W.H
    cdef int D = W.D
    cdef size_t row = D * sizeof(floating)
    cdef const floating *X = <const floating *>W.X
    cdef floating *dXp = <floating *>W.dXp
    cdef floating *dX = <floating *>W.dX
    fr_share(cache_rows(S), tid, nth, &r0, &r1)
    if r0 < r1 and W.backward:
        # dX of these cache rows in one product, then each to its place in dxs
        dx_rows(r0, r1, 1, D, W.GH, <const floating *>W.dG, <const floating *>W.Wx, NULL, dXp,
                W.bf16)
    for s in range(S.T):
        a = max(r0, S.first[s])
        e = min(r1, S.first[s] + S.active[s])
        for r in range(a, e):
            if W.backward:
                memcpy(dX + urow(S, r - S.first[s], s) * D, dXp + r * D, row)
            else:
                memcpy(XH + r * ld, X + urow(S, r - S.first[s], s) * D, row)
    if r0 < r1 and not W.backward:
        # the input projection of these cache rows, one product
        project_rows(r0, r1, 1, D, W.GH, <const floating *>XH, <int>ld,
                     <const floating *>W.Wx, <floating *>W.G, W.bf16)
    fr_share(S.N, tid, nth, &j0, &j1)
    if W.backward:
        zero_padding(S, j0, j1, D, sizeof(floating), <char *>W.dX)
    else:
        zero_padding(S, j0, j1, W.H, sizeof(floating), <char *>W.hs)


cdef inline void whole_task(void *arg, int tid, int nth) noexcept nogil:
    """Forward (before the time loop): XH[:, :D] gathered from the caller's inputs and
    G = X Wx, over this thread's share of the cache rows; hs's padding zeroed.  Backward (after
    the time loop): dX = dG Wx^T over its cache rows, put in place in dxs; dxs's padding
    zeroed."""
    cdef Whole *W = <Whole *>arg
    if W.f64:
        _whole_rows(W, tid, nth, <double *>W.XH)
    else:
        _whole_rows(W, tid, nth, <float *>W.XH)


cdef inline void start_state(const Steps *S, Py_ssize_t j0, Py_ssize_t j1, int H, Py_ssize_t ld,
                             const floating *h0, const floating *M, floating *Hprev,
                             floating *HU) noexcept nogil:
    """Packed layout, before the time loop: Hprev at each slot's step 0 = h0 of its batch row
    (times the mask M, unless NULL; then HU, unless NULL, gets h0 unmasked)."""
    cdef Py_ssize_t j, n, r
    for j in range(j0, j1):
        n = brow(S, j)
        r = crow(S, j, 0)
        if M == NULL:
            memcpy(Hprev + r * ld, h0 + n * H, H * sizeof(floating))
        else:
            mask_copy(H, M + n * H, h0 + n * H, Hprev + r * ld)
            if HU != NULL:
                memcpy(HU + r * H, h0 + n * H, H * sizeof(floating))


cdef inline const Py_ssize_t *plan_buf(object plan, Py_ssize_t N, Py_ssize_t T) except? NULL:
    """The plan's data (an intp array of 2N + 2T + 1 entries, checked), or NULL for None."""
    if plan is None:
        return NULL
    return <const Py_ssize_t *>buf(plan, cnp.NPY_INTP, 2 * N + 2 * T + 1, "plan")
