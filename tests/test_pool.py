"""The process's worker pool (src/parallel/fr_pool.h, module fastrnn._pool) that runs the kernels'
threads.

Every job must run each thread's share exactly once, also when jobs come back to back, when
several Python threads use the pool at once (all but one fall back to threads of their own),
after fork(), and with the pool bypassed; a job in phases must also finish every share of a
phase before any of the next starts, and must not wait for a worker that has not started (the
caller runs its shares).  Idle workers must stop using the CPU."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from test_threads import run_side_by_side

import fastrnn
from fastrnn import _pool


def check(ns, counts):
    assert len(counts) == len(ns)
    bad = [j for j, (n, c) in enumerate(zip(ns, counts)) if c != [1] * n]
    assert not bad, f"jobs {bad[:5]} ran {counts[bad[0]]} (threads {ns[bad[0]]})"


needs_pool = pytest.mark.skipif(
    not _pool.PERSISTENT, reason="no persistent pool on this platform (no futexes)"
)


@pytest.mark.parametrize("n", range(1, _pool.MAX_THREADS + 1))
def test_every_thread_runs_every_job_once(n):
    check([n] * 3000, _pool.exercise([n] * 3000))
    if _pool.PERSISTENT:
        assert _pool.stats()["workers"] >= n - 1


def test_jobs_of_changing_thread_counts():
    """Workers left out of one job must not take part in the next by mistake."""
    ns = np.random.default_rng(0).integers(1, _pool.MAX_THREADS + 1, 20000).tolist()
    check(ns, _pool.exercise(ns))


@needs_pool
def test_pool_reuses_its_workers():
    _pool.exercise([2] * 10)
    before = _pool.stats()
    _pool.exercise([2] * 500)
    after = _pool.stats()
    assert after["workers"] == before["workers"]
    assert after["jobs"] + after["fallbacks"] - before["jobs"] - before["fallbacks"] == 500


@pytest.mark.parametrize("n", [1, 2, 3, _pool.MAX_THREADS])
@pytest.mark.parametrize("phases", [1, 2, 37])
def test_jobs_in_phases_run_each_share_once_phase_after_phase(n, phases):
    runs, early = _pool.exercise_phases(n, phases, jobs=400)
    assert runs == [[1] * n for _ in range(phases)]
    assert early == 0, f"{early} shares started before the phase before them had finished"


@needs_pool
def test_shares_of_a_sleeping_worker_are_run_by_the_caller():
    """After SPIN_SECONDS idle the worker sleeps; a job of tiny shares is then over before it
    wakes: the caller claims the worker's shares (counted as stolen) instead of waiting."""
    _pool.exercise_phases(2, 3)
    before = _pool.stats()["stolen"]
    for _ in range(20):
        time.sleep(_pool.SPIN_SECONDS * 3)
        runs, early = _pool.exercise_phases(2, 3)
        assert runs == [[1, 1]] * 3 and early == 0
    assert _pool.stats()["stolen"] > before


@needs_pool
def test_jobs_in_phases_back_off_from_slow_workers():
    """A job in phases that its workers did not speed up (here a worker slow in its share, as a
    preempted one is; jobs too small for two threads are another case) makes the next ones run
    on the caller alone, 4, 8, ... of them; with the workers helping again, jobs go back to them."""
    old = _pool.set_backoff(True)
    before = _pool.stats()
    for _ in range(200):  # until a worker (not the caller) has run the slow share once
        _pool.exercise_slow_workers(1, 0.002)
        if _pool.stats()["solo"] > before["solo"]:
            break
    assert _pool.stats()["solo"] > before["solo"], "no job in phases backed off"
    jobs = _pool.stats()["jobs"]
    _pool.exercise_slow_workers(40, 0.0, 0.0002)  # two shares of 0.2 ms: two threads pay
    assert _pool.stats()["jobs"] > jobs
    _pool.set_backoff(old)


