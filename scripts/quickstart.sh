#!/usr/bin/env bash
# The whole main job with one command, on a fresh Debian machine with Rust:
#   install what is missing (libtorch virtualenv, PostgreSQL), start a private PostgreSQL
#   under .kiln/ (unless KILN_DATABASE_URL is set), use .kiln/artifacts as the artifact store
#   (unless KILN_ARTIFACT_STORE is set), build, migrate, bootstrap an admin, create a team and
#   tokens, start kiln-api and kiln-worker in the background (logs in .kiln/logs), upload the
#   bundled Iris data, train a model and follow it to the end, register it and point
#   `production` at it, deploy it behind a batching prediction endpoint, run predictions,
#   then print what to do next.
#
#   scripts/quickstart.sh            run (again: reuses what is there)
#   scripts/quickstart.sh --stop     stop what it started
#   scripts/quickstart.sh --release  use release builds
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"

# KILN_QUICKSTART_STATE moves everything it keeps (scripts/test.sh runs it in a temp dir).
state="${KILN_QUICKSTART_STATE:-$KILN_ROOT/.kiln}"
mkdir -p "$state/logs" "$state/run"
profile=debug
for arg in "$@"; do
  case "$arg" in
    --stop) stop=1 ;;
    --release) profile=release ;;
    *) echo "usage: $0 [--stop] [--release]" >&2; exit 2 ;;
  esac
done

