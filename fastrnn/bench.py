"""`fastrnn bench`: time fastrnn against the NumPy reference, PyTorch and the GEMM floor.

What is measured (float32 throughout):

* layers: ``forward`` and ``forward+backward`` of TimeRNN / TimeLSTM / TimeGRU over a table of
  shapes (cell N T D H), for
    - ``fastrnn``    the Cython+BLAS layers,
    - ``reference``  ``fastrnn.reference``, the pure-NumPy layers they replace,
    - ``torch``      ``torch.nn.RNN/LSTM/GRU`` (batch_first, CPU, the same weights; optional),
    - ``floor``      the GEMM floor: only the matrix products a fused implementation cannot
                     avoid, run through the same BLAS function fastrnn calls (scipy's OpenBLAS
                     ``sgemm``, reached through ``scipy.linalg.cython_blas``) on preallocated
                     buffers.  Forward: one (N*T, D) x (D, GH) GEMM plus T (N, H) x (H, GH);
                     backward: T (N, GH) x (GH, H) plus the three N*T-row GEMMs for dWx, dWh
                     and dX.  The GEMMs are issued from Python through ctypes; the measured cost
                     of issuing an empty call (m = n = k = 0) is subtracted per call, so the
                     floor is BLAS time only.
* clip_grads: in-place global-norm clipping of a 13.3 M-float gradient set shaped like a 2-layer
  650-unit word LM, and of 2,000 arrays of 100 floats, for fastrnn.clip_grads, the NumPy loop
  (fastrnn.reference.clip_grads), torch.nn.utils.clip_grad_norm_ (foreach=True and False) and the
  memory floor: one read pass (``np.dot(x, x)``) plus one in-place scale pass (``x *= c``) over a
  single contiguous buffer holding the same number of bytes.  Every call really clips (each call's
  max_norm is just below the current norm), so every implementation makes both passes.
* memory: the peak extra memory (tracemalloc, which sees NumPy's allocations) of the first
  forward+backward of a fresh fastrnn layer and of a fresh NumPy layer, per N*T*H element.

How: each implementation runs in its own worker process (fresh interpreter, its own BLAS/OpenMP
thread pools, which therefore cannot spin inside another implementation's timings).  A worker
first runs a full forward+backward to warm its heap, then times batches of calls on request.  The
coordinator interleaves the implementations in rotating order, round after round (A B C D,
B C D A, ...), so machine drift hits all alike, and reports the median over rounds.

Also usable from Python: ``run_bench(BenchConfig(...))`` returns the results as a dict (the same
dict ``--json`` writes) and ``format_report(results)`` renders the tables.
"""
import argparse
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np

__all__ = ["Case", "ClipCase", "BenchConfig", "DEFAULT_CASES", "QUICK_CASES", "CLIP_CASES",
           "QUICK_CLIP_CASES", "TARGETS", "add_parser", "run", "run_bench", "format_report",
           "make_layer_runner", "make_clip_runner", "torch_rnn_from_weights", "torch_grads_to_ours",
           "make_weights",
           "GemmFloor", "measure_memory", "evaluate_targets"]

LAYER_IMPLS = ("fastrnn", "reference", "torch", "floor")
CLIP_IMPLS = ("fastrnn", "reference", "torch", "torch_loop", "floor")
IMPL_BACKEND = {"fastrnn": "fastrnn", "reference": "reference", "torch": "torch",
                "torch_loop": "torch", "floor": "floor"}
OPS = ("fwdbwd", "fwd")
OP_TITLES = {"fwdbwd": "forward + backward", "fwd": "forward"}
CELLS = {"rnn": 1, "lstm": 4, "gru": 3, "gru_classic": 3}
BUSY_CORES = 0.1   # CPU (in cores) used by other processes above which timings count as disturbed
NOISY = 0.2        # a median whose samples' IQR exceeds this fraction of it is marked '~'


