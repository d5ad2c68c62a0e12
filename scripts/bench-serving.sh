#!/usr/bin/env bash
# Serving: Kiln's predict endpoint (batching on and off) vs Flask under gunicorn serving the
# same bundle with PyTorch from the same virtualenv, same wrk load, same run.
# See docs/benchmarks.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_postgres
kiln_ensure_libtorch
command -v wrk >/dev/null 2>&1 || kiln_apt_install wrk >&2
# The baseline runs in the libtorch virtualenv itself: the same PyTorch the bundle came from.
if [ ! -x "$KILN_CACHE/venv/bin/gunicorn" ]; then
  kiln_log "installing flask and gunicorn into $KILN_CACHE/venv (once)"
  "$KILN_CACHE/venv/bin/pip" install -q flask==3.1.2 gunicorn==23.0.0
fi
export KILN_GUNICORN="$KILN_CACHE/venv/bin/gunicorn" KILN_WRK="$(command -v wrk)"
cargo bench -p kiln-api --bench serving
