"""``fastrnn lm train``: a training run on disk -- flags and files checked before anything is
written, the run directory (:mod:`fastrnn.train.checkpoint`), checkpoints at the end of each
epoch, every ``--checkpoint-minutes`` and on SIGTERM / Ctrl-C, ``--resume``, the MPI ranks'
roles (rank 0 prints, evaluates and writes), ``metrics.json`` and ``perplexity.png``."""

import contextlib
import math
import os
import signal
import sys
import time

from ..io import atomic_write_to
from ..layers._precision import precision_note
from . import checkpoint as ckpt, config
from .config import UsageError, check_config, config_from_args, flag, make_trainer, thread_limit
from .data import load_corpus, window_count
from .presets import HYPERPARAMETERS
from .trainer import TrainingInterrupted

__all__ = ["RESUME_FLAGS", "run_train"]

# flags that may accompany --resume (everything else comes from the checkpoint; the evaluation
# window changes the speed, not the numbers; the patience only where the run stops; averaging
# may be switched on for the epochs to come, as Merity et al. fine-tune a trained model)
RESUME_FLAGS = ("epochs", "eval_bptt", "patience", "average", "average_after", "nonmono")


def _where(trainer):
    """Where a run stands, in words: 'after epoch E' or 'in epoch E+1 after W windows'."""
    if trainer.position is None:
        return f"after epoch {trainer.epoch}"
    return f"in epoch {trainer.epoch + 1} after {trainer.position['windows']} windows"


def _averaging_note(cfg):
    """The run's weight averaging, for its first line ('' without)."""
    average = cfg.get("average", "none")
    if average == "after":
        return f", weights averaged from epoch {cfg['average_after'] + 1} on"
    if average == "nt":
        return f", weights averaged once validation stalls (NT-ASGD, nonmono {cfg['nonmono']})"
    return ""


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


def _metrics_doc(
    cfg, history, best, test_ppl=None, eval_words=None, test_ppl_final=None, stopped_early=None
):
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
        # the epoch --patience stopped the run after (None: not stopped early)
        "stopped_early": stopped_early,
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
    averaged = [m["epoch"] for m in history if "averaged_over" in m]
    if averaged:  # the validation of averaged weights from here on
        ax.axvline(averaged[0] - 0.5, color="gray", linestyle=":", label="weights averaged")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write_to(os.path.join(out, "perplexity.png"), lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)


def _corpus_source(args):
    """What load_corpus reads: --data DIR or the three files {split: path}."""
    files = {k: getattr(args, k, None) for k in ("train", "valid", "test")}
    given = [f"--{k}" for k, v in files.items() if v is not None]
    if args.data is not None and given:
        raise UsageError(f"give --data DIR or {', '.join(given)}, not both")
    if args.data is not None:
        return args.data
    if len(given) != 3:
        missing = [f"--{k}" for k, v in files.items() if v is None]
        raise UsageError(
            "give the corpus: --data DIR, or --train, --valid and --test FILE"
            + (f" (missing {', '.join(missing)})" if given else "")
        )
    return files


def _prepare_train(args):
    """Everything checked and loaded before the run directory is touched."""
    source = _corpus_source(args)
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
            if k not in RESUME_FLAGS and getattr(args, k, None) is not None
        ]
        if args.preset is not None:
            given.insert(0, "preset")
        if given:
            raise UsageError(
                f"--resume takes the run's configuration from its checkpoint; "
                f"drop {', '.join(flag(k) for k in given)}"
            )
        try:
            state = ckpt.read_record(record, complete=True)
        except ValueError as e:
            raise UsageError(f"--resume: {e}") from None
        if state.get("partial"):
            raise UsageError(
                f"--resume: {out}'s last epoch was cut short by --max-steps; "
                f"it cannot be continued on the same curve"
            )
        cfg = dict(ckpt.ADDED_CONFIG, **state["config"])
        for key in RESUME_FLAGS:
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
        corpus = load_corpus(source, max_vocab=cfg.get("max_vocab"))
    except ValueError as e:
        raise UsageError(f"--data: {e}" if args.data is not None else str(e)) from None
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
    try:
        cfg, corpus = _prepare_train(args)
        if par is not None:
            try:
                par.check_batch(cfg["batch_size"])
            except ValueError as e:
                raise UsageError(str(e)) from None
    except UsageError as e:
        if par is None or par.rank == 0:
            print(f"fastrnn lm train: error: {e}", file=sys.stderr)
        return 2
    run = _Run(args, cfg, corpus, par)
    with thread_limit(args.threads):
        status = run.open()
        if status is None:
            status = run.fit()
        if status is None and run.lead:
            run.evaluate_test()
    if status is None and run.lead:
        run.report()
    return 0 if status is None else status


