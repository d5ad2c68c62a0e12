#!/usr/bin/env bash
# The main job through the two images (scripts/images.sh smoke builds them first): the API
# and worker containers against this machine's PostgreSQL (a fresh database) and an s3s-fs
# S3 server; upload, train, register, deploy, predict; and the images' promises: non-root,
# a read-only root file system (writable paths are mounted, as the chart mounts them),
# libtorch found through the RUNPATH, no build tools, their sizes.
#
#   scripts/images-smoke.sh [TAG]      (localhost/kiln-api:TAG, localhost/kiln-worker:TAG)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
tag="${1:-dev}"
api_image="localhost/kiln-api:$tag" worker_image="localhost/kiln-worker:$tag"
export CONTAINERS_CONF="${KILN_IMAGES_DIR:-$KILN_CACHE/images}/containers.conf"
podman() { command podman --runtime runc "$@"; }
kiln_ensure_postgres
kiln_ensure_s3s

work=$(mktemp -d)
db="kiln_images_$$"
names=("kiln-smoke-api-$$" "kiln-smoke-worker-$$")
s3_pid=""
cleanup() {
  for n in "${names[@]}"; do podman rm -f -t 5 "$n" >/dev/null 2>&1 || true; done
  [ -z "$s3_pid" ] || kill "$s3_pid" 2>/dev/null || true
  psql "$KILN_TEST_DATABASE_URL" -Xqc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  kiln_log "images smoke test failed: $*"
  for n in "${names[@]}"; do echo "--- $n" >&2; podman logs --tail 40 "$n" >&2 2>&1 || true; done
  exit 1
}

# The store: s3s-fs with one bucket; the database: a fresh one on this machine's server.
s3_port=$(kiln_free_port) api_port=$(kiln_free_port) metrics_port=$(kiln_free_port)
mkdir -p "$work/s3/kiln"
"$KILN_S3S_FS" --host 127.0.0.1 --port "$s3_port" --access-key kiln-smoke --secret-key kiln-smoke-secret-0123 \
  "$work/s3" >"$work/s3s.log" 2>&1 &
s3_pid=$!
psql "$KILN_TEST_DATABASE_URL" -Xqc "create database $db" >/dev/null
db_url="${KILN_TEST_DATABASE_URL%/*}/$db"
env_args=(-e KILN_DATABASE_URL="$db_url" -e KILN_ARTIFACT_STORE=s3://kiln/smoke
  -e KILN_S3_FORCE_PATH_STYLE=true -e AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port"
  -e AWS_REGION=us-east-1 -e AWS_ACCESS_KEY_ID=kiln-smoke -e AWS_SECRET_ACCESS_KEY=kiln-smoke-secret-0123)
# What the chart does: read-only root, non-root (the image's own USER), writable /tmp and
# /var/cache/kiln only.
run_args=(--network=host --read-only --tmpfs /tmp:rw,size=512m --tmpfs /var/cache/kiln:rw,size=1g,U)
cli() { podman run --rm "${run_args[@]}" "${env_args[@]}" -e KILN_API_URL="http://127.0.0.1:$api_port" \
  ${KILN_TOKEN:+-e KILN_TOKEN="$KILN_TOKEN"} --entrypoint /usr/local/bin/kiln "$api_image" "$@"; }

kiln_log "images: migrate and bootstrap with the API image's kiln CLI"
cli admin migrate >/dev/null
admin=$(cli admin bootstrap --name smoke)

kiln_log "images: starting the API and worker containers"
podman run -d --name "${names[0]}" "${run_args[@]}" "${env_args[@]}" \
  -e KILN_API_BIND="127.0.0.1:$api_port" "$api_image" >/dev/null
podman run -d --name "${names[1]}" "${run_args[@]}" "${env_args[@]}" \
  -e KILN_WORKER_DEVICE=cpu -e KILN_WORKER_CACHE_DIR=/var/cache/kiln/worker -e KILN_HEARTBEAT_SECONDS=2 \
  -e KILN_WORKER_METRICS_BIND="127.0.0.1:$metrics_port" "$worker_image" >/dev/null
