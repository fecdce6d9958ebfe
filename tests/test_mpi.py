"""Data-parallel training over MPI (`mpirun -n 2 fastrnn lm train --mpi`): two ranks follow the
single-process run to rounding, through a SIGTERM inside an epoch and --resume; a checkpoint
resumes on as many ranks only; the batch must split evenly.  Skips without mpi4py or mpirun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import fastrnn
from fastrnn.cli import main

sys.path.insert(0, os.path.dirname(__file__))
from test_train import write_corpus

pytest.importorskip("mpi4py")
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="no mpirun on PATH")

# (weights averaged from the start: each rank keeps the mean, the checkpoint holds it)
FLAGS = [
    "--hidden-sizes", "12", "--embed-size", "12", "--batch-size", "8", "--bptt", "6",
    "--dtype", "float64", "--epochs", "1", "--no-progress", "--no-plot", "--threads", "1",
    "--average", "after",
]  # fmt: skip


def _env():
    env = dict(os.environ)
    # the fastrnn under test, in the ranks too; Open MPI refuses root unless told
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastrnn.__file__)), env.get("PYTHONPATH", "")]
    )
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def _mpirun(n, cwd, *args):
    """`mpirun -n n python -m fastrnn args...` from `cwd` (not the source tree: `-m` would take
    its unbuilt fastrnn before the installed one)."""
    cmd = [MPIRUN, "-n", str(n), "--oversubscribe", sys.executable, "-m", "fastrnn", *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _corpus(tmp_path):
    return write_corpus(tmp_path / "ptb", n_train=2000)


@needs_mpirun
def test_two_ranks_follow_one_process_through_a_sigterm_and_resume(tmp_path):
    data = _corpus(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["lm", "train", "--data", data, "--out", str(one), *FLAGS]) == 0

    # a checkpoint after every update, so that the SIGTERM finds the run inside its epoch
    proc = _mpirun(2, tmp_path, "lm", "train", "--data", data, "--out", str(two), *FLAGS, "--mpi",
                   "--checkpoint-minutes", "1e-9")  # fmt: skip
    record = two / "last" / "checkpoint.json"
    deadline = time.monotonic() + 60
    while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert record.exists(), out
    state = json.loads(record.read_text())
    assert state["ranks"] == 2 and state["position"] is not None, out
    assert len(state["rng_states_by_rank"]) == 2 and "carried" in state
    assert state["average"]["count"] == state["position"]["windows"] + 1, out

    proc = _mpirun(2, tmp_path, "lm", "train", "--data", data, "--out", str(two), "--resume",
                   "--mpi", "--no-progress", "--no-plot")  # fmt: skip
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    assert "2 MPI ranks, weights averaged from epoch 1 on, resuming in epoch 1 after" in out
    a = json.loads((one / "metrics.json").read_text())
    b = json.loads((two / "metrics.json").read_text())
    for x, y in zip(a["epochs"], b["epochs"], strict=True):
        assert x["steps"] == y["steps"] == x["averaged_over"] - 1 == y["averaged_over"] - 1
        for k in ("train_ppl", "val_ppl"):
            assert y[k] == pytest.approx(x[k], rel=1e-12), k
    assert b["test_ppl"] == pytest.approx(a["test_ppl"], rel=1e-12)

    # the checkpoint of 2 ranks resumes on 2 ranks only
    code = main(["lm", "train", "--data", data, "--out", str(two), "--resume", "--epochs", "2",
                 "--no-progress"])  # fmt: skip
    assert code == 2


@needs_mpirun
def test_rank_count_must_divide_the_batch(tmp_path):
    data = _corpus(tmp_path)
    flags = [f if f != "8" else "7" for f in FLAGS]
    out = str(tmp_path / "r")
    proc = _mpirun(2, tmp_path, "lm", "train", "--data", data, "--out", out, *flags, "--mpi")
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode != 0
    assert "--batch-size 7 must be a multiple of the 2 MPI ranks" in out


def test_one_rank_is_the_single_process_run(tmp_path):
    """--mpi outside mpirun (a world of one) trains exactly as without it."""
    data = _corpus(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["lm", "train", "--data", data, "--out", str(a), *FLAGS, "--max-steps", "20"]) == 0
    flags = [*FLAGS, "--max-steps", "20", "--mpi"]
    assert main(["lm", "train", "--data", data, "--out", str(b), *flags]) == 0
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["epochs"][0]["train_ppl"] == mb["epochs"][0]["train_ppl"]
    assert ma["test_ppl"] == mb["test_ppl"]


def test_reduce_step_on_one_rank_keeps_every_gradient_and_reports_the_flags():
    """The reduction itself (a world of one): strided and mixed-dtype gradients come back as
    they were, the loss and the flags pass through; a batch that does not split is an error."""
    import numpy as np
    from mpi4py import MPI

    from fastrnn.train.distributed import DataParallel

    par = DataParallel(MPI.COMM_SELF)
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    grads = [base[:, ::2], np.linspace(0, 1, 3), np.full((2, 2), 2.0, np.float32)]
    before = [g.copy() for g in grads]
    for stop, checkpoint in ((False, True), (True, False)):
        loss, s, c = par.reduce_step(grads, 2.5, 10, stop, checkpoint)
        assert (loss, s, c) == (2.5, stop, checkpoint)
        for g, b in zip(grads, before):
            np.testing.assert_array_equal(g, b)
    assert par.rows(8) == slice(0, 8)
    par.check_batch(3)
