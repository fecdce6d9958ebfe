"""What `fastrnn bench` measures: the implementations, the layer shapes (Case), the clip_grads
gradient sets (ClipCase), the language models trained a whole iteration at a time (ModelCase),
the run's settings (BenchConfig) and the deterministic data of each."""

from dataclasses import dataclass

import numpy as np

LAYER_IMPLS = ("fastrnn", "reference", "torch", "floor")
CLIP_IMPLS = ("fastrnn", "reference", "torch", "torch_loop", "floor")
IMPL_BACKEND = {
    "fastrnn": "fastrnn",
    "fastrnn_bf16": "fastrnn",
    "reference": "reference",
    "torch": "torch",
    "torch_loop": "torch",
    "floor": "floor",
}
#: fastrnn_bf16: fastrnn's model with matmul_precision="medium" (bfloat16 products);
#: model rows only, and only when asked for (--impls), being another computation
MODEL_IMPLS = ("fastrnn", "fastrnn_bf16", "reference", "torch")
MODEL_ONLY_IMPLS = ("fastrnn_bf16",)  # --impls may name them beside LAYER_IMPLS
#: how the model table names each implementation ("reference" is the book's NumPy model)
MODEL_IMPL_TITLES = {
    "fastrnn": "fastrnn",
    "fastrnn_bf16": "fastrnn bf16",
    "reference": "book NumPy",
    "torch": "torch",
}
OPS = ("fwdbwd", "fwd")
OP_TITLES = {"fwdbwd": "forward + backward", "fwd": "forward"}
MODEL_OP = "iteration"  # the op name of the model rows: one whole training iteration
CELLS = {"rnn": 1, "lstm": 4, "gru": 3, "gru_classic": 3}
BUSY_CORES = 0.1  # CPU (in cores) used by other processes above which timings count as disturbed
NOISY = 0.2  # a median whose samples' IQR exceeds this fraction of it is marked '~'


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

    def flops(self, op):
        """Floating-point operations of the matrix products of one call (a multiply-add counts
        two; the element-wise gate work is not counted).  Forward: the input projection
        X (N*T, D) @ Wx (D, G) and T steps h (N, H) @ Wh (H, G), so 2 N T G (D + H); backward
        the same products three times over (dX and dh; dWx and dWh), so forward + backward is
        3x the forward's."""
        fwd = 2.0 * self.N * self.T * self.blocks * self.H * (self.D + self.H)
        if op == "fwd":
            return fwd
        if op == "fwdbwd":
            return 3 * fwd
        raise ValueError(f"op: expected 'fwd' or 'fwdbwd', got {op!r}")

    @classmethod
    def parse(cls, spec):
        """'lstm 20 35 100 100' (or 'lstm,20,35,100,100') -> Case."""
        parts = spec.replace(",", " ").split()
        if len(parts) != 5 or parts[0] not in CELLS:
            raise ValueError(
                f"shape spec must be 'CELL N T D H' with CELL one of "
                f"{', '.join(CELLS)}, got {spec!r}"
            )
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


DEFAULT_CASES = tuple(
    Case.parse(s)
    for s in (
        "lstm 20 35 100 100",
        "lstm 20 35 650 650",
        "lstm 64 100 256 256",
        "lstm 1 200 128 128",
        "lstm 128 50 512 512",
        "gru 20 35 100 100",
        "gru 64 100 256 256",
        "rnn 20 35 100 100",
        "rnn 64 100 256 256",
        "gru_classic 20 35 100 100",
        "gru_classic 64 100 256 256",
    )
)
QUICK_CASES = tuple(
    Case.parse(s)
    for s in (
        "lstm 20 35 100 100",
        "lstm 1 200 128 128",
        "lstm 64 100 256 256",
        "gru 20 35 100 100",
        "rnn 20 35 100 100",
    )
)

# a 2-layer, 650-unit word LM (vocabulary 10,000, tied output weights): embedding, two LSTMs,
# output bias -- 13,275,200 floats
LM_SHAPES = (
    (10000, 650),
    (650, 2600),
    (650, 2600),
    (2600,),
    (650, 2600),
    (650, 2600),
    (2600,),
    (10000,),
)
CLIP_CASES = (
    ClipCase("clip LM 13.3M floats", LM_SHAPES),
    ClipCase("clip 2000 x 100 floats", ((100,),) * 2000),
)
QUICK_CLIP_CASES = CLIP_CASES


# ---- whole language models ----------------------------------------------------------------------

MODEL_LR = 1.0  # SGD's learning rate in every model runner
MODEL_MAX_GRAD = 0.25  # the global-norm clipping threshold (the book's Rnnlm training uses 0.25)


