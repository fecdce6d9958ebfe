"""Text generation from a trained language model, one word at a time."""

import numpy as np

# (the NumPy-only runtime's pick: an exported model samples the same words)
from ..interop.numpy_runtime import next_word

__all__ = ["generate"]


def generate(model, start_id, length, *, temperature=1.0, greedy=False, seed=None, skip_ids=()):
    """Word ids continuing `start_id`, `length` of them (the start word not included).

    Each step feeds the last word to ``model.predict(xs, train_flg=False)`` as a (1, 1) batch,
    the model's state carried from the previous step (the single-step path), and picks the next
    word from the scores: the most likely one (`greedy`) or a sample from
    ``softmax(scores / temperature)``, drawn with ``np.random.default_rng(seed)``.
    `skip_ids` are never produced (e.g. an unknown-word token)."""
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not greedy and not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    rng = np.random.default_rng(seed)
    skip = np.asarray(list(skip_ids), dtype=np.int64)
    model.reset_state()
    out, x = [], int(start_id)
    for _ in range(length):
        scores = np.asarray(
            model.predict(np.array([[x]]), train_flg=False), dtype=np.float64
        ).reshape(-1)
        x = next_word(scores, rng, temperature, greedy, skip)
        out.append(x)
    model.reset_state()
    return out
