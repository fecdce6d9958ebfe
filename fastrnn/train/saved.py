"""``fastrnn lm generate``, ``eval`` and ``export``: a saved model in use -- text sampled from it,
its perplexity on PTB's splits or on text files (measured as training measures it), and the model
written for other runtimes (a NumPy-only directory, ONNX)."""

import math
import os
import sys
import time

from ..cli import check_output_file
from . import checkpoint as ckpt
from .config import UsageError, thread_limit
from .data import EOS, SPLITS, UNK, corpus_files, read_words
from .trainer import evaluate_perplexity

__all__ = ["run_eval", "run_export", "run_generate"]


def _load_trained(args):
    """(model file, model, vocabulary) named by --model and --vocab, or a UsageError."""
    from ..io import load

    try:
        path = ckpt.model_path(args.model)
    except ValueError as e:
        raise UsageError(str(e)) from None
    vocab_path = args.vocab or _find_vocab(path)
    try:
        vocab = ckpt.read_vocab(vocab_path)
    except ValueError as e:
        raise UsageError(f"--vocab: {e}") from None
    try:
        model = load(path)
    except (ValueError, OSError) as e:
        raise UsageError(f"--model: {e}") from None
    # (the book's models list the embedding (V, E) first)
    V = getattr(model, "vocab_size", None) or model.params[0].shape[0]
    if V != len(vocab):
        raise UsageError(
            f"--vocab {vocab_path}: {len(vocab)} words, but the model {path} reads {V}"
        )
    return path, model, vocab


def run_generate(args):
    """``fastrnn lm generate``: prints the text; returns the exit status."""
    from .generate import generate

    try:
        if args.length < 0:
            raise UsageError(f"--length must be >= 0, got {args.length}")
        if not args.greedy and not (args.temperature > 0 and math.isfinite(args.temperature)):
            raise UsageError(f"--temperature must be a positive number, got {args.temperature}")
        if args.top_k is not None and args.top_k < 1:
            raise UsageError(f"--top-k must be a positive integer, got {args.top_k}")
        if args.top_p is not None and not 0 < args.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.greedy and (args.top_k is not None or args.top_p is not None):
            raise UsageError("--greedy takes the most likely word: drop --top-k / --top-p")
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
        top_k=args.top_k,
        top_p=args.top_p,
    )
    words = [args.start] + [vocab.id_to_word[i] for i in ids]
    print(" ".join(words).replace(f" {EOS} ", "\n").replace(EOS, "\n").rstrip("\n"))
    return 0


# -- eval ---------------------------------------------------------------------------------------
def _eval_inputs(args, vocab):
    """[(name, path, ids, words read as <unk>)] to evaluate, or a UsageError."""
    if args.data is not None:
        splits = [x.strip() for x in args.split.split(",") if x.strip()]
        bad = [x for x in splits if x not in SPLITS]
        if not splits or bad:
            raise UsageError(
                f"--split must be a comma-separated list of {', '.join(SPLITS)}, got {args.split!r}"
            )
        try:
            paths = corpus_files(args.data)
        except ValueError as e:
            raise UsageError(f"--data {e}") from None
        files = [(x, paths[x]) for x in dict.fromkeys(splits)]
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
        if args.json is not None and not os.path.isdir(os.path.dirname(args.json) or "."):
            raise UsageError(f"--json {args.json}: its directory does not exist")
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
    with thread_limit(args.threads):
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


# -- export -------------------------------------------------------------------------------------
def run_export(args):
    """``fastrnn lm export``: writes the model for NumPy only (--numpy) and/or ONNX (--onnx)."""
    try:
        if args.numpy is None and args.onnx is None:
            raise UsageError("give --numpy DIR, --onnx FILE or both")
        if args.numpy is not None and os.path.exists(args.numpy) and not os.path.isdir(args.numpy):
            raise UsageError(f"--numpy {args.numpy}: exists and is not a directory")
        if args.onnx is not None:
            try:
                check_output_file(args.onnx, "--onnx")
            except ValueError as e:
                raise UsageError(str(e)) from None
        path, model, vocab = _load_trained(args)
    except UsageError as e:
        print(f"fastrnn lm export: error: {e}", file=sys.stderr)
        return 2
    from ..interop import export_numpy, export_onnx

    try:
        if args.numpy is not None:
            written = export_numpy(model, args.numpy, vocab.id_to_word)
            print(
                f"wrote {written['runtime']}, {written['model']}, {written['vocab']}: "
                f"python {written['runtime']} {written['model']} --vocab {written['vocab']}"
            )
        if args.onnx is not None:
            export_onnx(model, args.onnx)
            print(f"wrote {args.onnx} (input ids (N, T) int64, output logits (N, T, V))")
    except (ImportError, TypeError, ValueError) as e:
        print(f"fastrnn lm export: error: {e}", file=sys.stderr)
        return 2
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