stop_pid() {
  local file="$state/run/$1.pid"
  if [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then
    kill -TERM "$(cat "$file")" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$(cat "$file")" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$(cat "$file")" 2>/dev/null || true
    kiln_log "stopped $1"
  fi
  rm -f "$file"
}

if [ "${stop:-}" = 1 ]; then
  stop_pid kiln-worker
  stop_pid kiln-api
  [ -e "$state/postgres" ] && kiln_stop_private_postgres "$state/postgres"
  exit 0
fi

kiln_ensure_libtorch
command -v curl >/dev/null || kiln_apt_install curl >&2

# 1. PostgreSQL: the one given, or a private cluster under .kiln/postgres (as root in a
#    directory user postgres cannot reach, e.g. a clone in /root, .kiln/postgres links to
#    /var/tmp/kiln-postgres-<hash>: see kiln_private_pg_datadir in env.sh).
if [ -z "${KILN_DATABASE_URL:-}" ]; then
  command -v psql >/dev/null 2>&1 || kiln_apt_install postgresql-client >&2
  kiln_start_private_postgres "$state/postgres" "${KILN_QUICKSTART_PG_PORT:-55433}"
  server="postgres://postgres@127.0.0.1:${KILN_QUICKSTART_PG_PORT:-55433}"
  grep -q 1 <<<"$(psql "$server/postgres" -XAtqc "select 1 from pg_database where datname = 'kiln'")" \
    || psql "$server/postgres" -Xqc "create database kiln" >/dev/null
  export KILN_DATABASE_URL="$server/kiln"
fi
export KILN_ARTIFACT_STORE="${KILN_ARTIFACT_STORE:-file://$state/artifacts}"
export KILN_API_BIND="${KILN_API_BIND:-127.0.0.1:8080}"
export KILN_API_URL="http://$KILN_API_BIND"
# The worker's own Prometheus metrics (epoch times, checkpoint sizes).
export KILN_WORKER_METRICS_BIND="${KILN_WORKER_METRICS_BIND:-127.0.0.1:9091}"

# 2. Build.
kiln_log "building ($profile)"
if [ "$profile" = release ]; then cargo build --locked --release --bins; else cargo build --locked --bins; fi
bin="$CARGO_TARGET_DIR/$profile"
kiln() { "$bin/kiln" "$@"; }

# 3. Schema and the first admin token (kept in .kiln/, reused on the next run).
kiln admin migrate
if [ ! -s "$state/admin-token" ]; then
  kiln admin bootstrap --name quickstart >"$state/admin-token" 2>/dev/null \
    || kiln admin bootstrap --name quickstart --force >"$state/admin-token"
  chmod 600 "$state/admin-token"
fi
admin=$(cat "$state/admin-token")

# 4. Services.
start() {
  local name="$1"; shift
  if [ -f "$state/run/$name.pid" ] && kill -0 "$(cat "$state/run/$name.pid")" 2>/dev/null; then
    kiln_log "$name already running (pid $(cat "$state/run/$name.pid"))"; return
  fi
  nohup "$bin/$name" "$@" >>"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/run/$name.pid"
  kiln_log "started $name (pid $!, log .kiln/logs/$name.log)"
}
KILN_SERVING_CACHE_DIR="$state/serving-cache" start kiln-api
kiln_wait_http "$KILN_API_URL/readyz" 120 || { tail -n 30 "$state/logs/kiln-api.log" >&2; exit 1; }
KILN_WORKER_CACHE_DIR="$state/worker-cache" start kiln-worker

# 5. A team with a maintainer token (reused).
export KILN_TOKEN="$admin"
grep -q '"name": "demo"' <<<"$(kiln admin teams list --output json)" || kiln admin teams create demo >/dev/null
if [ ! -s "$state/demo-token" ] || ! KILN_TOKEN=$(cat "$state/demo-token") kiln jobs list >/dev/null 2>&1; then
  kiln admin tokens create --team demo --role maintainer --name quickstart >"$state/demo-token" 2>/dev/null
  chmod 600 "$state/demo-token"
fi
export KILN_TOKEN=$(cat "$state/demo-token")

# 6. Data → training job → model registry.
kiln_log "uploading data/iris.csv"
dataset=$(curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: text/csv' \
  --data-binary @data/iris.csv "$KILN_API_URL/v1/datasets?name=iris")
dataset_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$dataset")
sed "s/REPLACED_BY_QUICKSTART/$dataset_id/" examples/iris-mlp.json >"$state/iris-job.json"
kiln_log "training (kiln jobs submit --wait)"
job=$(kiln --output json jobs submit "$state/iris-job.json" --wait)
job_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$job")
accuracy=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["val_accuracy"])' <<<"$job" 2>/dev/null || echo "?")
version=$(curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: application/json' \
  -d "{\"job_id\": \"$job_id\"}" "$KILN_API_URL/v1/models/iris/versions" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
kiln models alias iris production "$version" >/dev/null

# 7. Serving: a deployment that follows `production` (moving the alias rolls it), then
#    predictions from raw rows.
if ! kiln deployments show iris >/dev/null 2>&1; then
  kiln_log "deploying iris@production"
  kiln deployments create iris --model iris --alias production >/dev/null
fi
kiln_log "predicting (kiln predict iris --instances examples/iris-instances.json)"
kiln predict iris --instances examples/iris-instances.json | tee "$state/predictions.txt"
grep -q "answered by iris version $version" "$state/predictions.txt"

# 8. What the README's tour needs: the job spec above (.kiln/iris-job.json) and an env
#    file to source, so every command of the tour runs as written.
env_file="$state/env"
umask 077
{
  echo "# Written by scripts/quickstart.sh: \`. $env_file\` to continue by hand (the README's tour)."
  printf 'export KILN_API_URL=%q\n' "$KILN_API_URL"
  printf 'export KILN_TOKEN=%q       # team demo, maintainer\n' "$KILN_TOKEN"
  printf 'export KILN_ADMIN_TOKEN=%q\n' "$admin"
  printf 'export KILN_DATABASE_URL=%q\n' "$KILN_DATABASE_URL"
  printf 'export KILN_ARTIFACT_STORE=%q\n' "$KILN_ARTIFACT_STORE"
  printf 'export KILN_WORKER_METRICS_URL=%q\n' "http://$KILN_WORKER_METRICS_BIND/metrics"
  printf 'export DATASET_ID=%q JOB_ID=%q MODEL_VERSION=%q   # what this run made\n' "$dataset_id" "$job_id" "$version"
  printf 'export PATH=%q:"$PATH"   # kiln, kiln-api, kiln-worker (%s build)\n' "$bin" "$profile"
} >"$env_file"
umask 022

shown_state="${state#"$KILN_ROOT"/}"
cat <<SUMMARY

Kiln is running.
  web UI         $KILN_API_URL/ui   sign in with team demo's maintainer token:
                 $KILN_TOKEN
                 (the admin token, KILN_ADMIN_TOKEN in $shown_state/env, opens the platform page)
  API            $KILN_API_URL   (OpenAPI: $KILN_API_URL/openapi.json)
  database       $(sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$KILN_DATABASE_URL")
  artifacts      $KILN_ARTIFACT_STORE
  logs           $shown_state/logs/

What it did: uploaded Iris (dataset $dataset_id), trained job $job_id
(validation accuracy $accuracy), registered it as model iris version $version and pointed
alias production at it, deployed it as iris (following production) and ran the
predictions above through it.

Continue by hand (the README's tour runs as written after this):
  . $shown_state/env        # KILN_API_URL, KILN_TOKEN (demo's maintainer), KILN_ADMIN_TOKEN,
                            # KILN_DATABASE_URL, JOB_ID=$job_id; kiln on PATH
  kiln jobs list
  kiln jobs logs "\$JOB_ID"
  kiln deployments show iris
  kiln predict iris --instances examples/iris-instances.json
  KILN_TOKEN=\$KILN_ADMIN_TOKEN kiln queue stats
Stop everything: scripts/quickstart.sh --stop
SUMMARY
