#!/usr/bin/env python3
"""PyTorch eager baseline for kiln-ml's training benchmark (crates/kiln-ml/benches).

Trains the same model as kiln-ml on the same data with the same batch size, optimiser and
thread count, and prints one JSON line: {"model", "samples_per_s", "samples", "seconds"}.
The first epoch is a warm-up and is not timed. Run by `cargo bench -p kiln-ml`, which uses
the libtorch virtualenv's Python (same torch 2.13 as tch links).

    train_pytorch.py --model mlp|cnn --data data/digits.npz --threads 2 --epochs 30 --batch 32
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F


def build(model: str) -> torch.nn.Module:
    if model == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 2 * 2, 10),
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "cnn"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rows", type=int, default=0, help="use the first N rows (0: all)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = np.load(args.data)
    x = torch.from_numpy(data["x"].astype(np.float32))
    y = torch.from_numpy(data["y"].astype(np.int64))
    if args.rows:
        x, y = x[: args.rows], y[: args.rows]
    x = (x - x.mean()) / x.std()
    if args.model == "mlp":
        x = x.reshape(len(x), 64)
    model = build(args.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(x)

    def epoch() -> float:
        perm = torch.randperm(n)
        xs, ys = x[perm], y[perm]
        total = 0.0
        for i in range(0, n, args.batch):
            xb, yb = xs[i : i + args.batch], ys[i : i + args.batch]
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item()
        return total

    epoch()  # warm-up
    start = time.perf_counter()
    for _ in range(args.epochs - 1):
        epoch()
    seconds = time.perf_counter() - start
    samples = n * (args.epochs - 1)
    print(json.dumps({"model": args.model, "samples_per_s": samples / seconds, "samples": samples,
                      "seconds": seconds, "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
