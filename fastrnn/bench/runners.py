"""The timed objects: one runner per implementation and case, built inside a worker process
(and by benches/ and the tests): the fastrnn and NumPy layers, PyTorch's, the GEMM floor, the
clip_grads implementations and their memory floor, whole language models trained an iteration
at a time (fastrnn's, the book's NumPy model, torch's), and the memory measurement."""

import gc
import math
import time

import numpy as np

from .cases import MODEL_LR, MODEL_MAX_GRAD, _seed_of, make_grads, make_weights, model_batches


def _numpy_layer(module, case, Wx, Wh, b):
    if case.cell == "rnn":
        return module.TimeRNN(Wx, Wh, b)
    if case.cell == "lstm":
        return module.TimeLSTM(Wx, Wh, b)
    return module.TimeGRU(Wx, Wh, b, reset_after=(case.cell == "gru"))


_TORCH_BLOCKS = {  # torch's row blocks, as (our block, sign) per torch block
    "lstm": ((2, 1), (0, 1), (1, 1), (3, 1)),  # i, f, g, o  <-  ours f, g, i, o
    "gru": ((1, 1), (0, -1), (2, 1)),  # r, z, n     <-  ours z, r, h~ (z negated)
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
        return np.concatenate([s * W[:, k * H : (k + 1) * H].T for k, s in blocks])

    def vec(v):
        return np.concatenate([s * v[k * H : (k + 1) * H] for k, s in blocks])

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
        for name, value in (
            ("weight_ih", rows(Wx)),
            ("weight_hh", rows(Wh)),
            ("bias_ih", b_ih),
            ("bias_hh", b_hh),
        ):
            getattr(net, name + sfx).copy_(
                torch.from_numpy(np.ascontiguousarray(value, np.float32))
            )
    return net.float()


def torch_grads_to_ours(cell, net):
    """[dWx, dWh, db] in fastrnn's layout from the .grad of a net made by torch_rnn_from_weights
    (db of shape (2, 3H) for the GRU, like its bias)."""
    sfx = "_l0" if hasattr(net, "weight_ih_l0") else ""
    g = {
        n: getattr(net, n + sfx).grad.detach().numpy()
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }
    blocks = _TORCH_BLOCKS[cell]
    H = g["weight_hh"].shape[1]
    ours = [None] * len(blocks)
    for t, (k, s) in enumerate(blocks):
        ours[k] = (t, s)

    def cols(W):  # (k*H, X) torch rows -> (X, k*H) our column blocks
        return np.concatenate([s * W[t * H : (t + 1) * H].T for t, s in ours], axis=1)

    def vec(v):
        return np.concatenate([s * v[t * H : (t + 1) * H] for t, s in ours])

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

    correction = 0.0  # seconds per call subtracted from timings (the floor's dispatch cost)

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
        self.x = torch.from_numpy(xs).requires_grad_(True)  # dX is computed, as fastrnn does
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
        return {
            "hs": out.detach().numpy().copy(),
            "dxs": self.x.grad.numpy().copy(),
            "dWh": torch_grads_to_ours(self.cell, self.net)[1],
        }


# -- the GEMM floor ------------------------------------------------------------------------------


def _blas_pointer(name):
    """(address, integer type) of the BLAS routine fastrnn's kernels call (fastrnn._blas: the
    ILP64 routine of NumPy's OpenBLAS, or scipy.linalg.cython_blas's LP64 one)."""
    import ctypes

    from .. import _blas

    ilp64 = _blas.ilp64_addresses()
    if ilp64 is not None:
        return ilp64[("sgemm", "dgemm", "sgemv", "dgemv").index(name)], ctypes.c_int64
    from scipy.linalg import cython_blas

    cap = cython_blas.__pyx_capi__[name]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(cap, api.PyCapsule_GetName(cap)), ctypes.c_int


class GemmFloor(_LayerRunner):
    """The matrix products of a fused RNN/LSTM/GRU forward and backward, nothing else.

    Buffers are time-major and preallocated; every product writes (or accumulates, beta = 1)
    into its final place, so nothing is allocated or copied while timed.  Row-major products go
    to column-major BLAS as C^T = B^T A^T, and a single-row product (batch 1) to sgemv instead of
    sgemm -- the same mapping and the same choice as fastrnn's src/gemm/_blas.pxd, so the floor is
    the best the library fastrnn uses can do.  The calls are issued from Python through ctypes; the
    cost of issuing an empty call is measured (measure_call_overhead) and subtracted."""

    def __init__(self, case, seed=0):
        import ctypes

        self.ct = ctypes
        self._keep = []
        P = ctypes.c_void_p
        sgemm, self._int = _blas_pointer("sgemm")
        self._sgemm = ctypes.CFUNCTYPE(None, *([P] * 13))(sgemm)
        self._sgemm.argtypes = [P] * 13
        self._sgemv = ctypes.CFUNCTYPE(None, *([P] * 11))(_blas_pointer("sgemv")[0])
        self._sgemv.argtypes = [P] * 11
        N, T, D, H = case.N, case.T, case.D, case.H
        G = case.blocks * H
        NT = N * T
        rng = np.random.default_rng(_seed_of(case.name, seed))
        f = np.float32
        self.case = case
        self.Wx = (rng.standard_normal((D, G)) / np.sqrt(D)).astype(f)
        self.Wh = (rng.standard_normal((H, G)) / np.sqrt(H)).astype(f)
        self.X = rng.standard_normal((NT, D)).astype(f)  # step t: rows t*N .. t*N+N-1
        self.Hs = (0.5 * rng.standard_normal((NT, H))).astype(f)  # h_{t-1} of every step
        self.G = np.zeros((NT, G), f)
        self.dG = (0.1 * rng.standard_normal((NT, G))).astype(f)
        self.dh = np.zeros((N, H), f)
        self.dWx = np.zeros((D, G), f)
        self.dWh = np.zeros((H, G), f)
        self.dX = np.zeros((NT, D), f)
        p = lambda a, row=0: a.ctypes.data + row * a.shape[1] * 4  # noqa: E731
        self.fwd_plan = [
            self._product(False, False, NT, G, D, 1, p(self.X), D, p(self.Wx), G, 0, p(self.G), G)
        ]
        self.fwd_plan += [
            self._product(
                False,
                False,
                N,
                G,
                H,
                1,
                p(self.Hs, t * N),
                H,
                p(self.Wh),
                G,
                1,
                p(self.G, t * N),
                G,
            )
            for t in range(T)
        ]
        self.bwd_plan = [
            self._product(
                False, True, N, H, G, 1, p(self.dG, t * N), G, p(self.Wh), G, 0, p(self.dh), H
            )
            for t in reversed(range(T))
        ]
        self.bwd_plan += [
            self._product(True, False, D, G, NT, 1, p(self.X), D, p(self.dG), G, 0, p(self.dWx), G),
            self._product(
                True, False, H, G, NT, 1, p(self.Hs), H, p(self.dG), G, 0, p(self.dWh), G
            ),
            self._product(False, True, NT, D, G, 1, p(self.dG), G, p(self.Wx), G, 0, p(self.dX), D),
        ]
        # empty calls of each routine, to measure what issuing one costs
        z = p(self.dh)
        self._empty = {
            "sgemm": (self._sgemm, self._gemm_args(False, False, 0, 0, 0, 1, z, 1, z, 1, 0, z, 1)),
            "sgemv": (self._sgemv, self._gemv_args(False, False, 0, 0, 0, 1, z, 1, z, 1, 0, z)),
        }
        self.call_overhead = {"sgemm": 0.0, "sgemv": 0.0}

    def _ref(self, obj):
        self._keep.append(obj)
        return self.ct.addressof(obj)

    def _gemm_args(self, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        ct, ref = self.ct, self._ref
        ta, tb = (b"T" if trans_a else b"N"), (b"T" if trans_b else b"N")
        i = self._int
        return (
            ref(ct.c_char(tb)),
            ref(ct.c_char(ta)),
            ref(i(n)),
            ref(i(m)),
            ref(i(k)),
            ref(ct.c_float(alpha)),
            b,
            ref(i(max(ldb, 1))),
            a,
            ref(i(max(lda, 1))),
            ref(ct.c_float(beta)),
            c,
            ref(i(max(ldc, 1))),
        )

    def _gemv_args(self, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c):
        ct, ref = self.ct, self._ref
        i = self._int
        rows, cols = (k, n) if trans_b else (n, k)
        incx = lda if trans_a else 1
        return (
            ref(ct.c_char(b"T" if trans_b else b"N")),
            ref(i(rows)),
            ref(i(cols)),
            ref(ct.c_float(alpha)),
            b,
            ref(i(max(ldb, 1))),
            a,
            ref(i(incx)),
            ref(ct.c_float(beta)),
            c,
            ref(i(1)),
        )

    def _product(self, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """Row-major C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C as (routine, pointers)."""
        if m == 1:
            return (
                "sgemv",
                self._sgemv,
                self._gemv_args(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c),
            )
        return (
            "sgemm",
            self._sgemm,
            self._gemm_args(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc),
        )

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
        return {
            "G": self.G.copy(),
            "dh": self.dh.copy(),
            "dWx": self.dWx.copy(),
            "dWh": self.dWh.copy(),
            "dX": self.dX.copy(),
        }


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


CLIP_DECAY = 0.9999  # each call clips to this fraction of the current norm
PARALLEL_MIN = 1 << 20  # the clip memory floor splits its scale pass over threads from this size


class _ClipRunner:
    """Calling it clips the gradients in place once, to CLIP_DECAY x their current norm, so the
    scaling pass always runs; values shrink slowly (no denormals for > 10^5 calls)."""

    correction = 0.0

    def __init__(self, impl, clip_case, seed=0):
        self.impl = impl
        self.grads = make_grads(clip_case, seed)
        norm = math.sqrt(
            sum(
                float(np.dot(g.ravel().astype(np.float64), g.ravel().astype(np.float64)))
                for g in self.grads
            )
        )
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
                p.grad = torch.from_numpy(g)  # shares the gradient's memory
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
        s = np.dot(flat, flat)  # one read pass (BLAS sdot)
        if self._pool is None:
            flat *= c  # one in-place scale pass
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


# -- whole language models ----------------------------------------------------------------------


def supports_model(impl, case):
    """Whether an implementation has the model of a ModelCase: torch has no classic GRU (the
    form fastrnn's LanguageModel and the book's layers use)."""
    return not (impl == "torch" and case.cell == "gru")


def fastrnn_model(case, seed=0):
    """fastrnn's model of the case: ``fastrnn.models.Rnnlm`` for the book's shape (one LSTM,
    untied), else ``LanguageModel`` with the book's initialisation; float32, from seed."""
    from fastrnn.models import LanguageModel, Rnnlm

    if case.is_book_rnnlm:
        return Rnnlm(case.V, case.E, case.hidden[0], seed=seed)
    return LanguageModel(
        case.V,
        case.E,
        list(case.hidden),
        cell=case.cell,
        tie_weights=case.tied,
        init="normal",
        seed=seed,
    )


def _book_style_model(case, params):
    """The book's model structure (ch06/rnnlm.py: embedding, stateful time layers, affine,
    softmax with loss) on fastrnn.reference's NumPy layers, for any stack of the case's cell,
    with copies of params (a fastrnn LanguageModel's list).  Tied: the read-out is the
    embedding's transpose, listed again as the book's BetterRnnlm lists it."""
    from fastrnn import reference
    from fastrnn.reference import models as ref_models

    params = [np.array(p) for p in params]
    it = iter(params)
    embed_W = next(it)
    layers = [reference.TimeEmbedding(embed_W)]
    for _ in case.hidden:
        Wx, Wh, b = next(it), next(it), next(it)
        if case.cell == "lstm":
            layers.append(reference.TimeLSTM(Wx, Wh, b, stateful=True))
        elif case.cell == "gru":
            layers.append(reference.TimeGRU(Wx, Wh, b, stateful=True))
        else:
            layers.append(reference.TimeRNN(Wx, Wh, b, stateful=True))
    affine_W = embed_W.T if case.tied else next(it)
    layers.append(reference.TimeAffine(affine_W, next(it)))
    model = ref_models._BookModel()
    model.layers = layers
    model.loss_layer = reference.TimeSoftmaxWithLoss()
    model.lstm_layers = layers[1:-1]  # the stateful layers reset_state() resets
    model.drop_layers = []
    model._collect()
    return model


def reference_model(case, seed=0):
    """The book's NumPy model of the case with fastrnn_model's weights:
    ``fastrnn.reference.models.Rnnlm`` for the book's shape (the same seed draws the same
    weights), else the book's structure stacked (_book_style_model)."""
    if case.is_book_rnnlm:
        from fastrnn.reference import models as ref_models

        return ref_models.Rnnlm(case.V, case.E, case.hidden[0], seed=seed)
    return _book_style_model(case, fastrnn_model(case, seed).params)


def torch_lm_from_params(case, params):
    """A torch language model (nn.Embedding -> nn.LSTM or nn.RNN of len(case.hidden) layers,
    batch_first -> nn.Linear, the read-out tied to the embedding when case.tied) computing what
    fastrnn's LanguageModel with these params (its ``params`` list) computes.

    Calling it with word ids (N, T) and a state (None at first) returns (scores, state).  Each
    layer's weights go through torch_rnn_from_weights (the gate blocks reordered; LSTM: b into
    bias_ih, bias_hh = 0)."""
    import torch

    if not supports_model("torch", case):
        raise ValueError(f"torch has no equivalent of the {case.cell!r} model")
    sizes = case.hidden
    rnn_cls = torch.nn.LSTM if case.cell == "lstm" else torch.nn.RNN

    class TorchLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(case.V, case.E)
            if len(set(sizes)) == 1:
                self.rnns = torch.nn.ModuleList(
                    [rnn_cls(case.E, sizes[0], num_layers=len(sizes), batch_first=True)]
                )
            else:  # torch's multi-layer modules need equal sizes: one module per layer
                ins = (case.E,) + sizes[:-1]
                self.rnns = torch.nn.ModuleList(
                    [rnn_cls(d, h, batch_first=True) for d, h in zip(ins, sizes)]
                )
            self.out = torch.nn.Linear(sizes[-1], case.V)
            if case.tied:
                self.out.weight = self.embed.weight

        def forward(self, xs, state):
            h = self.embed(xs)
            state = state or [None] * len(self.rnns)
            new = []
            for rnn, s in zip(self.rnns, state):
                h, s = rnn(h, s)
                new.append(s)
            return self.out(h), new

    model = TorchLM()
    it = iter(params)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        model.embed.weight.copy_(f32(next(it)))
        for k in range(len(sizes)):
            one = torch_rnn_from_weights(case.cell, next(it), next(it), next(it))
            module, layer = (model.rnns[0], k) if len(model.rnns) == 1 else (model.rnns[k], 0)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(module, f"{name}_l{layer}").copy_(getattr(one, f"{name}_l0"))
        if not case.tied:
            model.out.weight.copy_(f32(next(it)).T)
        model.out.bias.copy_(f32(next(it)))
    return model.float()


class _ModelRunner:
    """One implementation's model of a ModelCase: iteration() runs one training iteration
    (forward, backward, clip to MODEL_MAX_GRAD, SGD at MODEL_LR) on the next of the case's
    batches, carrying the recurrent state; losses(k) runs k and returns their losses."""

    correction = 0.0

    def __init__(self, case, seed):
        self.case = case
        self.batches = model_batches(case, seed)
        self.i = 0
        self.loss = None

    def _next(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b

    def losses(self, k):
        out = []
        for _ in range(k):
            self.iteration()
            out.append(float(self.loss))
        return out


def _book_sgd(params, grads, lr=MODEL_LR):
    """The book's SGD.update (common/optimizer.py): params[i] -= lr * grads[i]."""
    for p, g in zip(params, grads):
        p -= lr * g


class _NumpyModelRunner(_ModelRunner):
    """fastrnn's model (fastrnn.clip_grads, fastrnn.train.SGD) or the book's NumPy model (the
    book's clip_grads loop, fastrnn.reference.clip_grads, and the book's SGD)."""

    def __init__(self, impl, case, seed):
        super().__init__(case, seed)
        self._tied = None  # the book model's separately listed read-out gradient (tied)
        if impl == "fastrnn":
            import fastrnn
            from fastrnn.train import SGD

            self.model = fastrnn_model(case, seed)
            self.clip = fastrnn.clip_grads
            self.update = SGD(MODEL_LR).update
            self.params, self.grads = self.model.params, self.model.grads
        else:
            from fastrnn import reference

            self.model = reference_model(case, seed)
            self.clip = reference.clip_grads
            self.update = _book_sgd
            self.params, self.grads = list(self.model.params), list(self.model.grads)
            if case.tied:
                # as the book's trainer's remove_duplicate: the transposed read-out (params[-2])
                # goes out of the lists and its gradient is added to the embedding's
                self._tied = self.grads[-2]
                del self.params[-2], self.grads[-2]

    def iteration(self):
        xs, ts = self._next()
        self.loss = self.model.forward(xs, ts)
        self.model.backward()
        if self._tied is not None:
            self.grads[0] += self._tied.T
        self.clip(self.grads, MODEL_MAX_GRAD)
        self.update(self.params, self.grads)


class _TorchModelRunner(_ModelRunner):
    """nn.Embedding + nn.LSTM + nn.Linear, F.cross_entropy, clip_grad_norm_, torch.optim.SGD,
    with fastrnn_model's weights; the state is detached between iterations."""

    def __init__(self, case, seed):
        import torch
        import torch.nn.functional as F

        super().__init__(case, seed)
        self.torch, self.F = torch, F
        self.model = torch_lm_from_params(case, fastrnn_model(case, seed).params)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=MODEL_LR)
        # ids converted once, so that the conversion is not timed
        self.batches = [
            (torch.from_numpy(xs.astype(np.int64)), torch.from_numpy(ts.astype(np.int64)))
            for xs, ts in self.batches
        ]
        self.state = None

    def iteration(self):
        torch = self.torch
        xs, ts = self._next()
        self.opt.zero_grad()
        scores, state = self.model(xs, self.state)
        self.state = [
            tuple(x.detach() for x in s) if isinstance(s, tuple) else s.detach() for s in state
        ]
        loss = self.F.cross_entropy(scores.reshape(-1, self.case.V), ts.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), MODEL_MAX_GRAD)
        self.opt.step()
        self.loss = loss.detach()


def make_model_runner(impl, case, seed=0):
    """An object whose iteration() runs one training iteration of implementation impl's model of
    case ("fastrnn", "reference": the book's NumPy model, or "torch"), all with the same weights
    and batches; losses(k) runs k iterations and returns their losses."""
    if impl in ("fastrnn", "reference"):
        return _NumpyModelRunner(impl, case, seed)
    if impl == "fastrnn_bf16":
        runner = _NumpyModelRunner("fastrnn", case, seed)
        runner.model.matmul_precision = "medium"
        return runner
    if impl == "torch":
        return _TorchModelRunner(case, seed)
    raise ValueError(
        f"unknown model implementation {impl!r}; expected fastrnn, fastrnn_bf16, reference, torch"
    )


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
    return {
        "case": case.name,
        "impl": impl,
        "peak_bytes": int(peak - base),
        "peak_bytes_per_NTH": (peak - base) / NTH,
        "retained_bytes": int(retained),
        "retained_bytes_per_NTH": retained / NTH,
    }