# ---- what is measured ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One layer shape.  cell: rnn, lstm, gru (reset_after=True, the torch form) or gru_classic
    (reset_after=False)."""
    cell: str
    N: int
    T: int
    D: int
    H: int

    @property
    def name(self):
        return f"{self.cell} N{self.N} T{self.T} D{self.D} H{self.H}"

    @property
    def spec(self):
        return f"{self.cell} {self.N} {self.T} {self.D} {self.H}"

    @property
    def blocks(self):
        return CELLS[self.cell]

    @classmethod
    def parse(cls, spec):
        """'lstm 20 35 100 100' (or 'lstm,20,35,100,100') -> Case."""
        parts = spec.replace(",", " ").split()
        if len(parts) != 5 or parts[0] not in CELLS:
            raise ValueError(f"shape spec must be 'CELL N T D H' with CELL one of "
                             f"{', '.join(CELLS)}, got {spec!r}")
        N, T, D, H = (int(p) for p in parts[1:])
        if min(N, T, D, H) < 1:
            raise ValueError(f"shape sizes must be >= 1, got {spec!r}")
        return cls(parts[0], N, T, D, H)


@dataclass(frozen=True)
class ClipCase:
    """A list of gradient shapes for clip_grads."""
    name: str
    shapes: tuple

    @property
    def size(self):
        return sum(int(np.prod(s)) for s in self.shapes)


DEFAULT_CASES = tuple(Case.parse(s) for s in (
    "lstm 20 35 100 100", "lstm 20 35 650 650", "lstm 64 100 256 256", "lstm 1 200 128 128",
    "lstm 128 50 512 512", "gru 20 35 100 100", "gru 64 100 256 256", "rnn 20 35 100 100",
    "rnn 64 100 256 256", "gru_classic 20 35 100 100", "gru_classic 64 100 256 256"))
QUICK_CASES = tuple(Case.parse(s) for s in (
    "lstm 20 35 100 100", "lstm 1 200 128 128", "lstm 64 100 256 256", "gru 20 35 100 100",
    "rnn 20 35 100 100"))

# a 2-layer, 650-unit word LM (vocabulary 10,000, tied output weights): embedding, two LSTMs,
# output bias -- 13,275,200 floats
LM_SHAPES = ((10000, 650),
             (650, 2600), (650, 2600), (2600,),
             (650, 2600), (650, 2600), (2600,),
             (10000,))
CLIP_CASES = (ClipCase("clip LM 13.3M floats", LM_SHAPES),
              ClipCase("clip 2000 x 100 floats", ((100,),) * 2000))
QUICK_CLIP_CASES = CLIP_CASES


@dataclass
class BenchConfig:
    cases: tuple = DEFAULT_CASES
    clip_cases: tuple = CLIP_CASES
    threads: tuple = (1,)
    repeats: int = 9             # rounds; each yields one sample per implementation
    min_time: float = 0.1        # seconds per sample (calls are batched up to this)
    ops: tuple = OPS
    impls: tuple = LAYER_IMPLS   # the layer implementations (clip uses the matching ones)
    memory: bool = True
    settle: float = 0.0          # seconds of idle between two implementations' batches
    retry_busy: int = 0          # re-measure a group disturbed by other processes up to this often
    quiet_wait: float = 120.0    # seconds to wait for a quiet machine before such a retry
    progress: bool = True
    command: str = ""
    quick: bool = False
    seed: int = 0


# ---- data and runners (used by the workers, by benches/ and by the tests) -------------------------

def _seed_of(name, seed):
    return (sum(ord(c) * 131 ** i for i, c in enumerate(name)) + seed) % 2**32


def make_weights(case, seed=0):
    """Deterministic float32 (Wx, Wh, b, xs, dhs) for a case (same in every worker)."""
    rng = np.random.default_rng(_seed_of(case.name, seed))
    G = case.blocks * case.H
    f = np.float32
    Wx = (rng.standard_normal((case.D, G)) / np.sqrt(case.D)).astype(f)
    Wh = (rng.standard_normal((case.H, G)) / np.sqrt(case.H)).astype(f)
    bshape = (2, G) if case.cell == "gru" else (G,)
    b = (0.1 * rng.standard_normal(bshape)).astype(f)
    xs = rng.standard_normal((case.N, case.T, case.D)).astype(f)
    dhs = rng.standard_normal((case.N, case.T, case.H)).astype(f)
    return Wx, Wh, b, xs, dhs


def _numpy_layer(module, case, Wx, Wh, b):
    if case.cell == "rnn":
        return module.TimeRNN(Wx, Wh, b)
    if case.cell == "lstm":
        return module.TimeLSTM(Wx, Wh, b)
    return module.TimeGRU(Wx, Wh, b, reset_after=(case.cell == "gru"))


_TORCH_BLOCKS = {          # torch's row blocks, as (our block, sign) per torch block
    "lstm": ((2, 1), (0, 1), (1, 1), (3, 1)),       # i, f, g, o  <-  ours f, g, i, o
    "gru": ((1, 1), (0, -1), (2, 1)),               # r, z, n     <-  ours z, r, h~ (z negated)
    "rnn": ((0, 1),),
}


def torch_rnn_from_weights(cell, Wx, Wh, b, single_step=False):
    """A torch.nn.RNN/LSTM/GRU (batch_first, float32, CPU) -- or, with single_step, the matching
    torch.nn.RNNCell/LSTMCell/GRUCell -- computing exactly what the fastrnn layer (cell) with these
    weights computes.

    LSTM: ours f, g, i, o column blocks -> torch's i, f, g, o rows; b goes to bias_ih, bias_hh = 0.
    GRU (reset_after=True only): ours z, r, h~ -> torch's r, z, n; torch's z is our 1 - z, so the z
    block of every weight and bias is negated; b[0] -> bias_ih, b[1] -> bias_hh.
    RNN: tanh nonlinearity, W.T, b -> bias_ih, bias_hh = 0."""
    import torch
    if cell not in _TORCH_BLOCKS:
        raise ValueError(f"torch has no equivalent of cell {cell!r}")
    D, G = Wx.shape
    H = Wh.shape[0]
    blocks = _TORCH_BLOCKS[cell]

    def rows(W):  # (X, k*H) column blocks -> (k*H, X) torch rows, reordered and signed
        return np.concatenate([s * W[:, k * H:(k + 1) * H].T for k, s in blocks])

    def vec(v):
        return np.concatenate([s * v[k * H:(k + 1) * H] for k, s in blocks])

    if cell == "gru":
        b_ih, b_hh = vec(b[0]), vec(b[1])
    else:
        b_ih, b_hh = vec(b), np.zeros(G, np.float32)
    if single_step:
        cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[cell]
        net, sfx = cls(D, H, bias=True), ""
    else:
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        net, sfx = cls(D, H, num_layers=1, batch_first=True, bias=True), "_l0"
    with torch.no_grad():
        for name, value in (("weight_ih", rows(Wx)), ("weight_hh", rows(Wh)),
                            ("bias_ih", b_ih), ("bias_hh", b_hh)):
            getattr(net, name + sfx).copy_(
                torch.from_numpy(np.ascontiguousarray(value, np.float32)))
    return net.float()


def torch_grads_to_ours(cell, net):
    """[dWx, dWh, db] in fastrnn's layout from the .grad of a net made by torch_rnn_from_weights
    (db of shape (2, 3H) for the GRU, like its bias)."""
    sfx = "_l0" if hasattr(net, "weight_ih_l0") else ""
    g = {n: getattr(net, n + sfx).grad.detach().numpy()
         for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    blocks = _TORCH_BLOCKS[cell]
    H = g["weight_hh"].shape[1]
    ours = [None] * len(blocks)
    for t, (k, s) in enumerate(blocks):
        ours[k] = (t, s)

    def cols(W):      # (k*H, X) torch rows -> (X, k*H) our column blocks
        return np.concatenate([s * W[t * H:(t + 1) * H].T for t, s in ours], axis=1)

    def vec(v):
        return np.concatenate([s * v[t * H:(t + 1) * H] for t, s in ours])

    if cell == "gru":
        db = np.stack([vec(g["bias_ih"]), vec(g["bias_hh"])])
    else:
        db = vec(g["bias_ih"])
    return [cols(g["weight_ih"]), cols(g["weight_hh"]), db]


def supports(impl, case):
    """Whether an implementation has an equivalent of the case (torch has no classic GRU)."""
    return not (impl in ("torch", "torch_loop") and case.cell == "gru_classic")


class _LayerRunner:
    """fwd() and fwdbwd() of one implementation on one case; outputs() for the cross-check."""

    correction = 0.0   # seconds per call subtracted from timings (the floor's dispatch cost)

    def outputs(self):
        raise NotImplementedError


class _NumpyApiRunner(_LayerRunner):
    def __init__(self, module, case, seed):
        Wx, Wh, b, self.xs, self.dhs = make_weights(case, seed)
        self.layer = _numpy_layer(module, case, Wx, Wh, b)

    def fwd(self):
        self.layer.forward(self.xs)

    def fwdbwd(self):
        self.layer.forward(self.xs)
        self.layer.backward(self.dhs)

    def outputs(self):
        hs = np.array(self.layer.forward(self.xs))
        dxs = np.array(self.layer.backward(self.dhs))
        return {"hs": hs, "dxs": dxs, "dWh": np.array(self.layer.grads[1])}


class _TorchRunner(_LayerRunner):
    def __init__(self, case, seed):
        import torch
        self.torch = torch
        Wx, Wh, b, xs, dhs = make_weights(case, seed)
        self.net = torch_rnn_from_weights(case.cell, Wx, Wh, b)
        self.cell = case.cell
        self.x = torch.from_numpy(xs).requires_grad_(True)   # dX is computed, as fastrnn does
        self.dh = torch.from_numpy(dhs)

    def fwd(self):
        self.net(self.x)

    def fwdbwd(self):
        # a training step's pattern: grads set to None (optimizer.zero_grad()), forward, backward
        self.net.zero_grad(set_to_none=True)
        self.x.grad = None
        out, _ = self.net(self.x)
        out.backward(self.dh)

    def outputs(self):
        self.fwdbwd()
        out, _ = self.net(self.x)
        return {"hs": out.detach().numpy().copy(), "dxs": self.x.grad.numpy().copy(),
                "dWh": torch_grads_to_ours(self.cell, self.net)[1]}


# -- the GEMM floor ---------------------------------------------------------------------------------

def _blas_pointer(name):
    """Address of the BLAS routine fastrnn calls (scipy.linalg.cython_blas: scipy's OpenBLAS)."""
    import ctypes
    from scipy.linalg import cython_blas
    cap = cython_blas.__pyx_capi__[name]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(cap, api.PyCapsule_GetName(cap))


class GemmFloor(_LayerRunner):
    """The matrix products of a fused RNN/LSTM/GRU forward and backward, nothing else.

    Buffers are time-major and preallocated; every product writes (or accumulates, beta = 1)
    into its final place, so nothing is allocated or copied while timed.  Row-major products go
    to column-major BLAS as C^T = B^T A^T, and a single-row product (batch 1) to sgemv instead of
    sgemm -- the same mapping and the same choice as fastrnn's src/_blas.pxd, so the floor is the
    best the library fastrnn uses can do.  The calls are issued from Python through ctypes; the
    cost of issuing an empty call is measured (measure_call_overhead) and subtracted."""

    def __init__(self, case, seed=0):
        import ctypes
        self.ct = ctypes
        self._keep = []
        P = ctypes.c_void_p
        self._sgemm = ctypes.CFUNCTYPE(None, *([P] * 13))(_blas_pointer("sgemm"))
        self._sgemm.argtypes = [P] * 13
        self._sgemv = ctypes.CFUNCTYPE(None, *([P] * 11))(_blas_pointer("sgemv"))
        self._sgemv.argtypes = [P] * 11
        N, T, D, H = case.N, case.T, case.D, case.H
        G = case.blocks * H
        NT = N * T
        rng = np.random.default_rng(_seed_of(case.name, seed))
        f = np.float32
        self.case = case
        self.Wx = (rng.standard_normal((D, G)) / np.sqrt(D)).astype(f)
        self.Wh = (rng.standard_normal((H, G)) / np.sqrt(H)).astype(f)
        self.X = rng.standard_normal((NT, D)).astype(f)            # step t: rows t*N .. t*N+N-1
        self.Hs = (0.5 * rng.standard_normal((NT, H))).astype(f)   # h_{t-1} of every step
        self.G = np.zeros((NT, G), f)
        self.dG = (0.1 * rng.standard_normal((NT, G))).astype(f)
        self.dh = np.zeros((N, H), f)
        self.dWx = np.zeros((D, G), f)
        self.dWh = np.zeros((H, G), f)
        self.dX = np.zeros((NT, D), f)
        p = lambda a, row=0: a.ctypes.data + row * a.shape[1] * 4   # noqa: E731
        self.fwd_plan = [self._product(False, False, NT, G, D, 1, p(self.X), D, p(self.Wx), G,
                                       0, p(self.G), G)]
        self.fwd_plan += [self._product(False, False, N, G, H, 1, p(self.Hs, t * N), H,
                                        p(self.Wh), G, 1, p(self.G, t * N), G) for t in range(T)]
        self.bwd_plan = [self._product(False, True, N, H, G, 1, p(self.dG, t * N), G, p(self.Wh),
                                       G, 0, p(self.dh), H) for t in reversed(range(T))]
        self.bwd_plan += [
            self._product(True, False, D, G, NT, 1, p(self.X), D, p(self.dG), G, 0, p(self.dWx),
                          G),
            self._product(True, False, H, G, NT, 1, p(self.Hs), H, p(self.dG), G, 0,
                          p(self.dWh), G),
            self._product(False, True, NT, D, G, 1, p(self.dG), G, p(self.Wx), G, 0, p(self.dX),
                          D)]
        # empty calls of each routine, to measure what issuing one costs
        z = p(self.dh)
        self._empty = {
            "sgemm": (self._sgemm, self._gemm_args(False, False, 0, 0, 0, 1, z, 1, z, 1, 0, z, 1)),
            "sgemv": (self._sgemv, self._gemv_args(False, False, 0, 0, 0, 1, z, 1, z, 1, 0, z))}
        self.call_overhead = {"sgemm": 0.0, "sgemv": 0.0}

    def _ref(self, obj):
        self._keep.append(obj)
        return self.ct.addressof(obj)

    def _gemm_args(self, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        ct, ref = self.ct, self._ref
        ta, tb = (b"T" if trans_a else b"N"), (b"T" if trans_b else b"N")
        i = ct.c_int
        return (ref(ct.c_char(tb)), ref(ct.c_char(ta)), ref(i(n)), ref(i(m)), ref(i(k)),
                ref(ct.c_float(alpha)), b, ref(i(max(ldb, 1))), a, ref(i(max(lda, 1))),
                ref(ct.c_float(beta)), c, ref(i(max(ldc, 1))))

    def _gemv_args(self, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c):
        ct, ref = self.ct, self._ref
        i = ct.c_int
        rows, cols = (k, n) if trans_b else (n, k)
        incx = lda if trans_a else 1
        return (ref(ct.c_char(b"T" if trans_b else b"N")), ref(i(rows)), ref(i(cols)),
                ref(ct.c_float(alpha)), b, ref(i(max(ldb, 1))), a, ref(i(incx)),
                ref(ct.c_float(beta)), c, ref(i(1)))

    def _product(self, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """Row-major C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C as (routine, pointers)."""
        if m == 1:
            return ("sgemv", self._sgemv,
                    self._gemv_args(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c))
        return ("sgemm", self._sgemm,
                self._gemm_args(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))

    @staticmethod
    def _run(plan):
        for _, f, args in plan:
            f(*args)

    def fwd(self):
        self._run(self.fwd_plan)

    def fwdbwd(self):
        self._run(self.fwd_plan)
        self._run(self.bwd_plan)

    def dispatch_cost(self, op):
        """Seconds the Python loop adds to one fwd (or fwdbwd) of the plan: subtracted."""
        plan = self.fwd_plan + (self.bwd_plan if op == "fwdbwd" else [])
        return sum(self.call_overhead[name] for name, _, _ in plan)

    def measure_call_overhead(self, rounds=7, calls=500):
        """Seconds to issue one call with zero sizes from the Python loop (ctypes + the BLAS
        entry checks), per routine: what the Python driver adds per product over a loop in C."""
        for name, (f, args) in self._empty.items():
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(calls):
                    f(*args)
                samples.append((time.perf_counter() - t0) / calls)
            self.call_overhead[name] = float(np.median(samples))
        return dict(self.call_overhead)

    def outputs(self):
        """(for tests) run both plans once and return the products for checking against NumPy."""
        self.fwdbwd()
        return {"G": self.G.copy(), "dh": self.dh.copy(), "dWx": self.dWx.copy(),
                "dWh": self.dWh.copy(), "dX": self.dX.copy()}


def make_layer_runner(impl, case, seed=0):
    """An object with fwd() and fwdbwd() (and outputs()) for implementation impl on case."""
    if impl == "fastrnn":
        import fastrnn
        return _NumpyApiRunner(fastrnn, case, seed)
    if impl == "reference":
        from fastrnn import reference
        return _NumpyApiRunner(reference, case, seed)
    if impl == "torch":
        return _TorchRunner(case, seed)
    if impl == "floor":
        return GemmFloor(case, seed)
    raise ValueError(f"unknown implementation {impl!r}")


# -- clip_grads -----------------------------------------------------------------------------------

def make_grads(clip_case, seed=0):
    rng = np.random.default_rng(_seed_of(clip_case.name, seed))
    return [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in clip_case.shapes]


CLIP_DECAY = 0.9999   # each call clips to this fraction of the current norm
PARALLEL_MIN = 1 << 20  # the clip memory floor splits its scale pass over threads from this size


class _ClipRunner:
    """Calling it clips the gradients in place once, to CLIP_DECAY x their current norm, so the
    scaling pass always runs; values shrink slowly (no denormals for > 10^5 calls)."""

    correction = 0.0

    def __init__(self, impl, clip_case, seed=0):
        self.impl = impl
        self.grads = make_grads(clip_case, seed)
        norm = math.sqrt(sum(float(np.dot(g.ravel().astype(np.float64),
                                          g.ravel().astype(np.float64))) for g in self.grads))
        self.max_norm = norm
        if impl == "fastrnn":
            import fastrnn
            self._clip = fastrnn.clip_grads
        elif impl == "reference":
            from fastrnn import reference
            self._clip = reference.clip_grads
        elif impl in ("torch", "torch_loop"):
            import torch
            params = []
            for g in self.grads:
                p = torch.nn.Parameter(torch.empty(g.shape, dtype=torch.float32))
                p.grad = torch.from_numpy(g)          # shares the gradient's memory
                params.append(p)
            foreach = impl == "torch"
            clip = torch.nn.utils.clip_grad_norm_
            self._clip = lambda grads, m: clip(params, m, foreach=foreach)
        elif impl == "floor":
            self._flat = np.concatenate([g.ravel() for g in self.grads])
            self.grads = [self._flat]
            self._clip = self._floor
            self._pool = None
            self.set_threads(1)
        else:
            raise ValueError(f"unknown clip implementation {impl!r}")

    def set_threads(self, n):
        """The memory floor uses n cores, as the others may: BLAS sdot is threaded by OpenBLAS
        itself; the scale pass is split into n slices on a thread pool (NumPy releases the GIL),
        for buffers of at least PARALLEL_MIN floats (below, threads cost more than they save)."""
        if self.impl != "floor":
            return
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._slices = [self._flat]
        if n > 1 and self._flat.size >= PARALLEL_MIN:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(n - 1)
            self._slices = np.array_split(self._flat, n)

    def _floor(self, grads, m):
        flat, c = self._flat, np.float32(CLIP_DECAY)
        s = np.dot(flat, flat)                        # one read pass (BLAS sdot)
        if self._pool is None:
            flat *= c                                 # one in-place scale pass
        else:
            futures = [self._pool.submit(np.multiply, x, c, out=x) for x in self._slices[1:]]
            np.multiply(self._slices[0], c, out=self._slices[0])
            for f in futures:
                f.result()
        return s

    def __call__(self):
        self.max_norm *= CLIP_DECAY
        self._clip(self.grads, self.max_norm)


def make_clip_runner(impl, clip_case, seed=0):
    return _ClipRunner(impl, clip_case, seed)


# -- memory ---------------------------------------------------------------------------------------

def measure_memory(impl, case, seed=0):
    """Peak bytes allocated (tracemalloc: NumPy's buffers included) during the first
    forward+backward of a freshly built layer, over what existed before; and what the layer still
    holds afterwards (caches), outputs excluded."""
    import tracemalloc
    runner = make_layer_runner(impl, case, seed)
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        hs = runner.layer.forward(runner.xs)
        dxs = runner.layer.backward(runner.dhs)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    NTH = case.N * case.T * case.H
    retained = current - base - hs.nbytes - dxs.nbytes
    return {"case": case.name, "impl": impl, "peak_bytes": int(peak - base),
            "peak_bytes_per_NTH": (peak - base) / NTH, "retained_bytes": int(retained),
            "retained_bytes_per_NTH": retained / NTH}


# ---- worker processes ---------------------------------------------------------------------------

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
        return [{k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                        "architecture", "threading_layer", "num_threads",
                                        "filepath")} for d in threadpool_info()]
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
    last = time.process_time()           # CPU time of every thread of this process
    while time.perf_counter() - t0 < limit:
        time.sleep(step)
        now = time.process_time()
        if now - last < 0.1 * step:
            break
        last = now
    return time.perf_counter() - t0


class _Worker:
    """The loop run inside a worker process: receives (command, args) and replies."""

    def __init__(self, backend):
        self.backend = backend
        self.runners = {}     # key -> runner
        self.threads = None

    def hello(self):
        info = {"backend": self.backend, "pid": os.getpid(), "python": sys.version.split()[0]}
        if self.backend == "torch":
            import torch
            info["torch"] = torch.__version__
            info["mkldnn"] = bool(torch.backends.mkldnn.is_available())
        import fastrnn
        import scipy
        from fastrnn import _isa
        info.update(numpy=np.__version__, scipy=scipy.__version__,
                    fastrnn=getattr(fastrnn, "__version__", "?"), fastrnn_kernels=_isa.current(),
                    fastrnn_file=os.path.dirname(os.path.abspath(fastrnn.__file__)))
        info["blas"] = _blas_info()
        return info

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
        for a layer, (name, shapes) for clip."""
        self.runners.pop(key, None)
        gc.collect()
        if kind == "layer":
            spec = Case.parse(spec)
            r = make_layer_runner(impl, spec, seed)
            r.fwdbwd()                      # a fresh worker runs a full step first
            out = None
            if not isinstance(r, GemmFloor):
                o = r.outputs()
                out = {k: v[0].copy() for k, v in o.items() if k in ("hs", "dxs")}
                out["dWh"] = o["dWh"]
            else:
                r.measure_call_overhead()
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
        return getattr(r, op) if op in ("fwd", "fwdbwd") else r

    def calibrate(self, key, op, min_time):
        """Calls per sample so that a sample lasts about min_time; and the time of one call."""
        fn = self._fn(key, op)
        t1 = _time_batch(fn, 1, True)      # after a warm call (thread pools may be asleep)
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
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"]
                                        if env.get("PYTHONPATH") else "")
        code = "import sys; from fastrnn.bench import _worker_main; " \
               "_worker_main(int(sys.argv[1]), sys.argv[2])"
        # cwd = pkg_root too: `python -c` puts the working directory first on sys.path, and a
        # source checkout there (fastrnn/ without built kernels) would shadow the installed package
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(child.fileno()), backend],
                                     pass_fds=(child.fileno(),), env=env, cwd=pkg_root,
                                     stdout=subprocess.DEVNULL)
        child.close()
        self.conn = parent
        self.info = None

    def call(self, cmd, *args):
        try:
            self.conn.send((cmd, args))
        except OSError:
            pass    # a worker that failed to start has sent its error and exited: read it below
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            raise WorkerError(f"{self.backend} worker died ({exc!r}); exit code "
                              f"{self.proc.poll()}") from None
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


# ---- the coordinator ----------------------------------------------------------------------------

class _Progress:
    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, file=sys.stderr, unit="batch", dynamic_ncols=True,
                                mininterval=0.5, smoothing=0.05)
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
                print(f"fastrnn bench: machine still busy ({load:.2f} cores used by other "
                      "processes); going on anyway", file=out, flush=True)
            return load
        if out and not said:
            print(f"fastrnn bench: waiting up to {limit_s:g} s for a quiet machine ({load:.2f} "
                  "cores used by other processes)", file=out, flush=True)
            said = True


def _stats(samples):
    a = np.asarray(samples) * 1e3
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_ms": float(med), "min_ms": float(a.min()), "iqr_ms": float(q3 - q1),
            "samples_ms": [float(x) for x in a]}


def _machine_info():
    info = {"platform": platform.platform(), "python": sys.version.split()[0],
            "logical_cpus": os.cpu_count()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("Model name", "Vendor ID", "Core(s) per socket", "Socket(s)",
                       "Thread(s) per core", "L2 cache", "L3 cache", "CPU max MHz",
                       "Hypervisor vendor"):
                info[key] = value
        flags = next((l for l in out.splitlines() if l.startswith("Flags:")), "")
        info["simd"] = [f for f in ("avx", "avx2", "fma", "avx512f") if f" {f} " in flags + " "]
    except Exception:
        pass
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS", "OMP_", "MKL_", "GOTO", "FASTRNN"))}
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                    "--untracked-files=no", "--", "src", "fastrnn", "setup.py"],
                                   capture_output=True, text=True, timeout=10)
            info["git"] = head.stdout.strip() + (" (kernel or layer sources modified)"
                                                 if dirty.stdout.strip() else "")
    except Exception:
        pass
    try:
        import glob
        here = os.path.dirname(os.path.abspath(__file__))
        built = [os.path.getmtime(p) for p in glob.glob(os.path.join(here, "_*.so"))
                 + glob.glob(os.path.join(here, "_*.pyd"))]
        if built:
            info["kernels_built"] = time.strftime("%Y-%m-%d %H:%M:%S",
                                                  time.localtime(max(built)))
    except OSError:
        pass
    return info


def run_bench(cfg):
    """Run the benchmark described by cfg; returns the results dict (what --json writes)."""
    started = time.time()
    machine = _machine_info()       # before the run: the kernels and tree being measured
    want_torch = any(i in ("torch",) for i in cfg.impls)
    backends = [b for b in ("fastrnn", "reference", "torch", "floor")
                if b in cfg.impls or (b == "torch" and want_torch)]
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
        layer_impls = [i for i in cfg.impls if IMPL_BACKEND[i] in workers]
        clip_impls = [i for i in CLIP_IMPLS if IMPL_BACKEND[i] in workers]
        results = _run_with_workers(cfg, workers, layer_impls, clip_impls, notes)
    finally:
        for w in workers.values():
            w.close()
    fr = next((w.info for w in workers.values() if w.backend == "fastrnn" and w.info), None)
    results["meta"] = {
        "command": cfg.command, "started": time.strftime("%Y-%m-%d %H:%M:%S",
                                                         time.localtime(started)),
        "duration_s": round(time.time() - started, 1), "machine": machine,
        "workers": {b: w.info for b, w in workers.items()},
        "blas": (fr or {}).get("blas", []),
        "config": {"threads": list(cfg.threads), "repeats": cfg.repeats,
                   "min_time": cfg.min_time, "ops": list(cfg.ops), "impls": layer_impls,
                   "clip_impls": clip_impls, "quick": cfg.quick, "settle": cfg.settle,
                   "seed": cfg.seed, "retry_busy": cfg.retry_busy,
                   "cases": [c.name for c in cfg.cases],
                   "clip_cases": [c.name for c in cfg.clip_cases]},
        "notes": notes,
    }
    results["targets"] = evaluate_targets(results)
    return results


def _rotations(items, r):
    k = r % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def _run_with_workers(cfg, workers, layer_impls, clip_impls, notes):
    layer_rows, clip_rows, checks, memory = [], [], [], []
    # total batches, for the progress bar
    n_batches = 0
    for case in cfg.cases:
        n_batches += len(cfg.threads) * cfg.repeats * len(cfg.ops) * sum(
            supports(i, case) for i in layer_impls)
    n_batches += len(cfg.threads) * cfg.repeats * len(cfg.clip_cases) * len(clip_impls)
    progress = _Progress(n_batches, cfg.progress)
    try:
        for case in cfg.cases:
            impls = [i for i in layer_impls if supports(i, case)]
            outs = {}
            for impl in impls:
                outs[impl] = workers[IMPL_BACKEND[impl]].call(
                    "setup", ("layer", case.name, impl), "layer", impl, case.spec, cfg.seed)
            checks.extend(_cross_check(case, outs))
            _measure_group(cfg, workers, ("layer", case.name), impls, cfg.ops, case.name,
                           layer_rows, progress, extra={"cell": case.cell, "N": case.N,
                                                        "T": case.T, "D": case.D, "H": case.H})
            for b in {IMPL_BACKEND[i] for i in impls}:
                workers[b].call("drop", "layer")
        for cc in cfg.clip_cases:
            for impl in clip_impls:
                workers[IMPL_BACKEND[impl]].call("setup", ("clip", cc.name, impl), "clip", impl,
                                                 (cc.name, cc.shapes), cfg.seed)
            _measure_group(cfg, workers, ("clip", cc.name), clip_impls, ("clip",), cc.name,
                           clip_rows, progress, extra={"floats": cc.size,
                                                       "arrays": len(cc.shapes)})
            for b in {IMPL_BACKEND[i] for i in clip_impls}:
                workers[b].call("drop", "clip")
    finally:
        progress.close()
    if cfg.memory:
        for case in cfg.cases:
            for impl in ("fastrnn", "reference"):
                if impl in workers:
                    memory.append(workers[impl].call("memory", impl, case.spec, cfg.seed))
    return {"layers": layer_rows, "clip": clip_rows, "checks": checks, "memory": memory,
            "ratios": _ratios(layer_rows, clip_rows)}


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
                        "calibrate", key, op, cfg.min_time)
            snap = meter.snapshot()
            samples = {(op, impl): [] for op in ops for impl in impls}
            overheads = {(op, impl): 0.0 for op in ops for impl in impls}
            for r in range(cfg.repeats):
                for op in ops:
                    for impl in _rotations(impls, r):
                        cal = plan[op, impl]
                        res = workers[IMPL_BACKEND[impl]].call(
                            "time", prefix + (impl,), op, cal["k"], cal["t1"] < 0.25)
                        samples[op, impl].append(res["seconds"])
                        overheads[op, impl] = res["overhead"]
                        if attempt == 1:
                            progress.update(f"{case_name} {op} t{threads}")
                        if cfg.settle and threads > 1:
                            time.sleep(cfg.settle)
            background = meter.cores_since(snap)
            if background is None or background <= BUSY_CORES or attempt > cfg.retry_busy:
                break
            progress.note(f"{case_name}, threads={threads}: other processes used "
                          f"{background:.2f} cores; waiting for a quiet machine and measuring "
                          f"again ({attempt}/{cfg.retry_busy})")
            wait_until_quiet(cfg.quiet_wait, out=None)
        for op in ops:
            for impl in impls:
                row = {"threads": threads, "case": case_name, "op": op, "impl": impl,
                       "calls_per_sample": plan[op, impl]["k"], **extra,
                       **_stats(samples[op, impl]), "background_cores": background,
                       "attempts": attempt}
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
        checks.append({"case": case.name, "impl": impl, "max_rel_diff": worst,
                       "ok": bool(worst < 2e-3)})
    return checks


def _ratios(layer_rows, clip_rows):
    med = {}
    for r in layer_rows + clip_rows:
        med[r["threads"], r["case"], r["op"], r["impl"]] = r["median_ms"]
    out = []
    for (threads, case, op) in dict.fromkeys((k[0], k[1], k[2]) for k in med):
        fr = med.get((threads, case, op, "fastrnn"))
        if not fr:
            continue
        row = {"threads": threads, "case": case, "op": op}
        for impl in ("reference", "torch", "torch_loop"):
            if (threads, case, op, impl) in med:
                row[f"{impl}/fastrnn"] = med[threads, case, op, impl] / fr
        if (threads, case, op, "floor") in med:
            row["fastrnn/floor"] = fr / med[threads, case, op, "floor"]
        out.append(row)
    return out


# ---- targets ------------------------------------------------------------------------------------

def _is(cell, N=None, T=None, H=None):
    def match(row):
        c = _case_fields(row["case"])
        return (c and c["cell"] == cell and (N is None or c["N"] == N)
                and (T is None or c["T"] == T) and (H is None or H(c["H"])))
    return match


def _case_fields(name):
    m = re.fullmatch(r"(\w+) N(\d+) T(\d+) D(\d+) H(\d+)", name)
    if not m:
        return None
    return {"cell": m.group(1), "N": int(m.group(2)), "T": int(m.group(3)),
            "D": int(m.group(4)), "H": int(m.group(5))}


def _small_or_b1(row):
    c = _case_fields(row["case"])
    return bool(c) and c["cell"] != "gru_classic" and (c["H"] < 256 or c["N"] == 1)


def _large(row):
    c = _case_fields(row["case"])
    return bool(c) and c["cell"] != "gru_classic" and c["H"] >= 256 and c["N"] > 1


# (description, op, predicate on the ratio row, ratio key, ">=" or "<=", threshold)
TARGETS = (
    ("torch/fastrnn >= 1.1, LSTM H <= 128 (incl. batch 1)", "fwdbwd",
     _is("lstm", H=lambda h: h <= 128), "torch/fastrnn", ">=", 1.1),
    ("torch/fastrnn >= 1.0, LSTM H >= 256", "fwdbwd",
     _is("lstm", H=lambda h: h >= 256), "torch/fastrnn", ">=", 1.0),
    ("torch/fastrnn >= 2.5, GRU N20 T35 H100", "fwdbwd",
     _is("gru", 20, 35, lambda h: h == 100), "torch/fastrnn", ">=", 2.5),
    ("torch/fastrnn >= 2.0, RNN N20 T35 H100", "fwdbwd",
     _is("rnn", 20, 35, lambda h: h == 100), "torch/fastrnn", ">=", 2.0),
    ("torch/fastrnn >= 1.4, GRU N64 T100 H256", "fwdbwd",
     _is("gru", 64, 100, lambda h: h == 256), "torch/fastrnn", ">=", 1.4),
    ("torch/fastrnn >= 1.4, RNN N64 T100 H256", "fwdbwd",
     _is("rnn", 64, 100, lambda h: h == 256), "torch/fastrnn", ">=", 1.4),
    ("fastrnn/floor <= 1.1, H >= 256", "fwdbwd", _large, "fastrnn/floor", "<=", 1.1),
    ("fastrnn/floor <= 1.3, small and batch-1 shapes", "fwdbwd", _small_or_b1,
     "fastrnn/floor", "<=", 1.3),
    ("reference/fastrnn >= 3, LSTM N20 T35 H100", "fwdbwd",
     _is("lstm", 20, 35, lambda h: h == 100), "reference/fastrnn", ">=", 3.0),
    ("reference/fastrnn >= 3.5, LSTM H650", "fwdbwd",
     _is("lstm", H=lambda h: h == 650), "reference/fastrnn", ">=", 3.5),
    ("reference/fastrnn >= 12, LSTM N1 T200 H128", "fwdbwd",
     _is("lstm", 1, 200, lambda h: h == 128), "reference/fastrnn", ">=", 12.0),
    ("reference/fastrnn >= 3, GRU N20 T35 H100", "fwdbwd",
     _is("gru", 20, 35, lambda h: h == 100), "reference/fastrnn", ">=", 3.0),
    ("reference/fastrnn >= 2.5, RNN N20 T35 H100", "fwdbwd",
     _is("rnn", 20, 35, lambda h: h == 100), "reference/fastrnn", ">=", 2.5),
    ("clip: fastrnn/floor <= 1.15, LM 13.3M", "clip",
     lambda r: r["case"].startswith("clip LM"), "fastrnn/floor", "<=", 1.15),
    ("clip: torch/fastrnn > 1 (foreach), LM 13.3M", "clip",
     lambda r: r["case"].startswith("clip LM"), "torch/fastrnn", ">", 1.0),
    ("clip: torch_loop/fastrnn > 1 (foreach=False), LM 13.3M", "clip",
     lambda r: r["case"].startswith("clip LM"), "torch_loop/fastrnn", ">", 1.0),
    ("clip: torch/fastrnn > 1 (foreach), 2000 small", "clip",
     lambda r: r["case"].startswith("clip 2000"), "torch/fastrnn", ">", 1.0),
    ("clip: torch_loop/fastrnn > 1 (foreach=False), 2000 small", "clip",
     lambda r: r["case"].startswith("clip 2000"), "torch_loop/fastrnn", ">", 1.0),
    ("clip: reference/fastrnn >= 1.6, LM 13.3M", "clip",
     lambda r: r["case"].startswith("clip LM"), "reference/fastrnn", ">=", 1.6),
    ("clip: reference/fastrnn >= 20, 2000 small arrays", "clip",
     lambda r: r["case"].startswith("clip 2000"), "reference/fastrnn", ">=", 20.0),
)


def evaluate_targets(results):
    out = []
    for desc, op, pred, key, cmp, thr in TARGETS:
        for row in results.get("ratios", []):
            if row["op"] != op or key not in row or not pred(row):
                continue
            v = row[key]
            ok = {">=": v >= thr, "<=": v <= thr, ">": v > thr}[cmp]
            out.append({"target": desc, "threads": row["threads"], "case": row["case"],
                        "value": v, "met": bool(ok)})
    return out


# ---- report -------------------------------------------------------------------------------------

def _fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else (f"{v:.2f}" if v < 100 else f"{v:.1f}")


def _table(header, rows, align=None):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    align = align or ["<"] + [">"] * (len(header) - 1)
    fmt = "  ".join(f"{{:{a}{w}}}" for a, w in zip(align, widths))
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*[str(x) for x in r]) for r in rows]
    return lines


def format_report(results, markdown=False):
    """The tables as text (or GitHub markdown)."""
    meta = results.get("meta", {})
    cfg = meta.get("config", {})
    lines = []
    med = {(r["threads"], r["case"], r["op"], r["impl"]): r
           for r in results["layers"] + results["clip"]}
    ratios = {(r["threads"], r["case"], r["op"]): r for r in results["ratios"]}

    def ms(key):
        """Median, marked '~' when the samples' interquartile range exceeds 20% of it."""
        if key not in med:
            return "-"
        r = med[key]
        return _fmt_ms(r["median_ms"]) + ("~" if r["iqr_ms"] > NOISY * r["median_ms"] else "")

    def block(title, tab):
        if markdown:
            lines.append(f"\n**{title}**\n")
            lines.append("| " + " | ".join(tab[0]) + " |")
            lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(tab[0])))
                         + "|")
            lines.extend("| " + " | ".join(str(x) for x in r) + " |" for r in tab[1:])
        else:
            lines.append("")
            lines.append(title)
            lines.extend(_table(tab[0], tab[1:]))

    reps = cfg.get("repeats", "?")
    lines.append(f"fastrnn bench: float32; median ms per call over {reps} interleaved rounds "
                 f"('~': samples spread over more than {NOISY:.0%} of the median, by IQR); "
                 "x/fastrnn > 1: fastrnn is faster; fastrnn/floor >= 1: distance from the "
                 "GEMM (or memory) floor")
    impls = cfg.get("impls", list(LAYER_IMPLS))
    threads_list = sorted({r["threads"] for r in results["layers"] + results["clip"]})
    for threads in threads_list:
        for op in [o for o in OPS if o in cfg.get("ops", OPS)]:
            cases = list(dict.fromkeys(r["case"] for r in results["layers"]
                                       if r["threads"] == threads and r["op"] == op))
            if not cases:
                continue
            header = ["case"] + [f"{i} ms" for i in impls]
            ratio_keys = [k for k in ("reference/fastrnn", "torch/fastrnn", "fastrnn/floor")
                          if any(k in ratios.get((threads, c, op), {}) for c in cases)]
            header += ratio_keys
            rows = []
            for c in cases:
                row = [c] + [ms((threads, c, op, i)) for i in impls]
                rr = ratios.get((threads, c, op), {})
                row += [f"{rr[k]:.2f}" if k in rr else "-" for k in ratio_keys]
                rows.append(row)
            block(f"threads={threads}, {OP_TITLES[op]}", [header] + rows)
        cases = list(dict.fromkeys(r["case"] for r in results["clip"] if r["threads"] == threads))
        if cases:
            cimpls = cfg.get("clip_impls", list(CLIP_IMPLS))
            header = ["clip_grads"] + [f"{i} ms" for i in cimpls]
            ratio_keys = [k for k in ("reference/fastrnn", "torch/fastrnn",
                                      "torch_loop/fastrnn", "fastrnn/floor")
                          if any(k in ratios.get((threads, c, "clip"), {}) for c in cases)]
            header += ratio_keys
            rows = []
            for c in cases:
                row = [c] + [ms((threads, c, "clip", i)) for i in cimpls]
                rr = ratios.get((threads, c, "clip"), {})
                row += [f"{rr[k]:.2f}" if k in rr else "-" for k in ratio_keys]
                rows.append(row)
            block(f"threads={threads}, clip_grads (torch = clip_grad_norm_ foreach=True, "
                  "torch_loop = foreach=False)", [header] + rows)
    if results.get("memory"):
        by = {(m["case"], m["impl"]): m for m in results["memory"]}
        cases = list(dict.fromkeys(m["case"] for m in results["memory"]))
        header = ["case", "fastrnn peak B/NTH", "reference peak B/NTH", "fastrnn peak MB",
                  "reference peak MB", "ref/fastrnn", "fastrnn held B/NTH",
                  "reference held B/NTH"]
        rows = []
        for c in cases:
            f, r = by.get((c, "fastrnn")), by.get((c, "reference"))
            rows.append([c,
                         f"{f['peak_bytes_per_NTH']:.1f}" if f else "-",
                         f"{r['peak_bytes_per_NTH']:.1f}" if r else "-",
                         f"{f['peak_bytes'] / 1e6:.2f}" if f else "-",
                         f"{r['peak_bytes'] / 1e6:.2f}" if r else "-",
                         f"{r['peak_bytes'] / f['peak_bytes']:.2f}" if f and r else "-",
                         f"{f['retained_bytes_per_NTH']:.1f}" if f else "-",
                         f"{r['retained_bytes_per_NTH']:.1f}" if r else "-"])
        block("peak extra memory of the first forward+backward of a fresh layer (tracemalloc; "
              "bytes per N*T*H element; 'held' = kept by the layer afterwards, outputs excluded)",
              [header] + rows)
    bad = [c for c in results.get("checks", []) if not c["ok"]]
    checks = results.get("checks", [])
    if checks:
        worst = max(checks, key=lambda c: c["max_rel_diff"])
        lines.append("")
        lines.append(f"cross-check of hs, dxs, dWh against fastrnn: {len(checks) - len(bad)}/"
                     f"{len(checks)} agree (worst relative difference {worst['max_rel_diff']:.1e}"
                     f", {worst['impl']} on {worst['case']})")
        for c in bad:
            lines.append(f"  MISMATCH: {c['impl']} on {c['case']}: {c['max_rel_diff']:.2e}")
    if results.get("targets"):
        rows = [[t["target"], t["threads"], t["case"], f"{t['value']:.2f}",
                 "met" if t["met"] else "MISSED"] for t in results["targets"]]
        block("targets (forward+backward and clip_grads)",
              [["target", "threads", "case", "value", ""]] + rows)
    bg = {}
    for r in results["layers"] + results["clip"]:
        if r.get("background_cores") is not None:
            bg[r["case"], r["threads"]] = r["background_cores"]
    if bg:
        busy = {k: v for k, v in bg.items() if v > 0.1}
        lines.append("")
        lines.append(f"background load (CPU used by other processes while timing): mean "
                     f"{np.mean(list(bg.values())):.2f} cores, max {max(bg.values()):.2f}"
                     + ("" if not busy else
                        f"; {len(busy)} of {len(bg)} groups above 0.1 cores -- their numbers "
                        "are disturbed: " + ", ".join(f"{c} (threads={t}: {v:.2f})"
                                                      for (c, t), v in busy.items())))
    for note in meta.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def format_machine(results, markdown=False):
    meta = results.get("meta", {})
    m = meta.get("machine", {})
    lines = [f"CPU: {m.get('Model name', '?')} ({m.get('Vendor ID', '?')}), "
             f"{m.get('logical_cpus', '?')} logical CPUs ({m.get('usable_cpus', '?')} usable), "
             f"{m.get('Core(s) per socket', '?')} cores/socket x {m.get('Socket(s)', '?')} "
             f"socket, {m.get('Thread(s) per core', '?')} thread/core; L2 {m.get('L2 cache', '?')}"
             f", L3 {m.get('L3 cache', '?')}; SIMD {' '.join(m.get('simd', []))}"
             + (f"; hypervisor {m['Hypervisor vendor']}" if m.get("Hypervisor vendor") else "")]
    for b in meta.get("blas", []):
        path = b.get("filepath") or ""
        folder = os.path.basename(os.path.dirname(path))
        who = {"scipy.libs": "scipy's: used by fastrnn and the GEMM floor",
               "numpy.libs": "numpy's: used by the reference and the clip floor's np.dot"
               }.get(folder, folder)
        lines.append(f"BLAS: {b.get('internal_api')} {b.get('version')} "
                     f"({b.get('architecture')} kernels, {b.get('threading_layer')} threads), "
                     f"{os.path.basename(path)} ({who})")
    w = meta.get("workers", {})
    vers = [f"python {m.get('python')}"]
    if "fastrnn" in w:
        vers += [f"numpy {w['fastrnn'].get('numpy')}", f"scipy {w['fastrnn'].get('scipy')}",
                 f"fastrnn {w['fastrnn'].get('fastrnn')} "
                 f"({w['fastrnn'].get('fastrnn_kernels', '?')} kernels)"]
    if "torch" in w:
        vers.append(f"torch {w['torch'].get('torch')}")
    if m.get("git"):
        vers.append(f"git {m['git']}")
    if m.get("kernels_built"):
        vers.append(f"kernels built {m['kernels_built']}")
    lines.append("versions: " + ", ".join(vers))
    env = m.get("env", {})
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) if env else
                                    "no OPENBLAS_*/OMP_*/MKL_* variables set"))
    lines.append(f"run: {meta.get('started')}, {meta.get('duration_s')} s")
    return "\n".join(("- " + l) if markdown else l for l in lines)


