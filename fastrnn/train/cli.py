"""``fastrnn lm``: train language models on Penn Treebank and generate text from them.

Usage::

    fastrnn lm train --data DIR [--preset NAME] [--epochs N] [--out DIR] [--threads K] [--seed S]
                     [--resume] [a flag per hyper-parameter ...]
    fastrnn lm generate --model DIR [--start WORD] [--length L] [--temperature X | --greedy]
                        [--seed S]
    fastrnn lm eval --model DIR (--data DIR [--split valid,test] | --text FILE ...)
                    [--eval-bptt T] [--threads K] [--json FILE]

Every flag and file is checked before anything is written; a bad one is a one-line error and
exit status 2.  See :mod:`fastrnn.train.presets` for the presets and
:mod:`fastrnn.train.checkpoint` for what ``--out`` receives.
"""

import argparse
import contextlib
import math
import os
import signal
import sys
import time

from . import checkpoint as ckpt
from .data import BATCHINGS, EOS, PTB_FILES, UNK, Vocabulary, load_ptb, read_words, window_count
from .presets import DEFAULT_PRESET, HYPERPARAMETERS, PRESETS, preset
from .schedules import SCHEDULES, make_schedule
from .trainer import EVAL_BPTT, TrainingInterrupted, evaluate_perplexity

__all__ = [
    "add_parser",
    "build_model",
    "build_parser",
    "check_config",
    "config_from_args",
    "main",
    "run_eval",
    "run_generate",
    "run_train",
]

_MODELS = ("rnnlm", "better", "lm")
_CELLS = ("lstm", "gru", "rnn")
# the book's models: class, layers, has dropout, tied weights
_BOOK_MODELS = {"rnnlm": ("Rnnlm", 1, False, False), "better": ("BetterRnnlm", 2, True, True)}
_DTYPES = ("float32", "float64")
_INITS = ("uniform", "normal", "orthogonal")
# flags that may accompany --resume (everything else comes from the checkpoint; the evaluation
# window changes the speed, not the numbers)
_RESUME_FLAGS = ("epochs", "eval_bptt")


class UsageError(ValueError):
    """A bad flag, file or run directory: reported in one line, exit status 2."""


def _flag(key):
    return "--" + key.replace("_", "-")


def _int_list(text):
    try:
        sizes = [int(s) for s in text.replace("x", ",").split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes such as 200,200, got {text!r}"
        ) from None
    if not sizes:
        raise argparse.ArgumentTypeError("expected at least one layer size")
    return sizes


