"""``fastrnn lm``: train language models on Penn Treebank; generate text, evaluate, export.

Usage::

    fastrnn lm train (--data DIR | --train FILE --valid FILE --test FILE) [--preset NAME]
                     [--epochs N] [--out DIR] [--threads K] [--seed S] [--resume]
                     [--max-vocab V] [a flag per hyper-parameter ...]
    fastrnn lm generate --model DIR [--start WORD] [--length L] [--temperature X | --greedy]
                        [--top-k K] [--top-p P] [--seed S]
    fastrnn lm eval --model DIR (--data DIR [--split valid,test] | --text FILE ...)
                    [--eval-bptt T] [--threads K] [--json FILE]
    fastrnn lm export --model DIR [--numpy DIR] [--onnx FILE]

Every flag and file is checked before anything is written; a bad one is a one-line error and
exit status 2.  This module is the parser; the commands are :mod:`fastrnn.train.run` (train)
and :mod:`fastrnn.train.saved` (generate, eval, export), the configuration
:mod:`fastrnn.train.config`.
See :mod:`fastrnn.train.presets` for the presets and :mod:`fastrnn.train.checkpoint` for what
``--out`` receives.
"""

import argparse
import sys

from ..cli import seed
from ..layers._precision import MATMUL_PRECISIONS
from .averaging import AVERAGING
from .data import BATCHINGS
from .presets import DEFAULT_PRESET, PRESETS
from .run import run_train
from .saved import run_eval, run_export, run_generate
from .schedules import SCHEDULES
from .trainer import EVAL_BPTT

__all__ = ["add_parser", "build_parser", "main"]

_MODELS = ("rnnlm", "better", "lm")
_CELLS = ("lstm", "gru", "rnn")
_DTYPES = ("float32", "float64")
_INITS = ("uniform", "normal", "orthogonal")


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
        metavar="DIR",
        help="directory holding ptb.train.txt, ptb.valid.txt and ptb.test.txt (or WikiText's "
        "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens); or name the three files "
        "with --train, --valid and --test",
    )
    for split in ("train", "valid", "test"):
        p.add_argument(
            f"--{split}",
            metavar="FILE",
            help=f"the {split} split's text file (instead of --data)",
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
    g.add_argument("--seed", type=seed, help="seed of the model's initialization and dropout")
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
    g.add_argument(
        "--dropout",
        type=float,
        metavar="P",
        help="every dropout site's ratio unless its own is given",
    )
    g.add_argument(
        "--embed-dropout", type=float, metavar="P", help="word-type dropout of the embedding rows"
    )
    for site, where in (
        ("input", "the first layer's input"),
        ("hidden", "each later layer's input"),
        ("recurrent", "the recurrent state h_{t-1}"),
        ("output", "the last layer's output"),
    ):
        g.add_argument(
            f"--{site}-dropout",
            type=float,
            metavar="P",
            help=f"variational models: the mask on {where} (default: --dropout)",
        )
    g.add_argument(
        "--weight-drop",
        type=float,
        metavar="P",
        help="DropConnect on the recurrent weights Wh, a fresh mask per window (AWD-LSTM)",
    )
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
    g.add_argument(
        "--matmul-precision",
        choices=MATMUL_PRECISIONS,
        help="the read-out's and the recurrent layers' matrix products: float32 "
        "(highest), or bfloat16 operands with float32 sums (medium; CPUs with AVX512-BF16, "
        "else float32)",
    )
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
    g.add_argument(
        "--average",
        choices=AVERAGING,
        help="weight averaging (averaged SGD): evaluate and keep the mean of the weights over "
        "the updates since it started; nt: once validation is worse than the best of the "
        "epochs more than --nonmono before (Merity et al.'s NT-ASGD); after: from epoch "
        "--average-after + 1 (default: none; --resume may switch it on)",
    )
    g.add_argument(
        "--average-after",
        type=int,
        metavar="K",
        help="--average after: the epochs trained before averaging starts (default 0)",
    )
    g.add_argument(
        "--nonmono",
        type=int,
        metavar="K",
        help="--average nt: the epochs of noise its trigger waits out (default 5)",
    )
    g.add_argument("--clip", type=float, metavar="C", help="global-norm clip (0: none)")
    g.add_argument(
        "--patience",
        type=int,
        metavar="K",
        help="stop early after K epochs in a row without a validation gain (default: train "
        "every epoch); --resume may change it",
    )
    g.add_argument(
        "--max-vocab",
        type=int,
        metavar="V",
        help="keep the V - 1 most frequent training words and <unk>, which every other word "
        "in any split reads as (default: every training word; PTB and WikiText are made so)",
    )
    g.add_argument(
        "--loss",
        choices=("mean", "sum"),
        help="gradient of the mean token loss (book) or of the loss summed over time (Zaremba)",
    )
    return p


def _add_model_argument(p):
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="a run directory of `fastrnn lm train` (its best model), its best/ or last/, or a "
        "model file",
    )


def _add_generate_arguments(p):
    _add_model_argument(p)
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
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely words")
    p.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="sample among the fewest most likely words whose probability reaches P (nucleus)",
    )
    p.add_argument("--seed", type=seed, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--vocab", metavar="FILE", help="vocab.json (default: found next to the model)")
    return p


def _add_eval_arguments(p):
    _add_model_argument(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data",
        metavar="DIR",
        help="a corpus directory (PTB's or WikiText's files): evaluates the files of --split",
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


def _add_export_arguments(p):
    _add_model_argument(p)
    p.add_argument(
        "--numpy",
        metavar="DIR",
        help="write DIR/fastrnn_numpy.py (runs the model with NumPy only), model.npz, vocab.json",
    )
    p.add_argument("--onnx", metavar="FILE", help="write the model as an ONNX graph")
    p.add_argument("--vocab", metavar="FILE", help="vocab.json (default: found next to the model)")
    return p


# name, its arguments, the function that runs it, help, description
_COMMANDS = [
    (
        "train",
        _add_train_arguments,
        run_train,
        "train a language model",
        "Train a language model on PTB by truncated BPTT.",
    ),
    (
        "generate",
        _add_generate_arguments,
        run_generate,
        "generate text from a trained model",
        "Generate text one word at a time from a trained model.",
    ),
    (
        "eval",
        _add_eval_arguments,
        run_eval,
        "perplexity of a trained model on PTB splits or text files",
        "Perplexity of a trained model at batch 1, the state carried, as `fastrnn lm train` "
        "measures it.",
    ),
    (
        "export",
        _add_export_arguments,
        run_export,
        "write a trained model for NumPy-only machines or ONNX",
        "Write a trained model as a directory that runs with NumPy only (--numpy) and/or as an "
        "ONNX graph (--onnx).",
    ),
]


def add_parser(subparsers):
    """Register ``lm`` and its commands (``_COMMANDS``) on an argparse subparsers object."""
    p = subparsers.add_parser(
        "lm",
        help="train language models on Penn Treebank, generate text, evaluate, export",
        description=__doc__.split("\n\n")[0],
    )
    sub = p.add_subparsers(dest="lm_command", metavar="{" + ",".join(c[0] for c in _COMMANDS) + "}")
    sub.required = True
    for name, add_arguments, run, summary, description in _COMMANDS:
        add_arguments(sub.add_parser(name, help=summary, description=description)).set_defaults(
            func=run
        )
    return p


def build_parser():
    """A standalone parser (``python -m fastrnn.train.cli``)."""
    parser = argparse.ArgumentParser(prog="fastrnn")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
