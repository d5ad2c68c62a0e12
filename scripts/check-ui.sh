#!/usr/bin/env bash
# The web UI in a real headless Chromium (Debian's chromium and chromium-driver, through
# WebDriver with Selenium) against a running Kiln with a worker: sign in, a job training live
# (its chart gains points), cancel it, compare two runs, promote a version, change a traffic
# split, another team's job answering 404, sign out; screenshots of the main pages, at
# 1280 px and phone width, checked non-blank. Needs KILN_API_URL, KILN_TOKEN (a team's
# maintainer) and KILN_ADMIN_TOKEN (`. .kiln/env` after scripts/quickstart.sh, which also
# registered and deployed `iris`); scripts/test.sh runs it against its quickstart stack.
# Screenshots go to KILN_UI_ARTIFACTS (default $KILN_CACHE/ui-artifacts).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
: "${KILN_API_URL:?set KILN_API_URL (. .kiln/env after scripts/quickstart.sh)}"
: "${KILN_TOKEN:?set KILN_TOKEN (. .kiln/env after scripts/quickstart.sh)}"
: "${KILN_ADMIN_TOKEN:?set KILN_ADMIN_TOKEN (. .kiln/env after scripts/quickstart.sh)}"
kiln_ensure_ui_browser
export KILN_UI_ARTIFACTS="${KILN_UI_ARTIFACTS:-$KILN_CACHE/ui-artifacts}"
mkdir -p "$KILN_UI_ARTIFACTS"
"$KILN_UI_PYTHON" "$KILN_ROOT/tests/ui/browser.py" "$@"
