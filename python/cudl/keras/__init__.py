"""cudl.keras: tf.keras's names for what cudl supports (see README's Python section)."""

from . import activations, callbacks, datasets, initializers, layers, losses, metrics, models, optimizers
from . import mixed_precision, regularizers, utils
from ._engine import Input
from .models import Model, Sequential

__all__ = ["activations", "callbacks", "datasets", "initializers", "layers", "losses", "metrics", "mixed_precision",
           "models", "optimizers", "regularizers", "utils", "Input", "Model", "Sequential"]
