"""clip_grads: fastrnn.clip_grads vs the NumPy loop (fastrnn.reference.clip_grads), torch's
clip_grad_norm_ (foreach=True: "torch", foreach=False: "torch_loop") and the memory floor (one
np.dot read pass + one in-place `x *= c` pass over one buffer of the same bytes), on the
13.3 M-float gradients of a 2-layer 650-unit word LM and on 2,000 arrays of 100 floats.  Every
call really clips (see fastrnn.bench._ClipRunner)."""

import pytest

from fastrnn import bench


def _need_torch():
    """torch, or skip (any ImportError: a broken install counts as absent)."""
    try:
        import torch
    except ImportError as exc:
        pytest.skip(f"torch not importable: {exc}")
    return torch


@pytest.mark.parametrize("impl", bench.CLIP_IMPLS)
@pytest.mark.parametrize("clip_case", bench.CLIP_CASES, ids=("lm_13M", "2000x100"))
def test_clip_grads(benchmark, clip_case, impl):
    if impl.startswith("torch"):
        _need_torch()
    runner = bench.make_clip_runner(impl, clip_case)
    benchmark.group = clip_case.name
    runner()
    benchmark(runner)
