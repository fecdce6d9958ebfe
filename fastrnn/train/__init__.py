"""Training: optimizers (``SGD``, ``Adam``)."""
from .optim import SGD, Adam

__all__ = ["SGD", "Adam"]
