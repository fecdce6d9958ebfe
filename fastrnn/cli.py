"""The `fastrnn` command line: `fastrnn demo`, `fastrnn bench`, `fastrnn lm`, `fastrnn classify`
(also `python -m fastrnn ...`).

Each subcommand lives in its own module, which provides `add_parser(subparsers)`: it registers its
arguments and sets `func`, the function that runs it and returns the exit status.  The argument
types they share (`positive`, `fraction`) are here, so a bad number reads the same everywhere.
"""

import argparse
import math
import os
import sys

# subcommand name -> the module that provides its add_parser
SUBCOMMANDS = {
    "demo": "fastrnn.demo",
    "bench": "fastrnn.bench",
    "lm": "fastrnn.train.cli",
    "classify": "fastrnn.classify.cli",
}


def positive(kind=int):
    """An argparse type: a finite number of `kind` (int or float) greater than zero."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < math.inf:
            what = "integer" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    return parse


def seed(text):
    """An argparse type: a random seed, an integer >= 0 (what NumPy's generators take)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def check_output_file(path, flag):
    """Before the work: can `path` (the value of `flag`) be written as a file?  (Its directory
    exists and it is not a directory; a ValueError naming the flag otherwise.)"""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{flag} {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a directory, expected a file name")


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
