#!/usr/bin/env python3
"""The Python SDK's metric logging against the stock MLflow client, same points.

    bench-sdk.py kiln URL TOKEN STEPS      # kiln.Client().start_run(...).log_metrics per step
    bench-sdk.py mlflow URL STEPS          # mlflow.MlflowClient().log_batch of the same points

Each prints one JSON line: points, seconds, points_per_s (and what was read back). The
points: SERIES series (10) logged at every step 0..STEPS-1, values from one formula, so
both sides send exactly the same (name, step, value) triples. scripts/bench-sdk.sh runs
both against fresh servers and writes the table of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import sys
import time

SERIES = [f"metric_{i}" for i in range(10)]


def value(i: int, step: int) -> float:
    return math.sin(step * 0.001 + i) + i


def bench_kiln(url: str, token: str, steps: int) -> dict:
    import kiln

    client = kiln.Client(url, token)
    names = SERIES
    with client.start_run("bench-sdk", {"steps": steps, "series": len(names)}) as run:
        start = time.perf_counter()
        for step in range(steps):
            run.log_metrics({name: value(i, step) for i, name in enumerate(names)}, step=step)
        logged = time.perf_counter() - start
        run.flush()
        seconds = time.perf_counter() - start
    points = steps * len(names)
    stored = run.metrics(name=names[0])
    assert len(stored) == steps, f"read back {len(stored)} points of {names[0]}, expected {steps}"
    assert stored["value"].tolist() == [value(0, s) for s in range(steps)]
    return {
        "client": f"kiln-client {kiln.__version__}",
        "points": points,
        "seconds": round(seconds, 3),
        "points_per_s": round(points / seconds),
        "log_calls_seconds": round(logged, 3),
        "verified_series": names[0],
    }


def bench_mlflow(url: str, steps: int) -> dict:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.create_experiment(f"bench-sdk-{time.time_ns()}")
    run = client.create_run(experiment, run_name="bench-sdk")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    start = time.perf_counter()
    metrics = [Metric(name, value(i, step), now, step) for step in range(steps) for i, name in enumerate(SERIES)]
    client.log_batch(run_id, metrics=metrics)  # the client splits into 1,000-metric requests
    seconds = time.perf_counter() - start
    client.set_terminated(run_id)
    history = client.get_metric_history(run_id, SERIES[0])
    assert len(history) == steps, f"read back {len(history)} points, expected {steps}"
    return {
        "client": f"mlflow {mlflow.__version__} MlflowClient.log_batch",
        "points": len(metrics),
        "seconds": round(seconds, 3),
        "points_per_s": round(len(metrics) / seconds),
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "kiln":
        result = bench_kiln(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "mlflow":
        result = bench_mlflow(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
