"""Text generation from a trained language model, one word at a time."""

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
    token).  Bad arguments are a ValueError naming them, checked before the first step as the
    NumPy-only runtime's ``generate`` checks them: `length` an integer >= 0, `temperature`
    positive and finite (unless `greedy`), `top_k` >= 1, 0 < `top_p` <= 1, `start_id` and
    `skip_ids` word ids of the model's vocabulary (``model.vocab_size``), `seed` None or an
    integer >= 0."""
    return _generate(model, start_id, length, temperature, greedy, seed, skip_ids, top_k, top_p)
