"""Weights in and out of other frameworks: PyTorch, Keras 3 and ONNX, and to machines with NumPy
only.

One module per framework, each importing its framework only when used (a missing framework is an
ImportError naming the pip extra that installs it):

- ``fastrnn.interop.torch``: ``from_torch(module)`` / ``to_torch(obj)`` for ``nn.RNN`` (tanh, relu),
  ``nn.LSTM``, ``nn.GRU``, ``nn.Embedding``, ``nn.Linear``.
- ``fastrnn.interop.keras``: ``from_keras(layer)`` / ``to_keras(obj)`` for
  ``keras.layers.SimpleRNN``, ``LSTM``, ``GRU`` (both ``reset_after`` settings),
  ``Bidirectional`` and ``keras.Sequential`` stacks of them; ``lengths_from_mask(mask)`` turns a
  right-padded Keras mask into fastrnn's ``lengths``.
- ``fastrnn.interop.onnx``: ``export_onnx(obj, path)`` writes the standard ONNX ``RNN`` / ``LSTM`` /
  ``GRU`` operators (plus ``Gather``, ``MatMul``, ``Add`` for embeddings and affine layers);
  a ``SequenceClassifier``'s pooling head as elementwise ONNX operators over ``sequence_lens``;
  ``import_onnx(path)`` reads such a graph back.
- ``fastrnn.interop.numpy_export``: ``export_numpy(model, directory, vocab)`` writes a language
  model with ``fastrnn_numpy.py`` (:mod:`fastrnn.interop.numpy_runtime`), a self-contained NumPy
  file that runs it where fastrnn's compiled kernels cannot be installed.

Every conversion is exact in both directions (only transposes, reordering of gate blocks, sums of
bias pairs and sign flips: see each module for the mapping), and the converted layer computes what
the original does, in the parameters' dtype.
"""

import importlib

__all__ = [
    "export_numpy",
    "export_onnx",
    "from_keras",
    "from_torch",
    "import_onnx",
    "lengths_from_mask",
    "to_keras",
    "to_torch",
]

_HOMES = {
    "from_torch": "torch",
    "to_torch": "torch",
    "from_keras": "keras",
    "to_keras": "keras",
    "lengths_from_mask": "keras",
    "export_onnx": "onnx",
    "import_onnx": "onnx",
    "export_numpy": "numpy_export",
}


def __getattr__(name):
    # the framework modules load on first use, so `import fastrnn.interop` needs none of them
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'fastrnn.interop' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{home}")
    attr = {"export_onnx": "export", "import_onnx": "import_onnx"}.get(name, name)
    return getattr(module, attr)


def __dir__():
    return sorted(list(globals()) + __all__)


def require(module, extra):
    """Import `module` (a framework) or raise an ImportError naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name is None or e.name == module or module.startswith(e.name + ".")
        if missing:
            raise ImportError(
                f"this conversion needs {module!r}, which is not installed: "
                f"pip install 'fastrnn[{extra}]'"
            ) from e
        # installed, but it failed to import (Keras without its backend, say): say so
        raise ImportError(f"{module!r} is installed but failed to import: {e}") from e
