"""The coordinator: starts the workers, interleaves the implementations round after round,
watches the machine's load, cross-checks the outputs and collects the results dict."""

import dataclasses
import os
import platform
import subprocess
import sys
import time

import numpy as np

from .cases import BUSY_CORES, CLIP_IMPLS, IMPL_BACKEND, LAYER_IMPLS, MODEL_IMPLS, MODEL_OP
from .report import add_model_rates, add_rates
from .runners import supports, supports_model
from .targets import evaluate_targets
from .worker import WorkerError, _WorkerProc

PEAK_SECONDS = 0.5  # how long the FMA peak is measured, once per run

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # fastrnn/


class _Progress:
    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total,
                    file=sys.stderr,
                    unit="batch",
                    dynamic_ncols=True,
                    mininterval=0.5,
                    smoothing=0.05,
                )
            except ImportError:
                self.bar = None
        self.total, self.done, self.enabled, self.last = total, 0, enabled, 0.0

    def update(self, desc):
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(desc[:48], refresh=False)
            self.bar.update(1)
        elif self.enabled and time.time() - self.last > 2:
            self.last = time.time()
            print(f"  [{self.done}/{self.total}] {desc}", file=sys.stderr, flush=True)

    def note(self, text):
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _LoadMeter:
    """CPU time used by processes other than ours (and stolen by the hypervisor), from /proc:
    the machine's busy time minus our coordinator's and workers'.  In cores (1.0 = one CPU
    fully busy).  None where /proc is unavailable."""

    def __init__(self, pids):
        self.pids = list(pids) + [os.getpid()]
        try:
            self.hz = os.sysconf("SC_CLK_TCK")
        except (ValueError, OSError, AttributeError):
            self.hz = 100

    @staticmethod
    def _busy():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)

    def _ours(self):
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
                total += int(f[11]) + int(f[12])
            except (OSError, IndexError, ValueError):
                pass
        return total

    def snapshot(self):
        try:
            return (time.perf_counter(), self._busy(), self._ours())
        except (OSError, ValueError, IndexError):
            return None

    def cores_since(self, snap):
        now = self.snapshot()
        if snap is None or now is None or now[0] - snap[0] <= 0:
            return None
        other = (now[1] - snap[1]) - (now[2] - snap[2])
        return max(0.0, other / self.hz / (now[0] - snap[0]))


def wait_until_quiet(limit_s, threshold=BUSY_CORES, window=3.0, out=sys.stderr):
    """Wait (at most limit_s) until other processes use less than threshold cores over a window
    (our idle workers count as other processes here: they use nothing while idle)."""
    meter = _LoadMeter([])
    deadline = time.time() + limit_s
    said = False
    while True:
        snap = meter.snapshot()
        time.sleep(window)
        load = meter.cores_since(snap)
        if load is None or load < threshold:
            return load
        if time.time() > deadline:
            if out:
                print(
                    f"fastrnn bench: machine still busy ({load:.2f} cores used by other "
                    "processes); going on anyway",
                    file=out,
                    flush=True,
                )
            return load
        if out and not said:
            print(
                f"fastrnn bench: waiting up to {limit_s:g} s for a quiet machine ({load:.2f} "
                "cores used by other processes)",
                file=out,
                flush=True,
            )
            said = True


def _stats(samples):
    a = np.asarray(samples) * 1e3
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {
        "median_ms": float(med),
        "min_ms": float(a.min()),
        "iqr_ms": float(q3 - q1),
        "samples_ms": [float(x) for x in a],
    }


