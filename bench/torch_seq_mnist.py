#!/usr/bin/env python3
# bench/torch_seq_mnist.py — the PyTorch side of bench/seq_mnist_cpu.sh (and, --device cuda, of seq_gpu.sh): cudl-seq-mnist's model,
# data, split, normalisation, batching and optimizer, timed the same way (data helpers: torch_mnist.py).
"""Trains cudl-seq-mnist's model with PyTorch on the CPU and prints one parseable line:

  RESULT framework=torch cell=lstm threads=2 epochs=1 epoch_seconds=12.3 step_ms=28.6 test_accuracy=0.97 ...

Mirrored from samples/seq_mnist (main.cpp, models.hpp): each (1, 28, 28) image is 28 steps of 28
normalised pixels; nn.LSTM / nn.GRU / nn.RNN(tanh) with 128 units (batch_first), the last step's
state into Linear(128, 10); softmax cross-entropy, Adam 1e-3, batch 128, the last 5000 training
images held out. --init keras (default) gives cudl's initialisers: Glorot-uniform input kernel,
orthogonal recurrent kernel, zero biases with the LSTM forget gate's input bias at 1; --init torch
keeps PyTorch's defaults (uniform +-1/sqrt(H)), the setting of the issue's reference accuracies.
Note PyTorch's GRU is not Keras's: its gates are r, z, n and the reset gate multiplies (W_hn h + b_hn)
just as Keras's reset_after does, so the two GRUs compute the same function up to gate order.
step_ms is the median of the full-batch step times (forward, backward and Adam step of one batch).
"""
import argparse
import math
import os
import statistics
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mnist import add_common_args, train  # noqa: E402  (the mnist benchmark's data and loop)


class SeqModel(nn.Module):
    def __init__(self, cell, units, init):
        super().__init__()
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = kind(28, units, batch_first=True)
        self.fc = nn.Linear(units, 10)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        if init == "keras":
            gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
            bound = math.sqrt(6.0 / (28 + gates * units))  # Keras: kernel (28, G*H)
            nn.init.uniform_(self.rnn.weight_ih_l0, -bound, bound)
            nn.init.orthogonal_(self.rnn.weight_hh_l0)
            nn.init.zeros_(self.rnn.bias_ih_l0)
            nn.init.zeros_(self.rnn.bias_hh_l0)
            if cell == "lstm":
                with torch.no_grad():
                    self.rnn.bias_ih_l0[units:2 * units] = 1.0  # unit forget bias

    def forward(self, x):  # x (B, 1, 28, 28)
        out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
        return self.fc(out[:, -1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    ap.add_argument("--units", type=int, default=128)
    ap.add_argument("--init", choices=["keras", "torch"], default="keras")
    add_common_args(ap)
    a = ap.parse_args()
    threads, N, times, step_ms, acc = train(lambda: SeqModel(a.cell, a.units, a.init), a)
    print(f"RESULT framework=torch cell={a.cell} init={a.init} device={a.device} threads={threads} torch={torch.__version__} "
          f"epochs={a.epochs} train_images={N} epoch_seconds={times[-1]:.4f} "
          f"step_ms={statistics.median(step_ms):.3f} test_accuracy={acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
