#!/usr/bin/env bash
# One device call (2026-11-30, H200): the GPU tests after the paged-bytes test fix, and one scenario that asks
# for expandable segments in its own settings (the worker sets PYTORCH_CUDA_ALLOC_CONF itself).
set -u
log="$OUT/log.txt"
step() { echo "== $(date -u +%T) $*" | tee -a "$log"; }

step "a scenario with expandable_segments in its settings"
timeout 120 python3 -m planner.cli measure --model tinyllama-1.1b --seq-len 1024 --rank 16 --expandable-segments \
  --name tinyllama-expandable-setting --out "$OUT/expandable-setting-h200.jsonl" --timeout 100 --log "$log" 2>&1 | tail -3 | tee -a "$log"

step "GPU tests"
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_measure_gpu.py tests/test_callback.py \
  > "$OUT/gpu-tests.log" 2>&1; echo "exit $?" >> "$OUT/gpu-tests.log"
tail -3 "$OUT/gpu-tests.log" | tee -a "$log"