def _bool(text):
    t = text.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_train_arguments(p):
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="directory holding ptb.train.txt, ptb.valid.txt and ptb.test.txt",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help=f"training configuration (default: {DEFAULT_PRESET}); every flag below "
        "overrides its value",
    )
    p.add_argument(
        "--out",
        default="fastrnn-lm",
        metavar="DIR",
        help="run directory: checkpoints, metrics.json, perplexity.png (default: %(default)s)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its "
        "configuration (only --epochs may change it)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="K",
        help="threads for BLAS and fastrnn's kernels (threadpoolctl); 0 leaves the "
        "library default (default: %(default)s)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="S",
        help="stop after S updates in this call (the epoch in progress is evaluated "
        "and recorded as partial; a run stopped so cannot be resumed)",
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        metavar="M",
        help="also checkpoint inside an epoch every M minutes, so that --resume continues "
        "from there (0: at the end of each epoch only; default: %(default)s).  SIGINT (Ctrl-C) "
        "or SIGTERM checkpoints at once and stops; a second Ctrl-C aborts",
    )
    p.add_argument(
        "--mpi",
        action="store_true",
        help="data-parallel over the ranks of mpirun (mpirun -n K fastrnn lm train --mpi ...): "
        "each rank takes --batch-size / K of the streams; needs mpi4py",
    )
    p.add_argument(
        "--eval-words",
        type=int,
        default=None,
        metavar="W",
        help="evaluate on the first W words of valid and test only (quick runs; default: all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help="do not draw perplexity.png")
    g = p.add_argument_group("hyper-parameters (default: the preset's)")
    g.add_argument("--epochs", type=int, help="total epochs of the run")
    g.add_argument("--seed", type=int, help="seed of the model's initialization and dropout")
    g.add_argument(
        "--model",
        choices=_MODELS,
        help="rnnlm: the book's Rnnlm; better: its BetterRnnlm; lm: LanguageModel",
    )
    g.add_argument("--embed-size", type=int, metavar="E")
    g.add_argument(
        "--hidden-sizes",
        type=_int_list,
        metavar="H[,H...]",
        help="one size per recurrent layer, e.g. 650,650",
    )
    g.add_argument("--cell", choices=_CELLS)
    g.add_argument("--dropout", type=float, metavar="P")
    g.add_argument("--embed-dropout", type=float, metavar="P")
    g.add_argument(
        "--variational",
        type=_bool,
        metavar="BOOL",
        help="one dropout mask per sequence, recurrent connections too (Gal)",
    )
    g.add_argument("--residual", type=_bool, metavar="BOOL")
    g.add_argument("--tie-weights", type=_bool, metavar="BOOL")
    g.add_argument(
        "--init",
        choices=_INITS,
        help="uniform: U(-init_scale, init_scale) (Zaremba); normal: the book's; "
        "orthogonal: orthogonal recurrent gate blocks (model lm)",
    )
    g.add_argument("--init-scale", type=float, metavar="S")
    g.add_argument("--dtype", choices=_DTYPES)
    g.add_argument("--batch-size", type=int, metavar="N", help="parallel streams")
    g.add_argument("--bptt", type=int, metavar="T", help="window length of training")
    g.add_argument(
        "--eval-bptt",
        type=int,
        metavar="T",
        help="window length of the batch-1 evaluation (does not change the result)",
    )
    g.add_argument("--batching", choices=BATCHINGS)
    g.add_argument("--optimizer", choices=("sgd", "adam"))
    g.add_argument("--lr", type=float)
    g.add_argument("--schedule", choices=sorted(SCHEDULES))
    g.add_argument(
        "--lr-decay",
        type=float,
        metavar="D",
        help="decay schedule: lr * D ** max(epoch - decay_after, 0)",
    )
    g.add_argument("--decay-after", type=int, metavar="K")
    g.add_argument(
        "--plateau-factor",
        type=float,
        metavar="F",
        help="plateau schedule: divide lr by F when validation does not improve",
    )
    g.add_argument("--clip", type=float, metavar="C", help="global-norm clip (0: none)")
    g.add_argument(
        "--loss",
        choices=("mean", "sum"),
        help="gradient of the mean token loss (book) or of the loss summed over time (Zaremba)",
    )
    return p


def _add_generate_arguments(p):
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="a run directory of `fastrnn lm train` (its best model) or a model file",
    )
    p.add_argument(
        "--start", default="the", metavar="WORD", help="first word (default: %(default)s)"
    )
    p.add_argument(
        "--length",
        type=int,
        default=50,
        metavar="L",
        help="words to generate (default: %(default)s)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="X",
        help="sample from softmax(scores / X) (default: %(default)s)",
    )
    mode.add_argument("--greedy", action="store_true", help="always the most likely word")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--vocab", metavar="FILE", help="vocab.json (default: found next to the model)")
    return p


