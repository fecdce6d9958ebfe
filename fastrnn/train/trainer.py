"""Training language models by truncated backpropagation through time.

:class:`LMTrainer` runs epochs of TBPTT windows (:mod:`fastrnn.train.data`) on a model with the
DLFS2 language-model interface: ``forward(xs, ts, train_flg)`` returning the mean loss over
tokens, ``backward(dout)``, ``reset_state()``, ``params`` / ``grads`` lists.  The model's
recurrent state is carried from one window to the next (its layers are stateful) and, since each
backward stops at the window's first step, detached there.  Gradients are clipped by their
global norm (:func:`fastrnn.clip_grads`), then an optimizer (:class:`~fastrnn.train.SGD`,
:class:`~fastrnn.train.Adam`) updates the parameters in place.

A checkpoint (:meth:`LMTrainer.state`) taken between epochs or inside one -- after any update,
``position`` then saying how far the epoch got, with the state carried into the next window and
the epoch's running loss -- resumes on the same curve as an unbroken run: setting
``stop_requested`` (a signal handler does) stops :meth:`LMTrainer.fit` with
:class:`TrainingInterrupted` there.  With ``parallel`` (:mod:`fastrnn.train.distributed`) each MPI
rank trains its block of the streams and an Allreduce each update keeps the ranks equal.

Perplexity is measured at batch 1 with the state carried across windows of T steps
(:func:`evaluate_perplexity`, :func:`~fastrnn.train.data.eval_windows`): the same numbers as
Zaremba et al.'s word-by-word evaluation, T steps per call.
"""

import contextlib
import math
import time

import numpy as np

from ..models.lm import _positive_int
from .averaging import AVERAGING, WeightAverage, nt_triggered
from .data import eval_windows, train_windows, window_count
from .optim import SGD, Adam

__all__ = [
    "EVAL_BPTT",
    "LMTrainer",
    "TrainingInterrupted",
    "evaluate_perplexity",
    "load_optimizer_state",
    "model_generators",
    "optimizer_state",
    "perplexity",
    "stateful_layers",
    "unique_params",
]


def unique_params(params, grads):
    """Groups of tied parameters: [(index, [(other index, transposed), ...]), ...].

    A parameter listed twice (the same array) or as a transposed view of another (tied
    embedding and output weights, as the book's BetterRnnlm shares them) is updated once, with
    the sum of its gradients -- as the book's ``remove_duplicate`` does."""
    groups, seen = [], {}
    for i, p in enumerate(params):
        for j, _ in groups:
            q = params[j]
            if p is q or (p.shape == q.shape and np.shares_memory(p, q)):
                seen[j].append((i, False))
                break
            if p.ndim == 2 and p.shape == q.shape[::-1] and np.shares_memory(p, q):
                seen[j].append((i, True))
                break
        else:
            groups.append((i, None))
            seen[i] = []
    return [(i, seen[i]) for i, _ in groups]


