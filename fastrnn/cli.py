"""The `fastrnn` command line: `fastrnn demo`, `fastrnn bench`, `fastrnn lm`, `fastrnn classify`
(also `python -m fastrnn ...`).

Each subcommand lives in its own module, which provides `add_parser(subparsers)`: it registers its
arguments and sets `func`, the function that runs it and returns the exit status.  The argument
types they share (`positive`, `fraction`) are here, so a bad number reads the same everywhere.
"""

import argparse
import sys

# subcommand name -> the module that provides its add_parser
SUBCOMMANDS = {
    "demo": "fastrnn.demo",
    "bench": "fastrnn.bench",
    "lm": "fastrnn.train.cli",
    "classify": "fastrnn.classify.cli",
}


def positive(kind=int):
    """An argparse type: a number of `kind` (int or float) greater than zero."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            what = "integer" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    return parse


def fraction(text):
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastrnn",
        description="Fast RNN/LSTM/GRU layers for the CPU: demo, benchmarks, language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import importlib

    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
