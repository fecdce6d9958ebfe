"""Learning-rate schedules for epoch-based training.

Each schedule answers ``lr(epoch)`` (0-based epoch index) before the epoch runs and hears
``observe(epoch, val_ppl)`` after it; ``state()`` / ``load_state()`` (JSON-serializable) let a
checkpoint resume it exactly.
"""

import math

from .optim import _positive

__all__ = ["SCHEDULES", "ConstantLR", "DecayLR", "PlateauLR", "make_schedule"]


class ConstantLR:
    """The same learning rate every epoch."""

    name = "constant"

    def __init__(self, lr):
        self.base_lr = _positive("lr", lr)

    def lr(self, epoch):
        return self.base_lr

    def observe(self, epoch, val_ppl):
        pass

    def state(self):
        return {}

    def load_state(self, state):
        pass


class PlateauLR(ConstantLR):
    """The book's schedule (``train_better_rnnlm.py``): divide the rate by `factor` (4) after
    every epoch whose validation perplexity is not better than the best so far."""

    name = "plateau"

    def __init__(self, lr, factor=4.0):
        super().__init__(lr)
        self.factor = _positive("plateau factor", factor)
        self.current = self.base_lr
        self.best = math.inf

    def lr(self, epoch):
        return self.current

    def observe(self, epoch, val_ppl):
        if val_ppl < self.best:
            self.best = val_ppl
        else:
            self.current /= self.factor

    def state(self):
        return {"current": self.current, "best": None if math.isinf(self.best) else self.best}

    def load_state(self, state):
        """Restore :meth:`state`'s dict; a ValueError naming the field if it is not one."""
        current, best = state.get("current"), state.get("best")
        try:
            current = _positive("schedule current lr", current)
            if best is not None:
                best = _positive("schedule best validation perplexity", best)
        except ValueError as e:
            raise ValueError(f"checkpoint {e}") from None
        self.current, self.best = current, math.inf if best is None else best


class DecayLR(ConstantLR):
    """Zaremba et al.'s schedule: ``lr * decay ** max(epoch - after, 0)`` for the 1-based epoch
    (their code's ``max(i + 1 - max_epoch, 0)``), so the first `after` epochs run at `lr`."""

    name = "decay"

    def __init__(self, lr, decay=0.5, after=4):
        super().__init__(lr)
        self.decay = _positive("lr decay", decay)
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"decay-after must be a non-negative integer, got {after!r}")
        self.after = after

    def lr(self, epoch):
        return self.base_lr * self.decay ** max(epoch + 1 - self.after, 0)


SCHEDULES = {"constant": ConstantLR, "plateau": PlateauLR, "decay": DecayLR}


def make_schedule(name, lr, decay=0.5, after=4, factor=4.0):
    """The schedule called `name` ("constant", "plateau" or "decay") with its parameters."""
    if name == "constant":
        return ConstantLR(lr)
    if name == "plateau":
        return PlateauLR(lr, factor)
    if name == "decay":
        return DecayLR(lr, decay, after)
    raise ValueError(f"lr schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
