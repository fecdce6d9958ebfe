"""``fastrnn classify``: sequence classification with bidirectional encoders.

``fastrnn classify demo`` trains two ``SequenceClassifier`` models of the same size, one
unidirectional and one bidirectional, on a built-in synthetic task (no download) and prints
their test accuracies.  The task: each sequence (length uniform in [T/2, T]) starts with one
of K "class" tokens, followed by random tokens drawn from the whole vocabulary (the class
tokens included); the label is the first token.  Both models read the encoder's last state
(``pooling="last"``).  The bidirectional model's backward direction ends at t = 0, right on
the answer; the unidirectional model's last state is t = len-1, so it must carry the first
token through 39 to 79 steps of noise that contains the same tokens.  Not impossible in
principle, but the learning signal for it has to come back through as many forget gates,
near sigmoid(1) = 0.73 at initialisation (0.73^39 ~ 5e-6), and in practice the
unidirectional model stays at chance (1/K): measured 23.8% after the default 4 epochs and
23.6% after 30 (seed 0), against 100% for the bidirectional model after 4.

``fastrnn classify train --data FILE`` trains on a labelled corpus: one example per line,
``label<TAB>sentence`` (words separated by spaces); the vocabulary and the label set come
from the training part; a held-out part (``--test-fraction``, or ``--test FILE``) gives the
test accuracy; ``--embeddings FILE`` starts the embedding from pretrained word vectors
(GloVe's text format).  ``--save DIR`` keeps the classifier (model, vocabulary, labels, a record of
the run).

``fastrnn classify predict --model DIR [FILE...]`` labels sentences, one per line, from the
files or standard input: it prints ``label<TAB>sentence`` (the labelled format), with
``--probabilities`` the label's probability between them.  Words the training data did not
hold read as ``<unk>``.

``fastrnn classify eval --model DIR --data FILE`` prints a saved classifier's accuracy on a
labelled file, and each label's precision, recall and F1.

``fastrnn classify export --model DIR (--numpy DIR | --onnx FILE | --keras FILE)`` writes a
saved classifier for other runtimes: a directory that needs NumPy only (``fastrnn_numpy.py``
labels sentences from the command line), an ONNX graph of word ids and lengths to scores, or a
``.keras`` model of Keras's own layers (word ids, 0 the padding, to scores).
"""

import os
import sys
import time

import numpy as np

from ..cli import check_output_file, fraction, positive, seed
from ..layers._precision import MATMUL_PRECISIONS, precision_note
from .data import read_labelled, read_sentences, read_word_vectors, vocabulary
from .text import TextClassifier
from .training import DEMO_DEFAULTS, fit_text_classifier, layer_classes, run_demo

__all__ = ["add_parser", "run_eval", "run_export", "run_predict", "run_train"]

_DOC = __doc__.split("\n\n")


def _check_output_dir(path, flag):
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    if path.endswith(".npz"):
        raise ValueError(
            f"{flag} {path}: names a directory (it receives model.npz, vocab.json and "
            "classifier.json), not a model file"
        )


