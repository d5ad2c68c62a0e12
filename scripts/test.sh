#!/usr/bin/env bash
# THE test command (the README names it, .ci/run calls it). On a fresh Debian machine with
# Rust, as root, it installs and starts what is missing (PostgreSQL, the libtorch
# virtualenv, the S3-compatible test server), then runs the format check, clippy and every
# test. A second run reuses everything installed by the first.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"

kiln_ensure_postgres
kiln_log "PostgreSQL: $(psql "$KILN_TEST_DATABASE_URL" -XAtqc 'show server_version')"

# Drop databases left by earlier runs (each test creates its own kiln_test_<uuid>).
psql "$KILN_TEST_DATABASE_URL" -XAtqc \
  "select datname from pg_database where datname like 'kiln\_test\_%'" |
  while read -r db; do psql "$KILN_TEST_DATABASE_URL" -Xqc "drop database if exists \"$db\" with (force)" >/dev/null; done

# torch-sys builds against the virtualenv's libtorch (LIBTORCH_USE_PYTORCH=1); kiln-ml's
# TorchScript test runs its Python ($KILN_PYTHON).
kiln_ensure_libtorch
# kiln-store's tests start their own s3s-fs servers; they need the binary.
kiln_ensure_s3s

kiln_log "cargo fmt --check"
cargo fmt --all -- --check
kiln_log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# KILN_SKIP_CHAOS=1 leaves out the chaos test (tests/e2e/chaos.rs: twenty kill -9s of
# workers over eight jobs, a few minutes on two cores) for a quick run; CI runs it.
skip=()
if [ "${KILN_SKIP_CHAOS:-0}" = 1 ]; then
  kiln_log "KILN_SKIP_CHAOS=1: the chaos test is skipped"
  skip=(-- --skip chaos_)
fi
kiln_log "cargo test"
results=$(mktemp)
cargo test --workspace --locked "${skip[@]}" 2>&1 | tee "$results"
# The committed OpenAPI document (just checked for staleness) generates a Python client
# without a warning or a left-out endpoint, and the generated package imports.
kiln_log "OpenAPI document → Python client (openapi-python-client)"
bash scripts/check-openapi-client.sh
# The README's command one, against the debug builds just tested, twice (a second run must
# reuse what the first started), with its own PostgreSQL and ports, from a directory laid
# out like a clone in root's home: $home is mode 0700, so user postgres cannot reach the
# state directory under it (the private cluster's data must go elsewhere: env.sh's
# kiln_private_pg_datadir). Then the README's tour, command by command, against that stack.
kiln_log "quickstart (twice, state in a 0700 directory), the README's tour, then --stop"
qs_tmp=$(mktemp -d)
home="$qs_tmp/home" && mkdir -m 0700 "$home" && mkdir "$home/kiln"
ln -s "$KILN_ROOT/data" "$home/kiln/data" && ln -s "$KILN_ROOT/examples" "$home/kiln/examples"
qs_state="$home/kiln/.kiln"
qs_env=(KILN_QUICKSTART_STATE="$qs_state" KILN_QUICKSTART_PG_PORT="$(kiln_free_port)"
        KILN_API_BIND="127.0.0.1:$(kiln_free_port)" KILN_WORKER_METRICS_BIND="127.0.0.1:$(kiln_free_port)")
