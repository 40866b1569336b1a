"""Benchmark: cudl.keras fit against the same training through the C++ Model API (called through the
bindings with data already in a cudl Dataset's layout), on MNIST; prints both times and the ratio.

    PYTHONPATH=build/python python3 samples/python/fit_overhead.py [--epochs E] [--repeat R]"""
import argparse
import time

import numpy as np

import cudl
from cudl import _cudl

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--repeat", type=int, default=3)
args = ap.parse_args()

(x, y), _ = cudl.keras.datasets.mnist.load_data()
x = (x / 255.0).astype(np.float32)


def keras_fit():
    k = cudl.keras
    m = k.models.Sequential([k.layers.Flatten(input_shape=(28, 28)), k.layers.Dense(128, activation="relu"),
                             k.layers.Dense(10, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
    t0 = time.perf_counter()
    m.fit(x, y, epochs=args.epochs, verbose=0)  # includes the uint8 -> int32 label and array conversions
    return time.perf_counter() - t0


def cpp_fit():
    inp = _cudl.Input([28, 28])
    h = _cudl.flatten()(inp)
    h = _cudl.dense(128, "relu")(h)
    out = _cudl.dense(10)(h)
    m = _cudl.Model([inp], [out], "cpp")
    m.compile(_cudl.Optimizer("adam"), _cudl.Loss("sparse_categorical_crossentropy"), ["accuracy"], "cpu")
    yi = y.astype(np.int32)
    t0 = time.perf_counter()
    m.fit(x, yi, epochs=args.epochs, batch_size=32, verbose=0)
    return time.perf_counter() - t0


tk, tc = [], []
for i in range(args.repeat):  # interleaved, alternating which goes first, so load affects both alike
    if i % 2:
        tc.append(cpp_fit())
        tk.append(keras_fit())
    else:
        tk.append(keras_fit())
        tc.append(cpp_fit())
print("cudl.keras fit: best %.2fs  (runs %s)" % (min(tk), ", ".join("%.2f" % t for t in tk)))
print("C++ Model::fit: best %.2fs  (runs %s)" % (min(tc), ", ".join("%.2f" % t for t in tc)))
print("overhead: %+.1f%%" % (100 * (min(tk) / min(tc) - 1)))
