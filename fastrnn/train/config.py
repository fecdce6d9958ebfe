"""From a language-model run's configuration to its objects: the hyper-parameters of a preset
overridden by flags (:func:`config_from_args`), their checks (:func:`check_config`, each error
naming its flag), and the model, optimizer and trainer they describe.  Shared by ``fastrnn lm``'s
commands (:mod:`fastrnn.train.cli`) and the benchmarks that train the same models."""

import contextlib
import math

from ..layers._precision import MATMUL_PRECISIONS
from .averaging import AVERAGING
from .data import UNK
from .presets import DEFAULT_PRESET, HYPERPARAMETERS, preset
from .schedules import make_schedule

__all__ = [
    "UsageError",
    "build_model",
    "check_config",
    "config_from_args",
    "dropout_note",
    "flag",
    "make_optimizer",
    "make_trainer",
    "thread_limit",
    "variational_ratios",
]

# a variational model's dropout sites: hyper-parameter -> LanguageModel's variational key
DROPOUT_SITES = {
    "input_dropout": "input",
    "hidden_dropout": "hidden",
    "recurrent_dropout": "recurrent",
    "output_dropout": "output",
}

# the book's models: class, layers, has dropout, tied weights
BOOK_MODELS = {"rnnlm": ("Rnnlm", 1, False, False), "better": ("BetterRnnlm", 2, True, True)}


class UsageError(ValueError):
    """A bad flag, file or run directory: reported in one line, exit status 2."""


def flag(key):
    """The command-line flag of hyper-parameter `key`."""
    return "--" + key.replace("_", "-")


def config_from_args(args):
    """The run's hyper-parameters: the preset's, overridden by every flag given."""
    cfg = preset(args.preset or DEFAULT_PRESET)
    for key in HYPERPARAMETERS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    cfg["preset"] = args.preset or DEFAULT_PRESET
    return cfg


def check_config(cfg):
    """A UsageError naming the flag for the first bad value of `cfg`."""

    def need(ok, key, what):
        if not ok:
            raise UsageError(f"{flag(key)} must be {what}, got {cfg[key]!r}")

    for key in ("embed_size", "batch_size", "bptt", "eval_bptt", "epochs"):
        need(cfg[key] >= 1, key, "a positive integer")
    need(all(h >= 1 for h in cfg["hidden_sizes"]), "hidden_sizes", "positive layer sizes")
    for key in ("dropout", "embed_dropout", "weight_drop"):
        need(0.0 <= cfg[key] < 1.0, key, "in [0, 1)")
    for key in DROPOUT_SITES:
        if cfg.get(key) is not None:
            need(0.0 <= cfg[key] < 1.0, key, "in [0, 1)")
            need(
                cfg["variational"],
                key,
                "unset unless --variational true (ordinary dropout has one ratio, --dropout)",
            )
    for key in ("lr", "init_scale", "lr_decay", "plateau_factor"):
        need(math.isfinite(cfg[key]) and cfg[key] > 0, key, "a positive number")
    need(math.isfinite(cfg["clip"]) and cfg["clip"] >= 0, "clip", ">= 0 (0: no clipping)")
    need(cfg["decay_after"] >= 0, "decay_after", "a non-negative integer")
    need(cfg["average"] in AVERAGING, "average", " or ".join(map(repr, AVERAGING)))
    need(cfg["average_after"] >= 0, "average_after", "a non-negative integer")
    need(cfg["nonmono"] >= 1, "nonmono", "a positive integer (epochs)")
    need(cfg["seed"] >= 0, "seed", "a non-negative integer")
    need(
        cfg["matmul_precision"] in MATMUL_PRECISIONS,
        "matmul_precision",
        " or ".join(map(repr, MATMUL_PRECISIONS)),
    )
    need(
        cfg["matmul_precision"] == "highest" or cfg["dtype"] == "float32",
        "matmul_precision",
        "'highest' with --dtype float64 (bfloat16 products are for float32)",
    )
    if cfg.get("patience") is not None:
        need(cfg["patience"] >= 1, "patience", "a positive integer (epochs)")
    if cfg.get("max_vocab") is not None:
        need(cfg["max_vocab"] >= 2, "max_vocab", f"at least 2 (a word and {UNK})")
    if cfg["tie_weights"]:
        need(
            cfg["embed_size"] == cfg["hidden_sizes"][-1],
            "embed_size",
            f"equal to the last hidden size ({cfg['hidden_sizes'][-1]}) with tied weights",
        )
    if cfg["embed_dropout"]:
        need(
            cfg["variational"],
            "embed_dropout",
            "0 unless --variational true (word-type dropout is a variational-dropout site)",
        )
    if cfg["residual"]:
        need(
            len(set(cfg["hidden_sizes"])) == 1,
            "hidden_sizes",
            "equal sizes for residual connections",
        )
    # the book's two models are fixed architectures: flags they cannot honour are errors
    if cfg["model"] in BOOK_MODELS:
        cls, layers, dropout, tied = BOOK_MODELS[cfg["model"]]
        name = f"--model {cfg['model']} (the book's {cls})"
        H = cfg["hidden_sizes"]
        if len(H) != layers or len(set(H)) != 1:
            raise UsageError(
                f"{name} has {layers} LSTM layer(s) of one size: --hidden-sizes "
                f"{','.join(map(str, H))} does not fit"
            )
        for key, ok in (
            ("cell", cfg["cell"] == "lstm"),
            ("init", cfg["init"] == "normal"),
            ("variational", not cfg["variational"]),
            ("residual", not cfg["residual"]),
            ("tie_weights", cfg["tie_weights"] == tied),
            ("dropout", dropout or cfg["dropout"] == 0),
            ("weight_drop", cfg["weight_drop"] == 0),
        ):
            if not ok:
                raise UsageError(f"{name} cannot take {flag(key)} {cfg[key]!r}; use --model lm")


