#!/usr/bin/env python3
# bench/torch_mnist_gpu.py — the PyTorch (CUDA) side of bench/mnist_gpu.sh: cudl-mnist's models on
# the GPU with the dataset resident on the device, in eager mode, as one captured CUDA graph per
# training step, or through torch.compile(mode="reduce-overhead").
"""Trains cudl-mnist's mlp or cnn on the GPU and prints per-epoch lines and one parseable line:

  RESULT framework=torch mode=eager model=mlp epochs=20 epoch_seconds=0.512 first_epoch_seconds=0.9
         time_to_target=3.1 target=0.98 reached_epoch=6 val_accuracy=0.981 test_accuracy=0.979

Same data, split, normalisation, models, initialisation and optimizer as bench/torch_mnist.py
(which mirrors samples/mnist/main.cpp and models.hpp). The whole dataset (u8 images, labels) lives on the GPU;
batches are gathered there from a per-epoch permutation (also on the GPU).

Modes
  eager    plain PyTorch: idx = perm[s:s+B]; forward, backward, Adam (foreach) step.
  graph    the whole step (gather from a device cursor, forward, loss, backward, Adam with
           capturable=True, cursor += B, loss/accuracy accumulation) captured once with
           torch.cuda.graph and replayed; the last partial batch runs eagerly.
  compile  torch.compile(model, mode="reduce-overhead") (CUDA graphs through Inductor); the
           optimizer step runs eagerly (foreach).

epoch_seconds: the median of epochs 2..N (steady state: capture and compilation happen in epoch 1);
time_to_target: training seconds (every epoch from the first, capture/compile included) until the
validation accuracy (the 5000 held-out images, as cudl-mnist reports val_accuracy) first reaches
--target (default 0.98 for mlp, 0.99 for cnn). Evaluation is not timed.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mnist import MEAN, STD, build, load  # noqa: E402  (same models and loader as the CPU script)


def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out = model((x[s:s + batch].float() / 255.0 - MEAN) / STD)
            correct += (out.argmax(1) == y[s:s + batch]).sum()
    model.train()
    return int(correct) / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--mode", choices=["eager", "graph", "compile"], default="eager")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--target", type=float, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--amp", choices=["none", "bf16", "f16"], default="none",
                    help="torch.autocast around forward and loss (f16 with a GradScaler; not with --mode graph)")
    a = ap.parse_args()
    if a.amp == "f16" and a.mode == "graph":
        sys.exit("torch_mnist_gpu: --amp f16 needs a GradScaler, whose host-side skip logic a captured graph "
                 "cannot replay; use --amp bf16 with --mode graph")
    if not torch.cuda.is_available():
        sys.exit("torch_mnist_gpu: no CUDA device: torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    if a.mode == "compile" and not hasattr(torch, "compile"):
        sys.exit(f"torch_mnist_gpu: --mode compile needs PyTorch >= 2.0 (torch.compile); this is {torch.__version__}")
    target = a.target or (0.98 if a.model == "mlp" else 0.99)
    dev = torch.device("cuda")
    torch.manual_seed(a.seed)
    torch.backends.cudnn.benchmark = True

    x_all, y_all = load(a.data, True)
    x_test, y_test = load(a.data, False)
    n = len(x_all)
    nv = int(n * (5000.0 / n if n >= 12000 else 0.1))
    x_train, y_train = x_all[:n - nv].to(dev), y_all[:n - nv].to(dev)
    x_val, y_val = x_all[n - nv:].to(dev), y_all[n - nv:].to(dev)
    x_test, y_test = x_test.to(dev), y_test.to(dev)
    N, B = len(x_train), min(a.batch_size, len(x_train))
    full, rest = N // B, N % B

    model = build(a.model).to(dev)
    capturable = a.mode == "graph"
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True,
                           capturable=capturable)
    fwd = torch.compile(model, mode="reduce-overhead") if a.mode == "compile" else model

    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    perm = torch.empty(N, dtype=torch.int64, device=dev)
    cursor = torch.zeros((), dtype=torch.int64, device=dev)
    ar = torch.arange(B, device=dev)

    amp_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.amp)
    scaler = torch.cuda.amp.GradScaler() if a.amp == "f16" else None

    def step_from(idx):
        xb = (x_train[idx].float() / 255.0 - MEAN) / STD
        yb = y_train[idx]
        with torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
            out = fwd(xb)
            loss = F.cross_entropy(out, yb)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        with torch.no_grad():
            loss_sum.add_(loss.detach() * idx.numel())
            correct.add_((out.argmax(1) == yb).sum())

    def device_cursor_step():  # the captured step: the batch indices come from the device cursor
        opt.zero_grad(set_to_none=False)
        idx = perm.index_select(0, cursor + ar)
        step_from(idx)
        cursor.add_(B)

    graph = None
    if a.mode == "graph":
        gen = torch.Generator(device=dev).manual_seed(a.seed)
        perm.copy_(torch.randperm(N, device=dev, generator=gen))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as the PyTorch docs require
            for _ in range(3):
                device_cursor_step()
        torch.cuda.current_stream().wait_stream(side)
        # Warm-up changed the parameters: restart from a fresh initialisation for a fair comparison.
        with torch.no_grad():
            fresh = build(a.model).to(dev)
            for p, q in zip(model.parameters(), fresh.parameters()):
                p.copy_(q)
            for b_, c_ in zip(model.buffers(), fresh.buffers()):
                b_.copy_(c_)
        for st in opt.state.values():
            for k, v in st.items():
                if torch.is_tensor(v):
                    v.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            device_cursor_step()
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    times, reached, val = [], None, 0.0
    for epoch in range(a.epochs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm.copy_(torch.randperm(N, device=dev, generator=gen))
        loss_sum.zero_()
        correct.zero_()
        if graph is not None:
            cursor.zero_()
            for _ in range(full):
                graph.replay()
            if rest:
                opt.zero_grad(set_to_none=False)
                step_from(perm[full * B:])
        else:
            for s in range(0, N, B):
                opt.zero_grad(set_to_none=True)
                step_from(perm[s:s + B])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        val = accuracy(model, x_val, y_val)
        if reached is None and val >= target:
            reached = epoch + 1
        print(f"epoch {epoch + 1}/{a.epochs} - {times[-1]:.4f}s - loss {float(loss_sum) / N:.4f} - "
              f"accuracy {int(correct) / N:.4f} - val_accuracy {val:.4f}", flush=True)
    test = accuracy(model, x_test, y_test)
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    ttt = f"{sum(times[:reached]):.4f}" if reached else "not_reached"
    print(f"RESULT framework=torch mode={a.mode} amp={a.amp} model={a.model} torch={torch.__version__} "
          f"gpu={torch.cuda.get_device_name().replace(' ', '_')} epochs={a.epochs} epoch_seconds={steady:.5f} "
          f"first_epoch_seconds={times[0]:.4f} time_to_target={ttt} target={target} "
          f"reached_epoch={reached or 'none'} val_accuracy={val:.4f} test_accuracy={test:.4f}", flush=True)


if __name__ == "__main__":
    main()
