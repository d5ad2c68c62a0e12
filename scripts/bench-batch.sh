#!/usr/bin/env bash
# Batch predictions vs the predict endpoint, as shipped: the release kiln-api and
# kiln-worker started as the quickstart starts them (their own processes, default settings,
# a private PostgreSQL, the file artifact store), the wine MLP (13→32→3) trained by the
# worker and registered; then, in the same run, on the same version's bundle:
#   - a batch prediction of a BENCH_ROWS-row (default 1,000,000) wine-shaped CSV
#     (`kiln batch-predictions create --wait`, the API's defaults: 100,000 rows a part),
#     timed from the job's start to its end (the worker's own figure beside it);
#   - the same rows through POST /v1/deployments/wine/predict (a deployment with the API's
#     defaults), BENCH_BATCH (1,000) rows a request from one client, as a scoring script
#     would do it (scripts/bench/batch_vs_predict.py).
# Both must give the same label counts. Prints a Markdown table (docs/benchmarks.md).
# BENCH_NO_BUILD=1 uses the release binaries already built.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_libtorch
command -v curl >/dev/null 2>&1 || kiln_apt_install curl >&2
command -v psql >/dev/null 2>&1 || kiln_apt_install postgresql-client >&2
rows="${BENCH_ROWS:-1000000}" batch="${BENCH_BATCH:-1000}"
. scripts/bench/stack.sh
kiln_bench_stack batch
KILN_BENCH_CLEAN+=("$state/score.csv")
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
api() { local method="$1" path="$2"; shift 2; curl -fsS -X "$method" -H "Authorization: Bearer $KILN_TOKEN" "$@" "$KILN_API_URL$path"; }

dataset=$(api POST "/v1/datasets?name=wine" -H 'content-type: text/csv' --data-binary @data/wine.csv | json_field '["id"]')
cat >"$state/job.json" <<JSON
{"dataset_id": "$dataset", "task": "classification", "target": "cultivar",
 "model": {"type": "mlp", "hidden": [32]},
 "hyperparameters": {"epochs": 40, "batch_size": 32, "learning_rate": 0.01, "seed": 42}}
JSON
job=$(kiln --output json jobs submit "$state/job.json" --wait | json_field '["id"]')
api POST /v1/models/wine/versions -H 'content-type: application/json' -d "{\"job_id\": \"$job\"}" >/dev/null
kiln deployments create wine --model wine --version 1 >/dev/null

kiln_log "making a $rows-row wine-shaped CSV"
python3 scripts/bench/batch_vs_predict.py make "$rows" "$state/score.csv"
size=$(stat -c %s "$state/score.csv")
score=$(api POST "/v1/datasets?name=score" -H 'content-type: text/csv' --data-binary "@$state/score.csv" | json_field '["id"]')

kiln_log "batch prediction of $rows rows"
kiln --output json batch-predictions create --model wine --version 1 --dataset "$score" --wait >"$state/batch.json"
batch_id=$(json_field '["id"]' <"$state/batch.json")
batch_secs=$(python3 - "$state/batch.json" <<'PY'
import json, sys
from datetime import datetime
b = json.load(open(sys.argv[1]))
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
print((t(b["finished_at"]) - t(b["started_at"])).total_seconds())
PY
)
worker_line=$(api GET "/v1/jobs/$batch_id/logs?limit=500" | python3 -c 'import json,sys; print([l["message"] for l in json.load(sys.stdin)["items"] if l["message"].startswith("completed")][-1])')
kiln batch-predictions download "$batch_id" --to "$state/out.csv" >/dev/null
batch_labels=$(python3 -c "
import csv, collections, json, sys
c = collections.Counter(r['label'] for r in csv.DictReader(open('$state/out.csv')))
print(json.dumps(dict(sorted(c.items()))))")

kiln_log "the same rows through the predict endpoint, $batch a request"
python3 scripts/bench/batch_vs_predict.py predict "$KILN_API_URL" "$KILN_TOKEN" "$state/score.csv" wine "$batch" >"$state/predict.json"
predict_secs=$(json_field '["seconds"]' <"$state/predict.json")
predict_labels=$(python3 -c "import json; print(json.dumps(dict(sorted(json.load(open('$state/predict.json'))['labels'].items()))))")
[ "$batch_labels" = "$predict_labels" ] || { echo "labels differ: batch $batch_labels, predict $predict_labels" >&2; exit 1; }

echo
echo "Batch prediction vs predict endpoint: release binaries (defaults), wine MLP 13→32→3,"
echo "$rows rows ($((size / 1000000)) MB CSV), $(nproc) cores, same run; labels agree: $batch_labels"
echo
echo "| path | seconds | rows/s | vs predict |"
echo "|---|---:|---:|---:|"
python3 -c "
rows, b, p = $rows, $batch_secs, $predict_secs
print(f'| batch prediction (job start to end) | {b:.2f} | {rows / b:,.0f} | {p / b:.1f}× |')
print(f'| predict endpoint, {$batch} rows a request, one client | {p:.2f} | {rows / p:,.0f} | 1.0× |')"
echo
echo "worker: $worker_line"
