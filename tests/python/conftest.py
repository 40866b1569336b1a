"""Shared fixtures of the Python tests: the repository root and a small MNIST slice (skipped, with the
reason, when data/mnist is absent)."""
import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def mnist_slice():
    """(x_train 6000, y_train), (x_test 1000, y_test) as Keras gives them (uint8)."""
    d = ROOT / "data" / "mnist"
    if not (d / "train-images-idx3-ubyte").exists() and not (d / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("MNIST not in %s (scripts/fetch-mnist.sh fetches it)" % d)
    os.environ.setdefault("CUDL_DATA", str(ROOT / "data"))
    import cudl
    (x, y), (xt, yt) = cudl.keras.datasets.mnist.load_data()
    return (x[:6000], y[:6000]), (xt[:1000], yt[:1000])


@pytest.fixture
def blobs():
    """A separable 3-class problem: 600 rows of 8 features, integer labels."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, size=(3, 8))
    y = rng.integers(0, 3, size=600)
    x = centers[y] + rng.normal(0, 0.5, size=(600, 8))
    return x, y
