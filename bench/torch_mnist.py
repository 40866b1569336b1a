#!/usr/bin/env python3
# bench/torch_mnist.py — the PyTorch (CPU) side of bench/mnist_cpu.sh: the same models, data, split,
# normalisation, batching and optimizer as `cudl-mnist --device cpu`, timed the same way.
"""Trains cudl-mnist's mlp or cnn with PyTorch on the CPU and prints one parseable line:

  RESULT framework=torch model=mlp threads=2 epochs=1 epoch_seconds=1.234 test_accuracy=0.9612 ...

What is mirrored from samples/mnist (main.cpp, models.hpp) and src/train/model.cpp (Model::fit):
  * data: the raw IDX files (or .gz), first --limit training images; the last 5000 rows (or 10%
    when fewer than 12000) are held out exactly as fit's validation_split does, so both train on
    the same 55000 images; batches are gathered from the u8 images and normalised per batch as
    (x/255 - 0.1307) / 0.3081 (cudl's GatherImages op); the last partial batch is trained too.
  * models: mlp = Flatten, Linear(784,128)+ReLU, Linear(128,10); cnn = samples/mnist/models.hpp
    build("cnn"): conv3x3 16 no bias, BN, ReLU, maxpool 2, conv3x3 32 no bias, BN, ReLU,
    maxpool 2, dropout 0.25, flatten, Linear(1568,128)+ReLU, Linear(128,10). Dense weights Glorot-uniform, conv
    weights He-uniform, biases zero (cudl's defaults). Keep in step with models.hpp.
  * softmax cross-entropy (mean), Adam(lr 1e-3, betas 0.9/0.999, eps 1e-8), batch 128.
  * epoch time: from the epoch's shuffle to the end of its last step (fit measures the same span:
    validation is not in it); loss and correct count are accumulated as tensors, read once.
"""
import argparse
import gzip
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with (gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")) as f:
                data = f.read()
            break
    else:
        sys.exit(f"torch_mnist: {path} (or .gz) not found; run scripts/fetch-mnist.sh")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        sys.exit(f"torch_mnist: {path}: not an unsigned-byte IDX file")
    ndims = data[3]
    dims = struct.unpack(">" + "I" * ndims, data[4:4 + 4 * ndims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def load(dirname, train, limit=0):
    prefix = "train" if train else "t10k"
    x = read_idx(os.path.join(dirname, prefix + "-images-idx3-ubyte"))
    y = read_idx(os.path.join(dirname, prefix + "-labels-idx1-ubyte"))
    if limit and limit < len(x):
        x, y = x[:limit], y[:limit]
    x = torch.from_numpy(x.copy()).reshape(-1, 1, 28, 28)  # u8 (N, 1, 28, 28)
    y = torch.from_numpy(y.astype(np.int64))
    return x, y


def build(kind):
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16, eps=1e-5, momentum=0.1), nn.ReLU(),
            nn.MaxPool2d(2, 2, 0),
            nn.Conv2d(16, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32, eps=1e-5, momentum=0.1), nn.ReLU(),
            nn.MaxPool2d(2, 2, 0),
            nn.Dropout(0.25), nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    for m in model.modules():  # cudl's initialisers
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            bound = math.sqrt(6.0 / (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]))
            nn.init.uniform_(m.weight, -bound, bound)
    return model


MEAN, STD = 0.1307, 0.3081


def batch_of(xu8, idx):
    return (xu8[idx].float() / 255.0 - MEAN) / STD


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out = model((x[s:s + batch].float() / 255.0 - MEAN) / STD)
            correct += int((out.argmax(1) == y[s:s + batch]).sum())
    model.train()
    return correct / len(x)


def add_common_args(ap):
    """The options every MNIST benchmark shares (torch_seq_mnist.py uses them too)."""
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads (default: $OPENBLAS_NUM_THREADS, else nproc — what cudl's OpenBLAS uses)")
    ap.add_argument("--device", default="cpu",
                    help="cpu, or cuda: PyTorch eager on the GPU (the images go to the device once; each timed step "
                         "ends with torch.cuda.synchronize)")


def train(make_model, a):
    """Seeds, loads and splits the data as cudl's fit does, trains make_model() with Adam for
    a.epochs, printing a line per epoch. Returns (threads, train images, epoch seconds, full-batch
    step milliseconds, test accuracy)."""
    threads = a.threads or int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0) or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    x_all, y_all = load(a.data, True, a.limit)
    x_test, y_test = load(a.data, False)
    n = len(x_all)
    split = 5000.0 / n if n >= 12000 else 0.1  # the samples' validation_split
    nv = int(n * split)
    x_train, y_train = x_all[:n - nv], y_all[:n - nv]
    N = len(x_train)

    dev = torch.device(getattr(a, "device", "cpu"))
    cuda = dev.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            sys.exit("--device cuda: this PyTorch sees no CUDA device")
        x_train, y_train, x_test, y_test = (t.to(dev) for t in (x_train, y_train, x_test, y_test))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = make_model().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    B = min(a.batch_size, N)
    times, step_ms = [], []
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(N, generator=gen).to(dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for s in range(0, N, B):
            ts = time.perf_counter()
            idx = perm[s:s + B]
            xb, yb = batch_of(x_train, idx), y_train[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(idx)
                correct += (out.argmax(1) == yb).sum()
            if len(idx) == B:
                sync()
                step_ms.append(1000 * (time.perf_counter() - ts))
        sync()
        secs = time.perf_counter() - t0
        times.append(secs)
        print(f"epoch {epoch + 1}/{a.epochs} - {secs:.2f}s - loss {float(loss_sum) / N:.4f} - "
              f"accuracy {int(correct) / N:.4f}", flush=True)
    return threads, N, times, step_ms, evaluate(model, x_test, y_test)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    add_common_args(ap)
    a = ap.parse_args()
    threads, N, times, _, acc = train(lambda: build(a.model), a)
    print(f"RESULT framework=torch model={a.model} threads={threads} torch={torch.__version__} epochs={a.epochs} "
          f"train_images={N} epoch_seconds={times[-1]:.4f} test_accuracy={acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
