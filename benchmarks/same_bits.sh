#!/usr/bin/env bash
# Seeded short runs of the three tasks at one thread: prints the sha256 of each run's last weights and the demo's mIoUs.
# Usage: benchmarks/same_bits.sh OUT_DIR   (from a checkout with .venv; PY=... PYTHONPATH=<other checkout>/src runs
# another commit with the same interpreter). The digests hold per machine: compare two commits on one machine, never
# digests printed on another CPU model (its kernels round differently). The one-house restructuring left all four
# unchanged (closing note of issue 24).
set -euo pipefail
OUT=${1:?out dir}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
H="${PY:-.venv/bin/python} -m hamburger.cli"
rm -rf "$OUT"; mkdir -p "$OUT"
$H seg train --dataset animal-scenes --model hamnet_tiny --crop-size 64 --batch-size 4 --iters 12 --workers 0 \
  --val-interval 6 --max-val-samples 8 --no-tensorboard --quiet --out "$OUT/seg" > "$OUT/seg.log" 2>&1
$H gan train --iters 6 --batch-size 8 --val-interval 3 --ckpt-interval 3 --no-tensorboard --quiet --out "$OUT/gan" > "$OUT/gan.log" 2>&1
$H seq train --task mqar --seq-len 32 --pairs 4 --train-examples 256 --val-examples 32 --iters 12 --val-interval 6 \
  --no-tensorboard --quiet --out "$OUT/seq" > "$OUT/seq.log" 2>&1
$H demo --quick --out "$OUT/demo" > "$OUT/demo.log" 2>&1
for t in seg gan seq; do echo "$t $(sha256sum "$OUT/$t/last.safetensors" | cut -c1-16)"; done
grep -iE "miou|hamnet|nonlocal|fcn" "$OUT/demo/"*.md | head -20 || true