@dataclass(frozen=True)
class ModelCase:
    """A word-level language model trained one whole iteration at a time: forward, backward,
    global-norm gradient clipping and an SGD update, the recurrent state carried from one
    iteration to the next (truncated BPTT).

    Embedding (V, E) -> stateful ``cell`` layers of the given hidden sizes (bottom first) ->
    affine read-out to V (tied: the embedding's transpose) -> softmax cross-entropy, on batches
    of N sequences of T word ids.  ``name`` is the short key ``--models`` selects by."""

    name: str
    V: int
    E: int
    hidden: tuple
    N: int
    T: int
    cell: str = "lstm"
    tied: bool = False

    def __post_init__(self):
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        if self.cell not in ("lstm", "gru", "rnn"):
            raise ValueError(f"ModelCase cell must be 'lstm', 'gru' or 'rnn', got {self.cell!r}")
        if not self.hidden or min((self.V, self.E, self.N, self.T) + self.hidden) < 1:
            raise ValueError(f"ModelCase sizes must be >= 1 (and hidden non-empty), got {self}")
        if self.tied and self.hidden[-1] != self.E:
            raise ValueError(
                f"a tied ModelCase needs the last hidden size ({self.hidden[-1]}) to equal E "
                f"({self.E})"
            )

    @property
    def layers(self):
        """'2x200' for equal sizes, else '200+300'."""
        hs = self.hidden
        if len(set(hs)) == 1:
            return f"{len(hs)}x{hs[0]}"
        return "+".join(map(str, hs))

    @property
    def shape(self):
        """The shape in words: 'lstm V10000 E100 1x100 N20 T35' (+ ' tied')."""
        return f"{self.cell} V{self.V} E{self.E} {self.layers} N{self.N} T{self.T}" + (
            " tied" if self.tied else ""
        )

    @property
    def label(self):
        """The row name in the results: 'rnnlm (lstm V10000 E100 1x100 N20 T35)'."""
        return f"{self.name} ({self.shape})"

    @property
    def is_book_rnnlm(self):
        """One LSTM layer, untied: the book's ``Rnnlm`` (fastrnn.models.Rnnlm and
        fastrnn.reference.models.Rnnlm are used for it)."""
        return self.cell == "lstm" and len(self.hidden) == 1 and not self.tied

    @property
    def spec(self):
        """Plain data for a worker process: ModelCase(*spec) rebuilds the case."""
        return (self.name, self.V, self.E, list(self.hidden), self.N, self.T, self.cell, self.tied)

    @property
    def flops(self):
        """Floating-point operations of the matrix products of one training iteration (a
        multiply-add counts two): each recurrent layer 3 x 2 N T G H (D + H) (G gate blocks,
        D its input size; forward, then dX/dh and dWx/dWh in backward) and the read-out
        3 x 2 N T H V.  Element-wise work, the softmax, the embedding, clipping and the update
        are not counted."""
        G = {"lstm": 4, "gru": 3, "rnn": 1}[self.cell]
        flops, D = 0, self.E
        for H in self.hidden:
            flops += 3 * 2 * self.N * self.T * G * H * (D + H)
            D = H
        return flops + 3 * 2 * self.N * self.T * self.hidden[-1] * self.V

    @classmethod
    def parse(cls, spec):
        """'lstm 10000 200 200,200 20 20' (CELL V E H[,H...] N T, optionally 'tied') ->
        ModelCase named by its layers ('2x200')."""
        parts = spec.replace(";", " ").split()
        tied = parts[-1:] == ["tied"]
        if tied:
            parts = parts[:-1]
        try:
            if len(parts) != 6:
                raise ValueError
            V, E, N, T = (int(parts[i]) for i in (1, 2, 4, 5))
            hidden = tuple(int(h) for h in parts[3].split(","))
        except ValueError:
            raise ValueError(
                f"model spec must be 'CELL V E H[,H...] N T [tied]', e.g. "
                f"'lstm 10000 200 200,200 20 20', got {spec!r}"
            ) from None
        case = cls("?", V, E, hidden, N, T, parts[0], tied)
        return cls(case.layers, V, E, hidden, N, T, parts[0], tied)


MODEL_CASES = (
    ModelCase("rnnlm", 10000, 100, (100,), 20, 35),  # the book's Rnnlm at its own shape
    ModelCase("2x200", 10000, 200, (200, 200), 20, 20),  # Zaremba et al.'s small model
    ModelCase("2x650", 10000, 650, (650, 650), 20, 35),  # the book's BetterRnnlm size
)
QUICK_MODEL_CASES = MODEL_CASES[:2]


def model_batches(case, seed=0, count=4):
    """count deterministic (xs, ts) int32 batches of random word ids, (N, T) each, ts = xs
    shifted by one: the same in every worker; the runners cycle through them."""
    rng = np.random.default_rng(_seed_of(case.label, seed))
    out = []
    for _ in range(count):
        d = rng.integers(0, case.V, (case.N, case.T + 1)).astype(np.int32)
        out.append((np.ascontiguousarray(d[:, :-1]), np.ascontiguousarray(d[:, 1:])))
    return out


@dataclass
class BenchConfig:
    cases: tuple = DEFAULT_CASES
    clip_cases: tuple = CLIP_CASES
    # none unless asked (the command line asks for MODEL_CASES): a caller timing its own layer
    # shapes should not get three 10,000-word models trained on top
    model_cases: tuple = ()
    threads: tuple = (1,)
    repeats: int = 9  # rounds; each yields one sample per implementation
    min_time: float = 0.1  # seconds per sample (calls are batched up to this)
    model_min_time: float = 0.5  # the same for the model rows (an iteration takes 30-700 ms)
    ops: tuple = OPS
    impls: tuple = LAYER_IMPLS  # the layer implementations (clip and models use the matching ones)
    memory: bool = True
    settle: float = 0.0  # seconds of idle between two implementations' batches
    retry_busy: int = 0  # re-measure a group disturbed by other processes up to this often
    quiet_wait: float = 120.0  # seconds to wait for a quiet machine before such a retry
    progress: bool = True
    command: str = ""
    quick: bool = False
    seed: int = 0


def _seed_of(name, seed):
    return (sum(ord(c) * 131**i for i, c in enumerate(name)) + seed) % 2**32


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


def make_grads(clip_case, seed=0):
    rng = np.random.default_rng(_seed_of(clip_case.name, seed))
    return [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in clip_case.shapes]
