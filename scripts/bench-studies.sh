#!/usr/bin/env bash
# A Kiln study vs Optuna on the same search, as shipped: the release kiln-api and one
# kiln-worker started as the quickstart starts them (default settings, a private PostgreSQL,
# the file artifact store), then, in the same run, on this machine:
#   - Kiln: `kiln studies create --wait` of the digits MLP (64 → hidden → 10), learning rate
#     log-uniform in [0.001, 0.05] × hidden in [[32], [64], [64, 32]], TPE, ASHA
#     (min_epochs 1, reduction_factor 3) on val_loss, BENCH_TRIALS (12) trials of
#     BENCH_EPOCHS (12) epochs, one at a time; timed from the request to the study's end
#     (every trial's queueing, data fetch and bundle upload included); then the same study
#     with parallel_trials 2 on two workers of one torch thread each (the platform's way to
#     use the same two cores);
#   - Optuna (TPESampler + SuccessiveHalvingPruner, from the package index) driving the same
#     model in PyTorch eager with the same budget, in one process, for seeds 1, 2 and 3
#     (scripts/bench/optuna_digits.py).
# Both use every core. Prints a Markdown table (docs/benchmarks.md). BENCH_NO_BUILD=1 uses
# the release binaries already built.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_libtorch
command -v curl >/dev/null 2>&1 || kiln_apt_install curl >&2
command -v psql >/dev/null 2>&1 || kiln_apt_install postgresql-client >&2
trials="${BENCH_TRIALS:-12}" epochs="${BENCH_EPOCHS:-12}"
optuna_dir="$KILN_CACHE/optuna-4.6.0"
if [ ! -d "$optuna_dir/optuna" ]; then
  kiln_log "installing optuna into $optuna_dir (once)"
  "$KILN_CACHE/venv/bin/pip" install -q --target "$optuna_dir" optuna==4.6.0
fi
. scripts/bench/stack.sh
kiln_bench_stack studies
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
dataset=$(curl -fsS -H "Authorization: Bearer $KILN_TOKEN" -H 'content-type: text/csv' \
  --data-binary @data/digits.csv "$KILN_API_URL/v1/datasets?name=digits" | json_field '["id"]')
cat >"$state/study.json" <<JSON
{"name": "bench", "base": {"dataset_id": "$dataset", "task": "classification", "target": "digit",
  "model": {"type": "mlp", "hidden": [32]},
  "hyperparameters": {"epochs": $epochs, "batch_size": 32, "seed": 1}},
 "parameters": {"hyperparameters.learning_rate": {"type": "float", "min": 0.001, "max": 0.05, "log": true},
                "model.hidden": {"type": "categorical", "values": [[32], [64], [64, 32]]}},
 "objective": {"metric": "val_loss", "goal": "minimize"},
 "algorithm": "tpe", "seed": 1, "max_trials": $trials, "parallel_trials": 1,
 "early_stopping": {"type": "asha", "min_epochs": 1, "reduction_factor": 3}}
JSON
kiln_log "Kiln: $trials trials of $epochs epochs"
t0=$(date +%s.%N)
kiln --output json studies create "$state/study.json" --wait >"$state/kiln.json"
t1=$(date +%s.%N)
kiln_log "Kiln: the same study, parallel_trials 2 on two one-thread workers"
kill -TERM -- "-${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
for i in 1 2; do
  KILN_TORCH_THREADS=1 KILN_WORKER_METRICS_BIND="127.0.0.1:$(kiln_free_port)" \
    KILN_WORKER_CACHE_DIR="$state/worker-cache-$i" start "kiln-worker-$i" "$bin/kiln-worker"
done
sed 's/"parallel_trials": 1/"parallel_trials": 2/; s/"name": "bench"/"name": "bench-parallel"/' \
  "$state/study.json" >"$state/study-parallel.json"
sleep 2
t2=$(date +%s.%N)
kiln --output json studies create "$state/study-parallel.json" --wait >"$state/kiln-parallel.json"
t3=$(date +%s.%N)
kiln_log "Optuna: the same search, seeds 1 2 3"
for seed in 1 2 3; do
  PYTHONPATH="$optuna_dir" "$KILN_CACHE/venv/bin/python" scripts/bench/optuna_digits.py \
    --data data/digits.csv --trials "$trials" --epochs "$epochs" --seed "$seed" --threads "$(nproc)" \
    >>"$state/optuna.jsonl"
done

python3 - "$state/kiln.json" "$state/optuna.jsonl" "$t0" "$t1" "$trials" "$epochs" \
  "$state/kiln-parallel.json" "$t2" "$t3" <<'PY'
import json, statistics, sys
from datetime import datetime
def span(s):
    t = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00"))
    return (t(s["finished_at"]) - t(s["created_at"])).total_seconds()
kiln = json.load(open(sys.argv[1]))
optuna = [json.loads(l) for l in open(sys.argv[2])]
seconds = float(sys.argv[4]) - float(sys.argv[3])
trials, epochs = int(sys.argv[5]), int(sys.argv[6])
par = json.load(open(sys.argv[7]))
par_seconds = float(sys.argv[9]) - float(sys.argv[8])
best = kiln["best_trial"]["objective"]
spent = sum(t["epochs"] for t in kiln["trials"])
print()
print(f"Study vs Optuna: digits MLP, {trials} trials × {epochs} epochs budget, TPE + ASHA/SuccessiveHalving "
      f"(rf 3) on val_loss, release binaries (defaults), one worker, same run")
print()
print("| search | best val_loss | seconds (created → ended) | CLI wall seconds (polls 1 s) | epochs trained | pruned |")
print("|---|---:|---:|---:|---:|---:|")
print(f"| Kiln study (seed 1), 1 worker | {best:.4f} | {span(kiln):.2f} | {seconds:.1f} | {spent} | {kiln['counts']['pruned']} |")
print(f"| Kiln study (seed 1), parallel_trials 2, 2 workers × 1 thread | {par['best_trial']['objective']:.4f} | "
      f"{span(par):.2f} | {par_seconds:.1f} | {sum(t['epochs'] for t in par['trials'])} | {par['counts']['pruned']} |")
for o in optuna:
    print(f"| Optuna seed {o['seed']} | {o['best_val_loss']:.4f} | {o['seconds']:.2f} | | {o['epochs']} | {o['pruned']} |")
losses = [o["best_val_loss"] for o in optuna]
secs = statistics.median(o["seconds"] for o in optuna)
print()
print(f"Optuna's best val_loss spread: {min(losses):.4f} to {max(losses):.4f}; Kiln's {best:.4f} "
      f"({'within or better' if best <= max(losses) else 'worse'}). Time: Kiln {span(kiln):.2f} s "
      f"(CLI wall {seconds:.1f} s) vs Optuna's median {secs:.2f} s ({span(kiln) / secs:.2f}×, CLI wall "
      f"{seconds / secs:.2f}×); with two workers {span(par):.2f} s ({span(par) / secs:.2f}×, best "
      f"{par['best_trial']['objective']:.4f}).")
PY
