#!/usr/bin/env bash
# The stock `mlflow` client (scripts/env.sh pins it) against a running Kiln: the pytest suite
# in tests/compat/mlflow/. Needs KILN_API_URL and KILN_ADMIN_TOKEN (`. .kiln/env` after
# scripts/quickstart.sh); scripts/test.sh runs it against its quickstart stack.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
: "${KILN_API_URL:?set KILN_API_URL (. .kiln/env after scripts/quickstart.sh)}"
: "${KILN_ADMIN_TOKEN:?set KILN_ADMIN_TOKEN (. .kiln/env after scripts/quickstart.sh)}"
kiln_ensure_mlflow_venv
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The client keeps nothing in the working directory (mlruns/) when pointed at a server.
cd "$tmp"
"$KILN_MLFLOW_PYTHON" -m pytest -p no:cacheprovider -q --rootdir "$KILN_ROOT/tests/compat/mlflow" \
  "$KILN_ROOT/tests/compat/mlflow" "$@"
