#!/usr/bin/env bash
# Property-based API testing: schemathesis generates requests from the served OpenAPI
# document and checks that the real kiln-api (fresh database, local artifact directory)
# never answers 5xx, answers only status codes the document lists for the operation, and
# that every answer's body validates against the schema the document gives it and comes
# with a content type the document lists (response_schema_conformance,
# content_type_conformance).
# Called by scripts/test.sh; runs alone too.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_postgres
kiln_ensure_pytool "schemathesis==4.32.5" st
command -v curl >/dev/null || kiln_apt_install curl >&2

cargo build --locked --bin kiln-api --bin kiln
bin="$CARGO_TARGET_DIR/debug"
work=$(mktemp -d)
db="kiln_st_$(date +%s)_$$"
admin_url="$KILN_TEST_DATABASE_URL"
psql "$admin_url" -Xqc "create database $db" >/dev/null
export KILN_DATABASE_URL="${admin_url%/*}/$db"
export KILN_ARTIFACT_STORE="file://$work/artifacts"
api_pid=""
cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
  psql "$admin_url" -Xqc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/kiln" admin migrate >/dev/null
admin=$("$bin/kiln" admin bootstrap 2>/dev/null)
port=$(kiln_free_port)
export KILN_API_URL="http://127.0.0.1:$port"
KILN_API_BIND="127.0.0.1:$port" KILN_MAX_UPLOAD_BYTES=$((4 * 1024 * 1024)) "$bin/kiln-api" >"$work/api.log" 2>&1 &
api_pid=$!
kiln_wait_http "$KILN_API_URL/healthz" 60 || { cat "$work/api.log"; exit 1; }
KILN_TOKEN="$admin" "$bin/kiln" admin teams create fuzz >/dev/null
maintainer=$(KILN_TOKEN="$admin" "$bin/kiln" admin tokens create --team fuzz --role maintainer 2>/dev/null)
# Something real to find: one dataset, a job on it (a job is a run too), a tracked
# run with a metric point.
dataset=$(curl -fsS -H "Authorization: Bearer $maintainer" -H 'content-type: text/csv' \
  --data-binary @data/iris.csv "$KILN_API_URL/v1/datasets?name=iris")
dataset_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$dataset")
job=$(sed "s/REPLACED_BY_QUICKSTART/$dataset_id/" examples/iris-mlp.json |
  curl -fsS -H "Authorization: Bearer $maintainer" -H 'content-type: application/json' \
    --data-binary @- "$KILN_API_URL/v1/jobs")
job_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$job")
# Cancelled (no worker runs here): its logs answer at once instead of long-polling
# `?wait=` seconds, up to 30, past the request timeout.
curl -fsS -X POST -H "Authorization: Bearer $maintainer" "$KILN_API_URL/v1/jobs/$job_id/cancel" >/dev/null
run=$(curl -fsS -H "Authorization: Bearer $maintainer" -H 'content-type: application/json' \
  -d '{"name": "fuzz", "params": {"lr": 0.1}}' "$KILN_API_URL/v1/runs")
run_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$run")
curl -fsS -H "Authorization: Bearer $maintainer" -H 'content-type: application/json' \
  -d '{"points": [{"name": "loss", "step": 0, "value": 1.0}]}' \
  "$KILN_API_URL/v1/runs/$run_id/metrics" >/dev/null

# The coverage phase is left out: on this machine's CPython 3.11.7 it dies inside
# hypothesis with "AST constructor recursion depth mismatch" (an interpreter bug), which
# would fail the run without testing anything.
# The request timeout is above the 30 s a job's logs may long-poll (`?wait=`) for a job the
# fuzzer itself submitted and no worker runs.
status=0
for token in "$maintainer" "$admin"; do
  "$KILN_CACHE/tools/bin/st" run "$KILN_API_URL/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --phases examples,fuzzing --max-examples 40 --workers 2 \
    --request-timeout 45 --suppress-health-check all --warnings off || status=$?
done
if grep -q 'panicked' "$work/api.log"; then
  kiln_log "kiln-api panicked during the run:"; grep -A5 panicked "$work/api.log" >&2; status=1
fi
exit $status