def run_train(args):
    """``fastrnn classify train``: read, split, train, print train and test accuracy, save."""
    if args.save:
        _check_output_dir(args.save, "--save")  # before the training, not after it
    examples = read_labelled(args.data)
    rng = np.random.default_rng(args.seed)
    if args.test:
        test_examples = read_labelled(args.test)
        train_examples = examples
    else:
        order = rng.permutation(len(examples))
        n_test = max(1, int(round(len(examples) * args.test_fraction)))
        if n_test >= len(examples):
            raise ValueError(
                f"{args.data}: {len(examples)} examples are too few to hold out "
                f"{args.test_fraction:.0%} for testing"
            )
        test_examples = [examples[i] for i in order[:n_test]]
        train_examples = [examples[i] for i in order[n_test:]]
    unknown = sorted({lab for lab, _ in test_examples} - {lab for lab, _ in train_examples})
    if unknown:
        raise ValueError(
            f"{args.test or args.data}: test labels {unknown[:5]} do not occur in training"
        )
    if len({lab for lab, _ in train_examples}) < 2:
        raise ValueError(f"{args.data}: the training examples have fewer than 2 labels")
    _, note = layer_classes()
    settings = {
        "cell": args.cell,
        "embed": args.embed,
        "hidden": args.hidden,
        "layers": args.layers,
        "connection": args.connection,
        "dropout": args.dropout,
        "pooling": args.pooling,
        "bidirectional": not args.unidirectional,
        "matmul_precision": args.matmul_precision,
    }
    words = vocabulary(train_examples, args.min_count)
    print(
        f"{len(train_examples)} training and {len(test_examples)} test examples, "
        f"{len(words)} words, {len({lab for lab, _ in train_examples})} labels{note}"
        + precision_note(args.matmul_precision)
    )
    vectors = None
    if args.embeddings:
        vectors = read_word_vectors(args.embeddings, words)
        if not vectors:
            raise ValueError(f"{args.embeddings}: holds a vector for none of the training words")
        settings["embed"] = len(next(iter(vectors.values())))
        print(
            f"word vectors of size {settings['embed']} for {len(vectors)} of the {len(words)} "
            f"words from {args.embeddings}" + (" (frozen)" if args.freeze_embeddings else "")
        )
    elif args.freeze_embeddings:
        raise ValueError("--freeze-embeddings needs --embeddings FILE")
    start = time.perf_counter()
    clf, losses = fit_text_classifier(
        train_examples,
        args.epochs,
        **settings,
        batch_size=args.batch_size,
        lr=args.lr,
        min_count=args.min_count,
        max_len=args.max_len,
        seed=args.seed,
        on_epoch=lambda epoch, loss: print(f"epoch {epoch}: loss {loss:.4f}"),
        vectors=vectors,
        freeze_embeddings=args.freeze_embeddings,
    )
    seconds = time.perf_counter() - start
    train_acc = clf.evaluate(train_examples)["accuracy"]
    test_acc = clf.evaluate(test_examples)["accuracy"]
    print(f"train accuracy {train_acc:.1%}")
    print(f"test accuracy {test_acc:.1%}  ({seconds:.1f} s of training)")
    if args.save:
        record = {
            "data": os.path.abspath(args.data),
            "test": os.path.abspath(args.test) if args.test else None,
            "settings": {
                **settings,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "min_count": args.min_count,
                "seed": args.seed,
                "embeddings": os.path.abspath(args.embeddings) if args.embeddings else None,
                "freeze_embeddings": args.freeze_embeddings,
            },
            "losses": losses,
            "train_accuracy": train_acc,
            "test_accuracy": test_acc,
            "seconds": seconds,
        }
        clf.save(args.save, record)
        print(f"classifier saved to {args.save}")
    return 0


def run_predict(args):
    """``fastrnn classify predict``: one ``label<TAB>sentence`` line per input sentence."""
    clf = TextClassifier.load(args.model)
    sentences = []
    for path in args.files or ["-"]:
        sentences += read_sentences(path)
    if args.probabilities:
        p = clf.probabilities(sentences, args.batch_size)
        best = p.argmax(axis=1)
        for words, c, q in zip(sentences, best, p[np.arange(len(best)), best]):
            print(f"{clf.labels[c]}\t{q:.4f}\t{' '.join(words)}")
    else:
        for words, label in zip(sentences, clf.predict(sentences, args.batch_size)):
            print(f"{label}\t{' '.join(words)}")
    return 0


