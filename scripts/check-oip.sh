#!/usr/bin/env bash
# The stock OIP clients (`tritonclient[http]`, the `kserve` SDK; scripts/env.sh pins them) against a running Kiln: the pytest suite
# in tests/compat/oip/. Needs KILN_API_URL and KILN_ADMIN_TOKEN (`. .kiln/env` after
# scripts/quickstart.sh); scripts/test.sh runs it against its quickstart stack.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
: "${KILN_API_URL:?set KILN_API_URL (. .kiln/env after scripts/quickstart.sh)}"
: "${KILN_ADMIN_TOKEN:?set KILN_ADMIN_TOKEN (. .kiln/env after scripts/quickstart.sh)}"
kiln_ensure_oip_venv
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
"$KILN_OIP_PYTHON" -m pytest -p no:cacheprovider -q --rootdir "$KILN_ROOT/tests/compat/oip" \
  "$KILN_ROOT/tests/compat/oip" "$@"
