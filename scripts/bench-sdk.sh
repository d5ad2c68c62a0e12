#!/usr/bin/env bash
# The Python SDK's run.log_metrics against the stock MLflow client (MlflowClient.log_batch),
# the same points into one run each, in one go: a fresh kiln-api (release build when one is
# built, else debug) and a fresh MLflow tracking server (3.17.2, --workers 2), each on its
# own new database of the same local PostgreSQL. See docs/benchmarks.md ("Python SDK").
#
#   scripts/bench-sdk.sh [KILN_STEPS [MLFLOW_STEPS]]   # default 100000 and 5000 steps of 10 series
#
# KILN_BENCH_PROFILE=debug|release picks the kiln-api build (default: release if built).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_steps="${1:-100000}"
mlflow_steps="${2:-5000}"

kiln_ensure_postgres
if [ ! -x "$KILN_CACHE/mlflow/bin/mlflow" ]; then
  kiln_log "installing mlflow 3.17.2 into $KILN_CACHE/mlflow (once)"
  python3 -m venv "$KILN_CACHE/mlflow"
  "$KILN_CACHE/mlflow/bin/pip" install -q mlflow==3.17.2 psycopg2-binary
fi
kiln_ensure_sdk_venv "$KILN_ROOT/clients/python"

profile="${KILN_BENCH_PROFILE:-}"
if [ -z "$profile" ]; then
  if [ -x "$CARGO_TARGET_DIR/release/kiln-api" ]; then profile=release; else profile=debug; fi
fi
bin="$CARGO_TARGET_DIR/$profile"
[ -x "$bin/kiln-api" ] || { kiln_log "no $bin/kiln-api: cargo build --locked $([ "$profile" = release ] && echo --release) -p kiln-api -p kiln-cli"; exit 1; }
cli="$bin/kiln"; [ -x "$cli" ] || cli="$CARGO_TARGET_DIR/debug/kiln"

tmp=$(mktemp -d)
suffix=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:12])')
server="${KILN_TEST_DATABASE_URL%/*}"
kiln_db="kiln_bench_sdk_$suffix" mlflow_db="kiln_bench_mlflow_$suffix"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for db in "$kiln_db" "$mlflow_db"; do
    psql "$KILN_TEST_DATABASE_URL" -Xqc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
psql "$KILN_TEST_DATABASE_URL" -Xqc "create database \"$kiln_db\"" >/dev/null
psql "$KILN_TEST_DATABASE_URL" -Xqc "create database \"$mlflow_db\"" >/dev/null

# Kiln: migrate, an admin token, a team with a member token, then kiln-api.
export KILN_DATABASE_URL="$server/$kiln_db"
"$cli" admin migrate >/dev/null
admin=$("$cli" admin bootstrap --name bench 2>/dev/null)
kiln_port=$(kiln_free_port)
KILN_API_BIND="127.0.0.1:$kiln_port" KILN_ARTIFACT_STORE="file://$tmp/artifacts" \
  KILN_SERVING_CACHE_DIR="$tmp/serving" setsid "$bin/kiln-api" >"$tmp/kiln-api.log" 2>&1 &
pids+=($!)
kiln_url="http://127.0.0.1:$kiln_port"
kiln_wait_http "$kiln_url/readyz" 120 || { tail -n 20 "$tmp/kiln-api.log"; exit 1; }
team=$(curl -fsS -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"name":"bench"}' "$kiln_url/v1/teams" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
token=$(curl -fsS -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"name":"bench","role":"member"}' "$kiln_url/v1/teams/$team/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# MLflow: its tracking server on its own database (SQLAlchemy store on psycopg2).
mlflow_port=$(kiln_free_port)
setsid "$KILN_CACHE/mlflow/bin/mlflow" server --backend-store-uri "postgresql+psycopg2://${server#postgres://}/$mlflow_db" \
  --default-artifact-root "$tmp/mlflow-artifacts" --host 127.0.0.1 --port "$mlflow_port" --workers 2 \
  >"$tmp/mlflow.log" 2>&1 &
pids+=($!)
mlflow_url="http://127.0.0.1:$mlflow_port"
kiln_wait_http "$mlflow_url/health" 180 || { tail -n 20 "$tmp/mlflow.log"; exit 1; }

load=$(cut -d' ' -f1 /proc/loadavg)
kiln_log "kiln ($profile kiln-api): $kiln_steps steps × 10 series (load average $load)"
kiln_result=$("$KILN_SDK_PYTHON" scripts/bench-sdk.py kiln "$kiln_url" "$token" "$kiln_steps" | tail -n 1)
kiln_log "mlflow: $mlflow_steps steps × 10 series"
# MLflow prints links to the run on stdout; the result is the last line.
mlflow_result=$("$KILN_CACHE/mlflow/bin/python" scripts/bench-sdk.py mlflow "$mlflow_url" "$mlflow_steps" | tail -n 1)
echo "$kiln_result"
echo "$mlflow_result"
python3 - "$kiln_result" "$mlflow_result" "$profile" "$(nproc)" "$load" <<'PY'
import json, sys
k, m = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"\n| client → server ({sys.argv[3]} kiln-api, {sys.argv[4]} cores, load {sys.argv[5]}) | points | seconds | points/s | vs MLflow |")
print("|---|---|---|---|---|")
print(f"| {k['client']} `run.log_metrics` → kiln-api | {k['points']:,} | {k['seconds']} | {k['points_per_s']:,} | **{k['points_per_s'] / m['points_per_s']:.1f}×** |")
print(f"| {m['client']} → mlflow server | {m['points']:,} | {m['seconds']} | {m['points_per_s']:,} | 1.0× |")
PY
