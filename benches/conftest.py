"""pytest-benchmark set-up for the fastrnn benchmarks (run by hand, not part of `pytest tests`):

    pytest benches --benchmark-only                        # everything, BLAS/torch at 1 thread
    pytest benches --benchmark-only -k "lstm and N20"      # a subset
    pytest benches --benchmark-only --fastrnn-threads 2    # 2 BLAS/torch threads
    pytest benches --benchmark-only --benchmark-group-by=group --benchmark-sort=mean

Every benchmark is grouped by case and operation, so fastrnn, the NumPy reference and torch land
side by side.  All implementations share one process here; `fastrnn bench` (fastrnn/bench/)
runs each in its own process, interleaved, and adds the GEMM floor -- use it for the published
numbers (BENCHMARKS.md).
"""

import os
import sys

import pytest

try:
    import fastrnn  # noqa: F401
except ImportError:  # running from a source tree without an install
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_addoption(parser):
    parser.addoption(
        "--fastrnn-threads",
        type=int,
        default=1,
        help="BLAS / OpenMP / torch threads for the benchmarks (default 1)",
    )


@pytest.fixture(scope="session", autouse=True)
def thread_limits(request):
    """Limit every BLAS/OpenMP pool (threadpoolctl) and torch to --fastrnn-threads."""
    n = request.config.getoption("--fastrnn-threads")
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield n
        return
    with threadpool_limits(limits=n):
        yield n


def pytest_collection_modifyitems(config, items):
    # without pytest-benchmark the `benchmark` fixture is missing: skip instead of erroring
    if config.pluginmanager.hasplugin("benchmark"):
        return
    skip = pytest.mark.skip(reason="pytest-benchmark is not installed")
    for item in items:
        item.add_marker(skip)