def _machine_info():
    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "logical_cpus": os.cpu_count(),
    }
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in (
                "Model name",
                "Vendor ID",
                "Core(s) per socket",
                "Socket(s)",
                "Thread(s) per core",
                "L2 cache",
                "L3 cache",
                "CPU max MHz",
                "Hypervisor vendor",
            ):
                info[key] = value
        flags = next((l for l in out.splitlines() if l.startswith("Flags:")), "")
        info["simd"] = [f for f in ("avx", "avx2", "fma", "avx512f") if f" {f} " in flags + " "]
    except Exception:
        pass
    info["env"] = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("OPENBLAS", "OMP_", "MKL_", "GOTO", "FASTRNN"))
    }
    try:
        root = os.path.dirname(_PACKAGE_DIR)
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0:
            dirty = subprocess.run(
                [
                    "git",
                    "-C",
                    root,
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    "src",
                    "fastrnn",
                    "setup.py",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["git"] = head.stdout.strip() + (
                " (kernel or layer sources modified)" if dirty.stdout.strip() else ""
            )
    except Exception:
        pass
    try:
        import glob

        here = _PACKAGE_DIR
        built = [
            os.path.getmtime(p)
            for p in glob.glob(os.path.join(here, "_*.so"))
            + glob.glob(os.path.join(here, "_*.pyd"))
        ]
        if built:
            info["kernels_built"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(max(built)))
    except OSError:
        pass
    return info


def run_bench(cfg):
    """Run the benchmark described by cfg; returns the results dict (what --json writes)."""
    started = time.time()
    machine = _machine_info()  # before the run: the kernels and tree being measured
    want_torch = any(i in ("torch",) for i in cfg.impls)
    backends = [
        b
        for b in ("fastrnn", "reference", "torch", "floor")
        if b in cfg.impls or (b == "torch" and want_torch)
    ]
    notes = []
    workers = {}
    try:
        for b in backends:
            workers[b] = _WorkerProc(b)
        for b in list(workers):
            try:
                workers[b].info = workers[b].call("hello")
            except WorkerError as exc:
                msg = str(exc).strip().splitlines()[-1]
                notes.append(f"{b} omitted: {msg}")
                workers.pop(b).close()
        peak = None
        if "fastrnn" in workers and (cfg.cases or cfg.model_cases):
            # before any timing, on the worker's one thread; the best ~2 ms slice of the run
            try:
                peak = workers["fastrnn"].call("peak", PEAK_SECONDS)
            except WorkerError as exc:
                peak = {"gflops": None, "error": str(exc).strip().splitlines()[-1]}
            if peak.get("gflops") is None:
                notes.append(f"no FMA peak: {peak.get('error')}")
        layer_impls = [i for i in cfg.impls if i in LAYER_IMPLS and IMPL_BACKEND[i] in workers]
        clip_impls = [i for i in CLIP_IMPLS if IMPL_BACKEND[i] in workers]
        model_impls = [i for i in MODEL_IMPLS if i in cfg.impls and IMPL_BACKEND[i] in workers]
        if "fastrnn_bf16" in model_impls and not (workers["fastrnn"].info or {}).get("bf16"):
            model_impls.remove("fastrnn_bf16")
            notes.append("fastrnn_bf16 omitted: this CPU has no AVX512-BF16")
        results = _run_with_workers(cfg, workers, layer_impls, clip_impls, notes, model_impls)
    finally:
        for w in workers.values():
            w.close()
    fr = next((w.info for w in workers.values() if w.backend == "fastrnn" and w.info), None)
    results["meta"] = {
        "command": cfg.command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "workers": {b: w.info for b, w in workers.items()},
        "blas": (fr or {}).get("blas", []),
        "config": {
            "threads": list(cfg.threads),
            "repeats": cfg.repeats,
            "min_time": cfg.min_time,
            "ops": list(cfg.ops),
            "impls": layer_impls,
            "clip_impls": clip_impls,
            "quick": cfg.quick,
            "settle": cfg.settle,
            "seed": cfg.seed,
            "retry_busy": cfg.retry_busy,
            "cases": [c.name for c in cfg.cases],
            "clip_cases": [c.name for c in cfg.clip_cases],
            "model_cases": [c.label for c in cfg.model_cases],
            "model_impls": model_impls,
            "model_min_time": cfg.model_min_time,
        },
        "notes": notes,
    }
    if peak and peak.get("gflops"):
        results["meta"]["peak"] = peak
    add_rates(results)
    add_model_rates(results)
    results["targets"] = evaluate_targets(results)
    return results


def _rotations(items, r):
    k = r % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def _run_with_workers(cfg, workers, layer_impls, clip_impls, notes, model_impls=()):
    layer_rows, clip_rows, checks, memory = [], [], [], []
    model_rows, model_checks = [], []
    # total batches, for the progress bar
    n_batches = 0
    for case in cfg.cases:
        n_batches += (
            len(cfg.threads)
            * cfg.repeats
            * len(cfg.ops)
            * sum(supports(i, case) for i in layer_impls)
        )
    n_batches += len(cfg.threads) * cfg.repeats * len(cfg.clip_cases) * len(clip_impls)
    for mc in cfg.model_cases:
        n_batches += (
            len(cfg.threads) * cfg.repeats * sum(supports_model(i, mc) for i in model_impls)
        )
    progress = _Progress(n_batches, cfg.progress)
    try:
        for case in cfg.cases:
            impls = [i for i in layer_impls if supports(i, case)]
            outs = {}
            for impl in impls:
                outs[impl] = workers[IMPL_BACKEND[impl]].call(
                    "setup", ("layer", case.name, impl), "layer", impl, case.spec, cfg.seed
                )
            checks.extend(_cross_check(case, outs))
            _measure_group(
                cfg,
                workers,
                ("layer", case.name),
                impls,
                cfg.ops,
                case.name,
                layer_rows,
                progress,
                extra={"cell": case.cell, "N": case.N, "T": case.T, "D": case.D, "H": case.H},
            )
            for b in {IMPL_BACKEND[i] for i in impls}:
                workers[b].call("drop", "layer")
        for cc in cfg.clip_cases:
            for impl in clip_impls:
                workers[IMPL_BACKEND[impl]].call(
                    "setup", ("clip", cc.name, impl), "clip", impl, (cc.name, cc.shapes), cfg.seed
                )
            _measure_group(
                cfg,
                workers,
                ("clip", cc.name),
                clip_impls,
                ("clip",),
                cc.name,
                clip_rows,
                progress,
                extra={"floats": cc.size, "arrays": len(cc.shapes)},
            )
            for b in {IMPL_BACKEND[i] for i in clip_impls}:
                workers[b].call("drop", "clip")
        model_cfg = dataclasses.replace(cfg, min_time=cfg.model_min_time)
        for mc in cfg.model_cases:
            impls = [i for i in model_impls if supports_model(i, mc)]
            if "torch" in model_impls and "torch" not in impls:
                notes.append(f"torch omitted for {mc.label}: no equivalent model")
            outs = {}
            for impl in impls:
                outs[impl] = workers[IMPL_BACKEND[impl]].call(
                    "setup", ("model", mc.label, impl), "model", impl, mc.spec, cfg.seed
                )
            model_checks.extend(_cross_check_losses(mc, outs))
            _measure_group(
                model_cfg,
                workers,
                ("model", mc.label),
                impls,
                (MODEL_OP,),
                mc.label,
                model_rows,
                progress,
                extra={
                    "model": mc.name,
                    "V": mc.V,
                    "E": mc.E,
                    "hidden": list(mc.hidden),
                    "N": mc.N,
                    "T": mc.T,
                    "cell": mc.cell,
                    "tied": mc.tied,
                    "flops": mc.flops,
                },
            )
            for b in {IMPL_BACKEND[i] for i in impls}:
                workers[b].call("drop", "model")
    finally:
        progress.close()
    if cfg.memory:
        for case in cfg.cases:
            for impl in ("fastrnn", "reference"):
                if impl in workers:
                    memory.append(workers[impl].call("memory", impl, case.spec, cfg.seed))
    return {
        "layers": layer_rows,
        "clip": clip_rows,
        "models": model_rows,
        "checks": checks,
        "model_checks": model_checks,
        "memory": memory,
        "ratios": _ratios(layer_rows, clip_rows + model_rows),
    }


def _measure_group(cfg, workers, prefix, impls, ops, case_name, rows, progress, extra):
    meter = _LoadMeter([w.proc.pid for w in workers.values()])
    for threads in cfg.threads:
        for w in {IMPL_BACKEND[i] for i in impls}:
            workers[w].call("set_threads", threads)
        attempt = 0
        while True:
            attempt += 1
            plan = {}
            for op in ops:
                for impl in impls:
                    key = prefix + (impl,)
                    plan[op, impl] = workers[IMPL_BACKEND[impl]].call(
                        "calibrate", key, op, cfg.min_time
                    )
            snap = meter.snapshot()
            samples = {(op, impl): [] for op in ops for impl in impls}
            overheads = {(op, impl): 0.0 for op in ops for impl in impls}
            for r in range(cfg.repeats):
                for op in ops:
                    for impl in _rotations(impls, r):
                        cal = plan[op, impl]
                        res = workers[IMPL_BACKEND[impl]].call(
                            "time", prefix + (impl,), op, cal["k"], cal["t1"] < 0.25
                        )
                        samples[op, impl].append(res["seconds"])
                        overheads[op, impl] = res["overhead"]
                        if attempt == 1:
                            progress.update(f"{case_name} {op} t{threads}")
                        if cfg.settle and threads > 1:
                            time.sleep(cfg.settle)
            background = meter.cores_since(snap)
            if background is None or background <= BUSY_CORES or attempt > cfg.retry_busy:
                break
            progress.note(
                f"{case_name}, threads={threads}: other processes used "
                f"{background:.2f} cores; waiting for a quiet machine and measuring "
                f"again ({attempt}/{cfg.retry_busy})"
            )
            wait_until_quiet(cfg.quiet_wait, out=None)
        for op in ops:
            for impl in impls:
                row = {
                    "threads": threads,
                    "case": case_name,
                    "op": op,
                    "impl": impl,
                    "calls_per_sample": plan[op, impl]["k"],
                    **extra,
                    **_stats(samples[op, impl]),
                    "background_cores": background,
                    "attempts": attempt,
                }
                if impl == "floor" and prefix[0] == "layer":
                    row["subtracted_dispatch_ms"] = overheads[op, impl] * 1e3
                rows.append(row)


def _cross_check(case, outs):
    """Compare every implementation's first-row hs, dxs and dWh with fastrnn's."""
    checks = []
    base = outs.get("fastrnn")
    if base is None:
        return checks
    for impl, o in outs.items():
        if impl == "fastrnn" or o is None:
            continue
        worst = 0.0
        for k in ("hs", "dxs", "dWh"):
            a, b = np.asarray(base[k], np.float64), np.asarray(o[k], np.float64)
            scale = max(1.0, float(np.abs(a).max()))
            worst = max(worst, float(np.abs(a - b).max()) / scale)
        checks.append(
            {"case": case.name, "impl": impl, "max_rel_diff": worst, "ok": bool(worst < 2e-3)}
        )
    return checks


# first iteration: the same weights and data, so the same loss to float32 rounding; later ones
# drift apart for torch (its LSTM has two bias vectors, bias_ih and bias_hh, which both receive
# the gradient, so its effective bias moves twice as far per update), so they only need to agree
# loosely there; the book NumPy model computes what fastrnn's does at every iteration
FIRST_LOSS_RTOL = 1e-4
LATER_LOSS_RTOL = {"reference": 1e-4, "torch": 0.05, "fastrnn_bf16": 0.01}
# bfloat16 products: the loss within bfloat16's precision from the first iteration
FIRST_LOSS_RTOL_OF = {"fastrnn_bf16": 0.01}


def _cross_check_losses(case, outs):
    """Compare each implementation's losses of its first iterations with fastrnn's."""
    base = (outs.get("fastrnn") or {}).get("losses")
    checks = []
    if base is None:
        return checks
    for impl, o in outs.items():
        if impl == "fastrnn" or not o:
            continue
        rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(base, o["losses"])]
        finite = bool(np.all(np.isfinite(o["losses"]))) and bool(np.all(np.isfinite(base)))
        first, later = rel[0], max(rel[1:], default=0.0)
        checks.append(
            {
                "case": case.label,
                "impl": impl,
                "losses": o["losses"],
                "fastrnn_losses": base,
                "first_rel_diff": first,
                "later_max_rel_diff": later,
                "ok": finite
                and first < FIRST_LOSS_RTOL_OF.get(impl, FIRST_LOSS_RTOL)
                and later < LATER_LOSS_RTOL.get(impl, FIRST_LOSS_RTOL),
            }
        )
    return checks


def _ratios(layer_rows, clip_rows):
    med = {}
    for r in layer_rows + clip_rows:
        med[r["threads"], r["case"], r["op"], r["impl"]] = r["median_ms"]
    out = []
    for threads, case, op in dict.fromkeys((k[0], k[1], k[2]) for k in med):
        fr = med.get((threads, case, op, "fastrnn"))
        if not fr:
            continue
        row = {"threads": threads, "case": case, "op": op}
        for impl in ("fastrnn_bf16", "reference", "torch", "torch_loop"):
            if (threads, case, op, impl) in med:
                row[f"{impl}/fastrnn"] = med[threads, case, op, impl] / fr
        if (threads, case, op, "floor") in med:
            row["fastrnn/floor"] = fr / med[threads, case, op, "floor"]
        out.append(row)
    return out