def _add_eval_arguments(p):
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="a run directory of `fastrnn lm train` (its best model), its best/ or last/, or a "
        "model file",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data",
        metavar="DIR",
        help="a PTB directory: evaluates the files of --split",
    )
    src.add_argument(
        "--text",
        nargs="+",
        metavar="FILE",
        help="text files (one sentence a line), words outside the vocabulary read as <unk>",
    )
    p.add_argument(
        "--split",
        default="valid,test",
        metavar="S[,S]",
        help="with --data: splits to evaluate, of train, valid, test (default: %(default)s)",
    )
    p.add_argument(
        "--eval-bptt",
        type=int,
        default=EVAL_BPTT,
        metavar="T",
        help="window length; does not change the result (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="K",
        help="threads for BLAS and fastrnn's kernels; 0 leaves the library default "
        "(default: %(default)s)",
    )
    p.add_argument("--vocab", metavar="FILE", help="vocab.json (default: found next to the model)")
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def add_parser(subparsers):
    """Register ``lm`` (``train``, ``generate``, ``eval``) on an argparse subparsers object."""
    p = subparsers.add_parser(
        "lm",
        help="train language models on Penn Treebank, generate text, evaluate",
        description=__doc__.split("\n\n")[0],
    )
    sub = p.add_subparsers(dest="lm_command", metavar="{train,generate,eval}")
    sub.required = True
    t = sub.add_parser(
        "train",
        help="train a language model",
        description="Train a language model on PTB by truncated BPTT.",
    )
    _add_train_arguments(t).set_defaults(func=run_train)
    g = sub.add_parser(
        "generate",
        help="generate text from a trained model",
        description="Generate text one word at a time from a trained model.",
    )
    _add_generate_arguments(g).set_defaults(func=run_generate)
    e = sub.add_parser(
        "eval",
        help="perplexity of a trained model on PTB splits or text files",
        description="Perplexity of a trained model at batch 1, the state carried, as "
        "`fastrnn lm train` measures it.",
    )
    _add_eval_arguments(e).set_defaults(func=run_eval)
    return p


def build_parser():
    """A standalone parser (``python -m fastrnn.train.cli``)."""
    parser = argparse.ArgumentParser(prog="fastrnn")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


# -- configuration ------------------------------------------------------------------------------
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
            raise UsageError(f"{_flag(key)} must be {what}, got {cfg[key]!r}")

    for key in ("embed_size", "batch_size", "bptt", "eval_bptt", "epochs"):
        need(cfg[key] >= 1, key, "a positive integer")
    need(all(h >= 1 for h in cfg["hidden_sizes"]), "hidden_sizes", "positive layer sizes")
    for key in ("dropout", "embed_dropout"):
        need(0.0 <= cfg[key] < 1.0, key, "in [0, 1)")
    for key in ("lr", "init_scale", "lr_decay", "plateau_factor"):
        need(math.isfinite(cfg[key]) and cfg[key] > 0, key, "a positive number")
    need(math.isfinite(cfg["clip"]) and cfg["clip"] >= 0, "clip", ">= 0 (0: no clipping)")
    need(cfg["decay_after"] >= 0, "decay_after", "a non-negative integer")
    need(cfg["seed"] >= 0, "seed", "a non-negative integer")
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
    if cfg["model"] in _BOOK_MODELS:
        cls, layers, dropout, tied = _BOOK_MODELS[cfg["model"]]
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
        ):
            if not ok:
                raise UsageError(f"{name} cannot take {_flag(key)} {cfg[key]!r}; use --model lm")


def build_model(cfg, vocab_size):
    """The model `cfg` describes, for a vocabulary of `vocab_size` words
    (:mod:`fastrnn.models.lm`: the book's ``Rnnlm`` / ``BetterRnnlm`` or ``LanguageModel``)."""
    from ..models import lm

    H, seed, dtype = cfg["hidden_sizes"], cfg["seed"], cfg["dtype"]
    if cfg["model"] == "rnnlm":
        return lm.Rnnlm(vocab_size, cfg["embed_size"], H[0], seed=seed, dtype=dtype)
    if cfg["model"] == "better":
        return lm.BetterRnnlm(
            vocab_size, cfg["embed_size"], H[0], cfg["dropout"], seed=seed, dtype=dtype
        )
    dropout, variational = cfg["dropout"], None
    if cfg["variational"]:
        p = cfg["dropout"]
        variational = {
            "embedding": cfg["embed_dropout"],
            "input": p,
            "hidden": p,
            "recurrent": p,
            "output": p,
        }
        dropout = 0.0
    return lm.LanguageModel(
        vocab_size,
        cfg["embed_size"],
        list(H),
        cell=cfg["cell"],
        dropout=dropout,
        variational=variational,
        connection="residual" if cfg["residual"] else None,
        tie_weights=cfg["tie_weights"],
        init=cfg["init"],
        init_scale=cfg["init_scale"],
        dtype=dtype,
        seed=seed,
    )


def _make_optimizer(cfg):
    from .optim import SGD, Adam

    return Adam(cfg["lr"]) if cfg["optimizer"] == "adam" else SGD(cfg["lr"])


