#!/usr/bin/env bash
# The GPU suite on a fresh GPU machine, in under 8 minutes, writing JSON and Markdown:
#   bash profiles/gpu_suite.sh [OUT_DIR]            (default profiles/results)
# Installs nothing beyond the project (pip install -e . --no-deps, offline). Runs the rows of
# profiles/suites/gpu.toml (float32 and bfloat16; binary 32x1x512x512, multiclass 8x4x256x256, 3D,
# the distance-map losses), eager and compiled, beside the peers (eager and torch.compile'd), then a
# 2-rank NCCL check when there are two GPUs. On a CPU (a quick check of the script itself):
#   SEGLOSS_SUITE_ARGS="--device cpu --shrink 32 --no-compiled --no-compiled-peers --steps 2 --warmup 0" \
#     bash profiles/gpu_suite.sh /tmp/out
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-profiles/results}"
mkdir -p "$OUT"
python -c "import segloss_registry" 2>/dev/null || pip install -e . --no-deps --no-build-isolation -q
start=$(date +%s)
# shellcheck disable=SC2086
timeout 450 python -m segloss_registry.cli bench --suite gpu --out "$OUT" --no-progress ${SEGLOSS_SUITE_ARGS:-} \
  > "$OUT/gpu_stdout.md" 2> "$OUT/gpu_stderr.txt" || echo "suite exited with $? (see $OUT/gpu_stderr.txt)"
timeout 120 python profiles/nccl_check.py > "$OUT/nccl.txt" 2>&1 || echo "nccl check failed (see $OUT/nccl.txt)"
echo "gpu suite: $(( $(date +%s) - start )) s; results in $OUT (gpu.json, gpu.md, nccl.txt)"
