"""`fastrnn bench`'s command line."""

import argparse
import json
import sys

from ..cli import check_output_file, positive
from ..io import atomic_write
from .cases import (
    BUSY_CORES,
    CELLS,
    CLIP_CASES,
    DEFAULT_CASES,
    LAYER_IMPLS,
    MODEL_CASES,
    MODEL_ONLY_IMPLS,
    OPS,
    QUICK_CASES,
    QUICK_CLIP_CASES,
    QUICK_MODEL_CASES,
    BenchConfig,
    Case,
    ModelCase,
)
from .harness import run_bench, wait_until_quiet
from .report import format_machine, format_report, plot

# ---- command line ------------------------------------------------------------------------------


def _package_doc():
    from . import __doc__ as doc

    return doc


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="time fastrnn against the NumPy reference, PyTorch and the GEMM floor",
        description=_package_doc().split("\n\n")[0] + " See BENCHMARKS.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--threads",
        default="1",
        help="comma-separated BLAS/torch thread counts to run, e.g. 1,2 (default 1)",
    )
    p.add_argument(
        "--repeats",
        type=positive(),
        default=None,
        help="interleaved rounds = samples per implementation (default 9; 3 quick)",
    )
    p.add_argument(
        "--min-time",
        type=positive(float),
        default=None,
        help="seconds per sample; fast calls are batched (default 0.1; 0.02 quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smaller table and fewer, shorter samples (under a minute on 2 cores)",
    )
    p.add_argument(
        "--shapes",
        default=None,
        help="only the cases matching one of these comma-separated filters; a "
        "filter is words that must all be words of the case name: 'lstm', "
        "'N64', 'gru H256', 'lstm N1,rnn' (names look like "
        "'lstm N20 T35 D100 H100')",
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="'CELL N T D H'",
        help="run this shape instead of the table (repeatable); CELL: " + ", ".join(CELLS),
    )
    p.add_argument(
        "--impls",
        default=",".join(LAYER_IMPLS),
        help="comma-separated subset of "
        + ",".join(LAYER_IMPLS)
        + "; and "
        + ",".join(MODEL_ONLY_IMPLS)
        + " (the model rows at matmul_precision='medium')",
    )
    p.add_argument("--ops", default=",".join(OPS), help="fwdbwd, fwd or both")
    p.add_argument("--no-clip", action="store_true", help="skip the clip_grads cases")
    p.add_argument(
        "--no-layers",
        action="store_true",
        help="skip the layer shapes (clip_grads and models stay)",
    )
    p.add_argument(
        "--models",
        default=None,
        metavar="NAMES",
        help="the whole-model rows to run, comma-separated from "
        + ", ".join(c.name for c in MODEL_CASES)
        + ", or 'all' (default all; --quick: "
        + ",".join(c.name for c in QUICK_MODEL_CASES)
        + ")",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="'CELL V E H[,H...] N T [tied]'",
        help="run this language model instead of the table (repeatable), e.g. "
        "'lstm 10000 200 200,200 20 20'",
    )
    p.add_argument("--no-models", action="store_true", help="skip the whole-model rows")
    p.add_argument(
        "--model-min-time",
        type=positive(float),
        default=None,
        metavar="SECONDS",
        help="seconds per sample of the model rows (default 0.5; 0.25 quick)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to idle between implementations at threads > 1 (default 0)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS until other processes leave the CPUs idle",
    )
    p.add_argument(
        "--retry-busy",
        type=int,
        default=0,
        metavar="N",
        help="re-measure a shape up to N times when other processes used more than "
        f"{BUSY_CORES} cores while it was timed (waiting for quiet first)",
    )
    p.add_argument("--json", metavar="OUT.json", help="write all results and metadata as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="bar chart (needs matplotlib)")
    p.add_argument("--markdown", metavar="OUT.md", help="write machine + tables as markdown")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def filter_cases(cases, spec):
    """The cases matching any comma-separated filter; a filter matches a case when each of its
    space-separated words is a word of the case's name: 'lstm', 'N64', 'gru H256', 'D650'."""
    filters = [f.split() for f in spec.split(",") if f.strip()]
    return tuple(c for c in cases if any(set(f) <= set(c.name.split()) for f in filters))


def select_models(spec, quick=False):
    """The model cases named in spec (comma-separated names of MODEL_CASES, or 'all'); None:
    the default for the mode (quick: QUICK_MODEL_CASES)."""
    if spec is None:
        return QUICK_MODEL_CASES if quick else MODEL_CASES
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names == ["all"]:
        return MODEL_CASES
    known = {c.name: c for c in MODEL_CASES}
    for n in names:
        if n not in known:
            raise SystemExit(
                f"fastrnn bench: unknown model {n!r} in --models; choose from "
                + ", ".join(known)
                + " or all (or give --model 'CELL V E H[,H...] N T')"
            )
    return tuple(known[n] for n in names)


def config_from_args(args):
    quick = args.quick
    if args.shape:
        try:
            cases = tuple(Case.parse(s) for s in args.shape)
        except ValueError as exc:
            raise SystemExit(f"fastrnn bench: --shape: {exc}") from None
    else:
        cases = QUICK_CASES if quick else DEFAULT_CASES
    if args.shapes:
        cases = filter_cases(cases, args.shapes)
    if args.no_layers:
        cases = ()
    clip_cases = () if args.no_clip else (QUICK_CLIP_CASES if quick else CLIP_CASES)
    if args.model:
        try:
            model_cases = tuple(ModelCase.parse(s) for s in args.model)
        except ValueError as exc:
            raise SystemExit(f"fastrnn bench: --model: {exc}") from None
    else:
        model_cases = select_models(args.models, quick)
    if args.no_models:
        model_cases = ()
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    for i in impls:
        if i not in LAYER_IMPLS + MODEL_ONLY_IMPLS:
            raise SystemExit(
                f"fastrnn bench: unknown implementation {i!r}; choose from "
                + ", ".join(LAYER_IMPLS + MODEL_ONLY_IMPLS)
            )
    ops = tuple(o.strip() for o in args.ops.split(",") if o.strip())
    for o in ops:
        if o not in OPS:
            raise SystemExit(f"fastrnn bench: unknown op {o!r}; choose from fwdbwd, fwd")
    try:
        threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
    except ValueError:
        raise SystemExit(
            f"fastrnn bench: --threads takes integers like 1,2, got {args.threads!r}"
        ) from None
    if not threads or min(threads) < 1:
        raise SystemExit("fastrnn bench: --threads needs counts >= 1")
    return BenchConfig(
        cases=cases,
        clip_cases=clip_cases,
        model_cases=model_cases,
        threads=threads,
        repeats=args.repeats or (3 if quick else 9),
        min_time=args.min_time if args.min_time is not None else (0.02 if quick else 0.1),
        model_min_time=(
            args.model_min_time if args.model_min_time is not None else (0.25 if quick else 0.5)
        ),
        ops=ops,
        impls=impls,
        memory=not args.no_memory,
        settle=args.settle,
        retry_busy=args.retry_busy,
        progress=not args.no_progress,
        quick=quick,
        command="fastrnn bench "
        + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
    )


def run(args):
    cfg = config_from_args(args)
    for flag, path in (("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)):
        if path is not None:  # (before the benchmark, not after it)
            try:
                check_output_file(path, flag)
            except ValueError as exc:
                raise SystemExit(f"fastrnn bench: {exc}") from None
    n = len(cfg.cases) + len(cfg.clip_cases) + len(cfg.model_cases)
    print(
        f"fastrnn bench: {len(cfg.cases)} layer shapes + {len(cfg.clip_cases)} clip cases + "
        f"{len(cfg.model_cases)} models ({n} total), threads "
        f"{','.join(map(str, cfg.threads))}, {cfg.repeats} rounds, "
        f"{cfg.min_time:g} s samples; implementations {', '.join(cfg.impls)}",
        file=sys.stderr,
        flush=True,
    )
    if args.wait_quiet:
        wait_until_quiet(args.wait_quiet)
    results = run_bench(cfg)
    print(format_machine(results))
    print(format_report(results))
    if args.json:
        atomic_write(args.json, lambda f: f.write(json.dumps(results, indent=1).encode("utf-8")))
        print(f"\nwrote {args.json}")
    if args.markdown:
        text = (
            "## Machine\n\n" + format_machine(results, markdown=True) + "\n\n"
            f"## Command\n\n```\n{cfg.command}\n```\n\n## Results\n"
            + format_report(results, markdown=True)
            + "\n"
        )
        atomic_write(args.markdown, lambda f: f.write(text.encode("utf-8")))
        print(f"wrote {args.markdown}")
    if args.plot and not (results["layers"] or results["clip"]):
        print("--plot draws the layer and clip_grads rows; none were run: no plot written")
    elif args.plot:
        try:
            plot(results, args.plot)
            print(f"wrote {args.plot}")
        except ImportError:
            print(
                "--plot needs matplotlib (pip install matplotlib); no plot written", file=sys.stderr
            )
    checks = results["checks"] + results.get("model_checks", [])
    return 1 if any(not c["ok"] for c in checks) else 0


def main(argv=None):
    """Standalone entry (python -m fastrnn.bench ...), same options as `fastrnn bench`."""
    parser = argparse.ArgumentParser(prog="fastrnn")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)