qs_fail() { cat "$1"; tail -n 40 "$qs_state"/logs/*.log; env "${qs_env[@]}" bash scripts/quickstart.sh --stop; exit 1; }
for run in 1 2; do
  env "${qs_env[@]}" bash scripts/quickstart.sh >"$qs_tmp/run-$run.txt" 2>&1 || qs_fail "$qs_tmp/run-$run.txt"
done
grep -q "answered by iris version 2" "$qs_tmp/run-2.txt" || qs_fail "$qs_tmp/run-2.txt"
if [ "$(id -u)" = 0 ]; then
  [ -L "$qs_state/postgres" ] || { kiln_log "the private PostgreSQL was not moved out of the 0700 directory"; qs_fail "$qs_tmp/run-1.txt"; }
fi
python3 scripts/tour.py --self-test >/dev/null 2>&1 || { python3 scripts/tour.py --self-test; exit 1; }
python3 scripts/tour.py README.md "$home/kiln" >"$qs_tmp/tour.txt" 2>&1 || qs_fail "$qs_tmp/tour.txt"
tail -n 1 "$qs_tmp/tour.txt"
# The dashboard and alert rules against what that stack's binaries expose now (after the
# tour: a finished job, predictions, a drift report).
(. "$qs_state/env" && KILN_TOKEN=$KILN_ADMIN_TOKEN bash scripts/check-observability.sh \
  "$KILN_API_URL/metrics" "$KILN_WORKER_METRICS_URL") >"$qs_tmp/observability.txt" 2>&1 \
  || qs_fail "$qs_tmp/observability.txt"
tail -n 2 "$qs_tmp/observability.txt"
# The Python SDK (clients/python): built as a wheel, installed from it into its own
# virtualenv, and its pytest suite run against the same stack (each session makes its own
# team with the admin token, so the tour's resources never meet the tests').
kiln_log "Python SDK: wheel, install, pytest against that stack"
mkdir "$qs_tmp/wheel"
"$KILN_CACHE/venv/bin/python" -m pip wheel -q --no-deps -w "$qs_tmp/wheel" clients/python >"$qs_tmp/sdk.txt" 2>&1 \
  || qs_fail "$qs_tmp/sdk.txt"
kiln_ensure_sdk_venv "$(ls "$qs_tmp"/wheel/kiln_client-*.whl)" >>"$qs_tmp/sdk.txt" 2>&1 || qs_fail "$qs_tmp/sdk.txt"
(. "$qs_state/env" && cd "$qs_tmp" && "$KILN_SDK_PYTHON" -m pytest -p no:cacheprovider -q \
  --rootdir "$KILN_ROOT/clients/python" "$KILN_ROOT/clients/python/tests") >>"$qs_tmp/sdk.txt" 2>&1 \
  || qs_fail "$qs_tmp/sdk.txt"
tail -n 1 "$qs_tmp/sdk.txt"
# The stock clients of the compatible surfaces against the same stack, each from the package
# index into its own virtualenv (once): the mlflow client (tests/compat/mlflow) and the OIP
# clients tritonclient and kserve (tests/compat/oip).
kiln_log "stock clients: mlflow, tritonclient and kserve against that stack"
(. "$qs_state/env" && bash scripts/check-mlflow.sh) >"$qs_tmp/mlflow.txt" 2>&1 || qs_fail "$qs_tmp/mlflow.txt"
tail -n 1 "$qs_tmp/mlflow.txt"
(. "$qs_state/env" && bash scripts/check-oip.sh) >"$qs_tmp/oip.txt" 2>&1 || qs_fail "$qs_tmp/oip.txt"
tail -n 1 "$qs_tmp/oip.txt"
# The web UI in headless Chromium (docs/ui.md): screenshots in $KILN_UI_ARTIFACTS
# (default ~/.cache/kiln/ui-artifacts).
(. "$qs_state/env" && bash scripts/check-ui.sh) >"$qs_tmp/ui.txt" 2>&1 || qs_fail "$qs_tmp/ui.txt"
tail -n 1 "$qs_tmp/ui.txt"
env "${qs_env[@]}" bash scripts/quickstart.sh --stop
qs_pg=$(readlink -f "$qs_state/postgres")
rm -rf "$qs_tmp"; case "$qs_pg" in /var/tmp/kiln-postgres-*) rm -rf "$qs_pg" ;; esac
kiln_log "quickstart and tour: ok"

kiln_log "deploy/ and terraform/: static checks"
bash scripts/check-deploy.sh
# The images, built from the Dockerfiles with podman and run through the main job: slow
# (minutes, several GB of libtorch copied into layers), so only where podman works here.
# KILN_IMAGES_SMOKE=0 skips it; =1 installs podman, runc and mmdebstrap when missing.
images_skip=""
if [ "${KILN_IMAGES_SMOKE:-}" = 0 ]; then
  images_skip="KILN_IMAGES_SMOKE=0"
elif ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  if [ "${KILN_IMAGES_SMOKE:-}" = 1 ]; then kiln_apt_install podman runc mmdebstrap >&2
  else images_skip="podman or runc is not installed (apt-get install podman runc mmdebstrap, or KILN_IMAGES_SMOKE=1)"; fi
fi
if [ -z "$images_skip" ]; then
  conf=$(mktemp); printf '[containers]\ndefault_ulimits = []\n' >"$conf"
  if ! probe=$(CONTAINERS_CONF="$conf" podman --runtime runc info 2>&1 >/dev/null); then
    images_skip="podman cannot run here: $(head -n 1 <<<"$probe")"
  fi
  rm -f "$conf"
fi
if [ -n "$images_skip" ]; then
  kiln_log "images smoke test: SKIPPED: $images_skip"
else
  kiln_log "images: podman build (target prebuilt) and the main job through the containers"
  bash scripts/images.sh smoke --tag test
fi

kiln_log "schemathesis against the running kiln-api"
bash scripts/schemathesis.sh

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$results"
rm -f "$results"