def _make_trainer(cfg, model, threads, progress, parallel=None):
    from .trainer import LMTrainer

    schedule = make_schedule(
        cfg["schedule"], cfg["lr"], cfg["lr_decay"], cfg["decay_after"], cfg["plateau_factor"]
    )
    return LMTrainer(
        model,
        _make_optimizer(cfg),
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
    )


def _where(trainer):
    """Where a run stands, in words: 'after epoch E' or 'in epoch E+1 after W windows'."""
    if trainer.position is None:
        return f"after epoch {trainer.epoch}"
    return f"in epoch {trainer.epoch + 1} after {trainer.position['windows']} windows"


@contextlib.contextmanager
def _stop_on_signals(trainer):
    """SIGINT and SIGTERM set ``trainer.stop_requested`` (the run checkpoints and stops after
    the update in progress); a second SIGINT raises KeyboardInterrupt as usual.  Yields a list
    that receives the signal's name."""
    received = [None]

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        received[0] = name
        # os.write, not print: the handler may interrupt a write to sys.stderr (tqdm's), and a
        # buffered stream re-entered raises RuntimeError
        message = (
            f"\nfastrnn lm train: {name}: stopping after this update to write a checkpoint "
            "(Ctrl-C again aborts without one)\n"
        )
        try:
            os.write(sys.stderr.fileno(), message.encode())
        except (OSError, ValueError, AttributeError):  # no file descriptor (captured): skip
            pass

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _thread_limit(k):
    """threadpoolctl's BLAS limit (fastrnn's kernels follow BLAS's thread setting)."""
    if k == 0:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=k, user_api="blas")


# -- train --------------------------------------------------------------------------------------
def _metrics_doc(cfg, history, best, test_ppl=None, eval_words=None, test_ppl_final=None):
    doc = {
        "preset": cfg["preset"],
        "config": cfg,
        "epochs": history,
        "test_ppl": test_ppl,
        # the model after the last epoch, as the papers report (test_ppl: the best-validation one)
        "test_ppl_final": test_ppl_final,
        "best_epoch": best.get("epoch"),
        "best_val_ppl": best.get("val_ppl"),
        "eval_words": eval_words,
    }
    if test_ppl is not None:
        doc["test_model"] = "best validation"
    return doc


