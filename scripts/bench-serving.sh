#!/usr/bin/env bash
# Serving, measured as shipped: the release kiln-api and kiln-worker started as the
# quickstart starts them (their own processes, default settings, logging on, a private
# PostgreSQL, a file artifact store), the wine MLP (13→32→3) trained by the real worker,
# deployed with the API's defaults only (`kiln deployments create wine --model wine
# --version 1`), then one wrk sweep (one instance per request) over concurrency 1, 8, 32,
# 128 against, in the same run and on the same bundle:
#   - Flask + gunicorn (2 sync workers) + PyTorch (scripts/bench/flask_serve.py),
#   - LitServe 0.2.19, its defaults (scripts/bench/litserve_serve.py),
#   - Kiln with batching off (max_batch_size 1) and greedy (max_wait_ms 0), for the policy.
# Then the compute-bound case (digits MLP 64→2048→2048→10): defaults vs batching off.
# Prints Markdown tables (see docs/benchmarks.md).
#
# Settings: BENCH_SECONDS (10), BENCH_CONNECTIONS (1,8,32,128), BENCH_WRK_THREADS (2),
# BENCH_NO_BUILD=1 to use the release binaries already in $CARGO_TARGET_DIR/release,
# BENCH_ROUNDS (1) rounds per concurrency in rotated order (medians), BENCH_POLICY=1 for the
# policy comparison alone (see below),
# BENCH_SKIP_SWEEP=1 to skip the sweeps, and BENCH_AB (a `|`-separated list of environment
# settings, e.g. 'RUST_LOG=warn|OTEL_SDK_DISABLED=true') to restart kiln-api under each and
# measure the default deployment at BENCH_AB_CONNECTIONS (32) after the default process:
# what logging, spans and trace ids cost the shipped binary. BENCH_DEVICE=cuda (on a GPU
# machine; scripts/gpu-check.sh) serves and trains on CUDA (KILN_SERVING_DEVICE,
# KILN_WORKER_DEVICE) and refuses to measure unless the deployments report cuda.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_libtorch
command -v wrk >/dev/null 2>&1 || kiln_apt_install wrk >&2
command -v curl >/dev/null 2>&1 || kiln_apt_install curl >&2
command -v psql >/dev/null 2>&1 || kiln_apt_install postgresql-client >&2
venv="$KILN_CACHE/venv"
# The baselines run in the libtorch virtualenv itself: the same PyTorch the bundle came from.
if [ ! -x "$venv/bin/gunicorn" ]; then
  kiln_log "installing flask and gunicorn into $venv (once)"
  "$venv/bin/pip" install -q flask==3.1.2 gunicorn==23.0.0
fi
# LitServe beside it (its FastAPI/uvicorn stack kept out of the shared virtualenv).
litserve="$KILN_CACHE/litserve-0.2.19"
if [ ! -d "$litserve/litserve" ]; then
  kiln_log "installing litserve 0.2.19 into $litserve (once)"
  "$venv/bin/pip" install -q --target "$litserve" litserve==0.2.19
fi
export KILN_WRK="$(command -v wrk)"
seconds="${BENCH_SECONDS:-10}"
connections="${BENCH_CONNECTIONS:-1,8,32,128}"
threads="${BENCH_WRK_THREADS:-2}"

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  kiln_log "building the release binaries"
  cargo build --release --locked -p kiln-api -p kiln-worker -p kiln-cli
fi
bin="$CARGO_TARGET_DIR/release"
kiln() { "$bin/kiln" "$@"; }

state=$(mktemp -d /tmp/kiln-bench-serving.XXXXXX)
mkdir -p "$state/logs"
pids=()
cleanup() {
  # Each server is its own process group (setsid): its workers go with it.
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  kiln_stop_private_postgres "$state/postgres" 2>/dev/null || true
  kiln_log "logs kept in $state/logs"
}
trap cleanup EXIT
start() { # name, then the command; logs to $state/logs/name.log
  local name="$1"; shift
  setsid nohup "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
  pids+=("$!")
}

