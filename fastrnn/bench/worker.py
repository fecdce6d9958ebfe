"""Process isolation and timing: the loop each worker process runs (one per implementation, with
its own BLAS/OpenMP thread pools), the parent's handle on it, and the timing primitives."""

import gc
import math
import os
import subprocess
import sys
import time
import traceback

import numpy as np

from .cases import MODEL_OP, Case, ClipCase, ModelCase
from .runners import (
    GemmFloor,
    _ClipRunner,
    make_clip_runner,
    make_layer_runner,
    make_model_runner,
    measure_memory,
)

#: training iterations each model runner runs at setup: warm-up, and the losses cross-checked
MODEL_CHECK_ITERATIONS = 3


def _set_threads(n):
    """Limit every BLAS/OpenMP pool in this process (and torch's) to n threads."""
    info = {}
    try:
        from threadpoolctl import threadpool_limits

        _set_threads.limiter = threadpool_limits(limits=n)
    except ImportError:
        info["warning"] = "threadpoolctl not installed: BLAS threads not limited"
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
        info["torch_threads"] = torch.get_num_threads()
    return info


def _blas_info():
    try:
        from threadpoolctl import threadpool_info

        return [
            {
                k: d.get(k)
                for k in (
                    "user_api",
                    "internal_api",
                    "prefix",
                    "version",
                    "architecture",
                    "threading_layer",
                    "num_threads",
                    "filepath",
                )
            }
            for d in threadpool_info()
        ]
    except ImportError:
        return []


def _time_batch(fn, k, warm):
    """Seconds per call of fn over k back-to-back calls (GC off, as timeit does)."""
    if warm:
        fn()
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        dt = time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()
    return dt / k


def _quiesce(limit=1.0, step=0.02):
    """Return once this process's threads have stopped using the CPU (BLAS and OpenMP pool
    threads busy-wait for a while after a call), at most after limit seconds: so that a worker's
    idle spinning never runs into the next implementation's timings.  Returns the seconds
    waited.

    The window must span a scheduler tick: the kernel adds the CPU time of a thread running on
    another core to the process's total only at ticks (or when the thread enters the kernel,
    which OpenBLAS's busy-wait loop does not).  With 2 ms windows, the NumPy reference's idle
    BLAS worker looked quiet after 2-6 ms and went on to use 0.1 s of CPU, under the next
    implementation's timings (measured: fastrnn's LSTM N20 took 7.1 ms at 2 threads right after
    it, 4.0-4.7 ms otherwise)."""
    t0 = time.perf_counter()
    last = time.process_time()  # CPU time of every thread of this process
    quiet = 0
    while time.perf_counter() - t0 < limit:
        time.sleep(step)
        now = time.process_time()
        # two quiet windows in a row: on a loaded machine a busy thread can wait a whole window
        # for a core and look quiet for one (test_quiesce_waits_for_a_busy_thread failed so)
        quiet = quiet + 1 if now - last < 0.1 * step else 0
        if quiet == 2:
            break
        last = now
    return time.perf_counter() - t0


