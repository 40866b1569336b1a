#!/usr/bin/env python3
# bench/keras_mnist_peer.py — the tf.keras beginner program (samples/python/mnist_tf_keras.py) on
# cudl.keras and, as its peer, the identical recipe in PyTorch (CPU), over several seeds.
"""Runs the recipe of samples/python/mnist_tf_keras.py and prints one parseable line per run:

  RESULT framework=cudl seed=1 epochs=5 fit_seconds=<s> train_loss=<last epoch> test_accuracy=<t10k>

The recipe (tf.keras's defaults, as that program leaves them): the 60000 training images as
float32 x / 255 (the program's `x_train / 255.0`), Flatten, Dense(128, relu), Dense(10, softmax),
kernels glorot_uniform, biases zero, sparse categorical cross-entropy (mean over the batch), Adam
(learning rate 1e-3, betas 0.9/0.999, epsilon 1e-7 applied as Keras does: outside the bias
correction, `alpha = lr * sqrt(1 - b2^t) / (1 - b1^t); p -= alpha * m / (sqrt(v) + eps)`), batch 32
with the last partial batch trained, the order shuffled every epoch, 5 epochs; accuracy on the
10000 test images.

  --framework cudl   cudl.keras, the program's own calls (compile(seed=S) picks the seed)
  --framework torch  PyTorch with the same initialisers and data; --adam torch uses
                     torch.optim.Adam (epsilon added after the bias correction) instead of Keras's rule.

On a loaded 2-core machine give PyTorch --threads 1: with 2 threads it ran a fit for over ten
minutes instead of under one (its OpenMP threads wait on each other while other work holds a core).
"""
import argparse
import os
import sys
import time

import numpy as np


def load(framework, data_dir):
    """MNIST as Keras gives it (uint8): through cudl.keras.datasets for cudl, the raw reader of
    torch_mnist.py for PyTorch."""
    if framework == "cudl":
        os.environ.setdefault("CUDL_DATA", os.path.dirname(os.path.abspath(data_dir)))
        import cudl
        return cudl.keras.datasets.mnist.load_data()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_mnist import read_idx
    x = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte"))
    y = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte"))
    xt = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte"))
    yt = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte"))
    return (x, y), (xt, yt)


def run_cudl(a, data):
    import cudl as tf
    (x_train, y_train), (x_test, y_test) = data
    x_train, x_test = x_train / 255.0, x_test / 255.0
    model = tf.keras.models.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28)),
        tf.keras.layers.Dense(128, activation='relu'),
        tf.keras.layers.Dense(10, activation='softmax')])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'], seed=a.seed,
                  device="cpu")
    t0 = time.perf_counter()
    h = model.fit(x_train, y_train, epochs=a.epochs, verbose=0)
    secs = time.perf_counter() - t0
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    return secs, h.history["loss"][-1], acc


class KerasAdam:
    """Keras's Adam update (epsilon outside the bias correction) on a list of torch parameters."""

    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
        import torch
        self.params, self.lr, self.b1, self.b2, self.eps, self.t = list(params), lr, b1, b2, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def step(self):
        import torch
        self.t += 1
        alpha = self.lr * (1 - self.b2 ** self.t) ** 0.5 / (1 - self.b1 ** self.t)
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                g = p.grad
                m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                p.sub_(alpha * m / (v.sqrt() + self.eps))

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def run_torch(a, data):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(a.threads or os.cpu_count())
    torch.manual_seed(a.seed)
    (x_train, y_train), (x_test, y_test) = data
    x = torch.from_numpy((x_train / 255.0).astype(np.float32))
    y = torch.from_numpy(y_train.astype(np.int64))
    xt = torch.from_numpy((x_test / 255.0).astype(np.float32))
    yt = torch.from_numpy(y_test.astype(np.int64))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)  # glorot_uniform
            nn.init.zeros_(m.bias)
    if a.adam == "keras":
        opt = KerasAdam(model.parameters())
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    N, B = len(x), 32
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        perm = torch.randperm(N)
        loss_sum = 0.0
        for s in range(0, N, B):
            idx = perm[s:s + B]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss) * len(idx)
    secs = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return secs, loss_sum / N, acc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", choices=["cudl", "torch"], default="cudl")
    ap.add_argument("--adam", choices=["keras", "torch"], default="keras", help="torch only: the Adam update rule")
    ap.add_argument("--seeds", default="1", help="comma-separated seeds, one run each")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: nproc)")
    a = ap.parse_args()
    data = load(a.framework, a.data)
    for seed in [int(s) for s in a.seeds.split(",")]:
        a.seed = seed
        secs, loss, acc = (run_cudl if a.framework == "cudl" else run_torch)(a, data)
        tag = a.framework + ("" if a.framework == "cudl" else "-adam_" + a.adam)
        print("RESULT framework=%s seed=%d epochs=%d fit_seconds=%.1f train_loss=%.4f test_accuracy=%.4f"
              % (tag, seed, a.epochs, secs, loss, acc), flush=True)


if __name__ == "__main__":
    main()