def test_jobs_in_phases_from_several_python_threads():
    results = run_side_by_side(
        [lambda n=n: _pool.exercise_phases(n, 9, jobs=300) for n in (2, 3, 2, 4)]
    )
    for n, (runs, early) in zip((2, 3, 2, 4), results):
        assert runs == [[1] * n] * 9 and early == 0


def test_exercise_rejects_bad_thread_counts():
    with pytest.raises(ValueError, match="thread counts must be in 1"):
        _pool.exercise([2, 0])
    with pytest.raises(ValueError, match="thread counts must be in 1"):
        _pool.exercise([_pool.MAX_THREADS + 1])


def test_python_threads_share_the_pool_correctly():
    """Four Python threads submit jobs at once: whoever finds the pool busy runs on threads of
    its own; every job is still complete."""
    results = run_side_by_side([lambda n=n: _pool.exercise([n] * 1500) for n in (2, 3, 2, 4)])
    for n, counts in zip((2, 3, 2, 4), results):
        check([n] * 1500, counts)


def test_bypass_runs_jobs_on_own_threads():
    before = _pool.stats()
    old = _pool.set_bypass(True)
    try:
        counts = _pool.exercise([3] * 20)
    finally:
        _pool.set_bypass(old)
    check([3] * 20, counts)
    assert _pool.stats()["fallbacks"] - before["fallbacks"] == 20


@needs_pool
def test_layers_of_all_cells_use_one_pool():
    """The kernel modules share the process's pool: running threaded LSTM, GRU, RNN and a large
    clip_grads starts no more than one worker per extra thread."""
    rng = np.random.default_rng(0)
    N, T, D, H = 4, 5, 8, 8
    jobs = _pool.stats()["jobs"]
    for cls, G in ((fastrnn.TimeLSTM, 4), (fastrnn.TimeGRU, 3), (fastrnn.TimeRNN, 1)):
        layer = cls(
            *(rng.standard_normal(s).astype(np.float32) for s in ((D, G * H), (H, G * H), (G * H,)))
        )
        layer.threads = 2
        layer.forward(rng.standard_normal((N, T, D)).astype(np.float32))
        layer.backward(rng.standard_normal((N, T, H)).astype(np.float32))
    fastrnn.clip_grads([np.ones(3 << 20, np.float32)], 1.0)
    stats = _pool.stats()
    assert stats["jobs"] > jobs
    assert stats["workers"] <= _pool.MAX_THREADS - 1


@needs_pool
def test_idle_workers_stop_using_the_cpu():
    """After a job, workers poll for SPIN_SECONDS and then sleep: a quarter second later the
    process uses (almost) no CPU while it sleeps."""
    _pool.exercise([_pool.MAX_THREADS] * 50)  # every worker busy, then idle
    time.sleep(0.05)
    cpu0, t0 = time.process_time(), time.perf_counter()
    time.sleep(0.25)
    used = time.process_time() - cpu0
    wall = time.perf_counter() - t0
    assert used < 0.1 * wall, f"{used:.3f} s of CPU in {wall:.3f} s of sleep: workers still spin"


CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    import fastrnn
    from fastrnn import _pool
    _pool.exercise([2] * 100)                  # the parent has a live worker when it forks
    pid = os.fork()
    if pid == 0:
        ok = all(c == [1, 1] for c in _pool.exercise([2] * 200))
        rng = np.random.default_rng(0)
        layer = fastrnn.TimeLSTM(*(rng.standard_normal(s).astype(np.float32)
                                   for s in ((6, 24), (6, 24), (24,))))
        layer.threads = 2
        hs = layer.forward(rng.standard_normal((4, 3, 6)).astype(np.float32))
        ok = ok and bool(np.isfinite(hs).all())
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_works_in_a_forked_child(tmp_path):
    """A forked child has none of its parent's workers: the pool starts afresh there instead of
    waiting for threads that do not exist."""
    env = dict(os.environ)  # import the fastrnn under test (as test_packed does)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=tmp_path,
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
