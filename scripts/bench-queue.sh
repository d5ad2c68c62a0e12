#!/usr/bin/env bash
# Queue benchmark: Kiln's claim+complete against pgbench running the same statements.
# Prints a Markdown table (see docs/benchmarks.md).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_postgres
command -v pgbench >/dev/null || kiln_apt_install postgresql-contrib >&2 || kiln_apt_install postgresql-client >&2
cargo bench -p kiln-queue --bench queue