class _Run:
    """One call of ``fastrnn lm train`` after its checks: the trainer, the run directory, the
    checkpoint cadence.  With MPI every rank holds one; the lead (rank 0) prints and writes."""

    def __init__(self, args, cfg, corpus, par):
        self.args, self.cfg, self.corpus, self.par = args, cfg, corpus, par
        self.lead = par is None or par.rank == 0
        self.out = args.out
        self.best = {}  # the best validation epoch: {"epoch", "val_ppl"}
        self.trainer = None
        self.saved = time.monotonic()  # when the last checkpoint was written

    def say(self, *a, **k):
        if self.lead:
            print(*a, **k)

    def _error(self, message):
        self.say(f"fastrnn lm train: error: {message}", file=sys.stderr)
        return 2

    def open(self):
        """Build the trainer: from the last checkpoint (--resume) or afresh; an exit status on
        error, else None."""
        args, cfg, corpus, par, out = self.args, self.cfg, self.corpus, self.par, self.out
        progress = not args.no_progress
        if args.resume:
            # (nothing is written before these checks: a damaged run directory stays as it is)
            try:
                state, model, arrays = ckpt.load_last(out)
                vocab = ckpt.read_vocab(os.path.join(out, "vocab.json"))
            except ValueError as e:
                return self._error(f"--resume: {e}")
            if vocab.id_to_word != corpus.vocab.id_to_word:
                return self._error(
                    f"{corpus.paths['train']}: its vocabulary differs from the run's "
                    f"({out}/vocab.json)"
                )
            self.trainer = make_trainer(cfg, model, args.threads, progress, par)
            try:
                self.trainer.load_state(state, arrays)
            except (ValueError, TypeError) as e:  # (a hand-edited record)
                record = os.path.join(out, "last", "checkpoint.json")
                why = str(e) if isinstance(e, ValueError) else f"malformed trainer state ({e})"
                return self._error(f"--resume: {record}: {why}")
            self.best = state.get("best", {})
        else:
            # (config.build_model looked up at the call: the tests substitute a small model)
            model = config.build_model(cfg, len(corpus.vocab))
            if par is not None:
                from .trainer import model_generators

                par.own_streams(model_generators(model), cfg["seed"])
            self.trainer = make_trainer(cfg, model, args.threads, progress, par)
            if self.lead:
                os.makedirs(out, exist_ok=True)
                ckpt.atomic_write_json(os.path.join(out, "vocab.json"), corpus.vocab.id_to_word)
        self.say(
            f"fastrnn lm train: preset {cfg['preset']}, {cfg['model']} "
            f"{'x'.join(map(str, cfg['hidden_sizes']))} {cfg['cell']}, vocab "
            f"{len(corpus.vocab)}, N {cfg['batch_size']}, T {cfg['bptt']}, "
            f"{sum(p.size for p in model.params):,} parameters, threads {args.threads}"
            + (f", {par.size} MPI ranks" if par is not None else "")
            + config.dropout_note(cfg)
            + precision_note(cfg.get("matmul_precision", "highest"))
            + _averaging_note(cfg)
            + (f", resuming {_where(self.trainer)}" if args.resume else ""),
            flush=True,
        )
        if any(corpus.unknown.values()):
            counts = ", ".join(f"{k} {n:,}" for k, n in corpus.unknown.items())
            self.say(f"words outside the vocabulary, read as <unk>: {counts}", flush=True)
        if args.resume and self.trainer.epoch >= cfg["epochs"]:
            self.say(
                f"the run is complete ({self.trainer.epoch} of {cfg['epochs']} epochs): "
                "evaluating it again (--epochs N trains it further)",
                flush=True,
            )
        return None

    # -- checkpoints ------------------------------------------------------------------------
    def save_last(self, tr, partial=False):
        state, arrays = tr.state()  # (collective with MPI)
        if self.lead:
            state.update(config=self.cfg, best=dict(self.best), partial=partial)
            ckpt.save_last(self.out, tr.model, arrays, state)
        self.saved = time.monotonic()

    def on_epoch(self, tr, metrics):
        if metrics["val_ppl"] < self.best.get("val_ppl", math.inf):
            self.best.update(epoch=metrics["epoch"], val_ppl=metrics["val_ppl"])
            if self.lead:
                with tr.evaluation_weights():  # (the averaged weights, if averaging)
                    ckpt.save_best(self.out, tr.model, dict(self.best))
        self.save_last(tr, bool(metrics.get("partial")))
        if self.lead:
            self._write_metrics()

    def on_window(self, tr):
        every = self.args.checkpoint_minutes * 60
        if tr.checkpoint_due:  # wanted by some rank at the update before: all save now
            tr.checkpoint_due = False
            self.save_last(tr)
        elif every and time.monotonic() - self.saved >= every:
            if self.par is None:
                self.save_last(tr)
            else:
                tr.checkpoint_wanted = True

    def _write_metrics(self, test_ppl=None, test_ppl_final=None):
        doc = _metrics_doc(
            self.cfg,
            self.trainer.history,
            self.best,
            test_ppl,
            self.args.eval_words,
            test_ppl_final,
            self.trainer.stopped_early,
        )
        ckpt.atomic_write_json(os.path.join(self.out, "metrics.json"), doc)

    # -- the run ----------------------------------------------------------------------------
    def fit(self):
        """Train to the configured epochs; an exit status if stopped by a signal, else None."""
        trainer = self.trainer
        self.saved = time.monotonic()
        try:
            with _stop_on_signals(trainer) as received:
                trainer.fit(
                    self.corpus.train,
                    self.corpus.valid,
                    self.cfg["epochs"],
                    max_steps=self.args.max_steps,
                    on_epoch=self.on_epoch,
                    on_window=self.on_window,
                    log=print if self.lead else None,
                    patience=self.cfg.get("patience"),
                )
        except TrainingInterrupted as e:
            self.save_last(trainer)
            self.say(
                f"fastrnn lm train: {received[0] or 'stop requested'}: {e}; checkpoint "
                f"written: continue with --resume --out {self.out}",
                file=sys.stderr,
            )
            return 128 + signal.Signals[received[0]].value if received[0] else 1
        return None

    def evaluate_test(self):
        """Test perplexity of the final and the best-validation model, into metrics.json."""
        trainer, best = self.trainer, self.best
        test_ppl = test_ppl_final = None
        if best:
            from ..io import load

            with trainer.evaluation_weights():
                test_ppl_final = trainer.evaluate(self.corpus.test, "test")
            print(
                f"test ppl {test_ppl_final:.2f} (final model, epoch {trainer.history[-1]['epoch']})"
            )
            trainer.model = load(os.path.join(self.out, "best", "model.npz"))
            test_ppl = trainer.evaluate(self.corpus.test, "test")
            print(
                f"test ppl {test_ppl:.2f} (best validation model, epoch {best['epoch']}: "
                f"val ppl {best['val_ppl']:.2f})"
            )
        self._write_metrics(test_ppl, test_ppl_final)

    def report(self):
        """perplexity.png (unless --no-plot) and what was written."""
        out, notes = self.out, []
        if not self.args.no_plot and self.trainer.history:
            _plot(out, self.trainer.history, notes.append)
        for n in notes:
            print(f"note: {n}")
        print(
            f"wrote {out}/metrics.json, {out}/best/, {out}/last/"
            + ("" if self.args.no_plot or notes else f", {out}/perplexity.png")
        )