def plot(results, path):
    """One bar group per shape (forward+backward, log scale), one panel per thread count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    threads_list = sorted({r["threads"] for r in results["layers"] + results["clip"]})
    impls = results["meta"]["config"]["impls"]
    cimpls = results["meta"]["config"]["clip_impls"]
    med = {(r["threads"], r["case"], r["op"], r["impl"]): r["median_ms"]
           for r in results["layers"] + results["clip"]}
    colors = {"fastrnn": "#1f77b4", "reference": "#ff7f0e", "torch": "#2ca02c",
              "torch_loop": "#98df8a", "floor": "#7f7f7f"}
    has_clip = bool(results["clip"])
    fig, axes = plt.subplots(len(threads_list), 2 if has_clip else 1, squeeze=False,
                             figsize=(16 if has_clip else 13, 4.8 * len(threads_list)),
                             gridspec_kw={"width_ratios": [5, 1] if has_clip else [1]})
    for row, threads in enumerate(threads_list):
        groups = [(c, "fwdbwd") for c in dict.fromkeys(
            r["case"] for r in results["layers"] if r["threads"] == threads
            and r["op"] == "fwdbwd")]
        panels = [(axes[row][0], groups, impls, "forward+backward")]
        if has_clip:
            cg = [(c, "clip") for c in dict.fromkeys(
                r["case"] for r in results["clip"] if r["threads"] == threads)]
            panels.append((axes[row][1], cg, cimpls, "clip_grads"))
        for ax, groups, names, title in panels:
            width = 0.8 / max(1, len(names))
            for j, impl in enumerate(names):
                xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(groups))]
                ys = [med.get((threads, c, op, impl), np.nan) for c, op in groups]
                ax.bar(xs, ys, width, label=impl, color=colors.get(impl))
            ax.set_yscale("log")
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels([c.replace("clip ", "").replace(" N", "\nN", 1)
                                .replace(" D", "\nD") for c, _ in groups], fontsize=7)
            ax.set_ylabel("ms per call (median)")
            ax.set_title(f"{title}, threads={threads}")
            ax.grid(axis="y", alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="upper left", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- command line ---------------------------------------------------------------------------------

def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="time fastrnn against the NumPy reference, PyTorch and the GEMM floor",
        description=__doc__.split("\n\n")[0] + " See BENCHMARKS.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1",
                   help="comma-separated BLAS/torch thread counts to run, e.g. 1,2 (default 1)")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved rounds = samples per implementation (default 9; 3 quick)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per sample; fast calls are batched (default 0.1; 0.02 quick)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller table and fewer, shorter samples (under a minute on 2 cores)")
    p.add_argument("--shapes", default=None,
                   help="only the cases matching one of these comma-separated filters; a "
                        "filter is words that must all be words of the case name: 'lstm', "
                        "'N64', 'gru H256', 'lstm N1,rnn' (names look like "
                        "'lstm N20 T35 D100 H100')")
    p.add_argument("--shape", action="append", default=[], metavar="'CELL N T D H'",
                   help="run this shape instead of the table (repeatable); CELL: "
                        + ", ".join(CELLS))
    p.add_argument("--impls", default=",".join(LAYER_IMPLS),
                   help="comma-separated subset of " + ",".join(LAYER_IMPLS))
    p.add_argument("--ops", default=",".join(OPS), help="fwdbwd, fwd or both")
    p.add_argument("--no-clip", action="store_true", help="skip the clip_grads cases")
    p.add_argument("--no-layers", action="store_true", help="only the clip_grads cases")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--settle", type=float, default=0.0,
                   help="seconds to idle between implementations at threads > 1 (default 0)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS until other processes leave the CPUs idle")
    p.add_argument("--retry-busy", type=int, default=0, metavar="N",
                   help="re-measure a shape up to N times when other processes used more than "
                        f"{BUSY_CORES} cores while it was timed (waiting for quiet first)")
    p.add_argument("--json", metavar="OUT.json", help="write all results and metadata as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="bar chart (needs matplotlib)")
    p.add_argument("--markdown", metavar="OUT.md", help="write machine + tables as markdown")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def filter_cases(cases, spec):
    """The cases matching any comma-separated filter; a filter matches a case when each of its
    space-separated words is a word of the case's name: 'lstm', 'N64', 'gru H256', 'D650'."""
    filters = [f.split() for f in spec.split(",") if f.strip()]
    return tuple(c for c in cases if any(set(f) <= set(c.name.split()) for f in filters))


