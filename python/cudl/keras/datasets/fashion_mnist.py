"""cudl.keras.datasets.fashion_mnist: load_data() -> (x_train, y_train), (x_test, y_test), uint8 as in Keras.
Looked for under <root>/fashion_mnist and <root>/fashion (where scripts/fetch-mnist.sh puts it)."""

from . import _idx


def load_data():
    return _idx.load(("fashion_mnist", "fashion"), True, " --dataset fashion")
