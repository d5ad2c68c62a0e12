#!/usr/bin/env bash
# The web UI's benchmark (docs/benchmarks.md, "Web UI"): server time and bytes of a run
# page's chart data for 1,000,000 points in 4 series against 1,000 points, and the compare
# view of 100 runs' time to content in headless Chromium (the Performance timing API).
# Needs a running Kiln: KILN_API_URL and KILN_TOKEN (`. .kiln/env` after
# scripts/quickstart.sh). It creates tracked runs `bench-ui-*` in that team.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
: "${KILN_API_URL:?set KILN_API_URL (. .kiln/env after scripts/quickstart.sh)}"
: "${KILN_TOKEN:?set KILN_TOKEN (. .kiln/env after scripts/quickstart.sh)}"
kiln_ensure_ui_browser
"$KILN_UI_PYTHON" "$KILN_ROOT/scripts/bench-ui.py" "$@"