def config_from_args(args):
    quick = args.quick
    if args.shape:
        cases = tuple(Case.parse(s) for s in args.shape)
    else:
        cases = QUICK_CASES if quick else DEFAULT_CASES
    if args.shapes:
        cases = filter_cases(cases, args.shapes)
    if args.no_layers:
        cases = ()
    clip_cases = () if args.no_clip else (QUICK_CLIP_CASES if quick else CLIP_CASES)
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    for i in impls:
        if i not in LAYER_IMPLS:
            raise SystemExit(f"fastrnn bench: unknown implementation {i!r}; choose from "
                             + ", ".join(LAYER_IMPLS))
    ops = tuple(o.strip() for o in args.ops.split(",") if o.strip())
    for o in ops:
        if o not in OPS:
            raise SystemExit(f"fastrnn bench: unknown op {o!r}; choose from fwdbwd, fwd")
    try:
        threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
    except ValueError:
        raise SystemExit(f"fastrnn bench: --threads takes integers like 1,2, got "
                         f"{args.threads!r}") from None
    if not threads or min(threads) < 1:
        raise SystemExit("fastrnn bench: --threads needs counts >= 1")
    return BenchConfig(
        cases=cases, clip_cases=clip_cases, threads=threads,
        repeats=args.repeats or (3 if quick else 9),
        min_time=args.min_time if args.min_time is not None else (0.02 if quick else 0.1),
        ops=ops, impls=impls, memory=not args.no_memory, settle=args.settle,
        retry_busy=args.retry_busy,
        progress=not args.no_progress, quick=quick,
        command="fastrnn bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"]
                                            else sys.argv[1:]))


