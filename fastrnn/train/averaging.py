"""Weight averaging (averaged SGD, Polyak & Juditsky 1992) and its non-monotonic trigger.

Averaged SGD evaluates the mean of the parameters over the updates since averaging started
while SGD goes on with the current ones: the mean has the noise of a constant-rate SGD averaged
out without the rate decaying.  Merity et al. (2018, "Regularizing and optimizing LSTM language
models") start it when validation stops improving -- NT-ASGD, :func:`nt_triggered` -- and it is
a large part of their gain over step decay.

:class:`WeightAverage` keeps the running mean in the parameters' dtype, one fused pass per
update (``avg += (p - avg) / count``, :func:`fastrnn._norms.average_step`: 3.9-4.3 ms for the
13.3 M parameters of a 2 x 650 tied model on this VM, where NumPy's three passes took 12-17),
and swaps it into the model for evaluation and saving (:meth:`WeightAverage.swapped_in`)."""

import contextlib

import numpy as np

from .._norms import average_step
from .._threads import blas_threads

__all__ = ["AVERAGING", "WeightAverage", "nt_triggered"]

# the ways a run may average its weights: "none"; "nt": from the epoch validation stops
# improving (nt_triggered); "after": from a fixed epoch on
AVERAGING = ("none", "nt", "after")


def nt_triggered(val_history, val_ppl, nonmono):
    """True when `val_ppl` (the epoch just evaluated) is worse than the best of the epochs
    before the last `nonmono` (`val_history`: the earlier epochs' validation perplexities, in
    order): Merity et al.'s non-monotonic trigger, which waits out `nonmono` epochs of noise."""
    vals = list(val_history)
    return len(vals) > nonmono and val_ppl > min(vals[:-nonmono])


class WeightAverage:
    """The running mean of a list of parameter arrays over the updates since it was made.

    ``WeightAverage(params)`` starts the mean at the params' current values (count 1);
    :meth:`update` takes in the params after each update.  ``means`` are arrays of the params'
    shapes and dtypes; ``count`` how many parameter values each holds the mean of."""

    def __init__(self, params, count=1, means=None):
        params = list(params)
        if means is None:
            means = [np.array(p, copy=True) for p in params]
        else:
            means = list(means)
            if len(means) != len(params):
                raise ValueError(
                    f"weight average holds {len(means)} arrays, the model has {len(params)} "
                    "parameters"
                )
            for k, (m, p) in enumerate(zip(means, params)):
                if m.shape != p.shape or m.dtype != p.dtype:
                    raise ValueError(
                        f"weight average array {k} is {m.dtype} {m.shape}, the parameter is "
                        f"{p.dtype} {p.shape}"
                    )
            means = [np.array(m, copy=True) for m in means]
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"weight average count must be a positive integer, got {count!r}")
        self.means, self.count = means, int(count)

    def update(self, params):
        """Take in the params' current values: means += (params - means) / count."""
        self.count += 1
        w = 1.0 / self.count
        for k in average_step(self.means, params, w, threads=blas_threads()):
            m = self.means[k]  # pairs the fused pass does not take (not contiguous, say)
            m += w * (params[k] - m)

    @contextlib.contextmanager
    def swapped_in(self, params):
        """Within the block the params hold the means (copied in place, so every layer and
        tied view sees them); after it, their own values again, whatever the block raised."""
        params = list(params)
        saved = [np.array(p, copy=True) for p in params]
        try:
            for p, m in zip(params, self.means):
                np.copyto(p, m)
            yield
        finally:
            for p, s in zip(params, saved):
                np.copyto(p, s)
