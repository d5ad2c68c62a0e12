#!/usr/bin/env bash
# The stock MLflow client's MlflowClient.log_batch (1,000 metric points a call, from several
# processes at once) against Kiln's MLflow tracking API and against MLflow's own tracking
# server, in one go: a fresh release kiln-api and a fresh `mlflow server --workers 2` (the
# client's own version, SQLAlchemy store on psycopg2), each on its own new database of the
# same local PostgreSQL. See docs/benchmarks.md ("MLflow tracking (log_batch)").
#
#   scripts/bench-mlflow.sh [PROCESSES [KILN_CALLS [MLFLOW_CALLS]]]   # default 8, 100, 10 calls a process
#
# KILN_BENCH_PROFILE=debug|release picks the kiln-api build (default: release if built).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
procs="${1:-8}"
kiln_calls="${2:-100}"
mlflow_calls="${3:-10}"

kiln_ensure_postgres
kiln_ensure_mlflow_venv
mlflow_bin="$(dirname "$KILN_MLFLOW_PYTHON")/mlflow"

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
kiln_db="kiln_bench_mlapi_$suffix" mlflow_db="kiln_bench_mlsrv_$suffix"
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

# MLflow: its tracking server on its own database.
mlflow_port=$(kiln_free_port)
setsid "$mlflow_bin" server --backend-store-uri "postgresql+psycopg2://${server#postgres://}/$mlflow_db" \
  --default-artifact-root "$tmp/mlflow-artifacts" --host 127.0.0.1 --port "$mlflow_port" --workers 2 \
  >"$tmp/mlflow.log" 2>&1 &
pids+=($!)
mlflow_url="http://127.0.0.1:$mlflow_port"
kiln_wait_http "$mlflow_url/health" 180 || { tail -n 20 "$tmp/mlflow.log"; exit 1; }

# CPU seconds of a server: every process of its process group (setsid made it a leader)
# plus the PostgreSQL backends connected to its database, as one JSON object {pid: seconds}
# (a difference of two snapshots is what the server side spent between them, whatever the
# client processes on the same cores cost).
server_cpu() {  # PGID DATABASE
  local pg_pids
  pg_pids=$(psql "$KILN_TEST_DATABASE_URL" -XAtc "select pid from pg_stat_activity where datname = '$2'" | tr '\n' ' ')
  python3 - "$1" $pg_pids <<'PY'
import json, os, sys
tick = os.sysconf("SC_CLK_TCK")
group, backends = int(sys.argv[1]), {int(p) for p in sys.argv[2:]}
out = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if int(fields[2]) == group or int(pid) in backends:  # fields[2] is the process group
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
print(json.dumps(out))
PY
}

load=$(cut -d' ' -f1 /proc/loadavg)
kiln_log "kiln ($profile kiln-api): $procs processes × $kiln_calls log_batch calls of 1,000 points (load average $load)"
kiln_before=$(server_cpu "${pids[0]}" "$kiln_db")
kiln_result=$("$KILN_MLFLOW_PYTHON" -W ignore scripts/bench-mlflow.py "$kiln_url" "$token" "$procs" "$kiln_calls" | tail -n 1)
kiln_after=$(server_cpu "${pids[0]}" "$kiln_db")
kiln_log "mlflow server: $procs processes × $mlflow_calls log_batch calls of 1,000 points"
mlflow_before=$(server_cpu "${pids[1]}" "$mlflow_db")
mlflow_result=$("$KILN_MLFLOW_PYTHON" -W ignore scripts/bench-mlflow.py "$mlflow_url" - "$procs" "$mlflow_calls" | tail -n 1)
mlflow_after=$(server_cpu "${pids[1]}" "$mlflow_db")
echo "$kiln_result"
echo "$mlflow_result"
python3 - "$kiln_result" "$mlflow_result" "$profile" "$(nproc)" "$load" \
  "$kiln_before" "$kiln_after" "$mlflow_before" "$mlflow_after" <<'PY'
import json, sys
k, m = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def spent(before, after):
    b, a = json.loads(before), json.loads(after)
    return sum(v - b.get(pid, 0.0) for pid, v in a.items())
k_cpu, m_cpu = spent(sys.argv[6], sys.argv[7]), spent(sys.argv[8], sys.argv[9])
k_eff, m_eff = k["points"] / k_cpu, m["points"] / m_cpu
print(f"\n| {k['client']} `MlflowClient.log_batch`, {k['processes']} processes → ({sys.argv[3]} kiln-api, {sys.argv[4]} cores, load {sys.argv[5]}) | points | seconds | points/s | vs MLflow | client CPU s | client's ceiling, points/s | server CPU s (process + its PostgreSQL backends) | points per server CPU s | vs MLflow |")
print("|---|---|---|---|---|---|---|---|---|---|")
print(f"| → kiln-api (`/api/2.0/mlflow`) | {k['points']:,} | {k['seconds']} | {k['points_per_s']:,} | **{k['points_per_s'] / m['points_per_s']:.1f}×** | {k['client_cpu_s']} | {k['client_ceiling_points_per_s']:,} | {k_cpu:.2f} | {k_eff:,.0f} | **{k_eff / m_eff:.1f}×** |")
print(f"| → mlflow server --workers 2 | {m['points']:,} | {m['seconds']} | {m['points_per_s']:,} | 1.0× | {m['client_cpu_s']} | {m['client_ceiling_points_per_s']:,} | {m_cpu:.2f} | {m_eff:,.0f} | 1.0× |")
PY