def run(args):
    cfg = config_from_args(args)
    n = len(cfg.cases) + len(cfg.clip_cases)
    print(f"fastrnn bench: {len(cfg.cases)} layer shapes + {len(cfg.clip_cases)} clip cases "
          f"({n} total), threads {','.join(map(str, cfg.threads))}, {cfg.repeats} rounds, "
          f"{cfg.min_time:g} s samples; implementations {', '.join(cfg.impls)}",
          file=sys.stderr, flush=True)
    if args.wait_quiet:
        wait_until_quiet(args.wait_quiet)
    results = run_bench(cfg)
    print(format_machine(results))
    print(format_report(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
        print(f"\nwrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("## Machine\n\n" + format_machine(results, markdown=True) + "\n\n")
            fh.write(f"## Command\n\n```\n{cfg.command}\n```\n\n## Results\n")
            fh.write(format_report(results, markdown=True) + "\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        try:
            plot(results, args.plot)
            print(f"wrote {args.plot}")
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib); no plot written",
                  file=sys.stderr)
    return 1 if any(not c["ok"] for c in results["checks"]) else 0


def main(argv=None):
    """Standalone entry (python -m fastrnn.bench ...), same options as `fastrnn bench`."""
    parser = argparse.ArgumentParser(prog="fastrnn")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