def run_eval(args):
    """``fastrnn classify eval``: accuracy and per-label precision / recall / F1."""
    if args.json is not None:
        check_output_file(args.json, "--json")
    clf = TextClassifier.load(args.model)
    examples = read_labelled(args.data)
    result = clf.evaluate(examples, args.batch_size)
    extra = (
        f", words outside the vocabulary read as <unk>: {result['unknown_words']:,}"
        if result["unknown_words"]
        else ""
    )
    n = result["examples"]
    print(f"{args.data}: accuracy {result['accuracy']:.1%} of {n:,} examples{extra}")
    width = max(5, *(len(name) for name in clf.labels))
    print(f"{'label':>{width}}  precision  recall     f1  support")
    for name, m in result["labels"].items():
        print(
            f"{name:>{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  "
            f"{m['support']:7,}"
        )
    if args.json is not None:
        from ..io import atomic_write_json

        record = {"model": os.path.abspath(args.model), "data": os.path.abspath(args.data)}
        atomic_write_json(args.json, {**record, **result, "label_order": clf.labels})
        print(f"wrote {args.json}")
    return 0


def run_export(args):
    """``fastrnn classify export``: --numpy DIR, --onnx FILE and / or --keras FILE."""
    if args.numpy is None and args.onnx is None and args.keras is None:
        raise ValueError("give --numpy DIR, --onnx FILE and / or --keras FILE")
    if args.numpy is not None:
        _check_output_dir(args.numpy, "--numpy")
    for flag, path in (("--onnx", args.onnx), ("--keras", args.keras)):
        if path is not None:
            check_output_file(path, flag)
    if args.keras is not None and not args.keras.endswith(".keras"):
        raise ValueError(f"--keras {args.keras}: must end in .keras (Keras's own format)")
    clf = TextClassifier.load(args.model)
    if args.numpy is not None:
        w = clf.export_numpy(args.numpy)
        print(
            f"wrote {w['runtime']}, {w['model']}, {w['vocab']}, {w['classifier']}: python "
            f"{w['runtime']} {w['model']} --vocab {w['vocab']} --classifier {w['classifier']} "
            "--classify FILE"
        )
    if args.onnx is not None:
        from ..interop import export_onnx

        export_onnx(clf.model, args.onnx)
        print(
            f"wrote {args.onnx} (inputs ids (N, T) int64 and sequence_lens (N,) int32, "
            "output logits (N, C))"
        )
    if args.keras is not None:
        _export_keras(clf, args.keras)
        print(f"wrote {args.keras} (Keras's own layers: keras.saving.load_model, input ids)")
    return 0


def _export_keras(clf, path):
    """to_keras(clf.model) saved to `path`, through a temporary file beside it (a stopped save
    leaves no half-written file)."""
    import importlib.util

    if "keras" not in sys.modules and importlib.util.find_spec("torch") is not None:
        os.environ.setdefault("KERAS_BACKEND", "torch")  # (Keras's own default is TensorFlow)
    from ..interop import to_keras
    from ..io import atomic_write_to

    model = to_keras(clf.model)
    atomic_write_to(path, model.save)


# ---- command line -----------------------------------------------------------------------------


def _guarded(name, run):
    def main(args):
        try:
            return run(args)
        except (OSError, ValueError, TypeError, ImportError) as e:
            # a missing or malformed file or flag: say which, no traceback
            print(f"fastrnn classify {name}: error: {e}", file=sys.stderr)
            return 2

    return main


def _demo(args):
    run_demo(args.epochs, args.seed, cell=args.cell, hidden=args.hidden)
    return 0


