"""The BLAS library the kernels call (fastrnn._blas): the choice, the override, and the same
results through either library."""

import ctypes
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import child_env

from fastrnn import _blas

# A child process runs the same layers through the library FASTRNN_BLAS names and prints what
# it chose and what it computed.
CHILD = """
import json, sys
import numpy as np
import fastrnn
from fastrnn import _blas
rng = np.random.default_rng(3)
out = {"library": _blas.info()["library"]}
for dtype in ("float32", "float64"):
    lstm = fastrnn.TimeLSTM(*(rng.standard_normal(s).astype(dtype) * 0.3
                              for s in ((24, 64), (16, 64), (64,))))
    xs = rng.standard_normal((9, 40, 24)).astype(dtype)  # 360 rows: BLAS's whole-sequence GEMMs
    hs = lstm.forward(xs)
    dxs = lstm.backward(np.ones_like(hs))
    aff = fastrnn.TimeAffine(rng.standard_normal((16, 300)).astype(dtype),
                             rng.standard_normal(300).astype(dtype))
    ys = aff.forward(hs)
    dh = aff.backward(np.cos(ys))
    out[dtype] = [a.tolist() for a in (hs, dxs, *lstm.grads, ys, dh, *aff.grads)]
json.dump(out, sys.stdout)
"""


def run_child(tmp_path, library):
    env = child_env()
    env.pop("FASTRNN_BLAS", None)
    if library is not None:
        env["FASTRNN_BLAS"] = library
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    return proc


def numpy_has_ilp64_openblas():
    """Independently of fastrnn._blas: does NumPy's own OpenBLAS export scipy_sgemm_64_?"""
    from threadpoolctl import threadpool_info

    here = os.path.dirname(np.__file__)
    for lib in threadpool_info():
        if lib["user_api"] == "blas" and lib["filepath"].startswith(here):
            return hasattr(ctypes.CDLL(lib["filepath"]), "scipy_sgemm_64_")
    return False


def test_info_tells_the_choice():
    info = _blas.info()
    assert info["library"] in ("numpy", "scipy")
    assert info["reason"]
    want = "numpy" if numpy_has_ilp64_openblas() else "scipy"
    assert info["library"] == want, info
    if info["library"] == "numpy":
        assert len(_blas.ilp64_addresses()) == 4 and all(_blas.ilp64_addresses())
    else:
        assert _blas.ilp64_addresses() is None


def test_both_libraries_give_the_same_results(tmp_path):
    """Every layer product through scipy's BLAS and through NumPy's: equal within rounding (the
    two OpenBLAS builds may sum in different orders)."""
    runs = {}
    for library in ("scipy", "numpy"):
        proc = run_child(tmp_path, library)
        if library == "numpy" and not numpy_has_ilp64_openblas():
            assert proc.returncode != 0 and "FASTRNN_BLAS=numpy" in proc.stderr
            pytest.skip("NumPy has no ILP64 OpenBLAS of its own here")
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[library] = json.loads(proc.stdout)
        assert runs[library]["library"] == library
    for dtype, rtol in (("float32", 2e-5), ("float64", 1e-12)):
        for a, b in zip(runs["scipy"][dtype], runs["numpy"][dtype]):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_bad_setting_is_a_clear_error(tmp_path):
    proc = run_child(tmp_path, "mkl")
    assert proc.returncode != 0
    assert "FASTRNN_BLAS must be 'numpy' or 'scipy'" in proc.stderr, proc.stderr[-2000:]