def _plot(out, history, note):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note("matplotlib is not installed: perplexity.png skipped")
        return
    epochs = [m["epoch"] for m in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_ppl"] for m in history], "o-", label="train")
    ax.plot(epochs, [m["val_ppl"] for m in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "perplexity.png")
    tmp = os.path.join(out, ".perplexity.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _prepare_train(args):
    """Everything checked and loaded before the run directory is touched."""
    if args.threads < 0:
        raise UsageError(f"--threads must be >= 0, got {args.threads}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be a positive integer, got {args.max_steps}")
    if not (args.checkpoint_minutes >= 0 and math.isfinite(args.checkpoint_minutes)):
        raise UsageError(
            f"--checkpoint-minutes must be a number >= 0, got {args.checkpoint_minutes}"
        )
    if args.eval_words is not None and args.eval_words < 2:
        raise UsageError(f"--eval-words must be at least 2, got {args.eval_words}")
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: exists and is not a directory")
    record = os.path.join(out, "last", "checkpoint.json")
    if args.resume:
        if not os.path.isfile(record):
            raise UsageError(f"--resume: {out} holds no checkpoint ({record} not found)")
        given = [
            k
            for k in HYPERPARAMETERS
            if k not in _RESUME_FLAGS and getattr(args, k, None) is not None
        ]
        if args.preset is not None:
            given.insert(0, "preset")
        if given:
            raise UsageError(
                f"--resume takes the run's configuration from its checkpoint; "
                f"drop {', '.join(_flag(k) for k in given)}"
            )
        state = ckpt.read_json(record, "checkpoint record")
        if state.get("partial"):
            raise UsageError(
                f"--resume: {out}'s last epoch was cut short by --max-steps; "
                f"it cannot be continued on the same curve"
            )
        cfg = dict(state["config"])
        for key in _RESUME_FLAGS:
            if getattr(args, key, None) is not None:
                cfg[key] = getattr(args, key)
    else:
        if os.path.exists(record) or os.path.exists(os.path.join(out, "metrics.json")):
            raise UsageError(
                f"--out {out} already holds a run: pass --resume to continue it "
                f"or choose another directory"
            )
        cfg = config_from_args(args)
    check_config(cfg)
    try:
        corpus = load_ptb(args.data)
    except ValueError as e:
        raise UsageError(f"--data: {e}") from None
    for split in ("train", "valid", "test"):
        if split == "train":
            if window_count(len(corpus.train), cfg["batch_size"], cfg["bptt"], cfg["batching"]) < 1:
                raise UsageError(
                    f"{corpus.paths['train']}: {len(corpus.train)} words are too "
                    f"few for --batch-size {cfg['batch_size']} and --bptt "
                    f"{cfg['bptt']}"
                )
        elif len(getattr(corpus, split)) < 2:
            raise UsageError(f"{corpus.paths[split]}: needs at least one word")
    if args.eval_words is not None:
        corpus.valid = corpus.valid[: args.eval_words]
        corpus.test = corpus.test[: args.eval_words]
    return cfg, corpus


def run_train(args):
    """``fastrnn lm train``: returns the exit status."""
    par = None
    if args.mpi:
        try:
            from .distributed import DataParallel

            par = DataParallel()
        except ImportError as e:
            print(f"fastrnn lm train: error: --mpi: {e}", file=sys.stderr)
            return 2
    lead = par is None or par.rank == 0  # prints, writes and evaluates the test set

    def say(*a, **k):
        if lead:
            print(*a, **k)

    try:
        cfg, corpus = _prepare_train(args)
        if par is not None:
            try:
                par.check_batch(cfg["batch_size"])
            except ValueError as e:
                raise UsageError(str(e)) from None
    except UsageError as e:
        say(f"fastrnn lm train: error: {e}", file=sys.stderr)
        return 2
    out = args.out
    notes = []
    with _thread_limit(args.threads):
        if args.resume:
            state, model, arrays = ckpt.load_last(out)
            vocab = Vocabulary(ckpt.read_json(os.path.join(out, "vocab.json"), "vocabulary"))
            if vocab.id_to_word != corpus.vocab.id_to_word:
                say(
                    f"fastrnn lm train: error: --data {args.data}: its vocabulary differs "
                    f"from the run's ({out}/vocab.json)",
                    file=sys.stderr,
                )
                return 2
            trainer = _make_trainer(cfg, model, args.threads, not args.no_progress, par)
            try:
                trainer.load_state(state, arrays)
            except ValueError as e:
                say(f"fastrnn lm train: error: --resume: {e}", file=sys.stderr)
                return 2
            best = state.get("best", {})
        else:
            model = build_model(cfg, len(corpus.vocab))
            if par is not None:
                from .trainer import model_generators

                par.own_streams(model_generators(model), cfg["seed"])
            trainer = _make_trainer(cfg, model, args.threads, not args.no_progress, par)
            if lead:
                os.makedirs(out, exist_ok=True)
                ckpt.atomic_write_json(os.path.join(out, "vocab.json"), corpus.vocab.id_to_word)
            best = {}
        say(
            f"fastrnn lm train: preset {cfg['preset']}, {cfg['model']} "
            f"{'x'.join(map(str, cfg['hidden_sizes']))} {cfg['cell']}, vocab "
            f"{len(corpus.vocab)}, N {cfg['batch_size']}, T {cfg['bptt']}, "
            f"{sum(p.size for p in model.params):,} parameters, threads {args.threads}"
            + (f", {par.size} MPI ranks" if par is not None else "")
            + (f", resuming {_where(trainer)}" if args.resume else ""),
            flush=True,
        )
        if args.resume and trainer.epoch >= cfg["epochs"]:
            say(
                f"the run is complete ({trainer.epoch} of {cfg['epochs']} epochs): evaluating "
                "it again (--epochs N trains it further)",
                flush=True,
            )

        saved = [time.monotonic()]  # when the last checkpoint was written
        every = args.checkpoint_minutes * 60

        def save_last(tr, partial=False):
            state, arrays = tr.state()  # (collective with MPI)
            if lead:
                state.update(config=cfg, best=dict(best), partial=partial)
                ckpt.save_last(out, tr.model, arrays, state)
            saved[0] = time.monotonic()

        def on_epoch(tr, metrics):
            if metrics["val_ppl"] < best.get("val_ppl", math.inf):
                best.update(epoch=metrics["epoch"], val_ppl=metrics["val_ppl"])
                if lead:
                    ckpt.save_best(out, tr.model, dict(best))
            save_last(tr, bool(metrics.get("partial")))
            if lead:
                ckpt.atomic_write_json(
                    os.path.join(out, "metrics.json"),
                    _metrics_doc(cfg, tr.history, best, None, args.eval_words),
                )

        def on_window(tr):
            if tr.checkpoint_due:  # wanted by some rank at the update before: all save now
                tr.checkpoint_due = False
                save_last(tr)
            elif every and time.monotonic() - saved[0] >= every:
                if par is None:
                    save_last(tr)
                else:
                    tr.checkpoint_wanted = True

        try:
            with _stop_on_signals(trainer) as received:
                trainer.fit(
                    corpus.train,
                    corpus.valid,
                    cfg["epochs"],
                    max_steps=args.max_steps,
                    on_epoch=on_epoch,
                    on_window=on_window,
                    log=print if lead else None,
                )
        except TrainingInterrupted as e:
            save_last(trainer)
            say(
                f"fastrnn lm train: {received[0] or 'stop requested'}: {e}; checkpoint "
                f"written: continue with --resume --out {out}",
                file=sys.stderr,
            )
            return 128 + signal.Signals[received[0]].value if received[0] else 1
        if not lead:
            return 0
        test_ppl = test_ppl_final = None
        if best:
            from ..io import load

            test_ppl_final = trainer.evaluate(corpus.test, "test")
            print(
                f"test ppl {test_ppl_final:.2f} (final model, epoch {trainer.history[-1]['epoch']})"
            )
            trainer.model = load(os.path.join(out, "best", "model.npz"))
            test_ppl = trainer.evaluate(corpus.test, "test")
            print(
                f"test ppl {test_ppl:.2f} (best validation model, epoch {best['epoch']}: "
                f"val ppl {best['val_ppl']:.2f})"
            )
        ckpt.atomic_write_json(
            os.path.join(out, "metrics.json"),
            _metrics_doc(cfg, trainer.history, best, test_ppl, args.eval_words, test_ppl_final),
        )
    if not args.no_plot and trainer.history:
        _plot(out, trainer.history, notes.append)
    for n in notes:
        print(f"note: {n}")
    print(
        f"wrote {out}/metrics.json, {out}/best/, {out}/last/"
        + ("" if args.no_plot or notes else f", {out}/perplexity.png")
    )
    return 0


# -- generate -----------------------------------------------------------------------------------
def _load_trained(args):
    """(model file, model, vocabulary) named by --model and --vocab, or a UsageError."""
    from ..io import load

    try:
        path = ckpt.model_path(args.model)
    except ValueError as e:
        raise UsageError(str(e)) from None
    vocab_path = args.vocab or _find_vocab(path)
    try:
        vocab = Vocabulary(ckpt.read_json(vocab_path, "vocabulary"))
    except (ValueError, TypeError) as e:
        raise UsageError(f"--vocab: {e}") from None
    try:
        model = load(path)
    except (ValueError, OSError) as e:
        raise UsageError(f"--model: {e}") from None
    return path, model, vocab


def run_generate(args):
    """``fastrnn lm generate``: prints the text; returns the exit status."""
    from .generate import generate

    try:
        if args.length < 0:
            raise UsageError(f"--length must be >= 0, got {args.length}")
        if not args.greedy and not (args.temperature > 0 and math.isfinite(args.temperature)):
            raise UsageError(f"--temperature must be a positive number, got {args.temperature}")
        path, model, vocab = _load_trained(args)
        if args.start not in vocab:
            raise UsageError(
                f"--start {args.start!r} is not in the model's vocabulary "
                f"({len(vocab)} words, e.g. {', '.join(vocab.id_to_word[:5])})"
            )
    except UsageError as e:
        print(f"fastrnn lm generate: error: {e}", file=sys.stderr)
        return 2
    skip = [vocab.word_to_id[w] for w in (UNK,) if w in vocab]
    ids = generate(
        model,
        vocab.word_to_id[args.start],
        args.length,
        temperature=args.temperature,
        greedy=args.greedy,
        seed=args.seed,
        skip_ids=skip,
    )
    words = [args.start] + [vocab.id_to_word[i] for i in ids]
    print(" ".join(words).replace(f" {EOS} ", "\n").replace(EOS, "\n").rstrip("\n"))
    return 0


# -- eval ---------------------------------------------------------------------------------------
def _eval_inputs(args, vocab):
    """[(name, path, ids, words read as <unk>)] to evaluate, or a UsageError."""
    if args.data is not None:
        splits = [x.strip() for x in args.split.split(",") if x.strip()]
        bad = [x for x in splits if x not in PTB_FILES]
        if not splits or bad:
            raise UsageError(
                f"--split must be a comma-separated list of {', '.join(PTB_FILES)}, "
                f"got {args.split!r}"
            )
        if not os.path.isdir(args.data):
            raise UsageError(f"--data {args.data}: not a directory")
        files = [(x, os.path.join(args.data, PTB_FILES[x])) for x in dict.fromkeys(splits)]
    else:
        files = [(f, f) for f in args.text]
    inputs = []
    for name, path in files:
        try:
            words = read_words(path)
        except ValueError as e:
            raise UsageError(str(e)) from None
        ids, unknown = vocab.encode_unk(words, path)
        if len(ids) < 2:
            raise UsageError(f"{path}: needs at least one word")
        inputs.append((name, path, ids, unknown))
    return inputs


def run_eval(args):
    """``fastrnn lm eval``: prints each input's perplexity; returns the exit status."""
    try:
        if args.threads < 0:
            raise UsageError(f"--threads must be >= 0, got {args.threads}")
        if args.eval_bptt < 1:
            raise UsageError(f"--eval-bptt must be a positive integer, got {args.eval_bptt}")
        if args.json is not None and os.path.isdir(args.json):
            raise UsageError(f"--json {args.json}: is a directory, expected a file name")
        path, model, vocab = _load_trained(args)
        try:
            inputs = _eval_inputs(args, vocab)
        except ValueError as e:  # a word outside a vocabulary without <unk>
            raise UsageError(str(e)) from None
    except UsageError as e:
        print(f"fastrnn lm eval: error: {e}", file=sys.stderr)
        return 2
    print(f"fastrnn lm eval: {path}, vocab {len(vocab)}, window {args.eval_bptt}")
    results = {}
    with _thread_limit(args.threads):
        for name, file, ids, unknown in inputs:
            t0 = time.perf_counter()
            ppl = evaluate_perplexity(
                model, ids, args.eval_bptt, progress=not args.no_progress, desc=name
            )
            seconds = time.perf_counter() - t0
            n = len(ids) - 1
            results[name] = {
                "file": os.path.abspath(file),
                "ppl": ppl,
                "predictions": n,
                "unknown_words": unknown,
                "seconds": seconds,
            }
            extra = f", {unknown:,} words outside the vocabulary read as <unk>" if unknown else ""
            print(
                f"{name}: ppl {ppl:.2f} ({n:,} predictions, {seconds:.1f} s, "
                f"{n / seconds:,.0f} words/s{extra})"
            )
    if args.json is not None:
        ckpt.atomic_write_json(
            args.json,
            {"model": os.path.abspath(path), "eval_bptt": args.eval_bptt, "results": results},
        )
        print(f"wrote {args.json}")
    return 0


def _find_vocab(model_file):
    d = os.path.dirname(os.path.abspath(model_file))
    for cand in (d, os.path.dirname(d)):
        p = os.path.join(cand, "vocab.json")
        if os.path.isfile(p):
            return p
    raise UsageError(
        f"no vocab.json next to {model_file} or in its parent directory (pass --vocab FILE)"
    )


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
