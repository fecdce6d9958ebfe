"""What `fastrnn bench` measures: the implementations, the layer shapes (Case), the clip_grads
gradient sets (ClipCase), the run's settings (BenchConfig) and the deterministic data of each."""

from dataclasses import dataclass

import numpy as np

LAYER_IMPLS = ("fastrnn", "reference", "torch", "floor")
CLIP_IMPLS = ("fastrnn", "reference", "torch", "torch_loop", "floor")
IMPL_BACKEND = {
    "fastrnn": "fastrnn",
    "reference": "reference",
    "torch": "torch",
    "torch_loop": "torch",
    "floor": "floor",
}
OPS = ("fwdbwd", "fwd")
OP_TITLES = {"fwdbwd": "forward + backward", "fwd": "forward"}
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


@dataclass
class BenchConfig:
    cases: tuple = DEFAULT_CASES
    clip_cases: tuple = CLIP_CASES
    threads: tuple = (1,)
    repeats: int = 9  # rounds; each yields one sample per implementation
    min_time: float = 0.1  # seconds per sample (calls are batched up to this)
    ops: tuple = OPS
    impls: tuple = LAYER_IMPLS  # the layer implementations (clip uses the matching ones)
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
