#!/usr/bin/env bash
# The measurements that need a GPU, in one script for a lent GPU machine (no internet, no .venv: the project runs
# from source; torch, matplotlib and safetensors must be installed there).
#
#   bash benchmarks/gpu.sh [OUT]        # default: $OUT if set (the device tool's folder), else results/gpu
#
# Writes, each with the GPU named in its machine block:
#   OUT/gpu.txt                 nvidia-smi's name, memory and driver
#   OUT/crossover/              hamburger bench crossover: the block vs non-local attention on every SDPA backend
#   OUT/precision/              hamburger bench precision: each ham precision's error and speed; block vs SDPA
#   OUT/seq-bench/              hamburger seq bench: one causal mixer layer against N up to 16k, crossover vs SDPA
# Set GPU_SH_QUICK=1 for a two-minute smoke run (two sizes, one repeat) before spending the device budget.
set -euo pipefail
OUT_DIR=${1:-${OUT:-results/gpu}}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"
hb() { python3 -c 'import sys; from hamburger.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
if [[ "${GPU_SH_QUICK:-0}" == 1 ]]; then
    hb bench crossover --device cuda --sizes 32,64 --repeats 1 --out "$OUT_DIR/crossover"
    hb seq bench --device cuda --ns 512,1024 --repeats 1 --out "$OUT_DIR/seq-bench"
    exit 0
fi
hb bench crossover --device cuda --out "$OUT_DIR/crossover"
hb bench precision --device cuda --out "$OUT_DIR/precision"
hb seq bench --device cuda --out "$OUT_DIR/seq-bench"
