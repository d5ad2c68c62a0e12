"""The stock MLflow client's MlflowClient.log_batch, 1,000 metric points a call, from several
processes at once (each into its own run), against one tracking server: Kiln's MLflow API or
MLflow's own. Prints one JSON line: points, seconds, points/s. Run by scripts/bench-mlflow.sh.

    python bench-mlflow.py URL TOKEN PROCESSES CALLS_PER_PROCESS   # TOKEN "-" for none
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
import warnings

POINTS_PER_CALL = 1000
SERIES = 10


def worker(url: str, token: str, calls: int, ready, go, out) -> None:
    warnings.filterwarnings("ignore")
    os.environ["MLFLOW_TRACKING_URI"] = url
    if token != "-":
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    per_series = POINTS_PER_CALL // SERIES
    ready.put(run_id)
    go.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for call in range(calls):
        now = int(time.time() * 1000)
        batch = [
            Metric(f"m{s}", float(call * per_series + j) / 7.0, now, call * per_series + j)
            for s in range(SERIES)
            for j in range(per_series)
        ]
        client.log_batch(run_id, metrics=batch)
    # The client's own CPU time (building, validating and serialising the calls, parsing the
    # answers): what the stock client costs whatever server it talks to.
    out.put((run_id, time.perf_counter() - start, time.process_time() - cpu))


def main() -> None:
    url, token, procs, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=worker, args=(url, token, calls, ready, go, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    run_ids = [ready.get(timeout=300) for _ in workers]
    start = time.perf_counter()
    go.set()
    results = [out.get(timeout=3600) for _ in workers]
    seconds = time.perf_counter() - start
    for w in workers:
        w.join()
    # Read back: every point of every run is there.
    warnings.filterwarnings("ignore")
    os.environ["MLFLOW_TRACKING_URI"] = url
    if token != "-":
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    expected = calls * POINTS_PER_CALL // SERIES
    for run_id in run_ids:
        history = client.get_metric_history(run_id, "m3")
        if len(history) != expected:
            raise SystemExit(f"run {run_id}: {len(history)} points of m3, expected {expected}")
    points = procs * calls * POINTS_PER_CALL
    import mlflow

    print(json.dumps({
        "client": f"mlflow {mlflow.__version__}",
        "processes": procs,
        "points": points,
        "seconds": round(seconds, 3),
        "points_per_s": round(points / seconds),
        "slowest_process_s": round(max(r[1] for r in results), 3),
        # CPU seconds the client processes spent, all together, and the points/s those
        # processes alone could reach on this machine's cores (the client's ceiling).
        "client_cpu_s": round(sum(r[2] for r in results), 3),
        "client_ceiling_points_per_s": round(points / (sum(r[2] for r in results) / (os.cpu_count() or 1))),
    }))


if __name__ == "__main__":
    main()
