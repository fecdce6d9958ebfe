"""The targets `fastrnn bench` checks its ratios against, and where each stands in a run."""

import re

from .cases import MODEL_CASES, MODEL_OP


def _is(cell, N=None, T=None, H=None):
    def match(row):
        c = _case_fields(row["case"])
        return (
            c
            and c["cell"] == cell
            and (N is None or c["N"] == N)
            and (T is None or c["T"] == T)
            and (H is None or H(c["H"]))
        )

    return match


def _case_fields(name):
    m = re.fullmatch(r"(\w+) N(\d+) T(\d+) D(\d+) H(\d+)", name)
    if not m:
        return None
    return {
        "cell": m.group(1),
        "N": int(m.group(2)),
        "T": int(m.group(3)),
        "D": int(m.group(4)),
        "H": int(m.group(5)),
    }


def _small_or_b1(row):
    c = _case_fields(row["case"])
    return bool(c) and c["cell"] != "gru_classic" and (c["H"] < 256 or c["N"] == 1)


def _large(row):
    c = _case_fields(row["case"])
    return bool(c) and c["cell"] != "gru_classic" and c["H"] >= 256 and c["N"] > 1


def _model(name):
    """Rows of the default model case `name`'s shape (whatever a run named it)."""
    shape = next(c.shape for c in MODEL_CASES if c.name == name)
    return lambda row: row["case"].endswith(f"({shape})")


# (description, op, predicate on the ratio row, ratio key, ">=" or "<=", threshold)
TARGETS = (
    (
        "torch/fastrnn >= 1.1, LSTM H <= 128 (incl. batch 1)",
        "fwdbwd",
        _is("lstm", H=lambda h: h <= 128),
        "torch/fastrnn",
        ">=",
        1.1,
    ),
    (
        "torch/fastrnn >= 1.0, LSTM H >= 256",
        "fwdbwd",
        _is("lstm", H=lambda h: h >= 256),
        "torch/fastrnn",
        ">=",
        1.0,
    ),
    (
        "torch/fastrnn >= 2.5, GRU N20 T35 H100",
        "fwdbwd",
        _is("gru", 20, 35, lambda h: h == 100),
        "torch/fastrnn",
        ">=",
        2.5,
    ),
    (
        "torch/fastrnn >= 2.0, RNN N20 T35 H100",
        "fwdbwd",
        _is("rnn", 20, 35, lambda h: h == 100),
        "torch/fastrnn",
        ">=",
        2.0,
    ),
    (
        "torch/fastrnn >= 1.4, GRU N64 T100 H256",
        "fwdbwd",
        _is("gru", 64, 100, lambda h: h == 256),
        "torch/fastrnn",
        ">=",
        1.4,
    ),
    (
        "torch/fastrnn >= 1.4, RNN N64 T100 H256",
        "fwdbwd",
        _is("rnn", 64, 100, lambda h: h == 256),
        "torch/fastrnn",
        ">=",
        1.4,
    ),
    ("fastrnn/floor <= 1.1, H >= 256", "fwdbwd", _large, "fastrnn/floor", "<=", 1.1),
    (
        "fastrnn/floor <= 1.3, small and batch-1 shapes",
        "fwdbwd",
        _small_or_b1,
        "fastrnn/floor",
        "<=",
        1.3,
    ),
    (
        "reference/fastrnn >= 3, LSTM N20 T35 H100",
        "fwdbwd",
        _is("lstm", 20, 35, lambda h: h == 100),
        "reference/fastrnn",
        ">=",
        3.0,
    ),
    (
        "reference/fastrnn >= 3.5, LSTM H650",
        "fwdbwd",
        _is("lstm", H=lambda h: h == 650),
        "reference/fastrnn",
        ">=",
        3.5,
    ),
    (
        "reference/fastrnn >= 12, LSTM N1 T200 H128",
        "fwdbwd",
        _is("lstm", 1, 200, lambda h: h == 128),
        "reference/fastrnn",
        ">=",
        12.0,
    ),
    (
        "reference/fastrnn >= 3, GRU N20 T35 H100",
        "fwdbwd",
        _is("gru", 20, 35, lambda h: h == 100),
        "reference/fastrnn",
        ">=",
        3.0,
    ),
    (
        "reference/fastrnn >= 2.5, RNN N20 T35 H100",
        "fwdbwd",
        _is("rnn", 20, 35, lambda h: h == 100),
        "reference/fastrnn",
        ">=",
        2.5,
    ),
    (
        "clip: fastrnn/floor <= 1.15, LM 13.3M",
        "clip",
        lambda r: r["case"].startswith("clip LM"),
        "fastrnn/floor",
        "<=",
        1.15,
    ),
    (
        "clip: torch/fastrnn > 1 (foreach), LM 13.3M",
        "clip",
        lambda r: r["case"].startswith("clip LM"),
        "torch/fastrnn",
        ">",
        1.0,
    ),
    (
        "clip: torch_loop/fastrnn > 1 (foreach=False), LM 13.3M",
        "clip",
        lambda r: r["case"].startswith("clip LM"),
        "torch_loop/fastrnn",
        ">",
        1.0,
    ),
    (
        "clip: torch/fastrnn > 1 (foreach), 2000 small",
        "clip",
        lambda r: r["case"].startswith("clip 2000"),
        "torch/fastrnn",
        ">",
        1.0,
    ),
    (
        "clip: torch_loop/fastrnn > 1 (foreach=False), 2000 small",
        "clip",
        lambda r: r["case"].startswith("clip 2000"),
        "torch_loop/fastrnn",
        ">",
        1.0,
    ),
    (
        "clip: reference/fastrnn >= 1.6, LM 13.3M",
        "clip",
        lambda r: r["case"].startswith("clip LM"),
        "reference/fastrnn",
        ">=",
        1.6,
    ),
    (
        "clip: reference/fastrnn >= 20, 2000 small arrays",
        "clip",
        lambda r: r["case"].startswith("clip 2000"),
        "reference/fastrnn",
        ">=",
        20.0,
    ),
    # issue 18: a whole training iteration (forward + backward + clip + SGD)
    (
        "model: book NumPy/fastrnn >= 2.5, book Rnnlm V10000 1x100 N20 T35",
        MODEL_OP,
        _model("rnnlm"),
        "reference/fastrnn",
        ">=",
        2.5,
    ),
    (
        "model: torch/fastrnn >= 1.5, 2x200 LSTM LM V10000 N20 T20",
        MODEL_OP,
        _model("2x200"),
        "torch/fastrnn",
        ">=",
        1.5,
    ),
)


def evaluate_targets(results):
    out = []
    for desc, op, pred, key, cmp, thr in TARGETS:
        for row in results.get("ratios", []):
            if row["op"] != op or key not in row or not pred(row):
                continue
            v = row[key]
            ok = {">=": v >= thr, "<=": v <= thr, ">": v > thr}[cmp]
            out.append(
                {
                    "target": desc,
                    "threads": row["threads"],
                    "case": row["case"],
                    "value": v,
                    "met": bool(ok),
                }
            )
    return out
