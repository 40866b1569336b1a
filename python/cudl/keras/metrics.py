"""cudl.keras.metrics: the metrics cudl computes on the device during fit/evaluate (accuracy, mae),
under Keras's names; History and logs use the name the program gave."""

_BY_NAME = {
    "accuracy": "accuracy", "acc": "accuracy", "sparse_categorical_accuracy": "accuracy",
    "categorical_accuracy": "accuracy", "mae": "mae", "mean_absolute_error": "mae",
}


class Metric:
    _cudl_name = None

    def __init__(self, name=None, **kwargs):
        self.name = name or self._default


def _cls(name, cudl_name, default):
    return type(name, (Metric,), {"_cudl_name": cudl_name, "_default": default})


Accuracy = _cls("Accuracy", "accuracy", "accuracy")
SparseCategoricalAccuracy = _cls("SparseCategoricalAccuracy", "accuracy", "sparse_categorical_accuracy")
CategoricalAccuracy = _cls("CategoricalAccuracy", "accuracy", "categorical_accuracy")
MeanAbsoluteError = _cls("MeanAbsoluteError", "mae", "mean_absolute_error")


def get(identifier):
    """(cudl name, Keras display name) of a metric name or object."""
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        identifier = identifier()
    if isinstance(identifier, Metric):
        return identifier._cudl_name, identifier.name
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()], identifier
    raise ValueError("unknown or unsupported metric %r (cudl has: %s)" % (identifier, ", ".join(sorted(_BY_NAME))))
