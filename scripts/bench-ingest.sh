#!/usr/bin/env bash
# Metrics ingest: Kiln's POST /v1/runs/{id}/metrics vs the MLflow tracking server's
# log-batch, same PostgreSQL, same concurrency, same run. See docs/benchmarks.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_postgres
if [ ! -x "$KILN_CACHE/mlflow/bin/mlflow" ]; then
  kiln_log "installing mlflow 3.17.2 into $KILN_CACHE/mlflow (once)"
  python3 -m venv "$KILN_CACHE/mlflow"
  "$KILN_CACHE/mlflow/bin/pip" install -q mlflow==3.17.2 psycopg2-binary
fi
KILN_MLFLOW="$KILN_CACHE/mlflow/bin/mlflow" cargo bench -p kiln-api --bench ingest