api="http://127.0.0.1:$api_port"
kiln_wait_http "$api/readyz" 120 || fail "the API container did not become ready"

# The images' promises.
for n in "${names[@]}"; do
  [ "$(podman exec "$n" id -u)" = 10001 ] || fail "$n does not run as uid 10001"
  [ "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$n")" = true ] || fail "$n root is writable"
  if podman exec "$n" sh -c 'touch /usr/local/bin/x' 2>/dev/null; then fail "$n could write its root file system"; fi
  for tool in cargo rustc gcc g++ cc pip python3; do
    if podman exec "$n" sh -c "command -v $tool" >/dev/null 2>&1; then fail "$n carries the build tool $tool"; fi
  done
done
podman exec "${names[0]}" sh -c 'ldd /usr/local/bin/kiln-api' >"$work/ldd.txt"
grep -q '/opt/libtorch/torch/lib/libtorch_cpu.so' "$work/ldd.txt" || fail "kiln-api does not find libtorch: $(cat "$work/ldd.txt")"
if grep -q 'not found' "$work/ldd.txt"; then fail "kiln-api misses libraries: $(grep 'not found' "$work/ldd.txt")"; fi
podman exec "${names[1]}" sh -c 'ldd /usr/local/bin/kiln-worker' | grep -q '/opt/libtorch/torch/lib/libtorch_cuda.so' \
  || fail "kiln-worker does not find libtorch_cuda"
kiln_log "images: uid 10001, read-only root, no build tools, libtorch from /opt/libtorch"

# The main job: a team, its token, Iris, a training job, the model, a deployment, predictions.
export KILN_TOKEN="$admin"
team=$(curl -fsS -H "Authorization: Bearer $admin" -H 'content-type: application/json' -d '{"name": "demo"}' "$api/v1/teams")
team_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$team")
token=$(curl -fsS -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"name": "smoke", "role": "maintainer"}' "$api/v1/teams/$team_id/tokens" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
dataset=$(curl -fsS -H "Authorization: Bearer $token" -H 'content-type: text/csv' \
  --data-binary @data/iris.csv "$api/v1/datasets?name=iris" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
sed "s/REPLACED_BY_QUICKSTART/$dataset/" examples/iris-mlp.json >"$work/job.json"
job=$(curl -fsS -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  --data-binary @"$work/job.json" "$api/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
kiln_log "images: training job $job in the worker container"
state=queued
for _ in $(seq 1 600); do
  state=$(curl -fsS -H "Authorization: Bearer $token" "$api/v1/jobs/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  case "$state" in succeeded) break ;; failed|cancelled) fail "job $job ended $state" ;; esac
  sleep 1
done
[ "$state" = succeeded ] || fail "job $job did not finish (state $state)"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -q '^kiln_worker_jobs_total{outcome="succeeded"} 1' \
  || fail "the worker container's /metrics does not count the job"
version=$(curl -fsS -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d "{\"job_id\": \"$job\"}" "$api/v1/models/iris/versions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
KILN_TOKEN="$token" cli models alias iris production "$version" >/dev/null
KILN_TOKEN="$token" cli deployments create iris --model iris --alias production >/dev/null
answer=$(curl -fsS -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"instances": [{"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}]}' \
  "$api/v1/deployments/iris/predict")
python3 - "$answer" "$version" <<'PY' || fail "unexpected prediction: $answer"
import json, sys
answer, version = json.loads(sys.argv[1]), int(sys.argv[2])
assert answer["model_version"] == version, answer
assert len(answer["predictions"]) == 1, answer
PY
kiln_log "images: job $job trained in the worker container, version $version deployed and predicting in the API container"
for image in "$api_image" "$worker_image"; do
  kiln_log "images: $image $(( $(podman image inspect --format '{{.Size}}' "$image") / 1024 / 1024 )) MiB"
done
echo "images smoke test: passed"
