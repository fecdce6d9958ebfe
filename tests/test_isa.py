"""fastrnn._isa: the instruction set of fastrnn's own products (src/gemm/fr_gemm.h).

The default is the best the CPU runs (read here from /proc/cpuinfo, independently of the
kernels' own check); FASTRNN_KERNELS=avx2 and _isa.use switch to AVX2 and back; an instruction
set the CPU lacks is refused, changing nothing; and both sets give the same products (the
layer-level comparisons with the reference run once per set: conftest.isa)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import child_env

from fastrnn import _isa, _packed, _recurrent

MODULES = (_packed, _recurrent)


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_default_is_the_best_the_cpu_runs():
    flags = cpu_flags()
    if flags is None or os.uname().machine != "x86_64":
        pytest.skip("needs /proc/cpuinfo on x86-64")
    has512 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags
    assert _isa.available() == (["avx2", "avx512"] if has512 else ["avx2"])
    if os.environ.get("FASTRNN_KERNELS") != "avx2":
        assert _isa.current() == ("avx512" if has512 else "avx2")


def test_use_switches_every_module_and_restores():
    before = [m._kernel_isa() for m in MODULES]
    assert len(set(before)) == 1
    with _isa.use("avx2"):
        assert [m._kernel_isa() for m in MODULES] == [0] * len(MODULES)
        assert _isa.current() == "avx2"
    assert [m._kernel_isa() for m in MODULES] == before


def test_use_restores_after_an_exception():
    before = _isa.current()
    with pytest.raises(RuntimeError):
        with _isa.use("avx2"):
            raise RuntimeError("boom")
    assert _isa.current() == before


def test_bad_names_and_unsupported_sets_are_refused():
    before = _isa.current()
    with pytest.raises(ValueError, match="name: expected one of"):
        with _isa.use("sse9"):
            pass
    if "avx512" not in _isa.available():
        with pytest.raises(ValueError, match="does not run 'avx512'"):
            with _isa.use("avx512"):
                pass
        with pytest.raises(ValueError, match="not supported by this CPU"):
            _packed._kernel_isa(1)
    assert _isa.current() == before


def test_environment_selects_avx2(tmp_path):
    code = "from fastrnn import _isa, _recurrent; print(_isa.current(), _recurrent._kernel_isa())"
    # the fastrnn under test, from an empty folder (a source checkout in the working directory
    # would shadow an installed package)
    env = dict(child_env(), FASTRNN_KERNELS="avx2")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["avx2", "0"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "M,K,N",
    [
        (1, 7, 9),
        (2, 100, 400),
        (3, 5, 17),
        (13, 65, 33),
        (20, 256, 1024),
        (25, 300, 70),
        (4, 300, 70),
        (7, 520, 50),
    ],
)
def test_both_sets_agree(M, K, N, dtype):
    """The same packed product on each available set equals float64 NumPy within rounding, and
    from 3 rows on the sets agree bitwise: both sum each entry over k in order, one multiply-add
    at a time (for 1-2 rows they interleave 2 or 4 partial sums over k)."""
    rng = np.random.default_rng(M * 1000 + K)
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    P = _packed.pack(B)
    exact = A.astype(np.float64) @ B.astype(np.float64)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    results = []
    for name in _isa.available():
        C = np.full((M, N), np.nan, dtype)
        with _isa.use(name):
            _packed.matmul_packed(A, P, N, C)
        np.testing.assert_allclose(C, exact, rtol=rtol, atol=rtol * np.abs(exact).max())
        results.append(C)
    if M >= 3:
        for C in results[1:]:
            assert np.array_equal(C, results[0])
