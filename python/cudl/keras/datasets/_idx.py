"""Finds and loads MNIST-format IDX files: $CUDL_DATA/<name>, ./data/<name>, ~/.cudl/datasets/<name>."""

import os

from ... import _cudl

_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _complete(d):
    return all(os.path.exists(os.path.join(d, f)) or os.path.exists(os.path.join(d, f + ".gz")) for f in _FILES)


def candidates(names):
    roots = []
    if os.environ.get("CUDL_DATA"):
        roots.append(os.environ["CUDL_DATA"])
    roots += [os.path.join(os.getcwd(), "data"), os.path.join(os.path.expanduser("~"), ".cudl", "datasets")]
    return [os.path.join(r, n) for r in roots for n in names]


def load(names, fashion, fetch_arg):
    """((x_train, y_train), (x_test, y_test)): uint8 images (N, 28, 28) and uint8 labels (N,), as Keras."""
    tried = candidates(names)
    for d in tried:
        if _complete(d):
            out = []
            for train in (True, False):
                x, y = _cudl.load_mnist(d, train, 0, fashion)
                out.append((x.reshape(x.shape[0], x.shape[2], x.shape[3]), y.astype("uint8")))
            return tuple(out)
    raise FileNotFoundError("%s: the IDX files (%s, raw or .gz) are in none of: %s. Fetch them with "
                            "`scripts/fetch-mnist.sh%s` from the cudl source tree (it writes data/%s; run from "
                            "there, or set CUDL_DATA to its data/ folder)"
                            % (names[0], ", ".join(_FILES), ", ".join(tried), fetch_arg, names[-1]))
