#!/usr/bin/env bash
# Checks the Grafana dashboard and the Prometheus alert rules of deploy/ against running
# binaries (scripts/test.sh calls it with the quickstart's stack, after the README's tour):
#
#   scripts/check-observability.sh API_METRICS_URL WORKER_METRICS_URL   (KILN_TOKEN: sent along)
#
#   promtool check rules      deploy/prometheus/kiln-alerts.yaml parses (promtool from
#                             Debian's `prometheus` package)
#   promtool test rules       its unit tests (kiln-alerts.test.yaml): each alert fires on
#                             its series and not on the near miss
#   promtool check metrics    the scraped answers are valid Prometheus text
#   check-observability.py    every dashboard query parses (as a recording rule) and every
#                             metric name the dashboard and the rules use is exposed
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
[ $# -eq 2 ] || { echo "usage: $0 API_METRICS_URL WORKER_METRICS_URL" >&2; exit 2; }
if ! command -v promtool >/dev/null; then
  kiln_log "installing promtool (Debian's prometheus package)"
  # The package's service must not start here: promtool is all that is wanted.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  kiln_apt_install prometheus >&2 || { rm -f /usr/sbin/policy-rc.d; exit 1; }
  rm -f /usr/sbin/policy-rc.d
fi
# PyYAML in the tools virtualenv (schemathesis's, which has it already).
venv="$KILN_CACHE/tools"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" || { kiln_apt_install python3-venv >&2 && python3 -m venv "$venv"; }
PY="$venv/bin/python"
"$PY" -c 'import yaml' 2>/dev/null || "$venv/bin/pip" install -q pyyaml==6.0.3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

kiln_log "promtool check rules, test rules"
promtool check rules deploy/prometheus/kiln-alerts.yaml
promtool test rules deploy/prometheus/kiln-alerts.test.yaml

kiln_log "scraping $1 and $2"
auth=(); [ -n "${KILN_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $KILN_TOKEN")
curl -fsS "${auth[@]}" "$1" >"$out/api.prom"
curl -fsS "$2" >"$out/worker.prom"
for scrape in api worker; do
  # Lint findings (naming advice) are printed, not fatal; a malformed answer is.
  promtool check metrics <"$out/$scrape.prom" >"$out/$scrape.lint" 2>&1 || true
  if grep -qiE 'error|parse|invalid' "$out/$scrape.lint"; then
    kiln_log "$scrape /metrics is not valid Prometheus text:"; cat "$out/$scrape.lint" >&2; exit 1
  fi
done

kiln_log "dashboard queries and rule metrics against the scrapes"
"$PY" scripts/check-observability.py "$out/dashboard-rules.yaml" "$out/api.prom" "$out/worker.prom"
promtool check rules "$out/dashboard-rules.yaml" >/dev/null ||
  { promtool check rules "$out/dashboard-rules.yaml"; exit 1; }
kiln_log "observability checks passed"
