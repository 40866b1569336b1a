"""cudl.keras.losses: Keras losses (names, classes and functions) -> cudl.Loss.

Cross-entropies on probabilities (from_logits=False, Keras's default) need the model to end in the
matching activation (softmax / sigmoid): cudl drops that activation from the training graph and
computes the loss on logits (numerically stable), and predict() applies it."""

from .. import _cudl
from ._config import Recorded


class Loss(Recorded):
    _cudl_name = None
    _prob_activation = None  # the activation the loss expects on probabilities

    def __init__(self, from_logits=False, reduction=None, name=None, **kwargs):
        self.from_logits = bool(from_logits)
        self.name = name or _snake(type(self).__name__)

    def _to_cudl(self):
        return _cudl.Loss(self._cudl_name)


def _snake(name):
    import re
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class SparseCategoricalCrossentropy(Loss):
    """Integer labels (N,) for outputs (N, C), or one per position, (N, T) for (N, T, C); positions
    labelled ignore_class add no loss and no accuracy (padding)."""

    _cudl_name, _prob_activation = "sparse_categorical_crossentropy", "softmax"

    def __init__(self, from_logits=False, ignore_class=None, **kwargs):
        super().__init__(from_logits=from_logits, **kwargs)
        self.ignore_class = None if ignore_class is None else int(ignore_class)

    def _to_cudl(self):
        l = super()._to_cudl()
        l.ignore_class = self.ignore_class
        return l


class CategoricalCrossentropy(Loss):
    _cudl_name, _prob_activation = "categorical_crossentropy", "softmax"

    def __init__(self, from_logits=False, label_smoothing=0.0, **kwargs):
        if label_smoothing:
            raise ValueError("CategoricalCrossentropy: label_smoothing is not supported by cudl")
        super().__init__(from_logits=from_logits, **kwargs)


class BinaryCrossentropy(Loss):
    _cudl_name, _prob_activation = "bce_with_logits", "sigmoid"


class MeanSquaredError(Loss):
    _cudl_name = "mse"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.from_logits = True


class MeanAbsoluteError(MeanSquaredError):
    _cudl_name = "mae"


class Huber(MeanSquaredError):
    _cudl_name = "huber"

    def __init__(self, delta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.delta = float(delta)

    def _to_cudl(self):
        l = super()._to_cudl()
        l.huber_delta = self.delta
        return l


def _fn(cls, name):
    def f(y_true, y_pred):
        raise TypeError("cudl.keras.losses.%s names a loss for compile(); it is not computed eagerly" % name)
    f.__name__ = name
    f._cls = cls
    return f


sparse_categorical_crossentropy = _fn(SparseCategoricalCrossentropy, "sparse_categorical_crossentropy")
categorical_crossentropy = _fn(CategoricalCrossentropy, "categorical_crossentropy")
binary_crossentropy = _fn(BinaryCrossentropy, "binary_crossentropy")
mean_squared_error = mse = MSE = _fn(MeanSquaredError, "mean_squared_error")
mean_absolute_error = mae = MAE = _fn(MeanAbsoluteError, "mean_absolute_error")
huber = _fn(Huber, "huber")

_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy, "binary_crossentropy": BinaryCrossentropy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError, "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError, "huber": Huber, "huber_loss": Huber,
}


def get(identifier):
    """A Loss object from a Keras name, class, function or object."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if callable(identifier) and hasattr(identifier, "_cls"):
        return identifier._cls()
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError("unknown or unsupported loss %r (cudl has: %s)" % (identifier, ", ".join(sorted(_BY_NAME))))
