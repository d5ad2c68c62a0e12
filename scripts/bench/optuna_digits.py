#!/usr/bin/env python3
"""Optuna baseline for Kiln's study benchmark (scripts/bench-studies.sh).

The same search Kiln's study runs, in one Python process with PyTorch eager: the digits
MLP (64 -> hidden... -> 10, ReLU, Adam, batch 32), the same 80/20 split idea and per-column
standardisation from the training rows, the same space (learning rate log-uniform,
hidden layers categorical), the same budget of trials and epochs, TPE sampler and
SuccessiveHalving pruner (min_resource 1, reduction factor 3) on the validation loss.
Prints one JSON line: {"seed", "best_val_loss", "seconds", "epochs", "pruned", "trials"}.

    optuna_digits.py --data data/digits.csv --trials 12 --epochs 12 --seed 1 --threads 2
"""

import argparse
import csv
import json
import time

import numpy as np
import optuna
import torch
import torch.nn.functional as F

HIDDEN = [[32], [64], [64, 32]]


def load(path: str):
    with open(path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    target = header.index("digit")
    x = np.array([[float(v) for i, v in enumerate(r) if i != target] for r in body], dtype=np.float32)
    y = np.array([int(r[target]) for r in body], dtype=np.int64)
    return x, y


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    x, y = load(args.data)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(x))
    cut = int(len(x) * 0.8)
    tr, va = order[:cut], order[cut:]
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    std[std == 0] = 1.0
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(y)
    x_train, y_train, x_val, y_val = xt[tr], yt[tr], xt[va], yt[va]
    epochs_spent = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal epochs_spent
        lr = trial.suggest_float("learning_rate", 1e-3, 0.05, log=True)
        hidden = HIDDEN[trial.suggest_categorical("hidden", list(range(len(HIDDEN))))]
        torch.manual_seed(1)
        layers, width = [], 64
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        val = float("inf")
        for epoch in range(1, args.epochs + 1):
            model.train()
            perm = torch.randperm(len(x_train))
            for i in range(0, len(perm), 32):
                idx = perm[i : i + 32]
                opt.zero_grad()
                F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = F.cross_entropy(model(x_val), y_val).item()
            epochs_spent += 1
            trial.report(val, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        # The last epoch's, as Kiln's trial ships its last epoch's weights.
        return val

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    study.optimize(objective, n_trials=args.trials)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    print(json.dumps({
        "seed": args.seed, "best_val_loss": study.best_value,
        "seconds": time.perf_counter() - started, "epochs": epochs_spent,
        "pruned": pruned, "trials": len(study.trials),
    }))


if __name__ == "__main__":
    main()
