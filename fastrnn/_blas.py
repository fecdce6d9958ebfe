"""Which BLAS library fastrnn's kernels call for the products they leave to BLAS.

Two are at hand in every install: the OpenBLAS that NumPy runs (``np.matmul``, the book's
NumPy layers) and the one scipy ships, which ``scipy.linalg.cython_blas`` exposes to compiled
code.  The kernels call NumPy's where it is an OpenBLAS with the ILP64 Fortran routines of
NumPy's wheels (``scipy_sgemm_64_`` and friends), else scipy's.

Why NumPy's: the two wheels carry their own OpenBLAS builds, and NumPy's is updated more often.
On the EPYC of BENCHMARKS.md, NumPy 2.x's OpenBLAS 0.3.31 ran the language model's read-out
products 1.06-1.18x faster than scipy 1.16's 0.3.30, the same calls alternating (1 thread,
idle).  It also means that a product fastrnn hands to BLAS is never slower than the same product
in NumPy code.

``FASTRNN_BLAS=numpy`` or ``FASTRNN_BLAS=scipy`` in the environment, read once at import, forces
the choice (``numpy`` raises at import where NumPy's routines cannot be found).  ``info()``
tells what was chosen and why; ``fastrnn bench`` prints it.
"""

import ctypes
import os

import numpy as np

_ENV = "FASTRNN_BLAS"
_ROUTINES = ("sgemm", "dgemm", "sgemv", "dgemv")
_choice = None


def _numpy_openblas():
    """(threadpoolctl controller, the four ILP64 routines' addresses) of the OpenBLAS NumPy
    loaded, or (None, reason) where there is none to use."""
    from threadpoolctl import ThreadpoolController

    here = os.path.dirname(np.__file__)  # also the prefix of a wheel's numpy.libs folder
    found = [
        c
        for c in ThreadpoolController().lib_controllers
        if c.user_api == "blas" and c.filepath.startswith(here)
    ]
    if not found:
        return None, "NumPy carries no BLAS of its own (it shares the system's or scipy's)"
    lib = found[0]
    if lib.internal_api != "openblas":
        return None, f"NumPy's BLAS is {lib.internal_api}, not OpenBLAS"
    try:
        handle = ctypes.CDLL(lib.filepath)  # already loaded: the same handle
    except OSError as e:
        return None, f"cannot open NumPy's BLAS {lib.filepath}: {e}"
    for prefix in ("scipy_", ""):
        fns = [getattr(handle, f"{prefix}{name}_64_", None) for name in _ROUTINES]
        if all(f is not None for f in fns):
            return lib, tuple(ctypes.cast(f, ctypes.c_void_p).value for f in fns)
    return None, f"NumPy's OpenBLAS {lib.filepath} has no ILP64 routines (scipy_sgemm_64_)"


def _scipy_controller():
    """threadpoolctl's controller of the BLAS scipy.linalg.cython_blas calls (None: not found)."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (make sure scipy's BLAS is loaded)
    from threadpoolctl import ThreadpoolController

    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    # a wheel's bundled copy lives in site-packages/scipy.libs (or inside scipy/); a system or
    # conda scipy shares the BLAS numpy uses, and then every BLAS found is a candidate
    own = [c for c in blas if c.filepath.startswith(os.path.dirname(scipy.__file__))]
    return (own or blas or [None])[0]


def _choose():
    global _choice
    if _choice is not None:
        return _choice
    wanted = os.environ.get(_ENV, "").strip().lower() or None
    if wanted not in (None, "numpy", "scipy"):
        raise ValueError(f"{_ENV} must be 'numpy' or 'scipy' (or unset), got {os.environ[_ENV]!r}")
    lib, found = (None, f"{_ENV}=scipy") if wanted == "scipy" else _numpy_openblas()
    if lib is not None:
        reason = f"{_ENV}=numpy" if wanted else "NumPy's OpenBLAS has the ILP64 routines"
        _choice = {"library": "numpy", "controller": lib, "addresses": found, "reason": reason}
    elif wanted == "numpy":
        raise RuntimeError(f"{_ENV}=numpy, but {found}; unset it or set {_ENV}=scipy")
    else:
        _choice = {
            "library": "scipy",
            "controller": _scipy_controller(),
            "addresses": None,
            "reason": found,
        }
    return _choice


def ilp64_addresses():
    """The addresses of the ILP64 sgemm, dgemm, sgemv, dgemv the kernels call, or None for
    scipy's cython_blas (called by each extension module at its import: fr_blas.h)."""
    return _choose()["addresses"]


def controller():
    """threadpoolctl's controller of the chosen library (None if threadpoolctl sees none)."""
    return _choose()["controller"]


def info():
    """What the kernels call: ``{"library": "numpy" | "scipy", "api", "version",
    "architecture", "filepath", "reason"}``."""
    c = _choose()
    lib = c["controller"]
    return {
        "library": c["library"],
        "api": getattr(lib, "internal_api", None),
        "version": getattr(lib, "version", None),
        "architecture": getattr(lib, "architecture", None),
        "filepath": getattr(lib, "filepath", None),
        "reason": c["reason"],
    }
