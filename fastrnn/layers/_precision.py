"""The precision of the layers' large matrix products: one home for its names and checks.

``"highest"``: the products in the parameters' dtype.  ``"medium"`` (float32 only): both
operands rounded to bfloat16 and the products summed in float32 (``src/gemm/fr_bf16.h``) on
CPUs with AVX512-BF16, as ``torch.set_float32_matmul_precision("medium")`` allows; elsewhere
the float32 products.  The names are torch's."""

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
