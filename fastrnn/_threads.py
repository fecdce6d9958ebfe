"""How many threads the layers' time loops use: by default as many as scipy's BLAS is set to.

The kernels split the batch rows of the time loop across threads (rows never interact, so the
threads run without synchronising) while the big N*T-row products stay with BLAS.  Following
BLAS's own setting means one control covers both: ``threadpoolctl.threadpool_limits(1)`` (or
OPENBLAS_NUM_THREADS=1) makes a layer single-threaded, as users of NumPy code expect.
"""
import os

# Below this many multiply-adds in the per-step products of one call, starting a thread (about
# 20 us) costs more than it saves; explicit `layer.threads` settings ignore it.
MIN_PARALLEL_MACS = 2_000_000

_blas = None


def _scipy_blas_controllers():
    """threadpoolctl's controllers for the BLAS that scipy.linalg.cython_blas calls (looked up
    once: scanning the loaded libraries takes milliseconds)."""
    global _blas
    if _blas is None:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (make sure scipy's BLAS is loaded)
        from threadpoolctl import ThreadpoolController

        blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        # a wheel's bundled copy lives in site-packages/scipy.libs (or inside scipy/); a system
        # or conda scipy shares the BLAS numpy uses, and then every BLAS found is a candidate
        own = [c for c in blas if c.filepath.startswith(os.path.dirname(scipy.__file__))]
        _blas = own or blas
    return _blas


def blas_threads():
    """The thread count scipy's BLAS is currently set to (1 when it cannot be told)."""
    try:
        counts = [c.get_num_threads() for c in _scipy_blas_controllers()]
    except Exception:       # an exotic BLAS threadpoolctl cannot query: stay single-threaded
        return 1
    counts = [n for n in counts if isinstance(n, int) and n >= 1]
    return min(counts) if counts else 1


def loop_threads(setting, N, macs):
    """Threads for one kernel call: `setting` (a layer's .threads) if given, else BLAS's count
    when the call has enough work; never more than the N batch rows."""
    if setting is None:
        threads = blas_threads() if macs >= MIN_PARALLEL_MACS else 1
    else:
        threads = setting
    return max(1, min(threads, N))
