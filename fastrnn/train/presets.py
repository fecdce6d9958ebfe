"""Named training configurations for ``fastrnn lm train`` (``--preset NAME``).

A configuration is a flat dict of hyper-parameters; every key has a command-line flag that
overrides it (``--hidden-sizes 650,650``, ``--lr 1`` ...).  The presets reproduce:

- ``dlfs2-rnnlm``: the book's ``ch06/train_rnnlm.py`` -- its ``Rnnlm`` (one 100-unit LSTM,
  100-dim embedding), N 20, T 35, SGD lr 20, clip 0.25, 4 epochs, the book's batching.
- ``dlfs2-better``: the book's ``ch06/train_better_rnnlm.py`` -- its ``BetterRnnlm`` (2 x 650
  LSTM, dropout 0.5, tied embedding and output weights), N 20, T 35, SGD lr 20, clip 0.25,
  40 epochs, lr / 4 after an epoch whose validation perplexity is not better.
- ``zaremba-small``: Zaremba et al. 2014's small model -- 2 x 200 LSTM, no dropout, init
  U(-0.1, 0.1), N 20, T 20, SGD lr 1 halved every epoch after the 4th, 13 epochs, clip 5, loss
  summed over time.
- ``zaremba-medium``: their medium model -- 2 x 650, dropout 0.5, init U(-0.05, 0.05), N 20,
  T 35, lr 1 times 0.8 every epoch after the 6th, 39 epochs, clip 5, loss summed over time.
- ``medium-vd-tied``: the medium model with variational dropout (Gal & Ghahramani 2016: one mask per
  sequence on inputs and outputs, p 0.5, and on the recurrent state, p 0.25; word-embedding dropout
  p 0.1) and tied input/output embeddings (Inan et al. 2017; Press & Wolf 2017), trained with
  Zaremba's medium recipe (init U(-0.05, 0.05), N 20, T 35, SGD lr 1, clip 5, summed loss) but Gal's
  slower decay, lr / 1.2 every epoch after the 6th, for 39 epochs.  These values are our choice
  within the settings those papers report for their medium models, not a copy of one run; the
  recurrent 0.25 (Gal's tuned large model used 0.3 there, against 0.5 on inputs and outputs)
  measured 3.5-6.8 better validation perplexity than 0.5 at every epoch of a 27-epoch run
  (BENCHMARKS.md).

Evaluation is always at batch 1 with the state carried (:meth:`LMTrainer.evaluate`), in
windows of ``EVAL_BPTT`` words that do not change the result.
"""

from .trainer import EVAL_BPTT

__all__ = ["DEFAULT_PRESET", "HYPERPARAMETERS", "PRESETS", "preset"]

# every hyper-parameter, its type and the model builders it applies to; the flags follow
HYPERPARAMETERS = {
    # model
    "model": str,  # "rnnlm" (book's Rnnlm), "better" (BetterRnnlm), "lm"
    "embed_size": int,
    "hidden_sizes": list,  # one int per layer
    "cell": str,  # "lstm", "gru", "rnn" (model "lm")
    "dropout": float,  # every dropout site's ratio unless a site's own is given
    "embed_dropout": float,  # word-embedding dropout (variational models)
    # a variational model's sites (None: --dropout): the first layer's input, between layers,
    # the recurrent state, the last layer's output (AWD-LSTM's dropouti, dropouth, -, dropout)
    "input_dropout": float,
    "hidden_dropout": float,
    "recurrent_dropout": float,
    "output_dropout": float,
    "weight_drop": float,  # DropConnect on the recurrent weights Wh (AWD-LSTM's weight drop)
    "variational": bool,
    "residual": bool,
    "tie_weights": bool,
    "init": str,  # "uniform" (+-init_scale), "normal" (the book's), "orthogonal"
    "init_scale": float,
    "dtype": str,
    "matmul_precision": str,  # the matrix products: "highest", or "medium" (bfloat16)
    # training
    "batch_size": int,
    "bptt": int,
    "eval_bptt": int,
    "batching": str,  # "zaremba" or "dlfs2"
    "optimizer": str,  # "sgd" or "adam"
    "lr": float,
    "schedule": str,  # "constant", "plateau" (book) or "decay" (Zaremba)
    "lr_decay": float,
    "decay_after": int,
    "plateau_factor": float,
    "average": str,  # weight averaging: "none", "nt" (Merity et al.'s NT-ASGD) or "after"
    "average_after": int,  # average "after": the epochs before averaging starts
    "nonmono": int,  # average "nt": the epochs of noise its trigger waits out
    "clip": float,  # 0: no clipping
    "loss": str,  # "mean" (book) or "sum" over time (Zaremba)
    "epochs": int,
    "seed": int,
    "patience": int,  # None: all epochs; K: stop after K epochs without a validation gain
    # data
    "max_vocab": int,  # None: every training word; V: the V - 1 most frequent and <unk>
}

