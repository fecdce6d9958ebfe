"""How many threads a layer call uses: by default as many as the BLAS the kernels call is set
to (fastrnn._blas: NumPy's OpenBLAS, or scipy's).

Following BLAS's own setting means one control covers everything: ``threadpool_limits(1)`` (or
OPENBLAS_NUM_THREADS=1) makes a layer single-threaded, as users of NumPy code expect.

With one kernel thread, the kernel runs the time loop and leaves the big N*T-row products to
BLAS, which threads them as the user set it only when they are large (plan_threads).  With k > 1
threads, the kernels split *all* the work across their own k
threads (batch rows for the time loop, the input projection and dX; weight-gradient columns for
dWx, dWh, db), calling BLAS single-threaded from each, and BLAS is held at one thread for the
duration of the call (``single_threaded_blas``).  Two thread pools on the same cores fight:
OpenBLAS's idle workers keep spinning for about 0.1 s after each threaded call (measured here;
OPENBLAS_THREAD_TIMEOUT), which halved the speed of a kernel thread sharing their core.
"""

import threading

import numpy as np

from ._packed import DIRECT_MAX_ROWS

# Below this many multiply-adds in the per-step products of one call, the kernels' threads (three
# pool jobs per forward+backward, a few microseconds each, and smaller GEMMs per thread) save too
# little to be worth a second core.  Measured with the pool, 2 threads against 1, interleaved in
# one process (float32, forward+backward; two runs of benches/pool_ab.py, BENCHMARKS.md):
# LSTM N2 T10 H16 (20 k multiply-adds) 0.72-0.87x, RNN N4 T10 H32 (41 k) 0.63-0.70x, LSTM N4 T35
# H32 (0.57 M) 1.06-1.19x, GRU N4 T20 H64 (0.98 M) 0.97-1.13x, RNN N8 T35 H64 (1.1 M)
# 0.97-1.41x, RNN N20 T35 H100 (7 M) 1.48-1.51x, GRU N20 (21 M) 1.56-1.58x.  (With a thread
# started per job, before the pool, RNN N8 T35 H64 ran at 0.44-0.73x and RNN N20 at 1.25-1.27x.)
# An explicit `layer.threads` ignores it.
MIN_PARALLEL_MACS = 2_000_000
# A call on one kernel thread whose largest whole-sequence GEMM has fewer multiply-adds than this
# also keeps BLAS on one thread; for a single step (T = 1), the second limit (see plan_threads).
MIN_BLAS_PARALLEL_MACS = 200_000_000
MIN_STEP_BLAS_PARALLEL_MACS = 16_000_000

_blas = None


class ThreadSetting:
    """The ``threads`` property of the layers (recurrent and language-model ones alike): None
    follows the BLAS thread setting, a positive integer fixes the count; anything else is
    refused with ValueError."""

    _threads = None

    @property
    def threads(self):
        return self._threads

    @threads.setter
    def threads(self, value):
        if value is not None and (
            not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"threads must be None or a positive integer, got {value!r}")
        self._threads = None if value is None else int(value)


class _Knob:
    """Reads and sets the thread count of one BLAS library.

    For OpenBLAS the library's own openblas_get/set_num_threads are called through ctypes
    (about a microsecond; threadpoolctl's methods look the symbol up on every call, and its
    OpenBLAS controller ignores set_num_threads from any thread but the first one that used it,
    while OpenBLAS itself applies the setting process-wide whoever calls).  Other BLAS libraries
    go through threadpoolctl's controller."""

    def __init__(self, controller):
        self.get, self.set = controller.get_num_threads, controller.set_num_threads
        if controller.internal_api != "openblas":
            return
        import ctypes

        try:
            lib = ctypes.CDLL(controller.filepath)  # already loaded: the same handle
        except OSError:
            return
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
                put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    put.restype, put.argtypes = None, [ctypes.c_int]
                    self.get, self.set = get, put
                    return


def _blas_knobs():
    """Knobs for the BLAS the kernels call (fastrnn._blas: NumPy's OpenBLAS or scipy's; looked
    up once: scanning the loaded libraries takes milliseconds)."""
    global _blas
    if _blas is None:
        from . import _blas as chosen

        lib = chosen.controller()
        _blas = [] if lib is None else [_Knob(lib)]
    return _blas


def _query_blas_threads():
    try:
        counts = [k.get() for k in _blas_knobs()]
    except Exception:  # an exotic BLAS threadpoolctl cannot query: stay single-threaded
        return 1
    counts = [n for n in counts if isinstance(n, int) and n >= 1]
    return min(counts) if counts else 1


