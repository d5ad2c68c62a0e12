# shellcheck shell=bash
# Sourced by the benchmark scripts that measure a running Kiln (bench-batch.sh,
# bench-studies.sh): the release binaries, and a stack started as the quickstart starts it.
#
#   kiln_bench_stack NAME  builds the release kiln-api, kiln-worker and kiln (unless
#                          BENCH_NO_BUILD=1), then starts, under a fresh /tmp/kiln-bench-NAME.*
#                          directory ($state): a private PostgreSQL, the file artifact store,
#                          kiln-api and one kiln-worker with default settings; exports
#                          KILN_DATABASE_URL, KILN_API_URL and KILN_TOKEN (a maintainer token
#                          of team `bench`). Everything started stops when the script exits.
#   start NAME CMD...      starts another process of the stack (its log in $state/logs).
#   kiln ARGS...           the release CLI.
# Files named in KILN_BENCH_CLEAN are removed at exit (large inputs); the logs are kept.

kiln_bench_stack() {
  local name="$1"
  if [ -z "${BENCH_NO_BUILD:-}" ]; then
    kiln_log "building the release binaries"
    cargo build --release --locked -p kiln-api -p kiln-worker -p kiln-cli
  fi
  bin="$CARGO_TARGET_DIR/release"
  state=$(mktemp -d "/tmp/kiln-bench-$name.XXXXXX")
  mkdir -p "$state/logs"
  pids=()
  KILN_BENCH_CLEAN=()
  trap kiln_bench_cleanup EXIT
  local pg_port
  pg_port=$(kiln_free_port)
  kiln_start_private_postgres "$state/postgres" "$pg_port"
  psql "postgres://postgres@127.0.0.1:$pg_port/postgres" -Xqc "create database kiln" >/dev/null
  export KILN_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/kiln"
  export KILN_ARTIFACT_STORE="file://$state/artifacts"
  export KILN_API_BIND="127.0.0.1:$(kiln_free_port)"
  export KILN_API_URL="http://$KILN_API_BIND"
  export KILN_WORKER_METRICS_BIND="127.0.0.1:$(kiln_free_port)"
  kiln admin migrate
  export KILN_TOKEN
  KILN_TOKEN=$(kiln admin bootstrap --name bench)
  KILN_SERVING_CACHE_DIR="$state/serving-cache" start kiln-api "$bin/kiln-api"
  kiln_wait_http "$KILN_API_URL/readyz" 120 || { tail -n 30 "$state/logs/kiln-api.log" >&2; exit 1; }
  KILN_WORKER_CACHE_DIR="$state/worker-cache" start kiln-worker "$bin/kiln-worker"
  kiln admin teams create bench >/dev/null
  KILN_TOKEN=$(kiln admin tokens create --team bench --role maintainer --name bench)
}

kiln_bench_cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  kiln_stop_private_postgres "$state/postgres" 2>/dev/null || true
  for f in "${KILN_BENCH_CLEAN[@]}"; do rm -f "$f"; done
  kiln_log "logs kept in $state/logs"
}

start() { local name="$1"; shift; setsid nohup "$@" >>"$state/logs/$name.log" 2>&1 </dev/null & pids+=("$!"); }
kiln() { "$bin/kiln" "$@"; }
