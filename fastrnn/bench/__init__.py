"""`fastrnn bench`: time fastrnn against the NumPy reference, PyTorch and the core's FMA peak.

What is measured (float32 throughout):

* layers: ``forward`` and ``forward+backward`` of TimeRNN / TimeLSTM / TimeGRU over a table of
  shapes (cell N T D H), for
    - ``fastrnn``    the Cython+BLAS layers,
    - ``reference``  ``fastrnn.reference``, the pure-NumPy layers they replace,
    - ``torch``      ``torch.nn.RNN/LSTM/GRU`` (batch_first, CPU, the same weights; optional),
    - ``floor``      the GEMM floor: only the matrix products a fused implementation cannot
                     avoid, run through the same BLAS function fastrnn calls (``sgemm`` of the
                     library ``fastrnn._blas`` chose: NumPy's or scipy's OpenBLAS) on preallocated
                     buffers.  Forward: one (N*T, D) x (D, GH) GEMM plus T (N, H) x (H, GH);
                     backward: T (N, GH) x (GH, H) plus the three N*T-row GEMMs for dWx, dWh
                     and dX.  The GEMMs are issued from Python through ctypes; the measured cost
                     of issuing an empty call (m = n = k = 0) is subtracted per call, so the
                     floor is BLAS time only.
  and, for fastrnn and torch, the products' rate (GF/s: Case.flops over the median time) and
  its percent of threads x one core's FMA peak, measured once per run in the fastrnn worker
  (fastrnn._cpu.peak_gflops): the physical limit, which the floor is not where OpenBLAS runs
  narrower kernels than the CPU has (OPENBLAS_CORETYPE).
* models: a whole training iteration of a word-level language model (ModelCase: forward,
  backward, global-norm clipping, SGD; the recurrent state carried between iterations as
  truncated BPTT does) -- the book's Rnnlm (V 10000, 1 x 100 LSTM, N 20 T 35), a 2 x 200 LSTM
  LM (N 20 T 20) and a 2 x 650 one (N 20 T 35) -- for
    - ``fastrnn``    fastrnn.models.Rnnlm / LanguageModel, fastrnn.clip_grads, fastrnn.train.SGD,
    - ``reference``  the book's NumPy model ("book NumPy": fastrnn.reference.models.Rnnlm, or the
                     book's structure stacked on fastrnn.reference's layers), the book's
                     clip_grads loop and SGD update,
    - ``torch``      nn.Embedding + nn.LSTM(num_layers=k) + nn.Linear, cross-entropy,
                     clip_grad_norm_, torch.optim.SGD (optional),
  all starting from the same weights on the same batches (the losses of the first iterations
  are cross-checked), with the iteration's products' GF/s (ModelCase.flops) and percent of peak.
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

The package: ``cases`` (what is measured), ``runners`` (the timed objects), ``worker`` (process
isolation and timing), ``harness`` (the coordinator and load detection), ``report`` (tables,
percent of peak), ``targets`` and ``cli`` (the command line).
"""

# the names benches/, the tests and `fastrnn bench` use, reachable as fastrnn.bench.NAME
from .cases import (
    BUSY_CORES,
    CELLS,
    CLIP_CASES,
    CLIP_IMPLS,
    DEFAULT_CASES,
    LAYER_IMPLS,
    MODEL_CASES,
    MODEL_IMPLS,
    MODEL_LR,
    MODEL_MAX_GRAD,
    MODEL_OP,
    OPS,
    QUICK_CASES,
    QUICK_CLIP_CASES,
    QUICK_MODEL_CASES,
    BenchConfig,
    Case,
    ClipCase,
    ModelCase,
    make_grads,
    make_weights,
    model_batches,
)
from .cli import add_parser, config_from_args, filter_cases, main, run, select_models
from .harness import run_bench, wait_until_quiet
from .report import (
    add_model_rates,
    add_rates,
    format_machine,
    format_model_table,
    format_report,
    plot,
)
from .runners import (
    CLIP_DECAY,
    PARALLEL_MIN,
    GemmFloor,
    _ClipRunner,
    _numpy_layer,
    fastrnn_model,
    make_clip_runner,
    make_layer_runner,
    make_model_runner,
    measure_memory,
    reference_model,
    supports,
    supports_model,
    torch_grads_to_ours,
    torch_lm_from_params,
    torch_rnn_from_weights,
)
from .targets import TARGETS, evaluate_targets
from .worker import WorkerError, _quiesce, _worker_main

__all__ = [
    "Case",
    "ClipCase",
    "ModelCase",
    "BenchConfig",
    "DEFAULT_CASES",
    "QUICK_CASES",
    "CLIP_CASES",
    "QUICK_CLIP_CASES",
    "MODEL_CASES",
    "QUICK_MODEL_CASES",
    "TARGETS",
    "add_parser",
    "run",
    "run_bench",
    "format_report",
    "format_model_table",
    "make_layer_runner",
    "make_model_runner",
    "torch_lm_from_params",
    "make_clip_runner",
    "torch_rnn_from_weights",
    "torch_grads_to_ours",
    "make_weights",
    "GemmFloor",
    "measure_memory",
    "evaluate_targets",
]