_BASE = {
    "cell": "lstm",
    "dropout": 0.0,
    "embed_dropout": 0.0,
    "input_dropout": None,
    "hidden_dropout": None,
    "recurrent_dropout": None,
    "output_dropout": None,
    "weight_drop": 0.0,
    "variational": False,
    "residual": False,
    "tie_weights": False,
    "init": "uniform",
    "init_scale": 0.1,
    "dtype": "float32",
    "matmul_precision": "highest",
    "eval_bptt": EVAL_BPTT,  # (the perplexity is the same for any window)
    "optimizer": "sgd",
    "lr_decay": 0.5,
    "decay_after": 4,
    "plateau_factor": 4.0,
    "average": "none",
    "average_after": 0,
    "nonmono": 5,
    "seed": 0,
    "patience": None,
    "max_vocab": None,
}

PRESETS = {
    "dlfs2-rnnlm": dict(
        _BASE,
        model="rnnlm",
        embed_size=100,
        hidden_sizes=[100],
        init="normal",
        batch_size=20,
        bptt=35,
        batching="dlfs2",
        lr=20.0,
        schedule="constant",
        clip=0.25,
        loss="mean",
        epochs=4,
    ),
    "dlfs2-better": dict(
        _BASE,
        model="better",
        embed_size=650,
        hidden_sizes=[650, 650],
        dropout=0.5,
        tie_weights=True,
        init="normal",
        batch_size=20,
        bptt=35,
        batching="dlfs2",
        lr=20.0,
        schedule="plateau",
        plateau_factor=4.0,
        clip=0.25,
        loss="mean",
        epochs=40,
    ),
    "zaremba-small": dict(
        _BASE,
        model="lm",
        embed_size=200,
        hidden_sizes=[200, 200],
        init_scale=0.1,
        batch_size=20,
        bptt=20,
        batching="zaremba",
        lr=1.0,
        schedule="decay",
        lr_decay=0.5,
        decay_after=4,
        clip=5.0,
        loss="sum",
        epochs=13,
    ),
    "zaremba-medium": dict(
        _BASE,
        model="lm",
        embed_size=650,
        hidden_sizes=[650, 650],
        dropout=0.5,
        init_scale=0.05,
        batch_size=20,
        bptt=35,
        batching="zaremba",
        lr=1.0,
        schedule="decay",
        lr_decay=0.8,
        decay_after=6,
        clip=5.0,
        loss="sum",
        epochs=39,
    ),
    "medium-vd-tied": dict(
        _BASE,
        model="lm",
        embed_size=650,
        hidden_sizes=[650, 650],
        dropout=0.5,
        recurrent_dropout=0.25,
        embed_dropout=0.1,
        variational=True,
        tie_weights=True,
        init_scale=0.05,
        batch_size=20,
        bptt=35,
        batching="zaremba",
        lr=1.0,
        schedule="decay",
        lr_decay=1 / 1.2,
        decay_after=6,
        clip=5.0,
        loss="sum",
        epochs=39,
    ),
}

DEFAULT_PRESET = "zaremba-small"


def preset(name):
    """A copy of the preset called `name` (ValueError listing the names otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}; got {name!r}")
    cfg = dict(PRESETS[name])
    cfg["hidden_sizes"] = list(cfg["hidden_sizes"])
    return cfg
