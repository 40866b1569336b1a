#!/usr/bin/env python3
"""bench/torch_charlm.py — cudl-charlm's model, data, batches and schedule in PyTorch (1.13).

The same word list, cleaning, seeded split and training windows as samples/charlm/charlm.hpp (the
splitmix64 generator and Fisher-Yates shuffle are reimplemented here bit for bit, so both programs
see the same batches in the same order); the same model (token + learned positional embedding,
pre-LayerNorm blocks of causal multi-head attention and a 4x tanh-GELU MLP, final LayerNorm, linear
head), the same initialisation scheme (glorot-uniform kernels, zero biases, uniform(-0.05, 0.05)
embeddings, LayerNorm 1/0), AdamW with weight decay 0.01 on every parameter and the same per-step
cosine schedule. Only the initial values differ (cudl draws them from Philox).

Prints the training time (mean and median per step) and "test loss X.XXXX nats/char".
Usage: bench/torch_charlm.py [--steps 3000] [--seed 1] [--threads N] [--data FILE] [--device cpu|cuda]
"""
import argparse
import math
import re
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK64 = (1 << 64) - 1
BOUNDARY = 0  # token 0 frames every word; 'a'..'z' are 1..26
VOCAB = 27
SPLIT_SEED = 2026


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def load_words(path):
    words = set()
    with open(path, "rb") as f:
        for line in f:
            w = line.rstrip(b"\r\n")
            if w and re.fullmatch(rb"[A-Za-z]+", w):
                words.add(w.lower().decode("ascii"))
    return sorted(words)


def split(words, seed=SPLIT_SEED):
    words = list(words)
    rng = SplitMix64(seed)
    for i in range(len(words) - 1, 0, -1):
        j = rng.next() % (i + 1)
        words[i], words[j] = words[j], words[i]
    n_test = len(words) // 10
    return words[n_test:], words[:n_test]


def stream(words):
    toks = [BOUNDARY]
    for w in words:
        toks.extend(ord(c) - ord("a") + 1 for c in w)
        toks.append(BOUNDARY)
    return toks


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim, eps=1e-5)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln2 = nn.LayerNorm(dim, eps=1e-5)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x, causal):
        b, t, e = x.shape
        h = self.ln1(x)
        d = e // self.heads

        def split_heads(y):
            return y.view(b, t, self.heads, d).transpose(1, 2)

        q, k, v = split_heads(self.q(h)), split_heads(self.k(h)), split_heads(self.v(h))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        s = s.masked_fill(causal[:t, :t], float("-inf"))
        a = torch.softmax(s, dim=-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, t, e))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class CharLM(nn.Module):
    def __init__(self, context, dim, heads, blocks):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.empty(context, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(blocks))
        self.ln = nn.LayerNorm(dim, eps=1e-5)
        self.head = nn.Linear(dim, VOCAB)
        self.register_buffer("causal", torch.triu(torch.ones(context, context, dtype=torch.bool), 1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.uniform_(self.tok.weight, -0.05, 0.05)
        nn.init.uniform_(self.pos, -0.05, 0.05)

    def forward(self, x):
        h = self.tok(x) + self.pos[: x.shape[1]]
        for blk in self.blocks:
            h = blk(h, self.causal)
        return self.head(self.ln(h))


def cosine(lr, steps, step):
    return 0.5 * lr * (1 + math.cos(math.pi * step / steps)) if step < steps else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/usr/share/dict/american-english")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--context", type=int, default=16)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch eager on the GPU)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    train_words, test_words = split(load_words(a.data))
    dev = torch.device(a.device)
    train = torch.tensor(stream(train_words), dtype=torch.long, device=dev)
    test = stream(test_words)
    print(f"words: {len(train_words)} train, {len(test_words)} test; tokens: {len(train)} train, {len(test)} test")
    T = a.context
    model = CharLM(T, a.dim, a.heads, a.blocks).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.weight_decay)
    rng = SplitMix64(a.seed)
    span = len(train) - T
    offsets = torch.arange(T + 1, device=dev)
    step_times = []
    t0 = time.perf_counter()
    running = 0.0
    for step in range(a.steps):
        ts = time.perf_counter()
        starts = torch.tensor([rng.next() % span for _ in range(a.batch_size)], device=dev)
        rows = train[starts[:, None] + offsets]
        x, y = rows[:, :T], rows[:, 1:]
        for g in opt.param_groups:
            g["lr"] = cosine(a.lr, a.steps, step)
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()  # (a device sync per step on CUDA, as cudl-charlm reads each loss)
        step_times.append(time.perf_counter() - ts)
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}: loss {running / 500:.4f}", flush=True)
            running = 0.0
    train_s = time.perf_counter() - t0

    model.eval()
    n_win = (len(test) - 1) // T
    rows = torch.tensor([test[k * T : k * T + T + 1] for k in range(n_win)], dtype=torch.long, device=dev)
    with torch.no_grad():
        total = 0.0
        for i in range(0, n_win, 256):
            r = rows[i : i + 256]
            total += F.cross_entropy(model(r[:, :T]).reshape(-1, VOCAB), r[:, 1:].reshape(-1), reduction="sum").item()
    print(f"training: {train_s:.1f} s ({1000 * train_s / a.steps:.2f} ms/step), median step "
          f"{1000 * statistics.median(step_times):.2f} ms ({torch.get_num_threads()} threads)")
    print(f"test loss {total / (n_win * T):.4f} nats/char")


if __name__ == "__main__":
    main()
