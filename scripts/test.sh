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
# The README's command one, against the debug builds just tested, twice (a second run must
# reuse what the first started), in a temp dir with its own PostgreSQL and ports.
kiln_log "quickstart (twice), then --stop"
qs_state=$(mktemp -d)
qs_env=(KILN_QUICKSTART_STATE="$qs_state" KILN_QUICKSTART_PG_PORT="$(kiln_free_port)"
        KILN_API_BIND="127.0.0.1:$(kiln_free_port)")
for run in 1 2; do
  if ! env "${qs_env[@]}" bash scripts/quickstart.sh >"$qs_state/run-$run.txt" 2>&1; then
    cat "$qs_state/run-$run.txt"; tail -n 40 "$qs_state"/logs/*.log
    env "${qs_env[@]}" bash scripts/quickstart.sh --stop; exit 1
  fi
done
grep -q "answered by iris version 2" "$qs_state/run-2.txt" || { cat "$qs_state/run-2.txt"; exit 1; }
env "${qs_env[@]}" bash scripts/quickstart.sh --stop
rm -rf "$qs_state"
kiln_log "quickstart: ok"

kiln_log "deploy/ and terraform/: static checks"
bash scripts/check-deploy.sh
kiln_log "schemathesis against the running kiln-api"
bash scripts/schemathesis.sh

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$results"
rm -f "$results"