_lock = threading.Lock()
_holders = 0  # layer calls currently inside single_threaded_blas
_saved = None  # the thread count BLAS had (the user's setting) before the first of them


def blas_threads():
    """The thread count the kernels' BLAS is set to by the user (1 when it cannot be told); while
    layer calls hold BLAS at one thread, the setting they will restore."""
    with _lock:
        if _holders:
            return _saved
    return _query_blas_threads()


class single_threaded_blas:
    """Context: the kernels' BLAS runs single-threaded inside, and gets its setting back after.

    Reference-counted, so that calls overlapping in several Python threads restore the user's
    setting only when the last one leaves.  Meanwhile other code calling that BLAS also runs
    single-threaded (slower, never wrong)."""

    def __enter__(self):
        global _holders, _saved
        with _lock:
            if _holders == 0:
                _saved = _query_blas_threads()
                self._set(1)
            _holders += 1
        return self

    def __exit__(self, *exc):
        global _holders
        with _lock:
            _holders -= 1
            if _holders == 0:
                self._set(_saved)
        return False

    @staticmethod
    def _set(n):
        for k in _blas_knobs():
            try:
                k.set(n)
            except Exception:
                pass


def runs_direct(setting, N, T, step_macs):
    """Does a call run on one kernel thread with no BLAS call (plan_threads' first case)?  A
    function of its arguments alone, so that a layer may remember the answer."""
    return (
        1 <= N * T <= DIRECT_MAX_ROWS
        and (N >= 2 or T == 1)
        and (setting == 1 or (setting is None and step_macs < MIN_PARALLEL_MACS))
    )


def plan_threads(setting, N, T, step_macs, gemm_macs, by_units=False):
    """(kernel threads, hold BLAS at one thread?) for one kernel call.

    setting: a layer's .threads (None: automatic).  step_macs: multiply-adds of the call's
    per-step products; gemm_macs: of its largest whole-sequence GEMM.  by_units: the kernel
    can share the call by hidden units however few its rows (a wide LSTM's forward,
    units_few_rows in src/cells/_recurrent.pyx).
    - Kernel threads: `setting` if given, else BLAS's thread count when step_macs reach
      MIN_PARALLEL_MACS; never more than the N batch rows -- except by_units with fewer rows
      than that count: then all of it (the step is bound by reading the weights).
    - BLAS is held at one thread whenever the kernel runs several (its threads then do all the work;
      but for a single step by units, which calls no BLAS), when the layer is set to one thread, and
      when a call on one kernel thread has whole-sequence GEMMs below MIN_BLAS_PARALLEL_MACS (a
      single step: below MIN_STEP_BLAS_PARALLEL_MACS).  Measured at 2 threads, forward+backward:
      with BLAS threading its GEMMs RNN N20 T35 H100 took 2.37 ms (7 M-multiply-add GEMMs) and 1.91
      ms without, GRU N20 T35 H100 6.83 and 5.61 ms (21 M), LSTM batch 1 T200 H128 4.5 and 3.6-4.0
      ms (13 M, plus 400 per-step GEMVs); BLAS's idle threads also keep spinning through the
      kernel's single-threaded time loop.  A single step of a wide cell is all GEMM, and there
      BLAS's threads pay (LSTM cell N64 H256, 16.7 M: 3.3 ms with them, 4.4 without).
    - A call of up to DIRECT_MAX_ROWS rows in all, of two batch rows or one step, makes no BLAS
      call (src/gemm/_packed.pxd): when it runs on one thread, BLAS's setting is not even read (a
      few microseconds, a tenth of a small cell's step)."""
    if by_units and setting != 1:
        threads = blas_threads() if setting is None else setting
        if N < threads:
            # (a single step by units calls no BLAS, its products are fastrnn's direct ones:
            # no need to set BLAS's thread count twice a step)
            return threads, T > 1
    if runs_direct(setting, N, T, step_macs):
        return 1, False
    blas = blas_threads()
    if setting is None:
        threads = blas if step_macs >= MIN_PARALLEL_MACS else 1
    else:
        threads = setting
    threads = max(1, min(threads, N))
    if threads > 1 or setting == 1:
        return threads, blas > 1
    limit = MIN_STEP_BLAS_PARALLEL_MACS if T == 1 else MIN_BLAS_PARALLEL_MACS
    return 1, blas > 1 and gemm_macs < limit
