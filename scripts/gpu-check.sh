#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (never in the test command): serving and training on CUDA,
# measured as shipped. The release kiln-worker trains the wine and digits MLPs on cuda, the
# release kiln-api serves them on cuda (KILN_SERVING_DEVICE=cuda), and the deployments must
# report `cuda:0` before anything is measured; then the compute-bound digits MLP
# (64→2048→2048→10) with the API's default batching against batching off, and the wine
# sweep, at 32 connections (scripts/bench-serving.sh with BENCH_DEVICE=cuda).
# Not run yet: no GPU machine was lent to the sessions that wrote it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total --format=csv
BENCH_DEVICE=cuda BENCH_CONNECTIONS="${BENCH_CONNECTIONS:-32}" exec bash scripts/bench-serving.sh
