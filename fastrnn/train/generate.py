"""Text generation from a trained language model, one word at a time."""

import numpy as np

# (the NumPy-only runtime's loop: an exported model samples the same words)
from ..interop.numpy_runtime import generate as _generate

__all__ = ["generate"]


def generate(
    model,
    start_id,
    length,
    *,
    temperature=1.0,
    greedy=False,
    seed=None,
    skip_ids=(),
    top_k=None,
    top_p=None,
):
    """Word ids continuing `start_id`, `length` of them (the start word not included).

    Each step feeds the last word to ``model.predict(xs)`` (its default: dropout off) as a
    (1, 1) batch,
    the model's state carried from the previous step (the single-step path), and picks the next
    word from the scores: the most likely one (`greedy`) or a sample from
    ``softmax(scores / temperature)``, drawn with ``np.random.default_rng(seed)``, among the
    `top_k` most likely words only and / or the fewest most likely words whose probability
    reaches `top_p` (nucleus sampling).  `skip_ids` are never produced (e.g. an unknown-word
    token)."""
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not greedy and not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1
    ):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    return _generate(
        model, int(start_id), length, temperature, greedy, seed, skip_ids, top_k, top_p
    )
