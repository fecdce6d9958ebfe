"""The `fastrnn` command line: `fastrnn demo`, `fastrnn bench`, `fastrnn lm`, `fastrnn classify`
(also `python -m fastrnn ...`).

Each subcommand lives in its own module, which provides `add_parser(subparsers)`: it registers its
arguments and sets `func`, the function that runs it and returns the exit status.
"""

import argparse
import sys

# subcommand name -> the module that provides its add_parser
SUBCOMMANDS = {
    "demo": "fastrnn.demo",
    "bench": "fastrnn.bench",
    "lm": "fastrnn.train.cli",
    "classify": "fastrnn.classify",
}


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
