#!/usr/bin/env bash
# OIP infer vs native predict: the release kiln-api with default settings, started as a user
# starts it (scripts/quickstart.sh --release: private PostgreSQL, kiln-api, kiln-worker, the
# iris model trained, registered and deployed as `iris`), then one deployment driven by wrk
# with one row per request at BENCH_CONNECTIONS (default 32) connections, in the same run:
#   native  POST /v1/deployments/iris/predict   {"instances": [row]}
#   OIP     POST /v2/models/iris/infer          FP32 [1, 4] as JSON, and in binary with binary
#                                               outputs (what tritonclient sends by default)
# Prints a Markdown table with requests/s and the ratio to native. See docs/benchmarks.md.
# Settings: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (32), BENCH_WRK_THREADS (2).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
command -v wrk >/dev/null 2>&1 || kiln_apt_install wrk >&2
seconds="${BENCH_SECONDS:-10}" connections="${BENCH_CONNECTIONS:-32}" threads="${BENCH_WRK_THREADS:-2}"

state=$(mktemp -d /tmp/kiln-bench-oip.XXXXXX)
export KILN_QUICKSTART_STATE="$state" KILN_QUICKSTART_PG_PORT=$(kiln_free_port) \
       KILN_API_BIND=127.0.0.1:$(kiln_free_port) KILN_WORKER_METRICS_BIND=127.0.0.1:$(kiln_free_port)
cleanup() { bash scripts/quickstart.sh --stop >/dev/null 2>&1 || true; rm -rf "$state"; }
trap cleanup EXIT
bash scripts/quickstart.sh --release >"$state/quickstart.log" 2>&1 || { tail -n 40 "$state/quickstart.log" >&2; exit 1; }
. "$state/env"

python3 scripts/bench/oip_wrk.py "$state" "$KILN_TOKEN"
# Both routes must agree before anything is measured.
native=$(curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: application/json' \
  -d '{"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}' \
  "$KILN_API_URL/v1/deployments/iris/predict" | python3 -c 'import json,sys; print(json.load(sys.stdin)["predictions"][0]["label"])')
oip=$(curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: application/json' \
  -d '{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}' \
  "$KILN_API_URL/v2/models/iris/infer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["outputs"][0]["data"][0])')
[ "$native" = "$oip" ] || { echo "native says $native, OIP says $oip" >&2; exit 1; }

run() {  # name path → "requests/s p50 p99 non2xx"
  wrk -t"$threads" -c"$connections" -d2s -s "$state/$1.lua" "$KILN_API_URL$2" >/dev/null
  wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$state/$1.lua" "$KILN_API_URL$2" >"$state/$1.wrk"
  awk '/Requests\/sec:/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$5}
       END {printf "%s %s %s %s\n", rps, p50, p99, (bad == "" ? 0 : bad)}' "$state/$1.wrk"
}
read -r n_rps n_p50 n_p99 n_bad < <(run native /v1/deployments/iris/predict)
read -r j_rps j_p50 j_p99 j_bad < <(run oip-json /v2/models/iris/infer)
read -r b_rps b_p50 b_p99 b_bad < <(run oip-binary /v2/models/iris/infer)
# Native again, last: the ratio should not hide a machine that got busier during the run.
read -r m_rps m_p50 m_p99 m_bad < <(run native /v1/deployments/iris/predict)

cores=$(nproc)
echo
echo "OIP infer vs native predict: release kiln-api (defaults), deployment iris (MLP 4→32→3),"
echo "one row per request, wrk -t$threads -c$connections -d${seconds}s, $cores cores, same run"
echo
echo "| route | requests/s | p50 | p99 | non-2xx | vs native |"
echo "|---|---:|---:|---:|---:|---:|"
native_mean=$(python3 -c "print(($n_rps + $m_rps) / 2)")
row() { python3 -c "print(f'| $1 | {$2:.0f} | $3 | $4 | $5 | {$2 / $native_mean:.2f}× |')"; }
row "native predict (first)" "$n_rps" "$n_p50" "$n_p99" "$n_bad"
row "OIP infer, JSON" "$j_rps" "$j_p50" "$j_p99" "$j_bad"
row "OIP infer, binary (tritonclient default)" "$b_rps" "$b_p50" "$b_p99" "$b_bad"
row "native predict (last)" "$m_rps" "$m_p50" "$m_p99" "$m_bad"
