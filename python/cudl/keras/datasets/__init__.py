"""cudl.keras.datasets: MNIST and Fashion-MNIST from the IDX files scripts/fetch-mnist.sh puts in place."""

from . import fashion_mnist, mnist

__all__ = ["mnist", "fashion_mnist"]
