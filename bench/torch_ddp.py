#!/usr/bin/env python3
# bench/torch_ddp.py — the PyTorch side of bench/scaling_gpu.sh: cudl-mnist's mlp/cnn and
# cudl-charlm's Transformer trained with DistributedDataParallel, one process per GPU.
"""Data-parallel training with torch.nn.parallel.DistributedDataParallel (NCCL on GPUs, gloo with
--device cpu for a dry run), the same models, data and per-rank batch as the cudl runs of
bench/scaling_gpu.sh. Launch with scripts/cudlrun or torchrun (both set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT):

  scripts/cudlrun -n N python3 bench/torch_ddp.py --task mnist --model cnn --epochs 5
  torchrun --standalone --nproc_per_node N bench/torch_ddp.py --task charlm --steps 500

--batch-size is the per-rank batch (weak scaling, as DDP is usually measured): the global batch
is N times it. The sharding is cudl's (distributed::shard): every rank draws the same permutation
per epoch and rank r trains on rows [r*B, (r+1)*B) of each global batch of N*B rows (mnist; the
incomplete last global batch is dropped), or on its B windows of the N*B that every rank draws from
the same seeded generator (charlm). Data resident on the GPU; eager PyTorch (DDP's default
bucketing, 25 MiB, overlapped with the backward pass).

Rank 0 prints one parseable line:
  RESULT framework=torch-ddp task=mnist model=cnn world=4 epoch_seconds=0.81 ...   (median of epochs 2..E)
  RESULT framework=torch-ddp task=charlm world=4 ms_per_step=3.1 ...               (mean over the steps)
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_charlm  # noqa: E402  (cudl-charlm's model, data and schedule)
from torch_mnist import MEAN, STD, build, load  # noqa: E402  (cudl-mnist's models and loader)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dist.barrier()


def train_mnist(a, dev, rank, world):
    torch.manual_seed(a.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    x_all, y_all = load(a.data, True, a.limit)
    n = len(x_all)
    nv = int(n * (5000.0 / n if n >= 12000 else 0.1))
    x_train, y_train = x_all[: n - nv].to(dev), y_all[: n - nv].to(dev)
    model = DDP(build(a.model).to(dev), device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    B, G = a.batch_size, a.batch_size * world
    steps = len(x_train) // G
    if steps == 0:
        sys.exit(f"torch_ddp: {len(x_train)} training images are fewer than one global batch of {G}")
    gen = torch.Generator().manual_seed(a.seed)  # the same permutation on every rank
    times = []
    for epoch in range(a.epochs):
        sync(dev)
        t0 = time.perf_counter()
        perm = torch.randperm(len(x_train), generator=gen).to(dev)
        for s in range(steps):
            idx = perm[s * G + rank * B : s * G + (rank + 1) * B]
            xb = (x_train[idx].float() / 255.0 - MEAN) / STD
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(dev)
        times.append(time.perf_counter() - t0)
        if rank == 0:
            print(f"epoch {epoch + 1}/{a.epochs} - {times[-1]:.4f}s - loss {loss.item():.4f} (rank 0's last batch)",
                  flush=True)
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return (f"task=mnist model={a.model} world={world} batch_per_rank={B} steps_per_epoch={steps} "
            f"epoch_seconds={steady:.5f} first_epoch_seconds={times[0]:.4f}")


def train_charlm(a, dev, rank, world):
    torch.manual_seed(a.seed)
    train_words, _ = torch_charlm.split(torch_charlm.load_words(a.data))
    train = torch.tensor(torch_charlm.stream(train_words), dtype=torch.long, device=dev)
    T, B, G = a.context, a.batch_size, a.batch_size * world
    model = torch_charlm.CharLM(T, a.dim, a.heads, a.blocks).to(dev)
    # Its one buffer is the constant causal mask (bool, which gloo cannot broadcast): nothing to sync.
    DDP._set_params_and_buffers_to_ignore_for_model(model, ["causal"])
    model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    rng = torch_charlm.SplitMix64(a.seed)  # every rank draws the same global batch
    span = len(train) - T
    offsets = torch.arange(T + 1, device=dev)
    sync(dev)
    t0 = time.perf_counter()
    for step in range(a.steps):
        starts = [rng.next() % span for _ in range(G)][rank * B : (rank + 1) * B]
        rows = train[torch.tensor(starts, device=dev)[:, None] + offsets]
        for g in opt.param_groups:
            g["lr"] = torch_charlm.cosine(a.lr, a.steps, step)
        loss = F.cross_entropy(model(rows[:, :T]).reshape(-1, torch_charlm.VOCAB), rows[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # a host read per step, as cudl-charlm reads each step's loss
    sync(dev)
    secs = time.perf_counter() - t0
    if rank == 0:
        print(f"training: {secs:.1f} s ({1000 * secs / a.steps:.2f} ms/step)", flush=True)
    return f"task=charlm world={world} batch_per_rank={B} steps={a.steps} ms_per_step={1000 * secs / a.steps:.4f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["mnist", "charlm"], default="mnist")
    ap.add_argument("--model", choices=["mlp", "cnn"], default="cnn", help="mnist's model")
    ap.add_argument("--epochs", type=int, default=5, help="mnist: epochs (the first is not in epoch_seconds)")
    ap.add_argument("--steps", type=int, default=500, help="charlm: training steps")
    ap.add_argument("--batch-size", type=int, default=0, help="per-rank batch (default mnist 128, charlm 64)")
    ap.add_argument("--lr", type=float, default=0, help="default mnist 1e-3, charlm 3e-3")
    ap.add_argument("--limit", type=int, default=0, help="mnist: the first N training images only")
    ap.add_argument("--context", type=int, default=16)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--data", default="", help="default data/mnist or /usr/share/dict/american-english")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: gloo, a dry run")
    a = ap.parse_args()
    a.batch_size = a.batch_size or (128 if a.task == "mnist" else 64)
    a.lr = a.lr or (1e-3 if a.task == "mnist" else 3e-3)
    a.data = a.data or ("data/mnist" if a.task == "mnist" else "/usr/share/dict/american-english")
    if "RANK" not in os.environ:
        sys.exit("torch_ddp: RANK is not set: start it with scripts/cudlrun -n N or torchrun (see --help)")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit(f"torch_ddp: no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__})")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl")
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo")
    result = (train_mnist if a.task == "mnist" else train_charlm)(a, dev, rank, world)
    if rank == 0:
        gpu = torch.cuda.get_device_name(dev).replace(" ", "_") if dev.type == "cuda" else "cpu"
        print(f"RESULT framework=torch-ddp {result} torch={torch.__version__} device={gpu}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