# As the quickstart: a private PostgreSQL, the file store, default settings otherwise.
pg_port=$(kiln_free_port)
kiln_start_private_postgres "$state/postgres" "$pg_port"
psql "postgres://postgres@127.0.0.1:$pg_port/postgres" -Xqc "create database kiln" >/dev/null
export KILN_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/kiln"
export KILN_ARTIFACT_STORE="file://$state/artifacts"
export KILN_API_BIND="127.0.0.1:$(kiln_free_port)" KILN_API_URL
KILN_API_URL="http://$KILN_API_BIND"
export KILN_WORKER_METRICS_BIND="127.0.0.1:$(kiln_free_port)"
kiln admin migrate
export KILN_TOKEN
KILN_TOKEN=$(kiln admin bootstrap --name bench)
admin="$KILN_TOKEN"
device="${BENCH_DEVICE:-cpu}"
export KILN_SERVING_DEVICE="$device" KILN_WORKER_DEVICE="$device"
start_api() { # [VAR=value ...]: kiln-api with these settings on top of the defaults
  env KILN_SERVING_CACHE_DIR="$state/serving-cache" "$@" setsid nohup "$bin/kiln-api" \
    >>"$state/logs/kiln-api.log" 2>&1 </dev/null &
  api_pid=$!
  pids+=("$api_pid")
}
start_api
kiln_wait_http "$KILN_API_URL/readyz" 120 || { tail -n 30 "$state/logs/kiln-api.log" >&2; exit 1; }
KILN_WORKER_CACHE_DIR="$state/worker-cache" start kiln-worker "$bin/kiln-worker"
kiln admin teams create bench >/dev/null
KILN_TOKEN=$(kiln admin tokens create --team bench --role maintainer --name bench)

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
api() { # method path [curl args...]
  local method="$1" path="$2"; shift 2
  curl -fsS -X "$method" -H "Authorization: Bearer $KILN_TOKEN" "$@" "$KILN_API_URL$path"
}
# train NAME CSV TARGET HIDDEN EPOCHS: upload, train with the worker, register version 1.
train() {
  local name="$1" csv="$2" target="$3" hidden="$4" epochs="$5"
  local dataset job
  dataset=$(api POST "/v1/datasets?name=$name" -H 'content-type: text/csv' --data-binary "@$csv" |
    json_field '["id"]')
  cat >"$state/$name-job.json" <<EOF
{"dataset_id": "$dataset", "task": "classification", "target": "$target",
 "model": {"type": "mlp", "hidden": $hidden},
 "hyperparameters": {"epochs": $epochs, "batch_size": 32, "learning_rate": 0.01,
                     "optimizer": "adam", "seed": 42}}
EOF
  kiln_log "training $name (MLP $hidden) with kiln-worker"
  job=$(kiln --output json jobs submit "$state/$name-job.json" --wait | json_field '["id"]')
  api POST "/v1/models/$name/versions" -H 'content-type: application/json' \
    -d "{\"job_id\": \"$job\"}" >/dev/null
}
train wine data/wine.csv cultivar '[32]' 40
train digits data/digits.csv digit '[2048, 2048]' 2

# The deployment as a user makes it: API defaults only.
kiln deployments create wine --model wine --version 1 >/dev/null
# For the policy comparison: batching off, and greedy batching.
kiln deployments create wine-off --model wine --version 1 --max-batch-size 1 >/dev/null
kiln deployments create wine-greedy --model wine --version 1 --max-wait-ms 0 >/dev/null
kiln deployments create digits --model digits --version 1 >/dev/null
kiln deployments create digits-off --model digits --version 1 --max-batch-size 1 >/dev/null
kiln --output json deployments show wine | json_field '["batching"]' >&2

# The baselines serve the bundle Kiln serves.
api GET /v1/models/wine/versions/1/bundle -o "$state/wine.zip"
flask_port=$(kiln_free_port)
KILN_BUNDLE="$state/wine.zip" start gunicorn "$venv/bin/gunicorn" -w 2 \
  -b "127.0.0.1:$flask_port" --chdir scripts/bench --log-level warning flask_serve:app
lit_port=$(kiln_free_port)
KILN_BUNDLE="$state/wine.zip" PYTHONPATH="$litserve:$KILN_ROOT/scripts/bench" \
  start litserve "$venv/bin/python" scripts/bench/litserve_serve.py "$lit_port"

# One wine row, the same bytes to every server; the answers must agree.
python3 - "$state/wine-body.json" "$state/digits-body.json" <<'EOF'
import csv, json, sys
for path, data, target in [(sys.argv[1], "data/wine.csv", "cultivar"),
                           (sys.argv[2], "data/digits.csv", "digit")]:
    row = next(csv.DictReader(open(data)))
    row.pop(target)
    json.dump({"instances": [{k: float(v) for k, v in row.items()}]}, open(path, "w"))
EOF
predict_path=/v1/deployments/wine/predict
for url in "$KILN_API_URL" "http://127.0.0.1:$flask_port" "http://127.0.0.1:$lit_port"; do
  for _ in $(seq 1 300); do
    curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: application/json' \
      -d "@$state/wine-body.json" "$url$predict_path" >"$state/answer" 2>/dev/null && break
    sleep 0.2
  done
  json_field '["predictions"][0]["label"]' <"$state/answer" >>"$state/labels"
done
[ "$(sort -u "$state/labels" | wc -l)" = 1 ] || { kiln_log "the servers disagree"; cat "$state/labels"; exit 1; }
# Where the deployments serve (and where the worker trained): the device asked for, or stop.
for d in wine digits; do
  curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: application/json' \
    -d "@$state/$d-body.json" "$KILN_API_URL/v1/deployments/$d/predict" >/dev/null
  for _ in $(seq 1 300); do
    served=$(kiln --output json deployments show "$d" | json_field '.get("versions_loaded") or [{}]' 2>/dev/null || true)
    case "$served" in *"'device': '"*) break ;; esac
    sleep 0.2
  done
  kiln_log "deployment $d serves on: $served"
  case "$served" in *"'device': '$device"*) ;; *) kiln_log "deployment $d is not on $device"; exit 1 ;; esac