def add_parser(subparsers):
    """Register ``classify`` and its commands on an argparse subparsers object."""
    p = subparsers.add_parser(
        "classify",
        help="sequence classification with bidirectional encoders (demo, train, predict, ...)",
        description=_DOC[0],
    )
    sub = p.add_subparsers(dest="classify_command", metavar="{demo,train,predict,eval,export}")
    sub.required = True
    d = sub.add_parser(
        "demo",
        help="unidirectional vs bidirectional on a built-in task that needs the future",
        description=_DOC[1],
    )
    d.add_argument("--epochs", type=positive(), default=DEMO_DEFAULTS["epochs"])
    d.add_argument("--seed", type=seed, default=DEMO_DEFAULTS["seed"])
    d.add_argument("--cell", choices=("lstm", "gru", "rnn"), default=DEMO_DEFAULTS["cell"])
    d.add_argument("--hidden", type=positive(), default=DEMO_DEFAULTS["hidden"])
    d.set_defaults(func=_demo)

    t = sub.add_parser(
        "train",
        help="train a classifier on a labelled file (label<TAB>sentence per line)",
        description=_DOC[2],
    )
    t.add_argument("--data", required=True, help="the labelled corpus (label<TAB>sentence)")
    t.add_argument("--test", help="a separate test file (default: hold out --test-fraction)")
    t.add_argument("--test-fraction", type=fraction, default=0.1)
    t.add_argument("--epochs", type=positive(), default=5)
    t.add_argument("--batch-size", type=positive(), default=32)
    t.add_argument("--lr", type=positive(float), default=0.003)
    t.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm")
    t.add_argument("--embed", type=positive(), default=64)
    t.add_argument("--hidden", type=positive(), default=64)
    t.add_argument("--layers", type=positive(), default=1)
    t.add_argument("--connection", choices=("residual", "dense", "highway"), default=None)
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--pooling", choices=("last", "mean", "max"), default="last")
    t.add_argument("--unidirectional", action="store_true")
    t.add_argument("--min-count", type=positive(), default=1, help="rarer words become <unk>")
    t.add_argument("--max-len", type=positive(), default=200, help="longer sentences are cut")
    t.add_argument(
        "--embeddings",
        metavar="FILE",
        help="pretrained word vectors (GloVe's text format, or word2vec's): the embedding "
        "starts from them and takes their size",
    )
    t.add_argument(
        "--freeze-embeddings", action="store_true", help="keep the embedding as it starts"
    )
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument(
        "--matmul-precision",
        choices=MATMUL_PRECISIONS,
        default="highest",
        help="the recurrent layers' matrix products: float32 (highest), or bfloat16 "
        "operands with float32 sums (medium; CPUs with AVX512-BF16, else float32)",
    )
    t.add_argument(
        "--save",
        metavar="DIR",
        help="keep the classifier here: model.npz, vocab.json, classifier.json",
    )
    t.set_defaults(func=_guarded("train", run_train))

    model_help = "a classifier directory (`fastrnn classify train --save DIR`)"
    pr = sub.add_parser("predict", help="label sentences (one per line)", description=_DOC[3])
    pr.add_argument("--model", required=True, help=model_help)
    pr.add_argument("files", nargs="*", metavar="FILE", help="sentence files (default: stdin)")
    pr.add_argument("--probabilities", action="store_true", help="print each label's probability")
    pr.add_argument("--batch-size", type=positive(), default=256)
    pr.set_defaults(func=_guarded("predict", run_predict))

    ev = sub.add_parser("eval", help="accuracy on a labelled file", description=_DOC[4])
    ev.add_argument("--model", required=True, help=model_help)
    ev.add_argument("--data", required=True, help="a labelled file (label<TAB>sentence)")
    ev.add_argument("--json", metavar="FILE", help="also write the results here")
    ev.add_argument("--batch-size", type=positive(), default=256)
    ev.set_defaults(func=_guarded("eval", run_eval))

    ex = sub.add_parser(
        "export", help="for NumPy-only machines, ONNX or Keras", description=_DOC[5]
    )
    ex.add_argument("--model", required=True, help=model_help)
    ex.add_argument("--numpy", metavar="DIR", help="write a NumPy-only directory here")
    ex.add_argument("--onnx", metavar="FILE", help="write an ONNX graph here")
    ex.add_argument(
        "--keras",
        metavar="FILE",
        help="write a .keras model of Keras's own layers here (KERAS_BACKEND, else torch)",
    )
    ex.set_defaults(func=_guarded("export", run_export))
    return p
