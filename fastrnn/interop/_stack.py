"""Multi-layer recurrent stacks for the converters (fastrnn.models.Stack, when available)."""


def make_stack(layers):
    """A fastrnn Stack of time layers (outputs of one the inputs of the next)."""
    try:
        from ..models import Stack
    except ImportError:
        raise NotImplementedError("a multi-layer module needs fastrnn.models.Stack, which this "
                                  "fastrnn does not have") from None
    return Stack(layers)


def stack_layers(obj):
    """The list of recurrent layers of a Stack, or None when obj is not a Stack."""
    try:
        from ..models import Stack
    except ImportError:
        return None
    if isinstance(obj, Stack):
        return list(obj.layers)
    return None
