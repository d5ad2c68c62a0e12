#!/usr/bin/env bash
# Artifact-store throughput: kiln-store against the `aws` CLI, copying the same 1 GiB file
# to and from the same s3s-fs server in the same run, with the peak RSS of each process
# (/usr/bin/time). Prints a Markdown table for docs/benchmarks.md.
#
#   scripts/bench-store.sh [SIZE_MIB=1024] [RUNS=3]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
SIZE_MIB="${1:-1024}"
RUNS="${2:-3}"

kiln_ensure_s3s
kiln_ensure_awscli
[ -x /usr/bin/time ] || kiln_apt_install time >&2
kiln_log "building kiln-store-tool (release)"
cargo build --release --locked -q -p kiln-store --bin kiln-store-tool
TOOL="$CARGO_TARGET_DIR/release/kiln-store-tool"

WORK="$(mktemp -d "$KILN_CACHE/bench-store.XXXXXX")"
ROOT="$WORK/root"
BUCKET=kiln-bench
mkdir -p "$ROOT/$BUCKET"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$KILN_S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret-key \
  "$ROOT" >"$WORK/s3s-fs.log" 2>&1 &
S3S_PID=$!
trap 'kill $S3S_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_EC2_METADATA_DISABLED=true
export KILN_ARTIFACT_STORE="s3://$BUCKET/kiln" KILN_S3_FORCE_PATH_STYLE=true
# The CLI with its defaults (8 MiB parts, 10 concurrent requests), path-style addressing.
export AWS_CONFIG_FILE="$WORK/aws-config"
printf '[default]\ns3 =\n  addressing_style = path\n' >"$AWS_CONFIG_FILE"

FILE="$WORK/input.bin"
kiln_log "writing ${SIZE_MIB} MiB of random bytes"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$FILE"
BYTES=$(stat -c %s "$FILE")

# run NAME CMD...: appends "NAME seconds peak_kib" to $WORK/results.
run() {
  local name="$1"; shift
  /usr/bin/time -f '%e %M %U %S' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" ||
    { cat "$WORK/err" >&2; return 1; }
  echo "$name $(cat "$WORK/time")" >>"$WORK/results"
}
clear_bucket() { rm -rf "${ROOT:?}/$BUCKET"/* "$ROOT"/.bucket-* "$WORK/down.bin"; }

for i in $(seq "$RUNS"); do
  kiln_log "run $i/$RUNS"
  clear_bucket
  run cli-upload "$KILN_AWS_CLI" s3 cp --only-show-errors "$FILE" "s3://$BUCKET/cli/input.bin"
  run cli-download "$KILN_AWS_CLI" s3 cp --only-show-errors "s3://$BUCKET/cli/input.bin" "$WORK/down.bin"
  cmp "$FILE" "$WORK/down.bin"
  clear_bucket
  run kiln-upload "$TOOL" put-file --team bench "$FILE"
  KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$WORK/out")
  run kiln-download "$TOOL" get "$KEY" "$WORK/down.bin"
  cmp "$FILE" "$WORK/down.bin"
  clear_bucket
  run kiln-upload-stream "$TOOL" put-stream --team bench "$FILE"
done

python3 - "$WORK/results" "$BYTES" "$RUNS" <<'PY'
import statistics, sys
path, size, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = {}
for line in open(path):
    name, secs, kib, user, system = line.split()
    rows.setdefault(name, []).append((float(secs), int(kib), float(user) + float(system)))
def med(name):
    secs = statistics.median(s for s, _, _ in rows[name])
    peak = max(k for _, k, _ in rows[name]) / 1024
    cpu = statistics.median(c for _, _, c in rows[name])
    return size / 1e6 / secs, secs, peak, cpu
print(f"{size / 2**20:.0f} MiB, median of {runs} runs (wall time of the whole process), peak RSS = max over runs\n")
print("| operation | tool | MB/s | seconds | CPU seconds (user+sys) | peak RSS (MiB) | vs. aws CLI |")
print("|---|---|---:|---:|---:|---:|---:|")
for op, cli, kilns in [("upload", "cli-upload", ["kiln-upload", "kiln-upload-stream"]),
                       ("download", "cli-download", ["kiln-download"])]:
    base = med(cli)
    print(f"| {op} | aws s3 cp | {base[0]:.0f} | {base[1]:.2f} | {base[3]:.2f} | {base[2]:.0f} | 1.00x |")
    for k in kilns:
        m = med(k)
        label = {"kiln-upload": "kiln-store put_file", "kiln-upload-stream": "kiln-store put_stream",
                 "kiln-download": "kiln-store download_to_file"}[k]
        print(f"| {op} | {label} | {m[0]:.0f} | {m[1]:.2f} | {m[3]:.2f} | {m[2]:.0f} | {m[0] / base[0]:.2f}x |")
PY
