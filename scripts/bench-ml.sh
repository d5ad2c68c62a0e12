#!/usr/bin/env bash
# kiln-ml's training benchmark: kiln-ml vs PyTorch eager vs a bare tch loop, in one run
# (release/bench profile). Prints samples/s and ratios; record them in docs/benchmarks.md.
#   KILN_BENCH_THREADS (default 2)  KILN_BENCH_ROUNDS (default 7)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KILN_ROOT"
kiln_ensure_libtorch
kiln_log "nproc: $(nproc); threads: ${KILN_BENCH_THREADS:-2}; $("$KILN_PYTHON" -c 'import torch; print("torch", torch.__version__)')"
cargo bench -p kiln-ml --bench train_throughput