done

cores=$(nproc)
sweep() { "$venv/bin/python" scripts/bench/serving_sweep.py --token "$KILN_TOKEN" \
  --seconds "$seconds" --threads "$threads" --rounds "${BENCH_ROUNDS:-1}" "$@"; }
# BENCH_POLICY=1: only the batching policy (defaults vs batching off vs greedy), no baselines,
# at BENCH_CONNECTIONS (use 1,8,32,128,256) with BENCH_ROUNDS rounds in rotated order.
if [ -n "${BENCH_POLICY:-}" ]; then
sweep --body "$state/wine-body.json" --connections "$connections" \
  --title "Batching policy: wine MLP, one instance per request, wrk -t$threads -d${seconds}s, $cores cores, ${BENCH_ROUNDS:-1} rounds (median)" \
  --target "Kiln (defaults)=$KILN_API_URL/v1/deployments/wine/predict" \
  --target "Kiln, batching off=$KILN_API_URL/v1/deployments/wine-off/predict" \
  --target "Kiln, greedy (max_wait_ms 0)=$KILN_API_URL/v1/deployments/wine-greedy/predict" \
  --baseline "Kiln, batching off" --baseline "Kiln, greedy (max_wait_ms 0)"
elif [ -z "${BENCH_SKIP_SWEEP:-}" ]; then
sweep --body "$state/wine-body.json" --connections "$connections" \
  --title "Wine MLP 13→32→3, one instance per request, wrk -t$threads -d${seconds}s, $cores cores, release binaries with default settings" \
  --target "Kiln (defaults)=$KILN_API_URL/v1/deployments/wine/predict" \
  --target "Flask + gunicorn (2 workers)=http://127.0.0.1:$flask_port$predict_path" \
  --target "LitServe 0.2.19=http://127.0.0.1:$lit_port$predict_path" \
  --target "Kiln, batching off=$KILN_API_URL/v1/deployments/wine-off/predict" \
  --target "Kiln, greedy (max_wait_ms 0)=$KILN_API_URL/v1/deployments/wine-greedy/predict" \
  --baseline "Flask + gunicorn (2 workers)" --baseline "LitServe 0.2.19" \
  --baseline "Kiln, batching off" --baseline "Kiln, greedy (max_wait_ms 0)" \
  --json "$state/wine-sweep.json"
sweep --body "$state/digits-body.json" --connections "${BENCH_COMPUTE_CONNECTIONS:-32}" \
  --title "Compute-bound: digits MLP 64→2048→2048→10, one instance per request, wrk -t$threads -d${seconds}s" \
  --target "Kiln (defaults)=$KILN_API_URL/v1/deployments/digits/predict" \
  --target "Kiln, batching off=$KILN_API_URL/v1/deployments/digits-off/predict" \
  --baseline "Kiln, batching off"
curl -fsS "$KILN_API_URL/metrics" -H "Authorization: Bearer $admin" \
  | grep -E '^kiln_prediction_batch_rows_(sum|count)\{deployment="(wine|digits)"' >&2 || true
fi

if [ -n "${BENCH_AB:-}" ]; then
  ab_connections="${BENCH_AB_CONNECTIONS:-32}"
  IFS='|' read -r -a variants <<<"default|$BENCH_AB"
  for variant in "${variants[@]}"; do
    kill -TERM -- "-$api_pid" 2>/dev/null || true
    while kill -0 "$api_pid" 2>/dev/null; do sleep 0.2; done
    if [ "$variant" = default ]; then start_api; else read -r -a settings <<<"$variant"; start_api "${settings[@]}"; fi
    kiln_wait_http "$KILN_API_URL/readyz" 120
    for _ in $(seq 1 100); do
      curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: application/json' \
        -d "@$state/wine-body.json" "$KILN_API_URL$predict_path" >/dev/null 2>&1 && break
      sleep 0.2
    done
    # BENCH_PERF=1: where kiln-api's CPU goes under that load (perf, call graphs).
    if [ -n "${BENCH_PERF:-}" ]; then
      perf record -q -F 499 -g -p "$api_pid" -o "$state/perf.data" -- sleep "$seconds" \
        2>/dev/null &
      perf_pid=$!
    fi
    sweep --body "$state/wine-body.json" --connections "$ab_connections" --warmup 0 \
      --title "kiln-api with: $variant" \
      --target "Kiln (defaults)=$KILN_API_URL/v1/deployments/wine/predict"
    if [ -n "${BENCH_PERF:-}" ]; then
      wait "$perf_pid" || true
      report="$state/logs/perf-$(tr -c 'A-Za-z0-9=_' _ <<<"$variant").txt"
      perf report -i "$state/perf.data" --no-children --sort sym --stdio 2>/dev/null \
        | grep -v "^$" | head -400 >"$report" || true
      kiln_log "perf profile of kiln-api ($variant): $report"
    fi
  done
fi