def variational_ratios(cfg):
    """A variational model's dropout ratio at each site (``LanguageModel``'s `variational`
    dict): a site's own flag where given, else ``--dropout``; None for other models."""
    if not cfg["variational"]:
        return None
    ratios = {"embedding": cfg["embed_dropout"]}
    for key, site in DROPOUT_SITES.items():
        ratios[site] = cfg["dropout"] if cfg.get(key) is None else cfg[key]
    return ratios


def dropout_note(cfg):
    """The run's dropout, for its first line ('' without)."""
    wd = cfg.get("weight_drop", 0.0)
    weights = f", weight drop {wd:g}" if wd else ""
    ratios = variational_ratios(cfg)
    if ratios is None:
        return (f", dropout {cfg['dropout']:g}" if cfg["dropout"] else "") + weights
    if not any(ratios.values()):
        return weights
    sites = ("input", "hidden", "recurrent", "output")
    if len({ratios[s] for s in sites}) == 1:
        text = f"{ratios['input']:g}"
    else:
        text = ", ".join(f"{s} {ratios[s]:g}" for s in sites)
    words = f", words {ratios['embedding']:g}" if ratios["embedding"] else ""
    return f", variational dropout {text}{words}{weights}"


def build_model(cfg, vocab_size):
    """The model `cfg` describes, for a vocabulary of `vocab_size` words
    (:mod:`fastrnn.models.lm`: the book's ``Rnnlm`` / ``BetterRnnlm`` or ``LanguageModel``)."""
    from ..models import lm

    H, seed, dtype = cfg["hidden_sizes"], cfg["seed"], cfg["dtype"]
    mp = cfg.get("matmul_precision", "highest")
    if cfg["model"] == "rnnlm":
        return lm.Rnnlm(
            vocab_size, cfg["embed_size"], H[0], seed=seed, dtype=dtype, matmul_precision=mp
        )
    if cfg["model"] == "better":
        return lm.BetterRnnlm(
            vocab_size,
            cfg["embed_size"],
            H[0],
            cfg["dropout"],
            seed=seed,
            dtype=dtype,
            matmul_precision=mp,
        )
    variational = variational_ratios(cfg)
    dropout = 0.0 if variational else cfg["dropout"]
    return lm.LanguageModel(
        vocab_size,
        cfg["embed_size"],
        list(H),
        cell=cfg["cell"],
        dropout=dropout,
        variational=variational,
        connection="residual" if cfg["residual"] else None,
        tie_weights=cfg["tie_weights"],
        weight_drop=cfg.get("weight_drop", 0.0),
        init=cfg["init"],
        init_scale=cfg["init_scale"],
        dtype=dtype,
        seed=seed,
        matmul_precision=mp,
    )


def make_optimizer(cfg):
    from .optim import SGD, Adam

    return Adam(cfg["lr"]) if cfg["optimizer"] == "adam" else SGD(cfg["lr"])


def make_trainer(cfg, model, threads, progress, parallel=None):
    from .trainer import LMTrainer

    schedule = make_schedule(
        cfg["schedule"], cfg["lr"], cfg["lr_decay"], cfg["decay_after"], cfg["plateau_factor"]
    )
    return LMTrainer(
        model,
        make_optimizer(cfg),
        schedule,
        batch_size=cfg["batch_size"],
        bptt=cfg["bptt"],
        clip=cfg["clip"] or None,
        loss=cfg["loss"],
        batching=cfg["batching"],
        eval_bptt=cfg["eval_bptt"],
        threads=threads or None,
        progress=progress,
        parallel=parallel,
        average=cfg["average"],
        average_after=cfg["average_after"],
        nonmono=cfg["nonmono"],
    )


def thread_limit(k):
    """threadpoolctl's BLAS limit (fastrnn's kernels follow BLAS's thread setting)."""
    if k == 0:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=k, user_api="blas")