class _Worker:
    """The loop run inside a worker process: receives (command, args) and replies."""

    def __init__(self, backend):
        self.backend = backend
        self.runners = {}  # key -> runner
        self.threads = None

    def hello(self):
        info = {"backend": self.backend, "pid": os.getpid(), "python": sys.version.split()[0]}
        if self.backend == "torch":
            import torch

            info["torch"] = torch.__version__
            info["mkldnn"] = bool(torch.backends.mkldnn.is_available())
        import scipy

        import fastrnn
        from fastrnn import _isa

        info.update(
            numpy=np.__version__,
            scipy=scipy.__version__,
            fastrnn=getattr(fastrnn, "__version__", "?"),
            fastrnn_kernels=_isa.current(),
            bf16=bool(fastrnn.bf16_supported()),
            fastrnn_file=os.path.dirname(os.path.abspath(fastrnn.__file__)),
        )
        info["blas"] = _blas_info()
        from fastrnn import _blas

        info["fastrnn_blas"] = _blas.info()
        return info

    def peak(self, seconds):
        """One core's float32 FMA peak (fastrnn._cpu), the physical limit rates are quoted
        against; None (with the reason) where this build has no probe."""
        try:
            from fastrnn import _cpu
        except ImportError as exc:
            return {"gflops": None, "error": str(exc)}
        return {
            "gflops": _cpu.peak_gflops("float32", seconds),
            "kernel": _cpu.peak_kernel(),
            "dtype": "float32",
            "seconds": seconds,
        }

    def set_threads(self, n):
        self.threads = n
        info = _set_threads(n)
        for r in self.runners.values():
            if isinstance(r, GemmFloor):
                r.measure_call_overhead()
            elif isinstance(r, _ClipRunner):
                r.set_threads(n)
        info["blas"] = _blas_info()
        return info

    def setup(self, key, kind, impl, spec, seed):
        """Build a runner; warm it with a full step; return its outputs for cross-checking.

        spec is plain data (the classes may live in __main__ on the parent's side): 'CELL N T D H'
        for a layer, (name, shapes) for clip, ModelCase.spec for a model (whose outputs are the
        losses of its first MODEL_CHECK_ITERATIONS iterations)."""
        self.runners.pop(key, None)
        gc.collect()
        if kind == "layer":
            spec = Case.parse(spec)
            r = make_layer_runner(impl, spec, seed)
            r.fwdbwd()  # a fresh worker runs a full step first
            out = None
            if not isinstance(r, GemmFloor):
                o = r.outputs()
                out = {k: v[0].copy() for k, v in o.items() if k in ("hs", "dxs")}
                out["dWh"] = o["dWh"]
            else:
                r.measure_call_overhead()
        elif kind == "model":
            r = make_model_runner(impl, ModelCase(*spec), seed)
            out = {"losses": r.losses(MODEL_CHECK_ITERATIONS)}
        else:
            spec = ClipCase(spec[0], tuple(tuple(x) for x in spec[1]))
            r = make_clip_runner(impl, spec, seed)
            r()
            out = None
        self.runners[key] = r
        return out

    def drop(self, prefix):
        for key in [k for k in self.runners if k[0] == prefix]:
            del self.runners[key]
        gc.collect()

    def _fn(self, key, op):
        r = self.runners[key]
        if op == MODEL_OP:
            return r.iteration
        return getattr(r, op) if op in ("fwd", "fwdbwd") else r

    def calibrate(self, key, op, min_time):
        """Calls per sample so that a sample lasts about min_time; and the time of one call."""
        fn = self._fn(key, op)
        t1 = _time_batch(fn, 1, True)  # after a warm call (thread pools may be asleep)
        if t1 < 0.05:
            t1 = min(t1, *(_time_batch(fn, 1, False) for _ in range(3)))
        k = max(1, min(100000, int(math.ceil(min_time / max(t1, 1e-7)))))
        return {"k": k, "t1": t1}

    def time(self, key, op, k, warm):
        r = self.runners[key]
        per_call = _time_batch(self._fn(key, op), k, warm)
        overhead = r.dispatch_cost(op) if isinstance(r, GemmFloor) else 0.0
        return {"seconds": per_call - overhead, "overhead": overhead, "quiesce": _quiesce()}

    def memory(self, impl, spec, seed):
        return measure_memory(impl, Case.parse(spec), seed)


def _worker_main(fd, backend):
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        if backend == "torch":
            import torch  # noqa: F401  (fails -> reported by hello)
        worker = _Worker(backend)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            cmd, args = conn.recv()
        except EOFError:
            return
        if cmd == "quit":
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", getattr(worker, cmd)(*args)))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class WorkerError(RuntimeError):
    pass


class _WorkerProc:
    """Parent-side handle: a subprocess running _worker_main over a socket pair."""

    def __init__(self, backend):
        import multiprocessing

        self.backend = backend
        parent, child = multiprocessing.Pipe(duplex=True)
        # the folder holding the fastrnn package (fastrnn/bench/worker.py -> three levels up)
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        code = (
            "import sys; from fastrnn.bench.worker import _worker_main; "
            "_worker_main(int(sys.argv[1]), sys.argv[2])"
        )
        # cwd = pkg_root too: `python -c` puts the working directory first on sys.path, and a
        # source checkout there (fastrnn/ without built kernels) would shadow the installed package
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(child.fileno()), backend],
            pass_fds=(child.fileno(),),
            env=env,
            cwd=pkg_root,
            stdout=subprocess.DEVNULL,
        )
        child.close()
        self.conn = parent
        self.info = None

    def call(self, cmd, *args):
        try:
            self.conn.send((cmd, args))
        except OSError:
            pass  # a worker that failed to start has sent its error and exited: read it below
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            raise WorkerError(
                f"{self.backend} worker died ({exc!r}); exit code {self.proc.poll()}"
            ) from None
        if status != "ok":
            raise WorkerError(f"{self.backend} worker: {value}")
        return value

    def close(self):
        try:
            self.conn.send(("quit", ()))
            self.conn.recv()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
