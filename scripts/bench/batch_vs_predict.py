#!/usr/bin/env python3
"""Batch prediction vs the predict endpoint on the same bundle, in one run.

    batch_vs_predict.py make ROWS OUT.csv        # a wine-shaped CSV (13 features + id)
    batch_vs_predict.py predict URL TOKEN CSV DEPLOYMENT BATCH
        # every row through POST /v1/deployments/DEPLOYMENT/predict, BATCH rows a request,
        # one keep-alive connection, as a user's scoring script would: prints rows/s

The CSV is made from data/wine.csv's rows with a little seeded noise, so every row is
valid and the distribution is wine's.
"""
import csv
import json
import random
import sys
import time
import urllib.request
from http.client import HTTPConnection
from urllib.parse import urlparse


def make(rows: int, out: str) -> None:
    with open("data/wine.csv") as f:
        reader = csv.reader(f)
        header = next(reader)
        data = [[float(x) for x in r[:-1]] for r in reader]
    rng = random.Random(7)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id"] + header[:-1])
        for i in range(rows):
            base = data[i % len(data)]
            w.writerow([i] + [f"{v * (1 + rng.uniform(-0.02, 0.02)):.4g}" for v in base])


def predict(url: str, token: str, path: str, deployment: str, batch: int) -> None:
    with open(path) as f:
        reader = csv.reader(f)
        header = next(reader)[1:]
        rows = [[float(x) for x in r[1:]] for r in reader]
    target = urlparse(url)
    conn = HTTPConnection(target.hostname, target.port)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    done = 0
    labels = {}
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        body = json.dumps({"instances": [dict(zip(header, r)) for r in chunk]})
        conn.request("POST", f"/v1/deployments/{deployment}/predict", body, headers)
        res = conn.getresponse()
        answer = json.loads(res.read())
        if res.status != 200:
            sys.exit(f"predict answered {res.status}: {answer}")
        for p in answer["predictions"]:
            labels[p["label"]] = labels.get(p["label"], 0) + 1
        done += len(chunk)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": done, "seconds": seconds, "rows_per_s": done / seconds, "labels": labels}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "predict":
        predict(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        sys.exit(__doc__)
