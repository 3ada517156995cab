#!/usr/bin/env bash
# The measurements that need a GPU, in one script for a lent GPU machine: at most 5 minutes on one H100/H200,
# compilation included, every step under a timeout. No internet, no .venv: the project runs from source (torch,
# matplotlib and safetensors must be installed there; Triton as torch ships it).
#
#   bash benchmarks/gpu.sh [OUT]        # default: $OUT if set (the device tool's folder), else results/gpu
#
# Writes, each with the GPU named in its machine block:
#   OUT/gpu.txt          nvidia-smi's name, memory and driver
#   OUT/check/           hamburger bench check: per ham and precision, CUDA vs CPU, determinism, captured and
#                        graphed vs eager,
#                        NMF's fused Triton steps vs PyTorch's (the script stops here if one fails: nothing wrong
#                        gets timed)
#   OUT/solve/           hamburger bench solve: the NMF solve alone, PyTorch vs fused Triton steps vs compiled, 128², B 1
#   OUT/crossover/       the block eager, fused (hamburger.kernels), captured (optimize(mode="reduce-overhead")) and
#                        graphed (optimize(mode="graphs"): the eager kernels in CUDA graphs; eval rows) against the
#                        non-local block
#                        on each SDPA backend and compiled (the fastest of them is the yardstick), bf16, B 1 and 8,
#                        64² and 128², eval and training
#   OUT/crossover-256/   the same at 256², eval only
#   OUT/profile/         benchmarks/profile_block.py: eager against captured at B 8, 128², kernel by kernel
# GPU_SH_MORE=1 adds hamburger bench precision and seq bench (several more minutes).
# GPU_SH_QUICK=1 is a one-minute smoke run (the checks without capture, one size) before spending the budget.
# GPU_SH_KEEP_GOING=1 times the table even after a failed check (it says which rows failed).
# GPU_SH_DRY=1 (no GPU needed) only starts the CLI under `timeout`, as every step does, and exits.
set -euo pipefail
OUT_DIR=${1:-${OUT:-results/gpu}}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"
# `hb`: the CLI from source, as a program on PATH (a shell function would not do: `timeout` runs programs only)
HB_DIR=$(mktemp -d)
cat > "$HB_DIR/hb" <<EOF
#!/bin/sh
exec ${PYTHON:-python3} -c 'import sys; from hamburger.cli import main; sys.exit(main(sys.argv[1:]))' "\$@"
EOF
chmod +x "$HB_DIR/hb"
export PATH="$HB_DIR:$PATH"
SECONDS=0
stamp() { echo "[gpu.sh ${SECONDS}s] $*"; }
if [[ "${GPU_SH_DRY:-0}" == 1 ]]; then  # the CPU test's check that every step can start: the CLI under timeout
    command timeout 60 hb bench --help
    exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
TABLE=(--device cuda --precisions bf16 --backends flash,cudnn,efficient --no-compile --repeats 10)
if [[ "${GPU_SH_QUICK:-0}" == 1 ]]; then
    timeout 60 hb bench check --device cuda --no-capture --out "$OUT_DIR/check"
    timeout 60 hb bench crossover "${TABLE[@]}" --sizes 64 --batches 1 --capture --out "$OUT_DIR/crossover"
    exit 0
fi
stamp "correctness"
timeout 75 hb bench check --device cuda --out "$OUT_DIR/check" \
    || { stamp "a check failed (the table above)"; [[ "${GPU_SH_KEEP_GOING:-0}" == 1 ]] || exit 1; }
stamp "the solve alone: fused against PyTorch and compiled"
timeout 25 hb bench solve --device cuda --sizes 128 --batches 1 --precisions bf16 --out "$OUT_DIR/solve" \
    || stamp "solve stopped (timeout or error): see above"
stamp "the table: B 1 and 8, 64² and 128², eval and training"
timeout 130 hb bench crossover "${TABLE[@]}" --sizes 64,128 --batches 1,8 --capture --compile-attention \
    --out "$OUT_DIR/crossover" || stamp "crossover stopped (timeout or error): see above"
stamp "256², eval"
timeout 45 hb bench crossover "${TABLE[@]}" --sizes 256 --batches 1,8 --modes eval --capture --compile-attention \
    --out "$OUT_DIR/crossover-256" || stamp "crossover 256 stopped (timeout or error): see above"
stamp "where the captured block's time goes at B 8, 128² (it ran slower than eager there on the first H200 run)"
timeout 25 python3 benchmarks/profile_block.py --device cuda --batch 8 --size 128 --out "$OUT_DIR/profile" \
    || stamp "profile stopped (timeout or error): see above"
if [[ "${GPU_SH_MORE:-0}" == 1 ]]; then
    timeout 240 hb bench precision --device cuda --out "$OUT_DIR/precision" || true
    timeout 240 hb seq bench --device cuda --out "$OUT_DIR/seq-bench" || true
fi
stamp "done"
