"""The precision of the layers' matrix products: one home for its names, checks and the
``matmul_precision`` setting the layers share.

``"highest"``: the products in the parameters' dtype.  ``"medium"`` (float32 only): both
operands rounded to bfloat16 and the products summed in float32 (``src/gemm/fr_bf16.h``) on
CPUs with AVX512-BF16, as ``torch.set_float32_matmul_precision("medium")`` allows; elsewhere
the float32 products.  The names are torch's."""

import contextlib

import numpy as np

MATMUL_PRECISIONS = ("highest", "medium")


def check_matmul_precision(value, dtype, what="parameters"):
    """value, if it names a precision the `dtype` can take; else a ValueError naming both."""
    if value not in MATMUL_PRECISIONS:
        raise ValueError(
            f"matmul_precision must be one of {', '.join(map(repr, MATMUL_PRECISIONS))}, "
            f"got {value!r}"
        )
    if value == "medium" and np.dtype(dtype) != np.float32:
        raise ValueError(
            f"matmul_precision='medium' (bfloat16 products) needs float32 {what}, got "
            f"{np.dtype(dtype).name}"
        )
    return value


def precision_note(value):
    """What the command lines print of a run's matmul precision: "" for "highest", else which
    products "medium" gets on this CPU (bfloat16, or float32 where it lacks AVX512-BF16)."""
    if value == "highest":
        return ""
    from .._lm import bf16_supported

    if bf16_supported():
        return ", products at bfloat16 precision (matmul_precision medium)"
    return ", matmul_precision medium: this CPU has no AVX512-BF16, the products stay float32"


class MatmulPrecision:
    """The ``matmul_precision`` setting of a layer whose products can run in bfloat16
    (``TimeAffine``, the recurrent layers); the layer names its dtype by ``_param_dtype``."""

    @property
    def matmul_precision(self):
        """The products' precision: "highest", or "medium" (bfloat16 operands, float32
        sums; float32 layers, CPUs with AVX512-BF16).  May change between calls."""
        return self._matmul_precision

    @matmul_precision.setter
    def matmul_precision(self, value):
        self._matmul_precision = check_matmul_precision(value, self._param_dtype())

    @property
    def _bf16(self):
        return self._matmul_precision == "medium"


# where layers sit inside the library's containers (models, stacks, bidirectional layers)
_CHILDREN = ("stack", "encoder", "layers", "forward_layer", "backward_layer", "proj", "affine")


def precision_layers(obj):
    """The layers with a matmul_precision setting in `obj` (a layer, a stack or a model)."""
    if isinstance(obj, MatmulPrecision):
        yield obj
        return
    for name in _CHILDREN:
        child = getattr(obj, name, None)
        for c in child if isinstance(child, (list, tuple)) else (child,):
            if c is not None:
                yield from precision_layers(c)


@contextlib.contextmanager
def highest_precision(obj):
    """Inside the block every layer of `obj` computes at "highest" (the float32 products a
    NumPy runtime or another framework computes); afterwards each has its setting back."""
    layers = list(precision_layers(obj))
    saved = [layer.matmul_precision for layer in layers]
    try:
        for layer in layers:
            layer.matmul_precision = "highest"
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.matmul_precision = value
