"""Which instruction set fastrnn's own matrix products run on (src/gemm/fr_gemm.h).

fastrnn multiplies the recurrent weights itself (packed once per call) and makes the small
products of a single step itself; those micro-kernels exist for AVX-512 and for AVX2 (whose
build also carries a baseline x86-64 clone).  By default the best the CPU runs is used;
``FASTRNN_KERNELS=avx2`` in the environment, or :func:`use` below, picks AVX2 instead, which is
how the tests check both on a machine that has AVX-512.  (The element-wise gate passes are
compiled for x86-64-v4, -v3 and the baseline too, but the loader picks their clone once per
process.)

Every extension module holds its own copy of the setting; this module sets all of them.
"""

import contextlib

from . import _packed, _recurrent

NAMES = ("avx2", "avx512")
_MODULES = (_packed, _recurrent)


def current():
    """Name of the instruction set the products use now ('avx2' also covers the baseline)."""
    return NAMES[_packed._kernel_isa()]


def available():
    """Names of the instruction sets this CPU runs, best last."""
    return [name for code, name in enumerate(NAMES) if _packed._isa_supported(code)]


@contextlib.contextmanager
def _everywhere(setter, value):
    """Inside the block, every module's copy of a setting (`setter`: _kernel_isa or
    _kernel_tn_mode, which return it unchanged when given None) is `value`; then what it was."""
    before = getattr(_packed, setter)(None)
    for module in _MODULES:
        getattr(module, setter)(value)
    try:
        yield
    finally:
        for module in _MODULES:
            getattr(module, setter)(before)


@contextlib.contextmanager
def use(name):
    """Run the products on instruction set `name` ('avx2' or 'avx512') inside the block; not
    thread-safe (the setting is process-wide)."""
    if name not in NAMES:
        raise ValueError(f"name: expected one of {NAMES}, got {name!r}")
    if name not in available():
        raise ValueError(f"name: this CPU does not run {name!r} (it runs {available()})")
    with _everywhere("_kernel_isa", NAMES.index(name)):
        yield


_TN_MODES = {"rule": -1, "blas": 0, "packed": 1}


@contextlib.contextmanager
def tn_packed(how):
    """Make the whole-sequence weight gradients inside the block by `how`: 'packed' (fastrnn's
    gemm_tn_packed, src/gemm/fr_gemm_impl.h), 'blas' (sgemm/dgemm) or 'rule' (the measured choice,
    worth_tn_packed in src/gemm/_packed.pxd: the default).  For the tests, which run both, and for
    A/B timing; not thread-safe (the setting is process-wide)."""
    if how not in _TN_MODES:
        raise ValueError(f"how: expected one of {tuple(_TN_MODES)}, got {how!r}")
    with _everywhere("_kernel_tn_mode", _TN_MODES[how]):
        yield
