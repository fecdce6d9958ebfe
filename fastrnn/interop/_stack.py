"""Multi-layer recurrent stacks (``fastrnn.Stack``) for the converters."""

from ..layers.bidirectional import Bidirectional
from ..layers.stack import Stack


def make_stack(layers, dropout=0.0, variational=False):
    """A fastrnn Stack of time layers (outputs of one the inputs of the next)."""
    return Stack(layers, dropout=dropout, variational=variational)


def stack_layers(obj):
    """The list of recurrent layers of a Stack (plain connections only), ``[obj]`` for a
    Bidirectional, or None for anything else."""
    if isinstance(obj, Bidirectional):
        return [obj]
    if not isinstance(obj, Stack):
        return None
    if obj.connection is not None:
        raise ValueError(
            f"a Stack with connection={obj.connection!r} has no counterpart in the "
            "other frameworks' stacked layers (outputs of one layer are the inputs "
            "of the next, nothing else)"
        )
    return list(obj.layers)


def directions(layer):
    """(forward layer, backward layer or None, merge) of a time layer or a Bidirectional."""
    if isinstance(layer, Bidirectional):
        return layer.forward_layer, layer.backward_layer, layer.merge
    return layer, None, None