def _reachable(model, match):
    """The objects `match` accepts that are reachable from `model` through attributes, lists,
    tuples and dicts, in a deterministic order (a match is not looked into)."""
    found, seen = [], set()

    def walk(obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if match(obj):
            found.append(obj)
        elif isinstance(obj, (list, tuple)):
            for x in obj:
                walk(x)
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                walk(obj[k])
        elif hasattr(obj, "__dict__") and not isinstance(obj, (np.ndarray, type)):
            for k in sorted(vars(obj)):
                walk(vars(obj)[k])

    walk(model)
    return found


def model_generators(model):
    """Every ``np.random.Generator`` reachable from `model` through the attributes of fastrnn
    objects (and lists, tuples, dicts), in a deterministic order: the dropout layers' random
    streams, which a checkpoint saves so that a resumed run draws the masks an unbroken one
    would have."""
    return _reachable(model, lambda obj: isinstance(obj, np.random.Generator))


def _is_stateful_layer(obj):
    flag = getattr(obj, "stateful", None)
    return (
        isinstance(flag, (bool, int, np.bool_))
        and bool(flag)
        and hasattr(obj, "set_state")
        and hasattr(obj, "h")
    )


def stateful_layers(model):
    """The stateful recurrent time layers reachable from `model` (as :func:`model_generators`
    walks it), in a deterministic order: the state they carry from one window to the next is
    part of a checkpoint taken inside an epoch.  A layer is anything with ``stateful`` true, an
    ``h`` and ``set_state(h[, c])``: fastrnn's time layers and the book's."""
    return _reachable(model, _is_stateful_layer)


class TrainingInterrupted(Exception):
    """Raised by :meth:`LMTrainer.fit` when ``stop_requested`` was set (by a signal handler,
    say): the trainer stopped between two updates (or during an evaluation), and
    :meth:`LMTrainer.state` now describes a point inside the epoch that a resumed run continues
    from."""


_OWN_UPDATES = (SGD.update, Adam.update)


def optimizer_state(opt):
    """(JSON-serializable dict, dict of arrays) capturing an SGD or Adam optimizer."""
    if isinstance(opt, Adam):
        meta = {
            "type": "adam",
            "lr": opt.lr,
            "beta1": opt.beta1,
            "beta2": opt.beta2,
            "eps": opt.eps,
            "iter": opt.iter,
            "slots": 0 if opt.m is None else len(opt.m),
        }
        arrays = {}
        if opt.m is not None:
            for k, (m, v) in enumerate(zip(opt.m, opt.v)):
                arrays[f"m{k}"], arrays[f"v{k}"] = m, v
        return meta, arrays
    if isinstance(opt, SGD):
        return {"type": "sgd", "lr": opt.lr}, {}
    raise TypeError(f"optimizer must be fastrnn.train.SGD or Adam, got {type(opt).__name__}")


def load_optimizer_state(opt, meta, arrays):
    """Restore `opt` (a fresh SGD/Adam of the same type) from :func:`optimizer_state`'s output."""
    kind = "adam" if isinstance(opt, Adam) else "sgd"
    if meta.get("type") != kind:
        raise ValueError(f"checkpoint optimizer is {meta.get('type')!r}, run uses {kind!r}")
    opt.lr = float(meta["lr"])
    if kind == "adam":
        opt.iter = int(meta["iter"])
        n = int(meta["slots"])
        if n:
            try:
                opt.m = [np.array(arrays[f"m{k}"]) for k in range(n)]
                opt.v = [np.array(arrays[f"v{k}"]) for k in range(n)]
            except KeyError as e:
                raise ValueError(f"optimizer state lacks array {e.args[0]!r}") from None


def perplexity(total_loss, count):
    return math.exp(min(total_loss / count, 700.0))


# Window of the batch-1 evaluation.  With the state carried, the perplexity is the same for any
# window (tested); only the cost moves: a window of T words reads the read-out's weights (26 MB
# for 650 x 10,000) once and multiplies them by T rows, so short windows spend their time
# streaming weights.  Measured (benches/eval_window.py, 2x650 tied, ms per 35 words, 1 / 2
# threads): T 35: 21.7 / 17.9, T 140: 14.6 / 11.0, T 512: 13.1 / 9.3.  The scores take T x V
# floats (20 MB for V = 10,000).
EVAL_BPTT = 512


def evaluate_perplexity(model, ids, bptt=EVAL_BPTT, *, progress=False, desc="eval", stop=None):
    """Perplexity of the token ids `ids` under `model` (the DLFS2 language-model interface), at
    batch 1 with the state carried across windows of `bptt` steps, dropout off.

    Every one of the ``len(ids) - 1`` next-word predictions counts once, as in Zaremba et al.'s
    word-by-word evaluation.  The model's state is reset before and after.  `stop`: a callable
    checked before each window; when it returns true, :class:`TrainingInterrupted` is raised."""
    _positive_int(bptt, "bptt (window length)")
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 word ids (one prediction), got {len(ids)}")
    model.reset_state()
    total, count = 0.0, 0
    bar = _bar(-(-(len(ids) - 1) // bptt), desc, progress)
    try:
        for xs, ts in eval_windows(ids, bptt):
            if stop is not None and stop():
                raise TrainingInterrupted(f"stopped during the {desc} evaluation")
            total += float(model.forward(xs, ts, train_flg=False)) * ts.size
            count += ts.size
            bar.update()
    finally:
        bar.close()
    model.reset_state()
    return perplexity(total, count)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s, refresh=True):
        pass

    def close(self):
        pass


def _bar(total, desc, enabled, initial=0):
    """A tqdm bar (or a stand-in); `initial`: windows done before (a resumed epoch: its rate
    then counts this call's windows only)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(
        total=total, desc=desc, unit="win", leave=False, dynamic_ncols=True, initial=initial
    )


class LMTrainer:
    """Epochs of truncated BPTT on a language model.

    Parameters
    ----------
    model : object
        A language model with the DLFS2 interface (see the module doc).
    optimizer : SGD or Adam
        Updates ``model.params`` in place; its ``lr`` is set from `schedule` every epoch.
    schedule : ConstantLR, PlateauLR or DecayLR
        The learning-rate schedule (:mod:`fastrnn.train.schedules`).
    batch_size, bptt : int
        N parallel streams, windows of T steps.
    clip : float or None
        Global-norm gradient clipping threshold (None: no clipping).
    loss : {"mean", "sum"}
        "mean": the gradient of the mean loss over the window's tokens (the book);
        "sum": of the loss summed over time and averaged over the batch, as Zaremba et al. do
        (``backward(dout=T)``).  Reported perplexities are per token either way.
    batching : {"zaremba", "dlfs2"}
        Layout of the training windows (:mod:`fastrnn.train.data`).
    eval_bptt : int or None
        Window length of the batch-1 evaluation (default :data:`EVAL_BPTT`; the perplexity does
        not depend on it, the speed does).
    threads : int or None
        Threads for :func:`fastrnn.clip_grads` (the layers follow BLAS's setting).
    progress : bool
        Show tqdm progress bars.
    average : {"none", "nt", "after"}
        Weight averaging (averaged SGD, :mod:`fastrnn.train.averaging`): once it starts, every
        evaluation, the schedule and the best model see the mean of the parameters over the
        updates since, while training goes on with the parameters themselves.  "nt": it starts
        after the first epoch whose validation perplexity is worse than the best of those more
        than `nonmono` epochs before (Merity et al.'s NT-ASGD); "after": with epoch
        `average_after` + 1.
    average_after : int
        With average "after": the epochs trained before averaging starts (0: from the start).
    nonmono : int
        With average "nt": the epochs of noise the trigger waits out (Merity et al.: 5).
    """

    def __init__(
        self,
        model,
        optimizer,
        schedule,
        *,
        batch_size=20,
        bptt=35,
        clip=None,
        loss="mean",
        batching="zaremba",
        eval_bptt=None,
        threads=None,
        progress=True,
        parallel=None,
        average="none",
        average_after=0,
        nonmono=5,
    ):
        for name in ("params", "grads", "forward", "backward", "reset_state"):
            if not hasattr(model, name):
                raise TypeError(
                    f"model lacks {name!r}: expected the DLFS2 language-model "
                    f"interface (predict, forward, backward, reset_state, params, "
                    f"grads)"
                )
        if loss not in ("mean", "sum"):
            raise ValueError(f"loss must be 'mean' or 'sum', got {loss!r}")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be positive or None, got {clip!r}")
        _positive_int(batch_size, "batch_size")
        _positive_int(bptt, "bptt")
        if eval_bptt is not None:
            _positive_int(eval_bptt, "eval_bptt")
        if average not in AVERAGING:
            raise ValueError(f"average must be one of {', '.join(AVERAGING)}, got {average!r}")
        if (
            isinstance(average_after, bool)
            or not isinstance(average_after, int)
            or average_after < 0
        ):
            raise ValueError(f"average_after must be a non-negative integer, got {average_after!r}")
        _positive_int(nonmono, "nonmono")
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.batch_size, self.bptt, self.clip, self.loss = batch_size, bptt, clip, loss
        self.batching = batching
        self.eval_bptt = EVAL_BPTT if eval_bptt is None else eval_bptt
        self.threads, self.progress = threads, progress
        # data-parallel over MPI (fastrnn.train.distributed.DataParallel) or None
        self.parallel = parallel
        if parallel is not None:
            parallel.check_batch(batch_size)
            self.progress = progress and parallel.rank == 0
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer updates made
        self.history = []  # one metrics dict per epoch
        # the epoch in progress: {"windows", "total", "count", "seconds", "norms"} done so far
        # (None between epochs); a checkpoint taken inside an epoch resumes from it
        self.position = None
        self.last_grad_norm = None  # the last update's global gradient norm (with clipping)
        self.stopped_early = None  # the epoch fit's patience stopped after
        self.stop_requested = False  # set (by a signal handler) to stop after this update
        # a checkpoint wanted by one rank (its timer), due on all of them after the next update
        self.checkpoint_wanted = self.checkpoint_due = False
        self._stop_agreed = False  # with MPI: stop_requested of any rank, after an update
        self._groups = unique_params(model.params, model.grads)
        self.average, self.average_after, self.nonmono = average, average_after, nonmono
        self.averager = None  # the WeightAverage, once averaging has started

    # -- weight averaging ---------------------------------------------------------------------
    def _unique_params(self):
        """The parameters an update changes: one array for each group of tied ones."""
        params = self.model.params
        return [params[i] for i, _ in self._groups]

    def start_averaging(self):
        """Average the weights from now on (the mean starts at their current values)."""
        if self.averager is None:
            self.averager = WeightAverage(self._unique_params())

    def evaluation_weights(self):
        """A context in which the model holds the weights evaluated and saved as its best:
        with averaging started, the mean (:meth:`WeightAverage.swapped_in`); else its own."""
        if self.averager is None:
            return contextlib.nullcontext()
        return self.averager.swapped_in(self._unique_params())

    # -- one update ---------------------------------------------------------------------------
    def _params_grads(self):
        params, grads = self.model.params, self.model.grads
        if len(self._groups) == len(params):
            return params, grads
        ps, gs = [], []
        for i, tied in self._groups:
            g = grads[i]
            for j, transposed in tied:
                g += grads[j].T if transposed else grads[j]
            ps.append(params[i])
            gs.append(g)
        return ps, gs

    def train_step(self, xs, ts):
        """Forward, backward, clip and update on one window; returns the mean token loss."""
        from .._norms import clip_grads

        loss = float(self.model.forward(xs, ts, train_flg=True))
        if math.isfinite(loss):
            self.model.backward(xs.shape[1] if self.loss == "sum" else 1)
        params, grads = self._params_grads()
        if self.parallel is not None:  # every rank then sees the same loss and flags
            loss, stop, due = self.parallel.reduce_step(
                grads, loss, ts.size, self.stop_requested, self.checkpoint_wanted
            )
            self._stop_agreed, self.checkpoint_due = stop, due
            self.checkpoint_wanted = False
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss} at step {self.step + 1} "
                f"(lr {self.optimizer.lr}): diverged"
            )
        self.last_grad_norm = None
        if self.clip is not None:
            self.last_grad_norm = clip_grads(grads, self.clip, threads=self.threads)
        update = self.optimizer.update
        if self.last_grad_norm is not None and getattr(update, "__func__", None) in _OWN_UPDATES:
            # clip_grads read every gradient and raises on NaN/Inf: they are finite, and
            # fastrnn's optimizers need not scan them again (an update another hands in, or a
            # replaced one, is called as the book's are)
            update(params, grads, grads_finite=True)
        else:
            update(params, grads)
        if self.averager is not None:
            self.averager.update(params)
        self.step += 1
        return loss

    # -- epochs -------------------------------------------------------------------------------
    def train_epoch(self, ids, max_steps=None, on_window=None):
        """One epoch (or its first `max_steps` windows) on `ids` at the schedule's rate,
        continuing from ``position`` where a checkpoint taken inside the epoch left it.

        After each update ``position`` holds the epoch's progress and ``on_window(self)`` is
        called (a periodic checkpoint).  With ``stop_requested`` set, raises
        :class:`TrainingInterrupted` after the update in progress.
        Returns {"train_ppl", "seconds", "words_per_sec", "lr", "steps" (updates made in this
        call), "windows" (of the epoch), "windows_done", and with clipping "grad_norm" (the
        epoch's mean global gradient norm before clipping), "grad_norm_max" and "clipped" (the
        fraction of updates whose norm exceeded the clip)}."""
        N, T = self.batch_size, self.bptt
        if self.average == "after" and self.epoch >= self.average_after:
            self.start_averaging()
        lr = self.schedule.lr(self.epoch)
        self.optimizer.lr = lr
        windows = window_count(len(ids), N, T, self.batching)
        pos = self.position or {"windows": 0, "total": 0.0, "count": 0, "seconds": 0.0}
        if self.position is None:
            self.model.reset_state()  # else the checkpoint restored the carried state
        first, total, count = int(pos["windows"]), float(pos["total"]), int(pos["count"])
        # the gradient norms of the epoch's updates: sum, max, how many were clipped
        norms = list(pos.get("norms", (0.0, 0.0, 0)))
        todo = windows if max_steps is None else min(windows, first + max_steps)
        bar = _bar(todo, f"epoch {self.epoch + 1}", self.progress, initial=first)
        done, before = first, float(pos["seconds"])
        start = time.perf_counter()
        try:
            rows = slice(None) if self.parallel is None else self.parallel.rows(N)
            for xs, ts in train_windows(self.batching, ids, N, T, self.epoch, first):
                if done == todo:
                    break
                # (with MPI each rank trains its rows; train_step returns all rows' mean)
                total += self.train_step(xs[rows], ts[rows]) * ts.size
                count += ts.size
                done += 1
                if self.last_grad_norm is not None:
                    g = self.last_grad_norm
                    norms = [norms[0] + g, max(norms[1], g), norms[2] + (g > self.clip)]
                secs = before + time.perf_counter() - start
                self.position = {
                    "windows": done,
                    "total": total,
                    "count": count,
                    "seconds": secs,
                    "norms": norms,
                }
                bar.update()
                if done % 20 == 0 or done == todo:
                    bar.set_postfix_str(
                        f"ppl {perplexity(total, count):.1f}, {count / secs:.0f} words/s",
                        refresh=False,
                    )
                if on_window is not None:  # its time (a checkpoint's writing) is not training's
                    t = time.perf_counter()
                    on_window(self)
                    start += time.perf_counter() - t
                if self.stop_requested if self.parallel is None else self._stop_agreed:
                    raise TrainingInterrupted(
                        f"stopped in epoch {self.epoch + 1} after {done} of {windows} windows"
                    )
        finally:
            bar.close()
        seconds = before + time.perf_counter() - start
        self.position = {
            "windows": done,
            "total": total,
            "count": count,
            "seconds": seconds,
            "norms": norms,
        }
        stats = {
            "train_ppl": perplexity(total, count),
            "seconds": seconds,
            "words_per_sec": count / seconds if seconds > 0 else 0.0,
            "lr": lr,
            "steps": done - first,
            "windows": windows,
            "windows_done": done,
        }
        if self.clip is not None and done:
            stats["grad_norm"] = norms[0] / done
            stats["grad_norm_max"] = norms[1]
            stats["clipped"] = norms[2] / done
        return stats

    def _val_history(self):
        """The validation perplexities of the complete epochs, in order."""
        return [m["val_ppl"] for m in self.history if not m.get("partial")]

    def epochs_without_gain(self):
        """Complete epochs since the one of the best validation perplexity (0: the last)."""
        vals = self._val_history()
        return len(vals) - 1 - int(np.argmin(vals)) if vals else 0

    def evaluate(self, ids, desc="eval"):
        """Perplexity of `ids` at batch 1, state carried across windows of `eval_bptt` steps
        (:func:`evaluate_perplexity`); ``stop_requested`` interrupts it."""
        # (MPI: a stop is taken at the next update, where every rank sees it)
        return evaluate_perplexity(
            self.model,
            ids,
            self.eval_bptt,
            progress=self.progress,
            desc=desc,
            stop=None if self.parallel is not None else lambda: self.stop_requested,
        )

    def evaluate_shared(self, ids, desc="eval"):
        """:meth:`evaluate`; with MPI rank 0's, on every rank (the others wait)."""
        if self.parallel is None:
            return self.evaluate(ids, desc)
        return self.parallel.bcast(self.evaluate(ids, desc) if self.parallel.rank == 0 else None)

    def fit(
        self,
        train_ids,
        valid_ids,
        epochs,
        *,
        max_steps=None,
        on_epoch=None,
        on_window=None,
        log=print,
        patience=None,
    ):
        """Train until `epochs` epochs are complete (continuing from ``self.epoch``, and inside
        it from ``position``), or with `patience` until that many epochs in a row have not
        improved on the best validation perplexity (early stopping; ``stopped_early`` then
        holds the last epoch; judged from ``history``, so a resumed run stops where it would
        have).

        After each epoch the validation perplexity feeds the schedule, a metrics dict is
        appended to ``history`` and ``on_epoch(trainer, metrics)`` is called (checkpointing);
        ``on_window(trainer)`` after each update (see :meth:`train_epoch`).  `max_steps` caps
        the optimizer updates of this call: the epoch it falls in is cut short, evaluated,
        recorded with ``"partial": True``, and training stops.  ``stop_requested`` stops it
        with :class:`TrainingInterrupted`, ``position`` kept for a checkpoint."""
        remaining = max_steps
        self.stopped_early = None
        while self.epoch < epochs:
            if patience is not None and self.epochs_without_gain() >= patience:
                self.stopped_early = self.epoch
                if log:
                    log(
                        f"stopping early after epoch {self.epoch}: validation has not improved "
                        f"on epoch {self.epoch - self.epochs_without_gain()}'s for {patience} "
                        "epochs"
                    )
                break
            stats = self.train_epoch(train_ids, remaining, on_window)
            with self.evaluation_weights():
                val_ppl = self.evaluate_shared(valid_ids, "valid")
            averaged = None if self.averager is None else self.averager.count
            self.position = None
            self.schedule.observe(self.epoch, val_ppl)
            self.epoch += 1
            metrics = {
                "epoch": self.epoch,
                "train_ppl": stats["train_ppl"],
                "val_ppl": val_ppl,
                "seconds": stats["seconds"],
                "words_per_sec": stats["words_per_sec"],
                "lr": stats["lr"],
                "steps": stats["windows_done"],
            }
            for key in ("grad_norm", "grad_norm_max", "clipped"):
                if key in stats:
                    metrics[key] = stats[key]
            if averaged is not None:  # the evaluated weights: the mean of this many
                metrics["averaged_over"] = averaged
            partial = stats["windows_done"] < stats["windows"]
            if partial:
                metrics["partial"] = True
            earlier = self._val_history()
            start = (
                self.average == "nt"
                and self.averager is None
                and not partial
                and nt_triggered(earlier, val_ppl, self.nonmono)
            )
            self.history.append(metrics)
            if log:
                log(
                    f"epoch {self.epoch:3d}  lr {stats['lr']:.4g}  train ppl "
                    f"{stats['train_ppl']:9.2f}  val ppl {val_ppl:9.2f}  "
                    f"{stats['words_per_sec']:8.0f} words/s  {stats['seconds']:7.1f} s"
                    + (f"  (weights averaged over {averaged} updates)" if averaged else "")
                    + (
                        f"  (stopped after {stats['steps']} of {stats['windows']} windows)"
                        if partial
                        else ""
                    )
                )
            if start:
                self.start_averaging()
                if log:
                    log(
                        f"averaging the weights from here on: validation {val_ppl:.2f} is worse "
                        f"than epoch {1 + int(np.argmin(earlier))}'s {min(earlier):.2f}, more "
                        f"than {self.nonmono} epoch{'s' if self.nonmono > 1 else ''} ago"
                    )
            if on_epoch is not None:
                on_epoch(self, metrics)
            if remaining is not None:
                remaining -= stats["steps"]
                if remaining <= 0:
                    break
        return self.history

    # -- checkpoint state ---------------------------------------------------------------------
    def state(self):
        """(JSON-serializable dict, dict of arrays): everything but the model to resume."""
        meta, arrays = optimizer_state(self.optimizer)
        rngs = [g.bit_generator.state for g in model_generators(self.model)]
        par = self.parallel
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.optimizer.lr,
            "schedule": {"name": self.schedule.name, **self.schedule.state()},
            "optimizer": meta,
            "rng_states": rngs,
            "history": self.history,
            "position": self.position,
            "ranks": 1 if par is None else par.size,
            "average": None if self.averager is None else {"count": self.averager.count},
        }
        if self.averager is not None:
            for k, m in enumerate(self.averager.means):
                arrays[f"avg{k}"] = m
        if par is not None:  # collective: every rank's dropout streams
            state["rng_states_by_rank"] = par.gather_json(rngs)
        if self.position is not None:  # inside an epoch: the state carried to the next window
            carried = []
            for k, layer in enumerate(stateful_layers(self.model)):
                names = {}
                for name in ("h", "c"):
                    value = getattr(layer, name, None)
                    if par is not None:  # all N streams (collective; every rank has its h)
                        value = None if value is None else par.gather_rows(value)
                    if value is not None:
                        names[name] = f"carry{k}_{name}"
                        arrays[names[name]] = value
                carried.append(names)
            state["carried"] = carried
        return state, arrays

    def load_state(self, state, arrays):
        """Restore what :meth:`state` captured (the model is restored separately); checked
        before anything changes."""
        if state["schedule"]["name"] != self.schedule.name:
            raise ValueError(
                f"checkpoint schedule is {state['schedule']['name']!r}, run uses "
                f"{self.schedule.name!r}"
            )
        ranks = 1 if self.parallel is None else self.parallel.size
        if int(state.get("ranks", 1)) != ranks:
            raise ValueError(
                f"checkpoint was written by a run on {state.get('ranks', 1)} MPI ranks; "
                f"resume it on as many (this run has {ranks})"
            )
        gens = model_generators(self.model)
        rngs = state.get("rng_states", [])
        if self.parallel is not None and "rng_states_by_rank" in state:
            rngs = state["rng_states_by_rank"][self.parallel.rank]
        if len(rngs) != len(gens):
            raise ValueError(
                f"checkpoint holds {len(rngs)} random-generator states, the model "
                f"has {len(gens)} generators"
            )
        for k, (g, st) in enumerate(zip(gens, rngs)):  # (tried on a spare before any is set)
            spare = type(g.bit_generator)()
            try:
                spare.state = st
            except (TypeError, ValueError, KeyError) as e:
                raise ValueError(
                    f"rng_states[{k}] is not a NumPy {type(spare).__name__} state ({e})"
                ) from None
        position = state.get("position")
        carried = state.get("carried") or []
        layers = stateful_layers(self.model)
        if position is not None:
            keys = ("windows", "total", "count", "seconds")
            if not isinstance(position, dict) or any(k not in position for k in keys):
                raise ValueError(
                    f"checkpoint position must hold {', '.join(keys)}, got {position!r}"
                )
            if len(carried) != len(layers):
                raise ValueError(
                    f"checkpoint holds the carried state of {len(carried)} recurrent layers, "
                    f"the model has {len(layers)} stateful ones"
                )
            try:
                values = [{k: arrays[v] for k, v in names.items()} for names in carried]
            except KeyError as e:
                raise ValueError(
                    f"checkpoint lacks the carried-state array {e.args[0]!r}"
                ) from None
        averager = None
        if state.get("average") is not None:
            if self.average == "none":
                raise ValueError(
                    "checkpoint holds an average of the weights (averaging had started); "
                    "resume it with averaging on ('nt' or 'after')"
                )
            try:
                means = [arrays[f"avg{k}"] for k in range(len(self._groups))]
                averager = WeightAverage(
                    self._unique_params(), state["average"].get("count"), means
                )
            except KeyError as e:
                raise ValueError(
                    f"checkpoint lacks the weight-average array {e.args[0]!r}"
                ) from None
            except (ValueError, AttributeError) as e:
                raise ValueError(f"checkpoint weight average: {e}") from None
        load_optimizer_state(self.optimizer, state["optimizer"], arrays)
        self.averager = averager
        for g, st in zip(gens, rngs):
            g.bit_generator.state = st
        self.schedule.load_state(state["schedule"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.position = None if position is None else dict(position)
        self.model.reset_state()
        if position is not None:
            rows = slice(None) if self.parallel is None else self.parallel.rows(self.batch_size)
            for layer, value in zip(layers, values):
                if "h" in value:
                    c = value.get("c")
                    layer.set_state(value["h"][rows], None if c is None else c[rows])
